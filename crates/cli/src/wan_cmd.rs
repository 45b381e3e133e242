//! The lab's WAN pairs on the command line (a thin shell over drover_lab::wan):
//!
//! - `drover lab up ... --wan h1-h2=100Mbit/s,50ms[,jitter=5ms]` (repeatable, one per pair)
//! - `drover lab wan cut|restore|stats h1-h2 [--json]`: the pair's delay line on command
//! - `drover lab delay-line <config.json>` (hidden): the delay line itself, started by `lab up`

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use drover_core::units::format_rate;
use drover_lab::delay_io::ControlReply;
use drover_lab::lab::{LinkCheck, WanStatus, STATUS_CONTROL_TIMEOUT};
use drover_lab::wan::{find_pair, WanLink};
use drover_lab::{LabState, RealSystem, System};

/// What `drover lab wan` asks of a pair's delay line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WanAction {
    /// Drop every packet both ways (and what is in flight) until restored (a cut link stays
    /// cut: the command succeeds and says so).
    Cut,
    /// Carry packets again (an up link stays up: the command succeeds and says so).
    Restore,
    /// Show what the line forwarded, dropped and the delay it added.
    Stats,
}

impl WanAction {
    fn request(self) -> &'static str {
        match self {
            WanAction::Cut => "cut",
            WanAction::Restore => "restore",
            WanAction::Stats => "stats",
        }
    }
}

/// Every `--wan` value, each refusal quoting the flag and the text.
pub fn parse_wan_flags(texts: &[String]) -> Result<Vec<WanLink>> {
    texts
        .iter()
        .map(|t| WanLink::parse(t).map_err(|e| anyhow!("--wan {e}")))
        .collect()
}

/// How `lab up` runs a delay line: this drover's hidden `lab delay-line`.
pub fn delay_line_argv() -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("locating the drover binary for the delay line")?;
    Ok(vec![
        exe.display().to_string(),
        "lab".into(),
        "delay-line".into(),
    ])
}

/// Runs the delay line of one pair until killed.
pub fn run_delay_line(config: &Path) -> Result<()> {
    drover_lab::delay_io::run_from_file(config).map_err(|e| anyhow!("delay line: {e}"))
}

/// What a control answer means for the command line: `Ok(Some(note))` when the request found
/// the link already as asked (cut twice, restored twice: the operator's intent holds, so it
/// succeeds and says so), `Ok(None)` when carried out, `Err` when refused.
fn outcome(action: WanAction, pair: &str, reply: &ControlReply) -> Result<Option<String>> {
    if reply.already_so(action.request()) {
        let done = match action {
            WanAction::Cut => "cut",
            _ => "restored",
        };
        return Ok(Some(format!("{pair}: the link was already {done}")));
    }
    match &reply.error {
        Some(e) => Err(anyhow!("{} {pair}: {e}", action.request())),
        None => Ok(None),
    }
}

/// `drover lab wan ACTION PAIR`.
pub fn run_wan(name: &str, action: WanAction, pair: &str, json: bool) -> Result<()> {
    let state = drover_lab::load_state(name)?;
    let wan = find_pair(&state.wan, pair).map_err(|e| anyhow!("{e}"))?;
    let answer = RealSystem
        .control(
            &wan.config.control,
            action.request(),
            drover_lab::system::CONTROL_TIMEOUT,
        )
        .with_context(|| format!("asking the delay line of {}", wan.link.pair()))?;
    let reply: ControlReply = serde_json::from_str(&answer)
        .with_context(|| format!("the delay line answered {answer:?}"))?;
    let note = outcome(action, &wan.link.pair(), &reply)?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    if let Some(note) = note {
        println!("{note}");
    }
    println!("{}: link {:?}", wan.link.pair(), reply.state);
    let (a, b) = (wan.link.a, wan.link.b);
    for (d, (from, to)) in reply.dirs.iter().zip([(a, b), (b, a)]) {
        let mean = d
            .mean_delay_us()
            .map_or("-".into(), |us| format!("{:.1} ms", us / 1000.0));
        println!(
            "  h{from}->h{to}: {} packets, {} bytes forwarded, mean delay {mean}, max {:.1} ms; \
             dropped {} (queue full) {} (cut)",
            d.forwarded_packets,
            d.forwarded_bytes,
            d.delay_max_us as f64 / 1000.0,
            d.dropped_full,
            d.dropped_cut
        );
    }
    Ok(())
}

/// `lab status`'s line for a WAN pair: its delay line's process and, when it runs, the link as
/// the line's control socket says (cut, up, or no answer within the status timeout).
pub fn status_line(w: &WanStatus) -> String {
    let Some(pid) = w.pid else {
        return "no delay line recorded".into();
    };
    if w.running != Some(true) {
        return format!(
            "DELAY LINE GONE (pid {pid}): traffic between the pair is lost; \
             `drover lab down` then `up` again"
        );
    }
    let link = match &w.link {
        Some(LinkCheck::Up) => "link up".to_string(),
        Some(LinkCheck::Cut) => format!(
            "link CUT (every packet dropped; `drover lab wan restore {}` carries them again)",
            w.pair
        ),
        Some(LinkCheck::NoAnswer { reason }) => format!(
            "link state unknown: no answer from its control socket within {} s ({reason})",
            STATUS_CONTROL_TIMEOUT.as_secs()
        ),
        None => "link state not asked".into(),
    };
    format!("delay line running (pid {pid}), {link}")
}

/// The WAN lines of `lab up`'s and `lab status`'s summary.
pub fn print_wan(state: &LabState) {
    for w in &state.wan {
        let l = &w.link;
        let jitter = match l.jitter_us {
            0 => String::new(),
            j => format!(" ±{:.1} ms", j as f64 / 1000.0),
        };
        let pid = w.pid.map_or(String::new(), |p| format!(" (pid {p})"));
        println!(
            "wan  {}: {} each way, {:.1} ms{jitter} one way, delay line{pid}, control {}",
            l.pair(),
            format_rate(l.rate.rate_bytes_per_sec),
            l.delay_us as f64 / 1000.0,
            w.config.control.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_lab::delay::LinkState;

    #[test]
    fn wan_refusals_name_the_flag_and_the_text() {
        let e = parse_wan_flags(&["h1-h2=100Mbit/s".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--wan 'h1-h2=100Mbit/s': expected hA-hB=RATE,DELAY"),
            "{e}"
        );
        let e = parse_wan_flags(&["h1-h2=1Gbit/s,50".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--wan delay '50': expected a duration with a unit (us, ms or s), e.g. 50ms"
        );
        let ok = parse_wan_flags(&["h1-h2=100Mbit/s,50ms".into(), "h2-h3=1Gbit/s,5ms".into()]);
        assert_eq!(ok.unwrap().len(), 2);
        let e = parse_wan_flags(&["h1-h2=1Gbit/s,5ms,jitter=1ms,jitter=1ms".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--wan option 'jitter' is given twice: expected it at most once"
        );
    }

    fn reply(state: LinkState, error: Option<&str>) -> ControlReply {
        ControlReply {
            state,
            dirs: Default::default(),
            error: error.map(str::to_string),
        }
    }

    /// Cut twice or restore twice succeeds and says so; any other refusal is an error.
    #[test]
    fn cut_and_restore_are_idempotent() {
        let already_cut = reply(LinkState::Cut, Some("the link is already cut"));
        assert_eq!(
            outcome(WanAction::Cut, "h1-h2", &already_cut).unwrap(),
            Some("h1-h2: the link was already cut".into())
        );
        let not_cut = reply(LinkState::Up, Some("the link is not cut"));
        assert_eq!(
            outcome(WanAction::Restore, "h1-h2", &not_cut).unwrap(),
            Some("h1-h2: the link was already restored".into())
        );
        assert_eq!(
            outcome(WanAction::Cut, "h1-h2", &reply(LinkState::Cut, None)).unwrap(),
            None
        );
        // A refusal that leaves the link otherwise than asked stays an error.
        let e = outcome(WanAction::Cut, "h1-h2", &reply(LinkState::Up, Some("busy")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "cut h1-h2: busy");
        let stats = reply(LinkState::Cut, Some("odd"));
        assert!(outcome(WanAction::Stats, "h1-h2", &stats).is_err());
    }

    #[test]
    fn status_says_when_a_link_is_cut_or_silent() {
        let w = |running, link| WanStatus {
            pair: "h1-h2".into(),
            pid: Some(42),
            running,
            link,
        };
        assert_eq!(
            status_line(&w(Some(true), Some(LinkCheck::Cut))),
            "delay line running (pid 42), link CUT (every packet dropped; \
             `drover lab wan restore h1-h2` carries them again)"
        );
        assert_eq!(
            status_line(&w(Some(true), Some(LinkCheck::Up))),
            "delay line running (pid 42), link up"
        );
        let silent = LinkCheck::NoAnswer {
            reason: "timed out".into(),
        };
        assert_eq!(
            status_line(&w(Some(true), Some(silent))),
            "delay line running (pid 42), link state unknown: no answer from its control \
             socket within 1 s (timed out)"
        );
        assert!(status_line(&w(Some(false), None)).starts_with("DELAY LINE GONE (pid 42)"));
        let unrecorded = WanStatus {
            pid: None,
            ..w(None, None)
        };
        assert_eq!(status_line(&unrecorded), "no delay line recorded");
    }
}
