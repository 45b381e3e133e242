//! The agent's OpenAPI document is its contract, checked by schemathesis against a live agent:
//! the real `drover agent` with real QEMU (TCG), in a network namespace of its own that has only
//! loopback, so no request the agent makes (a migration to a generated `to` URL) leaves it.
//!
//! Schemathesis generates schema-valid requests for every operation (a bounded number of
//! examples each) and checks every answer: no 5xx, only documented status codes and content
//! types, bodies that match their schemas, and no schema-valid request rejected. "Rejected" is
//! decided as follows (tests/api_contract/schemathesis.toml and hooks.py):
//! - 404 (no such VM or migration) and 409 (name taken, not enough free memory, disk absent,
//!   no VM network for a NIC, VM busy, destination is this host, ...) answer the host's state, not the data; the
//!   document lists them per operation, and they pass;
//! - 400 and 422 reject the data and fail, except two 422s: the document states the two rules
//!   JSON Schema cannot (a memtouch working set must fit the VM's memory, two fields compared;
//!   a forwarded migration URI, or NBD address, must be the one the agent made for that
//!   incoming VM, an export its disk's) and quotes
//!   their refusals. The hook lets a 422 through only when it is one of those refusals, about
//!   the request's own values (its numbers; its VM name), for a request that does break the
//!   rule as documented.
//!
//! The agent's memory capacity is small (256M), so at most four minimal VMs boot at once and
//! most generated sizes are refused with 409. Needs root, `ip`, QEMU and schemathesis' `st`
//! (scripts/setup installs it): a failure under CI when missing, a loud skip elsewhere.
//! Everything it starts (agent, QEMUs, schemathesis, the namespace, the temporary directory) is
//! removed when the test ends, also when it fails. Set DROVER_ST_SEED to replay a run's seed.

use drover_testkit::{
    kill_processes_mentioning, processes_mentioning, require, Need, IP, QEMU, SCHEMATHESIS,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// The agent's port inside the namespace (nothing else listens there).
const PORT: u16 = 7700;

/// Examples schemathesis generates per operation in each pass of a phase.
const EXAMPLES_PER_OPERATION: &str = "50";

/// Schemathesis' time budget, s: it repeats fuzzing and stateful passes (each bounded by
/// [`EXAMPLES_PER_OPERATION`]) until it is spent. Ninety seconds make several thousand
/// requests here, enough for stateful sequences to reach incoming VMs and running migrations.
const BUDGET_S: &str = "90";

/// Longest the schemathesis process may run (its budget, waiting for the schema, a request
/// in flight at the end); it is killed beyond it and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const HOOKS: &str = include_str!("api_contract/hooks.py");
const CONFIG: &str = include_str!("api_contract/schemathesis.toml");

/// The checks, with `positive_data_acceptance` as hooks.py narrows it.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,positive_data_acceptance_but_workload_fit";

/// A network namespace with loopback up, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// `program args` inside this namespace.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent, and every QEMU it started: QEMU runs detached (it outlives the agent by design),
/// so dropping this kills the agent, then every process that mentions the agent's state
/// directory (each QEMU's command line names its run directory inside it).
struct Agent {
    process: Reaped,
    state_dir: PathBuf,
}

impl Agent {
    fn start(ns: &Netns, dir: &Path) -> Agent {
        let state_dir = dir.join("state");
        let token_file = dir.join("token");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let err = log.try_clone().expect("agent log");
        let listen = format!("127.0.0.1:{PORT}");
        let child = ns
            .command(
                DROVER,
                &[
                    "agent",
                    "--listen",
                    &listen,
                    "--state-dir",
                    &state_dir.display().to_string(),
                    "--token-file",
                    &token_file.display().to_string(),
                    "--accel",
                    "tcg",
                    "--memory",
                    "256M",
                ],
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start drover agent");
        Agent {
            process: Reaped(child),
            state_dir,
        }
    }

    fn is_running(&mut self) -> bool {
        matches!(self.process.0.try_wait(), Ok(None))
    }

    /// Stops the agent and its QEMUs; the command lines of any process still there.
    fn stop(&mut self) -> Vec<String> {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        kill_processes_mentioning(&self.state_dir.display().to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let left = self.stop();
        if !left.is_empty() {
            eprintln!("processes left after the agent stopped: {left:?}");
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for `child` to end, killing it after `limit`; its status, or None when killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Schemathesis' own Python interpreter: the one named on the first line of the `st` script
/// found on `PATH` (pip writes it so).
fn schemathesis_python() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let st = std::env::split_paths(&path)
        .map(|dir| dir.join("st"))
        .find(|f| f.is_file())
        .expect("st on PATH");
    let script = std::fs::read_to_string(&st).unwrap_or_default();
    let interpreter = script.lines().next().and_then(|l| l.strip_prefix("#!"));
    PathBuf::from(
        interpreter
            .unwrap_or_else(|| panic!("{} is not a script", st.display()))
            .trim(),
    )
}

/// What schemathesis' summary says after `label` (on the same line, or on the next one when
/// the label stands alone), trimmed; empty when the label is not there.
fn summary(output: &str, label: &str) -> String {
    let mut lines = output.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix(label) {
            if rest.is_empty() {
                return lines.find(|l| !l.is_empty()).unwrap_or("").to_string();
            }
            return rest.trim().to_string();
        }
    }
    String::new()
}

#[test]
fn the_agents_openapi_document_is_its_contract_against_a_live_agent() {
    require!(Need::Root, IP, QEMU, SCHEMATHESIS);
    let version = run("st", &["--version"]);
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    assert!(
        version.starts_with("st, version "),
        "`st` is not schemathesis: {version}"
    );
    // The guest image, built (or found up to date) before the agent needs it, so no request
    // waits for a build.
    run(DROVER, &["image", "build"]);

    let dir = tempfile::tempdir().expect("temporary directory");
    // A token as the agent takes them: printable ASCII, no spaces (a Debug-printed Instant has both).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("contract-{}-{nanos}", std::process::id());
    std::fs::write(dir.path().join("token"), &token).expect("token file");
    let hooks = dir.path().join("hooks.py");
    std::fs::write(&hooks, HOOKS).expect("hooks");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).expect("config");
    // The hook's own cases first: it must let through the documented 422 and nothing else.
    let python = schemathesis_python();
    let selftest = run(
        python.to_str().expect("utf-8 path"),
        &[hooks.to_str().expect("utf-8 path")],
    );
    eprint!("{}", String::from_utf8_lossy(&selftest.stdout));

    let ns = Netns::new(format!("drvst{}", std::process::id()));
    let mut agent = Agent::start(&ns, dir.path());

    let schema = format!("http://127.0.0.1:{PORT}/v1/openapi.json");
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "--config-file",
        config.to_str().expect("utf-8 path"),
        "run",
        &schema,
        "--header",
        &auth,
        "--mode",
        "positive",
        "--checks",
        CHECKS,
        "--max-examples",
        EXAMPLES_PER_OPERATION,
        "--max-time",
        BUDGET_S,
        "--workers",
        "1",
        // The agent answers once its listener is up; until then schemathesis retries.
        "--wait-for-schema",
        "30",
        // Creating a VM waits for QEMU (30 s at most); a longer wait is a hang.
        "--request-timeout",
        "60",
        "--generation-database",
        "none",
        "--no-color",
    ];
    let seed = std::env::var("DROVER_ST_SEED").ok();
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    let output_path = dir.path().join("schemathesis.out");
    let output = std::fs::File::create(&output_path).expect("schemathesis output");
    let started = Instant::now();
    let mut st = Reaped(
        ns.command("st", &args)
            .current_dir(dir.path())
            .env("SCHEMATHESIS_HOOKS", &hooks)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("output"))
            .stderr(output)
            .spawn()
            .expect("start schemathesis"),
    );
    let status = wait_bounded(&mut st.0, RUN_LIMIT);
    let took = started.elapsed();
    let text = std::fs::read_to_string(&output_path).unwrap_or_default();
    // The end of the agent's log, for a failure's message.
    let agent_log = || {
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    eprintln!("{text}");
    eprintln!("schemathesis ({version}) took {took:?}");

    let status = status.unwrap_or_else(|| {
        panic!(
            "schemathesis ran over {RUN_LIMIT:?} and was stopped; agent log:\n{}",
            agent_log()
        )
    });
    assert!(
        agent.is_running(),
        "the agent died during the run; its log:\n{}",
        agent_log()
    );
    assert!(
        status.success(),
        "schemathesis found the document and the agent disagreeing ({status}); see its report \
         above; agent log:\n{}",
        agent_log()
    );
    // Every operation of the document was exercised, not merely loaded (but the document's
    // own, which schemathesis leaves out: it is where the run starts).
    let operations = drover_api::openapi::ROUTES.len() - 1;
    assert_eq!(
        (summary(&text, "Selected:"), summary(&text, "Tested:")),
        (format!("{operations}/{operations}"), operations.to_string()),
        "schemathesis did not test every operation:\n{text}"
    );
    eprintln!(
        "operations tested: {operations}; test cases: {}; seed: {}",
        summary(&text, "Test cases:"),
        summary(&text, "Seed:")
    );

    let left = agent.stop();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    drop(agent);
    let ns_name = ns.0.clone();
    drop(ns);
    let netns = run("ip", &["netns", "list"]);
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&ns_name),
        "namespace {ns_name} left behind"
    );
    let state = dir.path().display().to_string();
    assert!(processes_mentioning(&state).is_empty());
}
