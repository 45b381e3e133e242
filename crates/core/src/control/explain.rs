//! Turning a decision into a plan: its moves (planned), its state by mode, its explanation, and
//! the journal lines. Every kind of plan is made here, so they all carry the same kind of
//! explanation and the same ids.

use super::ledger::{Booking, Ledger};
use super::moves::{Move, MoveState};
use super::place::{book, Ctx, Spot, Tier, Unit};
use super::plan::{Explanation, MoveWhy, Plan, PlanId, PlanKind, PlanState};
use super::settings::{ControlSettings, Mode};
use super::state::ControlState;
use super::step::{JournalEntry, StepOutput};
use super::technique::Priced;
use super::technique::Prices;
use super::view::View;

/// One move a decision wants.
#[derive(Debug, Clone)]
pub(crate) struct Pick {
    /// Index into the view's VMs.
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    pub priced: Priced,
    pub why_vm: String,
    pub why_destination: String,
}

/// A decision, before it becomes a plan.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub kind: PlanKind,
    /// The host the plan is about.
    pub host: usize,
    pub summary: String,
    pub samples: Vec<f64>,
    pub threshold: Option<f64>,
    pub picks: Vec<Pick>,
    /// Hosts to wake (view indices).
    pub wake: Vec<usize>,
    /// Hosts to put in standby once empty (view indices).
    pub standby: Vec<usize>,
}

impl Draft {
    pub fn new(kind: PlanKind, host: usize, summary: String) -> Draft {
        Draft {
            kind,
            host,
            summary,
            samples: Vec::new(),
            threshold: None,
            picks: Vec::new(),
            wake: Vec::new(),
            standby: Vec::new(),
        }
    }
}

/// Adds `unit`'s moves to `spot` to the draft and books them; returns the bookings (for undo).
pub(crate) fn add_unit(
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    draft: &mut Draft,
    unit: &Unit,
    spot: &Spot,
    why_vm: &str,
) -> Vec<Booking> {
    let view = ctx.view;
    let bookings = book(view, ledger, unit, spot.to);
    ledger.receiving[spot.to] = true;
    if spot.tier == Tier::Wake {
        ledger.waking[spot.to] = true;
    }
    // A destination that is not running yet (waking, or to wake) is in the plan's wake list,
    // so its moves wait for it rather than being skipped.
    if spot.tier != Tier::Running && !draft.wake.contains(&spot.to) {
        draft.wake.push(spot.to);
    }
    let why_vm = if unit.members.len() > 1 {
        format!("{why_vm}; moves with {} (hard affinity)", unit.names(view))
    } else {
        why_vm.to_string()
    };
    for &vm in &unit.members {
        draft.picks.push(Pick {
            vm,
            from: unit.from,
            to: spot.to,
            priced: prices.get(view, vm, ctx.settings).clone(),
            why_vm: why_vm.clone(),
            why_destination: spot.why.clone(),
        });
    }
    bookings
}

/// A journal line.
pub(crate) fn entry(at_s: f64, subject: &str, id: &str, what: String) -> JournalEntry {
    JournalEntry {
        at_s,
        subject: subject.into(),
        id: id.into(),
        what,
    }
}

/// The state a new plan starts in.
pub(crate) fn initial_state(mode: Mode) -> PlanState {
    match mode {
        Mode::Auto => PlanState::Approved,
        Mode::Recommend => PlanState::Proposed,
        Mode::DryRun => PlanState::Recorded,
    }
}

/// Makes `draft` a plan in the state the settings' mode gives, with its moves planned (the
/// techniques of several VMs leaving one host from the group choice, [`super::group`]);
/// returns its id.
pub(crate) fn commit(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    settings: &ControlSettings,
    draft: Draft,
    now_s: f64,
    out: &mut StepOutput,
) -> PlanId {
    let mut draft = draft;
    super::group::regroup(view, &state.vms, settings, &mut draft.picks);
    let id = state.new_id("p");
    let mut whys = Vec::with_capacity(draft.picks.len());
    let mut move_ids = Vec::with_capacity(draft.picks.len());
    for pick in draft.picks {
        let move_id = state.new_id("m");
        let vm = &view.vms[pick.vm];
        state.moves.insert(
            move_id.clone(),
            Move {
                id: move_id.clone(),
                plan: id.clone(),
                vm: vm.name().to_string(),
                from: view.hosts[pick.from].name().to_string(),
                to: view.hosts[pick.to].name().to_string(),
                technique: pick.priced.choice.clone(),
                demand_cores: vm.demand,
                memory_bytes: vm.obs.memory_bytes,
                state: MoveState::Planned,
            },
        );
        whys.push(MoveWhy {
            move_id: move_id.clone(),
            vm: vm.name().to_string(),
            why_vm: pick.why_vm,
            why_destination: pick.why_destination,
            why_technique: pick.priced.choice.reason,
            forecasts: pick.priced.forecasts,
            predicted_cost_s: pick.priced.cost_s,
        });
        move_ids.push(move_id);
    }
    let names = |hs: &[usize]| -> Vec<String> {
        hs.iter()
            .map(|&h| view.hosts[h].name().to_string())
            .collect()
    };
    let plan_state = initial_state(settings.mode);
    if plan_state == PlanState::Recorded {
        ledger.note_recorded(draft.kind, draft.host, now_s);
    }
    let what = format!(
        "{} plan made ({}): {}",
        kind_name(draft.kind),
        plan_state.name(),
        draft.summary
    );
    state.plans.insert(
        id.clone(),
        Plan {
            id: id.clone(),
            kind: draft.kind,
            created_s: now_s,
            state: plan_state,
            moves: move_ids,
            wake: names(&draft.wake),
            standby: names(&draft.standby),
            explanation: Explanation {
                summary: draft.summary,
                host: Some(view.hosts[draft.host].name().to_string()),
                samples: draft.samples,
                threshold: draft.threshold,
                moves: whys,
            },
            note: None,
        },
    );
    out.journal.push(entry(now_s, "plan", &id, what));
    out.new_plans.push(id.clone());
    id
}

/// The kind's name, for messages.
pub(crate) fn kind_name(kind: PlanKind) -> &'static str {
    match kind {
        PlanKind::Relief => "relief",
        PlanKind::Consolidation => "consolidation",
        PlanKind::Drain => "drain",
        PlanKind::Balance => "balance",
    }
}

/// Bytes as GiB, for messages.
pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}
