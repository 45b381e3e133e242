//! Workload specs, as written on the kernel command line.
//!
//! Grammar (one spec per guest):
//! - `memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq]`
//! - `cpu:demand=PCT`
//! - `net:dir=in|out|both,rate=RATE,peer=ADDR[,port=P]`
//! - `disk:wss=SIZE,rate=N|max[,pattern=random|seq][,read=PCT]`
//! - `memtouch:wss=SIZE,rate=N[,pattern=random|seq]+disk:wss=SIZE,rate=N[,pattern=random|seq][,read=PCT]`:
//!   both at once ([`Workload::Mixed`]), each part with its own working set and rate, in this
//!   order (memory, then disk). Each part reads as that workload alone does, except that its
//!   rate is required and never `max`: the parts share the one workload thread, and a part
//!   flat out would starve the other.
//! - `idle`
//!
//! Every workload's parameters follow one rule ([`read_params`]): each at most once, in the order
//! written above. The order carries no meaning, but the agent's wire contract (its workload
//! pattern, `drover_api::names::WORKLOAD`, a JSON-schema regex, which can only say "any order,
//! each once" by listing every permutation) and the kernel command line keep one spelling; a
//! refusal names the repeated or misplaced parameter and the expected order.
//!
//! SIZE is bytes with an optional binary suffix (K, M, G; `KiB`/`MiB`/`GiB` too). RATE is bytes
//! per second with the same suffixes (`rate=1M`: 1 MiB/s each way the flow runs), from
//! [`MIN_NET_RATE_BPS`] to [`MAX_NET_RATE_BPS`]. ADDR is the peer's IPv4 address (the lab's
//! traffic peer; the agent checks it lies in its VM network), P its TCP port (default
//! [`DEFAULT_NET_PORT`]).

use std::fmt;
use std::net::Ipv4Addr;

/// Device the workload reports on unless `drover.metrics=` says otherwise (the second ISA serial
/// port: QEMU's second `-serial`).
pub const DEFAULT_METRICS_PORT: &str = "/dev/ttyS1";

/// Bytes in one guest page; the unit memtouch dirties and verifies.
pub const PAGE_SIZE: u64 = 4096;

/// Fastest explicit memtouch rate, pages per second (ten digits: far beyond what any guest
/// touches; `rate=max` asks for as fast as it can). The agent's workload pattern allows the
/// same ten digits.
pub const MAX_RATE_PAGES_PER_S: u64 = 9_999_999_999;

/// Bytes in one disk block: the unit the `disk` workload writes, reads and verifies.
pub const DISK_BLOCK_SIZE: u64 = 4096;

/// Share of a `disk` workload's operations that read a block back and verify it, percent,
/// unless the spec says `read=`.
pub const DEFAULT_DISK_READ_PCT: u8 = 50;

/// The TCP port a `net` workload's peer listens on unless the spec says `port=`.
pub const DEFAULT_NET_PORT: u16 = 7900;

/// Slowest `net` rate, bytes/s each way (1 KiB/s).
pub const MIN_NET_RATE_BPS: u64 = 1 << 10;

/// Fastest `net` rate, bytes/s each way (1 GiB/s: beyond any lab link; the flow is bounded by
/// its rate, never unpaced).
pub const MAX_NET_RATE_BPS: u64 = 1 << 30;

/// Which way a `net` workload's bytes go, seen from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer sends, the guest receives.
    In,
    /// The guest sends, the peer receives.
    Out,
    /// Both at once, each at the rate.
    Both,
}

impl Direction {
    /// The spec's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }

    /// Reads the spec's word.
    pub fn parse(v: &str) -> Option<Direction> {
        match v {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }

    /// Whether the guest receives.
    pub fn receives(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    /// Whether the guest sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Directions the flow runs (1 or 2): the demand is the rate times this.
    pub fn ways(self) -> u64 {
        u64::from(self.receives()) + u64::from(self.sends())
    }
}

/// How fast memtouch touches pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Max,
    PagesPerSec(u64),
}

/// In which order memtouch visits pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Random,
    Sequential,
}

/// A memtouch workload's parameters (alone, or the memory part of [`Workload::Mixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemtouchSpec {
    /// Bytes of the working set (whole pages are touched).
    pub wss_bytes: u64,
    /// Page touches a second.
    pub rate: Rate,
    pub pattern: Pattern,
}

/// A disk workload's parameters (alone, or the disk part of [`Workload::Mixed`]): `rate`
/// operations a second on 4 KiB blocks among the first `wss_bytes` of the device, `read_pct`
/// percent of them reads that verify the block, the rest writes of its next generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpec {
    pub wss_bytes: u64,
    pub rate: Rate,
    pub pattern: Pattern,
    pub read_pct: u8,
}

/// The kind name of [`Workload::Mixed`] (what reports and refusals call it).
pub const MIXED_NAME: &str = "memtouch+disk";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Memtouch(MemtouchSpec),
    Cpu {
        demand_pct: u8,
    },
    /// Rate-paced TCP with a peer (see `net`): `rate_bps` bytes/s each way `dir` runs.
    Net {
        dir: Direction,
        rate_bps: u64,
        peer: Ipv4Addr,
        port: u16,
    },
    /// Block I/O on the VM's disk (see the guest's `disktouch`).
    Disk(DiskSpec),
    /// memtouch and disk at once, on one thread (the guest's `mixed`): each part paced at its
    /// own rate (never `max`), verified and counted apart.
    Mixed {
        memtouch: MemtouchSpec,
        disk: DiskSpec,
    },
    Idle,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Memtouch(_) => "memtouch",
            Workload::Disk(_) => "disk",
            Workload::Mixed { .. } => MIXED_NAME,
            Workload::Cpu { .. } => "cpu",
            Workload::Net { .. } => "net",
            Workload::Idle => "idle",
        }
    }

    /// The memtouch parameters: of a memtouch workload, or a mixed one's memory part.
    pub fn memtouch_part(&self) -> Option<&MemtouchSpec> {
        match self {
            Workload::Memtouch(m) | Workload::Mixed { memtouch: m, .. } => Some(m),
            _ => None,
        }
    }

    /// The disk parameters: of a disk workload, or a mixed one's disk part. A workload with
    /// one needs a disk (the fit rule: [`crate::fit::check_disk_fits`]).
    pub fn disk_part(&self) -> Option<&DiskSpec> {
        match self {
            Workload::Disk(d) | Workload::Mixed { disk: d, .. } => Some(d),
            _ => None,
        }
    }

    /// Pages in the memory working set (0 for workloads without one).
    pub fn pages(&self) -> u64 {
        self.memtouch_part().map_or(0, |m| m.wss_bytes / PAGE_SIZE)
    }

    /// Bytes of the disk the workload works on (0 for workloads without a disk).
    pub fn disk_wss_bytes(&self) -> u64 {
        self.disk_part().map_or(0, |d| d.wss_bytes)
    }
}

/// The spec's word for a pattern.
fn pattern_word(pattern: Pattern) -> &'static str {
    match pattern {
        Pattern::Random => "random",
        Pattern::Sequential => "seq",
    }
}

fn write_rate(f: &mut fmt::Formatter<'_>, rate: Rate) -> fmt::Result {
    match rate {
        Rate::Max => write!(f, "max"),
        Rate::PagesPerSec(n) => write!(f, "{n}"),
    }
}

impl fmt::Display for MemtouchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memtouch:wss={},rate=", format_size(self.wss_bytes))?;
        write_rate(f, self.rate)?;
        write!(f, ",pattern={}", pattern_word(self.pattern))
    }
}

impl fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "disk:wss={},rate=", format_size(self.wss_bytes))?;
        write_rate(f, self.rate)?;
        write!(
            f,
            ",pattern={},read={}",
            pattern_word(self.pattern),
            self.read_pct
        )
    }
}

/// The canonical spec: every parameter spelled out, sizes in the largest binary unit that
/// divides them. [`parse_workload`] reads it back to the same workload, and it has only the
/// characters a spec may have (letters, digits, `:`, `=`, `,`, `.`, `+`), so it goes into a JSON
/// string or a control line without escaping.
impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Memtouch(m) => m.fmt(f),
            Workload::Disk(d) => d.fmt(f),
            Workload::Mixed { memtouch, disk } => write!(f, "{memtouch}+{disk}"),
            Workload::Cpu { demand_pct } => write!(f, "cpu:demand={demand_pct}"),
            Workload::Net {
                dir,
                rate_bps,
                peer,
                port,
            } => write!(
                f,
                "net:dir={},rate={},peer={peer},port={port}",
                dir.as_str(),
                format_size(*rate_bps)
            ),
            Workload::Idle => write!(f, "idle"),
        }
    }
}

/// `bytes` with the largest binary suffix that divides it (`64M`, `1G`, `12K`, `4100`).
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    UnknownWorkload(String),
    UnknownParam {
        workload: &'static str,
        param: String,
    },
    MissingParam {
        workload: &'static str,
        param: &'static str,
    },
    /// A parameter given twice (one would silently win).
    RepeatedParam {
        workload: &'static str,
        param: &'static str,
    },
    /// A parameter given after one the grammar puts behind it (`param` must precede
    /// `must_precede`).
    ParamOrder {
        workload: &'static str,
        param: &'static str,
        must_precede: &'static str,
        order: &'static [&'static str],
    },
    BadValue {
        param: &'static str,
        value: String,
        why: &'static str,
    },
    NotOnCmdline,
    /// A spec of two parts (`A+B`) other than a memtouch part then a disk part.
    BadMix {
        /// The parts' kinds as written (`disk+memtouch`, `cpu+disk`, `memtouch+disk+disk`).
        kinds: String,
    },
    /// A part of a mixed workload is wrong: `error` says how, `part` names it (`memtouch`
    /// or `disk`).
    InPart {
        part: &'static str,
        error: Box<SpecError>,
    },
}

impl SpecError {
    /// Whether this refuses a size's spelling (a fraction, an unknown unit), which the API
    /// words by its own, narrower rule: the guest reads spellings the wire does not accept
    /// (`4K`, `16MB`), and quoting the guest's list would offer them. Used by the API crate
    /// only, not by the guest binary that compiles this file too.
    #[allow(dead_code)]
    pub fn is_size_spelling(&self) -> bool {
        matches!(self, SpecError::BadValue { why, .. }
            if *why == SIZE_UNITS_EXPECTED || *why == SIZE_NUMBER_EXPECTED)
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::UnknownWorkload(w) => {
                write!(
                    f,
                    "unknown workload {w:?} (expected memtouch, disk, cpu, net, idle or \
                     memtouch:...+disk:...)"
                )
            }
            SpecError::UnknownParam { workload, param } => {
                write!(f, "unknown parameter {param:?} for workload {workload}")
            }
            SpecError::MissingParam { workload, param } => {
                write!(f, "workload {workload} needs parameter {param}")
            }
            SpecError::RepeatedParam { workload, param } => {
                write!(
                    f,
                    "parameter {param} is given twice for workload {workload}: expected it once"
                )
            }
            SpecError::ParamOrder {
                workload,
                param,
                must_precede,
                order,
            } => write!(
                f,
                "parameter {param} must come before {must_precede} for workload {workload}: \
                 expected the order {}",
                order.join(", ")
            ),
            SpecError::BadValue { param, value, why } => {
                write!(f, "bad value {value:?} for {param}: {why}")
            }
            SpecError::NotOnCmdline => {
                write!(f, "no drover.workload=SPEC on the kernel command line")
            }
            SpecError::BadMix { kinds } => write!(
                f,
                "a combined workload {kinds:?} is not one: expected a memtouch part then a disk \
                 part, memtouch:wss=SIZE,rate=N[,...]+disk:wss=SIZE,rate=N[,...]"
            ),
            SpecError::InPart { part, error } => {
                write!(f, "in the {part} part of a {MIXED_NAME} workload: {error}")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// Parses a workload spec such as `memtouch:wss=64M,rate=max,pattern=seq` (or two parts joined
/// by `+`: [`Workload::Mixed`]).
pub fn parse_workload(spec: &str) -> Result<Workload, SpecError> {
    let spec = spec.trim();
    if spec.contains('+') {
        return parse_mixed(spec);
    }
    let (kind, params) = split_spec(spec);
    match kind {
        "memtouch" => parse_memtouch(&params).map(Workload::Memtouch),
        "disk" => parse_disk(&params).map(Workload::Disk),
        "cpu" => parse_cpu(&params),
        "net" => parse_net(&params),
        "idle" => read_params("idle", &[], &params).map(|_| Workload::Idle),
        other => Err(SpecError::UnknownWorkload(other.to_string())),
    }
}

/// A spec's kind and its `key=value` parameters as written (a key without `=` has an empty
/// value).
fn split_spec(spec: &str) -> (&str, Vec<(&str, &str)>) {
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    let params = params
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    (kind, params)
}

/// `memtouch:...+disk:...`: each part by its own workload's rules, named in any refusal, and
/// each with an explicit rate (see the module doc).
fn parse_mixed(spec: &str) -> Result<Workload, SpecError> {
    let parts: Vec<(&str, Vec<(&str, &str)>)> = spec.split('+').map(split_spec).collect();
    let [(mem_kind, mem), (disk_kind, disk)] = parts.as_slice() else {
        let kinds = parts.iter().map(|(k, _)| *k).collect::<Vec<_>>().join("+");
        return Err(SpecError::BadMix { kinds });
    };
    if (*mem_kind, *disk_kind) != ("memtouch", "disk") {
        let kinds = format!("{mem_kind}+{disk_kind}");
        return Err(SpecError::BadMix { kinds });
    }
    let memtouch = parse_memtouch(mem).map_err(in_part("memtouch"))?;
    paced_part("memtouch", memtouch.rate, mem).map_err(in_part("memtouch"))?;
    let disk_spec = parse_disk(disk).map_err(in_part("disk"))?;
    paced_part("disk", disk_spec.rate, disk).map_err(in_part("disk"))?;
    Ok(Workload::Mixed {
        memtouch,
        disk: disk_spec,
    })
}

/// Wraps a part's refusal so that it names the part.
fn in_part(part: &'static str) -> impl Fn(SpecError) -> SpecError {
    move |error| SpecError::InPart {
        part,
        error: Box::new(error),
    }
}

/// A mixed workload's part must be paced: `rate=N`, given (memtouch's default is `max`).
fn paced_part(
    workload: &'static str,
    rate: Rate,
    params: &[(&str, &str)],
) -> Result<(), SpecError> {
    if rate != Rate::Max {
        return Ok(());
    }
    match params.iter().find(|(k, _)| *k == "rate") {
        None => Err(SpecError::MissingParam {
            workload,
            param: "rate",
        }),
        Some((_, v)) => Err(SpecError::BadValue {
            param: "rate",
            value: v.to_string(),
            why: "expected operations per second from 1 to 9999999999: the parts of a \
                  combined workload share one thread, and one flat out would starve the other",
        }),
    }
}

/// The value of each of `order`'s parameters in `params` (None: not given), after the rule
/// every workload follows: each parameter is one of `order`, given at most once, and in
/// `order`'s order.
///
/// # Errors
/// [`SpecError::UnknownParam`], [`SpecError::RepeatedParam`] or [`SpecError::ParamOrder`],
/// naming the first parameter that breaks the rule.
fn read_params<'a, const N: usize>(
    workload: &'static str,
    order: &'static [&'static str; N],
    params: &[(&'a str, &'a str)],
) -> Result<[Option<&'a str>; N], SpecError> {
    let mut values = [None; N];
    let mut last: Option<usize> = None;
    for &(k, v) in params {
        let Some(i) = order.iter().position(|o| *o == k) else {
            return Err(SpecError::UnknownParam {
                workload,
                param: k.to_string(),
            });
        };
        if values[i].is_some() {
            return Err(SpecError::RepeatedParam {
                workload,
                param: order[i],
            });
        }
        if let Some(prev) = last.filter(|prev| *prev > i) {
            return Err(SpecError::ParamOrder {
                workload,
                param: order[i],
                must_precede: order[prev],
                order,
            });
        }
        values[i] = Some(v);
        last = Some(i);
    }
    Ok(values)
}

fn parse_memtouch(params: &[(&str, &str)]) -> Result<MemtouchSpec, SpecError> {
    let [wss, rate, pattern] = read_params("memtouch", &["wss", "rate", "pattern"], params)?;
    let typed = wss.ok_or(SpecError::MissingParam {
        workload: "memtouch",
        param: "wss",
    })?;
    let wss_bytes = parse_size(typed)?;
    let rate = rate.map_or(Ok(Rate::Max), |v| parse_rate(v, MEMTOUCH_RATE_EXPECTED))?;
    let pattern = pattern.map_or(Ok(Pattern::Random), parse_pattern)?;
    if wss_bytes < PAGE_SIZE {
        return Err(SpecError::BadValue {
            param: "wss",
            value: typed.to_string(),
            why: "must be at least one page (4096 bytes)",
        });
    }
    Ok(MemtouchSpec {
        wss_bytes,
        rate,
        pattern,
    })
}

fn parse_pattern(v: &str) -> Result<Pattern, SpecError> {
    match v {
        "random" | "rand" => Ok(Pattern::Random),
        "seq" | "sequential" => Ok(Pattern::Sequential),
        _ => Err(SpecError::BadValue {
            param: "pattern",
            value: v.to_string(),
            why: "expected random or seq",
        }),
    }
}

/// `disk:wss=SIZE,rate=N|max[,pattern=random|seq][,read=PCT]`: the working set is whole 4 KiB
/// blocks (at least one), the rate is required (a disk workload flat out by default would
/// saturate the host's storage), `read` is 0 to 100.
fn parse_disk(params: &[(&str, &str)]) -> Result<DiskSpec, SpecError> {
    let [wss, rate, pattern, read] =
        read_params("disk", &["wss", "rate", "pattern", "read"], params)?;
    let missing = |param| SpecError::MissingParam {
        workload: "disk",
        param,
    };
    let typed = wss.ok_or(missing("wss"))?;
    let wss_bytes = parse_size(typed)?;
    let rate = parse_rate(rate.ok_or(missing("rate"))?, DISK_RATE_EXPECTED)?;
    let pattern = pattern.map_or(Ok(Pattern::Random), parse_pattern)?;
    let read_pct = match read.map(|v| (v, v.parse::<u8>())) {
        None => DEFAULT_DISK_READ_PCT,
        Some((_, Ok(p))) if p <= 100 => p,
        Some((v, _)) => {
            return Err(SpecError::BadValue {
                param: "read",
                value: v.to_string(),
                why: "expected an integer percentage 0..=100",
            })
        }
    };
    if wss_bytes < DISK_BLOCK_SIZE || wss_bytes % DISK_BLOCK_SIZE != 0 {
        return Err(SpecError::BadValue {
            param: "wss",
            value: typed.to_string(),
            why: "must be a whole number of 4 KiB disk blocks, at least one",
        });
    }
    Ok(DiskSpec {
        wss_bytes,
        rate,
        pattern,
        read_pct,
    })
}

fn parse_cpu(params: &[(&str, &str)]) -> Result<Workload, SpecError> {
    let [demand] = read_params("cpu", &["demand"], params)?;
    let v = demand
        .ok_or(SpecError::MissingParam {
            workload: "cpu",
            param: "demand",
        })?
        .trim_end_matches('%');
    let pct: u8 = v.parse().map_err(|_| SpecError::BadValue {
        param: "demand",
        value: v.to_string(),
        why: "expected an integer percentage 0..=100",
    })?;
    if pct > 100 {
        return Err(SpecError::BadValue {
            param: "demand",
            value: v.to_string(),
            why: "percentage above 100",
        });
    }
    Ok(Workload::Cpu { demand_pct: pct })
}

fn parse_net(params: &[(&str, &str)]) -> Result<Workload, SpecError> {
    let missing = |param| SpecError::MissingParam {
        workload: "net",
        param,
    };
    let bad = |param, v: &str, why| SpecError::BadValue {
        param,
        value: v.to_string(),
        why,
    };
    let [dir, rate, peer, port] = read_params("net", &["dir", "rate", "peer", "port"], params)?;
    let dir = dir.ok_or(missing("dir"))?;
    let dir = Direction::parse(dir).ok_or(bad("dir", dir, "expected in, out or both"))?;
    let rate = rate.ok_or(missing("rate"))?;
    let rate_bps = parse_size_of("rate", rate)?;
    if !(MIN_NET_RATE_BPS..=MAX_NET_RATE_BPS).contains(&rate_bps) {
        let why = "expected bytes/s from 1K to 1G (K, M, G are binary)";
        return Err(bad("rate", rate, why));
    }
    let peer = peer.ok_or(missing("peer"))?;
    let addr: Ipv4Addr = peer
        .parse()
        .map_err(|_| bad("peer", peer, "expected an IPv4 address like 198.18.0.250"))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(bad("peer", peer, "expected a unicast IPv4 address"));
    }
    let port = match port.map(|v| (v, v.parse::<u16>())) {
        None => DEFAULT_NET_PORT,
        Some((_, Ok(p))) if p > 0 => p,
        Some((v, _)) => return Err(bad("port", v, "expected a TCP port 1..=65535")),
    };
    Ok(Workload::Net {
        dir,
        rate_bps,
        peer: addr,
        port,
    })
}

/// What a memtouch `rate=` takes.
const MEMTOUCH_RATE_EXPECTED: &str = "expected pages per second from 1 to 9999999999, or max";
/// What a disk `rate=` takes: operations, each on one [`DISK_BLOCK_SIZE`] block.
const DISK_RATE_EXPECTED: &str =
    "expected block operations (4 KiB blocks) per second from 1 to 9999999999, or max";

/// A memtouch or disk `rate=` (`expected` says the workload's unit in the refusal).
fn parse_rate(v: &str, expected: &'static str) -> Result<Rate, SpecError> {
    if v == "max" {
        return Ok(Rate::Max);
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_RATE_PAGES_PER_S).contains(&n) => Ok(Rate::PagesPerSec(n)),
        _ => Err(SpecError::BadValue {
            param: "rate",
            value: v.to_string(),
            why: expected,
        }),
    }
}

/// Every unit [`parse_size`] reads, as its refusal lists them.
const SIZE_UNITS_EXPECTED: &str = "unknown unit (expected none or B for bytes, or K, M or G \
    alone or followed by B or iB, in any case, all binary: K is 1024 bytes)";

/// A size that does not start with a whole number, as its refusal words it.
const SIZE_NUMBER_EXPECTED: &str = "expected a whole number of bytes, then a unit";

/// Parses `4096`, `64K`, `64M`, `1G`, `1GiB` (binary multiples).
pub fn parse_size(v: &str) -> Result<u64, SpecError> {
    parse_size_of("wss", v)
}

/// [`parse_size`] for the parameter `param` (named in the refusal).
fn parse_size_of(param: &'static str, v: &str) -> Result<u64, SpecError> {
    let bad = |why| SpecError::BadValue {
        param,
        value: v.to_string(),
        why,
    };
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| bad(SIZE_NUMBER_EXPECTED))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad(SIZE_UNITS_EXPECTED)),
    };
    n.checked_mul(1u64 << shift).ok_or(bad("too large"))
}

/// Finds `key=value` in a kernel command line (the last occurrence wins, as in the kernel).
pub fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|arg| arg.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
