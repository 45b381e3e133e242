//! [`MemoryStore`]: the fake [`Store`], in maps behind a mutex, for other modules' tests. It
//! passes the same contract tests as the SQLite store (`tests/contract.rs`), and can be told
//! to fail every write ([`MemoryStore::fail_writes`]) to test what a caller does then.
//!
//! Each write checks everything that can refuse it before it changes anything, so a refused
//! write leaves the store as it was, like a rolled-back transaction.

use super::error::{Result, StoreError};
use super::records::{
    bounded, host_event, settings_event, JournalEntry, JournalQuery, JournalRow, MigrationQuery,
    MigrationResult, MigrationRow, MoveQuery, MoveRow, PlanQuery, PlanRow, SavedState,
    SettingsRecord, StepRecord, Transition,
};
use super::rollup::{minute_of, Minute};
use super::types::{
    Compacted, History, HostRecord, HostSpec, Look, MeanMax, Point, Retention, Rollup, Sample,
    SeriesKey, SeriesKind, VmRecord,
};
use super::{validate, Store};
use drover_core::control::{ControlSettings, Decision};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

const LOCATION: &str = "memory";

/// The fake store.
#[derive(Debug)]
pub struct MemoryStore {
    retention: Retention,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    store_id: String,
    fail_writes: bool,
    hosts: BTreeMap<String, HostRecord>,
    vms: BTreeMap<String, VmRecord>,
    /// Per series, samples by time (the bits of a non-negative f64 order like the number).
    samples: BTreeMap<SeriesKey, BTreeMap<u64, Sample>>,
    /// Per series, rollups by minute, with how many of the minute's samples had a dirty rate.
    rollups: BTreeMap<SeriesKey, BTreeMap<i64, (Rollup, u32)>>,
    control: Option<SavedState>,
    /// Plans by id, with the order they were first stored in and their decision.
    plans: BTreeMap<String, (u64, PlanRow, Option<u64>)>,
    moves: BTreeMap<String, (u64, MoveRow)>,
    next_order: u64,
    transitions: Vec<Transition>,
    decisions: BTreeMap<u64, (f64, Decision)>,
    next_decision: u64,
    results: BTreeMap<String, MigrationResult>,
    settings: Option<SettingsRecord>,
    journal: Vec<JournalRow>,
}

fn invalid(table: &'static str, what: String) -> StoreError {
    StoreError::Invalid {
        path: LOCATION.into(),
        table,
        what,
    }
}

impl MemoryStore {
    /// An empty store with the default retention.
    pub fn new() -> MemoryStore {
        MemoryStore::with_retention(Retention::default())
    }

    pub fn with_retention(retention: Retention) -> MemoryStore {
        static STORES: AtomicU64 = AtomicU64::new(1);
        let n = STORES.fetch_add(1, Ordering::Relaxed);
        MemoryStore {
            retention,
            inner: Mutex::new(Inner {
                store_id: format!("{:06x}", n & 0xff_ffff),
                ..Inner::default()
            }),
        }
    }

    /// While `fail` is true every write fails with [`StoreError::Injected`] and changes
    /// nothing; reads still work.
    pub fn fail_writes(&self, fail: bool) {
        self.lock().fail_writes = fail;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Writes change nothing until every check passed, so a panicking holder left the
        // maps consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, op: &'static str) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.lock();
        if inner.fail_writes {
            return Err(StoreError::Injected {
                path: LOCATION.into(),
                op,
            });
        }
        Ok(inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Inner {
    /// Refuses a look that names a host not in the inventory.
    fn check_look(&self, look: &Look) -> Result<()> {
        for name in look
            .hosts
            .iter()
            .map(|h| &h.name)
            .chain(look.vms.iter().map(|v| &v.host))
        {
            if !self.hosts.contains_key(name) {
                return Err(invalid(
                    "host",
                    format!("the look names host {name}, which is not in the inventory"),
                ));
            }
        }
        Ok(())
    }

    /// Stores a checked look.
    fn apply_look(&mut self, look: &Look) {
        let at = look.at_s + 0.0;
        for h in &look.hosts {
            if let Some(rec) = self.hosts.get_mut(&h.name) {
                rec.reachable = h.reachable;
                if h.reachable {
                    rec.last_seen_s = Some(at);
                }
            }
            if let Some(s) = h.sample {
                let series = self.samples.entry(SeriesKey::host(&h.name)).or_default();
                series.insert(at.to_bits(), s.stored());
            }
        }
        for v in &look.vms {
            let rec = self.vms.entry(v.name.clone()).or_insert_with(|| VmRecord {
                name: v.name.clone(),
                host: v.host.clone(),
                first_seen_s: at,
                last_seen_s: at,
            });
            rec.host = v.host.clone();
            rec.last_seen_s = at;
            if let Some(s) = v.sample {
                let series = self.samples.entry(SeriesKey::vm(&v.name)).or_default();
                series.insert(at.to_bits(), s.stored());
            }
        }
        self.append(&look.journal);
    }

    /// A stored result with its move's columns (a result's move is always stored).
    fn migration_row(&self, r: &MigrationResult) -> Option<MigrationRow> {
        let (_, m) = self.moves.get(&r.move_id)?;
        Some(MigrationRow {
            move_id: r.move_id.clone(),
            plan_id: m.plan_id.clone(),
            vm: m.vm.clone(),
            from_host: m.from_host.clone(),
            to_host: m.to_host.clone(),
            move_state: m.state.clone(),
            at_s: r.at_s,
            record: r.body.clone(),
        })
    }

    fn append(&mut self, entries: &[JournalEntry]) {
        for e in entries {
            let seq = self.journal.len() as u64 + 1;
            let mut entry = e.clone();
            entry.at_s += 0.0;
            self.journal.push(JournalRow { seq, entry });
        }
    }

    fn order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order
    }

    fn history(&self, series: &SeriesKey, since_s: f64) -> History {
        let minutes = self
            .rollups
            .get(series)
            .into_iter()
            .flat_map(|r| r.values())
            .map(|(r, _)| *r)
            .filter(|r| r.start_s > since_s - 60.0)
            .collect();
        let seconds = self
            .samples
            .get(series)
            .into_iter()
            .flat_map(|s| s.iter())
            .map(|(t, s)| Point {
                at_s: f64::from_bits(*t),
                sample: *s,
            })
            .filter(|p| p.at_s >= since_s)
            .collect();
        History { minutes, seconds }
    }

    fn check_step(&self, step: &StepRecord) -> Result<()> {
        let plan_known =
            |id: &str| self.plans.contains_key(id) || step.plans.iter().any(|p| p.id == id);
        for m in &step.moves {
            if !plan_known(&m.plan_id) {
                return Err(invalid(
                    "move",
                    format!(
                        "move {} names plan {}, which is not stored",
                        m.id, m.plan_id
                    ),
                ));
            }
        }
        for plan in step.decision_plans() {
            if !plan_known(plan) {
                return Err(invalid(
                    "decision",
                    format!("the decision names plan {plan}, which is not stored"),
                ));
            }
        }
        Ok(())
    }

    fn apply_step(&mut self, step: &StepRecord, at: f64) {
        self.control = Some(SavedState {
            at_s: at,
            state: step.state.clone(),
        });
        self.append(&step.journal);
        for p in &step.plans {
            let mut row = p.clone();
            row.created_s += 0.0;
            match self.plans.get_mut(&p.id) {
                Some((_, old, _)) => {
                    row.created_s = old.created_s;
                    *old = row;
                }
                None => {
                    let order = self.order();
                    self.plans.insert(p.id.clone(), (order, row, None));
                }
            }
        }
        for m in &step.moves {
            let old = self.moves.get(&m.id).map(|(_, r)| r.state.clone());
            if old.as_deref() != Some(m.state.as_str()) {
                self.transitions.push(Transition {
                    move_id: m.id.clone(),
                    from_state: old,
                    to_state: m.state.clone(),
                    at_s: at,
                    detail: m.detail.clone(),
                });
            }
            let order = match self.moves.get(&m.id) {
                Some((order, _)) => *order,
                None => self.order(),
            };
            self.moves.insert(m.id.clone(), (order, m.clone()));
        }
        let named = step.decision_plans();
        if let Some(d) = step.decision.as_ref().filter(|_| !named.is_empty()) {
            self.next_decision += 1;
            let id = self.next_decision;
            self.decisions.insert(id, (d.now_s + 0.0, d.clone()));
            for plan in named {
                if let Some((_, _, decision)) = self.plans.get_mut(plan) {
                    *decision = Some(id);
                }
            }
        }
    }

    fn compact(&mut self, now: f64, r: Retention) -> Compacted {
        let cuts = r.cuts(now);
        let mut done = Compacted::default();
        for (key, samples) in &mut self.samples {
            let keep = samples.split_off(&cuts.raw_before.max(0.0).to_bits());
            let old = std::mem::replace(samples, keep);
            done.samples_rolled += old.len() as u64;
            let mut minutes: BTreeMap<i64, Minute> = BTreeMap::new();
            for (t, s) in old {
                minutes
                    .entry(minute_of(f64::from_bits(t)))
                    .or_default()
                    .add(&s);
            }
            let rollups = self.rollups.entry(key.clone()).or_default();
            for (start, minute) in minutes {
                let new = (minute.rollup(start), minute.dirty_samples());
                let merged = match rollups.get(&start) {
                    Some(old) => merge(*old, new),
                    None => new,
                };
                rollups.insert(start, merged);
                done.minutes_written += 1;
            }
        }
        for rollups in self.rollups.values_mut() {
            let before = rollups.len();
            rollups.retain(|start, _| (*start as f64) >= cuts.rollups_before);
            done.minutes_deleted += (before - rollups.len()) as u64;
        }
        let gone: Vec<u64> = self
            .decisions
            .iter()
            .filter(|(_, (at, _))| *at < cuts.decisions_before)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.decisions.remove(id);
        }
        for (_, _, d) in self.plans.values_mut() {
            if d.is_some_and(|d| gone.contains(&d)) {
                *d = None;
            }
        }
        done.decisions_deleted = gone.len() as u64;
        done
    }
}

/// A late minute merged into the one already rolled up: means weighted by their sample
/// counts (the dirty rate's by the samples that had one), maxima. Each side comes with its
/// dirty-rate sample count. The SQLite store merges in SQL the same way.
fn merge((a, da): (Rollup, u32), (b, db): (Rollup, u32)) -> (Rollup, u32) {
    let mm = |x: MeanMax, y: MeanMax, nx: u32, ny: u32| {
        let (nx, ny) = (f64::from(nx), f64::from(ny));
        MeanMax {
            mean: (x.mean * nx + y.mean * ny) / (nx + ny),
            max: x.max.max(y.max),
        }
    };
    let whole = |x: MeanMax, y: MeanMax, nx: u32, ny: u32| {
        let m = mm(x, y, nx, ny);
        MeanMax {
            mean: m.mean.round(),
            ..m
        }
    };
    let (na, nb) = (a.samples, b.samples);
    let rollup = Rollup {
        start_s: a.start_s,
        samples: na + nb,
        load: mm(a.load, b.load, na, nb),
        cpu_cores: mm(a.cpu_cores, b.cpu_cores, na, nb),
        memory_bytes: whole(a.memory_bytes, b.memory_bytes, na, nb),
        dirty_bps: match (a.dirty_bps, b.dirty_bps) {
            (Some(x), Some(y)) => Some(whole(x, y, da, db)),
            (x, y) => x.or(y),
        },
        rx_bps: whole(a.rx_bps, b.rx_bps, na, nb),
        tx_bps: whole(a.tx_bps, b.tx_bps, na, nb),
    };
    (rollup, da + db)
}

fn take<T: Clone>(rows: impl Iterator<Item = T>, limit: u32) -> Vec<T> {
    rows.take(bounded(limit) as usize).collect()
}

impl Store for MemoryStore {
    fn location(&self) -> &str {
        LOCATION
    }

    fn store_id(&self) -> Result<String> {
        Ok(self.lock().store_id.clone())
    }

    fn add_host(&self, spec: &HostSpec, at_s: f64) -> Result<()> {
        validate::host(LOCATION, spec, at_s)?;
        let mut inner = self.write("add a host")?;
        if inner
            .hosts
            .get(&spec.name)
            .is_some_and(|h| h.removed_s.is_none())
        {
            return Err(StoreError::HostExists {
                path: LOCATION.into(),
                name: spec.name.clone(),
            });
        }
        put_host(&mut inner, spec, at_s + 0.0);
        Ok(())
    }

    fn put_host(&self, spec: &HostSpec, at_s: f64) -> Result<()> {
        validate::host(LOCATION, spec, at_s)?;
        let mut inner = self.write("add a host")?;
        put_host(&mut inner, spec, at_s + 0.0);
        Ok(())
    }

    fn remove_host(&self, name: &str, at_s: f64) -> Result<()> {
        let at = validate::time(LOCATION, "host", "time", at_s)?;
        let mut inner = self.write("remove a host")?;
        let Some(h) = inner.hosts.get_mut(name).filter(|h| h.removed_s.is_none()) else {
            return Err(StoreError::NotFound {
                path: LOCATION.into(),
                table: "host",
                key: format!("host {name} in the inventory"),
            });
        };
        h.removed_s = Some(at);
        h.reachable = false;
        inner.append(&[host_event(at, name, "removed".into())]);
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRecord>> {
        Ok(self.lock().hosts.values().cloned().collect())
    }

    fn vms(&self) -> Result<Vec<VmRecord>> {
        Ok(self.lock().vms.values().cloned().collect())
    }

    fn record_look(&self, look: &Look) -> Result<()> {
        validate::look(LOCATION, look)?;
        let mut inner = self.write("record a look")?;
        inner.check_look(look)?;
        inner.apply_look(look);
        Ok(())
    }

    fn record_look_and_step(&self, look: &Look, step: &StepRecord) -> Result<()> {
        validate::look(LOCATION, look)?;
        validate::step(LOCATION, step)?;
        let mut inner = self.write("record a look and its step")?;
        inner.check_look(look)?;
        inner.check_step(step)?;
        inner.apply_look(look);
        inner.apply_step(step, step.at_s + 0.0);
        Ok(())
    }

    fn history(&self, series: &SeriesKey, since_s: f64) -> Result<History> {
        validate::bound(LOCATION, "sample", "history start", Some(since_s))?;
        Ok(self.lock().history(series, since_s))
    }

    fn histories(&self, kind: SeriesKind, since_s: f64) -> Result<BTreeMap<String, History>> {
        validate::bound(LOCATION, "sample", "history start", Some(since_s))?;
        let inner = self.lock();
        let keys: BTreeSet<&SeriesKey> = inner.samples.keys().chain(inner.rollups.keys()).collect();
        Ok(keys
            .into_iter()
            .filter(|k| k.kind == kind)
            .map(|k| (k.name.clone(), inner.history(k, since_s)))
            .collect())
    }

    fn compact(&self, now_s: f64) -> Result<Compacted> {
        let now = validate::time(LOCATION, "sample", "compaction time", now_s)?;
        let mut inner = self.write("compact")?;
        Ok(inner.compact(now, self.retention))
    }

    fn save_step(&self, step: &StepRecord) -> Result<()> {
        validate::step(LOCATION, step)?;
        let mut inner = self.write("save a step")?;
        inner.check_step(step)?;
        inner.apply_step(step, step.at_s + 0.0);
        Ok(())
    }

    fn control_state(&self) -> Result<Option<SavedState>> {
        Ok(self.lock().control.clone())
    }

    fn append_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        validate::journal(LOCATION, entries)?;
        self.write("append to the journal")?.append(entries);
        Ok(())
    }

    fn plan(&self, id: &str) -> Result<Option<PlanRow>> {
        Ok(self.lock().plans.get(id).map(|(_, p, _)| p.clone()))
    }

    fn plans(&self, q: &PlanQuery) -> Result<Vec<PlanRow>> {
        validate::bound(LOCATION, "plan", "since", q.since_s)?;
        let inner = self.lock();
        let mut rows: Vec<&(u64, PlanRow, Option<u64>)> = inner
            .plans
            .values()
            .filter(|(_, p, _)| q.state.as_ref().is_none_or(|s| *s == p.state))
            .filter(|(_, p, _)| q.since_s.is_none_or(|t| p.created_s >= t))
            .collect();
        rows.sort_by(|a, b| b.1.created_s.total_cmp(&a.1.created_s).then(b.0.cmp(&a.0)));
        Ok(take(rows.into_iter().map(|(_, p, _)| p.clone()), q.limit))
    }

    fn moves(&self, q: &MoveQuery) -> Result<Vec<MoveRow>> {
        let inner = self.lock();
        let mut rows: Vec<&(u64, MoveRow)> = inner
            .moves
            .values()
            .filter(|(_, m)| q.plan_id.as_ref().is_none_or(|p| *p == m.plan_id))
            .filter(|(_, m)| q.vm.as_ref().is_none_or(|v| *v == m.vm))
            .filter(|(_, m)| q.state.as_ref().is_none_or(|s| *s == m.state))
            .collect();
        rows.sort_by_key(|(order, _)| *order);
        Ok(take(rows.into_iter().map(|(_, m)| m.clone()), q.limit))
    }

    fn transitions(&self, move_id: &str) -> Result<Vec<Transition>> {
        let inner = self.lock();
        Ok(inner
            .transitions
            .iter()
            .filter(|t| t.move_id == move_id)
            .cloned()
            .collect())
    }

    fn export_decision(&self, plan_id: &str) -> Result<Decision> {
        let inner = self.lock();
        let Some((_, _, decision)) = inner.plans.get(plan_id) else {
            return Err(StoreError::NotFound {
                path: LOCATION.into(),
                table: "plan",
                key: format!("plan {plan_id}"),
            });
        };
        let Some((_, d)) = decision.and_then(|id| inner.decisions.get(&id)) else {
            return Err(StoreError::NoDecision {
                path: LOCATION.into(),
                plan: plan_id.to_string(),
            });
        };
        Ok(d.clone())
    }

    fn put_result(&self, result: &MigrationResult) -> Result<()> {
        validate::name(LOCATION, "migration_result", "move id", &result.move_id)?;
        let at = validate::time(LOCATION, "migration_result", "time", result.at_s)?;
        let mut inner = self.write("store a migration result")?;
        if !inner.moves.contains_key(&result.move_id) {
            return Err(invalid(
                "migration_result",
                format!("a result for move {}, which is not stored", result.move_id),
            ));
        }
        let mut result = result.clone();
        result.at_s = at;
        inner.results.insert(result.move_id.clone(), result);
        Ok(())
    }

    fn migration(&self, move_id: &str) -> Result<Option<MigrationRow>> {
        let inner = self.lock();
        Ok(inner
            .results
            .get(move_id)
            .and_then(|r| inner.migration_row(r)))
    }

    fn migrations(&self, q: &MigrationQuery) -> Result<Vec<MigrationRow>> {
        let inner = self.lock();
        let mut rows: Vec<MigrationRow> = inner
            .results
            .values()
            .filter_map(|r| inner.migration_row(r))
            .filter(|r| q.vm.as_ref().is_none_or(|v| *v == r.vm))
            .collect();
        rows.sort_by(|a, b| b.at_s.total_cmp(&a.at_s).then(b.move_id.cmp(&a.move_id)));
        Ok(take(rows.into_iter(), q.limit))
    }

    fn settings(&self) -> Result<Option<SettingsRecord>> {
        Ok(self.lock().settings.clone())
    }

    fn put_settings(
        &self,
        settings: &ControlSettings,
        at_s: f64,
        expected: Option<u64>,
    ) -> Result<u64> {
        let at = validate::time(LOCATION, "settings", "time", at_s)?;
        let mut inner = self.write("store the settings")?;
        let found = inner.settings.as_ref().map_or(0, |s| s.version);
        if let Some(expected) = expected.filter(|e| *e != found) {
            return Err(StoreError::SettingsConflict {
                path: LOCATION.into(),
                expected,
                found,
            });
        }
        let version = found + 1;
        inner.settings = Some(SettingsRecord {
            version,
            updated_s: at,
            settings: settings.clone(),
        });
        inner.append(&[settings_event(at, version)]);
        Ok(version)
    }

    fn journal(&self, q: &JournalQuery) -> Result<Vec<JournalRow>> {
        validate::bound(LOCATION, "journal", "since", q.since_s)?;
        validate::bound(LOCATION, "journal", "until", q.until_s)?;
        let inner = self.lock();
        let rows = inner.journal.iter().filter(|r| {
            let e = &r.entry;
            q.since_s.is_none_or(|t| e.at_s >= t)
                && q.until_s.is_none_or(|t| e.at_s < t)
                && q.subject.as_ref().is_none_or(|s| *s == e.subject)
                && q.id.as_ref().is_none_or(|i| *i == e.id)
                && q.after_seq.is_none_or(|s| r.seq > s)
                && q.before_seq.is_none_or(|s| r.seq < s)
        });
        Ok(if q.newest_first {
            take(rows.rev().cloned(), q.limit)
        } else {
            take(rows.cloned(), q.limit)
        })
    }
}

/// Adds or updates a host as the SQLite store's upsert does.
fn put_host(inner: &mut Inner, spec: &HostSpec, at: f64) {
    let what = match inner.hosts.get_mut(&spec.name) {
        Some(h) if h.removed_s.is_none() => {
            if h.agent_url == spec.agent_url && h.power == spec.power {
                return;
            }
            h.agent_url = spec.agent_url.clone();
            h.power = spec.power;
            format!("updated: agent {}", spec.agent_url)
        }
        Some(h) => {
            h.agent_url = spec.agent_url.clone();
            h.power = spec.power;
            h.added_s = at;
            h.removed_s = None;
            h.reachable = false;
            format!("added: agent {}", spec.agent_url)
        }
        None => {
            inner.hosts.insert(
                spec.name.clone(),
                HostRecord {
                    name: spec.name.clone(),
                    agent_url: spec.agent_url.clone(),
                    power: spec.power,
                    added_s: at,
                    removed_s: None,
                    reachable: false,
                    last_seen_s: None,
                },
            );
            format!("added: agent {}", spec.agent_url)
        }
    };
    inner.append(&[host_event(at, &spec.name, what)]);
}
