//! Reading metric history back from SQLite: one series (the API), or every series of a kind
//! at once (the forecasts, after a restart).

use super::metrics::{corrupt, lookup_series};
use super::{all_rows, frame, sql};
use crate::store::error::Result;
use crate::store::types::{History, MeanMax, Point, Rollup, SeriesKey, SeriesKind};
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
    // Frames hold every series: this reads the window since `since_s` (bounded by the raw
    // window, ten minutes by default) and keeps this series' entry of each.
    let mut seconds = Vec::new();
    each_frame(conn, path, since_s, |at_s, entries| {
        for entry in entries {
            let (series, sample) = entry.map_err(|e| corrupt(path, &e))?;
            if series >= id {
                if series == id {
                    seconds.push(Point { at_s, sample });
                }
                break;
            }
        }
        Ok(())
    })?;
    Ok(History { minutes, seconds })
}

/// Calls `f` with each frame taken at or after `since_s`, oldest first, and its entries.
fn each_frame(
    conn: &Connection,
    path: &str,
    since_s: f64,
    mut f: impl FnMut(f64, frame::Entries<'_>) -> Result<()>,
) -> Result<()> {
    let query = "SELECT t, body FROM frame WHERE t >= ?1 ORDER BY t";
    frame_rows(conn, path, query, [since_s], |t, body| {
        f(t, frame::decode(body).map_err(|e| corrupt(path, &e))?)
    })
}

/// Calls `f` with the time and blob of each frame `query` (selecting `t, body`) answers.
pub(super) fn frame_rows(
    conn: &Connection,
    path: &str,
    query: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(f64, &[u8]) -> Result<()>,
) -> Result<()> {
    let err = sql(path, "frame", "read frames");
    let mut st = conn.prepare_cached(query).map_err(&err)?;
    let mut rows = st.query(params).map_err(&err)?;
    while let Some(r) = rows.next().map_err(&err)? {
        let t: f64 = r.get(0).map_err(&err)?;
        let body = r
            .get_ref(1)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(&err)?;
        f(t, body)?;
    }
    Ok(())
}

/// Every series of `kind`: its rollups one range each, its samples from one pass over the
/// frames of the raw window (what `history` of each would read, once).
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
    let mut ids_of: HashMap<String, i64> = HashMap::with_capacity(ids.len());
    for (id, name) in ids {
        let minutes = rollups(conn, path, id, since_s)?;
        let seconds = Vec::new();
        out.insert(name.clone(), History { minutes, seconds });
        ids_of.insert(name, id);
    }
    // Names are unique per kind, so each id finds its own history.
    let mut by_id: HashMap<i64, &mut History> = out
        .iter_mut()
        .filter_map(|(name, h)| Some((*ids_of.get(name)?, h)))
        .collect();
    each_frame(conn, path, since_s, |at_s, entries| {
        for entry in entries {
            let (series, sample) = entry.map_err(|e| corrupt(path, &e))?;
            if let Some(h) = by_id.get_mut(&series) {
                h.seconds.push(Point { at_s, sample });
            }
        }
        Ok(())
    })?;
    Ok(out)
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
