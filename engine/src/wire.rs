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
//!   zero-padded) and `r = max(k, 4)` Reed-Solomon recovery shards
//!   (reed-solomon-simd, whose encoding depends on `k` and `r`). Each
//!   datagram carries one shard:
//!
//!   ```text
//!   shard := file:u32  block:u64  index:u16  attempt:u8  payload[shard_bytes]
//!   ```
//!
//!   `index < k` is source shard `index`; `k <= index < k + r` is recovery
//!   shard `index - k`. `attempt` starts at 0 and grows each time the
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
//! one; one whose list of blocks does not fit the datagram goes on the
//! control stream instead (a block left off the list reads as all lost).
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
//! as datagrams. HELLO carries the version; a receiver
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

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;
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
pub const SHARD_HEADER_LEN: usize = 4 + 8 + 2 + 1;
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
    /// Block size outside 1 KiB ..= 64 MiB.
    #[error("block size 2^{0} is outside 2^10 ..= 2^26")]
    BadBlockSize(u8),
}

/// Frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// See [`Frame::Hello`].
    Hello = 0x01,
    /// See [`Frame::Welcome`].
    Welcome = 0x02,
    /// See [`Frame::Manifest`].
    Manifest = 0x03,
    /// See [`Frame::Ready`].
    Ready = 0x04,
    /// See [`Frame::FileHash`].
    FileHash = 0x05,
    /// See [`Frame::BlockAck`].
    BlockAck = 0x06,
    /// See [`Frame::FileDone`].
    FileDone = 0x07,
    /// See [`Frame::Error`].
    Error = 0x08,
    /// See [`Frame::FecSetup`].
    FecSetup = 0x09,
    /// See [`Frame::BlockDigest`].
    BlockDigest = 0x0a,
    /// See [`Frame::FecStatus`].
    FecStatus = 0x0b,
    /// See [`Frame::BlockRetry`].
    BlockRetry = 0x0c,
    /// HAVE
    Have = 0x0d,
}

impl FrameType {
    /// Parses a type byte.
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Manifest,
            0x04 => Self::Ready,
            0x05 => Self::FileHash,
            0x06 => Self::BlockAck,
            0x07 => Self::FileDone,
            0x08 => Self::Error,
            0x09 => Self::FecSetup,
            0x0a => Self::BlockDigest,
            0x0b => Self::FecStatus,
            0x0c => Self::BlockRetry,
            0x0d => Self::Have,
            other => return Err(WireError::UnknownFrameType(other)),
        })
    }

    /// Human name, as in the table above.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Welcome => "WELCOME",
            Self::Manifest => "MANIFEST",
            Self::Ready => "READY",
            Self::FileHash => "FILE_HASH",
            Self::BlockAck => "BLOCK_ACK",
            Self::FileDone => "FILE_DONE",
            Self::Error => "ERROR",
            Self::FecSetup => "FEC_SETUP",
            Self::BlockDigest => "BLOCK_DIGEST",
            Self::FecStatus => "FEC_STATUS",
            Self::BlockRetry => "BLOCK_RETRY",
            Self::Have => "HAVE",
        }
    }

    /// The largest body this type may carry; checked before reading the body.
    pub fn max_body_len(self) -> usize {
        match self {
            Self::Hello => 2 + 16 + 2 + MAX_TOKEN_LEN,
            Self::Welcome => 2,
            Self::Manifest => MAX_MANIFEST_LEN,
            Self::Ready => 0,
            Self::FileHash => 4 + 32,
            Self::BlockAck => 4 + 8,
            Self::FileDone => 4,
            Self::Error => 2 + 2 + MAX_ERROR_LEN,
            Self::FecSetup => 4,
            Self::BlockDigest => 4 + 8 + 32,
            Self::FecStatus => 8 + 8 + 8 + 2 + MAX_STATUS_ENTRIES * (4 + 8 + 4),
            Self::BlockRetry => 4 + 8 + 1,
            Self::Have => 4 + 8 + 2 + MAX_HAVE_BLOCKS * HAVE_DIGEST_LEN,
        }
    }
}

/// Parses and bounds-checks a frame header: returns the type and body length.
pub fn parse_frame_header(header: [u8; FRAME_HEADER_LEN]) -> Result<(FrameType, usize), WireError> {
    let ty = FrameType::from_byte(header[0])?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > ty.max_body_len() {
        return Err(WireError::FrameTooLong {
            frame: ty.name(),
            len,
            max: ty.max_body_len(),
        });
    }
    Ok((ty, len))
}

/// One entry of a manifest: a file's relative name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `/`-separated relative name (validated by the receiver).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// A control-stream message. See the module docs for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Sender's greeting: protocol version, session id, and the shared token.
    Hello {
        /// Protocol version the sender speaks.
        version: u16,
        /// Random id naming this transfer (joins paths in multi-path).
        session_id: [u8; 16],
        /// Shared secret the receiver was started with or printed.
        token: Vec<u8>,
    },
    /// Receiver accepts the sender.
    Welcome {
        /// Protocol version the receiver speaks.
        version: u16,
    },
    /// The files of this session.
    Manifest {
        /// log2 of the block size in bytes.
        block_size_log2: u8,
        /// Files, indexed by position.
        files: Vec<ManifestEntry>,
    },
    /// Receiver has prepared every output file; blocks may flow.
    Ready,
    /// Whole-file BLAKE3 hash, sent once the sender has hashed every block.
    FileHash {
        /// Index into the manifest.
        file: u32,
        /// BLAKE3 of the whole file (what `b3sum` prints).
        hash: [u8; 32],
    },
    /// A block was verified and written by the receiver.
    BlockAck {
        /// Index into the manifest.
        file: u32,
        /// Block index within the file.
        block: u64,
    },
    /// A file was verified as a whole and renamed into place.
    FileDone {
        /// Index into the manifest.
        file: u32,
    },
    /// A fatal error; the sender of this frame closes the connection next.
    Error {
        /// One of [`error_code`].
        code: u16,
        /// Human-readable, at most [`MAX_ERROR_LEN`] bytes.
        message: String,
    },
    /// The sender switches to the FEC plane (right after MANIFEST).
    FecSetup {
        /// Payload bytes of every shard (even).
        shard_bytes: u16,
        /// Most blocks the sender keeps incomplete at once.
        max_blocks: u16,
    },
    /// A block's digest, for checking it once decoded (FEC plane).
    BlockDigest {
        /// Index into the manifest.
        file: u32,
        /// Block index within the file.
        block: u64,
        /// [`crate::hash::block_digest`] of the block.
        digest: [u8; 32],
    },
    /// What the receiver has (FEC plane).
    FecStatus(FecStatus),
    /// A decoded block failed its digest: send it again as `attempt`.
    BlockRetry {
        /// Index into the manifest.
        file: u32,
        /// Block index within the file.
        block: u64,
        /// The attempt whose shards will be accepted from now on.
        attempt: u8,
    },
    /// Blocks the receiver already holds (resume).
    Have {
        /// Index into the manifest.
        file: u32,
        /// First block of the run.
        first: u64,
        /// First [`HAVE_DIGEST_LEN`] bytes of each block's digest, from
        /// `first` on (at most [`MAX_HAVE_BLOCKS`]).
        digests: Vec<[u8; HAVE_DIGEST_LEN]>,
    },
}

/// The body of FEC_STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FecStatus {
    /// Receiver's clock: µs since its session started.
    pub micros: u64,
    /// Shard payload bytes received so far.
    pub delivered: u64,
    /// Shards received so far.
    pub shards: u64,
    /// Incomplete blocks: (file, block, shards still needed).
    pub needed: Vec<(u32, u64, u32)>,
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Hello { .. } => FrameType::Hello,
            Self::Welcome { .. } => FrameType::Welcome,
            Self::Manifest { .. } => FrameType::Manifest,
            Self::Ready => FrameType::Ready,
            Self::FileHash { .. } => FrameType::FileHash,
            Self::BlockAck { .. } => FrameType::BlockAck,
            Self::FileDone { .. } => FrameType::FileDone,
            Self::Error { .. } => FrameType::Error,
            Self::FecSetup { .. } => FrameType::FecSetup,
            Self::BlockDigest { .. } => FrameType::BlockDigest,
            Self::FecStatus(_) => FrameType::FecStatus,
            Self::BlockRetry { .. } => FrameType::BlockRetry,
            Self::Have { .. } => FrameType::Have,
        }
    }

    /// Builds an ERROR frame, truncating the message to [`MAX_ERROR_LEN`] bytes
    /// on a character boundary.
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self::Error { code, message }
    }

    /// Encodes header and body. Fields longer than their bound are the
    /// caller's bug; they are truncated to the bound rather than producing a
    /// frame the peer would reject (names are validated before encoding).
    pub fn encode(&self) -> Bytes {
        let mut body = BytesMut::new();
        match self {
            Self::Hello {
                version,
                session_id,
                token,
            } => {
                let token = &token[..token.len().min(MAX_TOKEN_LEN)];
                body.put_u16(*version);
                body.put_slice(session_id);
                body.put_u16(token.len() as u16);
                body.put_slice(token);
            }
            Self::Welcome { version } => body.put_u16(*version),
            Self::Manifest {
                block_size_log2,
                files,
            } => {
                body.put_u8(*block_size_log2);
                body.put_u32(files.len() as u32);
                for f in files {
                    let name = &f.name.as_bytes()[..f.name.len().min(MAX_NAME_LEN)];
                    body.put_u64(f.size);
                    body.put_u16(name.len() as u16);
                    body.put_slice(name);
                }
            }
            Self::Ready => {}
            Self::FileHash { file, hash } => {
                body.put_u32(*file);
                body.put_slice(hash);
            }
            Self::BlockAck { file, block } => {
                body.put_u32(*file);
                body.put_u64(*block);
            }
            Self::FileDone { file } => body.put_u32(*file),
            Self::Error { code, message } => {
                let msg = &message.as_bytes()[..message.len().min(MAX_ERROR_LEN)];
                body.put_u16(*code);
                body.put_u16(msg.len() as u16);
                body.put_slice(msg);
            }
            Self::FecSetup {
                shard_bytes,
                max_blocks,
            } => {
                body.put_u16(*shard_bytes);
                body.put_u16(*max_blocks);
            }
            Self::BlockDigest {
                file,
                block,
                digest,
            } => {
                body.put_u32(*file);
                body.put_u64(*block);
                body.put_slice(digest);
            }
            Self::FecStatus(st) => {
                let needed = &st.needed[..st.needed.len().min(MAX_STATUS_ENTRIES)];
                body.put_u64(st.micros);
                body.put_u64(st.delivered);
                body.put_u64(st.shards);
                body.put_u16(needed.len() as u16);
                for &(file, block, n) in needed {
                    body.put_u32(file);
                    body.put_u64(block);
                    body.put_u32(n);
                }
            }
            Self::BlockRetry {
                file,
                block,
                attempt,
            } => {
                body.put_u32(*file);
                body.put_u64(*block);
                body.put_u8(*attempt);
            }
            Self::Have {
                file,
                first,
                digests,
            } => {
                let digests = &digests[..digests.len().min(MAX_HAVE_BLOCKS)];
                body.put_u32(*file);
                body.put_u64(*first);
                body.put_u16(digests.len() as u16);
                for d in digests {
                    body.put_slice(d);
                }
            }
        }
        let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + body.len());
        out.put_u8(self.frame_type() as u8);
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        out.freeze()
    }

    /// Decodes a body whose header was already checked by [`parse_frame_header`].
    pub fn decode_body(ty: FrameType, body: &[u8]) -> Result<Self, WireError> {
        if body.len() > ty.max_body_len() {
            return Err(WireError::FrameTooLong {
                frame: ty.name(),
                len: body.len(),
                max: ty.max_body_len(),
            });
        }
        let name = ty.name();
        let mut r = Reader {
            buf: body,
            frame: name,
        };
        let frame = match ty {
            FrameType::Hello => {
                let version = r.u16()?;
                let session_id = r.array::<16>()?;
                let token_len = r.u16()? as usize;
                r.check_len("token", token_len, MAX_TOKEN_LEN)?;
                let token = r.bytes(token_len)?.to_vec();
                Self::Hello {
                    version,
                    session_id,
                    token,
                }
            }
            FrameType::Welcome => Self::Welcome { version: r.u16()? },
            FrameType::Manifest => {
                let block_size_log2 = r.u8()?;
                if !(MIN_BLOCK_SIZE_LOG2..=MAX_BLOCK_SIZE_LOG2).contains(&block_size_log2) {
                    return Err(WireError::BadBlockSize(block_size_log2));
                }
                let count = r.u32()?;
                // Each entry takes at least 10 bytes: bound the allocation by
                // what the body could really hold.
                let max = r.buf.len() / 10;
                if count as usize > max {
                    return Err(WireError::CountTooLarge { count, max });
                }
                let mut files = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let size = r.u64()?;
                    let name_len = r.u16()? as usize;
                    r.check_len("file name", name_len, MAX_NAME_LEN)?;
                    let name = std::str::from_utf8(r.bytes(name_len)?)
                        .map_err(|_| WireError::BadUtf8("file name"))?
                        .to_owned();
                    files.push(ManifestEntry { name, size });
                }
                Self::Manifest {
                    block_size_log2,
                    files,
                }
            }
            FrameType::Ready => Self::Ready,
            FrameType::FileHash => Self::FileHash {
                file: r.u32()?,
                hash: r.array::<32>()?,
            },
            FrameType::BlockAck => Self::BlockAck {
                file: r.u32()?,
                block: r.u64()?,
            },
            FrameType::FileDone => Self::FileDone { file: r.u32()? },
            FrameType::Error => {
                let code = r.u16()?;
                let len = r.u16()? as usize;
                r.check_len("error message", len, MAX_ERROR_LEN)?;
                let message = std::str::from_utf8(r.bytes(len)?)
                    .map_err(|_| WireError::BadUtf8("error message"))?
                    .to_owned();
                Self::Error { code, message }
            }
            FrameType::FecSetup => Self::FecSetup {
                shard_bytes: r.u16()?,
                max_blocks: r.u16()?,
            },
            FrameType::BlockDigest => Self::BlockDigest {
                file: r.u32()?,
                block: r.u64()?,
                digest: r.array::<32>()?,
            },
            FrameType::FecStatus => {
                let micros = r.u64()?;
                let delivered = r.u64()?;
                let shards = r.u64()?;
                let count = r.u16()? as usize;
                r.check_len("FEC_STATUS entries", count, MAX_STATUS_ENTRIES)?;
                let mut needed = Vec::with_capacity(count);
                for _ in 0..count {
                    needed.push((r.u32()?, r.u64()?, r.u32()?));
                }
                Self::FecStatus(FecStatus {
                    micros,
                    delivered,
                    shards,
                    needed,
                })
            }
            FrameType::BlockRetry => Self::BlockRetry {
                file: r.u32()?,
                block: r.u64()?,
                attempt: r.u8()?,
            },
            FrameType::Have => {
                let file = r.u32()?;
                let first = r.u64()?;
                let count = r.u16()? as usize;
                r.check_len("HAVE entries", count, MAX_HAVE_BLOCKS)?;
                let mut digests = Vec::with_capacity(count);
                for _ in 0..count {
                    digests.push(r.array::<HAVE_DIGEST_LEN>()?);
                }
                Self::Have {
                    file,
                    first,
                    digests,
                }
            }
        };
        if !r.buf.is_empty() {
            return Err(WireError::TrailingBytes(name));
        }
        Ok(frame)
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more and
/// call again), `Ok(Some((frame, bytes_used)))` on success. A pure function:
/// this is what the fuzz and property tests drive.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        // Reject a bad type byte as early as possible.
        if let Some(&b) = buf.first() {
            FrameType::from_byte(b)?;
        }
        return Ok(None);
    };
    let (ty, len) = parse_frame_header(*header)?;
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((
        Frame::decode_body(ty, body)?,
        FRAME_HEADER_LEN + len,
    )))
}

/// Consecutive reports that repeat each BLOCK_ACK and FILE_DONE (see
/// "Reports as datagrams"): at 5 % loss one in 3 million is lost from all.
pub const REPORT_ECHOES: u8 = 5;

/// Encodes one report datagram of at most `max_len` bytes: as many of
/// `echoes` as fit beside `status`, then `status`. `None` if the status
/// does not fit whole: its list of blocks is never cut, because the sender
/// reads a block missing from it, and not acknowledged, as one whose every
/// shard was lost (the receiver then sends it on the control stream).
pub fn encode_report(status: &FecStatus, echoes: &[Frame], max_len: usize) -> Option<BytesMut> {
    let status = Frame::FecStatus(status.clone()).encode();
    if status.len() > max_len {
        return None;
    }
    let mut out = BytesMut::with_capacity(max_len);
    for e in echoes {
        let e = e.encode();
        if out.len() + e.len() + status.len() <= max_len {
            out.extend_from_slice(&e);
        }
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

/// The header at the start of every block stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Index into the manifest.
    pub file: u32,
    /// Block index within the file.
    pub block: u64,
    /// Bytes of data that follow.
    pub len: u32,
    /// The block's digest ([`crate::hash::block_digest`]).
    pub digest: [u8; 32],
}

impl BlockHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[0..4].copy_from_slice(&self.file.to_be_bytes());
        out[4..12].copy_from_slice(&self.block.to_be_bytes());
        out[12..16].copy_from_slice(&self.len.to_be_bytes());
        out[16..48].copy_from_slice(&self.digest);
        out
    }

    /// Decodes a header. Whether `file`, `block` and `len` fit the manifest is
    /// the receiver's check ([`crate::manifest::Manifest::check_block`]).
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> Self {
        let mut r = &b[..];
        let file = r.get_u32();
        let block = r.get_u64();
        let len = r.get_u32();
        let mut digest = [0u8; 32];
        r.copy_to_slice(&mut digest);
        Self {
            file,
            block,
            len,
            digest,
        }
    }
}

/// Bounds-checked cursor over a frame body.
struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(self.frame));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn check_len(&self, what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
        if len > max {
            return Err(WireError::FieldTooLong { what, len, max });
        }
        Ok(())
    }
}

/// The header of a shard datagram (FEC plane); see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    /// Index into the manifest.
    pub file: u32,
    /// Block index within the file.
    pub block: u64,
    /// Source shard `index < k`, else recovery shard `index - k`.
    pub index: u16,
    /// The block's attempt (0, then one more per BLOCK_RETRY).
    pub attempt: u8,
}

impl ShardHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SHARD_HEADER_LEN] {
        let mut out = [0u8; SHARD_HEADER_LEN];
        out[0..4].copy_from_slice(&self.file.to_be_bytes());
        out[4..12].copy_from_slice(&self.block.to_be_bytes());
        out[12..14].copy_from_slice(&self.index.to_be_bytes());
        out[14] = self.attempt;
        out
    }

    /// Splits a datagram into header and payload; `None` if it is shorter
    /// than a header. Whether the fields fit the manifest and the geometry
    /// is the receiver's check.
    pub fn decode(datagram: &[u8]) -> Option<(Self, &[u8])> {
        let (head, payload) = datagram.split_first_chunk::<SHARD_HEADER_LEN>()?;
        let mut r = &head[..];
        Some((
            Self {
                file: r.get_u32(),
                block: r.get_u64(),
                index: r.get_u16(),
                attempt: r.get_u8(),
            },
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let name = "[a-z0-9/._-]{1,40}";
        prop_oneof![
            (
                any::<u16>(),
                any::<[u8; 16]>(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN)
            )
                .prop_map(|(version, session_id, token)| Frame::Hello {
                    version,
                    session_id,
                    token
                }),
            any::<u16>().prop_map(|version| Frame::Welcome { version }),
            (
                MIN_BLOCK_SIZE_LOG2..=MAX_BLOCK_SIZE_LOG2,
                proptest::collection::vec((name, any::<u64>()), 0..20)
            )
                .prop_map(|(block_size_log2, files)| Frame::Manifest {
                    block_size_log2,
                    files: files
                        .into_iter()
                        .map(|(name, size)| ManifestEntry { name, size })
                        .collect()
                }),
            Just(Frame::Ready),
            (any::<u32>(), any::<[u8; 32]>())
                .prop_map(|(file, hash)| Frame::FileHash { file, hash }),
            (any::<u32>(), any::<u64>()).prop_map(|(file, block)| Frame::BlockAck { file, block }),
            any::<u32>().prop_map(|file| Frame::FileDone { file }),
            (any::<u16>(), ".{0,200}").prop_map(|(code, message)| Frame::error(code, message)),
            (any::<u16>(), any::<u16>()).prop_map(|(shard_bytes, max_blocks)| Frame::FecSetup {
                shard_bytes,
                max_blocks
            }),
            (any::<u32>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(file, block, digest)| {
                Frame::BlockDigest {
                    file,
                    block,
                    digest,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<(u32, u64, u32)>(), 0..50)
            )
                .prop_map(|(micros, delivered, shards, needed)| Frame::FecStatus(
                    FecStatus {
                        micros,
                        delivered,
                        shards,
                        needed
                    }
                )),
            (any::<u32>(), any::<u64>(), any::<u8>()).prop_map(|(file, block, attempt)| {
                Frame::BlockRetry {
                    file,
                    block,
                    attempt,
                }
            }),
            (
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec(any::<[u8; 16]>(), 0..40)
            )
                .prop_map(|(file, first, digests)| Frame::Have {
                    file,
                    first,
                    digests
                }),
        ]
    }

    proptest! {
        #[test]
        fn shard_headers_round_trip(file: u32, block: u64, index: u16, attempt: u8, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let h = ShardHeader { file, block, index, attempt };
            let mut d = h.encode().to_vec();
            d.extend_from_slice(&payload);
            let (back, rest) = ShardHeader::decode(&d).unwrap();
            prop_assert_eq!(back, h);
            prop_assert_eq!(rest, &payload[..]);
            prop_assert!(ShardHeader::decode(&d[..SHARD_HEADER_LEN - 1]).is_none());
        }

        #[test]
        fn frames_round_trip(frame in arb_frame()) {
            let bytes = frame.encode();
            let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
            prop_assert_eq!(decoded, frame);
            prop_assert_eq!(used, bytes.len());
        }

        #[test]
        fn every_strict_prefix_is_incomplete(frame in arb_frame()) {
            let bytes = frame.encode();
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode_frame(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn garbage_behind_a_valid_header_never_panics(
            ty in 1u8..=8,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn block_headers_round_trip(file: u32, block: u64, len: u32, digest: [u8; 32]) {
            let h = BlockHeader { file, block, len, digest };
            prop_assert_eq!(BlockHeader::decode(&h.encode()), h);
        }
    }

    #[test]
    fn oversized_body_is_refused_before_reading_it() {
        let mut header = [FrameType::Manifest as u8, 0, 0, 0, 0];
        header[1..].copy_from_slice(&((MAX_MANIFEST_LEN + 1) as u32).to_be_bytes());
        assert!(matches!(
            parse_frame_header(header),
            Err(WireError::FrameTooLong {
                frame: "MANIFEST",
                ..
            })
        ));
        // A HELLO claiming 4 GiB is refused from its header alone.
        assert!(matches!(
            decode_frame(&[0x01, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::FrameTooLong { frame: "HELLO", .. })
        ));
    }

    #[test]
    fn manifest_count_is_bounded_by_body_length() {
        // Claims 4 billion files in an 8-byte body: must not allocate for them.
        let body = [20u8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0];
        assert_eq!(
            Frame::decode_body(FrameType::Manifest, &body),
            Err(WireError::CountTooLarge {
                count: u32::MAX,
                max: 0
            })
        );
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            decode_frame(&[0x42]),
            Err(WireError::UnknownFrameType(0x42))
        );
        let bad_utf8 = [0x08, 0, 0, 0, 6, 0, 1, 0, 2, 0xff, 0xfe];
        assert_eq!(
            decode_frame(&bad_utf8),
            Err(WireError::BadUtf8("error message"))
        );
        let trailing = [0x07, 0, 0, 0, 5, 0, 0, 0, 1, 9];
        assert_eq!(
            decode_frame(&trailing),
            Err(WireError::FrameTooLong {
                frame: "FILE_DONE",
                len: 5,
                max: 4
            })
        );
        let block_size = [0x03, 0, 0, 0, 5, 9, 0, 0, 0, 0];
        assert_eq!(decode_frame(&block_size), Err(WireError::BadBlockSize(9)));
        let short_token = [
            0x01, 0, 0, 0, 20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
        ];
        assert_eq!(
            decode_frame(&short_token),
            Err(WireError::Truncated("HELLO"))
        );
    }

    fn status(entries: usize) -> FecStatus {
        FecStatus {
            micros: 7,
            delivered: 1 << 20,
            shards: 750,
            needed: (0..entries as u64).map(|b| (0, b, 3)).collect(),
        }
    }

    #[test]
    fn a_report_carries_its_status_and_echoes_and_decodes_back() {
        let echoes = vec![
            Frame::BlockAck { file: 0, block: 9 },
            Frame::FileDone { file: 0 },
        ];
        let d = encode_report(&status(3), &echoes, 1200).expect("fits");
        let frames = decode_report(&d).unwrap();
        assert_eq!(frames[2], Frame::FecStatus(status(3)));
        assert_eq!(&frames[..2], &echoes[..]);
    }

    #[test]
    fn a_report_is_never_cut_inside_its_status_and_echoes_fill_what_is_left() {
        let echoes: Vec<Frame> = (0..40)
            .map(|b| Frame::BlockAck { file: 1, block: b })
            .collect();
        let d = encode_report(&status(64), &echoes, 1200).expect("fits");
        assert!(d.len() <= 1200, "{}", d.len());
        let frames = decode_report(&d).unwrap();
        assert_eq!(frames.last(), Some(&Frame::FecStatus(status(64))));
        assert_eq!(
            frames.len(),
            1 + (1200 - (FRAME_HEADER_LEN + 26 + 64 * 16)) / 17
        );
        assert_eq!(encode_report(&status(100), &echoes, 1200), None);
    }

    #[test]
    fn a_report_with_a_stream_only_frame_or_a_cut_frame_is_refused() {
        let mut d = encode_report(&status(1), &[], 1200).unwrap();
        d.extend_from_slice(&Frame::Ready.encode());
        assert_eq!(decode_report(&d), Err(WireError::NotInReport("READY")));
        let d = encode_report(&status(1), &[], 1200).unwrap();
        assert_eq!(
            decode_report(&d[..d.len() - 1]),
            Err(WireError::Truncated("report datagram"))
        );
        assert_eq!(decode_report(&[]), Ok(vec![]));
    }

    #[test]
    fn error_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let Frame::Error { message, .. } = Frame::error(1, long) else {
            unreachable!()
        };
        assert!(message.len() <= MAX_ERROR_LEN);
        assert!(message.chars().all(|c| c == 'é'));
    }
}
