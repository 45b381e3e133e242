//! What the fraction model needs to know about a VM and the WAN link: plain data, validated by
//! each type's `new` (and again by the model, so a deserialized profile is checked too).

use super::memory::{median, DirtyWindow};
use super::WanError;
use crate::migration::cost::LinkProfile;
use serde::{Deserialize, Serialize};

/// Memory as the profiler sees it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryProfile {
    /// Guest RAM, bytes.
    pub memory_bytes: u64,
    /// Bytes of memory the guest keeps rewriting (its writable working set), at most
    /// `memory_bytes`. The model takes it as memory's hot set: touched uniformly at the dirty
    /// rate, the rest of memory untouched (as `cost::forecast` does). The profiler derives it
    /// from `long_window` ([`MemoryProfile::from_windows`]).
    pub wss_bytes: u64,
    /// Dirty rate measured over time, bytes/s of distinct pages newly dirtied, one sample per
    /// `sample_interval_s`, oldest first. The model uses their median (robust to one sample's
    /// spike); the least and most are the spread it reports.
    pub dirty_rate_samples_bps: Vec<f64>,
    /// Seconds between two dirty-rate samples.
    pub sample_interval_s: f64,
    /// The window the working set was read from (None: `wss_bytes` was given as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_window: Option<DirtyWindow>,
}

/// Accesses the profiler counted in one region of a disk, in any one unit (only each region's
/// share of the total matters): [`count_regions`] counts bytes.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionCount {
    pub reads: u64,
    pub writes: u64,
}

/// One guest request to its disk that the profiler saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskRequest {
    pub write: bool,
    /// Where it starts, bytes from the disk's start.
    pub offset_bytes: u64,
    pub len_bytes: u64,
}

/// The bytes `requests` read and wrote in each of `regions` equal slices of a disk of
/// `virtual_bytes`, in address order (the shape [`DiskProfile::regions`] takes; region `i` holds
/// the offsets `o` with `floor(o * regions / virtual_bytes) == i`). A request spanning a boundary
/// counts in each region by its bytes there; bytes past the disk's end are not counted. No
/// regions, or an empty disk: an empty list.
pub fn count_regions(
    virtual_bytes: u64,
    regions: usize,
    requests: impl IntoIterator<Item = DiskRequest>,
) -> Vec<RegionCount> {
    if regions == 0 || virtual_bytes == 0 {
        return Vec::new();
    }
    let mut counts = vec![RegionCount::default(); regions];
    let (v, n) = (u128::from(virtual_bytes), regions as u128);
    // First offset of region `r`: the least `o` with `o * n >= r * v`.
    let start_of = |r: u128| (r * v).div_ceil(n);
    for req in requests {
        let mut pos = u128::from(req.offset_bytes);
        let end = (pos + u128::from(req.len_bytes)).min(v);
        while pos < end {
            let r = pos * n / v;
            let next = start_of(r + 1).min(end);
            let bytes = (next - pos) as u64;
            let c = &mut counts[r as usize];
            if req.write {
                c.writes += bytes;
            } else {
                c.reads += bytes;
            }
            pos = next;
        }
    }
    counts
}

/// A disk as the profiler sees it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskProfile {
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// The unit that moves and that a post-copy read waits for: the qcow2 cluster, bytes.
    pub block_bytes: u64,
    /// Guest reads, bytes/s.
    pub read_rate_bps: f64,
    /// Guest writes, bytes/s; the model takes each written byte as a newly dirtied one (an
    /// upper bound: rewrites of a block already dirty re-send nothing more).
    pub write_rate_bps: f64,
    /// Reads and writes counted per region: equal slices of the disk in address order, at most
    /// one per block. Empty, or all counts zero: accesses are spread uniformly. The share of
    /// reads (writes) a region counted is the share of `read_rate_bps` (`write_rate_bps`) it
    /// receives, so sorting regions by accesses per byte gives the hotness curve: the hottest
    /// fraction f of blocks receives share h(f) of the accesses.
    pub regions: Vec<RegionCount>,
}

/// A VM's memory and its disk.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WanProfile {
    pub memory: MemoryProfile,
    pub disk: DiskProfile,
}

/// The WAN path between the two hosts.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WanLink {
    /// Usable bandwidth for migration traffic (`bandwidth_bps`, bytes/s).
    pub link: LinkProfile,
    /// Round-trip time, seconds.
    pub rtt_s: f64,
}

pub(super) fn invalid(
    field: impl Into<String>,
    expected: &'static str,
    got: impl ToString,
) -> WanError {
    WanError::Invalid {
        field: field.into(),
        expected,
        got: got.to_string(),
    }
}

/// A rate or duration: finite and not negative.
pub(super) fn check_non_negative(field: &str, value: f64) -> Result<(), WanError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "a finite number >= 0", value))
    }
}

impl MemoryProfile {
    /// Validated memory profile. Errors name the field: `memory.memory_bytes` (0),
    /// `memory.wss_bytes` (above memory, or 0 while pages get dirtied),
    /// `memory.dirty_rate_samples_bps` (none, or one negative or not finite),
    /// `memory.sample_interval_s` (not positive).
    pub fn new(
        memory_bytes: u64,
        wss_bytes: u64,
        dirty_rate_samples_bps: Vec<f64>,
        sample_interval_s: f64,
    ) -> Result<Self, WanError> {
        let p = MemoryProfile {
            memory_bytes,
            wss_bytes,
            dirty_rate_samples_bps,
            sample_interval_s,
            long_window: None,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks what [`MemoryProfile::new`] checks.
    pub fn validate(&self) -> Result<(), WanError> {
        if self.memory_bytes == 0 {
            return Err(invalid("memory.memory_bytes", "more than 0 bytes", 0));
        }
        if self.wss_bytes > self.memory_bytes {
            return Err(invalid(
                "memory.wss_bytes",
                "at most memory.memory_bytes",
                self.wss_bytes,
            ));
        }
        if self.dirty_rate_samples_bps.is_empty() {
            return Err(invalid(
                "memory.dirty_rate_samples_bps",
                "at least one sample",
                "none",
            ));
        }
        for (i, v) in self.dirty_rate_samples_bps.iter().enumerate() {
            check_non_negative(&format!("memory.dirty_rate_samples_bps[{i}]"), *v)?;
        }
        if !(self.sample_interval_s.is_finite() && self.sample_interval_s > 0.0) {
            return Err(invalid(
                "memory.sample_interval_s",
                "a finite number of seconds > 0",
                self.sample_interval_s,
            ));
        }
        if self.wss_bytes == 0 && self.dirty_rate_bps() > 0.0 {
            return Err(invalid(
                "memory.wss_bytes",
                "more than 0 bytes when the dirty rate is",
                0,
            ));
        }
        Ok(())
    }

    /// The dirty rate the model uses: the samples' median, bytes/s (0 without samples). Not
    /// the mean: one spike among three samples (4, 34, 4 MB/s) would triple it.
    pub fn dirty_rate_bps(&self) -> f64 {
        median(&self.dirty_rate_samples_bps)
    }
}

impl DiskProfile {
    /// Validated disk profile. Errors name the field: `disk.virtual_bytes` (0),
    /// `disk.block_bytes` (0 or above the disk), `disk.read_rate_bps` and
    /// `disk.write_rate_bps` (negative or not finite), `disk.regions` (more regions than
    /// blocks).
    pub fn new(
        virtual_bytes: u64,
        block_bytes: u64,
        read_rate_bps: f64,
        write_rate_bps: f64,
        regions: Vec<RegionCount>,
    ) -> Result<Self, WanError> {
        let d = DiskProfile {
            virtual_bytes,
            block_bytes,
            read_rate_bps,
            write_rate_bps,
            regions,
        };
        d.validate()?;
        Ok(d)
    }

    /// Checks what [`DiskProfile::new`] checks.
    pub fn validate(&self) -> Result<(), WanError> {
        if self.virtual_bytes == 0 {
            return Err(invalid("disk.virtual_bytes", "more than 0 bytes", 0));
        }
        if self.block_bytes == 0 || self.block_bytes > self.virtual_bytes {
            return Err(invalid(
                "disk.block_bytes",
                "more than 0 and at most disk.virtual_bytes",
                self.block_bytes,
            ));
        }
        check_non_negative("disk.read_rate_bps", self.read_rate_bps)?;
        check_non_negative("disk.write_rate_bps", self.write_rate_bps)?;
        let blocks = self.virtual_bytes.div_ceil(self.block_bytes);
        if self.regions.len() as u64 > blocks {
            return Err(invalid(
                "disk.regions",
                "at most one region per block",
                format!("{} regions for {blocks} blocks", self.regions.len()),
            ));
        }
        Ok(())
    }
}

impl DiskProfile {
    /// Each region's guest traffic, `(accessed, written)` bytes/s: region `i` with read share
    /// `ρᵢ` and write share `ωᵢ` of the counts gets `r·ρᵢ + w·ωᵢ` and `w·ωᵢ` (shares uniform
    /// when the counts sum to 0). No regions: one region, the whole disk.
    pub fn region_rates(&self) -> Vec<(f64, f64)> {
        let uniform = [RegionCount::default()];
        let regions = if self.regions.is_empty() {
            &uniform[..]
        } else {
            &self.regions[..]
        };
        let n = regions.len();
        let reads = shares(regions.iter().map(|r| r.reads), n);
        let writes = shares(regions.iter().map(|r| r.writes), n);
        (0..n)
            .map(|i| {
                let written = self.write_rate_bps * writes[i];
                (self.read_rate_bps * reads[i] + written, written)
            })
            .collect()
    }

    /// Indices into [`DiskProfile::region_rates`], hottest first: most accesses per byte
    /// (regions are equal slices), among equals the less written, then address order. The
    /// one order the fraction model and the hybrid's hot set share.
    pub fn hottest_regions(&self) -> Vec<usize> {
        let rates = self.region_rates();
        let mut order: Vec<usize> = (0..rates.len()).collect();
        order.sort_by(|&a, &b| {
            rates[b]
                .0
                .total_cmp(&rates[a].0)
                .then(rates[a].1.total_cmp(&rates[b].1))
        });
        order
    }
}

/// Each count's share of their sum; uniform when they sum to 0.
fn shares(counts: impl Iterator<Item = u64> + Clone, n: usize) -> Vec<f64> {
    let sum: u64 = counts.clone().sum();
    if sum == 0 {
        return vec![1.0 / n as f64; n];
    }
    counts.map(|c| c as f64 / sum as f64).collect()
}

impl WanProfile {
    /// Checks both parts (errors as [`MemoryProfile::new`] and [`DiskProfile::new`]).
    pub fn validate(&self) -> Result<(), WanError> {
        self.memory.validate()?;
        self.disk.validate()
    }
}

impl WanLink {
    /// Validated link. Errors: `link.bandwidth_bps` (not positive or not finite),
    /// `link.rtt_s` (negative or not finite).
    pub fn new(bandwidth_bps: f64, rtt_s: f64) -> Result<Self, WanError> {
        let l = WanLink {
            link: LinkProfile { bandwidth_bps },
            rtt_s,
        };
        l.validate()?;
        Ok(l)
    }

    /// Checks what [`WanLink::new`] checks.
    pub fn validate(&self) -> Result<(), WanError> {
        let bw = self.link.bandwidth_bps;
        if !(bw.is_finite() && bw > 0.0) {
            return Err(invalid(
                "link.bandwidth_bps",
                "a finite number of bytes/s > 0",
                bw,
            ));
        }
        check_non_negative("link.rtt_s", self.rtt_s)
    }

    /// Bandwidth, bytes/s.
    pub fn bandwidth_bps(&self) -> f64 {
        self.link.bandwidth_bps
    }
}
