//! A simulated two-way path on a virtual clock.
//!
//! [`SimPath`] carries opaque packets of type `P` between two sans-IO peers:
//! a [`LinkModel`] forward (sender to receiver) and one back. A peer hands a
//! packet in with [`SimPath::send`] at `now`; the model decides whether and
//! when it arrives; [`SimPath::recv`] hands out what has arrived by `now`,
//! in arrival order. [`SimPath::next_arrival`] tells the test loop when to
//! advance its [`VirtualClock`] to, so a simulation jumps from event to
//! event instead of sleeping.
//!
//! A path can be cut ([`SimPath::set_up`]`(false)`): everything on the wire
//! and everything sent while it is down is lost, as when an interface goes
//! away. Packets cut this way count in [`SimPath::cut`], not in the link's
//! own statistics.

#![deny(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::link::{LinkConfig, LinkModel, LinkStats, Verdict};

/// A clock that moves only when the test moves it.
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    start: Instant,
    now: Instant,
}

impl VirtualClock {
    /// A clock at `start` (any `Instant`; only differences matter).
    pub fn new(start: Instant) -> Self {
        Self { start, now: start }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves to `t` (never backwards).
    pub fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }

    /// Moves forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }
}

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sender to receiver.
    Forward,
    /// Receiver to sender.
    Back,
}

#[derive(Debug)]
struct Wire<P> {
    model: LinkModel,
    /// Arrivals by (time, sequence) so equal times keep sending order.
    arriving: BinaryHeap<Reverse<(Instant, u64, Slot<P>)>>,
}

/// A packet on the wire; ordered by the heap key only.
#[derive(Debug)]
struct Slot<P>(P);

impl<P> PartialEq for Slot<P> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<P> Eq for Slot<P> {}
impl<P> PartialOrd for Slot<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Slot<P> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Two directions of one simulated path.
#[derive(Debug)]
pub struct SimPath<P> {
    forward: Wire<P>,
    back: Wire<P>,
    seq: u64,
    up: bool,
    cut: u64,
}

impl<P: Clone> SimPath<P> {
    /// A path with a link each way; the two links draw from generators
    /// derived from `seed`.
    pub fn new(forward: LinkConfig, back: LinkConfig, seed: u64) -> Self {
        let wire = |config, seed| Wire {
            model: LinkModel::new(config, seed),
            arriving: BinaryHeap::new(),
        };
        Self {
            forward: wire(forward, seed),
            back: wire(back, seed ^ 0x9e37_79b9_7f4a_7c15),
            seq: 0,
            up: true,
            cut: 0,
        }
    }

    fn wire(&mut self, dir: Direction) -> &mut Wire<P> {
        match dir {
            Direction::Forward => &mut self.forward,
            Direction::Back => &mut self.back,
        }
    }

    /// Offers a packet of `len` bytes at `now`; the link's verdict.
    pub fn send(&mut self, dir: Direction, now: Instant, len: usize, packet: P) -> Verdict {
        if !self.up {
            self.cut += 1;
            return Verdict::Dropped(crate::link::Drop::Random);
        }
        let verdict = self.wire(dir).model.offer(now, len);
        if let Verdict::Deliver { at, copies } = verdict {
            for _ in 1..copies {
                self.seq += 1;
                let seq = self.seq;
                self.wire(dir)
                    .arriving
                    .push(Reverse((at, seq, Slot(packet.clone()))));
            }
            self.seq += 1;
            let seq = self.seq;
            self.wire(dir)
                .arriving
                .push(Reverse((at, seq, Slot(packet))));
        }
        verdict
    }

    /// The next packet that has arrived by `now`, if any.
    pub fn recv(&mut self, dir: Direction, now: Instant) -> Option<P> {
        let wire = self.wire(dir);
        match wire.arriving.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                wire.arriving.pop().map(|Reverse((_, _, Slot(p)))| p)
            }
            _ => None,
        }
    }

    /// When the next packet arrives, in either direction.
    pub fn next_arrival(&self) -> Option<Instant> {
        let first = |w: &Wire<P>| w.arriving.peek().map(|Reverse((at, _, _))| *at);
        match (first(&self.forward), first(&self.back)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Brings the path up, or cuts it (dropping what is on the wire).
    pub fn set_up(&mut self, up: bool) {
        if !up {
            self.cut += (self.forward.arriving.len() + self.back.arriving.len()) as u64;
            self.forward.arriving.clear();
            self.back.arriving.clear();
        }
        self.up = up;
    }

    /// Whether the path carries packets.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Packets lost to cuts.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// How long a packet offered now would wait in one direction's
    /// bottleneck queue (what an RTT sample sees beyond the propagation).
    pub fn queue_delay(&self, dir: Direction, now: Instant) -> Duration {
        let model = match dir {
            Direction::Forward => &self.forward.model,
            Direction::Back => &self.back.model,
        };
        match model.config().rate_bps {
            Some(rate) if rate > 0 => {
                Duration::from_secs_f64(model.queued_bytes(now) as f64 * 8.0 / rate as f64)
            }
            _ => Duration::ZERO,
        }
    }

    /// What one direction's link did.
    pub fn stats(&self, dir: Direction) -> LinkStats {
        match dir {
            Direction::Forward => self.forward.model.stats(),
            Direction::Back => self.back.model.stats(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::link::LossModel;

    fn link(rate_mbit: u64, one_way_ms: u64, loss: f64) -> LinkConfig {
        let delay = Duration::from_millis(one_way_ms);
        LinkConfig {
            rate_bps: Some(rate_mbit * 1_000_000),
            queue_bytes: LinkConfig::default_queue_bytes(rate_mbit * 1_000_000, delay),
            delay,
            loss: LossModel::Bernoulli { p: loss },
            ..LinkConfig::default()
        }
    }

    #[test]
    fn packets_arrive_after_the_delay_in_order() {
        let mut clock = VirtualClock::new(Instant::now());
        let mut path = SimPath::new(link(100, 10, 0.0), link(100, 10, 0.0), 1);
        for i in 0..10u32 {
            path.send(Direction::Forward, clock.now(), 1000, i);
        }
        assert_eq!(path.recv(Direction::Forward, clock.now()), None);
        let first = path.next_arrival().expect("packets on the wire");
        assert!(first - clock.now() >= Duration::from_millis(10));
        clock.advance(Duration::from_millis(20));
        let got: Vec<u32> =
            std::iter::from_fn(|| path.recv(Direction::Forward, clock.now())).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(path.recv(Direction::Back, clock.now()), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_losses() {
        let run = |seed| {
            let now = Instant::now();
            let mut path = SimPath::new(link(1000, 5, 0.1), link(1000, 5, 0.0), seed);
            (0..1000)
                .map(|i| {
                    matches!(
                        path.send(Direction::Forward, now, 100, i),
                        Verdict::Deliver { .. }
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let delivered = run(7).iter().filter(|d| **d).count();
        assert!((850..=950).contains(&delivered), "{delivered}");
    }

    #[test]
    fn a_cut_path_loses_what_is_on_the_wire_and_what_follows() {
        let mut clock = VirtualClock::new(Instant::now());
        let mut path = SimPath::new(link(100, 10, 0.0), link(100, 10, 0.0), 1);
        path.send(Direction::Forward, clock.now(), 1000, 1u8);
        path.set_up(false);
        path.send(Direction::Back, clock.now(), 1000, 2u8);
        clock.advance(Duration::from_secs(1));
        assert_eq!(path.recv(Direction::Forward, clock.now()), None);
        assert_eq!(path.recv(Direction::Back, clock.now()), None);
        assert_eq!(path.cut(), 2);
        path.set_up(true);
        path.send(Direction::Back, clock.now(), 1000, 3u8);
        clock.advance(Duration::from_secs(1));
        assert_eq!(path.recv(Direction::Back, clock.now()), Some(3));
    }
}
