//! One SVG figure per run: each VM's throughput (top) and each host's load, demand over
//! capacity, with standby drawn as -0.1 (bottom), over seconds since the run's start; black
//! lines mark the raise and the fall, red ones each migration's start and end.

use crate::config::DemoConfig;
use crate::runner::RunOutcome;
use crate::series::Power;
use plotters::prelude::*;
use std::path::Path;

pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// A panel's named lines, its y range and its horizontal reference (the hosts' cap), if any.
pub(crate) struct Panel {
    pub(crate) caption: String,
    pub(crate) lines: Vec<(String, Vec<(f64, f64)>)>,
    pub(crate) y: std::ops::Range<f64>,
    pub(crate) reference: Option<f64>,
}

/// Writes `run`'s figure to `path`.
///
/// # Errors
/// plotters' message.
pub fn figure(path: &Path, run: &RunOutcome, config: &DemoConfig) -> Result<(), String> {
    let s = &run.summary;
    let t0 = s.phases.start_s;
    let t_end = (s.phases.end_s - t0).max(1.0);
    let mut marks: Vec<(f64, RGBColor)> = vec![
        (s.phases.raised_s - t0, BLACK),
        (s.phases.fell_s - t0, BLACK),
    ];
    for m in &s.migrations {
        marks.push((m.migration.started_s - t0, RED));
        if let Some(end) = m.migration.ended_s {
            marks.push((end - t0, RED));
        }
    }
    let vms: Vec<(String, Vec<(f64, f64)>)> = config
        .vm_names()
        .into_iter()
        .map(|name| {
            let points = run
                .series
                .iter()
                .filter_map(|x| x.vm(&name).map(|v| (x.t_s - t0, v.ops_per_s)))
                .collect();
            (name, points)
        })
        .collect();
    let hosts: Vec<(String, Vec<(f64, f64)>)> = (1..=config.hosts)
        .map(|i| {
            let name = format!("h{i}");
            let points = run
                .series
                .iter()
                .filter_map(|x| {
                    let h = x.host(&name)?;
                    let y = if h.power == Power::Standby {
                        -0.1
                    } else {
                        h.load()
                    };
                    Some((x.t_s - t0, y))
                })
                .collect();
            (name, points)
        })
        .collect();
    let top = |lines: &[(String, Vec<(f64, f64)>)], floor: f64| {
        1.1 * lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(floor, f64::max)
    };
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(360);
    let throughput = Panel {
        caption: format!(
            "{} run {}: VM throughput, ops/s (raised: {})",
            s.technique.as_str(),
            s.run,
            config.high_label()
        ),
        y: 0.0..top(&vms, 1.0),
        lines: vms,
        reference: None,
    };
    draw(&upper, throughput, t_end, &marks)?;
    let load = Panel {
        caption: "host load (CPU demand / cap; -0.1 = standby)".into(),
        y: -0.15..top(&hosts, 1.2),
        lines: hosts,
        reference: Some(1.0),
    };
    draw(&lower, load, t_end, &marks)?;
    root.present().map_err(|e| e.to_string())
}

/// Draws `panel` on `area`: its lines over 0..`t_end` s with a legend, and vertical `marks`.
pub(crate) fn draw(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: Panel,
    t_end: f64,
    marks: &[(f64, RGBColor)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let (y_lo, y_hi) = (panel.y.start, panel.y.end);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_end, panel.y)
        .map_err(err)?;
    chart.configure_mesh().x_desc("s").draw().map_err(err)?;
    for (i, (name, points)) in panel.lines.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, &color))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    if let Some(y) = panel.reference {
        let style = ShapeStyle::from(&BLACK.mix(0.3));
        chart
            .draw_series(LineSeries::new(vec![(0.0, y), (t_end, y)], style))
            .map_err(err)?;
    }
    for &(x, color) in marks {
        let style = ShapeStyle::from(&color.mix(0.6));
        chart
            .draw_series(LineSeries::new(vec![(x, y_lo), (x, y_hi)], style))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{HostSample, Sample, VmSample};
    use crate::summary::{summarize, Phases, RunInputs};
    use drover_core::control::HostPower;
    use drover_core::migration::Technique;

    #[test]
    fn a_figure_has_both_panels_every_line_and_the_marks() {
        let series: Vec<Sample> = (0u32..20)
            .map(|t| Sample {
                t_s: f64::from(t),
                hosts: vec![HostSample {
                    name: "h1".into(),
                    power: Power::Active,
                    cpus: 1.5,
                    demand_cores: 2.0,
                    used_cores: 1.5,
                    vms: 2,
                }],
                vms: vec![VmSample {
                    name: "d1".into(),
                    host: "h1".into(),
                    ops: u64::from(t) * 100,
                    demanded_ops: Some(u64::from(t) * 120),
                    ops_per_s: 100.0,
                    integrity_errors: 0,
                    full_ops_per_s: None,
                }],
            })
            .collect();
        let config = DemoConfig {
            hosts: 1,
            vms: 1,
            raise: 1,
            ..DemoConfig::default()
        };
        let summary = summarize(&RunInputs {
            technique: Technique::Postcopy,
            run: 1,
            host: "h1",
            vms: vec![("d1".into(), true)],
            phases: Phases {
                start_s: 0.0,
                raised_s: 5.0,
                fell_s: 15.0,
                end_s: 19.0,
            },
            series: &series,
            plans: &[],
            migrations: &[],
            power: HostPower::default(),
            floor_s: 0.5,
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.svg");
        figure(&path, &RunOutcome { summary, series }, &config).expect("figure");
        let svg = std::fs::read_to_string(&path).expect("read");
        for part in [
            "<svg",
            "VM throughput",
            "host load",
            ">\nd1\n<",
            ">\nh1\n<",
            "polyline",
        ] {
            assert!(svg.contains(part), "no {part:?} in the figure");
        }
    }
}
