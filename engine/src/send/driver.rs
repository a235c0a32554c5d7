//! The sender's async driver, for both planes: one loop around
//! [`SenderCore`] that owns the QUIC connections (one per path), the dialer
//! and the reader.
//!
//! The first path arrives connected, HELLO and MANIFEST sent (see
//! [`crate::session::sender`]). On the FEC plane shards start at once, and
//! the receiver's WELCOME and READY are checked by [`Admission`] as they
//! come; the reliable plane arrives admitted. Once admitted, every other
//! path is dialled and joins the session ([`join`]); each one that comes up
//! is handed to the core. Every millisecond the loop feeds each path's
//! quinn statistics to the core, runs its timers, and does what it hands
//! out: a shard is sent as a QUIC datagram, only while quinn has room for
//! it in that connection's buffer, so one full path never holds up the
//! others; a block gets a stream of its own, written by a task, whose end
//! the core hears of ([`send_block`]). Control frames go on one path, the
//! *control path*; when it fails, another takes over and the core queues
//! again what the receiver may have missed.
//!
//! A path that fails or falls silent is closed and re-dialled with
//! back-off; the transfer goes on while one path lives, and fails when none
//! has been up for [`ALL_DOWN_LIMIT`]. A receiver that ends the session
//! (ERROR frame, or a connection closed with an error code) ends it here
//! too, with its reason. With one path, any failure of that path is the
//! end, as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::core::{CoreConfig, CoreEvent, PathFigures, PathStats, Plane, SenderCore, Transmit};
use super::more_files::MoreFiles;
use super::{FecConfig, FecReport};
use crate::fec::accounts::ShardRef;
use crate::fec::cc::WindowHandle;
use crate::manifest::Manifest;
use crate::multipath::manager::PathState;
use crate::multipath::spec::{PathChange, PathRate, PathReport, PathSpec};
use crate::session::SessionError;
use crate::session::admission::{Admission, Step};
use crate::session::classes::BlockSource;
use crate::session::control::{self, ControlWriter, write_error};
use crate::transport::identity::Fingerprint;
use crate::transport::{Congestion, DATAGRAM_SEND_BUFFER, Tuning};
use crate::wire::{Frame, PROTOCOL_VERSION, SHARD_HEADER_LEN, close_code};
use crate::work::PreparedBlock;

/// How long the transfer survives with no path up at all.
pub const ALL_DOWN_LIMIT: Duration = Duration::from_secs(30);
/// How long dialling one path may take.
const DIAL_LIMIT: Duration = Duration::from_secs(5);
/// Blocks the FEC plane admits before the receiver's READY: enough for its
/// first round trip at the starting rate, no more, because a receiver
/// resuming a file answers HAVE (what it already holds) only after it has
/// re-hashed it, and every block admitted before that is sent whole
/// (measured: 32 MiB sent again of a 1 GiB file resumed at half way, with
/// the 32 blocks a session may have in flight admitted at once).
const BLOCKS_BEFORE_READY: usize = 2;

type Frames = mpsc::Receiver<Result<Option<Frame>, SessionError>>;
type Merged = crate::session::control::TaggedFrame;

/// What the driver reports as it goes.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The receiver sent READY (shards were already on their way).
    Admitted,
    /// A block was acknowledged (with the repair shards it took).
    Acked {
        bytes: u64,
        file: usize,
        rtt: Duration,
        repair_shards: u64,
    },
    /// The receiver already held a block (not sent).
    Resumed { bytes: u64, file: usize },
    /// A file was verified and renamed.
    FileDone { file: usize, name: String },
    /// The receiver took files `first..first + count` of a session held
    /// open, in `class`.
    FilesAdded {
        first: usize,
        count: usize,
        class: crate::multipath::priority::Class,
    },
    /// A path changed state.
    Path(PathChange),
    /// Every path's rate, RTT and loss, every 100 ms.
    Rates(Vec<PathRate>),
}

/// The first path, connected, HELLO and MANIFEST sent.
pub(crate) struct Primary<'a> {
    pub conn: Connection,
    pub control: ControlWriter,
    pub frames: Frames,
    pub endpoint: &'a Endpoint,
    pub admission: Admission,
    /// Frames for the core that arrived during admission (HAVE).
    pub early: Vec<Frame>,
}

/// Who the session is with.
pub(crate) struct Session<'a> {
    pub paths: &'a [PathSpec],
    pub session_id: [u8; 16],
    pub token: &'a str,
    pub peer: Fingerprint,
    pub tuning: &'a Tuning,
    pub max_rate: Option<u64>,
    pub started: Instant,
    /// Skip what the receiver holds (HAVE).
    pub resume: bool,
}

/// How blocks travel, with what the plane needs.
pub(crate) enum Carriage<'a> {
    /// FEC plane: shards of `shard_bytes` payload.
    Shards {
        shard_bytes: usize,
        fec: &'a FecConfig,
    },
    /// Reliable plane: one stream per block.
    Streams,
}

/// What the session's plane did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The session's files at the end (more than it started with if files
    /// were added).
    pub manifest: Manifest,
    /// The FEC plane's figures (`None` on the reliable plane).
    pub fec: Option<FecReport>,
    pub paths: Vec<PathReport>,
    pub hashes: Vec<Option<blake3::Hash>>,
    pub block_latency: Option<crate::metrics::LatencySummary>,
}

/// Dials `remote` on `endpoint` and joins session `session_id` (HELLO with
/// the session's id and token, answered by WELCOME).
pub(crate) async fn join(
    endpoint: Endpoint,
    remote: std::net::SocketAddr,
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
                Err(crate::session::sender::peer_error(code, message))
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

/// One block on its own stream: header, then the pooled buffer itself.
pub(crate) async fn send_block(
    conn: &Connection,
    block: PreparedBlock,
    priority: i32,
) -> Result<(), SessionError> {
    let mut stream = conn
        .open_uni()
        .await
        .map_err(SessionError::from_connection)?;
    let _ = stream.set_priority(priority);
    stream
        .write_all(&block.header.encode())
        .await
        .map_err(write_error)?;
    stream.write_chunk(block.data).await.map_err(write_error)?;
    stream
        .finish()
        .map_err(|e| SessionError::ConnectionLost(format!("finishing a block stream: {e}")))?;
    Ok(())
}

struct Link {
    conn: Connection,
    control: ControlWriter,
    window: WindowHandle,
}

/// The connections: the live one per path, and what closed ones sent.
struct Links {
    live: Vec<Option<Link>>,
    endpoints: Vec<Option<(Endpoint, WindowHandle)>>,
    wire_done: Vec<u64>,
    generation: Vec<u64>,
    merged: mpsc::Sender<Merged>,
    reports: mpsc::Sender<Report>,
}

/// A report datagram's frames (or why it did not decode), tagged like
/// [`Merged`].
type Report = (usize, u64, Result<Vec<Frame>, SessionError>);

/// Forwards the report datagrams of path `path`'s connection (see "Reports
/// as datagrams" in [`crate::wire`]) until it closes or one fails to decode.
fn forward_reports(path: usize, generation: u64, conn: Connection, out: mpsc::Sender<Report>) {
    tokio::spawn(async move {
        while let Ok(d) = conn.read_datagram().await {
            let frames = crate::wire::decode_report(&d)
                .map_err(|e| SessionError::Protocol(format!("a report datagram: {e}")));
            let bad = frames.is_err();
            if out.send((path, generation, frames)).await.is_err() || bad {
                return;
            }
        }
    });
}

impl Links {
    /// Starts forwarding path `i`'s control frames, tagged with a new
    /// generation so a closed connection's frames are not taken for its
    /// successor's.
    fn attach(&mut self, i: usize, link: Link, frames: Frames) {
        self.generation[i] += 1;
        crate::session::control::forward_tagged(i, self.generation[i], frames, self.merged.clone());
        forward_reports(
            i,
            self.generation[i],
            link.conn.clone(),
            self.reports.clone(),
        );
        self.live[i] = Some(link);
    }

    fn retire(&mut self, i: usize, why: &[u8]) {
        if let Some(l) = self.live[i].take() {
            self.wire_done[i] += l.conn.stats().udp_tx.bytes;
            l.conn.close(close_code::DONE.into(), why);
        }
        self.generation[i] += 1;
    }

    fn wire_bytes(&self, i: usize) -> u64 {
        self.wire_done[i]
            + self.live[i]
                .as_ref()
                .map_or(0, |l| l.conn.stats().udp_tx.bytes)
    }
}

/// Whether a path's failure ends the session: the receiver closed the
/// connection on purpose, with an error.
fn receiver_ended(conn: &Connection) -> Option<SessionError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() as u32 != close_code::DONE =>
        {
            Some(SessionError::from_connection(
                quinn::ConnectionError::ApplicationClosed(c),
            ))
        }
        _ => None,
    }
}

/// The datagram carrying `shard` of `block`; a recovery shard encodes the
/// block's recovery shards if none was sent before (`work`'s module doc).
fn datagram(
    block: &mut PreparedBlock,
    shard: &ShardRef,
    corrupt: bool,
) -> Result<Bytes, SessionError> {
    let g = block.geometry.expect("FEC blocks carry their geometry");
    let recovery = if usize::from(shard.index) >= g.k {
        block.recovery()?.unwrap_or_default()
    } else {
        Bytes::new()
    };
    let mut d = shard.datagram(&g, &block.data, &recovery);
    if corrupt {
        let last = d.len() - 1;
        d[last] ^= 0x5a;
    }
    Ok(d.freeze())
}

/// The share of a path's shards lost on the way, as the receiver counted
/// them: of those sent a round trip before its latest report, the counts
/// its controller reads too. (Every shard sent against what was delivered
/// took the shards in flight for lost: a round trip's worth, which on a
/// long path early in a transfer is most of what was sent.) `None` on the
/// reliable plane or before a report.
fn shard_loss(f: &PathFigures) -> Option<f64> {
    let (out, counted) = f.counted;
    (out > 0).then(|| (1.0 - counted as f64 / out as f64).clamp(0.0, 1.0))
}

fn rate_of(figures: &PathFigures, before: u64, secs: f64) -> f64 {
    figures.delivered.saturating_sub(before) as f64 * 8.0 / secs.max(1e-3)
}

/// Runs the session's plane over every path until each file is done.
pub(crate) async fn run(
    primary: Primary<'_>,
    session: Session<'_>,
    pipeline: &mut BlockSource,
    manifest: &Manifest,
    carriage: Carriage<'_>,
    mut more: Option<MoreFiles>,
    mut on_progress: impl FnMut(Progress),
) -> Result<Outcome, SessionError> {
    let specs = session.paths;
    let n = specs.len();
    let tuning = session.tuning;
    let paced = tuning.congestion == Congestion::Rate;
    let mut cfg = CoreConfig::default();
    cfg.max_rate(session.max_rate.map(|r| r as f64))
        .path_caps(specs.iter().map(|p| p.cap.map(|c| c as f64)).collect())
        .block_size(manifest.block_size())
        .resume(session.resume)
        // With one path there is nothing to fail over to: quinn's idle
        // timeout decides when the receiver is gone, as it always did.
        .dead_after(if n == 1 {
            tuning.idle_timeout * 2
        } else {
            (tuning.keep_alive * 3).max(Duration::from_millis(1500))
        });
    let (shard_bytes, fec) = match carriage {
        Carriage::Shards { shard_bytes, fec } => {
            // A block holds its pooled buffer until acknowledged. With
            // priority classes each class has its own pool: more blocks in
            // flight than one pool holds would let the classes' pools, not
            // the scheduler, decide the shares (measured: 38/33/29 instead
            // of 50/30/20 with 63 in flight over pools of 21).
            let max_blocks = fec.max_blocks.clamp(1, pipeline.buffers_per_class().max(1));
            cfg.redundancy(fec.redundancy)
                .report_timeout(fec.report_timeout)
                .max_blocks(max_blocks)
                .shard_bytes(shard_bytes)
                .paced(paced);
            (shard_bytes, Some(fec))
        }
        Carriage::Streams => {
            cfg.plane(Plane::Streams)
                .max_blocks(pipeline.buffers)
                .prioritised(pipeline.prioritised() || more.is_some());
            (0, None)
        }
    };
    let streams = fec.is_none();
    let now = Instant::now();
    let mut core = SenderCore::new(manifest.clone(), pipeline.class_of_file.clone(), cfg, now);
    let (merged_tx, mut merged_rx) = mpsc::channel::<Merged>(256);
    let (reports_tx, mut reports_rx) = mpsc::channel::<Report>(256);
    let mut links = Links {
        reports: reports_tx,
        live: (0..n).map(|_| None).collect(),
        endpoints: vec![None; n],
        wire_done: vec![0; n],
        generation: vec![0; n],
        merged: merged_tx,
    };
    links.endpoints[0] = Some((primary.endpoint.clone(), tuning.rate_window.clone()));
    links.attach(
        0,
        Link {
            conn: primary.conn,
            control: primary.control,
            window: tuning.rate_window.clone(),
        },
        primary.frames,
    );
    core.path_up(0, now);
    if more.is_some() {
        core.keep_open(true);
    }
    for f in primary.early {
        core.handle_frame(0, f, now)?;
    }
    let mut admission = primary.admission;
    let change_why = |path: usize, state: PathState, reason: Option<String>| {
        Progress::Path(PathChange {
            path,
            name: specs[path].name(),
            state,
            at: session.started.elapsed().as_secs_f64(),
            reason,
        })
    };
    let change = |path: usize, state: PathState| change_why(path, state, None);
    on_progress(change(0, PathState::Up));

    type Dialed = (
        usize,
        Result<(Connection, ControlWriter, Frames), SessionError>,
    );
    let mut dials: JoinSet<Dialed> = JoinSet::new();
    let dial =
        |dials: &mut JoinSet<Dialed>, links: &mut Links, i: usize| -> Result<(), SessionError> {
            let endpoint = match &links.endpoints[i] {
                Some((e, _)) => e.clone(),
                None => {
                    // Each path's connection gets its own window handle: its
                    // controller is the core's controller for that path.
                    let mut t = tuning.clone();
                    t.rate_window = WindowHandle::default();
                    // An interface that does not exist (yet) fails this
                    // path's dial, not the transfer: it is tried again with
                    // back-off.
                    let (e, _) = match specs[i].endpoint(session.peer, &t) {
                        Ok(e) => e,
                        Err(e) => {
                            dials.spawn(async move { (i, Err(e)) });
                            return Ok(());
                        }
                    };
                    links.endpoints[i] = Some((e.clone(), t.rate_window));
                    e
                }
            };
            let (remote, token, id) = (
                specs[i].remote,
                session.token.as_bytes().to_vec(),
                session.session_id,
            );
            let span = tracing::info_span!("path", index = i, name = %specs[i].name());
            dials.spawn(tracing::Instrument::instrument(
                async move { (i, join(endpoint, remote, id, token, DIAL_LIMIT).await) },
                span,
            ));
            Ok(())
        };
    // The reliable plane comes admitted: the other paths join at once.
    if admission.admitted() {
        for j in 1..n {
            on_progress(change(j, PathState::Connecting));
            dial(&mut dials, &mut links, j)?;
        }
    }

    let mut blocks: HashMap<(u32, u64), PreparedBlock> = HashMap::new();
    type Written = (usize, (u32, u64), Result<(), SessionError>);
    let mut writers: JoinSet<Written> = JoinSet::new();
    let mut latency = crate::metrics::BlockLatency::default();
    let mut control_path = 0usize;
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rates = Instant::now();
    let mut rate_marks = vec![0u64; n];
    let mut sent_marks = vec![0u64; n];
    let mut all_down_since: Option<Instant> = None;
    let mut shards_sent = 0u64;
    let shard_len = SHARD_HEADER_LEN + shard_bytes;

    while !core.is_done() || more.as_ref().is_some_and(|m| m.open) {
        // Shards leave on the pacing tick; blocks whenever a path has room.
        let mut transmit = streams;
        tokio::select! {
            batch = async { more.as_mut().expect("checked").batches.recv().await }, if more.as_ref().is_some_and(|m| m.open) => {
                let m = more.as_mut().expect("checked");
                match batch {
                    Some(batch) => m.take(&mut core, batch),
                    None => {
                        m.open = false;
                        core.keep_open(false);
                    }
                }
            }
            block = pipeline.next(), if core.wants_block() && (admission.admitted() || blocks.len() < BLOCKS_BEFORE_READY) => {
                let block = block?;
                let g = block.geometry;
                tracing::trace!(file = block.header.file, block = block.header.block, "admitted");
                core.admit_block(Instant::now(), &block.header, g);
                blocks.insert((block.header.file, block.header.block), block);
            }
            Some((i, generation, item)) = merged_rx.recv() => {
                if generation != links.generation[i] {
                    continue;
                }
                let now = Instant::now();
                match item {
                    Ok(Some(frame)) if i == 0 && !admission.admitted() => {
                        match admission.on_frame(frame)? {
                            Step::Waiting => {}
                            Step::Pass(f) => core.handle_frame(0, f, now)?,
                            Step::Admitted => {
                                core.admitted(now);
                                on_progress(Progress::Admitted);
                                for j in 1..n {
                                    on_progress(change(j, PathState::Connecting));
                                    dial(&mut dials, &mut links, j)?;
                                }
                            }
                        }
                    }
                    Ok(Some(frame)) => core.handle_frame(i, frame, now)?,
                    Ok(None) | Err(_) => {
                        let conn = links.live[i].as_ref().map(|l| l.conn.clone());
                        if let Some(e) = conn.as_ref().and_then(receiver_ended) {
                            return Err(e);
                        }
                        if n == 1 || !admission.admitted() {
                            return Err(match (item, conn.and_then(|c| c.close_reason())) {
                                (_, Some(r)) => SessionError::from_connection(r),
                                (Err(e), None) => e,
                                _ => SessionError::Protocol("the receiver closed the control stream".into()),
                            });
                        }
                        core.path_failed(i, now);
                    }
                }
            }
            Some((i, generation, frames)) = reports_rx.recv() => {
                // Reports before READY are dropped: the stream's READY (or
                // ERROR) decides admission, and the next report says the same.
                if generation == links.generation[i] && admission.admitted() {
                    let now = Instant::now();
                    for frame in frames? {
                        core.handle_frame(i, frame, now)?;
                    }
                }
            }
            Some(joined) = writers.join_next(), if !writers.is_empty() => {
                let (i, (file, block), result) = joined
                    .map_err(|e| SessionError::ConnectionLost(format!("block writer failed: {e}")))?;
                if let Err(e) = &result {
                    if let Some(e) = links.live[i].as_ref().and_then(|l| receiver_ended(&l.conn)) {
                        return Err(e);
                    }
                    if n == 1 {
                        return Err(result.unwrap_err());
                    }
                    tracing::debug!(path = i, error = %e, "block write failed");
                }
                core.stream_finished(i, file, block, result.is_ok(), Instant::now());
            }
            Some(dialed) = dials.join_next(), if !dials.is_empty() => {
                let (i, result) = dialed.map_err(|e| SessionError::ConnectionLost(format!("dialling failed: {e}")))?;
                let now = Instant::now();
                match result {
                    Ok((conn, control, frames)) => {
                        let window = links.endpoints[i].as_ref().map(|e| e.1.clone()).unwrap_or_default();
                        links.attach(i, Link { conn, control, window }, frames);
                        core.path_up(i, now);
                        on_progress(change(i, PathState::Up));
                    }
                    Err(e) => {
                        tracing::debug!(path = i, error = %e, "dialling a path failed");
                        if matches!(e, SessionError::Refused(_)) {
                            return Err(e);
                        }
                        core.redial_failed(i, now);
                        on_progress(change_why(i, PathState::Down, Some(e.to_string())));
                    }
                }
            }
            // A receiver that never answers HELLO (see `admission`).
            _ = tokio::time::sleep_until(admission.deadline().into()), if !admission.admitted() => {
                admission.check_deadline(Instant::now())?;
            }
            _ = pace.tick() => {
                let now = Instant::now();
                for (i, link) in links.live.iter().enumerate() {
                    if let Some(l) = link {
                        let stats = l.conn.stats();
                        core.handle_path_stats(i, now, &PathStats {
                            srtt: l.conn.rtt(),
                            cwnd: stats.path.cwnd,
                            rx_bytes: stats.udp_rx.bytes,
                            sent_packets: stats.path.sent_packets,
                            lost_packets: stats.path.lost_packets,
                            datagrams_buffered: (DATAGRAM_SEND_BUFFER as u64)
                                .saturating_sub(l.conn.datagram_send_buffer_space() as u64),
                        });
                    }
                }
                core.tick(now);
                if !streams {
                    for (i, link) in links.live.iter().enumerate() {
                        if let Some(l) = link {
                            l.window.set(core.window(i));
                        }
                    }
                    pipeline.ahead.set(core.plans_upfront_recovery());
                    pipeline.ahead.set_share(core.recovery_share());
                }
                transmit = true;
                if now.duration_since(last_rates) >= Duration::from_millis(100) {
                    let secs = now.duration_since(last_rates).as_secs_f64();
                    last_rates = now;
                    let rates = (0..n)
                        .map(|i| {
                            let f = core.path_figures(i);
                            // Shards are counted as they arrive; blocks
                            // arrive whole, so their paths' rates are the
                            // manager's smoothed delivery rates.
                            let r = if streams { f.rate * 8.0 } else { rate_of(&f, rate_marks[i], secs) };
                            rate_marks[i] = f.delivered;
                            // What left against what the pacer allowed: a
                            // sender that falls behind its pace (late
                            // wake-ups) shows here first (`fec::shard_pacer`).
                            let sent = f.shards_sent.saturating_sub(sent_marks[i]);
                            sent_marks[i] = f.shards_sent;
                            tracing::debug!(
                                path = i,
                                sent_mbit = (sent * shard_bytes as u64 * 8) as f64 / secs / 1e6,
                                paced_mbit = f.rate * 8.0 / 1e6,
                                blocks_held = blocks.len(),
                                "sent against pace"
                            );
                            PathRate {
                                name: specs[i].name(),
                                rate_bps: r,
                                state: f.state,
                                rtt_ms: f.srtt.as_secs_f64() * 1e3,
                                loss: shard_loss(&f),
                            }
                        })
                        .collect();
                    on_progress(Progress::Rates(rates));
                }
            }
        }
        let now = Instant::now();
        if transmit {
            // Without our pacing (quinn's Cubic or BBR), at most this many
            // shards per wake-up; quinn's buffer bounds them too.
            let mut budget = if paced || streams {
                usize::MAX
            } else {
                256 * n
            };
            let room = |i: usize| {
                links.live[i]
                    .as_ref()
                    .is_some_and(|l| streams || l.conn.datagram_send_buffer_space() >= shard_len)
            };
            while budget > 0 {
                match core.poll_transmit(now, room) {
                    None => break,
                    Some(Transmit::Block(b)) => {
                        let (Some(block), Some(link)) =
                            (blocks.get(&(b.file, b.block)), &links.live[b.path])
                        else {
                            core.stream_finished(b.path, b.file, b.block, false, now);
                            continue;
                        };
                        let (block, conn, id) =
                            (block.clone(), link.conn.clone(), (b.file, b.block));
                        writers.spawn(async move {
                            (b.path, id, send_block(&conn, block, b.priority).await)
                        });
                    }
                    Some(Transmit::Shard { path: i, shard }) => {
                        let (Some(block), Some(link)) =
                            (blocks.get_mut(&(shard.file, shard.block)), &links.live[i])
                        else {
                            continue;
                        };
                        shards_sent += 1;
                        let corrupt = fec
                            .and_then(|f| f.corrupt_every)
                            .is_some_and(|k| shards_sent % k.max(1) == 0);
                        let d = datagram(block, &shard, corrupt)?;
                        match link.conn.send_datagram(d) {
                            Ok(()) => core.on_sent(i, &shard, now),
                            Err(e) => {
                                core.unsent(shard);
                                if let Some(e) = receiver_ended(&link.conn) {
                                    return Err(e);
                                }
                                if n == 1 {
                                    return Err(match link.conn.close_reason() {
                                        Some(r) => SessionError::from_connection(r),
                                        None => SessionError::ConnectionLost(format!(
                                            "sending a shard: {e}"
                                        )),
                                    });
                                }
                                tracing::debug!(path = i, error = %e, "sending a shard failed");
                                core.path_failed(i, now);
                                break;
                            }
                        }
                    }
                }
                budget -= 1;
            }
        }
        // What the core decided.
        while let Some(event) = core.poll_event() {
            match event {
                CoreEvent::BlockAcked {
                    file,
                    block,
                    bytes,
                    latency: l,
                    repair_shards,
                    ..
                } => {
                    blocks.remove(&(file, block));
                    latency.record(l);
                    let rtt = links.live[control_path]
                        .as_ref()
                        .map_or(Duration::ZERO, |l| l.conn.rtt());
                    on_progress(Progress::Acked {
                        bytes,
                        file: file as usize,
                        rtt,
                        repair_shards,
                    });
                }
                CoreEvent::BlockResumed { file, block, bytes } => {
                    blocks.remove(&(file, block));
                    on_progress(Progress::Resumed {
                        bytes,
                        file: file as usize,
                    });
                }
                CoreEvent::FileDone { file } => on_progress(Progress::FileDone {
                    file: file as usize,
                    name: core.manifest().files()[file as usize].name.clone(),
                }),
                CoreEvent::FilesAdded { first, count } => {
                    if let Some(m) = more.as_mut() {
                        let class = m.start(&core, pipeline, first, count)?;
                        on_progress(Progress::FilesAdded {
                            first: first as usize,
                            count: count as usize,
                            class,
                        });
                    }
                }
                CoreEvent::Silent { after, .. } if n == 1 => {
                    return Err(SessionError::ConnectionLost(format!(
                        "the receiver stopped reporting: no FEC_STATUS for {} s",
                        after.as_secs()
                    )));
                }
                CoreEvent::Silent { path, .. } => {
                    tracing::warn!(
                        path,
                        "the receiver stopped reporting on this path; re-dialling it"
                    );
                }
                CoreEvent::PathDied { path } => {
                    links.retire(path, b"path failed");
                    on_progress(change(path, PathState::Down));
                }
                CoreEvent::Redial { path } => {
                    on_progress(change(path, PathState::Connecting));
                    dial(&mut dials, &mut links, path)?;
                }
            }
        }
        // Control frames, on the control path while it lives.
        while core.has_control() {
            if links.live[control_path].is_none() {
                let Some(next) = (0..n).find(|&i| links.live[i].is_some()) else {
                    break;
                };
                tracing::debug!(from = control_path, to = next, "control path moves");
                control_path = next;
                core.control_path_lost();
            }
            let Some(frame) = core.poll_control() else {
                break;
            };
            let link = links.live[control_path].as_mut().expect("checked above");
            if let Err(e) = link.control.send(&frame).await {
                if let Some(e) = receiver_ended(&link.conn) {
                    return Err(e);
                }
                if n == 1 {
                    return Err(e);
                }
                core.path_failed(control_path, now);
                links.retire(control_path, b"path failed");
                on_progress(change(control_path, PathState::Down));
            }
        }
        if links.live.iter().all(Option::is_none) {
            let since = *all_down_since.get_or_insert(now);
            if now.duration_since(since) > ALL_DOWN_LIMIT {
                return Err(SessionError::ConnectionLost(format!(
                    "no path has been up for {} s",
                    ALL_DOWN_LIMIT.as_secs()
                )));
            }
        } else {
            all_down_since = None;
        }
    }

    let figures: Vec<PathFigures> = (0..n).map(|i| core.path_figures(i)).collect();
    let report = fec.map(|fec| {
        let (sources, upfront, repairs, exhausted) = core.planned();
        FecReport {
            redundancy: fec.redundancy.to_string(),
            congestion: match tuning.congestion {
                Congestion::Rate => "rate",
                Congestion::Cubic => "cubic",
                Congestion::Bbr => "bbr",
            }
            .into(),
            shard_bytes,
            shards_sent: core.shards_sent,
            source_shards: sources,
            upfront_recovery: upfront,
            repair_shards: repairs,
            spare_shards: core.spare_planned(),
            exhausted,
            retried_blocks: core.retried_blocks,
            random_loss: core.planned_loss(),
            final_rate_bps: if paced {
                figures
                    .iter()
                    .filter(|f| f.state == PathState::Up)
                    .map(|f| f.rate * 8.0)
                    .sum()
            } else {
                0.0
            },
            block_latency: None,
        }
    });
    let paths = (0..n)
        .map(|i| {
            let f = &figures[i];
            PathReport {
                name: specs[i].name(),
                bytes: f.delivered,
                wire_bytes: links.wire_bytes(i),
                rtt_ms: f.srtt.as_secs_f64() * 1e3,
                state: f.state,
                loss: shard_loss(f),
            }
        })
        .collect();
    let hashes = (0..core.manifest().files().len())
        .map(|f| core.file_hash(f))
        .collect();
    for i in 0..n {
        if let Some(l) = &links.live[i] {
            l.conn.close(close_code::DONE.into(), b"done");
        }
    }
    // One grace for all the joined paths' endpoints, not one each.
    let _ = tokio::time::timeout(crate::session::sender::CLOSE_GRACE, async {
        for (e, _) in links.endpoints.iter().flatten().skip(1) {
            e.wait_idle().await;
        }
    })
    .await;
    Ok(Outcome {
        manifest: core.manifest().clone(),
        fec: report,
        paths,
        hashes,
        block_latency: latency.summary(),
    })
}
