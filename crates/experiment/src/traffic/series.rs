//! What a traffic run records, as plain data: the sampler's [`TrafficSample`] a second (each
//! host's link byte counters, each VM's tap rates and dirty rate as its agent measured them) and
//! the peer's [`PeerSample`]s (each connection's cumulative bytes, a few a second); and the pure
//! reads of them: bytes at a time, rates over a window, the longest pause.

use serde::{Deserialize, Serialize};

/// A host's link counters, seen from the host: what it sent and what it received, bytes since
/// the link was made (the host-side veth end's counters, read the other way round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkCounters {
    pub host: String,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// A VM as its agent measured it at one sample (the host that runs it; during a migration the
/// destination's copy once it reports traffic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapSample {
    pub vm: String,
    pub host: String,
    /// Bytes/s arriving for the VM on its tap.
    pub rx_bps: f64,
    /// Bytes/s the VM sends on its tap.
    pub tx_bps: f64,
    /// Last dirty rate measured, bytes/s.
    pub dirty_rate_bps: Option<f64>,
}

/// One sampler tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// Unix time, s.
    pub t_s: f64,
    pub links: Vec<LinkCounters>,
    pub vms: Vec<TapSample>,
}

/// One connection in a peer report, cumulative since the peer accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerConn {
    /// The guest's IPv4 address (the connection's source, without its port).
    pub ip: String,
    /// Bytes the peer received from the guest.
    pub rx_bytes: u64,
    /// Bytes the peer sent to the guest.
    pub tx_bytes: u64,
}

/// One peer report, stamped when it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerSample {
    /// Unix time, s.
    pub t_s: f64,
    pub conns: Vec<PeerConn>,
}

/// Reads one line of `drover lab peer` (`{"t_ms":..,"conns":[{"from":"ip:port","rx_bytes":..,
/// "tx_bytes":..},..]}`) read at `t_s`; None when it is not one.
pub fn parse_peer_line(line: &str, t_s: f64) -> Option<PeerSample> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let conns = v.get("conns")?.as_array()?;
    let conns = conns
        .iter()
        .filter_map(|c| {
            let from: std::net::SocketAddr = c.get("from")?.as_str()?.parse().ok()?;
            Some(PeerConn {
                ip: from.ip().to_string(),
                rx_bytes: c.get("rx_bytes")?.as_u64()?,
                tx_bytes: c.get("tx_bytes")?.as_u64()?,
            })
        })
        .collect();
    Some(PeerSample { t_s, conns })
}

/// Bytes the application at `ip` moved (both ways, every connection it made) by the last
/// report at or before `t_s`; None before the first report.
pub fn app_bytes_at(peer: &[PeerSample], ip: &str, t_s: f64) -> Option<f64> {
    let s = peer.iter().take_while(|s| s.t_s <= t_s).last()?;
    Some(
        s.conns
            .iter()
            .filter(|c| c.ip == ip)
            .map(|c| (c.rx_bytes + c.tx_bytes) as f64)
            .sum(),
    )
}

/// The application's mean rate from `from_s` to `to_s`, bytes/s (None: no report by `from_s`,
/// or an empty window).
pub fn app_rate(peer: &[PeerSample], ip: &str, from_s: f64, to_s: f64) -> Option<f64> {
    if to_s <= from_s {
        return None;
    }
    let a = app_bytes_at(peer, ip, from_s)?;
    let b = app_bytes_at(peer, ip, to_s)?;
    Some((b - a) / (to_s - from_s))
}

/// The application's rate between consecutive reports: (mid-time, bytes/s) points for a plot.
pub fn app_rates(peer: &[PeerSample], ip: &str) -> Vec<(f64, f64)> {
    peer.windows(2)
        .filter_map(|w| {
            let dt = w[1].t_s - w[0].t_s;
            let a = app_bytes_at(&w[..1], ip, w[0].t_s)?;
            let b = app_bytes_at(&w[1..], ip, w[1].t_s)?;
            (dt > 0.0).then(|| ((w[0].t_s + w[1].t_s) / 2.0, (b - a) / dt))
        })
        .collect()
}

/// The longest time within `from_s..=to_s` in which the application at `ip` moved no byte, s
/// (to within a report interval).
pub fn longest_pause(peer: &[PeerSample], ip: &str, from_s: f64, to_s: f64) -> f64 {
    let mut last_change = from_s;
    let mut last_bytes: Option<f64> = None;
    let mut longest: f64 = 0.0;
    for s in peer.iter().filter(|s| s.t_s >= from_s && s.t_s <= to_s) {
        let b = app_bytes_at(std::slice::from_ref(s), ip, s.t_s).unwrap_or(0.0);
        if last_bytes.is_some_and(|l| b > l) {
            longest = longest.max(s.t_s - last_change);
            last_change = s.t_s;
        } else if last_bytes.is_none() {
            last_change = s.t_s;
        }
        last_bytes = Some(b);
    }
    longest.max(to_s.min(peer.last().map_or(to_s, |s| s.t_s)) - last_change)
}

/// A host's link counters at the last sample at or before `t_s`.
fn link_at<'a>(series: &'a [TrafficSample], host: &str, t_s: f64) -> Option<&'a LinkCounters> {
    let s = series.iter().take_while(|s| s.t_s <= t_s).last()?;
    s.links.iter().find(|l| l.host == host)
}

/// A host's mean send and receive rates from `from_s` to `to_s`, bytes/s.
pub fn link_rate(
    series: &[TrafficSample],
    host: &str,
    from_s: f64,
    to_s: f64,
) -> Option<(f64, f64)> {
    let a = link_at(series, host, from_s)?;
    let b = link_at(series, host, to_s)?;
    let dt = to_s - from_s;
    (dt > 0.0).then(|| {
        (
            b.tx_bytes.saturating_sub(a.tx_bytes) as f64 / dt,
            b.rx_bytes.saturating_sub(a.rx_bytes) as f64 / dt,
        )
    })
}

/// A host's send and receive rates between consecutive samples: (mid-time, tx, rx) points.
pub fn link_rates(series: &[TrafficSample], host: &str) -> Vec<(f64, f64, f64)> {
    series
        .windows(2)
        .filter_map(|w| {
            let (t0, t1) = (w[0].t_s, w[1].t_s);
            let (tx, rx) = link_rate(w, host, t0, t1)?;
            Some(((t0 + t1) / 2.0, tx, rx))
        })
        .collect()
}

/// A VM's mean tap rates (rx, tx) and its latest dirty rate over the samples in
/// `from_s..=to_s`: what the group choice is told.
pub fn tap_means(
    series: &[TrafficSample],
    vm: &str,
    from_s: f64,
    to_s: f64,
) -> Option<(f64, f64, Option<f64>)> {
    let taps: Vec<&TapSample> = series
        .iter()
        .filter(|s| s.t_s >= from_s && s.t_s <= to_s)
        .filter_map(|s| s.vms.iter().find(|v| v.vm == vm))
        .collect();
    if taps.is_empty() {
        return None;
    }
    let n = taps.len() as f64;
    let rx = taps.iter().map(|t| t.rx_bps).sum::<f64>() / n;
    let tx = taps.iter().map(|t| t.tx_bps).sum::<f64>() / n;
    let dirty = taps.iter().rev().find_map(|t| t.dirty_rate_bps);
    Some((rx, tx, dirty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(points: &[(f64, u64, u64)]) -> Vec<PeerSample> {
        points
            .iter()
            .map(|&(t_s, rx, tx)| PeerSample {
                t_s,
                conns: vec![
                    PeerConn {
                        ip: "198.18.0.10".into(),
                        rx_bytes: rx,
                        tx_bytes: tx,
                    },
                    PeerConn {
                        ip: "198.18.0.11".into(),
                        rx_bytes: 7,
                        tx_bytes: 0,
                    },
                ],
            })
            .collect()
    }

    #[test]
    fn a_peer_line_reads_back() {
        let line = r#"{"t_ms":1200,"conns":[{"id":1,"from":"198.18.0.10:40000","dir":"out","rate_bps":5,"rx_bytes":300,"tx_bytes":4,"max_rx_gap_ms":0,"rx_idle_ms":0,"open":true}]}"#;
        let s = parse_peer_line(line, 10.5).expect("a report");
        assert_eq!(s.t_s, 10.5);
        assert_eq!(
            s.conns,
            vec![PeerConn {
                ip: "198.18.0.10".into(),
                rx_bytes: 300,
                tx_bytes: 4
            }]
        );
        assert_eq!(parse_peer_line("not json", 1.0), None);
    }

    #[test]
    fn bytes_rates_and_pauses_of_one_application() {
        // 1000 B/s until 4 s, nothing from 4 to 7 s, then 1000 B/s again.
        let p = peer(&[
            (0.0, 0, 0),
            (1.0, 600, 400),
            (2.0, 1200, 800),
            (4.0, 2400, 1600),
            (5.0, 2400, 1600),
            (7.0, 2400, 1600),
            (8.0, 3000, 2000),
        ]);
        let ip = "198.18.0.10";
        assert_eq!(app_bytes_at(&p, ip, 3.5), Some(2000.0));
        assert_eq!(app_bytes_at(&p, ip, -1.0), None);
        assert_eq!(app_rate(&p, ip, 0.0, 2.0), Some(1000.0));
        // 4000 B over 8 s.
        assert_eq!(app_rate(&p, ip, 0.0, 8.0), Some(625.0));
        assert_eq!(app_rate(&p, ip, 2.0, 2.0), None);
        // Last increase at 4 s, next at 8 s.
        assert_eq!(longest_pause(&p, ip, 0.0, 8.0), 4.0);
        assert_eq!(longest_pause(&p, ip, 0.0, 2.0), 1.0);
        let rates = app_rates(&p, ip);
        assert_eq!(rates[0], (0.5, 1000.0));
        assert_eq!(rates[4], (6.0, 0.0));
    }

    #[test]
    fn link_rates_and_tap_means() {
        let sample = |t_s: f64, tx: u64, rx: u64, tap: f64| TrafficSample {
            t_s,
            links: vec![LinkCounters {
                host: "h1".into(),
                tx_bytes: tx,
                rx_bytes: rx,
            }],
            vms: vec![TapSample {
                vm: "out1".into(),
                host: "h1".into(),
                rx_bps: tap / 10.0,
                tx_bps: tap,
                dirty_rate_bps: (t_s > 0.0).then_some(1e6 * t_s),
            }],
        };
        let s = [
            sample(0.0, 0, 0, 100.0),
            sample(1.0, 5000, 100, 300.0),
            sample(3.0, 9000, 300, 200.0),
        ];
        assert_eq!(link_rate(&s, "h1", 0.0, 3.0), Some((3000.0, 100.0)));
        assert_eq!(link_rate(&s, "h2", 0.0, 3.0), None);
        assert_eq!(
            link_rates(&s, "h1"),
            vec![(0.5, 5000.0, 100.0), (2.0, 2000.0, 100.0)]
        );
        assert_eq!(
            tap_means(&s, "out1", 0.0, 3.0),
            Some((20.0, 200.0, Some(3e6)))
        );
        assert_eq!(tap_means(&s, "in1", 0.0, 3.0), None);
    }
}
