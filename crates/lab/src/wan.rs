//! Slow, far links between pairs of hosts: `--wan h1-h2=100Mbit/s,50ms[,jitter=5ms]`.
//!
//! The kernel here has no netem (see ../shared/notes/qemu-10-facts.md), so a WAN pair is made of
//! two persistent TUN devices and a userspace delay line between them:
//!
//! ```text
//!  ns h1: route h2/32 dev wan-h2 (tbf: the rate) --> delay line --> ns h2: wan-h1 --> h2's stack
//!  ns h2: route h1/32 dev wan-h1 (tbf: the rate) --> delay line --> ns h1: wan-h2 --> h1's stack
//! ```
//!
//! A /32 route in each host's namespace sends the pair's traffic (migration, NBD, anything
//! between the two host addresses) into that namespace's TUN device, whose `tbf` sets the rate;
//! the delay line ([`crate::delay`], [`crate::delay_io`]) reads every packet, holds it for the
//! delay (plus jitter) and writes it into the other host's TUN device, whose stack receives it.
//! Every connection keeps real end-to-end TCP behaviour (no split relay). Traffic to anything
//! else (the manager in the root namespace, the peer, other hosts) still takes the bridge.
//!
//! Everything here is pure: the parser, the delay line's configuration and the plan steps.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::delay::DelaySpec;
use crate::name::{HostName, LabName, Subnet};
use crate::plan::{Action, PlanEnv, Step};
use crate::system::Cmd;
use crate::tbf::TbfParams;

/// Longest one-way delay a WAN pair may have.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// The fewest bytes a direction of the line holds (a few dozen full-size packets).
pub const MIN_QUEUE_BYTES: u64 = 256 * 1024;
/// What `--wan` takes.
pub const WAN_EXPECTED: &str =
    "expected hA-hB=RATE,DELAY[,jitter=JITTER], e.g. h1-h2=100Mbit/s,50ms,jitter=5ms";
const DURATION_EXPECTED: &str = "expected a duration with a unit (us, ms or s), e.g. 50ms";
/// How a host of a WAN pair is named.
const HOST_EXPECTED: &str =
    "the lab's hosts are h1, h2, ... (h and a number from 1, no leading zeros)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WanError {
    #[error("'{0}': {WAN_EXPECTED}")]
    Shape(String),
    #[error("'{0}' is not a pair of hosts: expected hA-hB of two different hosts, e.g. h1-h2")]
    Pair(String),
    #[error("rate '{text}': {reason}")]
    Rate { text: String, reason: String },
    #[error("unknown host '{host}' in '{pair}': {HOST_EXPECTED}")]
    Host { pair: String, host: String },
    #[error("{what} '{text}': {DURATION_EXPECTED}")]
    Duration { what: &'static str, text: String },
    #[error("{what} '{text}': expected a non-negative number before the unit, e.g. 50ms")]
    DurationNumber { what: &'static str, text: String },
    #[error("{what} '{text}': expected at most {max} s", max = MAX_DELAY.as_secs())]
    DurationRange { what: &'static str, text: String },
    #[error("jitter '{jitter}' is larger than the delay '{delay}': expected at most the delay")]
    Jitter { jitter: String, delay: String },
    #[error("unknown option '{0}': expected jitter=DURATION")]
    Option(String),
    #[error("option '{0}' is given twice: expected it at most once")]
    RepeatedOption(String),
    #[error("WAN pair h{a}-h{b} names a host the lab does not have (it has h1..h{hosts})")]
    NoSuchHost { a: u32, b: u32, hosts: u32 },
    #[error("WAN pair h{a}-h{b} is given twice")]
    Duplicate { a: u32, b: u32 },
    #[error("the lab has no WAN pair '{pair}' (its pairs: {have}; see `drover lab status`)")]
    NotConfigured { pair: String, have: String },
    #[error("a WAN pair needs a delay-line program to run, and none was given")]
    NoDelayLine,
}

/// One WAN pair as asked for: hosts `a < b` (numbers), rate each way, delay and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanLink {
    pub a: u32,
    pub b: u32,
    /// Each direction.
    pub rate: TbfParams,
    /// One way, µs.
    pub delay_us: u64,
    /// µs, at most the delay.
    pub jitter_us: u64,
}

impl WanLink {
    /// Parses `hA-hB=RATE,DELAY[,jitter=JITTER]` (the pair in either order).
    pub fn parse(text: &str) -> Result<Self, WanError> {
        let (pair, rest) = text
            .split_once('=')
            .ok_or_else(|| WanError::Shape(text.into()))?;
        let (a, b) = parse_pair(pair.trim())?;
        let mut parts = rest.split(',').map(str::trim);
        let (Some(rate_text), Some(delay_text)) = (parts.next(), parts.next()) else {
            return Err(WanError::Shape(text.into()));
        };
        let rate = drover_core::units::parse_rate(rate_text).map_err(|e| WanError::Rate {
            text: rate_text.into(),
            reason: e.to_string(),
        })?;
        let rate = TbfParams::for_rate(rate).map_err(|e| WanError::Rate {
            text: rate_text.into(),
            reason: e.expected(),
        })?;
        let delay = parse_duration("delay", delay_text)?;
        let mut jitter = Duration::ZERO;
        let mut jitter_given = false;
        for opt in parts {
            match opt.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                // Repeated, one of them would be ignored: the typo is refused, not guessed at.
                Some(("jitter", _)) if jitter_given => {
                    return Err(WanError::RepeatedOption("jitter".into()))
                }
                Some(("jitter", j)) => {
                    jitter_given = true;
                    jitter = parse_duration("jitter", j)?;
                    if jitter > delay {
                        return Err(WanError::Jitter {
                            jitter: j.trim().into(),
                            delay: delay_text.into(),
                        });
                    }
                }
                _ => return Err(WanError::Option(opt.into())),
            }
        }
        Ok(Self {
            a,
            b,
            rate,
            delay_us: delay.as_micros() as u64,
            jitter_us: jitter.as_micros() as u64,
        })
    }

    /// `hA-hB`.
    pub fn pair(&self) -> String {
        format!("h{}-h{}", self.a, self.b)
    }

    /// Bytes each direction of the line holds before it drops: twice what the rate can put in
    /// flight over the longest delay (tbf in front caps arrivals at the rate, plus its burst,
    /// so a line used within its rate never drops), and at least [`MIN_QUEUE_BYTES`].
    pub fn queue_bytes(&self) -> u64 {
        let in_flight = u128::from(self.rate.rate_bytes_per_sec)
            * u128::from(self.delay_us + self.jitter_us)
            / 1_000_000;
        (2 * in_flight as u64 + self.rate.burst_bytes).max(MIN_QUEUE_BYTES)
    }

    /// The line's delay settings (the seed is the pair's numbers, so runs repeat).
    pub fn delay_spec(&self) -> DelaySpec {
        DelaySpec {
            delay_us: self.delay_us,
            jitter_us: self.jitter_us,
            queue_bytes: self.queue_bytes(),
            seed: u64::from(self.a) * 1000 + u64::from(self.b),
        }
    }
}

/// `hA-hB` into (min, max) host numbers; each host exactly as the lab names it (`hN`, N from 1,
/// no leading zeros), so `h01` is refused rather than read as `h1`.
fn parse_pair(text: &str) -> Result<(u32, u32), WanError> {
    let (x, y) = text
        .split_once('-')
        .ok_or_else(|| WanError::Pair(text.into()))?;
    let num = |h: &str| -> Result<u32, WanError> {
        h.strip_prefix('h')
            .filter(|n| n.starts_with(|c: char| ('1'..='9').contains(&c)))
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| WanError::Host {
                pair: text.into(),
                host: h.into(),
            })
    };
    let (x, y) = (num(x.trim())?, num(y.trim())?);
    if x == y {
        return Err(WanError::Pair(text.into()));
    }
    Ok((x.min(y), x.max(y)))
}

/// `50ms`, `0.5s`, `500us`, `5e-3s`: a non-negative number (a bare number is ambiguous, so the
/// unit is required) of at most [`MAX_DELAY`].
pub fn parse_duration(what: &'static str, text: &str) -> Result<Duration, WanError> {
    let (number, scale) = [("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))
        .ok_or_else(|| WanError::Duration {
            what,
            text: text.into(),
        })?;
    let number: f64 = number
        .trim()
        .parse()
        .ok()
        // NaN and negatives alike fail this (and `-0` passes as zero).
        .filter(|n: &f64| *n >= 0.0)
        .ok_or_else(|| WanError::DurationNumber {
            what,
            text: text.into(),
        })?;
    // `abs` turns a `-0` into `0` (the filter let only those negatives through).
    let secs = number.abs() * scale;
    if secs > MAX_DELAY.as_secs_f64() {
        return Err(WanError::DurationRange {
            what,
            text: text.into(),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks pairs against the lab: hosts that exist, each pair once.
pub fn validate_links(links: &[WanLink], hosts: u32) -> Result<(), WanError> {
    for (i, l) in links.iter().enumerate() {
        if l.a == 0 || l.a >= l.b || l.b > hosts {
            return Err(WanError::NoSuchHost {
                a: l.a,
                b: l.b,
                hosts,
            });
        }
        TbfParams::for_rate(l.rate.rate_bytes_per_sec).map_err(|e| WanError::Rate {
            text: l.rate.rate_bytes_per_sec.to_string(),
            reason: e.expected(),
        })?;
        if l.jitter_us > l.delay_us || l.delay_us > MAX_DELAY.as_micros() as u64 {
            return Err(WanError::Shape(l.pair()));
        }
        if links[..i].iter().any(|o| (o.a, o.b) == (l.a, l.b)) {
            return Err(WanError::Duplicate { a: l.a, b: l.b });
        }
    }
    Ok(())
}

/// One end of the line: a TUN device in a host's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineEnd {
    pub netns: String,
    pub tun: String,
}

/// What a delay-line process is told (written as JSON next to the lab's state file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineConfig {
    /// Direction 0 is `a` to `b`, direction 1 `b` to `a`.
    pub a: LineEnd,
    pub b: LineEnd,
    pub delay: DelaySpec,
    /// Unix socket answering `cut`, `restore` and `stats`.
    pub control: PathBuf,
}

/// A WAN pair as the state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanState {
    pub link: WanLink,
    pub config: LineConfig,
    pub log: PathBuf,
    pub pid: Option<u32>,
}

impl WanState {
    /// The key of its process among the lab's spawned pids.
    pub fn spawn_key(&self) -> String {
        format!("wan-{}", self.link.pair())
    }
}

/// The TUN device in a host's namespace that leads to `peer`.
pub fn tun_name(peer: &HostName) -> String {
    format!("wan-{}", peer.as_str())
}

fn run(ns: &str, args: &[&str]) -> Step {
    Step::new(Action::Run(
        Cmd::new("ip", &["-n", ns]).args(args.iter().map(|a| a.to_string())),
    ))
}

/// Steps of every WAN pair: the TUN devices with tbf, the line's config, the line itself
/// (waited for on its control socket), and the routes last, so no packet is routed into a
/// device nobody reads.
///
/// The line runs in the first host's namespace (so `down`, which kills every process in the
/// lab's namespaces, finds it without a state file) but in no host's cgroup: a host's CPU cap
/// must not slow its link, and the lab's cgroups have no real-time budget (cgroup v1 with
/// real-time group scheduling), which the line asks for (see
/// [`crate::delay_io::realtime_priority`]).
pub fn wan_steps(
    lab: &LabName,
    env: &PlanEnv,
    links: &[WanLink],
    launch: &[String],
    ready_timeout: Duration,
) -> (Vec<Step>, Vec<WanState>) {
    let mut steps = Vec::new();
    let mut states = Vec::new();
    for link in links {
        let (ha, hb) = (HostName::nth(link.a), HostName::nth(link.b));
        let a = LineEnd {
            netns: lab.netns(&ha),
            tun: tun_name(&hb),
        };
        let b = LineEnd {
            netns: lab.netns(&hb),
            tun: tun_name(&ha),
        };
        for end in [&a, &b] {
            steps.extend(tun_steps(end, &link.rate));
        }
        let pair = link.pair();
        let config = LineConfig {
            a: a.clone(),
            b: b.clone(),
            delay: link.delay_spec(),
            control: env.lab_dir.join(format!("wan-{pair}.sock")),
        };
        let config_file = env.lab_dir.join(format!("wan-{pair}.json"));
        let log = env.lab_dir.join(format!("wan-{pair}.log"));
        let state = WanState {
            link: *link,
            config: config.clone(),
            log: log.clone(),
            pid: None,
        };
        steps.push(Step::new(Action::Write {
            path: config_file.clone(),
            contents: serde_json::to_string(&config).unwrap_or_default(),
            mode: None,
        }));
        let mut argv = vec!["ip".into(), "netns".into(), "exec".into(), a.netns.clone()];
        argv.extend(launch.iter().cloned());
        argv.push(config_file.display().to_string());
        steps.push(Step::undone_by(
            Action::Spawn {
                host: state.spawn_key(),
                argv,
                log: log.clone(),
            },
            Action::KillNetns(a.netns.clone()),
        ));
        steps.push(Step::new(Action::WaitControl {
            what: format!("delay line {pair}"),
            socket: config.control.clone(),
            log,
            timeout: ready_timeout,
        }));
        steps.extend(route_steps(env.subnet, link, &a, &b));
        states.push(state);
    }
    (steps, states)
}

/// A persistent TUN device (it outlives a crashed line, so traffic stops rather than takes the
/// bridge) with the pair's rate on its egress; removed with the namespace. It gets no IPv6
/// link-local address (`addrgenmode none`), so the kernel's own router solicitations and
/// duplicate-address probes never enter the line: only the hosts' IPv4 traffic is delayed.
fn tun_steps(end: &LineEnd, rate: &TbfParams) -> Vec<Step> {
    let ns = end.netns.as_str();
    let tun = end.tun.as_str();
    vec![
        run(ns, &["tuntap", "add", "dev", tun, "mode", "tun"]),
        Step::new(Action::Run(
            Cmd::new("tc", &["-n", ns, "qdisc", "add", "dev", tun, "root"]).args(rate.tc_args()),
        )),
        run(ns, &["link", "set", "dev", tun, "addrgenmode", "none"]),
        run(ns, &["link", "set", tun, "up"]),
    ]
}

fn route_steps(subnet: Subnet, link: &WanLink, a: &LineEnd, b: &LineEnd) -> Vec<Step> {
    let (addr_a, addr_b) = (subnet.host_addr(link.a), subnet.host_addr(link.b));
    let route = |end: &LineEnd, to: std::net::Ipv4Addr, from: std::net::Ipv4Addr| {
        run(
            &end.netns,
            &[
                "route",
                "add",
                &format!("{to}/32"),
                "dev",
                &end.tun,
                "src",
                &from.to_string(),
            ],
        )
    };
    vec![route(a, addr_b, addr_a), route(b, addr_a, addr_b)]
}

/// The control socket of pair `pair` (`hA-hB` in either order) among a lab's WAN states.
pub fn find_pair<'a>(wan: &'a [WanState], pair: &str) -> Result<&'a WanState, WanError> {
    let (a, b) = parse_pair(pair)?;
    wan.iter()
        .find(|w| (w.link.a, w.link.b) == (a, b))
        .ok_or_else(|| WanError::NotConfigured {
            pair: pair.into(),
            have: match wan.len() {
                0 => "none".into(),
                _ => wan
                    .iter()
                    .map(|w| w.link.pair())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        })
}

#[cfg(test)]
#[path = "wan_tests.rs"]
mod tests;
