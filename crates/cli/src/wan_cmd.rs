//! The lab's WAN pairs on the command line (a thin shell over drover_lab::wan):
//!
//! - `drover lab up ... --wan h1-h2=100Mbit/s,50ms[,jitter=5ms]` (repeatable, one per pair)
//! - `drover lab wan cut|restore|stats h1-h2 [--json]`: the pair's delay line on command
//! - `drover lab delay-line <config.json>` (hidden): the delay line itself, started by `lab up`

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use drover_core::units::format_rate;
use drover_lab::delay_io::ControlReply;
use drover_lab::wan::{find_pair, WanLink};
use drover_lab::{LabState, RealSystem, System};

/// What `drover lab wan` asks of a pair's delay line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WanAction {
    /// Drop every packet both ways (and what is in flight) until restored.
    Cut,
    /// Carry packets again.
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

/// `drover lab wan ACTION PAIR`.
pub fn run_wan(name: &str, action: WanAction, pair: &str, json: bool) -> Result<()> {
    let state = drover_lab::load_state(name)?;
    let wan = find_pair(&state.wan, pair).map_err(|e| anyhow!("{e}"))?;
    let answer = RealSystem
        .control(&wan.config.control, action.request())
        .with_context(|| format!("asking the delay line of {}", wan.link.pair()))?;
    let reply: ControlReply = serde_json::from_str(&answer)
        .with_context(|| format!("the delay line answered {answer:?}"))?;
    if let Some(e) = &reply.error {
        return Err(anyhow!("{} {}: {e}", action.request(), wan.link.pair()));
    }
    if json {
        println!("{answer}");
        return Ok(());
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
    }
}
