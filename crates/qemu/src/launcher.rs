//! Turns a VM spec into a QEMU command line and supervises the process.
//!
//! One QEMU per VM, no daemonizing: the process is a child of whoever launched it, so it dies
//! with its [`QemuProcess`] handle (killed on drop) and nothing outlives a test or a crashed
//! bench. Every socket and log lives in the VM's run directory.
//! The host agent, whose VMs must outlive the agent itself, uses [`spawn_detached`] instead.

use crate::disk::{DiskNodes, DiskSpec};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;
use tokio::process::{Child, Command};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM when `/dev/kvm` is usable and we are not ourselves a VM (nested KVM runs guests at
    /// emulation speed and Linux guests hang at boot there); TCG otherwise.
    #[default]
    Auto,
}

impl FromStr for Accel {
    type Err = LaunchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "auto" => Ok(Accel::Auto),
            other => Err(LaunchError::UnknownAccel(other.chars().take(64).collect())),
        }
    }
}

impl Accel {
    /// The accelerator actually used on this machine.
    pub fn resolve(self) -> Accel {
        match self {
            Accel::Auto => {
                let kvm_usable = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok();
                let nested = std::fs::read_to_string("/proc/cpuinfo")
                    .map(|c| {
                        c.lines().any(|l| {
                            l.starts_with("flags")
                                && l.split_whitespace().any(|f| f == "hypervisor")
                        })
                    })
                    .unwrap_or(true);
                if kvm_usable && !nested {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
            fixed => fixed,
        }
    }

    fn arg(self) -> &'static str {
        match self.resolve() {
            Accel::Kvm => "kvm",
            _ => "tcg",
        }
    }
}

/// A tap NIC for the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNic {
    pub ifname: String,
    pub mac: String,
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    /// Start as a migration destination (`-incoming defer`).
    pub incoming: bool,
    pub tap: Option<TapNic>,
    /// Disk 0 and how it is attached (a local image, or a storage post-copy's overlay).
    pub disk: Option<DiskSpec>,
}

/// Where a VM's sockets and logs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
    pub qmp: PathBuf,
    /// The guest's metrics serial port (second serial), a unix socket QEMU listens on.
    pub metrics: PathBuf,
    pub console_log: PathBuf,
    pub stderr_log: PathBuf,
    /// QEMU's log file (`-D`): the trace events a profile switches on land here
    /// ([`crate::disk_trace`]).
    pub trace_log: PathBuf,
}

impl RunPaths {
    pub fn in_dir(dir: &Path) -> Self {
        RunPaths {
            dir: dir.to_path_buf(),
            qmp: dir.join("qmp.sock"),
            metrics: dir.join("metrics.sock"),
            console_log: dir.join("console.log"),
            stderr_log: dir.join("qemu.stderr"),
            trace_log: dir.join("qemu-trace.log"),
        }
    }
}

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("QEMU binary '{binary}' not found: install it with scripts/setup")]
    BinaryNotFound { binary: String },
    #[error("{what} '{path}' does not exist: run `drover image build`")]
    ImageMissing { what: &'static str, path: PathBuf },
    #[error("invalid VM spec: {0}")]
    BadSpec(String),
    #[error("unknown accelerator '{0}': expected kvm, tcg or auto")]
    UnknownAccel(String),
    #[error("socket {path} is in use by another process")]
    SocketInUse { path: PathBuf },
    #[error("QEMU for '{name}' exited at start-up ({status}): {stderr}")]
    Exited {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("QEMU for '{name}' did not open its QMP socket within {ms} ms")]
    NoQmp { name: String, ms: u64 },
    #[error("I/O error on {path}: {message}")]
    Io { path: PathBuf, message: String },
}

fn io_err(path: &Path, e: std::io::Error) -> LaunchError {
    LaunchError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The QEMU command line for `spec` (without the binary).
pub fn argv(spec: &VmSpec, paths: &RunPaths) -> Vec<String> {
    let mib = spec.memory_bytes / (1024 * 1024);
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},process=drover-{}", spec.name, spec.name),
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        spec.accel.arg().into(),
        "-cpu".into(),
        if spec.accel.resolve() == Accel::Kvm {
            "host"
        } else {
            "max"
        }
        .into(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{mib}M"),
        "-nodefaults".into(),
        "-no-user-config".into(),
        // A guest that panics (panic=-1 reboots at once) or asks to reboot makes QEMU exit:
        // the agent then sees the VM gone instead of a guest rebooting forever at full CPU
        // while it reads as running (a 64 MiB guest did that before the size rules).
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-initrd".into(),
        spec.initrd.display().to_string(),
        "-append".into(),
        spec.append.clone(),
        "-D".into(),
        paths.trace_log.display().to_string(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", paths.qmp.display()),
        "-chardev".into(),
        format!("file,id=console,path={}", paths.console_log.display()),
        "-serial".into(),
        "chardev:console".into(),
        "-chardev".into(),
        format!(
            "socket,id=metrics,path={},server=on,wait=off",
            paths.metrics.display()
        ),
        "-serial".into(),
        "chardev:metrics".into(),
    ];
    if let Some(tap) = &spec.tap {
        a.push("-netdev".into());
        a.push(format!(
            "tap,id=net0,ifname={},script=no,downscript=no",
            tap.ifname
        ));
        a.push("-device".into());
        a.push(format!("virtio-net-pci,netdev=net0,mac={}", tap.mac));
    }
    if let Some(disk) = &spec.disk {
        a.extend(disk.argv(&DiskNodes::of(0)));
    }
    if spec.incoming {
        a.push("-incoming".into());
        a.push("defer".into());
    }
    a
}

fn validate(spec: &VmSpec) -> Result<(), LaunchError> {
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(LaunchError::BadSpec(format!(
            "VM name '{}' must be non-empty and use only letters, digits, '-' and '_'",
            spec.name
        )));
    }
    if spec.vcpus == 0 || spec.vcpus > 64 {
        return Err(LaunchError::BadSpec(format!(
            "vcpus {} must be 1..=64",
            spec.vcpus
        )));
    }
    if spec.memory_bytes < 32 << 20 {
        return Err(LaunchError::BadSpec("memory must be at least 32MiB".into()));
    }
    for (what, path) in [("kernel", &spec.kernel), ("initrd", &spec.initrd)] {
        if !path.exists() {
            return Err(LaunchError::ImageMissing {
                what,
                path: path.clone(),
            });
        }
    }
    if let Some(disk) = &spec.disk {
        if !disk.path().exists() {
            return Err(LaunchError::ImageMissing {
                what: "disk",
                path: disk.path().to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Removes a stale socket file; refuses if something still listens on it.
fn claim_socket(path: &Path) -> Result<(), LaunchError> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(LaunchError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|e| io_err(path, e))
}

/// Whether QEMU at `path` is up: its monitor greets and answers `qmp_capabilities`. The greeting
/// alone is not enough (QEMU binds the socket and may greet before machine set-up and kernel
/// loading); ordinary commands are only dispatched from the main loop, once set-up succeeded.
/// The connection is closed again; the monitor then accepts the next client.
fn qmp_ready(path: &Path) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(stream) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return false;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if !matches!(reader.read_line(&mut line), Ok(n) if n > 0 && line.contains("QMP")) {
        return false;
    }
    if writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .is_err()
    {
        return false;
    }
    // Events may come first; the reply is the line with "return".
    for _ in 0..16 {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line.contains("\"return\"") => return true,
            Ok(n) if n > 0 => continue,
            _ => return false,
        }
    }
    false
}

/// The last lines of a log file joined with " | " (for error messages), or "(no output)".
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.reverse();
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail.join(" | ")
    }
}

/// The most of QEMU's start-up output an error message quotes, bytes (its last ones: QEMU
/// prints the reason it exits last).
pub const STARTUP_OUTPUT_BYTES: usize = 2048;

/// What QEMU printed before it exited at start-up, for error messages: its stderr log, then
/// its `-D` log file (a daemonizing QEMU given `-D` sends its errors there, not to stderr),
/// lines joined with " | ", at most the last [`STARTUP_OUTPUT_BYTES`] (cut at a character
/// boundary, marked with a leading "..."), or "(no output)".
pub fn startup_output(paths: &RunPaths) -> String {
    let text: Vec<String> = [&paths.stderr_log, &paths.trace_log]
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    let lines: Vec<&str> = text
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "(no output)".to_string();
    }
    let joined = lines.join(" | ");
    if joined.len() <= STARTUP_OUTPUT_BYTES {
        return joined;
    }
    let mut from = joined.len() - STARTUP_OUTPUT_BYTES;
    while !joined.is_char_boundary(from) {
        from += 1;
    }
    format!("...{}", &joined[from..])
}

/// Checks the spec, makes the run directory, claims its sockets and opens the stderr log (and
/// removes an earlier `-D` log, so that a start-up error quotes only this QEMU's words).
fn prepare_run(spec: &VmSpec, paths: &RunPaths) -> Result<std::fs::File, LaunchError> {
    validate(spec)?;
    std::fs::create_dir_all(&paths.dir).map_err(|e| io_err(&paths.dir, e))?;
    match std::fs::remove_file(&paths.trace_log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&paths.trace_log, e))
        }
        _ => {}
    }
    claim_socket(&paths.qmp)?;
    claim_socket(&paths.metrics)?;
    std::fs::File::create(&paths.stderr_log).map_err(|e| io_err(&paths.stderr_log, e))
}

/// Starts QEMU with `args`, its stderr going to `stderr`.
fn start_qemu(
    binary: &str,
    args: Vec<String>,
    stderr: std::fs::File,
) -> Result<Child, LaunchError> {
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // A plain launch is our QEMU; a detached one's launcher process exits by itself once the
        // daemon is up. Whatever is still our child when we give up dies with us.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::BinaryNotFound {
                binary: binary.to_string(),
            },
            _ => io_err(Path::new(binary), e),
        })
}

/// A running QEMU. Killed (and reaped) when dropped.
pub struct QemuProcess {
    name: String,
    child: Child,
    paths: RunPaths,
}

impl QemuProcess {
    /// Starts QEMU and waits until it is up (see [`qmp_ready`]).
    pub async fn spawn(
        binary: &str,
        spec: &VmSpec,
        paths: &RunPaths,
        wait: Duration,
    ) -> Result<Self, LaunchError> {
        let stderr = prepare_run(spec, paths)?;
        let child = start_qemu(binary, argv(spec, paths), stderr)?;
        let mut process = QemuProcess {
            name: spec.name.clone(),
            child,
            paths: paths.clone(),
        };
        process.wait_for_qmp(wait).await?;
        Ok(process)
    }

    async fn wait_for_qmp(&mut self, wait: Duration) -> Result<(), LaunchError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| io_err(&self.paths.dir, e))?
            {
                return Err(LaunchError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    stderr: self.stderr_tail(),
                });
            }
            let qmp = self.paths.qmp.clone();
            if tokio::task::spawn_blocking(move || qmp_ready(&qmp))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LaunchError::NoQmp {
                    name: self.name.clone(),
                    ms: wait.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines QEMU wrote to stderr (for error messages).
    pub fn stderr_tail(&self) -> String {
        log_tail(&self.paths.stderr_log, 5)
    }

    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills QEMU and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Kills QEMU and reaps it before the handle is gone, so that whoever removes the run
/// directory next (a bench's temporary directory is dropped right after its VMs) does not race
/// a QEMU still creating its sockets there. SIGKILL ends a process at once; the bounded wait
/// only covers the kernel tearing it down.
impl Drop for QemuProcess {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = self.child.start_kill();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(name = %self.name, "QEMU did not exit within 2 s of SIGKILL");
    }
}

/// Where a detached QEMU writes its pid (`-pidfile`).
pub fn pidfile(paths: &RunPaths) -> PathBuf {
    paths.dir.join("qemu.pid")
}

/// The command line for a detached QEMU: [`argv`] plus `-daemonize` and `-pidfile`.
pub fn detached_argv(spec: &VmSpec, paths: &RunPaths) -> Vec<String> {
    let mut a = argv(spec, paths);
    a.push("-daemonize".into());
    a.push("-pidfile".into());
    a.push(pidfile(paths).display().to_string());
    a
}

/// Starts QEMU so that it outlives its launcher (for the host agent, which must survive its own
/// restarts without restarting VMs) and returns its pid.
///
/// QEMU daemonizes itself: the launched process only exits once the daemon has finished
/// initialising (QMP socket bound), with status 0 on success, so start-up errors still reach
/// its logs ([`startup_output`] quotes them). The daemon runs in its own session, is not our child and is never killed on drop;
/// it inherits our network namespace and cgroup. Killing it is the caller's job.
pub async fn spawn_detached(
    binary: &str,
    spec: &VmSpec,
    paths: &RunPaths,
    wait: Duration,
) -> Result<u32, LaunchError> {
    let stderr = prepare_run(spec, paths)?;
    let pid_path = pidfile(paths);
    let _ = std::fs::remove_file(&pid_path);
    let mut child = start_qemu(binary, detached_argv(spec, paths), stderr)?;
    let status = match tokio::time::timeout(wait, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(io_err(&paths.dir, e)),
        Err(_) => {
            return Err(LaunchError::NoQmp {
                name: spec.name.clone(),
                ms: wait.as_millis() as u64,
            })
        }
    };
    if !status.success() {
        return Err(LaunchError::Exited {
            name: spec.name.clone(),
            status: status.to_string(),
            stderr: startup_output(paths),
        });
    }
    let text = std::fs::read_to_string(&pid_path).map_err(|e| io_err(&pid_path, e))?;
    text.trim().parse::<u32>().map_err(|_| LaunchError::Exited {
        name: spec.name.clone(),
        status: format!("unreadable pid file {}", pid_path.display()),
        stderr: startup_output(paths),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> VmSpec {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd");
        std::fs::write(&kernel, b"k").expect("write");
        std::fs::write(&initrd, b"i").expect("write");
        VmSpec {
            name: "vm1".into(),
            vcpus: 1,
            memory_bytes: 256 << 20,
            accel: Accel::Tcg,
            kernel,
            initrd,
            append: "console=ttyS0".into(),
            incoming: false,
            tap: None,
            disk: None,
        }
    }

    #[test]
    fn a_disk_is_two_named_nodes_and_a_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(dir.path());
        let mut s = spec(dir.path());
        s.disk = Some(PathBuf::from("/var/lib/drover/a,b/disk0.qcow2").into());
        let a = argv(&s, &paths);
        let blockdevs: Vec<serde_json::Value> = a
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).expect("json"))
            .collect();
        assert_eq!(blockdevs.len(), 2);
        assert_eq!(blockdevs[0]["filename"], "/var/lib/drover/a,b/disk0.qcow2");
        assert_eq!(blockdevs[0]["node-name"], "drover-disk0-file");
        assert_eq!(blockdevs[1]["driver"], "qcow2");
        assert_eq!(blockdevs[1]["file"], "drover-disk0-file");
        assert_eq!(blockdevs[1]["node-name"], "drover-disk0");
        assert!(a
            .iter()
            .any(|x| x == "virtio-blk-pci,drive=drover-disk0,id=drover-disk0-dev"));
    }

    #[test]
    fn argv_has_sockets_serials_and_incoming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(dir.path());
        let mut s = spec(dir.path());
        s.incoming = true;
        s.tap = Some(TapNic {
            ifname: "tap0".into(),
            mac: "52:54:00:00:00:01".into(),
        });
        let a = argv(&s, &paths).join(" ");
        assert!(a.contains("-accel tcg"), "{a}");
        assert!(a.contains("-m 256M"));
        assert!(a.contains("-incoming defer"));
        assert!(a.contains(&format!("unix:{},server=on,wait=off", paths.qmp.display())));
        assert!(a.contains("tap,id=net0,ifname=tap0"));
        assert_eq!(a.matches("-serial").count(), 2);
    }

    #[test]
    fn detached_argv_daemonizes_with_a_pid_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(dir.path());
        let a = detached_argv(&spec(dir.path()), &paths).join(" ");
        assert!(
            a.ends_with(&format!(
                "-daemonize -pidfile {}",
                pidfile(&paths).display()
            )),
            "{a}"
        );
    }

    #[tokio::test]
    async fn detached_early_exit_reports_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        let Err(err) =
            spawn_detached("false", &spec(dir.path()), &paths, Duration::from_secs(5)).await
        else {
            panic!("fails")
        };
        assert!(matches!(err, LaunchError::Exited { .. }), "{err}");
    }

    /// A daemonizing QEMU given `-D` writes its start-up error to that log, not to stderr
    /// (`Failed to get shared "write" lock` came out as "(no output)"): the error quotes it,
    /// and at most the last [`STARTUP_OUTPUT_BYTES`] of everything.
    #[tokio::test]
    async fn detached_early_exit_quotes_the_log_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        let script = dir.path().join("fake-qemu");
        let words = "qemu: Failed to get shared \"write\" lock";
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nwhile [ \"$1\" != -D ]; do shift; done\necho '{words}' >> \"$2\"\nexit 1\n"
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        // An earlier run's log is not this QEMU's output.
        std::fs::create_dir_all(&paths.dir).expect("mkdir");
        std::fs::write(&paths.trace_log, "old words\n").expect("write");
        let bin = script.display().to_string();
        let Err(err) =
            spawn_detached(&bin, &spec(dir.path()), &paths, Duration::from_secs(5)).await
        else {
            panic!("fails")
        };
        let text = err.to_string();
        assert!(
            text.ends_with(&format!("(exit status: 1): {words}")),
            "{text}"
        );
        std::fs::write(&paths.stderr_log, "x".repeat(5000)).expect("write");
        let long = startup_output(&paths);
        assert!(long.starts_with("...x") && long.ends_with(words), "{long}");
        assert_eq!(long.len(), 3 + STARTUP_OUTPUT_BYTES);
        std::fs::write(&paths.stderr_log, "").expect("write");
        std::fs::write(&paths.trace_log, "").expect("write");
        assert_eq!(startup_output(&paths), "(no output)");
    }

    #[tokio::test]
    async fn missing_binary_is_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        let Err(err) = QemuProcess::spawn(
            "/nonexistent/qemu",
            &spec(dir.path()),
            &paths,
            Duration::from_secs(1),
        )
        .await
        else {
            panic!("fails")
        };
        assert!(matches!(err, LaunchError::BinaryNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_specs_are_rejected_before_spawning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        let mut s = spec(dir.path());
        s.kernel = dir.path().join("missing");
        let Err(err) = QemuProcess::spawn("true", &s, &paths, Duration::from_secs(1)).await else {
            panic!("fails")
        };
        assert!(err.to_string().contains("drover image build"), "{err}");
        let mut s = spec(dir.path());
        s.name = "bad name;rm".into();
        assert!(matches!(
            QemuProcess::spawn("true", &s, &paths, Duration::from_secs(1)).await,
            Err(LaunchError::BadSpec(_))
        ));
    }

    #[tokio::test]
    async fn early_exit_reports_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        // `false` exits at once: the launcher must notice instead of waiting for QMP.
        let Err(err) =
            QemuProcess::spawn("false", &spec(dir.path()), &paths, Duration::from_secs(5)).await
        else {
            panic!("fails")
        };
        assert!(matches!(err, LaunchError::Exited { .. }), "{err}");
    }

    #[tokio::test]
    async fn socket_in_use_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = RunPaths::in_dir(&dir.path().join("run"));
        std::fs::create_dir_all(&paths.dir).expect("mkdir");
        let _listener = std::os::unix::net::UnixListener::bind(&paths.qmp).expect("bind");
        let Err(err) =
            QemuProcess::spawn("true", &spec(dir.path()), &paths, Duration::from_secs(1)).await
        else {
            panic!("fails")
        };
        assert!(matches!(err, LaunchError::SocketInUse { .. }), "{err}");
    }
}
