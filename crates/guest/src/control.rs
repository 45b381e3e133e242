//! Control lines from the host to a running guest, and the rule for switching a running
//! workload in place. Shared by the guest (which reads and applies them) and the hosts (which
//! check a change before sending it and write the lines), so both apply one rule.
//!
//! # Protocol
//! The guest's metrics port carries its reports to the host; the host writes control lines the
//! other way on the same port (a bidirectional serial line). A control line is ASCII:
//!
//! ```text
//! set <seq> <spec>\n
//! ```
//!
//! `seq` is a decimal `u64` the host picks (one more than the `seq` of the guest's latest
//! report, so it differs from the last line the guest handled); `spec` is a workload spec in
//! [`crate::spec`]'s grammar. The guest handles a line whose `seq` differs from the last one it
//! handled, so a line the host resends (it cannot know whether the first copy arrived) is
//! applied once. Every report line then carries `seq` (the last line handled), `spec` (the
//! canonical spec now running) and, when the guest refused that line, `refused` (a short code,
//! [`Refusal::code`]). Anything else on the port (noise, an unreadable line, a line over
//! [`MAX_LINE`] bytes) is ignored: the host resends until a report acknowledges its `seq`.
//!
//! # Switching rule
//! A guest switches its workload's parameters, never its kind (idle, cpu, memtouch, disk,
//! memtouch+disk: switching kind would mean allocating or dropping a working set mid-run). A cpu workload may take any
//! demand; a net workload any direction, rate and peer (it reconnects with the new ones); a memtouch workload may change its rate and pattern, and its working set may shrink
//! or stay but never grow: the pages beyond a smaller set keep their contents and are no
//! longer touched, and growing again would need memory the guest may not have. A disk workload
//! likewise changes rate, pattern and read share, and its working set never grows (blocks
//! beyond it were never written, so none could be verified). A memtouch+disk workload changes
//! each part by that part's rule (its rates stay paced: the grammar refuses `max` there). A spec that
//! breaks this rule is refused by the host before sending (`check_switch`) and by the guest
//! if it arrives anyway.

use crate::spec::{parse_workload, Workload};
use std::fmt;

/// Longest control line, bytes (a spec is well under 100).
pub const MAX_LINE: usize = 256;

/// Why a switch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchError {
    /// The new spec is another kind of workload.
    KindChange {
        from: &'static str,
        to: &'static str,
    },
    /// The new working set of `part` (`memtouch` or `disk`, alone or in a mixed workload) is
    /// larger than the running one.
    WorkingSetGrows {
        part: &'static str,
        from_bytes: u64,
        to_bytes: u64,
    },
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::KindChange { from, to } => write!(
                f,
                "a running {from} workload cannot become {to}: only its parameters may change"
            ),
            SwitchError::WorkingSetGrows {
                part,
                from_bytes,
                to_bytes,
            } => write!(
                f,
                "the {part} working set may shrink or stay but not grow ({from_bytes} bytes \
                 running, {to_bytes} asked)"
            ),
        }
    }
}

impl std::error::Error for SwitchError {}

/// Checks that a guest running `from` may switch to `to` in place (see the module doc).
///
/// # Errors
/// [`SwitchError`] naming the rule broken.
pub fn check_switch(from: &Workload, to: &Workload) -> Result<(), SwitchError> {
    if from.name() != to.name() {
        return Err(SwitchError::KindChange {
            from: from.name(),
            to: to.name(),
        });
    }
    // A disk working set neither: the blocks beyond it were never written, so nothing there
    // could be verified.
    let memtouch = |w: &Workload| w.memtouch_part().map(|m| m.wss_bytes);
    let disk = |w: &Workload| w.disk_part().map(|d| d.wss_bytes);
    keep_set("memtouch", memtouch(from), memtouch(to))?;
    keep_set("disk", disk(from), disk(to))
}

/// A part's working set may shrink or stay (None: the workload has no such part).
fn keep_set(part: &'static str, from: Option<u64>, to: Option<u64>) -> Result<(), SwitchError> {
    match (from, to) {
        (Some(from_bytes), Some(to_bytes)) if to_bytes > from_bytes => {
            Err(SwitchError::WorkingSetGrows {
                part,
                from_bytes,
                to_bytes,
            })
        }
        _ => Ok(()),
    }
}

/// Why the guest refused a control line it handled; its code goes into the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The spec does not parse.
    BadSpec,
    /// The switch breaks the rule.
    Switch(SwitchError),
}

impl Refusal {
    /// A short code without quotes or backslashes, for a JSON string.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadSpec => "bad-spec",
            Refusal::Switch(SwitchError::KindChange { .. }) => "kind-change",
            Refusal::Switch(SwitchError::WorkingSetGrows { .. }) => "working-set-grows",
        }
    }
}

/// One control line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlLine {
    pub seq: u64,
    /// The spec as sent (not parsed yet: a bad one is still acknowledged, as refused).
    pub spec: String,
}

impl ControlLine {
    /// The workload the line asks for, if it may replace `running`.
    ///
    /// # Errors
    /// [`Refusal`] when the spec does not parse or breaks the switching rule.
    pub fn workload_after(&self, running: &Workload) -> Result<Workload, Refusal> {
        let next = parse_workload(&self.spec).map_err(|_| Refusal::BadSpec)?;
        check_switch(running, &next).map_err(Refusal::Switch)?;
        Ok(next)
    }
}

/// A spec that cannot travel in a control line (it would split the line or the fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsendable(pub String);

impl fmt::Display for Unsendable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spec {:?} cannot be sent: printable ASCII without spaces, under {MAX_LINE} bytes",
            self.0
        )
    }
}

impl std::error::Error for Unsendable {}

/// The line asking the guest to run `spec`, newline included.
///
/// # Errors
/// [`Unsendable`] when `spec` is empty, has a space or a control character, or is too long.
pub fn format_line(seq: u64, spec: &str) -> Result<String, Unsendable> {
    let line = format!("set {seq} {spec}\n");
    let printable = !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_graphic());
    if !printable || line.len() > MAX_LINE {
        return Err(Unsendable(spec.chars().take(80).collect()));
    }
    Ok(line)
}

/// Reads one line (without its newline); None when it is not a control line.
pub fn parse_line(line: &str) -> Option<ControlLine> {
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some("set"), Some(seq), Some(spec), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let seq = seq.parse().ok()?;
    (!spec.is_empty()).then(|| ControlLine {
        seq,
        spec: spec.to_string(),
    })
}

/// Splits a byte stream into lines, dropping lines over [`MAX_LINE`] bytes and bytes that are
/// not UTF-8 (a serial port may deliver noise).
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
    /// In a line too long to keep: drop bytes up to its end.
    skipping: bool,
}

impl LineBuffer {
    /// Feeds bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    if let Ok(s) = std::str::from_utf8(&self.partial) {
                        lines.push(s.to_string());
                    }
                }
                self.partial.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.partial.push(b);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(spec: &str) -> Workload {
        parse_workload(spec).unwrap()
    }

    #[test]
    fn switching_keeps_the_kind_and_never_grows_the_working_set() {
        assert!(check_switch(&w("cpu:demand=10"), &w("cpu:demand=90")).is_ok());
        assert!(check_switch(&w("idle"), &w("idle")).is_ok());
        let mt = w("memtouch:wss=64M,rate=1000");
        assert!(check_switch(&mt, &w("memtouch:wss=64M,rate=max,pattern=seq")).is_ok());
        assert!(check_switch(&mt, &w("memtouch:wss=16M")).is_ok());
        assert_eq!(
            check_switch(&mt, &w("memtouch:wss=65M")),
            Err(SwitchError::WorkingSetGrows {
                part: "memtouch",
                from_bytes: 64 << 20,
                to_bytes: 65 << 20
            })
        );
        let e = check_switch(&w("cpu:demand=10"), &mt).unwrap_err();
        assert_eq!(
            e,
            SwitchError::KindChange {
                from: "cpu",
                to: "memtouch"
            }
        );
        assert!(e
            .to_string()
            .contains("cpu workload cannot become memtouch"));
        assert!(check_switch(&w("idle"), &w("cpu:demand=1")).is_err());
    }

    #[test]
    fn a_mixed_workload_changes_each_part_by_its_rule_and_keeps_its_kind() {
        let mixed = w("memtouch:wss=64M,rate=2000+disk:wss=16M,rate=200");
        let ok = w("memtouch:wss=32M,rate=9000,pattern=seq+disk:wss=16M,rate=5,read=0");
        assert!(check_switch(&mixed, &ok).is_ok());
        let grows = |spec, part, from_bytes, to_bytes| {
            assert_eq!(
                check_switch(&mixed, &w(spec)),
                Err(SwitchError::WorkingSetGrows {
                    part,
                    from_bytes,
                    to_bytes
                }),
                "{spec}"
            );
        };
        grows(
            "memtouch:wss=65M,rate=1+disk:wss=16M,rate=1",
            "memtouch",
            64 << 20,
            65 << 20,
        );
        grows(
            "memtouch:wss=64M,rate=1+disk:wss=17M,rate=1",
            "disk",
            16 << 20,
            17 << 20,
        );
        let e = check_switch(&mixed, &w("memtouch:wss=1M,rate=1+disk:wss=32M,rate=1"));
        assert!(e
            .unwrap_err()
            .to_string()
            .starts_with("the disk working set"));
        // Kinds stay: neither part alone, nor from one part to both.
        for other in ["memtouch:wss=8M,rate=1", "disk:wss=8M,rate=1", "idle"] {
            let e = check_switch(&mixed, &w(other)).unwrap_err();
            assert_eq!(
                e.to_string().split(':').next(),
                Some(
                    format!(
                        "a running memtouch+disk workload cannot become {}",
                        w(other).name()
                    )
                    .as_str()
                )
            );
            assert!(matches!(
                check_switch(&w(other), &mixed),
                Err(SwitchError::KindChange {
                    to: "memtouch+disk",
                    ..
                })
            ));
        }
    }

    #[test]
    fn lines_round_trip_and_noise_is_ignored() {
        let line = format_line(7, "cpu:demand=90").unwrap();
        assert_eq!(line, "set 7 cpu:demand=90\n");
        assert_eq!(
            parse_line(line.trim_end_matches('\n')),
            Some(ControlLine {
                seq: 7,
                spec: "cpu:demand=90".into()
            })
        );
        assert_eq!(parse_line("set 7 cpu:demand=90\r").map(|l| l.seq), Some(7));
        for noise in [
            "",
            "set",
            "set 7",
            "set x cpu:demand=1",
            "set -1 idle",
            "set 7 idle extra",
            "set  7 idle",
            "reset 7 idle",
            "{\"t_ms\":1}",
        ] {
            assert_eq!(parse_line(noise), None, "{noise:?}");
        }
        for bad in ["", "a b", "a\nb", "cpu:demand=9\u{7f}", &"x".repeat(300)] {
            assert!(format_line(1, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_line_is_checked_against_the_running_workload() {
        let running = w("memtouch:wss=64M");
        let ok = parse_line("set 1 memtouch:wss=32M,rate=500").unwrap();
        assert_eq!(
            ok.workload_after(&running),
            Ok(w("memtouch:wss=32M,rate=500"))
        );
        let grows = parse_line("set 2 memtouch:wss=1G").unwrap();
        assert_eq!(
            grows.workload_after(&running).map_err(|r| r.code()),
            Err("working-set-grows")
        );
        let kind = parse_line("set 3 cpu:demand=5").unwrap();
        assert_eq!(
            kind.workload_after(&running).map_err(|r| r.code()),
            Err("kind-change")
        );
        let bad = parse_line("set 4 memtouch:wss=0").unwrap();
        assert_eq!(
            bad.workload_after(&running).map_err(|r| r.code()),
            Err("bad-spec")
        );
    }

    #[test]
    fn the_line_buffer_reassembles_and_drops_overlong_lines() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"set 1 cpu:").is_empty());
        assert_eq!(
            b.push(b"demand=5\nset 2 idle\nse"),
            ["set 1 cpu:demand=5", "set 2 idle"]
        );
        assert_eq!(b.push(b"t 3 idle\n"), ["set 3 idle"]);
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(b.push(&long).is_empty());
        assert_eq!(b.push(b"tail of it\nset 4 idle\n"), ["set 4 idle"]);
        assert_eq!(b.push(b"\xff\xfe\nset 5 idle\n"), ["set 5 idle"]);
    }
}
