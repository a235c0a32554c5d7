//! What can end a session, worded for the person at the terminal.

use std::net::SocketAddr;

use quinn::ConnectionError;

use crate::manifest::ManifestError;
use crate::source::SourceError;
use crate::transport::TransportError;
use crate::transport::identity::Fingerprint;
use crate::wire::{WireError, close_code};

/// Why a session failed. The `Display` text is the one-line reason the CLI
/// prints.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Nobody answered in time.
    #[error(
        "could not reach a receiver at {addr} within {secs} s (is `chunkstream-engine recv` running there, and the port open?)"
    )]
    Unreachable {
        /// Where we dialled.
        addr: SocketAddr,
        /// The bound we waited.
        secs: u64,
    },
    /// The receiver took the connection but never answered HELLO.
    #[error(
        "the receiver at {addr} accepted the connection but did not answer within {secs} s (a stuck receiver, or not chunkstream-engine recv?)"
    )]
    NoAnswer {
        /// Where we dialled.
        addr: SocketAddr,
        /// The bound we waited.
        secs: u64,
    },
    /// The receiver refused the connection for now: it runs as many
    /// connections as it takes. The sender retries with back-off for
    /// [`SendConfig::busy_timeout`](super::SendConfig::busy_timeout)
    /// before it returns this.
    #[error(
        "the receiver at {addr} is busy (it runs as many senders as it takes); still busy after {secs} s of retries"
    )]
    Busy {
        /// Where we dialled.
        addr: SocketAddr,
        /// How long we retried.
        secs: u64,
    },
    /// The receiver's certificate is not the pinned one.
    #[error(
        "the receiver at {addr} presented fingerprint {got}, but --peer is {expected}; refusing to send (wrong --peer, or not the host you meant)"
    )]
    WrongFingerprint {
        /// Where we dialled.
        addr: SocketAddr,
        /// What --peer said.
        expected: Fingerprint,
        /// What the peer presented.
        got: Fingerprint,
    },
    /// The peer refused us (wrong token, unsupported version).
    #[error("refused by the receiver: {0}")]
    Refused(String),
    /// The peer ended the session with an error of its own.
    #[error("the peer stopped the transfer: {0}")]
    PeerFailed(String),
    /// The connection died (peer gone, network gone, idle timeout).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The sender's manifest holds a name we will not create.
    #[error("{0}")]
    UnsafeName(String),
    /// A block or file hash did not match.
    #[error("verification failed: {0}")]
    HashMismatch(String),
    /// The receiver could not store data.
    #[error("{0}")]
    Storage(String),
    /// A source file could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The inputs could not be listed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Endpoint setup failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Starting the reader failed.
    #[error("cannot start the reader: {0}")]
    Reader(std::io::Error),
    /// The options asked for something this build cannot do.
    #[error("{0}")]
    Usage(String),
}

impl SessionError {
    /// The ERROR frame code that tells the peer about this failure, or
    /// `None` when the failure came from the peer or the network (there is
    /// nobody to tell, or they know already).
    pub fn error_code(&self) -> Option<u16> {
        use crate::wire::error_code as code;
        match self {
            Self::Protocol(_) => Some(code::PROTOCOL),
            Self::UnsafeName(_) => Some(code::UNSAFE_NAME),
            Self::HashMismatch(_) => Some(code::HASH_MISMATCH),
            Self::Storage(_) => Some(code::STORAGE),
            Self::Source(_) | Self::Reader(_) => Some(code::SOURCE),
            _ => None,
        }
    }

    /// The close code to send the peer when we end the session with this error.
    pub fn close_code(&self) -> u32 {
        match self {
            Self::Protocol(_)
            | Self::HashMismatch(_)
            | Self::UnsafeName(_)
            | Self::NoAnswer { .. } => close_code::PROTOCOL,
            Self::Refused(_) => close_code::REFUSED,
            Self::Storage(_) => close_code::STORAGE,
            _ => close_code::SOURCE,
        }
    }

    /// Maps a quinn connection error to what it means for the user.
    pub fn from_connection(e: ConnectionError) -> Self {
        match e {
            ConnectionError::ApplicationClosed(close) => {
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                match close.error_code.into_inner() as u32 {
                    close_code::REFUSED => Self::Refused(reason),
                    close_code::PROTOCOL => Self::Protocol(format!("peer says: {reason}")),
                    close_code::DONE => {
                        Self::ConnectionLost("the peer closed the session early".into())
                    }
                    _ => Self::PeerFailed(reason),
                }
            }
            ConnectionError::TimedOut => {
                Self::ConnectionLost("the peer stopped answering (idle timeout)".into())
            }
            ConnectionError::Reset => Self::ConnectionLost(
                "the peer reset the connection (it restarted or crashed)".into(),
            ),
            other => Self::ConnectionLost(other.to_string()),
        }
    }
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// The peer's ERROR frame as a session error.
pub(crate) fn peer_error(code: u16, message: String) -> SessionError {
    match code {
        crate::wire::error_code::BAD_TOKEN | crate::wire::error_code::BAD_VERSION => {
            SessionError::Refused(message)
        }
        crate::wire::error_code::PROTOCOL => {
            SessionError::Protocol(format!("receiver says: {message}"))
        }
        _ => SessionError::PeerFailed(message),
    }
}
