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
//! 3. phases ([`phase`]: an explicit state machine): settle; raise (the first `raise` VMs
//!    rewrite their working set at `high_demand` of their own full speed, or flat out:
//!    beyond h1's cap together, and a dirty rate no link here keeps up with; changed on
//!    command through the agent, no reboot); hold (the loaded phase); fall (back to the low
//!    rate); wait, bounded, for the manager to repack and put a host back in
//!    standby; teardown (also on an error, and on a signal when the caller drops the future);
//! 4. a sampler polls every agent each second; the figures ([`metrics`], [`summary`]) are
//!    computed from that series and from what the manager (plans) and agents (migration
//!    records) kept.
//!
//! # Default sizes, and why
//! For a 2-core machine running guests under TCG (no KVM):
//! - 3 hosts capped at 1 core, 1 Gbit/s links (the papers' links);
//! - 2 VMs of 256 MiB, each with a 64 MiB working set, low demand 2000 ops/s (an idle TCG
//!   guest still takes about 0.28 of a core here), both raised to half their own full speed
//!   (`high_demand` 50%, from the guest's `full_ops_per_s`, which a paced guest re-measures
//!   every 5 s; 1.05-1.25 million pages a second here, rewriting the working set many
//!   times a second: pre-copy cannot converge over any link here). A raised VM costs its
//!   QEMU about 0.5 + 0.5 x 0.28 = 0.64 of a core (the agents' demand counts the idle cost
//!   for the half it idles), so two overload h1 (1.3 on 1, hot over 0.9), one alone fits a
//!   host under the relief target (0.64 < 0.75), so relief must move a memory-intensive VM,
//!   and once relieved each runs alone on a core with room to spare; the two together still
//!   fit the machine's 2 cores beside the agents and the manager, so what they lose is the
//!   overload's and the migration's, not the machine's (on a quiet machine). With one raised
//!   VM and a low one, moving the low one would be the cheaper relief or none would fit, and
//!   the technique would not matter. Flat out (`--high-demand max`, on 1.5-core hosts: the
//!   first measurements in BENCHMARKS.md and the end-to-end test) the two relieved VMs want
//!   the whole machine and lose work to it whatever the technique. On 1-core hosts, after
//!   the fall, the two idle guests read 0.38-0.48 of a core each here, together over a
//!   1-core host's 0.75 target, so the repack came in only 3 of 12 measured runs (1.2-core
//!   hosts with a 60% raise are the next size to measure);
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
pub mod phase;
pub mod plot;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod series;
pub mod summary;
pub mod traffic;

pub use config::{ConfigError, DemoConfig, HighDemand};
pub use runner::{run_all, run_once, DemoError, DemoOutcome, RunOutcome};
pub use summary::RunSummary;
