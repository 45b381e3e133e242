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
//! - 3 hosts capped at 1.2 cores, 1 Gbit/s links (the papers' links);
//! - 2 VMs of 320 MiB, each with a 192 MiB working set, low demand 2000 ops/s (an idle TCG
//!   guest still takes about 0.28 of a core here), both raised to 60% of their own full speed
//!   (`high_demand`, from the guest's `full_ops_per_s`, which a paced guest re-measures every
//!   5 s; about a million pages a second here, rewriting the working set several times a
//!   second). A raised VM costs its QEMU about 0.6 + 0.4 x 0.28 = 0.71 of a core (the
//!   agents' demand counts the idle cost for the share it idles), so two overload h1 (1.42
//!   on 1.2), one alone fits a host under the relief target (0.71 < 0.9), so relief must move
//!   a memory-intensive VM, and once relieved each runs alone with room to spare; the two
//!   together still fit the machine's 2 cores beside the agents and the manager, so what
//!   they lose is the overload's and the migration's, not the machine's (on a quiet
//!   machine). With one raised VM and a low one, moving the low one would be the cheaper
//!   relief or none would fit, and the technique would not matter;
//! - why a 192 MiB working set: it takes 1.6 s to cross the link, five times the migrations'
//!   300 ms downtime limit (core's `Knobs` default), so a pre-copy cannot converge on its own and runs until auto-converge
//!   has throttled the guest (about 16 s and 1.8 GB sent in a trial), with the overload held
//!   meanwhile, while a post-copy switches at once and fetches the working set in about
//!   1.6 s: the papers' contrast. With 64 MiB (0.54 s) a throttled pre-copy converged soon
//!   enough that every technique relieved within 3 s of the others and the run-to-run spread hid the
//!   difference (BENCHMARKS.md);
//! - why 1.2 cores: after the fall the two idle guests read 0.38-0.48 of a core each here,
//!   0.86 together, over a 1-core host's 0.75 target (the repack came in 3 of 12 runs) and
//!   under a 1.2-core host's 0.9; flat out (`--high-demand max`, on 1.5-core hosts: the first
//!   measurements in BENCHMARKS.md and the end-to-end test) the two relieved VMs want the
//!   whole machine and lose work to it whatever the technique;
//! - settle 10 s, hold 30 s: the loaded phase is as long as the scenario needs: detection
//!   (3 samples of a second, the agents' metrics refreshed every 2 s), the wake (2 s), a
//!   migration (a post-copy of the working set needs at least 1.6 s; a pre-copy runs until
//!   throttled into converging or to its 60 s deadline), and the relieved load observed for
//!   a while; the figures also give each VM's lost work in seconds, which does not depend on
//!   the phase's length;
//! - the agents measure each VM's dirty rate at their default interval (30 s) and again as
//!   soon as a VM's pace moves (the agent's `metrics::dirty_due`): the manager prices a move
//!   from the latest measurement, and before that re-measure it priced a VM raised 5 s before
//!   at its low-demand rate and `auto` chose pre-copy for it (the demo ran its agents at 2 s
//!   to hide it);
//! - repack wait up to 60 s: consolidation every 5 s, a host on for 10 s may be emptied, a
//!   moved VM is left alone for 10 s.
//!
//! Every size is a flag of `drover demo`.
//!
//! [`traffic`] is the second experiment, `drover experiment traffic-sensitive` (issue 11):
//! a group of network-bound VMs evacuated with all pre-copy, all post-copy and core's
//! traffic-sensitive group choice.
//!
//! [`wan`] is the third, `drover experiment wan-hybrid` (issue 12): a VM with busy memory and a
//! busy local disk moved over a lab WAN with pure pre-copy, pure post-copy and the WAN fraction
//! model's hybrid, each figure measured beside the model's prediction.

pub mod agent_call;
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
pub mod wan;

pub use config::{ConfigError, DemoConfig, HighDemand};
pub use runner::{run_all, run_once, DemoError, DemoOutcome, RunOutcome};
pub use summary::RunSummary;
