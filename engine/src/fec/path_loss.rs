//! A path's forward loss, from what the receiver counted (sans-IO).
//!
//! The rate controller needs the share of shards the path loses on the way
//! out. quinn's lost-packet count is not that on a link that also loses on
//! the way back: a datagram is declared lost when no acknowledgement for it
//! arrives, and an ACK frame carries only the newest ranges, so a lost ACK
//! on a path with many gaps leaves older packets never acknowledged.
//! Measured at 1 s RTT with 5 % loss both ways: quinn counted 20-100 % of a
//! round's packets lost where 5 % were, the controller read congestion and
//! the random-loss level it plans repairs by crept to 20 %.
//!
//! Each FEC_STATUS says how many shards the receiver got on its path. The
//! shards it could have got by then are those that were on the wire one
//! smoothed RTT before the report was written (dated on the sender's clock
//! by [`crate::fec::report_clock`]). [`PathLoss`] keeps how many shards
//! the path had put on the wire over time: those handed to quinn less
//! those still in its datagram buffer, because on a fast path (loopback) a
//! shard can wait there longer than the RTT, and counting it as sent read
//! as 10-25 % of phantom loss per round. The rate controller takes the
//! loss of a round from the differences of the two counts
//! ([`crate::fec::rate::RateController::on_counts`]), so what is still in
//! flight at both ends of a round cancels out.

#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept: at one per millisecond, four seconds of history.
const MAX_SAMPLES: usize = 4096;
/// Finest spacing of samples.
const SPACING: Duration = Duration::from_millis(1);

/// Shards sent on one path over time.
#[derive(Debug, Clone, Default)]
pub struct PathLoss {
    /// (when, shards sent by then), oldest first.
    samples: VecDeque<(Instant, u64)>,
    sent: u64,
}

impl PathLoss {
    /// A path that has sent nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// By `now`, `on_wire` shards in all had left (a count that only
    /// grows; a smaller one is ignored).
    pub fn on_wire(&mut self, now: Instant, on_wire: u64) {
        if on_wire <= self.sent {
            return;
        }
        self.sent = on_wire;
        match self.samples.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < SPACING => last.1 = on_wire,
            _ => {
                self.samples.push_back((now, on_wire));
                if self.samples.len() > MAX_SAMPLES {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// Shards on the wire by `at` (to within a millisecond); 0 before the
    /// first.
    pub fn sent_by(&self, at: Instant) -> u64 {
        let i = self.samples.partition_point(|s| s.0 <= at);
        if i == 0 { 0 } else { self.samples[i - 1].1 }
    }

    /// The shards a report written at `written` (sender's clock) could
    /// count, on a path of smoothed RTT `srtt`.
    pub fn out_before(&self, written: Instant, srtt: Duration) -> u64 {
        written
            .checked_sub(srtt)
            .map_or(0, |then| self.sent_by(then))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    #[test]
    fn the_shards_on_the_wire_one_rtt_before_a_report_are_what_it_could_count() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = PathLoss::new();
        // 10 shards a millisecond on the wire for a second.
        for i in 0..1_000u64 {
            l.on_wire(t0 + ms(i), 10 * (i + 1));
        }
        assert_eq!(l.sent_by(t0 - ms(1)), 0);
        assert_eq!(l.sent_by(t0 + ms(499)), 5_000);
        // A count that goes back (quinn's buffer refilled) is ignored.
        l.on_wire(t0 + ms(1_000), 9_000);
        assert_eq!(l.sent_by(t0 + ms(1_000)), 10_000);
        // A report written at 700 ms over a 200 ms RTT could count what
        // was out by 500 ms.
        assert_eq!(l.out_before(t0 + ms(700), ms(200)), 5_010);
        assert_eq!(l.out_before(t0 + ms(100), ms(200)), 0);
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut l = PathLoss::new();
        for i in 0..20_000u64 {
            l.on_wire(t0 + Duration::from_millis(i), i + 1);
        }
        assert_eq!(l.samples.len(), MAX_SAMPLES);
        assert_eq!(l.sent_by(t0 + Duration::from_secs(30)), 20_000);
    }
}
