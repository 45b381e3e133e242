//! Compaction in SQLite: the frames (a look's samples, `frame`) of each whole minute older
//! than the raw window rolled up into one `rollup` row per series, and rows past retention
//! deleted, all at once ([`compact`]) or a slice at a time ([`compact_slice`]).
//!
//! # A minute at a time, in slices
//!
//! At the scale a minute is 60 frames of 11,000 samples: reading and folding them
//! takes tens of milliseconds, and writing 11,000 rollups (one page per series, since rollups
//! are clustered by series) tens more. [`compact_slice`] spreads a minute over many calls,
//! keeping the minute's sums in memory ([`Folding`]):
//! 1. *fold*: each call reads a few of the minute's frames (oldest first) and adds them to
//!    the sums; nothing is written;
//! 2. *write*: each call stores the rollups of the next few series, and records in `meta`
//!    (`compaction`) which frames were folded and the first series not yet stored;
//! 3. the call that stores the last series deletes the folded frames and that record.
//!
//! So a frame is deleted in the transaction that stores the last of its rollups, and a
//! manager restarted half-way folds the recorded frames again and stores only the series not
//! yet stored: nothing is counted twice or lost. A frame that arrives late for a minute
//! already rolled up (or being rolled up) is left for a later round and merged into its
//! minute by weight, as [`UPSERT_ROLLUP`] does.

use super::history::frame_rows;
use super::metrics::{corrupt, whole};
use super::{frame, sql, Inner};
use crate::store::error::{Result, StoreError};
use crate::store::rollup::{minute_of, Minute};
use crate::store::types::{Compacted, Retention};
use crate::store::validate;
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
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

/// A minute being rolled up (see the module doc): what is folded so far.
#[derive(Debug, Default)]
pub(crate) struct Folding {
    /// The minute's start, s.
    minute: i64,
    /// Frames after this minute's end (or the raw window's cut) are not folded into it.
    end: f64,
    /// The frames folded, oldest first (deleted with the minute's last rollups).
    frames: Vec<f64>,
    /// Every frame of the minute that was due is folded: the rollups are being written.
    folded: bool,
    /// Rollups of the series below this one are stored already.
    next_series: i64,
    /// Per series, the minute's sums.
    sums: BTreeMap<i64, Minute>,
}

/// The record in `meta` of a minute whose rollups are partly stored.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    minute: i64,
    next_series: i64,
    frames: Vec<f64>,
}

const PROGRESS_KEY: &str = "compaction";

/// How much one call may do: frames to fold, series to store.
#[derive(Debug, Clone, Copy)]
struct Budget {
    frames: usize,
    series: usize,
}

impl Budget {
    const ALL: Budget = Budget {
        frames: usize::MAX,
        series: usize::MAX,
    };

    /// A share of a minute such that `slices` calls fold and store it: a fifth of the calls
    /// fold its frames (60 at one look a second), the other four fifths store its series'
    /// rollups.
    fn slice(slices: u32, series: i64) -> Budget {
        let slices = slices.max(1) as usize;
        let series = usize::try_from(series).unwrap_or(0);
        Budget {
            frames: 300usize.div_ceil(slices).max(1),
            series: (series * 5).div_ceil(4 * slices).max(1),
        }
    }
}

fn progress(tx: &Transaction<'_>, path: &str) -> Result<Option<Progress>> {
    let text: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [PROGRESS_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "meta", "read a compaction's progress"))?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            path: path.to_string(),
            table: "meta",
            what: format!("a compaction's progress that does not read: {e}"),
        })
    })
    .transpose()
}

/// Adds the entries of the frame at `t` (those of series from `from` on) to `sums`; the
/// entries added.
fn fold_frame(sums: &mut BTreeMap<i64, Minute>, path: &str, body: &[u8], from: i64) -> Result<u64> {
    let mut n = 0;
    for entry in frame::decode(body).map_err(|e| corrupt(path, &e))? {
        let (series, sample) = entry.map_err(|e| corrupt(path, &e))?;
        if series >= from {
            sums.entry(series).or_default().add(&sample);
            n += 1;
        }
    }
    Ok(n)
}

/// The next minute to roll up: the one a stored progress names (its frames folded again), or
/// the oldest due frame's. None when nothing is due.
fn start(
    tx: &Transaction<'_>,
    path: &str,
    before: f64,
    done: &mut Compacted,
) -> Result<Option<Folding>> {
    let err = sql(path, "frame", "read frames to roll up");
    if let Some(p) = progress(tx, path)? {
        let mut f = Folding {
            minute: p.minute,
            end: p.frames.last().copied().unwrap_or(0.0),
            folded: true,
            next_series: p.next_series,
            ..Folding::default()
        };
        let mut read = tx
            .prepare_cached("SELECT body FROM frame WHERE t = ?1")
            .map_err(&err)?;
        for t in p.frames {
            let body: Option<Vec<u8>> =
                read.query_row([t], |r| r.get(0)).optional().map_err(&err)?;
            if let Some(body) = body {
                done.samples_rolled += fold_frame(&mut f.sums, path, &body, f.next_series)?;
                f.frames.push(t);
            }
        }
        return Ok(Some(f));
    }
    let oldest: Option<f64> = tx
        .query_row("SELECT min(t) FROM frame", [], |r| r.get(0))
        .map_err(&err)?;
    Ok(oldest.filter(|&t| t < before).map(|t| {
        let minute = minute_of(t);
        Folding {
            minute,
            end: ((minute + 60) as f64).min(before),
            frames: Vec::new(),
            folded: false,
            next_series: 0,
            sums: BTreeMap::new(),
        }
    }))
}

/// Folds up to `n` more of the minute's frames; marks it folded when none is left.
fn fold(
    tx: &Transaction<'_>,
    path: &str,
    f: &mut Folding,
    n: usize,
    done: &mut Compacted,
) -> Result<()> {
    let after = f.frames.last().copied().unwrap_or(-1.0);
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let query = "SELECT t, body FROM frame WHERE t >= ?1 AND t > ?2 AND t < ?3 ORDER BY t LIMIT ?4";
    let (sums, frames) = (&mut f.sums, &mut f.frames);
    let before = frames.len();
    let params = params![f.minute as f64, after, f.end, limit];
    frame_rows(tx, path, query, params, |t, body| {
        done.samples_rolled += fold_frame(sums, path, body, 0)?;
        frames.push(t);
        Ok(())
    })?;
    f.folded = f.frames.len() - before < n;
    Ok(())
}

/// Stores the rollups of up to `n` series from `f.next_series` on; returns the series to
/// start from next, or None when the minute is all stored (its frames and progress then
/// deleted, in the same transaction).
fn write(
    tx: &Transaction<'_>,
    path: &str,
    f: &Folding,
    n: usize,
    done: &mut Compacted,
) -> Result<Option<i64>> {
    let batch: BTreeMap<i64, Minute> = f
        .sums
        .range(f.next_series..)
        .take(n)
        .map(|(k, v)| (*k, *v))
        .collect();
    let next = f
        .sums
        .range(batch.keys().last().map_or(f.next_series, |k| k + 1)..)
        .next();
    let minutes: BTreeMap<(i64, i64), Minute> =
        batch.into_iter().map(|(s, m)| ((s, f.minute), m)).collect();
    done.minutes_written +=
        store_minutes(tx, &minutes).map_err(sql(path, "rollup", "store rollups"))? as u64;
    let err = sql(path, "meta", "record a compaction's progress");
    match next {
        Some((&series, _)) => {
            let p = Progress {
                minute: f.minute,
                next_series: series,
                frames: f.frames.clone(),
            };
            let text = serde_json::to_string(&p).map_err(|source| StoreError::Json {
                what: "cannot serialize a compaction's progress".into(),
                source,
            })?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![PROGRESS_KEY, text],
            )
            .map_err(&err)?;
            Ok(Some(series))
        }
        None => {
            let mut delete = tx
                .prepare_cached("DELETE FROM frame WHERE t = ?1")
                .map_err(sql(path, "frame", "delete rolled-up frames"))?;
            for t in &f.frames {
                delete
                    .execute([t])
                    .map_err(sql(path, "frame", "delete rolled-up frames"))?;
            }
            tx.execute("DELETE FROM meta WHERE key = ?1", [PROGRESS_KEY])
                .map_err(&err)?;
            Ok(None)
        }
    }
}

/// One call's share of rolling up: starts, folds or writes the current minute within
/// `budget`; with [`Budget::ALL`], every due minute. Returns the minute still under way.
fn roll_up(
    tx: &Transaction<'_>,
    path: &str,
    mut folding: Option<Folding>,
    before: f64,
    budget: Budget,
    done: &mut Compacted,
) -> Result<Option<Folding>> {
    loop {
        let Some(mut f) = folding.take() else {
            match start(tx, path, before, done)? {
                Some(f) => folding = Some(f),
                None => return Ok(None),
            }
            continue;
        };
        if !f.folded {
            fold(tx, path, &mut f, budget.frames, done)?;
            if budget.frames != usize::MAX {
                return Ok(Some(f));
            }
        }
        match write(tx, path, &f, budget.series, done)? {
            Some(next) => {
                f.next_series = next;
                if budget.series != usize::MAX {
                    return Ok(Some(f));
                }
                folding = Some(f);
            }
            None if budget.series != usize::MAX => return Ok(None),
            None => {}
        }
    }
}

fn delete_decisions(tx: &Transaction<'_>, path: &str, before: f64) -> Result<u64> {
    tx.execute("DELETE FROM decision WHERE at_s < ?1", [before])
        .map(|n| n as u64)
        .map_err(sql(path, "decision", "delete decisions past retention"))
}

/// Deletes the rollups past retention of series `from..to`, one key range each (a single
/// `start_s < ?` would scan every rollup).
fn delete_rollups(
    tx: &Transaction<'_>,
    path: &str,
    from: i64,
    to: i64,
    before: f64,
) -> Result<u64> {
    let err = sql(path, "rollup", "delete rollups past retention");
    let mut st = tx
        .prepare_cached("DELETE FROM rollup WHERE series = ?1 AND start_s < ?2")
        .map_err(&err)?;
    let mut deleted = 0;
    for id in from..to {
        deleted += st.execute(params![id, before]).map_err(&err)? as u64;
    }
    Ok(deleted)
}

fn last_series(tx: &Transaction<'_>, path: &str) -> Result<i64> {
    tx.query_row("SELECT coalesce(max(id), 0) FROM series", [], |r| r.get(0))
        .map_err(sql(path, "series", "count the series"))
}

fn due(tx: &Transaction<'_>, path: &str, before: f64) -> Result<bool> {
    tx.query_row("SELECT 1 FROM frame WHERE t < ?1 LIMIT 1", [before], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|found| found.is_some())
    .map_err(sql(path, "frame", "look for frames left to roll up"))
}

/// Rolls up every due minute and deletes what is past retention, in one transaction.
pub(super) fn compact(
    inner: &mut Inner,
    path: &str,
    r: Retention,
    now_s: f64,
) -> Result<Compacted> {
    let now = validate::time(path, "frame", "compaction time", now_s)?;
    let cuts = r.cuts(now);
    let Inner { conn, folding, .. } = inner;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "frame", "begin a compaction"))?;
    let mut done = Compacted::default();
    // A minute folded in memory by slices is folded again: its frames are all still stored.
    roll_up(&tx, path, None, cuts.raw_before, Budget::ALL, &mut done)?;
    let last = last_series(&tx, path)?;
    done.minutes_deleted = delete_rollups(&tx, path, 1, last + 1, cuts.rollups_before)?;
    done.decisions_deleted = delete_decisions(&tx, path, cuts.decisions_before)?;
    tx.commit()
        .map_err(sql(path, "frame", "commit a compaction"))?;
    *folding = None;
    Ok(done)
}

/// One slice of a compaction at `now_s` (see the module doc): returns what it did, and in
/// [`Compacted::pending`] whether due frames are left for further calls.
pub(super) fn compact_slice(
    inner: &mut Inner,
    path: &str,
    r: Retention,
    now_s: f64,
    slices: u32,
) -> Result<Compacted> {
    let now = validate::time(path, "frame", "compaction time", now_s)?;
    let cuts = r.cuts(now);
    let Inner {
        conn,
        retention_cursor,
        folding,
        ..
    } = inner;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, "frame", "begin a compaction"))?;
    let last = last_series(&tx, path)?;
    let budget = Budget::slice(slices, last);
    let mut done = Compacted::default();
    // Taken out for the call: should the transaction fail, the minute starts over (from the
    // progress stored, if any), never from sums that counted what was rolled back.
    let under_way = roll_up(
        &tx,
        path,
        folding.take(),
        cuts.raw_before,
        budget,
        &mut done,
    )?;
    let width = (last / i64::from(slices.max(1)) + 1).max(1);
    let from = if *retention_cursor < 1 || *retention_cursor > last {
        1
    } else {
        *retention_cursor
    };
    done.minutes_deleted = delete_rollups(&tx, path, from, from + width, cuts.rollups_before)?;
    done.decisions_deleted = delete_decisions(&tx, path, cuts.decisions_before)?;
    done.pending = under_way.is_some() || due(&tx, path, cuts.raw_before)?;
    tx.commit()
        .map_err(sql(path, "frame", "commit a compaction"))?;
    *retention_cursor = from + width;
    *folding = under_way;
    Ok(done)
}
