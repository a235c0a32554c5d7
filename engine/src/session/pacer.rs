//! `--max-rate`: a sans-IO pacer that says when the next block may leave.

use std::time::{Duration, Instant};

/// Spaces sends so that the long-run rate stays at or below `bytes_per_sec`,
/// allowing a burst of at most `burst` bytes.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: f64,
    burst: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (must be > 0) that lets up to 10 ms of
    /// sending accumulate while idle.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            burst: Duration::from_millis(10),
            next: None,
        }
    }

    /// When the next bytes may leave, asked at `now` (without reserving).
    pub fn ready_at(&self, now: Instant) -> Instant {
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        self.next.map_or(now, |n| n.max(earliest)).max(now)
    }

    /// Reserves `bytes` at time `now`; returns when they may be sent.
    pub fn reserve(&mut self, now: Instant, bytes: u64) -> Instant {
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let start = self.next.map_or(now, |n| n.max(earliest));
        self.next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
        start.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_is_the_configured_one() {
        let mut p = Pacer::new(1_000_000);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..100 {
            now = p.reserve(now, 100_000);
        }
        // 100 × 100 kB at 1 MB/s: the last send starts after 9.9 s.
        let elapsed = now - t0;
        assert!(
            elapsed >= Duration::from_millis(9_890) && elapsed <= Duration::from_millis(9_910),
            "{elapsed:?}"
        );
    }

    #[test]
    fn idle_time_does_not_bank_more_than_the_burst() {
        let mut p = Pacer::new(1_000_000);
        let t0 = Instant::now();
        p.reserve(t0, 1000);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.reserve(later, 1_000_000), later);
        // The 1 MB just sent pushes the next send ~1 s out, minus the 10 ms burst.
        let next = p.reserve(later, 1);
        assert!(
            next - later >= Duration::from_millis(980),
            "{:?}",
            next - later
        );
    }
}
