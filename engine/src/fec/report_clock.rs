//! When the receiver wrote a FEC_STATUS, on the sender's clock (sans-IO).
//!
//! A deficit in a status report means loss only if the report was written
//! after the block's last shard could have arrived. The sender used to judge
//! that by the time the report was *read*, but a report can wait a long time
//! between the receiver writing it and the sender's loop reading it: with
//! both ends short of CPU (loopback, 2 cores) reports were read a median of
//! 12 ms and up to 89 ms late, every deficit in them looked like loss, and
//! a third of all shards sent were needless repairs.
//!
//! FEC_STATUS carries the receiver's clock (`micros` since its session
//! started). [`ReportClock`] maps it onto the sender's clock with the
//! smallest `arrival − micros` seen, the way LEDBAT estimates a base delay:
//! that is the clock offset plus the least one-way delay, so a report read
//! late is dated back by exactly its extra wait. The minimum is kept over
//! two windows of [`WINDOW`] so that a slow drift between the two clocks
//! cannot pin it to a stale value.
//!
//! The estimate is never later than the arrival itself, whatever `micros`
//! a peer writes: a hostile receiver can make its reports look old (and get
//! fewer repairs), not new.

#![deny(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

/// How long one window of the minimum filter lasts.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Maps the receiver's report clock onto the sender's.
#[derive(Debug, Clone, Default)]
pub struct ReportClock {
    /// The smallest `arrival − micros` in the current window, and when the
    /// window began.
    current: Option<(Instant, Instant)>,
    /// The same for the window before.
    previous: Option<Instant>,
}

impl ReportClock {
    /// A clock that has seen no report.
    pub fn new() -> Self {
        Self::default()
    }

    /// A report written at `micros` on the receiver's clock arrived at
    /// `arrived`; returns when it was written, on the sender's clock (at
    /// most `arrived`).
    pub fn written_at(&mut self, arrived: Instant, micros: u64) -> Instant {
        let Some(epoch) = arrived.checked_sub(Duration::from_micros(micros)) else {
            // Not representable on this clock: a hostile or broken value.
            return arrived;
        };
        match self.current {
            Some((began, _)) if arrived.duration_since(began) >= WINDOW => {
                self.previous = self.current.map(|(_, e)| e);
                self.current = Some((arrived, epoch));
            }
            Some((began, best)) => self.current = Some((began, best.min(epoch))),
            None => self.current = Some((arrived, epoch)),
        }
        let best = self
            .current
            .map(|(_, e)| e)
            .into_iter()
            .chain(self.previous)
            .min()
            .expect("current was just set");
        (best + Duration::from_micros(micros)).min(arrived)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_report_read_late_is_dated_back_by_its_extra_wait() {
        let t0 = Instant::now();
        let mut clock = ReportClock::new();
        // Written every 10 ms on the receiver's clock, which started 3 s
        // before ours saw anything; 20 ms one-way delay.
        let arrive = |i: u64, extra: Duration| t0 + 20 * MS + extra + Duration::from_millis(i * 10);
        let micros = |i: u64| 3_000_000 + i * 10_000;
        for i in 0..5 {
            assert_eq!(
                clock.written_at(arrive(i, Duration::ZERO), micros(i)),
                arrive(i, Duration::ZERO)
            );
        }
        // Report 5 waits 40 ms longer than the others before it is read.
        let late = arrive(5, 40 * MS);
        assert_eq!(clock.written_at(late, micros(5)), late - 40 * MS);
        // The next ones are on time again.
        assert_eq!(
            clock.written_at(arrive(6, Duration::ZERO), micros(6)),
            arrive(6, Duration::ZERO)
        );
    }

    #[test]
    fn never_later_than_the_arrival_whatever_the_peer_writes() {
        let t0 = Instant::now();
        let mut clock = ReportClock::new();
        for (i, micros) in [0u64, u64::MAX, 5, 1 << 40, 17, 0].into_iter().enumerate() {
            let arrived = t0 + i as u32 * MS;
            assert!(
                clock.written_at(arrived, micros) <= arrived,
                "{i}: {micros}"
            );
        }
    }

    #[test]
    fn follows_a_receiver_clock_that_runs_slow() {
        // The receiver's clock runs 1 % slow (far more than real clocks
        // drift): with a minimum kept forever, on-time reports would look
        // ever older; with two windows the error stays within a window's
        // drift.
        let t0 = Instant::now();
        let mut clock = ReportClock::new();
        let mut worst = Duration::ZERO;
        for i in 0..6000u64 {
            let arrived = t0 + Duration::from_millis(i * 10);
            let micros = i * 9_900;
            let age = arrived - clock.written_at(arrived, micros);
            if Duration::from_millis(i * 10) > 3 * WINDOW {
                worst = worst.max(age);
            }
        }
        // Two windows of 1 % drift: 200 ms; kept forever it would be 600.
        assert!(worst <= 201 * MS, "{worst:?}");
    }
}
