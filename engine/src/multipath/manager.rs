//! The path manager (sans-IO; the clock is passed in): which path carries
//! the next block, and which paths are alive.
//!
//! Each path is one QUIC connection over one local interface. The driver
//! feeds the manager what quinn knows ([`PathManager::on_stats`]: smoothed
//! RTT, congestion window, bytes received so far) and what the session
//! knows (blocks assigned, blocks acknowledged).
//!
//! * **Scheduling** ([`PathManager::pick`]) is earliest-completion-first
//!   (ECF): for every live path, the time to finish the bytes already
//!   assigned to it plus this block at its delivery rate, plus half its RTT
//!   for the last byte to arrive; the smallest wins. The delivery rate is
//!   measured from acknowledgements (bytes acknowledged per second, moving
//!   average) and, before any, estimated as `cwnd / srtt`. A slow path thus
//!   gets blocks only when the fast ones are far enough ahead, and the
//!   split follows the rates, not the RTTs.
//! * **Liveness** ([`PathManager::check`]): a live path from which nothing
//!   has been received for `max(4 × srtt, dead_after)` is declared dead,
//!   and so is one whose connection failed ([`PathManager::on_failed`]).
//!   Its unacknowledged blocks come back to be re-queued on the live paths.
//!   A dead path is re-dialled after a back-off (1 s, doubling to 30 s);
//!   [`PathManager::on_up`] puts it back into the rotation.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A block: (file, block index).
pub type BlockId = (u32, u64);

/// Where a path stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    /// Being dialled.
    Connecting,
    /// Carrying blocks.
    Up,
    /// Declared dead; re-dialled after a back-off.
    Down,
}

#[derive(Debug, Clone)]
struct Path {
    state: PathState,
    srtt: Duration,
    cwnd: u64,
    rx_bytes: u64,
    last_rx: Instant,
    rate: Option<f64>,
    /// Unacknowledged blocks: (bytes, bytes that were ahead of it then).
    assigned: BTreeMap<BlockId, (u64, u64)>,
    in_flight: u64,
    acked_bytes: u64,
    backoff: Duration,
    redial_at: Option<Instant>,
    cap: Option<f64>,
}

/// What [`PathManager::check`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEvent {
    /// The path was declared dead; these blocks must go elsewhere.
    Died {
        /// Which path.
        path: usize,
        /// Its unacknowledged blocks.
        requeue: Vec<BlockId>,
    },
    /// Time to dial the path again.
    Redial {
        /// Which path.
        path: usize,
    },
}

/// Per-path accounting and the scheduling decision.
#[derive(Debug, Clone)]
pub struct PathManager {
    paths: Vec<Path>,
    dead_after: Duration,
    owner: BTreeMap<BlockId, usize>,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl PathManager {
    /// `count` paths, all connecting; a silent path dies after at least
    /// `dead_after` (use about twice the keep-alive interval).
    pub fn new(count: usize, dead_after: Duration, now: Instant) -> Self {
        Self {
            paths: (0..count)
                .map(|_| Path {
                    state: PathState::Connecting,
                    srtt: Duration::from_millis(100),
                    cwnd: 12_000,
                    rx_bytes: 0,
                    last_rx: now,
                    rate: None,
                    assigned: BTreeMap::new(),
                    in_flight: 0,
                    acked_bytes: 0,
                    backoff: FIRST_BACKOFF,
                    redial_at: None,
                    cap: None,
                })
                .collect(),
            dead_after,
            owner: BTreeMap::new(),
        }
    }

    /// State of path `i`.
    pub fn state(&self, i: usize) -> PathState {
        self.paths[i].state
    }

    /// Bytes acknowledged on path `i`.
    pub fn acked_bytes(&self, i: usize) -> u64 {
        self.paths[i].acked_bytes
    }

    /// Delivery rate of path `i` in bytes per second, if measured.
    pub fn rate(&self, i: usize) -> Option<f64> {
        self.paths[i].rate
    }

    /// Bytes assigned to path `i` and not yet acknowledged.
    pub fn in_flight(&self, i: usize) -> u64 {
        self.paths[i].in_flight
    }

    /// Paths carrying blocks.
    pub fn live(&self) -> usize {
        self.paths
            .iter()
            .filter(|p| p.state == PathState::Up)
            .count()
    }

    /// Path `i` is connected (first time or after a re-dial).
    pub fn on_up(&mut self, i: usize, now: Instant) {
        let p = &mut self.paths[i];
        p.state = PathState::Up;
        p.last_rx = now;
        // A new connection counts its received bytes from zero.
        p.rx_bytes = 0;
        p.redial_at = None;
        p.backoff = FIRST_BACKOFF;
    }

    /// quinn's view of path `i`: smoothed RTT, congestion window, and the
    /// UDP bytes received on it so far.
    pub fn on_stats(&mut self, i: usize, now: Instant, srtt: Duration, cwnd: u64, rx_bytes: u64) {
        let p = &mut self.paths[i];
        p.srtt = srtt.max(Duration::from_micros(100));
        p.cwnd = cwnd.max(1200);
        if rx_bytes > p.rx_bytes {
            p.rx_bytes = rx_bytes;
            p.last_rx = now;
        }
    }

    fn estimate(p: &Path) -> f64 {
        p.rate
            .unwrap_or(p.cwnd as f64 / p.srtt.as_secs_f64())
            .min(p.cap.unwrap_or(f64::INFINITY))
            .max(1.0)
    }

    /// Path `i` may carry at most `bytes_per_sec` (its `@RATE` cap): the
    /// schedule counts it no faster than that.
    pub fn set_cap(&mut self, i: usize, bytes_per_sec: Option<f64>) {
        self.paths[i].cap = bytes_per_sec;
    }

    /// The live path that would finish `bytes` first, if any. A live path
    /// that has no measured rate yet and nothing in flight goes first: one
    /// block measures it (an idle connection's window says nothing).
    pub fn pick(&self, bytes: u64) -> Option<usize> {
        if let Some(i) = self
            .paths
            .iter()
            .position(|p| p.state == PathState::Up && p.rate.is_none() && p.in_flight == 0)
        {
            return Some(i);
        }
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PathState::Up)
            .map(|(i, p)| {
                let finish =
                    (p.in_flight + bytes) as f64 / Self::estimate(p) + p.srtt.as_secs_f64() / 2.0;
                (i, finish)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// `block` of `bytes` went out on path `i`.
    pub fn on_assigned(&mut self, i: usize, block: BlockId, bytes: u64) {
        if let Some(old) = self.owner.insert(block, i) {
            let p = &mut self.paths[old];
            if let Some((b, _)) = p.assigned.remove(&block) {
                p.in_flight -= b;
            }
        }
        let p = &mut self.paths[i];
        p.assigned.insert(block, (bytes, p.in_flight));
        p.in_flight += bytes;
    }

    /// The receiver acknowledged `block` at `now`, `sent_at` after it was
    /// assigned; returns the path that carried it.
    pub fn on_acked(&mut self, block: BlockId, sent_at: Instant, now: Instant) -> Option<usize> {
        let i = self.owner.remove(&block)?;
        let p = &mut self.paths[i];
        let (bytes, ahead) = p.assigned.remove(&block)?;
        p.in_flight -= bytes;
        p.acked_bytes += bytes;
        // The path delivered what was ahead of this block plus the block
        // itself in the time it took (blocks leave a path in order): a
        // delivery-rate sample of the whole pipe, not of one block.
        let took = now.duration_since(sent_at).as_secs_f64().max(1e-4);
        let sample = (bytes + ahead) as f64 / took;
        p.rate = Some(match p.rate {
            Some(r) => 0.8 * r + 0.2 * sample,
            None => sample,
        });
        Some(i)
    }

    /// Path `i`'s connection failed: it is dead now.
    pub fn on_failed(&mut self, i: usize, now: Instant) -> Vec<BlockId> {
        self.kill(i, now)
    }

    fn kill(&mut self, i: usize, now: Instant) -> Vec<BlockId> {
        let p = &mut self.paths[i];
        if p.state == PathState::Down {
            return Vec::new();
        }
        p.state = PathState::Down;
        p.redial_at = Some(now + p.backoff);
        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
        p.rate = None;
        p.in_flight = 0;
        let requeue: Vec<BlockId> = std::mem::take(&mut p.assigned).into_keys().collect();
        for b in &requeue {
            self.owner.remove(b);
        }
        requeue
    }

    /// A re-dial of path `i` failed; try again after a longer back-off.
    pub fn on_redial_failed(&mut self, i: usize, now: Instant) {
        let p = &mut self.paths[i];
        p.state = PathState::Down;
        p.redial_at = Some(now + p.backoff);
        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
    }

    /// Declares silent paths dead and says which to re-dial.
    pub fn check(&mut self, now: Instant) -> Vec<PathEvent> {
        let mut events = Vec::new();
        for i in 0..self.paths.len() {
            let p = &self.paths[i];
            match p.state {
                PathState::Up => {
                    let limit = (p.srtt * 4).max(self.dead_after);
                    if now.duration_since(p.last_rx) > limit {
                        let requeue = self.kill(i, now);
                        events.push(PathEvent::Died { path: i, requeue });
                    }
                }
                PathState::Down => {
                    if p.redial_at.is_some_and(|t| now >= t) {
                        self.paths[i].state = PathState::Connecting;
                        self.paths[i].redial_at = None;
                        events.push(PathEvent::Redial { path: i });
                    }
                }
                PathState::Connecting => {}
            }
        }
        events
    }

    /// Whether `block` is assigned to a path and not acknowledged.
    pub fn is_assigned(&self, block: BlockId) -> bool {
        self.owner.contains_key(&block)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn up(n: usize, now: Instant) -> PathManager {
        let mut m = PathManager::new(n, Duration::from_secs(2), now);
        for i in 0..n {
            m.on_up(i, now);
        }
        m
    }

    /// Three paths at 100, 200 and 300 Mbit/s, same RTT: blocks are
    /// assigned, and acknowledged when each path's queue drains at its
    /// rate. The byte split follows the rates.
    #[test]
    fn the_split_follows_the_rates() {
        let t0 = Instant::now();
        let mut m = up(3, t0);
        let rates = [12.5e6, 25e6, 37.5e6]; // bytes/s
        for (i, r) in rates.iter().enumerate() {
            m.on_stats(i, t0, Duration::from_millis(20), (r * 0.02) as u64, 0);
        }
        let mut busy_until = [t0; 3];
        let mut pending: Vec<(Instant, BlockId, Instant)> = Vec::new();
        let mut now = t0;
        let mut sent = 0u64;
        while sent < 600 {
            // Acknowledge what has arrived.
            pending.sort_by_key(|p| p.0);
            while pending.first().is_some_and(|p| p.0 <= now) {
                let (_, b, at) = pending.remove(0);
                m.on_acked(b, at, now);
            }
            // Keep about 8 blocks in flight in total.
            if (0..3).map(|i| m.in_flight(i)).sum::<u64>() < 8 * MB {
                let i = m.pick(MB).unwrap();
                let start = busy_until[i].max(now);
                let done = start
                    + Duration::from_secs_f64(MB as f64 / rates[i])
                    + Duration::from_millis(10);
                busy_until[i] = start + Duration::from_secs_f64(MB as f64 / rates[i]);
                m.on_assigned(i, (0, sent), MB);
                pending.push((done, (0, sent), now));
                sent += 1;
            } else {
                now += Duration::from_millis(1);
            }
        }
        let total: u64 = (0..3).map(|i| m.acked_bytes(i)).sum();
        let shares: Vec<f64> = (0..3)
            .map(|i| m.acked_bytes(i) as f64 / total as f64)
            .collect();
        for (s, want) in shares.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
            assert!((s - want).abs() < 0.06, "shares {shares:?}");
        }
    }

    #[test]
    fn a_silent_path_dies_its_blocks_come_back_and_it_is_redialled() {
        let t0 = Instant::now();
        let mut m = up(2, t0);
        m.on_stats(0, t0, Duration::from_millis(10), 100_000, 1000);
        m.on_stats(1, t0, Duration::from_millis(10), 100_000, 1000);
        m.on_assigned(1, (0, 1), MB);
        m.on_assigned(1, (0, 2), MB);
        m.on_assigned(0, (0, 3), MB);
        // Path 0 keeps receiving; path 1 goes silent.
        let t1 = t0 + Duration::from_millis(2500);
        m.on_stats(0, t1, Duration::from_millis(10), 100_000, 5000);
        let ev = m.check(t1);
        assert_eq!(
            ev,
            vec![PathEvent::Died {
                path: 1,
                requeue: vec![(0, 1), (0, 2)]
            }]
        );
        assert_eq!(m.state(1), PathState::Down);
        assert_eq!(m.pick(MB), Some(0), "only the live path is picked");
        assert!(m.check(t1 + Duration::from_millis(500)).is_empty());
        assert_eq!(
            m.check(t1 + Duration::from_millis(1001)),
            vec![PathEvent::Redial { path: 1 }]
        );
        m.on_up(1, t1 + Duration::from_millis(1100));
        assert_eq!(m.live(), 2);
        // The re-dialled connection counts from zero and is not taken for silent.
        m.on_stats(
            1,
            t1 + Duration::from_millis(2000),
            Duration::from_millis(10),
            100_000,
            300,
        );
        m.on_stats(
            0,
            t1 + Duration::from_millis(2000),
            Duration::from_millis(10),
            100_000,
            9000,
        );
        assert!(m.check(t1 + Duration::from_millis(3000)).is_empty());
        // A failed connection is dead at once.
        m.on_assigned(0, (0, 4), MB);
        let back = m.on_failed(0, t1 + Duration::from_millis(1200));
        assert_eq!(back, vec![(0, 3), (0, 4)]);
        assert_eq!(m.pick(MB), Some(1));
    }

    #[test]
    fn no_live_path_picks_nothing() {
        let m = PathManager::new(2, Duration::from_secs(2), Instant::now());
        assert_eq!(m.pick(MB), None);
    }
}
