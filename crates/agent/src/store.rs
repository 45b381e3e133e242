//! Persistence: what the agent runs survives the agent.
//!
//! Layout under the state directory:
//! - `vms/<name>.json`: one [`VmRecord`] per VM (spec, pid, run dir);
//! - `migrations/<id>.json`: one [`MigrationRecord`] per migration, kept after it ends;
//! - `run/<name>/`: the VM's run directory (sockets, logs, pid file);
//! - `disks/`: the storage directory: the only place a VM's `disk` may name a file in, and
//!   where the agent creates the disks it owns (`vms::disk`);
//! - `agent-id`: this agent's identity, made once;
//! - `power.json`: the host's power state (absent: active).
//!
//! Every write goes to a temporary file in the same directory, is synced, then renamed over the
//! target, so a kill -9 at any moment leaves either the old or the new record, never half of one.

use crate::model::VmRecord;
use crate::power::PowerMachine;
use drover_api::MigrationRecord;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state directory {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("corrupt state file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the state directory.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["vms", "migrations", "run", "disks"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage directory: VM disks are file names in it.
    pub fn disk_dir(&self) -> PathBuf {
        self.root.join("disks")
    }

    /// This agent's identity: read from `agent-id`, or made (random, from the kernel) and
    /// kept there on first use.
    pub fn agent_id(&self) -> Result<String, StoreError> {
        let path = self.root.join("agent-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            let id = id.trim().to_string();
            if !id.is_empty() {
                return Ok(id);
            }
        }
        let raw = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|e| io(Path::new("/proc/sys/kernel/random/uuid"), e))?;
        let id = raw.trim().to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &id).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        Ok(id)
    }

    /// The run directory for a VM (not created here).
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.root.join("run").join(name)
    }

    fn vm_path(&self, name: &str) -> PathBuf {
        self.root.join("vms").join(format!("{name}.json"))
    }

    fn migration_path(&self, id: &str) -> PathBuf {
        self.root.join("migrations").join(format!("{id}.json"))
    }

    pub fn save_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        write_atomic(&self.vm_path(&vm.config.name), vm)
    }

    pub fn remove_vm(&self, name: &str) -> Result<(), StoreError> {
        let p = self.vm_path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&p, e)),
        }
    }

    pub fn save_migration(&self, m: &MigrationRecord) -> Result<(), StoreError> {
        write_atomic(&self.migration_path(&m.id), m)
    }

    /// Every VM record. A corrupt file is reported, not skipped: losing track of a running QEMU
    /// silently is worse than refusing to start.
    pub fn load_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        load_dir(&self.root.join("vms"))
    }

    pub fn load_migrations(&self) -> Result<Vec<MigrationRecord>, StoreError> {
        load_dir(&self.root.join("migrations"))
    }

    pub fn save_power(&self, power: &PowerMachine) -> Result<(), StoreError> {
        write_atomic(&self.root.join("power.json"), power)
    }

    /// The kept power state; None when none was kept. A corrupt file is reported: guessing
    /// "active" could start VMs on a host that is meant to be down.
    pub fn load_power(&self) -> Result<Option<PowerMachine>, StoreError> {
        let path = self.root.join("power.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                message: e.to_string(),
            })
    }
}

fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&text).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn load_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read(&p).map_err(|e| io(&p, e))?;
        let value = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        })?;
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmRole;
    use drover_api::{MigrationState, VmConfig};

    fn vm(name: &str) -> VmRecord {
        VmRecord {
            config: VmConfig {
                name: name.into(),
                vcpus: 1,
                memory_bytes: 128 << 20,
                workload: "memtouch:wss=32M".into(),
                disk: None,
                disk_size_bytes: None,
                disk_base: None,
                nic: None,
            },
            role: VmRole::Incoming {
                migration_id: "m1".into(),
                uri: None,
                recover_uri: None,
                nbd: None,
                source_nbd: None,
            },
            pid: 42,
            run_dir: "/tmp/x".into(),
            created_unix_ms: 7,
            arrived_by: None,
        }
    }

    #[test]
    fn records_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.save_vm(&vm("a")).expect("save");
        store.save_vm(&vm("b")).expect("save");
        let mut b = vm("b");
        b.pid = 43;
        store.save_vm(&b).expect("overwrite");
        let loaded = store.load_vms().expect("load");
        assert_eq!(loaded, vec![vm("a"), b]);
        store.remove_vm("a").expect("remove");
        store.remove_vm("a").expect("again");
        assert_eq!(store.load_vms().expect("load").len(), 1);
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("vms"))
            .expect("ls")
            .collect();
        assert_eq!(names.len(), 1);

        let m = crate::migrate::test_record(MigrationState::Running, false);
        store.save_migration(&m).expect("save");
        assert_eq!(store.load_migrations().expect("load"), vec![m]);
    }

    #[test]
    fn corrupt_files_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        std::fs::write(dir.path().join("vms/x.json"), b"{not json").expect("write");
        assert!(matches!(store.load_vms(), Err(StoreError::Corrupt { .. })));
        std::fs::write(dir.path().join("power.json"), b"{\"state\":\"asleep\"}").expect("write");
        assert!(matches!(
            store.load_power(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_power_state_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.load_power().expect("read"), None);
        let waking = PowerMachine::Waking {
            since_unix_ms: 5,
            ready_at_unix_ms: 10_005,
        };
        store.save_power(&waking).expect("save");
        assert_eq!(store.load_power().expect("read"), Some(waking));
        let text = std::fs::read_to_string(dir.path().join("power.json")).expect("read");
        assert!(text.contains("\"state\": \"waking\""), "{text}");
    }
}
