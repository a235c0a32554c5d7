//! The sender's async driver, for both planes: one loop around
//! [`SenderCore`] that owns the QUIC connections (one per path), the dialer
//! and the reader.
//!
//! The first path arrives connected, HELLO and MANIFEST sent (see
//! [`crate::session::sender`]). On the FEC plane shards start at once, and
//! the receiver's WELCOME and READY are checked by [`Admission`] as they
//! come; the reliable plane arrives admitted. Once admitted, every other
//! path is dialled and joins the session ([`Dialer`]); each one that comes up
//! is handed to the core. Every millisecond the loop feeds each path's
//! quinn statistics to the core, runs its timers, and does what it hands
//! out ([`Outbox`]): a shard is sent as a QUIC datagram, only while quinn
//! has room for it in that connection's buffer, so one full path never
//! holds up the others; a block gets a stream of its own, written by a
//! task, whose end the core hears of. Control frames go on one path, the
//! *control path*; when it fails, another takes over and the core queues
//! again what the receiver may have missed.
//!
//! A path that fails or falls silent is closed and re-dialled with
//! back-off; the transfer goes on while one path lives, and fails when none
//! has been up for [`ALL_DOWN_LIMIT`]. A receiver that ends the session
//! (ERROR frame, or a connection closed with an error code) ends it here
//! too, with its reason. With one path, any failure of that path is the
//! end, as before.

use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

use super::core::{CoreConfig, CoreEvent, Plane, SenderCore};
use super::dialer::Dialer;
use super::figures::{RateMeter, fec_report, path_reports};
use super::links::{Frames, Link, Links, Merged, Report, receiver_ended};
use super::more_files::MoreFiles;
use super::outbox::Outbox;
use super::{FecConfig, FecReport};
use crate::manifest::Manifest;
use crate::multipath::manager::PathState;
use crate::multipath::spec::{PathChange, PathRate, PathReport, PathSpec};
use crate::session::SessionError;
use crate::session::admission::{Admission, Step};
use crate::session::classes::BlockSource;
use crate::session::control::ControlWriter;
use crate::transport::identity::Fingerprint;
use crate::transport::{Congestion, Tuning};
use crate::wire::{Frame, close_code};

/// How long the transfer survives with no path up at all.
pub const ALL_DOWN_LIMIT: Duration = Duration::from_secs(30);
/// Blocks the FEC plane admits before the receiver's READY: enough for its
/// first round trip at the starting rate, no more, because a receiver
/// resuming a file answers HAVE (what it already holds) only after it has
/// re-hashed it, and every block admitted before that is sent whole
/// (measured: 32 MiB sent again of a 1 GiB file resumed at half way, with
/// the 32 blocks a session may have in flight admitted at once).
const BLOCKS_BEFORE_READY: usize = 2;

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
    /// What each path carried in an earlier transfer, by path (shorter
    /// than `paths`, or empty, where nothing is remembered).
    pub memory: &'a [Option<crate::fec::rate::PathMemory>],
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
            // priority classes each class has its own pool: more block
            // bytes in flight than one pool holds would let the classes'
            // pools, not the scheduler, decide the shares (measured:
            // 38/33/29 instead of 50/30/20 with 63 blocks in flight over
            // pools of 21). Bytes, not blocks: a pool holds many more
            // short blocks than full ones (`source::pool`).
            let max_blocks = fec
                .max_blocks
                .clamp(1, usize::from(crate::session::fec_receive::FEC_MAX_BLOCKS));
            let pool_bytes = pipeline.buffers_per_class().max(1) as u64 * manifest.block_size();
            cfg.redundancy(fec.redundancy)
                .report_timeout(fec.report_timeout)
                .max_blocks(max_blocks)
                .max_block_bytes(Some(pool_bytes))
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
    for (i, m) in session.memory.iter().enumerate().take(n) {
        if let Some(m) = m {
            core.remember(i, *m);
        }
    }
    let (merged_tx, mut merged_rx) = mpsc::channel::<Merged>(256);
    let (reports_tx, mut reports_rx) = mpsc::channel::<Report>(256);
    let mut links = Links::new(n, merged_tx, reports_tx);
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

    let mut dialer = Dialer::new(
        specs,
        tuning,
        session.peer,
        session.token,
        session.session_id,
    );
    // The reliable plane comes admitted: the other paths join at once.
    if admission.admitted() {
        for j in 1..n {
            on_progress(change(j, PathState::Connecting));
            dialer.dial(&mut links, j);
        }
    }

    let mut outbox = Outbox::new(shard_bytes, fec.and_then(|f| f.corrupt_every));
    let mut latency = crate::metrics::BlockLatency::default();
    let mut control_path = 0usize;
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut meter = RateMeter::new(n, Instant::now());
    let mut all_down_since: Option<Instant> = None;

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
            block = pipeline.next(), if core.wants_block() && (admission.admitted() || outbox.len() < BLOCKS_BEFORE_READY) => {
                let block = block?;
                let g = block.geometry;
                tracing::trace!(file = block.header.file, block = block.header.block, "admitted");
                core.admit_block(Instant::now(), &block.header, g);
                outbox.hold(block);
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
                                    dialer.dial(&mut links, j);
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
            Some(joined) = outbox.next_written(), if outbox.writing() => {
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
            Some(dialed) = dialer.next(), if !dialer.is_empty() => {
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
                for (i, stats) in links.path_stats() {
                    core.handle_path_stats(i, now, &stats);
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
                if let Some(rates) = meter.poll(now, &core, specs, streams, shard_bytes, outbox.len()) {
                    on_progress(Progress::Rates(rates));
                }
            }
        }
        let now = Instant::now();
        if transmit {
            // Without our pacing (quinn's Cubic or BBR), at most this many
            // shards per wake-up; quinn's buffer bounds them too.
            let budget = if paced || streams {
                usize::MAX
            } else {
                256 * n
            };
            outbox.transmit(&mut core, &links, now, budget, streams)?;
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
                    outbox.remove(file, block);
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
                    outbox.remove(file, block);
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
                    dialer.dial(&mut links, path);
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

    let report = fec.map(|fec| fec_report(&core, fec, tuning.congestion, shard_bytes, paced));
    let paths = path_reports(&core, specs, |i| links.wire_bytes(i));
    let hashes = (0..core.manifest().files().len())
        .map(|f| core.file_hash(f))
        .collect();
    // One grace for all the paths, not one each.
    let closing: Vec<_> = links
        .live
        .iter()
        .flatten()
        .map(|l| crate::session::closing::close(&l.conn, close_code::DONE, b"done"))
        .collect();
    crate::session::closing::let_closes_leave(&closing).await;
    Ok(Outcome {
        manifest: core.manifest().clone(),
        fec: report,
        paths,
        hashes,
        block_latency: latency.summary(),
    })
}
