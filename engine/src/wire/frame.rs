//! Control frames: their type bytes and bounds, the [`Frame`] codec, and
//! report datagrams (the layouts are in the module docs of [`super`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

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
    /// See [`Frame::Have`].
    Have = 0x0d,
    /// See [`Frame::AddFiles`].
    AddFiles = 0x0e,
    /// See [`Frame::FilesAdded`].
    FilesAdded = 0x0f,
    /// See [`Frame::KeepOpen`].
    KeepOpen = 0x10,
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
            0x0e => Self::AddFiles,
            0x0f => Self::FilesAdded,
            0x10 => Self::KeepOpen,
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
            Self::AddFiles => "ADD_FILES",
            Self::FilesAdded => "FILES_ADDED",
            Self::KeepOpen => "KEEP_OPEN",
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
            Self::AddFiles => MAX_MANIFEST_LEN,
            Self::FilesAdded => 4 + 4,
            Self::KeepOpen => 1,
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
    /// More files for a session held open (version 4).
    AddFiles {
        /// Index the first of them takes: the session's file count so far.
        first: u32,
        /// Files, indexed from `first` on.
        files: Vec<ManifestEntry>,
    },
    /// The receiver took files `first..first + count` (after its HAVE
    /// frames for them): their blocks may flow.
    FilesAdded {
        /// First file added.
        first: u32,
        /// How many.
        count: u32,
    },
    /// Whether the session stays open once every file is done (more may
    /// be added), or may end then.
    KeepOpen {
        /// `true`: wait for more files.
        open: bool,
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
            Self::AddFiles { .. } => FrameType::AddFiles,
            Self::FilesAdded { .. } => FrameType::FilesAdded,
            Self::KeepOpen { .. } => FrameType::KeepOpen,
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
                put_entries(&mut body, files);
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
            Self::AddFiles { first, files } => {
                body.put_u32(*first);
                put_entries(&mut body, files);
            }
            Self::FilesAdded { first, count } => {
                body.put_u32(*first);
                body.put_u32(*count);
            }
            Self::KeepOpen { open } => body.put_u8(u8::from(*open)),
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
                let files = r.entries()?;
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
            FrameType::AddFiles => Self::AddFiles {
                first: r.u32()?,
                files: r.entries()?,
            },
            FrameType::FilesAdded => Self::FilesAdded {
                first: r.u32()?,
                count: r.u32()?,
            },
            FrameType::KeepOpen => match r.u8()? {
                0 => Self::KeepOpen { open: false },
                1 => Self::KeepOpen { open: true },
                _ => return Err(WireError::BadFlag(name)),
            },
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

/// The entries of MANIFEST and ADD_FILES.
fn put_entries(body: &mut BytesMut, files: &[ManifestEntry]) {
    body.put_u32(files.len() as u32);
    for f in files {
        let name = &f.name.as_bytes()[..f.name.len().min(MAX_NAME_LEN)];
        body.put_u64(f.size);
        body.put_u16(name.len() as u16);
        body.put_slice(name);
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
    /// `count:u32 (size:u64 name_len:u16 name)*count` (MANIFEST, ADD_FILES).
    fn entries(&mut self) -> Result<Vec<ManifestEntry>, WireError> {
        let count = self.u32()?;
        // Each entry takes at least 10 bytes: bound the allocation by
        // what the body could really hold.
        let max = self.buf.len() / 10;
        if count as usize > max {
            return Err(WireError::CountTooLarge { count, max });
        }
        let mut files = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let size = self.u64()?;
            let name_len = self.u16()? as usize;
            self.check_len("file name", name_len, MAX_NAME_LEN)?;
            let name = std::str::from_utf8(self.bytes(name_len)?)
                .map_err(|_| WireError::BadUtf8("file name"))?
                .to_owned();
            files.push(ManifestEntry { name, size });
        }
        Ok(files)
    }
    fn check_len(&self, what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
        if len > max {
            return Err(WireError::FieldTooLong { what, len, max });
        }
        Ok(())
    }
}
