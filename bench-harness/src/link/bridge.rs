//! The driver loop shared by every link emulator: two packet ports, one
//! [`LinkModel`] per direction, and a time-ordered heap of packets waiting
//! for their arrival time.
//!
//! A [`Port`] is anything that yields and accepts whole packets: a UDP
//! socket (the relay) or a TUN device (the namespace bridge). Packets read
//! from port A are offered to the forward model and, if delivered, written
//! to port B at their arrival time; B to A goes through the reverse model.
//! Timers come from tokio (1 ms resolution): packets due in the same
//! millisecond leave together, which adds up to 1 ms of jitter but keeps
//! the rate, since the model, not the timer, decides it. Ports read and
//! write in batches where they can (the relay's sockets: `recvmmsg` and
//! GRO in, GSO out, through quinn-udp): one packet per system call and
//! per wake-up held the relay near 300 Mbit/s.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::model::{LinkConfig, LinkModel, LinkStats, Verdict};

/// Counts of both directions of a link.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RelayStats {
    /// A → B (client → server).
    pub forward: LinkStats,
    /// B → A (server → client).
    pub reverse: LinkStats,
}

/// A running bridge: its counters, and how to stop it. Dropping it stops
/// the bridge too.
#[derive(Debug)]
pub(crate) struct Bridge {
    models: Arc<Mutex<(LinkModel, LinkModel)>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bridge {
    /// Starts bridging `a` and `b`; the reverse model is seeded `seed + 1`.
    pub(crate) fn spawn<A: Port + 'static, B: Port + 'static>(
        a: A,
        b: B,
        forward: LinkConfig,
        reverse: LinkConfig,
        seed: u64,
    ) -> Self {
        let models = Arc::new(Mutex::new((
            LinkModel::new(forward, seed),
            LinkModel::new(reverse, seed.wrapping_add(1)),
        )));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_bridge(a, b, models.clone(), stopped));
        Self {
            models,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Counts so far.
    pub(crate) fn stats(&self) -> RelayStats {
        let m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        RelayStats {
            forward: m.0.stats(),
            reverse: m.1.stats(),
        }
    }

    /// Stops the bridge, waits for it, and returns the final counts.
    pub(crate) async fn stop(&mut self) -> RelayStats {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.stats()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A packet crossing a bridge, and the flow it belongs to. The relay
/// tells its clients apart by flow (one upstream socket per client, as a
/// NAT keeps one mapping per client); the TUN bridge has one flow, 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Packet {
    pub(crate) flow: usize,
    pub(crate) bytes: Vec<u8>,
}

/// One end of an emulated link.
pub(crate) trait Port: Send + Sync {
    /// Waits for the next packets and appends them to `out` (at least one
    /// unless it fails): a port that can read several per system call
    /// (the relay's UDP sockets) hands over all it read.
    fn recv(
        &self,
        out: &mut Vec<Packet>,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Writes packets without waiting, in order; a full buffer loses them,
    /// as a real network would.
    fn send(&self, packets: &[Packet]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    AtoB,
    BtoA,
}

/// A packet waiting for its arrival time, ordered by time then sequence.
type Pending = Reverse<(Instant, u64, Direction, Packet)>;

/// Runs until `stopped` fires: A → B through `models.0`, B → A through `models.1`.
///
/// Each wake-up takes every packet a port has ready (one system call for
/// a batch on UDP) and, when packets fall due, sends all of them at once.
async fn run_bridge<A: Port, B: Port>(
    a: A,
    b: B,
    models: Arc<Mutex<(LinkModel, LinkModel)>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    loop {
        let next_due = heap.peek().map(|Reverse((at, ..))| *at);
        tokio::select! {
            _ = &mut stopped => break,
            // A port error (e.g. nobody listening yet) drops that read only.
            r = a.recv(&mut from_a) => {
                if r.is_ok() {
                    offer_all(&models, Direction::AtoB, &mut from_a, &mut heap, &mut seq);
                }
                from_a.clear();
            }
            r = b.recv(&mut from_b) => {
                if r.is_ok() {
                    offer_all(&models, Direction::BtoA, &mut from_b, &mut heap, &mut seq);
                }
                from_b.clear();
            }
            _ = sleep_until(next_due), if next_due.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
                    let Reverse((_, _, dir, packet)) = heap.pop().expect("peeked");
                    match dir {
                        Direction::AtoB => to_b.push(packet),
                        Direction::BtoA => to_a.push(packet),
                    }
                }
                if !to_b.is_empty() {
                    b.send(&to_b);
                    to_b.clear();
                }
                if !to_a.is_empty() {
                    a.send(&to_a);
                    to_a.clear();
                }
            }
        }
    }
}

/// Offers each of `packets` to `dir`'s model now and schedules what it
/// delivers.
fn offer_all(
    models: &Mutex<(LinkModel, LinkModel)>,
    dir: Direction,
    packets: &mut Vec<Packet>,
    heap: &mut BinaryHeap<Pending>,
    seq: &mut u64,
) {
    let now = Instant::now();
    let mut m = models.lock().unwrap_or_else(|p| p.into_inner());
    let model = match dir {
        Direction::AtoB => &mut m.0,
        Direction::BtoA => &mut m.1,
    };
    for packet in packets.drain(..) {
        let verdict = model.offer(now, packet.bytes.len());
        schedule(heap, seq, verdict, dir, packet);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn schedule(
    heap: &mut BinaryHeap<Pending>,
    seq: &mut u64,
    verdict: Verdict,
    dir: Direction,
    packet: Packet,
) {
    if let Verdict::Deliver { at, copies } = verdict {
        for _ in 1..copies {
            *seq += 1;
            heap.push(Reverse((at, *seq, dir, packet.clone())));
        }
        if copies > 0 {
            *seq += 1;
            heap.push(Reverse((at, *seq, dir, packet)));
        }
    }
}
