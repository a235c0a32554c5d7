//! What the sender core and its driver say to each other: what to send
//! ([`Transmit`]), what the transport measured ([`PathStats`]), what
//! happened ([`CoreEvent`]) and a path's figures for progress
//! ([`PathFigures`]).

use std::time::Duration;

use super::streams::BlockSend;
use crate::fec::accounts::ShardRef;
use crate::fec::rate::PathMemory;
use crate::multipath::manager::PathState;
use crate::multipath::priority::Class;

/// What to send next, on which path.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// One shard as a datagram: send it, then [`SenderCore::on_sent`](super::core::SenderCore::on_sent) (or
    /// [`SenderCore::unsent`](super::core::SenderCore::unsent)).
    Shard {
        /// Path index.
        path: usize,
        /// Which shard.
        shard: ShardRef,
    },
    /// One whole block on a new stream: open it, then report how it ended
    /// with [`SenderCore::stream_finished`](super::core::SenderCore::stream_finished).
    Block(BlockSend),
}

/// Path statistics from the transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathStats {
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Congestion window (bytes).
    pub cwnd: u64,
    /// UDP bytes received on the path's connection so far.
    pub rx_bytes: u64,
    /// Packets sent on it so far.
    pub sent_packets: u64,
    /// Packets declared lost so far.
    pub lost_packets: u64,
    /// Bytes of datagrams handed to quinn and not yet sent (its datagram
    /// send buffer): shards counted as sent that are not on the wire yet.
    pub datagrams_buffered: u64,
}

/// What the core reports to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    /// The receiver verified and wrote a block (the driver frees its data).
    BlockAcked {
        /// File index.
        file: u32,
        /// Block index.
        block: u64,
        /// Its bytes.
        bytes: u64,
        /// Its priority class.
        class: Class,
        /// From admission to acknowledgement.
        latency: Duration,
        /// FEC plane: recovery shards it took beyond the up-front ones.
        repair_shards: u64,
    },
    /// The receiver already holds this block (HAVE, same digest): it is
    /// not sent (the driver frees its data).
    BlockResumed {
        /// File index.
        file: u32,
        /// Block index.
        block: u64,
        /// Its bytes.
        bytes: u64,
    },
    /// The receiver took files `first..first + count` added to a session
    /// held open: start reading them.
    FilesAdded {
        /// First file of the batch.
        first: u32,
        /// How many.
        count: u32,
    },
    /// The receiver verified and renamed a file.
    FileDone {
        /// File index.
        file: u32,
    },
    /// The receiver sent no report on `path` for `after` (FEC plane, after
    /// READY): the path is given up ([`CoreEvent::PathDied`] follows).
    Silent {
        /// Path index.
        path: usize,
        /// How long it was silent.
        after: Duration,
    },
    /// Path `path` is dead: close its connection.
    PathDied {
        /// Which path.
        path: usize,
    },
    /// Time to dial path `path` again.
    Redial {
        /// Which path.
        path: usize,
    },
}

/// A path's figures, for progress and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PathFigures {
    /// Up, down or being dialled.
    pub state: PathState,
    /// Shards sent on it (all its connections).
    pub shards_sent: u64,
    /// Shard payload bytes the receiver reported on it (all its
    /// connections).
    pub delivered: u64,
    /// Its controller's pacing rate (payload bytes per second).
    pub rate: f64,
    /// The random loss its controller measured.
    pub loss: f64,
    /// Shards the receiver's latest report could have counted (those sent
    /// a round trip before it was written) and those it counted.
    pub counted: (u64, u64),
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Whether its startup began from a remembered rate (`None`: nothing
    /// was remembered, or not decided yet).
    pub resumed: Option<bool>,
    /// What to remember of it for the next transfer (FEC plane, once its
    /// controller is past startup).
    pub carried: Option<PathMemory>,
}
