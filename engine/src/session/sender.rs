//! The sending side of a session: dialling, the handshake, and the choice of
//! plane.
//!
//! [`send_files`] dials the receiver on the first path, proves itself
//! (pinned fingerprint, token), announces the manifest, then hands the
//! session to the sender's core and its driver ([`crate::send`]), for
//! either plane over every path, fed by the reader and Rayon hashing stage
//! ([`crate::work::start_pipeline`]). The whole-file hash follows on the
//! control stream once every block of a file has been hashed.
//! Progress counts bytes the receiver acknowledged (BLOCK_ACK), not bytes
//! handed to the socket. The session succeeds when the receiver reported
//! FILE_DONE for every file.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};

use super::admission::{Admission, Step};
pub use super::block_memory::memory_for_rtt;
use super::block_memory::{block_source, class_budget};
use super::closing::{close, let_closes_leave};
use super::control;
use super::dial;
use super::error::SessionError;
use super::send_report::{Acks, finish_report};
pub use super::send_report::{SendEvent, SendReport, SentFile};
use crate::manifest::{Manifest, SourceFile};
use crate::multipath::priority::Class;
use crate::multipath::spec::{PathList, PathSpec};
use crate::send::FecConfig;
use crate::send::driver::{Carriage, Progress};
use crate::send::more_files::MoreFiles;
use crate::source::ReaderKind;
use crate::transport::Tuning;
use crate::transport::identity::Fingerprint;
use crate::wire::{Frame, ManifestEntry, close_code};
use crate::work::Plane;

/// How to send. `Default` gives 1 MiB blocks, the automatic reader, no rate
/// cap and a 10 s connect timeout.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The paths to the receiver; the first opens the session. Checked by
    /// [`PathList::new`] before anything is sent.
    pub paths: Vec<PathSpec>,
    /// Pinned receiver fingerprint.
    pub peer: Fingerprint,
    /// Shared token.
    pub token: String,
    /// Block size (power of two, 1 KiB ..= 64 MiB).
    pub block_size: u64,
    /// Reader backend.
    pub reader: ReaderKind,
    /// Optional cap on the whole transfer (all paths), bytes per second.
    pub max_rate: Option<u64>,
    /// How long to wait for the receiver to answer.
    pub connect_timeout: Duration,
    /// How long to keep dialling a receiver that refuses the connection as
    /// busy (with jittered exponential back-off) before giving up.
    pub busy_timeout: Duration,
    /// Block memory in flight (bytes): block buffers, and on the FEC plane
    /// their recovery shards too. `None`: [`memory_for_rtt`] of the first
    /// handshake's round trip.
    pub memory_budget: Option<usize>,
    /// Transport knobs.
    pub tuning: Tuning,
    /// `Some`: use the FEC plane, over every path (falls back to the
    /// reliable plane, with a [`SendEvent::PlaneFallback`], if the receiver
    /// takes no datagrams).
    pub fec: Option<FecConfig>,
    /// Priority class of each source file, in order (empty: all Normal).
    /// Classes share the bandwidth 50/30/20, on either plane.
    pub classes: Vec<Class>,
    /// Skip the blocks the receiver already holds from an earlier attempt
    /// (default); `false` sends every block (`--no-resume`).
    pub resume: bool,
    /// What each path carried in an earlier transfer (by path; empty:
    /// nothing remembered): the FEC plane's startup begins from half of it
    /// ([`crate::fec::rate::PathMemory`]).
    pub path_memory: Vec<Option<crate::fec::rate::PathMemory>>,
}

impl SendConfig {
    /// Defaults for a given receiver.
    pub fn new(to: SocketAddr, peer: Fingerprint, token: impl Into<String>) -> Self {
        Self {
            paths: vec![PathSpec::to(to)],
            peer,
            token: token.into(),
            block_size: 1 << 20,
            reader: ReaderKind::Auto,
            max_rate: None,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(120),
            memory_budget: None,
            tuning: Tuning::default(),
            fec: None,
            classes: Vec::new(),
            resume: true,
            path_memory: Vec::new(),
        }
    }

    /// The receiver's address on the first path.
    pub fn to(&self) -> SocketAddr {
        self.paths
            .first()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |p| p.remote)
    }
}

/// Files to add to a session held open ([`send_files_open`]).
#[derive(Debug)]
pub struct FileBatch {
    /// The files, named as they will be at the receiver (no name already
    /// in the session).
    pub files: Vec<SourceFile>,
    /// Their priority class.
    pub class: Class,
    /// Answered with the batch's file indices in the session as soon as
    /// the session took it, or why it refused it (a name already in the
    /// session). Its blocks flow once the receiver took it too
    /// ([`SendEvent::FilesAdded`]).
    pub added: Option<tokio::sync::oneshot::Sender<Result<std::ops::Range<usize>, String>>>,
}

/// Sends `sources` to the receiver in `cfg`, reporting progress to `on_event`.
pub async fn send_files(
    sources: Vec<SourceFile>,
    cfg: &SendConfig,
    on_event: impl FnMut(&SendEvent),
) -> Result<SendReport, SessionError> {
    send(sources, cfg, None, on_event).await
}

/// Like [`send_files`], but the session stays open for more files: each
/// [`FileBatch`] from `batches` joins it while it runs, and the priority
/// scheduler shares the bandwidth between all of them by class (the
/// agent's jobs to one receiver). The session ends once `batches` is
/// closed (every sender dropped) and every file is done. Events name files
/// by their index in the session. A receiver older than protocol version 4
/// refuses at HELLO.
pub async fn send_files_open(
    sources: Vec<SourceFile>,
    cfg: &SendConfig,
    batches: tokio::sync::mpsc::UnboundedReceiver<FileBatch>,
    on_event: impl FnMut(&SendEvent),
) -> Result<SendReport, SessionError> {
    send(sources, cfg, Some(batches), on_event).await
}

async fn send(
    sources: Vec<SourceFile>,
    cfg: &SendConfig,
    batches: Option<tokio::sync::mpsc::UnboundedReceiver<FileBatch>>,
    mut on_event: impl FnMut(&SendEvent),
) -> Result<SendReport, SessionError> {
    let started = Instant::now();
    // No warm-up of the coder here: its tables (built on first use, 12-19
    // ms of a core) are built by the first block's recovery shards' own
    // encoding, which nothing waits for (`work`'s module doc); warming
    // them up as well cost a 10 kB transfer over loopback 4 ms of its
    // 21.5 (results/README.md, "Small files on the FEC plane").
    let entries: Vec<ManifestEntry> = sources
        .iter()
        .map(|s| ManifestEntry {
            name: s.name.clone(),
            size: s.size,
        })
        .collect();
    let manifest = Manifest::new(cfg.block_size, entries)?;
    if cfg.max_rate == Some(0) {
        return Err(SessionError::Usage("--max-rate must be above zero".into()));
    }
    let (paths, warnings) =
        PathList::new(cfg.paths.clone(), cfg.max_rate).map_err(SessionError::Usage)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let mut tuning = cfg.tuning.clone();
    if let Some(fec) = &cfg.fec {
        use crate::transport::{MAX_PINNED_MTU, path_mtu::MtuChoice};
        if let MtuChoice::Pinned(m) = fec.mtu
            && !(1200..=MAX_PINNED_MTU).contains(&m)
        {
            // quinn-proto panics on a first packet above 16 KiB.
            return Err(SessionError::Usage(format!(
                "the pinned MTU must be 1200 to {MAX_PINNED_MTU} bytes, not {m}"
            )));
        }
        // One shard size for the whole session, from the routes' MTU.
        let routes: Vec<Option<u16>> = paths.paths().iter().map(PathSpec::route_payload).collect();
        tuning.pinned_mtu = crate::transport::path_mtu::session_mtu(fec.mtu, &routes);
    }
    if paths.paths().len() > 1 {
        // Notice a dead path within a few keep-alives.
        tuning.keep_alive = tuning.keep_alive.min(Duration::from_millis(500));
    }
    let dial::Dialled {
        endpoint,
        conn,
        fell_back,
    } = dial::dial_until_admitted(&paths.paths()[0], cfg, &mut tuning, &mut on_event).await?;
    if let Some((tried, using)) = fell_back {
        on_event(&SendEvent::MtuFallback { tried, using });
    }
    let session_id: [u8; 16] = rand::random();
    let span = tracing::info_span!("send", session = %super::short_id(&session_id), to = %cfg.to());
    let result = tracing::Instrument::instrument(
        run(
            &endpoint,
            &conn,
            &paths,
            session_id,
            sources,
            manifest,
            cfg,
            &tuning,
            started,
            batches,
            &mut on_event,
        ),
        span,
    )
    .await;
    let closing = match &result {
        Ok(_) => close(&conn, close_code::DONE, b"done"),
        Err(e) => close(&conn, e.close_code(), e.to_string().as_bytes()),
    };
    let_closes_leave(&[closing]).await;
    result.map(|mut r| {
        r.wire_bytes = if r.paths.is_empty() {
            conn.stats().udp_tx.bytes
        } else {
            r.paths.iter().map(|p| p.wire_bytes).sum()
        };
        r
    })
}

/// Waits for the next control frame, mapping end-of-stream to an error.
async fn next_frame(
    frames: &mut tokio::sync::mpsc::Receiver<Result<Option<Frame>, SessionError>>,
    conn: &Connection,
) -> Result<Frame, SessionError> {
    match frames.recv().await {
        Some(Ok(Some(frame))) => Ok(frame),
        Some(Err(e)) => Err(e),
        Some(Ok(None)) | None => Err(match conn.close_reason() {
            Some(reason) => SessionError::from_connection(reason),
            None => SessionError::Protocol("the receiver closed the control stream".into()),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    endpoint: &Endpoint,
    conn: &Connection,
    paths: &PathList,
    session_id: [u8; 16],
    sources: Vec<SourceFile>,
    manifest: Manifest,
    cfg: &SendConfig,
    tuning: &Tuning,
    started: Instant,
    batches: Option<tokio::sync::mpsc::UnboundedReceiver<FileBatch>>,
    on_event: &mut impl FnMut(&SendEvent),
) -> Result<SendReport, SessionError> {
    let mut admission = Admission::new(cfg.to(), Instant::now(), cfg.connect_timeout);
    let (mut control, mut frames) =
        control::open_with_hello(conn, session_id, cfg.token.as_bytes().to_vec()).await?;
    // MANIFEST follows HELLO without waiting for WELCOME: one round trip
    // less before data (40 ms on the bench link). The receiver reads frames
    // in order and never looks at the manifest of a sender whose token it
    // refused; the receiver itself is already authenticated (its
    // certificate is pinned), so the file names go to no one else.
    control
        .send(&Frame::Manifest {
            block_size_log2: manifest.block_size_log2(),
            files: manifest.files().to_vec(),
        })
        .await?;
    let total_bytes = manifest.total_bytes();
    // The FEC plane needs datagrams; the receiver says in its transport
    // parameters whether it takes them.
    let plane = match (&cfg.fec, conn.max_datagram_size()) {
        (None, _) => Plane::Reliable,
        (Some(_), None) => {
            on_event(&SendEvent::PlaneFallback {
                reason: "the receiver does not accept QUIC datagrams".into(),
            });
            Plane::Reliable
        }
        (Some(_), Some(max)) => Plane::Fec {
            shard_bytes: (max.saturating_sub(crate::wire::SHARD_HEADER_LEN) & !1).max(2),
        },
    };
    // The reliable plane waits for the receiver's admission here; the FEC
    // plane starts sending and takes WELCOME and READY in its control loop
    // (see `admission`).
    let mut early = Vec::new();
    if !matches!(plane, Plane::Fec { .. }) {
        while !admission.admitted() {
            let deadline = admission.deadline().into();
            match tokio::time::timeout_at(deadline, next_frame(&mut frames, conn)).await {
                Ok(frame) => {
                    if let Step::Pass(f) = admission.on_frame(frame?)? {
                        early.push(f);
                    }
                }
                Err(_) => admission.check_deadline(Instant::now())?,
            }
        }
    }
    let memory = cfg
        .memory_budget
        .unwrap_or_else(|| memory_for_rtt(conn.rtt()));
    // A session held open splits its memory three ways from the start, as
    // if every class were present: a batch of another class may come.
    let open = batches.is_some();
    let more_sources = open.then(|| sources.clone());
    let mut pipeline = block_source(cfg, sources, &manifest, plane, memory, open)?;
    let started_event = SendEvent::Started {
        remote: cfg.to(),
        reader: pipeline.reader,
        total_bytes,
        files: manifest.files().len(),
    };
    if admission.admitted() {
        on_event(&started_event);
    }

    let mut acks = Acks::new(pipeline.class_of_file.clone());
    let carriage = match (plane, &cfg.fec) {
        (Plane::Fec { shard_bytes }, Some(fec)) => Carriage::Shards { shard_bytes, fec },
        _ => Carriage::Streams,
    };
    let more = batches
        .zip(more_sources)
        .map(|(batches, sources)| MoreFiles {
            batches,
            sources,
            reader: cfg.reader,
            plane,
            budget: class_budget(plane, memory, Class::ALL.len()),
            classes: Default::default(),
            open: true,
        });
    let outcome = crate::send::driver::run(
        crate::send::driver::Primary {
            conn: conn.clone(),
            control,
            frames,
            endpoint,
            admission,
            early,
        },
        crate::send::driver::Session {
            paths: paths.paths(),
            session_id,
            token: &cfg.token,
            peer: cfg.peer,
            tuning,
            max_rate: cfg.max_rate,
            started,
            resume: cfg.resume,
            memory: &cfg.path_memory,
        },
        &mut pipeline,
        &manifest,
        carriage,
        more,
        |p| match p {
            Progress::Admitted => on_event(&started_event),
            Progress::Acked {
                bytes,
                file,
                rtt,
                repair_shards,
            } => on_event(&acks.record(file, bytes, rtt, false, repair_shards)),
            Progress::Resumed { bytes, file } => {
                on_event(&acks.record(file, bytes, Duration::ZERO, true, 0))
            }
            Progress::FileDone { file, name } => on_event(&SendEvent::FileDone { file, name }),
            Progress::FilesAdded {
                first,
                count,
                class,
            } => {
                acks.add_files(count, class);
                on_event(&SendEvent::FilesAdded { first, count });
            }
            Progress::Path(change) => on_event(&SendEvent::Path(change)),
            Progress::Rates(rates) => on_event(&SendEvent::PathRates(rates)),
        },
    )
    .await?;
    let mut report = finish_report(
        &outcome.manifest,
        &outcome.hashes,
        started,
        pipeline.reader,
        plane,
    );
    for (f, r) in report.files.iter_mut().zip(&acks.resumed_by_file) {
        f.resumed_bytes = *r;
    }
    report.block_latency = outcome.block_latency;
    report.fec = outcome.fec;
    report.paths = outcome.paths;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pinned_mtu_quinn_cannot_send_is_refused_before_dialling() {
        use crate::transport::path_mtu::MtuChoice;
        // Port 9 on loopback: nothing answers; the check comes first.
        let mut cfg = SendConfig::new(
            "127.0.0.1:9".parse().unwrap(),
            crate::transport::identity::Fingerprint([0; 32]),
            "t",
        );
        cfg.fec = Some(FecConfig {
            mtu: MtuChoice::Pinned(20_000),
            ..FecConfig::default()
        });
        let err = send_files(Vec::new(), &cfg, |_| {}).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("the pinned MTU must be 1200 to 16383 bytes, not 20000"),
            "{err}"
        );
    }
}
