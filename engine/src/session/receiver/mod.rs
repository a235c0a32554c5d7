//! The receiving side: endpoints on every `--listen` address, one session per
//! authenticated connection.
//!
//! [`Receiver::bind`] opens the output folder (proving it writable) and binds
//! the endpoints; [`Receiver::serve`] accepts connections. A connection whose
//! TLS handshake fails or whose token is wrong is refused and reported, but
//! is not a session: `--once` keeps waiting for a real one.
//!
//! Inside a session, every block stream is read by its own task, checked
//! against the manifest, then verified (BLAKE3 against the header's digest)
//! and written at its offset into `NAME.part` by a Rayon job. The
//! [`ReceiveTracker`](super::tracker::ReceiveTracker) says when a file has all its blocks and its announced
//! hash; the file is then verified as a whole, synced, renamed to `NAME`,
//! and FILE_DONE is sent. A failure (disk full, hash mismatch, peer gone)
//! keeps the `.part` files and never renames.
//!
//! One concept per file:
//!
//! * this file: binding the endpoints and the accept loop;
//! * `handshake`: HELLO, the token, and the registry that joins a further
//!   path (connection) to its running session;
//! * `paths`: the path set: streams, datagrams and control frames of every
//!   path of a session, merged;
//! * `session`: one session's loop: manifest, block streams, FEC
//!   reassembly (the sans-IO [`super::fec_receive`]), the tracker;
//! * `storage`: `.part` files, receive buffers, the writer thread, renaming.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::Endpoint;
use tokio::sync::mpsc;

use super::error::SessionError;
use crate::names::{OutputDir, OutputError};
use crate::transport::identity::{Fingerprint, Identity};
use crate::transport::{Tuning, server_endpoint};

/// How long an unauthenticated connection may take to say HELLO unless
/// told otherwise ([`Receiver::set_hello_timeout`]).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections a receiver runs at once unless told otherwise
/// ([`Receiver::set_max_connections`]). Each holds receive buffers and
/// a handshake's CPU; beyond this a new one is refused as busy and its
/// sender retries with back-off. Measured on this 2-core machine: 200
/// senders of 256 KiB at once with no limit, 142 failed (handshakes and
/// HELLO answers starved past their 10 s deadlines); 100 at once all
/// finished.
pub const DEFAULT_MAX_CONNECTIONS: usize = 48;

/// What a receiver reports as it works.
#[derive(Debug, Clone)]
pub enum RecvEvent {
    /// A connection was refused before any session started.
    Refused {
        /// Who.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A connection was refused because the receiver runs as many as it
    /// takes; its sender retries by itself.
    Busy {
        /// Who.
        peer: SocketAddr,
    },
    /// A sender was accepted and announced its files.
    SessionStarted {
        /// Who.
        peer: SocketAddr,
        /// Number of files.
        files: usize,
        /// Total bytes.
        bytes: u64,
    },
    /// A sender holding its session open added files to it.
    FilesAdded {
        /// Who.
        peer: SocketAddr,
        /// Number of files added.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// A file goes on from what an earlier attempt left in its `.part`.
    Resumed {
        /// Its name.
        name: String,
        /// Bytes already there, verified.
        bytes: u64,
        /// Blocks already there.
        blocks: u64,
    },
    /// Another path (connection) joined a running session.
    PathJoined {
        /// Who, from where.
        peer: SocketAddr,
    },
    /// A session ended (after [`RecvEvent::SessionStarted`], or refused
    /// before it: then with an error).
    SessionEnded {
        /// Who.
        peer: SocketAddr,
        /// Its summary, or why it failed.
        result: Result<SessionSummary, String>,
    },
    /// A file was verified and renamed into place.
    FileDone {
        /// Its name.
        name: String,
        /// Its BLAKE3, verified.
        blake3: String,
        /// Its size.
        bytes: u64,
    },
}

/// A finished session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// The sender.
    pub peer: SocketAddr,
    /// Files received.
    pub files: usize,
    /// Bytes received.
    pub bytes: u64,
    /// Wall time of the session.
    pub seconds: f64,
}

/// A bound receiver.
#[derive(Debug)]
pub struct Receiver {
    endpoints: Vec<Endpoint>,
    out: OutputDir,
    token: String,
    fingerprint: Fingerprint,
    fsync: bool,
    max_connections: usize,
    hello_timeout: Duration,
}

/// Errors starting a receiver.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The output folder is unusable.
    #[error("output folder is not writable: {0}")]
    Output(#[from] OutputError),
    /// An endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// No `--listen` address.
    #[error("no listen address")]
    NoListen,
}

impl Receiver {
    /// The receiver's fixed congestion window (bytes), enough for its
    /// reports and acknowledgements over a 2 s round trip.
    pub const RECEIVER_WINDOW: u64 = 1 << 20;

    /// Opens `out` and binds one endpoint per listen address.
    pub fn bind(
        listen: &[SocketAddr],
        out: &Path,
        token: String,
        identity: &Identity,
        tuning: &Tuning,
    ) -> Result<Self, BindError> {
        if listen.is_empty() {
            return Err(BindError::NoListen);
        }
        let out = OutputDir::open(out)?;
        // What a receiver sends is small and paced by the protocol itself
        // (acknowledgements, a report per path every 10 ms: at most about
        // a megabit a second). A loss-based controller on it only delays
        // it: with 5 % loss on the way back at 1 s RTT, Cubic held the
        // reports back for seconds (they arrived in bunches a round trip
        // apart) and the sender, blind, stalled. So its window is fixed.
        let mut tuning = tuning.clone();
        tuning.congestion = crate::transport::Congestion::Rate;
        tuning.rate_window = crate::fec::cc::WindowHandle::default();
        tuning.rate_window.set(Self::RECEIVER_WINDOW);
        let endpoints = listen
            .iter()
            .map(|&addr| server_endpoint(addr, identity, &tuning))
            .collect::<Result<_, _>>()?;
        // A block that lost a source shard is decoded; the coder's tables
        // are built on first use (~17 ms), so build them now, not during
        // the first session.
        crate::fec::codec::warm_up_in_background();
        Ok(Self {
            endpoints,
            out,
            token,
            fingerprint: identity.fingerprint(),
            fsync: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            hello_timeout: HELLO_TIMEOUT,
        })
    }

    /// With `true`, every file is synced to disk before it is renamed into
    /// place and reported done (slower; survives power loss). Off by
    /// default, as in rsync and scp: the data is verified either way.
    pub fn set_fsync(&mut self, fsync: bool) -> &mut Self {
        self.fsync = fsync;
        self
    }

    /// Connections (a session's paths, and handshakes not yet a session)
    /// run at once; a further one is refused at once, before its TLS
    /// handshake, and its sender retries with back-off. At least 1.
    pub fn set_max_connections(&mut self, n: usize) -> &mut Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a connection may take from its handshake to HELLO before
    /// it is dropped (and its slot freed); a sender that connects and
    /// never speaks holds nobody else up, since every connection has its
    /// own task.
    pub fn set_hello_timeout(&mut self, limit: Duration) -> &mut Self {
        self.hello_timeout = limit;
        self
    }

    /// The addresses really bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// The certificate fingerprint senders must pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Accepts sessions until the first one ends (`once`) or forever.
    /// Returns the result of that session with `once`.
    pub async fn serve(
        &self,
        once: bool,
        on_event: impl Fn(RecvEvent) + Send + Sync + 'static,
    ) -> Result<SessionSummary, SessionError> {
        let on_event = Arc::new(on_event);
        let (incoming_tx, mut incoming_rx) = mpsc::channel(16);
        for endpoint in &self.endpoints {
            let (endpoint, tx) = (endpoint.clone(), incoming_tx.clone());
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    if tx.send(incoming).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(incoming_tx);
        let (result_tx, mut result_rx) = mpsc::channel(16);
        let sessions: Sessions = Arc::default();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        loop {
            tokio::select! {
                incoming = incoming_rx.recv() => {
                    let Some(incoming) = incoming else {
                        return Err(SessionError::ConnectionLost("all endpoints closed".into()));
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        let peer = incoming.remote_address();
                        incoming.refuse();
                        on_event(RecvEvent::Busy { peer });
                        continue;
                    };
                    let ctx = SessionContext { out: self.out.clone(), token: self.token.clone(), fsync: self.fsync, sessions: sessions.clone(), hello_timeout: self.hello_timeout };
                    let (on_event, result_tx) = (on_event.clone(), result_tx.clone());
                    tokio::spawn(async move {
                        let outcome = handle_connection(incoming, ctx, &*on_event).await;
                        drop(slot);
                        let _ = result_tx.send(outcome).await;
                    });
                }
                Some(outcome) = result_rx.recv() => match outcome {
                    Outcome::NotASession { peer, reason } => on_event(RecvEvent::Refused { peer, reason }),
                    Outcome::Probe => tracing::debug!("a sender closed its MTU probe connection"),
                    Outcome::Joined { peer } => on_event(RecvEvent::PathJoined { peer }),
                    Outcome::Session { peer, result } => {
                        if let Err(e) = &result {
                            tracing::warn!("session failed: {e}");
                        }
                        on_event(RecvEvent::SessionEnded {
                            peer,
                            result: result.as_ref().map(Clone::clone).map_err(ToString::to_string),
                        });
                        if once {
                            for e in &self.endpoints {
                                let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
                            }
                            return result;
                        }
                    }
                },
            }
        }
    }
}

mod handshake;
pub mod partials;
mod paths;
mod session;
mod storage;

pub use handshake::constant_time_eq;
use handshake::{Outcome, SessionContext, Sessions, handle_connection};
