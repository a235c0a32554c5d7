//! Reports side by side: one Markdown table of median goodput with ratios.
//!
//! * One report: a row per link point (loss), a column per contender, and
//!   each contender's ratio against the first contender.
//! * Several reports: a row per (point, contender), a column per report, and
//!   each report's ratio against the first report.
//!
//! A cell is the median goodput of the verified repetitions in Mbit/s. When
//! no repetition verified it reads `DNF (link 5.2)`: did not finish, and the
//! median rate the link carried for it meanwhile (wire bytes, so an upper
//! bound on what goodput would have been). Reasons are in the report.
//! Contenders that move memory rather than the file (iperf3) cannot be
//! verified; their cells carry the tool's own rate, marked `†`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::Report;
use crate::scenario::Contender;

/// Median goodput (bit/s) of verified runs per (loss point, contender).
/// Points are keyed in parts per million to sort exactly.
pub fn medians(report: &Report) -> BTreeMap<(u64, Contender), Option<f64>> {
    cells(report)
        .into_iter()
        .map(|(k, c)| (k, c.goodput))
        .collect()
}

/// What one table cell summarises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Median goodput of verified runs (bit/s), if any verified.
    pub goodput: Option<f64>,
    /// Median rate the link delivered during the runs (bit/s).
    pub link_rate: f64,
    /// The goodput is the tool's own figure, not a verified transfer.
    pub unverified: bool,
}

/// A [`Cell`] per (loss point in ppm, contender).
pub fn cells(report: &Report) -> BTreeMap<(u64, Contender), Cell> {
    let mut good: BTreeMap<(u64, Contender), Vec<f64>> = BTreeMap::new();
    let mut link: BTreeMap<(u64, Contender), Vec<f64>> = BTreeMap::new();
    for r in &report.runs {
        let key = (point_key(r.loss), r.contender);
        let delivered: u64 = r.delivered_bytes.iter().sum();
        link.entry(key)
            .or_default()
            .push(delivered as f64 * 8.0 / r.seconds.max(1e-9));
        if let Some(g) = r.goodput_bps
            && (r.verified || !r.verifiable)
        {
            good.entry(key).or_default().push(g);
        }
    }
    link.into_iter()
        .map(|(k, mut rates)| {
            let goodput = good.get_mut(&k).map(|v| median(v));
            (
                k,
                Cell {
                    goodput,
                    link_rate: median(&mut rates),
                    unverified: !k.1.verifiable(),
                },
            )
        })
        .collect()
}

fn point_key(loss: Option<f64>) -> u64 {
    loss.map_or(0, |l| (l * 1e6).round() as u64)
}

fn point_label(key: u64, sweeping: bool) -> String {
    if sweeping {
        format!("{}%", key as f64 / 1e4)
    } else {
        "-".into()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cell(c: Option<Cell>) -> String {
    match c {
        Some(Cell {
            goodput: Some(g),
            unverified,
            ..
        }) => format!("{:.1}{}", g / 1e6, if unverified { " †" } else { "" }),
        Some(Cell {
            goodput: None,
            link_rate,
            ..
        }) => format!("DNF (link {:.1})", link_rate / 1e6),
        None => "-".into(),
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

fn contender_order(report: &Report) -> Vec<Contender> {
    let mut order: Vec<Contender> = Vec::new();
    for r in &report.runs {
        if !order.contains(&r.contender) {
            order.push(r.contender);
        }
    }
    order
}

/// The comparison table for `reports` (at least one), with a footnote when
/// some cells could not be verified.
pub fn table(reports: &[Report]) -> String {
    let mut out = grid(reports);
    if reports
        .iter()
        .any(|r| r.runs.iter().any(|run| !run.contender.verifiable()))
    {
        out.push_str(
            "\n† moves memory, not the file (iperf3): the tool's own rate, no hash checked.\n",
        );
    }
    out
}

fn grid(reports: &[Report]) -> String {
    let mut out = String::new();
    let sweeping = reports
        .iter()
        .any(|r| r.runs.iter().any(|run| run.loss.is_some()));
    if let [report] = reports {
        let m = cells(report);
        let contenders = contender_order(report);
        let points: Vec<u64> = m
            .keys()
            .map(|k| k.0)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = write!(out, "| loss |");
        for c in &contenders {
            let _ = write!(out, " {} (Mbit/s) |", c.name());
        }
        for c in contenders.iter().skip(1) {
            let _ = write!(out, " {} / {} |", c.name(), contenders[0].name());
        }
        out.push('\n');
        out.push_str(&"|---".repeat(1 + contenders.len() + contenders.len().saturating_sub(1)));
        out.push_str("|\n");
        for p in points {
            let _ = write!(out, "| {} |", point_label(p, sweeping));
            let goodput = |c: Contender| m.get(&(p, c)).and_then(|x| x.goodput);
            let base = goodput(contenders[0]);
            for c in &contenders {
                let _ = write!(out, " {} |", cell(m.get(&(p, *c)).copied()));
            }
            for c in contenders.iter().skip(1) {
                let _ = write!(out, " {} |", ratio(goodput(*c), base));
            }
            out.push('\n');
        }
        return out;
    }
    let all: Vec<_> = reports.iter().map(cells).collect();
    let mut keys: Vec<(u64, Contender)> = all.iter().flat_map(|m| m.keys().copied()).collect();
    keys.sort();
    keys.dedup();
    let _ = write!(out, "| loss | contender |");
    for (i, r) in reports.iter().enumerate() {
        let _ = write!(out, " #{} {} (Mbit/s) |", i + 1, r.scenario_name());
    }
    for i in 1..reports.len() {
        let _ = write!(out, " #{} / #1 |", i + 1);
    }
    out.push('\n');
    out.push_str(&"|---".repeat(2 + reports.len() + reports.len() - 1));
    out.push_str("|\n");
    for k in keys {
        let _ = write!(out, "| {} | {} |", point_label(k.0, sweeping), k.1.name());
        let base = all[0].get(&k).and_then(|c| c.goodput);
        for m in &all {
            let _ = write!(out, " {} |", cell(m.get(&k).copied()));
        }
        for m in all.iter().skip(1) {
            let _ = write!(out, " {} |", ratio(m.get(&k).and_then(|c| c.goodput), base));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Run;
    use crate::scenario::Scenario;

    fn run(c: Contender, loss: f64, rep: u32, goodput: Option<f64>) -> Run {
        let mut r = Run::pending(c, Some(loss), rep, 1);
        r.verified = goodput.is_some();
        r.error = goodput.is_none().then(|| "did not finish".into());
        r.seconds = 1.0;
        r.goodput_bps = goodput;
        r
    }

    fn report(runs: Vec<Run>) -> Report {
        let s = Scenario::parse("name = \"t\"\nfile_size = \"1MiB\"\ncontenders = [\"chunkstream\"]\n[[path]]\nrate = \"1mbit\"").unwrap();
        let mut r = Report::new(&s, "udp-relay", "test".into());
        r.runs = runs;
        r
    }

    #[test]
    fn one_report_compares_contenders_by_median() {
        let r = report(vec![
            run(Contender::Chunkstream, 0.0, 1, Some(100e6)),
            run(Contender::Chunkstream, 0.0, 2, Some(120e6)),
            run(Contender::Chunkstream, 0.0, 3, Some(300e6)),
            run(Contender::QuinnCubic, 0.0, 1, Some(60e6)),
            run(Contender::Chunkstream, 0.05, 1, Some(50e6)),
            run(Contender::QuinnCubic, 0.05, 1, None),
        ]);
        let t = table(&[r]);
        assert!(t.contains("| 0% | 120.0 | 60.0 | 0.50× |"), "{t}");
        assert!(t.contains("| 5% | 50.0 | DNF (link 0.0) | - |"), "{t}");
    }

    #[test]
    fn unverifiable_contenders_show_their_own_rate_marked() {
        let mut iperf = Run::pending(Contender::Iperf3Bbr, Some(0.0), 1, 1);
        iperf.seconds = 1.0;
        iperf.goodput_bps = Some(90e6);
        assert!(!iperf.verified && !iperf.verifiable);
        let mut failed = Run::pending(Contender::Iperf3Bbr, Some(0.01), 1, 1);
        failed.error = Some("iperf3: unable to connect".into());
        failed.seconds = 1.0;
        let r = report(vec![
            run(Contender::TcpBbr, 0.0, 1, Some(100e6)),
            iperf,
            run(Contender::TcpBbr, 0.01, 1, Some(80e6)),
            failed,
        ]);
        let t = table(&[r]);
        assert!(t.contains("| 0% | 100.0 | 90.0 † | 0.90× |"), "{t}");
        assert!(t.contains("| 1% | 80.0 | DNF (link 0.0) | - |"), "{t}");
        assert!(t.contains("† moves memory, not the file"), "{t}");
        let plain = table(&[report(vec![run(Contender::TcpBbr, 0.0, 1, Some(1e6))])]);
        assert!(!plain.contains('†'), "{plain}");
    }

    #[test]
    fn several_reports_compare_against_the_first() {
        let a = report(vec![run(Contender::Chunkstream, 0.01, 1, Some(100e6))]);
        let b = report(vec![run(Contender::Chunkstream, 0.01, 1, Some(150e6))]);
        let t = table(&[a, b]);
        assert!(
            t.contains("| 1% | chunkstream | 100.0 | 150.0 | 1.50× |"),
            "{t}"
        );
    }
}
