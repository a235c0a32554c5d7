//! The agent's counters, and `GET /metrics` in the Prometheus text format
//! (version 0.0.4): counters end in `_total`, sizes are in bytes, times in
//! seconds, rates in bits per second, every name starts `chunkstream_`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the agent started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Send jobs that ended, by outcome.
    pub sends_done: AtomicU64,
    /// Send jobs that failed.
    pub sends_failed: AtomicU64,
    /// Send jobs cancelled or paused.
    pub sends_stopped: AtomicU64,
    /// Received sessions that ended well.
    pub receives_done: AtomicU64,
    /// Received sessions that failed.
    pub receives_failed: AtomicU64,
    /// Received sessions running now.
    pub receives_active: AtomicU64,
    /// File bytes acknowledged by receivers of our jobs.
    pub sent_bytes: AtomicU64,
    /// File bytes received, verified and stored.
    pub received_bytes: AtomicU64,
    /// Recovery shards sent on the FEC plane (repairs and spares).
    pub repair_shards: AtomicU64,
    /// Connections refused: busy (at the connection limit).
    pub refused_busy: AtomicU64,
    /// Connections refused: wrong token.
    pub refused_token: AtomicU64,
    /// Connections refused: TLS handshake failed.
    pub refused_tls: AtomicU64,
    /// Connections refused: no HELLO in time.
    pub refused_hello_timeout: AtomicU64,
    /// Connections refused for another reason.
    pub refused_other: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What a running job contributes: its id, and per path its name, rate
/// (bits/s) and the job's RTT.
#[derive(Debug, Clone)]
pub struct LivePath {
    /// Transfer id.
    pub transfer: i64,
    /// `LOCAL=REMOTE` or the receiver's address.
    pub path: String,
    /// Delivery rate, bits per second.
    pub rate_bps: f64,
    /// Smoothed RTT, seconds.
    pub rtt_s: f64,
    /// Share of shards sent that did not arrive (FEC plane only).
    pub loss: Option<f64>,
}

/// Escapes a label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The text exposition: these counters, `running` and `queued` jobs, and
    /// the live paths.
    pub fn render(&self, running: usize, queued: usize, paths: &[LivePath]) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        family(
            "chunkstream_transfers_total",
            "counter",
            "Transfers that ended since the agent started, by direction and outcome.",
            &[
                (
                    "{direction=\"send\",outcome=\"done\"}".into(),
                    get(&self.sends_done) as f64,
                ),
                (
                    "{direction=\"send\",outcome=\"failed\"}".into(),
                    get(&self.sends_failed) as f64,
                ),
                (
                    "{direction=\"send\",outcome=\"stopped\"}".into(),
                    get(&self.sends_stopped) as f64,
                ),
                (
                    "{direction=\"recv\",outcome=\"done\"}".into(),
                    get(&self.receives_done) as f64,
                ),
                (
                    "{direction=\"recv\",outcome=\"failed\"}".into(),
                    get(&self.receives_failed) as f64,
                ),
            ],
        );
        family(
            "chunkstream_transfers_active",
            "gauge",
            "Transfers running now, by direction.",
            &[
                ("{direction=\"send\"}".into(), running as f64),
                (
                    "{direction=\"recv\"}".into(),
                    get(&self.receives_active) as f64,
                ),
            ],
        );
        family(
            "chunkstream_jobs_queued",
            "gauge",
            "Send jobs waiting for their turn.",
            &[(String::new(), queued as f64)],
        );
        family(
            "chunkstream_file_bytes_total",
            "counter",
            "File bytes verified by the receiving side, by direction.",
            &[
                ("{direction=\"send\"}".into(), get(&self.sent_bytes) as f64),
                (
                    "{direction=\"recv\"}".into(),
                    get(&self.received_bytes) as f64,
                ),
            ],
        );
        family(
            "chunkstream_repair_shards_total",
            "counter",
            "Recovery shards sent on the FEC plane by finished jobs.",
            &[(String::new(), get(&self.repair_shards) as f64)],
        );
        family(
            "chunkstream_refused_connections_total",
            "counter",
            "Connections the receiver refused, by reason.",
            &[
                ("{reason=\"busy\"}".into(), get(&self.refused_busy) as f64),
                ("{reason=\"token\"}".into(), get(&self.refused_token) as f64),
                ("{reason=\"tls\"}".into(), get(&self.refused_tls) as f64),
                (
                    "{reason=\"hello_timeout\"}".into(),
                    get(&self.refused_hello_timeout) as f64,
                ),
                ("{reason=\"other\"}".into(), get(&self.refused_other) as f64),
            ],
        );
        let per_path_of = |paths: &[LivePath], f: fn(&LivePath) -> f64| -> Vec<(String, f64)> {
            paths
                .iter()
                .map(|p| {
                    (
                        format!(
                            "{{transfer=\"{}\",path=\"{}\"}}",
                            p.transfer,
                            label(&p.path)
                        ),
                        f(p),
                    )
                })
                .collect()
        };
        let per_path = |f: fn(&LivePath) -> f64| per_path_of(paths, f);
        family(
            "chunkstream_path_rate_bits_per_second",
            "gauge",
            "Delivery rate of each path of each running send job.",
            &per_path(|p| p.rate_bps),
        );
        family(
            "chunkstream_path_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of each path of each running send job.",
            &per_path(|p| p.rtt_s),
        );
        let lossy: Vec<LivePath> = paths.iter().filter(|p| p.loss.is_some()).cloned().collect();
        family(
            "chunkstream_path_loss_ratio",
            "gauge",
            "Share of the shards sent on each path of each running send job (FEC plane) that did not arrive, so far.",
            &per_path_of(&lossy, |p| p.loss.unwrap_or(0.0)),
        );
        out
    }

    /// Counts a refused connection by its reason's wording.
    pub fn refused(&self, reason: &str) {
        let c = if reason.contains("token") {
            &self.refused_token
        } else if reason.contains("TLS") {
            &self.refused_tls
        } else if reason.contains("no HELLO") {
            &self.refused_hello_timeout
        } else {
            &self.refused_other
        };
        add(c, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_help_type_and_labelled_samples() {
        let m = Metrics::default();
        add(&m.refused_busy, 3);
        m.refused("wrong token");
        let text = m.render(
            1,
            2,
            &[LivePath {
                transfer: 7,
                path: "eth0=10.0.0.2:4433".into(),
                rate_bps: 1e8,
                rtt_s: 0.02,
                loss: Some(0.05),
            }],
        );
        assert!(text.contains("# TYPE chunkstream_refused_connections_total counter"));
        assert!(text.contains("chunkstream_refused_connections_total{reason=\"busy\"} 3\n"));
        assert!(text.contains("chunkstream_refused_connections_total{reason=\"token\"} 1\n"));
        assert!(text.contains("chunkstream_jobs_queued 2\n"));
        assert!(text.contains(
            "chunkstream_path_rate_bits_per_second{transfer=\"7\",path=\"eth0=10.0.0.2:4433\"} 100000000\n"
        ));
        assert!(text.contains(
            "chunkstream_path_loss_ratio{transfer=\"7\",path=\"eth0=10.0.0.2:4433\"} 0.05\n"
        ));
        // Every sample line is NAME{LABELS} VALUE or NAME VALUE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
