//! The FEC plane's dispatch: one shared queue of shards pulled by the
//! paths. Each live path has its own rate controller, pacer, report clock
//! and loss count ([`PathTx`]); the path whose pacing budget holds the most
//! time at its own rate (`fullest`) takes the next shard; repairs go ahead
//! of new shards, and when no shard waits, spare capacity adds margin to
//! the blocks in flight. The receiver's FEC_STATUS on a path feeds that
//! path's controller and the session's block accounts.

use std::time::{Duration, Instant};

use super::{STALL_AFTER, SenderCore};
use crate::fec::accounts::ShardRef;
use crate::fec::path_loss::PathLoss;
use crate::fec::rate::{RateConfig, RateController};
use crate::fec::report_clock::ReportClock;
use crate::fec::shard_pacer::ShardPacer;
use crate::multipath::manager::PathState;
use crate::wire::FecStatus;

/// One path as the core sees it.
#[derive(Debug)]
pub(super) struct PathTx {
    pub(super) rate: RateController,
    pub(super) pacer: ShardPacer,
    pub(super) clock: ReportClock,
    pub(super) srtt: Duration,
    /// When a report (or the path itself) was last heard of.
    pub(super) last_report: Instant,
    /// The receiver's clock in the newest report taken.
    pub(super) report_micros: u64,
    /// Shards sent over time, for the forward loss the reports show.
    pub(super) loss: PathLoss,
    /// quinn's packets sent over time, for the loss quinn declares.
    pub(super) quinn_sent: PathLoss,
    pub(super) shards_sent: u64,
    pub(super) delivered: u64,
    /// Delivered on this path's earlier connections.
    pub(super) delivered_before: u64,
    /// Shards the latest report could have counted on this connection,
    /// and those it counted; then the same summed over earlier ones.
    pub(super) counted: (u64, u64),
    pub(super) counted_before: (u64, u64),
    pub(super) cap: Option<f64>,
}

impl PathTx {
    pub(super) fn new(cap: Option<f64>, shard_bytes: usize, now: Instant) -> Self {
        let mut cfg = RateConfig::default();
        if let Some(c) = cap {
            cfg.max_rate = c.max(cfg.min_rate);
            cfg.initial_rate = cfg.initial_rate.min(cfg.max_rate);
        }
        Self {
            rate: RateController::new(cfg),
            pacer: ShardPacer::new(shard_bytes, now),
            clock: ReportClock::new(),
            srtt: Duration::from_millis(100),
            last_report: now,
            report_micros: 0,
            loss: PathLoss::new(),
            quinn_sent: PathLoss::new(),
            shards_sent: 0,
            delivered: 0,
            delivered_before: 0,
            counted: (0, 0),
            counted_before: (0, 0),
            cap,
        }
    }
}

impl SenderCore {
    pub(super) fn on_status(&mut self, path: usize, st: FecStatus, now: Instant) {
        let Some(p) = self.paths.get_mut(path) else {
            return;
        };
        // Reports come as datagrams, which may be reordered: one older than
        // a report already taken says nothing new (and its deficits are
        // stale).
        if st.micros < p.report_micros {
            return;
        }
        p.report_micros = st.micros;
        p.rate.on_delivered(st.micros, st.delivered);
        p.delivered = st.delivered;
        p.last_report = now;
        let written = p.clock.written_at(now, st.micros);
        // Loss as the receiver counted it, not as quinn's acknowledgements
        // (lost on the way back too) suggest: see `fec::path_loss`.
        let out = p.loss.out_before(written, p.srtt);
        p.rate.on_counts(out, st.shards);
        p.counted = (out, st.shards);
        // A block's shards went over every live path: its repairs wait for
        // the slowest.
        let srtt = self.repair_rtt();
        self.urgent
            .extend(self.accounts.on_status(now, written, srtt, &st.needed));
    }

    pub(super) fn repair_rtt(&self) -> Duration {
        (0..self.paths.len())
            .filter(|&i| self.manager.state(i) == PathState::Up)
            .map(|i| self.paths[i].srtt)
            .max()
            .unwrap_or(Duration::from_millis(100))
    }

    pub(super) fn stalled(&self, i: usize, now: Instant) -> bool {
        let p = &self.paths[i];
        now.saturating_duration_since(p.last_report) > (p.srtt * 4).max(STALL_AFTER)
    }

    pub(super) fn poll_shard(
        &mut self,
        now: Instant,
        room: impl Fn(usize) -> bool,
    ) -> Option<(usize, ShardRef)> {
        if self.urgent.is_empty() && self.fresh.is_empty() {
            // Nothing new to send: spend the capacity on margin for the
            // blocks in flight (`SendAccounts::spare`), one at a time.
            match self.accounts.spare() {
                Some(s) => self.urgent.push_back(s),
                None => {
                    for p in &mut self.paths {
                        p.pacer.idle();
                    }
                    return None;
                }
            }
        }
        if let (Some(total), Some(cap)) = (&mut self.total, self.cfg.max_rate)
            && total.allowance(now, cap) == 0
        {
            return None;
        }
        let path = self.pick_path(now, room)?;
        loop {
            let shard = self
                .urgent
                .pop_front()
                .or_else(|| self.fresh.pop().map(|(_, s)| s))?;
            // Acknowledged blocks may still have queued repairs.
            if self.blocks.contains_key(&(shard.file, shard.block)) {
                return Some((path, shard));
            }
        }
    }

    /// The live, reporting path with the fullest pacing budget (round robin
    /// when quinn paces).
    /// Whether path `i` may take the next shard: up, with room in the
    /// transport, and reporting (unless no live path reports).
    pub(super) fn candidate(
        &self,
        i: usize,
        now: Instant,
        any_reporting: bool,
        room: &impl Fn(usize) -> bool,
    ) -> bool {
        self.manager.state(i) == PathState::Up
            && room(i)
            && !(any_reporting && self.stalled(i, now))
    }

    pub(super) fn pick_path(
        &mut self,
        now: Instant,
        room: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // Called once per shard: no allocation here.
        let n = self.paths.len();
        // Every live path stalled: keep sending on all (one of them may only
        // have a slow return path).
        let any_reporting =
            (0..n).any(|i| self.candidate(i, now, false, &room) && !self.stalled(i, now));
        if !self.cfg.paced {
            let i = (self.next_path..n)
                .chain(0..self.next_path.min(n))
                .find(|&i| self.candidate(i, now, any_reporting, &room))?;
            self.next_path = i + 1;
            return Some(i);
        }
        fullest((0..n).filter_map(|i| {
            if !self.candidate(i, now, any_reporting, &room) {
                return None;
            }
            let rate = self.paths[i].rate.rate();
            let pacer = &mut self.paths[i].pacer;
            let allowance = pacer.allowance(now, rate);
            Some((i, allowance, pacer.budget() / rate.max(1.0)))
        }))
    }

    /// `shard` left on `path` at `now`.
    pub fn on_sent(&mut self, path: usize, shard: &ShardRef, now: Instant) {
        self.shards_sent += 1;
        // Paced by its real payload: a short block's shards are shorter
        // than the session's, and the controller's rates are in bytes.
        let bytes = self
            .accounts
            .shard_bytes_of(shard.file, shard.block)
            .unwrap_or(self.cfg.shard_bytes);
        let p = &mut self.paths[path];
        p.shards_sent += 1;
        if self.cfg.paced {
            p.pacer.sent_payload(bytes);
        }
        if let Some(total) = &mut self.total {
            total.sent_payload(bytes);
        }
        self.accounts.on_sent(shard, now);
    }

    /// A shard the driver could not send (its path broke): sent again first.
    pub fn unsent(&mut self, shard: ShardRef) {
        self.urgent.push_front(shard);
    }
}

/// Of `(path, allowance in shards, budget in seconds at its rate)`, the
/// path with shards allowed whose budget holds the most time's worth of
/// sending at its own rate. When shards are fewer
/// than the paths' budgets allow (a sender short of CPU, or blocks not yet
/// read and encoded), every budget fills to its cap of 8 ms at its own
/// rate; picking the largest budget in shards then gave every shard to the
/// fastest paths and none to the slowest, whose controller, delivered
/// nothing, never grew (one path of three carried 0 bytes in 1 of 10 demo
/// runs under two busy loops). By time's worth each path takes shards in
/// proportion to its rate.
fn fullest(candidates: impl Iterator<Item = (usize, usize, f64)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, allowance, secs) in candidates {
        if allowance > 0 && best.is_none_or(|(_, s)| secs > s) {
            best = Some((i, secs));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    #[test]
    fn scarce_shards_are_shared_in_proportion_to_the_paths_rates() {
        // Three paths paced at 10, 60 and 200 Mbit/s of 1398-byte shards
        // (1.3 Mbit/s per shard per ms: ~1, 5 and 18 shards a
        // millisecond), while only 12 shards a millisecond are ready.
        let t0 = Instant::now();
        let rates = [10e6 / 8.0, 60e6 / 8.0, 200e6 / 8.0];
        let mut pacers: Vec<ShardPacer> = rates.iter().map(|_| ShardPacer::new(1398, t0)).collect();
        let mut sent = [0u64; 3];
        for ms in 1..=2_000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..12 {
                let budgets: Vec<(usize, f64)> = pacers
                    .iter_mut()
                    .zip(rates)
                    .map(|(p, r)| (p.allowance(now, r), p.budget() / r))
                    .collect();
                let Some(i) = fullest((0..3).map(|i| (i, budgets[i].0, budgets[i].1))) else {
                    break;
                };
                pacers[i].sent_payload(1398);
                sent[i] += 1;
            }
        }
        // Each path gets at least three quarters of its share of the rates
        // (the slowest gets more: a shard is most of a millisecond of its
        // budget, so it sends about its own pace), and none is starved.
        let total: u64 = sent.iter().sum();
        let sum: f64 = rates.iter().sum();
        for i in 0..3 {
            let share = sent[i] as f64 / total as f64;
            let want = rates[i] / sum;
            assert!(
                share >= 0.75 * want,
                "path {i}: {share:.3} of the shards, its rate {want:.3} of the sum ({sent:?})"
            );
        }
        assert_eq!(total, 24_000, "every ready shard went out");
    }
}
