//! The sender core's settings ([`CoreConfig`]), set once per session by
//! the driver: plane, redundancy, blocks in flight, shard size, pacing and
//! caps, liveness, resume.

use std::time::Duration;

use super::core::REPORT_TIMEOUT;
use crate::fec::accounts::Redundancy;

/// Settings of the FEC plane's core. `Default`: adaptive redundancy, 64
/// blocks in flight, one path, our own pacing, no caps.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub(super) redundancy: Redundancy,
    pub(super) max_blocks: usize,
    pub(super) max_block_bytes: Option<u64>,
    pub(super) shard_bytes: usize,
    pub(super) paced: bool,
    pub(super) max_rate: Option<f64>,
    pub(super) path_caps: Vec<Option<f64>>,
    pub(super) dead_after: Duration,
    pub(super) plane: Plane,
    pub(super) block_size: u64,
    pub(super) prioritised: bool,
    pub(super) resume: bool,
    pub(super) report_timeout: Duration,
}

/// How blocks travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// Erasure-coded shards as QUIC datagrams (the FEC plane).
    Shards,
    /// Whole blocks as QUIC streams (the reliable plane, `send::streams`).
    Streams,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            redundancy: Redundancy::Adaptive,
            max_blocks: 64,
            max_block_bytes: None,
            shard_bytes: 1398,
            paced: true,
            max_rate: None,
            path_caps: vec![None],
            dead_after: Duration::from_millis(1500),
            plane: Plane::Shards,
            block_size: 1 << 20,
            prioritised: false,
            resume: true,
            report_timeout: REPORT_TIMEOUT,
        }
    }
}

impl CoreConfig {
    /// Up-front redundancy.
    pub fn redundancy(&mut self, r: Redundancy) -> &mut Self {
        self.redundancy = r;
        self
    }
    /// Most blocks unacknowledged at once (at least 1). On the FEC plane
    /// FEC_SETUP announces it: the receiver keeps at most this many
    /// incomplete.
    pub fn max_blocks(&mut self, n: usize) -> &mut Self {
        self.max_blocks = n.max(1);
        self
    }
    /// FEC plane: most bytes of blocks unacknowledged at once (`None`:
    /// only [`max_blocks`](Self::max_blocks) bounds them). A block is
    /// admitted while fewer are held, so a thousand small files are not
    /// held to the count of full blocks that the memory budget allows.
    pub fn max_block_bytes(&mut self, bytes: Option<u64>) -> &mut Self {
        self.max_block_bytes = bytes;
        self
    }
    /// Payload bytes per shard (one per session).
    pub fn shard_bytes(&mut self, n: usize) -> &mut Self {
        self.shard_bytes = n.max(2);
        self
    }
    /// `false`: quinn's congestion controller paces (`--cc cubic|bbr`);
    /// the core then hands out shards as fast as the driver sends them.
    pub fn paced(&mut self, paced: bool) -> &mut Self {
        self.paced = paced;
        self
    }
    /// Cap on the whole transfer, in payload bytes per second.
    pub fn max_rate(&mut self, bytes_per_sec: Option<f64>) -> &mut Self {
        self.max_rate = bytes_per_sec;
        self
    }
    /// One entry per path: its cap in payload bytes per second, if any.
    /// The number of entries is the number of paths.
    pub fn path_caps(&mut self, caps: Vec<Option<f64>>) -> &mut Self {
        self.path_caps = if caps.is_empty() { vec![None] } else { caps };
        self
    }
    /// FEC plane: a path whose receiver sent no report for this long (or
    /// 8 srtt) after READY is given up ([`CoreEvent::Silent`](super::events::CoreEvent::Silent)).
    pub fn report_timeout(&mut self, d: Duration) -> &mut Self {
        self.report_timeout = d;
        self
    }
    /// A path silent this long (or 4 srtt) is dead.
    pub fn dead_after(&mut self, d: Duration) -> &mut Self {
        self.dead_after = d;
        self
    }
    /// Shards (FEC) or streams (reliable).
    pub fn plane(&mut self, plane: Plane) -> &mut Self {
        self.plane = plane;
        self
    }
    /// The session's block size (the reliable plane sizes each path's
    /// room in blocks).
    pub fn block_size(&mut self, bytes: u64) -> &mut Self {
        self.block_size = bytes.max(1);
        self
    }
    /// Whether files are in more than one priority class. On the reliable
    /// plane a block is then admitted only when no other waits for a
    /// stream, so that the scheduler's order, not the reader's, is what
    /// leaves (admitted eagerly, blocks left in reading order: 31/30/39
    /// instead of 50/30/20).
    pub fn prioritised(&mut self, yes: bool) -> &mut Self {
        self.prioritised = yes;
        self
    }
    /// Whether blocks the receiver already holds (HAVE) are skipped;
    /// `false` (`send --no-resume`) sends every block.
    pub fn resume(&mut self, yes: bool) -> &mut Self {
        self.resume = yes;
        self
    }
}
