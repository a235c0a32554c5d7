//! The receiver's answers to HELLO and MANIFEST, as the sender sees them.
//!
//! The sender sends HELLO (version, session id, token) and MANIFEST back to
//! back; the receiver answers WELCOME (version and token accepted), then
//! READY (every file name accepted), or ERROR; between the two, HAVE
//! frames list what it holds from an earlier attempt (version 2), which
//! [`Admission`] hands back to the caller for the sender's core. It checks
//! that order, frame by frame, without doing any I/O.
//!
//! The reliable plane waits for READY before it opens block streams. The
//! FEC plane does not wait: its first shards follow MANIFEST and the
//! receiver's QUIC stack buffers them until the session reads datagrams, so
//! data is on the link one round trip earlier. Its control loop feeds the
//! frames that arrive meanwhile to [`Admission`], and any other frame before
//! READY is a protocol error. A receiver that refuses (bad token, unsafe
//! name) never reads those shards; the sender learns why from the ERROR
//! frame or the connection's close reason, as before. The receiver is
//! authenticated before anything is sent (its certificate is pinned), so
//! shards sent early go to no one else.
//!
//! Admission has a deadline (the sender's connect timeout, counted from
//! HELLO): a receiver that takes the connection but never answers would
//! otherwise hold the sender forever, since keep-alives keep the
//! connection open.

#![deny(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::error::SessionError;
use super::error::peer_error;
use crate::wire::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitWelcome,
    AwaitReady,
    Admitted,
}

/// What a frame received before READY meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still waiting for READY.
    Waiting,
    /// READY: admitted.
    Admitted,
    /// A frame for the sender's core (HAVE), in order.
    Pass(Frame),
}

/// Where the sender stands in the receiver's admission.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    state: State,
    peer: SocketAddr,
    deadline: Instant,
    timeout: Duration,
}

impl Admission {
    /// HELLO went to `peer` at `now`; READY is due within `timeout`.
    pub fn new(peer: SocketAddr, now: Instant, timeout: Duration) -> Self {
        Self {
            state: State::AwaitWelcome,
            peer,
            deadline: now + timeout,
            timeout,
        }
    }

    /// When READY is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// An error once the deadline passed without READY.
    pub fn check_deadline(&self, now: Instant) -> Result<(), SessionError> {
        if self.admitted() || now < self.deadline {
            return Ok(());
        }
        Err(SessionError::NoAnswer {
            addr: self.peer,
            secs: self.timeout.as_secs().max(1),
        })
    }

    /// Whether READY has arrived.
    pub fn admitted(&self) -> bool {
        self.state == State::Admitted
    }

    /// Takes the next control frame received before READY. ERROR is the
    /// receiver's refusal; HAVE after WELCOME is passed on; any other frame
    /// out of order is a protocol error.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Step, SessionError> {
        let expected = match self.state {
            State::AwaitWelcome => "WELCOME",
            State::AwaitReady => "READY",
            State::Admitted => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {:?} after READY",
                    frame.frame_type()
                )));
            }
        };
        match (self.state, frame) {
            (_, Frame::Error { code, message }) => Err(peer_error(code, message)),
            (State::AwaitWelcome, Frame::Welcome { .. }) => {
                self.state = State::AwaitReady;
                Ok(Step::Waiting)
            }
            (State::AwaitReady, have @ Frame::Have { .. }) => Ok(Step::Pass(have)),
            (State::AwaitReady, Frame::Ready) => {
                self.state = State::Admitted;
                Ok(Step::Admitted)
            }
            (_, other) => Err(SessionError::Protocol(format!(
                "expected {expected}, got {:?}",
                other.frame_type()
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::wire::{PROTOCOL_VERSION, error_code};

    fn admission() -> Admission {
        Admission::new(
            "127.0.0.1:4433".parse().unwrap(),
            Instant::now(),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn welcome_then_ready_admits() {
        let mut a = admission();
        assert!(!a.admitted());
        let welcome = Frame::Welcome {
            version: PROTOCOL_VERSION,
        };
        assert_eq!(a.on_frame(welcome).unwrap(), Step::Waiting);
        assert!(!a.admitted());
        let have = Frame::Have {
            file: 0,
            first: 3,
            digests: vec![[1; 16]],
        };
        assert_eq!(a.on_frame(have.clone()).unwrap(), Step::Pass(have));
        assert_eq!(a.on_frame(Frame::Ready).unwrap(), Step::Admitted);
        assert!(a.admitted());
    }

    #[test]
    fn a_refusal_carries_the_receivers_reason() {
        let mut a = admission();
        let err = a
            .on_frame(Frame::Error {
                code: error_code::BAD_TOKEN,
                message: "wrong token".into(),
            })
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::Refused(m) if m == "wrong token"),
            "{err}"
        );
    }

    #[test]
    fn no_ready_by_the_deadline_is_an_error_naming_the_receiver() {
        let t0 = Instant::now();
        let mut a = Admission::new("10.0.0.2:4433".parse().unwrap(), t0, Duration::from_secs(3));
        assert!(a.check_deadline(t0 + Duration::from_secs(2)).is_ok());
        let err = a
            .check_deadline(t0 + Duration::from_secs(3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.0.0.2:4433") && err.contains("did not answer within 3 s"),
            "{err}"
        );
        a.on_frame(Frame::Welcome {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        a.on_frame(Frame::Ready).unwrap();
        assert!(a.check_deadline(t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn frames_out_of_order_are_protocol_errors() {
        let mut a = admission();
        let err = a.on_frame(Frame::Ready).unwrap_err().to_string();
        assert!(err.contains("expected WELCOME"), "{err}");
        let mut a = admission();
        let have = Frame::Have {
            file: 0,
            first: 0,
            digests: vec![],
        };
        let err = a.on_frame(have).unwrap_err().to_string();
        assert!(err.contains("expected WELCOME, got Have"), "{err}");
        let mut a = admission();
        a.on_frame(Frame::Welcome {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        let err = a
            .on_frame(Frame::FileDone { file: 0 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected READY"), "{err}");
    }
}
