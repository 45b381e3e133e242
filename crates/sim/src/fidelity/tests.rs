use super::*;

const CSV: &str = "day,policy,hosts,vms,energy_kwh,migrations,slav_pct,pdm_pct,slatah_pct
d1,dvfs,800,10,100.0,0,0.00000,0.00,0.00
d1,thr_mmt_0.8,800,10,200.0,1000,0.00350,0.07,5.00
d2,thr_mmt_0.8,800,10,100.0,2000,0.00600,0.12,5.00
";

/// A report with the metrics the comparison reads; the rest empty.
fn report(day: &str, policy: &str, energy: f64, migr: u64, slatah: f64, pdm: f64) -> Report {
    Report {
        policy: policy.into(),
        day: day.into(),
        hosts: 800,
        vms: 10,
        energy_kwh: energy,
        migrations: migr,
        slatah_pct: slatah,
        pdm_pct: pdm,
        slav_pct: slatah * pdm / 100.0,
        esv: energy * slatah * pdm / 1e4,
        wall_ms: 0.0,
        overload_migrations: 0,
        underload_migrations: 0,
        failed_migrations: 0,
        migrated_gb: 0.0,
        vms_rejected: 0,
        rejected_vms: Vec::new(),
        mean_active_hosts: 0.0,
        migration_model: "benchmark".into(),
        techniques: Vec::new(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn parses_and_normalizes_policy_names_and_derives_pdm_from_slav() {
    let r = Reference::parse(CSV, "ref.csv").unwrap();
    assert_eq!(r.days(), vec!["d1", "d2"]);
    assert_eq!(r.policies(), vec!["dvfs", "thr-mmt-0.8"]);
    let row = &r.rows[&("d1".to_string(), "thr-mmt-0.8".to_string())];
    // 0.0035% / 5% = 0.0007 -> 0.07%, finer than the printed 0.07.
    assert!(close(row.pdm_derived_pct(), 0.07));
    assert!(close(row.esv(), 200.0 * 0.0035 / 100.0));
    // Zero SLATAH: the printed column.
    let dvfs = &r.rows[&("d1".to_string(), "dvfs".to_string())];
    assert_eq!(dvfs.pdm_derived_pct(), 0.0);
}

#[test]
fn derived_pdm_is_finer_than_the_printed_two_decimals() {
    // CloudSim printed 0.07 for a PDM of 0.0681 (SLAV 0.00342% at SLATAH 5.02%).
    let csv =
        "day,policy,energy_kwh,migrations,slav_pct,pdm_pct,slatah_pct\nd,p,1,1,0.00342,0.07,5.02\n";
    let r = Reference::parse(csv, "x").unwrap();
    let row = &r.rows[&("d".to_string(), "p".to_string())];
    assert!((row.pdm_derived_pct() - 0.068127).abs() < 1e-5);
}

#[test]
fn bad_reference_is_an_error_naming_file_line_and_field() {
    let e = Reference::parse("day,policy,energy_kwh\n", "ref.csv").unwrap_err();
    assert!(e.to_string().contains("ref.csv") && e.to_string().contains("migrations"));
    let bad = CSV.replace("200.0", "lots");
    let e = Reference::parse(&bad, "ref.csv").unwrap_err().to_string();
    assert!(e.contains("ref.csv line 3") && e.contains("energy_kwh") && e.contains("lots"));
    let short = CSV.replace(",0.00350,0.07,5.00", "");
    let e = Reference::parse(&short, "ref.csv").unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("fields"), "{e}");
    let dup = format!("{CSV}d2,thr-mmt-0.8,800,10,1,1,0,0,0\n");
    assert!(matches!(
        Reference::parse(&dup, "r"),
        Err(FidelityError::Duplicate { line: 5, .. })
    ));
    assert!(matches!(
        Reference::parse("", "r"),
        Err(FidelityError::Empty { .. })
    ));
    let neg = CSV.replace("1000", "-5");
    assert!(Reference::parse(&neg, "r").is_err());
}

#[test]
fn relative_deviation_handles_zero_references() {
    assert!(close(relative_deviation(110.0, 100.0).unwrap(), 0.10));
    assert_eq!(relative_deviation(0.0, 0.0), Some(0.0));
    assert_eq!(relative_deviation(1.0, 0.0), None);
}

#[test]
fn mean_absolute_deviation_does_not_let_days_cancel() {
    let r = Reference::parse(CSV, "ref.csv").unwrap();
    // d1: energy 220 vs 200 (+10%); d2: 90 vs 100 (-10%). Signed mean 0, MAD 10%.
    // d1 migrations 1000 = 1000; d2 2600 vs 2000 (+30%): MAD 15%, one day beyond 15%.
    // PDM: d1 0.077 vs 0.07 (+10%); d2 0.108 vs 0.12 (-10%).
    // SLAV: d1 5 x 0.077 / 100 = 0.00385 vs 0.0035 (+10%); d2 5.5 x 0.108 / 100 = 0.00594
    // vs 0.006 (-1%). SLATAH: d1 5 vs 5, d2 5.5 vs 5 (+10%).
    let reports = vec![
        report("d1", "thr-mmt-0.8", 220.0, 1000, 5.0, 0.077),
        report("/traces/d2/", "thr-mmt-0.8", 90.0, 2600, 5.5, 0.108),
        report("d1", "dvfs", 100.0, 0, 0.0, 0.0),
        report("d1", "drover", 50.0, 3, 0.1, 0.01), // not in the reference: ignored
    ];
    let f = compare(&reports, &r, 0.15);
    assert_eq!(f.pairs.len(), 3);
    assert!(f.unmatched.is_empty());
    let thr = &f.summary["thr-mmt-0.8"];
    assert!(close(thr[&Metric::Energy].mad, 0.10));
    assert_eq!(thr[&Metric::Energy].beyond, 0);
    assert!(close(thr[&Metric::Migrations].mad, 0.15));
    assert!(close(thr[&Metric::Migrations].worst, 0.30));
    assert_eq!(thr[&Metric::Migrations].worst_day, "d2");
    assert_eq!(thr[&Metric::Migrations].beyond, 1);
    assert!(close(thr[&Metric::Pdm].mad, 0.10));
    assert!(close(thr[&Metric::Slav].mad, (0.10 + 0.01) / 2.0));
    assert!(close(thr[&Metric::Slatah].mad, 0.05));
    // DVFS: every SLA reference is zero, so there is no relative deviation to average; its
    // energy (100 vs 100) is exact.
    let dvfs = &f.summary["dvfs"];
    assert!(close(dvfs[&Metric::Energy].mad, 0.0));
    assert!(!dvfs.contains_key(&Metric::Pdm) && !dvfs.contains_key(&Metric::Migrations));
    // `all` pools the three energy deviations: (10 + 10 + 0) / 3.
    assert!(close(f.summary["all"][&Metric::Energy].mad, 0.2 / 3.0));
    assert_eq!(
        f.violations(&[Metric::Migrations]),
        vec!["d2 thr-mmt-0.8 migrations +30.0%"]
    );
    let text = f.render();
    assert!(
        text.contains("thr-mmt-0.8") && text.contains("15.0% (+30%) 1/2"),
        "{text}"
    );
}

#[test]
fn reference_rows_without_a_run_are_listed() {
    let r = Reference::parse(CSV, "ref.csv").unwrap();
    let f = compare(&[report("d1", "dvfs", 100.0, 0, 0.0, 0.0)], &r, 0.15);
    assert_eq!(f.unmatched, vec!["d1 thr-mmt-0.8", "d2 thr-mmt-0.8"]);
}
