//! A congestion-controller wrapper that does not read a lost handshake
//! packet as congestion.
//!
//! quinn hands every loss of an ack-eliciting packet to the congestion
//! controller, the client's very first Initial included. For Cubic that
//! ends slow start before the connection has sent a byte of data: the
//! window drops to 0.7 × the initial window (about 10 packets), ssthresh
//! with it, and growth continues on the cubic curve from there. Measured on
//! the bench's `handshake-loss` scenario (200 Mbit/s, 40 ms RTT, the
//! client's first packet dropped, nothing else lost): 16 MiB took 9.6 s on
//! the reliable plane instead of about 1.5 s (results/README.md).
//!
//! A packet sent before the path had acknowledged anything was sent blind:
//! a handful of handshake packets cannot have congested a path, so their
//! loss says nothing about its capacity (TCP likewise keeps slow start
//! after a lost SYN). [`HandshakeTolerant`] forwards everything to the
//! wrapped controller except congestion events whose newest lost packet was
//! sent before the first acknowledged one.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// Builds the wrapped factory's controllers inside [`HandshakeTolerant`].
pub struct HandshakeTolerantFactory(pub Arc<dyn ControllerFactory + Send + Sync>);

impl std::fmt::Debug for HandshakeTolerantFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeTolerantFactory(..)")
    }
}

impl ControllerFactory for HandshakeTolerantFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(HandshakeTolerant {
            inner: self.0.clone().build(now, current_mtu),
            filter: BlindLossFilter::default(),
        })
    }
}

/// A controller that ignores losses of packets sent before the first
/// acknowledged packet.
pub struct HandshakeTolerant {
    inner: Box<dyn Controller>,
    filter: BlindLossFilter,
}

/// The decision, apart from quinn's types: which losses count.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlindLossFilter {
    /// When the first packet ever acknowledged was sent.
    first_acked_sent: Option<Instant>,
}

impl BlindLossFilter {
    /// A packet sent at `sent` was acknowledged.
    pub fn on_ack(&mut self, sent: Instant) {
        self.first_acked_sent.get_or_insert(sent);
    }

    /// Whether a loss whose newest packet was sent at `sent` counts as
    /// congestion.
    pub fn counts(&self, sent: Instant) -> bool {
        self.first_acked_sent.is_some_and(|first| sent >= first)
    }
}

impl std::fmt::Debug for HandshakeTolerant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeTolerant")
            .field("window", &self.inner.window())
            .field("filter", &self.filter)
            .finish()
    }
}

impl Controller for HandshakeTolerant {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.filter.on_ack(sent);
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if self.filter.counts(sent) {
            self.inner
                .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            inner: self.inner.clone_box(),
            filter: self.filter,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_lost_first_initial_does_not_count() {
        // The first Initial is lost; its retransmission a probe timeout
        // later is acknowledged, and only then is the first declared lost.
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut f = BlindLossFilter::default();
        f.on_ack(t1);
        assert!(!f.counts(t0));
    }

    #[test]
    fn losses_after_the_first_acknowledged_packet_count() {
        let t0 = Instant::now();
        let mut f = BlindLossFilter::default();
        f.on_ack(t0);
        assert!(f.counts(t0));
        assert!(f.counts(t0 + Duration::from_millis(1)));
        // A later ack does not move the boundary.
        f.on_ack(t0 + Duration::from_secs(1));
        assert!(f.counts(t0 + Duration::from_millis(2)));
    }

    #[test]
    fn nothing_counts_before_any_ack() {
        assert!(!BlindLossFilter::default().counts(Instant::now()));
    }

    #[test]
    fn the_wrapper_starts_with_the_inner_window() {
        let now = Instant::now();
        let cubic = Arc::new(quinn::congestion::CubicConfig::default());
        let plain = cubic.clone().build(now, 1200);
        let wrapped = Arc::new(HandshakeTolerantFactory(cubic)).build(now, 1200);
        assert_eq!(wrapped.window(), plain.window());
        assert_eq!(wrapped.initial_window(), plain.initial_window());
    }
}
