//! What a send reports: progress events as it goes ([`SendEvent`]), and
//! the result of a successful transfer ([`SendReport`], with each file's
//! verified hash and the bytes the receiver already held).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::manifest::Manifest;
use crate::multipath::priority::Class;
use crate::send::FecReport;
use crate::source::ReaderKind;
use crate::work::Plane;

/// What happened, for progress displays.
#[derive(Debug, Clone)]
pub enum SendEvent {
    /// Connected and accepted; the transfer starts.
    Started {
        /// Receiver address.
        remote: SocketAddr,
        /// Reader backend really used.
        reader: ReaderKind,
        /// Bytes to send.
        total_bytes: u64,
        /// Files to send.
        files: usize,
    },
    /// The receiver acknowledged more bytes (or already held them).
    Acked {
        /// Bytes acknowledged so far, those the receiver already held
        /// included.
        acked_bytes: u64,
        /// Of which, held by the receiver from an earlier attempt (resume).
        resumed_bytes: u64,
        /// Of which, per priority class (Critical, High, Normal).
        by_class: [u64; 3],
        /// Current smoothed RTT of the path.
        rtt: Duration,
        /// The file (index in the session) and bytes of this
        /// acknowledgement.
        file: usize,
        /// See `file`.
        bytes: u64,
        /// FEC plane: recovery shards this block took beyond the up-front
        /// ones (repairs of what was lost, and margin on spare capacity).
        repair_shards: u64,
    },
    /// The receiver verified and stored a file.
    FileDone {
        /// Its index in the session.
        file: usize,
        /// Its name at the receiver.
        name: String,
    },
    /// The receiver took files added to a session held open
    /// ([`crate::session::send_files_open`]): indices `first..first + count`.
    FilesAdded {
        /// First file of the batch.
        first: usize,
        /// How many.
        count: usize,
    },
    /// A path came up, went down, or is being re-dialled (multi-path).
    Path(crate::multipath::spec::PathChange),
    /// Every path's delivery rate, state, RTT and loss, every 100 ms.
    PathRates(Vec<crate::multipath::spec::PathRate>),
    /// The FEC plane was asked for but cannot be used; the reliable plane
    /// carries the transfer instead.
    PlaneFallback {
        /// Why.
        reason: String,
    },
    /// Datagrams of the size the route promised did not cross the path (a
    /// black hole); the session pins the smaller size instead.
    MtuFallback {
        /// The UDP payload size that got no answer.
        tried: u16,
        /// The size the session uses.
        using: u16,
    },
    /// The receiver refused the connection as busy; the sender dials again
    /// after `retry_in`.
    Busy {
        /// Refusals so far.
        attempt: u32,
        /// The back-off before the next dial.
        retry_in: Duration,
    },
}

/// One file of a finished transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentFile {
    /// Name at the receiver.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// BLAKE3 (hex), verified by the receiver.
    pub blake3: String,
    /// Bytes the receiver already held from an earlier attempt and that
    /// were not sent again.
    pub resumed_bytes: u64,
}

/// The result of a successful transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendReport {
    /// Files, in manifest order.
    pub files: Vec<SentFile>,
    /// Total file bytes.
    pub bytes: u64,
    /// Wall time from dialling to the last FILE_DONE.
    pub seconds: f64,
    /// File bytes per second over that time, in bits.
    pub goodput_bps: f64,
    /// Reader backend used.
    pub reader: ReaderKind,
    /// Data plane used.
    pub plane: Plane,
    /// Bytes quinn put on the wire (UDP payload), all packets.
    pub wire_bytes: u64,
    /// Time from handing each block to QUIC to the receiver's BLOCK_ACK.
    pub block_latency: Option<crate::metrics::LatencySummary>,
    /// What the FEC plane did (FEC plane only).
    pub fec: Option<FecReport>,
    /// Per path: bytes, wire bytes, RTT, final state, loss, and what it
    /// carried (for the next send's warm start).
    pub paths: Vec<crate::multipath::spec::PathReport>,
}

/// Acknowledged bytes, in all and per priority class, as progress events.
pub(crate) struct Acks {
    bytes: u64,
    resumed: u64,
    pub(crate) resumed_by_file: Vec<u64>,
    by_class: [u64; 3],
    class_of_file: Vec<Class>,
}

impl Acks {
    pub(crate) fn new(class_of_file: Vec<Class>) -> Self {
        Self {
            bytes: 0,
            resumed: 0,
            resumed_by_file: vec![0; class_of_file.len()],
            by_class: [0; 3],
            class_of_file,
        }
    }

    /// Counts `bytes` of `file` as acknowledged (`resumed`: held by the
    /// receiver already); the event to report.
    pub(crate) fn record(
        &mut self,
        file: usize,
        bytes: u64,
        rtt: Duration,
        resumed: bool,
        repair_shards: u64,
    ) -> SendEvent {
        self.bytes += bytes;
        if resumed {
            self.resumed += bytes;
            if let Some(r) = self.resumed_by_file.get_mut(file) {
                *r += bytes;
            }
        }
        let class = self
            .class_of_file
            .get(file)
            .copied()
            .unwrap_or(Class::Normal);
        self.by_class[class as usize] += bytes;
        SendEvent::Acked {
            acked_bytes: self.bytes,
            resumed_bytes: self.resumed,
            by_class: self.by_class,
            rtt,
            file,
            bytes,
            repair_shards,
        }
    }

    /// `count` more files in `class` (a session held open).
    pub(crate) fn add_files(&mut self, count: usize, class: Class) {
        self.resumed_by_file.extend(std::iter::repeat_n(0, count));
        self.class_of_file.extend(std::iter::repeat_n(class, count));
    }
}

pub(crate) fn finish_report(
    manifest: &Manifest,
    hashes: &[Option<blake3::Hash>],
    started: Instant,
    reader: ReaderKind,
    plane: Plane,
) -> SendReport {
    let seconds = started.elapsed().as_secs_f64();
    let total_bytes = manifest.total_bytes();
    let files = manifest
        .files()
        .iter()
        .zip(hashes)
        .map(|(e, h)| SentFile {
            name: e.name.clone(),
            bytes: e.size,
            blake3: h.expect("every file done").to_hex().to_string(),
            resumed_bytes: 0,
        })
        .collect();
    SendReport {
        files,
        bytes: total_bytes,
        seconds,
        goodput_bps: total_bytes as f64 * 8.0 / seconds.max(1e-9),
        reader,
        plane,
        wire_bytes: 0,
        block_latency: None,
        fec: None,
        paths: Vec::new(),
    }
}
