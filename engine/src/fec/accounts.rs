//! The sender's side of the FEC plane (sans-IO): what was sent of each
//! block, and what to send when the receiver reports a deficit.
//!
//! [`SendAccounts::add`] plans a new block: all `k` source shards and an
//! up-front share of recovery shards ([`Redundancy`]: a fixed ratio such as
//! 10+3, or adaptive to the measured loss). [`SendAccounts::on_status`]
//! reads a FEC_STATUS: for a block still needing `n` shards it plans
//! `ceil((n + 1.5·√(n·p)) / (1 − p))` *fresh* recovery shards (never one
//! already sent), but only once the report can reflect everything sent so
//! far: at least `srtt + max(srtt/4, 5 ms)` after the block's last shard
//! went out. A block the receiver does not list at all (every shard lost)
//! gets the same treatment as one needing `k`, after twice that delay and
//! once the receiver has shown a block sent after it (else
//! [`SILENT_WAIT`] later: a receiver that is behind lists nothing yet). When
//! a block has used all its `r` recovery shards (more than half its shards
//! lost), source shards are sent again as a last resort and counted in
//! [`SendAccounts::exhausted`]. [`SendAccounts::on_retry`] starts a block
//! over under a new attempt number after it failed its digest.
//! [`SendAccounts::spare`] gives blocks in flight more recovery shards when
//! the sender has nothing else to send (the end of a transfer, a full
//! window), so fewer of them wait a round trip for a repair.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::Geometry;

type BlockId = (u32, u64);

/// How many recovery shards go out with a block before any report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Redundancy {
    /// `parity` recovery shards per `data` source shards (`--fec 10+3`).
    Fixed {
        /// Source shards per group.
        data: u16,
        /// Recovery shards per group.
        parity: u16,
    },
    /// From the measured loss `p`: `k·p/(1−p)` plus two standard
    /// deviations, at least 1 % of `k`; before `p` is measured, as for
    /// the prior the caller set ([`SendAccounts::set_prior`]), else 1 %;
    /// none on a path measured clean (`p` under [`CLEAN`]) (`--fec
    /// adaptive`).
    Adaptive,
}

/// The loss the blocks sent before any is measured are protected for on
/// a long path (see [`PRIOR_MIN_RTT`]), if they are among a transfer's
/// last ([`PRIOR_TAIL`]): what goes out in the first round trip or two,
/// before the first round of reports. At 1 % of `k` (as
/// before, and still on shorter paths), every such block on a path losing
/// 5 % needed a repair, a round trip more at the end of a short transfer:
/// 8 MiB over the relayed 1 s, 5 %-both-ways path took 4.07 s where its
/// data had all left by 2.2 s, and 3.36 s with this prior. On a clean
/// path it costs ~7 % more of those first blocks' shards.
pub const PRIOR_LOSS: f64 = 0.05;
/// The least RTT at which the sender plans for [`PRIOR_LOSS`] before the
/// loss is measured. On a shorter path a repair costs little time, and
/// repairs sized to what was lost cost fewer bytes than a margin on
/// every early block: on the relayed 40 ms, 5 % path the prior made a
/// 64 MiB transfer ~1 % slower (4 of 4 runs; 1.1 % more shards sent).
pub const PRIOR_MIN_RTT: Duration = Duration::from_millis(80);
/// The prior is for the blocks within this many bytes of a transfer's
/// end: about what a 200 Mbit/s path sends in a second and a half, so
/// that earlier blocks' repairs come back while these still leave.
pub const PRIOR_TAIL: u64 = 32 << 20;

/// How much longer than twice the settling time a block may go unlisted
/// and unacknowledged before it is sent again when the receiver has shown
/// no later block: the end of a transfer, or a receiver that is behind.
pub const SILENT_WAIT: Duration = Duration::from_millis(250);

/// A loss rate under which a path counts as clean: blocks go out without
/// up-front recovery shards. A shard lost there costs its block one round
/// trip for a repair; sending 1 % more with every block cost every block
/// its recovery shards' encoding (`work`'s module doc). At this rate a
/// 1 MiB block of 740 shards loses one 7 % of the time.
pub const CLEAN: f64 = 1e-4;

impl std::str::FromStr for Redundancy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "adaptive" {
            return Ok(Self::Adaptive);
        }
        let bad = || format!("--fec {s:?}: expected DATA+PARITY (e.g. 10+3) or \"adaptive\"");
        let (d, p) = s.split_once('+').ok_or_else(bad)?;
        let data: u16 = d.trim().parse().map_err(|_| bad())?;
        let parity: u16 = p.trim().parse().map_err(|_| bad())?;
        if data == 0 {
            return Err(format!("--fec {s:?}: DATA must be at least 1"));
        }
        Ok(Self::Fixed { data, parity })
    }
}

impl std::fmt::Display for Redundancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed { data, parity } => write!(f, "{data}+{parity}"),
            Self::Adaptive => f.write_str("adaptive"),
        }
    }
}

/// One shard to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRef {
    /// Index into the manifest.
    pub file: u32,
    /// Block index.
    pub block: u64,
    /// Wire index (`< k` source, else recovery).
    pub index: u16,
    /// The block's attempt.
    pub attempt: u8,
}

impl ShardRef {
    /// The datagram carrying this shard of a block whose data is `data`,
    /// laid out by `g`, with `recovery` its encoded recovery shards: the
    /// shard header ([`crate::wire::ShardHeader`]) and the payload.
    pub fn datagram(&self, g: &Geometry, data: &[u8], recovery: &[u8]) -> bytes::BytesMut {
        use bytes::BufMut;
        let mut d = bytes::BytesMut::with_capacity(crate::wire::SHARD_HEADER_LEN + g.shard_bytes);
        d.put_slice(
            &crate::wire::ShardHeader {
                file: self.file,
                block: self.block,
                index: self.index,
                attempt: self.attempt,
                recovery: g.r as u16,
            }
            .encode(),
        );
        let i = usize::from(self.index);
        if i < g.k {
            d.put_slice(&g.source_shard(data, i));
        } else {
            let j = i - g.k;
            d.put_slice(&recovery[j * g.shard_bytes..(j + 1) * g.shard_bytes]);
        }
        d
    }
}

#[derive(Debug, Clone)]
struct Account {
    geometry: Geometry,
    attempt: u8,
    next_repair: usize,
    resend_cursor: usize,
    queued: usize,
    last_sent: Option<Instant>,
    listed: bool,
    /// Recovery shards sent on spare capacity ([`SendAccounts::spare`]).
    spare: usize,
    /// Recovery shards planned beyond the up-front ones, all attempts.
    extra: u64,
    /// Send order ([`SendAccounts::on_sent`]'s count) of its first and
    /// latest shard.
    first_seq: Option<u64>,
    last_seq: u64,
}

/// Per-block accounting of the shards a sender has sent.
#[derive(Debug, Clone)]
pub struct SendAccounts {
    redundancy: Redundancy,
    loss: Option<f64>,
    /// The loss planned for while `loss` is unknown (0: the 1 % minimum).
    prior: f64,
    blocks: BTreeMap<BlockId, Account>,
    /// Source shards planned.
    pub sources_planned: u64,
    /// Recovery shards planned up front.
    pub upfront_planned: u64,
    /// Recovery shards planned in answer to deficits.
    pub repairs_planned: u64,
    /// Source shards re-sent because a block ran out of recovery shards.
    pub exhausted: u64,
    /// Recovery shards planned on spare capacity.
    pub spare_planned: u64,
    /// The part of the 1 % minimum not yet sent, in hundredths of a shard
    /// ([`Self::upfront_for_new`]).
    minimum_owed: usize,
    /// Shards sent so far (the send order of the latest).
    sent_seq: u64,
    /// The latest first-shard send order among the blocks the receiver
    /// has shown it saw (listed in a status, or acknowledged).
    seen_seq: u64,
}

impl SendAccounts {
    /// Accounts with the given up-front redundancy.
    pub fn new(redundancy: Redundancy) -> Self {
        Self {
            redundancy,
            loss: None,
            prior: 0.0,
            blocks: BTreeMap::new(),
            sources_planned: 0,
            upfront_planned: 0,
            repairs_planned: 0,
            exhausted: 0,
            spare_planned: 0,
            minimum_owed: 0,
            sent_seq: 0,
            seen_seq: 0,
        }
    }

    /// The loss rate to plan for (0..=0.5), from the rate controllers,
    /// once one has measured it (until then blocks get the adaptive
    /// minimum).
    pub fn set_loss(&mut self, p: f64) {
        self.loss = Some(p.clamp(0.0, 0.5));
    }

    /// The loss to plan for until one is measured (e.g. [`PRIOR_LOSS`] on
    /// a long path; 0, the default, for the 1 % minimum).
    pub fn set_prior(&mut self, p: f64) {
        self.prior = p.clamp(0.0, 0.5);
    }

    /// Whether a loss has been measured ([`set_loss`](Self::set_loss)).
    pub fn loss_known(&self) -> bool {
        self.loss.is_some()
    }

    /// The payload bytes of each shard of a block in flight.
    pub fn shard_bytes_of(&self, file: u32, block: u64) -> Option<usize> {
        self.blocks
            .get(&(file, block))
            .map(|a| a.geometry.shard_bytes)
    }

    /// Blocks sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.blocks.len()
    }

    /// Recovery shards sent with a block of `k` before any report.
    pub fn upfront(&self, k: usize) -> usize {
        match self.redundancy {
            Redundancy::Fixed { data, parity } => {
                (k * usize::from(parity)).div_ceil(usize::from(data))
            }
            Redundancy::Adaptive if !self.plans_upfront() => 0,
            Redundancy::Adaptive => self.upfront_for_loss(k).max(k.div_ceil(100)),
        }
    }

    /// [`Redundancy::Adaptive`]'s up-front shards for the loss planned for,
    /// without the 1 % minimum.
    fn upfront_for_loss(&self, k: usize) -> usize {
        let (n, p) = (k as f64, self.loss.unwrap_or(self.prior));
        let extra = (n * p + 2.0 * (n * p).sqrt()) / (1.0 - p);
        extra.ceil() as usize
    }

    /// The up-front shards a new block of `k` goes out with: as
    /// [`upfront`](Self::upfront), except that the 1 % minimum is
    /// counted across blocks rather than rounded up in each, so a block of
    /// 8 sources (a 10 kB file) carries one every 12.5 blocks, not one
    /// each: 12.5 % more shards for a thousand small files on a clean path
    /// before its loss was measured.
    fn upfront_for_new(&mut self, k: usize) -> usize {
        if !matches!(self.redundancy, Redundancy::Adaptive) || !self.plans_upfront() {
            return self.upfront(k);
        }
        let by_loss = self.upfront_for_loss(k);
        if by_loss >= k.div_ceil(100) {
            return by_loss;
        }
        // In hundredths of a shard, so that it adds up exactly.
        self.minimum_owed += k;
        let due = self.minimum_owed / 100;
        self.minimum_owed %= 100;
        by_loss.max(due)
    }

    /// How many recovery shards per source shard a new block may need
    /// (`fec::codec::recovery_for` sizes its `r` from this), given the
    /// worst random loss a path has measured (`None` before any): three
    /// times the expected repairs `p/(1−p)` plus 5 %, twice a fixed
    /// ratio's parity, all of `k` before the loss is known. At 5 % loss a
    /// 1 MiB block gets 256 of its 751 (0.21 needed), at 10 % all 751.
    pub fn recovery_share(&self, worst_loss: Option<f64>) -> f64 {
        let fixed = match self.redundancy {
            Redundancy::Fixed { data, parity } => 2.0 * f64::from(parity) / f64::from(data),
            Redundancy::Adaptive => 0.0,
        };
        let lossy = worst_loss.map_or(1.0, |p| {
            let p = p.clamp(0.0, 0.5);
            3.0 * p / (1.0 - p) + 0.05
        });
        fixed.max(lossy).min(1.0)
    }

    /// Whether blocks go out with recovery shards before any report (so
    /// their recovery shards are worth encoding ahead: `work::EncodeAhead`).
    pub fn plans_upfront(&self) -> bool {
        match self.redundancy {
            Redundancy::Fixed { parity, .. } => parity > 0,
            Redundancy::Adaptive => self.loss.is_none_or(|p| p >= CLEAN),
        }
    }

    fn plan(&mut self, id: BlockId, recovery: usize, with_sources: bool) -> Vec<ShardRef> {
        let Some(a) = self.blocks.get_mut(&id) else {
            return Vec::new();
        };
        let k = a.geometry.k;
        let mut out = Vec::new();
        let shard = |index: usize, attempt| ShardRef {
            file: id.0,
            block: id.1,
            index: index as u16,
            attempt,
        };
        if with_sources {
            out.extend((0..k).map(|i| shard(i, a.attempt)));
            self.sources_planned += k as u64;
        }
        for _ in 0..recovery {
            if a.next_repair < a.geometry.r {
                out.push(shard(k + a.next_repair, a.attempt));
                a.next_repair += 1;
            } else {
                out.push(shard(a.resend_cursor % k, a.attempt));
                a.resend_cursor += 1;
                self.exhausted += 1;
            }
        }
        a.queued += out.len();
        out
    }

    /// Plans a new block: its sources and up-front recovery shards.
    pub fn add(&mut self, file: u32, block: u64, geometry: Geometry) -> Vec<ShardRef> {
        let id = (file, block);
        self.blocks.insert(
            id,
            Account {
                geometry,
                attempt: 0,
                next_repair: 0,
                resend_cursor: 0,
                queued: 0,
                last_sent: None,
                listed: false,
                spare: 0,
                extra: 0,
                first_seq: None,
                last_seq: 0,
            },
        );
        let up = self.upfront_for_new(geometry.k).min(geometry.r);
        self.upfront_planned += up as u64;
        self.plan(id, up, true)
    }

    /// One recovery shard for a block in flight, to send when nothing else
    /// waits (the sender is out of new blocks, at the end of the transfer or
    /// with its window full): the block whose planned shards have all left
    /// and which had the fewest such extras, oldest first. Each block takes
    /// at most its up-front share again, never past its `r`. A block whose
    /// shards were lost waits a round trip and more for a repair; capacity
    /// that would go unused pays for the margin instead.
    pub fn spare(&mut self) -> Option<ShardRef> {
        let id = self
            .blocks
            .iter()
            .filter(|(_, a)| {
                a.queued == 0
                    && a.last_sent.is_some()
                    && a.next_repair < a.geometry.r
                    && a.spare < self.upfront(a.geometry.k)
            })
            .min_by_key(|(id, a)| (a.spare, a.last_sent, **id))
            .map(|(id, _)| *id)?;
        let a = self.blocks.get_mut(&id)?;
        a.spare += 1;
        a.extra += 1;
        self.spare_planned += 1;
        self.plan(id, 1, false).pop()
    }

    /// A planned shard went out now.
    pub fn on_sent(&mut self, shard: &ShardRef, now: Instant) {
        self.sent_seq += 1;
        if let Some(a) = self.blocks.get_mut(&(shard.file, shard.block))
            && a.attempt == shard.attempt
        {
            a.queued = a.queued.saturating_sub(1);
            a.last_sent = Some(now);
            a.first_seq.get_or_insert(self.sent_seq);
            a.last_seq = self.sent_seq;
        }
    }

    /// The shards to answer `n` missing ones with, at the planned loss.
    pub fn answer(&self, n: u32) -> usize {
        let (n, p) = (f64::from(n), self.loss.unwrap_or(0.0));
        ((n + 1.5 * (n * p).sqrt()) / (1.0 - p)).ceil() as usize
    }

    /// Reads a FEC_STATUS (`needed`: file, block, shards still needed) at
    /// `now`; returns the repair shards to send.
    ///
    /// `written` is when the receiver wrote the report, on the sender's
    /// clock ([`super::report_clock`]); a report read late must not make
    /// shards still on their way look lost. `now` is when it is read.
    pub fn on_status(
        &mut self,
        now: Instant,
        written: Instant,
        srtt: Duration,
        needed: &[(u32, u64, u32)],
    ) -> Vec<ShardRef> {
        let settle = srtt + (srtt / 4).max(Duration::from_millis(5));
        let listed: std::collections::HashSet<BlockId> =
            needed.iter().map(|&(f, b, _)| (f, b)).collect();
        // A full status (under the entry limit) lets silence mean "nothing arrived".
        let complete_list = needed.len() < crate::wire::MAX_STATUS_ENTRIES;
        let mut wanted: Vec<(BlockId, usize)> = Vec::new();
        for &(f, b, n) in needed {
            if let Some(a) = self.blocks.get_mut(&(f, b)) {
                a.listed = true;
                self.seen_seq = self.seen_seq.max(a.first_seq.unwrap_or(0));
                let settled = a.queued == 0 && a.last_sent.is_none_or(|t| written >= t + settle);
                if n > 0 && settled {
                    wanted.push(((f, b), n as usize));
                }
            }
        }
        if complete_list {
            for (&id, a) in &self.blocks {
                // Unlisted for long enough, and either the receiver has
                // seen a block whose shards left after this one's last, or
                // a good while longer has passed: a receiver busy writing
                // small files reported 70 ms behind the shards it had been
                // sent, and on time alone 40-80 % of 20 000 one-shard
                // blocks were sent twice over loopback.
                let silent = !listed.contains(&id)
                    && a.queued == 0
                    && a.last_sent.is_some_and(|t| {
                        written >= t + 2 * settle
                            && (a.last_seq < self.seen_seq
                                || written >= t + 2 * settle + SILENT_WAIT)
                    });
                if silent {
                    wanted.push((id, a.geometry.k));
                }
            }
        }
        let mut out = Vec::new();
        for (id, n) in wanted {
            let count = self.answer(n as u32);
            self.repairs_planned += count as u64;
            // Hold further answers until these have had time to arrive.
            if let Some(a) = self.blocks.get_mut(&id) {
                a.last_sent = Some(now);
                a.extra += count as u64;
            }
            out.extend(self.plan(id, count, false));
        }
        out
    }

    /// The receiver verified and wrote the block: the recovery shards it
    /// took beyond the up-front ones (repairs and spare capacity), or
    /// `None` if it was acknowledged already.
    pub fn on_acked(&mut self, file: u32, block: u64) -> Option<u64> {
        let a = self.blocks.remove(&(file, block))?;
        self.seen_seq = self.seen_seq.max(a.first_seq.unwrap_or(0));
        Some(a.extra)
    }

    /// The receiver asks for the block again as `attempt` (its digest
    /// failed): all sources and the up-front recovery shards, anew.
    pub fn on_retry(&mut self, file: u32, block: u64, attempt: u8) -> Vec<ShardRef> {
        let id = (file, block);
        let up = match self.blocks.get(&id) {
            Some(a) if attempt > a.attempt => self.upfront(a.geometry.k).min(a.geometry.r),
            _ => return Vec::new(),
        };
        let a = self.blocks.get_mut(&id).expect("checked above");
        a.attempt = attempt;
        a.next_repair = 0;
        a.resend_cursor = 0;
        a.spare = 0;
        a.queued = 0;
        a.last_sent = None;
        self.plan(id, up, true)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::fec::collector::{Accepted, ShardCollector};
    use crate::wire::ShardHeader;
    use proptest::prelude::*;

    #[test]
    fn redundancy_parses_and_sizes() {
        assert_eq!(
            "10+3".parse(),
            Ok(Redundancy::Fixed {
                data: 10,
                parity: 3
            })
        );
        assert_eq!("adaptive".parse(), Ok(Redundancy::Adaptive));
        assert!(
            "10".parse::<Redundancy>()
                .unwrap_err()
                .contains("DATA+PARITY")
        );
        assert!(
            "0+3"
                .parse::<Redundancy>()
                .unwrap_err()
                .contains("at least 1")
        );
        let a = SendAccounts::new("10+3".parse().unwrap());
        assert_eq!(a.upfront(749), 225);
        let mut a = SendAccounts::new(Redundancy::Adaptive);
        // Loss not measured yet: 1 %, or as for the prior if one is set
        // (a long path).
        assert_eq!(a.upfront(749), 8);
        a.set_prior(PRIOR_LOSS);
        let prior = a.upfront(749);
        assert!((40..=70).contains(&prior), "{prior}");
        assert!(a.plans_upfront());
        // A clean path: nothing up front, nothing to encode ahead.
        a.set_loss(0.0);
        assert_eq!(a.upfront(749), 0);
        assert!(!a.plans_upfront());
        // Any measured loss: at least 1 %.
        a.set_loss(CLEAN);
        assert_eq!(a.upfront(749), 8);
        assert!(a.plans_upfront());
        a.set_loss(0.05);
        let up = a.upfront(749);
        assert_eq!(up, prior);
    }

    #[test]
    fn deficits_get_fresh_shards_only_after_the_report_can_reflect_them() {
        let g = Geometry::new(10_000, 1000).unwrap(); // k = 10, r = 10
        let mut a = SendAccounts::new("10+3".parse().unwrap());
        let plan = a.add(0, 0, g);
        assert_eq!(plan.len(), 13);
        let t0 = Instant::now();
        for s in &plan {
            a.on_sent(s, t0);
        }
        let srtt = Duration::from_millis(40);
        // Too early: the report cannot have seen the last shards.
        assert!(
            a.on_status(t0 + srtt, t0 + srtt, srtt, &[(0, 0, 2)])
                .is_empty()
        );
        let repairs = a.on_status(t0 + srtt * 2, t0 + srtt * 2, srtt, &[(0, 0, 2)]);
        let idx: Vec<u16> = repairs.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![13, 14], "fresh recovery shards, never repeats");
        // Until those were sent and had time, no second answer.
        assert!(
            a.on_status(t0 + srtt * 3, t0 + srtt * 3, srtt, &[(0, 0, 2)])
                .is_empty()
        );
        assert!(a.on_acked(0, 0).is_some());
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn spare_capacity_adds_margin_to_sent_blocks_evenly_and_within_bounds() {
        let g = Geometry::new(10_000, 1000).unwrap(); // k = 10, r = 10
        let mut a = SendAccounts::new("10+3".parse().unwrap());
        let t0 = Instant::now();
        let first = a.add(0, 0, g);
        // Nothing spare for a block whose planned shards have not left.
        assert_eq!(a.spare(), None);
        for s in &first {
            a.on_sent(s, t0);
        }
        for s in a.add(0, 1, g) {
            a.on_sent(&s, t0 + Duration::from_millis(1));
        }
        // Oldest first, then evenly: each block's next fresh recovery
        // shard (13, 14, 15 after the three up front), three per block
        // (its up-front share again).
        let mut got = Vec::new();
        while let Some(s) = a.spare() {
            a.on_sent(&s, t0 + Duration::from_millis(2));
            got.push((s.block, s.index));
        }
        assert_eq!(
            got,
            vec![(0, 13), (1, 13), (0, 14), (1, 14), (0, 15), (1, 15)]
        );
        assert_eq!(a.spare_planned, 6);
        // A deficit is still answered with fresh shards, never a repeat.
        let late = t0 + Duration::from_secs(1);
        let needed = [(0, 0, 2), (0, 1, 0)];
        let repairs = a.on_status(late, late, Duration::from_millis(10), &needed);
        let idx: Vec<u16> = repairs.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![16, 17]);
        // Never past r: a block whose recovery shards are all sent gets none.
        let mut b = SendAccounts::new("10+10".parse().unwrap());
        for s in b.add(0, 0, g) {
            b.on_sent(&s, t0);
        }
        assert_eq!(b.spare(), None);
    }

    #[test]
    fn a_report_read_late_is_judged_by_when_it_was_written() {
        let g = Geometry::new(10_000, 1000).unwrap(); // k = 10
        let mut a = SendAccounts::new("10+3".parse().unwrap());
        let t0 = Instant::now();
        for s in a.add(0, 0, g) {
            a.on_sent(&s, t0);
        }
        let srtt = Duration::from_millis(1);
        // Written 1 ms after the last shard left (it could not have seen
        // them all), read 50 ms later: the deficit is not loss yet.
        let written = t0 + srtt;
        let read = written + Duration::from_millis(50);
        assert!(a.on_status(read, written, srtt, &[(0, 0, 9)]).is_empty());
        // A report written late enough is answered.
        let written = t0 + Duration::from_millis(7);
        assert_eq!(a.on_status(read, written, srtt, &[(0, 0, 2)]).len(), 2);
    }

    #[test]
    fn a_silent_block_is_resent_with_recovery_and_a_retry_starts_over() {
        let g = Geometry::new(4_000, 1000).unwrap(); // k = 4, r = 4
        let mut a = SendAccounts::new("10+3".parse().unwrap());
        let t0 = Instant::now();
        for s in a.add(0, 7, g) {
            a.on_sent(&s, t0);
        }
        let srtt = Duration::from_millis(10);
        // Nothing later was seen: silence counts only after 2 × settle
        // (30 ms here) and `SILENT_WAIT`.
        let at = t0 + Duration::from_millis(200);
        assert!(a.on_status(at, at, srtt, &[]).is_empty());
        let at = t0 + Duration::from_millis(300);
        let r = a.on_status(at, at, srtt, &[]);
        // Recovery shards 6 and 7 are the last fresh ones (4 and 5 went up
        // front); then sources are sent again, counted as exhausted.
        let idx: Vec<u16> = r.iter().map(|s| s.index).collect();
        assert_eq!(idx, vec![6, 7, 0, 1]);
        assert_eq!(a.exhausted, 2);
        let again = a.on_retry(0, 7, 1);
        assert_eq!(again.len(), 4 + 2);
        assert!(again.iter().all(|s| s.attempt == 1));
        assert!(a.on_retry(0, 7, 1).is_empty(), "a stale retry is ignored");
    }

    #[test]
    fn a_block_is_silent_early_only_once_the_receiver_saw_a_later_one() {
        let g = Geometry::new(1_000, 1000).unwrap(); // k = 1
        let srtt = Duration::from_millis(10);
        let t0 = Instant::now();
        let mut a = SendAccounts::new("1+0".parse().unwrap());
        for b in 0..3 {
            for s in a.add(0, b, g) {
                a.on_sent(&s, t0);
            }
        }
        // 40 ms on (past 2 × settle), a receiver that is behind lists
        // nothing and has acknowledged nothing: no block is judged lost.
        let at = t0 + Duration::from_millis(40);
        assert!(a.on_status(at, at, srtt, &[]).is_empty());
        // Once block 2 (sent after 0 and 1) is acknowledged, block 0 and
        // block 1, unlisted and unacknowledged, were lost.
        a.on_acked(0, 2);
        let at = t0 + Duration::from_millis(50);
        let again: Vec<u64> = a
            .on_status(at, at, srtt, &[])
            .iter()
            .map(|s| s.block)
            .collect();
        assert!(again.contains(&0) && again.contains(&1), "{again:?}");
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn chance(&mut self, p: f64) -> bool {
            ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Over a seeded lossy link (20 ms each way, status every 10 ms),
        /// every block completes, and the recovery shards sent stay within
        /// twice the shards lost plus two per block (the deficit answers'
        /// margin).
        #[test]
        fn every_block_completes_with_bounded_repair(
            loss in 0.0f64..0.3,
            seed in 1u64..u64::MAX,
            adaptive: bool,
            blocks in 1u64..40,
        ) {
            let shard = 100usize;
            let len = 20_000usize; // k = 200
            let mut acc = SendAccounts::new(if adaptive { Redundancy::Adaptive } else { "10+3".parse().unwrap() });
            acc.set_loss(loss);
            let mut col = ShardCollector::new(shard, 64, &[blocks]);
            let mut rng = Rng(seed | 1);
            let t0 = Instant::now();
            let owd = 20u64;
            let srtt = Duration::from_millis(2 * owd);
            let mut wire: std::collections::VecDeque<(u64, ShardRef)> = Default::default();
            type Status = Vec<(u32, u64, u32)>;
            // (read at, written at, status): some reports wait up to 60 ms
            // more before the sender reads them (a busy sender), in order.
            let mut reports: std::collections::VecDeque<(u64, u64, Status)> = Default::default();
            let mut acks: std::collections::VecDeque<(u64, u64)> = Default::default();
            let mut outbox: Vec<ShardRef> = Vec::new();
            for b in 0..blocks {
                outbox.extend(acc.add(0, b, Geometry::new(len, shard).unwrap()));
            }
            let (mut sent, mut lost, mut done) = (0u64, 0u64, 0u64);
            let mut t = 0u64;
            while done < blocks {
                prop_assert!(t < 60_000, "stuck: {done} of {blocks} blocks after 60 s");
                let now = t0 + Duration::from_millis(t);
                // A paced sender: 20 shards per ms, so blocks arrive over
                // time and reports see them part-way.
                for s in outbox.drain(..outbox.len().min(20)) {
                    acc.on_sent(&s, now);
                    sent += 1;
                    if rng.chance(loss) { lost += 1 } else { wire.push_back((t + owd, s)) }
                }
                while wire.front().is_some_and(|w| w.0 <= t) {
                    let (_, s) = wire.pop_front().unwrap();
                    let h = ShardHeader { file: s.file, block: s.block, index: s.index, attempt: s.attempt, recovery: Geometry::new(len, shard).unwrap().r as u16 };
                    if let Accepted::Complete(c) = col.on_shard(h, bytes::Bytes::from(vec![0u8; shard]), len).unwrap() {
                        col.finished(c.file, c.block);
                        acks.push_back((t + owd, c.block));
                    }
                }
                if t % 10 == 0 {
                    let late = if rng.chance(0.2) { rng.next() % 60 } else { 0 };
                    let read = (t + owd + late).max(reports.back().map_or(0, |r| r.0));
                    reports.push_back((read, t, col.status()));
                }
                while reports.front().is_some_and(|r| r.0 <= t) {
                    let (_, written, st) = reports.pop_front().unwrap();
                    // As ReportClock dates it: written + the least one-way delay.
                    let written = t0 + Duration::from_millis(written + owd);
                    outbox.extend(acc.on_status(now, written, srtt, &st));
                }
                while acks.front().is_some_and(|a| a.0 <= t) {
                    let (_, b) = acks.pop_front().unwrap();
                    if acc.on_acked(0, b).is_some() { done += 1 }
                }
                t += 1;
            }
            let recovery = acc.upfront_planned + acc.repairs_planned;
            let upfront = acc.upfront_planned;
            prop_assert!(
                acc.repairs_planned <= 2 * lost + 2 * blocks + upfront / 2,
                "repairs {} for {lost} lost shards of {sent} (up front {upfront})", acc.repairs_planned
            );
            prop_assert!(recovery as f64 <= upfront as f64 + 2.0 * lost as f64 + 2.0 * blocks as f64 + 0.5 * upfront as f64);
            prop_assert_eq!(acc.exhausted, 0);
        }
    }

    #[test]
    fn the_one_percent_minimum_is_counted_across_blocks_not_rounded_up_in_each() {
        // Before the loss is measured: 1 % of the sources.
        let mut a = SendAccounts::new(Redundancy::Adaptive);
        let small = Geometry::new(8_000, 1000).unwrap(); // k = 8
        for b in 0..100 {
            a.add(0, b, small);
        }
        assert_eq!(a.upfront_planned, 8, "one per 12.5 blocks of 8, not 100");
        let mut a = SendAccounts::new(Redundancy::Adaptive);
        let full = Geometry::new(750_000, 1000).unwrap(); // k = 750
        for b in 0..10 {
            a.add(0, b, full);
        }
        assert_eq!(a.upfront_planned, 75, "7.5 per block on average");
        // A measured loss plans for itself, block by block, as before.
        let mut a = SendAccounts::new(Redundancy::Adaptive);
        a.set_loss(0.05);
        for b in 0..10 {
            a.add(0, b, small);
        }
        assert_eq!(a.upfront_planned, 10 * a.upfront(8) as u64);
        assert_eq!(a.upfront(8), 2);
    }
}
