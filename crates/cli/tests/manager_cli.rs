//! `drover manager --config FILE`: bad configurations are refused before anything starts,
//! naming the file and the key; a good one runs until SIGTERM and stops cleanly, leaving its
//! store. Runs the built binary against agents nobody serves (loopback ports that refuse); no
//! QEMU, no root. The CLI's manager clients (`manager status`, `host`, `plan`) are run against
//! the running one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Kills the manager however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), "manager-test-token\n").expect("token");
    let text = format!(
        "token_file = \"token\"\nstate_dir = \"state\"\n\n\
         [[agents]]\nname = \"h1\"\nurl = \"http://127.0.0.1:1\"\n\n\
         [[agents]]\nname = \"h2\"\nurl = \"http://127.0.0.1:2\"\n\n{extra}\n\
         [api]\nlisten = \"127.0.0.1:0\"\n"
    );
    let path = dir.join("manager.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs `drover manager --config FILE [args]` to its end: exit success and stderr.
fn manager(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(DROVER)
        .arg("manager")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DROVER_LOG")
        .output()
        .expect("run drover manager");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One HTTP/1.1 GET over a plain socket; the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn bad_configurations_are_refused_naming_the_file_and_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope.toml");
    let (ok, _, err) = manager(&missing, &[]);
    assert!(!ok);
    assert!(
        err.contains("nope.toml") && err.contains("cannot read"),
        "{err}"
    );

    let path = write_config(tmp.path(), "[control]\nhott = 0.9\n");
    let (ok, _, err) = manager(&path, &[]);
    assert!(!ok);
    assert!(err.contains("manager.toml"), "{err}");
    assert!(
        err.contains("unknown field `hott`") && err.contains("line 13"),
        "{err}"
    );

    let path = write_config(tmp.path(), "[loop]\ninterval_s = 0\n");
    let (ok, _, err) = manager(&path, &[]);
    assert!(!ok);
    assert!(err.contains("loop.interval_s: 0"), "{err}");

    let path = write_config(tmp.path(), "[control]\nhot = \"high\"\n");
    let (ok, _, err) = manager(&path, &["--check"]);
    assert!(!ok);
    assert!(err.contains("line 13") && err.contains("hot"), "{err}");
    assert!(!tmp.path().join("state").exists(), "nothing was started");

    let path = tmp.path().join("manager.toml");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("hot = \"high\"", "hot = 0.95");
    std::fs::write(&path, text).expect("config");
    std::fs::write(tmp.path().join("token"), "").expect("empty token");
    let (ok, _, err) = manager(&path, &["--check"]);
    assert!(!ok);
    assert!(err.contains("token_file") && err.contains("empty"), "{err}");
}

#[test]
fn a_good_configuration_checks_and_runs_until_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_config(tmp.path(), "[loop]\ninterval_s = 0.1\n");
    let (ok, out, err) = manager(&path, &["--check"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 agent(s)"), "{out}");

    let log_path = tmp.path().join("manager.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(DROVER)
        .arg("manager")
        .arg("--config")
        .arg(&path)
        .env_remove("DROVER_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run drover manager");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("manager started") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(started.contains("manager started"), "{started}");
    let api = started
        .split("api=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log says where the API listens");
    // A few looks at agents that refuse.
    std::thread::sleep(Duration::from_millis(500));
    let health = http_get(api, "/v1/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    clients_read_and_command_the_manager(api, &tmp.path().join("token"));
    let pid = running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains("SIGTERM") && text.contains("manager stopped"),
        "{text}"
    );
    assert!(
        tmp.path().join("state").join("manager.sqlite").exists(),
        "the store is under the state directory"
    );
}

/// Runs `drover ARGS --manager http://API --token-file TOKEN`: success, stdout, stderr.
fn client(api: &str, token: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(DROVER)
        .args(args)
        .arg("--manager")
        .arg(format!("http://{api}"))
        .arg("--token-file")
        .arg(token)
        .env_remove("DROVER_LOG")
        .env_remove("DROVER_MANAGER")
        .output()
        .expect("run drover");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `drover manager status`, `host list`, `plan list`, `migration list|show` against the
/// running manager, and the refusals of unknown hosts, plans and migrations, of a bad VM name
/// and of a wrong token, each naming what was wrong.
fn clients_read_and_command_the_manager(api: &str, token: &Path) {
    let (ok, out, err) = client(api, token, &["manager", "status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["hosts"], 2, "{out}");
    assert_eq!(status["reachable"], 0, "agents nobody serves: {out}");
    let (ok, out, err) = client(api, token, &["manager", "status"]);
    assert!(ok && out.contains("hosts 2 (0 reachable)"), "{out}{err}");

    let (ok, out, err) = client(api, token, &["host", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("h1") && out.contains("h2") && out.contains("NO"),
        "{out}"
    );
    let (ok, out, err) = client(api, token, &["host", "list", "--json"]);
    assert!(ok, "{err}");
    let hosts: serde_json::Value = serde_json::from_str(&out).expect("hosts JSON");
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{out}");

    let (ok, out, err) = client(api, token, &["plan", "list", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]", "no plan without reachable hosts");

    let (ok, out, err) = client(api, token, &["migration", "list", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]", "no migration without reachable hosts");
    let (ok, out, err) = client(api, token, &["migration", "list", "--vm", "vm1"]);
    assert!(ok && out.contains("route"), "{out}{err}");
    let (ok, _, err) = client(api, token, &["migration", "list", "--vm", "a b"]);
    assert!(
        !ok && err.contains("400") && err.contains("vm 'a b'"),
        "{err}"
    );
    let (ok, _, err) = client(api, token, &["migration", "show", "m-nope"]);
    assert!(
        !ok && err.contains("404") && err.contains("m-nope"),
        "{err}"
    );
    let (ok, _, err) = client(api, token, &["plan", "show", "p-nope"]);
    assert!(
        !ok && err.contains("404") && err.contains("p-nope"),
        "{err}"
    );
    let (ok, _, err) = client(api, token, &["plan", "approve", ".."]);
    assert!(!ok && err.contains("plan id '..'"), "{err}");
    let (ok, _, err) = client(api, token, &["host", "drain", "h9"]);
    assert!(!ok && err.contains("404") && err.contains("h9"), "{err}");

    let wrong = token.with_file_name("wrong-token");
    std::fs::write(&wrong, "not-the-token-at-all\n").expect("token");
    let (ok, _, err) = client(api, &wrong, &["manager", "status"]);
    assert!(!ok && err.contains("401"), "{err}");
    let out = Command::new(DROVER)
        .args(["host", "list", "--manager", "http://127.0.0.1"])
        .arg("--token-file")
        .arg(token)
        .output()
        .expect("run drover");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--manager"), "{err}");
}
