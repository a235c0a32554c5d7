//! The FEC plane's sender core and the receiver's sans-IO pieces
//! ([`FecReceive`], [`ReceiveTracker`]) run against each other over
//! simulated paths ([`chunkstream_netsim::path::SimPath`]) on a virtual
//! clock: seconds of transfer in a fraction of that in test time, the same
//! outcome for the same seed.
//!
//! What stands in for the rest of the world:
//! * **QUIC**: each shard is one datagram of its length plus 40 bytes of
//!   QUIC/UDP/IP overhead; control frames cross the same links on one
//!   ordered stream per path and direction, offered again one RTT after a
//!   loss, and a frame is handed over only after every earlier one on its
//!   stream (head-of-line blocking, as QUIC's streams do). The receiver's
//!   reports are datagrams ([`encode_report`]: recent acknowledgements
//!   repeated, then FEC_STATUS), lost or not, never resent. The sender's
//!   "quinn statistics" are the simulated truth: smoothed RTT from the
//!   propagation delay plus the forward queue at send time, packets lost
//!   as known one RTT after they were dropped, bytes received back.
//! * **The reader and Rayon**: block data is generated from a seed and
//!   hashed and encoded inline, in the priority scheduler's order.
//! * **The receiver's writer**: decoded blocks are checked against their
//!   digest and recorded in the tracker; files verify by their whole-file
//!   hash.

#![allow(dead_code, clippy::disallowed_methods, clippy::needless_range_loop)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkstream_engine::fec::codec::{Geometry, encode_recovery, reconstruct};
use chunkstream_engine::fec::rate::PathMemory;
use chunkstream_engine::hash::block_digest;
use chunkstream_engine::manifest::Manifest;
use chunkstream_engine::multipath::priority::{Class, Drr};
use chunkstream_engine::send::core::{CoreConfig, CoreEvent, PathStats, SenderCore, Transmit};
use chunkstream_engine::session::fec_receive::FecReceive;
use chunkstream_engine::session::tracker::ReceiveTracker;
use chunkstream_engine::wire::{Frame, ManifestEntry, REPORT_ECHOES, decode_report, encode_report};
use chunkstream_netsim::link::{LinkConfig, LossModel, Verdict};
use chunkstream_netsim::path::{Direction, SimPath, VirtualClock};

const OVERHEAD: usize = 40;
/// The receiver's report datagrams at most (a 1200-byte QUIC packet).
const REPORT_BYTES: usize = 1150;
pub const SHARD_BYTES: usize = 1398;
pub const BLOCK: u64 = 1 << 20;

/// One simulated path: forward rate, RTT, loss each way.
#[derive(Debug, Clone, Copy)]
pub struct PathSpec {
    pub mbit: u64,
    pub rtt_ms: u64,
    pub loss: f64,
    pub back_loss: f64,
}

impl PathSpec {
    pub fn new(mbit: u64, rtt_ms: u64, loss: f64) -> Self {
        Self {
            mbit,
            rtt_ms,
            loss,
            back_loss: 0.0,
        }
    }
}

/// A path cut from `at` to `until` (never restored if `None`).
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub path: usize,
    pub at: Duration,
    pub until: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub paths: Vec<PathSpec>,
    /// File sizes and classes.
    pub files: Vec<(u64, Class)>,
    pub seed: u64,
    pub cuts: Vec<Cut>,
    pub max_rate: Option<f64>,
    pub limit: Duration,
    /// What each path carried in an earlier transfer (by path; empty: a
    /// cold start).
    pub memory: Vec<Option<PathMemory>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: Duration,
    acked: u64,
    by_class: [u64; 3],
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub finished: Option<Duration>,
    pub files_verified: usize,
    pub blocks_verified: u64,
    samples: Vec<Sample>,
    pub shards_per_path: Vec<u64>,
    pub delivered_per_path: Vec<u64>,
    /// The random-loss level each path's controller learned, at the end.
    pub loss_per_path: Vec<f64>,
    pub repairs: u64,
    pub total_bytes: u64,
    /// What each path's controller would have remembered at the end.
    pub carried_per_path: Vec<Option<PathMemory>>,
    /// Whether each path's startup began from `Scenario::memory`.
    pub warm_per_path: Vec<Option<bool>>,
    /// Shards the bottleneck queues dropped (not random loss).
    pub queue_drops: u64,
}

impl Outcome {
    /// File bytes acknowledged per second between `from` and the end.
    pub fn goodput_after(&self, from: Duration) -> f64 {
        let end = self.samples.last().expect("samples");
        let start = self
            .samples
            .iter()
            .find(|s| s.at >= from)
            .expect("ran past `from`");
        (end.acked - start.acked) as f64 / (end.at - start.at).as_secs_f64()
    }

    /// File bytes acknowledged per second between `from` and `to`.
    pub fn goodput_between(&self, from: Duration, to: Duration) -> f64 {
        let at = |t: Duration| {
            self.samples
                .iter()
                .find(|s| s.at >= t)
                .expect("sample in range")
        };
        let (a, b) = (at(from), at(to));
        (b.acked - a.acked) as f64 / (b.at - a.at).as_secs_f64()
    }

    /// The longest stretch in which nothing more was acknowledged, between
    /// `from` and the end.
    pub fn longest_stall_after(&self, from: Duration) -> Duration {
        let mut longest = Duration::ZERO;
        let mut last_change = from;
        let mut last = None;
        for s in self.samples.iter().filter(|s| s.at >= from) {
            if last.is_some_and(|a| a != s.acked) {
                longest = longest.max(s.at - last_change);
                last_change = s.at;
            }
            last = Some(s.acked);
        }
        longest
    }

    /// Each class's share of the bytes acknowledged in `[from, to]`.
    pub fn class_shares(&self, from: Duration, to: Duration) -> [f64; 3] {
        let at = |t: Duration| {
            *self
                .samples
                .iter()
                .find(|s| s.at >= t)
                .expect("sample in range")
        };
        let (a, b) = (at(from), at(to));
        let d: Vec<f64> = (0..3)
            .map(|c| (b.by_class[c] - a.by_class[c]) as f64)
            .collect();
        let sum: f64 = d.iter().sum();
        [d[0] / sum, d[1] / sum, d[2] / sum]
    }
}

fn link(spec: &PathSpec, loss: f64) -> LinkConfig {
    let delay = Duration::from_millis(spec.rtt_ms / 2);
    let rate = spec.mbit * 1_000_000;
    LinkConfig {
        rate_bps: Some(rate),
        queue_bytes: LinkConfig::default_queue_bytes(rate, delay),
        delay,
        loss: LossModel::Bernoulli { p: loss },
        ..LinkConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Packet {
    Shard(Bytes),
    /// A control frame and its place on its stream.
    Control(u64, Frame),
    /// A report datagram (receiver to sender).
    Report(Bytes),
}

/// One direction of one path's control stream: frames in sending order,
/// handed over in that order whatever order they arrive in.
#[derive(Debug, Default)]
struct OrderedStream {
    next_seq: u64,
    next_out: u64,
    held: std::collections::BTreeMap<u64, Frame>,
}

impl OrderedStream {
    fn arrived(&mut self, seq: u64, frame: Frame) -> Vec<Frame> {
        self.held.insert(seq, frame);
        let mut out = Vec::new();
        while let Some(f) = self.held.remove(&self.next_out) {
            out.push(f);
            self.next_out += 1;
        }
        out
    }
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Forward => 0,
        Direction::Back => 1,
    }
}

/// Deterministic block contents.
fn block_data(seed: u64, file: u32, block: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ (u64::from(file) << 40) ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Block {
    data: Vec<u8>,
    recovery: Vec<u8>,
    geometry: Geometry,
}

struct SenderPath {
    srtt: Duration,
    sent: u64,
    drops: VecDeque<Instant>,
    lost_known: u64,
    rx_bytes: u64,
}

/// Runs `scenario`; samples progress every 10 ms of virtual time.
pub fn run(scenario: &Scenario) -> Outcome {
    let start = Instant::now();
    let mut clock = VirtualClock::new(start);
    let n = scenario.paths.len();
    let mut paths: Vec<SimPath<Packet>> = scenario
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            SimPath::new(
                link(p, p.loss),
                link(p, p.back_loss),
                scenario.seed.wrapping_add(i as u64 * 7919),
            )
        })
        .collect();
    let entries: Vec<ManifestEntry> = scenario
        .files
        .iter()
        .enumerate()
        .map(|(i, &(size, _))| ManifestEntry {
            name: format!("f{i}"),
            size,
        })
        .collect();
    let manifest = Manifest::new(BLOCK, entries).expect("manifest");
    let classes: Vec<Class> = scenario.files.iter().map(|f| f.1).collect();
    let mut cfg = CoreConfig::default();
    cfg.shard_bytes(SHARD_BYTES)
        .path_caps(vec![None; n])
        .max_rate(scenario.max_rate);
    let mut core = SenderCore::new(manifest.clone(), classes.clone(), cfg, clock.now());
    for (i, m) in scenario.memory.iter().enumerate() {
        if let Some(m) = m {
            core.remember(i, *m);
        }
    }
    for i in 0..n {
        core.path_up(i, clock.now());
    }
    // The reader: every block of every file, in DRR order by class.
    let mut drr: Drr<(u32, u64)> = Drr::new(BLOCK);
    for (f, _) in scenario.files.iter().enumerate() {
        for b in 0..manifest.block_count(f) {
            let len = manifest.block_span(f, b).1 as u64;
            drr.push(classes[f], (f as u32, b), len);
        }
    }
    let mut data: HashMap<(u32, u64), Block> = HashMap::new();
    let mut spaths: Vec<SenderPath> = (0..n)
        .map(|_| SenderPath {
            srtt: Duration::ZERO,
            sent: 0,
            drops: VecDeque::new(),
            lost_known: 0,
            rx_bytes: 0,
        })
        .collect();
    for (i, p) in scenario.paths.iter().enumerate() {
        spaths[i].srtt = Duration::from_millis(p.rtt_ms);
    }

    // Receiver state.
    let mut fec: Option<FecReceive> = None;
    let mut early: Vec<(usize, Bytes)> = Vec::new();
    let mut tracker = ReceiveTracker::new(manifest.clone());
    let mut files_verified = 0usize;
    let mut blocks_verified = 0u64;
    let mut next_status = clock.now();
    // Control frames to offer again after a loss: (when, path, dir, seq, frame).
    let mut retry: Vec<(Instant, usize, Direction, u64, Frame)> = Vec::new();
    // Each path's control stream, each way.
    let mut streams: Vec<[OrderedStream; 2]> = (0..n).map(|_| Default::default()).collect();
    // Acknowledgements the receiver repeats in its next reports.
    let mut echoes: VecDeque<(Frame, u8)> = VecDeque::new();

    let mut samples = Vec::new();
    let mut acked = 0u64;
    let mut queue_drops = 0u64;
    let mut by_class = [0u64; 3];
    let mut next_sample = clock.now();
    let mut finished = None;
    let total_bytes = manifest.total_bytes();

    let offer = |paths: &mut Vec<SimPath<Packet>>,
                 retry: &mut Vec<(Instant, usize, Direction, u64, Frame)>,
                 now: Instant,
                 i: usize,
                 dir: Direction,
                 seq: u64,
                 frame: Frame,
                 rtt: Duration| {
        let len = frame.encode().len() + OVERHEAD;
        if let Verdict::Dropped(_) =
            paths[i].send(dir, now, len, Packet::Control(seq, frame.clone()))
            && paths[i].is_up()
        {
            retry.push((now + rtt, i, dir, seq, frame));
        }
    };
    let next_seq = |streams: &mut Vec<[OrderedStream; 2]>, i: usize, dir: Direction| {
        let s = &mut streams[i][dir_index(dir)];
        s.next_seq += 1;
        s.next_seq - 1
    };

    while clock.elapsed() < scenario.limit {
        let now = clock.now();
        let t = clock.elapsed();
        for cut in &scenario.cuts {
            if t >= cut.at && cut.until.is_none_or(|u| t < u) {
                if paths[cut.path].is_up() {
                    paths[cut.path].set_up(false);
                }
            } else if t >= cut.at && !paths[cut.path].is_up() {
                paths[cut.path].set_up(true);
            }
        }
        // Sender: statistics, admission, control, shards.
        for (i, sp) in spaths.iter_mut().enumerate() {
            while sp.drops.front().is_some_and(|&d| d + sp.srtt <= now) {
                sp.drops.pop_front();
                sp.lost_known += 1;
            }
            core.handle_path_stats(
                i,
                now,
                &PathStats {
                    srtt: sp.srtt,
                    cwnd: 0,
                    rx_bytes: sp.rx_bytes,
                    sent_packets: sp.sent,
                    lost_packets: sp.lost_known,
                    datagrams_buffered: 0,
                },
            );
        }
        core.tick(now);
        while let Some(ev) = core.poll_event() {
            match ev {
                CoreEvent::BlockAcked {
                    file,
                    block,
                    bytes,
                    class,
                    ..
                } => {
                    data.remove(&(file, block));
                    acked += bytes;
                    by_class[class as usize] += bytes;
                }
                CoreEvent::FileDone { .. }
                | CoreEvent::BlockResumed { .. }
                | CoreEvent::FilesAdded { .. } => {}
                CoreEvent::PathDied { .. } | CoreEvent::Silent { .. } => {}
                // Re-dialled at once; it answers if the path is up again.
                CoreEvent::Redial { path } => {
                    if paths[path].is_up() {
                        core.path_up(path, now);
                    } else {
                        core.redial_failed(path, now);
                    }
                }
            }
        }
        if core.is_done() {
            finished = Some(t);
            samples.push(Sample {
                at: t,
                acked,
                by_class,
            });
            break;
        }
        while core.wants_block() {
            let Some((_, (f, b))) = drr.pop() else { break };
            let (offset, len) = manifest.block_span(f as usize, b);
            let bytes = block_data(scenario.seed, f, b, len as usize);
            let geometry = Geometry::sized_for(len as usize, SHARD_BYTES, core.recovery_share())
                .expect("geometry");
            let recovery = encode_recovery(&geometry, &bytes).expect("encode");
            let header = chunkstream_engine::wire::BlockHeader {
                file: f,
                block: b,
                len,
                digest: block_digest(&bytes, offset, manifest.files()[f as usize].size),
            };
            core.admit_block(now, &header, Some(geometry));
            data.insert(
                (f, b),
                Block {
                    data: bytes,
                    recovery,
                    geometry,
                },
            );
        }
        let first_up = (0..n).find(|&i| paths[i].is_up()).unwrap_or(0);
        while let Some(frame) = core.poll_control() {
            let rtt = spaths[first_up].srtt;
            let seq = next_seq(&mut streams, first_up, Direction::Forward);
            offer(
                &mut paths,
                &mut retry,
                now,
                first_up,
                Direction::Forward,
                seq,
                frame,
                rtt,
            );
        }
        while let Some(Transmit::Shard { path: i, shard }) = core.poll_transmit(now, |_| true) {
            let block = &data[&(shard.file, shard.block)];
            let d = shard
                .datagram(&block.geometry, &block.data, &block.recovery)
                .freeze();
            let spec = &scenario.paths[i];
            let sp = &mut spaths[i];
            let sample =
                Duration::from_millis(spec.rtt_ms) + paths[i].queue_delay(Direction::Forward, now);
            sp.srtt = (sp.srtt * 7 + sample) / 8;
            sp.sent += 1;
            if let Verdict::Dropped(why) = paths[i].send(
                Direction::Forward,
                now,
                d.len() + OVERHEAD,
                Packet::Shard(d),
            ) {
                sp.drops.push_back(now);
                queue_drops += u64::from(why == chunkstream_netsim::link::Drop::Queue);
            }
            core.on_sent(i, &shard, now);
        }
        // Retransmitted control frames.
        let due: Vec<_> = {
            let (due, later): (Vec<_>, Vec<_>) = retry.drain(..).partition(|r| r.0 <= now);
            retry = later;
            due
        };
        for (_, i, dir, seq, frame) in due {
            let rtt = spaths[i].srtt;
            offer(&mut paths, &mut retry, now, i, dir, seq, frame, rtt);
        }

        // Receiver.
        let micros = clock.elapsed().as_micros() as u64;
        let mut replies: Vec<(Option<usize>, Frame)> = Vec::new();
        let mut complete = Vec::new();
        for i in 0..n {
            let mut arrived = Vec::new();
            while let Some(p) = paths[i].recv(Direction::Forward, now) {
                match p {
                    Packet::Control(seq, frame) => arrived.extend(
                        streams[i][0]
                            .arrived(seq, frame)
                            .into_iter()
                            .map(|f| Packet::Control(0, f)),
                    ),
                    other => arrived.push(other),
                }
            }
            for p in arrived {
                match p {
                    Packet::Shard(d) => match fec.as_mut() {
                        Some(state) => {
                            if let Some(c) =
                                state.on_datagram(&manifest, i, d).expect("valid shard")
                            {
                                complete.push(c);
                            }
                        }
                        None => early.push((i, d)),
                    },
                    Packet::Control(
                        _,
                        Frame::FecSetup {
                            shard_bytes,
                            max_blocks,
                        },
                    ) => {
                        let mut state =
                            FecReceive::new(&manifest, shard_bytes, max_blocks).expect("setup");
                        for (j, d) in early.drain(..) {
                            if let Some(c) = state.on_datagram(&manifest, j, d).expect("shard") {
                                complete.push(c);
                            }
                        }
                        fec = Some(state);
                    }
                    Packet::Control(
                        _,
                        Frame::BlockDigest {
                            file,
                            block,
                            digest,
                        },
                    ) => {
                        let state = fec.as_mut().expect("digest after setup");
                        if let Some(c) = state
                            .on_digest(&manifest, file, block, digest)
                            .expect("digest")
                        {
                            complete.push(c);
                        }
                    }
                    Packet::Control(_, Frame::FileHash { file, hash }) => {
                        if let Some(f) = tracker.file_hash(file, hash).expect("hash") {
                            tracker.verify(f).expect("file verifies");
                            tracker.file_done(f);
                            files_verified += 1;
                            replies.push((None, Frame::FileDone { file: f }));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        for (c, digest) in complete {
            let (offset, _) = manifest.block_span(c.file as usize, c.block);
            let mut out = Vec::new();
            reconstruct(&c.geometry, &c.shards, &mut out).expect("decodes");
            let size = manifest.files()[c.file as usize].size;
            assert_eq!(block_digest(&out, offset, size), digest, "block verifies");
            blocks_verified += 1;
            let state = fec.as_mut().expect("fec");
            state.finished(c.file, c.block);
            replies.push((
                None,
                Frame::BlockAck {
                    file: c.file,
                    block: c.block,
                },
            ));
            if let Some(f) = tracker.block_written(c.file, c.block, digest) {
                tracker.verify(f).expect("file verifies");
                tracker.file_done(f);
                files_verified += 1;
                replies.push((None, Frame::FileDone { file: f }));
            }
        }
        for (to, frame) in replies {
            let targets: Vec<usize> = match to {
                Some(i) => vec![i],
                None => (0..n).filter(|&i| paths[i].is_up()).collect(),
            };
            echoes.push_back((frame.clone(), REPORT_ECHOES));
            for i in targets {
                let rtt = spaths[i].srtt;
                let seq = next_seq(&mut streams, i, Direction::Back);
                offer(
                    &mut paths,
                    &mut retry,
                    now,
                    i,
                    Direction::Back,
                    seq,
                    frame.clone(),
                    rtt,
                );
            }
        }
        // Reports: a datagram per path, with the recent acknowledgements.
        if now >= next_status {
            next_status = now + Duration::from_millis(10);
            if let Some(state) = &fec {
                let again: Vec<Frame> = echoes.iter().map(|e| e.0.clone()).collect();
                for i in 0..n {
                    let d = encode_report(&state.status(i, micros), &again, REPORT_BYTES)
                        .expect("the status fits")
                        .freeze();
                    paths[i].send(Direction::Back, now, d.len() + OVERHEAD, Packet::Report(d));
                }
                for e in echoes.iter_mut() {
                    e.1 -= 1;
                }
                echoes.retain(|e| e.1 > 0);
            }
        }
        // Back to the sender.
        for i in 0..n {
            let mut frames = Vec::new();
            while let Some(p) = paths[i].recv(Direction::Back, now) {
                match p {
                    Packet::Control(seq, frame) => {
                        spaths[i].rx_bytes += (frame.encode().len() + OVERHEAD) as u64;
                        frames.extend(streams[i][1].arrived(seq, frame));
                    }
                    Packet::Report(d) => {
                        spaths[i].rx_bytes += (d.len() + OVERHEAD) as u64;
                        frames.extend(decode_report(&d).expect("a valid report"));
                    }
                    Packet::Shard(_) => unreachable!("shards go forward"),
                }
            }
            for frame in frames {
                core.handle_frame(i, frame, now).expect("valid frame");
            }
        }
        if now >= next_sample {
            next_sample = now + Duration::from_millis(10);
            samples.push(Sample {
                at: t,
                acked,
                by_class,
            });
        }
        // Next event: a packet arrival, the core's timer, or the next report.
        let mut next = core.poll_timeout(now).min(next_status).min(next_sample);
        for p in &paths {
            if let Some(a) = p.next_arrival() {
                next = next.min(a);
            }
        }
        if let Some(r) = retry.iter().map(|r| r.0).min() {
            next = next.min(r);
        }
        clock.advance_to(next.max(now + Duration::from_micros(50)));
    }
    let figures: Vec<_> = (0..n).map(|i| core.path_figures(i)).collect();
    Outcome {
        finished,
        files_verified,
        blocks_verified,
        samples,
        shards_per_path: figures.iter().map(|f| f.shards_sent).collect(),
        delivered_per_path: figures.iter().map(|f| f.delivered).collect(),
        loss_per_path: figures.iter().map(|f| f.loss).collect(),
        repairs: core.planned().2,
        total_bytes,
        carried_per_path: figures.iter().map(|f| f.carried).collect(),
        warm_per_path: figures.iter().map(|f| f.resumed).collect(),
        queue_drops,
    }
}
