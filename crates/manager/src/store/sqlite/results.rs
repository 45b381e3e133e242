//! Migration results in SQLite: the source agent's final record of each move's migration,
//! keyed by the move's id, and read back with the move's columns.

use super::control::Filter;
use super::{all_rows, sql};
use crate::store::error::{Result, StoreError};
use crate::store::records::{bounded, MigrationQuery, MigrationResult, MigrationRow};
use crate::store::types::Json;
use crate::store::validate;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

/// The columns of a [`MigrationRow`], in its order; `r` is the result, `m` its move.
const COLUMNS: &str = "SELECT r.move_id, m.plan_id, m.vm, m.from_host, m.to_host, m.state, \
     r.at_s, r.body FROM migration_result r JOIN move m ON m.id = r.move_id";

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
        return Err(StoreError::Invalid {
            path: path.to_string(),
            table: "migration_result",
            what: format!("a result for move {}, which is not stored", res.move_id),
        });
    }
    tx.execute(
        "INSERT INTO migration_result (move_id, at_s, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (move_id) DO UPDATE SET at_s = excluded.at_s, body = excluded.body",
        params![res.move_id, res.at_s + 0.0, res.body.as_str()],
    )
    .map_err(&err)?;
    tx.commit().map_err(&err)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MigrationRow> {
    Ok(MigrationRow {
        move_id: r.get(0)?,
        plan_id: r.get(1)?,
        vm: r.get(2)?,
        from_host: r.get(3)?,
        to_host: r.get(4)?,
        move_state: r.get(5)?,
        at_s: r.get(6)?,
        record: Json::stored(r.get(7)?),
    })
}

pub(super) fn migration(
    conn: &Connection,
    path: &str,
    move_id: &str,
) -> Result<Option<MigrationRow>> {
    let query = format!("{COLUMNS} WHERE r.move_id = ?1");
    conn.prepare_cached(&query)
        .and_then(|mut st| st.query_row([move_id], row).optional())
        .map_err(sql(path, "migration_result", "read a migration result"))
}

pub(super) fn migrations(
    conn: &Connection,
    path: &str,
    q: &MigrationQuery,
) -> Result<Vec<MigrationRow>> {
    let mut f = Filter::default();
    f.add("m.vm = ?", q.vm.clone().map(Value::Text));
    f.values.push(Value::Integer(i64::from(bounded(q.limit))));
    // Newest first by the result's time index; the move id breaks ties the same way in
    // every store.
    let query = format!(
        "{COLUMNS} {} ORDER BY r.at_s DESC, r.move_id DESC LIMIT ?",
        f.sql()
    );
    all_rows(
        conn,
        &query,
        params_from_iter(f.values),
        sql(path, "migration_result", "list migration results"),
        row,
    )
}
