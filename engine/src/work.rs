//! The Rayon stage: what happens to each block between the reader and the
//! network.
//!
//! [`prepare_block`] is one job on the Rayon pool. It hashes the block
//! ([`crate::hash::block_digest`]) and wraps it with its [`BlockHeader`]; the
//! data stays the reader's pooled buffer. On the FEC plane it also lays the
//! block out in shards ([`Geometry`]).
//!
//! A block's Reed-Solomon recovery shards are encoded here too, ahead of
//! need, only while the sender plans recovery shards with every block (the
//! path loses: [`EncodeAhead`], set by the driver), as a second job after
//! the block has been handed on: its source shards need no encoding and
//! leave meanwhile (the first block of a transfer no longer waits 12-19 ms
//! for the coder's tables). Otherwise they are
//! encoded when the first of them is about to be sent
//! ([`PreparedBlock::recovery`], by the driver): on a path that loses
//! nothing most blocks never need one, and encoding every block cost more
//! than anything else we could remove (1 GiB over loopback: 1.45 Gbit/s
//! with it, 2.36 without, medians of four; results/README.md, "Recovery
//! shards when needed"). Parity is never computed for the reliable plane,
//! where QUIC already retransmits.
//!
//! [`start_pipeline`] wires reader → Rayon → an async channel that the
//! session driver drains.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::fec::codec::{CodecError, Geometry, encode_recovery};
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
    /// FEC plane: the block's shard layout.
    pub geometry: Option<Geometry>,
    /// Its recovery shards, concatenated, once encoded, shared by the
    /// block's clones.
    recovery: Arc<Recovery>,
}

/// A block's recovery shards: encoded once, on a Rayon worker.
#[derive(Debug, Default)]
struct Recovery {
    encoded: OnceLock<Result<Bytes, CodecError>>,
    /// An encoding job was spawned.
    started: AtomicBool,
}

impl PreparedBlock {
    /// FEC plane: the block's recovery shards, concatenated, encoded the
    /// first time they are asked for (a caller that comes while another
    /// encodes them waits for that). `None` on the reliable plane.
    pub fn recovery(&self) -> Result<Option<Bytes>, SourceError> {
        let Some(g) = self.geometry else {
            return Ok(None);
        };
        self.recovery
            .encoded
            .get_or_init(|| encode_recovery(&g, &self.data).map(Bytes::from))
            .clone()
            .map(Some)
            .map_err(|e| coding_error(self.header.file, self.header.block, e))
    }

    /// FEC plane: the recovery shards if they are encoded already;
    /// otherwise `None`, and their encoding is started on a Rayon worker
    /// (once), so that the caller need not wait for it.
    pub fn recovery_if_ready(&self) -> Option<Result<Bytes, SourceError>> {
        match self.recovery.encoded.get() {
            Some(r) => Some(
                r.clone()
                    .map_err(|e| coding_error(self.header.file, self.header.block, e)),
            ),
            None => {
                self.encode_in_background();
                None
            }
        }
    }

    /// Starts encoding the recovery shards on a Rayon worker, unless that
    /// was done or started already (or the block has none: reliable plane).
    pub fn encode_in_background(&self) {
        if self.geometry.is_none() || self.recovery.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let block = self.clone();
        rayon::spawn(move || {
            let _ = block.recovery();
        });
    }
}

fn coding_error(file: u32, block: u64, e: CodecError) -> SourceError {
    SourceError {
        path: format!("file #{file} block {block}").into(),
        message: format!("FEC encoding: {e}"),
    }
}

/// What the hashing stage needs to know of the sender's plan, shared by a
/// sender's pipelines and set by its driver: whether it also encodes each
/// FEC block's recovery shards (while the sender sends recovery shards with
/// every block; set at first: before the loss is measured, blocks go out
/// with some, `fec::accounts::Redundancy`), and how many recovery shards
/// per source shard a block may need (`fec::codec::recovery_for`; the
/// most at first).
#[derive(Debug, Clone)]
pub struct EncodeAhead(Arc<(AtomicBool, AtomicU32)>);

/// [`EncodeAhead`]'s share is kept in millionths.
const SHARE_UNIT: f64 = 1e6;

impl Default for EncodeAhead {
    fn default() -> Self {
        Self(Arc::new((
            AtomicBool::new(true),
            AtomicU32::new(SHARE_UNIT as u32),
        )))
    }
}

impl EncodeAhead {
    /// Encode blocks prepared from now on ahead (or not).
    pub fn set(&self, ahead: bool) {
        self.0.0.store(ahead, Ordering::Relaxed);
    }

    /// Whether blocks are encoded ahead.
    pub fn get(&self) -> bool {
        self.0.0.load(Ordering::Relaxed)
    }

    /// Blocks prepared from now on may need `share` × their source shards
    /// of recovery shards (0 to 1).
    pub fn set_share(&self, share: f64) {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.0
            .1
            .store((share * SHARE_UNIT) as u32, Ordering::Relaxed);
    }

    /// See [`Self::set_share`].
    pub fn share(&self) -> f64 {
        f64::from(self.0.1.load(Ordering::Relaxed)) / SHARE_UNIT
    }
}

/// Hashes one block, and on the FEC plane lays it out in shards, with
/// recovery shards for `share` of its sources (`fec::codec::recovery_for`)
/// (runs on a Rayon worker). Their encoding is left to
/// [`PreparedBlock::recovery`]: the pipeline has it done ahead on another
/// worker after the block is handed on.
pub fn prepare_block(
    block: SourceBlock,
    plane: Plane,
    share: f64,
) -> Result<PreparedBlock, SourceError> {
    let digest = block_digest(&block.data, block.offset, block.file_len);
    let geometry = match plane {
        Plane::Reliable => None,
        Plane::Fec { shard_bytes } => Some(
            Geometry::sized_for(block.data.len(), shard_bytes, share)
                .map_err(|e| coding_error(block.file, block.block, e))?,
        ),
    };
    let prepared = PreparedBlock {
        header: BlockHeader {
            file: block.file,
            block: block.block,
            len: block.data.len() as u32,
            digest,
        },
        offset: block.offset,
        data: block.data,
        geometry,
        recovery: Arc::default(),
    };
    Ok(prepared)
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
    start_pipeline_for(
        kind,
        files,
        manifest,
        plane,
        memory_budget,
        None,
        EncodeAhead::default(),
    )
}

/// [`start_pipeline`] for the files marked `true` in `only` (one pipeline
/// per priority class; block and file indices stay the manifest's), FEC
/// blocks encoded while `ahead` says so.
pub fn start_pipeline_for(
    kind: ReaderKind,
    files: Vec<SourceFile>,
    manifest: Manifest,
    plane: Plane,
    memory_budget: usize,
    only: Option<Vec<bool>>,
    ahead: EncodeAhead,
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
            Ok(block) => {
                let (encode, share) = (ahead.get(), ahead.share());
                rayon::spawn(move || {
                    let prepared = prepare_block(block, plane, share);
                    // The block goes on at once: its source shards need no
                    // encoding, and the first block must not wait for the
                    // coder's tables (built on first use, 12-19 ms here).
                    if let Ok(b) = &prepared
                        && encode
                    {
                        b.encode_in_background();
                    }
                    let _ = tx.send(prepared);
                })
            }
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

    #[test]
    fn recovery_not_yet_encoded_is_encoded_in_the_background_not_waited_for() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let block = SourceBlock {
            file: 0,
            block: 0,
            offset: 0,
            file_len: data.len() as u64,
            data: Bytes::from(data.clone()),
        };
        let b = prepare_block(block, Plane::Fec { shard_bytes: 1400 }, 1.0).unwrap();
        let g = b.geometry.unwrap();
        assert!(
            b.recovery_if_ready().is_none(),
            "nothing encoded it yet: the caller is not made to wait"
        );
        let mut ready = None;
        for _ in 0..2_000 {
            ready = b.recovery_if_ready();
            if ready.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let got = ready.expect("encoded on a Rayon worker").unwrap();
        assert_eq!(got.as_ref(), encode_recovery(&g, &data).unwrap().as_slice());
        // A clone shares the encoding.
        assert_eq!(b.clone().recovery().unwrap().unwrap(), got);
        // The reliable plane has none.
        let block = SourceBlock {
            file: 0,
            block: 0,
            offset: 0,
            file_len: 3,
            data: Bytes::from_static(b"abc"),
        };
        let r = prepare_block(block, Plane::Reliable, 1.0).unwrap();
        assert!(r.recovery().unwrap().is_none());
    }
}
