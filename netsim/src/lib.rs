//! # chunkstream-netsim
//!
//! Network simulation shared by the engine's tests and the bench harness
//! (neqo's `test-fixture/src/sim/` is the model).
//!
//! * [`link`]: what one direction of a link does to each packet (rate and
//!   tail-drop queue, Bernoulli or Gilbert-Elliott loss, delay, jitter,
//!   reorder, duplication), seeded so runs repeat. The bench's UDP relay and
//!   TUN bridge drive it on the wall clock; [`path`] drives it on a virtual
//!   one.
//! * [`path`]: a simulated two-way path (a link each way) carrying opaque
//!   packets between two sans-IO peers, with a virtual clock that the test
//!   advances: seconds of transfer in milliseconds of test time, the same
//!   verdicts for the same seed.
//!
//! Nothing here reads a clock: every call takes `now`.

pub mod link;
pub mod path;

pub use link::{LinkConfig, LinkModel, LinkStats, LossModel, Verdict};
