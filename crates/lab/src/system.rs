//! The I/O edge of the lab: every command, file write and process the lab makes goes through
//! [`System`]. [`RealSystem`] talks to the kernel (`ip`, `tc`, cgroupfs, signals);
//! [`crate::fake::FakeSystem`] records calls and injects failures so planning, rollback and
//! `down` are tested without root.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A command line, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = String>>(mut self, a: I) -> Self {
        self.args.extend(a);
        self
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{cmd}`: {source}")]
    Launch { cmd: String, source: std::io::Error },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot signal pid {pid}: {source}")]
    Kill { pid: i32, source: std::io::Error },
    #[error("health check of {addr}: {reason}")]
    Health { addr: SocketAddr, reason: String },
    #[error("injected failure at {0}")]
    Injected(String),
}

impl SystemError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the thing acted on does not exist (already removed).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Self::Kill { source, .. } => source.raw_os_error() == Some(libc::ESRCH),
            Self::Command { stderr, .. } => {
                stderr.contains("Cannot find device")
                    || stderr.contains("No such file")
                    || stderr.contains("does not exist")
            }
            _ => false,
        }
    }
}

/// Everything the lab does to the machine.
pub trait System {
    /// Runs a command to completion and returns its stdout; non-zero exit is an error.
    fn run(&mut self, cmd: &Cmd) -> Result<String, SystemError>;
    /// Creates a directory and its missing parents.
    fn mkdir(&mut self, path: &Path) -> Result<(), SystemError>;
    fn rmdir(&mut self, path: &Path) -> Result<(), SystemError>;
    /// Writes in place (cgroupfs files cannot be replaced by rename); `mode` applies on create.
    fn write(&mut self, path: &Path, contents: &str, mode: Option<u32>) -> Result<(), SystemError>;
    /// Writes to a temporary sibling and renames it over `path`.
    fn write_atomic(&mut self, path: &Path, contents: &str) -> Result<(), SystemError>;
    fn read(&mut self, path: &Path) -> Result<String, SystemError>;
    fn exists(&mut self, path: &Path) -> bool;
    /// Subdirectories of `path` (empty if `path` does not exist).
    fn subdirs(&mut self, path: &Path) -> Result<Vec<PathBuf>, SystemError>;
    fn remove_tree(&mut self, path: &Path) -> Result<(), SystemError>;
    /// Sends SIGKILL.
    fn kill(&mut self, pid: i32) -> Result<(), SystemError>;
    /// Starts `argv` in a new session with stdin from /dev/null and stdout and stderr appended to
    /// `log`, does not wait for it, and returns its pid.
    fn spawn_detached(&mut self, argv: &[String], log: &Path) -> Result<u32, SystemError>;
    /// One `GET path` over HTTP/1.0; Ok if the answer is 2xx.
    fn http_get(&mut self, addr: SocketAddr, path: &str, token: &str) -> Result<(), SystemError>;
    fn sleep(&mut self, d: Duration);
    /// Sends one line to a Unix control socket (a delay line's) and returns its one-line answer,
    /// giving up after `timeout` for each of the write and the read.
    fn control(
        &mut self,
        socket: &Path,
        request: &str,
        timeout: Duration,
    ) -> Result<String, SystemError>;
    /// Reads `n` random bytes.
    fn random(&mut self, n: usize) -> Result<Vec<u8>, SystemError>;
    /// Takes the machine-wide lab lock (released when the guard drops), so concurrent `up`s
    /// pick different subnets and never build the same lab twice.
    fn lock(&mut self) -> Result<LabLock, SystemError>;
}

/// Holds the machine-wide lab lock while alive.
#[derive(Debug)]
pub struct LabLock(#[allow(dead_code)] Option<std::fs::File>);

impl LabLock {
    /// A lock that locks nothing (for fakes).
    pub fn none() -> Self {
        Self(None)
    }
}

/// Machine-wide (not per state directory): subnets are a machine-wide resource.
const LOCK_FILE: &str = "/run/lock/drover-lab.lock";

/// The machine itself.
#[derive(Debug, Default)]
pub struct RealSystem;

impl System for RealSystem {
    fn control(
        &mut self,
        socket: &Path,
        request: &str,
        timeout: Duration,
    ) -> Result<String, SystemError> {
        control_request_within(socket, request, timeout)
            .map_err(|e| SystemError::io("ask", socket, e))
    }

    fn run(&mut self, cmd: &Cmd) -> Result<String, SystemError> {
        tracing::debug!(%cmd, "run");
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SystemError::Launch {
                cmd: cmd.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(SystemError::Command {
                cmd: cmd.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn mkdir(&mut self, path: &Path) -> Result<(), SystemError> {
        std::fs::create_dir_all(path).map_err(|e| SystemError::io("mkdir", path, e))
    }

    fn rmdir(&mut self, path: &Path) -> Result<(), SystemError> {
        std::fs::remove_dir(path).map_err(|e| SystemError::io("rmdir", path, e))
    }

    fn write(&mut self, path: &Path, contents: &str, mode: Option<u32>) -> Result<(), SystemError> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        if let Some(m) = mode {
            opts.mode(m);
        }
        let mut f = opts
            .open(path)
            .map_err(|e| SystemError::io("open", path, e))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| SystemError::io("write", path, e))
    }

    fn write_atomic(&mut self, path: &Path, contents: &str) -> Result<(), SystemError> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).map_err(|e| SystemError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SystemError::io("rename", path, e))
    }

    fn read(&mut self, path: &Path) -> Result<String, SystemError> {
        std::fs::read_to_string(path).map_err(|e| SystemError::io("read", path, e))
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn subdirs(&mut self, path: &Path) -> Result<Vec<PathBuf>, SystemError> {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SystemError::io("list", path, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SystemError::io("list", path, e))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove_tree(&mut self, path: &Path) -> Result<(), SystemError> {
        std::fs::remove_dir_all(path).map_err(|e| SystemError::io("remove", path, e))
    }

    fn kill(&mut self, pid: i32) -> Result<(), SystemError> {
        if pid <= 1 {
            // Never signal init or a process group through a bogus pid.
            return Ok(());
        }
        // SAFETY: kill(2) has no memory effects; pid > 1 targets exactly one process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc == 0 {
            Ok(())
        } else {
            Err(SystemError::Kill {
                pid,
                source: std::io::Error::last_os_error(),
            })
        }
    }

    fn spawn_detached(&mut self, argv: &[String], log: &Path) -> Result<u32, SystemError> {
        let cmd_str = argv.join(" ");
        let [program, args @ ..] = argv else {
            return Err(SystemError::Launch {
                cmd: cmd_str,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| SystemError::io("open", log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| SystemError::io("open", log, e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; a new session keeps the agent alive when the
        // terminal that ran `drover lab up` goes away.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| SystemError::Launch {
            cmd: cmd_str,
            source,
        })?;
        let pid = child.id();
        // Reap it when it dies, so a long-lived caller (a test, a manager) is not left with a
        // zombie that still looks like a running agent.
        std::thread::spawn(move || child.wait());
        Ok(pid)
    }

    fn http_get(&mut self, addr: SocketAddr, path: &str, token: &str) -> Result<(), SystemError> {
        let fail = |reason: String| SystemError::Health { addr, reason };
        let timeout = Duration::from_secs(2);
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| fail(e.to_string()))?;
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        s.write_all(req.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).map_err(|e| fail(e.to_string()))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status = line.split_whitespace().nth(1).unwrap_or("");
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(fail(format!(
                "answered {:?}",
                line.lines().next().unwrap_or("")
            )))
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn random(&mut self, n: usize) -> Result<Vec<u8>, SystemError> {
        let path = Path::new("/dev/urandom");
        let mut f = std::fs::File::open(path).map_err(|e| SystemError::io("open", path, e))?;
        let mut buf = vec![0u8; n];
        f.read_exact(&mut buf)
            .map_err(|e| SystemError::io("read", path, e))?;
        Ok(buf)
    }

    fn lock(&mut self) -> Result<LabLock, SystemError> {
        let path = Path::new(LOCK_FILE);
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| SystemError::io("mkdir", dir, e))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| SystemError::io("open", path, e))?;
        // SAFETY: flock on an fd we own; the lock is released when the file is closed.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if rc != 0 {
            return Err(SystemError::io(
                "lock",
                path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(LabLock(Some(f)))
    }
}

/// How long a control request that changes something (or waits for a line to start) may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// One request line to a Unix control socket, one answer line back, within [`CONTROL_TIMEOUT`].
pub fn control_request(socket: &Path, request: &str) -> std::io::Result<String> {
    control_request_within(socket, request, CONTROL_TIMEOUT)
}

/// [`control_request`] giving up after `timeout` for each of the write and the read (a line
/// that accepts but never answers costs at most that, not a hang).
pub fn control_request_within(
    socket: &Path,
    request: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}
