//! A replay as text: the plans the step made with every explanation, the actions, and the
//! verdict.

use super::{Replay, Source, Stored, Verdict};
use drover_core::control::{Action, JournalEntry, Plan, TechniqueForecast};
use std::fmt::Write;

/// The replay of `stored` for a terminal.
pub fn render(stored: &Stored, r: &Replay) -> String {
    let mut s = String::new();
    let vms: usize = stored.observation.hosts.iter().map(|h| h.vms.len()).sum();
    let what = match &r.source {
        Source::Decision { format } => format!("core decision (format {format})"),
        Source::StoreExport { plan_id } => format!("manager store export of plan {plan_id}"),
    };
    let _ = writeln!(
        s,
        "{what} at {} s: {} hosts, {vms} VMs listed, {} migrations reported",
        r.now_s,
        stored.observation.hosts.len(),
        stored.observation.migrations.len()
    );
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    if r.plans.is_empty() {
        let _ = writeln!(s, "no plan made");
    }
    for p in &r.plans {
        s.push_str(&plan_text(p, |id| {
            r.state_after
                .moves
                .get(id)
                .map(|m| format!("{} -> {} by {}", m.from, m.to, m.technique.technique))
        }));
    }
    if !r.output.actions.is_empty() {
        let _ = writeln!(s, "actions:");
        for a in &r.output.actions {
            let _ = writeln!(s, "  {}", action(a));
        }
    }
    let _ = writeln!(s, "next look at {} s", r.output.next_look_s);
    let _ = writeln!(s, "{}", verdict(&r.verdict));
    s
}

/// One plan for a terminal: its summary, the host's recent loads against the threshold, the
/// hosts it wakes and puts in standby, and for each move why this VM, why there, why this
/// technique, each technique's forecast and the predicted cost. `route` gives a move's
/// "from -> to by technique" when the caller knows it (the moves live beside the plan).
pub fn plan_text(p: &Plan, route: impl Fn(&str) -> Option<String>) -> String {
    let mut s = String::new();
    let s = &mut s;
    let e = &p.explanation;
    let _ = writeln!(
        s,
        "plan {} ({}, {}): {}",
        p.id,
        format!("{:?}", p.kind).to_lowercase(),
        p.state.name(),
        e.summary
    );
    if let Some(host) = &e.host {
        let samples: Vec<String> = e.samples.iter().map(|x| format!("{x:.3}")).collect();
        let threshold = e
            .threshold
            .map_or(String::new(), |t| format!(" (threshold {t})"));
        let _ = writeln!(
            s,
            "  host {host}: recent loads [{}]{threshold}",
            samples.join(", ")
        );
    }
    if !p.wake.is_empty() {
        let _ = writeln!(s, "  wakes: {}", p.wake.join(", "));
    }
    if !p.standby.is_empty() {
        let _ = writeln!(s, "  standby once empty: {}", p.standby.join(", "));
    }
    for why in &e.moves {
        let route = route(&why.move_id).map_or(String::new(), |r| format!(" {r}"));
        let _ = writeln!(s, "  move {}: {}{route}", why.move_id, why.vm);
        let _ = writeln!(s, "    why this VM: {}", why.why_vm);
        let _ = writeln!(s, "    why there: {}", why.why_destination);
        let _ = writeln!(s, "    why this technique: {}", why.why_technique);
        for f in &why.forecasts {
            let _ = writeln!(s, "    forecast {}", forecast(f));
        }
        let _ = writeln!(
            s,
            "    predicted cost: {:.2} s of lost work",
            why.predicted_cost_s
        );
    }
    if let Some(note) = &p.note {
        let _ = writeln!(s, "  note: {note}");
    }
    std::mem::take(s)
}

fn forecast(f: &TechniqueForecast) -> String {
    format!(
        "{}: {:.1} s total, {:.0} ms pause, {:.2} s lost work{}",
        f.technique,
        f.total_s,
        f.downtime_s * 1000.0,
        f.lost_work_s,
        if f.converges {
            ""
        } else {
            ", does not converge"
        }
    )
}

/// An action on one line, as the replay lists it.
pub(crate) fn action(a: &Action) -> String {
    match a {
        Action::Migrate {
            move_id,
            vm,
            from,
            to,
            technique,
            ..
        } => format!("migrate {vm} {from} -> {to} by {technique} (move {move_id})"),
        Action::Cancel { move_id, from } => format!("cancel move {move_id} on {from}"),
        Action::Standby { host } => format!("standby {host}"),
        Action::Wake { host } => format!("wake {host}"),
    }
}

/// A journal entry on one line.
pub(crate) fn journal_line(j: &JournalEntry) -> String {
    format!("at {} s, {} {}: {}", j.at_s, j.subject, j.id, j.what)
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Reproduces => "reproduces the recorded output".into(),
        Verdict::MadePlan { plan_id } => format!("makes plan {plan_id} again"),
        Verdict::MissingPlan { plan_id, made } => format!(
            "DOES NOT make plan {plan_id} again (made: {})",
            if made.is_empty() {
                "none".to_string()
            } else {
                made.join(", ")
            }
        ),
        Verdict::Differs { differences } => {
            let mut s = "DOES NOT reproduce the recorded output:".to_string();
            for d in differences {
                s.push_str("\n  ");
                s.push_str(d);
            }
            s
        }
    }
}
