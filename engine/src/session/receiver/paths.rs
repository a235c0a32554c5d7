//! The path set of one receiving session: every connection (path) that
//! joined it, with its block streams, shard datagrams and control frames
//! merged into one channel each, and the ways back to the sender (one path,
//! each path its own frame, or all paths).

use std::time::Duration;

use quinn::Connection;
use tokio::sync::mpsc;

use super::handshake::JoinedPath;
use crate::session::control::{self, ControlWriter};
use crate::session::error::SessionError;
use crate::session::receive_core::ReceiverCore;
use crate::wire::{Frame, close_code};

/// The paths (connections) of one receiving session. Path 0 is the one that
/// said HELLO first and carried the manifest; others joined with the same
/// session id. Block streams and control frames of every path are merged
/// into two channels; acknowledgements go back on the path a block came
/// on, or any live path if that one is gone. A path whose control stream
/// ends is dead; the session fails only when no path is left.
pub(super) struct PathSet {
    pub(super) io: Vec<PathIo>,
    pub(super) streams_tx: mpsc::Sender<(usize, quinn::RecvStream)>,
    pub(super) streams_rx: mpsc::Receiver<(usize, quinn::RecvStream)>,
    pub(super) frames_tx: mpsc::Sender<(usize, Result<Option<Frame>, SessionError>)>,
    pub(super) frames_rx: mpsc::Receiver<(usize, Result<Option<Frame>, SessionError>)>,
    pub(super) datagrams_tx: mpsc::Sender<(usize, bytes::Bytes)>,
    pub(super) datagrams_rx: mpsc::Receiver<(usize, bytes::Bytes)>,
}

pub(super) struct PathIo {
    pub(super) conn: Connection,
    pub(super) control: ControlWriter,
    pub(super) alive: bool,
}

impl PathSet {
    pub(super) fn new(conn: Connection, control: ControlWriter) -> Self {
        let (streams_tx, streams_rx) = mpsc::channel(256);
        let (frames_tx, frames_rx) = mpsc::channel(256);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(1024);
        Self {
            io: vec![PathIo {
                conn,
                control,
                alive: true,
            }],
            streams_tx,
            streams_rx,
            frames_tx,
            frames_rx,
            datagrams_tx,
            datagrams_rx,
        }
    }

    pub(super) fn primary(&mut self) -> &mut ControlWriter {
        &mut self.io[0].control
    }

    /// Starts merging path `i`'s block streams, datagrams and control
    /// frames. Datagrams wait in quinn's buffer until the session takes
    /// them (after FEC_SETUP).
    pub(super) fn start(
        &self,
        i: usize,
        mut frames: mpsc::Receiver<Result<Option<Frame>, SessionError>>,
    ) {
        let (conn, datagrams) = (self.io[i].conn.clone(), self.datagrams_tx.clone());
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if datagrams.send((i, d)).await.is_err() {
                    break;
                }
            }
        });
        let (conn, streams) = (self.io[i].conn.clone(), self.streams_tx.clone());
        tokio::spawn(async move {
            while let Ok(stream) = conn.accept_uni().await {
                if streams.send((i, stream)).await.is_err() {
                    break;
                }
            }
        });
        let merged = self.frames_tx.clone();
        tokio::spawn(async move {
            while let Some(item) = frames.recv().await {
                let last = !matches!(item, Ok(Some(_)));
                if merged.send((i, item)).await.is_err() || last {
                    return;
                }
            }
            let _ = merged.send((i, Ok(None))).await;
        });
    }

    /// Adds a joined path and starts merging it.
    pub(super) fn join(&mut self, path: JoinedPath) -> usize {
        let frames = control::spawn_reader(path.recv);
        self.io.push(PathIo {
            conn: path.conn,
            control: path.control,
            alive: true,
        });
        let i = self.io.len() - 1;
        self.start(i, frames);
        i
    }

    pub(super) fn alive(&self) -> usize {
        self.io.iter().filter(|p| p.alive).count()
    }

    /// Sends on path `i`, or on any live path if that one fails.
    pub(super) async fn send_on(&mut self, i: usize, frame: &Frame) -> Result<(), SessionError> {
        let mut last = None;
        let order = std::iter::once(i).chain(0..self.io.len());
        for j in order {
            if j >= self.io.len() || !self.io[j].alive {
                continue;
            }
            match self.io[j].control.send(frame).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.io[j].alive = false;
                    last = Some(e);
                }
            }
        }
        Err(no_path(last))
    }

    /// Sends on every live path; fails only if none took it.
    pub(super) async fn send_all(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.send_each(|_| frame.clone()).await
    }

    /// Sends each live path its own frame; fails only if none took one.
    pub(super) async fn send_each(
        &mut self,
        frame: impl Fn(usize) -> Frame,
    ) -> Result<(), SessionError> {
        match self.send_some(|i| Some(frame(i))).await {
            (true, _) => Ok(()),
            (false, last) => Err(no_path(last)),
        }
    }

    /// Sends the live paths the frame `frame` gives them, if any, on their
    /// control streams; a path whose stream fails is dead. Whether one took
    /// its frame, and the last failure.
    async fn send_some(
        &mut self,
        frame: impl Fn(usize) -> Option<Frame>,
    ) -> (bool, Option<SessionError>) {
        let mut sent = false;
        let mut last = None;
        for (i, p) in self.io.iter_mut().enumerate().filter(|(_, p)| p.alive) {
            let Some(f) = frame(i) else { continue };
            match p.control.send(&f).await {
                Ok(()) => sent = true,
                Err(e) => {
                    p.alive = false;
                    last = Some(e);
                }
            }
        }
        (sent, last)
    }

    /// Sends this round's FEC reports: a datagram on each live path that
    /// takes them (see "Reports as datagrams" in [`crate::wire`]), the
    /// FEC_STATUS on the control stream of one that does not or whose
    /// datagram is refused. Fails only if no path took its report.
    pub(super) async fn send_reports(
        &mut self,
        core: &mut ReceiverCore,
        micros: u64,
    ) -> Result<(), SessionError> {
        let rooms: Vec<Option<usize>> = self
            .io
            .iter()
            .map(|p| p.alive.then(|| p.conn.max_datagram_size()).flatten())
            .collect();
        let reports = core.reports(micros, &rooms);
        let by_datagram: Vec<bool> = self
            .io
            .iter()
            .zip(reports)
            .map(|(p, d)| d.is_some_and(|d| p.alive && p.conn.send_datagram(d).is_ok()))
            .collect();
        let stream = |i: usize| {
            (!by_datagram[i]).then(|| Frame::FecStatus(core.status(i, micros).unwrap_or_default()))
        };
        match self.send_some(stream).await {
            (false, last) if !by_datagram.contains(&true) => Err(no_path(last)),
            _ => Ok(()),
        }
    }

    pub(super) async fn send_error(&mut self, code: u16, message: &str) {
        for p in self.io.iter_mut().filter(|p| p.alive) {
            p.control.send_error_and_finish(code, message).await;
        }
    }

    /// Extra paths are closed by the sender once it has every FILE_DONE;
    /// if it does not within 5 s, they are closed here.
    pub(super) fn close_extras(&self) {
        for p in self.io.iter().skip(1) {
            let conn = p.conn.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                conn.close(close_code::DONE.into(), b"session over");
            });
        }
    }
}

/// The error when no path took a frame: the last path's failure, if any.
fn no_path(last: Option<SessionError>) -> SessionError {
    last.unwrap_or_else(|| SessionError::ConnectionLost("no path left".into()))
}
