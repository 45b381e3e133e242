//! Where a lab's manager listens: `<labdir>/manager.json`, written by `drover manager --lab`
//! once its API is up and removed when it stops (and with the lab directory by `lab down`),
//! so `drover host|plan|manager status` find it without flags.

use crate::name::LabName;
use crate::state::{LabDirs, StateError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The file's name in the lab directory.
pub const MANAGER_FILE: &str = "manager.json";

/// A running lab manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerRecord {
    /// Its API's base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its process id.
    pub pid: u32,
}

fn path(dirs: &LabDirs, name: &LabName) -> PathBuf {
    dirs.lab_dir(name).join(MANAGER_FILE)
}

/// Records `rec` for lab `name` (atomically: written beside, then renamed).
///
/// # Errors
/// [`StateError::Write`] naming the file.
pub fn save_manager(dirs: &LabDirs, name: &LabName, rec: &ManagerRecord) -> Result<(), StateError> {
    let path = path(dirs, name);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(rec).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| StateError::Write { path, source })
}

/// The manager recorded for lab `name`, if any.
///
/// # Errors
/// [`StateError::Read`] or [`StateError::Parse`] naming the file.
pub fn load_manager(dirs: &LabDirs, name: &LabName) -> Result<Option<ManagerRecord>, StateError> {
    let path = path(dirs, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path, source }),
    }
}

/// Removes the record if it is `pid`'s (a newer manager's record stays).
pub fn remove_manager(dirs: &LabDirs, name: &LabName, pid: u32) {
    if let Ok(Some(rec)) = load_manager(dirs, name) {
        if rec.pid == pid {
            let _ = std::fs::remove_file(path(dirs, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_only_its_owner_removes_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = LabDirs {
            root: tmp.path().to_path_buf(),
        };
        let name = LabName::new("t1").expect("name");
        std::fs::create_dir_all(dirs.lab_dir(&name)).expect("lab dir");
        assert_eq!(load_manager(&dirs, &name).expect("none"), None);
        let rec = ManagerRecord {
            url: "http://127.0.0.1:7800".into(),
            pid: 42,
        };
        save_manager(&dirs, &name, &rec).expect("save");
        assert_eq!(load_manager(&dirs, &name).expect("load"), Some(rec.clone()));
        remove_manager(&dirs, &name, 43);
        assert_eq!(load_manager(&dirs, &name).expect("kept"), Some(rec));
        remove_manager(&dirs, &name, 42);
        assert_eq!(load_manager(&dirs, &name).expect("gone"), None);
        std::fs::write(dirs.lab_dir(&name).join(MANAGER_FILE), "{").expect("bad");
        let e = load_manager(&dirs, &name).expect_err("bad file");
        assert!(e.to_string().contains(MANAGER_FILE), "{e}");
    }
}
