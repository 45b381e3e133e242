//! `drover experiment traffic-sensitive`: issue 11's experiment (seed 004, Deshpande & Keahey)
//! on this machine. Several network-bound VMs leave one host together; pre-copy's migration
//! stream leaves the source while they still run there (contending with their outbound
//! traffic), post-copy's arrives at the destination where they already run (contending with
//! their inbound traffic). Does choosing per VM, with core's group choice
//! ([`drover_core::migration::group`]), beat doing them all one way?
//!
//! # One run
//! 1. A fresh 2-host lab with agents, each host's link shaped with tbf to `link_bps` each way
//!    (both ends of its veth), and the lab's traffic peer (`drover lab peer`, unshaped: it
//!    stands for the world beyond the hosts' links) as a child process.
//! 2. VMs on h1, each with a NIC on the lab's VM network and a paced TCP flow with the peer:
//!    `out_vms` sending (`net:dir=out`), `in_vms` receiving (`net:dir=in`).
//! 3. Once every flow runs and the agent has measured every VM, a baseline of `baseline_s`.
//! 4. The schedule: all pre-copy or all post-copy in the traffic order at `concurrency`, or
//!    the group choice's (technique per VM, order, concurrency up to `concurrency`) from the
//!    agents' tap rx/tx means over the baseline, their dirty rates, the VMs' memory (as the
//!    working set, as the manager does), the bytes a pass over each guest's memory moved in
//!    the runs before (the least of its completed migrations; before any, all of memory) and
//!    the links' rate; and the group model's forecast of it (predicted), with the group
//!    model's defaults (`GroupParams::default`, as the manager uses them: weights, and a
//!    schedule forecast to beat both uniform plans on evacuation time and lost work first).
//! 5. The evacuation, driven through h1's agent: the schedule's waves, each wave's migrations
//!    started together and waited for before the next (the model's waves); then `after_s`.
//! 6. Teardown, then the figures ([`summary`]) from the peer's byte counters, the sampler's
//!    link counters and the agents' migration records.
//!
//! # Default sizes, and why
//! For 2 shared cores running the guests under TCG. Links of 200 Mbit/s (25 MB/s) each way: the
//! paper used 1 Gbit/s, which guests under TCG here cannot load, and at 100 Mbit/s one
//! repetition (three evacuations of 41 to 90 s) took 6 minutes. 4 VMs of 128 MiB: a guest
//! here has about 95 MB of non-zero pages whatever its size (a migration of a 128 MiB guest
//! moved 97 MB, of a 256 MiB one 104 MB), so a larger guest only lengthens the run. 2 sending
//! and 2 receiving 7812 KiB/s (8 MB/s) each: each direction of h1's link carries 16 MB/s of
//! application traffic (64%), so two migration streams beside two such flows get a fair share
//! (6.25 MB/s) below what the flows want, and the flows lose throughput. Flows asked 8 MB/s ran
//! at 6.8 to 7.9 MB/s here with the machine's load at 14 (less while other builds ran: the
//! baseline is measured each run, not assumed). Two migrations at a time; a settle of 4 s and a
//! baseline of 8 s. Every size is a flag.

pub mod config;
pub mod peer;
pub mod report;
pub mod run;
pub mod series;
pub mod summary;

pub use config::{Role, Strategy, TrafficConfig, VmPlan};
pub use run::{run_all, run_once, TrafficError, TrafficOutcome};
pub use summary::RunResult;
