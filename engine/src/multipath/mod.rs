//! Multi-path: several QUIC connections, one per local interface, carrying
//! one session; and several transfers at once sharing them by priority.
//!
//! Sans-IO parts:
//!
//! * [`manager`]: per-path state, earliest-completion-first scheduling,
//!   liveness and re-dial back-off.
//! * [`priority`]: deficit round robin over Critical / High / Normal
//!   (50 / 30 / 20), work-conserving.
//!
//! And [`spec`]: the path list as the user gives it (`--path LOCAL=REMOTE[@RATE]`),
//! parsed and checked once.

pub mod manager;
pub mod priority;
pub mod spec;
