//! Framing of the control stream over quinn: a reader task that turns bytes
//! into [`Frame`]s (bounded by [`parse_frame_header`] before any allocation)
//! and a writer.

use quinn::{ReadExactError, RecvStream, SendStream};
use tokio::sync::mpsc;

use super::error::SessionError;
use crate::wire::{FRAME_HEADER_LEN, Frame, parse_frame_header};

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, SessionError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => {
            return Err(SessionError::Protocol(
                "control stream ended inside a frame".into(),
            ));
        }
        Err(ReadExactError::ReadError(e)) => return Err(read_error(e)),
    }
    let (ty, len) = parse_frame_header(header)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        ReadExactError::FinishedEarly(_) => {
            SessionError::Protocol("control stream ended inside a frame".into())
        }
        ReadExactError::ReadError(e) => read_error(e),
    })?;
    Ok(Some(Frame::decode_body(ty, &body)?))
}

/// Maps a stream read error.
pub fn read_error(e: quinn::ReadError) -> SessionError {
    match e {
        quinn::ReadError::ConnectionLost(c) => SessionError::from_connection(c),
        other => SessionError::Protocol(other.to_string()),
    }
}

/// Maps a stream write error.
pub fn write_error(e: quinn::WriteError) -> SessionError {
    match e {
        quinn::WriteError::ConnectionLost(c) => SessionError::from_connection(c),
        other => SessionError::ConnectionLost(other.to_string()),
    }
}

/// Opens a connection's control stream and says HELLO on it (session
/// `session_id`, `token`): the first path of a session and every path that
/// joins it start alike. Returns the writer and the reader task's frames.
pub async fn open_with_hello(
    conn: &quinn::Connection,
    session_id: [u8; 16],
    token: Vec<u8>,
) -> Result<
    (
        ControlWriter,
        mpsc::Receiver<Result<Option<Frame>, SessionError>>,
    ),
    SessionError,
> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(SessionError::from_connection)?;
    let mut control = ControlWriter(send);
    let frames = spawn_reader(recv);
    control
        .send(&Frame::Hello {
            version: crate::wire::PROTOCOL_VERSION,
            session_id,
            token,
        })
        .await?;
    Ok((control, frames))
}

/// Spawns a task that forwards every frame of `recv`; it ends after the
/// first error or the end of the stream (sent as `Ok(None)`).
pub fn spawn_reader(mut recv: RecvStream) -> mpsc::Receiver<Result<Option<Frame>, SessionError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let item = read_frame(&mut recv).await;
            let last = !matches!(item, Ok(Some(_)));
            if tx.send(item).await.is_err() || last {
                break;
            }
        }
    });
    rx
}

/// A control frame (or the end of its stream) tagged with the path it came
/// on and the generation of that path's connection, so that frames of a
/// closed connection are not taken for its successor's.
pub type TaggedFrame = (usize, u64, Result<Option<Frame>, SessionError>);

/// Forwards every item of one path's frame reader into `merged`, tagged;
/// the last item is an error or `Ok(None)` (the stream ended).
pub fn forward_tagged(
    path: usize,
    generation: u64,
    mut frames: mpsc::Receiver<Result<Option<Frame>, SessionError>>,
    merged: mpsc::Sender<TaggedFrame>,
) {
    tokio::spawn(async move {
        while let Some(item) = frames.recv().await {
            let last = !matches!(item, Ok(Some(_)));
            if merged.send((path, generation, item)).await.is_err() || last {
                return;
            }
        }
        let _ = merged.send((path, generation, Ok(None))).await;
    });
}

/// Writes frames to the control stream.
#[derive(Debug)]
pub struct ControlWriter(pub SendStream);

impl ControlWriter {
    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.0.write_all(&frame.encode()).await.map_err(write_error)
    }

    /// Sends a last ERROR frame and waits (at most a second) until the peer
    /// has acknowledged it, so that closing the connection right after does
    /// not discard it.
    pub async fn send_error_and_finish(&mut self, code: u16, message: &str) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            if self.send(&Frame::error(code, message)).await.is_ok() && self.0.finish().is_ok() {
                let _ = self.0.stopped().await;
            }
        })
        .await;
    }
}
