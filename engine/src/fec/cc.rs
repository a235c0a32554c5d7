//! quinn's side of our rate control: a congestion controller whose window
//! is whatever [`crate::fec::rate::RateController`] last set.
//!
//! quinn asks its congestion controller how many bytes may be in flight and
//! paces by `window / RTT`. [`RateWindowFactory`] builds controllers that
//! read that window from a shared [`WindowHandle`]; the FEC sender's driver
//! writes it (the controlled rate × RTT, with headroom) every time the rate
//! changes. Loss events are ignored here on purpose: on the FEC plane loss
//! is repaired by coding, and the rate controller tells random loss from
//! congestion itself. The driver also paces shards to the controlled rate,
//! so this window is a ceiling, not the pacer.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn::congestion::{Controller, ControllerFactory};

/// Window before the controller has a rate (bytes): enough for the
/// handshake and the first round of startup.
pub const INITIAL_WINDOW: u64 = 128 * 1024;

/// The window shared by the driver and quinn's controller.
#[derive(Debug, Clone)]
pub struct WindowHandle(Arc<AtomicU64>);

impl Default for WindowHandle {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(INITIAL_WINDOW)))
    }
}

impl WindowHandle {
    /// Sets the window in bytes (at least 16 KiB).
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes.max(16 * 1024), Ordering::Relaxed);
    }

    /// The current window.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds [`RateWindow`] controllers on one [`WindowHandle`].
#[derive(Debug, Clone, Default)]
pub struct RateWindowFactory(pub WindowHandle);

impl ControllerFactory for RateWindowFactory {
    fn build(self: Arc<Self>, _now: std::time::Instant, _mtu: u16) -> Box<dyn Controller> {
        Box::new(RateWindow(self.0.clone()))
    }
}

/// A quinn congestion controller that reports the shared window.
#[derive(Debug, Clone)]
pub struct RateWindow(WindowHandle);

impl Controller for RateWindow {
    fn on_congestion_event(
        &mut self,
        _now: std::time::Instant,
        _sent: std::time::Instant,
        _is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        self.0.get()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        INITIAL_WINDOW
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_follow_the_handle_and_ignore_loss() {
        let handle = WindowHandle::default();
        let factory = Arc::new(RateWindowFactory(handle.clone()));
        let now = std::time::Instant::now();
        let mut c = factory.build(now, 1452);
        assert_eq!(c.window(), INITIAL_WINDOW);
        handle.set(5_000_000);
        assert_eq!(c.window(), 5_000_000);
        c.on_congestion_event(now, now, true, 1_000_000);
        assert_eq!(c.window(), 5_000_000);
        handle.set(1);
        assert_eq!(c.window(), 16 * 1024);
    }
}
