//! A new connection: its HELLO (version, token) checked within
//! [`Receiver::set_hello_timeout`](super::Receiver::set_hello_timeout), then either a new session or, when the HELLO names a
//! running session's id, another path joined to it through the registry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;

use super::session::run_session;
use super::{RecvEvent, SessionSummary};
use crate::names::OutputDir;
use crate::session::control::{self, ControlWriter};
use crate::session::error::SessionError;
use crate::wire::{Frame, PROTOCOL_VERSION, close_code, error_code};

#[derive(Debug, Clone)]
pub(super) struct SessionContext {
    pub(super) out: OutputDir,
    pub(super) token: String,
    pub(super) fsync: bool,
    pub(super) sessions: Sessions,
    /// How long a connection may take to say HELLO.
    pub(super) hello_timeout: std::time::Duration,
}

/// Running sessions by id: a connection whose HELLO names one of them is
/// another path of that session, not a new session.
pub(super) type Sessions =
    Arc<Mutex<std::collections::HashMap<[u8; 16], mpsc::UnboundedSender<JoinedPath>>>>;

/// A connection that joined a running session, its control stream open.
pub(super) struct JoinedPath {
    pub(super) conn: Connection,
    pub(super) control: ControlWriter,
    pub(super) recv: RecvStream,
}

pub(super) enum Outcome {
    NotASession {
        peer: SocketAddr,
        reason: String,
    },
    /// The copy of a sender's dial it closed after an MTU race.
    Probe,
    Joined {
        peer: SocketAddr,
    },
    Session {
        peer: SocketAddr,
        result: Result<SessionSummary, SessionError>,
    },
}

/// Whether the sender closed `conn` as the loser of its MTU race.
fn is_mtu_probe(conn: &Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == quinn::VarInt::from_u32(close_code::MTU_PROBE)
    )
}

pub(super) async fn handle_connection(
    incoming: quinn::Incoming,
    ctx: SessionContext,
    on_event: &(dyn Fn(RecvEvent) + Send + Sync),
) -> Outcome {
    let peer = incoming.remote_address();
    let refused = |reason: String| Outcome::NotASession { peer, reason };
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            return refused(format!(
                "TLS handshake failed ({e}); a sender with a different --peer fingerprint refuses this receiver"
            ));
        }
    };
    let hello = tokio::time::timeout(ctx.hello_timeout, async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(SessionError::from_connection)?;
        let frame = control::read_frame(&mut recv).await?;
        Ok::<_, SessionError>((send, recv, frame))
    })
    .await;
    let (send, recv, frame) = match hello {
        Err(_) => {
            return refused(format!(
                "no HELLO within {:.1} s",
                ctx.hello_timeout.as_secs_f64()
            ));
        }
        Ok(Err(_)) if is_mtu_probe(&conn) => return Outcome::Probe,
        Ok(Err(e)) => return refused(e.to_string()),
        Ok(Ok(x)) => x,
    };
    let mut control = ControlWriter(send);
    let why = match &frame {
        Some(Frame::Hello { version, .. }) if *version != PROTOCOL_VERSION => Some((
            error_code::BAD_VERSION,
            format!(
                "unsupported protocol version {version} (this receiver speaks {PROTOCOL_VERSION})"
            ),
        )),
        Some(Frame::Hello { token, .. }) if !constant_time_eq(token, ctx.token.as_bytes()) => {
            Some((error_code::BAD_TOKEN, "wrong token".to_owned()))
        }
        Some(Frame::Hello { .. }) => None,
        _ => Some((error_code::PROTOCOL, "expected HELLO".to_owned())),
    };
    if let Some((code, reason)) = why {
        control.send_error_and_finish(code, &reason).await;
        conn.close(close_code::REFUSED.into(), reason.as_bytes());
        return refused(reason);
    }
    let Some(Frame::Hello { session_id, .. }) = frame else {
        unreachable!("checked above")
    };
    let joining = ctx
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&session_id)
        .cloned();
    if let Some(session) = joining {
        if control
            .send(&Frame::Welcome {
                version: PROTOCOL_VERSION,
            })
            .await
            .is_err()
        {
            return refused("path closed while joining".into());
        }
        let path = JoinedPath {
            conn: conn.clone(),
            control,
            recv,
        };
        if session.send(path).is_err() {
            conn.close(close_code::REFUSED.into(), b"session already finished");
            return refused("joined a session that had just finished".into());
        }
        return Outcome::Joined { peer };
    }
    let (join_tx, join_rx) = mpsc::unbounded_channel();
    ctx.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(session_id, join_tx);
    let span = tracing::info_span!("session", id = %super::super::short_id(&session_id), %peer);
    let result = tracing::Instrument::instrument(
        run_session(&conn, control, recv, &ctx, on_event, join_rx),
        span,
    )
    .await;
    ctx.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&session_id);
    match &result {
        Ok(_) => {
            // The sender closes once it has every FILE_DONE; wait for that so
            // our last frames are not cut off, but not forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        Err(e) => conn.close(e.close_code().into(), e.to_string().as_bytes()),
    }
    Outcome::Session { peer, result }
}

/// Compares secrets (tokens) without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    pub(super) fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
