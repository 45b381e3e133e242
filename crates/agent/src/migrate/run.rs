//! The source side of one migration, from `preparing` to a final record.

use super::lifecycle::RecordEvent;
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{AgentClient, IncomingReply, IncomingRequest, MigrationRequest, MigrationState};
use drover_core::migration::{
    paused_by_migration, CostParams, EndStatus, MigrationPlan, OpsSample, Technique, VmProfile,
};
use drover_qemu::driver::{self, DriverConfig, Endpoints};
use drover_qemu::qmp::{Qmp, QmpClient, QmpExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs the migration and always leaves a final record (or a non-final one only if the agent
/// dies meanwhile, which `recover` handles).
pub async fn run(state: Arc<AgentState>, id: String, cancel: watch::Receiver<bool>) {
    let Ok(record) = state.migrations.get(&id) else {
        return;
    };
    let vm = record.vm.clone();
    if let Err(error) = drive(&state, &id, &vm, &record.request, cancel).await {
        if let Err(e) = state.migrations.apply(&id, RecordEvent::Failed { error }) {
            tracing::error!(migration = %id, error = %e, "cannot record the failure");
        }
    }
    state.vms.end_migration(&vm);
}

async fn drive(
    state: &Arc<AgentState>,
    id: &str,
    vm: &str,
    req: &MigrationRequest,
    cancel: watch::Receiver<bool>,
) -> Result<(), String> {
    let source = state.vms.qmp_of(vm).map_err(|e| e.to_string())?;
    let config = state.vms.record(vm).map_err(|e| e.to_string())?.config;
    let plan = plan_for(req, source.as_ref(), config.memory_bytes).await;
    let dest = AgentClient::new(req.to.clone(), &state.token);
    let health = dest
        .health()
        .await
        .map_err(|e| format!("destination unreachable: {e}"))?;
    if health.agent_id == state.agent_id {
        return Err(format!("the destination {} is this host", req.to));
    }
    let incoming = IncomingRequest {
        config,
        migration_id: id.to_string(),
    };
    let reply = dest
        .incoming(&incoming)
        .await
        .map_err(|e| format!("destination could not prepare an incoming VM: {e}"))?;
    if let Err(e) = check_reply(&req.to, &reply).await {
        abort_destination(state, id, &dest, vm, source.as_ref()).await;
        return Err(e);
    }
    let uri = reply.uri.to_string();
    let recover_uri = reply.recover_uri.to_string();
    state
        .migrations
        .apply(
            id,
            RecordEvent::Started {
                plan: plan.clone(),
                uri: reply.uri,
            },
        )
        .map_err(|e| e.to_string())?;
    let remote = RemoteQmp {
        client: dest.clone(),
        vm: vm.to_string(),
    };
    let ends = Endpoints {
        source: source.as_ref(),
        dest: &remote,
        uri,
        recover_uri,
    };
    let clock = state.vms.clock();
    let samples = state.vms.samples_of(vm).map_err(|e| e.to_string())?;
    let outcome =
        driver::migrate(&ends, plan, &DriverConfig::default(), &clock, Some(cancel)).await;
    let run = match outcome {
        Ok(run) => run,
        Err(e) => {
            abort_destination(state, id, &dest, vm, source.as_ref()).await;
            return Err(format!("migration driver: {e}"));
        }
    };
    let moved = run.outcome.vm_on_destination;
    if moved && run.outcome.status == EndStatus::Completed {
        hand_over(state, id, &dest, vm).await;
    } else if moved {
        // Post-copy stopped part-way: the source still holds part of the guest's memory.
        state.migrations.note(
            id,
            "post-copy did not complete: both QEMUs are kept (the guest is on the destination, the rest of its memory here)".into(),
        );
    } else {
        abort_destination(state, id, &dest, vm, source.as_ref()).await;
    }
    // The VM's fate is settled: it may be migrated or deleted again while we measure.
    state.vms.end_migration(vm);
    let record = state
        .migrations
        .apply(
            id,
            RecordEvent::Ended {
                status: run.outcome.status,
                vm_on_destination: moved,
                plan: run.plan.clone(),
                error: run.outcome.error.clone().or(run.dest_error.clone()),
                result: run.result(&samples.snapshot()),
                measure: req.measure,
            },
        )
        .map_err(|e| e.to_string())?;
    if record.state == MigrationState::Measuring {
        let window_end = run.span().samples_until_ms() + 300;
        tokio::time::sleep(Duration::from_millis(
            window_end.saturating_sub(clock.now_ms()),
        ))
        .await;
        let mut all = samples.snapshot();
        if moved {
            match dest.samples(vm).await {
                Ok(remote) => all.extend(remote.iter().map(|s| OpsSample {
                    host_ms: state.vms.from_unix_ms(s.unix_ms),
                    ops: s.ops,
                    integrity_errors: s.integrity_errors,
                })),
                Err(e) => state
                    .migrations
                    .note(id, format!("destination samples unavailable: {e}")),
            }
        }
        all.sort_by_key(|s| s.host_ms);
        let result = run.result(&all);
        state
            .migrations
            .apply(id, RecordEvent::Measured { result })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The VM now runs on the destination: make it a normal VM there, then stop ours.
pub(super) async fn hand_over(state: &AgentState, id: &str, dest: &AgentClient, vm: &str) {
    let mut committed = false;
    for attempt in 1..=5 {
        match dest.commit_incoming(vm).await {
            Ok(_) => {
                committed = true;
                break;
            }
            Err(e) => {
                state.migrations.note(
                    id,
                    format!("commit on destination failed (attempt {attempt}): {e}"),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if !committed {
        state.migrations.note(
            id,
            "the VM runs on the destination but is still marked incoming there".into(),
        );
    }
    if let Err(e) = state.vms.remove(vm, false, true).await {
        state
            .migrations
            .note(id, format!("could not stop the source QEMU: {e}"));
    }
}

/// The VM stays here: drop the destination's incoming QEMU and make sure ours runs.
pub(super) async fn abort_destination(
    state: &AgentState,
    id: &str,
    dest: &AgentClient,
    vm: &str,
    source: &dyn Qmp,
) {
    match dest.abort_incoming(vm).await {
        Ok(_) => {}
        Err(e) if e.status() == Some(404) => {}
        Err(e) => state.migrations.note(
            id,
            format!("could not remove the destination's incoming VM: {e}"),
        ),
    }
    if let Ok(s) = source.query_status().await {
        if paused_by_migration(&s.status) {
            if let Err(e) = source.cont().await {
                state
                    .migrations
                    .note(id, format!("could not resume the VM on the source: {e}"));
            }
        }
    }
}

/// Refuses URIs that do not point at the destination this agent chose: QEMU would connect
/// wherever they say.
async fn check_reply(to: &drover_api::AgentUrl, reply: &IncomingReply) -> Result<(), String> {
    let addrs: Vec<std::net::IpAddr> = tokio::net::lookup_host((to.host(), to.port()))
        .await
        .map_err(|e| format!("cannot resolve the destination {to}: {e}"))?
        .map(|a| a.ip())
        .collect();
    for uri in [reply.uri, reply.recover_uri] {
        uri.check_host(to.host(), &addrs)
            .map_err(|e| format!("destination's reply refused: {e}"))?;
    }
    Ok(())
}

/// The plan for a request: fixed, or the cost model's pick from a dirty-rate profile.
async fn plan_for(req: &MigrationRequest, source: &QmpClient, memory_bytes: u64) -> MigrationPlan {
    let profile = match req.technique {
        Technique::Auto => profile(source, memory_bytes).await,
        _ => None,
    };
    MigrationPlan::build(
        req.technique,
        &req.knobs,
        profile.as_ref(),
        &CostParams::default(),
    )
}

/// The cost model's view of the VM (see `drover_qemu::profile`).
async fn profile(qmp: &QmpClient, memory_bytes: u64) -> Option<VmProfile> {
    drover_qemu::profile::profile_vm(qmp, memory_bytes)
        .await
        .ok()
}
