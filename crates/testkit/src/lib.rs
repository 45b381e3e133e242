//! Helpers for the tests that use the real machine (root, `ip`/`tc`, network namespaces, QEMU).
//!
//! A test states what it needs first, with [`require!`]. When something is missing, under CI (the
//! environment variable `CI` set, to any value) the test fails with a message naming it; elsewhere
//! it prints one `SKIPPED` line to stderr (past the test harness's output capture, so it shows
//! without `--nocapture`) and returns. A silent early return would let CI pass without testing.

pub mod netns;
pub mod prereq;
pub mod procs;

pub use netns::in_netns;
pub use prereq::{prerequisites_met, Need, IP, QEMU, QEMU_IMG, SCHEMATHESIS, TC};
pub use procs::{kill_processes_mentioning, processes_mentioning};

/// Returns from the calling test (skip) or panics (under CI) unless every need is met.
///
/// ```no_run
/// fn boots_a_guest_in_a_namespace() {
///     drover_testkit::require!(drover_testkit::Need::Root, drover_testkit::IP, drover_testkit::QEMU);
///     // ... the test proper
/// }
/// ```
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::prerequisites_met(&[$($need),+]) {
            return;
        }
    };
}
