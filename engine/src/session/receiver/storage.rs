//! Where received blocks go: `NAME.part` files inside `--out`, opened on
//! first use, each of more than one block with its block journal beside it
//! (`NAME.part.journal`, [`crate::journal`]: one record per block written,
//! so an interrupted transfer knows what it holds); receive buffers reused
//! across blocks; one
//! writer thread doing every `pwrite` and journal append; and the final
//! sync and rename, after which the journal goes. Errors name files
//! relative to what the user asked for, and say what was kept.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::session::{Done, DoneSender};
use crate::hash::BlockDigest;
use crate::manifest::Manifest;
use crate::names::{OutputDir, OutputError};
use crate::session::error::SessionError;

/// Receive buffers, reused across blocks so that each block does not cost a
/// fresh (page-faulting, zero-filled) allocation.
#[derive(Debug, Default)]
pub(super) struct BlockBuffers(Mutex<Vec<Vec<u8>>>);

impl BlockBuffers {
    /// Most buffers kept for reuse (the in-memory permits bound how many are
    /// out).
    const KEEP: usize = 32;

    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // Only bytes beyond the buffer's previous length get zeroed.
        v.resize(len, 0);
        v
    }

    pub(super) fn give(&self, v: Vec<u8>) {
        let mut free = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < Self::KEEP {
            free.push(v);
        }
    }
}

/// The `.part` files of a session, opened on first use and closed when the
/// file is renamed.
#[derive(Debug)]
pub(super) struct PartFiles {
    pub(super) out: OutputDir,
    /// The session's files; grows when a session held open adds files
    /// (read through [`PartFiles::manifest`]).
    manifest: std::sync::RwLock<Arc<Manifest>>,
    pub(super) open: Mutex<Vec<Option<Arc<File>>>>,
    /// Each open `.part`'s journal (written by the writer thread only).
    pub(super) journals: Mutex<Vec<Option<File>>>,
    /// Files renamed into place: a late second copy of one of their blocks
    /// (multi-path re-send) must not create a new `.part`.
    pub(super) finished: Mutex<Vec<bool>>,
    pub(super) buffers: BlockBuffers,
    pub(super) fsync: bool,
    /// Permits for stream blocks held in memory.
    pub(super) in_memory: Arc<tokio::sync::Semaphore>,
}

impl PartFiles {
    /// Whether `file` keeps a journal: only a file of more than one block.
    /// A file of one block needs none: its `.part` is renamed as soon as
    /// that block is written and verified, and an interrupted transfer
    /// sends the one block again. Creating, reading back and removing it
    /// was 10 of the 17 system calls of each small file
    /// (`results/README.md`, "Many small files"); looking for one to
    /// resume or remove, three more.
    pub(super) fn journaled(&self, file: u32) -> bool {
        self.manifest().block_count(file as usize) > 1
    }

    /// The part files of `manifest`'s files, none open yet.
    pub(super) fn new(out: OutputDir, manifest: Arc<Manifest>, fsync: bool) -> Self {
        let n = manifest.files().len();
        Self {
            out,
            in_memory: Arc::new(tokio::sync::Semaphore::new(
                super::session::blocks_in_memory(manifest.block_size()),
            )),
            manifest: std::sync::RwLock::new(manifest),
            open: Mutex::new(vec![None; n]),
            journals: Mutex::new((0..n).map(|_| None).collect()),
            finished: Mutex::new(vec![false; n]),
            buffers: BlockBuffers::default(),
            fsync,
        }
    }

    /// The session's files as they stand.
    pub(super) fn manifest(&self) -> Arc<Manifest> {
        self.manifest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session now has `manifest`'s files (the old ones and more).
    pub(super) fn grow(&self, manifest: Arc<Manifest>) {
        let n = manifest.files().len();
        *self.manifest.write().unwrap_or_else(|p| p.into_inner()) = manifest;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.resize(n, None);
        let mut journals = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        journals.resize_with(n, || None);
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.resize(n, false);
    }

    pub(super) fn get(&self, file: u32) -> Result<Arc<File>, SessionError> {
        let manifest = self.manifest();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &open[file as usize] {
            return Ok(f.clone());
        }
        let entry = &manifest.files()[file as usize];
        let f = Arc::new(
            self.out
                .create_part(&entry.name, entry.size)
                .map_err(|e| storage_error(&self.out, &entry.name, e))?,
        );
        if self.journaled(file) {
            let journal = self
                .out
                .create_journal(&crate::journal::JournalHeader {
                    name: entry.name.clone(),
                    size: entry.size,
                    block_size_log2: manifest.block_size_log2(),
                    identity: None,
                })
                .map_err(|e| storage_error(&self.out, &entry.name, e))?;
            self.journals.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = Some(journal);
        }
        open[file as usize] = Some(f.clone());
        Ok(f)
    }

    /// Records a written block in its file's journal.
    fn journal(&self, file: u32, block: u64, digest: &BlockDigest) -> Result<(), SessionError> {
        let mut journals = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        let Some(j) = journals[file as usize].as_mut() else {
            return Ok(());
        };
        j.write_all(&crate::journal::encode_record(block, digest))
            .map_err(|e| {
                let manifest = self.manifest();
                let name = &manifest.files()[file as usize].name;
                let mut err = io_storage_error(&self.out, name, &e);
                if let SessionError::Storage(m) = &mut err {
                    *m = m.replacen(" while writing ", " while writing the journal of ", 1);
                }
                err
            })
    }

    pub(super) fn close(&self, file: u32) -> Option<Arc<File>> {
        self.journals.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = None;
        self.open.lock().unwrap_or_else(|p| p.into_inner())[file as usize].take()
    }
}

pub(super) fn storage_error(out: &OutputDir, name: &str, e: OutputError) -> SessionError {
    match e {
        OutputError::Io { source, .. } => io_storage_error(out, name, &source),
        other => SessionError::Storage(other.to_string()),
    }
}

pub(super) fn io_storage_error(out: &OutputDir, name: &str, e: &std::io::Error) -> SessionError {
    let part = out.part_path(name);
    let what = if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        "receiver disk full".to_owned()
    } else {
        format!("receiver cannot write: {e}")
    };
    // Named relative to --out: the message goes to the sender too, which
    // has no business learning the receiver's folders.
    let relative = |p: std::path::PathBuf| {
        p.strip_prefix(out.root())
            .map_or_else(|_| name.to_owned(), |r| r.display().to_string())
    };
    SessionError::Storage(format!(
        "{what} while writing {}; partial data kept in {}, nothing renamed",
        relative(out.final_path(name)),
        relative(part)
    ))
}

/// Adds "kept N .part files" to a failure, so the user knows what is left.
pub(super) fn with_kept_parts(e: SessionError, parts: &PartFiles) -> SessionError {
    let kept: Vec<PathBuf> = parts
        .manifest()
        .files()
        .iter()
        .map(|f| parts.out.part_path(&f.name))
        .filter(|p| p.exists())
        .collect();
    match (&e, kept.len()) {
        (SessionError::Storage(_), _) | (_, 0) => e,
        (SessionError::ConnectionLost(m), n) => SessionError::ConnectionLost(format!(
            "{m}; kept {n} partial file(s) (.part), nothing renamed"
        )),
        (SessionError::PeerFailed(m), n) => SessionError::PeerFailed(format!(
            "{m}; kept {n} partial file(s) (.part), nothing renamed"
        )),
        _ => e,
    }
}

/// A verified block on its way to disk.
pub(super) struct WriteJob {
    pub(super) file: u32,
    pub(super) block: u64,
    pub(super) offset: u64,
    pub(super) digest: BlockDigest,
    pub(super) data: Vec<u8>,
    /// See [`Done::Block`].
    pub(super) path: Option<usize>,
    /// Held until the block is written (stream blocks).
    pub(super) _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The session's writer: one thread doing every `pwrite`, so that blocks of
/// one file do not contend for its inode lock (measured: two Rayon threads
/// writing one file spent more time spinning on that lock than hashing).
pub(super) fn spawn_writer(
    parts: Arc<PartFiles>,
    done: DoneSender,
) -> crossbeam_channel::Sender<WriteJob> {
    let (tx, rx) = crossbeam_channel::bounded::<WriteJob>(16);
    std::thread::Builder::new()
        .name("chunkstream-writer".into())
        .spawn(move || {
            for job in rx {
                if parts.finished.lock().unwrap_or_else(|p| p.into_inner())[job.file as usize] {
                    parts.buffers.give(job.data);
                    continue;
                }
                let manifest = parts.manifest();
                let name = &manifest.files()[job.file as usize].name;
                let result = parts
                    .get(job.file)
                    .and_then(|f| {
                        f.write_all_at(&job.data, job.offset)
                            .map_err(|e| io_storage_error(&parts.out, name, &e))
                    })
                    .and_then(|()| parts.journal(job.file, job.block, &job.digest));
                parts.buffers.give(job.data);
                let failed = result.is_err();
                let _ = done.send(result.map(|()| Done::Block {
                    file: job.file,
                    block: job.block,
                    digest: job.digest,
                    path: job.path,
                }));
                if failed {
                    break;
                }
            }
        })
        .expect("spawning the writer thread");
    tx
}

/// Syncs a verified `.part` (with `--fsync`) and renames it into place.
pub(super) fn finalize(parts: &PartFiles, file: u32) -> Result<(), SessionError> {
    let manifest = parts.manifest();
    let name = &manifest.files()[file as usize].name;
    parts.finished.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = true;
    // Empty files never had a block: create them now.
    let handle = match parts.close(file) {
        Some(f) => f,
        None => {
            let f = parts.get(file)?;
            parts.close(file);
            f
        }
    };
    if parts.fsync {
        handle
            .sync_data()
            .map_err(|e| io_storage_error(&parts.out, name, &e))?;
    }
    drop(handle);
    std::fs::rename(parts.out.part_path(name), parts.out.final_path(name))
        .map_err(|e| io_storage_error(&parts.out, name, &e))?;
    if parts.journaled(file) {
        let size = manifest.files()[file as usize].size;
        parts
            .out
            .remove_journal(name, size, manifest.block_size_log2());
    }
    Ok(())
}

/// What an earlier attempt left of one file.
pub(super) struct Resumed {
    /// Blocks that still verify, with their digests, ascending.
    pub(super) blocks: Vec<(u64, BlockDigest)>,
    /// Their bytes.
    pub(super) bytes: u64,
}

/// Largest journal read back: four records per block (a block may be
/// written more than once) plus the header.
fn journal_limit(blocks: u64) -> u64 {
    8192 + blocks.saturating_mul(4 * crate::journal::RECORD_LEN as u64)
}

/// Takes up file `file` where an earlier attempt left it: if `NAME.part`
/// and its journal are there and the journal is about this file (name,
/// size, block size), every block it claims is read back and hashed, and
/// those that still match are kept; the `.part` is opened (not truncated)
/// and the journal rewritten with just those blocks. Anything else (no
/// journal, a journal of another file, a `.part` that is not a regular
/// file or has the wrong size) is one log line and a fresh start: `None`.
/// I/O errors while checking are a fresh start too; writing the new
/// journal is not (it is where the transfer goes on).
pub(super) fn resume_part(parts: &PartFiles, file: u32) -> Result<Option<Resumed>, SessionError> {
    use rayon::prelude::*;
    use std::os::unix::fs::OpenOptionsExt;
    let manifest = parts.manifest();
    let entry = &manifest.files()[file as usize];
    let name = &entry.name;
    let log2 = manifest.block_size_log2();
    let (part, journal) = (parts.out.part_path(name), parts.out.journal_path(name));
    let afresh = |why: String| {
        tracing::warn!("{}: {why}; receiving it afresh", part.display());
        Ok(None)
    };
    // Without a journal there is nothing to resume.
    if !parts.journaled(file) {
        return Ok(None);
    }
    let regular = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.file_type().is_file())
    };
    let part_meta = match std::fs::symlink_metadata(&part) {
        Ok(m) if m.file_type().is_file() => m,
        Ok(_) => return afresh("not a regular file".into()),
        Err(_) => return Ok(None),
    };
    let Some(journal_meta) = regular(&journal) else {
        return afresh("no journal beside it (or not a regular file)".into());
    };
    let blocks = manifest.block_count(file as usize);
    if journal_meta.len() > journal_limit(blocks) {
        return afresh(format!(
            "its journal is {} bytes, too large for {blocks} blocks",
            journal_meta.len()
        ));
    }
    let bytes = match std::fs::read(&journal) {
        Ok(b) => b,
        Err(e) => return afresh(format!("cannot read its journal: {e}")),
    };
    let parsed = match crate::journal::parse(&bytes) {
        Ok(p) => p,
        Err(e) => return afresh(format!("journal: {e}")),
    };
    let h = &parsed.header;
    if h.name != *name || h.block_size_log2 != log2 {
        return afresh(format!(
            "its journal is about {:?} in 2^{} byte blocks; the sender now sends {name:?} in 2^{log2} byte blocks",
            h.name, h.block_size_log2
        ));
    }
    if part_meta.len() != h.size {
        return afresh(format!(
            "it is {} bytes, its journal says {}",
            part_meta.len(),
            h.size
        ));
    }
    // The source grew or shrank since: the whole blocks both sizes share
    // may still be the same (the re-hash decides), the rest is sent.
    let mut records = parsed.records.clone();
    if h.size != entry.size {
        let shared = h.size.min(entry.size) >> log2;
        records.retain(|&(b, _)| b < shared);
        tracing::warn!(
            "{}: the file is now {} bytes, was {}: checking the {} whole block(s) both share",
            part.display(),
            entry.size,
            h.size,
            records.len()
        );
    }
    if let Some(why) = &parsed.stopped {
        tracing::warn!("{}: journal read up to where {why}", journal.display());
    }
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&part)
    {
        Ok(f) => f,
        Err(e) => return afresh(format!("cannot open it: {e}")),
    };
    if h.size != entry.size {
        f.set_len(entry.size)
            .map_err(|e| io_storage_error(&parts.out, name, &e))?;
    }
    let mut kept: Vec<(u64, BlockDigest)> = records
        .par_iter()
        .filter_map(|&(block, digest)| {
            let (offset, len) = manifest.block_span(file as usize, block);
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset).ok()?;
            (crate::hash::block_digest(&buf, offset, entry.size) == digest)
                .then_some((block, digest))
        })
        .collect();
    kept.sort_unstable_by_key(|r| r.0);
    let dropped = records.len() - kept.len();
    if dropped > 0 {
        tracing::warn!(
            "{}: {dropped} block(s) its journal claims no longer match; they are received again",
            part.display()
        );
    }
    // The journal from here on: just what verified.
    let mut j = parts
        .out
        .create_journal(&crate::journal::JournalHeader {
            name: name.clone(),
            size: entry.size,
            block_size_log2: log2,
            identity: None,
        })
        .map_err(|e| storage_error(&parts.out, name, e))?;
    let mut records = Vec::with_capacity(kept.len() * crate::journal::RECORD_LEN);
    for (b, d) in &kept {
        records.extend_from_slice(&crate::journal::encode_record(*b, d));
    }
    j.write_all(&records)
        .map_err(|e| io_storage_error(&parts.out, name, &e))?;
    let bytes = kept
        .iter()
        .map(|&(b, _)| u64::from(manifest.block_span(file as usize, b).1))
        .sum();
    parts.open.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = Some(Arc::new(f));
    parts.journals.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = Some(j);
    Ok(Some(Resumed {
        blocks: kept,
        bytes,
    }))
}

/// HAVE frames for `blocks` (ascending) of `file`: one per run of
/// consecutive blocks, at most [`crate::wire::MAX_HAVE_BLOCKS`] each.
pub(super) fn have_frames(file: u32, blocks: &[(u64, BlockDigest)]) -> Vec<crate::wire::Frame> {
    use crate::wire::{Frame, HAVE_DIGEST_LEN, MAX_HAVE_BLOCKS};
    let mut out = Vec::new();
    let mut run: Option<(u64, Vec<[u8; HAVE_DIGEST_LEN]>)> = None;
    for &(b, d) in blocks {
        let prefix: [u8; HAVE_DIGEST_LEN] = d[..HAVE_DIGEST_LEN].try_into().expect("16 bytes");
        match &mut run {
            Some((first, ds)) if *first + ds.len() as u64 == b && ds.len() < MAX_HAVE_BLOCKS => {
                ds.push(prefix)
            }
            _ => {
                if let Some((first, digests)) = run.take() {
                    out.push(Frame::Have {
                        file,
                        first,
                        digests,
                    });
                }
                run = Some((b, vec![prefix]));
            }
        }
    }
    if let Some((first, digests)) = run {
        out.push(Frame::Have {
            file,
            first,
            digests,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn have_frames_cover_runs_and_split_long_ones() {
        let mut blocks: Vec<(u64, BlockDigest)> =
            (0..1500u64).map(|b| (b, [b as u8; 32])).collect();
        blocks.extend([(1600, [1; 32]), (1601, [2; 32]), (1700, [3; 32])]);
        let frames = have_frames(3, &blocks);
        let runs: Vec<(u64, usize)> = frames
            .iter()
            .map(|f| match f {
                crate::wire::Frame::Have {
                    file: 3,
                    first,
                    digests,
                } => (*first, digests.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(runs, [(0, 1024), (1024, 476), (1600, 2), (1700, 1)]);
        assert!(have_frames(0, &[]).is_empty());
    }

    #[test]
    fn only_a_file_of_more_than_one_block_gets_a_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let out = OutputDir::open(tmp.path()).unwrap();
        let entry = |name: &str, size| crate::wire::ManifestEntry {
            name: name.into(),
            size,
        };
        let manifest = Manifest::new(
            1 << 16,
            vec![entry("one", 10_000), entry("two", (1 << 16) + 1)],
        )
        .unwrap();
        let parts = PartFiles::new(out, Arc::new(manifest), false);
        parts.get(0).unwrap();
        parts.get(1).unwrap();
        assert!(tmp.path().join("one.part").exists());
        assert!(!tmp.path().join("one.part.journal").exists());
        assert!(tmp.path().join("two.part").exists());
        let journal = std::fs::read(tmp.path().join("two.part.journal")).unwrap();
        let parsed = crate::journal::parse(&journal).unwrap();
        assert!(parsed.header.matches("two", (1 << 16) + 1, 16));
        // Recording a block of the journal-less file is a no-op, not an error.
        parts.journal(0, 0, &[0; 32]).unwrap();
        parts.journal(1, 1, &[7; 32]).unwrap();
        finalize(&parts, 0).unwrap();
        assert!(tmp.path().join("one").exists());
    }
}
