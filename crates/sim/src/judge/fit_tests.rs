//! The fit recovers known parameters from rows the judge itself produced.

use super::*;
use crate::judge::fixtures::known;
use crate::judge::rows::Measured;

const MIB: f64 = 1048576.0;

/// A row measured exactly as `p` predicts.
fn row(p: &JudgeParams, t: Technique, mem_mib: f64, wss_mib: f64, dirty: f64, bw: f64) -> Measured {
    let mut r = Measured {
        technique: t,
        memory_bytes: mem_mib * MIB,
        wss_bytes: wss_mib * MIB,
        dirty_bps: dirty,
        bandwidth_bps: bw,
        converged: true,
        moved: true,
        total_s: 0.0,
        downtime_s: None,
        bytes: 0.0,
        lost_work_s: None,
    };
    let case = case_of(&r, p.baseline_bytes);
    let o = p.judge(&case, t);
    r.converged = !matches!(t, Technique::Precopy) || p.precopy_end(&case) == PrecopyEnd::Converged;
    r.moved = o.moved;
    r.total_s = o.total_s;
    r.downtime_s = o.moved.then_some(o.downtime_s);
    r.bytes = o.bytes;
    r.lost_work_s = Some(o.lost_work_s);
    r
}

fn synthetic(p: &JudgeParams) -> Vec<Measured> {
    let mut rows = Vec::new();
    let grid = [
        (256.0, 128.0, 10e6, 50e6),
        (256.0, 64.0, 40e6, 25e6),
        (512.0, 256.0, 20e6, 100e6),
        (1024.0, 512.0, 5e6, 100e6),
        (512.0, 64.0, 100e6, 100e6),
        (256.0, 128.0, 2e9, 50e6),
        (512.0, 256.0, 60e6, 50e6),
        (256.0, 0.0, 0.0, 50e6),
        (256.0, 128.0, 40e6, 1e9),
    ];
    for t in [Technique::Precopy, Technique::Postcopy, Technique::Hybrid] {
        for &(m, w, d, b) in &grid {
            rows.push(row(p, t, m, w, d, b));
        }
    }
    rows
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * b.abs().max(1e-9) + 1e-12,
        "{what}: fitted {a}, known {b}"
    );
}

#[test]
fn the_fit_recovers_known_parameters() {
    let truth = known();
    let rows = synthetic(&truth);
    assert!(
        rows.iter().any(|r| !r.converged && r.moved),
        "the grid needs escalations"
    );
    assert!(
        rows.iter().any(|r| !r.moved),
        "the grid needs cancellations"
    );
    let got = fit(&rows, 0.3).expect("fits");
    close(got.baseline_bytes, truth.baseline_bytes, "baseline");
    for (g, k, what) in [
        (got.escalated, truth.escalated, "escalated"),
        (got.cancelled, truth.cancelled, "cancelled"),
    ] {
        close(g.total_s, k.total_s, &format!("{what} total_s"));
        close(g.downtime_s, k.downtime_s, &format!("{what} downtime_s"));
        close(g.lost_share, k.lost_share, &format!("{what} lost_share"));
        close(g.link_share, k.link_share, &format!("{what} link_share"));
    }
    for t in [Technique::Precopy, Technique::Postcopy, Technique::Hybrid] {
        let (g, k) = (got.technique(t), truth.technique(t));
        close(g.resend, k.resend, &format!("{t} resend"));
        close(g.fixed_s, k.fixed_s, &format!("{t} fixed_s"));
        close(g.transfer_factor, k.transfer_factor, &format!("{t} factor"));
        close(g.pause_s, k.pause_s, &format!("{t} pause_s"));
        close(
            g.pause_per_byte,
            k.pause_per_byte,
            &format!("{t} pause/byte"),
        );
        close(g.lost_coef, k.lost_coef, &format!("{t} lost"));
    }
    // The thresholds fall in the gaps between the pressures of the three ends, so every row
    // is classified as measured.
    let ordered = |p: &JudgeParams| p.convergence_pressure < p.escalation_pressure;
    assert!(ordered(&got) && ordered(&truth));
    let errors = in_sample(&got, &rows);
    assert_eq!(errors.convergence_right, errors.convergence_rows);
    for f in &errors.figures {
        assert!(f.mae < 1e-6, "{f:?}");
    }
    assert_eq!(got.rows, rows.len());
}

#[test]
fn the_same_rows_give_the_same_parameters() {
    let rows = synthetic(&known());
    assert_eq!(fit(&rows, 0.3), fit(&rows, 0.3));
}

#[test]
fn noisy_rows_have_a_nonzero_error_and_leave_one_out_is_worse() {
    let truth = known();
    let mut rows = synthetic(&truth);
    for (i, r) in rows.iter_mut().enumerate() {
        // A deterministic +-10% wobble on the duration.
        r.total_s *= if i % 2 == 0 { 1.1 } else { 0.9 };
    }
    let got = fit(&rows, 0.3).expect("fits");
    let fitted = in_sample(&got, &rows);
    let (loo, skipped) = leave_one_out(&rows, 0.3);
    assert_eq!(skipped, 0);
    let duration = |e: &Errors| {
        e.figures
            .iter()
            .filter(|f| f.figure == Figure::Duration)
            .map(|f| f.mare.expect("rows"))
            .sum::<f64>()
    };
    assert!(duration(&fitted) > 0.01);
    assert!(duration(&loo) >= duration(&fitted));
    let table = markdown(&fitted, &loo);
    assert!(table.contains("| precopy | duration s |"), "{table}");
}

#[test]
fn missing_rows_are_named() {
    let rows: Vec<Measured> = synthetic(&known())
        .into_iter()
        .filter(|r| r.technique != Technique::Postcopy)
        .collect();
    let err = fit(&rows, 0.3).expect_err("no post-copy");
    assert_eq!(
        err.to_string(),
        "the fit needs at least 1 converged post-copy rows; the rows have 0"
    );
    let converging: Vec<Measured> = synthetic(&known())
        .into_iter()
        .filter(|r| r.converged)
        .collect();
    let err = fit(&converging, 0.3).expect_err("no failures");
    assert!(err.to_string().contains("did not converge"), "{err}");
}
