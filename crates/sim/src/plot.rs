//! An SVG chart of a comparison: energy, migrations and ESV per policy (averaged over days),
//! each as bars scaled to its own maximum. Written by hand: three bar groups need no plotting
//! library.

use crate::metrics::Report;
use std::fmt::Write;

/// A metric's title and how to read it off a report.
type Metric<'a> = (&'a str, &'a dyn Fn(&Report) -> f64);

/// Renders the chart.
pub fn svg(reports: &[Report]) -> String {
    let mut policies: Vec<String> = Vec::new();
    for r in reports {
        if !policies.contains(&r.policy) {
            policies.push(r.policy.clone());
        }
    }
    let mean = |p: &str, f: &dyn Fn(&Report) -> f64| {
        let rows: Vec<f64> = reports.iter().filter(|r| r.policy == p).map(f).collect();
        rows.iter().sum::<f64>() / rows.len().max(1) as f64
    };
    let metrics: [Metric; 3] = [
        ("energy (kWh)", &|r| r.energy_kwh),
        ("migrations", &|r| r.migrations as f64),
        ("ESV", &|r| r.esv),
    ];
    let (bar_h, gap, label_w, plot_w) = (16.0, 6.0, 130.0, 300.0);
    let panel_h = policies.len() as f64 * (bar_h + gap) + 40.0;
    let width = label_w + 3.0 * (plot_w + 30.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{panel_h}" font-family="sans-serif" font-size="11">"#
    );
    for (i, p) in policies.iter().enumerate() {
        let y = 30.0 + i as f64 * (bar_h + gap) + bar_h * 0.75;
        let _ = writeln!(s, r#"<text x="4" y="{y}">{}</text>"#, escape(p));
    }
    for (m, (title, f)) in metrics.iter().enumerate() {
        let x0 = label_w + m as f64 * (plot_w + 30.0);
        let values: Vec<f64> = policies.iter().map(|p| mean(p, f)).collect();
        let max = values.iter().copied().fold(0.0, f64::max).max(1e-12);
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="16" font-weight="bold">{title}</text>"#
        );
        for (i, v) in values.iter().enumerate() {
            let y = 30.0 + i as f64 * (bar_h + gap);
            let w = plot_w * 0.8 * v / max;
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y}" width="{w:.1}" height="{bar_h}" fill="#4a7ab5"/>"##
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + w + 4.0,
                y + bar_h * 0.75,
                fmt_value(*v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
