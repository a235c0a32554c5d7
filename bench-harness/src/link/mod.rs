//! Link emulation: a sans-IO [`model::LinkModel`] and the drivers that put
//! it between real programs.
//!
//! * [`model`]: what a link does to each packet (rate, queue, loss, delay,
//!   jitter, reorder, duplication), seeded so runs repeat. It lives in the
//!   `chunkstream-netsim` crate, shared with the engine's simulation tests.
//! * [`relay`]: a UDP relay on loopback, one model per direction. No root
//!   needed; `cargo test`, the demo and `chunkstream-engine relay` use it.
//! * [`tun`]: two network namespaces joined through TUN devices, so TCP
//!   crosses the same model with real delay. Root only.

mod bridge;
pub use chunkstream_netsim::link as model;
pub mod relay;
pub mod tun;

pub use model::{LinkConfig, LinkModel, LinkStats, LossModel, Verdict};
