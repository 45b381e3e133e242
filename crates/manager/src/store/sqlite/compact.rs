//! Compaction in SQLite: 1 s samples rolled up into 1-minute rows, and rows past retention
//! deleted, all at once ([`compact`]) or a slice at a time ([`compact_slice`]).
//!
//! # Slices
//!
//! At the scale a minute of samples is 660,000 rows, which take the better part of a
//! second to read, fold and delete: done in one transaction, one look in sixty waits for it.
//! [`compact_slice`] does a share of it per call instead: the oldest due minute's samples of
//! about `1/slices` of the series (read and deleted by key range at each of the minute's
//! instants), the retention of `1/slices` of the series' rollups (in turn), and the
//! decisions past retention. Samples are rolled up and deleted in the same transaction, so a
//! slice is never folded twice, and nothing needs remembering between calls: each call starts
//! from the oldest sample left and the lowest series at its instant (a series whose samples
//! were split between two calls, as a late sample is, is merged by weight).

use super::metrics::whole;
use super::{get_u64, sql, Inner};
use crate::store::error::Result;
use crate::store::rollup::{minute_of, Minute};
use crate::store::types::{Compacted, Retention, Sample};
use crate::store::validate;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::collections::BTreeMap;

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
        fold(&mut minutes, r)?;
    }
    Ok(minutes)
}

/// Adds a sample row (`t, series, load, cpu, mem, dirty, rx, tx`) to its series' minute.
fn fold(minutes: &mut BTreeMap<(i64, i64), Minute>, r: &Row<'_>) -> rusqlite::Result<()> {
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
    Ok(())
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
        pending: false,
    })
}

/// One slice of a compaction at `now_s` (see the module doc): returns what it did, and in
/// [`Compacted::pending`] whether due samples are left for further calls.
pub(super) fn compact_slice(
    inner: &mut Inner,
    path: &str,
    r: Retention,
    now_s: f64,
    slices: u32,
) -> Result<Compacted> {
    let now = validate::time(path, "sample", "compaction time", now_s)?;
    let cuts = r.cuts(now);
    let Inner {
        conn,
        retention_cursor,
        ..
    } = inner;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "sample", "begin a compaction"))?;
    let last_series: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) FROM series", [], |r| r.get(0))
        .map_err(sql(path, "series", "count the series"))?;
    let width = (last_series / i64::from(slices.max(1)) + 1).max(1);
    let mut done = Compacted::default();
    let minutes = slice_minutes(&tx, cuts.raw_before, width, &mut done).map_err(sql(
        path,
        "sample",
        "roll up a slice of samples",
    ))?;
    done.minutes_written =
        store_minutes(&tx, &minutes).map_err(sql(path, "rollup", "store rollups"))? as u64;
    let from = if *retention_cursor < 1 || *retention_cursor > last_series {
        1
    } else {
        *retention_cursor
    };
    {
        let err = sql(path, "rollup", "delete rollups past retention");
        let mut st = tx
            .prepare_cached("DELETE FROM rollup WHERE series = ?1 AND start_s < ?2")
            .map_err(&err)?;
        for id in from..from + width {
            done.minutes_deleted +=
                st.execute(params![id, cuts.rollups_before]).map_err(&err)? as u64;
        }
    }
    done.decisions_deleted =
        tx.execute(
            "DELETE FROM decision WHERE at_s < ?1",
            [cuts.decisions_before],
        )
        .map_err(sql(path, "decision", "delete decisions past retention"))? as u64;
    done.pending = tx
        .query_row(
            "SELECT 1 FROM sample WHERE t < ?1 LIMIT 1",
            [cuts.raw_before],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(sql(path, "sample", "look for samples left to roll up"))?
        .is_some();
    tx.commit()
        .map_err(sql(path, "sample", "commit a compaction"))?;
    *retention_cursor = from + width;
    Ok(done)
}

/// Reads and deletes the samples of the oldest due minute (before `before`) of the series
/// from the lowest one left at its oldest instant to `width` more, instant by instant (each
/// a range of the `(t, series)` key); returns them summed per series and minute.
fn slice_minutes(
    tx: &Transaction<'_>,
    before: f64,
    width: i64,
    done: &mut Compacted,
) -> rusqlite::Result<BTreeMap<(i64, i64), Minute>> {
    let mut minutes = BTreeMap::new();
    let oldest: Option<f64> = tx
        .query_row("SELECT min(t) FROM sample", [], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(first) = oldest.filter(|&t| t < before) else {
        return Ok(minutes);
    };
    let end = ((minute_of(first) + 60) as f64).min(before);
    let low: i64 = tx.query_row(
        "SELECT min(series) FROM sample WHERE t = ?1",
        [first],
        |r| r.get(0),
    )?;
    let high = low.saturating_add(width);
    let mut read = tx.prepare_cached(
        "SELECT t, series, load, cpu, mem, dirty, rx, tx FROM sample
         WHERE t = ?1 AND series >= ?2 AND series < ?3",
    )?;
    let mut delete =
        tx.prepare_cached("DELETE FROM sample WHERE t = ?1 AND series >= ?2 AND series < ?3")?;
    let mut next = tx.prepare_cached("SELECT min(t) FROM sample WHERE t > ?1 AND t < ?2")?;
    let mut t = Some(first);
    while let Some(at) = t {
        let mut rows = read.query(params![at, low, high])?;
        while let Some(r) = rows.next()? {
            fold(&mut minutes, r)?;
        }
        done.samples_rolled += delete.execute(params![at, low, high])? as u64;
        t = next.query_row(params![at, end], |r| r.get(0))?;
    }
    Ok(minutes)
}
