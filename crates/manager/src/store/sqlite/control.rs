//! The control loop's records in SQLite: a step's state, journal, plans, moves and decision in
//! one transaction; reads of each; settings; migration results.

use super::{all_rows, get_u64, packed, sql};
use crate::store::error::{Result, StoreError};
use crate::store::records::{
    bounded, settings_event, JournalEntry, JournalQuery, JournalRow, MoveQuery, MoveRow, PlanQuery,
    PlanRow, SavedState, SettingsRecord, StepRecord, Transition,
};
use crate::store::types::Json;
use crate::store::validate;
use drover_core::control::{ControlSettings, Decision};
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn invalid(path: &str, table: &'static str, what: String) -> StoreError {
    StoreError::Invalid {
        path: path.to_string(),
        table,
        what,
    }
}

/// A typed value as the JSON text a column keeps.
fn text<T: Serialize>(value: &T) -> Result<String> {
    Json::of(value).map(Json::into_string)
}

/// A column's JSON text read back as a `T`; text that is not one was edited or damaged.
fn typed<T: DeserializeOwned>(path: &str, table: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        path: path.to_string(),
        table,
        what: format!("a body that is not a {}: {e}", std::any::type_name::<T>()),
    })
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
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "control", "begin a step"))?;
    write_step(&tx, path, step)?;
    tx.commit().map_err(sql(path, "control", "commit a step"))
}

/// Writes a step inside `tx` (the caller validated it and commits).
pub(super) fn write_step(tx: &Transaction<'_>, path: &str, step: &StepRecord) -> Result<()> {
    let at = step.at_s + 0.0;
    tx.execute(
        "INSERT INTO control (id, at_s, body) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET at_s = excluded.at_s, body = excluded.body",
        params![at, text(&step.state)?],
    )
    .map_err(sql(path, "control", "save the control state"))?;
    insert_journal(tx, path, &step.journal)?;
    upsert_plans(tx, path, step, at)?;
    upsert_moves(tx, path, step, at)?;
    if let Some(d) = &step.decision {
        insert_decision(tx, path, d, &step.decision_plans())?;
    }
    Ok(())
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
            text(&p.body)?
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
                text(&m.body)?
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

fn insert_decision(tx: &Transaction<'_>, path: &str, d: &Decision, plans: &[&str]) -> Result<()> {
    if plans.is_empty() {
        return Ok(());
    }
    let err = sql(path, "decision", "store a decision");
    tx.execute(
        "INSERT INTO decision (at_s, observation, state_before, settings, format, output, packed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
        params![
            d.now_s + 0.0,
            packed::pack(&text(&d.observation)?),
            packed::pack(&text(&d.state_before)?),
            text(&d.settings)?,
            d.format,
            text(&d.output)?
        ],
    )
    .map_err(&err)?;
    let id = tx.last_insert_rowid();
    let mut st = tx
        .prepare_cached("UPDATE plan SET decision_id = ?1 WHERE id = ?2")
        .map_err(&err)?;
    for plan in plans {
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
    let row: Option<(f64, String)> = conn
        .query_row("SELECT at_s, body FROM control WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sql(path, "control", "read the control state"))?;
    row.map(|(at_s, body)| {
        Ok(SavedState {
            at_s,
            state: typed(path, "control", &body)?,
        })
    })
    .transpose()
}

const PLAN_COLUMNS: &str = "id, kind, state, host, created_s, body";

/// A plan's columns, with its body still as text (parsed once the statement is done).
type PlanCols = (String, String, String, Option<String>, f64, String);

fn plan_row(path: &str, (id, kind, state, host, created_s, body): PlanCols) -> Result<PlanRow> {
    Ok(PlanRow {
        id,
        kind,
        state,
        host,
        created_s,
        body: typed(path, "plan", &body)?,
    })
}

pub(super) fn plan(conn: &Connection, path: &str, id: &str) -> Result<Option<PlanRow>> {
    let cols = conn
        .prepare_cached(&format!("SELECT {PLAN_COLUMNS} FROM plan WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], |r| PlanCols::try_from(r)).optional())
        .map_err(sql(path, "plan", "read a plan"))?;
    cols.map(|c| plan_row(path, c)).transpose()
}

/// `WHERE` clauses and their values, for queries whose filters are optional (built so that
/// each filter can use its index).
#[derive(Default)]
pub(super) struct Filter {
    clauses: Vec<&'static str>,
    pub(super) values: Vec<Value>,
}

impl Filter {
    pub(super) fn add(&mut self, clause: &'static str, value: Option<Value>) {
        if let Some(v) = value {
            self.clauses.push(clause);
            self.values.push(v);
        }
    }

    pub(super) fn sql(&self) -> String {
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
    let cols = all_rows(
        conn,
        &query,
        params_from_iter(f.values),
        sql(path, "plan", "list plans"),
        |r| PlanCols::try_from(r),
    )?;
    cols.into_iter().map(|c| plan_row(path, c)).collect()
}

pub(super) fn moves(conn: &Connection, path: &str, q: &MoveQuery) -> Result<Vec<MoveRow>> {
    let mut f = Filter::default();
    f.add("plan_id = ?", q.plan_id.clone().map(Value::Text));
    f.add("vm = ?", q.vm.clone().map(Value::Text));
    f.add("state = ?", q.state.clone().map(Value::Text));
    f.values.push(Value::Integer(i64::from(bounded(q.limit))));
    let query = format!(
        "SELECT id, plan_id, vm, from_host, to_host, state, detail, body
         FROM move {} ORDER BY rowid LIMIT ?",
        f.sql()
    );
    /// A move's columns, with its body still as text (parsed once the statement is done).
    type MoveCols = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
    );
    let cols = all_rows(
        conn,
        &query,
        params_from_iter(f.values),
        sql(path, "move", "list moves"),
        |r| MoveCols::try_from(r),
    )?;
    cols.into_iter()
        .map(
            |(id, plan_id, vm, from_host, to_host, state, detail, body)| {
                Ok(MoveRow {
                    id,
                    plan_id,
                    vm,
                    from_host,
                    to_host,
                    state,
                    detail,
                    body: typed(path, "move", &body)?,
                })
            },
        )
        .collect()
}

pub(super) fn transitions(conn: &Connection, path: &str, move_id: &str) -> Result<Vec<Transition>> {
    all_rows(
        conn,
        "SELECT move_id, from_state, to_state, at_s, detail FROM move_transition
         WHERE move_id = ?1 ORDER BY seq",
        [move_id],
        sql(path, "move_transition", "read transitions"),
        |r| {
            Ok(Transition {
                move_id: r.get(0)?,
                from_state: r.get(1)?,
                to_state: r.get(2)?,
                at_s: r.get(3)?,
                detail: r.get(4)?,
            })
        },
    )
}

/// A decision's columns as stored (the observation and the memory packed or not).
struct DecisionRow {
    at_s: f64,
    observation: Vec<u8>,
    state_before: Vec<u8>,
    settings: String,
    format: u32,
    output: String,
    packed: bool,
}

pub(super) fn export_decision(conn: &Connection, path: &str, plan_id: &str) -> Result<Decision> {
    // None: no such plan; Some(None): the plan's decision is gone (pruned) or was stored
    // before decisions kept their output.
    let row: Option<Option<DecisionRow>> = conn
        .query_row(
            "SELECT d.at_s, d.observation, d.state_before, d.settings, d.format, d.output,
                    d.packed
             FROM plan p LEFT JOIN decision d ON d.id = p.decision_id WHERE p.id = ?1",
            [plan_id],
            |r| {
                let Some(output) = r.get::<_, Option<String>>(5)? else {
                    return Ok(None);
                };
                Ok(Some(DecisionRow {
                    at_s: r.get(0)?,
                    observation: column_bytes(r, 1)?,
                    state_before: column_bytes(r, 2)?,
                    settings: r.get(3)?,
                    format: r.get(4)?,
                    output,
                    packed: r.get::<_, i64>(6)? == 1,
                }))
            },
        )
        .optional()
        .map_err(sql(path, "decision", "read a decision"))?;
    let d = match row {
        None => {
            return Err(StoreError::NotFound {
                path: path.to_string(),
                table: "plan",
                key: format!("plan {plan_id}"),
            })
        }
        Some(None) => {
            return Err(StoreError::NoDecision {
                path: path.to_string(),
                plan: plan_id.to_string(),
            })
        }
        Some(Some(d)) => d,
    };
    let big = |bytes: &[u8]| -> Result<String> {
        let text = if d.packed {
            packed::unpack(bytes)
        } else {
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        };
        text.map_err(|what| StoreError::Corrupt {
            path: path.to_string(),
            table: "decision",
            what,
        })
    };
    Ok(Decision {
        format: d.format,
        now_s: d.at_s,
        observation: typed(path, "decision", &big(&d.observation)?)?,
        state_before: typed(path, "decision", &big(&d.state_before)?)?,
        settings: typed(path, "decision", &d.settings)?,
        output: typed(path, "decision", &d.output)?,
    })
}

/// A column's bytes, text or blob alike.
fn column_bytes(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<u8>> {
    use rusqlite::types::ValueRef;
    match r.get_ref(i)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(b.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "decision column".into(),
            other.data_type(),
        )),
    }
}

pub(super) fn settings(conn: &Connection, path: &str) -> Result<Option<SettingsRecord>> {
    let row: Option<(u64, f64, String)> = conn
        .query_row(
            "SELECT version, updated_s, body FROM settings WHERE id = 1",
            [],
            |r| Ok((get_u64(r, 0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql(path, "settings", "read the settings"))?;
    row.map(|(version, updated_s, body)| {
        Ok(SettingsRecord {
            version,
            updated_s,
            settings: typed(path, "settings", &body)?,
        })
    })
    .transpose()
}

pub(super) fn put_settings(
    conn: &mut Connection,
    path: &str,
    settings: &ControlSettings,
    at_s: f64,
    expected: Option<u64>,
) -> Result<u64> {
    let at = validate::time(path, "settings", "time", at_s)?;
    let body = text(settings)?;
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
        params![i64::try_from(version).unwrap_or(i64::MAX), at, body],
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
    all_rows(
        conn,
        &query,
        params_from_iter(f.values),
        sql(path, "journal", "read the journal"),
        |r| {
            Ok(JournalRow {
                seq: get_u64(r, 0)?,
                entry: JournalEntry {
                    at_s: r.get(1)?,
                    subject: r.get(2)?,
                    id: r.get(3)?,
                    what: r.get(4)?,
                },
            })
        },
    )
}
