//! Sender and receiver drivers: the async code that ties the sans-IO
//! pieces (wire codec, tracker, pacer) to quinn, the reader and the disk.

pub(crate) mod admission;
pub(crate) mod block_memory;
pub mod classes;
pub(crate) mod closing;
pub mod control;
mod dial;
pub mod error;
pub mod fec_receive;
pub(crate) mod file_hashes;
pub mod pacer;
pub mod receive_core;
pub mod receiver;
pub mod send_report;
pub mod sender;
pub mod tracker;

pub use error::SessionError;
pub use receiver::partials::{Partial, discard_partials, list_partials};
pub use receiver::{
    BindError, DEFAULT_MAX_CONNECTIONS, Receiver, RecvEvent, SessionSummary, constant_time_eq,
};
pub use sender::{
    FileBatch, SendConfig, SendEvent, SendReport, SentFile, send_files, send_files_open,
};

/// The first bytes of a session id in hex: enough to tell sessions apart
/// in logs (`session=3f1c9a0b`).
pub(crate) fn short_id(id: &[u8; 16]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}
