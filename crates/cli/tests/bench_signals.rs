//! `drover migrate-bench` stopped by SIGTERM or SIGINT (what `timeout`, a service manager and
//! Ctrl-C send) leaves nothing behind: no QEMU of its run and no temporary directory.
//!
//! The bench runs as a child process with the real QEMU (TCG, a small idle guest) and its own
//! `TMPDIR`, so "its QEMUs" are the processes whose command line mentions that directory (every
//! QEMU's sockets and logs live in the run's directory inside it) and "its temporary
//! directories" are whatever is left in it. Needs QEMU and the guest image's inputs (root is
//! not needed); everything is killed and removed when the test ends, also when it fails.

use drover_testkit::{kill_processes_mentioning, processes_mentioning, require, QEMU};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// A bench run in a private temporary directory, killed with everything it started when
/// dropped (the clean-up of a failed test; a passing one finds nothing left to kill).
struct Bench {
    child: Child,
    tmp: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn start() -> Bench {
        let dir = tempfile::tempdir().expect("temporary directory");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("TMPDIR");
        let log = dir.path().join("bench.log");
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(DROVER)
            .args([
                "migrate-bench",
                "--accel",
                "tcg",
                "--memory",
                "128M",
                "--workload",
                "idle",
                "-t",
                "postcopy",
                "--json",
            ])
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start drover migrate-bench");
        Bench {
            child,
            tmp,
            log,
            _dir: dir,
        }
    }

    fn tag(&self) -> String {
        self.tmp.display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until one of the bench's QEMUs runs.
    fn wait_for_qemu(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if processes_mentioning(&self.tag())
                .iter()
                .any(|cmd| cmd.contains("qemu-system"))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the bench ended ({status}) before a QEMU ran:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no QEMU of the bench within 120 s:\n{}", self.log());
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the bench to exit.
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the bench did not stop within 30 s of the signal:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let left = kill_processes_mentioning(&self.tag());
        if !left.is_empty() {
            eprintln!("processes still there after clean-up: {left:?}");
        }
    }
}

/// The processes mentioning `tag`, after waiting (bounded) for them to go.
fn left_mentioning(tag: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = processes_mentioning(tag);
        if left.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_stopped_bench_kills_its_qemus_and_removes_its_temporary_directory() {
    require!(QEMU);
    // The guest image, built (or found up to date) before the bench, so the bench boots at once.
    let built = Command::new(DROVER)
        .args(["image", "build"])
        .output()
        .expect("run drover image build");
    assert!(
        built.status.success(),
        "drover image build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    // SIGTERM once the guest has had time to boot (the bench is waiting for its workload or
    // migrating); SIGINT as soon as a QEMU exists, while it may still be creating its sockets.
    for (signal, number, after) in [("TERM", 15, 4), ("INT", 2, 0)] {
        let mut bench = Bench::start();
        bench.wait_for_qemu();
        std::thread::sleep(Duration::from_secs(after));
        bench.signal(signal);
        let status = bench.wait();
        assert_eq!(
            status.code(),
            Some(128 + number),
            "SIG{signal}: the bench's exit status:\n{}",
            bench.log()
        );
        let left = left_mentioning(&bench.tag());
        assert!(left.is_empty(), "SIG{signal}: QEMUs left behind: {left:?}");
        let dirs = entries(&bench.tmp);
        assert!(
            dirs.is_empty(),
            "SIG{signal}: left in the bench's TMPDIR: {dirs:?}"
        );
        assert!(
            bench.log().contains(&format!("stopped by SIG{signal}")),
            "{}",
            bench.log()
        );
    }
}
