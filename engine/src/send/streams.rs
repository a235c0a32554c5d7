//! The reliable plane inside the sender core (sans-IO): whole blocks, each
//! on its own QUIC stream, spread over the paths.
//!
//! A block admitted by [`super::core::SenderCore`] joins one queue, in the
//! order the priority scheduler gave it. A block leaves on the live path
//! that would finish it first ([`PathManager::pick`]: bytes in flight plus
//! this block over the path's delivery rate, plus half its RTT), while that
//! path has room (about 2.5 bandwidth-delay products of blocks in flight,
//! at least four blocks). QUIC makes each stream reliable, so the plane
//! only has to re-send what a *dead* path carried: when a path fails or
//! falls silent the manager hands back its unacknowledged blocks, which go
//! to the front of the queue and leave on the paths still alive.
//!
//! The caps: `--max-rate` is one [`Pacer`] every block passes, a path's
//! `@RATE` another for that path; a block waits (without holding anything
//! else up) until both let it go, and [`StreamPlane::wake_at`] says when.
//!
//! Streams get descending priorities in the order they are handed out, so
//! quinn sends the older block's bytes first on a path carrying several:
//! blocks complete one after the other rather than all at the end.

#![deny(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::multipath::manager::PathManager;
use crate::session::pacer::Pacer;

type BlockId = (u32, u64);

/// A block to open a stream for: on which path, and at what quinn stream
/// priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSend {
    /// Path index.
    pub path: usize,
    /// File index.
    pub file: u32,
    /// Block index.
    pub block: u64,
    /// quinn stream priority (higher first): older blocks first.
    pub priority: i32,
}

/// The reliable plane's queue and dispatch.
#[derive(Debug)]
pub(crate) struct StreamPlane {
    queue: VecDeque<BlockId>,
    /// When each block was handed to a stream (its latest attempt).
    sent_at: HashMap<BlockId, Instant>,
    total: Option<Pacer>,
    caps: Vec<Option<Pacer>>,
    srtt: Vec<Duration>,
    block_size: u64,
    wake: Option<Instant>,
    handed: u64,
}

impl StreamPlane {
    /// A plane for blocks of `block_size` over `caps.len()` paths.
    pub fn new(block_size: u64, max_rate: Option<f64>, caps: &[Option<f64>]) -> Self {
        let pacer = |r: f64| Pacer::new(r.max(1.0) as u64);
        Self {
            queue: VecDeque::new(),
            sent_at: HashMap::new(),
            total: max_rate.map(pacer),
            caps: caps.iter().map(|c| c.map(pacer)).collect(),
            srtt: vec![Duration::ZERO; caps.len()],
            block_size,
            wake: None,
            handed: 0,
        }
    }

    /// Blocks waiting for a stream.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A newly admitted block waits for a path.
    pub fn admit(&mut self, id: BlockId) {
        self.queue.push_back(id);
    }

    /// Path `path`'s smoothed RTT.
    pub fn on_rtt(&mut self, path: usize, srtt: Duration) {
        self.srtt[path] = srtt;
    }

    /// Blocks a dead path carried: first in line again, lowest first.
    pub fn requeue(&mut self, mut ids: Vec<BlockId>) {
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            self.queue.push_front(id);
        }
    }

    /// The stream of `id` failed while its path is still taken for alive
    /// (the path's own failure requeues everything it carried): send it
    /// again unless it is queued or on its way already.
    pub fn stream_failed(&mut self, id: BlockId, manager: &PathManager) {
        if !self.queue.contains(&id) && !manager.is_assigned(id) {
            self.queue.push_front(id);
        }
    }

    /// The receiver acknowledged `id` at `now`: how long its latest stream
    /// took.
    pub fn on_acked(&mut self, id: BlockId, now: Instant, manager: &mut PathManager) -> Duration {
        let sent = self.sent_at.remove(&id).unwrap_or(now);
        manager.on_acked(id, sent, now);
        now.saturating_duration_since(sent)
    }

    /// When a block held back by a cap may leave.
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake
    }

    /// The next block to open a stream for, if a path has room and the caps
    /// allow it now. `bytes` gives an admitted block's length (`None`: it
    /// was acknowledged meanwhile); `live` whether the driver holds a
    /// connection for a path.
    pub fn poll(
        &mut self,
        now: Instant,
        manager: &mut PathManager,
        bytes: impl Fn(BlockId) -> Option<u64>,
        live: impl Fn(usize) -> bool,
    ) -> Option<BlockSend> {
        self.wake = None;
        loop {
            let &id = self.queue.front()?;
            let Some(len) = bytes(id) else {
                self.queue.pop_front();
                continue;
            };
            let i = manager.pick(len)?;
            let room = manager
                .rate(i)
                .map_or(0, |r| (r * self.srtt[i].as_secs_f64() * 2.5) as u64)
                .max(4 * self.block_size);
            if manager.in_flight(i) + len > room || !live(i) {
                return None;
            }
            let ready = [self.total.as_ref(), self.caps[i].as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.ready_at(now))
                .max()
                .unwrap_or(now);
            if ready > now {
                self.wake = Some(ready);
                return None;
            }
            for p in [self.total.as_mut(), self.caps[i].as_mut()]
                .into_iter()
                .flatten()
            {
                p.reserve(now, len);
            }
            self.queue.pop_front();
            manager.on_assigned(i, id, len);
            self.sent_at.insert(id, now);
            let priority = i32::MAX - (self.handed.min(i32::MAX as u64) as i32);
            self.handed += 1;
            return Some(BlockSend {
                path: i,
                file: id.0,
                block: id.1,
                priority,
            });
        }
    }

    /// Every file is done: blocks whose BLOCK_ACK a faster path's FILE_DONE
    /// overtook count as delivered by the path that carried them.
    pub fn settle(&mut self, now: Instant, manager: &mut PathManager) {
        for (id, sent) in std::mem::take(&mut self.sent_at) {
            manager.on_acked(id, sent, now);
        }
        self.queue.clear();
    }
}
