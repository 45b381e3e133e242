//! `drover experiment wan-hybrid`: issue 12's experiment (seed 002, Zhang, Lam & Wang) on this
//! machine. A VM whose memory and local disk are both busy moves from h1 to h2 over a slow, far
//! link with pure pre-copy (memory and storage), pure post-copy (memory and storage) and the
//! fraction model's hybrid ([`drover_core::migration::wan`]); is the model's hybrid's
//! restoration agility better than both, and how far off were the model's predictions?
//!
//! # One run
//! 1. A fresh 2-host lab with agents whose h1-h2 path is the WAN (`--wan`, as `drover lab up
//!    --wan h1-h2=100Mbit/s,50ms`: tbf for the rate, the delay line for the delay).
//! 2. The VM on h1 with a local qcow2 disk the agent creates, running `memtouch+disk`.
//! 3. The prediction: h1's agent profiles the VM for `window_s` and plans (`wan-plan`) over
//!    the WAN's rate and round trip (twice the one-way delay); each strategy takes its forecast
//!    from that plan: the pure corners (`m = s = 1`, `m = s = 0`) or the model's pick.
//! 4. A baseline of `baseline_s` (the restoration's "before"), then the strategy's migration
//!    request to h1's agent ([`Strategy::request`]), waited for; then `after_s` of observation.
//! 5. Teardown, then the figures ([`figures`]) from the sampler's series (the guest's
//!    cumulative work four times a second) and the agent's record.
//!
//! A refused request (today the model's hybrid: `storage: hybrid` is refused by the agent's
//! contract, `HYBRID_NOT_RUN`, until the agent runs the storage hybrid) is a result: reported
//! as refused with the message, its prediction kept; the other strategies still run.
//!
//! # Default sizes, and why
//! For 2 shared cores running the guest under TCG, one repetition of the three strategies in
//! a few minutes: 256 MiB of memory (a guest here has about 95 MB of non-zero pages whatever
//! its size, so more memory only lengthens the run), a 128 MiB disk, the workload
//! `memtouch:wss=64M,rate=1000+disk:wss=32M,rate=100,read=50`: 4 MB/s of page writes over a 64
//! MiB working set (a third of the link, so pre-copy converges in a few passes rather than
//! never, and post-copy has a working set to fetch) and 100 disk operations a second on 4 KiB
//! blocks of a 32 MiB working set, half writes (the disk's hot set: a quarter of the disk,
//! which the model can send ahead while leaving the cold rest to the stream). At the link's
//! rate the memory's ~95 MB would take about 8 s a pass and the disk 11 s; measured here
//! (BENCHMARKS.md) both storage jobs are bound by the WAN's round trip instead (QEMU's mirror
//! and stream work a request at a time over NBD): a pre-copy took 94 to 111 s (its mirror 60 s
//! to READY), a post-copy 98 to 108 s (its stream 82 to 92 s), so a run with its lab, boot,
//! plan (3 s), baseline (5 s) and observation (10 s) takes 1.5 to 2.5 minutes (a refused one
//! less than one) and `--repeat 3` took 13 minutes. Both storage jobs cover the
//! whole disk, so `--disk-size 64M` should about halve them (not measured); the disk is kept
//! four times its working set so that the model has a cold rest to leave for after the
//! switchover. Every size is a flag.

pub mod config;
pub mod figures;
pub mod report;
pub mod run;

pub use config::{Strategy, WanConfig};
pub use figures::{Figure, RunResult};
pub use run::{run_all, run_once, WanOutcome, WanRunError};
