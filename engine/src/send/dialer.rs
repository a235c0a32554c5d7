//! Dialling the paths after the first, and re-dialling any that failed:
//! each dial is a task that connects on the path's own endpoint and joins
//! the session ([`join`]: HELLO with the session's id and token, answered
//! by WELCOME). A path's endpoint is made on its first dial and kept, with
//! the window handle that path's rate controller sets, for every re-dial.
//! An interface that does not exist (yet) fails that path's dial, not the
//! transfer: the core tries it again with back-off.

use std::time::Duration;

use quinn::Connection;
use tokio::task::{JoinError, JoinSet};

use super::links::{Frames, Links, join};
use crate::fec::cc::WindowHandle;
use crate::multipath::spec::PathSpec;
use crate::session::SessionError;
use crate::session::control::ControlWriter;
use crate::transport::Tuning;
use crate::transport::identity::Fingerprint;

/// How long dialling one path may take.
const DIAL_LIMIT: Duration = Duration::from_secs(5);

/// A finished dial: the path, and its connection or why there is none.
pub(super) type Dialed = (
    usize,
    Result<(Connection, ControlWriter, Frames), SessionError>,
);

/// The dials in flight for one session.
pub(super) struct Dialer<'a> {
    dials: JoinSet<Dialed>,
    specs: &'a [PathSpec],
    tuning: &'a Tuning,
    peer: Fingerprint,
    token: &'a str,
    session_id: [u8; 16],
}

impl<'a> Dialer<'a> {
    pub(super) fn new(
        specs: &'a [PathSpec],
        tuning: &'a Tuning,
        peer: Fingerprint,
        token: &'a str,
        session_id: [u8; 16],
    ) -> Self {
        Self {
            dials: JoinSet::new(),
            specs,
            tuning,
            peer,
            token,
            session_id,
        }
    }

    /// Starts dialling path `i` (making its endpoint in `links` first if it
    /// has none).
    pub(super) fn dial(&mut self, links: &mut Links, i: usize) {
        let endpoint = match &links.endpoints[i] {
            Some((e, _)) => e.clone(),
            None => {
                // Each path's connection gets its own window handle: its
                // controller is the core's controller for that path.
                let mut t = self.tuning.clone();
                t.rate_window = WindowHandle::default();
                let (e, _) = match self.specs[i].endpoint(self.peer, &t) {
                    Ok(e) => e,
                    Err(e) => {
                        self.dials.spawn(async move { (i, Err(e)) });
                        return;
                    }
                };
                links.endpoints[i] = Some((e.clone(), t.rate_window));
                e
            }
        };
        let (remote, token, id) = (
            self.specs[i].remote,
            self.token.as_bytes().to_vec(),
            self.session_id,
        );
        let span = tracing::info_span!("path", index = i, name = %self.specs[i].name());
        self.dials.spawn(tracing::Instrument::instrument(
            async move { (i, join(endpoint, remote, id, token, DIAL_LIMIT).await) },
            span,
        ));
    }

    /// Whether no dial is in flight ([`next`](Self::next) would wait for
    /// ever).
    pub(super) fn is_empty(&self) -> bool {
        self.dials.is_empty()
    }

    /// The next dial to finish.
    pub(super) async fn next(&mut self) -> Option<Result<Dialed, JoinError>> {
        self.dials.join_next().await
    }
}
