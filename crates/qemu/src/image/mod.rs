//! The guest image: the Debian cloud kernel plus an initramfs holding busybox, the virtio modules
//! and the `drover-guest` workload binary.
//!
//! Inputs come from the cache that `scripts/setup` fills (the unpacked kernel package) and from the
//! host's static busybox; the workload binary is compiled by this crate's build script and embedded
//! here. Outputs go to `<out>/vmlinuz` and `<out>/initramfs.cpio`, with `<out>/manifest.json`
//! recording a stamp over every input: when the stamp matches, `build` does nothing. Each output is
//! written to a temporary file and renamed, and the manifest last, so a crashed or concurrent build
//! never leaves a half-written image that looks current.

mod cpio;
mod elf;
mod init;
mod modules;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

pub use elf::ElfError;
pub use init::DEFAULT_METRICS_PORT;
pub use modules::ModuleError;

/// The static workload binary, built by build.rs from crates/guest.
const GUEST_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/drover-guest"));
const GUEST_FNV: &str = env!("DROVER_GUEST_FNV");
/// Bump when the image layout or init script logic changes in a way the stamp would not see.
const BUILDER_VERSION: u32 = 1;
/// Root modules; their dependencies are added automatically.
const VIRTIO_MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_blk", "virtio_console"];
const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
/// Used if `busybox --list` cannot run on this host.
const FALLBACK_APPLETS: &[&str] = &[
    "sh", "ash", "cat", "cut", "echo", "ls", "mkdir", "mount", "umount", "insmod", "modprobe",
    "lsmod", "stty", "sleep", "poweroff", "reboot", "halt", "ip", "ifconfig", "ps", "kill",
    "dmesg", "free", "top", "uptime", "grep", "sed", "awk", "test", "[", "true", "false",
];
const KERNEL_NAME: &str = "vmlinuz";
const INITRD_NAME: &str = "initramfs.cpio";
const MANIFEST_NAME: &str = "manifest.json";
const WRITE_CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot choose a cache directory: set DROVER_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("no kernel found under {0}: run scripts/setup first")]
    KernelMissing(PathBuf),
    #[error("busybox not found (looked at {0}): install busybox-static (scripts/setup)")]
    BusyboxMissing(String),
    #[error("{0} is dynamically linked; the initramfs needs busybox-static (scripts/setup)")]
    BusyboxDynamic(PathBuf),
    #[error("{path}: {source}")]
    BadBinary {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A built image, ready for `-kernel` and `-initrd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Build progress, shown by the CLI; stages are "modules", "initramfs" and "kernel".
pub trait Progress {
    fn stage(&self, name: &str, total: u64);
    fn advance(&self, n: u64);
    fn finish(&self);
}

/// For callers that show nothing (tests, the agent).
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// `DROVER_CACHE` > `$XDG_CACHE_HOME/drover` > `~/.cache/drover` (as scripts/setup chooses it).
pub fn default_cache_dir() -> Result<PathBuf, ImageError> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    cache_dir_from(var("DROVER_CACHE"), var("XDG_CACHE_HOME"), var("HOME"))
}

fn cache_dir_from(
    drover: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, ImageError> {
    drover
        .or_else(|| xdg.map(|x| x.join("drover")))
        .or_else(|| home.map(|h| h.join(".cache").join("drover")))
        .ok_or(ImageError::NoCacheDir)
}

/// The kernel command line for a guest running `workload` (validated by the guest itself, which
/// reports a bad spec on the console).
pub fn kernel_cmdline(workload: &str) -> String {
    // panic=-1: reboot at once on a panic, so a QEMU run with -no-reboot exits instead of hanging.
    // quiet: the emulated UART is slow under TCG; boot messages cost boot time.
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail
    // and panic ("IO-APIC + timer doesn't work", 3 boots in 20 seen on this 2-core machine).
    format!(
        "console=ttyS0 quiet loglevel=4 panic=-1 tsc=reliable no_timer_check drover.workload={workload}"
    )
}

/// `cmdline` with the guest's network address: `cidr` is `A.B.C.D/P`, which the guest's init
/// puts on its NIC (`eth0`). The agent derives it from a checked address and its own prefix.
pub fn with_guest_net(cmdline: &str, cidr: &str) -> String {
    format!("{cmdline} drover.net={cidr}")
}

/// Builds the image into this build's directory of the default cache ([`image_dir_in`]), and
/// removes other builds' image directories untouched for [`STALE_IMAGE_AGE`].
pub fn ensure_image(progress: &dyn Progress) -> Result<GuestImage, ImageError> {
    let cache = default_cache_dir()?;
    let dir = image_dir_in(&cache);
    let image = build(&dir, progress)?;
    // Marks this build's image as used now, so pruning counts time unused, not since built.
    if let Ok(manifest) = std::fs::File::options()
        .append(true)
        .open(dir.join(MANIFEST_NAME))
    {
        let _ = manifest.set_modified(std::time::SystemTime::now());
    }
    prune_stale_images(&cache);
    Ok(image)
}

/// This build's image directory under `cache`: `image-<guest binary hash>-v<builder version>`.
/// One directory per guest binary, so checkouts with different guests (worktrees, CI clones) on
/// one machine never rebuild each other's image under a running test.
pub fn image_dir_in(cache: &Path) -> PathBuf {
    cache.join(format!("image-{GUEST_FNV}-v{BUILDER_VERSION}"))
}

/// Time unused after which another guest build's image directory is removed by
/// [`ensure_image`] (measured by its manifest's modification time, which each use renews).
pub const STALE_IMAGE_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Removes `image-*` (and the former shared `image`) directories of other guest builds under `cache` whose manifest is older than
/// [`STALE_IMAGE_AGE`]. Best effort: a directory that cannot be read or removed is left.
fn prune_stale_images(cache: &Path) {
    let own = image_dir_in(cache);
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        // `image` was the one shared directory before images were kept per guest build.
        let is_image = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n == "image" || n.starts_with("image-"));
        if !is_image || dir == own {
            continue;
        }
        let age = std::fs::metadata(dir.join(MANIFEST_NAME))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > STALE_IMAGE_AGE) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Builds the image into `out_dir` from the default sources; fast no-op when up to date.
pub fn build(out_dir: &Path, progress: &dyn Progress) -> Result<GuestImage, ImageError> {
    let sources = Sources::from_cache(&default_cache_dir()?)?;
    build_from(&sources, out_dir, progress)
}

/// Where the image's ingredients come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The unpacked kernel package (has `boot/vmlinuz-*` and `lib/modules/<version>`).
    pub kernel_pkg: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
}

impl Sources {
    pub fn from_cache(cache: &Path) -> Result<Self, ImageError> {
        let busybox = BUSYBOX_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ImageError::BusyboxMissing(BUSYBOX_CANDIDATES.join(", ")))?;
        Ok(Sources {
            kernel_pkg: cache.join("kernel-pkg").join("unpacked"),
            busybox,
        })
    }
}

/// Builds from explicit sources (tests point these at fakes).
pub fn build_from(
    sources: &Sources,
    out_dir: &Path,
    progress: &dyn Progress,
) -> Result<GuestImage, ImageError> {
    let image = GuestImage {
        kernel: out_dir.join(KERNEL_NAME),
        initrd: out_dir.join(INITRD_NAME),
    };
    let plan = Plan::gather(sources)?;
    let manifest_path = out_dir.join(MANIFEST_NAME);
    if plan.matches(&manifest_path, &image) {
        tracing::debug!(dir = %out_dir.display(), "guest image up to date");
        progress.finish();
        return Ok(image);
    }
    tracing::info!(dir = %out_dir.display(), kernel = %plan.version, "building guest image");
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;

    progress.stage("modules", plan.modules.len() as u64);
    // Module bytes were already read while resolving dependencies; this stage only reports them.
    progress.advance(plan.modules.len() as u64);
    let busybox = read_busybox(&sources.busybox)?;
    let applets = busybox_applets(&sources.busybox);
    let initrd = initramfs(&plan, &busybox, &applets).map_err(io_err(&image.initrd))?;
    progress.stage("initramfs", initrd.len() as u64);
    write_atomic(&image.initrd, &initrd, progress)?;

    let kernel = std::fs::read(&plan.kernel).map_err(io_err(&plan.kernel))?;
    progress.stage("kernel", kernel.len() as u64);
    write_atomic(&image.kernel, &kernel, progress)?;

    let manifest = plan.manifest(kernel.len() as u64, initrd.len() as u64);
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_atomic(&manifest_path, &text, &NoProgress)?;
    progress.finish();
    Ok(image)
}

/// Everything an image is built from, and the stamp over it.
struct Plan {
    kernel: PathBuf,
    version: String,
    modules: Vec<modules::Module>,
    init: String,
    stamp: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    stamp: String,
    builder_version: u32,
    kernel_version: String,
    guest_fnv: String,
    modules: Vec<String>,
    kernel_bytes: u64,
    initrd_bytes: u64,
}

impl Plan {
    fn gather(sources: &Sources) -> Result<Self, ImageError> {
        let (kernel, version) = find_kernel(&sources.kernel_pkg)?;
        let modules_dir = sources.kernel_pkg.join("lib/modules").join(&version);
        let modules = modules::resolve(&modules_dir, VIRTIO_MODULES)?;
        let rel: Vec<String> = modules.iter().map(|m| m.rel_path.clone()).collect();
        let init = init::init_script(&version, &rel);

        let mut h = Fnv::new();
        h.str(&BUILDER_VERSION.to_string());
        h.str(GUEST_FNV);
        h.str(&file_fingerprint(&kernel)?);
        h.str(&file_fingerprint(&sources.busybox)?);
        for m in &modules {
            h.str(&m.rel_path);
            h.bytes(&m.bytes);
        }
        h.str(&init);
        Ok(Plan {
            kernel,
            version,
            modules,
            init,
            stamp: format!("{:016x}", h.0),
        })
    }

    fn manifest(&self, kernel_bytes: u64, initrd_bytes: u64) -> Manifest {
        Manifest {
            stamp: self.stamp.clone(),
            builder_version: BUILDER_VERSION,
            kernel_version: self.version.clone(),
            guest_fnv: GUEST_FNV.to_string(),
            modules: self.modules.iter().map(|m| m.name.clone()).collect(),
            kernel_bytes,
            initrd_bytes,
        }
    }

    /// Whether the outputs on disk were built from exactly these inputs.
    fn matches(&self, manifest_path: &Path, image: &GuestImage) -> bool {
        let Ok(text) = std::fs::read(manifest_path) else {
            return false;
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&text) else {
            return false;
        };
        let len = |p: &Path| std::fs::metadata(p).map(|md| md.len()).ok();
        m.stamp == self.stamp
            && len(&image.kernel) == Some(m.kernel_bytes)
            && len(&image.initrd) == Some(m.initrd_bytes)
    }
}

/// The `boot/vmlinuz-<version>` of the package (the highest version if several).
fn find_kernel(kernel_pkg: &Path) -> Result<(PathBuf, String), ImageError> {
    let boot = kernel_pkg.join("boot");
    let missing = || ImageError::KernelMissing(kernel_pkg.to_path_buf());
    let entries = std::fs::read_dir(&boot).map_err(|_| missing())?;
    let mut versions: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    versions.sort();
    let version = versions.pop().ok_or_else(missing)?;
    Ok((boot.join(format!("vmlinuz-{version}")), version))
}

/// Name, size and mtime: enough to notice a replaced file without hashing megabytes each run.
fn file_fingerprint(path: &Path) -> Result<String, ImageError> {
    let md = std::fs::metadata(path).map_err(io_err(path))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}:{}:{}", path.display(), md.len(), mtime))
}

fn read_busybox(path: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let dynamic = elf::is_dynamic(&bytes).map_err(|source| ImageError::BadBinary {
        path: path.to_path_buf(),
        source,
    })?;
    if dynamic {
        return Err(ImageError::BusyboxDynamic(path.to_path_buf()));
    }
    Ok(bytes)
}

fn busybox_applets(path: &Path) -> Vec<String> {
    let listed = std::process::Command::new(path)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut applets: BTreeSet<String> = listed
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect();
    if applets.is_empty() {
        applets = FALLBACK_APPLETS.iter().map(|s| s.to_string()).collect();
    }
    applets.into_iter().collect()
}

/// The initramfs as a newc cpio archive (uncompressed: the kernel unpacks it fastest that way).
fn initramfs(plan: &Plan, busybox: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mod_root = format!("lib/modules/{}", plan.version);
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![
        ("init".into(), 0o755, plan.init.clone().into_bytes()),
        ("bin/busybox".into(), 0o755, busybox.to_vec()),
        ("bin/drover-guest".into(), 0o755, GUEST_BINARY.to_vec()),
        (
            format!("{mod_root}/modules.dep"),
            0o644,
            modules::modules_dep(&plan.modules).into_bytes(),
        ),
    ];
    for m in &plan.modules {
        files.push((format!("{mod_root}/{}", m.rel_path), 0o644, m.bytes.clone()));
    }
    let mut dirs: BTreeSet<String> = ["dev", "proc", "sys", "tmp", "run", "etc", "usr"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (name, _, _) in &files {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }

    let mut w = cpio::CpioWriter::new(Vec::new());
    // Sorted, so parents come before children.
    for d in &dirs {
        w.dir(d)?;
    }
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    for (name, perm, data) in &files {
        w.file(name, *perm, data)?;
    }
    for a in applets {
        w.symlink(&format!("bin/{a}"), "busybox")?;
    }
    w.symlink("sbin", "bin")?;
    w.symlink("usr/bin", "../bin")?;
    w.symlink("usr/sbin", "../bin")?;
    w.finish()
}

/// Writes `data` to a temporary file next to `path`, then renames it into place.
fn write_atomic(path: &Path, data: &[u8], progress: &dyn Progress) -> Result<(), ImageError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for chunk in data.chunks(WRITE_CHUNK) {
            f.write_all(chunk)?;
            progress.advance(chunk.len() as u64);
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// FNV-1a 64: stable across Rust versions (unlike DefaultHasher), and fast enough for a stamp.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so ("ab","c") and ("a","bc") differ.
    fn str(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }
}

#[cfg(test)]
mod tests;
