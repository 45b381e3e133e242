//! One look of the loop, and the store's record of what it saw.

use super::{Daemon, LookError, Stage};
use crate::fleet::{AgentSight, Fleet, Sight, Tracked};
use crate::store::{HostLook, JournalEntry, Look, MigrationResult, Sample, VmLook};
use drover_core::control::{
    self, Action, Decision, HostObs, Outcome, VmObs, VmPresence, DECISION_FORMAT,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What one look did (tests and logs read it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookReport {
    /// The step's time, s.
    pub at_s: f64,
    /// Plans the step made.
    pub new_plans: Vec<String>,
    /// What the step asked for, in order.
    pub actions: Vec<Action>,
    /// What the fleet answered, in the same order.
    pub outcomes: Vec<Outcome>,
    /// Where the look's time went.
    pub times: LookTimes,
}

/// Where one look's time went, ms of the manager's own (wall-clock) time, whatever clock the
/// loop runs on. The stages follow each other, so they add up to `total_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LookTimes {
    /// Asking the fleet: every agent polled (the simulator's observation built), ms.
    pub observe_ms: f64,
    /// Core's control step on a copy of the memory, and the decision record when it made
    /// plans, ms.
    pub step_ms: f64,
    /// Storing the look and the step (one transaction: samples, reachability, memory,
    /// journal, plans, moves, decision) and the results of migrations that ended, ms.
    pub store_ms: f64,
    /// Carrying out the actions, recording their outcomes and storing them, ms.
    pub act_ms: f64,
    /// Pruning final plans, compacting a slice of the history when due, and publishing the
    /// look for the handle, ms.
    pub upkeep_ms: f64,
    /// The whole look (operator commands queued before it not counted), ms.
    pub total_ms: f64,
}

/// Milliseconds since `t`, and `t` moved to now.
fn lap(t: &mut std::time::Instant) -> f64 {
    let now = std::time::Instant::now();
    let ms = (now - *t).as_secs_f64() * 1e3;
    *t = now;
    ms
}

impl<F: Fleet + 'static> Daemon<F> {
    /// One look: observe, store the look, step, store the step, act, record and store the
    /// outcomes; prune and compact when due. Operator commands queued meanwhile are run
    /// first.
    ///
    /// # Errors
    /// [`LookError::Store`] when a store write failed: the look stopped there, nothing was
    /// acted on; the next look is due after a backoff ([`Daemon::wake_at`]).
    pub async fn look(&mut self) -> Result<LookReport, LookError> {
        self.run_commands().await;
        let started = std::time::Instant::now();
        let mut t = started;
        let tracked: Vec<Tracked> = self
            .state
            .in_flight()
            .map(|m| Tracked {
                move_id: m.id.clone(),
                from: m.from.clone(),
            })
            .collect();
        let sight = self.fleet.observe(&tracked).await;
        let now = self.clock.now_s();
        self.looks += 1;
        let mut times = LookTimes {
            observe_ms: lap(&mut t),
            ..LookTimes::default()
        };
        let result = self.decide_and_act(sight, now, &mut t, &mut times).await;
        self.publish(Some(started.elapsed().as_secs_f64() * 1e3));
        let mut report = result?;
        times.upkeep_ms += lap(&mut t);
        times.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report.times = times;
        Ok(report)
    }

    async fn decide_and_act(
        &mut self,
        sight: Sight,
        now: f64,
        t: &mut std::time::Instant,
        times: &mut LookTimes,
    ) -> Result<LookReport, LookError> {
        let mut next = self.state.clone();
        let settings = self.settings.settings.clone();
        let out = control::step(&mut next, &sight.observation, &settings, now);
        let decision = (!out.new_plans.is_empty()).then(|| Decision {
            format: DECISION_FORMAT,
            now_s: now,
            observation: sight.observation.clone(),
            state_before: self.state.clone(),
            settings,
            output: out.clone(),
        });
        times.step_ms = lap(t);
        // The journal's reachability lines compare with the last stored look: the hosts
        // found unreachable change only once this one is stored.
        let look = self.look_record(&sight, now);
        self.observation = Arc::new(sight.observation);
        self.agents = Arc::new(sight.agents);
        self.commit_with(next, out.journal.clone(), decision, now, Some(&look))?;
        self.unreachable = unreachable(&self.observation.hosts);
        self.next_look_s = out.next_look_s;
        for f in sight.finished {
            let result = MigrationResult {
                move_id: f.move_id,
                at_s: now,
                body: f.record,
            };
            if let Err(e) = self.store.put_result(&result) {
                tracing::warn!("migration {}: result not stored: {e}", result.move_id);
            }
        }
        times.store_ms = lap(t);
        self.crash_point(Stage::Persisted, &out.actions)?;
        let outcomes = self.carry_out(&out.actions).await?;
        times.act_ms = lap(t);
        self.upkeep(now);
        Ok(LookReport {
            at_s: now,
            new_plans: out.new_plans,
            actions: out.actions,
            outcomes,
            times: LookTimes::default(),
        })
    }

    /// Prunes the memory's final plans (stored already) and compacts a slice of the history
    /// when due (every `compact_every_s`, then each look until nothing due is left).
    fn upkeep(&mut self, now: f64) {
        let keep = self
            .config
            .keep_final_plans_s
            .max(2.0 * self.settings.settings.consolidate_every_s);
        self.state.prune(now - keep);
        let due = self.compaction_pending
            || self
                .last_compaction_s
                .is_none_or(|t| now - t >= self.config.compact_every_s || now < t);
        if due {
            if !self.compaction_pending {
                self.last_compaction_s = Some(now);
            }
            match self.store.compact_slice(now, self.config.compact_slices) {
                Ok(c) => {
                    self.compaction_pending = c.pending;
                    tracing::debug!("compacted: {c:?}");
                }
                Err(e) => {
                    self.compaction_pending = false;
                    tracing::warn!("compaction failed (tried again later): {e}");
                }
            }
        }
    }

    /// The store's record of a look: samples of the hosts whose agents answered and of the
    /// VMs they run, reachability, and a journal line when a host's changes.
    fn look_record(&self, sight: &Sight, now: f64) -> Look {
        let mut look = Look {
            at_s: now,
            ..Look::default()
        };
        let mut seen = BTreeSet::new();
        for (host, agent) in sight.observation.hosts.iter().zip(&sight.agents) {
            look.hosts.push(HostLook {
                name: host.name.clone(),
                reachable: host.reachable,
                sample: agent.answered.then(|| host_sample(host)),
            });
            if let Some(line) = self.reach_line(host, agent, now) {
                look.journal.push(line);
            }
            if !agent.answered {
                continue;
            }
            for vm in host
                .vms
                .iter()
                .filter(|v| v.presence == VmPresence::Running)
            {
                // A VM reported twice (by two hosts) is recorded once: a look stores one
                // sample per series.
                if seen.insert(vm.name.clone()) {
                    look.vms.push(VmLook {
                        name: vm.name.clone(),
                        host: host.name.clone(),
                        sample: Some(vm_sample(vm)),
                    });
                }
            }
        }
        look
    }

    fn reach_line(&self, host: &HostObs, agent: &AgentSight, now: f64) -> Option<JournalEntry> {
        let was_unreachable = self.unreachable.contains(&host.name);
        let what = match (was_unreachable, host.reachable) {
            (false, false) => format!(
                "unreachable: {} poll(s) missed ({}); its VMs are kept as last seen",
                agent.misses,
                agent.error.as_deref().unwrap_or("no answer")
            ),
            (true, true) => "reachable again".to_string(),
            _ => return None,
        };
        Some(JournalEntry {
            at_s: now,
            subject: "host".into(),
            id: host.name.clone(),
            what,
        })
    }
}

fn unreachable(hosts: &[HostObs]) -> BTreeSet<String> {
    hosts
        .iter()
        .filter(|h| !h.reachable)
        .map(|h| h.name.clone())
        .collect()
}

/// A number the store accepts: finite and non-negative (an agent's odd reading becomes 0,
/// so one bad figure does not refuse the whole look).
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn host_sample(h: &HostObs) -> Sample {
    let running = || h.vms.iter().filter(|v| v.presence == VmPresence::Running);
    Sample {
        load: sane(h.load()),
        cpu_cores: sane(h.cpu_demand_cores),
        memory_bytes: h.memory_allocated().min(i64::MAX as u64),
        dirty_bps: None,
        rx_bps: sane(running().map(|v| v.net_rx_bps).sum()),
        tx_bps: sane(running().map(|v| v.net_tx_bps).sum()),
    }
}

fn vm_sample(v: &VmObs) -> Sample {
    let vcpus = f64::from(v.vcpus.max(1));
    Sample {
        load: sane(v.cpu_demand_cores / vcpus),
        cpu_cores: sane(v.cpu_demand_cores),
        memory_bytes: v.memory_bytes.min(i64::MAX as u64),
        dirty_bps: v.dirty_rate_bps.filter(|d| d.is_finite() && *d >= 0.0),
        rx_bps: sane(v.net_rx_bps),
        tx_bps: sane(v.net_tx_bps),
    }
}
