//! How results reach the user: one-line JSON objects for scripts, a progress
//! bar for people at a terminal, and formatted rates.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Prints one JSON object as a line on stdout and flushes.
pub fn json_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Prints a line on stdout and flushes (so pipes see it at once).
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// `12.3 Mbit/s`.
pub fn rate(bits_per_sec: f64) -> String {
    if bits_per_sec >= 1e9 {
        format!("{:.2} Gbit/s", bits_per_sec / 1e9)
    } else {
        format!("{:.1} Mbit/s", bits_per_sec / 1e6)
    }
}

/// `NAME: BYTES bytes (SHARE %), rtt RTT ms[, loss L %]`: one path of a
/// finished multi-path transfer; the share is of all paths' bytes (on the
/// FEC plane, shard bytes delivered, repairs included).
pub fn path_share(
    p: &chunkstream_engine::multipath::spec::PathReport,
    all: &[chunkstream_engine::multipath::spec::PathReport],
) -> String {
    let total: u64 = all.iter().map(|q| q.bytes).sum();
    let loss = p
        .loss
        .map_or(String::new(), |l| format!(", loss {:.1} %", l * 100.0));
    format!(
        "{}: {} bytes ({:.0} %), rtt {:.1} ms{loss}",
        p.name,
        p.bytes,
        p.bytes as f64 * 100.0 / total.max(1) as f64,
        p.rtt_ms
    )
}

/// A progress bar of acknowledged bytes, shown only on a terminal and
/// never with `--json`.
pub fn progress_bar(total: u64, json: bool) -> Option<ProgressBar> {
    if json || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {bytes}/{total_bytes} acked  {bytes_per_sec}  ETA {eta}  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
