//! Workloads: CPU utilization per VM per interval, from PlanetLab folders, CSV files or the
//! synthetic generator.
//!
//! - **PlanetLab format**: a folder with one file per VM (sorted by name, since the order CloudSim
//!   saw cannot be recovered), one integer line per 5-minute sample, 0..=100 percent of the VM's
//!   capacity, 288 lines for a day.
//! - **CSV format**: lines `vm,t,cpu_pct` where `t` is the sample index (0, 1, ...), an optional
//!   header line, every VM having every index exactly once.
//!
//! Both readers skip a UTF-8 byte-order mark at the start of a file, and a day folder's hidden
//! files (`.DS_Store` and the like). Errors name the file (and line) at fault; counts are held
//! to [`crate::limits`].

use crate::limits::{self, LimitError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A trace that cannot be read. Messages carry the whole reason and no source chain (the
/// CLI prints `{:#}`, which would repeat it).
#[derive(Debug, Error)]
pub enum TraceError {
    #[error("trace {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("trace folder {0} has no VM files")]
    EmptyFolder(PathBuf),
    #[error("trace file {0} has no rows (expected lines of 'vm,t,cpu_pct')")]
    EmptyFile(PathBuf),
    #[error("trace folder {path} holds folders ({}) rather than VM files: pass one day's folder, or compare them all", .days.join(", "))]
    HoldsDays { path: PathBuf, days: Vec<String> },
    #[error("trace {path}: {error}")]
    TooLarge { path: PathBuf, error: LimitError },
    #[error(
        "trace file {path}, line {line}: '{value}' is not a CPU percentage (a number 0..=100)"
    )]
    BadValue {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("trace file {path} has {got} samples, expected {expected}")]
    WrongLength {
        path: PathBuf,
        got: usize,
        expected: usize,
    },
    #[error("trace file {path}, line {line}: expected 'vm,t,cpu_pct'")]
    BadCsvLine { path: PathBuf, line: usize },
    #[error(
        "trace file {path}, line {line}: sample index {t} is past the last allowed, {} (a year of 5-minute samples)",
        limits::MAX_SAMPLES - 1
    )]
    SampleIndex {
        path: PathBuf,
        line: usize,
        t: usize,
    },
    #[error("trace file {path}: VM '{vm}' has no sample {t}")]
    MissingSample { path: PathBuf, vm: String, t: usize },
    #[error("trace file {path}, line {line}: VM '{vm}' sample {t} given twice")]
    DuplicateSample {
        path: PathBuf,
        line: usize,
        vm: String,
        t: usize,
    },
}

/// CPU utilization of every VM at every sample, as fractions of the VM's capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// A name for the run (the trace folder's name for PlanetLab days).
    pub day: String,
    pub names: Vec<String>,
    pub samples: usize,
    /// Row-major: VM `v`'s sample `k` is `util[v * samples + k]`.
    util: Vec<f32>,
    /// Made by the synthetic generator (which also sizes its datacenter).
    synthetic: bool,
}

impl Workload {
    pub fn new(day: String, names: Vec<String>, samples: usize, util: Vec<f32>) -> Workload {
        debug_assert_eq!(names.len() * samples, util.len());
        Workload {
            day,
            names,
            samples,
            util,
            synthetic: false,
        }
    }

    /// The same workload, marked as made by [`crate::synth`].
    pub(crate) fn into_synthetic(self) -> Workload {
        Workload {
            synthetic: true,
            ..self
        }
    }

    /// Whether [`crate::synth`] made it (rather than a trace).
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }

    pub fn vms(&self) -> usize {
        self.names.len()
    }

    /// Sample `k` of VM `v` (the last sample repeats past the end).
    pub fn at(&self, v: usize, k: usize) -> f64 {
        self.util[v * self.samples + k.min(self.samples - 1)] as f64
    }

    pub fn row(&self, v: usize) -> &[f32] {
        &self.util[v * self.samples..(v + 1) * self.samples]
    }

    /// The same VMs in a seeded random order (Fisher-Yates; each VM keeps its name and
    /// samples). VM types are assigned in blocks by position, so this re-pairs traces with
    /// types: CloudSim took its folder's unspecified listing order, which sorting by name does
    /// not reproduce; `drover sim fidelity --shuffle SEED` measures what the pairing moves.
    pub fn shuffled(&self, seed: u64) -> Workload {
        let mut order: Vec<usize> = (0..self.vms()).collect();
        let mut rng = drover_core::dc::rng::SplitMix64::new(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let names = order.iter().map(|&v| self.names[v].clone()).collect();
        let util = order.iter().flat_map(|&v| self.row(v)).copied().collect();
        Workload {
            names,
            util,
            day: self.day.clone(),
            ..*self
        }
    }

    /// Loads a PlanetLab day folder, expecting `samples` lines per file. Hidden files are
    /// skipped; a folder of day folders is an error ([`TraceError::HoldsDays`]).
    pub fn from_planetlab_dir(dir: &Path, samples: usize) -> Result<Workload, TraceError> {
        let too_large = |error| TraceError::TooLarge {
            path: dir.to_path_buf(),
            error,
        };
        limits::check("samples per VM file", samples, &limits::SAMPLES).map_err(too_large)?;
        let (files, subdirs) = list_visible(dir)?;
        if !subdirs.is_empty() {
            return Err(TraceError::HoldsDays {
                path: dir.to_path_buf(),
                days: subdirs.iter().map(|d| file_name(d)).collect(),
            });
        }
        if files.is_empty() {
            return Err(TraceError::EmptyFolder(dir.to_path_buf()));
        }
        limits::check("VM files in the folder", files.len(), &limits::VMS).map_err(too_large)?;
        limits::check_cells("the day", files.len(), samples).map_err(too_large)?;
        let mut names = Vec::with_capacity(files.len());
        let mut util = Vec::with_capacity(files.len() * samples);
        for f in &files {
            util.extend(read_planetlab_file(f, samples)?);
            names.push(file_name(f));
        }
        Ok(Workload::new(day_name(dir), names, samples, util))
    }

    /// Loads a CSV trace (`vm,t,cpu_pct`).
    pub fn from_csv(path: &Path) -> Result<Workload, TraceError> {
        let text = read_text(path)?;
        let too_large = |error| TraceError::TooLarge {
            path: path.to_path_buf(),
            error,
        };
        let mut rows: BTreeMap<String, BTreeMap<usize, f32>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.to_ascii_lowercase().starts_with("vm,")) {
                continue;
            }
            let bad = || TraceError::BadCsvLine {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let mut parts = line.split(',').map(str::trim);
            let (Some(vm), Some(t), Some(pct), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let t: usize = t.parse().map_err(|_| bad())?;
            if t >= limits::MAX_SAMPLES {
                return Err(TraceError::SampleIndex {
                    path: path.to_path_buf(),
                    line: i + 1,
                    t,
                });
            }
            let value = parse_pct(pct).ok_or_else(|| TraceError::BadValue {
                path: path.to_path_buf(),
                line: i + 1,
                value: pct.to_string(),
            })?;
            if rows
                .entry(vm.to_string())
                .or_default()
                .insert(t, value)
                .is_some()
            {
                return Err(TraceError::DuplicateSample {
                    path: path.to_path_buf(),
                    line: i + 1,
                    vm: vm.to_string(),
                    t,
                });
            }
        }
        let samples = rows.values().map(|r| r.len()).max().unwrap_or(0);
        if samples == 0 {
            return Err(TraceError::EmptyFile(path.to_path_buf()));
        }
        limits::check("VMs", rows.len(), &limits::VMS).map_err(too_large)?;
        limits::check_cells("the trace", rows.len(), samples).map_err(too_large)?;
        let mut names = Vec::new();
        let mut util = Vec::with_capacity(rows.len() * samples);
        for (vm, row) in rows {
            for t in 0..samples {
                let v = row.get(&t).ok_or_else(|| TraceError::MissingSample {
                    path: path.to_path_buf(),
                    vm: vm.clone(),
                    t,
                })?;
                util.push(*v);
            }
            names.push(vm);
        }
        Ok(Workload::new(day_name(path), names, samples, util))
    }
}

/// The last component of `p`, as text.
fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a folder entry is hidden (`.DS_Store`, `.git`): never a VM file or a day.
fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The visible files and sub-folders of `dir`, each sorted by name.
fn list_visible(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), TraceError> {
    let io = |error| TraceError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// A trace file's text, without the byte-order mark some editors put at the start (it would
/// otherwise stick to the first value or header).
fn read_text(path: &Path) -> Result<String, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|error| TraceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The folder's (or file's) own name, used as the day label.
fn day_name(p: &Path) -> String {
    p.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn parse_pct(s: &str) -> Option<f32> {
    let v: f32 = s.parse().ok()?;
    (v.is_finite() && (0.0..=100.0).contains(&v)).then_some(v / 100.0)
}

fn read_planetlab_file(path: &Path, samples: usize) -> Result<Vec<f32>, TraceError> {
    let text = read_text(path)?;
    let mut out = Vec::with_capacity(samples);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v = parse_pct(line).ok_or_else(|| TraceError::BadValue {
            path: path.to_path_buf(),
            line: i + 1,
            value: line.chars().take(40).collect(),
        })?;
        out.push(v);
    }
    if out.len() != samples {
        return Err(TraceError::WrongLength {
            path: path.to_path_buf(),
            got: out.len(),
            expected: samples,
        });
    }
    Ok(out)
}

/// The day folders to run for `dir`: its visible sub-folders if it has any (a parent such as
/// `planetlab/` holding one folder per day, besides notes and reference files), else `dir` itself.
pub fn day_folders(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let (_, dirs) = list_visible(dir)?;
    if dirs.is_empty() {
        return Ok(vec![dir.to_path_buf()]);
    }
    Ok(dirs)
}
