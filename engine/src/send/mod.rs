//! The sending side built as one sans-IO core ([`core`]) and one async
//! driver around it.
//!
//! [`core::SenderCore`] holds every decision of a FEC-plane session over
//! any number of paths: block accounts, per-path rate control and pacing,
//! the rate caps, liveness, progress. The driver owns quinn, the dialer and
//! the reader and does what the core says.

pub mod core;
