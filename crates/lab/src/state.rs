//! The lab's description on disk: `<labdir>/lab.json`, where labdir is
//! `$DROVER_STATE_DIR/lab/<name>` or `/run/drover/lab/<name>`.
//!
//! `up` writes it last (atomically), so its presence means the lab came up completely; `down`
//! removes it last. Other commands look hosts up in it (`--host h2`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupLayout, CgroupVersion};
use crate::name::{LabName, NameError};
use crate::tbf::TbfParams;

pub const STATE_FILE: &str = "lab.json";
pub const TOKEN_FILE: &str = "token";
const DEFAULT_STATE_ROOT: &str = "/run/drover";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("lab '{name}' is not up (no {})", path.display())]
    NotUp { name: String, path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a lab description: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Where labs keep their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDirs {
    /// Parent of every lab directory (`<state root>/lab`).
    pub root: PathBuf,
}

impl LabDirs {
    /// `$DROVER_STATE_DIR/lab`, or `/run/drover/lab`.
    pub fn from_env() -> Self {
        let base = std::env::var_os("DROVER_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT));
        Self {
            root: base.join("lab"),
        }
    }

    pub fn lab_dir(&self, name: &LabName) -> PathBuf {
        self.root.join(name.as_str())
    }

    pub fn state_file(&self, name: &LabName) -> PathBuf {
        self.lab_dir(name).join(STATE_FILE)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: LabName,
    pub lab_dir: PathBuf,
    pub bridge: String,
    pub bridge_address: Ipv4Addr,
    pub subnet: String,
    /// Per direction, per host.
    pub link: TbfParams,
    pub cgroup_version: CgroupVersion,
    pub cgroup_layout: CgroupLayout,
    pub token_file: PathBuf,
    /// Seconds since the epoch when `up` finished.
    pub created_unix: u64,
    pub hosts: Vec<HostState>,
    /// The traffic peer's namespace (None in a lab made before it existed).
    #[serde(default)]
    pub peer: Option<PeerState>,
    /// WAN pairs and their delay lines (none in a lab made before they existed).
    #[serde(default)]
    pub wan: Vec<crate::wan::WanState>,
}

/// Where the lab's traffic peer lives: `drover lab peer` serves the guests' net flows there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub netns: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub netns: String,
    /// Host-side end of the veth pair (in the root namespace, on the bridge).
    pub veth: String,
    pub address: Ipv4Addr,
    /// The host's cgroup directory in each hierarchy (one for v2, cpu and memory for v1).
    pub cgroup_dirs: Vec<PathBuf>,
    /// Write a pid to each of these to place a process in the host's cgroup.
    pub cgroup_procs: Vec<PathBuf>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Directory for the host's agent (VM disks, sockets).
    pub state_dir: PathBuf,
    pub agent_url: Option<String>,
    pub agent_pid: Option<u32>,
    pub agent_log: Option<PathBuf>,
}

impl LabState {
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Self, StateError> {
        serde_json::from_str(text).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Reads the description of lab `name` from the default lab directory.
pub fn load_state(name: &str) -> Result<LabState, StateError> {
    load_state_in(&LabDirs::from_env(), name)
}

pub fn load_state_in(dirs: &LabDirs, name: &str) -> Result<LabState, StateError> {
    let name = LabName::new(name)?;
    let path = dirs.state_file(&name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotUp {
                name: name.to_string(),
                path,
            })
        }
        Err(source) => return Err(StateError::Read { path, source }),
    };
    LabState::from_json(&text, &path)
}

/// Finds a host by name (`h2`), namespace (`drvdrover-h2`) or address (`198.18.0.12`).
pub fn resolve_host<'a>(state: &'a LabState, host: &str) -> Option<&'a HostState> {
    state
        .hosts
        .iter()
        .find(|h| h.name == host || h.netns == host || h.address.to_string() == host)
}

/// Files a process must be written to for it to join `host`'s cgroup.
pub fn cgroup_procs_paths(host: &HostState) -> Vec<PathBuf> {
    host.cgroup_procs.clone()
}

/// Places a running process in `host`'s cgroup (its future children inherit it).
pub fn place_pid(host: &HostState, pid: u32) -> std::io::Result<()> {
    for f in &host.cgroup_procs {
        std::fs::write(f, pid.to_string())?;
    }
    Ok(())
}

/// A `Command` that runs `program` inside `host`'s network namespace.
pub fn netns_command(host: &HostState, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", &host.netns, program]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_up, LabSpec, PlanEnv};

    fn sample() -> LabState {
        let wan = crate::wan::WanLink::parse("h1-h2=100Mbit/s,50ms").unwrap();
        let spec = LabSpec::new("drover", 2)
            .unwrap()
            .cpus(0.5)
            .memory(1 << 30)
            .wan(vec![wan], vec!["drover-delay-line".into()]);
        let env = PlanEnv::sample();
        plan_up(&spec, &env).unwrap().state
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = sample();
        let back = LabState::from_json(&s.to_json(), Path::new("x")).unwrap();
        assert_eq!(back, s);
        assert!(s.to_json().contains("\"cgroup_version\": \"v1\""));
    }

    #[test]
    fn hosts_resolve_by_name_namespace_or_address() {
        let s = sample();
        assert_eq!(
            resolve_host(&s, "h2").map(|h| h.address.to_string()),
            Some("198.18.0.12".into())
        );
        assert_eq!(
            resolve_host(&s, "drvdrover-h1").map(|h| h.name.as_str()),
            Some("h1")
        );
        assert_eq!(
            resolve_host(&s, "198.18.0.11").map(|h| h.name.as_str()),
            Some("h1")
        );
        assert!(resolve_host(&s, "h3").is_none());
    }

    #[test]
    fn load_reports_a_lab_that_is_not_up() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = LabDirs {
            root: dir.path().to_path_buf(),
        };
        assert!(matches!(
            load_state_in(&dirs, "nolab"),
            Err(StateError::NotUp { .. })
        ));
        let s = sample();
        std::fs::create_dir_all(dirs.lab_dir(&s.name)).unwrap();
        std::fs::write(dirs.state_file(&s.name), s.to_json()).unwrap();
        assert_eq!(load_state_in(&dirs, "drover").unwrap(), s);
        assert!(matches!(
            load_state_in(&dirs, "Bad"),
            Err(StateError::Name(_))
        ));
    }
}
