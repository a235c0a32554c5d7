//! What the driver tells about the paths: each path's rate, RTT and loss
//! for progress every 100 ms ([`RateMeter`]), and at the end the per-path
//! and FEC figures of the send report ([`path_reports`], [`fec_report`]),
//! all read from the core's [`PathFigures`].

use std::time::{Duration, Instant};

use super::FecConfig;
use super::FecReport;
use super::core::{PathFigures, SenderCore};
use crate::multipath::manager::PathState;
use crate::multipath::spec::{PathRate, PathReport, PathSpec};
use crate::transport::Congestion;

/// How often progress carries the paths' rates.
const EVERY: Duration = Duration::from_millis(100);

/// The paths' rates since the last reading, for progress.
pub(super) struct RateMeter {
    last: Instant,
    delivered: Vec<u64>,
    sent: Vec<u64>,
}

impl RateMeter {
    /// A meter for `n` paths, first reading due [`EVERY`] after `now`.
    pub(super) fn new(n: usize, now: Instant) -> Self {
        Self {
            last: now,
            delivered: vec![0; n],
            sent: vec![0; n],
        }
    }

    /// Each path's rate, RTT and loss, once [`EVERY`] has passed since the
    /// last reading (`None` before). `streams`: the reliable plane, whose
    /// blocks arrive whole, so its rates are the path manager's smoothed
    /// delivery rates; shards are counted as they arrive.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        core: &SenderCore,
        specs: &[PathSpec],
        streams: bool,
        shard_bytes: usize,
        blocks_held: usize,
    ) -> Option<Vec<PathRate>> {
        if now.duration_since(self.last) < EVERY {
            return None;
        }
        let secs = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let rates = (0..self.delivered.len())
            .map(|i| {
                let f = core.path_figures(i);
                let r = if streams {
                    f.rate * 8.0
                } else {
                    f.delivered.saturating_sub(self.delivered[i]) as f64 * 8.0 / secs.max(1e-3)
                };
                self.delivered[i] = f.delivered;
                // What left against what the pacer allowed: a sender that
                // falls behind its pace (late wake-ups) shows here first
                // (`fec::shard_pacer`).
                let sent = f.shards_sent.saturating_sub(self.sent[i]);
                self.sent[i] = f.shards_sent;
                tracing::debug!(
                    path = i,
                    sent_mbit = (sent * shard_bytes as u64 * 8) as f64 / secs / 1e6,
                    paced_mbit = f.rate * 8.0 / 1e6,
                    blocks_held,
                    "sent against pace"
                );
                PathRate {
                    name: specs[i].name(),
                    rate_bps: r,
                    state: f.state,
                    rtt_ms: f.srtt.as_secs_f64() * 1e3,
                    loss: shard_loss(&f),
                }
            })
            .collect();
        Some(rates)
    }
}

/// Each path's share of the transfer at its end; `wire_bytes(i)` is what
/// path `i`'s connections sent.
pub(super) fn path_reports(
    core: &SenderCore,
    specs: &[PathSpec],
    wire_bytes: impl Fn(usize) -> u64,
) -> Vec<PathReport> {
    (0..specs.len())
        .map(|i| {
            let f = core.path_figures(i);
            PathReport {
                name: specs[i].name(),
                bytes: f.delivered,
                wire_bytes: wire_bytes(i),
                rtt_ms: f.srtt.as_secs_f64() * 1e3,
                state: f.state,
                loss: shard_loss(&f),
                warm_start: f.resumed,
                carried: f.carried.map(Into::into),
            }
        })
        .collect()
}

/// The FEC plane's figures at the end of a send.
pub(super) fn fec_report(
    core: &SenderCore,
    fec: &FecConfig,
    congestion: Congestion,
    shard_bytes: usize,
    paced: bool,
) -> FecReport {
    let (sources, upfront, repairs, exhausted) = core.planned();
    let final_rate_bps = if paced {
        (0..core.path_count())
            .map(|i| core.path_figures(i))
            .filter(|f| f.state == PathState::Up)
            .map(|f| f.rate * 8.0)
            .sum()
    } else {
        0.0
    };
    FecReport {
        redundancy: fec.redundancy.to_string(),
        congestion: match congestion {
            Congestion::Rate => "rate",
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
        }
        .into(),
        shard_bytes,
        shards_sent: core.shards_sent,
        source_shards: sources,
        upfront_recovery: upfront,
        repair_shards: repairs,
        spare_shards: core.spare_planned(),
        exhausted,
        retried_blocks: core.retried_blocks,
        random_loss: core.planned_loss(),
        final_rate_bps,
        block_latency: None,
    }
}

/// The share of a path's shards lost on the way, as the receiver counted
/// them: of those sent a round trip before its latest report, the counts
/// its controller reads too. (Every shard sent against what was delivered
/// took the shards in flight for lost: a round trip's worth, which on a
/// long path early in a transfer is most of what was sent.) `None` on the
/// reliable plane or before a report.
fn shard_loss(f: &PathFigures) -> Option<f64> {
    let (out, counted) = f.counted;
    (out > 0).then(|| (1.0 - counted as f64 / out as f64).clamp(0.0, 1.0))
}
