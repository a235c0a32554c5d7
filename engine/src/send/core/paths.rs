//! Paths coming and going, as the core sees them: a path up (first time
//! or again) gets a fresh rate controller that starts from what its last
//! connection carried or from what was remembered of it; a path that
//! failed hands its blocks to the others; and each live path's transport
//! measurements (quinn's RTT, packets sent and declared lost, what its
//! datagram buffer still holds) feed its controller and loss count.

#![deny(clippy::disallowed_methods)]

use std::time::Instant;

use super::{CoreEvent, PathStats, PathTx, SenderCore};
use crate::fec::rate::PathMemory;
use crate::multipath::manager::PathState;

impl SenderCore {
    /// Path `path` is connected (first time or again): a fresh controller.
    pub fn path_up(&mut self, path: usize, now: Instant) {
        let cap = self.paths[path].cap;
        let old = &self.paths[path];
        let (sent, delivered) = (old.shards_sent, old.delivered_before + old.delivered);
        let counted = (
            old.counted_before.0 + old.counted.0,
            old.counted_before.1 + old.counted.1,
        );
        // A path that comes back starts from what its last connection
        // carried, or else from what was remembered of it.
        let memory = old.rate.carried().or(old.rate.remembered());
        self.paths[path] = PathTx::new(cap, self.cfg.shard_bytes, now);
        if let Some(m) = memory {
            self.paths[path].rate.remember(m);
        }
        self.paths[path].shards_sent = sent;
        self.paths[path].delivered_before = delivered;
        self.paths[path].counted_before = counted;
        self.manager.on_up(path, now);
    }

    /// What path `path` carried at the end of an earlier transfer: its
    /// startup begins from half of it if its RTT is about the same
    /// ([`PathMemory`]). Give it before the path comes up.
    pub fn remember(&mut self, path: usize, memory: PathMemory) {
        if let Some(p) = self.paths.get_mut(path) {
            p.rate.remember(memory);
        }
    }

    /// Path `path`'s connection failed.
    pub fn path_failed(&mut self, path: usize, now: Instant) {
        if self.manager.state(path) == PathState::Up {
            let requeue = self.manager.on_failed(path, now);
            if let Some(s) = &mut self.streams {
                s.requeue(requeue);
            }
            self.events.push_back(CoreEvent::PathDied { path });
        }
    }

    /// The stream carrying block `block` of `file` on `path` ended: `ok`
    /// if all of it was handed to the transport. A failed stream fails its
    /// path (the blocks it carried go to the others); on a path already
    /// taken for dead, the block is queued again if it has to be.
    pub fn stream_finished(&mut self, path: usize, file: u32, block: u64, ok: bool, now: Instant) {
        if ok {
            return;
        }
        if self.manager.state(path) == PathState::Up {
            self.path_failed(path, now);
        } else if self.blocks.contains_key(&(file, block))
            && let Some(s) = &mut self.streams
        {
            s.stream_failed((file, block), &self.manager);
        }
    }

    /// Dialling path `path` again failed.
    pub fn redial_failed(&mut self, path: usize, now: Instant) {
        self.manager.on_redial_failed(path, now);
    }

    /// The transport's view of path `path` now.
    pub fn handle_path_stats(&mut self, path: usize, now: Instant, st: &PathStats) {
        if self.manager.state(path) != PathState::Up {
            return;
        }
        self.manager
            .on_stats(path, now, st.srtt, st.cwnd, st.rx_bytes);
        if let Some(s) = &mut self.streams {
            s.on_rtt(path, st.srtt);
        }
        let datagram = (self.cfg.shard_bytes + crate::wire::SHARD_HEADER_LEN).max(1) as u64;
        let p = &mut self.paths[path];
        p.srtt = st.srtt;
        p.rate.on_rtt(now, st.srtt);
        // quinn declares a packet lost about a round trip after sending
        // it: its losses are set against what it had sent by then.
        p.quinn_sent.on_wire(now, st.sent_packets);
        let sent_then = now
            .checked_sub(st.srtt)
            .map_or(0, |t| p.quinn_sent.sent_by(t));
        p.rate.on_packets(sent_then, st.lost_packets);
        p.loss.on_wire(
            now,
            p.shards_sent
                .saturating_sub(st.datagrams_buffered / datagram),
        );
    }
}
