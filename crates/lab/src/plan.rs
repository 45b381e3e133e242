//! Pure planning: a lab spec becomes the exact list of steps for `up` (each with its undo), and
//! what `down` discovered becomes the list of removals. Nothing here touches the machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{CgroupError, CgroupLayout};
use crate::name::{self, HostName, LabName, NameError, Subnet, NS_IFNAME, PREFIX_LEN, VM_BRIDGE};
use crate::state::{HostState, LabState, PeerState, TOKEN_FILE};
use crate::system::Cmd;
use crate::tbf::{TbfError, TbfParams};
use crate::wan::{validate_links, wan_steps, WanError, WanLink};

/// 1 Gbit/s per direction, a common datacenter link.
pub const DEFAULT_LINK_RATE: u64 = 125_000_000;
pub const AGENT_PORT: u16 = 7700;
/// The least memory a host may be capped at, bytes: the smallest guest plus the QEMU overhead its
/// agent charges for it, the agent's own floor (the guest crate's library is only its rules, so
/// the lab still runs without QEMU).
pub const MIN_HOST_MEMORY: u64 = drover_guest::fit::MIN_HOST_MEMORY_BYTES;
pub const HEALTH_PATH: &str = "/v1/health";
/// How long a delay line may take to answer on its control socket after it starts.
pub const DELAY_LINE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Tbf(#[from] TbfError),
    #[error("a host's CPU cap of {0} cores: expected {expected}", expected = drover_guest::fit::host_cpus_expected())]
    Cpus(f64),
    #[error("a host's memory cap of {0} bytes: {expected}", expected = self.expected())]
    Memory(u64),
    #[error("the agents' health timeout must be longer than zero")]
    HealthTimeout,
    #[error(transparent)]
    Wan(#[from] WanError),
}

impl PlanError {
    /// What a host's memory cap must be, for messages that quote it as typed (empty for the
    /// other errors, whose messages say it themselves).
    pub fn expected(&self) -> String {
        match self {
            PlanError::Memory(_) => {
                format!("expected {}", drover_guest::fit::host_memory_expected())
            }
            _ => String::new(),
        }
    }
}

/// How to start a host's agent: `<argv_prefix> --listen <addr>:<port> --state-dir <dir>
/// --token-file <file> --link <bytes/s> --cgroup-dir /proc/self/fd/3` (plus the host's caps).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLaunch {
    pub argv_prefix: Vec<String>,
    pub port: u16,
    pub health_timeout: Duration,
}

impl AgentLaunch {
    /// `<drover> agent` on [`AGENT_PORT`], each agent waited for up to `health_timeout`.
    pub fn drover(bin: &Path, health_timeout: Duration) -> Self {
        AgentLaunch {
            argv_prefix: vec![bin.display().to_string(), "agent".into()],
            port: AGENT_PORT,
            health_timeout,
        }
    }

    /// The agents' wake delay, s (`drover agent --wake-delay`): how long a woken host stays
    /// `waking`, standing for its boot or resume.
    pub fn wake_delay(mut self, secs: u64) -> Self {
        self.argv_prefix
            .extend(["--wake-delay".to_string(), secs.to_string()]);
        self
    }

    /// How often the agents measure each VM's dirty rate, s (`drover agent --dirty-interval`).
    pub fn dirty_interval(mut self, secs: u64) -> Self {
        self.argv_prefix
            .extend(["--dirty-interval".to_string(), secs.to_string()]);
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabSpec {
    pub name: LabName,
    pub hosts: u32,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub link: TbfParams,
    pub agent: Option<AgentLaunch>,
    /// Slow, far links between pairs of hosts (see [`crate::wan`]).
    pub wan: Vec<WanLink>,
    /// The delay-line program, run as `<argv> <config.json>`; needed when `wan` is not empty.
    pub delay_line: Option<Vec<String>>,
}

impl LabSpec {
    /// A lab of `hosts` uncapped hosts on 1 Gbit/s links, without agents.
    pub fn new(name: &str, hosts: u32) -> Result<Self, PlanError> {
        name::host_names(hosts)?;
        Ok(Self {
            name: LabName::new(name)?,
            hosts,
            cpus: None,
            memory_bytes: None,
            link: TbfParams::for_rate(DEFAULT_LINK_RATE)?,
            agent: None,
            wan: Vec::new(),
            delay_line: None,
        })
    }

    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    pub fn link_rate(mut self, bytes_per_sec: u64) -> Result<Self, PlanError> {
        self.link = TbfParams::for_rate(bytes_per_sec)?;
        Ok(self)
    }

    pub fn agent(mut self, launch: AgentLaunch) -> Self {
        self.agent = Some(launch);
        self
    }

    /// WAN pairs, each run by `delay_line` (`<argv> <config.json>`).
    pub fn wan(mut self, links: Vec<WanLink>, delay_line: Vec<String>) -> Self {
        self.wan = links;
        self.delay_line = Some(delay_line);
        self
    }

    /// Checks every field (the fields are public, so a spec may not come from the builders):
    /// host count, caps, link rate and the agents' timeout. `up` calls it before touching the
    /// machine, so a lab that could not work is refused at once rather than after a timeout.
    pub fn validate(&self) -> Result<(), PlanError> {
        name::host_names(self.hosts)?;
        if let Some(c) = self.cpus {
            if !drover_guest::fit::host_cpus_ok(c) {
                return Err(PlanError::Cpus(c));
            }
        }
        if let Some(m) = self.memory_bytes {
            if m < MIN_HOST_MEMORY {
                return Err(PlanError::Memory(m));
            }
        }
        // The agents' own floor (tbf checks it with their function), so `up` refuses at once
        // what they would refuse after the health timeout.
        TbfParams::for_rate(self.link.rate_bytes_per_sec)?;
        if self
            .agent
            .as_ref()
            .is_some_and(|a| a.health_timeout.is_zero())
        {
            return Err(PlanError::HealthTimeout);
        }
        validate_links(&self.wan, self.hosts)?;
        if !self.wan.is_empty() && self.delay_line.as_ref().is_none_or(|a| a.is_empty()) {
            return Err(WanError::NoDelayLine.into());
        }
        Ok(())
    }
}

/// What planning needs from the machine, gathered beforehand.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEnv {
    pub layout: CgroupLayout,
    /// The lab's /24, free when `up` started.
    pub subnet: Subnet,
    pub lab_dir: PathBuf,
    pub token: String,
    pub now_unix: u64,
}

impl PlanEnv {
    #[cfg(test)]
    pub fn sample() -> Self {
        Self {
            layout: CgroupLayout::V1 {
                cpu: "/sys/fs/cgroup/cpu".into(),
                memory: "/sys/fs/cgroup/memory".into(),
            },
            subnet: Subnet(0),
            lab_dir: "/run/drover/lab/drover".into(),
            token: "00ff".into(),
            now_unix: 1,
        }
    }
}

/// One thing done to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run(Cmd),
    Mkdir(PathBuf),
    Write {
        path: PathBuf,
        contents: String,
        mode: Option<u32>,
    },
    /// Start a host's agent detached; its pid goes into the state file.
    Spawn {
        host: String,
        argv: Vec<String>,
        log: PathBuf,
    },
    /// Poll a Unix control socket (`stats`) until it answers.
    WaitControl {
        what: String,
        socket: PathBuf,
        log: PathBuf,
        timeout: Duration,
    },
    WaitHealth {
        host: String,
        addr: SocketAddr,
        token: String,
        log: PathBuf,
        timeout: Duration,
    },
    /// SIGKILL every process listed in these `cgroup.procs` files until they are empty.
    KillCgroup(Vec<PathBuf>),
    /// SIGKILL every process in a network namespace (`ip netns pids`).
    KillNetns(String),
    /// Kill what is left in a cgroup directory, then rmdir it (retrying while it drains).
    RemoveCgroup(PathBuf),
    /// Remove a directory other labs may share; not an error if they still use it.
    RmdirIfEmpty(PathBuf),
    RemoveTree(PathBuf),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(c) => write!(f, "{c}"),
            Self::Mkdir(p) => write!(f, "mkdir {}", p.display()),
            Self::Write { path, .. } if path.ends_with(TOKEN_FILE) => {
                write!(f, "write token to {}", path.display())
            }
            Self::Write { path, contents, .. } => {
                write!(f, "write {contents} > {}", path.display())
            }
            // A delay line's key is `wan-hA-hB`; hosts are `hN`.
            Self::Spawn { host, argv, .. } if host.starts_with("wan-") => {
                write!(f, "start {host}: {}", argv.join(" "))
            }
            Self::Spawn { host, argv, .. } => {
                write!(f, "start agent of {host}: {}", argv.join(" "))
            }
            Self::WaitHealth { host, addr, .. } => {
                write!(f, "wait for agent of {host} at http://{addr}{HEALTH_PATH}")
            }
            Self::WaitControl { what, socket, .. } => {
                write!(f, "wait for {what} on {}", socket.display())
            }
            Self::KillCgroup(files) => write!(f, "kill processes in {files:?}"),
            Self::KillNetns(ns) => write!(f, "kill processes in netns {ns}"),
            Self::RemoveCgroup(p) => write!(f, "remove cgroup {}", p.display()),
            Self::RmdirIfEmpty(p) => write!(f, "rmdir {} if unused", p.display()),
            Self::RemoveTree(p) => write!(f, "remove {}", p.display()),
        }
    }
}

/// An action of `up` and how to take it back (None: undone by an earlier step's undo).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub action: Action,
    pub undo: Option<Action>,
}

impl Step {
    pub(crate) fn new(action: Action) -> Self {
        Self { action, undo: None }
    }

    pub(crate) fn undone_by(action: Action, undo: Action) -> Self {
        Self {
            action,
            undo: Some(undo),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpPlan {
    pub steps: Vec<Step>,
    /// The state file to write once every step succeeded (agent pids filled in then).
    pub state: LabState,
}

fn run(program: &str, args: &[&str]) -> Action {
    Action::Run(Cmd::new(program, args))
}

/// `argv` wrapped so the process joins the cgroups (by writing its own pid to each file)
/// before it execs: nothing it forks can escape the cap, and there is no race with the caller.
pub fn in_cgroup_argv(procs_files: &[PathBuf], argv: &[String]) -> Vec<String> {
    let script = "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\" || exit 126; \
                  shift; n=$((n-1)); done; exec \"$@\"";
    let mut out = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    out.push(procs_files.len().to_string());
    out.extend(procs_files.iter().map(|p| p.display().to_string()));
    out.extend(argv.iter().cloned());
    out
}

/// Every step of `up`, in order: lab directory and token, bridge, cgroup parents, then per host
/// namespace, veth, addresses, tbf on both ends and cgroup, and finally the agents.
pub fn plan_up(spec: &LabSpec, env: &PlanEnv) -> Result<UpPlan, PlanError> {
    spec.validate()?;
    let lab = &spec.name;
    let mut steps = Vec::new();
    let token_file = env.lab_dir.join(TOKEN_FILE);
    steps.push(Step::undone_by(
        Action::Mkdir(env.lab_dir.clone()),
        Action::RemoveTree(env.lab_dir.clone()),
    ));
    steps.push(Step::new(Action::Write {
        path: token_file.clone(),
        contents: env.token.clone(),
        mode: Some(0o600),
    }));

    let br = lab.bridge();
    let br_addr = format!("{}/{PREFIX_LEN}", env.subnet.bridge_addr());
    steps.push(Step::undone_by(
        run("ip", &["link", "add", &br, "type", "bridge"]),
        run("ip", &["link", "del", &br]),
    ));
    steps.push(Step::new(run("ip", &["addr", "add", &br_addr, "dev", &br])));
    steps.push(Step::new(run("ip", &["link", "set", &br, "up"])));

    steps.extend(cgroup_parent_steps(&env.layout, &lab.cgroup_lab_rel()));

    let mut hosts = Vec::new();
    for (i, host) in name::host_names(spec.hosts)?.into_iter().enumerate() {
        let n = i as u32 + 1;
        let (host_steps, state) = host_steps(spec, env, n, &host)?;
        steps.extend(host_steps);
        hosts.push(state);
    }
    let launch = spec.delay_line.clone().unwrap_or_default();
    let (wan, wan_states) = wan_steps(lab, env, &spec.wan, &launch, DELAY_LINE_TIMEOUT);
    steps.extend(wan);
    steps.extend(peer_steps(lab, env.subnet));
    if let Some(agent) = &spec.agent {
        let links: Vec<u64> = (1..=hosts.len() as u32)
            .map(|n| host_link_bps(spec, n))
            .collect();
        steps.extend(agent_steps(agent, env, &hosts, &links));
    }

    let state = LabState {
        name: lab.clone(),
        lab_dir: env.lab_dir.clone(),
        bridge: br,
        bridge_address: env.subnet.bridge_addr(),
        subnet: env.subnet.cidr(),
        link: spec.link,
        cgroup_version: env.layout.version(),
        cgroup_layout: env.layout.clone(),
        token_file,
        created_unix: env.now_unix,
        hosts,
        peer: Some(PeerState {
            netns: lab.peer_netns(),
            address: env.subnet.peer_addr(),
        }),
        wan: wan_states,
    };
    Ok(UpPlan { steps, state })
}

/// The traffic peer's namespace on the lab bridge (unshaped: it stands for the world outside
/// the hosts, whose links are the shaped ones). `drover lab peer` serves flows in it.
fn peer_steps(lab: &LabName, subnet: Subnet) -> Vec<Step> {
    let ns = lab.peer_netns();
    let cidr = format!("{}/{PREFIX_LEN}", subnet.peer_addr());
    let mut steps = netns_on_bridge(&ns, &ns, &lab.bridge());
    steps.extend([
        Step::new(run("ip", &["link", "set", &ns, "up"])),
        Step::new(run(
            "ip",
            &["-n", &ns, "addr", "add", &cidr, "dev", NS_IFNAME],
        )),
        Step::new(run("ip", &["-n", &ns, "link", "set", NS_IFNAME, "up"])),
        Step::new(run("ip", &["-n", &ns, "link", "set", "lo", "up"])),
    ]);
    steps
}

/// A namespace `ns` and a veth pair into it (`veth` in the root namespace, on `bridge`;
/// [`NS_IFNAME`] inside, created there so its name never clashes in the root namespace).
fn netns_on_bridge(ns: &str, veth: &str, bridge: &str) -> Vec<Step> {
    vec![
        Step::undone_by(
            run("ip", &["netns", "add", ns]),
            run("ip", &["netns", "del", ns]),
        ),
        Step::undone_by(
            run(
                "ip",
                &[
                    "link", "add", veth, "type", "veth", "peer", "name", NS_IFNAME, "netns", ns,
                ],
            ),
            run("ip", &["link", "del", veth]),
        ),
        Step::new(run("ip", &["link", "set", veth, "master", bridge])),
    ]
}

/// `drover` and `drover/<lab>` in every hierarchy; on v2 the parents also delegate cpu and
/// memory to their children.
fn cgroup_parent_steps(layout: &CgroupLayout, lab_rel: &Path) -> Vec<Step> {
    let mut sc = layout
        .subtree_control_writes(&lab_rel.join("x"))
        .into_iter();
    let write = |(path, contents): (PathBuf, String)| {
        Step::new(Action::Write {
            path,
            contents,
            mode: None,
        })
    };
    let mut steps: Vec<Step> = sc.next().map(write).into_iter().collect();
    let top = lab_rel.parent().unwrap_or(lab_rel);
    for root in layout.roots() {
        steps.push(Step::undone_by(
            Action::Mkdir(root.join(top)),
            Action::RmdirIfEmpty(root.join(top)),
        ));
        steps.extend(sc.next().map(write));
        steps.push(Step::undone_by(
            Action::Mkdir(root.join(lab_rel)),
            Action::RemoveCgroup(root.join(lab_rel)),
        ));
        steps.extend(sc.next().map(write));
    }
    steps
}

fn host_steps(
    spec: &LabSpec,
    env: &PlanEnv,
    n: u32,
    host: &HostName,
) -> Result<(Vec<Step>, HostState), PlanError> {
    let lab = &spec.name;
    let (ns, veth, br) = (lab.netns(host), lab.veth(host), lab.bridge());
    let addr = env.subnet.host_addr(n);
    let cidr = format!("{addr}/{PREFIX_LEN}");
    let tbf = spec.link.tc_args();
    let mut steps = netns_on_bridge(&ns, &veth, &br);
    steps.extend([
        Step::new(Action::Run(
            Cmd::new("tc", &["qdisc", "add", "dev", &veth, "root"]).args(tbf.clone()),
        )),
        Step::new(run("ip", &["link", "set", &veth, "up"])),
        // The host's address sits on a bridge in its namespace whose ports are its link and
        // its VMs' taps (made by its agent): VMs are on the lab's L2 segment, and their
        // traffic crosses the host's shaped link like its migrations do.
        Step::new(run(
            "ip",
            &["-n", &ns, "link", "add", VM_BRIDGE, "type", "bridge"],
        )),
        Step::new(run(
            "ip",
            &["-n", &ns, "link", "set", NS_IFNAME, "master", VM_BRIDGE],
        )),
        Step::new(run(
            "ip",
            &["-n", &ns, "addr", "add", &cidr, "dev", VM_BRIDGE],
        )),
        Step::new(Action::Run(
            Cmd::new("tc", &["-n", &ns, "qdisc", "add", "dev", NS_IFNAME, "root"]).args(tbf),
        )),
        Step::new(run("ip", &["-n", &ns, "link", "set", NS_IFNAME, "up"])),
        Step::new(run("ip", &["-n", &ns, "link", "set", VM_BRIDGE, "up"])),
        Step::new(run("ip", &["-n", &ns, "link", "set", "lo", "up"])),
    ]);
    let rel = lab.cgroup_rel(host);
    let dirs = env.layout.dirs(&rel);
    for d in &dirs {
        steps.push(Step::undone_by(
            Action::Mkdir(d.clone()),
            Action::RemoveCgroup(d.clone()),
        ));
    }
    for (path, contents) in env
        .layout
        .limit_writes(&rel, spec.cpus, spec.memory_bytes)?
    {
        steps.push(Step::new(Action::Write {
            path,
            contents,
            mode: None,
        }));
    }
    let state_dir = env.lab_dir.join(host.as_str());
    let agent = spec.agent.as_ref();
    if agent.is_some() {
        steps.push(Step::new(Action::Mkdir(state_dir.clone())));
    }
    let state = HostState {
        name: host.as_str().into(),
        netns: ns,
        veth,
        address: addr,
        cgroup_procs: env.layout.procs_files(&rel),
        cgroup_dirs: dirs,
        cpus: spec.cpus,
        memory_bytes: spec.memory_bytes,
        state_dir,
        agent_url: agent.map(|a| format!("http://{addr}:{}", a.port)),
        agent_pid: None,
        agent_log: agent.map(|_| env.lab_dir.join(format!("{}.agent.log", host.as_str()))),
    };
    Ok((steps, state))
}

/// The descriptor through which an agent reads its memory cgroup (see [`with_dir_fd`]).
pub const CGROUP_FD: u32 = 3;

/// `argv` run with directory `dir` open on descriptor [`CGROUP_FD`]. The agent runs under
/// `ip netns exec`, which mounts a fresh /sys and so hides the cgroup filesystem; through the
/// descriptor it still reads its memory cgroup's OOM-kill count, to say why a VM died.
pub fn with_dir_fd(dir: &Path, argv: &[String]) -> Vec<String> {
    // A failed redirection on `exec` ends the shell (POSIX), so the agent never starts blind.
    let script = format!("exec {CGROUP_FD}<\"$1\"; shift; exec \"$@\"");
    let mut out = vec!["sh".to_string(), "-c".into(), script, "sh".into()];
    out.push(dir.display().to_string());
    out.extend(argv.iter().cloned());
    out
}

/// The link host `n` (1-based) is told it has, bytes/s: the lab's link, or the slowest WAN
/// link it is an end of when that is slower (its agent's `auto` and time budgets must not
/// assume the LAN's rate for a migration that crosses the WAN; the agent has one link figure,
/// so a host with both LAN and WAN peers is told the WAN's).
pub fn host_link_bps(spec: &LabSpec, n: u32) -> u64 {
    spec.wan
        .iter()
        .filter(|w| w.a == n || w.b == n)
        .map(|w| w.rate.rate_bytes_per_sec)
        .fold(spec.link.rate_bytes_per_sec, u64::min)
}

/// All agents are started before any is waited for, so they boot in parallel; `links` holds
/// each host's link, bytes/s, in `hosts`' order ([`host_link_bps`]).
fn agent_steps(
    agent: &AgentLaunch,
    env: &PlanEnv,
    hosts: &[HostState],
    links: &[u64],
) -> Vec<Step> {
    let memory_root = env.layout.memory_root();
    let token_file = env.lab_dir.join(TOKEN_FILE);
    let mut spawns = Vec::new();
    let mut waits = Vec::new();
    for (h, &link_bps) in hosts.iter().zip(links) {
        let log = h
            .agent_log
            .clone()
            .unwrap_or_else(|| env.lab_dir.join("agent.log"));
        let mut argv = vec!["ip".into(), "netns".into(), "exec".into(), h.netns.clone()];
        argv.extend(agent.argv_prefix.iter().cloned());
        argv.extend([
            "--listen".into(),
            format!("{}:{}", h.address, agent.port),
            "--state-dir".into(),
            h.state_dir.display().to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
        ]);
        // Inside the namespace the agent cannot read its cgroup's limits (`ip netns exec`
        // remounts /sys), so it is told its capacity.
        if let Some(cpus) = h.cpus {
            argv.extend(["--cpus".into(), cpus.to_string()]);
        }
        if let Some(bytes) = h.memory_bytes {
            argv.extend(["--memory".into(), bytes.to_string()]);
        }
        // `auto` must not assume a faster link than the one the lab shaped.
        argv.extend(["--link".into(), link_bps.to_string()]);
        // VMs' NICs join the host's bridge, with addresses from the lab's /24.
        argv.extend([
            "--vm-net".into(),
            env.subnet.cidr(),
            "--vm-bridge".into(),
            VM_BRIDGE.into(),
        ]);
        let memory_dir = h.cgroup_dirs.iter().find(|d| d.starts_with(&memory_root));
        let argv = match memory_dir {
            Some(dir) => {
                argv.extend(["--cgroup-dir".into(), format!("/proc/self/fd/{CGROUP_FD}")]);
                with_dir_fd(dir, &argv)
            }
            None => argv,
        };
        // The cgroup is joined before `ip netns exec`, which remounts /sys and hides cgroupfs.
        let argv = in_cgroup_argv(&h.cgroup_procs, &argv);
        spawns.push(Step::undone_by(
            Action::Spawn {
                host: h.name.clone(),
                argv,
                log: log.clone(),
            },
            Action::KillCgroup(h.cgroup_procs.clone()),
        ));
        waits.push(Step::new(Action::WaitHealth {
            host: h.name.clone(),
            addr: SocketAddr::new(h.address.into(), agent.port),
            token: env.token.clone(),
            log,
            timeout: agent.health_timeout,
        }));
    }
    spawns.extend(waits);
    spawns
}

/// What `down` found on the machine that belongs to a lab.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub netns: Vec<String>,
    pub links: Vec<String>,
    /// Every directory under `drover/<lab>` in every hierarchy, including those.
    pub cgroup_dirs: Vec<PathBuf>,
    /// `drover` in every hierarchy (removed if no other lab uses it).
    pub cgroup_tops: Vec<PathBuf>,
    pub lab_dir: Option<PathBuf>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty()
            && self.links.is_empty()
            && self.cgroup_dirs.is_empty()
            && self.lab_dir.is_none()
    }
}

/// Names in `ip netns list` output that start with `prefix`.
pub fn parse_netns_list(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Interface names in `ip -o link show` output that start with `prefix`.
pub fn parse_link_list(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).trim())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// The removals of `down`, in order: processes first (so nothing holds a namespace or cgroup),
/// then links (veths before the bridge), namespaces, cgroups deepest first, shared cgroup
/// parents if unused, and the lab directory with the state file last.
pub fn plan_down(found: &Found, bridge: &str) -> Vec<Action> {
    let mut cg = found.cgroup_dirs.clone();
    cg.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut out: Vec<Action> = cg
        .iter()
        .map(|d| Action::KillCgroup(vec![d.join("cgroup.procs")]))
        .collect();
    out.extend(found.netns.iter().map(|ns| Action::KillNetns(ns.clone())));
    let (bridges, veths): (Vec<_>, Vec<_>) = found.links.iter().partition(|l| *l == bridge);
    for l in veths.into_iter().chain(bridges) {
        out.push(run("ip", &["link", "del", l]));
    }
    out.extend(
        found
            .netns
            .iter()
            .map(|ns| run("ip", &["netns", "del", ns])),
    );
    out.extend(cg.into_iter().map(Action::RemoveCgroup));
    out.extend(found.cgroup_tops.iter().cloned().map(Action::RmdirIfEmpty));
    out.extend(found.lab_dir.iter().cloned().map(Action::RemoveTree));
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
