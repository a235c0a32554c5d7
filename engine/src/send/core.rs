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
//! A session may be *held open* for files added while it runs
//! ([`SenderCore::add_files`], `core/open.rs`): the agent's jobs to one
//! receiver then share this one scheduler.
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
//!   live path has its own rate controller ([`RateController`](crate::fec::rate::RateController), fed by its
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

pub use super::config::{CoreConfig, Plane};
pub use super::events::{CoreEvent, PathFigures, PathStats, Transmit};
pub use super::streams::BlockSend;
use super::streams::StreamPlane;
use crate::fec::accounts::{PRIOR_LOSS, PRIOR_MIN_RTT, PRIOR_TAIL, SendAccounts, ShardRef};
use crate::fec::codec::Geometry;
use crate::fec::shard_pacer::ShardPacer;
use crate::manifest::Manifest;
use crate::multipath::manager::{PathEvent, PathManager, PathState};
use crate::multipath::priority::{Class, Drr};
use crate::session::file_hashes::FileHashes;
use crate::wire::{BlockHeader, Frame, HAVE_DIGEST_LEN};
use shards::PathTx;

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

#[derive(Debug)]
struct Admitted {
    class: Class,
    at: Instant,
    digest: crate::hash::BlockDigest,
    len: u64,
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
    /// Bytes of the blocks in `blocks`.
    held_bytes: u64,
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
    /// A session held open for more files: batches sent with ADD_FILES
    /// whose FILES_ADDED has not come, by first file, and their blocks
    /// (see `core/open.rs`).
    awaiting: std::collections::BTreeMap<u32, (Vec<crate::wire::ManifestEntry>, u64)>,
    awaiting_blocks: u64,
    /// What KEEP_OPEN last said (`None`: never sent).
    open: Option<bool>,
    /// Blocks the receiver asked for again.
    pub retried_blocks: u64,
    /// Shards handed out.
    pub shards_sent: u64,
    /// Bytes of the blocks admitted so far (resumed ones included).
    admitted_bytes: u64,
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
            held_bytes: 0,
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
            awaiting: Default::default(),
            awaiting_blocks: 0,
            open: None,
            retried_blocks: 0,
            shards_sent: 0,
            admitted_bytes: 0,
            manifest,
            cfg,
        }
    }

    /// The session's files so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
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
        // Blocks of files the receiver has not taken yet are not wanted.
        if self.hashes.unread() <= self.awaiting_blocks {
            return false;
        }
        match &self.streams {
            Some(s) => {
                self.blocks.len() < self.cfg.max_blocks
                    && (!self.cfg.prioritised || s.queued() == 0)
            }
            None => {
                self.accounts.in_flight() < self.cfg.max_blocks
                    && self
                        .cfg
                        .max_block_bytes
                        .is_none_or(|max| self.held_bytes < max)
                    && self.fresh.total() < MAX_QUEUED
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
        self.admitted_bytes += u64::from(header.len);
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
                // Before the loss is measured, the last blocks of a
                // transfer over a long path are protected for a prior
                // (`fec::accounts::PRIOR_LOSS`): a repair for them would
                // come back after everything else is done. Earlier blocks
                // are repaired while later ones still leave: on a clean
                // 1 s path, giving every block admitted before the first
                // level (dozens, seconds in) the prior cost 1.5 % more
                // bytes for 256 MiB.
                if !self.accounts.loss_known() {
                    let long = (0..self.paths.len()).any(|i| {
                        self.manager.state(i) == PathState::Up
                            && self.paths[i].rate.min_rtt() >= Some(PRIOR_MIN_RTT)
                    });
                    let left = self
                        .manifest
                        .total_bytes()
                        .saturating_sub(self.admitted_bytes);
                    let prior = long && left <= PRIOR_TAIL;
                    self.accounts
                        .set_prior(if prior { PRIOR_LOSS } else { 0.0 });
                }
                let shard_bytes = geometry.shard_bytes as u64;
                for shard in self.accounts.add(file, block, geometry) {
                    self.fresh.push(class, shard, shard_bytes);
                }
            }
            (None, None) => debug_assert!(false, "a FEC block without its geometry"),
        }
        self.held_bytes += u64::from(header.len);
        self.blocks.insert(
            (file, block),
            Admitted {
                class,
                at: now,
                digest: header.digest,
                len: u64::from(header.len),
            },
        );
    }

    /// The receiver sent READY: from now on it reports on every path of
    /// the FEC plane, and one that stays silent is given up.
    pub fn admitted(&mut self, now: Instant) {
        self.reports_due.get_or_insert(now);
    }

    /// Runs the controllers (every [`TICK`]) and liveness (every 100 ms).
    pub fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_tick) >= TICK && self.streams.is_none() {
            self.last_tick = now;
            let idle = self.urgent.is_empty() && self.fresh.is_empty();
            let (mut weighted, mut rates, mut measured) = (0.0, 0.0, false);
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
                measured |= p.rate.loss_measured();
            }
            // Shards spread over the paths by rate: plan for their mix.
            if rates > 0.0 && measured {
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
        }
        self.open_again(&mut again);
        if self.streams.is_none() {
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

    /// Whole-file hashes known so far.
    pub fn file_hash(&self, file: usize) -> Option<blake3::Hash> {
        self.hashes.hashes[file]
    }
}

mod figures;
mod frames;
mod open;
mod paths;
mod shards;
#[cfg(test)]
mod tests;
