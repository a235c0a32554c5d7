//! The receiver's FEC plane within one session (sans-IO): shard collection
//! across every path, the digests the sender announced, and the reports
//! each path gets.
//!
//! [`FecReceive`] wraps the [`ShardCollector`] (which shards of which block
//! are in) with what the collector does not know: the block digests from
//! BLOCK_DIGEST (a block whose `k` shards are in waits here until its
//! digest arrives), and per path the shard bytes and shards that arrived on
//! it. A block's shards may come over any path; what each path delivered is
//! counted apart so that the sender's rate controller for that path sees
//! that path alone. [`FecReceive::status`] builds the FEC_STATUS a path
//! gets: its own counters, the receiver's clock, and the session's deficits
//! (the same list on every path, so a report lost with one path is made up
//! by another's).
//!
//! Bounds: the collector holds at most `max_blocks` incomplete blocks, and
//! at most `2 × max_blocks + 64` digests may be outstanding; a sender that
//! announces more is refused.

#![deny(clippy::disallowed_methods)]

use std::collections::HashMap;

use bytes::Bytes;

use super::SessionError;
use crate::fec::codec::Geometry;
use crate::fec::collector::{Accepted, CompleteBlock, ShardCollector};
use crate::hash::BlockDigest;
use crate::manifest::Manifest;
use crate::wire::{FecStatus, ShardHeader};

/// Most blocks a sender may keep incomplete at once on the FEC plane.
pub const FEC_MAX_BLOCKS: u16 = 1024;

/// Shards and shard bytes that arrived on one path.
#[derive(Debug, Clone, Copy, Default)]
struct PathCounts {
    delivered: u64,
    shards: u64,
}

/// The receiving side of the FEC plane within a session.
#[derive(Debug)]
pub struct FecReceive {
    collector: ShardCollector,
    digests: HashMap<(u32, u64), BlockDigest>,
    waiting: HashMap<(u32, u64), CompleteBlock>,
    max_digests: usize,
    paths: Vec<PathCounts>,
    setup: (u16, u16),
}

impl FecReceive {
    /// The FEC plane as FEC_SETUP announced it, checked against the
    /// manifest: every block must be codable with `shard_bytes`.
    pub fn new(
        manifest: &Manifest,
        shard_bytes: u16,
        max_blocks: u16,
    ) -> Result<Self, SessionError> {
        let sb = usize::from(shard_bytes);
        if sb < 64 || sb % 2 == 1 {
            return Err(SessionError::Protocol(format!(
                "FEC_SETUP: shard size {sb} must be even and at least 64"
            )));
        }
        if max_blocks == 0 || max_blocks > FEC_MAX_BLOCKS {
            return Err(SessionError::Protocol(format!(
                "FEC_SETUP: {max_blocks} blocks in flight, this receiver allows 1..={FEC_MAX_BLOCKS}"
            )));
        }
        Self::check_codable(manifest, 0, sb)
            .map_err(|e| SessionError::Protocol(format!("FEC_SETUP: {e}")))?;
        let counts: Vec<u64> = (0..manifest.files().len())
            .map(|f| manifest.block_count(f))
            .collect();
        Ok(Self {
            collector: ShardCollector::new(sb, usize::from(max_blocks), &counts),
            digests: HashMap::new(),
            waiting: HashMap::new(),
            max_digests: 2 * usize::from(max_blocks) + 64,
            paths: Vec::new(),
            setup: (shard_bytes, max_blocks),
        })
    }

    /// Whether every block of files `from..` of `manifest` can be coded
    /// with `shard_bytes`.
    fn check_codable(manifest: &Manifest, from: usize, shard_bytes: usize) -> Result<(), String> {
        let largest = manifest.block_size().min(
            manifest.files()[from.min(manifest.files().len())..]
                .iter()
                .map(|f| f.size)
                .max()
                .unwrap_or(0),
        ) as usize;
        if largest > 0 {
            Geometry::new(largest, shard_bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `manifest` now has more files, from `first` on (ADD_FILES).
    pub fn add_files(&mut self, manifest: &Manifest, first: usize) -> Result<(), SessionError> {
        Self::check_codable(manifest, first, usize::from(self.setup.0))
            .map_err(|e| SessionError::Protocol(format!("ADD_FILES: {e}")))?;
        let counts: Vec<u64> = (first..manifest.files().len())
            .map(|f| manifest.block_count(f))
            .collect();
        self.collector.add_files(&counts);
        Ok(())
    }

    fn check_block(manifest: &Manifest, file: u32, block: u64) -> Result<usize, SessionError> {
        if (file as usize) >= manifest.files().len() || block >= manifest.block_count(file as usize)
        {
            return Err(SessionError::Protocol(format!(
                "shard or digest for unknown block {block} of file {file}"
            )));
        }
        Ok(manifest.block_span(file as usize, block).1 as usize)
    }

    fn path(&mut self, path: usize) -> &mut PathCounts {
        if path >= self.paths.len() {
            self.paths.resize(path + 1, PathCounts::default());
        }
        &mut self.paths[path]
    }

    /// Files a datagram that arrived on `path`. Returns a block whose `k`
    /// shards are in *and* whose digest is known: decode it.
    pub fn on_datagram(
        &mut self,
        manifest: &Manifest,
        path: usize,
        datagram: Bytes,
    ) -> Result<Option<(CompleteBlock, BlockDigest)>, SessionError> {
        let Some((header, payload)) = ShardHeader::decode(&datagram) else {
            return Err(SessionError::Protocol(
                "datagram shorter than a shard header".into(),
            ));
        };
        let len = Self::check_block(manifest, header.file, header.block)?;
        let payload = datagram.slice_ref(payload);
        let counts = self.path(path);
        counts.delivered += payload.len() as u64;
        counts.shards += 1;
        match self
            .collector
            .on_shard(header, payload, len)
            .map_err(SessionError::Protocol)?
        {
            Accepted::Complete(c) => Ok(self.with_digest(c)),
            _ => Ok(None),
        }
    }

    fn with_digest(&mut self, complete: CompleteBlock) -> Option<(CompleteBlock, BlockDigest)> {
        let id = (complete.file, complete.block);
        match self.digests.get(&id) {
            Some(&d) => Some((complete, d)),
            None => {
                self.waiting.insert(id, complete);
                None
            }
        }
    }

    /// BLOCK_DIGEST: remembers the digest; returns the block if its shards
    /// were already in.
    pub fn on_digest(
        &mut self,
        manifest: &Manifest,
        file: u32,
        block: u64,
        digest: BlockDigest,
    ) -> Result<Option<(CompleteBlock, BlockDigest)>, SessionError> {
        Self::check_block(manifest, file, block)?;
        // Sent again after the sender's control path changed: a digest
        // already known or of a block already written is a no-op.
        if self.collector.is_finished(file, block)
            || self.digests.get(&(file, block)) == Some(&digest)
        {
            return Ok(None);
        }
        if self.digests.len() >= self.max_digests {
            return Err(SessionError::Protocol(format!(
                "more than {} block digests outstanding",
                self.max_digests
            )));
        }
        self.digests.insert((file, block), digest);
        Ok(self.waiting.remove(&(file, block)).map(|c| (c, digest)))
    }

    /// Whether a FEC_SETUP announces what this plane was set up with (a
    /// copy sent again after the sender's control path changed).
    pub fn same_setup(&self, shard_bytes: u16, max_blocks: u16) -> bool {
        self.setup == (shard_bytes, max_blocks)
    }

    /// The block was verified and written: forget it.
    pub fn finished(&mut self, file: u32, block: u64) {
        self.collector.finished(file, block);
        self.digests.remove(&(file, block));
    }

    /// A decoded block failed its digest: the attempt to ask for, or `None`
    /// once a block has failed 255 times.
    pub fn retry(&mut self, file: u32, block: u64) -> Option<u8> {
        self.collector.retry(file, block)
    }

    /// The FEC_STATUS for `path`, written at `micros` on the receiver's
    /// clock.
    pub fn status(&self, path: usize, micros: u64) -> FecStatus {
        let counts = self.paths.get(path).copied().unwrap_or_default();
        FecStatus {
            micros,
            delivered: counts.delivered,
            shards: counts.shards,
            needed: self.collector.status(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::fec::codec::encode_recovery;
    use crate::hash::block_digest;
    use crate::wire::ManifestEntry;
    use bytes::BufMut;

    fn datagram(block: u64, index: u16, payload: &[u8]) -> Bytes {
        let mut d = bytes::BytesMut::new();
        d.put_slice(
            &ShardHeader {
                file: 0,
                block,
                index,
                attempt: 0,
                recovery: 8,
            }
            .encode(),
        );
        d.put_slice(payload);
        d.freeze()
    }

    #[test]
    fn shards_from_several_paths_complete_one_block_and_each_path_counts_its_own() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let manifest = Manifest::new(
            4096,
            vec![ManifestEntry {
                name: "f".into(),
                size: 4096,
            }],
        )
        .unwrap();
        let g = Geometry::new(4096, 512).unwrap();
        let recovery = encode_recovery(&g, &data).unwrap();
        let mut fec = FecReceive::new(&manifest, 512, 4).unwrap();
        let digest = block_digest(&data, 0, 4096);
        assert!(fec.on_digest(&manifest, 0, 0, digest).unwrap().is_none());
        // Sources 0..4 on path 0, recovery shards on path 2 (path 1 silent).
        let mut done = None;
        for i in 0..4 {
            let s = g.source_shard(&data, i).into_owned();
            assert!(
                fec.on_datagram(&manifest, 0, datagram(0, i as u16, &s))
                    .unwrap()
                    .is_none()
            );
        }
        for j in 0..4 {
            let s = &recovery[j * 512..(j + 1) * 512];
            if let Some(c) = fec
                .on_datagram(&manifest, 2, datagram(0, (g.k + j) as u16, s))
                .unwrap()
            {
                done = Some(c);
            }
        }
        let (complete, d) = done.expect("k shards from two paths complete the block");
        assert_eq!(d, digest);
        assert_eq!(complete.shards.iter().flatten().count(), g.k);
        assert_eq!(fec.status(0, 1).delivered, 4 * 512);
        assert_eq!(fec.status(1, 1).delivered, 0);
        assert_eq!(fec.status(2, 1).shards, 4);
        assert_eq!(fec.status(2, 7).micros, 7);
    }

    #[test]
    fn a_digest_sent_again_is_a_no_op_and_a_setup_sent_again_is_recognised() {
        let manifest = Manifest::new(
            1024,
            vec![ManifestEntry {
                name: "f".into(),
                size: 1 << 20,
            }],
        )
        .unwrap();
        let mut fec = FecReceive::new(&manifest, 512, 1).unwrap();
        // The limit is 2 × 1 + 64 outstanding digests: copies do not count.
        for _ in 0..200 {
            fec.on_digest(&manifest, 0, 7, [7; 32]).unwrap();
        }
        fec.finished(0, 7);
        for _ in 0..200 {
            assert!(fec.on_digest(&manifest, 0, 7, [7; 32]).unwrap().is_none());
        }
        for b in 0..66 {
            fec.on_digest(&manifest, 0, b + 100, [1; 32]).unwrap();
        }
        assert!(fec.same_setup(512, 1));
        assert!(!fec.same_setup(512, 2));
    }

    #[test]
    fn unknown_blocks_and_too_many_digests_are_refused() {
        let manifest = Manifest::new(
            1024,
            vec![ManifestEntry {
                name: "f".into(),
                size: 1 << 20,
            }],
        )
        .unwrap();
        let mut fec = FecReceive::new(&manifest, 512, 1).unwrap();
        let err = fec
            .on_datagram(&manifest, 0, datagram(5000, 0, &[0; 512]))
            .unwrap_err();
        assert!(err.to_string().contains("unknown block 5000"), "{err}");
        for b in 0..66 {
            fec.on_digest(&manifest, 0, b, BlockDigest::default())
                .unwrap();
        }
        let err = fec
            .on_digest(&manifest, 0, 66, BlockDigest::default())
            .unwrap_err();
        assert!(err.to_string().contains("digests outstanding"), "{err}");
        assert!(FecReceive::new(&manifest, 511, 1).is_err());
        assert!(FecReceive::new(&manifest, 512, FEC_MAX_BLOCKS + 1).is_err());
    }
}
