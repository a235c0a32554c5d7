//! The sender's QUIC connections, one live one per path: dialling and
//! joining a path to the session ([`join`]), a block on a stream of its own
//! ([`send_block`]), and [`Links`], which keeps each path's connection,
//! endpoint and the bytes its closed connections sent, and forwards each
//! connection's control frames and report datagrams to the driver's loop,
//! tagged with a generation so a closed connection's are not taken for its
//! successor's.

use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

use super::core::PathStats;
use crate::fec::cc::WindowHandle;
use crate::session::SessionError;
use crate::session::control::{self, ControlWriter, write_error};
use crate::transport::DATAGRAM_SEND_BUFFER;
use crate::wire::{Frame, close_code};
use crate::work::PreparedBlock;

/// A path's control frames, as the reader task hands them over.
pub(super) type Frames = mpsc::Receiver<Result<Option<Frame>, SessionError>>;
/// Control frames of every path, tagged with path and generation.
pub(super) type Merged = crate::session::control::TaggedFrame;

/// Dials `remote` on `endpoint` and joins session `session_id` (HELLO with
/// the session's id and token, answered by WELCOME).
pub(super) async fn join(
    endpoint: Endpoint,
    remote: std::net::SocketAddr,
    session_id: [u8; 16],
    token: Vec<u8>,
    limit: Duration,
) -> Result<(Connection, ControlWriter, Frames), SessionError> {
    let attempt = async {
        let conn = endpoint
            .connect(remote, "chunkstream")
            .map_err(|e| SessionError::ConnectionLost(format!("cannot dial {remote}: {e}")))?
            .await
            .map_err(SessionError::from_connection)?;
        let (control, mut frames) = control::open_with_hello(&conn, session_id, token).await?;
        match frames.recv().await {
            Some(Ok(Some(Frame::Welcome { .. }))) => Ok((conn, control, frames)),
            Some(Ok(Some(Frame::Error { code, message }))) => {
                Err(crate::session::error::peer_error(code, message))
            }
            Some(Err(e)) => Err(e),
            _ => Err(SessionError::Protocol(
                "expected WELCOME on a joining path".into(),
            )),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| SessionError::Unreachable {
            addr: remote,
            secs: limit.as_secs().max(1),
        })?
}

/// One block on its own stream: header, then the pooled buffer itself.
pub(super) async fn send_block(
    conn: &Connection,
    block: PreparedBlock,
    priority: i32,
) -> Result<(), SessionError> {
    let mut stream = conn
        .open_uni()
        .await
        .map_err(SessionError::from_connection)?;
    let _ = stream.set_priority(priority);
    stream
        .write_all(&block.header.encode())
        .await
        .map_err(write_error)?;
    stream.write_chunk(block.data).await.map_err(write_error)?;
    stream
        .finish()
        .map_err(|e| SessionError::ConnectionLost(format!("finishing a block stream: {e}")))?;
    Ok(())
}

/// A path's live connection: its control stream and the window handle its
/// controller sets (`fec::cc`).
pub(super) struct Link {
    pub(super) conn: Connection,
    pub(super) control: ControlWriter,
    pub(super) window: WindowHandle,
}

/// The connections: the live one per path, and what closed ones sent.
pub(super) struct Links {
    pub(super) live: Vec<Option<Link>>,
    pub(super) endpoints: Vec<Option<(Endpoint, WindowHandle)>>,
    wire_done: Vec<u64>,
    pub(super) generation: Vec<u64>,
    merged: mpsc::Sender<Merged>,
    reports: mpsc::Sender<Report>,
}

/// A report datagram's frames (or why it did not decode), tagged like
/// [`Merged`].
pub(super) type Report = (usize, u64, Result<Vec<Frame>, SessionError>);

/// Forwards the report datagrams of path `path`'s connection (see "Reports
/// as datagrams" in [`crate::wire`]) until it closes or one fails to decode.
fn forward_reports(path: usize, generation: u64, conn: Connection, out: mpsc::Sender<Report>) {
    tokio::spawn(async move {
        while let Ok(d) = conn.read_datagram().await {
            let frames = crate::wire::decode_report(&d)
                .map_err(|e| SessionError::Protocol(format!("a report datagram: {e}")));
            let bad = frames.is_err();
            if out.send((path, generation, frames)).await.is_err() || bad {
                return;
            }
        }
    });
}

impl Links {
    /// `n` paths, none connected; their control frames go to `merged`,
    /// their reports to `reports`.
    pub(super) fn new(
        n: usize,
        merged: mpsc::Sender<Merged>,
        reports: mpsc::Sender<Report>,
    ) -> Self {
        Self {
            reports,
            live: (0..n).map(|_| None).collect(),
            endpoints: vec![None; n],
            wire_done: vec![0; n],
            generation: vec![0; n],
            merged,
        }
    }

    /// Starts forwarding path `i`'s control frames, tagged with a new
    /// generation so a closed connection's frames are not taken for its
    /// successor's.
    pub(super) fn attach(&mut self, i: usize, link: Link, frames: Frames) {
        self.generation[i] += 1;
        crate::session::control::forward_tagged(i, self.generation[i], frames, self.merged.clone());
        forward_reports(
            i,
            self.generation[i],
            link.conn.clone(),
            self.reports.clone(),
        );
        self.live[i] = Some(link);
    }

    pub(super) fn retire(&mut self, i: usize, why: &[u8]) {
        if let Some(l) = self.live[i].take() {
            self.wire_done[i] += l.conn.stats().udp_tx.bytes;
            l.conn.close(close_code::DONE.into(), why);
        }
        self.generation[i] += 1;
    }

    /// What quinn measured on each live connection, for the core.
    pub(super) fn path_stats(&self) -> impl Iterator<Item = (usize, PathStats)> + '_ {
        self.live.iter().enumerate().filter_map(|(i, link)| {
            let l = link.as_ref()?;
            let stats = l.conn.stats();
            Some((
                i,
                PathStats {
                    srtt: l.conn.rtt(),
                    cwnd: stats.path.cwnd,
                    rx_bytes: stats.udp_rx.bytes,
                    sent_packets: stats.path.sent_packets,
                    lost_packets: stats.path.lost_packets,
                    datagrams_buffered: (DATAGRAM_SEND_BUFFER as u64)
                        .saturating_sub(l.conn.datagram_send_buffer_space() as u64),
                },
            ))
        })
    }

    pub(super) fn wire_bytes(&self, i: usize) -> u64 {
        self.wire_done[i]
            + self.live[i]
                .as_ref()
                .map_or(0, |l| l.conn.stats().udp_tx.bytes)
    }
}

/// Whether a path's failure ends the session: the receiver closed the
/// connection on purpose, with an error.
pub(super) fn receiver_ended(conn: &Connection) -> Option<SessionError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() as u32 != close_code::DONE =>
        {
            Some(SessionError::from_connection(
                quinn::ConnectionError::ApplicationClosed(c),
            ))
        }
        _ => None,
    }
}
