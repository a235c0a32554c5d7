//! The sender's FEC-plane driver: blocks become shards in QUIC datagrams,
//! paced by our rate controller, repaired on the receiver's reports.
//!
//! After READY the sender announces FEC_SETUP, then loops over four
//! sources of work:
//!
//! * **Prepared blocks** from the pipeline (hashed and encoded on Rayon),
//!   admitted while fewer than `max_blocks` are unacknowledged: BLOCK_DIGEST
//!   goes out on the control stream, the block's planned shards
//!   ([`SendAccounts::add`]) join the queue of new shards.
//! * **Control frames**: BLOCK_ACK frees a block (its pooled buffer goes
//!   back to the reader), FILE_DONE counts files, FEC_STATUS feeds the rate
//!   controller and yields repair shards ([`SendAccounts::on_status`]),
//!   BLOCK_RETRY restarts a block. Repairs jump the queue.
//! * **The pacer**, every millisecond: with `--cc rate` it sends as many
//!   shards as the controlled rate allows since last time ([`ShardPacer`]:
//!   bursts capped at 2 ms); with quinn's Cubic or BBR it leaves pacing to
//!   quinn. Either way `send_datagram_wait` provides back-pressure when
//!   quinn's buffer is full.
//! * **A 10 ms tick** reads quinn's path statistics (smoothed RTT, packets
//!   sent and lost) into the controller and puts its window into quinn
//!   ([`crate::fec::cc`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::Connection;

use super::SessionError;
use super::control::ControlWriter;
use crate::fec::accounts::{Redundancy, SendAccounts, ShardRef};
use crate::fec::rate::{RateConfig, RateController};
use crate::fec::report_clock::ReportClock;
use crate::fec::shard_pacer::ShardPacer;
use crate::manifest::Manifest;
use crate::transport::Congestion;
use crate::transport::Tuning;
use crate::wire::{Frame, ShardHeader};
use crate::work::PreparedBlock;

/// FEC-plane settings of a send.
#[derive(Debug, Clone)]
pub struct FecConfig {
    /// Up-front redundancy.
    pub redundancy: Redundancy,
    /// Most unacknowledged blocks.
    pub max_blocks: usize,
    /// Test hook: flip a byte in every n-th shard (fault tests only).
    pub corrupt_every: Option<u64>,
    /// UDP payload size to pin (`None`: leave quinn's MTU discovery on; the
    /// shard size is then fixed by the MTU at the session's start).
    pub mtu: Option<u16>,
}

impl Default for FecConfig {
    fn default() -> Self {
        Self {
            redundancy: Redundancy::Adaptive,
            max_blocks: 64,
            corrupt_every: None,
            mtu: Some(crate::transport::FEC_MTU),
        }
    }
}

/// What the FEC plane did, for reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FecReport {
    /// `--fec` as used.
    pub redundancy: String,
    /// Congestion control as used (`rate`, `cubic`, `bbr`).
    pub congestion: String,
    /// Payload bytes per shard.
    pub shard_bytes: usize,
    /// Datagrams sent.
    pub shards_sent: u64,
    /// Source shards planned.
    pub source_shards: u64,
    /// Recovery shards sent up front.
    pub upfront_recovery: u64,
    /// Recovery shards sent in answer to deficits.
    pub repair_shards: u64,
    /// Source shards re-sent after a block ran out of recovery shards.
    pub exhausted: u64,
    /// Blocks the receiver asked for again (digest failed).
    pub retried_blocks: u64,
    /// Random-loss level the controller measured.
    pub random_loss: f64,
    /// The controller's last pacing rate (bits/s; `rate` only).
    pub final_rate_bps: f64,
    /// Block latency, from admitting a block (digest sent, shards queued)
    /// to its BLOCK_ACK; reported with the reliable plane's, not here.
    #[serde(skip)]
    pub block_latency: Option<crate::metrics::LatencySummary>,
}

/// Progress the driver reports to the session.
pub(crate) enum Progress {
    /// The receiver sent READY (shards were already on their way).
    Admitted,
    Acked {
        bytes: u64,
        file: usize,
    },
    FileDone {
        file: usize,
    },
}

fn datagram(block: &PreparedBlock, shard: &ShardRef, shard_bytes: usize, corrupt: bool) -> Bytes {
    let (g, recovery) = block
        .recovery
        .as_ref()
        .expect("FEC blocks carry recovery shards");
    let mut d = BytesMut::with_capacity(crate::wire::SHARD_HEADER_LEN + shard_bytes);
    d.put_slice(
        &ShardHeader {
            file: shard.file,
            block: shard.block,
            index: shard.index,
            attempt: shard.attempt,
        }
        .encode(),
    );
    let i = usize::from(shard.index);
    if i < g.k {
        d.put_slice(&g.source_shard(&block.data, i));
    } else {
        let j = i - g.k;
        d.put_slice(&recovery[j * shard_bytes..(j + 1) * shard_bytes]);
    }
    if corrupt {
        let last = d.len() - 1;
        d[last] ^= 0x5a;
    }
    d.freeze()
}

/// Runs the FEC plane until every file is done. `frames` is the control
/// stream's reader; `on_progress` reports acknowledged bytes and files.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_fec(
    conn: &Connection,
    control: &mut ControlWriter,
    frames: &mut tokio::sync::mpsc::Receiver<Result<Option<Frame>, SessionError>>,
    pipeline: &mut super::classes::BlockSource,
    manifest: &Manifest,
    shard_bytes: usize,
    fec: &FecConfig,
    tuning: &Tuning,
    max_rate: Option<u64>,
    hashes: &mut super::file_hashes::FileHashes,
    mut admission: super::admission::Admission,
    mut on_progress: impl FnMut(Progress, &Connection),
) -> Result<FecReport, SessionError> {
    let file_count = manifest.files().len();
    let max_blocks = fec.max_blocks.clamp(1, pipeline.buffers.max(1));
    control
        .send(&Frame::FecSetup {
            shard_bytes: shard_bytes as u16,
            max_blocks: max_blocks as u16,
        })
        .await?;
    let paced = tuning.congestion == Congestion::Rate;
    let mut rate = RateController::new(RateConfig {
        max_rate: max_rate.map_or(RateConfig::default().max_rate, |r| r as f64),
        ..RateConfig::default()
    });
    let mut accounts = SendAccounts::new(fec.redundancy);
    let mut report_clock = ReportClock::new();
    // Unacknowledged blocks, each with when it was admitted (block latency).
    let mut blocks: HashMap<(u32, u64), (PreparedBlock, Instant)> = HashMap::new();
    let mut latency = crate::metrics::BlockLatency::default();
    let mut fresh: VecDeque<ShardRef> = VecDeque::new();
    let mut urgent: VecDeque<ShardRef> = VecDeque::new();
    let mut reader_done = hashes.all_read();
    let mut files_done = 0usize;
    let mut done = vec![false; file_count];
    let mut report = FecReport {
        redundancy: fec.redundancy.to_string(),
        congestion: match tuning.congestion {
            Congestion::Rate => "rate",
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
        }
        .into(),
        shard_bytes,
        ..FecReport::default()
    };
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pacer = ShardPacer::new(shard_bytes, Instant::now());
    let mut last_tick = Instant::now();

    while files_done < file_count {
        let admit = !reader_done && accounts.in_flight() < max_blocks && fresh.len() < 4 * 8192;
        tokio::select! {
            block = pipeline.next(), if admit => {
                let block = block?;
                let (file, index) = (block.header.file, block.header.block);
                let completed = hashes.record(&block.header, manifest);
                control.send(&Frame::BlockDigest { file, block: index, digest: block.header.digest }).await?;
                if let Some((file, hash)) = completed {
                    control.send(&Frame::FileHash { file, hash: *hash.as_bytes() }).await?;
                }
                reader_done = hashes.all_read();
                let g = block.recovery.as_ref().expect("FEC pipeline").0;
                fresh.extend(accounts.add(file, index, g));
                blocks.insert((file, index), (block, Instant::now()));
            }
            frame = frames.recv() => {
                let frame = match frame {
                    Some(Ok(Some(f))) => f,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) | None => return Err(match conn.close_reason() {
                        Some(r) => SessionError::from_connection(r),
                        None => SessionError::Protocol("the receiver closed the control stream".into()),
                    }),
                };
                match frame {
                    // WELCOME and READY arrive while the first shards are
                    // already going out (see `admission`).
                    f if !admission.admitted() => {
                        if admission.on_frame(f)? {
                            on_progress(Progress::Admitted, conn);
                        }
                    }
                    Frame::BlockAck { file, block } => {
                        if (file as usize) >= file_count || block >= manifest.block_count(file as usize) {
                            return Err(SessionError::Protocol(format!("BLOCK_ACK for unknown block {block} of file {file}")));
                        }
                        if accounts.on_acked(file, block) {
                            if let Some((_, admitted)) = blocks.remove(&(file, block)) {
                                latency.record(admitted.elapsed());
                            }
                            on_progress(Progress::Acked { bytes: u64::from(manifest.block_span(file as usize, block).1), file: file as usize }, conn);
                        }
                    }
                    Frame::FileDone { file } => {
                        let f = file as usize;
                        if f >= file_count || hashes.hashes[f].is_none() || std::mem::replace(&mut done[f], true) {
                            return Err(SessionError::Protocol(format!("unexpected FILE_DONE for file {file}")));
                        }
                        files_done += 1;
                        on_progress(Progress::FileDone { file: f }, conn);
                    }
                    Frame::FecStatus(st) => {
                        rate.on_delivered(st.micros, st.delivered);
                        let now = Instant::now();
                        let written = report_clock.written_at(now, st.micros);
                        urgent.extend(accounts.on_status(now, written, conn.rtt(), &st.needed));
                    }
                    Frame::BlockRetry { file, block, attempt } => {
                        report.retried_blocks += 1;
                        // Shards of the old attempt still queued are useless now.
                        fresh.retain(|s| (s.file, s.block) != (file, block));
                        urgent.retain(|s| (s.file, s.block) != (file, block));
                        urgent.extend(accounts.on_retry(file, block, attempt));
                    }
                    Frame::Error { code, message } => return Err(super::sender::peer_error(code, message)),
                    other => return Err(SessionError::Protocol(format!("unexpected {:?} from the receiver", other.frame_type()))),
                }
            }
            // A receiver that never answers HELLO (see `admission`).
            _ = tokio::time::sleep_until(admission.deadline().into()), if !admission.admitted() => {
                admission.check_deadline(Instant::now())?;
            }
            _ = pace.tick(), if !urgent.is_empty() || !fresh.is_empty() || last_tick.elapsed() >= Duration::from_millis(10) => {
                let now = Instant::now();
                if now.duration_since(last_tick) >= Duration::from_millis(10) {
                    last_tick = now;
                    let stats = conn.stats();
                    rate.on_rtt(now, conn.rtt());
                    rate.on_packets(stats.path.sent_packets, stats.path.lost_packets);
                    rate.set_app_limited(urgent.is_empty() && fresh.is_empty());
                    if let Some(round) = rate.tick(now) {
                        tracing::debug!(?round, random_loss = rate.random_loss(), startup = rate.in_startup(), "rate round");
                    }
                    tuning.rate_window.set(rate.window());
                    accounts.set_loss(rate.random_loss());
                }
                let mut allowance = if paced { pacer.allowance(now, rate.rate()) } else { 256 };
                while allowance > 0 {
                    let Some(shard) = urgent.pop_front().or_else(|| fresh.pop_front()) else {
                        break;
                    };
                    // Acknowledged blocks may still have queued repairs.
                    let Some((block, _)) = blocks.get(&(shard.file, shard.block)) else {
                        continue;
                    };
                    report.shards_sent += 1;
                    let corrupt = fec.corrupt_every.is_some_and(|n| report.shards_sent % n.max(1) == 0);
                    let d = datagram(block, &shard, shard_bytes, corrupt);
                    // A receiver that failed (full disk, bad name, ...) closes
                    // the connection with its reason: report that, not the
                    // failed send.
                    conn.send_datagram_wait(d).await.map_err(|e| match conn.close_reason() {
                        Some(r) => SessionError::from_connection(r),
                        None => SessionError::ConnectionLost(format!("sending a shard: {e}")),
                    })?;
                    accounts.on_sent(&shard, Instant::now());
                    allowance -= 1;
                    if paced {
                        pacer.sent();
                    }
                }
                if urgent.is_empty() && fresh.is_empty() {
                    pacer.idle();
                }
            }
        }
    }
    report.source_shards = accounts.sources_planned;
    report.upfront_recovery = accounts.upfront_planned;
    report.repair_shards = accounts.repairs_planned;
    report.exhausted = accounts.exhausted;
    report.random_loss = rate.random_loss();
    report.final_rate_bps = if paced { rate.rate() * 8.0 } else { 0.0 };
    report.block_latency = latency.summary();
    Ok(report)
}
