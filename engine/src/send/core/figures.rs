//! What the core says about itself: each path's figures for progress,
//! what the block accounts planned and the loss they plan for, the share
//! of recovery shards the pipeline should have encoded ahead, the window
//! quinn should allow a path.

#![deny(clippy::disallowed_methods)]

use super::{PathFigures, SenderCore};
use crate::multipath::manager::PathState;

impl SenderCore {
    /// Recovery shards per source shard that blocks prepared now may need
    /// (`fec::accounts::SendAccounts::recovery_share`): the driver has the
    /// pipeline size each block's `r` from it.
    pub fn recovery_share(&self) -> f64 {
        let worst = (0..self.paths.len())
            .filter(|&i| self.manager.state(i) == PathState::Up)
            .map(|i| &self.paths[i].rate)
            .filter(|r| r.loss_measured())
            .map(|r| r.random_loss())
            .reduce(f64::max);
        self.accounts.recovery_share(worst)
    }

    /// Whether new blocks go out with recovery shards (the FEC plane on a
    /// path that loses): then the driver has them encoded ahead.
    pub fn plans_upfront_recovery(&self) -> bool {
        self.streams.is_none() && self.accounts.plans_upfront()
    }

    /// The window quinn should allow path `path` ([`crate::fec::cc`]).
    pub fn window(&self, path: usize) -> u64 {
        self.paths[path].rate.window()
    }

    /// Path `path`'s figures.
    pub fn path_figures(&self, path: usize) -> PathFigures {
        let p = &self.paths[path];
        if self.streams.is_some() {
            return PathFigures {
                state: self.manager.state(path),
                shards_sent: 0,
                delivered: self.manager.acked_bytes(path),
                rate: self.manager.rate(path).unwrap_or(0.0),
                loss: 0.0,
                counted: (0, 0),
                srtt: p.srtt,
                resumed: None,
                carried: None,
            };
        }
        PathFigures {
            state: self.manager.state(path),
            shards_sent: p.shards_sent,
            delivered: p.delivered_before + p.delivered,
            rate: p.rate.rate(),
            loss: p.rate.random_loss(),
            counted: (
                p.counted_before.0 + p.counted.0,
                p.counted_before.1 + p.counted.1,
            ),
            srtt: p.srtt,
            resumed: p.rate.resumed(),
            carried: p.rate.carried(),
        }
    }

    /// Number of paths.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// What the block accounts planned: (sources, up-front recovery,
    /// repairs, exhausted re-sends).
    pub fn planned(&self) -> (u64, u64, u64, u64) {
        (
            self.accounts.sources_planned,
            self.accounts.upfront_planned,
            self.accounts.repairs_planned,
            self.accounts.exhausted,
        )
    }

    /// Recovery shards sent on spare capacity (see `SendAccounts::spare`).
    pub fn spare_planned(&self) -> u64 {
        self.accounts.spare_planned
    }

    /// The loss the accounts plan for (rate-weighted over the paths).
    pub fn planned_loss(&self) -> f64 {
        let (mut w, mut r) = (0.0, 0.0);
        for (i, p) in self.paths.iter().enumerate() {
            if self.manager.state(i) == PathState::Up {
                w += p.rate.rate() * p.rate.random_loss();
                r += p.rate.rate();
            }
        }
        if r > 0.0 { w / r } else { 0.0 }
    }
}
