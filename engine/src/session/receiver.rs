//! The receiving side: endpoints on every `--listen` address, one session per
//! authenticated connection.
//!
//! [`Receiver::bind`] opens the output folder (proving it writable) and binds
//! the endpoints; [`Receiver::serve`] accepts connections. A connection whose
//! TLS handshake fails or whose token is wrong is refused and reported, but
//! is not a session: `--once` keeps waiting for a real one.
//!
//! Inside a session, every block stream is read by its own task, checked
//! against the manifest, then verified (BLAKE3 against the header's digest)
//! and written at its offset into `NAME.part` by a Rayon job. The
//! [`ReceiveTracker`] says when a file has all its blocks and its announced
//! hash; the file is then verified as a whole, synced, renamed to `NAME`,
//! and FILE_DONE is sent. A failure (disk full, hash mismatch, peer gone)
//! keeps the `.part` files and never renames.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream};
use tokio::sync::mpsc;

use super::control::{self, ControlWriter, read_error};
use super::error::SessionError;
use super::fec_receive::FecReceive;
use super::tracker::ReceiveTracker;
use crate::fec::codec::reconstruct;
use crate::fec::collector::CompleteBlock;
use crate::hash::{BlockDigest, block_digest};
use crate::manifest::Manifest;
use crate::names::{OutputDir, OutputError, check_name};
use crate::transport::identity::{Fingerprint, Identity};
use crate::transport::{Tuning, server_endpoint};
use crate::wire::{BLOCK_HEADER_LEN, BlockHeader, Frame, PROTOCOL_VERSION, close_code, error_code};

/// How long an unauthenticated connection may take to say HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What a receiver reports as it works.
#[derive(Debug, Clone)]
pub enum RecvEvent {
    /// A connection was refused before any session started.
    Refused {
        /// Who.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A sender was accepted and announced its files.
    SessionStarted {
        /// Who.
        peer: SocketAddr,
        /// Number of files.
        files: usize,
        /// Total bytes.
        bytes: u64,
    },
    /// Another path (connection) joined a running session.
    PathJoined {
        /// Who, from where.
        peer: SocketAddr,
    },
    /// A file was verified and renamed into place.
    FileDone {
        /// Its name.
        name: String,
        /// Its BLAKE3, verified.
        blake3: String,
        /// Its size.
        bytes: u64,
    },
}

/// A finished session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// The sender.
    pub peer: SocketAddr,
    /// Files received.
    pub files: usize,
    /// Bytes received.
    pub bytes: u64,
    /// Wall time of the session.
    pub seconds: f64,
}

/// A bound receiver.
#[derive(Debug)]
pub struct Receiver {
    endpoints: Vec<Endpoint>,
    out: OutputDir,
    token: String,
    fingerprint: Fingerprint,
    fsync: bool,
}

/// Errors starting a receiver.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The output folder is unusable.
    #[error("output folder is not writable: {0}")]
    Output(#[from] OutputError),
    /// An endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// No `--listen` address.
    #[error("no listen address")]
    NoListen,
}

impl Receiver {
    /// Opens `out` and binds one endpoint per listen address.
    pub fn bind(
        listen: &[SocketAddr],
        out: &Path,
        token: String,
        identity: &Identity,
        tuning: &Tuning,
    ) -> Result<Self, BindError> {
        if listen.is_empty() {
            return Err(BindError::NoListen);
        }
        let out = OutputDir::open(out)?;
        let endpoints = listen
            .iter()
            .map(|&addr| server_endpoint(addr, identity, tuning))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            endpoints,
            out,
            token,
            fingerprint: identity.fingerprint(),
            fsync: false,
        })
    }

    /// With `true`, every file is synced to disk before it is renamed into
    /// place and reported done (slower; survives power loss). Off by
    /// default, as in rsync and scp: the data is verified either way.
    pub fn set_fsync(&mut self, fsync: bool) -> &mut Self {
        self.fsync = fsync;
        self
    }

    /// The addresses really bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// The certificate fingerprint senders must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Accepts sessions until the first one ends (`once`) or forever.
    /// Returns the result of that session with `once`.
    pub async fn serve(
        &self,
        once: bool,
        on_event: impl Fn(RecvEvent) + Send + Sync + 'static,
    ) -> Result<SessionSummary, SessionError> {
        let on_event = Arc::new(on_event);
        let (incoming_tx, mut incoming_rx) = mpsc::channel(16);
        for endpoint in &self.endpoints {
            let (endpoint, tx) = (endpoint.clone(), incoming_tx.clone());
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    if tx.send(incoming).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(incoming_tx);
        let (result_tx, mut result_rx) = mpsc::channel(16);
        let sessions: Sessions = Arc::default();
        loop {
            tokio::select! {
                incoming = incoming_rx.recv() => {
                    let Some(incoming) = incoming else {
                        return Err(SessionError::ConnectionLost("all endpoints closed".into()));
                    };
                    let ctx = SessionContext { out: self.out.clone(), token: self.token.clone(), fsync: self.fsync, sessions: sessions.clone() };
                    let (on_event, result_tx) = (on_event.clone(), result_tx.clone());
                    tokio::spawn(async move {
                        let outcome = handle_connection(incoming, ctx, &*on_event).await;
                        let _ = result_tx.send(outcome).await;
                    });
                }
                Some(outcome) = result_rx.recv() => match outcome {
                    Outcome::NotASession { peer, reason } => on_event(RecvEvent::Refused { peer, reason }),
                    Outcome::Joined { peer } => on_event(RecvEvent::PathJoined { peer }),
                    Outcome::Session(result) => {
                        if let Err(e) = &result {
                            tracing::warn!("session failed: {e}");
                        }
                        if once {
                            for e in &self.endpoints {
                                let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
                            }
                            return result;
                        }
                    }
                },
            }
        }
    }
}

#[derive(Debug, Clone)]
struct SessionContext {
    out: OutputDir,
    token: String,
    fsync: bool,
    sessions: Sessions,
}

/// Running sessions by id: a connection whose HELLO names one of them is
/// another path of that session, not a new session.
type Sessions = Arc<Mutex<std::collections::HashMap<[u8; 16], mpsc::UnboundedSender<JoinedPath>>>>;

/// A connection that joined a running session, its control stream open.
struct JoinedPath {
    conn: Connection,
    control: ControlWriter,
    recv: RecvStream,
}

enum Outcome {
    NotASession { peer: SocketAddr, reason: String },
    Joined { peer: SocketAddr },
    Session(Result<SessionSummary, SessionError>),
}

async fn handle_connection(
    incoming: quinn::Incoming,
    ctx: SessionContext,
    on_event: &(dyn Fn(RecvEvent) + Send + Sync),
) -> Outcome {
    let peer = incoming.remote_address();
    let refused = |reason: String| Outcome::NotASession { peer, reason };
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            return refused(format!(
                "TLS handshake failed ({e}); a sender with a different --peer fingerprint refuses this receiver"
            ));
        }
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(SessionError::from_connection)?;
        let frame = control::read_frame(&mut recv).await?;
        Ok::<_, SessionError>((send, recv, frame))
    })
    .await;
    let (send, recv, frame) = match hello {
        Err(_) => return refused("no HELLO within 10 s".into()),
        Ok(Err(e)) => return refused(e.to_string()),
        Ok(Ok(x)) => x,
    };
    let mut control = ControlWriter(send);
    let why = match &frame {
        Some(Frame::Hello { version, .. }) if *version != PROTOCOL_VERSION => Some((
            error_code::BAD_VERSION,
            format!(
                "unsupported protocol version {version} (this receiver speaks {PROTOCOL_VERSION})"
            ),
        )),
        Some(Frame::Hello { token, .. }) if !constant_time_eq(token, ctx.token.as_bytes()) => {
            Some((error_code::BAD_TOKEN, "wrong token".to_owned()))
        }
        Some(Frame::Hello { .. }) => None,
        _ => Some((error_code::PROTOCOL, "expected HELLO".to_owned())),
    };
    if let Some((code, reason)) = why {
        control.send_error_and_finish(code, &reason).await;
        conn.close(close_code::REFUSED.into(), reason.as_bytes());
        return refused(reason);
    }
    let Some(Frame::Hello { session_id, .. }) = frame else {
        unreachable!("checked above")
    };
    let joining = ctx
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&session_id)
        .cloned();
    if let Some(session) = joining {
        if control
            .send(&Frame::Welcome {
                version: PROTOCOL_VERSION,
            })
            .await
            .is_err()
        {
            return refused("path closed while joining".into());
        }
        let path = JoinedPath {
            conn: conn.clone(),
            control,
            recv,
        };
        if session.send(path).is_err() {
            conn.close(close_code::REFUSED.into(), b"session already finished");
            return refused("joined a session that had just finished".into());
        }
        return Outcome::Joined { peer };
    }
    let (join_tx, join_rx) = mpsc::unbounded_channel();
    ctx.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(session_id, join_tx);
    let result = run_session(&conn, control, recv, &ctx, on_event, join_rx).await;
    ctx.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&session_id);
    match &result {
        Ok(_) => {
            // The sender closes once it has every FILE_DONE; wait for that so
            // our last frames are not cut off, but not forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        Err(e) => conn.close(e.close_code().into(), e.to_string().as_bytes()),
    }
    Outcome::Session(result)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Something a session task finished.
enum Done {
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

/// Receive buffers, reused across blocks so that each block does not cost a
/// fresh (page-faulting, zero-filled) allocation.
#[derive(Debug, Default)]
struct BlockBuffers(Mutex<Vec<Vec<u8>>>);

impl BlockBuffers {
    /// Most buffers kept for reuse (the stream limit bounds how many are out).
    const KEEP: usize = 64;

    fn take(&self, len: usize) -> Vec<u8> {
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

    fn give(&self, v: Vec<u8>) {
        let mut free = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < Self::KEEP {
            free.push(v);
        }
    }
}

/// The `.part` files of a session, opened on first use and closed when the
/// file is renamed.
#[derive(Debug)]
struct PartFiles {
    out: OutputDir,
    manifest: Arc<Manifest>,
    open: Mutex<Vec<Option<Arc<File>>>>,
    /// Files renamed into place: a late second copy of one of their blocks
    /// (multi-path re-send) must not create a new `.part`.
    finished: Mutex<Vec<bool>>,
    buffers: BlockBuffers,
    fsync: bool,
}

impl PartFiles {
    fn get(&self, file: u32) -> Result<Arc<File>, SessionError> {
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
        open[file as usize] = Some(f.clone());
        Ok(f)
    }

    fn close(&self, file: u32) -> Option<Arc<File>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())[file as usize].take()
    }
}

fn storage_error(out: &OutputDir, name: &str, e: OutputError) -> SessionError {
    match e {
        OutputError::Io { source, .. } => io_storage_error(out, name, &source),
        other => SessionError::Storage(other.to_string()),
    }
}

fn io_storage_error(out: &OutputDir, name: &str, e: &std::io::Error) -> SessionError {
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

/// Runs an authenticated session; on a failure of ours, tells the sender
/// why with an ERROR frame before the connection is closed.
async fn run_session(
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

/// The paths (connections) of one receiving session. Path 0 is the one that
/// said HELLO first and carried the manifest; others joined with the same
/// session id. Block streams and control frames of every path are merged
/// into two channels; acknowledgements go back on the path a block came
/// on, or any live path if that one is gone. A path whose control stream
/// ends is dead; the session fails only when no path is left.
struct PathSet {
    io: Vec<PathIo>,
    streams_tx: mpsc::Sender<(usize, quinn::RecvStream)>,
    streams_rx: mpsc::Receiver<(usize, quinn::RecvStream)>,
    frames_tx: mpsc::Sender<(usize, Result<Option<Frame>, SessionError>)>,
    frames_rx: mpsc::Receiver<(usize, Result<Option<Frame>, SessionError>)>,
    datagrams_tx: mpsc::Sender<(usize, bytes::Bytes)>,
    datagrams_rx: mpsc::Receiver<(usize, bytes::Bytes)>,
}

struct PathIo {
    conn: Connection,
    control: ControlWriter,
    alive: bool,
}

impl PathSet {
    fn new(conn: Connection, control: ControlWriter) -> Self {
        let (streams_tx, streams_rx) = mpsc::channel(256);
        let (frames_tx, frames_rx) = mpsc::channel(256);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(1024);
        Self {
            io: vec![PathIo {
                conn,
                control,
                alive: true,
            }],
            streams_tx,
            streams_rx,
            frames_tx,
            frames_rx,
            datagrams_tx,
            datagrams_rx,
        }
    }

    fn primary(&mut self) -> &mut ControlWriter {
        &mut self.io[0].control
    }

    /// Starts merging path `i`'s block streams, datagrams and control
    /// frames. Datagrams wait in quinn's buffer until the session takes
    /// them (after FEC_SETUP).
    fn start(&self, i: usize, mut frames: mpsc::Receiver<Result<Option<Frame>, SessionError>>) {
        let (conn, datagrams) = (self.io[i].conn.clone(), self.datagrams_tx.clone());
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if datagrams.send((i, d)).await.is_err() {
                    break;
                }
            }
        });
        let (conn, streams) = (self.io[i].conn.clone(), self.streams_tx.clone());
        tokio::spawn(async move {
            while let Ok(stream) = conn.accept_uni().await {
                if streams.send((i, stream)).await.is_err() {
                    break;
                }
            }
        });
        let merged = self.frames_tx.clone();
        tokio::spawn(async move {
            while let Some(item) = frames.recv().await {
                let last = !matches!(item, Ok(Some(_)));
                if merged.send((i, item)).await.is_err() || last {
                    return;
                }
            }
            let _ = merged.send((i, Ok(None))).await;
        });
    }

    /// Adds a joined path and starts merging it.
    fn join(&mut self, path: JoinedPath) -> usize {
        let frames = control::spawn_reader(path.recv);
        self.io.push(PathIo {
            conn: path.conn,
            control: path.control,
            alive: true,
        });
        let i = self.io.len() - 1;
        self.start(i, frames);
        i
    }

    fn alive(&self) -> usize {
        self.io.iter().filter(|p| p.alive).count()
    }

    /// Sends on path `i`, or on any live path if that one fails.
    async fn send_on(&mut self, i: usize, frame: &Frame) -> Result<(), SessionError> {
        let mut last = None;
        let order = std::iter::once(i).chain(0..self.io.len());
        for j in order {
            if j >= self.io.len() || !self.io[j].alive {
                continue;
            }
            match self.io[j].control.send(frame).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.io[j].alive = false;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SessionError::ConnectionLost("no path left".into())))
    }

    /// Sends on every live path; fails only if none took it.
    async fn send_all(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.send_each(|_| frame.clone()).await
    }

    /// Sends each live path its own frame; fails only if none took one.
    async fn send_each(&mut self, frame: impl Fn(usize) -> Frame) -> Result<(), SessionError> {
        let mut sent = false;
        let mut last = None;
        for (i, p) in self.io.iter_mut().enumerate().filter(|(_, p)| p.alive) {
            match p.control.send(&frame(i)).await {
                Ok(()) => sent = true,
                Err(e) => {
                    p.alive = false;
                    last = Some(e);
                }
            }
        }
        if sent {
            Ok(())
        } else {
            Err(last.unwrap_or_else(|| SessionError::ConnectionLost("no path left".into())))
        }
    }

    async fn send_error(&mut self, code: u16, message: &str) {
        for p in self.io.iter_mut().filter(|p| p.alive) {
            p.control.send_error_and_finish(code, message).await;
        }
    }

    /// Extra paths are closed by the sender once it has every FILE_DONE;
    /// if it does not within 5 s, they are closed here.
    fn close_extras(&self) {
        for p in self.io.iter().skip(1) {
            let conn = p.conn.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                conn.close(close_code::DONE.into(), b"session over");
            });
        }
    }
}

async fn session_body(
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
    let parts = Arc::new(PartFiles {
        out: ctx.out.clone(),
        manifest: manifest.clone(),
        open: Mutex::new(vec![None; manifest.files().len()]),
        finished: Mutex::new(vec![false; manifest.files().len()]),
        buffers: BlockBuffers::default(),
        fsync: ctx.fsync,
    });
    on_event(RecvEvent::SessionStarted {
        peer,
        files: manifest.files().len(),
        bytes: manifest.total_bytes(),
    });
    paths.primary().send(&Frame::Ready).await?;
    paths.start(0, frames);
    // Set once a second path joins: from then on a block may legitimately
    // arrive twice (re-sent after its path died), and losing one path is
    // not the end of the session.
    let mut multipath = false;

    let mut tracker = ReceiveTracker::new((*manifest).clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Done, SessionError>>();
    let writes = spawn_writer(parts.clone(), done_tx.clone());
    let mut fec: Option<FecReceive> = None;
    let mut status_tick = tokio::time::interval(FEC_STATUS_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), SessionError> = async {
        while !tracker.all_done() {
            let ready = tokio::select! {
                Some((path, datagram)) = paths.datagrams_rx.recv(), if fec.is_some() => {
                    let state = fec.as_mut().expect("guarded");
                    if let Some((complete, digest)) = state.on_datagram(&manifest, path, datagram)? {
                        decode_block(complete, digest, &parts, &writes, &done_tx);
                    }
                    None
                }
                _ = status_tick.tick(), if fec.is_some() => {
                    // Each path reports what arrived on it, for its own rate
                    // controller at the sender; the deficits go on all.
                    let state = fec.as_ref().expect("guarded");
                    let micros = started.elapsed().as_micros() as u64;
                    paths.send_each(|i| Frame::FecStatus(state.status(i, micros))).await?;
                    None
                }
                Some(path) = joins.recv() => {
                    let i = paths.join(path);
                    multipath = true;
                    tracing::debug!(path = i, "a path joined the session");
                    None
                }
                Some((path, mut stream)) = paths.streams_rx.recv() => {
                    let header = match read_block_header(&mut stream).await {
                        Ok(h) => h,
                        // A stream cut by its path's death is re-sent elsewhere.
                        Err(SessionError::ConnectionLost(_)) if multipath => continue,
                        Err(e) => return Err(e),
                    };
                    let offset = manifest.check_block(&header).map_err(SessionError::Protocol)?;
                    if multipath && tracker.is_written(header.file, header.block) {
                        // Re-sent after its path was declared dead, but
                        // the first copy made it: acknowledge it again.
                        let _ = stream.stop(0u32.into());
                        paths.send_on(path, &Frame::BlockAck { file: header.file, block: header.block }).await?;
                        continue;
                    }
                    // With several paths, a re-sent copy is taken even while
                    // the first is still arriving (it may be stuck on a dead
                    // path); whichever is verified first is written, and a
                    // second write of the same verified bytes is harmless.
                    if !(multipath && tracker.has_arrived(header.file, header.block)) {
                        tracker.block_arrived(header.file, header.block).map_err(SessionError::Protocol)?;
                    }
                    let (parts, tx, writes) = (parts.clone(), done_tx.clone(), writes.clone());
                    tokio::spawn(async move {
                        if let Err(e) = receive_block(stream, header, offset, path, parts, writes, tx.clone()).await {
                            let _ = tx.send(Ok(Done::StreamFailed(e)));
                        }
                    });
                    None
                }
                Some((path, frame)) = paths.frames_rx.recv() => match frame {
                    Ok(Some(Frame::FileHash { file, hash })) => tracker.file_hash(file, hash).map_err(SessionError::Protocol)?,
                    Ok(Some(Frame::FecSetup { shard_bytes, max_blocks })) => {
                        match &fec {
                            Some(state) if state.same_setup(shard_bytes, max_blocks) => {}
                            Some(_) => return Err(SessionError::Protocol("FEC_SETUP sent twice, and different".into())),
                            None => fec = Some(FecReceive::new(&manifest, shard_bytes, max_blocks)?),
                        }
                        None
                    }
                    Ok(Some(Frame::BlockDigest { file, block, digest })) => {
                        let state = fec.as_mut().ok_or_else(|| SessionError::Protocol("BLOCK_DIGEST before FEC_SETUP".into()))?;
                        if let Some((complete, digest)) = state.on_digest(&manifest, file, block, digest)? {
                            decode_block(complete, digest, &parts, &writes, &done_tx);
                        }
                        None
                    }
                    Ok(Some(Frame::Error { message, .. })) => return Err(SessionError::PeerFailed(message)),
                    Ok(Some(other)) => return Err(SessionError::Protocol(format!("unexpected {:?} from the sender", other.frame_type()))),
                    Err(e) if !multipath => return Err(e),
                    Ok(None) if !multipath => return Err(match conn.close_reason() {
                        Some(r) => SessionError::from_connection(r),
                        None => SessionError::Protocol("the sender closed the control stream".into()),
                    }),
                    Err(_) | Ok(None) => {
                        paths.io[path].alive = false;
                        tracing::debug!(path, left = paths.alive(), "a path's control stream ended");
                        if paths.alive() == 0 {
                            return Err(SessionError::ConnectionLost("every path of the session is gone".into()));
                        }
                        None
                    }
                },
                done = done_rx.recv() => match done.expect("we hold a sender")? {
                    Done::Block { file, block, digest, path } => {
                        if let Some(state) = fec.as_mut() {
                            state.finished(file, block);
                        }
                        if multipath && tracker.is_written(file, block) {
                            // A second copy finished too: acknowledged already.
                            continue;
                        }
                        // A stream's block is acknowledged on its path; a
                        // decoded block's shards came over any, so on all.
                        match path {
                            Some(path) => paths.send_on(path, &Frame::BlockAck { file, block }).await?,
                            None => paths.send_all(&Frame::BlockAck { file, block }).await?,
                        }
                        tracker.block_written(file, block, digest)
                    }
                    Done::StreamFailed(e) => {
                        // On one path this ends the session; with several,
                        // a stream cut by a dying path is re-sent elsewhere.
                        if !multipath || matches!(e, SessionError::HashMismatch(_) | SessionError::Storage(_)) {
                            return Err(e);
                        }
                        tracing::debug!(error = %e, "a block stream failed; the sender re-sends it");
                        None
                    }
                    Done::Corrupt { file, block } => {
                        let state = fec.as_mut().expect("only the FEC plane decodes");
                        let attempt = state.retry(file, block).ok_or_else(|| {
                            SessionError::HashMismatch(format!("block {block} of file {file} failed its digest 255 times"))
                        })?;
                        tracing::debug!(file, block, attempt, "decoded block failed its digest; asking again");
                        paths.send_on(0, &Frame::BlockRetry { file, block, attempt }).await?;
                        None
                    }
                    Done::Finalized { file, hash } => {
                        tracker.file_done(file);
                        paths.send_all(&Frame::FileDone { file }).await?;
                        let entry = &manifest.files()[file as usize];
                        on_event(RecvEvent::FileDone { name: entry.name.clone(), blake3: hash.to_hex().to_string(), bytes: entry.size });
                        None
                    }
                },
            };
            if let Some(file) = ready {
                let hash = tracker.verify(file).map_err(SessionError::HashMismatch)?;
                let (parts, tx) = (parts.clone(), done_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(finalize(&parts, file).map(|()| Done::Finalized { file, hash }));
                });
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        return Err(with_kept_parts(e, &parts));
    }
    Ok(SessionSummary {
        peer,
        files: manifest.files().len(),
        bytes: manifest.total_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How often the receiver reports on the FEC plane.
const FEC_STATUS_INTERVAL: Duration = Duration::from_millis(10);

/// Decodes and verifies a complete block on Rayon; a match goes to the
/// writer (acknowledged on every path), a mismatch comes back as
/// [`Done::Corrupt`].
fn decode_block(
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
        let entry = &parts.manifest.files()[file as usize];
        let (offset, _) = parts.manifest.block_span(file as usize, block);
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
        };
        if writes.send(job).is_err() {
            let _ = done.send(Err(SessionError::Storage("the writer stopped".into())));
        }
    });
}

/// Adds "kept N .part files" to a failure, so the user knows what is left.
fn with_kept_parts(e: SessionError, parts: &PartFiles) -> SessionError {
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

async fn read_block_header(stream: &mut RecvStream) -> Result<BlockHeader, SessionError> {
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
type DoneSender = mpsc::UnboundedSender<Result<Done, SessionError>>;

/// Reads a block's data and hands it to a Rayon job that verifies it and
/// queues it for the writer. Failures are reported on `done`.
#[allow(clippy::too_many_arguments)]
async fn receive_block(
    mut stream: RecvStream,
    header: BlockHeader,
    offset: u64,
    path: usize,
    parts: Arc<PartFiles>,
    writes: crossbeam_channel::Sender<WriteJob>,
    done: DoneSender,
) -> Result<(), SessionError> {
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
        let entry = &parts.manifest.files()[header.file as usize];
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
        };
        if writes.send(job).is_err() {
            let _ = done.send(Err(SessionError::Storage("the writer stopped".into())));
        }
    });
    Ok(())
}

/// A verified block on its way to disk.
struct WriteJob {
    file: u32,
    block: u64,
    offset: u64,
    digest: BlockDigest,
    data: Vec<u8>,
    /// See [`Done::Block`].
    path: Option<usize>,
}

/// The session's writer: one thread doing every `pwrite`, so that blocks of
/// one file do not contend for its inode lock (measured: two Rayon threads
/// writing one file spent more time spinning on that lock than hashing).
fn spawn_writer(parts: Arc<PartFiles>, done: DoneSender) -> crossbeam_channel::Sender<WriteJob> {
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
                let result = parts.get(job.file).and_then(|f| {
                    f.write_all_at(&job.data, job.offset)
                        .map_err(|e| io_storage_error(&parts.out, name, &e))
                });
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
fn finalize(parts: &PartFiles, file: u32) -> Result<(), SessionError> {
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
        .map_err(|e| io_storage_error(&parts.out, name, &e))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
