//! Measurements a transfer reports about itself.
//!
//! [`BlockLatency`] records, for every block, the time from handing it to
//! its QUIC stream (on the FEC plane: from queueing its shards) to the
//! receiver's BLOCK_ACK (verified and written), in an
//! hdrhistogram with three significant digits; [`LatencySummary`] is what
//! reports carry.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Percentiles of block latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Blocks measured.
    pub blocks: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest block.
    pub max_ms: f64,
}

/// Block send-to-acknowledgement latencies.
#[derive(Debug)]
pub struct BlockLatency {
    histogram: Histogram<u64>,
}

impl Default for BlockLatency {
    fn default() -> Self {
        Self {
            // 1 µs .. 1 hour, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl BlockLatency {
    /// Records one block's latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.histogram.saturating_record(micros);
    }

    /// The percentiles so far, or `None` before the first block.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        Some(LatencySummary {
            blocks: self.histogram.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: self.histogram.max() as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = BlockLatency::default();
        assert_eq!(l.summary(), None);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary().unwrap();
        assert_eq!(s.blocks, 100);
        // Three significant digits: within 0.1 % of the exact value.
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }
}
