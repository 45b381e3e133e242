//! Where a host's cgroup lives and what goes into its files, for cgroup v1 and v2.
//!
//! The layout is detected at run time from `/proc/self/mounts`: a cgroup2 mount whose
//! `cgroup.controllers` offers both `cpu` and `memory` wins (a unified host); otherwise the v1
//! hierarchies that carry the `cpu` and `memory` controllers are used (they may be separate
//! mounts, or co-mounted as e.g. `cpu,cpuacct`). A hybrid host with an empty cgroup2 mount at
//! `/sys/fs/cgroup/unified` is therefore treated as v1.
//!
//! A host's cgroup is `drover/<lab>/<host>` under each controller root. Processes placed there
//! (the agent, and the QEMUs it forks, which inherit the cgroup) are capped together, and `down`
//! finds and kills them by reading the `cgroup.procs` files before removing the directories.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// CFS period; the quota is `cpus * period`.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel rejects quotas below 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CgroupError {
    #[error("no cgroup hierarchy with the cpu and memory controllers is mounted (cgroup mounts seen: {0})")]
    NoControllers(String),
    #[error("a host's CPU cap must be a positive number of cores, not {0}")]
    BadCpus(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum CgroupLayout {
    V1 { cpu: PathBuf, memory: PathBuf },
    V2 { root: PathBuf },
}

impl CgroupLayout {
    /// Detects the layout from the text of `/proc/self/mounts`; `controllers` reads a cgroup2
    /// mount's `cgroup.controllers` (None if unreadable).
    pub fn detect(
        mounts: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self, CgroupError> {
        let mut cpu = None;
        let mut memory = None;
        let mut seen = Vec::new();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, point, fstype, options, ..] = fields[..] else {
                continue;
            };
            let point = PathBuf::from(point);
            match fstype {
                "cgroup2" => {
                    seen.push(format!("{} (v2)", point.display()));
                    let offered = controllers(&point).unwrap_or_default();
                    let has = |c: &str| offered.split_whitespace().any(|x| x == c);
                    if has("cpu") && has("memory") {
                        return Ok(Self::V2 { root: point });
                    }
                }
                "cgroup" => {
                    seen.push(format!("{} ({})", point.display(), options));
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpu") && cpu.is_none() {
                        cpu = Some(point.clone());
                    }
                    if opts.contains(&"memory") && memory.is_none() {
                        memory = Some(point);
                    }
                }
                _ => {}
            }
        }
        match (cpu, memory) {
            (Some(cpu), Some(memory)) => Ok(Self::V1 { cpu, memory }),
            _ => Err(CgroupError::NoControllers(if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            })),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            Self::V1 { .. } => CgroupVersion::V1,
            Self::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// Controller mount points (one for v2, cpu then memory for v1).
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Self::V1 { cpu, memory } if cpu == memory => vec![cpu.clone()],
            Self::V1 { cpu, memory } => vec![cpu.clone(), memory.clone()],
            Self::V2 { root } => vec![root.clone()],
        }
    }

    /// Where the memory controller is mounted.
    pub fn memory_root(&self) -> PathBuf {
        match self {
            Self::V1 { memory, .. } => memory.clone(),
            Self::V2 { root } => root.clone(),
        }
    }

    /// The directories of cgroup `rel` (relative to the controller roots).
    pub fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.roots().into_iter().map(|r| r.join(rel)).collect()
    }

    /// Files a pid must be written to for it to join cgroup `rel` in every hierarchy.
    pub fn procs_files(&self, rel: &Path) -> Vec<PathBuf> {
        self.dirs(rel)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// On v2, the `cgroup.subtree_control` files that must enable cpu and memory for cgroup
    /// `rel` to get those controllers: every strict ancestor, from the root down.
    pub fn subtree_control_writes(&self, rel: &Path) -> Vec<(PathBuf, String)> {
        let Self::V2 { root } = self else {
            return Vec::new();
        };
        let mut dir = root.clone();
        let mut out = vec![(
            dir.join("cgroup.subtree_control"),
            "+cpu +memory".to_string(),
        )];
        let parts: Vec<_> = rel.components().collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            dir = dir.join(part);
            out.push((
                dir.join("cgroup.subtree_control"),
                "+cpu +memory".to_string(),
            ));
        }
        out
    }

    /// The limit files of cgroup `rel` and their contents; no entry for an absent limit.
    pub fn limit_writes(
        &self,
        rel: &Path,
        cpus: Option<f64>,
        memory_bytes: Option<u64>,
    ) -> Result<Vec<(PathBuf, String)>, CgroupError> {
        let mut out = Vec::new();
        let quota = cpus.map(cpu_quota_us).transpose()?;
        match self {
            Self::V1 { cpu, memory } => {
                if let Some(q) = quota {
                    // Period first: the kernel validates the quota against the current period.
                    out.push((
                        cpu.join(rel).join("cpu.cfs_period_us"),
                        CPU_PERIOD_US.to_string(),
                    ));
                    out.push((cpu.join(rel).join("cpu.cfs_quota_us"), q.to_string()));
                }
                if let Some(m) = memory_bytes {
                    out.push((
                        memory.join(rel).join("memory.limit_in_bytes"),
                        m.to_string(),
                    ));
                }
            }
            Self::V2 { root } => {
                if let Some(q) = quota {
                    out.push((
                        root.join(rel).join("cpu.max"),
                        format!("{q} {CPU_PERIOD_US}"),
                    ));
                }
                if let Some(m) = memory_bytes {
                    out.push((root.join(rel).join("memory.max"), m.to_string()));
                }
            }
        }
        Ok(out)
    }
}

/// CFS quota in microseconds per [`CPU_PERIOD_US`] for a cap of `cpus` cores.
pub fn cpu_quota_us(cpus: f64) -> Result<u64, CgroupError> {
    if !(cpus.is_finite() && cpus > 0.0) {
        return Err(CgroupError::BadCpus(cpus));
    }
    Ok(((cpus * CPU_PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US))
}

/// Pids listed in a `cgroup.procs` file's text.
pub fn parse_procs(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    const V2_MOUNTS: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n";

    fn v1() -> CgroupLayout {
        CgroupLayout::V1 {
            cpu: "/sys/fs/cgroup/cpu".into(),
            memory: "/sys/fs/cgroup/memory".into(),
        }
    }

    fn v2() -> CgroupLayout {
        CgroupLayout::V2 {
            root: "/sys/fs/cgroup".into(),
        }
    }

    #[test]
    fn hybrid_host_with_empty_unified_mount_is_v1() {
        let layout = CgroupLayout::detect(V1_MOUNTS, |_| Some("hugetlb\n".into())).unwrap();
        assert_eq!(layout, v1());
    }

    #[test]
    fn unified_host_is_v2() {
        let layout =
            CgroupLayout::detect(V2_MOUNTS, |_| Some("cpuset cpu io memory pids".into())).unwrap();
        assert_eq!(layout, v2());
    }

    #[test]
    fn comounted_cpu_cpuacct_is_found() {
        let m = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
                 cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        let layout = CgroupLayout::detect(m, |_| None).unwrap();
        assert_eq!(
            layout.roots()[0],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn missing_controllers_are_an_error_naming_what_was_seen() {
        let err = CgroupLayout::detect(V2_MOUNTS, |_| Some("pids".into())).unwrap_err();
        assert!(err.to_string().contains("/sys/fs/cgroup (v2)"), "{err}");
    }

    #[test]
    fn v1_limits_go_to_separate_hierarchies() {
        let rel = Path::new("drover/lab/h1");
        let w = v1().limit_writes(rel, Some(0.5), Some(512 << 20)).unwrap();
        let expect = [
            (
                "/sys/fs/cgroup/cpu/drover/lab/h1/cpu.cfs_period_us",
                "100000",
            ),
            ("/sys/fs/cgroup/cpu/drover/lab/h1/cpu.cfs_quota_us", "50000"),
            (
                "/sys/fs/cgroup/memory/drover/lab/h1/memory.limit_in_bytes",
                "536870912",
            ),
        ];
        let got: Vec<_> = w
            .iter()
            .map(|(p, c)| (p.to_str().unwrap(), c.as_str()))
            .collect();
        assert_eq!(got, expect);
        assert_eq!(v1().procs_files(rel).len(), 2);
    }

    #[test]
    fn v2_limits_and_parent_controllers() {
        let rel = Path::new("drover/lab/h1");
        let w = v2().limit_writes(rel, Some(1.5), Some(1 << 30)).unwrap();
        let got: Vec<_> = w
            .iter()
            .map(|(p, c)| (p.to_str().unwrap(), c.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/sys/fs/cgroup/drover/lab/h1/cpu.max", "150000 100000"),
                ("/sys/fs/cgroup/drover/lab/h1/memory.max", "1073741824"),
            ]
        );
        let sc: Vec<_> = v2()
            .subtree_control_writes(rel)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            sc,
            [
                PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                PathBuf::from("/sys/fs/cgroup/drover/cgroup.subtree_control"),
                PathBuf::from("/sys/fs/cgroup/drover/lab/cgroup.subtree_control"),
            ]
        );
        assert!(v1().subtree_control_writes(rel).is_empty());
        assert_eq!(
            v2().procs_files(rel),
            [PathBuf::from("/sys/fs/cgroup/drover/lab/h1/cgroup.procs")]
        );
    }

    #[test]
    fn absent_limits_write_nothing_and_bad_cpus_fail() {
        assert!(v2()
            .limit_writes(Path::new("x"), None, None)
            .unwrap()
            .is_empty());
        assert_eq!(cpu_quota_us(0.001).unwrap(), 1_000);
        assert_eq!(cpu_quota_us(0.0), Err(CgroupError::BadCpus(0.0)));
        assert!(cpu_quota_us(f64::NAN).is_err());
    }

    #[test]
    fn procs_text_is_parsed() {
        assert_eq!(parse_procs("12\n345\n\n"), [12, 345]);
    }
}
