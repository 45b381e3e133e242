//! Reading trace folders and files from disk: which entries of a folder are VM files, day
//! folders or notes, and reading one file with a size cap.
//!
//! The rule for a folder (the same for one day and for a folder of days):
//! - entries whose name starts with `.` are skipped (`.DS_Store`, `.git`);
//! - every other entry must be a regular file or a folder (symbolic links are followed): a FIFO,
//!   socket, device or a link that cannot be followed is refused by name, never opened (a FIFO
//!   would block the read, a device such as `/dev/zero` would never end);
//! - a folder without sub-folders is a day: each of its files is a VM file;
//! - a folder with sub-folders is a folder of days, and the files beside them may only be notes,
//!   named with an extension (`README.md`, `cloudsim-3.0.3-reference.csv`); a file without one
//!   is taken for a VM file, and a folder holding both VM files and folders is refused, naming
//!   both, since it cannot be told whether it is a day with a stray folder or days with stray
//!   files.

use super::TraceError;
use crate::limits;
use std::path::{Path, PathBuf};

/// What a trace folder holds, by the rule in the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folder {
    /// One day: its VM files, sorted by name (at least one).
    Day(Vec<PathBuf>),
    /// A folder of days: its day folders, sorted by name (at least one).
    Days(Vec<PathBuf>),
}

/// Looks at `dir`'s entries and says what it holds.
///
/// # Errors
/// [`TraceError::Io`] if `dir` cannot be listed, [`TraceError::NotAFolder`] for a file,
/// [`TraceError::NotFiles`] naming every entry that is neither a file nor a folder,
/// [`TraceError::Mixed`] for VM files beside folders, [`TraceError::EmptyFolder`] for neither.
pub fn classify(dir: &Path) -> Result<Folder, TraceError> {
    if dir.is_file() {
        return Err(TraceError::NotAFolder(dir.to_path_buf()));
    }
    let io = |cause| TraceError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let (mut files, mut dirs, mut odd) = (Vec::new(), Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if is_hidden(&p) {
            continue;
        }
        match kind(&p) {
            Kind::File => files.push(p),
            Kind::Dir => dirs.push(p),
            Kind::Other(what) => odd.push(format!("{} ({what})", file_name(&p))),
        }
    }
    if !odd.is_empty() {
        odd.sort();
        return Err(TraceError::NotFiles {
            path: dir.to_path_buf(),
            entries: odd,
        });
    }
    files.sort();
    dirs.sort();
    if dirs.is_empty() {
        if files.is_empty() {
            return Err(TraceError::EmptyFolder(dir.to_path_buf()));
        }
        return Ok(Folder::Day(files));
    }
    let vm_files: Vec<String> = files
        .iter()
        .filter(|f| f.extension().is_none())
        .map(|f| file_name(f))
        .collect();
    if !vm_files.is_empty() {
        return Err(TraceError::Mixed {
            path: dir.to_path_buf(),
            files: vm_files,
            folders: dirs.iter().map(|d| file_name(d)).collect(),
        });
    }
    Ok(Folder::Days(dirs))
}

/// What a folder entry is, after following symbolic links.
enum Kind {
    File,
    Dir,
    /// Neither: a description for the error ("a FIFO", "a broken symbolic link to ...").
    Other(String),
}

fn kind(p: &Path) -> Kind {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Kind::File,
        Ok(m) if m.is_dir() => Kind::Dir,
        Ok(m) => Kind::Other(special(&m.file_type()).into()),
        Err(e) => {
            let target = std::fs::read_link(p)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default();
            Kind::Other(format!(
                "a symbolic link{target} that cannot be followed: {e}"
            ))
        }
    }
}

/// Names a file type that is neither a regular file nor a folder.
fn special(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// A trace file's text, at most `max` bytes, without the byte-order mark some editors put at the
/// start (it would otherwise stick to the first value or header). `what` names the kind of file
/// in the size error.
///
/// The file's type is checked before it is opened, so a FIFO is never opened (which would block)
/// and a device never read; its size is checked before it is read, and the read stops one byte
/// past `max` in case it grows meanwhile.
pub(super) fn read_text(path: &Path, max: u64, what: &'static str) -> Result<String, TraceError> {
    let io = |cause| TraceError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(TraceError::NotAFile(path.to_path_buf()));
    }
    if !meta.is_file() {
        return Err(TraceError::NotRegular {
            path: path.to_path_buf(),
            kind: special(&meta.file_type()),
        });
    }
    let too_large = || TraceError::FileTooLarge {
        path: path.to_path_buf(),
        max,
        what,
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = limits::read_capped(file, max)
        .map_err(io)?
        .ok_or_else(too_large)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        TraceError::NotUtf8 {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
        }
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The last component of `p`, as text.
pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a folder entry is hidden (`.DS_Store`, `.git`): never a VM file or a day.
fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn day(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in files {
            fs::write(dir.path().join(f), "10\n20\n").expect("write");
        }
        dir
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| file_name(p)).collect()
    }

    #[test]
    fn vm_files_beside_a_folder_or_a_link_to_one_are_refused_naming_both() {
        let d = day(&["vm1", "vm2", "vm3"]);
        fs::create_dir(d.path().join("subdir")).unwrap();
        let msg = classify(d.path()).unwrap_err().to_string();
        assert!(
            msg.contains("VM files (vm1, vm2, vm3)") && msg.contains("folders (subdir)"),
            "{msg}"
        );
        let d = day(&["vm1", "vm2"]);
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), d.path().join("vm4")).unwrap();
        let err = classify(d.path()).unwrap_err();
        assert!(matches!(&err, TraceError::Mixed { folders, .. } if folders == &["vm4"]));
    }

    #[test]
    fn notes_beside_day_folders_are_allowed_and_a_day_is_its_files() {
        let parent = day(&["README.md", "reference.csv", ".hidden"]);
        for d in ["d2", "d1"] {
            fs::create_dir(parent.path().join(d)).unwrap();
        }
        let Folder::Days(days) = classify(parent.path()).unwrap() else {
            panic!("not days");
        };
        assert_eq!(names(&days), ["d1", "d2"]);
        let one = day(&["b", "a", ".DS_Store"]);
        assert_eq!(classify(one.path()).unwrap(), {
            let p = one.path();
            Folder::Day(vec![p.join("a"), p.join("b")])
        });
    }

    #[test]
    fn entries_neither_file_nor_folder_are_refused_by_name() {
        let d = day(&["vm1"]);
        symlink("/nonexistent/file", d.path().join("vm4")).unwrap();
        symlink("loop", d.path().join("loop")).unwrap();
        symlink("/dev/zero", d.path().join("vm5")).unwrap();
        let fifo = d.path().join("vm9");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let err = classify(d.path()).unwrap_err();
        let TraceError::NotFiles { entries, .. } = &err else {
            panic!("{err}");
        };
        assert!(entries[0].starts_with("loop (a symbolic link to loop that cannot"));
        assert!(entries[1].starts_with("vm4 (a symbolic link to /nonexistent/file that"));
        assert_eq!(entries[2], "vm5 (a character device)");
        if made.is_ok_and(|s| s.success()) {
            assert_eq!(entries[3], "vm9 (a FIFO)");
            // Read directly, it is refused before it is opened (opening would block).
            let err = read_text(&fifo, 100, "a VM file").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "trace file {} is a FIFO, not a regular file",
                    fifo.display()
                )
            );
        }
        // Hidden, they are skipped as before.
        for e in ["vm4", "loop", "vm5", "vm9"] {
            let _ = fs::rename(d.path().join(e), d.path().join(format!(".{e}")));
        }
        assert!(matches!(classify(d.path()), Ok(Folder::Day(f)) if f.len() == 1));
    }

    #[test]
    fn reads_are_capped_and_refuse_devices_folders_and_binary_by_name() {
        let d = day(&[]);
        let f = d.path().join("vm");
        fs::write(&f, "\u{feff}1\n2\n").unwrap();
        assert_eq!(read_text(&f, 9, "a VM file").unwrap(), "1\n2\n");
        let msg = read_text(&f, 6, "a VM file").unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "is larger than 6 bytes, the most a VM file may hold (crate drover_sim::limits)"
            ),
            "{msg}"
        );
        let msg = read_text(Path::new("/dev/zero"), 8, "a CSV trace")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "trace file /dev/zero is a character device, not a regular file"
        );
        let msg = read_text(d.path(), 8, "a CSV trace")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is a folder"), "{msg}");
        fs::write(&f, b"1\n2\n\xff\xfe\n").unwrap();
        let msg = read_text(&f, 100, "a VM file").unwrap_err().to_string();
        assert!(
            msg.ends_with("vm, line 3: not UTF-8 text (expected numbers)"),
            "{msg}"
        );
        let missing = d.path().join("missing.csv");
        let msg = read_text(&missing, 100, "a CSV trace")
            .unwrap_err()
            .to_string();
        assert_eq!(msg.matches("No such file").count(), 1, "{msg}");
    }

    #[test]
    fn a_file_is_not_a_folder() {
        let d = day(&["day.csv"]);
        let err = classify(&d.path().join("day.csv")).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a file (a CSV trace is passed with --csv)"),
            "{err}"
        );
    }
}
