//! One receiving session: the manifest and its checks, resuming what
//! earlier attempts left, then the loop that takes block streams, shard
//! datagrams and control frames from every path, feeds them to the
//! session's sans-IO core ([`ReceiverCore`]) and does what it decides:
//! acknowledgements on the right paths, blocks decoded and verified (on
//! Rayon) and written, each file renamed once it verifies as a whole.
//! A session held open grows: files added (ADD_FILES) get their part
//! files and their resume check, then FILES_ADDED; it ends when the sender
//! lets it (KEEP_OPEN 0, or its close once every file is done).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;

use super::handshake::{JoinedPath, SessionContext};
use super::paths::PathSet;
use super::storage::{
    PartFiles, Resumed, WriteJob, finalize, have_frames, resume_part, spawn_writer, with_kept_parts,
};
use super::{RecvEvent, SessionSummary};
use crate::fec::codec::reconstruct;
use crate::fec::collector::CompleteBlock;
use crate::hash::{BlockDigest, block_digest};
use crate::manifest::Manifest;
use crate::names::check_name;
use crate::session::control::{self, ControlWriter, read_error};
use crate::session::error::SessionError;
use crate::session::receive_core::{Output, ReceiverCore, StreamVerdict, Target};
use crate::wire::{BLOCK_HEADER_LEN, BlockHeader, Frame, PROTOCOL_VERSION};

/// Something a session task finished.
pub(super) enum Done {
    Block {
        file: u32,
        block: u64,
        digest: BlockDigest,
        /// The path it arrived on (its acknowledgement goes back there);
        /// `None` for a block decoded from shards of any path.
        path: Option<usize>,
    },
    /// A block stream failed before its block was written.
    StreamFailed(SessionError),
    /// FEC plane: a decoded block did not match its digest.
    Corrupt {
        file: u32,
        block: u64,
    },
    Finalized {
        file: u32,
        hash: blake3::Hash,
    },
}

/// Runs an authenticated session; on a failure of ours, tells the sender
/// why with an ERROR frame before the connection is closed.
pub(super) async fn run_session(
    conn: &Connection,
    control: ControlWriter,
    recv: RecvStream,
    ctx: &SessionContext,
    on_event: &(dyn Fn(RecvEvent) + Send + Sync),
    joins: mpsc::UnboundedReceiver<JoinedPath>,
) -> Result<SessionSummary, SessionError> {
    let mut paths = PathSet::new(conn.clone(), control);
    let result = session_body(conn, &mut paths, recv, ctx, on_event, joins).await;
    if let Err(e) = &result
        && let Some(code) = e.error_code()
    {
        paths.send_error(code, &e.to_string()).await;
    }
    paths.close_extras();
    result
}

pub(super) async fn session_body(
    conn: &Connection,
    paths: &mut PathSet,
    recv: RecvStream,
    ctx: &SessionContext,
    on_event: &(dyn Fn(RecvEvent) + Send + Sync),
    mut joins: mpsc::UnboundedReceiver<JoinedPath>,
) -> Result<SessionSummary, SessionError> {
    let started = Instant::now();
    let peer = conn.remote_address();
    paths
        .primary()
        .send(&Frame::Welcome {
            version: PROTOCOL_VERSION,
        })
        .await?;
    let mut frames = control::spawn_reader(recv);
    let manifest = match frames.recv().await {
        Some(Ok(Some(Frame::Manifest {
            block_size_log2,
            files,
        }))) => Manifest::from_wire(block_size_log2, files)
            .map_err(|e| SessionError::Protocol(format!("refusing the manifest: {e}")))?,
        Some(Err(e)) => return Err(e),
        _ => return Err(SessionError::Protocol("expected MANIFEST".into())),
    };
    let mut seen = std::collections::HashSet::new();
    for entry in manifest.files() {
        let unsafe_name = check_name(&entry.name)
            .err()
            .map(|e| e.to_string())
            .or_else(|| {
                (!seen.insert(entry.name.as_str()))
                    .then(|| format!("file name {:?} appears twice", entry.name))
            });
        if let Some(why) = unsafe_name {
            return Err(SessionError::UnsafeName(format!(
                "refusing the manifest: {why}"
            )));
        }
    }
    let manifest = Arc::new(manifest);
    let parts = Arc::new(PartFiles::new(ctx.out.clone(), manifest.clone(), ctx.fsync));
    on_event(RecvEvent::SessionStarted {
        peer,
        files: manifest.files().len(),
        bytes: manifest.total_bytes(),
    });
    // What earlier attempts left: checked block by block, announced (HAVE)
    // before READY so that the sender skips it.
    let held = take_up_parts(&parts, 0..manifest.files().len() as u32).await?;
    for (f, r) in &held {
        for frame in have_frames(*f, &r.blocks) {
            paths.primary().send(&frame).await?;
        }
        announce_resumed(&manifest, *f, r, on_event);
    }
    paths.primary().send(&Frame::Ready).await?;
    paths.start(0, frames);
    let mut core = ReceiverCore::new((*manifest).clone());
    for (f, r) in held {
        for (b, d) in r.blocks {
            core.hold(f, b, d);
        }
    }
    // Files added to a session held open: their partial files are checked
    // off the loop, then answered (HAVE, FILES_ADDED) on the path that
    // asked.
    type Added = (usize, u32, u32, Result<Vec<(u32, Resumed)>, SessionError>);
    let (added_tx, mut added_rx) = mpsc::unbounded_channel::<Added>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Done, SessionError>>();
    let writes = spawn_writer(parts.clone(), done_tx.clone());
    let mut status_tick = tokio::time::interval(FEC_STATUS_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), SessionError> = async {
        while !core.is_done() {
            tokio::select! {
                Some((path, datagram)) = paths.datagrams_rx.recv(), if core.fec_active() => {
                    core.on_datagram(path, datagram)?;
                }
                _ = status_tick.tick(), if core.fec_active() => {
                    // Each path reports what arrived on it, for its own rate
                    // controller at the sender; the deficits go on all.
                    let micros = started.elapsed().as_micros() as u64;
                    paths.send_reports(&mut core, micros).await?;
                }
                Some(path) = joins.recv() => {
                    let i = paths.join(path);
                    core.path_joined();
                    tracing::debug!(path = i, "a path joined the session");
                }
                Some((path, mut stream)) = paths.streams_rx.recv() => {
                    let header = match read_block_header(&mut stream).await {
                        Ok(h) => h,
                        // A stream cut by its path's death is re-sent elsewhere.
                        Err(SessionError::ConnectionLost(_)) if core.multipath() => continue,
                        Err(e) => return Err(e),
                    };
                    match core.on_stream(path, &header)? {
                        StreamVerdict::Duplicate => {
                            let _ = stream.stop(0u32.into());
                        }
                        StreamVerdict::Take { offset } => {
                            let (parts, tx, writes) = (parts.clone(), done_tx.clone(), writes.clone());
                            tokio::spawn(async move {
                                if let Err(e) = receive_block(stream, header, offset, path, parts, writes, tx.clone()).await {
                                    let _ = tx.send(Ok(Done::StreamFailed(e)));
                                }
                            });
                        }
                    }
                }
                Some((path, frame)) = paths.frames_rx.recv() => match frame {
                    Ok(Some(frame)) => core.on_frame(path, frame)?,
                    // A sender that held the session open may end it by
                    // closing once every file is done.
                    Err(_) | Ok(None) if core.files_done() && sender_closed_done(conn) => break,
                    Err(e) if !core.multipath() => return Err(e),
                    Ok(None) if !core.multipath() => return Err(match conn.close_reason() {
                        Some(r) => SessionError::from_connection(r),
                        None => SessionError::Protocol("the sender closed the control stream".into()),
                    }),
                    Err(_) | Ok(None) => {
                        paths.io[path].alive = false;
                        tracing::debug!(path, left = paths.alive(), "a path's control stream ended");
                        if paths.alive() == 0 {
                            return Err(SessionError::ConnectionLost("every path of the session is gone".into()));
                        }
                    }
                },
                Some((path, first, count, held)) = added_rx.recv() => {
                    let manifest = parts.manifest();
                    for (f, r) in held.map_err(|e| with_kept_parts(e, &parts))? {
                        for frame in have_frames(f, &r.blocks) {
                            paths.send_on(path, &frame).await?;
                        }
                        announce_resumed(&manifest, f, &r, on_event);
                        for (b, d) in r.blocks {
                            core.hold(f, b, d);
                        }
                    }
                    paths.send_on(path, &Frame::FilesAdded { first, count }).await?;
                }
                done = done_rx.recv() => match done.expect("we hold a sender")? {
                    Done::Block { file, block, digest, path } => core.on_written(file, block, digest, path)?,
                    Done::StreamFailed(e) => core.on_stream_failed(e)?,
                    Done::Corrupt { file, block } => core.on_corrupt(file, block)?,
                    Done::Finalized { file, hash } => {
                        core.on_finalized(file);
                        let entry = &core.manifest().files()[file as usize];
                        on_event(RecvEvent::FileDone { name: entry.name.clone(), blake3: hash.to_hex().to_string(), bytes: entry.size });
                    }
                },
            }
            // What the core decided.
            while let Some(output) = core.poll_output() {
                match output {
                    Output::Send(Target::Path(p), frame) => paths.send_on(p, &frame).await?,
                    Output::Send(Target::All, frame) => paths.send_all(&frame).await?,
                    Output::Decode(complete, digest) => decode_block(complete, digest, &parts, &writes, &done_tx),
                    Output::Finalize { file, hash } => {
                        let (parts, tx) = (parts.clone(), done_tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let _ = tx.send(finalize(&parts, file).map(|()| Done::Finalized { file, hash }));
                        });
                    }
                    Output::AddFiles { path, first, count } => {
                        let grown = Arc::new(core.manifest().clone());
                        let bytes = grown.files()[first as usize..].iter().map(|f| f.size).sum();
                        parts.grow(grown);
                        on_event(RecvEvent::FilesAdded { peer, files: count as usize, bytes });
                        let (parts, tx) = (parts.clone(), added_tx.clone());
                        tokio::spawn(async move {
                            let held = take_up_parts(&parts, first..first + count).await;
                            let _ = tx.send((path, first, count, held));
                        });
                    }
                }
            }
        }
        // The last FILE_DONE went on the control stream; a few more
        // reports repeat it, so a lost packet of the stream does not keep
        // the sender waiting a round trip and more for it.
        if core.fec_active() {
            for _ in 0..3 {
                status_tick.tick().await;
                let micros = started.elapsed().as_micros() as u64;
                let _ = paths.send_reports(&mut core, micros).await;
            }
        }
        Ok(())
    }
    .await;
    // A sender that held the session open ends it by closing once every
    // file is done: whichever arm met the close first (a report sent, a
    // frame read), that is the session's success, not a lost connection.
    let result = match result {
        Err(_) if core.files_done() && sender_closed_done(conn) => Ok(()),
        r => r,
    };
    if let Err(e) = result {
        return Err(with_kept_parts(e, &parts));
    }
    let manifest = parts.manifest();
    Ok(SessionSummary {
        peer,
        files: manifest.files().len(),
        bytes: manifest.total_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks what earlier attempts left of files `files` (block by block, on
/// a blocking thread): those with verified blocks, ascending.
async fn take_up_parts(
    parts: &Arc<PartFiles>,
    files: std::ops::Range<u32>,
) -> Result<Vec<(u32, Resumed)>, SessionError> {
    let checking = parts.clone();
    tokio::task::spawn_blocking(move || {
        files
            .filter_map(|f| match resume_part(&checking, f) {
                Ok(Some(r)) if !r.blocks.is_empty() => Some(Ok((f, r))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| SessionError::Storage(format!("checking partial files failed: {e}")))?
    .map_err(|e| with_kept_parts(e, parts))
}

fn announce_resumed(
    manifest: &Manifest,
    file: u32,
    r: &Resumed,
    on_event: &(dyn Fn(RecvEvent) + Send + Sync),
) {
    on_event(RecvEvent::Resumed {
        name: manifest.files()[file as usize].name.clone(),
        bytes: r.bytes,
        blocks: r.blocks.len() as u64,
    });
}

/// Whether the sender closed the connection saying "done".
fn sender_closed_done(conn: &Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code.into_inner() == u64::from(crate::wire::close_code::DONE)
    )
}

/// How often the receiver reports on the FEC plane.
pub(super) const FEC_STATUS_INTERVAL: Duration = Duration::from_millis(10);

/// Decodes and verifies a complete block on Rayon; a match goes to the
/// writer (acknowledged on every path), a mismatch comes back as
/// [`Done::Corrupt`].
pub(super) fn decode_block(
    complete: CompleteBlock,
    want: BlockDigest,
    parts: &Arc<PartFiles>,
    writes: &crossbeam_channel::Sender<WriteJob>,
    done: &DoneSender,
) {
    let (parts, writes, done) = (parts.clone(), writes.clone(), done.clone());
    rayon::spawn(move || {
        let CompleteBlock {
            file,
            block,
            geometry,
            shards,
            ..
        } = complete;
        let manifest = parts.manifest();
        let entry = &manifest.files()[file as usize];
        let (offset, _) = manifest.block_span(file as usize, block);
        let mut data = parts.buffers.take(0);
        let decoded = reconstruct(&geometry, &shards, &mut data);
        drop(shards);
        let ok = decoded.is_ok() && block_digest(&data, offset, entry.size) == want;
        if !ok {
            parts.buffers.give(data);
            let _ = done.send(Ok(Done::Corrupt { file, block }));
            return;
        }
        let job = WriteJob {
            file,
            block,
            offset,
            digest: want,
            data,
            path: None,
            // The FEC plane is bounded by the blocks the sender may keep
            // unacknowledged (FEC_SETUP).
            _permit: None,
        };
        if writes.send(job).is_err() {
            let _ = done.send(Err(SessionError::Storage("the writer stopped".into())));
        }
    });
}

pub(super) async fn read_block_header(
    stream: &mut RecvStream,
) -> Result<BlockHeader, SessionError> {
    let mut buf = [0u8; BLOCK_HEADER_LEN];
    stream.read_exact(&mut buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => {
            SessionError::Protocol("block stream ended inside its header".into())
        }
        quinn::ReadExactError::ReadError(e) => read_error(e),
    })?;
    Ok(BlockHeader::decode(&buf))
}

/// Reads a block's data, then verifies and writes it on the Rayon pool.
pub(super) type DoneSender = mpsc::UnboundedSender<Result<Done, SessionError>>;

/// Reads a block's data and hands it to a Rayon job that verifies it and
/// queues it for the writer. Failures are reported on `done`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn receive_block(
    mut stream: RecvStream,
    header: BlockHeader,
    offset: u64,
    path: usize,
    parts: Arc<PartFiles>,
    writes: crossbeam_channel::Sender<WriteJob>,
    done: DoneSender,
) -> Result<(), SessionError> {
    // A permit per block held in memory, given back once it is written:
    // while the disk (or the hashing) is behind, streams wait here and
    // quinn's flow control holds the sender back.
    let permit = parts
        .in_memory
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| SessionError::Storage("the writer stopped".into()))?;
    // The length was checked against the manifest: at most one block.
    let mut data = parts.buffers.take(header.len as usize);
    stream.read_exact(&mut data).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => {
            SessionError::Protocol("block stream ended early".into())
        }
        quinn::ReadExactError::ReadError(e) => read_error(e),
    })?;
    if stream
        .read(&mut [0u8; 1])
        .await
        .map_err(read_error)?
        .is_some()
    {
        return Err(SessionError::Protocol(format!(
            "block {} of file {} is longer than announced",
            header.block, header.file
        )));
    }
    // Verify on the Rayon pool; the session's writer thread writes.
    rayon::spawn(move || {
        let manifest = parts.manifest();
        let entry = &manifest.files()[header.file as usize];
        let digest = block_digest(&data, offset, entry.size);
        if digest != header.digest {
            parts.buffers.give(data);
            let _ = done.send(Err(SessionError::HashMismatch(format!(
                "block {} of {:?} does not match its digest",
                header.block, entry.name
            ))));
            return;
        }
        let job = WriteJob {
            file: header.file,
            block: header.block,
            offset,
            digest,
            data,
            path: Some(path),
            _permit: Some(permit),
        };
        if writes.send(job).is_err() {
            let _ = done.send(Err(SessionError::Storage("the writer stopped".into())));
        }
    });
    Ok(())
}

/// Bytes of stream blocks the receiver holds in memory at once (read, being
/// verified, or waiting for the writer). Measured without a bound: the
/// reliable plane's receiver peaked at 100 MiB for 1 GiB and 353 MiB for
/// 4 GiB to tmpfs (the Rayon queue in front of the writer grew).
const IN_MEMORY_BYTES: u64 = 32 << 20;

/// Stream blocks held in memory at once: [`IN_MEMORY_BYTES`] worth, at
/// least two.
pub(super) fn blocks_in_memory(block_size: u64) -> usize {
    (IN_MEMORY_BYTES / block_size.max(1)).max(2) as usize
}
