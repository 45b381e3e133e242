//! What the agent learns about processes and the host from /proc, /sys and cgroups: liveness,
//! CPU time and run delay, memory, capacity and the cgroup's CPU throttling.
//!
//! Parsing is pure (strings in, numbers out) and unit-tested; the thin readers around it return
//! `None` when a file is missing, since processes come and go between listing and reading.

use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProcError {
    #[error("cannot signal pid {pid}: {message}")]
    Signal { pid: u32, message: String },
}

/// What /proc says about one pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// NUL-separated arguments joined with spaces.
    pub cmdline: String,
    /// Exited but not reaped: as good as dead.
    pub zombie: bool,
}

/// Whether a recorded QEMU is still the process we started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead(String),
}

/// Decides whether `pid` is still VM `name`'s QEMU. The pid alone is not enough: after a reboot
/// or a long time it may belong to something else, and re-attaching to that would be wrong.
pub fn liveness(pid: u32, name: &str, info: Option<&ProcInfo>) -> Liveness {
    let Some(info) = info else {
        return Liveness::Dead(format!("QEMU pid {pid} is gone"));
    };
    if info.zombie {
        return Liveness::Dead(format!("QEMU pid {pid} has exited"));
    }
    // The launcher names the process `-name <name>,process=drover-<name>`.
    let marker = format!("process=drover-{name}");
    let is_ours =
        info.cmdline.contains("qemu") && info.cmdline.split(' ').any(|a| a.ends_with(&marker));
    if is_ours {
        Liveness::Alive
    } else {
        Liveness::Dead(format!("pid {pid} is no longer VM '{name}''s QEMU"))
    }
}

/// Reads /proc/<pid>.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = parse_stat(&stat).is_some_and(|s| s.state == 'Z' || s.state == 'X');
    Some(ProcInfo { cmdline, zombie })
}

/// The fields of /proc/<pid>/stat the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        state,
        cpu_ticks: utime + stime,
    })
}

pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|s| s.cpu_ticks)
}

/// `VmRSS` from /proc/<pid>/status, bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) -> Result<(), ProcError> {
    let pid_t = i32::try_from(pid).map_err(|_| ProcError::Signal {
        pid,
        message: "pid out of range".into(),
    })?;
    if pid_t <= 1 {
        return Err(ProcError::Signal {
            pid,
            message: "refusing to signal pid <= 1".into(),
        });
    }
    // SAFETY: kill has no memory-safety preconditions; the pid was checked above.
    if unsafe { libc::kill(pid_t, signal) } == 0 {
        Ok(())
    } else {
        Err(ProcError::Signal {
            pid,
            message: std::io::Error::last_os_error().to_string(),
        })
    }
}

/// Collects an exited QEMU's status if it is our child (it is when the agent is the child
/// subreaper, see [`become_subreaper`]); otherwise a harmless no-op.
pub fn reap(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: waitpid with WNOHANG and a null status pointer only inspects our own children.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
}

/// Whether a /proc/<pid>/stat line is an exited QEMU of ours whose parent is `parent`: the
/// launcher names QEMU's process `drover-<vm>`, and QEMU's daemonizing leaves an exited
/// intermediate process behind as well as the daemon itself.
pub fn is_our_zombie(stat: &str, parent: u32) -> bool {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = stat.get(open + 1..close).unwrap_or("");
    let mut rest = stat.get(close + 1..).unwrap_or("").split_whitespace();
    let state = rest.next();
    let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
    comm.starts_with("drover-") && state == Some("Z") && ppid == Some(parent)
}

/// Reaps exited QEMU processes left to us as subreaper (called periodically).
pub fn reap_zombie_children() {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if read(entry.path().join("stat")).is_some_and(|s| is_our_zombie(&s, me)) {
            reap(pid);
        }
    }
}

/// Makes this process the reaper of its orphaned descendants, so daemonized QEMUs it stops
/// are reaped here instead of lingering as zombies under an init that does not reap.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Whether `pid` is VM `name`'s live QEMU right now.
pub fn is_alive(pid: u32, name: &str) -> bool {
    liveness(pid, name, proc_info(pid).as_ref()) == Liveness::Alive
}

/// Host capacity as this agent may use it: its cgroup's limits when set, the machine's otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub cpus: f64,
    pub memory_bytes: u64,
}

/// The agent's cgroup paths from /proc/self/cgroup: (v2 path, v1 cpu path, v1 memory path).
pub fn parse_self_cgroup(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut v2, mut cpu, mut mem) = (None, None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        }
        for c in ctrls.split(',') {
            match c {
                "cpu" => cpu = Some(path.to_string()),
                "memory" => mem = Some(path.to_string()),
                _ => {}
            }
        }
    }
    (v2, cpu, mem)
}

/// cgroup v2 `cpu.max` ("max 100000" or "200000 100000") -> CPUs.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0 && quota > 0.0).then(|| quota / period)
}

/// cgroup v1 quota and period -> CPUs (quota -1 means unlimited).
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let q: f64 = quota.trim().parse().ok()?;
    let p: f64 = period.trim().parse().ok()?;
    (q > 0.0 && p > 0.0).then(|| q / p)
}

/// A memory limit ("max", or a huge v1 number meaning none) -> bytes.
pub fn parse_mem_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    // v1 reports "no limit" as a page-rounded i64::MAX.
    (v < (1u64 << 60)).then_some(v)
}

/// `MemTotal` from /proc/meminfo, bytes.
pub fn parse_memtotal(text: &str) -> Option<u64> {
    parse_rss(&text.replace("MemTotal:", "VmRSS:"))
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Reads this host's capacity.
pub fn capacity() -> Capacity {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let memtotal = read("/proc/meminfo")
        .and_then(|t| parse_memtotal(&t))
        .unwrap_or(0);
    let (v2, cpu, mem) = read("/proc/self/cgroup")
        .map(|t| parse_self_cgroup(&t))
        .unwrap_or_default();
    let root = Path::new("/sys/fs/cgroup");
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let cpus = match (&v2, &cpu) {
        (_, Some(c)) => {
            let d = root.join("cpu").join(rel(c));
            read(d.join("cpu.cfs_quota_us"))
                .zip(read(d.join("cpu.cfs_period_us")))
                .and_then(|(q, p)| parse_cfs(&q, &p))
        }
        (Some(v), None) => read(root.join(rel(v)).join("cpu.max")).and_then(|t| parse_cpu_max(&t)),
        _ => None,
    };
    let memory = match (&v2, &mem) {
        (_, Some(m)) => read(
            root.join("memory")
                .join(rel(m))
                .join("memory.limit_in_bytes"),
        )
        .and_then(|t| parse_mem_limit(&t)),
        (Some(v), None) => {
            read(root.join(rel(v)).join("memory.max")).and_then(|t| parse_mem_limit(&t))
        }
        _ => None,
    };
    Capacity {
        cpus: cpus.unwrap_or(nproc).min(nproc),
        memory_bytes: memory.filter(|m| *m > 0).map_or(memtotal, |m| {
            if memtotal > 0 {
                m.min(memtotal)
            } else {
                m
            }
        }),
    }
}

/// `/proc/<pid>/task/<tid>/schedstat` ("<run ns> <run delay ns> <timeslices>"): the time the
/// thread ran and the time it spent runnable but waiting for a core (which includes time its
/// cgroup was throttled by a CPU cap), ns.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace();
    let run = it.next()?.parse().ok()?;
    let wait = it.next()?.parse().ok()?;
    Some((run, wait))
}

/// Run delay of all of `pid`'s threads (vCPUs, I/O, main loop), ns; None without schedstat
/// (a kernel without `CONFIG_SCHED_INFO`) or once the process is gone. A thread that exits
/// takes its share with it, so the sum may go down: rates over it saturate at zero.
pub fn run_delay_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in tasks.flatten() {
        if let Some((_, wait)) =
            read(task.path().join("schedstat")).and_then(|t| parse_schedstat(&t))
        {
            total = Some(total.unwrap_or(0) + wait);
        }
    }
    total
}

/// A cgroup's CPU throttling counters (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Enforcement periods that elapsed.
    pub nr_periods: u64,
    /// Periods in which the cgroup used up its quota and was throttled.
    pub nr_throttled: u64,
    /// Time its run queues spent throttled, ns (summed over CPUs).
    pub throttled_ns: u64,
}

/// Parses `cpu.stat`: cgroup v1 (`throttled_time`, ns) or v2 (`throttled_usec`). None when it
/// has no throttling counters (a v2 cgroup without the cpu controller has only usage).
pub fn parse_cpu_stat(text: &str) -> Option<CpuStat> {
    let (mut periods, mut throttled, mut ns) = (None, None, None);
    for line in text.lines() {
        let mut kv = line.split_whitespace();
        let (Some(k), Some(v)) = (kv.next(), kv.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match k {
            "nr_periods" => periods = Some(v),
            "nr_throttled" => throttled = Some(v),
            "throttled_time" => ns = Some(v),
            "throttled_usec" => ns = Some(v.saturating_mul(1000)),
            _ => {}
        }
    }
    Some(CpuStat {
        nr_periods: periods?,
        nr_throttled: throttled?,
        throttled_ns: ns?,
    })
}

/// Where the `cpu.stat` of a cgroup is, from its paths in /proc/self/cgroup (`v2`, v1 `cpu`;
/// see [`parse_self_cgroup`]) under the cgroup mount `root`: the v1 cpu hierarchy when there
/// is one (as [`capacity`] reads the quota), else the v2 one.
pub fn cpu_stat_path(
    v2: Option<&str>,
    cpu: Option<&str>,
    root: &Path,
) -> Option<std::path::PathBuf> {
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    match (v2, cpu) {
        (_, Some(c)) => Some(root.join("cpu").join(rel(c)).join("cpu.stat")),
        (Some(v), None) => Some(root.join(rel(v)).join("cpu.stat")),
        (None, None) => None,
    }
}

/// This agent's cgroup's throttling counters; None when its cgroup is not visible (under
/// `ip netns exec`, which mounts a fresh /sys) or has no CPU controller.
pub fn cgroup_cpu_stat() -> Option<CpuStat> {
    let (v2, cpu, _) = parse_self_cgroup(&read("/proc/self/cgroup")?);
    let path = cpu_stat_path(v2.as_deref(), cpu.as_deref(), Path::new("/sys/fs/cgroup"))?;
    parse_cpu_stat(&read(path)?)
}

/// A tap's counters (host view): (rx_bytes, tx_bytes).
pub fn tap_bytes(ifname: &str) -> Option<(u64, u64)> {
    let dir = Path::new("/sys/class/net").join(ifname).join("statistics");
    let rx = read(dir.join("rx_bytes"))?.trim().parse().ok()?;
    let tx = read(dir.join("tx_bytes"))?.trim().parse().ok()?;
    Some((rx, tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_needs_the_right_qemu() {
        let info = |cmd: &str, zombie| ProcInfo {
            cmdline: cmd.into(),
            zombie,
        };
        let ours = "qemu-system-x86_64 -name vm1,process=drover-vm1 -m 128M";
        assert_eq!(
            liveness(10, "vm1", Some(&info(ours, false))),
            Liveness::Alive
        );
        assert!(matches!(liveness(10, "vm1", None), Liveness::Dead(_)));
        assert!(matches!(
            liveness(10, "vm1", Some(&info(ours, true))),
            Liveness::Dead(_)
        ));
        // Another VM whose name extends ours, and a recycled pid.
        let other = "qemu-system-x86_64 -name vm10,process=drover-vm10";
        assert!(matches!(
            liveness(10, "vm1", Some(&info(other, false))),
            Liveness::Dead(_)
        ));
        assert!(matches!(
            liveness(10, "vm1", Some(&info("bash", false))),
            Liveness::Dead(_)
        ));
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let text = "1234 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 3 0 100";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                cpu_ticks: 175
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn memory_and_cgroup_parsing() {
        assert_eq!(parse_rss("Name:\tqemu\nVmRSS:\t  2048 kB\n"), Some(2 << 20));
        assert_eq!(
            parse_memtotal("MemTotal:       1024 kB\nMemFree: 1 kB"),
            Some(1 << 20)
        );
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_mem_limit("max\n"), None);
        assert_eq!(parse_mem_limit("9223372036854771712\n"), None);
        assert_eq!(parse_mem_limit("1073741824\n"), Some(1 << 30));
        let v1 = "12:memory:/drover/h1\n4:cpu,cpuacct:/drover/h1\n0::/\n";
        assert_eq!(
            parse_self_cgroup(v1),
            (
                Some("/".into()),
                Some("/drover/h1".into()),
                Some("/drover/h1".into())
            )
        );
        assert_eq!(
            parse_self_cgroup("0::/lab/h2\n"),
            (Some("/lab/h2".into()), None, None)
        );
    }

    #[test]
    fn schedstat_and_cgroup_cpu_stat_v1_and_v2() {
        assert_eq!(
            parse_schedstat("403580717 1542616992 116\n"),
            Some((403580717, 1542616992))
        );
        assert_eq!(parse_schedstat("12"), None);
        // cgroup v1 (what this machine's kernel writes for a capped cgroup).
        let v1 = "nr_periods 20\nnr_throttled 19\nthrottled_time 1124342969\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Some(CpuStat {
                nr_periods: 20,
                nr_throttled: 19,
                throttled_ns: 1_124_342_969
            })
        );
        // cgroup v2: usage first, throttled time in microseconds.
        let v2 = "usage_usec 8000000\nuser_usec 6000000\nsystem_usec 2000000\n\
                  nr_periods 50\nnr_throttled 10\nthrottled_usec 250000\n\
                  nr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Some(CpuStat {
                nr_periods: 50,
                nr_throttled: 10,
                throttled_ns: 250_000_000
            })
        );
        // A v2 cgroup without the cpu controller has usage only.
        assert_eq!(
            parse_cpu_stat("usage_usec 1\nuser_usec 1\nsystem_usec 0\n"),
            None
        );
        assert_eq!(
            parse_cpu_stat("nr_periods x\nnr_throttled 1\nthrottled_time 1\n"),
            None
        );
        let root = Path::new("/sys/fs/cgroup");
        let (v2, cpu, _) =
            parse_self_cgroup("12:memory:/drover/l/h1\n4:cpu,cpuacct:/drover/l/h1\n0::/\n");
        assert_eq!(
            cpu_stat_path(v2.as_deref(), cpu.as_deref(), root),
            Some("/sys/fs/cgroup/cpu/drover/l/h1/cpu.stat".into())
        );
        let (v2, cpu, _) = parse_self_cgroup("0::/drover/l/h2\n");
        assert_eq!(
            cpu_stat_path(v2.as_deref(), cpu.as_deref(), root),
            Some("/sys/fs/cgroup/drover/l/h2/cpu.stat".into())
        );
        assert_eq!(cpu_stat_path(None, None, root), None);
    }

    /// Debian's kernels keep schedstat for every task (`CONFIG_SCHED_INFO`).
    #[test]
    fn run_delay_of_a_live_process() {
        assert!(run_delay_ns(std::process::id()).is_some());
        assert_eq!(run_delay_ns(u32::MAX), None);
    }

    #[test]
    fn only_our_exited_qemus_are_reaped() {
        assert!(is_our_zombie("10 (drover-vm1) Z 42 10 10", 42));
        assert!(!is_our_zombie("10 (drover-vm1) Z 43 10 10", 42));
        assert!(!is_our_zombie("10 (drover-vm1) S 42 10 10", 42));
        assert!(!is_our_zombie("10 (bash) Z 42 10 10", 42));
        assert!(!is_our_zombie("garbage", 42));
    }

    #[test]
    fn signalling_init_is_refused() {
        assert!(signal(1, 0).is_err());
        assert!(signal(0, 0).is_err());
    }
}
