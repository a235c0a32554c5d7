//! The Rayon stage: what happens to each block between the reader and the
//! network.
//!
//! [`prepare_block`] is one job on the Rayon pool. On the reliable plane it
//! hashes the block ([`crate::hash::block_digest`]) and wraps it with its
//! [`BlockHeader`]; the data stays the reader's pooled buffer. On the FEC
//! plane the same job also computes the block's Reed-Solomon recovery shards
//! ([`crate::fec::codec::encode_recovery`]) into
//! [`PreparedBlock::recovery`]. Parity is never computed for the reliable
//! plane, where QUIC already retransmits.
//!
//! [`start_pipeline`] wires reader → Rayon → an async channel that the
//! session driver drains.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::hash::block_digest;
use crate::manifest::{Manifest, SourceFile};
use crate::source::{BufferPool, ReaderKind, SourceBlock, SourceError, spawn_reader};
use crate::wire::BlockHeader;

/// How blocks travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plane {
    /// One QUIC stream per block; QUIC retransmits.
    #[default]
    Reliable,
    /// Reed-Solomon-coded shards as QUIC datagrams ([`crate::fec`]).
    Fec {
        /// Payload bytes per shard.
        shard_bytes: usize,
    },
}

impl serde::Serialize for Plane {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Plane {
    /// `reliable` or `fec`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reliable => "reliable",
            Self::Fec { .. } => "fec",
        }
    }
}

/// A block ready to send: header (with digest) and data.
#[derive(Debug, Clone)]
pub struct PreparedBlock {
    /// File, block index, length and digest.
    pub header: BlockHeader,
    /// Byte offset in the file.
    pub offset: u64,
    /// The block's bytes: the reader's buffer, not a copy.
    pub data: Bytes,
    /// FEC plane: the block's geometry and its recovery shards, concatenated.
    pub recovery: Option<(crate::fec::codec::Geometry, Bytes)>,
}

/// Hashes one block, and on the FEC plane encodes it (runs on a Rayon
/// worker).
pub fn prepare_block(block: SourceBlock, plane: Plane) -> Result<PreparedBlock, SourceError> {
    let digest = block_digest(&block.data, block.offset, block.file_len);
    let recovery = match plane {
        Plane::Reliable => None,
        Plane::Fec { shard_bytes } => {
            let coding = |e: crate::fec::codec::CodecError| SourceError {
                path: format!("file #{} block {}", block.file, block.block).into(),
                message: format!("FEC encoding: {e}"),
            };
            let g =
                crate::fec::codec::Geometry::new(block.data.len(), shard_bytes).map_err(coding)?;
            let r = crate::fec::codec::encode_recovery(&g, &block.data).map_err(coding)?;
            Some((g, Bytes::from(r)))
        }
    };
    Ok(PreparedBlock {
        header: BlockHeader {
            file: block.file,
            block: block.block,
            len: block.data.len() as u32,
            digest,
        },
        offset: block.offset,
        data: block.data,
        recovery,
    })
}

/// The running reader and hashing stage of a sender.
#[derive(Debug)]
pub struct Pipeline {
    /// The reader backend really used.
    pub reader: ReaderKind,
    /// Prepared blocks in the order hashing finished (not file order).
    pub blocks: mpsc::UnboundedReceiver<Result<PreparedBlock, SourceError>>,
    /// Buffers in the pool: the bound on block memory in flight.
    pub buffers: usize,
}

/// Starts the reader thread and the hashing jobs.
///
/// Memory in flight is bounded by `memory_budget` bytes of block buffers
/// (at least 4 buffers); the unbounded channel cannot grow past that, since
/// every item in it holds a pooled buffer.
pub fn start_pipeline(
    kind: ReaderKind,
    files: Vec<SourceFile>,
    manifest: Manifest,
    plane: Plane,
    memory_budget: usize,
) -> std::io::Result<Pipeline> {
    start_pipeline_for(kind, files, manifest, plane, memory_budget, None)
}

/// [`start_pipeline`] for the files marked `true` in `only` (one pipeline
/// per priority class); block and file indices stay the manifest's.
pub fn start_pipeline_for(
    kind: ReaderKind,
    files: Vec<SourceFile>,
    manifest: Manifest,
    plane: Plane,
    memory_budget: usize,
    only: Option<Vec<bool>>,
) -> std::io::Result<Pipeline> {
    let block_size = manifest.block_size() as usize;
    let buffers = (memory_budget / block_size).max(4);
    let pool = BufferPool::split(buffers, block_size);
    let (tx, rx) = mpsc::unbounded_channel();
    let emit = Arc::new(move |item: Result<SourceBlock, SourceError>| {
        if tx.is_closed() {
            return false;
        }
        let tx = tx.clone();
        match item {
            Ok(block) => rayon::spawn(move || {
                let _ = tx.send(prepare_block(block, plane));
            }),
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        true
    });
    let (reader, _thread) = spawn_reader(kind, files, manifest, only, pool, emit)?;
    Ok(Pipeline {
        reader,
        blocks: rx,
        buffers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::file_hash;
    use crate::manifest::collect_sources;
    use crate::wire::ManifestEntry;

    fn run(kind: ReaderKind, sizes: &[usize], block: u64) -> Vec<(blake3::Hash, blake3::Hash)> {
        let tmp = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let p = tmp.path().join(format!("f{i}"));
            let data: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            paths.push(p);
        }
        let files = collect_sources(&paths).unwrap();
        let entries = files
            .iter()
            .map(|f| ManifestEntry {
                name: f.name.clone(),
                size: f.size,
            })
            .collect();
        let manifest = Manifest::new(block, entries).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut p = start_pipeline(
            kind,
            files.clone(),
            manifest.clone(),
            Plane::Reliable,
            8 * block as usize,
        )
        .unwrap();
        assert_eq!(p.reader, kind);
        let mut digests: Vec<Vec<Option<[u8; 32]>>> = (0..files.len())
            .map(|f| vec![None; manifest.block_count(f) as usize])
            .collect();
        let total: u64 = (0..files.len()).map(|f| manifest.block_count(f)).sum();
        for _ in 0..total {
            let b = rt.block_on(p.blocks.recv()).unwrap().unwrap();
            let slot = &mut digests[b.header.file as usize][b.header.block as usize];
            assert!(
                slot.replace(b.header.digest).is_none(),
                "block delivered twice"
            );
        }
        files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let d: Vec<_> = digests[i].iter().map(|d| d.unwrap()).collect();
                let data = std::fs::read(&f.path).unwrap();
                (file_hash(&d, f.size, block), blake3::hash(&data))
            })
            .collect()
    }

    #[test]
    fn both_readers_feed_hashes_equal_to_blake3_of_the_file() {
        let sizes = [0, 1, 4095, 4096, 4097, 100_000, 1 << 20];
        for kind in [ReaderKind::Uring, ReaderKind::Pread] {
            for (got, want) in run(kind, &sizes, 4096) {
                assert_eq!(got, want, "{kind}");
            }
        }
    }
}
