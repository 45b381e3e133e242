//! The control loop's records in SQLite: a step's state, journal, plans, moves and decision in
//! one transaction; reads of each; settings; migration results.

use super::{get_u64, sql};
use crate::store::error::{Result, StoreError};
use crate::store::records::{
    bounded, settings_event, Decision, DecisionInput, JournalEntry, JournalQuery, JournalRow,
    MigrationResult, MoveQuery, MoveRow, PlanQuery, PlanRow, SavedState, SettingsRecord,
    StepRecord, Transition,
};
use crate::store::types::Json;
use crate::store::validate;
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, OptionalExtension, Row, Transaction, TransactionBehavior,
};

fn invalid(path: &str, table: &'static str, what: String) -> StoreError {
    StoreError::Invalid {
        path: path.to_string(),
        table,
        what,
    }
}

/// Appends `entries` to the journal inside the caller's transaction.
pub(super) fn insert_journal(
    tx: &Transaction<'_>,
    path: &str,
    entries: &[JournalEntry],
) -> Result<()> {
    let err = sql(path, "journal", "append to the journal");
    let mut st = tx
        .prepare_cached(
            "INSERT INTO journal (at_s, subject, subject_id, what) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(&err)?;
    for e in entries {
        st.execute(params![e.at_s + 0.0, e.subject, e.id, e.what])
            .map_err(&err)?;
    }
    Ok(())
}

pub(super) fn append_journal(
    conn: &mut Connection,
    path: &str,
    entries: &[JournalEntry],
) -> Result<()> {
    validate::journal(path, entries)?;
    let err = sql(path, "journal", "append to the journal");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    insert_journal(&tx, path, entries)?;
    tx.commit().map_err(&err)
}

/// Stores a step: all of it in one transaction, or nothing.
pub(super) fn save_step(conn: &mut Connection, path: &str, step: &StepRecord) -> Result<()> {
    validate::step(path, step)?;
    let at = step.at_s + 0.0;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "control", "begin a step"))?;
    tx.execute(
        "INSERT INTO control (id, at_s, body) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET at_s = excluded.at_s, body = excluded.body",
        params![at, step.state.as_str()],
    )
    .map_err(sql(path, "control", "save the control state"))?;
    insert_journal(&tx, path, &step.journal)?;
    upsert_plans(&tx, path, step, at)?;
    upsert_moves(&tx, path, step, at)?;
    if let Some(d) = &step.decision {
        insert_decision(&tx, path, d, at)?;
    }
    tx.commit().map_err(sql(path, "control", "commit a step"))
}

fn upsert_plans(tx: &Transaction<'_>, path: &str, step: &StepRecord, at: f64) -> Result<()> {
    let err = sql(path, "plan", "store a plan");
    let mut st = tx
        .prepare_cached(
            "INSERT INTO plan (id, kind, state, host, created_s, updated_s, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state,
                 host = excluded.host, updated_s = excluded.updated_s, body = excluded.body",
        )
        .map_err(&err)?;
    for p in &step.plans {
        st.execute(params![
            p.id,
            p.kind,
            p.state,
            p.host,
            p.created_s + 0.0,
            at,
            p.body.as_str()
        ])
        .map_err(&err)?;
    }
    Ok(())
}

fn upsert_moves(tx: &Transaction<'_>, path: &str, step: &StepRecord, at: f64) -> Result<()> {
    let err = sql(path, "move", "store a move");
    let mut plan_known = tx
        .prepare_cached("SELECT 1 FROM plan WHERE id = ?1")
        .map_err(&err)?;
    let mut old_state = tx
        .prepare_cached("SELECT state FROM move WHERE id = ?1")
        .map_err(&err)?;
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO move (id, plan_id, vm, from_host, to_host, state, detail, updated_s, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET plan_id = excluded.plan_id, vm = excluded.vm,
                 from_host = excluded.from_host, to_host = excluded.to_host,
                 state = excluded.state, detail = excluded.detail,
                 updated_s = excluded.updated_s, body = excluded.body",
        )
        .map_err(&err)?;
    let mut transition = tx
        .prepare_cached(
            "INSERT INTO move_transition (move_id, from_state, to_state, at_s, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql(path, "move_transition", "record a transition"))?;
    for m in &step.moves {
        let known: Option<i64> = plan_known
            .query_row([&m.plan_id], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        if known.is_none() {
            return Err(invalid(
                path,
                "move",
                format!(
                    "move {} names plan {}, which is not stored",
                    m.id, m.plan_id
                ),
            ));
        }
        let old: Option<String> = old_state
            .query_row([&m.id], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        upsert
            .execute(params![
                m.id,
                m.plan_id,
                m.vm,
                m.from_host,
                m.to_host,
                m.state,
                m.detail,
                at,
                m.body.as_str()
            ])
            .map_err(&err)?;
        if old.as_deref() != Some(m.state.as_str()) {
            transition
                .execute(params![m.id, old, m.state, at, m.detail])
                .map_err(sql(path, "move_transition", "record a transition"))?;
        }
    }
    Ok(())
}

fn insert_decision(tx: &Transaction<'_>, path: &str, d: &DecisionInput, at: f64) -> Result<()> {
    if d.plans.is_empty() {
        return Ok(());
    }
    let err = sql(path, "decision", "store a decision");
    tx.execute(
        "INSERT INTO decision (at_s, observation, state_before, settings)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            at,
            d.observation.as_str(),
            d.state_before.as_str(),
            d.settings.as_str()
        ],
    )
    .map_err(&err)?;
    let id = tx.last_insert_rowid();
    let mut st = tx
        .prepare_cached("UPDATE plan SET decision_id = ?1 WHERE id = ?2")
        .map_err(&err)?;
    for plan in &d.plans {
        if st.execute(params![id, plan]).map_err(&err)? == 0 {
            return Err(invalid(
                path,
                "decision",
                format!("the decision names plan {plan}, which is not stored"),
            ));
        }
    }
    Ok(())
}

pub(super) fn control_state(conn: &Connection, path: &str) -> Result<Option<SavedState>> {
    conn.query_row("SELECT at_s, body FROM control WHERE id = 1", [], |r| {
        Ok(SavedState {
            at_s: r.get(0)?,
            state: Json::stored(r.get(1)?),
        })
    })
    .optional()
    .map_err(sql(path, "control", "read the control state"))
}

const PLAN_COLUMNS: &str = "id, kind, state, host, created_s, body";

fn plan_row(r: &Row<'_>) -> rusqlite::Result<PlanRow> {
    Ok(PlanRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        state: r.get(2)?,
        host: r.get(3)?,
        created_s: r.get(4)?,
        body: Json::stored(r.get(5)?),
    })
}

pub(super) fn plan(conn: &Connection, path: &str, id: &str) -> Result<Option<PlanRow>> {
    conn.prepare_cached(&format!("SELECT {PLAN_COLUMNS} FROM plan WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], plan_row).optional())
        .map_err(sql(path, "plan", "read a plan"))
}

/// `WHERE` clauses and their values, for queries whose filters are optional (built so that
/// each filter can use its index).
#[derive(Default)]
struct Filter {
    clauses: Vec<&'static str>,
    values: Vec<Value>,
}

impl Filter {
    fn add(&mut self, clause: &'static str, value: Option<Value>) {
        if let Some(v) = value {
            self.clauses.push(clause);
            self.values.push(v);
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn seq_value(seq: u64) -> Value {
    Value::Integer(i64::try_from(seq).unwrap_or(i64::MAX))
}

pub(super) fn plans(conn: &Connection, path: &str, q: &PlanQuery) -> Result<Vec<PlanRow>> {
    validate::bound(path, "plan", "since", q.since_s)?;
    let mut f = Filter::default();
    f.add("state = ?", q.state.clone().map(Value::Text));
    f.add("created_s >= ?", q.since_s.map(Value::Real));
    f.values.push(Value::Integer(i64::from(bounded(q.limit))));
    let query = format!(
        "SELECT {PLAN_COLUMNS} FROM plan {} ORDER BY created_s DESC, rowid DESC LIMIT ?",
        f.sql()
    );
    let err = sql(path, "plan", "list plans");
    let mut st = conn.prepare_cached(&query).map_err(&err)?;
    let rows = st
        .query_map(params_from_iter(f.values), plan_row)
        .map_err(&err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(&err)
}

pub(super) fn moves(conn: &Connection, path: &str, q: &MoveQuery) -> Result<Vec<MoveRow>> {
    let mut f = Filter::default();
    f.add("plan_id = ?", q.plan_id.clone().map(Value::Text));
    f.add("vm = ?", q.vm.clone().map(Value::Text));
    f.add("state = ?", q.state.clone().map(Value::Text));
    f.values.push(Value::Integer(i64::from(bounded(q.limit))));
    let query = format!(
        "SELECT id, plan_id, vm, from_host, to_host, state, body, detail
         FROM move {} ORDER BY rowid LIMIT ?",
        f.sql()
    );
    let err = sql(path, "move", "list moves");
    let mut st = conn.prepare_cached(&query).map_err(&err)?;
    let rows = st
        .query_map(params_from_iter(f.values), |r| {
            Ok(MoveRow {
                id: r.get(0)?,
                plan_id: r.get(1)?,
                vm: r.get(2)?,
                from_host: r.get(3)?,
                to_host: r.get(4)?,
                state: r.get(5)?,
                body: Json::stored(r.get(6)?),
                detail: r.get(7)?,
            })
        })
        .map_err(&err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(&err)
}

pub(super) fn transitions(conn: &Connection, path: &str, move_id: &str) -> Result<Vec<Transition>> {
    let err = sql(path, "move_transition", "read transitions");
    let mut st = conn
        .prepare_cached(
            "SELECT move_id, from_state, to_state, at_s, detail FROM move_transition
             WHERE move_id = ?1 ORDER BY seq",
        )
        .map_err(&err)?;
    let rows = st
        .query_map([move_id], |r| {
            Ok(Transition {
                move_id: r.get(0)?,
                from_state: r.get(1)?,
                to_state: r.get(2)?,
                at_s: r.get(3)?,
                detail: r.get(4)?,
            })
        })
        .map_err(&err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(&err)
}

pub(super) fn export_decision(conn: &Connection, path: &str, plan_id: &str) -> Result<Decision> {
    type DecisionCols = (Option<f64>, Option<String>, Option<String>, Option<String>);
    let row: Option<DecisionCols> = conn
        .query_row(
            "SELECT d.at_s, d.observation, d.state_before, d.settings
             FROM plan p LEFT JOIN decision d ON d.id = p.decision_id WHERE p.id = ?1",
            [plan_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(sql(path, "decision", "read a decision"))?;
    match row {
        None => Err(StoreError::NotFound {
            path: path.to_string(),
            table: "plan",
            key: format!("plan {plan_id}"),
        }),
        Some((Some(at_s), Some(obs), Some(before), Some(settings))) => Ok(Decision {
            plan_id: plan_id.to_string(),
            at_s,
            observation: Json::stored(obs),
            state_before: Json::stored(before),
            settings: Json::stored(settings),
        }),
        Some(_) => Err(StoreError::NoDecision {
            path: path.to_string(),
            plan: plan_id.to_string(),
        }),
    }
}

pub(super) fn put_result(conn: &mut Connection, path: &str, res: &MigrationResult) -> Result<()> {
    validate::name(path, "migration_result", "move id", &res.move_id)?;
    validate::time(path, "migration_result", "time", res.at_s)?;
    let err = sql(path, "migration_result", "store a migration result");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let known: Option<i64> = tx
        .query_row("SELECT 1 FROM move WHERE id = ?1", [&res.move_id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(&err)?;
    if known.is_none() {
        return Err(invalid(
            path,
            "migration_result",
            format!("a result for move {}, which is not stored", res.move_id),
        ));
    }
    tx.execute(
        "INSERT INTO migration_result (move_id, at_s, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (move_id) DO UPDATE SET at_s = excluded.at_s, body = excluded.body",
        params![res.move_id, res.at_s + 0.0, res.body.as_str()],
    )
    .map_err(&err)?;
    tx.commit().map_err(&err)
}

pub(super) fn result(
    conn: &Connection,
    path: &str,
    move_id: &str,
) -> Result<Option<MigrationResult>> {
    conn.query_row(
        "SELECT move_id, at_s, body FROM migration_result WHERE move_id = ?1",
        [move_id],
        |r| {
            Ok(MigrationResult {
                move_id: r.get(0)?,
                at_s: r.get(1)?,
                body: Json::stored(r.get(2)?),
            })
        },
    )
    .optional()
    .map_err(sql(path, "migration_result", "read a migration result"))
}

pub(super) fn settings(conn: &Connection, path: &str) -> Result<Option<SettingsRecord>> {
    conn.query_row(
        "SELECT version, updated_s, body FROM settings WHERE id = 1",
        [],
        |r| {
            Ok(SettingsRecord {
                version: get_u64(r, 0)?,
                updated_s: r.get(1)?,
                body: Json::stored(r.get(2)?),
            })
        },
    )
    .optional()
    .map_err(sql(path, "settings", "read the settings"))
}

pub(super) fn put_settings(
    conn: &mut Connection,
    path: &str,
    body: &Json,
    at_s: f64,
    expected: Option<u64>,
) -> Result<u64> {
    let at = validate::time(path, "settings", "time", at_s)?;
    let err = sql(path, "settings", "store the settings");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let found: u64 = tx
        .query_row("SELECT version FROM settings WHERE id = 1", [], |r| {
            get_u64(r, 0)
        })
        .optional()
        .map_err(&err)?
        .unwrap_or(0);
    if let Some(expected) = expected.filter(|e| *e != found) {
        return Err(StoreError::SettingsConflict {
            path: path.to_string(),
            expected,
            found,
        });
    }
    let version = found + 1;
    tx.execute(
        "INSERT INTO settings (id, version, updated_s, body) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version,
             updated_s = excluded.updated_s, body = excluded.body",
        params![
            i64::try_from(version).unwrap_or(i64::MAX),
            at,
            body.as_str()
        ],
    )
    .map_err(&err)?;
    insert_journal(&tx, path, &[settings_event(at, version)])?;
    tx.commit().map_err(&err)?;
    Ok(version)
}

pub(super) fn journal(conn: &Connection, path: &str, q: &JournalQuery) -> Result<Vec<JournalRow>> {
    validate::bound(path, "journal", "since", q.since_s)?;
    validate::bound(path, "journal", "until", q.until_s)?;
    let mut f = Filter::default();
    f.add("at_s >= ?", q.since_s.map(Value::Real));
    f.add("at_s < ?", q.until_s.map(Value::Real));
    f.add("subject = ?", q.subject.clone().map(Value::Text));
    f.add("subject_id = ?", q.id.clone().map(Value::Text));
    f.add("seq > ?", q.after_seq.map(seq_value));
    f.add("seq < ?", q.before_seq.map(seq_value));
    f.values.push(Value::Integer(i64::from(bounded(q.limit))));
    let order = if q.newest_first { "DESC" } else { "ASC" };
    let query = format!(
        "SELECT seq, at_s, subject, subject_id, what FROM journal {} ORDER BY seq {order} LIMIT ?",
        f.sql()
    );
    let err = sql(path, "journal", "read the journal");
    let mut st = conn.prepare_cached(&query).map_err(&err)?;
    let rows = st
        .query_map(params_from_iter(f.values), |r| {
            Ok(JournalRow {
                seq: get_u64(r, 0)?,
                entry: JournalEntry {
                    at_s: r.get(1)?,
                    subject: r.get(2)?,
                    id: r.get(3)?,
                    what: r.get(4)?,
                },
            })
        })
        .map_err(&err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(&err)
}
