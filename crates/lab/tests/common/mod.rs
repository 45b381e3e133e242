//! Helpers for the root-only lab tests: prerequisites, unique lab names, a guard that runs `down`
//! even when a test panics, and running code inside a host's network namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use drover_testkit::in_netns;

use drover_lab::{detect_layout, CgroupLayout, LabDirs, LabName, LabSpec, LabState, RealSystem};

/// Returns from the test (or fails it, under CI) unless this machine can make labs, then holds
/// the lab tests' lock for the rest of the test.
macro_rules! require_lab {
    () => {
        drover_testkit::require!(
            drover_testkit::Need::Root,
            drover_testkit::IP,
            drover_testkit::TC
        );
        // One lab test at a time: the CPU-cap and throughput checks need the cores.
        let _serial = common::serial();
    };
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the lab tests' lock (a failed test must not block the others: poisoning is ignored).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
pub(crate) use require_lab;

/// A lab name unique to this test process and test (`t<pid><tag>`, at most 8 characters).
pub fn lab_name(tag: char) -> LabName {
    let name = format!("t{}{tag}", std::process::id() % 100_000);
    LabName::new(&name).expect("valid test lab name")
}

/// Runs `down` on drop so no test leaves namespaces, links or cgroups behind.
pub struct Guard {
    pub name: LabName,
    pub dirs: LabDirs,
    pub layout: CgroupLayout,
    _tmp: tempfile::TempDir,
}

impl Guard {
    pub fn new(tag: char) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = LabDirs {
            root: tmp.path().to_path_buf(),
        };
        let layout = detect_layout(&mut RealSystem).expect("cgroup layout");
        Self {
            name: lab_name(tag),
            dirs,
            layout,
            _tmp: tmp,
        }
    }

    pub fn spec(&self, hosts: u32) -> LabSpec {
        LabSpec::new(self.name.as_str(), hosts).expect("spec")
    }

    pub fn up(&self, spec: &LabSpec) -> LabState {
        match drover_lab::up(&mut RealSystem, &self.dirs, spec, &self.layout) {
            Ok(s) => s,
            Err(e) => panic!("lab up: {e}"),
        }
    }

    pub fn down(&self) -> drover_lab::DownReport {
        match drover_lab::down(&mut RealSystem, &self.dirs, &self.name, &self.layout) {
            Ok(r) => r,
            Err(e) => panic!("lab down: {e}"),
        }
    }

    /// Everything of this lab the machine still has, as text (empty when clean).
    pub fn leftovers(&self) -> String {
        let found = drover_lab::discover(&mut RealSystem, &self.dirs, &self.name, &self.layout)
            .expect("discover");
        let mut out = String::new();
        if !found.is_empty() {
            out = format!("{found:?}");
        }
        let netns = sh("ip netns list");
        let links = sh("ip -o link show");
        for text in [netns, links] {
            if text.contains(&self.name.prefix()) {
                out.push_str(&format!("\nstill listed: {text}"));
            }
        }
        for root in self.layout.roots() {
            let d = root.join("drover").join(self.name.as_str());
            if d.exists() {
                out.push_str(&format!("\ncgroup dir {}", d.display()));
            }
        }
        out
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = drover_lab::down(&mut RealSystem, &self.dirs, &self.name, &self.layout) {
            eprintln!("cleanup of lab {}: {e}", self.name);
        }
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `argv` inside the host's cgroup (and namespace, if `argv` says so).
pub fn spawn_in_cgroup(procs: &[PathBuf], argv: &[&str]) -> Child {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let full = drover_lab::plan::in_cgroup_argv(procs, &argv);
    Command::new(&full[0])
        .args(&full[1..])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn")
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

pub fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}
