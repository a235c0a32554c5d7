//! The sending side of a session, built as one sans-IO core ([`core`])
//! and one async driver around it (`driver.rs`), for both planes.
//!
//! [`core::SenderCore`] holds every decision of a session over any number
//! of paths: which block next (priorities), liveness and re-dial, file
//! hashes, progress, the rate caps; and per plane, how blocks travel: on
//! the FEC plane as shards, with block accounts and per-path rate control
//! and pacing; on the reliable plane as streams (`streams.rs`), spread by
//! the path manager. The driver owns quinn, the dialer and the reader and
//! does what the core says; its connections, one per path, live in
//! `links.rs`, and what it reports of the paths (progress rates, the final
//! figures) is read from the core in `figures.rs`.

mod config;
pub mod core;
mod dialer;
pub(crate) mod driver;
mod events;
mod figures;
mod links;
pub(crate) mod more_files;
mod outbox;
mod streams;

use crate::fec::accounts::Redundancy;

/// FEC-plane settings of a send.
#[derive(Debug, Clone)]
pub struct FecConfig {
    /// Up-front redundancy.
    pub redundancy: Redundancy,
    /// Most unacknowledged blocks (at most the receiver's
    /// [`crate::session::fec_receive::FEC_MAX_BLOCKS`]); the memory
    /// budget bounds their bytes too (32 of 64 MiB on the FEC plane),
    /// which is what decides by default unless the blocks are short
    /// (small files).
    pub max_blocks: usize,
    /// Test hook: flip a byte in every n-th shard (fault tests only).
    pub corrupt_every: Option<u64>,
    /// How the UDP payload size, and so the shard size, is chosen
    /// ([`crate::transport::path_mtu`]).
    pub mtu: crate::transport::path_mtu::MtuChoice,
    /// Give a path up when its receiver sends no report for this long.
    pub report_timeout: std::time::Duration,
}

impl Default for FecConfig {
    fn default() -> Self {
        Self {
            redundancy: Redundancy::Adaptive,
            max_blocks: 1024,
            corrupt_every: None,
            mtu: crate::transport::path_mtu::MtuChoice::Auto,
            report_timeout: core::REPORT_TIMEOUT,
        }
    }
}

/// What the FEC plane did, for reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FecReport {
    /// `--fec` as used.
    pub redundancy: String,
    /// Congestion control as used (`rate`, `cubic`, `bbr`).
    pub congestion: String,
    /// Payload bytes per shard.
    pub shard_bytes: usize,
    /// Datagrams sent.
    pub shards_sent: u64,
    /// Source shards planned.
    pub source_shards: u64,
    /// Recovery shards sent up front.
    pub upfront_recovery: u64,
    /// Recovery shards sent in answer to deficits.
    pub repair_shards: u64,
    /// Recovery shards sent while nothing else waited, as margin for the
    /// blocks in flight (at the end of a transfer, or with the window full).
    pub spare_shards: u64,
    /// Source shards re-sent after a block ran out of recovery shards.
    pub exhausted: u64,
    /// Blocks the receiver asked for again (digest failed).
    pub retried_blocks: u64,
    /// Random-loss level the controller measured.
    pub random_loss: f64,
    /// The controller's last pacing rate (bits/s; `rate` only).
    pub final_rate_bps: f64,
    /// Block latency, from admitting a block (digest sent, shards queued)
    /// to its BLOCK_ACK; reported with the reliable plane's, not here.
    #[serde(skip)]
    pub block_latency: Option<crate::metrics::LatencySummary>,
}
