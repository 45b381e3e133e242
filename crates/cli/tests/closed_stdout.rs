//! A command whose stdout is closed early (`drover ... | head -1`) ends quietly, as other Unix
//! tools do: no "failed printing to stdout" panic, no exit status 101. Runs the built binary on
//! a small synthetic simulation (no root, no QEMU, nothing contacted).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");
/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let mut child = Command::new(DROVER)
        .args(["sim", "--synthetic", "20", "--samples", "12", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("run drover");
    // Closing the read end before the simulation prints its first row makes that row's write
    // meet a pipe nobody reads (as `head` leaves it once it has its lines).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for drover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(SIGPIPE),
        "ended by SIGPIPE, as `head` leaves other tools: {:?} {stderr}",
        out.status
    );
}
