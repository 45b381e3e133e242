//! Token-bucket parameters for a shaped link.
//!
//! A link is shaped with `tbf` on the egress of both ends of the host's veth pair (the host-side
//! end in the root namespace shapes traffic towards the host, the `eth0` end inside the namespace
//! shapes traffic from it), so each direction is capped at the rate independently.
//!
//! * `burst` (bucket size) must hold at least one timer tick worth of tokens or the qdisc cannot
//!   reach its rate: we use 10 ms of traffic (rate/100, enough for HZ >= 100), and never less
//!   than 64 KiB + one frame because veth hands tbf GSO super-packets of up to 64 KiB; smaller
//!   buckets force tbf to segment them, which costs CPU and accuracy.
//! * `limit` (queue bytes) lets packets wait for tokens for up to 50 ms on top of the burst; TCP
//!   then sees queueing delay rather than drops, which keeps the measured rate close to the set
//!   rate.
//!
//! Rates are passed to `tc` in bits per second (`<n>bit`) because tc's `bps` means *bytes*.

use serde::{Deserialize, Serialize};

const MIN_BURST: u64 = 64 * 1024 + 1514;
/// 1/100 s of traffic.
const BURST_DIVISOR: u64 = 100;
/// 1/20 s = 50 ms of queueing.
const QUEUE_DIVISOR: u64 = 20;

/// Slowest link rate, bytes/s (1 kB/s): below it tbf's bucket and queue sizes stop making sense.
pub const MIN_RATE_BYTES_PER_SEC: u64 = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TbfError {
    #[error("link rate {0} bytes/s: {expected}", expected = self.expected())]
    RateTooLow(u64),
}

impl TbfError {
    /// What a link rate must be, for messages that quote the rate as typed.
    pub fn expected(&self) -> String {
        format!("expected at least {MIN_RATE_BYTES_PER_SEC} bytes/s (1 kB/s)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TbfParams {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
    pub limit_bytes: u64,
}

impl TbfParams {
    pub fn for_rate(rate_bytes_per_sec: u64) -> Result<Self, TbfError> {
        if rate_bytes_per_sec < MIN_RATE_BYTES_PER_SEC {
            return Err(TbfError::RateTooLow(rate_bytes_per_sec));
        }
        let burst = (rate_bytes_per_sec / BURST_DIVISOR).max(MIN_BURST);
        let limit = burst + rate_bytes_per_sec / QUEUE_DIVISOR;
        Ok(Self {
            rate_bytes_per_sec,
            burst_bytes: burst,
            limit_bytes: limit,
        })
    }

    pub fn rate_bits_per_sec(&self) -> u64 {
        self.rate_bytes_per_sec.saturating_mul(8)
    }

    /// Arguments after `tc [-n ns] qdisc add dev <if> root`.
    pub fn tc_args(&self) -> Vec<String> {
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{}bit", self.rate_bits_per_sec()),
            "burst".into(),
            self.burst_bytes.to_string(),
            "limit".into(),
            self.limit_bytes.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_holds_ten_milliseconds_of_a_fast_link() {
        let p = TbfParams::for_rate(125_000_000).unwrap(); // 1 Gbit/s
        assert_eq!(p.burst_bytes, 1_250_000);
        assert_eq!(p.limit_bytes, 1_250_000 + 6_250_000);
        assert_eq!(p.rate_bits_per_sec(), 1_000_000_000);
    }

    #[test]
    fn burst_never_drops_below_a_gso_packet() {
        let p = TbfParams::for_rate(1_000_000).unwrap();
        assert_eq!(p.burst_bytes, MIN_BURST);
        assert_eq!(p.limit_bytes, MIN_BURST + 50_000);
    }

    #[test]
    fn tc_gets_bits_per_second() {
        let p = TbfParams::for_rate(20_000_000).unwrap();
        assert_eq!(
            p.tc_args(),
            [
                "tbf",
                "rate",
                "160000000bit",
                "burst",
                "200000",
                "limit",
                "1200000"
            ]
        );
    }

    #[test]
    fn tiny_rates_are_rejected() {
        assert_eq!(TbfParams::for_rate(10), Err(TbfError::RateTooLow(10)));
    }
}
