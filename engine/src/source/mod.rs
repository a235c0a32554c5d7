//! Reading source files into pooled block buffers.
//!
//! The reader runs on a thread of its own and walks the session's files block
//! by block, filling buffers from a [`BufferSource`] (bounded memory) and
//! handing each filled block to a callback (the Rayon hashing stage, see
//! [`crate::work`]). Two backends sit behind [`ReaderKind`]:
//!
//! * [`ReaderKind::Uring`]: tokio-uring on a current-thread runtime, with up to
//!   [`QUEUE_DEPTH`] reads in flight. tokio-uring's registered buffers are
//!   `!Send` and so cannot travel to Rayon; its owned-buffer `read_at` into a
//!   plain `Vec<u8>` can, which is what this backend uses.
//! * [`ReaderKind::Pread`]: positional reads (`pread(2)`) on the same thread,
//!   relying on kernel read-ahead for sequential files.
//!
//! [`ReaderKind::Auto`] tries io_uring and falls back to pread when the ring
//! cannot be created (old kernel, seccomp), logging the reason once. The
//! backend really used is reported back so it can be recorded.

mod pool;
mod pread;
mod uring;

pub use pool::{BufferPool, BufferSource, PooledBuffer};

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::manifest::{Manifest, SourceFile};

/// Reads kept in flight by the io_uring backend.
pub const QUEUE_DEPTH: usize = 8;

/// Which reader backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaderKind {
    /// io_uring if it starts, else pread.
    #[default]
    Auto,
    /// io_uring through tokio-uring.
    Uring,
    /// Positional reads.
    Pread,
}

impl std::fmt::Display for ReaderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Uring => "uring",
            Self::Pread => "pread",
        })
    }
}

/// A failure reading a source file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading {path}: {message}")]
pub struct SourceError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl SourceError {
    fn io(path: &std::path::Path, e: &std::io::Error) -> Self {
        let message = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "file shrank while it was being sent".to_owned()
        } else {
            e.to_string()
        };
        Self {
            path: path.to_owned(),
            message,
        }
    }
}

/// One block read from a source file.
#[derive(Debug, Clone)]
pub struct SourceBlock {
    /// File index in the manifest.
    pub file: u32,
    /// Block index in the file.
    pub block: u64,
    /// Byte offset in the file.
    pub offset: u64,
    /// Size of the whole file.
    pub file_len: u64,
    /// The block's bytes (a pooled buffer; no copy was made).
    pub data: Bytes,
}

/// Receives each block (or the error that stopped the reader); returns
/// `false` when nobody wants more blocks, which stops the reader.
pub type Emit = Arc<dyn Fn(Result<SourceBlock, SourceError>) -> bool + Send + Sync>;

/// The work list handed to a backend: which file, which blocks.
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    pub files: Vec<SourceFile>,
    pub manifest: Manifest,
    /// `Some`: read only the files marked `true` (one reader per priority
    /// class); indices stay those of the manifest.
    pub only: Option<Vec<bool>>,
}

impl ReadPlan {
    /// Whether this plan reads file `index`.
    pub fn includes(&self, index: usize) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.get(index).copied().unwrap_or(false))
    }

    /// Every (file index, block, offset, len) in order.
    pub fn blocks(&self, file: usize) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        (0..self.manifest.block_count(file)).map(move |b| {
            let (offset, len) = self.manifest.block_span(file, b);
            (b, offset, len as usize)
        })
    }
}

/// Starts the reader thread. Returns the backend actually used (after the
/// io_uring probe) and the thread handle.
pub fn spawn_reader(
    kind: ReaderKind,
    files: Vec<SourceFile>,
    manifest: Manifest,
    only: Option<Vec<bool>>,
    pool: BufferSource,
    emit: Emit,
) -> std::io::Result<(ReaderKind, std::thread::JoinHandle<()>)> {
    spawn_reader_with(
        kind,
        ReadPlan {
            files,
            manifest,
            only,
        },
        pool,
        emit,
        uring::runtime,
    )
}

/// Logs the fallback to pread once per process, not once per session.
static FALLBACK_LOGGED: std::sync::Once = std::sync::Once::new();

/// [`spawn_reader`] with the io_uring runtime constructor passed in, so the
/// fallback can be tested without a kernel that refuses io_uring.
fn spawn_reader_with(
    kind: ReaderKind,
    plan: ReadPlan,
    pool: BufferSource,
    emit: Emit,
    make_ring: fn() -> std::io::Result<tokio_uring::Runtime>,
) -> std::io::Result<(ReaderKind, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("chunkstream-reader".into())
        .spawn(move || {
            let runtime = match kind {
                ReaderKind::Pread => None,
                ReaderKind::Uring | ReaderKind::Auto => match make_ring() {
                    Ok(rt) => Some(rt),
                    Err(e) if kind == ReaderKind::Auto => {
                        FALLBACK_LOGGED.call_once(|| {
                            tracing::warn!(
                                "io_uring unavailable ({e}); reading with pread instead"
                            );
                        });
                        None
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                },
            };
            let used = if runtime.is_some() {
                ReaderKind::Uring
            } else {
                ReaderKind::Pread
            };
            let _ = tx.send(Ok(used));
            match runtime {
                Some(rt) => uring::read_all(rt, plan, pool, emit),
                None => pread::read_all(plan, pool, emit),
            }
        })?;
    let used = rx
        .recv()
        .map_err(|_| std::io::Error::other("reader thread died at start"))??;
    Ok((used, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ManifestEntry;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn refused() -> std::io::Result<tokio_uring::Runtime> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    fn plan(dir: &std::path::Path) -> ReadPlan {
        let path = dir.join("f");
        std::fs::write(&path, vec![9u8; 10_000]).unwrap();
        let files = vec![SourceFile {
            path,
            name: "f".into(),
            size: 10_000,
        }];
        let manifest = Manifest::new(
            4096,
            vec![ManifestEntry {
                name: "f".into(),
                size: 10_000,
            }],
        )
        .unwrap();
        ReadPlan {
            files,
            manifest,
            only: None,
        }
    }

    #[test]
    fn auto_falls_back_to_pread_when_io_uring_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let seen = bytes.clone();
        let emit: Emit = Arc::new(move |b: Result<SourceBlock, SourceError>| {
            seen.fetch_add(b.unwrap().data.len() as u64, Ordering::Relaxed);
            true
        });
        let pool = BufferPool::split(4, 4096);
        let (used, thread) =
            spawn_reader_with(ReaderKind::Auto, plan(tmp.path()), pool, emit, refused).unwrap();
        assert_eq!(used, ReaderKind::Pread);
        thread.join().unwrap();
        assert_eq!(bytes.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn forced_uring_reports_why_it_cannot_start() {
        let tmp = tempfile::tempdir().unwrap();
        let emit: Emit = Arc::new(|_| true);
        let pool = BufferPool::split(4, 4096);
        let err = spawn_reader_with(ReaderKind::Uring, plan(tmp.path()), pool, emit, refused)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
}
