//! Whether the host's memory cgroup killed a VM: when a QEMU is found dead, "QEMU pid N is gone"
//! alone leaves the operator guessing; if the cgroup's OOM-kill count went up meanwhile, the
//! host ran out of memory and the kernel chose that process.
//!
//! Counters read (the first present wins):
//! - cgroup v2 `memory.events`: `oom_kill N`;
//! - cgroup v1 `memory.oom_control`: `oom_kill N` (kernels since 4.13);
//! - cgroup v1 `memory.failcnt`: how often usage hit the limit (older kernels; a weaker sign,
//!   reported as such).
//!
//! The cgroup is the agent's own (its QEMUs inherit it) unless one is configured. Under
//! `ip netns exec`, which mounts a fresh /sys, the agent cannot see its cgroup by path; the lab
//! hands it an open descriptor instead (`--cgroup-dir /proc/self/fd/N`).

use crate::lock;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Processes the OOM killer killed in the cgroup.
    OomKills,
    /// Times the cgroup's usage hit its limit (v1 `memory.failcnt`).
    LimitHits,
}

/// One reading of the cgroup's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub counter: Counter,
    pub count: u64,
}

/// The value of the `oom_kill` line of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some("oom_kill"))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Reads the counter of the memory cgroup at `dir`.
pub fn read(dir: &Path) -> Option<Reading> {
    let text = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    for file in ["memory.events", "memory.oom_control"] {
        if let Some(count) = text(file).as_deref().and_then(parse_oom_kill) {
            return Some(Reading {
                counter: Counter::OomKills,
                count,
            });
        }
    }
    let count = text("memory.failcnt")?.trim().parse().ok()?;
    Some(Reading {
        counter: Counter::LimitHits,
        count,
    })
}

/// Why VMs found dead since `before` may have died, given the counter `now` (pure, for tests).
pub fn explain(dir: &Path, before: Option<Reading>, now: Option<Reading>) -> Option<String> {
    let (b, n) = (before?, now?);
    if b.counter != n.counter || n.count <= b.count {
        return None;
    }
    let what = match n.counter {
        Counter::OomKills => "OOM-killed",
        Counter::LimitHits => "hit its memory limit (memory.failcnt)",
    };
    Some(match n.counter {
        Counter::OomKills => format!(
            "the host ran out of memory: its memory cgroup {} {what} {} process(es) meanwhile \
             (oom_kill {} -> {})",
            dir.display(),
            n.count - b.count,
            b.count,
            n.count
        ),
        Counter::LimitHits => format!(
            "the host's memory cgroup {} {what} {} time(s) meanwhile, so the kernel's OOM \
             killer probably chose it",
            dir.display(),
            n.count - b.count
        ),
    })
}

/// Watches the host's memory cgroup between liveness checks.
#[derive(Debug)]
pub struct OomWatch {
    dir: Option<PathBuf>,
    last: Mutex<Option<Reading>>,
}

impl OomWatch {
    /// Watches `configured`, else the agent's own memory cgroup if it can be seen; with
    /// neither, explains nothing.
    pub fn new(configured: Option<PathBuf>) -> Self {
        let dir = configured.or_else(own_memory_cgroup);
        if let Some(fd) = dir.as_deref().and_then(inherited_fd) {
            // The descriptor the lab handed over is for the agent only, not for its QEMUs.
            // SAFETY: fcntl on an fd number with an integer argument; no memory is passed.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        let last = dir.as_deref().and_then(read);
        OomWatch {
            dir,
            last: Mutex::new(last),
        }
    }

    /// The cgroup directory watched, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Reads the counter and says why VMs found dead since the last call may have died.
    pub fn since_last(&self) -> Option<String> {
        let dir = self.dir.as_deref()?;
        let now = read(dir);
        let before = std::mem::replace(&mut *lock(&self.last), now);
        explain(dir, before, now)
    }

    /// For VMs found dead at start-up, when nothing is known of when they died: the count so
    /// far, if any.
    pub fn so_far(&self) -> Option<String> {
        let dir = self.dir.as_deref()?;
        let r = (*lock(&self.last)).filter(|r| r.count > 0)?;
        Some(match r.counter {
            Counter::OomKills => format!(
                "the host's memory cgroup {} has OOM-killed {} process(es) so far (oom_kill); \
                 perhaps this one",
                dir.display(),
                r.count
            ),
            Counter::LimitHits => format!(
                "the host's memory cgroup {} has hit its limit {} time(s) so far; the kernel's \
                 OOM killer may have chosen it",
                dir.display(),
                r.count
            ),
        })
    }
}

/// `/proc/self/fd/N` -> N.
fn inherited_fd(dir: &Path) -> Option<i32> {
    dir.strip_prefix("/proc/self/fd")
        .ok()?
        .to_str()?
        .parse()
        .ok()
}

/// The agent's own memory cgroup directory, if mounted where it can see it.
fn own_memory_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (v2, _, v1_memory) = crate::procfs::parse_self_cgroup(&text);
    let root = Path::new("/sys/fs/cgroup");
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let candidates = [
        v1_memory.map(|m| root.join("memory").join(rel(&m))),
        v2.map(|p| root.join(rel(&p))),
    ];
    candidates.into_iter().flatten().find(|d| read(d).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_both_cgroup_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(3));
        assert_eq!(parse_oom_kill(v2), Some(2));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);

        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        std::fs::write(dir.path().join("memory.failcnt"), "7\n").expect("write");
        assert_eq!(
            read(dir.path()),
            Some(Reading {
                counter: Counter::LimitHits,
                count: 7
            })
        );
        std::fs::write(dir.path().join("memory.oom_control"), v1).expect("write");
        assert_eq!(
            read(dir.path()).map(|r| (r.counter, r.count)),
            Some((Counter::OomKills, 3))
        );
    }

    /// A QEMU found dead after the cgroup's OOM-kill count went up is explained as such; one
    /// found dead with no kill counted is not blamed on memory.
    #[test]
    fn a_death_is_explained_only_when_the_count_went_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memory.oom_control");
        std::fs::write(&file, "oom_kill 1\n").expect("write");
        let watch = OomWatch::new(Some(dir.path().to_path_buf()));
        assert_eq!(watch.since_last(), None, "nothing happened yet");
        std::fs::write(&file, "oom_kill 4\n").expect("write");
        let why = watch.since_last().expect("explained");
        assert!(why.contains("OOM-killed 3 process(es)"), "{why}");
        assert!(why.contains("oom_kill 1 -> 4"), "{why}");
        assert_eq!(watch.since_last(), None, "each kill is told once");
        assert!(watch
            .so_far()
            .is_some_and(|s| s.contains("OOM-killed 4 process(es) so far")));
        assert_eq!(
            OomWatch::new(None).dir().is_some(),
            own_memory_cgroup().is_some()
        );
    }

    #[test]
    fn descriptors_handed_over_are_recognised() {
        assert_eq!(inherited_fd(Path::new("/proc/self/fd/3")), Some(3));
        assert_eq!(inherited_fd(Path::new("/sys/fs/cgroup/memory")), None);
    }
}
