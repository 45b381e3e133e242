//! What each action does to the model, and why one is refused, as an agent would answer:
//!
//! - **Migrate**: a migration id the model already has is accepted again and changes nothing
//!   (an agent refuses a second migration with the same id, which the manager counts as
//!   accepted). Otherwise refused when the VM is unknown or not running on `from`, is in
//!   another migration, `to` is unknown, is `from`, or is not active (standby or waking), the
//!   knobs are out of range, or `to` lacks the memory (what its VMs use plus what migrations
//!   hold there); else accepted and started at once (see `flight` for its timeline).
//! - **Cancel**: stops a running migration before any switchover (the VM stays on the source);
//!   refused once a post-copy has switched (the VM runs on the destination and part of its
//!   memory is already there), for an unknown id, or when `from` is not its source. Cancelling
//!   a cancelled migration is accepted again; one that ended otherwise is refused.
//! - **Standby**: an active host that runs and holds nothing goes to standby at once (already
//!   in standby: accepted); refused when it is not empty or is waking.
//! - **Wake**: a standby host is waking, active after the wake delay; an active or waking host
//!   accepts it and nothing changes.

use super::account::Ending;
use super::flight::{Flight, Start};
use super::LiveSim;
use drover_core::control::{Action, Outcome, PowerState};
use drover_core::migration::{KnobError, PlanKnobs, Technique, VmProfile};
use thiserror::Error;

/// Why the model (standing for an agent) refused an action.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refused {
    #[error("no host {0}")]
    UnknownHost(String),
    #[error("no VM {0}")]
    UnknownVm(String),
    #[error("{vm} is not running on {from} (it runs on {actual})")]
    NotOnSource {
        vm: String,
        from: String,
        actual: String,
    },
    #[error("{vm} is already in migration {id}")]
    Busy { vm: String, id: String },
    #[error("{0} is both source and destination")]
    SameHost(String),
    #[error("{host} is {state}: it takes no VMs")]
    NotActive { host: String, state: &'static str },
    #[error("{host} has {free} bytes of memory free; {vm} needs {need}")]
    NoMemory {
        host: String,
        vm: String,
        free: u64,
        need: u64,
    },
    #[error("knobs: {0}")]
    Knobs(KnobError),
    #[error("no migration {0}")]
    UnknownMigration(String),
    #[error("migration {id} runs from {actual}, not {from}")]
    WrongSource {
        id: String,
        from: String,
        actual: String,
    },
    #[error("migration {0} has switched over: the VM runs on the destination and cannot go back")]
    Switched(String),
    #[error("migration {id} already ended: {how}")]
    Ended { id: String, how: &'static str },
    #[error("{host} is not empty: {what}")]
    NotEmpty { host: String, what: String },
    #[error("{0} is waking")]
    Waking(String),
}

// Not `#[from]`: that would also make the cause a `source()`, printed twice in a chain.
impl From<KnobError> for Refused {
    fn from(e: KnobError) -> Self {
        Refused::Knobs(e)
    }
}

fn state_name(s: PowerState) -> &'static str {
    match s {
        PowerState::Active => "active",
        PowerState::Standby => "in standby",
        PowerState::Waking => "waking",
    }
}

/// Carries out `action` at the model's current time.
pub(super) fn apply(sim: &mut LiveSim, action: &Action) -> Outcome {
    match action {
        Action::Migrate {
            move_id,
            vm,
            from,
            to,
            technique,
            knobs,
        } => match migrate(sim, move_id, vm, from, to, *technique, knobs) {
            Ok(()) => Outcome::MigrateAccepted {
                move_id: move_id.clone(),
            },
            Err(e) => {
                sim.measures.refused += 1;
                Outcome::MigrateRefused {
                    move_id: move_id.clone(),
                    error: e.to_string(),
                }
            }
        },
        Action::Cancel { move_id, from } => Outcome::Cancel {
            move_id: move_id.clone(),
            error: cancel(sim, move_id, from).err().map(|e| e.to_string()),
        },
        Action::Standby { host } => Outcome::Standby {
            host: host.clone(),
            error: standby(sim, host).err().map(|e| e.to_string()),
        },
        Action::Wake { host } => Outcome::Wake {
            host: host.clone(),
            error: wake(sim, host).err().map(|e| e.to_string()),
        },
    }
}

fn host(sim: &LiveSim, name: &str) -> Result<usize, Refused> {
    sim.host_index
        .get(name)
        .copied()
        .ok_or_else(|| Refused::UnknownHost(name.to_string()))
}

fn migrate(
    sim: &mut LiveSim,
    id: &str,
    vm: &str,
    from: &str,
    to: &str,
    technique: Technique,
    knobs: &PlanKnobs,
) -> Result<(), Refused> {
    if sim.flights.contains_key(id) {
        return Ok(());
    }
    let v = *sim
        .vm_index
        .get(vm)
        .ok_or_else(|| Refused::UnknownVm(vm.to_string()))?;
    let f = host(sim, from)?;
    let t = host(sim, to)?;
    let here = &sim.vms[v];
    if here.host != f {
        return Err(Refused::NotOnSource {
            vm: vm.into(),
            from: from.into(),
            actual: sim.hosts[here.host].name.clone(),
        });
    }
    if let Some(busy) = &here.flight {
        return Err(Refused::Busy {
            vm: vm.into(),
            id: busy.clone(),
        });
    }
    if f == t {
        return Err(Refused::SameHost(to.into()));
    }
    let dest = &sim.hosts[t];
    if dest.state != PowerState::Active {
        return Err(Refused::NotActive {
            host: to.into(),
            state: state_name(dest.state),
        });
    }
    knobs.validate()?;
    let used = dest.resident_bytes.saturating_add(dest.held_bytes);
    let free = dest.memory_bytes.saturating_sub(used);
    if here.memory_bytes > free {
        return Err(Refused::NoMemory {
            host: to.into(),
            vm: vm.into(),
            free,
            need: here.memory_bytes,
        });
    }
    let u = sim.util[v];
    let flight = Flight::start(Start {
        id,
        vm: v,
        from: f,
        to: t,
        requested: technique,
        knobs,
        profile: VmProfile {
            memory_bytes: here.memory_bytes,
            wss_bytes: here.wss_bytes,
            dirty_rate_bps: here.dirty_full_bps * u,
        },
        link_bps: sim.link_bps,
        cost: &sim.cost,
        demand_cores: u * f64::from(here.vcpus),
        now_s: sim.now_s,
    });
    sim.hosts[t].held_bytes += here.memory_bytes;
    sim.vms[v].flight = Some(id.to_string());
    sim.flights.insert(id.to_string(), flight);
    sim.running.insert(id.to_string());
    sim.measures.in_flight = sim.running.len() as u64;
    // A migration predicted to take no time at all (an empty VM) ends now.
    sim.events_due();
    Ok(())
}

fn cancel(sim: &mut LiveSim, id: &str, from: &str) -> Result<(), Refused> {
    let f = sim
        .flights
        .get(id)
        .ok_or_else(|| Refused::UnknownMigration(id.to_string()))?;
    let source = &sim.hosts[f.from].name;
    if source != from {
        return Err(Refused::WrongSource {
            id: id.into(),
            from: from.into(),
            actual: source.clone(),
        });
    }
    match f.ended {
        Some((Ending::Cancelled, _)) => return Ok(()),
        Some((Ending::Completed, _)) => {
            return Err(Refused::Ended {
                id: id.into(),
                how: "completed",
            })
        }
        Some((Ending::Failed, _)) => {
            return Err(Refused::Ended {
                id: id.into(),
                how: "failed",
            })
        }
        None => {}
    }
    if f.switched {
        return Err(Refused::Switched(id.into()));
    }
    sim.finish(id, Ending::Cancelled);
    if let Some(f) = sim.flights.get_mut(id) {
        f.error = Some("cancelled at the manager's request".into());
    }
    Ok(())
}

fn standby(sim: &mut LiveSim, name: &str) -> Result<(), Refused> {
    let h = host(sim, name)?;
    let host = &sim.hosts[h];
    match host.state {
        PowerState::Standby => return Ok(()),
        PowerState::Waking => return Err(Refused::Waking(name.into())),
        PowerState::Active => {}
    }
    if let Some(&v) = host.vms.first() {
        return Err(Refused::NotEmpty {
            host: name.into(),
            what: format!("{} VMs run here, {} first", host.vms.len(), sim.vms[v].name),
        });
    }
    if host.held_bytes > 0 {
        return Err(Refused::NotEmpty {
            host: name.into(),
            what: "a migration holds memory here".into(),
        });
    }
    sim.hosts[h].state = PowerState::Standby;
    sim.note_active_hosts();
    Ok(())
}

fn wake(sim: &mut LiveSim, name: &str) -> Result<(), Refused> {
    let h = host(sim, name)?;
    if sim.hosts[h].state != PowerState::Standby {
        return Ok(());
    }
    sim.hosts[h].state = PowerState::Waking;
    sim.hosts[h].wake_at_s = Some(sim.now_s + sim.wake_delay_s);
    sim.events_due();
    Ok(())
}
