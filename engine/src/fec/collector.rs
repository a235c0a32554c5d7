//! The receiver's side of the FEC plane (sans-IO): shards per block until
//! any `k` of them are in, then the block is handed out for decoding.
//!
//! [`ShardCollector::on_shard`] files a shard under its block and returns
//! [`Accepted::Complete`] with the block's shards the moment the `k`-th
//! distinct one arrives. Later shards of that block are ignored, as are
//! shards of an older attempt (the sender's counter, raised by
//! [`ShardCollector::retry`] after a block failed its digest) and shards for
//! new blocks while [`ShardCollector::max_blocks`] are already incomplete:
//! the memory held is bounded by that many blocks. [`ShardCollector::status`]
//! lists every incomplete block and how many shards it still needs, for
//! FEC_STATUS; blocks being decoded and written are listed with 0.

#![deny(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codec::Geometry;
use crate::wire::{MAX_STATUS_ENTRIES, ShardHeader};

type BlockId = (u32, u64);

#[derive(Debug)]
struct Partial {
    geometry: Geometry,
    attempt: u8,
    shards: Vec<Option<Bytes>>,
    have: usize,
}

/// A block whose `k` shards are in.
#[derive(Debug)]
pub struct CompleteBlock {
    /// Index into the manifest.
    pub file: u32,
    /// Block index.
    pub block: u64,
    /// The attempt these shards belong to.
    pub attempt: u8,
    /// Its layout.
    pub geometry: Geometry,
    /// Shards by wire index, `k` of them present.
    pub shards: Vec<Option<Bytes>>,
}

/// What became of a shard.
#[derive(Debug)]
pub enum Accepted {
    /// Filed; the block needs more.
    Stored,
    /// The block is complete: decode it.
    Complete(CompleteBlock),
    /// Not needed (block done or being decoded, stale attempt, duplicate).
    Unneeded,
    /// Dropped: too many blocks incomplete at once.
    Overflow,
}

/// Per-block shard collection of one session.
#[derive(Debug)]
pub struct ShardCollector {
    shard_bytes: usize,
    max_blocks: usize,
    partial: BTreeMap<BlockId, Partial>,
    /// Blocks handed out for decoding, not yet written: listed with 0.
    decoding: BTreeMap<BlockId, u8>,
    /// Per file, a bit per block: complete (decoded, verified, written).
    finished: Vec<Vec<u64>>,
    attempts: BTreeMap<BlockId, u8>,
    /// Shard payload bytes received (including unneeded ones).
    pub delivered: u64,
    /// Shards received.
    pub shards: u64,
    /// Shards dropped because too many blocks were incomplete.
    pub overflowed: u64,
}

impl ShardCollector {
    /// A collector for files with `block_counts[f]` blocks each.
    pub fn new(shard_bytes: usize, max_blocks: usize, block_counts: &[u64]) -> Self {
        Self {
            shard_bytes,
            max_blocks,
            partial: BTreeMap::new(),
            decoding: BTreeMap::new(),
            finished: block_counts
                .iter()
                .map(|&n| vec![0u64; n.div_ceil(64) as usize])
                .collect(),
            attempts: BTreeMap::new(),
            delivered: 0,
            shards: 0,
            overflowed: 0,
        }
    }

    /// More files, with `block_counts[f]` blocks each, after those it has.
    pub fn add_files(&mut self, block_counts: &[u64]) {
        self.finished.extend(
            block_counts
                .iter()
                .map(|&n| vec![0u64; n.div_ceil(64) as usize]),
        );
    }

    /// Most incomplete blocks held.
    pub fn max_blocks(&self) -> usize {
        self.max_blocks
    }

    fn done(&self, (f, b): BlockId) -> bool {
        self.finished[f as usize][(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// Whether the block was decoded, verified and written (the caller
    /// checked that it exists).
    pub fn is_finished(&self, file: u32, block: u64) -> bool {
        self.done((file, block))
    }

    /// Files a shard of block (`header.file`, `header.block`), whose length
    /// `block_len` the caller took from the manifest after checking that the
    /// block exists. A shard that does not fit the geometry (index out of
    /// range, wrong payload size) is the peer's protocol error.
    pub fn on_shard(
        &mut self,
        header: ShardHeader,
        payload: Bytes,
        block_len: usize,
    ) -> Result<Accepted, String> {
        self.delivered += payload.len() as u64;
        self.shards += 1;
        let id = (header.file, header.block);
        let geometry = Geometry::new(block_len, self.shard_bytes)
            .and_then(|g| g.with_recovery(header.recovery.into()))
            .map_err(|e| {
                format!(
                    "shard of block {} of file {}: {e}",
                    header.block, header.file
                )
            })?;
        if header.index as usize >= geometry.total() {
            return Err(format!(
                "shard {} of block {} of file {} is beyond its {} shards",
                header.index,
                header.block,
                header.file,
                geometry.total()
            ));
        }
        if payload.len() != geometry.shard_bytes {
            return Err(format!(
                "shard of {} bytes, block {} of file {} has shards of {}",
                payload.len(),
                header.block,
                header.file,
                geometry.shard_bytes
            ));
        }
        let attempt = self.attempts.get(&id).copied().unwrap_or(0);
        if header.attempt != attempt || self.done(id) || self.decoding.contains_key(&id) {
            return Ok(Accepted::Unneeded);
        }
        if !self.partial.contains_key(&id) && self.partial.len() >= self.max_blocks {
            self.overflowed += 1;
            return Ok(Accepted::Overflow);
        }
        let p = self.partial.entry(id).or_insert_with(|| Partial {
            geometry,
            attempt,
            shards: vec![None; geometry.total()],
            have: 0,
        });
        if p.geometry.r != geometry.r {
            return Err(format!(
                "shard of block {} of file {} says {} recovery shards, an earlier one {}",
                header.block, header.file, geometry.r, p.geometry.r
            ));
        }
        let slot = &mut p.shards[header.index as usize];
        if slot.is_some() {
            return Ok(Accepted::Unneeded);
        }
        *slot = Some(payload);
        p.have += 1;
        if p.have < p.geometry.k {
            return Ok(Accepted::Stored);
        }
        let p = self.partial.remove(&id).expect("present");
        self.decoding.insert(id, p.attempt);
        Ok(Accepted::Complete(CompleteBlock {
            file: id.0,
            block: id.1,
            attempt: p.attempt,
            geometry: p.geometry,
            shards: p.shards,
        }))
    }

    /// The block was verified and written.
    pub fn finished(&mut self, file: u32, block: u64) {
        self.decoding.remove(&(file, block));
        self.attempts.remove(&(file, block));
        self.finished[file as usize][(block / 64) as usize] |= 1 << (block % 64);
    }

    /// The decoded block failed its digest: forget its shards and accept the
    /// next attempt's. Returns that attempt, or `None` after 255 attempts.
    pub fn retry(&mut self, file: u32, block: u64) -> Option<u8> {
        let id = (file, block);
        self.decoding.remove(&id);
        self.partial.remove(&id);
        let next = self
            .attempts
            .get(&id)
            .copied()
            .unwrap_or(0)
            .checked_add(1)?;
        self.attempts.insert(id, next);
        Some(next)
    }

    /// Incomplete blocks and the shards each still needs, oldest first
    /// (blocks being decoded need 0), at most [`MAX_STATUS_ENTRIES`].
    pub fn status(&self) -> Vec<(u32, u64, u32)> {
        let mut out: Vec<(u32, u64, u32)> = self
            .partial
            .iter()
            .map(|(&(f, b), p)| (f, b, (p.geometry.k - p.have) as u32))
            .chain(self.decoding.keys().map(|&(f, b)| (f, b, 0)))
            .collect();
        out.sort_unstable();
        out.truncate(MAX_STATUS_ENTRIES);
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    fn h(block: u64, index: u16, attempt: u8) -> ShardHeader {
        ShardHeader {
            file: 0,
            block,
            index,
            attempt,
            recovery: 4,
        }
    }

    fn shard(x: u8) -> Bytes {
        Bytes::from(vec![x; 100])
    }

    #[test]
    fn a_block_completes_with_any_k_distinct_shards() {
        // 300 bytes in 100-byte shards: k = 3, r = 4.
        let mut c = ShardCollector::new(100, 4, &[10]);
        assert!(matches!(
            c.on_shard(h(0, 0, 0), shard(1), 300),
            Ok(Accepted::Stored)
        ));
        assert!(matches!(
            c.on_shard(h(0, 0, 0), shard(1), 300),
            Ok(Accepted::Unneeded)
        ));
        assert!(matches!(
            c.on_shard(h(0, 5, 0), shard(2), 300),
            Ok(Accepted::Stored)
        ));
        assert_eq!(c.status(), vec![(0, 0, 1)]);
        let Ok(Accepted::Complete(b)) = c.on_shard(h(0, 6, 0), shard(3), 300) else {
            panic!("not complete")
        };
        assert_eq!((b.geometry.k, b.shards.iter().flatten().count()), (3, 3));
        assert_eq!(c.status(), vec![(0, 0, 0)], "decoding is listed with 0");
        assert!(matches!(
            c.on_shard(h(0, 1, 0), shard(4), 300),
            Ok(Accepted::Unneeded)
        ));
        c.finished(0, 0);
        assert!(c.status().is_empty());
        assert!(matches!(
            c.on_shard(h(0, 2, 0), shard(4), 300),
            Ok(Accepted::Unneeded)
        ));
        assert_eq!((c.shards, c.delivered), (6, 600));
    }

    #[test]
    fn a_retry_discards_the_old_attempt() {
        let mut c = ShardCollector::new(100, 4, &[1]);
        for i in 0..2 {
            let _ = c.on_shard(h(0, i, 0), shard(1), 200).unwrap();
        }
        assert_eq!(c.retry(0, 0), Some(1));
        assert!(matches!(
            c.on_shard(h(0, 0, 0), shard(1), 200),
            Ok(Accepted::Unneeded)
        ));
        assert!(matches!(
            c.on_shard(h(0, 0, 1), shard(1), 200),
            Ok(Accepted::Stored)
        ));
        assert_eq!(c.status(), vec![(0, 0, 1)]);
    }

    #[test]
    fn memory_is_bounded_and_bad_shards_are_errors() {
        let mut c = ShardCollector::new(100, 2, &[10]);
        let _ = c.on_shard(h(0, 0, 0), shard(1), 1000).unwrap();
        let _ = c.on_shard(h(1, 0, 0), shard(1), 1000).unwrap();
        assert!(matches!(
            c.on_shard(h(2, 0, 0), shard(1), 1000),
            Ok(Accepted::Overflow)
        ));
        assert_eq!(c.overflowed, 1);
        // k = 10 and the header's r = 4.
        let e = c.on_shard(h(0, 14, 0), shard(1), 1000).unwrap_err();
        assert!(e.contains("beyond its 14 shards"), "{e}");
        // A recovery count the block cannot have, or one that changes.
        for r in [0, 11] {
            let bad = ShardHeader {
                recovery: r,
                ..h(0, 1, 0)
            };
            let e = c.on_shard(bad, shard(1), 1000).unwrap_err();
            assert!(
                e.contains(&format!("{r} recovery shards for a block of 10")),
                "{e}"
            );
        }
        let other = ShardHeader {
            recovery: 8,
            ..h(0, 1, 0)
        };
        let e = c.on_shard(other, shard(1), 1000).unwrap_err();
        assert!(
            e.contains("says 8 recovery shards, an earlier one 4"),
            "{e}"
        );
        let e = c
            .on_shard(h(0, 1, 0), Bytes::from(vec![0; 99]), 1000)
            .unwrap_err();
        assert!(e.contains("99 bytes"), "{e}");
    }

    #[test]
    fn a_short_block_s_shards_are_its_length_spread_evenly() {
        // A session of 100-byte shards; a block of 250 bytes is three
        // shards of 84, one of 10 bytes a single shard of 10.
        let mut c = ShardCollector::new(100, 4, &[2, 1]);
        let err = c.on_shard(h(0, 0, 0), shard(1), 250).unwrap_err();
        assert!(err.contains("block 0 of file 0 has shards of 84"), "{err}");
        for i in 0..2 {
            let r = c.on_shard(h(0, i, 0), Bytes::from(vec![1; 84]), 250);
            assert!(matches!(r, Ok(Accepted::Stored)));
        }
        let Ok(Accepted::Complete(b)) = c.on_shard(h(0, 2, 0), Bytes::from(vec![1; 84]), 250)
        else {
            panic!("not complete")
        };
        assert_eq!((b.geometry.k, b.geometry.shard_bytes), (3, 84));
        let one = ShardHeader {
            file: 1,
            ..h(0, 0, 0)
        };
        let Ok(Accepted::Complete(b)) = c.on_shard(one, Bytes::from(vec![2; 10]), 10) else {
            panic!("a one-shard block is complete at once")
        };
        assert_eq!((b.geometry.k, b.geometry.shard_bytes), (1, 10));
    }
}
