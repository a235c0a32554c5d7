//! Reports as SVG (plotters). [`plot`] picks the chart: for reports that
//! sweep loss, goodput against loss ([`plot_goodput_vs_loss`]): one line
//! per contender and report (median goodput of verified runs), and the
//! ceiling `rate × (1 − loss)` of the first report's first path for
//! reference; for reports that do not (`quick`, `multipath`), one bar per
//! contender and report ([`plot_goodput_bars`]) beside the sum of the path
//! rates. Where no run finished and verified, there is no goodput: the
//! point (or an empty bar) is drawn at the rate the link carried meanwhile
//! (an upper bound), and the legend says so.

use std::path::Path;

use plotters::prelude::*;

use crate::compare::cells;
use crate::report::Report;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `reports` into `out`: goodput against loss if any of them sweeps
/// loss, else goodput per contender.
pub fn plot(reports: &[Report], out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!reports.is_empty(), "nothing to plot: no report");
    let sweeps = reports
        .iter()
        .any(|r| r.runs.iter().any(|run| run.loss.is_some_and(|l| l > 0.0)));
    if sweeps {
        plot_goodput_vs_loss(reports, out)
    } else {
        plot_goodput_bars(reports, out)
    }
}

/// Draws one bar per contender and report: the median goodput of its
/// verified runs (an empty bar at the rate the link carried where none
/// finished), and a line at the sum of the first report's path rates.
pub fn plot_goodput_bars(reports: &[Report], out: &Path) -> anyhow::Result<()> {
    // (label, goodput or the DNF's link rate, finished)
    let mut bars: Vec<(String, f64, bool)> = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        for ((_, contender), cell) in cells(report) {
            let label = if reports.len() > 1 {
                format!("#{} {}", i + 1, contender.name())
            } else {
                contender.name().to_owned()
            };
            match cell.goodput {
                Some(g) => bars.push((label, g / 1e6, true)),
                None => bars.push((label, cell.link_rate / 1e6, false)),
            }
        }
    }
    anyhow::ensure!(
        !bars.is_empty(),
        "nothing to plot: the reports have no runs"
    );
    let paths = reports[0].scenario["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sum_mbit: f64 = paths
        .iter()
        .filter_map(|p| p["rate_bps"].as_f64())
        .sum::<f64>()
        / 1e6;
    let max_y = bars.iter().map(|b| b.1).fold(sum_mbit, f64::max) * 1.15;
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{}: goodput per contender ({})",
        reports[0].scenario_name(),
        reports[0].backend
    );
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..max_y.max(1.0))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("contender (name above its bar)")
        .y_desc("goodput (Mbit/s), verified transfers")
        .draw()?;
    if sum_mbit > 0.0 {
        let label = if paths.len() > 1 {
            "sum of the path rates"
        } else {
            "link rate"
        };
        chart
            .draw_series(LineSeries::new(
                [(0.0, sum_mbit), (n as f64, sum_mbit)],
                BLACK.mix(0.35).stroke_width(1),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.35)));
    }
    for (i, (name, y, finished)) in bars.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let rect = [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *y)];
        let style = if *finished {
            color.filled()
        } else {
            color.stroke_width(2)
        };
        chart.draw_series(std::iter::once(Rectangle::new(rect, style)))?;
        let text = if *finished {
            format!("{y:.1}")
        } else {
            format!("DNF ≤ {y:.1}")
        };
        chart.draw_series(std::iter::once(Text::new(
            text,
            (i as f64 + 0.2, y + max_y * 0.02),
            ("sans-serif", 14),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (i as f64 + 0.2, y + max_y * 0.06),
            ("sans-serif", 14),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws goodput (Mbit/s) against loss (%) for `reports` into `out`.
pub fn plot_goodput_vs_loss(reports: &[Report], out: &Path) -> anyhow::Result<()> {
    // Per contender and report: verified points (the line) and DNF points.
    type Points = Vec<(f64, f64)>;
    let mut lines: Vec<(String, Points, Points)> = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        let mut by_contender: std::collections::BTreeMap<_, (Points, Points)> = Default::default();
        for ((loss_ppm, contender), cell) in cells(report) {
            let x = loss_ppm as f64 / 1e4;
            let entry = by_contender.entry(contender).or_default();
            match cell.goodput {
                Some(g) => entry.0.push((x, g / 1e6)),
                None => entry.1.push((x, cell.link_rate / 1e6)),
            }
        }
        for (contender, (done, dnf)) in by_contender {
            let label = if reports.len() > 1 {
                format!("#{} {}", i + 1, contender.name())
            } else {
                contender.name().to_owned()
            };
            lines.push((label, done, dnf));
        }
    }
    let max_loss = reports
        .iter()
        .flat_map(|r| r.runs.iter().filter_map(|run| run.loss))
        .fold(0.0f64, f64::max)
        * 100.0;
    anyhow::ensure!(
        max_loss > 0.0,
        "nothing to plot: the reports do not sweep loss"
    );
    let rate_mbit = reports[0].scenario["paths"][0]["rate_bps"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6;
    let max_y = lines
        .iter()
        .flat_map(|(_, p, d)| p.iter().chain(d).map(|q| q.1))
        .fold(rate_mbit, f64::max)
        * 1.1;

    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{}: goodput vs random loss ({})",
        reports[0].scenario_name(),
        reports[0].backend
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_loss * 1.02, 0.0..max_y.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("random loss (%)")
        .y_desc("goodput (Mbit/s), verified transfers")
        .draw()?;
    if rate_mbit > 0.0 {
        let ceiling: Vec<(f64, f64)> = (0..=100)
            .map(|i| {
                let l = max_loss * i as f64 / 100.0;
                (l, rate_mbit * (1.0 - l / 100.0))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(ceiling, BLACK.mix(0.35).stroke_width(1)))?
            .label("link rate × (1 − loss)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.35)));
    }
    let any_dnf = lines.iter().any(|(_, _, d)| !d.is_empty());
    for (i, (label, points, dnf)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart.draw_series(dnf.iter().map(|&p| Cross::new(p, 5, color.stroke_width(2))))?;
    }
    if any_dnf {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("× did not finish: rate the link carried")
            .legend(|(x, y)| Cross::new((x + 9, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}
