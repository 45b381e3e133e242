//! Hosts and VMs in SQLite.

use super::control::insert_journal;
use super::{all_rows, sql};
use crate::store::error::{Result, StoreError};
use crate::store::records::host_event;
use crate::store::types::{HostRecord, HostSpec, PowerModel, VmRecord};
use crate::store::validate;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

pub(super) fn store_id(conn: &Connection, path: &str) -> Result<String> {
    conn.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
        r.get(0)
    })
    .map_err(sql(path, "meta", "read the store id"))
}

const HOST_COLUMNS: &str =
    "name, agent_url, idle_w, peak_w, added_s, removed_s, reachable, last_seen_s";

fn host_row(r: &Row<'_>) -> rusqlite::Result<HostRecord> {
    let idle: Option<f64> = r.get(2)?;
    let peak: Option<f64> = r.get(3)?;
    Ok(HostRecord {
        name: r.get(0)?,
        agent_url: r.get(1)?,
        power: idle
            .zip(peak)
            .map(|(idle_w, peak_w)| PowerModel { idle_w, peak_w }),
        added_s: r.get(4)?,
        removed_s: r.get(5)?,
        reachable: r.get(6)?,
        last_seen_s: r.get(7)?,
    })
}

/// Adds `spec`; `replace`: updates a host already there instead of refusing it (the
/// configuration is applied again at every start).
pub(super) fn add_host(
    conn: &mut Connection,
    path: &str,
    spec: &HostSpec,
    at_s: f64,
    replace: bool,
) -> Result<()> {
    validate::host(path, spec, at_s)?;
    let err = sql(path, "host", "add a host");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let old = tx
        .query_row(
            &format!("SELECT {HOST_COLUMNS} FROM host WHERE name = ?1"),
            [&spec.name],
            host_row,
        )
        .optional()
        .map_err(&err)?;
    let what = match &old {
        Some(h) if h.removed_s.is_none() && !replace => {
            return Err(StoreError::HostExists {
                path: path.to_string(),
                name: spec.name.clone(),
            })
        }
        Some(h) if h.removed_s.is_none() => {
            if h.agent_url == spec.agent_url && h.power == spec.power {
                return Ok(());
            }
            format!("updated: agent {}", spec.agent_url)
        }
        _ => format!("added: agent {}", spec.agent_url),
    };
    let (idle, peak) = spec.power.map(|p| (p.idle_w, p.peak_w)).unzip();
    // A host added again starts a new membership: added now, not reachable until looked at.
    tx.execute(
        "INSERT INTO host (name, agent_url, idle_w, peak_w, added_s)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET
             agent_url = excluded.agent_url, idle_w = excluded.idle_w,
             peak_w = excluded.peak_w,
             added_s = CASE WHEN removed_s IS NULL THEN added_s ELSE excluded.added_s END,
             reachable = CASE WHEN removed_s IS NULL THEN reachable ELSE 0 END,
             removed_s = NULL",
        params![spec.name, spec.agent_url, idle, peak, at_s],
    )
    .map_err(&err)?;
    insert_journal(&tx, path, &[host_event(at_s, &spec.name, what)])?;
    tx.commit().map_err(&err)
}

pub(super) fn remove_host(conn: &mut Connection, path: &str, name: &str, at_s: f64) -> Result<()> {
    validate::time(path, "host", "time", at_s)?;
    let err = sql(path, "host", "remove a host");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let n = tx
        .execute(
            "UPDATE host SET removed_s = ?2, reachable = 0
             WHERE name = ?1 AND removed_s IS NULL",
            params![name, at_s],
        )
        .map_err(&err)?;
    if n == 0 {
        return Err(StoreError::NotFound {
            path: path.to_string(),
            table: "host",
            key: format!("host {name} in the inventory"),
        });
    }
    insert_journal(&tx, path, &[host_event(at_s, name, "removed".into())])?;
    tx.commit().map_err(&err)
}

pub(super) fn hosts(conn: &Connection, path: &str) -> Result<Vec<HostRecord>> {
    all_rows(
        conn,
        &format!("SELECT {HOST_COLUMNS} FROM host ORDER BY name"),
        [],
        sql(path, "host", "list hosts"),
        host_row,
    )
}

/// Every VM; a present one was last seen when its host last answered (`metrics`).
pub(super) fn vms(conn: &Connection, path: &str) -> Result<Vec<VmRecord>> {
    all_rows(
        conn,
        "SELECT v.name, v.host, v.first_seen_s,
             CASE WHEN v.present THEN coalesce(h.answered_s, v.last_seen_s)
                  ELSE v.last_seen_s END
         FROM vm v LEFT JOIN host h ON h.name = v.host ORDER BY v.name",
        [],
        sql(path, "vm", "list VMs"),
        |r| {
            Ok(VmRecord {
                name: r.get(0)?,
                host: r.get(1)?,
                first_seen_s: r.get(2)?,
                last_seen_s: r.get(3)?,
            })
        },
    )
}
