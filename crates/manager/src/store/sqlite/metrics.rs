//! Looks, metric history and compaction in SQLite.

use super::control::insert_journal;
use super::{get_u64, sql, Inner};
use crate::store::error::{Result, StoreError};
use crate::store::rollup::{minute_of, Minute};
use crate::store::types::{Compacted, Look, Retention, Sample, SeriesKey};
use crate::store::validate;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};

/// A count of bytes or bytes/s, already rounded ([`Sample::stored`], `Minute::rollup`), as
/// the integer SQLite keeps (finite and non-negative: the cast is exact up to 2^53).
fn whole(x: f64) -> i64 {
    x as i64
}

/// Stores one look in one transaction, every row through a prepared statement.
pub(super) fn record_look(inner: &mut Inner, path: &str, look: &Look) -> Result<()> {
    validate::look(path, look)?;
    let at = look.at_s + 0.0;
    let Inner { conn, series } = inner;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "sample", "begin a look"))?;
    let mut fresh = HashMap::new();
    hosts_seen(&tx, path, look, at)?;
    vms_seen(&tx, path, look, at)?;
    {
        let err = sql(path, "sample", "insert a sample");
        // A second sample of a series at the same instant replaces the first.
        let mut st = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO sample (t, series, load, cpu, mem, dirty, rx, tx)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(&err)?;
        let hosts = look
            .hosts
            .iter()
            .filter_map(|h| Some((SeriesKey::host(&h.name), h.sample?)));
        let vms = look
            .vms
            .iter()
            .filter_map(|v| Some((SeriesKey::vm(&v.name), v.sample?)));
        for (key, s) in hosts.chain(vms) {
            let id = series_id(&tx, path, series, &mut fresh, key)?;
            let s = s.stored();
            st.execute(params![
                at,
                id,
                s.load,
                s.cpu_cores,
                i64::try_from(s.memory_bytes).unwrap_or(i64::MAX),
                s.dirty_bps.map(whole),
                whole(s.rx_bps),
                whole(s.tx_bps)
            ])
            .map_err(&err)?;
        }
    }
    insert_journal(&tx, path, &look.journal)?;
    tx.commit().map_err(sql(path, "sample", "commit a look"))?;
    series.extend(fresh);
    Ok(())
}

fn hosts_seen(tx: &Transaction<'_>, path: &str, look: &Look, at: f64) -> Result<()> {
    let err = sql(path, "host", "record a host's reachability");
    let mut st = tx
        .prepare_cached(
            "UPDATE host SET reachable = ?2,
                 last_seen_s = CASE WHEN ?2 THEN ?3 ELSE last_seen_s END
             WHERE name = ?1",
        )
        .map_err(&err)?;
    for h in &look.hosts {
        if st.execute(params![h.name, h.reachable, at]).map_err(&err)? == 0 {
            return Err(StoreError::Invalid {
                path: path.to_string(),
                table: "host",
                what: format!(
                    "the look names host {}, which is not in the inventory",
                    h.name
                ),
            });
        }
    }
    Ok(())
}

fn vms_seen(tx: &Transaction<'_>, path: &str, look: &Look, at: f64) -> Result<()> {
    let err = sql(
        path,
        "vm",
        "record a VM (its host must be in the inventory)",
    );
    // Most looks find each VM where it was: only its time changes, in place, and the index
    // by host is left alone.
    let mut seen = tx
        .prepare_cached("UPDATE vm SET last_seen_s = ?3 WHERE name = ?1 AND host = ?2")
        .map_err(&err)?;
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO vm (name, host, first_seen_s, last_seen_s) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET host = excluded.host,
                 last_seen_s = excluded.last_seen_s",
        )
        .map_err(&err)?;
    for v in &look.vms {
        if seen.execute(params![v.name, v.host, at]).map_err(&err)? == 0 {
            upsert.execute(params![v.name, v.host, at]).map_err(&err)?;
        }
    }
    Ok(())
}

/// The series' id, made if new; ids made in this transaction go to `fresh`, and into the
/// cache only once it commits.
fn series_id(
    tx: &Transaction<'_>,
    path: &str,
    cache: &HashMap<SeriesKey, i64>,
    fresh: &mut HashMap<SeriesKey, i64>,
    key: SeriesKey,
) -> Result<i64> {
    if let Some(id) = cache.get(&key).or_else(|| fresh.get(&key)) {
        return Ok(*id);
    }
    let err = sql(path, "series", "find or make a series");
    let found = lookup_series(tx, &key).map_err(&err)?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached("INSERT INTO series (kind, name) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![key.kind.name(), key.name]))
                .map_err(&err)?;
            tx.last_insert_rowid()
        }
    };
    fresh.insert(key, id);
    Ok(id)
}

pub(super) fn lookup_series(conn: &Connection, key: &SeriesKey) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM series WHERE kind = ?1 AND name = ?2")?
        .query_row(params![key.kind.name(), key.name], |r| r.get(0))
        .optional()
}

/// Stores one rolled-up minute, merging into a minute already rolled up (a late sample) by
/// weighted mean and maximum, as `rollup::merge` does.
const UPSERT_ROLLUP: &str = "
INSERT INTO rollup (series, start_s, n, load_mean, load_max, cpu_mean, cpu_max,
                    mem_mean, mem_max, dirty_n, dirty_mean, dirty_max,
                    rx_mean, rx_max, tx_mean, tx_max)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
ON CONFLICT (series, start_s) DO UPDATE SET
    n = n + excluded.n,
    load_mean = (load_mean * n + excluded.load_mean * excluded.n) / (n + excluded.n),
    load_max = max(load_max, excluded.load_max),
    cpu_mean = (cpu_mean * n + excluded.cpu_mean * excluded.n) / (n + excluded.n),
    cpu_max = max(cpu_max, excluded.cpu_max),
    mem_mean = round((mem_mean * n + excluded.mem_mean * excluded.n) / (n + excluded.n)),
    mem_max = max(mem_max, excluded.mem_max),
    dirty_n = dirty_n + excluded.dirty_n,
    dirty_mean = CASE WHEN excluded.dirty_n = 0 THEN dirty_mean
        WHEN dirty_n = 0 THEN excluded.dirty_mean
        ELSE round((dirty_mean * dirty_n + excluded.dirty_mean * excluded.dirty_n)
             / (dirty_n + excluded.dirty_n)) END,
    dirty_max = CASE WHEN excluded.dirty_n = 0 THEN dirty_max
        WHEN dirty_n = 0 THEN excluded.dirty_max
        ELSE max(dirty_max, excluded.dirty_max) END,
    rx_mean = round((rx_mean * n + excluded.rx_mean * excluded.n) / (n + excluded.n)),
    rx_max = max(rx_max, excluded.rx_max),
    tx_mean = round((tx_mean * n + excluded.tx_mean * excluded.n) / (n + excluded.n)),
    tx_max = max(tx_max, excluded.tx_max)";

/// Reads the samples before `before` in key order (time, then series) and sums them per
/// series and minute: one pass, no sort (SQL's `GROUP BY series, minute` sorted them all).
fn minutes_before(
    tx: &Transaction<'_>,
    before: f64,
) -> rusqlite::Result<BTreeMap<(i64, i64), Minute>> {
    let mut st = tx.prepare_cached(
        "SELECT t, series, load, cpu, mem, dirty, rx, tx FROM sample WHERE t < ?1",
    )?;
    let mut rows = st.query([before])?;
    let mut minutes: BTreeMap<(i64, i64), Minute> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let t: f64 = r.get(0)?;
        let sample = Sample {
            load: r.get(2)?,
            cpu_cores: r.get(3)?,
            memory_bytes: get_u64(r, 4)?,
            dirty_bps: r.get(5)?,
            rx_bps: r.get(6)?,
            tx_bps: r.get(7)?,
        };
        minutes
            .entry((r.get(1)?, minute_of(t)))
            .or_default()
            .add(&sample);
    }
    Ok(minutes)
}

fn store_minutes(
    tx: &Transaction<'_>,
    minutes: &BTreeMap<(i64, i64), Minute>,
) -> rusqlite::Result<usize> {
    let mut st = tx.prepare_cached(UPSERT_ROLLUP)?;
    for (&(series, start), minute) in minutes {
        let r = minute.rollup(start);
        let dirty = r.dirty_bps;
        st.execute(params![
            series,
            start,
            r.samples,
            r.load.mean,
            r.load.max,
            r.cpu_cores.mean,
            r.cpu_cores.max,
            whole(r.memory_bytes.mean),
            whole(r.memory_bytes.max),
            minute.dirty_samples(),
            dirty.map(|d| whole(d.mean)),
            dirty.map(|d| whole(d.max)),
            whole(r.rx_bps.mean),
            whole(r.rx_bps.max),
            whole(r.tx_bps.mean),
            whole(r.tx_bps.max)
        ])?;
    }
    Ok(minutes.len())
}

pub(super) fn compact(
    conn: &mut Connection,
    path: &str,
    r: Retention,
    now_s: f64,
) -> Result<Compacted> {
    let now = validate::time(path, "sample", "compaction time", now_s)?;
    let cuts = r.cuts(now);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "sample", "begin a compaction"))?;
    let minutes = minutes_before(&tx, cuts.raw_before).map_err(sql(
        path,
        "sample",
        "read samples to roll up",
    ))?;
    let minutes_written =
        store_minutes(&tx, &minutes).map_err(sql(path, "rollup", "store rollups"))?;
    let samples_rolled = tx
        .execute("DELETE FROM sample WHERE t < ?1", [cuts.raw_before])
        .map_err(sql(path, "sample", "delete rolled-up samples"))?;
    // Series by series: each delete is one range of the (series, start_s) key, where a
    // single `start_s < ?` would scan every rollup.
    let mut minutes_deleted = 0;
    {
        let err = sql(path, "rollup", "delete rollups past retention");
        let ids = tx
            .prepare_cached("SELECT id FROM series ORDER BY id")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(&err)?;
        let mut st = tx
            .prepare_cached("DELETE FROM rollup WHERE series = ?1 AND start_s < ?2")
            .map_err(&err)?;
        for id in ids {
            minutes_deleted += st.execute(params![id, cuts.rollups_before]).map_err(&err)?;
        }
    }
    let decisions_deleted = tx
        .execute(
            "DELETE FROM decision WHERE at_s < ?1",
            [cuts.decisions_before],
        )
        .map_err(sql(path, "decision", "delete decisions past retention"))?;
    tx.commit()
        .map_err(sql(path, "sample", "commit a compaction"))?;
    Ok(Compacted {
        samples_rolled: samples_rolled as u64,
        minutes_written: minutes_written as u64,
        minutes_deleted: minutes_deleted as u64,
        decisions_deleted: decisions_deleted as u64,
    })
}
