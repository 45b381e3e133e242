//! The SQLite store at the issue's scale: 1,000 hosts and 10,000 VMs reporting every second.
//! Ignored (it takes a minute or two and a few hundred MB); run by hand, in release, under
//! `time` for the CPU it used:
//!
//! ```text
//! cargo test --release -p drover-manager sizing -- --ignored --nocapture
//! DROVER_STORE_SIZING=1000,10000,120 cargo test ...   # hosts, VMs, seconds of looks
//! ```
//!
//! It prints the time of a look, of a compaction and of history reads, and the bytes per row of
//! the frame and rollup tables (SQLite's `dbstat`; a frame is a look's samples), the rollups
//! also at a day of minutes per series (their steady-state page fill).

use super::*;
use std::time::Instant;

fn scale() -> (usize, usize, u32) {
    let given = std::env::var("DROVER_STORE_SIZING").unwrap_or_default();
    let n: Vec<usize> = given
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    match n[..] {
        [h, v, s] => (h, v, u32::try_from(s).unwrap_or(120)),
        _ => (1000, 10_000, 120),
    }
}

/// A small deterministic generator: a realistic spread of values, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sample(&mut self, cores: f64) -> Sample {
        let load = self.next();
        Sample {
            load,
            cpu_cores: load * cores,
            memory_bytes: (1u64 << 32) + (self.next() * 1e9) as u64,
            dirty_bps: Some(self.next() * 5e7),
            rx_bps: self.next() * 1e7,
            tx_bps: self.next() * 1e7,
        }
    }

    fn look(&mut self, at_s: f64, hosts: &[String], vms: usize) -> Look {
        Look {
            at_s,
            hosts: hosts
                .iter()
                .map(|n| HostLook {
                    name: n.clone(),
                    reachable: true,
                    sample: Some(self.sample(32.0)),
                })
                .collect(),
            vms: (0..vms)
                .map(|i| VmLook {
                    name: format!("vm-{i:05}"),
                    host: hosts[i % hosts.len()].clone(),
                    sample: Some(self.sample(4.0)),
                })
                .collect(),
            journal: vec![],
        }
    }
}

/// Bytes per row of `table`, after a checkpoint (pages, free space in them included).
fn bytes_per_row(store: &SqliteStore, table: &str) -> (i64, f64) {
    store.with_conn(|c| {
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        let rows: i64 = c
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        let bytes: i64 = c
            .query_row(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .expect("dbstat");
        (rows, bytes as f64 / rows.max(1) as f64)
    })
}

fn store_with_hosts(dir: &std::path::Path, hosts: usize) -> (SqliteStore, Vec<String>) {
    let store = SqliteStore::open_in(dir, Retention::default()).expect("open");
    let names: Vec<String> = (0..hosts).map(|i| format!("host-{i:04}")).collect();
    for n in &names {
        store.add_host(&spec(n), 0.0).expect("add");
    }
    (store, names)
}

#[test]
#[ignore = "a measurement at full scale: run by hand with --ignored --nocapture"]
fn sizing() {
    let (hosts, vms, seconds) = scale();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, names) = store_with_hosts(dir.path(), hosts);
    let mut rng = Lcg(7);
    let t0 = 1_750_000_020.0;
    let mut times = Vec::new();
    for s in 0..seconds {
        let look = rng.look(t0 + f64::from(s) + 0.137, &names, vms);
        let start = Instant::now();
        store.record_look(&look).expect("look");
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("{hosts} hosts, {vms} VMs, {seconds} looks: {mean:.1} ms mean, {max:.1} ms max");
    let (rows, per_row) = bytes_per_row(&store, "frame");
    println!(
        "frame: {rows} rows, {per_row:.0} bytes/row, {:.1} bytes a sample",
        per_row / (hosts + vms) as f64
    );

    // Before compaction: one series' seconds are a scan of the whole raw window.
    let start = Instant::now();
    let h = store
        .history(&SeriesKey::vm("vm-00042"), 0.0)
        .expect("history");
    println!(
        "history of one VM over {} s of raw samples: {:.1} ms",
        h.seconds.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let start = Instant::now();
    let all = store.histories(SeriesKind::Vm, 0.0).expect("histories");
    println!(
        "history of every VM ({}): {:.0} ms",
        all.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(all);
    let start = Instant::now();
    let done = store
        .compact(t0 + f64::from(seconds) + 660.0)
        .expect("compact");
    println!(
        "compaction: {done:?} in {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let start = Instant::now();
    let h = store
        .history(&SeriesKey::vm("vm-00042"), 0.0)
        .expect("history");
    println!(
        "history of one VM: {} minutes in {:.1} ms",
        h.minutes.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(store);

    // A day of minutes for a few series: one look a minute, compacted every ten.
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, names) = store_with_hosts(dir.path(), 20);
    for m in 0..1440u32 {
        let at = t0 + f64::from(m) * 60.0;
        store.record_look(&rng.look(at, &names, 180)).expect("look");
        if m % 10 == 9 {
            store.compact(at).expect("compact");
        }
    }
    let (rows, per_row) = bytes_per_row(&store, "rollup");
    println!("rollup after a day of minutes: {rows} rows, {per_row:.1} bytes/row");
}
