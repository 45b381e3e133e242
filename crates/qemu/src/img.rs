//! qcow2 images in a storage directory, through `qemu-img` (run with tokio): create one of a
//! size or as an overlay of a base in the same directory, and read an image's size and format.
//!
//! An overlay is a copy-on-write layer whose backing file is the base, named relative to the
//! directory (so the directory may move), not a copy: it is made at once and takes only what
//! the guest writes, whatever the base's size, and many images can share one base. The price
//! is that the base must not change while overlays use it (the agent keeps VMs' disks from
//! being bases, and never deletes a base).
//!
//! Names come from clients (the agent's API): they must already have its file-name shape (no
//! `/`, no leading `.` or `-`, no `:` that `qemu-img` would read as a protocol). Nothing then
//! becomes a path outside the directory: a base must resolve (symbolic links followed) inside
//! it, and `qemu-img` gets absolute paths and fixed options only. The virtual size must fit the
//! directory's free space (a qcow2 grows up to it).
//!
//! Creation is all or nothing: `qemu-img` writes a hidden temporary file (`.NAME.creating`, a
//! name no client can give), which is then hard-linked to its name (failing, not replacing, if
//! that name was taken meanwhile) and unlinked. A failed or cancelled creation (the child is
//! killed when its future is dropped) removes the temporary file; a leftover one from a crash is
//! removed by the next creation of that name.

use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use thiserror::Error;

/// Why an image cannot be created or read. Messages name the agent API's fields
/// (`disk_base`, `disk_size_bytes`), the only callers' words for them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImgError {
    /// The name is taken in the storage directory (a conflict with the directory's contents).
    #[error("disk '{disk}' already exists in this agent's storage directory {dir}")]
    Exists { disk: String, dir: PathBuf },
    /// No such base (a conflict with the directory's contents).
    #[error("disk_base '{base}': no such file in this agent's storage directory {dir}")]
    NoBase { base: String, dir: PathBuf },
    /// The base is a VM's disk (a conflict with the directory's contents).
    #[error(
        "disk_base '{base}' is the disk of VM '{vm}': a base must not change under its overlays"
    )]
    BaseInUse { base: String, vm: String },
    /// The base is not a qcow2 image (a conflict with the directory's contents).
    #[error("disk_base '{base}' is a {format} image, expected qcow2")]
    BaseNotQcow2 { base: String, format: String },
    /// Smaller than its base (a conflict with the directory's contents).
    #[error(
        "disk_size_bytes {size}: smaller than disk_base '{base}' ({base_size} bytes); expected \
         at least the base's size"
    )]
    SmallerThanBase {
        size: u64,
        base: String,
        base_size: u64,
    },
    /// Beyond the directory's free space (a conflict with the directory's contents).
    #[error(
        "a new disk of {size} bytes (the VM's disk_size_bytes, or for a migration the source \
         disk's virtual size) does not fit the storage directory {dir}: it has {free} bytes free"
    )]
    NoSpace { size: u64, free: u64, dir: PathBuf },
    /// `qemu-img` failed or could not run (a failure).
    #[error("qemu-img {what} for '{disk}': {message}")]
    QemuImg {
        what: &'static str,
        disk: String,
        message: String,
    },
    /// A file operation in the storage directory failed (a failure).
    #[error("storage directory {dir}: {message}")]
    Io { dir: PathBuf, message: String },
}

impl ImgError {
    /// Whether the host's state is at fault (a conflict with the directory's contents), rather than the agent (a failure).
    pub fn is_conflict(&self) -> bool {
        !matches!(self, ImgError::QemuImg { .. } | ImgError::Io { .. })
    }
}

/// The `qemu-img` beside a QEMU binary given as a path (a QEMU built or installed elsewhere
/// brings its own), when there is one; else the one on `PATH`.
pub fn qemu_img_for(qemu_binary: &str) -> PathBuf {
    match Path::new(qemu_binary).parent() {
        Some(dir) if qemu_binary.contains('/') && dir.join("qemu-img").is_file() => {
            dir.join("qemu-img")
        }
        _ => PathBuf::from("qemu-img"),
    }
}

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    /// The size the guest sees, bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// `qcow2`, `raw`, ...
    pub format: String,
}

/// Runs `qemu-img` with `args`; its stdout on success.
pub(crate) async fn qemu_img(
    bin: &Path,
    what: &'static str,
    disk: &str,
    args: Vec<OsString>,
) -> Result<Vec<u8>, ImgError> {
    let failed = |message: String| ImgError::QemuImg {
        what,
        disk: disk.to_string(),
        message,
    };
    let out = tokio::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed(format!("cannot run {}: {e}", bin.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!("{}: {}", out.status, stderr.trim())));
    }
    Ok(out.stdout)
}

/// Reads an image's virtual size and format (`--force-share`: a running VM holds its disk's
/// lock, and reading the header is safe beside it).
///
/// # Errors
/// [`ImgError::QemuImg`].
pub async fn info(bin: &Path, path: &Path, name: &str) -> Result<ImageInfo, ImgError> {
    let out = qemu_img(
        bin,
        "info",
        name,
        vec![
            "info".into(),
            "--force-share".into(),
            "--output=json".into(),
            path.into(),
        ],
    )
    .await?;
    serde_json::from_slice(&out).map_err(|e| ImgError::QemuImg {
        what: "info",
        disk: name.to_string(),
        message: format!("unexpected output: {e}"),
    })
}

/// Bytes free to an unprivileged user in the file system of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, ImgError> {
    let io = |message: String| ImgError::Io {
        dir: dir.to_path_buf(),
        message,
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io("path has a NUL byte".into()))?;
    // SAFETY: statvfs writes into the zeroed struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io(std::io::Error::last_os_error().to_string()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// What to create: a size, a base, or both (the API's `disk_size_bytes`, `disk_base`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisk<'a> {
    /// The file's name in the storage directory.
    pub name: &'a str,
    pub size_bytes: Option<u64>,
    pub base: Option<&'a str>,
}

/// Creates `disk` in the storage directory `dir` (module doc), the names having been
/// shape-checked by `VmConfig::validate`. Returns its path.
///
/// # Errors
/// [`ImgError`]: a conflict with the directory's contents (a conflict with the directory's contents) or a failure (a failure).
pub async fn create(bin: &Path, dir: &Path, disk: &NewDisk<'_>) -> Result<PathBuf, ImgError> {
    let io = |e: std::io::Error| ImgError::Io {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    };
    let dir = dir.canonicalize().map_err(io)?;
    let path = dir.join(disk.name);
    if path.symlink_metadata().is_ok() {
        return Err(ImgError::Exists {
            disk: disk.name.to_string(),
            dir,
        });
    }
    let base = match disk.base {
        Some(b) => Some((b, checked_base(bin, &dir, b).await?)),
        None => None,
    };
    let size = match (disk.size_bytes, &base) {
        (Some(size), Some((name, info))) if size < info.virtual_size => {
            return Err(ImgError::SmallerThanBase {
                size,
                base: name.to_string(),
                base_size: info.virtual_size,
            })
        }
        (Some(size), _) => size,
        (None, Some((_, info))) => info.virtual_size,
        // Neither a size nor a base: nothing says what to make.
        (None, None) => {
            return Err(ImgError::QemuImg {
                what: "create",
                disk: disk.name.to_string(),
                message: "neither a size nor a base".into(),
            })
        }
    };
    let free = free_bytes(&dir)?;
    if size > free {
        return Err(ImgError::NoSpace { size, free, dir });
    }
    let tmp = dir.join(format!(".{}.creating", disk.name));
    let _ = std::fs::remove_file(&tmp);
    let made = make(bin, &tmp, disk.name, size, base.map(|(b, _)| b)).await;
    let linked = made.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(path.clone()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(ImgError::Exists {
            disk: disk.name.to_string(),
            dir: dir.clone(),
        }),
        Err(e) => Err(io(e)),
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// The base `name`: a qcow2 file whose real path lies inside `dir`.
async fn checked_base(bin: &Path, dir: &Path, name: &str) -> Result<ImageInfo, ImgError> {
    let missing = || ImgError::NoBase {
        base: name.to_string(),
        dir: dir.to_path_buf(),
    };
    let real = dir.join(name).canonicalize().map_err(|_| missing())?;
    if !real.starts_with(dir) || !real.is_file() {
        return Err(missing());
    }
    let info = info(bin, &real, name).await?;
    if info.format != "qcow2" {
        return Err(ImgError::BaseNotQcow2 {
            base: name.to_string(),
            format: info.format,
        });
    }
    Ok(info)
}

/// Runs `qemu-img create` for a qcow2 at `path` of `size` bytes, over `base` (a name in the
/// same directory, which qcow2 resolves relative to the overlay) if given.
async fn make(
    bin: &Path,
    path: &Path,
    name: &str,
    size: u64,
    base: Option<&str>,
) -> Result<(), ImgError> {
    let mut args: Vec<OsString> = ["create", "-q", "-f", "qcow2"].map(OsString::from).into();
    if let Some(base) = base {
        args.extend(["-b", base, "-F", "qcow2"].map(OsString::from));
    }
    args.extend([path.into(), size.to_string().into()]);
    qemu_img(bin, "create", name, args).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_testkit::require;

    fn bin() -> PathBuf {
        qemu_img_for("qemu-system-x86_64")
    }

    fn new<'a>(name: &'a str, size: Option<u64>, base: Option<&'a str>) -> NewDisk<'a> {
        NewDisk {
            name,
            size_bytes: size,
            base,
        }
    }

    /// Names of the files in `dir`, sorted (hidden ones too: a leftover would show).
    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn qemu_img_sits_beside_the_qemu_it_is_given() {
        assert_eq!(
            qemu_img_for("qemu-system-x86_64"),
            PathBuf::from("qemu-img")
        );
        let tmp = tempfile::tempdir().unwrap();
        let qemu = tmp.path().join("qemu-system-x86_64");
        assert_eq!(
            qemu_img_for(&qemu.display().to_string()),
            PathBuf::from("qemu-img")
        );
        std::fs::write(tmp.path().join("qemu-img"), b"").unwrap();
        assert_eq!(
            qemu_img_for(&qemu.display().to_string()),
            tmp.path().join("qemu-img")
        );
    }

    #[tokio::test]
    async fn a_sized_disk_and_an_overlay_are_made_and_checked() {
        require!(drover_testkit::QEMU_IMG);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = create(&bin(), dir, &new("a.qcow2", Some(64 << 20), None))
            .await
            .expect("created");
        let i = info(&bin(), &path, "a.qcow2").await.unwrap();
        assert_eq!((i.virtual_size, i.format.as_str()), (64 << 20, "qcow2"));
        // An overlay of it: the base's size unless bigger is asked.
        let o = create(&bin(), dir, &new("o.qcow2", None, Some("a.qcow2")))
            .await
            .expect("overlay");
        assert_eq!(info(&bin(), &o, "o").await.unwrap().virtual_size, 64 << 20);
        let o2 = create(&bin(), dir, &new("o2", Some(128 << 20), Some("a.qcow2")))
            .await
            .expect("bigger overlay");
        assert_eq!(
            info(&bin(), &o2, "o2").await.unwrap().virtual_size,
            128 << 20
        );
        // The overlay names its base relative to the directory: the directory may move.
        let raw = std::fs::read(&o).unwrap();
        assert!(raw.windows(7).any(|w| w == b"a.qcow2"));
        assert!(!raw
            .windows(dir.as_os_str().len())
            .any(|w| w == dir.as_os_str().as_encoded_bytes()));
        assert_eq!(files(dir), ["a.qcow2", "o.qcow2", "o2"]);
    }

    #[tokio::test]
    async fn refusals_name_the_field_and_leave_nothing_behind() {
        require!(drover_testkit::QEMU_IMG);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create(&bin(), dir, &new("a", Some(8 << 20), None))
            .await
            .unwrap();
        std::fs::write(dir.join("raw.img"), vec![0u8; 1 << 20]).unwrap();
        let err = |e: ImgError| {
            assert!(e.is_conflict(), "{e}");
            e.to_string()
        };
        let e = err(create(&bin(), dir, &new("a", Some(8 << 20), None))
            .await
            .unwrap_err());
        assert!(e.starts_with("disk 'a' already exists"), "{e}");
        let e = err(create(&bin(), dir, &new("b", None, Some("nope")))
            .await
            .unwrap_err());
        assert!(e.starts_with("disk_base 'nope': no such file"), "{e}");
        let e = err(create(&bin(), dir, &new("b", None, Some("raw.img")))
            .await
            .unwrap_err());
        assert_eq!(e, "disk_base 'raw.img' is a raw image, expected qcow2");
        let e = err(create(&bin(), dir, &new("b", Some(4 << 20), Some("a")))
            .await
            .unwrap_err());
        assert!(
            e.starts_with("disk_size_bytes 4194304: smaller than disk_base 'a'"),
            "{e}"
        );
        let e = err(create(&bin(), dir, &new("b", Some(1 << 50), None))
            .await
            .unwrap_err());
        assert!(
            e.starts_with("a new disk of 1125899906842624 bytes (the VM's disk_size_bytes")
                && e.contains("bytes free"),
            "{e}"
        );
        // A base reached through a link out of the directory is no base.
        std::os::unix::fs::symlink("/etc/hostname", dir.join("out")).unwrap();
        let e = err(create(&bin(), dir, &new("b", None, Some("out")))
            .await
            .unwrap_err());
        assert!(e.contains("no such file"), "{e}");
        assert_eq!(files(dir), ["a", "out", "raw.img"]);
    }

    #[tokio::test]
    async fn a_failed_qemu_img_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        // A "qemu-img" that writes half a file and fails.
        let fake = tmp.path().join("qemu-img");
        let script = "#!/bin/sh\nfor a; do prev=$p; p=$a; done\necho half > \"$prev\"\n\
                      echo broken >&2\nexit 1\n";
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let dir = tmp.path().join("disks");
        std::fs::create_dir(&dir).unwrap();
        let e = create(&fake, &dir, &new("a", Some(8 << 20), None))
            .await
            .unwrap_err();
        assert!(!e.is_conflict());
        assert!(e.to_string().contains("broken"), "{e}");
        assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    }
}
