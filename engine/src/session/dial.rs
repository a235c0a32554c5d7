//! Dialling the receiver on the first path: the QUIC handshake, its errors
//! told apart (no answer, wrong fingerprint, refused), and the race that
//! proves a datagram size above Ethernet's.
//!
//! When the session pins a size above 1452 bytes (the route's MTU said the
//! path carries it, see [`crate::transport::path_mtu`]), [`dial_first`]
//! dials twice at once from two endpoints bound alike: at that size and at
//! 1452. quinn pads Initial packets to the pinned size in both directions,
//! so the large handshake completes only if the whole path carries such
//! datagrams. It is kept if it completes first, or within
//! [`path_mtu::late_allowance`] after the small one; otherwise the
//! session goes on at 1452 and the caller is told (a black hole: a hop
//! that drops large packets without a word). The connection not kept is
//! closed with [`close_code::MTU_PROBE`], which the receiver takes for
//! what it is rather than a refused sender.
//!
//! A receiver at its connection limit refuses new connections at once
//! (QUIC's CONNECTION_REFUSED, before any TLS work). [`dial_until_admitted`]
//! takes that for "busy", not for an error: it dials again after a jittered,
//! doubling back-off ([`busy_backoff`]) until
//! [`SendConfig::busy_timeout`] has passed. The jitter spreads a crowd of
//! refused senders out, so they do not return in one wave.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};

use super::SendEvent;
use super::error::SessionError;
use super::sender::SendConfig;
use crate::multipath::spec::PathSpec;
use crate::transport::identity::PinnedCertVerifier;
use crate::transport::{FEC_MTU, Tuning, path_mtu};
use crate::wire::close_code;

/// The first path's endpoint and connection, and the datagram size the
/// session ended up pinning (`None`: quinn's discovery).
pub(super) struct Dialled {
    pub endpoint: Endpoint,
    pub conn: Connection,
    /// `Some((tried, using))` when a black hole made the session fall back.
    pub fell_back: Option<(u16, u16)>,
}

/// First back-off after a busy refusal; each further one doubles, up to
/// [`BUSY_BACKOFF_MAX`].
const BUSY_BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// Longest back-off between dials of a busy receiver.
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(4);

/// The wait before dialling a busy receiver again after `attempt` refusals
/// (1 for the first): doubling from [`BUSY_BACKOFF_FIRST`] up to
/// [`BUSY_BACKOFF_MAX`], scaled by `jitter` (drawn from 0..1) into its
/// upper half, so refused senders spread out.
pub(super) fn busy_backoff(attempt: u32, jitter: f64) -> Duration {
    let doubled = BUSY_BACKOFF_FIRST.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    doubled
        .min(BUSY_BACKOFF_MAX)
        .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// [`dial_first`], dialling again while the receiver refuses as busy, for
/// at most [`SendConfig::busy_timeout`]; each refusal is reported as a
/// [`SendEvent::Busy`].
pub(super) async fn dial_until_admitted(
    path: &PathSpec,
    cfg: &SendConfig,
    tuning: &mut Tuning,
    on_event: &mut impl FnMut(&SendEvent),
) -> Result<Dialled, SessionError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        match dial_first(path, cfg, tuning).await {
            Err(SessionError::Busy { addr, .. }) => {
                attempt += 1;
                let retry_in = busy_backoff(attempt, rand::random::<f64>());
                if started.elapsed() + retry_in > cfg.busy_timeout {
                    return Err(SessionError::Busy {
                        addr,
                        secs: started.elapsed().as_secs(),
                    });
                }
                on_event(&SendEvent::Busy { attempt, retry_in });
                tokio::time::sleep(retry_in).await;
            }
            other => return other,
        }
    }
}

/// Dials `path` with `tuning` (its `pinned_mtu` lowered to 1452 if the
/// large size did not get through).
pub(super) async fn dial_first(
    path: &PathSpec,
    cfg: &SendConfig,
    tuning: &mut Tuning,
) -> Result<Dialled, SessionError> {
    let (endpoint, verifier) = path.endpoint(cfg.peer, tuning)?;
    if !path_mtu::needs_fallback(tuning.pinned_mtu) {
        let conn = connect(&endpoint, cfg, &verifier, cfg.connect_timeout).await?;
        return Ok(Dialled {
            endpoint,
            conn,
            fell_back: None,
        });
    }
    let tried = tuning.pinned_mtu.unwrap_or(FEC_MTU);
    let small_tuning = Tuning {
        pinned_mtu: Some(FEC_MTU),
        ..tuning.clone()
    };
    let (small_endpoint, small_verifier) = path.endpoint(cfg.peer, &small_tuning)?;
    let started = Instant::now();
    let mut large = tokio::spawn(connect_owned(endpoint.clone(), cfg.clone(), verifier));
    let mut small = tokio::spawn(connect_owned(
        small_endpoint.clone(),
        cfg.clone(),
        small_verifier,
    ));
    let joined = |r: Result<_, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(SessionError::ConnectionLost(format!("dial task: {e}"))))
    };
    let small_result = tokio::select! {
        biased;
        r = &mut large => match joined(r) {
            Ok(conn) => {
                // The large size got through; the small dial, once it
                // answers, is closed as the probe it was.
                close_when_up(small);
                return Ok(Dialled { endpoint, conn, fell_back: None });
            }
            // A wrong fingerprint or a refusal is no MTU problem.
            Err(
                e @ (SessionError::WrongFingerprint { .. }
                | SessionError::Refused(_)
                | SessionError::Busy { .. }),
            ) => {
                small.abort();
                return Err(e);
            }
            Err(_) => joined(small.await),
        },
        r = &mut small => joined(r),
    };
    let small_conn = match small_result {
        Ok(c) => c,
        Err(e) => {
            large.abort();
            return Err(e);
        }
    };
    let allowance = path_mtu::late_allowance(started.elapsed());
    if let Ok(Ok(Ok(conn))) = tokio::time::timeout(allowance, &mut large).await {
        small_conn.close(close_code::MTU_PROBE.into(), b"mtu probe");
        return Ok(Dialled {
            endpoint,
            conn,
            fell_back: None,
        });
    }
    large.abort();
    endpoint.close(close_code::MTU_PROBE.into(), b"mtu probe");
    *tuning = small_tuning;
    Ok(Dialled {
        endpoint: small_endpoint,
        conn: small_conn,
        fell_back: Some((tried, FEC_MTU)),
    })
}

type DialTask = tokio::task::JoinHandle<Result<Connection, SessionError>>;

/// Closes the dial that lost the race as soon as it is up (or drops it).
fn close_when_up(dial: DialTask) {
    tokio::spawn(async move {
        if let Ok(Ok(conn)) = dial.await {
            conn.close(close_code::MTU_PROBE.into(), b"mtu probe");
        }
    });
}

async fn connect_owned(
    endpoint: Endpoint,
    cfg: SendConfig,
    verifier: Arc<PinnedCertVerifier>,
) -> Result<Connection, SessionError> {
    connect(&endpoint, &cfg, &verifier, cfg.connect_timeout).await
}

/// Dials the first path's receiver on `endpoint`, waiting at most `limit`.
async fn connect(
    endpoint: &Endpoint,
    cfg: &SendConfig,
    verifier: &PinnedCertVerifier,
    limit: Duration,
) -> Result<Connection, SessionError> {
    let unreachable = || SessionError::Unreachable {
        addr: cfg.to(),
        secs: limit.as_secs().max(1),
    };
    let connecting = endpoint
        .connect(cfg.to(), "chunkstream")
        .map_err(|e| SessionError::ConnectionLost(format!("cannot dial {}: {e}", cfg.to())))?;
    match tokio::time::timeout(limit, connecting).await {
        Err(_) => Err(unreachable()),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            if let Some(got) = *verifier.mismatch.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(SessionError::WrongFingerprint {
                    addr: cfg.to(),
                    expected: cfg.peer,
                    got,
                });
            }
            match e {
                quinn::ConnectionError::TimedOut => Err(unreachable()),
                quinn::ConnectionError::ConnectionClosed(c)
                    if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
                {
                    Err(SessionError::Busy {
                        addr: cfg.to(),
                        secs: 0,
                    })
                }
                other => Err(SessionError::from_connection(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_backoff_doubles_to_its_cap_and_jitter_keeps_the_upper_half() {
        let ms = |a, j| busy_backoff(a, j).as_millis();
        assert_eq!(
            [ms(1, 1.0), ms(2, 1.0), ms(3, 1.0), ms(4, 1.0), ms(5, 1.0)],
            [250, 500, 1000, 2000, 4000]
        );
        assert_eq!(ms(40, 1.0), 4000, "capped, no overflow");
        assert_eq!(ms(1, 0.0), 125);
        assert_eq!(ms(3, 0.5), 750);
        assert_eq!(ms(0, 7.0), 250, "jitter clamped; attempt 0 counts as 1");
    }
}
