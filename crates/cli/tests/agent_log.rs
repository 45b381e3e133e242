//! What `drover agent` writes to a log file (its stderr is not a terminal there): one start-up
//! line at the default level saying where it listens, its state directory, capacity and id;
//! warnings about a token others can read or guess; no colour codes. Runs the built binary on
//! loopback; no QEMU, no root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Kills the agent however the test ends.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_log_says_how_it_started_and_has_no_colour_codes() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("token");
    std::fs::write(&token, "short\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let log_path = tmp.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let state = tmp.path().join("state");
    let child = Command::new(DROVER)
        .args(["agent", "--listen", "127.0.0.1:0", "--link", "10MB/s"])
        .arg("--state-dir")
        .arg(&state)
        .arg("--token-file")
        .arg(&token)
        .env_remove("DROVER_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run drover agent");
    let _agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("agent started") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("agent started"), "{text}");
    let id = std::fs::read_to_string(state.join("agent-id")).expect("agent id");
    for part in [
        "listen=127.0.0.1:",
        &format!("state_dir={}", state.display()),
        "memory_bytes=",
        "link_bps=Some(10000000)",
        &format!("agent_id={}", id.trim()),
    ] {
        assert!(text.contains(part), "no {part}: {text}");
    }
    assert!(text.contains("chmod 600"), "{text}");
    assert!(text.contains("5 bytes long"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}
