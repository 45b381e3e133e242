//! Boots the real guest image under QEMU (TCG) and checks the workloads' reports.
//!
//! Needs scripts/setup to have run (kernel package, busybox-static) and qemu-system-x86_64 (a
//! failure under CI when missing, a loud skip elsewhere).

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover_qemu::image::{self, NoProgress};
use drover_testkit::{require, QEMU as NEED_QEMU};

const QEMU: &str = "qemu-system-x86_64";
/// Generous for two guests booting at once on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(25);
/// How much guest time the reports must cover.
const OBSERVE_MS: u64 = 2000;

/// A running guest; killed (and its files removed) however the test ends.
struct Vm {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    fn metrics_sock(&self) -> PathBuf {
        self.dir.path().join("metrics.sock")
    }
}

fn boot(workload: &str) -> Vm {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image::build(&dir.path().join("image"), &NoProgress)
        .unwrap_or_else(|e| panic!("building the guest image: {e}"));
    let console = dir.path().join("console.log");
    let sock = dir.path().join("metrics.sock");
    let child = Command::new(QEMU)
        .args(["-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults"])
        .args(["-display", "none", "-no-user-config", "-no-reboot"])
        .arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&img.initrd)
        .arg("-append")
        .arg(image::kernel_cmdline(workload))
        .arg("-chardev")
        .arg(format!("file,id=con,path={}", console.display()))
        .args(["-serial", "chardev:con"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=met,path={},server=on,wait=off",
            sock.display()
        ))
        .args(["-serial", "chardev:met"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {QEMU}: {e}"));
    Vm { child, dir }
}

fn connect(path: &Path, start: Instant) -> UnixStream {
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("connecting to {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reads reports until they span OBSERVE_MS of guest time, returning them with the wall-clock
/// time the first one arrived (since `start`).
fn collect(vm: &mut Vm, start: Instant) -> (Vec<serde_json::Value>, Duration) {
    let stream = connect(&vm.metrics_sock(), start);
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set_read_timeout");
    let mut reader = BufReader::new(stream);
    let mut reports: Vec<serde_json::Value> = Vec::new();
    let mut first_at = None;
    let mut line = String::new();
    while start.elapsed() < DEADLINE {
        if let Ok(Some(status)) = vm.child.try_wait() {
            panic!("QEMU exited ({status}); console:\n{}", vm.console());
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => panic!("metrics socket closed; console:\n{}", vm.console()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading metrics: {e}"),
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad report line {line:?}: {e}"));
        first_at.get_or_insert(start.elapsed());
        reports.push(v);
        let t = |r: &serde_json::Value| r["t_ms"].as_u64().unwrap_or(0);
        if t(reports.last().unwrap()) - t(&reports[0]) >= OBSERVE_MS {
            return (reports, first_at.unwrap_or_default());
        }
    }
    panic!(
        "no {OBSERVE_MS} ms of reports within {DEADLINE:?} ({} lines); console:\n{}",
        reports.len(),
        vm.console()
    );
}

fn field(r: &serde_json::Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("report without integer {k}: {r}"))
}

#[test]
fn memtouch_boots_reports_and_keeps_integrity() {
    require!(NEED_QEMU);
    let start = Instant::now();
    let mut vm = boot("memtouch:wss=32M,rate=max");
    let (reports, first) = collect(&mut vm, start);
    let (a, z) = (&reports[0], reports.last().unwrap());
    eprintln!(
        "memtouch: first report {first:?} after launch; {} reports; last {z}",
        reports.len()
    );
    for r in &reports {
        assert_eq!(r["workload"], "memtouch");
        assert_eq!(field(r, "integrity_errors"), 0, "{r}");
        assert_eq!(field(r, "pages"), 8192);
        assert!(r["ops_per_s"].is_number());
    }
    assert!(
        field(z, "ops") > field(a, "ops"),
        "ops did not grow: {a} .. {z}"
    );
    // Roughly every 100 ms.
    let span = field(z, "t_ms") - field(a, "t_ms");
    let per_line = span / (reports.len() as u64 - 1);
    assert!(
        (50..=400).contains(&per_line),
        "{per_line} ms between reports"
    );
    assert!(vm.console().contains("drover-init: up at"));
}

#[test]
fn cpu_demand_boots_and_counts_work() {
    require!(NEED_QEMU);
    let start = Instant::now();
    let mut vm = boot("cpu:demand=50");
    let (reports, first) = collect(&mut vm, start);
    let (a, z) = (&reports[0], reports.last().unwrap());
    eprintln!("cpu: first report {first:?} after launch; last {z}");
    for r in &reports {
        assert_eq!(r["workload"], "cpu");
        assert_eq!(field(r, "integrity_errors"), 0);
        assert_eq!(field(r, "pages"), 0);
    }
    assert!(
        field(z, "ops") > field(a, "ops"),
        "ops did not grow: {a} .. {z}"
    );
}
