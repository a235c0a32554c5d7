//! Report datagrams: the FEC plane's FEC_STATUS with the latest BLOCK_ACK
//! and FILE_DONE frames, in one QUIC datagram (see "Reports as datagrams"
//! in [`super`]).

use bytes::BytesMut;

use super::*;

/// Consecutive reports that repeat each BLOCK_ACK and FILE_DONE (see
/// "Reports as datagrams"): at 5 % loss one in 3 million is lost from all.
pub const REPORT_ECHOES: u8 = 5;

/// Encodes one report datagram of at most `max_len` bytes: every one of
/// `echoes`, then `status`. `None` if they do not all fit: the status's
/// list of blocks is never cut, and no echo is left out, because the
/// sender reads a block missing from the list, and not acknowledged, as
/// one whose every shard was lost (the receiver then sends the status on
/// the control stream, behind the acknowledgements it sent there). Leaving
/// out the echoes that did not fit had a sender resend 40-80 % of 20 000
/// one-shard blocks over loopback: each block had left the list once
/// written, and its acknowledgement was on the way only by stream.
pub fn encode_report(status: &FecStatus, echoes: &[Frame], max_len: usize) -> Option<BytesMut> {
    let status = Frame::FecStatus(status.clone()).encode();
    let mut out = BytesMut::with_capacity(max_len);
    for e in echoes {
        out.extend_from_slice(&e.encode());
    }
    if out.len() + status.len() > max_len {
        return None;
    }
    out.extend_from_slice(&status);
    Some(out)
}

/// Decodes a report datagram into its frames: FEC_STATUS, BLOCK_ACK and
/// FILE_DONE only, each whole.
pub fn decode_report(mut buf: &[u8]) -> Result<Vec<Frame>, WireError> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        let Some((frame, used)) = decode_frame(buf)? else {
            return Err(WireError::Truncated("report datagram"));
        };
        match frame {
            Frame::FecStatus(_) | Frame::BlockAck { .. } | Frame::FileDone { .. } => {
                frames.push(frame)
            }
            other => return Err(WireError::NotInReport(other.frame_type().name())),
        }
        buf = &buf[used..];
    }
    Ok(frames)
}
