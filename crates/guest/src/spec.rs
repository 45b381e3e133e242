//! Workload specs, as written on the kernel command line.
//!
//! Grammar (one spec per guest):
//! - `memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq]`
//! - `cpu:demand=PCT`
//! - `net:dir=in|out|both,rate=RATE,peer=ADDR[,port=P]`
//! - `disk:wss=SIZE,rate=N|max[,pattern=random|seq][,read=PCT]`
//! - `idle`
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Memtouch {
        wss_bytes: u64,
        rate: Rate,
        pattern: Pattern,
    },
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
    /// Block I/O on the VM's disk (see the guest's `disktouch`): `rate` operations a second on
    /// 4 KiB blocks among the first `wss_bytes` of the device, `read_pct` percent of them reads
    /// that verify the block, the rest writes of its next generation.
    Disk {
        wss_bytes: u64,
        rate: Rate,
        pattern: Pattern,
        read_pct: u8,
    },
    Idle,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Memtouch { .. } => "memtouch",
            Workload::Disk { .. } => "disk",
            Workload::Cpu { .. } => "cpu",
            Workload::Net { .. } => "net",
            Workload::Idle => "idle",
        }
    }

    /// Pages in the working set (0 for workloads without one).
    pub fn pages(&self) -> u64 {
        match self {
            Workload::Memtouch { wss_bytes, .. } => wss_bytes / PAGE_SIZE,
            _ => 0,
        }
    }

    /// Bytes of the disk the workload works on (0 for workloads without a disk).
    pub fn disk_wss_bytes(&self) -> u64 {
        match self {
            Workload::Disk { wss_bytes, .. } => *wss_bytes,
            _ => 0,
        }
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

/// The canonical spec: every parameter spelled out, sizes in the largest binary unit that
/// divides them. [`parse_workload`] reads it back to the same workload, and it has only the
/// characters a spec may have (letters, digits, `:`, `=`, `,`, `.`), so it goes into a JSON string or
/// a control line without escaping.
impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Memtouch {
                wss_bytes,
                rate,
                pattern,
            } => {
                write!(f, "memtouch:wss={},rate=", format_size(*wss_bytes))?;
                write_rate(f, *rate)?;
                write!(f, ",pattern={}", pattern_word(*pattern))
            }
            Workload::Disk {
                wss_bytes,
                rate,
                pattern,
                read_pct,
            } => {
                write!(f, "disk:wss={},rate=", format_size(*wss_bytes))?;
                write_rate(f, *rate)?;
                write!(f, ",pattern={},read={read_pct}", pattern_word(*pattern))
            }
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
    BadValue {
        param: &'static str,
        value: String,
        why: &'static str,
    },
    NotOnCmdline,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::UnknownWorkload(w) => {
                write!(
                    f,
                    "unknown workload {w:?} (expected memtouch, disk, cpu, net or idle)"
                )
            }
            SpecError::UnknownParam { workload, param } => {
                write!(f, "unknown parameter {param:?} for workload {workload}")
            }
            SpecError::MissingParam { workload, param } => {
                write!(f, "workload {workload} needs parameter {param}")
            }
            SpecError::BadValue { param, value, why } => {
                write!(f, "bad value {value:?} for {param}: {why}")
            }
            SpecError::NotOnCmdline => {
                write!(f, "no drover.workload=SPEC on the kernel command line")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// Parses a workload spec such as `memtouch:wss=64M,rate=max,pattern=seq`.
pub fn parse_workload(spec: &str) -> Result<Workload, SpecError> {
    let spec = spec.trim();
    let (kind, params) = match spec.split_once(':') {
        Some((k, p)) => (k, p),
        None => (spec, ""),
    };
    let params: Vec<(&str, &str)> = params
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    match kind {
        "memtouch" => parse_memtouch(&params),
        "disk" => parse_disk(&params),
        "cpu" => parse_cpu(&params),
        "net" => parse_net(&params),
        "idle" => match params.first() {
            None => Ok(Workload::Idle),
            Some((k, _)) => Err(SpecError::UnknownParam {
                workload: "idle",
                param: k.to_string(),
            }),
        },
        other => Err(SpecError::UnknownWorkload(other.to_string())),
    }
}

fn parse_memtouch(params: &[(&str, &str)]) -> Result<Workload, SpecError> {
    let mut wss: Option<(u64, &str)> = None;
    let mut rate = Rate::Max;
    let mut pattern = Pattern::Random;
    for &(k, v) in params {
        match k {
            "wss" => wss = Some((parse_size(v)?, v)),
            "rate" => rate = parse_rate(v)?,
            "pattern" => pattern = parse_pattern(v)?,
            _ => {
                return Err(SpecError::UnknownParam {
                    workload: "memtouch",
                    param: k.to_string(),
                })
            }
        }
    }
    let (wss_bytes, typed) = wss.ok_or(SpecError::MissingParam {
        workload: "memtouch",
        param: "wss",
    })?;
    if wss_bytes < PAGE_SIZE {
        return Err(SpecError::BadValue {
            param: "wss",
            value: typed.to_string(),
            why: "must be at least one page (4096 bytes)",
        });
    }
    Ok(Workload::Memtouch {
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
fn parse_disk(params: &[(&str, &str)]) -> Result<Workload, SpecError> {
    let mut wss: Option<(u64, &str)> = None;
    let mut rate = None;
    let mut pattern = Pattern::Random;
    let mut read_pct = DEFAULT_DISK_READ_PCT;
    for &(k, v) in params {
        match k {
            "wss" => wss = Some((parse_size(v)?, v)),
            "rate" => rate = Some(parse_rate(v)?),
            "pattern" => pattern = parse_pattern(v)?,
            "read" => {
                read_pct = match v.parse::<u8>() {
                    Ok(p) if p <= 100 => p,
                    _ => {
                        return Err(SpecError::BadValue {
                            param: "read",
                            value: v.to_string(),
                            why: "expected an integer percentage 0..=100",
                        })
                    }
                }
            }
            _ => {
                return Err(SpecError::UnknownParam {
                    workload: "disk",
                    param: k.to_string(),
                })
            }
        }
    }
    let missing = |param| SpecError::MissingParam {
        workload: "disk",
        param,
    };
    let (wss_bytes, typed) = wss.ok_or(missing("wss"))?;
    if wss_bytes < DISK_BLOCK_SIZE || wss_bytes % DISK_BLOCK_SIZE != 0 {
        return Err(SpecError::BadValue {
            param: "wss",
            value: typed.to_string(),
            why: "must be a whole number of 4 KiB disk blocks, at least one",
        });
    }
    Ok(Workload::Disk {
        wss_bytes,
        rate: rate.ok_or(missing("rate"))?,
        pattern,
        read_pct,
    })
}

fn parse_cpu(params: &[(&str, &str)]) -> Result<Workload, SpecError> {
    let mut demand = None;
    for &(k, v) in params {
        match k {
            "demand" => {
                let v = v.trim_end_matches('%');
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
                demand = Some(pct);
            }
            _ => {
                return Err(SpecError::UnknownParam {
                    workload: "cpu",
                    param: k.to_string(),
                })
            }
        }
    }
    let demand_pct = demand.ok_or(SpecError::MissingParam {
        workload: "cpu",
        param: "demand",
    })?;
    Ok(Workload::Cpu { demand_pct })
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
    let (mut dir, mut rate_bps, mut peer, mut port) = (None, None, None, DEFAULT_NET_PORT);
    for &(k, v) in params {
        match k {
            "dir" => {
                dir = Some(Direction::parse(v).ok_or(bad("dir", v, "expected in, out or both"))?)
            }
            "rate" => {
                let why = "expected bytes/s from 1K to 1G (K, M, G are binary)";
                let r = parse_size_of("rate", v)?;
                if !(MIN_NET_RATE_BPS..=MAX_NET_RATE_BPS).contains(&r) {
                    return Err(bad("rate", v, why));
                }
                rate_bps = Some(r);
            }
            "peer" => {
                let addr: Ipv4Addr = v
                    .parse()
                    .map_err(|_| bad("peer", v, "expected an IPv4 address like 198.18.0.250"))?;
                if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
                    return Err(bad("peer", v, "expected a unicast IPv4 address"));
                }
                peer = Some(addr);
            }
            "port" => {
                port = match v.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(bad("port", v, "expected a TCP port 1..=65535")),
                }
            }
            _ => {
                return Err(SpecError::UnknownParam {
                    workload: "net",
                    param: k.to_string(),
                })
            }
        }
    }
    Ok(Workload::Net {
        dir: dir.ok_or(missing("dir"))?,
        rate_bps: rate_bps.ok_or(missing("rate"))?,
        peer: peer.ok_or(missing("peer"))?,
        port,
    })
}

fn parse_rate(v: &str) -> Result<Rate, SpecError> {
    if v == "max" {
        return Ok(Rate::Max);
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_RATE_PAGES_PER_S).contains(&n) => Ok(Rate::PagesPerSec(n)),
        _ => Err(SpecError::BadValue {
            param: "rate",
            value: v.to_string(),
            why: "expected pages per second from 1 to 9999999999, or max",
        }),
    }
}

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
    let n: u64 = num.parse().map_err(|_| bad("expected a number"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad("unknown suffix (expected K, M or G)")),
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
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn memtouch_defaults() {
        assert_eq!(
            parse_workload("memtouch:wss=64M"),
            Ok(Workload::Memtouch {
                wss_bytes: 64 << 20,
                rate: Rate::Max,
                pattern: Pattern::Random
            })
        );
    }

    #[test]
    fn memtouch_full() {
        let w = parse_workload("memtouch:wss=1G,rate=5000,pattern=seq").unwrap();
        assert_eq!(
            w,
            Workload::Memtouch {
                wss_bytes: 1 << 30,
                rate: Rate::PagesPerSec(5000),
                pattern: Pattern::Sequential
            }
        );
        assert_eq!(w.pages(), 262144);
        assert_eq!(w.name(), "memtouch");
    }

    #[test]
    fn memtouch_errors() {
        assert!(matches!(
            parse_workload("memtouch"),
            Err(SpecError::MissingParam { .. })
        ));
        assert!(parse_workload("memtouch:wss=64M,rate=0").is_err());
        assert!(parse_workload("memtouch:wss=64M,rate=9999999999").is_ok());
        let err = parse_workload("memtouch:wss=64M,rate=10000000000").unwrap_err();
        assert!(err.to_string().contains("from 1 to 9999999999"), "{err}");
        assert!(err.to_string().contains(&MAX_RATE_PAGES_PER_S.to_string()));
        let err = parse_workload("memtouch:wss=0M").unwrap_err().to_string();
        assert!(err.contains("\"0M\""), "the value as typed: {err}");
        assert!(parse_workload("memtouch:wss=64M,rate=fast").is_err());
        assert!(parse_workload("memtouch:wss=64M,pattern=zigzag").is_err());
        assert!(parse_workload("memtouch:wss=64M,bogus=1").is_err());
        assert!(parse_workload("memtouch:wss=100").is_err());
    }

    #[test]
    fn disk_specs() {
        assert_eq!(
            parse_workload("disk:wss=16M,rate=200"),
            Ok(Workload::Disk {
                wss_bytes: 16 << 20,
                rate: Rate::PagesPerSec(200),
                pattern: Pattern::Random,
                read_pct: DEFAULT_DISK_READ_PCT,
            })
        );
        let w = parse_workload("disk:wss=1G,rate=max,pattern=seq,read=0").unwrap();
        assert_eq!(w.to_string(), "disk:wss=1G,rate=max,pattern=seq,read=0");
        assert_eq!(
            (w.name(), w.pages(), w.disk_wss_bytes()),
            ("disk", 0, 1 << 30)
        );
        let err = |s: &str| parse_workload(s).unwrap_err().to_string();
        assert!(err("disk:rate=10").contains("needs parameter wss"));
        assert!(err("disk:wss=16M").contains("needs parameter rate"));
        assert!(err("disk:wss=6K,rate=1").contains("4 KiB disk blocks"));
        assert!(err("disk:wss=0,rate=1").contains("4 KiB disk blocks"));
        assert!(err("disk:wss=16M,rate=0").contains("from 1 to"));
        assert!(err("disk:wss=16M,rate=1,read=101").contains("0..=100"));
        assert!(err("disk:wss=16M,rate=1,read=-1").contains("0..=100"));
        assert!(err("disk:wss=16M,rate=1,pattern=zig").contains("random or seq"));
        assert!(err("disk:wss=16M,rate=1,size=2").contains("\"size\""));
    }

    #[test]
    fn cpu_and_idle() {
        assert_eq!(
            parse_workload("cpu:demand=50"),
            Ok(Workload::Cpu { demand_pct: 50 })
        );
        assert_eq!(
            parse_workload("cpu:demand=100%"),
            Ok(Workload::Cpu { demand_pct: 100 })
        );
        assert!(parse_workload("cpu:demand=101").is_err());
        assert!(parse_workload("cpu").is_err());
        assert_eq!(parse_workload("idle"), Ok(Workload::Idle));
        assert!(parse_workload("idle:x=1").is_err());
        assert!(matches!(
            parse_workload("fork-bomb"),
            Err(SpecError::UnknownWorkload(_))
        ));
    }

    #[test]
    fn canonical_specs_read_back_the_same() {
        for spec in [
            "idle",
            "cpu:demand=0",
            "cpu:demand=100%",
            "memtouch:wss=64M",
            "memtouch:wss=1G,rate=5000,pattern=seq",
            "memtouch:wss=1536M,pattern=rand",
            "memtouch:wss=12K,rate=max",
            "memtouch:wss=4100",
            "memtouch:wss=2GiB",
            "disk:wss=16M,rate=200",
            "disk:wss=64K,rate=max,pattern=seq,read=100",
            "net:dir=out,rate=1M,peer=198.18.0.250",
            "net:dir=both,rate=1536K,peer=198.18.0.250,port=80",
        ] {
            let w = parse_workload(spec).unwrap();
            let canonical = w.to_string();
            assert_eq!(parse_workload(&canonical), Ok(w), "{spec} -> {canonical}");
            assert!(
                canonical
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":=,.".contains(c)),
                "{canonical}"
            );
        }
        assert_eq!(
            parse_workload("memtouch:wss=64M").unwrap().to_string(),
            "memtouch:wss=64M,rate=max,pattern=random"
        );
        assert_eq!(
            parse_workload("memtouch:wss=1536M,rate=7,pattern=seq")
                .unwrap()
                .to_string(),
            "memtouch:wss=1536M,rate=7,pattern=seq"
        );
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn net_specs() {
        assert_eq!(
            parse_workload("net:dir=in,rate=2M,peer=198.18.0.250"),
            Ok(Workload::Net {
                dir: Direction::In,
                rate_bps: 2 << 20,
                peer: Ipv4Addr::new(198, 18, 0, 250),
                port: DEFAULT_NET_PORT,
            })
        );
        assert_eq!(
            parse_workload("net:dir=out,rate=1K,peer=10.0.0.1,port=99")
                .unwrap()
                .to_string(),
            "net:dir=out,rate=1K,peer=10.0.0.1,port=99"
        );
        let err = |s: &str| parse_workload(s).unwrap_err().to_string();
        assert!(err("net:rate=1M,peer=10.0.0.1").contains("needs parameter dir"));
        assert!(err("net:dir=in,peer=10.0.0.1").contains("needs parameter rate"));
        assert!(err("net:dir=in,rate=1M").contains("needs parameter peer"));
        assert!(err("net:dir=up,rate=1M,peer=10.0.0.1").contains("in, out or both"));
        assert!(err("net:dir=in,rate=1023,peer=10.0.0.1").contains("from 1K to 1G"));
        assert!(err("net:dir=in,rate=2G,peer=10.0.0.1").contains("from 1K to 1G"));
        assert!(err("net:dir=in,rate=1M,peer=host").contains("IPv4"));
        assert!(err("net:dir=in,rate=1M,peer=255.255.255.255").contains("unicast"));
        assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,port=0").contains("1..=65535"));
        assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,port=65536").contains("1..=65535"));
        assert!(err("net:dir=in,rate=1M,peer=10.0.0.1,mtu=9").contains("\"mtu\""));
        assert_eq!(Direction::Both.ways(), 2);
        assert!(Direction::In.receives() && !Direction::In.sends());
    }

    #[test]
    fn cmdline() {
        let c = "console=ttyS0 quiet drover.workload=memtouch:wss=32M,rate=max drover.metrics=/dev/ttyS1\n";
        assert_eq!(
            cmdline_param(c, "drover.workload"),
            Some("memtouch:wss=32M,rate=max")
        );
        assert_eq!(cmdline_param(c, "drover.metrics"), Some("/dev/ttyS1"));
        assert_eq!(cmdline_param(c, "drover.nothing"), None);
        assert_eq!(cmdline_param("a=1 a=2", "a"), Some("2"));
    }
}
