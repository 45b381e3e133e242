//! Looks in SQLite: host reachability, the VMs seen and where, every sample.
//!
//! # Writing only what changed
//!
//! At the scale a look lists 10,000 VMs, nearly always where the last one found them.
//! Instead of rewriting each VM's row every second, a VM's row says it is `present`: it was in
//! its host's last answer, so its last-seen time is its host's `answered_s` (when the host's
//! agent last answered). A look writes a VM's row only when it is new, moved, listed under a
//! host that did not answer, or no longer listed by its host (its last-seen time is then the
//! host's previous answer). What rows say `present` is kept in memory ([`Seen`], loaded from
//! the file by the first look after opening, changed only after a commit), so a look finds
//! the changes without reading them back; a look that lists the VMs the last one did, in the
//! same order, is found unchanged by comparing the two lists. [`super::inventory::vms`] reads
//! a present VM's time from its host: the same times as writing every row every look.
//!
//! A look's samples are one row: its frame ([`frame`]).

use super::control::insert_journal;
use super::{frame, sql, Inner};
use crate::store::error::{Result, StoreError};
use crate::store::types::{Look, SeriesKey, SeriesKind};
use crate::store::validate;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::{HashMap, HashSet};

/// A count of bytes or bytes/s, already rounded (`Minute::rollup`), as the integer SQLite
/// keeps (finite and non-negative: the cast is exact up to 2^53).
pub(super) fn whole(x: f64) -> i64 {
    x as i64
}

/// Series ids already known, by kind and name (ids are never reused or deleted).
#[derive(Debug, Default)]
pub(crate) struct SeriesIds {
    host: HashMap<String, i64>,
    vm: HashMap<String, i64>,
}

impl SeriesIds {
    fn of(&self, kind: SeriesKind) -> &HashMap<String, i64> {
        match kind {
            SeriesKind::Host => &self.host,
            SeriesKind::Vm => &self.vm,
        }
    }

    fn get(&self, kind: SeriesKind, name: &str) -> Option<i64> {
        self.of(kind).get(name).copied()
    }

    fn insert(&mut self, kind: SeriesKind, name: String, id: i64) {
        match kind {
            SeriesKind::Host => self.host.insert(name, id),
            SeriesKind::Vm => self.vm.insert(name, id),
        };
    }

    fn extend(&mut self, other: SeriesIds) {
        self.host.extend(other.host);
        self.vm.extend(other.vm);
    }
}

/// What the file's `present` VM rows and hosts' `answered_s` say, as of the last commit.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Present VMs: name -> host.
    vms: HashMap<String, String>,
    /// Hosts that ever answered: name -> when last, s.
    answered: HashMap<String, f64>,
    /// The last look, when every VM it listed ran on a host that answered (all of them are
    /// present since): a look listing the same VMs on the same hosts, with the same hosts
    /// answering, changes no VM row, which is found by comparing the two in order (most
    /// looks) instead of looking each VM up.
    last: Option<Listing>,
}

/// A look's VMs (name, host) and the hosts that answered, in the look's order.
#[derive(Debug, Default, PartialEq)]
struct Listing {
    vms: Vec<(String, String)>,
    answering: Vec<String>,
}

impl Listing {
    fn of(look: &Look) -> Listing {
        Listing {
            vms: look
                .vms
                .iter()
                .map(|v| (v.name.clone(), v.host.clone()))
                .collect(),
            answering: answering(look).map(str::to_string).collect(),
        }
    }

    /// Whether `look` lists exactly this.
    fn matches(&self, look: &Look) -> bool {
        self.vms.len() == look.vms.len()
            && self
                .vms
                .iter()
                .zip(&look.vms)
                .all(|((name, host), v)| *name == v.name && *host == v.host)
            && self
                .answering
                .iter()
                .map(String::as_str)
                .eq(answering(look))
    }
}

/// The hosts whose agents answered `look`, in its order.
fn answering(look: &Look) -> impl Iterator<Item = &str> {
    look.hosts
        .iter()
        .filter(|h| h.sample.is_some())
        .map(|h| h.name.as_str())
}

impl Seen {
    fn load(conn: &Connection, path: &str) -> Result<Seen> {
        let err = sql(path, "vm", "read which VMs are present");
        let vms = conn
            .prepare("SELECT name, host FROM vm WHERE present = 1")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(err)?;
        let err = sql(path, "host", "read when hosts answered");
        let answered = conn
            .prepare("SELECT name, answered_s FROM host WHERE answered_s IS NOT NULL")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(err)?;
        Ok(Seen {
            vms,
            answered,
            last: None,
        })
    }
}

/// How a look changes [`Seen`], applied once it commits.
#[derive(Debug, Default)]
pub(super) struct SeenChanges {
    /// VM -> its host if present now, None if not.
    vms: Vec<(String, Option<String>)>,
    /// The look's listing, when it is to be the next [`Seen::last`] (None: keep the last
    /// one, the look matched it).
    last: Option<Option<Listing>>,
    answered: Vec<String>,
    at: f64,
    series: SeriesIds,
}

impl Inner {
    /// Applies a committed look's changes to the caches.
    pub(super) fn committed(&mut self, changes: SeenChanges) {
        self.series.extend(changes.series);
        if let Some(seen) = self.seen.as_mut() {
            for h in changes.answered {
                seen.answered.insert(h, changes.at);
            }
            for (vm, host) in changes.vms {
                match host {
                    Some(host) => seen.vms.insert(vm, host),
                    None => seen.vms.remove(&vm),
                };
            }
            if let Some(last) = changes.last {
                seen.last = last;
            }
        }
    }
}

/// Writes one look inside `tx` (the caller commits, then applies the returned changes with
/// [`Inner::committed`]). The look must be valid ([`validate::look`]).
pub(super) fn write_look(
    tx: &Transaction<'_>,
    path: &str,
    series: &SeriesIds,
    seen: &Seen,
    look: &Look,
) -> Result<SeenChanges> {
    let at = look.at_s + 0.0;
    let mut changes = SeenChanges {
        at,
        ..SeenChanges::default()
    };
    hosts_seen(tx, path, look, at)?;
    changes.answered = answering(look).map(str::to_string).collect();
    let unchanged = seen.last.as_ref().is_some_and(|last| last.matches(look));
    if !unchanged {
        let answering: HashSet<&str> = answering(look).collect();
        vms_seen(tx, path, seen, &answering, look, at, &mut changes)?;
        let all_present = look.vms.iter().all(|v| answering.contains(v.host.as_str()));
        changes.last = Some(all_present.then(|| Listing::of(look)));
    }
    let hosts = look
        .hosts
        .iter()
        .filter_map(|h| Some((SeriesKind::Host, h.name.as_str(), h.sample?)));
    let vms = look
        .vms
        .iter()
        .filter_map(|v| Some((SeriesKind::Vm, v.name.as_str(), v.sample?)));
    let mut rows = Vec::with_capacity(look.hosts.len() + look.vms.len());
    for (kind, name, s) in hosts.chain(vms) {
        let id = series_id(tx, path, series, &mut changes.series, kind, name)?;
        rows.push((id, s.stored()));
    }
    insert_frame(tx, path, at, rows)?;
    insert_journal(tx, path, &look.journal)?;
    Ok(changes)
}

/// Writes the look's samples (series id, sample already rounded) as its frame, the last
/// sample of a series listed twice winning. A frame already stored at this instant (a second
/// look at the same time) is merged with it, this look's samples replacing the stored ones
/// of the same series, as a row a sample did.
fn insert_frame(
    tx: &Transaction<'_>,
    path: &str,
    at: f64,
    mut rows: Vec<(i64, crate::store::Sample)>,
) -> Result<()> {
    let err = sql(path, "frame", "store a look's samples");
    rows.sort_by_key(|(id, _)| *id);
    let mut entries: Vec<(i64, crate::store::Sample)> = Vec::with_capacity(rows.len());
    for row in rows {
        match entries.last_mut() {
            Some(last) if last.0 == row.0 => *last = row,
            _ => entries.push(row),
        }
    }
    let added = tx
        .prepare_cached("INSERT INTO frame (t, body) VALUES (?1, ?2) ON CONFLICT (t) DO NOTHING")
        .and_then(|mut st| st.execute(params![at, frame::encode(&entries)]))
        .map_err(&err)?;
    if added > 0 {
        return Ok(());
    }
    let stored: Vec<u8> = tx
        .query_row("SELECT body FROM frame WHERE t = ?1", [at], |r| r.get(0))
        .map_err(&err)?;
    let mut merged: std::collections::BTreeMap<i64, crate::store::Sample> =
        frame::decode_all(&stored)
            .map_err(|e| corrupt(path, &e))?
            .into_iter()
            .collect();
    merged.extend(entries);
    let merged: Vec<_> = merged.into_iter().collect();
    tx.execute(
        "UPDATE frame SET body = ?2 WHERE t = ?1",
        params![at, frame::encode(&merged)],
    )
    .map_err(&err)?;
    Ok(())
}

/// A stored frame that cannot be read.
pub(super) fn corrupt(path: &str, e: &frame::FrameError) -> StoreError {
    StoreError::Corrupt {
        path: path.to_string(),
        table: "frame",
        what: e.to_string(),
    }
}

/// The caches a look needs, loaded by the first look after opening.
pub(super) fn ready(inner: &mut Inner, path: &str) -> Result<()> {
    if inner.seen.is_none() {
        inner.seen = Some(Seen::load(&inner.conn, path)?);
    }
    Ok(())
}

fn hosts_seen(tx: &Transaction<'_>, path: &str, look: &Look, at: f64) -> Result<()> {
    let err = sql(path, "host", "record a host's reachability");
    let mut st = tx
        .prepare_cached(
            "UPDATE host SET reachable = ?2,
                 last_seen_s = CASE WHEN ?2 THEN ?3 ELSE last_seen_s END,
                 answered_s = CASE WHEN ?4 THEN ?3 ELSE answered_s END
             WHERE name = ?1",
        )
        .map_err(&err)?;
    for h in &look.hosts {
        let answered = h.sample.is_some();
        if st
            .execute(params![h.name, h.reachable, at, answered])
            .map_err(&err)?
            == 0
        {
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

/// Writes the VM rows this look changes (see the module doc).
fn vms_seen(
    tx: &Transaction<'_>,
    path: &str,
    seen: &Seen,
    answering: &HashSet<&str>,
    look: &Look,
    at: f64,
    changes: &mut SeenChanges,
) -> Result<()> {
    let err = sql(
        path,
        "vm",
        "record a VM (its host must be in the inventory)",
    );
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO vm (name, host, first_seen_s, last_seen_s, present)
             VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET host = excluded.host,
                 last_seen_s = excluded.last_seen_s, present = excluded.present",
        )
        .map_err(&err)?;
    let mut listed: HashSet<&str> = HashSet::with_capacity(look.vms.len());
    for v in &look.vms {
        listed.insert(v.name.as_str());
        let present = answering.contains(v.host.as_str());
        if present && seen.vms.get(&v.name) == Some(&v.host) {
            continue;
        }
        upsert
            .execute(params![v.name, v.host, at, present])
            .map_err(&err)?;
        changes
            .vms
            .push((v.name.clone(), present.then(|| v.host.clone())));
    }
    // Present VMs their answering host no longer lists: last seen at its previous answer.
    let mut gone = tx
        .prepare_cached(
            "UPDATE vm SET present = 0, last_seen_s = coalesce(?2, last_seen_s) WHERE name = ?1",
        )
        .map_err(&err)?;
    for (vm, host) in &seen.vms {
        if answering.contains(host.as_str()) && !listed.contains(vm.as_str()) {
            gone.execute(params![vm, seen.answered.get(host)])
                .map_err(&err)?;
            changes.vms.push((vm.clone(), None));
        }
    }
    Ok(())
}

/// The series' id, made if new; ids made in this transaction go to `fresh`, and into the
/// cache only once it commits.
fn series_id(
    tx: &Transaction<'_>,
    path: &str,
    cache: &SeriesIds,
    fresh: &mut SeriesIds,
    kind: SeriesKind,
    name: &str,
) -> Result<i64> {
    if let Some(id) = cache.get(kind, name).or_else(|| fresh.get(kind, name)) {
        return Ok(id);
    }
    let key = SeriesKey {
        kind,
        name: name.to_string(),
    };
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
    fresh.insert(kind, key.name, id);
    Ok(id)
}

pub(super) fn lookup_series(conn: &Connection, key: &SeriesKey) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM series WHERE kind = ?1 AND name = ?2")?
        .query_row(params![key.kind.name(), key.name], |r| r.get(0))
        .optional()
}

/// Stores one look in one transaction, every row through a prepared statement.
pub(super) fn record_look(inner: &mut Inner, path: &str, look: &Look) -> Result<()> {
    validate::look(path, look)?;
    ready(inner, path)?;
    let changes = {
        let Inner {
            conn, series, seen, ..
        } = &mut *inner;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql(path, "sample", "begin a look"))?;
        let seen = seen.get_or_insert_with(Seen::default);
        let changes = write_look(&tx, path, series, seen, look)?;
        tx.commit().map_err(sql(path, "sample", "commit a look"))?;
        changes
    };
    inner.committed(changes);
    Ok(())
}
