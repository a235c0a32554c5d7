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
//! shards it could have got by then are those sent one smoothed RTT before
//! the report was written (dated on the sender's clock by
//! [`crate::fec::report_clock`]). [`PathLoss`] keeps how many shards the
//! path had sent over time, so it can say how many were out by then; the
//! difference from the receiver's count is what was lost on the way out,
//! whatever happened to reports and acknowledgements on the way back.

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

    /// One more shard left at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        self.sent += 1;
        match self.samples.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < SPACING => last.1 = self.sent,
            _ => {
                self.samples.push_back((now, self.sent));
                if self.samples.len() > MAX_SAMPLES {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// Shards sent by `at` (to within a millisecond); 0 before the first.
    pub fn sent_by(&self, at: Instant) -> u64 {
        let i = self.samples.partition_point(|s| s.0 <= at);
        if i == 0 { 0 } else { self.samples[i - 1].1 }
    }

    /// (shards the receiver could have had, of them lost) for a report
    /// written at `written` (sender's clock) counting `received` shards,
    /// with the path's smoothed RTT `srtt`.
    pub fn at_report(&self, written: Instant, srtt: Duration, received: u64) -> (u64, u64) {
        let out = written
            .checked_sub(srtt)
            .map_or(0, |then| self.sent_by(then));
        (out, out.saturating_sub(received))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    #[test]
    fn the_shards_out_one_rtt_before_a_report_less_those_it_counts_are_the_lost() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = PathLoss::new();
        // 10 shards a millisecond for a second.
        for i in 0..10_000u64 {
            l.on_sent(t0 + Duration::from_micros(i * 100));
        }
        assert_eq!(l.sent_by(t0 - ms(1)), 0);
        // To within a millisecond's shards (10 here).
        let by = l.sent_by(t0 + ms(500));
        assert!((5_001..=5_010).contains(&by), "{by}");
        // A report written at 700 ms over a 200 ms RTT: shards of the first
        // 500 ms could have arrived; it counts 4 750 (5 % lost).
        let (out, lost) = l.at_report(t0 + ms(700), ms(200), 4_750);
        assert_eq!(out, by);
        assert_eq!(lost, by - 4_750);
        // A receiver that counts more than was out (timing at the edges)
        // reports no loss, not an underflow.
        assert_eq!(l.at_report(t0 + ms(700), ms(200), 6_000).1, 0);
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut l = PathLoss::new();
        for i in 0..20_000u64 {
            l.on_sent(t0 + Duration::from_millis(i));
        }
        assert_eq!(l.samples.len(), MAX_SAMPLES);
        assert_eq!(l.sent_by(t0 + Duration::from_secs(30)), 20_000);
    }
}
