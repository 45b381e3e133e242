//! Drover's experiments on a real lab. `drover demo` is the source papers' experiment
//! (reactive consolidation with post-copy; seeds 000 and 001) on this machine, end to end with
//! the manager:
//!
//! 1. a lab of `hosts` hosts (network namespaces, CPU-capped cgroups, shaped links, an agent
//!    each; `wake_delay_s` standing for resume from suspend-to-RAM), `vms` memtouch VMs packed
//!    on h1 at low demand, the other hosts put in standby;
//! 2. once h1's demand has stayed under the relief target for 3 s (freshly booted guests fill
//!    their working set and measure their speed flat out, which a manager would relieve), the
//!    manager (`drover manager --lab NAME --config FILE`, a child process) in auto mode,
//!    its moves restricted to the run's technique (`auto`: its cost model picks among the
//!    three), its consolidation shortened to fit a short run (see [`DemoConfig::control`]);
//! 3. phases: settle; raise (the first `raise` VMs rewrite their working set as fast as their
//!    vCPU goes: a core of demand each, beyond h1's cap, and a dirty rate no link here keeps
//!    up with; changed on command through the agent, no reboot); hold (the loaded phase); fall
//!    (back to the low rate); wait, bounded, for the manager to repack and put a host back in
//!    standby; teardown (also on an error, and on a signal when the caller drops the future);
//! 4. a sampler polls every agent each second; the figures ([`metrics`], [`summary`]) are
//!    computed from that series and from what the manager (plans) and agents (migration
//!    records) kept.
//!
//! # Default sizes, and why
//! For a 2-core machine running guests under TCG (no KVM):
//! - 3 hosts capped at 1.5 cores, 1 Gbit/s links (the papers' links);
//! - 2 VMs of 256 MiB, each with a 64 MiB working set, low demand 2000 ops/s (an idle TCG
//!   guest still takes about 0.3 of a core here), both raised: a raised VM wants a full core
//!   (its vCPU flat out) and dirties about 250 MB/s, more than the link moves, so pre-copy
//!   cannot converge. Two raised VMs (2 cores) overload h1 (1.5 cores); one of them alone
//!   fits a host under the relief target (1 core of 1.5 is 0.67 < 0.75), so relief must
//!   move a memory-intensive VM; with one raised VM and a low one, moving the low one would be
//!   the cheaper relief or none would fit, and the technique would not matter. Once relieved
//!   the two raised VMs want the machine's 2 cores between them, so they still lose some
//!   work to the machine itself (and to whatever else runs on it), whatever the technique;
//! - settle 10 s, hold 30 s: the loaded phase is as long as the scenario needs: detection
//!   (3 samples of a second), the wake (2 s), a migration (a post-copy of the 64 MiB working
//!   set over 1 Gbit/s needs at least 0.54 s; a pre-copy that cannot converge runs until its
//!   60 s deadline, past the fall), and the relieved load observed for a while; the figures
//!   also give each VM's lost work in seconds, which does not depend on the phase's length;
//! - the agents measure each VM's dirty rate every 2 s (their default is 30 s): the manager
//!   prices a move from the latest measurement, whatever its age, so with 30 s it priced a VM
//!   raised 5 s before at its low-demand rate and `auto` chose pre-copy for it;
//! - repack wait up to 60 s: consolidation every 5 s, a host on for 10 s may be emptied, a
//!   moved VM is left alone for 10 s.
//!
//! Every size is a flag of `drover demo`.
//!
//! [`traffic`] is the second experiment, `drover experiment traffic-sensitive` (issue 11):
//! a group of network-bound VMs evacuated with all pre-copy, all post-copy and core's
//! traffic-sensitive group choice.

pub mod config;
pub mod lab_guard;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod series;
pub mod summary;
pub mod traffic;

pub use config::{ConfigError, DemoConfig};
pub use runner::{run_all, run_once, DemoError, RunOutcome};
pub use summary::RunSummary;
