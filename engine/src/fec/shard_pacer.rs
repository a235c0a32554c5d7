//! How many shards may leave now at the controlled rate (sans-IO).
//!
//! The FEC sender wakes every millisecond and asks [`ShardPacer::allowance`]
//! how many shards it may send; each one sent is charged with
//! [`ShardPacer::sent`]. The budget grows at the rate the controller sets
//! ([`super::rate`]) and is capped at 8 ms of sending (at least four shards),
//! so a late wake-up sends a short burst, not a flood; when the queue runs
//! dry, [`ShardPacer::idle`] drops it to four shards.
//!
//! Why 8 ms and not less: the budget a late wake-up cannot carry is lost for
//! good, and a sender that sends less than its pace is then measured as a
//! path that delivers less, so the controller's estimate follows it down.
//! The sender wakes on a 1 ms timer while the receiver (and, in tests and
//! the bench, the link emulator) share its cores; with a 2 ms cap, 64 MiB
//! over a relayed 200 Mbit/s, 40 ms path with 5 % loss both ways sent
//! 141-171 Mbit/s against a pace of 169-178 and took 3.57-5.54 s (six
//! runs; the slowest spiralled down to a pace of 133), with 8 ms it sent at
//! its pace and took 3.45-3.50 s (results/README.md, "The pacer's burst").
//! 8 ms at the rate stays far below the queues of the paths we emulate
//! (1.5 × BDP on the relay, 50 ms on the veth test bed), and quinn's own
//! pacer spreads such a burst at 2.5 × the rate (`fec::cc`).
//!
//! The unit is the controller's: shard *payload* bytes, what the receiver
//! reports delivered. Each shard is charged its payload, not its size on the
//! wire: charging the wire size (+ 55 bytes of shard, QUIC and UDP/IP
//! headers) paced 4 % below the rate the controller had measured the path
//! to carry (256 MiB at 5 % loss: 161.5 -> 171.4 Mbit/s when fixed).

#![deny(clippy::disallowed_methods)]

use std::time::Instant;

/// Most time's worth of sending the budget holds.
const MAX_BURST_SECS: f64 = 0.008;
/// The budget's floor for its cap, and what it keeps when idle, in shards.
const MIN_BURST_SHARDS: f64 = 4.0;

/// The pacing budget of one FEC sender.
#[derive(Debug, Clone)]
pub struct ShardPacer {
    shard_bytes: f64,
    budget: f64,
    last: Instant,
}

impl ShardPacer {
    /// A pacer for shards of `shard_bytes` payload, starting empty at `now`.
    pub fn new(shard_bytes: usize, now: Instant) -> Self {
        Self {
            shard_bytes: shard_bytes.max(1) as f64,
            budget: 0.0,
            last: now,
        }
    }

    /// Adds what `rate` (payload bytes per second) allows since the last
    /// call; returns how many shards may be sent now.
    pub fn allowance(&mut self, now: Instant, rate: f64) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let cap = (rate * MAX_BURST_SECS).max(MIN_BURST_SHARDS * self.shard_bytes);
        self.budget = (self.budget + rate * elapsed).min(cap);
        self.last = now;
        (self.budget / self.shard_bytes).max(0.0) as usize
    }

    /// The budget in payload bytes, as of the last [`Self::allowance`].
    pub fn budget(&self) -> f64 {
        self.budget
    }

    /// A shard of `bytes` payload went out (a short block's shards are
    /// shorter than the session's: `fec::codec`): the budget is bytes.
    pub fn sent_payload(&mut self, bytes: usize) {
        self.budget -= bytes as f64;
    }

    /// Nothing is queued: keep no more than a few shards' worth, so the next
    /// send does not start with a burst saved up while idle.
    pub fn idle(&mut self) {
        self.budget = self.budget.min(MIN_BURST_SHARDS * self.shard_bytes);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use std::time::Duration;

    /// Shards sent in `ms` milliseconds, waking every millisecond and
    /// sending everything allowed.
    fn shards_in(ms: u64, shard: usize, rate: f64) -> usize {
        let t0 = Instant::now();
        let mut p = ShardPacer::new(shard, t0);
        let mut sent = 0;
        for i in 1..=ms {
            for _ in 0..p.allowance(t0 + Duration::from_millis(i), rate) {
                p.sent_payload(shard);
                sent += 1;
            }
        }
        sent
    }

    #[test]
    fn sends_the_rate_in_payload_bytes() {
        // 180 Mbit/s of payload in 1398-byte shards: 16 094 shards a second.
        // Charging the wire size (1453 bytes) would send 15 485, 4 % less.
        let rate = 180e6 / 8.0;
        let sent = shards_in(1_000, 1398, rate);
        let want = rate / 1398.0;
        assert!(
            (sent as f64 - want).abs() <= 2.0,
            "{sent} shards, want {want:.0}"
        );
    }

    #[test]
    fn a_late_wake_up_sends_eight_milliseconds_not_the_whole_gap() {
        let t0 = Instant::now();
        let rate = 100e6; // bytes/s: 8 ms is 800 kB
        let mut p = ShardPacer::new(1000, t0);
        assert_eq!(p.allowance(t0 + Duration::from_millis(50), rate), 800);
        // A wake-up 5 ms late loses nothing.
        let mut q = ShardPacer::new(1000, t0);
        assert_eq!(q.allowance(t0 + Duration::from_millis(6), rate), 600);
        // At a low rate the cap is four shards, not less.
        let mut slow = ShardPacer::new(1000, t0);
        assert_eq!(slow.allowance(t0 + Duration::from_secs(1), 10_000.0), 4);
    }

    #[test]
    fn idle_keeps_only_a_few_shards() {
        let t0 = Instant::now();
        let mut p = ShardPacer::new(1000, t0);
        assert_eq!(p.allowance(t0 + Duration::from_millis(2), 100e6), 200);
        p.idle();
        assert_eq!(p.allowance(t0 + Duration::from_millis(2), 100e6), 4);
    }
}
