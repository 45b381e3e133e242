//! A cluster of hosts on one machine, for testing Drover end to end.
//!
//! # Lifecycle
//!
//! `up` (see [`lab::up`]) makes, in this order, each step journaled with its undo:
//!
//! 1. the lab directory `<state>/lab/<name>` and a random bearer token in it (mode 0600);
//! 2. the bridge `drv<name>-br` with address .1 of the lab's /24: the lowest /24 of
//!    198.18.0.0/15 no interface uses (198.18.0.0/24 for the first lab), picked under a
//!    machine-wide lock so concurrent labs never share a subnet;
//! 3. cgroup parents `drover/<name>` in each hierarchy (v2: cpu and memory delegated down);
//! 4. per host `hN`: namespace `drv<name>-hN`, a veth pair whose root end `drv<name>-hN` is on
//!    the bridge and whose other end is `eth0` in the namespace with address .(10+N), `tbf`
//!    on the egress of both ends (one per direction), and cgroup `drover/<name>/hN` with the CPU
//!    and memory caps;
//! 5. per WAN pair (`--wan h1-h2=RATE,DELAY`, see [`wan`]): a persistent TUN device in each of
//!    the two namespaces with `tbf` for the rate, the pair's delay line (started detached in the
//!    first host's namespace, in no host's cgroup, and waited for on its control socket), then
//!    a /32 route each way through the TUN devices;
//! 6. optionally an agent per host, started detached in the host's cgroup and namespace, and
//!    waited for on `GET /v1/health`;
//! 7. the state file `lab.json`, written atomically, last.
//!
//! If any step fails the journal is undone newest first and the original error is reported.
//!
//! `down` (see [`lab::down`]) does not trust the state file: it finds the lab's namespaces and
//! links by the `drv<name>-` prefix (`ip netns list`, `ip -o link show`) and its cgroups under
//! `drover/<name>`, kills every process in those cgroups and namespaces (agents and the QEMUs
//! they started, which inherited the cgroup), deletes links, namespaces, cgroups (deepest
//! first) and the lab directory. Everything already gone is skipped, so `down` is safe after a
//! crash and when run twice.
//!
//! # Layers
//!
//! [`name`], [`tbf`], [`cgroup`], [`wan`], [`delay`] and [`plan`] are pure and compute the exact
//! commands, file writes and packet schedules; [`delay_io`] runs a delay line on TUN devices; [`exec`] carries them out through the [`system::System`] trait, whose
//! [`system::RealSystem`] drives `ip`, `tc` and cgroupfs and whose [`fake::FakeSystem`] records
//! calls and injects failures for tests.

pub mod cgroup;
pub mod delay;
pub mod delay_io;
pub mod exec;
pub mod fake;
pub mod lab;
pub mod manager_file;
pub mod name;
pub mod plan;
pub mod state;
pub mod system;
pub mod tbf;
pub mod wan;

pub use cgroup::{CgroupLayout, CgroupVersion};
pub use lab::{
    detect_layout, discover, down, status, up, DownReport, LabError, LabStatus, ManagerStatus,
};
pub use name::LabName;
pub use plan::{AgentLaunch, LabSpec};
pub use state::{
    cgroup_procs_paths, load_state, load_state_in, netns_command, place_pid, resolve_host,
    HostState, LabDirs, LabState, PeerState, StateError,
};
pub use system::{RealSystem, System};
