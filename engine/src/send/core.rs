//! The sender's FEC-plane core (sans-IO, the clock passed in): one state
//! machine for a session over any number of paths.
//!
//! In the manner of quinn-proto's `Connection`, [`SenderCore`] does no I/O.
//! Its driver (`send/driver.rs`) feeds it what happens, each with `now`:
//!
//! * blocks from the reader, already hashed and encoded, in the priority
//!   scheduler's order ([`SenderCore::admit_block`], while
//!   [`SenderCore::wants_block`]);
//! * control frames from each path ([`SenderCore::handle_frame`]):
//!   BLOCK_ACK, FILE_DONE, FEC_STATUS (that path's report), BLOCK_RETRY;
//! * each path's transport statistics ([`SenderCore::handle_path_stats`]:
//!   smoothed RTT, UDP bytes received, packets sent and lost) and its
//!   coming and going ([`SenderCore::path_up`], [`SenderCore::path_failed`],
//!   [`SenderCore::redial_failed`]);
//! * the passing of time ([`SenderCore::tick`]).
//!
//! and asks it what to do: which shard to send on which path
//! ([`SenderCore::poll_transmit`]), which control frames to send
//! ([`SenderCore::poll_control`]), what to report and which paths to close
//! or re-dial ([`SenderCore::poll_event`]), and when to wake up next
//! ([`SenderCore::poll_timeout`]).
//!
//! ## What it decides
//!
//! * **Which block next**: the driver's block source merges one reader
//!   pipeline per priority class by deficit round robin (50/30/20), so
//!   blocks are admitted in the classes' turns; and the new shards of
//!   admitted blocks wait in one queue per class, from which deficit round
//!   robin picks the next shard, so the wire follows 50/30/20 at once, not
//!   one window of admitted blocks later. Repairs of admitted blocks go
//!   ahead of every new shard, so a Critical block's repairs are not held
//!   up behind Normal shards.
//! * **Which shards**: [`SendAccounts`] plans each block's sources and
//!   up-front recovery shards, and fresh recovery shards for the deficits
//!   the receiver reports. The deficit list is the session's and arrives
//!   on every path; a block's repairs wait until a report could reflect its
//!   last shard on the slowest live path. When no shard waits, spare
//!   capacity sends more recovery shards for the blocks in flight (up to
//!   their up-front share again): at the end of a transfer the last blocks
//!   then rarely wait a round trip for a repair (simulated 1 s RTT, 5 %
//!   loss both ways, 256 MiB: 15.7 s → 14.6 s).
//! * **Which path**: one shared queue of shards, pulled by the paths: each
//!   live path has its own rate controller ([`RateController`], fed by its
//!   own FEC_STATUS and packet counts) and pacer ([`ShardPacer`]); the
//!   path whose pacing budget is fullest takes the next shard. So every
//!   path sends at what it carries, and a block's shards spread over all of
//!   them. A global cap (`--max-rate`) is one more pacer every shard must
//!   pass; a per-path cap bounds that path's controller.
//! * **Which paths live**: the [`PathManager`]'s liveness (silent for
//!   `max(4 srtt, dead_after)`: dead; re-dial with back-off). Before that, a
//!   path whose reports stopped for `max(4 srtt, 250 ms)` is *stalled*: it
//!   takes no shards until a report arrives again, so a path that just died
//!   does not swallow a share of the repairs meant to make up for it.

#![deny(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use super::streams::BlockSend;
use super::streams::StreamPlane;
use crate::fec::accounts::{Redundancy, SendAccounts, ShardRef};
use crate::fec::codec::Geometry;
use crate::fec::path_loss::PathLoss;
use crate::fec::rate::{RateConfig, RateController};
use crate::fec::report_clock::ReportClock;
use crate::fec::shard_pacer::ShardPacer;
use crate::manifest::Manifest;
use crate::multipath::manager::{PathEvent, PathManager, PathState};
use crate::multipath::priority::{Class, Drr};
use crate::session::SessionError;
use crate::session::file_hashes::FileHashes;
use crate::wire::{BlockHeader, FecStatus, Frame, HAVE_DIGEST_LEN};

type BlockId = (u32, u64);

/// How often the controllers run a tick.
pub const TICK: Duration = Duration::from_millis(10);
/// How often liveness is judged.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);
/// How long a receiver may send no report on a path of the FEC plane before
/// the path is given up: its connection may well be alive (quinn's
/// keep-alives are answered below the application), but a sender that
/// hears nothing would wait for ever.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A path whose reports stopped for this long (or 4 srtt) takes no shards.
const STALL_AFTER: Duration = Duration::from_millis(250);
/// Most shards queued ahead of the paths (new shards; repairs come on top).
const MAX_QUEUED: usize = 4 * 8192;

/// Settings of the FEC plane's core. `Default`: adaptive redundancy, 64
/// blocks in flight, one path, our own pacing, no caps.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    redundancy: Redundancy,
    max_blocks: usize,
    shard_bytes: usize,
    paced: bool,
    max_rate: Option<f64>,
    path_caps: Vec<Option<f64>>,
    dead_after: Duration,
    plane: Plane,
    block_size: u64,
    prioritised: bool,
    resume: bool,
    report_timeout: Duration,
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
    /// Most blocks unacknowledged at once (at least 1).
    pub fn max_blocks(&mut self, n: usize) -> &mut Self {
        self.max_blocks = n.max(1);
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
    /// 8 srtt) after READY is given up ([`CoreEvent::Silent`]).
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

/// What to send next, on which path.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// One shard as a datagram: send it, then [`SenderCore::on_sent`] (or
    /// [`SenderCore::unsent`]).
    Shard {
        /// Path index.
        path: usize,
        /// Which shard.
        shard: ShardRef,
    },
    /// One whole block on a new stream: open it, then report how it ended
    /// with [`SenderCore::stream_finished`].
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
    /// The receiver verified and renamed a file.
    FileDone {
        /// File index.
        file: u32,
    },
    /// Path `path` is dead: close its connection.
    /// The receiver sent no report on `path` for `after` (FEC plane, after
    /// READY): the path is given up ([`CoreEvent::PathDied`] follows).
    Silent {
        /// Path index.
        path: usize,
        /// How long it was silent.
        after: Duration,
    },
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

/// One path as the core sees it.
#[derive(Debug)]
struct PathTx {
    rate: RateController,
    pacer: ShardPacer,
    clock: ReportClock,
    srtt: Duration,
    /// When a report (or the path itself) was last heard of.
    last_report: Instant,
    /// The receiver's clock in the newest report taken.
    report_micros: u64,
    /// Shards sent over time, for the forward loss the reports show.
    loss: PathLoss,
    /// quinn's packets sent over time, for the loss quinn declares.
    quinn_sent: PathLoss,
    shards_sent: u64,
    delivered: u64,
    /// Delivered on this path's earlier connections.
    delivered_before: u64,
    cap: Option<f64>,
}

impl PathTx {
    fn new(cap: Option<f64>, shard_bytes: usize, now: Instant) -> Self {
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
            cap,
        }
    }
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
    /// Smoothed RTT.
    pub srtt: Duration,
}

#[derive(Debug)]
struct Admitted {
    class: Class,
    at: Instant,
    digest: crate::hash::BlockDigest,
}

/// The FEC plane's sender state for one session.
#[derive(Debug)]
pub struct SenderCore {
    manifest: Manifest,
    cfg: CoreConfig,
    class_of_file: Vec<Class>,
    accounts: SendAccounts,
    hashes: FileHashes,
    blocks: HashMap<BlockId, Admitted>,
    /// New shards, by class: deficit round robin picks the class whose
    /// shard goes next (50/30/20 of the shards while all have some).
    fresh: Drr<ShardRef>,
    urgent: VecDeque<ShardRef>,
    paths: Vec<PathTx>,
    manager: PathManager,
    total: Option<ShardPacer>,
    done: Vec<bool>,
    files_done: usize,
    control: VecDeque<Frame>,
    events: VecDeque<CoreEvent>,
    last_tick: Instant,
    last_liveness: Instant,
    /// Since when reports are due (the receiver sent READY), FEC plane.
    reports_due: Option<Instant>,
    next_path: usize,
    /// The reliable plane's queue (`None` on the FEC plane).
    streams: Option<StreamPlane>,
    /// Blocks the receiver said it holds (HAVE), not admitted yet: the
    /// first bytes of their digests.
    held: HashMap<BlockId, [u8; HAVE_DIGEST_LEN]>,
    /// Blocks the receiver asked for again.
    pub retried_blocks: u64,
    /// Shards handed out.
    pub shards_sent: u64,
}

impl SenderCore {
    /// A session sending `manifest` (files in `class_of_file`'s classes)
    /// over `cfg`'s paths, all of them connecting. Queues FEC_SETUP and the
    /// FILE_HASH of every empty file.
    pub fn new(
        manifest: Manifest,
        class_of_file: Vec<Class>,
        cfg: CoreConfig,
        now: Instant,
    ) -> Self {
        let n = cfg.path_caps.len();
        let paths = cfg
            .path_caps
            .iter()
            .map(|&cap| PathTx::new(cap, cfg.shard_bytes, now))
            .collect();
        let hashes = FileHashes::new(&manifest);
        let mut control = VecDeque::new();
        let streams = (cfg.plane == Plane::Streams)
            .then(|| StreamPlane::new(cfg.block_size, cfg.max_rate, &cfg.path_caps));
        if streams.is_none() {
            control.push_back(Frame::FecSetup {
                shard_bytes: cfg.shard_bytes as u16,
                max_blocks: cfg.max_blocks as u16,
            });
        }
        for (f, h) in hashes.hashes.iter().enumerate() {
            if let Some(h) = h {
                control.push_back(Frame::FileHash {
                    file: f as u32,
                    hash: *h.as_bytes(),
                });
            }
        }
        let mut manager = PathManager::new(n, cfg.dead_after, now);
        // The reliable plane's schedule counts a capped path no faster than
        // its cap (else it waits for that path while others idle).
        for (i, cap) in cfg.path_caps.iter().enumerate() {
            manager.set_cap(i, *cap);
        }
        Self {
            done: vec![false; manifest.files().len()],
            class_of_file,
            accounts: SendAccounts::new(cfg.redundancy),
            hashes,
            blocks: HashMap::new(),
            fresh: Drr::new(cfg.shard_bytes as u64),
            urgent: VecDeque::new(),
            paths,
            manager,
            total: cfg.max_rate.map(|_| ShardPacer::new(cfg.shard_bytes, now)),
            files_done: 0,
            control,
            events: VecDeque::new(),
            last_tick: now,
            last_liveness: now,
            reports_due: None,
            next_path: 0,
            streams,
            held: HashMap::new(),
            retried_blocks: 0,
            shards_sent: 0,
            manifest,
            cfg,
        }
    }

    /// Every file is done.
    pub fn is_done(&self) -> bool {
        self.files_done == self.done.len()
    }

    /// Whether every block has been admitted.
    pub fn all_admitted(&self) -> bool {
        self.hashes.all_read()
    }

    /// Whether to admit another block now.
    pub fn wants_block(&self) -> bool {
        if self.hashes.all_read() {
            return false;
        }
        match &self.streams {
            Some(s) => {
                self.blocks.len() < self.cfg.max_blocks
                    && (!self.cfg.prioritised || s.queued() == 0)
            }
            None => {
                self.accounts.in_flight() < self.cfg.max_blocks && self.fresh.total() < MAX_QUEUED
            }
        }
    }

    /// Whether a block's shards may still be asked for (the driver keeps
    /// its data until [`CoreEvent::BlockAcked`]).
    pub fn holds(&self, file: u32, block: u64) -> bool {
        self.blocks.contains_key(&(file, block))
    }

    /// Admits a hashed block (on the FEC plane encoded too, with its
    /// `geometry`). On the FEC plane BLOCK_DIGEST is queued and its shards
    /// join the shard queue; on the reliable plane the block waits for a
    /// stream (its header carries the digest). FILE_HASH is queued if it
    /// was its file's last block.
    pub fn admit_block(&mut self, now: Instant, header: &BlockHeader, geometry: Option<Geometry>) {
        let (file, block) = (header.file, header.block);
        // Held by the receiver, and the same: nothing to send.
        let resumed = self
            .held
            .remove(&(file, block))
            .is_some_and(|prefix| header.digest[..HAVE_DIGEST_LEN] == prefix);
        if self.streams.is_none() && !resumed {
            self.control.push_back(Frame::BlockDigest {
                file,
                block,
                digest: header.digest,
            });
        }
        if let Some((file, hash)) = self.hashes.record(header, &self.manifest) {
            self.control.push_back(Frame::FileHash {
                file,
                hash: *hash.as_bytes(),
            });
        }
        if resumed {
            self.events.push_back(CoreEvent::BlockResumed {
                file,
                block,
                bytes: u64::from(header.len),
            });
            return;
        }
        let class = self
            .class_of_file
            .get(file as usize)
            .copied()
            .unwrap_or(Class::Normal);
        match (&mut self.streams, geometry) {
            (Some(s), _) => s.admit((file, block)),
            (None, Some(geometry)) => {
                let shard_bytes = self.cfg.shard_bytes as u64;
                for shard in self.accounts.add(file, block, geometry) {
                    self.fresh.push(class, shard, shard_bytes);
                }
            }
            (None, None) => debug_assert!(false, "a FEC block without its geometry"),
        }
        self.blocks.insert(
            (file, block),
            Admitted {
                class,
                at: now,
                digest: header.digest,
            },
        );
    }

    /// Path `path` is connected (first time or again): a fresh controller.
    pub fn path_up(&mut self, path: usize, now: Instant) {
        let cap = self.paths[path].cap;
        let old = &self.paths[path];
        let (sent, delivered) = (old.shards_sent, old.delivered_before + old.delivered);
        self.paths[path] = PathTx::new(cap, self.cfg.shard_bytes, now);
        self.paths[path].shards_sent = sent;
        self.paths[path].delivered_before = delivered;
        self.manager.on_up(path, now);
    }

    /// The receiver sent READY: from now on it reports on every path of
    /// the FEC plane, and one that stays silent is given up.
    pub fn admitted(&mut self, now: Instant) {
        self.reports_due.get_or_insert(now);
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

    /// A control frame from the receiver on path `path`.
    pub fn handle_frame(
        &mut self,
        path: usize,
        frame: Frame,
        now: Instant,
    ) -> Result<(), SessionError> {
        let files = self.manifest.files().len();
        match frame {
            Frame::BlockAck { file, block } => {
                if (file as usize) >= files || block >= self.manifest.block_count(file as usize) {
                    return Err(SessionError::Protocol(format!(
                        "BLOCK_ACK for unknown block {block} of file {file}"
                    )));
                }
                // Acknowledgements come on every path: take the first.
                let fresh = match &self.streams {
                    Some(_) => self.blocks.contains_key(&(file, block)),
                    None => self.accounts.on_acked(file, block),
                };
                if fresh && let Some(a) = self.blocks.remove(&(file, block)) {
                    // The FEC plane measures from admission (shards of a
                    // block leave over a while), the reliable plane from
                    // the stream's opening.
                    let latency = match &mut self.streams {
                        Some(s) => s.on_acked((file, block), now, &mut self.manager),
                        None => now.saturating_duration_since(a.at),
                    };
                    self.events.push_back(CoreEvent::BlockAcked {
                        file,
                        block,
                        bytes: u64::from(self.manifest.block_span(file as usize, block).1),
                        class: a.class,
                        latency,
                    });
                }
            }
            Frame::FileDone { file } => {
                let f = file as usize;
                if f >= files || self.hashes.hashes[f].is_none() {
                    return Err(SessionError::Protocol(format!(
                        "unexpected FILE_DONE for file {file}"
                    )));
                }
                if !std::mem::replace(&mut self.done[f], true) {
                    self.files_done += 1;
                    self.events.push_back(CoreEvent::FileDone { file });
                }
                if self.is_done()
                    && let Some(s) = &mut self.streams
                {
                    s.settle(now, &mut self.manager);
                }
            }
            Frame::FecStatus(st) => self.on_status(path, st, now),
            Frame::BlockRetry {
                file,
                block,
                attempt,
            } => {
                self.retried_blocks += 1;
                // Shards of the old attempt still queued are useless now.
                self.fresh.retain(|s| (s.file, s.block) != (file, block));
                self.urgent.retain(|s| (s.file, s.block) != (file, block));
                self.urgent
                    .extend(self.accounts.on_retry(file, block, attempt));
            }
            Frame::Have {
                file,
                first,
                digests,
            } => {
                let f = file as usize;
                let end = first.checked_add(digests.len() as u64);
                if f >= files || end.is_none_or(|e| e > self.manifest.block_count(f)) {
                    return Err(SessionError::Protocol(format!(
                        "HAVE for blocks {first}.. of file {file}, which has no such blocks"
                    )));
                }
                if self.cfg.resume {
                    for (i, d) in digests.into_iter().enumerate() {
                        let id = (file, first + i as u64);
                        // A block admitted already is on its way: the
                        // receiver takes it as a replacement.
                        if !self.blocks.contains_key(&id) && !self.hashes.has_read(id.0, id.1) {
                            self.held.insert(id, d);
                        }
                    }
                }
            }
            Frame::Error { code, message } => {
                return Err(crate::session::sender::peer_error(code, message));
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {:?} from the receiver",
                    other.frame_type()
                )));
            }
        }
        Ok(())
    }

    fn on_status(&mut self, path: usize, st: FecStatus, now: Instant) {
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
        // A block's shards went over every live path: its repairs wait for
        // the slowest.
        let srtt = self.repair_rtt();
        self.urgent
            .extend(self.accounts.on_status(now, written, srtt, &st.needed));
    }

    fn repair_rtt(&self) -> Duration {
        (0..self.paths.len())
            .filter(|&i| self.manager.state(i) == PathState::Up)
            .map(|i| self.paths[i].srtt)
            .max()
            .unwrap_or(Duration::from_millis(100))
    }

    fn stalled(&self, i: usize, now: Instant) -> bool {
        let p = &self.paths[i];
        now.saturating_duration_since(p.last_report) > (p.srtt * 4).max(STALL_AFTER)
    }

    /// Runs the controllers (every [`TICK`]) and liveness (every 100 ms).
    pub fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_tick) >= TICK && self.streams.is_none() {
            self.last_tick = now;
            let idle = self.urgent.is_empty() && self.fresh.is_empty();
            let (mut weighted, mut rates) = (0.0, 0.0);
            for i in 0..self.paths.len() {
                if self.manager.state(i) != PathState::Up {
                    continue;
                }
                let p = &mut self.paths[i];
                p.rate.set_app_limited(idle);
                if let Some(round) = p.rate.tick(now) {
                    tracing::debug!(
                        path = i,
                        ?round,
                        random_loss = p.rate.random_loss(),
                        "rate round"
                    );
                }
                weighted += p.rate.rate() * p.rate.random_loss();
                rates += p.rate.rate();
            }
            // Shards spread over the paths by rate: plan for their mix.
            if rates > 0.0 {
                self.accounts.set_loss(weighted / rates);
            }
        }
        if now.saturating_duration_since(self.last_liveness) >= LIVENESS_EVERY {
            self.last_liveness = now;
            if let (None, Some(due)) = (&self.streams, self.reports_due) {
                for i in 0..self.paths.len() {
                    let p = &self.paths[i];
                    let heard = p.last_report.max(due);
                    let limit = self.cfg.report_timeout.max(p.srtt * 8);
                    if self.manager.state(i) == PathState::Up
                        && now.saturating_duration_since(heard) > limit
                    {
                        tracing::warn!(path = i, ?limit, "the receiver stopped reporting");
                        self.events.push_back(CoreEvent::Silent {
                            path: i,
                            after: limit,
                        });
                        self.path_failed(i, now);
                    }
                }
            }
            for event in self.manager.check(now) {
                self.events.push_back(match event {
                    PathEvent::Died { path, requeue } => {
                        if let Some(s) = &mut self.streams {
                            s.requeue(requeue);
                        }
                        CoreEvent::PathDied { path }
                    }
                    PathEvent::Redial { path } => CoreEvent::Redial { path },
                });
            }
        }
    }

    /// The window quinn should allow path `path` ([`crate::fec::cc`]).
    pub fn window(&self, path: usize) -> u64 {
        self.paths[path].rate.window()
    }

    /// What to send next and on which path, if anything may leave now on a
    /// path for which `room` says the transport can take it: a shard (FEC
    /// plane) or a block for a new stream (reliable plane).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        room: impl Fn(usize) -> bool,
    ) -> Option<Transmit> {
        if let Some(s) = &mut self.streams {
            let (blocks, manifest) = (&self.blocks, &self.manifest);
            let len = |id: BlockId| {
                blocks
                    .contains_key(&id)
                    .then(|| u64::from(manifest.block_span(id.0 as usize, id.1).1))
            };
            return s
                .poll(now, &mut self.manager, len, room)
                .map(Transmit::Block);
        }
        self.poll_shard(now, room)
            .map(|(path, shard)| Transmit::Shard { path, shard })
    }

    fn poll_shard(
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
    fn candidate(
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

    fn pick_path(&mut self, now: Instant, room: impl Fn(usize) -> bool) -> Option<usize> {
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
        let mut best: Option<(usize, usize)> = None;
        for i in 0..n {
            if !self.candidate(i, now, any_reporting, &room) {
                continue;
            }
            let rate = self.paths[i].rate.rate();
            let allowance = self.paths[i].pacer.allowance(now, rate);
            if allowance > 0 && best.is_none_or(|(_, a)| allowance > a) {
                best = Some((i, allowance));
            }
        }
        best.map(|(i, _)| i)
    }

    /// `shard` left on `path` at `now`.
    pub fn on_sent(&mut self, path: usize, shard: &ShardRef, now: Instant) {
        self.shards_sent += 1;
        let p = &mut self.paths[path];
        p.shards_sent += 1;
        if self.cfg.paced {
            p.pacer.sent();
        }
        if let Some(total) = &mut self.total {
            total.sent();
        }
        self.accounts.on_sent(shard, now);
    }

    /// A shard the driver could not send (its path broke): sent again first.
    pub fn unsent(&mut self, shard: ShardRef) {
        self.urgent.push_front(shard);
    }

    /// The next control frame to send, on the control path.
    pub fn poll_control(&mut self) -> Option<Frame> {
        self.control.pop_front()
    }

    /// Whether control frames wait to be sent.
    pub fn has_control(&self) -> bool {
        !self.control.is_empty()
    }

    /// The control path changed (the old one failed, with frames perhaps
    /// unread in its stream): queue again everything the receiver needs
    /// and may have missed. FEC_SETUP, the digest of every unacknowledged
    /// block and the hash of every file hashed and not done; the receiver
    /// takes an identical copy of what it has as a no-op.
    pub fn control_path_lost(&mut self) {
        let mut again = VecDeque::new();
        if self.streams.is_none() {
            again.push_back(Frame::FecSetup {
                shard_bytes: self.cfg.shard_bytes as u16,
                max_blocks: self.cfg.max_blocks as u16,
            });
            let mut unacked: Vec<_> = self.blocks.iter().collect();
            unacked.sort_by_key(|(id, _)| **id);
            for (&(file, block), a) in unacked {
                again.push_back(Frame::BlockDigest {
                    file,
                    block,
                    digest: a.digest,
                });
            }
        }
        for (f, h) in self.hashes.hashes.iter().enumerate() {
            if let (Some(h), false) = (h, self.done[f]) {
                again.push_back(Frame::FileHash {
                    file: f as u32,
                    hash: *h.as_bytes(),
                });
            }
        }
        // Frames still queued come after (they are newer).
        again.extend(self.control.drain(..));
        self.control = again;
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When to call [`Self::tick`] and [`Self::poll_transmit`] again: in a
    /// millisecond while shards wait for their pacing budget, else at the
    /// next tick.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        if let Some(s) = &self.streams {
            let next = self.last_liveness + LIVENESS_EVERY;
            return s.wake_at().map_or(next, |w| w.min(next));
        }
        if self.urgent.is_empty() && self.fresh.is_empty() {
            self.last_tick + TICK
        } else {
            (now + Duration::from_millis(1)).min(self.last_tick + TICK)
        }
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
                srtt: p.srtt,
            };
        }
        PathFigures {
            state: self.manager.state(path),
            shards_sent: p.shards_sent,
            delivered: p.delivered_before + p.delivered,
            rate: p.rate.rate(),
            loss: p.rate.random_loss(),
            srtt: p.srtt,
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

    /// Whole-file hashes known so far.
    pub fn file_hash(&self, file: usize) -> Option<blake3::Hash> {
        self.hashes.hashes[file]
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::wire::ManifestEntry;

    fn core(paths: usize, now: Instant) -> SenderCore {
        let manifest = Manifest::new(
            1 << 16,
            vec![ManifestEntry {
                name: "f".into(),
                size: 4 << 16,
            }],
        )
        .unwrap();
        let mut cfg = CoreConfig::default();
        cfg.shard_bytes(1024).path_caps(vec![None; paths]);
        let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, now);
        for i in 0..paths {
            c.path_up(i, now);
        }
        c
    }

    fn admit(c: &mut SenderCore, block: u64, now: Instant) {
        let header = BlockHeader {
            file: 0,
            block,
            len: 1 << 16,
            digest: [block as u8; 32],
        };
        c.admit_block(now, &header, Some(Geometry::new(1 << 16, 1024).unwrap()));
    }

    fn status(needed: Vec<(u32, u64, u32)>, micros: u64) -> Frame {
        Frame::FecStatus(FecStatus {
            micros,
            delivered: 0,
            shards: 0,
            needed,
        })
    }

    fn drain(c: &mut SenderCore, now: Instant) -> Vec<(usize, ShardRef)> {
        let mut out = Vec::new();
        while let Some(Transmit::Shard { path, shard }) = c.poll_transmit(now, |_| true) {
            c.on_sent(path, &shard, now);
            out.push((path, shard));
        }
        out
    }

    #[test]
    fn a_flood_of_reports_and_unknown_blocks_plans_nothing_extra() {
        let t0 = Instant::now();
        let mut c = core(2, t0);
        admit(&mut c, 0, t0);
        let mut now = t0;
        let mut sent = 0;
        while sent < 64 + 1 {
            now += Duration::from_millis(1);
            sent += drain(&mut c, now).len();
        }
        // A hostile receiver lists blocks that do not exist, 1000 times
        // (block 0 listed as complete, so that its silence does not count).
        let bogus: Vec<_> = std::iter::once((0, 0, 0))
            .chain((10..1000).map(|b| (0, b, 64)))
            .collect();
        now += Duration::from_secs(1);
        for i in 0..1000 {
            c.handle_frame(i % 2, status(bogus.clone(), 1_000_000), now)
                .unwrap();
        }
        assert_eq!(c.planned().2, 0, "no repairs for blocks that do not exist");
        // The same deficit for a real block on both paths, many times at
        // once: one answer.
        for i in 0..100 {
            c.handle_frame(i % 2, status(vec![(0, 0, 5)], 1_000_000), now)
                .unwrap();
        }
        let repairs = c.planned().2;
        assert!((5..=8).contains(&repairs), "{repairs}");
        assert!(c.urgent.len() <= 8);
    }

    #[test]
    fn acknowledgements_and_file_done_count_once_across_paths() {
        let t0 = Instant::now();
        let mut c = core(3, t0);
        for b in 0..4 {
            admit(&mut c, b, t0);
        }
        for path in 0..3 {
            for b in 0..4 {
                c.handle_frame(path, Frame::BlockAck { file: 0, block: b }, t0)
                    .unwrap();
            }
            c.handle_frame(path, Frame::FileDone { file: 0 }, t0)
                .unwrap();
        }
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        let acks = events
            .iter()
            .filter(|e| matches!(e, CoreEvent::BlockAcked { .. }))
            .count();
        let done = events
            .iter()
            .filter(|e| matches!(e, CoreEvent::FileDone { .. }))
            .count();
        assert_eq!((acks, done), (4, 1));
        assert!(c.is_done());
        let err = c
            .handle_frame(1, Frame::BlockAck { file: 0, block: 4 }, t0)
            .unwrap_err();
        assert!(err.to_string().contains("unknown block 4"), "{err}");
        let err = c
            .handle_frame(1, Frame::FileDone { file: 3 }, t0)
            .unwrap_err();
        assert!(err.to_string().contains("FILE_DONE for file 3"), "{err}");
    }

    #[test]
    fn a_new_control_path_gets_setup_unacked_digests_and_file_hashes_again() {
        let t0 = Instant::now();
        let mut c = core(2, t0);
        for b in 0..4 {
            admit(&mut c, b, t0);
        }
        // Everything so far went out on the old control path.
        let sent: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
        assert!(matches!(sent[0], Frame::FecSetup { .. }));
        assert_eq!(sent.len(), 1 + 4 + 1, "setup, 4 digests, the file hash");
        c.handle_frame(0, Frame::BlockAck { file: 0, block: 1 }, t0)
            .unwrap();
        c.control_path_lost();
        let again: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
        let digests: Vec<u64> = again
            .iter()
            .filter_map(|f| match f {
                Frame::BlockDigest { block, .. } => Some(*block),
                _ => None,
            })
            .collect();
        assert!(matches!(again[0], Frame::FecSetup { .. }));
        assert_eq!(digests, [0, 2, 3], "the acknowledged block is not repeated");
        assert!(matches!(
            again.last(),
            Some(Frame::FileHash { file: 0, .. })
        ));
        // A file already done is not announced again.
        c.handle_frame(0, Frame::FileDone { file: 0 }, t0).unwrap();
        c.control_path_lost();
        let third: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
        assert!(!third.iter().any(|f| matches!(f, Frame::FileHash { .. })));
    }

    #[test]
    fn a_path_whose_reports_stopped_takes_no_shards() {
        let t0 = Instant::now();
        let mut c = core(2, t0);
        for b in 0..4 {
            admit(&mut c, b, t0);
        }
        let mut now = t0;
        let mut per_path = [0usize; 2];
        for ms in 1..=600u64 {
            now = t0 + Duration::from_millis(ms);
            c.tick(now);
            // Only path 0 reports.
            if ms % 10 == 0 {
                c.handle_frame(0, status(vec![], ms * 1000), now).unwrap();
            }
            for (p, _) in drain(&mut c, now) {
                // No report, no RTT measured (100 ms assumed): stalled
                // after max(4 × 100 ms, 250 ms).
                if ms > 450 {
                    per_path[p] += 1;
                }
            }
        }
        assert!(per_path[0] > 0);
        assert_eq!(per_path[1], 0, "a silent path is stalled");
        let _ = now;
    }

    fn streams_core(
        paths: usize,
        max_rate: Option<f64>,
        prioritised: bool,
        now: Instant,
    ) -> SenderCore {
        let manifest = Manifest::new(
            1 << 16,
            vec![ManifestEntry {
                name: "f".into(),
                size: 8 << 16,
            }],
        )
        .unwrap();
        let mut cfg = CoreConfig::default();
        cfg.plane(Plane::Streams)
            .block_size(1 << 16)
            .max_blocks(8)
            .max_rate(max_rate)
            .prioritised(prioritised)
            .path_caps(vec![None; paths]);
        let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, now);
        for i in 0..paths {
            c.path_up(i, now);
        }
        c
    }

    fn admit_stream(c: &mut SenderCore, block: u64, now: Instant) {
        let header = BlockHeader {
            file: 0,
            block,
            len: 1 << 16,
            digest: [block as u8; 32],
        };
        c.admit_block(now, &header, None);
    }

    fn blocks_out(c: &mut SenderCore, now: Instant) -> Vec<BlockSend> {
        std::iter::from_fn(|| match c.poll_transmit(now, |_| true) {
            Some(Transmit::Block(b)) => Some(b),
            Some(other) => panic!("a shard on the reliable plane: {other:?}"),
            None => None,
        })
        .collect()
    }

    #[test]
    fn reliable_plane_fills_each_path_to_its_room_and_moves_a_dead_paths_blocks() {
        let t0 = Instant::now();
        let mut c = streams_core(2, None, false, t0);
        for b in 0..8 {
            admit_stream(&mut c, b, t0);
        }
        let out = blocks_out(&mut c, t0);
        // No rate measured yet: four blocks of room on each path.
        let on = |p: usize, out: &[BlockSend]| out.iter().filter(|b| b.path == p).count();
        assert_eq!((on(0, &out), on(1, &out)), (4, 4), "{out:?}");
        // Older blocks get higher stream priorities.
        assert!(out.windows(2).all(|w| w[0].priority > w[1].priority));
        // No FEC_SETUP, no digests (the block header carries them): only
        // the file's hash once every block is read.
        let control: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
        assert!(
            matches!(control[..], [Frame::FileHash { file: 0, .. }]),
            "{control:?}"
        );

        // Path 0 dies: its blocks come back first, and leave on path 1 as
        // its own are acknowledged.
        let t1 = t0 + Duration::from_millis(50);
        c.path_failed(0, t1);
        assert_eq!(c.poll_event(), Some(CoreEvent::PathDied { path: 0 }));
        assert!(blocks_out(&mut c, t1).is_empty(), "path 1 is full");
        for b in out.iter().filter(|b| b.path == 1) {
            c.handle_frame(
                1,
                Frame::BlockAck {
                    file: 0,
                    block: b.block,
                },
                t1,
            )
            .unwrap();
        }
        let again = blocks_out(&mut c, t1);
        let mut moved: Vec<u64> = again.iter().map(|b| b.block).collect();
        let mut lost: Vec<u64> = out
            .iter()
            .filter(|b| b.path == 0)
            .map(|b| b.block)
            .collect();
        moved.sort_unstable();
        lost.sort_unstable();
        assert_eq!(moved, lost);
        assert!(again.iter().all(|b| b.path == 1));
        // A stream failing on the dead path changes nothing: the block is
        // on its way again already.
        c.stream_finished(0, 0, lost[0], false, t1);
        assert!(blocks_out(&mut c, t1).is_empty());
        for b in &again {
            c.handle_frame(
                1,
                Frame::BlockAck {
                    file: 0,
                    block: b.block,
                },
                t1,
            )
            .unwrap();
        }
        c.handle_frame(1, Frame::FileDone { file: 0 }, t1).unwrap();
        assert!(c.is_done());
        let acked = std::iter::from_fn(|| c.poll_event())
            .filter(|e| matches!(e, CoreEvent::BlockAcked { .. }))
            .count();
        assert_eq!(acked, 8);
        assert_eq!(c.path_figures(1).delivered, 8 << 16);
        assert_eq!(c.path_figures(0).delivered, 0);
    }

    #[test]
    fn a_failed_stream_on_a_live_path_fails_the_path() {
        let t0 = Instant::now();
        let mut c = streams_core(2, None, false, t0);
        admit_stream(&mut c, 0, t0);
        let out = blocks_out(&mut c, t0);
        assert_eq!(out.len(), 1);
        c.stream_finished(out[0].path, 0, 0, false, t0);
        assert_eq!(
            c.poll_event(),
            Some(CoreEvent::PathDied { path: out[0].path })
        );
        let again = blocks_out(&mut c, t0);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].path, out[0].path);
    }

    #[test]
    fn reliable_plane_holds_blocks_for_the_rate_cap() {
        let t0 = Instant::now();
        // 64 KiB per second: one block a second.
        let mut c = streams_core(1, Some(65_536.0), false, t0);
        for b in 0..3 {
            admit_stream(&mut c, b, t0);
        }
        assert_eq!(blocks_out(&mut c, t0).len(), 1);
        let wake = c.poll_timeout(t0);
        // The next poll comes no later than liveness's, and the block waits
        // for its turn.
        assert!(wake <= t0 + LIVENESS_EVERY);
        let half = t0 + Duration::from_millis(500);
        c.tick(half);
        assert!(blocks_out(&mut c, half).is_empty());
        assert_eq!(c.poll_timeout(half), half + LIVENESS_EVERY);
        let late = t0 + Duration::from_millis(950);
        c.tick(late);
        assert!(blocks_out(&mut c, late).is_empty());
        let wake = c.poll_timeout(late);
        assert!(
            wake > late && wake <= t0 + Duration::from_millis(1000),
            "{:?}",
            wake - t0
        );
        assert_eq!(
            blocks_out(&mut c, t0 + Duration::from_millis(1000)).len(),
            1
        );
    }

    #[test]
    fn with_priority_classes_a_block_is_admitted_only_when_none_waits() {
        let t0 = Instant::now();
        let mut c = streams_core(1, None, true, t0);
        assert!(c.wants_block());
        admit_stream(&mut c, 0, t0);
        assert!(!c.wants_block(), "block 0 still waits for a stream");
        assert_eq!(blocks_out(&mut c, t0).len(), 1);
        assert!(c.wants_block());
    }

    #[test]
    fn held_blocks_that_match_are_not_sent_and_others_are() {
        let t0 = Instant::now();
        let mut c = core(1, t0);
        let prefix = |b: u64| [b as u8; HAVE_DIGEST_LEN];
        // Block 0 held and the same; block 1 held with another digest (the
        // source changed); block 2 not held.
        c.handle_frame(
            0,
            Frame::Have {
                file: 0,
                first: 0,
                digests: vec![prefix(0), [9; HAVE_DIGEST_LEN]],
            },
            t0,
        )
        .unwrap();
        for b in 0..3 {
            admit(&mut c, b, t0);
        }
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(
            events,
            [CoreEvent::BlockResumed {
                file: 0,
                block: 0,
                bytes: 1 << 16
            }]
        );
        let mut sent = std::collections::BTreeSet::new();
        for ms in 1..=2000 {
            let now = t0 + Duration::from_millis(ms);
            sent.extend(drain(&mut c, now).iter().map(|(_, s)| s.block));
        }
        assert_eq!(sent.into_iter().collect::<Vec<_>>(), [1, 2]);
        let digests: Vec<u64> = std::iter::from_fn(|| c.poll_control())
            .filter_map(|f| match f {
                Frame::BlockDigest { block, .. } => Some(block),
                _ => None,
            })
            .collect();
        assert_eq!(digests, [1, 2], "no digest for the block not sent");
    }

    #[test]
    fn have_for_blocks_that_do_not_exist_is_a_protocol_error_and_no_resume_ignores_have() {
        let t0 = Instant::now();
        let mut c = core(1, t0);
        for (file, first, n) in [(0, 3, 2), (1, 0, 1), (0, u64::MAX, 1)] {
            let err = c
                .handle_frame(
                    0,
                    Frame::Have {
                        file,
                        first,
                        digests: vec![[0; HAVE_DIGEST_LEN]; n],
                    },
                    t0,
                )
                .unwrap_err();
            assert!(err.to_string().contains("no such blocks"), "{err}");
        }
        let manifest = Manifest::new(
            1 << 16,
            vec![ManifestEntry {
                name: "f".into(),
                size: 4 << 16,
            }],
        )
        .unwrap();
        let mut cfg = CoreConfig::default();
        cfg.shard_bytes(1024).resume(false);
        let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, t0);
        c.path_up(0, t0);
        c.handle_frame(
            0,
            Frame::Have {
                file: 0,
                first: 0,
                digests: vec![[0; HAVE_DIGEST_LEN]],
            },
            t0,
        )
        .unwrap();
        admit(&mut c, 0, t0);
        assert_eq!(c.poll_event(), None, "sent, not resumed");
    }
}
