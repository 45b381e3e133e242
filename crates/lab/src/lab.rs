//! `up`, `status` and `down` over a [`System`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cgroup::{CgroupError, CgroupLayout};
use crate::exec::{perform_all, ExecError, Executor};
use crate::name::{parse_used_subnets, pick_subnet, LabName, NameError, CGROUP_TOP};
use crate::plan::{self, plan_down, plan_up, Found, LabSpec, PlanEnv, PlanError, HEALTH_PATH};
use crate::state::{LabDirs, LabState, StateError};
use crate::system::{Cmd, System, SystemError};

/// 32 random bytes, hex-encoded.
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab '{0}' is already up; run `drover lab down --name {0}` first")]
    AlreadyUp(String),
    #[error("lab '{name}' has leftovers of an earlier run ({what}); run `drover lab down --name {name}` first")]
    Leftovers { name: String, what: String },
    #[error("setting up lab '{name}' failed: {cause}{}", rollback_note(.rollback))]
    SetUp {
        name: String,
        cause: Box<ExecError>,
        rollback: Vec<ExecError>,
    },
    #[error("lab '{name}': {} removal(s) failed: {}", errors.len(), join(errors))]
    Down {
        name: String,
        errors: Vec<ExecError>,
    },
    #[error("every /24 of 198.18.0.0/15 is in use; take a lab down first")]
    NoSubnet,
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    System(#[from] SystemError),
}

fn join(errors: &[ExecError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn rollback_note(errors: &[ExecError]) -> String {
    if errors.is_empty() {
        "; everything made so far was removed".into()
    } else {
        format!(
            "; rolling back also failed ({}); run `drover lab down`",
            join(errors)
        )
    }
}

/// Reads `/proc/self/mounts` and picks the cgroup layout.
pub fn detect_layout<S: System>(sys: &mut S) -> Result<CgroupLayout, LabError> {
    let mounts = sys.read(Path::new("/proc/self/mounts"))?;
    // `detect` wants a pure lookup, so the cgroup2 mounts' controllers are read up front.
    let mut answers = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, point, "cgroup2", ..] = f[..] {
            let point = PathBuf::from(point);
            let offered = sys.read(&point.join("cgroup.controllers")).ok();
            answers.push((point, offered));
        }
    }
    let lookup = |p: &Path| {
        answers
            .iter()
            .find(|(q, _)| q == p)
            .and_then(|(_, a)| a.clone())
    };
    Ok(CgroupLayout::detect(&mounts, lookup)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Brings a lab up. On failure everything made so far is removed again (in reverse order)
/// and the original error is returned, with any rollback failures attached.
pub fn up<S: System>(
    sys: &mut S,
    dirs: &LabDirs,
    spec: &LabSpec,
    layout: &CgroupLayout,
) -> Result<LabState, LabError> {
    spec.validate()?;
    let name = &spec.name;
    let _lock = sys.lock()?;
    if sys.exists(&dirs.state_file(name)) {
        return Err(LabError::AlreadyUp(name.to_string()));
    }
    let found = discover(sys, dirs, name, layout)?;
    if !found.is_empty() {
        return Err(LabError::Leftovers {
            name: name.to_string(),
            what: describe(&found),
        });
    }
    let used = parse_used_subnets(&sys.run(&Cmd::new("ip", &["-o", "-4", "addr", "show"]))?);
    let subnet = pick_subnet(&used).ok_or(LabError::NoSubnet)?;
    let token = hex(&sys.random(TOKEN_BYTES)?);
    let env = PlanEnv {
        layout: layout.clone(),
        subnet,
        lab_dir: dirs.lab_dir(name),
        token,
        now_unix: now_unix(),
    };
    let plan = plan_up(spec, &env)?;
    let mut ex = Executor::new(sys);
    let result = ex.apply_all(&plan.steps).and_then(|()| {
        let mut state = plan.state.clone();
        for h in &mut state.hosts {
            h.agent_pid = ex.pids.get(&h.name).copied();
        }
        for w in &mut state.wan {
            w.pid = ex.pids.get(&w.spawn_key()).copied();
        }
        let path = dirs.state_file(name);
        ex.sys()
            .write_atomic(&path, &state.to_json())
            .map_err(|source| ExecError::Step {
                action: format!("write {}", path.display()),
                source,
            })?;
        Ok(state)
    });
    result.map_err(|cause| {
        let rollback = ex.rollback();
        LabError::SetUp {
            name: name.to_string(),
            cause: Box::new(cause),
            rollback,
        }
    })
}

fn describe(found: &Found) -> String {
    let mut parts = Vec::new();
    if !found.netns.is_empty() {
        parts.push(format!("namespaces {}", found.netns.join(" ")));
    }
    if !found.links.is_empty() {
        parts.push(format!("links {}", found.links.join(" ")));
    }
    if !found.cgroup_dirs.is_empty() {
        parts.push(format!("{} cgroup dir(s)", found.cgroup_dirs.len()));
    }
    if let Some(d) = &found.lab_dir {
        parts.push(format!("directory {}", d.display()));
    }
    parts.join(", ")
}

/// Finds everything of lab `name` on the machine by its names alone (no state file needed).
pub fn discover<S: System>(
    sys: &mut S,
    dirs: &LabDirs,
    name: &LabName,
    layout: &CgroupLayout,
) -> Result<Found, LabError> {
    let prefix = name.prefix();
    let netns = sys.run(&Cmd::new("ip", &["netns", "list"]))?;
    let links = sys.run(&Cmd::new("ip", &["-o", "link", "show"]))?;
    let mut cgroup_dirs = Vec::new();
    for root in layout.roots() {
        let top = root.join(name.cgroup_lab_rel());
        if sys.exists(&top) {
            collect_dirs(sys, &top, &mut cgroup_dirs)?;
        }
    }
    let lab_dir = dirs.lab_dir(name);
    Ok(Found {
        netns: plan::parse_netns_list(&netns, &prefix),
        links: plan::parse_link_list(&links, &prefix),
        cgroup_dirs,
        cgroup_tops: layout
            .roots()
            .into_iter()
            .map(|r| r.join(CGROUP_TOP))
            .collect(),
        lab_dir: sys.exists(&lab_dir).then_some(lab_dir),
    })
}

fn collect_dirs<S: System>(
    sys: &mut S,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> Result<(), LabError> {
    out.push(dir.to_path_buf());
    for sub in sys.subdirs(dir)? {
        collect_dirs(sys, &sub, out)?;
    }
    Ok(())
}

/// What `down` removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DownReport {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub cgroup_dirs: Vec<PathBuf>,
    pub lab_dir: Option<PathBuf>,
}

impl DownReport {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.cgroup_dirs.is_empty()
            && self.lab_dir.is_none()
    }
}

/// Removes everything of lab `name`: found by name prefix, so it works without the state file
/// (after a crash) and does nothing the second time. Every removal is attempted even if some
/// fail.
pub fn down<S: System>(
    sys: &mut S,
    dirs: &LabDirs,
    name: &LabName,
    layout: &CgroupLayout,
) -> Result<DownReport, LabError> {
    let _lock = sys.lock()?;
    let found = discover(sys, dirs, name, layout)?;
    let report = DownReport {
        namespaces: found.netns.clone(),
        links: found.links.clone(),
        cgroup_dirs: found.cgroup_dirs.clone(),
        lab_dir: found.lab_dir.clone(),
    };
    if found.is_empty() {
        return Ok(report);
    }
    let errors = perform_all(sys, &plan_down(&found, &name.bridge()));
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(LabError::Down {
            name: name.to_string(),
            errors,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub netns_present: bool,
    pub agent_url: Option<String>,
    pub agent_pid: Option<u32>,
    pub agent_running: Option<bool>,
    pub agent_healthy: Option<bool>,
}

/// The lab's manager as its record (`manager.json`) says, checked against the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagerStatus {
    /// Its API's base URL.
    pub url: String,
    pub pid: u32,
    /// Its process is alive (a record left by a manager that was killed says false).
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub state: LabState,
    pub hosts: Vec<HostStatus>,
    /// The manager `drover manager --lab` recorded, if any.
    pub manager: Option<ManagerStatus>,
    /// Each WAN pair's delay line, in the state's order.
    pub wan: Vec<WanStatus>,
}

/// A WAN pair's delay line checked against the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WanStatus {
    /// `hA-hB`.
    pub pair: String,
    pub pid: Option<u32>,
    /// Whether that process still exists (None: no pid recorded).
    pub running: Option<bool>,
    /// What the running line's control socket says of the link (None: no line running, so
    /// nobody was asked).
    pub link: Option<LinkCheck>,
}

/// A running delay line's link, as its control socket answers `stats` within
/// [`STATUS_CONTROL_TIMEOUT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkCheck {
    /// Carrying packets.
    Up,
    /// Cut by `drover lab wan cut` (every packet dropped until `restore`).
    Cut,
    /// No usable answer in time: why.
    NoAnswer { reason: String },
}

/// How long `status` waits for each delay line's control socket: status stays quick even when
/// a line hangs (a request that changes the link waits longer, [`crate::system::CONTROL_TIMEOUT`]).
pub const STATUS_CONTROL_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks a delay line's control socket for its link state.
fn check_link<S: System>(sys: &mut S, socket: &Path) -> LinkCheck {
    let answer = match sys.control(socket, "stats", STATUS_CONTROL_TIMEOUT) {
        Ok(a) => a,
        Err(e) => {
            return LinkCheck::NoAnswer {
                reason: e.to_string(),
            }
        }
    };
    match serde_json::from_str::<crate::delay_io::ControlReply>(&answer) {
        Ok(r) if r.state == crate::delay::LinkState::Cut => LinkCheck::Cut,
        Ok(_) => LinkCheck::Up,
        Err(e) => LinkCheck::NoAnswer {
            reason: format!("unreadable answer {answer:?}: {e}"),
        },
    }
}

/// The state file checked against the machine: namespaces present, agents alive and healthy.
pub fn status<S: System>(
    sys: &mut S,
    dirs: &LabDirs,
    name: &LabName,
) -> Result<LabStatus, LabError> {
    let path = dirs.state_file(name);
    let text = sys.read(&path).map_err(|e| match e.is_not_found() {
        true => LabError::State(StateError::NotUp {
            name: name.to_string(),
            path: path.clone(),
        }),
        false => LabError::System(e),
    })?;
    let state = LabState::from_json(&text, &path)?;
    let netns = sys.run(&Cmd::new("ip", &["netns", "list"]))?;
    let present = plan::parse_netns_list(&netns, &name.prefix());
    let token = sys.read(&state.token_file).unwrap_or_default();
    let mut hosts = Vec::new();
    for h in &state.hosts {
        let running = h
            .agent_pid
            .map(|pid| sys.exists(&PathBuf::from(format!("/proc/{pid}"))));
        let healthy = h.agent_url.as_ref().map(|url| {
            let addr = url.trim_start_matches("http://").parse();
            addr.is_ok_and(|a| sys.http_get(a, HEALTH_PATH, token.trim()).is_ok())
        });
        hosts.push(HostStatus {
            name: h.name.clone(),
            address: h.address.to_string(),
            netns_present: present.contains(&h.netns),
            agent_url: h.agent_url.clone(),
            agent_pid: h.agent_pid,
            agent_running: running,
            agent_healthy: healthy,
        });
    }
    let manager = manager_status(sys, dirs, name);
    let wan = state
        .wan
        .iter()
        .map(|w| {
            let running = w
                .pid
                .map(|pid| sys.exists(&PathBuf::from(format!("/proc/{pid}"))));
            WanStatus {
                pair: w.link.pair(),
                pid: w.pid,
                running,
                link: (running == Some(true)).then(|| check_link(sys, &w.config.control)),
            }
        })
        .collect();
    Ok(LabStatus {
        state,
        hosts,
        manager,
        wan,
    })
}

/// The recorded manager, if its record can be read (an unreadable one reads as none: status
/// reports, it does not fail over a file the manager rewrites).
fn manager_status<S: System>(sys: &mut S, dirs: &LabDirs, name: &LabName) -> Option<ManagerStatus> {
    let text = sys
        .read(&dirs.lab_dir(name).join(crate::manager_file::MANAGER_FILE))
        .ok()?;
    let rec: crate::manager_file::ManagerRecord = serde_json::from_str(&text).ok()?;
    let running = sys.exists(&PathBuf::from(format!("/proc/{}", rec.pid)));
    Some(ManagerStatus {
        url: rec.url,
        pid: rec.pid,
        running,
    })
}

#[cfg(test)]
#[path = "lab_tests.rs"]
mod tests;
