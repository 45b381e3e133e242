//! A scripted [`System`] for tests: it records every call as one line in `ops`, answers reads
//! and commands from tables, and fails the call number `fail_at` (0-based) or any call whose
//! line starts with `fail_on`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::system::{Cmd, LabLock, System, SystemError};

#[derive(Debug, Default)]
pub struct FakeSystem {
    /// One line per call, e.g. `run ip link add ...`, `mkdir /x`, `write /x = 1`.
    pub ops: Vec<String>,
    pub fail_at: Option<usize>,
    pub fail_on: Option<String>,
    /// stdout of commands, keyed by their display form.
    pub outputs: BTreeMap<String, String>,
    /// Files (cgroup.procs, the state file) and their contents; writes land here too.
    pub files: BTreeMap<PathBuf, String>,
    pub dirs: BTreeSet<PathBuf>,
    next_pid: u32,
}

impl FakeSystem {
    pub fn new() -> Self {
        Self {
            next_pid: 1000,
            ..Self::default()
        }
    }

    fn record(&mut self, line: String) -> Result<(), SystemError> {
        let index = self.ops.len();
        self.ops.push(line.clone());
        let hit_index = self.fail_at == Some(index);
        let hit_prefix = self.fail_on.as_deref().is_some_and(|p| line.starts_with(p));
        if hit_index || hit_prefix {
            return Err(SystemError::Injected(line));
        }
        Ok(())
    }

    /// Index of the first op equal to `line`.
    pub fn position(&self, line: &str) -> Option<usize> {
        self.ops.iter().position(|o| o == line)
    }
}

fn not_found(op: &'static str, path: &Path) -> SystemError {
    SystemError::io(op, path, std::io::Error::from(std::io::ErrorKind::NotFound))
}

impl System for FakeSystem {
    fn run(&mut self, cmd: &Cmd) -> Result<String, SystemError> {
        let line = cmd.to_string();
        self.record(format!("run {line}"))?;
        Ok(self.outputs.get(&line).cloned().unwrap_or_default())
    }

    fn mkdir(&mut self, path: &Path) -> Result<(), SystemError> {
        self.record(format!("mkdir {}", path.display()))?;
        self.dirs.insert(path.to_path_buf());
        Ok(())
    }

    fn rmdir(&mut self, path: &Path) -> Result<(), SystemError> {
        self.record(format!("rmdir {}", path.display()))?;
        if self.dirs.remove(path) {
            Ok(())
        } else {
            Err(not_found("rmdir", path))
        }
    }

    fn write(
        &mut self,
        path: &Path,
        contents: &str,
        _mode: Option<u32>,
    ) -> Result<(), SystemError> {
        self.record(format!(
            "write {} = {}",
            path.display(),
            contents.trim_end()
        ))?;
        self.files.insert(path.to_path_buf(), contents.to_string());
        Ok(())
    }

    fn write_atomic(&mut self, path: &Path, contents: &str) -> Result<(), SystemError> {
        self.record(format!("write-atomic {}", path.display()))?;
        self.files.insert(path.to_path_buf(), contents.to_string());
        Ok(())
    }

    fn read(&mut self, path: &Path) -> Result<String, SystemError> {
        self.record(format!("read {}", path.display()))?;
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found("read", path))
    }

    fn exists(&mut self, path: &Path) -> bool {
        self.files.contains_key(path) || self.dirs.contains(path)
    }

    fn subdirs(&mut self, path: &Path) -> Result<Vec<PathBuf>, SystemError> {
        Ok(self
            .dirs
            .iter()
            .filter(|d| d.parent() == Some(path))
            .cloned()
            .collect())
    }

    fn remove_tree(&mut self, path: &Path) -> Result<(), SystemError> {
        self.record(format!("remove-tree {}", path.display()))?;
        self.dirs.retain(|d| !d.starts_with(path));
        self.files.retain(|f, _| !f.starts_with(path));
        Ok(())
    }

    fn kill(&mut self, pid: i32) -> Result<(), SystemError> {
        self.record(format!("kill {pid}"))?;
        // A killed process leaves every cgroup it was in.
        let needle = pid.to_string();
        for (path, text) in self.files.iter_mut() {
            if path.ends_with("cgroup.procs") {
                *text = text
                    .lines()
                    .filter(|l| *l != needle)
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
        }
        Ok(())
    }

    fn spawn_detached(&mut self, argv: &[String], log: &Path) -> Result<u32, SystemError> {
        self.record(format!("spawn {} > {}", argv.join(" "), log.display()))?;
        self.next_pid += 1;
        Ok(self.next_pid)
    }

    fn http_get(&mut self, addr: SocketAddr, path: &str, _token: &str) -> Result<(), SystemError> {
        self.record(format!("get http://{addr}{path}"))
    }

    fn sleep(&mut self, _d: Duration) {}

    fn control(
        &mut self,
        socket: &Path,
        request: &str,
        _timeout: Duration,
    ) -> Result<String, SystemError> {
        let line = format!("control {} {request}", socket.display());
        self.record(line.clone())?;
        Ok(self
            .outputs
            .get(&line)
            .cloned()
            .unwrap_or_else(|| "{}".into()))
    }

    fn random(&mut self, n: usize) -> Result<Vec<u8>, SystemError> {
        Ok((0..n).map(|i| i as u8).collect())
    }

    fn lock(&mut self) -> Result<LabLock, SystemError> {
        Ok(LabLock::none())
    }
}
