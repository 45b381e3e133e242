//! Carries out planned actions through a [`System`], keeping a journal of the undos of what
//! succeeded so a failed `up` can be rolled back in reverse order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::parse_procs;
use crate::plan::{Action, Step, HEALTH_PATH};
use crate::system::{Cmd, System, SystemError};

/// Pause between polls of a draining cgroup or a starting agent.
const POLL: Duration = Duration::from_millis(100);
/// Killing a cgroup's processes: how many rounds of read + SIGKILL before giving up (~5 s).
const KILL_ROUNDS: u32 = 50;
/// rmdir of a cgroup fails with EBUSY until the kernel has finished tearing down its exited
/// tasks; retry for ~2 s.
const RMDIR_ROUNDS: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{action}: {source}")]
    Step { action: String, source: SystemError },
    /// `tail` holds the last lines of the agent's log, read before the rollback removes the
    /// lab's directory (and the log with it).
    #[error("agent of {host} did not answer on http://{addr}{HEALTH_PATH} within {secs} s (last error: {last}); the end of its log {}:\n{tail}", log.display())]
    Unhealthy {
        host: String,
        addr: String,
        secs: u64,
        last: String,
        log: PathBuf,
        /// Boxed: the error stays small enough to return by value.
        tail: Box<str>,
    },
    /// A spawned helper (a delay line) that never answered on its control socket.
    #[error("{what} did not answer on {} within {secs} s (last error: {last}); the end of its log {}:\n{tail}", socket.display(), log.display())]
    Silent {
        what: String,
        socket: PathBuf,
        secs: u64,
        last: String,
        log: PathBuf,
        tail: Box<str>,
    },
    #[error("processes {pids:?} in {} survived SIGKILL", file.display())]
    Unkillable { file: PathBuf, pids: Vec<i32> },
}

/// Lines of a failed agent's log an error quotes.
const LOG_TAIL_LINES: usize = 20;

/// The last [`LOG_TAIL_LINES`] lines of a log, indented.
fn log_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    if lines.is_empty() {
        return "  (empty)".into();
    }
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs steps and remembers how to undo them.
pub struct Executor<'a, S: System> {
    sys: &'a mut S,
    journal: Vec<Action>,
    /// Agent pids by host.
    pub pids: BTreeMap<String, u32>,
}

impl<'a, S: System> Executor<'a, S> {
    pub fn new(sys: &'a mut S) -> Self {
        Self {
            sys,
            journal: Vec::new(),
            pids: BTreeMap::new(),
        }
    }

    pub fn sys(&mut self) -> &mut S {
        self.sys
    }

    /// Applies steps in order; stops at the first failure (without rolling back).
    pub fn apply_all(&mut self, steps: &[Step]) -> Result<(), ExecError> {
        for step in steps {
            tracing::info!(action = %step.action, "up");
            perform(self.sys, &step.action, &mut self.pids)?;
            if let Some(undo) = &step.undo {
                self.journal.push(undo.clone());
            }
        }
        Ok(())
    }

    /// Undoes every applied step, newest first, continuing past failures; returns them.
    pub fn rollback(&mut self) -> Vec<ExecError> {
        let mut errors = Vec::new();
        while let Some(undo) = self.journal.pop() {
            tracing::info!(action = %undo, "rollback");
            if let Err(e) = perform(self.sys, &undo, &mut BTreeMap::new()) {
                errors.push(e);
            }
        }
        errors
    }
}

/// Asks `ask` every [`POLL`] until it succeeds or `timeout` has passed; on timeout, the last
/// error and the tail of the program's `log` (read now: a rollback may remove it).
fn poll<S: System>(
    sys: &mut S,
    timeout: Duration,
    log: &Path,
    mut ask: impl FnMut(&mut S) -> Result<(), SystemError>,
) -> Result<(), (String, Box<str>)> {
    let rounds = (timeout.as_millis() / POLL.as_millis()).max(1);
    let mut last = String::new();
    for _ in 0..rounds {
        match ask(sys) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        sys.sleep(POLL);
    }
    let tail = match sys.read(log) {
        Ok(text) => log_tail(&text),
        Err(e) => format!("(unreadable: {e})"),
    };
    Err((last, tail.into()))
}

/// Polls a control socket until it answers.
fn wait_control<S: System>(
    sys: &mut S,
    what: &str,
    socket: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<(), ExecError> {
    poll(sys, timeout, log, |sys| {
        sys.control(socket, "stats", crate::system::CONTROL_TIMEOUT)
            .map(drop)
    })
    .map_err(|(last, tail)| ExecError::Silent {
        what: what.into(),
        socket: socket.to_path_buf(),
        secs: timeout.as_secs(),
        last,
        log: log.to_path_buf(),
        tail,
    })
}

/// Applies every action, continuing past failures (the `down` discipline); returns the failures.
pub fn perform_all<S: System>(sys: &mut S, actions: &[Action]) -> Vec<ExecError> {
    let mut errors = Vec::new();
    for a in actions {
        tracing::info!(action = %a, "down");
        if let Err(e) = perform(sys, a, &mut BTreeMap::new()) {
            errors.push(e);
        }
    }
    errors
}

fn step_err(action: &Action) -> impl FnOnce(SystemError) -> ExecError + '_ {
    move |source| ExecError::Step {
        action: action.to_string(),
        source,
    }
}

/// Removals tolerate what is already gone, which is what makes `down` idempotent.
fn tolerate_missing(r: Result<(), SystemError>) -> Result<(), SystemError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

pub fn perform<S: System>(
    sys: &mut S,
    action: &Action,
    pids: &mut BTreeMap<String, u32>,
) -> Result<(), ExecError> {
    let err = step_err(action);
    match action {
        Action::Run(cmd) if is_removal(cmd) => {
            tolerate_missing(sys.run(cmd).map(drop)).map_err(err)
        }
        Action::Run(cmd) => sys.run(cmd).map(drop).map_err(err),
        Action::Mkdir(p) => sys.mkdir(p).map_err(err),
        Action::Write {
            path,
            contents,
            mode,
        } => sys.write(path, contents, *mode).map_err(err),
        Action::Spawn { host, argv, log } => {
            let pid = sys.spawn_detached(argv, log).map_err(err)?;
            pids.insert(host.clone(), pid);
            Ok(())
        }
        Action::WaitHealth {
            host,
            addr,
            token,
            log,
            timeout,
        } => poll(sys, *timeout, log, |sys| {
            sys.http_get(*addr, HEALTH_PATH, token)
        })
        .map_err(|(last, tail)| ExecError::Unhealthy {
            host: host.clone(),
            addr: addr.to_string(),
            secs: timeout.as_secs(),
            last,
            log: log.clone(),
            tail,
        }),
        Action::WaitControl {
            what,
            socket,
            log,
            timeout,
        } => wait_control(sys, what, socket, log, *timeout),
        Action::KillCgroup(files) => kill_cgroup(sys, files),
        Action::KillNetns(ns) => {
            // A namespace that is already gone has no processes.
            let Ok(out) = sys.run(&Cmd::new("ip", &["netns", "pids", ns])) else {
                return Ok(());
            };
            for pid in parse_procs(&out) {
                tolerate_missing(sys.kill(pid)).map_err(step_err(action))?;
            }
            Ok(())
        }
        Action::RemoveCgroup(dir) => {
            kill_cgroup(sys, &[dir.join("cgroup.procs")])?;
            rmdir_retrying(sys, dir).map_err(err)
        }
        Action::RmdirIfEmpty(dir) => {
            if let Err(e) = sys.rmdir(dir) {
                tracing::debug!(dir = %dir.display(), error = %e, "shared cgroup parent kept");
            }
            Ok(())
        }
        Action::RemoveTree(p) => tolerate_missing(sys.remove_tree(p)).map_err(err),
    }
}

fn is_removal(cmd: &Cmd) -> bool {
    cmd.program == "ip" && cmd.args.iter().any(|a| a == "del")
}

fn kill_cgroup<S: System>(sys: &mut S, files: &[PathBuf]) -> Result<(), ExecError> {
    let mut left = Vec::new();
    for _ in 0..KILL_ROUNDS {
        left.clear();
        for f in files {
            let pids = match sys.read(f) {
                Ok(text) => parse_procs(&text),
                Err(e) if e.is_not_found() => Vec::new(),
                Err(source) => {
                    return Err(ExecError::Step {
                        action: format!("read {}", f.display()),
                        source,
                    })
                }
            };
            for pid in pids {
                if let Err(e) = sys.kill(pid) {
                    if !e.is_not_found() {
                        tracing::warn!(pid, error = %e, "kill");
                    }
                }
                left.push((f.clone(), pid));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        sys.sleep(POLL);
    }
    let (file, _) = left[0].clone();
    Err(ExecError::Unkillable {
        file,
        pids: left.into_iter().map(|(_, p)| p).collect(),
    })
}

fn rmdir_retrying<S: System>(sys: &mut S, dir: &Path) -> Result<(), SystemError> {
    let mut result = Ok(());
    for _ in 0..RMDIR_ROUNDS {
        result = tolerate_missing(sys.rmdir(dir));
        if result.is_ok() {
            return result;
        }
        sys.sleep(POLL);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeSystem;

    #[test]
    fn cgroup_processes_are_killed_before_rmdir() {
        let mut sys = FakeSystem::new();
        let dir = PathBuf::from("/cg/drover/l/h1");
        sys.dirs.insert(dir.clone());
        sys.files
            .insert(dir.join("cgroup.procs"), "41\n42\n".into());
        perform(
            &mut sys,
            &Action::RemoveCgroup(dir.clone()),
            &mut BTreeMap::new(),
        )
        .unwrap();
        let kill = sys.position("kill 42").unwrap();
        let rmdir = sys.position("rmdir /cg/drover/l/h1").unwrap();
        assert!(kill < rmdir, "{:?}", sys.ops);
        assert!(!sys.dirs.contains(&dir));
    }

    #[test]
    fn removing_what_is_gone_is_not_an_error() {
        let mut sys = FakeSystem::new();
        let actions = [
            Action::RemoveCgroup("/cg/none".into()),
            Action::RemoveTree("/run/none".into()),
            Action::RmdirIfEmpty("/cg/drover".into()),
            Action::KillNetns("drvx-h1".into()),
        ];
        assert!(perform_all(&mut sys, &actions).is_empty());
    }

    #[test]
    fn unhealthy_agent_names_host_and_log() {
        let mut sys = FakeSystem::new();
        sys.fail_on = Some("get ".into());
        sys.files.insert(
            "/run/l/h2.agent.log".into(),
            "starting\nError: agent setting link_bps is 1000 bytes/s\n".into(),
        );
        let action = Action::WaitHealth {
            host: "h2".into(),
            addr: "198.18.0.12:7700".parse().unwrap(),
            token: "t".into(),
            log: "/run/l/h2.agent.log".into(),
            timeout: Duration::from_secs(1),
        };
        let err = perform(&mut sys, &action, &mut BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent of h2") && err.contains("/run/l/h2.agent.log"),
            "{err}"
        );
        // The log is gone after the rollback: its end is in the error.
        assert!(
            err.contains("Error: agent setting link_bps is 1000 bytes/s"),
            "{err}"
        );
        assert_eq!(sys.ops.len(), 11, "{:?}", sys.ops);
    }

    #[test]
    fn spawned_pids_are_recorded_by_host() {
        let mut sys = FakeSystem::new();
        let mut ex = Executor::new(&mut sys);
        let step = Step {
            action: Action::Spawn {
                host: "h1".into(),
                argv: vec!["x".into()],
                log: "/l".into(),
            },
            undo: None,
        };
        ex.apply_all(&[step]).unwrap();
        assert_eq!(ex.pids.get("h1"), Some(&1001));
    }
}
