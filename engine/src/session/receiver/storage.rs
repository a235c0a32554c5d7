//! Where received blocks go: `NAME.part` files inside `--out`, opened on
//! first use, each with its block journal beside it (`NAME.part.journal`,
//! [`crate::journal`]: one record per block written, so an interrupted
//! transfer knows what it holds); receive buffers reused across blocks; one
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
    pub(super) manifest: Arc<Manifest>,
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
    pub(super) fn get(&self, file: u32) -> Result<Arc<File>, SessionError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &open[file as usize] {
            return Ok(f.clone());
        }
        let entry = &self.manifest.files()[file as usize];
        let f = Arc::new(
            self.out
                .create_part(&entry.name, entry.size)
                .map_err(|e| storage_error(&self.out, &entry.name, e))?,
        );
        let journal = self
            .out
            .create_journal(&crate::journal::JournalHeader {
                name: entry.name.clone(),
                size: entry.size,
                block_size_log2: self.manifest.block_size_log2(),
                identity: None,
            })
            .map_err(|e| storage_error(&self.out, &entry.name, e))?;
        self.journals.lock().unwrap_or_else(|p| p.into_inner())[file as usize] = Some(journal);
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
                let name = &self.manifest.files()[file as usize].name;
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
    SessionError::Storage(format!(
        "{what} while writing {}; partial data kept in {}, nothing renamed",
        out.final_path(name).display(),
        part.display()
    ))
}

/// Adds "kept N .part files" to a failure, so the user knows what is left.
pub(super) fn with_kept_parts(e: SessionError, parts: &PartFiles) -> SessionError {
    let kept: Vec<PathBuf> = parts
        .manifest
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
                let name = &parts.manifest.files()[job.file as usize].name;
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
    let name = &parts.manifest.files()[file as usize].name;
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
    let size = parts.manifest.files()[file as usize].size;
    parts
        .out
        .remove_journal(name, size, parts.manifest.block_size_log2());
    Ok(())
}
