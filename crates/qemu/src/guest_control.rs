//! Delivering a workload change to a running guest: the host's side of the control protocol
//! (`drover_guest::control`), as a pure state machine that the metrics reader drives with the
//! guest's reports.
//!
//! The host cannot know whether a line written to the serial port reached the guest's workload
//! (it may be booting, or the line may be lost), so it writes a line and waits for a report
//! that acknowledges it: the guest puts the `seq` of the last line it handled into every
//! report. A line is written only once the guest has reported at least once (it listens from
//! before its first report), with `seq` one more than the guest's, so it differs from the last
//! line the guest handled, and written again every [`RESEND_MS`] until acknowledged. A newer
//! change replaces an older one that is still travelling.
//!
//! ```text
//! Idle ──want──> Waiting (no report yet) ──report──> Sending{seq} ──report seq──> Done{seq, refused?}
//!                                          └── report with another seq, RESEND_MS since the
//!                                              last write: write again
//! ```

use drover_guest::control::{format_line, Unsendable};

/// How long to wait for an acknowledgement before writing a line again, ms (the guest reports
/// every 100 ms).
pub const RESEND_MS: u64 = 1_000;

/// Where a change stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    /// Nothing asked since the reader started.
    Idle,
    /// Asked; the guest has not reported yet.
    Waiting { spec: String },
    /// Written with `seq`, not acknowledged yet.
    Sending { spec: String, seq: u64 },
    /// The guest handled it: it runs `spec` now, unless it `refused` (its code).
    Done {
        spec: String,
        seq: u64,
        refused: Option<String>,
    },
}

impl DeliveryState {
    /// The spec being delivered or delivered last.
    pub fn spec(&self) -> Option<&str> {
        match self {
            DeliveryState::Idle => None,
            DeliveryState::Waiting { spec }
            | DeliveryState::Sending { spec, .. }
            | DeliveryState::Done { spec, .. } => Some(spec),
        }
    }
}

/// The host's side of one guest's control channel.
#[derive(Debug, Clone)]
pub struct Delivery {
    state: DeliveryState,
    /// The `seq` of the guest's latest report.
    guest_seq: Option<u64>,
    /// When the current line was last written, ms.
    sent_ms: u64,
    /// The seq of the last line written (the guest may handle it after a newer change was
    /// asked for, so the newer one must not reuse it).
    last_seq: Option<u64>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            state: DeliveryState::Idle,
            guest_seq: None,
            sent_ms: 0,
            last_seq: None,
        }
    }
}

impl Delivery {
    pub fn state(&self) -> &DeliveryState {
        &self.state
    }

    /// Asks for `spec` at `now_ms`; the line to write now, if the guest is known to listen.
    ///
    /// # Errors
    /// [`Unsendable`] when `spec` cannot travel in a line (nothing changes then).
    pub fn want(&mut self, spec: &str, now_ms: u64) -> Result<Option<String>, Unsendable> {
        // Checked before anything changes: the seq is irrelevant to what can be sent.
        format_line(0, spec)?;
        self.state = DeliveryState::Waiting {
            spec: spec.to_string(),
        };
        Ok(self.guest_seq.and_then(|g| self.send(g, now_ms)))
    }

    /// A report with the guest's `seq` (and its refusal code) arrived at `now_ms`; the line to
    /// write, if any.
    pub fn on_report(&mut self, seq: u64, refused: Option<&str>, now_ms: u64) -> Option<String> {
        self.guest_seq = Some(seq);
        match &self.state {
            DeliveryState::Idle | DeliveryState::Done { .. } => None,
            DeliveryState::Waiting { .. } => self.send(seq, now_ms),
            DeliveryState::Sending { spec, seq: ours } if *ours == seq => {
                self.state = DeliveryState::Done {
                    spec: spec.clone(),
                    seq,
                    refused: refused.map(str::to_string),
                };
                None
            }
            DeliveryState::Sending { spec, seq: ours } => {
                if now_ms.saturating_sub(self.sent_ms) < RESEND_MS {
                    return None;
                }
                self.sent_ms = now_ms;
                format_line(*ours, spec).ok()
            }
        }
    }

    /// Writes the wanted spec with a seq that neither the guest's last line nor a line still
    /// travelling has.
    fn send(&mut self, guest_seq: u64, now_ms: u64) -> Option<String> {
        let spec = self.state.spec()?.to_string();
        let seq = guest_seq.max(self.last_seq.unwrap_or(0)).wrapping_add(1);
        let line = format_line(seq, &spec).ok()?;
        self.state = DeliveryState::Sending { spec, seq };
        self.sent_ms = now_ms;
        self.last_seq = Some(seq);
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_waits_for_the_first_report_then_is_acknowledged() {
        let mut d = Delivery::default();
        assert_eq!(d.want("cpu:demand=90", 0), Ok(None), "guest not heard yet");
        assert_eq!(
            d.state(),
            &DeliveryState::Waiting {
                spec: "cpu:demand=90".into()
            }
        );
        assert_eq!(
            d.on_report(4, None, 100).as_deref(),
            Some("set 5 cpu:demand=90\n")
        );
        // Not acknowledged yet: written again only after RESEND_MS.
        assert_eq!(d.on_report(4, None, 200), None);
        assert_eq!(
            d.on_report(4, None, 100 + RESEND_MS).as_deref(),
            Some("set 5 cpu:demand=90\n")
        );
        assert_eq!(d.on_report(5, None, 1200), None);
        assert_eq!(
            d.state(),
            &DeliveryState::Done {
                spec: "cpu:demand=90".into(),
                seq: 5,
                refused: None
            }
        );
        // Later reports change nothing.
        assert_eq!(d.on_report(5, None, 5000), None);
    }

    #[test]
    fn a_known_guest_gets_the_line_at_once_and_a_newer_change_wins() {
        let mut d = Delivery::default();
        assert_eq!(d.on_report(0, None, 0), None);
        assert_eq!(
            d.want("cpu:demand=10", 10).unwrap().as_deref(),
            Some("set 1 cpu:demand=10\n")
        );
        // Superseded before the guest acknowledged: the newer line has another seq, since
        // the guest may still handle the first one.
        assert_eq!(
            d.want("cpu:demand=20", 20).unwrap().as_deref(),
            Some("set 2 cpu:demand=20\n")
        );
        assert_eq!(d.on_report(1, None, 30), None, "the older line, handled");
        assert!(matches!(d.state(), DeliveryState::Sending { seq: 2, .. }));
        assert_eq!(d.on_report(2, None, 130), None);
        assert_eq!(
            d.state(),
            &DeliveryState::Done {
                spec: "cpu:demand=20".into(),
                seq: 2,
                refused: None
            }
        );
    }

    #[test]
    fn refusals_are_kept_and_bad_specs_never_travel() {
        let mut d = Delivery::default();
        d.on_report(7, None, 0);
        d.want("memtouch:wss=1G", 0).unwrap();
        d.on_report(8, Some("working-set-grows"), 100);
        assert_eq!(
            d.state(),
            &DeliveryState::Done {
                spec: "memtouch:wss=1G".into(),
                seq: 8,
                refused: Some("working-set-grows".into())
            }
        );
        assert!(d.want("idle panic=1", 200).is_err());
        assert!(matches!(d.state(), DeliveryState::Done { .. }), "unchanged");
    }
}
