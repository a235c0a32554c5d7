//! Wire protocol v1: every byte chunkstream puts on a QUIC connection.
//!
//! This module is a pure codec: it turns [`Frame`]s and [`BlockHeader`]s into
//! bytes and back, never touches a socket, and never panics on input. Every
//! length and count is checked against a fixed bound *before* anything is
//! allocated, so a hostile peer cannot make the decoder reserve memory it did
//! not send. [`decode_frame`] is the entry point a fuzzer drives.
//!
//! # Participants and connection
//!
//! A **sender** (`chunkstream-engine send`) dials a **receiver**
//! (`chunkstream-engine recv`) over QUIC v1 with TLS 1.3 and ALPN
//! [`ALPN`] (`chunkstream/1`). The receiver presents a self-signed certificate;
//! the sender pins its fingerprint (BLAKE3 of the certificate's DER bytes, see
//! [`crate::transport::identity`]) and aborts the handshake on a mismatch, so
//! no file data ever moves to the wrong host. The sender proves itself with a
//! shared token in [`Frame::Hello`].
//!
//! # Streams
//!
//! * **Control**: the first bidirectional stream, opened by the sender. It
//!   carries [`Frame`]s in both directions, each encoded as
//!
//!   ```text
//!   frame := type:u8  body_len:u32  body[body_len]
//!   ```
//!
//!   All integers are big-endian. `body_len` is checked against the per-type
//!   bound in [`FrameType::max_body_len`] before the body is read.
//!
//! * **Blocks** (the *reliable plane*): one unidirectional stream per block,
//!   sender to receiver, holding a [`BlockHeader`] followed by exactly
//!   `len` bytes of file data and then FIN:
//!
//!   ```text
//!   block_stream := file:u32  block:u64  len:u32  digest:[u8;32]  data[len]
//!   ```
//!
//!   QUIC retransmits lost packets, so no parity travels on this plane.
//!
//! * **Shards** (the *FEC plane*, [`crate::fec`]): QUIC DATAGRAM frames,
//!   sender to receiver, never retransmitted. A block of `len` bytes is cut
//!   into `k = ceil(len / shard_bytes)` source shards (the last one
//!   zero-padded) and `r` Reed-Solomon recovery shards, `1 <= r <=
//!   max(k, 4)`, chosen by the sender per block from the loss it measured
//!   (reed-solomon-simd, whose encoding depends on `k` and `r`;
//!   `fec::codec::recovery_for`). Each datagram carries one shard:
//!
//!   ```text
//!   shard := file:u32  block:u64  index:u16  attempt:u8  recovery:u16
//!            payload[shard_bytes]
//!   ```
//!
//!   `index < k` is source shard `index`; `k <= index < k + r` is recovery
//!   shard `index - k`. `recovery` is the block's `r`, the same in every
//!   shard of the block (a receiver takes it from the first and refuses a
//!   shard that says otherwise). `attempt` starts at 0 and grows each time the
//!   receiver asks for a block again (BLOCK_RETRY), so shards of a
//!   discarded attempt are recognised and ignored.
//!
//! # Conversation
//!
//! ```text
//! sender                                     receiver
//!   HELLO(version, session id, token)  ──►
//!   MANIFEST(block size, files)        ──►   (sent without waiting for WELCOME)
//!                                      ◄──  WELCOME(version)      or ERROR + close
//!                                      ◄──  HAVE* (v2: blocks of each file it already
//!                                           holds from an interrupted transfer)
//!                                      ◄──  READY                 or ERROR + close
//!   block streams (any order, many in flight, after READY)  ──►
//!     or, on the FEC plane, right after MANIFEST (without waiting for
//!     WELCOME and READY; the receiver reads them once it sent READY):
//!     FEC_SETUP(shard_bytes, max blocks in flight)  ──►
//!     BLOCK_DIGEST per block, shard datagrams        ──►
//!                                      ◄──  FEC_STATUS every 10 ms: delivered bytes,
//!                                           and shards still needed per incomplete block
//!                                      ◄──  BLOCK_RETRY if a decoded block fails its digest
//!   FILE_HASH(file, BLAKE3 of whole file) ──►   (once the sender has hashed it)
//!                                      ◄──  BLOCK_ACK(file, block) per verified, written block
//!                                      ◄──  FILE_DONE(file) once the whole-file hash matched
//!                                           and NAME.part was renamed to NAME
//!   close(code 0 "done") after the last FILE_DONE
//! ```
//!
//! Either side may send ERROR and close the connection with one of the
//! [`close_code`]s; the message is for humans and is shown on both sides.
//!
//! A sender that pins datagrams above 1452 bytes may dial the first path
//! twice at once (at that size and at 1452; QUIC pads Initial packets to
//! the pinned size, so only a path that carries it completes the first
//! handshake) and closes the connection it does not keep with
//! [`close_code::MTU_PROBE`] before any frame: the receiver drops it quietly.
//!
//! # Frames
//!
//! | type | name | direction | body |
//! |---|---|---|---|
//! | 0x01 | HELLO | S→R | `version:u16 session_id:[u8;16] token_len:u16 token` |
//! | 0x02 | WELCOME | R→S | `version:u16` |
//! | 0x03 | MANIFEST | S→R | `block_size_log2:u8 count:u32 (size:u64 name_len:u16 name)*count` |
//! | 0x04 | READY | R→S | empty |
//! | 0x05 | FILE_HASH | S→R | `file:u32 hash:[u8;32]` |
//! | 0x06 | BLOCK_ACK | R→S | `file:u32 block:u64` |
//! | 0x07 | FILE_DONE | R→S | `file:u32` |
//! | 0x08 | ERROR | both | `code:u16 msg_len:u16 msg` |
//! | 0x09 | FEC_SETUP | S→R | `shard_bytes:u16 max_blocks:u16` |
//! | 0x0a | BLOCK_DIGEST | S→R | `file:u32 block:u64 digest:[u8;32]` |
//! | 0x0b | FEC_STATUS | R→S | `micros:u64 delivered:u64 shards:u64 count:u16 (file:u32 block:u64 needed:u32)*count` |
//! | 0x0c | BLOCK_RETRY | R→S | `file:u32 block:u64 attempt:u8` |
//! | 0x0d | HAVE | R→S | `file:u32 first:u64 count:u16 (digest_prefix:[u8;16])*count` |
//! | 0x0e | ADD_FILES | S→R | `first:u32 count:u32 (size:u64 name_len:u16 name)*count` |
//! | 0x0f | FILES_ADDED | R→S | `first:u32 count:u32` |
//! | 0x10 | KEEP_OPEN | S→R | `open:u8` (0 or 1) |
//!
//! HAVE (version 2) lists a run of consecutive blocks `first..first+count`
//! of a file that the receiver already holds, verified, in its `NAME.part`
//! (see [`crate::journal`]), with the first 16 bytes of each block's digest;
//! at most [`MAX_HAVE_BLOCKS`] per frame, as many frames as it takes, all
//! before READY. The sender compares each with its own block's digest and
//! does not send the blocks that match; a block that differs (the source
//! changed) is sent as usual and replaces the receiver's. The whole-file
//! hash still decides: a receiver claiming blocks it does not have only
//! fails its own check. A sender asked to start afresh (`--no-resume`)
//! ignores HAVE and sends every block.
//!
//! FEC_STATUS's `micros` is the receiver's clock (µs since the session
//! started, one clock for all its paths), `delivered` the shard payload bytes
//! and `shards` the shards received so far *on the path whose control stream
//! carries the report*; at most [`MAX_STATUS_ENTRIES`] incomplete blocks are
//! listed, oldest first, and that list is the session's (the same on every
//! path). The sender measures each path's delivered rate on `micros` and
//! dates the report with it ([`crate::fec::report_clock`]), so a report that
//! waited before being read still counts from when it was written.
//!
//! # Reports as datagrams (version 3)
//!
//! On the FEC plane the receiver's reports do not ride its control stream:
//! a stream delivers in order, so one lost packet of it holds back every
//! later report and acknowledgement until quinn has noticed and resent it,
//! about one and a half round trips (at 1 s RTT and 5 % loss on the way
//! back that is nearly always: the plane lost two thirds of its rate to
//! it). Every 10 ms each path gets one QUIC datagram, a *report*:
//!
//! ```text
//! report = (BLOCK_ACK | FILE_DONE)* frames, then one FEC_STATUS frame
//! ```
//!
//! Acknowledgements come first: a block that a status no longer lists was
//! just decoded and written, and its BLOCK_ACK is in the same datagram, so
//! the sender has taken it by the time it reads that status (a block
//! missing from the list and not acknowledged reads as one whose every
//! shard was lost).
//!
//! frames encoded as on the stream, back to back, at most the path's
//! datagram size ([`encode_report`]). FEC_STATUS is state (cumulative
//! counters, the current deficits), so a lost report is made up by the next
//! one; one whose list of blocks and acknowledgements do not all fit the
//! datagram goes on the control stream instead, behind the
//! acknowledgements sent there (a block left off the list, and not
//! acknowledged, reads as all lost).
//! The
//! BLOCK_ACK and FILE_DONE frames are those the receiver sent on its
//! control stream in the last few reports' time, repeated in
//! [`REPORT_ECHOES`] consecutive reports, so one lost datagram does not
//! delay them; the stream still carries each once, reliably. The sender
//! takes each acknowledgement once, whichever way it came first, and
//! ignores a report older than one it already took (datagrams may be
//! reordered). A report that fails to decode, or holds any other frame, is
//! a protocol error. A receiver whose peer takes no datagrams sends
//! FEC_STATUS on the control stream as before.
//!
//! # Sessions held open (version 4)
//!
//! A sender that may have more files for the same receiver later (the
//! agent's jobs, so that jobs of different priority classes share one
//! scheduler) holds its session open:
//!
//! ```text
//! sender                                     receiver
//!   KEEP_OPEN(1)                       ──►   (any time; right after MANIFEST
//!                                            in practice) the session does not
//!                                            end when its last file is done
//!   ADD_FILES(first, files)            ──►   names checked like MANIFEST's, per-file
//!                                            state grown; partial files checked
//!                                      ◄──  HAVE* for the new files
//!                                      ◄──  FILES_ADDED(first, count)
//!   their blocks / shards, FILE_HASH   ──►   (blocks only after FILES_ADDED)
//!   KEEP_OPEN(0)                       ──►   the session ends when every file is
//!                                            done, as one never held open
//! ```
//!
//! `first` must be the number of files the session has so far (MANIFEST's
//! plus every ADD_FILES before), so both sides number files alike; a name
//! already in the session, or past [`crate::manifest::MAX_FILES`] files or
//! [`crate::manifest::MAX_BLOCKS`] blocks in all, is refused with ERROR
//! like a bad manifest. ADD_FILES and KEEP_OPEN travel on the control
//! stream of the control path, in order with FILE_HASH. A sender that
//! closes the connection with code 0 ("done") once every file is done also
//! ends a session held open.
//!
//! # Paths
//!
//! A session may use several QUIC connections, one per network path. The
//! first connection says HELLO with a fresh random session id and carries
//! the conversation above. Every further path is a new connection whose
//! HELLO names the same session id and token, sent once the first path has
//! READY:
//!
//! ```text
//! sender (path i)                            receiver
//!   HELLO(version, same session id, token) ──►
//!                                        ◄──  WELCOME(version)   the path joined
//! ```
//!
//! A joined path carries block streams and shard datagrams like the first,
//! and its own control stream: the receiver sends that path's FEC_STATUS on
//! it every 10 ms. BLOCK_ACK for a block on a stream goes back on the path
//! the stream came on (or any live path if that one is gone); BLOCK_ACK for
//! a block decoded from shards, and FILE_DONE, go on every live path, so an
//! acknowledgement is not stuck behind a path that has just died. The
//! sender takes each of them once. A path that fails is closed; a new
//! connection may join again later with the same session id.
//!
//! Names are UTF-8, `/`-separated, relative paths; the codec only checks
//! lengths and UTF-8, the receiver checks that a name is safe to create
//! ([`crate::names`]).
//!
//! A manifest may describe at most [`crate::manifest::MAX_FILES`] files (1 Mi)
//! and [`crate::manifest::MAX_BLOCKS`] blocks in all (16 Mi; the receiver
//! allocates per-file and per-block state up front). A larger one is refused
//! with an ERROR frame before that state is allocated.
//!
//! # Versions
//!
//! Version 2 adds HAVE (resume); version 3 sends the FEC plane's reports
//! as datagrams; version 4 adds sessions held open for more files; version
//! 5 lets each FEC block have its own number of recovery shards, carried in
//! every shard's header; version 6 spreads each FEC block evenly over its
//! shards, so a short block's shards are shorter than the session's
//! ([`crate::fec::codec`]). HELLO carries the version; a receiver
//! answers a sender of another version with ERROR (BAD_VERSION) naming
//! both, which the sender shows, so a v1 peer gets a clear error on either
//! side. No compression, no directory or permission metadata; one session
//! per connection.
//!
//! ```
//! use chunkstream_engine::wire::{decode_frame, Frame};
//! let bytes = Frame::FileDone { file: 7 }.encode();
//! let (frame, used) = decode_frame(&bytes).unwrap().unwrap();
//! assert_eq!(frame, Frame::FileDone { file: 7 });
//! assert_eq!(used, bytes.len());
//! ```

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 6;
/// TLS application protocol name; a peer without it fails the handshake.
pub const ALPN: &[u8] = b"chunkstream/1";
/// Bytes of a frame header: type and body length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Bytes of a block stream header.
pub const BLOCK_HEADER_LEN: usize = 4 + 8 + 4 + 32;
/// Longest token accepted in HELLO.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest file name (bytes) accepted in MANIFEST.
pub const MAX_NAME_LEN: usize = 4096;
/// Longest ERROR message.
pub const MAX_ERROR_LEN: usize = 1024;
/// Largest MANIFEST body: about 1.5 million short names.
pub const MAX_MANIFEST_LEN: usize = 64 << 20;
/// Bytes of a shard datagram's header (FEC plane).
pub const SHARD_HEADER_LEN: usize = 4 + 8 + 2 + 1 + 2;
/// Most incomplete blocks one FEC_STATUS lists.
pub const MAX_STATUS_ENTRIES: usize = 1024;
/// Most blocks one HAVE frame lists.
pub const MAX_HAVE_BLOCKS: usize = 1024;
/// Bytes of a block digest HAVE carries.
pub const HAVE_DIGEST_LEN: usize = 16;
/// Smallest and largest block size (log2): 1 KiB (one BLAKE3 chunk) .. 64 MiB.
pub const MIN_BLOCK_SIZE_LOG2: u8 = 10;
/// See [`MIN_BLOCK_SIZE_LOG2`].
pub const MAX_BLOCK_SIZE_LOG2: u8 = 26;

/// Application close codes for `Connection::close`.
pub mod close_code {
    /// All files delivered and verified.
    pub const DONE: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// Wrong token or unsupported version.
    pub const REFUSED: u32 = 2;
    /// The receiver could not store the data (disk full, not writable, unsafe name).
    pub const STORAGE: u32 = 3;
    /// The sender could not read its source or the user cancelled.
    pub const SOURCE: u32 = 4;
    /// One of two connections a sender dialled at once to learn whether
    /// the path carries large datagrams, closed before HELLO because the
    /// other one is kept. Not an error.
    pub const MTU_PROBE: u32 = 5;
}

/// Error codes carried in [`Frame::Error`].
pub mod error_code {
    /// Token did not match.
    pub const BAD_TOKEN: u16 = 1;
    /// Unsupported protocol version.
    pub const BAD_VERSION: u16 = 2;
    /// Malformed or unexpected frame.
    pub const PROTOCOL: u16 = 3;
    /// A file name in the manifest is not safe to create.
    pub const UNSAFE_NAME: u16 = 4;
    /// The receiver failed to write (disk full, permissions).
    pub const STORAGE: u16 = 5;
    /// A block or whole-file hash did not match.
    pub const HASH_MISMATCH: u16 = 6;
    /// The sender failed to read a source file.
    pub const SOURCE: u16 = 7;
}

/// A decoding failure. Every variant names what was wrong; none is a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The type byte is not one of the frames above.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A body is longer than its type allows.
    #[error("{frame} frame body of {len} bytes exceeds the limit of {max}")]
    FrameTooLong {
        /// Frame name.
        frame: &'static str,
        /// Announced length.
        len: usize,
        /// Bound for this type.
        max: usize,
    },
    /// The body ended before a field was complete.
    #[error("{0} frame is truncated")]
    Truncated(&'static str),
    /// Bytes were left after the last field.
    #[error("{0} frame has trailing bytes")]
    TrailingBytes(&'static str),
    /// A string field was not UTF-8.
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    /// A length field exceeds its bound.
    #[error("{what} length {len} exceeds the limit of {max}")]
    FieldTooLong {
        /// Field name.
        what: &'static str,
        /// Announced length.
        len: usize,
        /// Bound.
        max: usize,
    },
    /// The manifest announces more files than its body can hold.
    #[error("manifest announces {count} files but its body holds at most {max}")]
    CountTooLarge {
        /// Announced count.
        count: u32,
        /// What the body length allows.
        max: usize,
    },
    /// A report datagram held a frame that only the control stream carries.
    #[error("a {0} frame cannot come in a report datagram")]
    NotInReport(&'static str),
    /// A one-byte flag was neither 0 nor 1.
    #[error("{0} frame has a flag that is neither 0 nor 1")]
    BadFlag(&'static str),
    /// Block size outside 1 KiB ..= 64 MiB.
    #[error("block size 2^{0} is outside 2^10 ..= 2^26")]
    BadBlockSize(u8),
}

mod frame;
mod headers;
mod report;

pub use frame::{FecStatus, Frame, FrameType, ManifestEntry, decode_frame, parse_frame_header};
pub use headers::{BlockHeader, ShardHeader};
pub use report::{REPORT_ECHOES, decode_report, encode_report};

#[cfg(test)]
mod tests;
