//! The reliable plane's driver, over one path or several: one QUIC
//! connection per path, blocks spread by the path manager, failover and
//! re-dial. With one path there is nothing to fail over to: any failure of
//! that path ends the send with its reason, and quinn's idle timeout judges
//! a silent receiver. With priority classes a block is taken from the
//! scheduler only when the paths are about to need one, so that its order,
//! not the order blocks were read in, is what leaves.
//!
//! The first path is dialled and negotiated as in a single-path session
//! (HELLO, MANIFEST, READY). Every other path dials with the same session id
//! and token; the receiver joins it to the session (WELCOME) and from then
//! on it carries block streams and its own control stream. A block goes to
//! the live path that would finish it first ([`PathManager::pick`]), while
//! that path has room (about two bandwidth-delay products of blocks in
//! flight, at least two blocks). The receiver acknowledges a block on the
//! path it came on; BLOCK_ACK and FILE_DONE are accepted from any path.
//!
//! Every 100 ms the driver feeds quinn's per-path statistics to the manager
//! and lets it judge liveness. A dead path's connection is closed, its
//! unacknowledged blocks are queued again at the front, and it is re-dialled
//! with back-off; the transfer goes on while one path lives, and fails if
//! none has been up for [`ALL_DOWN_LIMIT`]. Blocks are kept (a reference to
//! the pooled buffer) until acknowledged, so a re-send costs no re-read.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::SessionError;
use super::control::{self, ControlWriter};
use crate::manifest::Manifest;
use crate::multipath::manager::{BlockId, PathEvent, PathManager, PathState};
use crate::multipath::spec::{PathChange, PathRate, PathReport, PathSpec};
use crate::transport::Tuning;
use crate::transport::identity::Fingerprint;
use crate::wire::{Frame, PROTOCOL_VERSION, close_code};
use crate::work::PreparedBlock;

/// How long the transfer survives with no path up at all.
pub const ALL_DOWN_LIMIT: Duration = Duration::from_secs(30);

/// What the multi-path driver reports as it goes.
pub(crate) enum MpProgress {
    Rates(Vec<PathRate>),
    Acked {
        bytes: u64,
        rtt: Duration,
        file: usize,
    },
    FileDone {
        file: usize,
    },
    Path(PathChange),
}

type Frames = mpsc::Receiver<Result<Option<Frame>, SessionError>>;

struct LivePath {
    conn: Connection,
    control: ControlWriter,
}

/// The connections of all paths: the live one per path (if any), the wire
/// bytes of connections already closed, and a generation counter so that
/// frames of a closed connection are not taken for its successor's.
struct Conns {
    live: Vec<Option<LivePath>>,
    wire_done: Vec<u64>,
    generation: Vec<u64>,
}

impl Conns {
    /// Closes path `i`'s connection (if open) and puts `requeue` back at
    /// the front of `queue`.
    fn retire(
        &mut self,
        i: usize,
        requeue: Vec<BlockId>,
        queue: &mut VecDeque<BlockId>,
        why: &[u8],
    ) {
        for b in requeue {
            queue.push_front(b);
        }
        if let Some(p) = self.live[i].take() {
            self.wire_done[i] += p.conn.stats().udp_tx.bytes;
            p.conn.close(close_code::DONE.into(), why);
        }
        self.generation[i] += 1;
    }
}

/// Dials `spec` on `endpoint` and joins session `session_id`.
pub(crate) async fn join(
    endpoint: Endpoint,
    remote: SocketAddr,
    session_id: [u8; 16],
    token: Vec<u8>,
    limit: Duration,
) -> Result<(Connection, ControlWriter, Frames), SessionError> {
    let attempt = async {
        let conn = endpoint
            .connect(remote, "chunkstream")
            .map_err(|e| SessionError::ConnectionLost(format!("cannot dial {remote}: {e}")))?
            .await
            .map_err(SessionError::from_connection)?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(SessionError::from_connection)?;
        let mut control = ControlWriter(send);
        let mut frames = control::spawn_reader(recv);
        control
            .send(&Frame::Hello {
                version: PROTOCOL_VERSION,
                session_id,
                token,
            })
            .await?;
        match frames.recv().await {
            Some(Ok(Some(Frame::Welcome { .. }))) => Ok((conn, control, frames)),
            Some(Ok(Some(Frame::Error { code, message }))) => {
                Err(super::sender::peer_error(code, message))
            }
            Some(Err(e)) => Err(e),
            _ => Err(SessionError::Protocol(
                "expected WELCOME on a joining path".into(),
            )),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| SessionError::Unreachable {
            addr: remote,
            secs: limit.as_secs().max(1),
        })?
}

/// What the reliable plane did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Per path: bytes, wire bytes, RTT, final state.
    pub paths: Vec<PathReport>,
    /// From handing each block to QUIC to its BLOCK_ACK.
    pub block_latency: Option<crate::metrics::LatencySummary>,
}

/// Everything the driver needs from the session that set up path 0.
pub(crate) struct Primary<'a> {
    pub conn: Connection,
    pub control: ControlWriter,
    pub frames: Frames,
    pub endpoint: &'a Endpoint,
}

/// Runs the reliable plane over every path until each file is done.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_multipath(
    primary: Primary<'_>,
    specs: &[PathSpec],
    session_id: [u8; 16],
    token: &str,
    peer: Fingerprint,
    tuning: &Tuning,
    max_rate: Option<u64>,
    pipeline: &mut super::classes::BlockSource,
    manifest: &Manifest,
    hashes: &mut super::file_hashes::FileHashes,
    started: Instant,
    mut on_progress: impl FnMut(MpProgress),
) -> Result<Outcome, SessionError> {
    let file_count = manifest.files().len();
    let n = specs.len();
    // `--max-rate` paces the whole transfer, `@RATE` each path: a block
    // leaves when both allow it.
    let mut total_pacer = max_rate.map(super::pacer::Pacer::new);
    let mut path_pacers: Vec<Option<super::pacer::Pacer>> = specs
        .iter()
        .map(|p| p.cap.map(super::pacer::Pacer::new))
        .collect();
    let mut next_dispatch: Option<Instant> = None;
    let now = Instant::now();
    // With one path there is nothing to fail over to: quinn's idle timeout
    // decides when the receiver is gone, and any failure ends the send.
    let one_path = n == 1;
    let dead_after = if one_path {
        tuning.idle_timeout * 2
    } else {
        (tuning.keep_alive * 3).max(Duration::from_millis(1500))
    };
    let mut latency = crate::metrics::BlockLatency::default();
    let prioritised = pipeline.prioritised();
    let mut manager = PathManager::new(n, dead_after, now);
    for (i, p) in specs.iter().enumerate() {
        manager.set_cap(i, p.cap.map(|c| c as f64));
    }
    let mut endpoints: Vec<Option<Endpoint>> = vec![None; n];
    endpoints[0] = Some(primary.endpoint.clone());
    let mut conns = Conns {
        live: (0..n).map(|_| None).collect(),
        wire_done: vec![0u64; n],
        generation: vec![0u64; n],
    };
    let mut last_rtt = vec![Duration::ZERO; n];
    let (frames_tx, mut frames_rx) = mpsc::channel::<control::TaggedFrame>(256);
    let forward = control::forward_tagged;
    let change = |path: usize, state: PathState| {
        MpProgress::Path(PathChange {
            path,
            name: specs[path].name(),
            state,
            at: started.elapsed().as_secs_f64(),
            reason: None,
        })
    };

    conns.live[0] = Some(LivePath {
        conn: primary.conn,
        control: primary.control,
    });
    forward(0, 0, primary.frames, frames_tx.clone());
    manager.on_up(0, now);
    on_progress(change(0, PathState::Up));

    type Dialed = (
        usize,
        Result<(Connection, ControlWriter, Frames), SessionError>,
    );
    let mut dials: JoinSet<Dialed> = JoinSet::new();
    let dial_limit = Duration::from_secs(5);
    for i in 1..n {
        let (endpoint, _) = specs[i].endpoint(peer, tuning)?;
        endpoints[i] = Some(endpoint.clone());
        let (remote, token) = (specs[i].remote, token.as_bytes().to_vec());
        dials.spawn(async move {
            (
                i,
                join(endpoint, remote, session_id, token, dial_limit).await,
            )
        });
    }

    let mut pending: BTreeMap<BlockId, (PreparedBlock, Instant)> = BTreeMap::new();
    let mut queue: VecDeque<BlockId> = VecDeque::new();
    let mut writers: JoinSet<(usize, BlockId, Result<(), SessionError>)> = JoinSet::new();
    let mut reader_done = hashes.all_read();
    let mut unsent_hashes: Vec<u32> = Vec::new();
    let mut done = vec![false; file_count];
    let mut files_done = 0usize;
    let mut sent_blocks = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_down_since: Option<Instant> = None;
    let block_size = manifest.block_size();

    while files_done < file_count {
        // Dispatch what the paths have room for.
        while let Some(&id) = queue.front() {
            let Some((block, _)) = pending.get(&id) else {
                queue.pop_front();
                continue;
            };
            let bytes = u64::from(block.header.len);
            let Some(i) = manager.pick(bytes) else { break };
            let rate = manager.rate(i);
            let room = rate
                .map_or(4 * block_size, |r| {
                    (r * last_rtt[i].as_secs_f64() * 2.5) as u64
                })
                .max(4 * block_size);
            if manager.in_flight(i) + bytes > room {
                break;
            }
            let Some(path) = &conns.live[i] else { break };
            // The caps: wait (without holding up acknowledgements) until
            // both pacers let the block go.
            let now = Instant::now();
            let ready = [total_pacer.as_ref(), path_pacers[i].as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.ready_at(now))
                .max()
                .unwrap_or(now);
            if ready > now {
                next_dispatch = Some(ready);
                break;
            }
            for p in [total_pacer.as_mut(), path_pacers[i].as_mut()]
                .into_iter()
                .flatten()
            {
                p.reserve(now, bytes);
            }
            queue.pop_front();
            let block = block.clone();
            let conn = path.conn.clone();
            let priority = i32::MAX - (sent_blocks.min(i32::MAX as u64) as i32);
            sent_blocks += 1;
            manager.on_assigned(i, id, bytes);
            if let Some(p) = pending.get_mut(&id) {
                p.1 = Instant::now();
            }
            writers.spawn(async move {
                (
                    i,
                    id,
                    super::sender::send_block(&conn, block, priority).await,
                )
            });
        }
        // FILE_HASH frames go out on any live path.
        while let Some(&file) = unsent_hashes.first() {
            let hash = *hashes.hashes[file as usize].expect("hashed").as_bytes();
            let mut sent = false;
            for path in conns.live.iter_mut().flatten() {
                if path
                    .control
                    .send(&Frame::FileHash { file, hash })
                    .await
                    .is_ok()
                {
                    sent = true;
                    break;
                }
            }
            if !sent {
                break;
            }
            unsent_hashes.remove(0);
        }
        // With priority classes the scheduler's order is the share: take a
        // block from it only when the paths are about to need one, not as
        // soon as it is read (taken eagerly, blocks left in the order they
        // were read: 31/30/39 instead of 50/30/20).
        let admit =
            !reader_done && pending.len() < pipeline.buffers && (!prioritised || queue.is_empty());
        tokio::select! {
            block = pipeline.next(), if admit => {
                let block = block?;
                let (f, b) = (block.header.file, block.header.block);
                if let Some((file, _)) = hashes.record(&block.header, manifest) {
                    unsent_hashes.push(file);
                }
                reader_done = hashes.all_read();
                pending.insert((f, b), (block, Instant::now()));
                queue.push_back((f, b));
            }
            Some(joined) = writers.join_next(), if !writers.is_empty() => {
                let (i, id, result) = joined.map_err(|e| SessionError::ConnectionLost(format!("block writer failed: {e}")))?;
                if let Err(e) = result {
                    if one_path {
                        return Err(e);
                    }
                    // The path broke under this block: the manager re-queues
                    // everything it carried.
                    tracing::debug!(path = i, error = %e, "block write failed");
                    if manager.state(i) == PathState::Up {
                        conns.retire(i, manager.on_failed(i, Instant::now()), &mut queue, b"path failed");
                        on_progress(change(i, PathState::Down));
                    } else if pending.contains_key(&id) && !queue.contains(&id) && !manager.is_assigned(id) {
                        queue.push_front(id);
                    }
                }
            }
            Some(dialed) = dials.join_next(), if !dials.is_empty() => {
                let (i, result) = dialed.map_err(|e| SessionError::ConnectionLost(format!("dialling failed: {e}")))?;
                match result {
                    Ok((conn, control, frames)) => {
                        conns.generation[i] += 1;
                        forward(i, conns.generation[i], frames, frames_tx.clone());
                        conns.live[i] = Some(LivePath { conn, control });
                        manager.on_up(i, Instant::now());
                        on_progress(change(i, PathState::Up));
                    }
                    Err(e) => {
                        tracing::debug!(path = i, error = %e, "dialling a path failed");
                        manager.on_redial_failed(i, Instant::now());
                        on_progress(change(i, PathState::Down));
                    }
                }
            }
            Some((i, gen_, item)) = frames_rx.recv() => {
                if gen_ != conns.generation[i] {
                    continue;
                }
                match item {
                    Ok(Some(Frame::BlockAck { file, block })) => {
                        if (file as usize) >= file_count || block >= manifest.block_count(file as usize) {
                            return Err(SessionError::Protocol(format!("BLOCK_ACK for unknown block {block} of file {file}")));
                        }
                        if let Some((_, sent_at)) = pending.remove(&(file, block)) {
                            latency.record(sent_at.elapsed());
                            manager.on_acked((file, block), sent_at, Instant::now());
                            let rtt = conns.live[i].as_ref().map_or(Duration::ZERO, |p| p.conn.rtt());
                            on_progress(MpProgress::Acked { bytes: u64::from(manifest.block_span(file as usize, block).1), rtt, file: file as usize });
                        }
                    }
                    Ok(Some(Frame::FileDone { file })) => {
                        let f = file as usize;
                        if f >= file_count || hashes.hashes[f].is_none() {
                            return Err(SessionError::Protocol(format!("unexpected FILE_DONE for file {file}")));
                        }
                        // Sent on every live path: count it once.
                        if !std::mem::replace(&mut done[f], true) {
                            files_done += 1;
                            on_progress(MpProgress::FileDone { file: f });
                        }
                    }
                    Ok(Some(Frame::Error { code, message })) => return Err(super::sender::peer_error(code, message)),
                    Ok(Some(other)) => return Err(SessionError::Protocol(format!("unexpected {:?} from the receiver", other.frame_type()))),
                    Ok(None) | Err(_) if one_path => {
                        let reason = conns.live[i].as_ref().and_then(|p| p.conn.close_reason());
                        return Err(match (item, reason) {
                            (_, Some(r)) => SessionError::from_connection(r),
                            (Err(e), None) => e,
                            _ => SessionError::Protocol("the receiver closed the control stream".into()),
                        });
                    }
                    Ok(None) | Err(_) => {
                        if manager.state(i) == PathState::Up {
                            conns.retire(i, manager.on_failed(i, Instant::now()), &mut queue, b"path failed");
                            on_progress(change(i, PathState::Down));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_dispatch.unwrap_or_else(Instant::now).into()), if next_dispatch.is_some() => {
                next_dispatch = None;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (i, path) in conns.live.iter().enumerate() {
                    if let Some(p) = path {
                        let stats = p.conn.stats();
                        last_rtt[i] = p.conn.rtt();
                        manager.on_stats(i, now, p.conn.rtt(), stats.path.cwnd, stats.udp_rx.bytes);
                    }
                }
                if !one_path { on_progress(MpProgress::Rates(
                    (0..n)
                        .map(|i| PathRate {
                            name: specs[i].name(),
                            rate_bps: manager.rate(i).unwrap_or(0.0) * 8.0,
                            state: manager.state(i),
                        })
                        .collect(),
                )); }
                for event in manager.check(now) {
                    match event {
                        PathEvent::Died { path, requeue } => {
                            conns.retire(path, requeue, &mut queue, b"path silent");
                            on_progress(change(path, PathState::Down));
                        }
                        PathEvent::Redial { path } => {
                            on_progress(change(path, PathState::Connecting));
                            let endpoint = match &endpoints[path] {
                                Some(e) => e.clone(),
                                None => specs[path].endpoint(peer, tuning)?.0,
                            };
                            let (remote, token) = (specs[path].remote, token.as_bytes().to_vec());
                            dials.spawn(async move { (path, join(endpoint, remote, session_id, token, dial_limit).await) });
                        }
                    }
                }
                if manager.live() == 0 {
                    let since = *all_down_since.get_or_insert(now);
                    if now.duration_since(since) > ALL_DOWN_LIMIT {
                        return Err(SessionError::ConnectionLost(format!(
                            "no path has been up for {} s", ALL_DOWN_LIMIT.as_secs()
                        )));
                    }
                } else {
                    all_down_since = None;
                }
            }
        }
    }
    // FILE_DONE may overtake the last BLOCK_ACKs on a slower path: every
    // block is acknowledged by then.
    let now = Instant::now();
    for (id, (_, sent_at)) in std::mem::take(&mut pending) {
        manager.on_acked(id, sent_at, now);
    }
    let reports = (0..n)
        .map(|i| {
            let wire = conns.wire_done[i]
                + conns.live[i]
                    .as_ref()
                    .map_or(0, |p| p.conn.stats().udp_tx.bytes);
            PathReport {
                name: specs[i].name(),
                bytes: manager.acked_bytes(i),
                wire_bytes: wire,
                rtt_ms: last_rtt[i].as_secs_f64() * 1e3,
                state: manager.state(i),
                loss: None,
            }
        })
        .collect();
    for path in conns.live.iter().flatten() {
        path.conn.close(close_code::DONE.into(), b"done");
    }
    for endpoint in endpoints.iter().flatten().skip(1) {
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    Ok(Outcome {
        paths: reports,
        block_latency: latency.summary(),
    })
}
