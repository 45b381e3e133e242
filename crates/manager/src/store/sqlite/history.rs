//! Reading metric history back from SQLite: one series (the API), or every series of a kind
//! at once (the forecasts, after a restart).

use super::metrics::lookup_series;
use super::{all_rows, get_u64, sql};
use crate::store::error::Result;
use crate::store::types::{History, MeanMax, Point, Rollup, Sample, SeriesKey, SeriesKind};
use crate::store::validate;
use rusqlite::{params, Connection, Row};
use std::collections::{BTreeMap, HashMap};

const ROLLUP_SINCE: &str = "SELECT start_s, n, load_mean, load_max, cpu_mean, cpu_max,
        mem_mean, mem_max, dirty_n, dirty_mean, dirty_max, rx_mean, rx_max, tx_mean, tx_max
    FROM rollup WHERE series = ?1 AND start_s > ?2 - 60 ORDER BY start_s";

fn rollups(conn: &Connection, path: &str, id: i64, since_s: f64) -> Result<Vec<Rollup>> {
    all_rows(
        conn,
        ROLLUP_SINCE,
        params![id, since_s],
        sql(path, "rollup", "read rollups"),
        rollup_row,
    )
}

pub(super) fn history(
    conn: &Connection,
    path: &str,
    key: &SeriesKey,
    since_s: f64,
) -> Result<History> {
    validate::bound(path, "sample", "history start", Some(since_s))?;
    let Some(id) = lookup_series(conn, key).map_err(sql(path, "series", "find a series"))? else {
        return Ok(History::default());
    };
    let minutes = rollups(conn, path, id, since_s)?;
    // The samples are keyed by time first: this reads the window since `since_s` for every
    // series and keeps this one's (bounded by the raw window, ten minutes by default).
    let seconds = all_rows(
        conn,
        "SELECT t, load, cpu, mem, dirty, rx, tx FROM sample
         WHERE t >= ?2 AND series = ?1 ORDER BY t",
        params![id, since_s],
        sql(path, "sample", "read samples"),
        |r| point_row(r, 0),
    )?;
    Ok(History { minutes, seconds })
}

/// Every series of `kind`: its rollups one range each, its samples from one pass over the raw
/// window (what `history` of each would read, once).
pub(super) fn histories(
    conn: &Connection,
    path: &str,
    kind: SeriesKind,
    since_s: f64,
) -> Result<BTreeMap<String, History>> {
    validate::bound(path, "sample", "history start", Some(since_s))?;
    let err = sql(path, "series", "list series");
    let ids: Vec<(i64, String)> = conn
        .prepare_cached("SELECT id, name FROM series WHERE kind = ?1")
        .and_then(|mut st| {
            st.query_map([kind.name()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(&err)?;
    let mut out: BTreeMap<String, History> = BTreeMap::new();
    let mut names: HashMap<i64, String> = HashMap::with_capacity(ids.len());
    for (id, name) in ids {
        let minutes = rollups(conn, path, id, since_s)?;
        out.insert(
            name.clone(),
            History {
                minutes,
                seconds: Vec::new(),
            },
        );
        names.insert(id, name);
    }
    let err = sql(path, "sample", "read samples");
    let mut st = conn
        .prepare_cached(
            "SELECT series, t, load, cpu, mem, dirty, rx, tx FROM sample WHERE t >= ?1 ORDER BY t",
        )
        .map_err(&err)?;
    let mut rows = st.query([since_s]).map_err(&err)?;
    while let Some(r) = rows.next().map_err(&err)? {
        let id: i64 = r.get(0).map_err(&err)?;
        let Some(h) = names.get(&id).and_then(|n| out.get_mut(n)) else {
            continue;
        };
        h.seconds.push(point_row(r, 1).map_err(&err)?);
    }
    Ok(out)
}

/// A sample row whose columns start at `at` (time, load, cpu, mem, dirty, rx, tx).
fn point_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Point> {
    Ok(Point {
        at_s: r.get(at)?,
        sample: Sample {
            load: r.get(at + 1)?,
            cpu_cores: r.get(at + 2)?,
            memory_bytes: get_u64(r, at + 3)?,
            dirty_bps: r.get(at + 4)?,
            rx_bps: r.get(at + 5)?,
            tx_bps: r.get(at + 6)?,
        },
    })
}

fn rollup_row(r: &Row<'_>) -> rusqlite::Result<Rollup> {
    let mm = |i: usize| -> rusqlite::Result<MeanMax> {
        Ok(MeanMax {
            mean: r.get(i)?,
            max: r.get(i + 1)?,
        })
    };
    let dirty_n: i64 = r.get(8)?;
    let dirty = match (
        dirty_n,
        r.get::<_, Option<f64>>(9)?,
        r.get::<_, Option<f64>>(10)?,
    ) {
        (1.., Some(mean), Some(max)) => Some(MeanMax { mean, max }),
        _ => None,
    };
    Ok(Rollup {
        start_s: r.get(0)?,
        samples: r.get(1)?,
        load: mm(2)?,
        cpu_cores: mm(4)?,
        memory_bytes: mm(6)?,
        dirty_bps: dirty,
        rx_bps: mm(11)?,
        tx_bps: mm(13)?,
    })
}
