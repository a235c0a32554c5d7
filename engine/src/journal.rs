//! The receiver's block journal: which blocks of a `NAME.part` were
//! verified and written, so that an interrupted transfer can go on from
//! there (sans-IO: encoding and parsing; the receiver's storage writes it).
//!
//! The journal lives beside the partial file, `NAME.part.journal`, from the
//! first written block until the file is renamed into place. It is a hint,
//! never trusted: on resume the receiver re-reads and re-hashes every block
//! the journal claims and keeps only those whose digest still matches, so
//! crash safety does not rest on the order in which data, journal and
//! metadata reach the disk. A torn last record, a lost page of the `.part`
//! or a journal from another file costs a re-sent block, never a wrong one.
//! For the same reason the journal is not fsynced: a record lost in a crash
//! costs one block sent again.
//!
//! ## Format, version 1 (all integers little-endian)
//!
//! ```text
//! header:
//!   magic            6 bytes  "CSJRNL"
//!   version          u16      1
//!   block_size_log2  u8       10..=26
//!   flags            u8       bit 0: `identity` is the sender's whole-file hash
//!   size             u64      file size in bytes
//!   identity         32 bytes zero unless flag bit 0
//!   name_len         u16      1..=MAX_NAME_LEN
//!   name             name_len bytes of UTF-8 (the name as received)
//!   check            8 bytes  BLAKE3 of everything above, first 8 bytes
//! records, appended one per written block, RECORD_LEN bytes each:
//!   block            u64      block index, < the file's block count
//!   digest           32 bytes the block's digest (`hash::block_digest`)
//!   check            8 bytes  BLAKE3 of block and digest, first 8 bytes
//! ```
//!
//! A header that does not parse or check is a journal of nothing (the
//! caller says so in one log line and starts the file afresh). Records are
//! read up to the first one that is short (a torn append), fails its check
//! or names a block past the end: [`Parsed::stopped`] says which, and the
//! records before it stand. A block recorded twice keeps its latest digest.

#![deny(clippy::disallowed_methods)]

use crate::hash::BlockDigest;

/// The journal's magic bytes.
pub const MAGIC: &[u8; 6] = b"CSJRNL";
/// The format version this module writes and reads.
pub const VERSION: u16 = 1;
/// Bytes per record.
pub const RECORD_LEN: usize = 8 + 32 + 8;
/// Suffix of a journal's file name, after the `.part` file's name.
pub const SUFFIX: &str = ".journal";

const CHECK_LEN: usize = 8;
const FIXED_LEN: usize = 6 + 2 + 1 + 1 + 8 + 32 + 2;

/// What a journal is about: the file being received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalHeader {
    /// The file's name, as received.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// log2 of the session's block size.
    pub block_size_log2: u8,
    /// The sender's whole-file hash, if it announced one.
    pub identity: Option<[u8; 32]>,
}

/// Why a journal's header was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Shorter than a header.
    #[error("the journal is truncated ({0} bytes, shorter than its header)")]
    Truncated(usize),
    /// Not a journal of ours.
    #[error("not a chunkstream journal (bad magic)")]
    Magic,
    /// A version this build does not read.
    #[error("journal version {0} is not supported (this build reads version {VERSION})")]
    Version(u16),
    /// The header's check failed.
    #[error("the journal's header is corrupted (check failed)")]
    Check,
    /// A field out of range.
    #[error("the journal's header is invalid: {0}")]
    Invalid(String),
}

/// A parsed journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What it is about.
    pub header: JournalHeader,
    /// (block, digest) per recorded block, each block once (its latest
    /// record), in the order first recorded.
    pub records: Vec<(u64, BlockDigest)>,
    /// Why reading stopped before the end, if it did.
    pub stopped: Option<String>,
}

fn check(bytes: &[u8]) -> [u8; CHECK_LEN] {
    let h = blake3::hash(bytes);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&h.as_bytes()[..CHECK_LEN]);
    out
}

/// Number of blocks of a file of `size` bytes at `2^block_size_log2`.
pub fn block_count(size: u64, block_size_log2: u8) -> u64 {
    size.div_ceil(1u64 << block_size_log2)
}

impl JournalHeader {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.name.len() + CHECK_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(self.block_size_log2);
        out.push(u8::from(self.identity.is_some()));
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.identity.unwrap_or([0; 32]));
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        let c = check(&out);
        out.extend_from_slice(&c);
        out
    }

    /// Whether this journal is about the file a sender now announces.
    pub fn matches(&self, name: &str, size: u64, block_size_log2: u8) -> bool {
        self.name == name && self.size == size && self.block_size_log2 == block_size_log2
    }
}

/// One record's bytes.
pub fn encode_record(block: u64, digest: &BlockDigest) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..8].copy_from_slice(&block.to_le_bytes());
    out[8..40].copy_from_slice(digest);
    let c = check(&out[..40]);
    out[40..].copy_from_slice(&c);
    out
}

/// Parses a whole journal (see the module docs for what stops it).
pub fn parse(bytes: &[u8]) -> Result<Parsed, JournalError> {
    if bytes.len() < FIXED_LEN + CHECK_LEN {
        return Err(JournalError::Truncated(bytes.len()));
    }
    if &bytes[..6] != MAGIC {
        return Err(JournalError::Magic);
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(JournalError::Version(version));
    }
    let block_size_log2 = bytes[8];
    let flags = bytes[9];
    let size = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"));
    let identity: [u8; 32] = bytes[18..50].try_into().expect("32 bytes");
    let name_len = usize::from(u16::from_le_bytes([bytes[50], bytes[51]]));
    let header_len = FIXED_LEN + name_len;
    if bytes.len() < header_len + CHECK_LEN {
        return Err(JournalError::Truncated(bytes.len()));
    }
    if bytes[header_len..header_len + CHECK_LEN] != check(&bytes[..header_len]) {
        return Err(JournalError::Check);
    }
    if !(10..=26).contains(&block_size_log2) {
        return Err(JournalError::Invalid(format!(
            "block size 2^{block_size_log2} is out of range"
        )));
    }
    if flags > 1 {
        return Err(JournalError::Invalid(format!("unknown flags {flags:#x}")));
    }
    if name_len == 0 || name_len > crate::wire::MAX_NAME_LEN {
        return Err(JournalError::Invalid(format!("name length {name_len}")));
    }
    let name = std::str::from_utf8(&bytes[FIXED_LEN..header_len])
        .map_err(|_| JournalError::Invalid("the name is not UTF-8".into()))?
        .to_owned();
    let header = JournalHeader {
        name,
        size,
        block_size_log2,
        identity: (flags & 1 == 1).then_some(identity),
    };
    let blocks = block_count(size, block_size_log2);
    let mut records: Vec<(u64, BlockDigest)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut stopped = None;
    let body = &bytes[header_len + CHECK_LEN..];
    for (n, rec) in body.chunks(RECORD_LEN).enumerate() {
        if rec.len() < RECORD_LEN {
            stopped = Some(format!(
                "record {n} is torn ({} of {RECORD_LEN} bytes)",
                rec.len()
            ));
            break;
        }
        if rec[40..] != check(&rec[..40]) {
            stopped = Some(format!("record {n} is corrupted (check failed)"));
            break;
        }
        let block = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        if block >= blocks {
            stopped = Some(format!(
                "record {n} claims block {block}, past the end of the file ({blocks} blocks)"
            ));
            break;
        }
        let digest: BlockDigest = rec[8..40].try_into().expect("32 bytes");
        match index.get(&block) {
            Some(&i) => records[i] = (block, digest),
            None => {
                index.insert(block, records.len());
                records.push((block, digest));
            }
        }
    }
    Ok(Parsed {
        header,
        records,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> JournalHeader {
        JournalHeader {
            name: "dir/file.bin".into(),
            size: 5 * 1024 + 7,
            block_size_log2: 10,
            identity: None,
        }
    }

    fn journal(records: &[(u64, u8)]) -> Vec<u8> {
        let mut out = header().encode();
        for &(b, d) in records {
            out.extend_from_slice(&encode_record(b, &[d; 32]));
        }
        out
    }

    #[test]
    fn a_journal_round_trips_and_keeps_each_blocks_latest_digest() {
        let bytes = journal(&[(0, 1), (5, 2), (0, 3)]);
        let p = parse(&bytes).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.records, vec![(0, [3; 32]), (5, [2; 32])]);
        assert_eq!(p.stopped, None);
        let mut h = header();
        h.identity = Some([9; 32]);
        assert_eq!(parse(&h.encode()).unwrap().header, h);
        assert!(h.matches("dir/file.bin", 5 * 1024 + 7, 10));
        assert!(!h.matches("dir/file.bin", 5 * 1024 + 7, 11));
    }

    #[test]
    fn a_torn_or_corrupted_record_ends_the_journal_there() {
        let mut bytes = journal(&[(0, 1), (1, 2), (2, 3)]);
        bytes.truncate(bytes.len() - 5);
        let p = parse(&bytes).unwrap();
        assert_eq!(p.records.len(), 2);
        assert!(p.stopped.unwrap().contains("record 2 is torn"));

        let mut bytes = journal(&[(0, 1), (1, 2), (2, 3)]);
        let at = bytes.len() - RECORD_LEN - 20;
        bytes[at] ^= 1;
        let p = parse(&bytes).unwrap();
        assert_eq!(p.records, vec![(0, [1; 32])]);
        assert!(p.stopped.unwrap().contains("record 1 is corrupted"));
    }

    #[test]
    fn a_record_past_the_end_is_refused() {
        // 5 KiB + 7 at 1 KiB blocks: blocks 0..=5.
        let p = parse(&journal(&[(5, 1), (6, 2)])).unwrap();
        assert_eq!(p.records, vec![(5, [1; 32])]);
        assert!(
            p.stopped
                .unwrap()
                .contains("claims block 6, past the end of the file (6 blocks)")
        );
    }

    #[test]
    fn bad_headers_are_named() {
        let good = journal(&[]);
        assert_eq!(parse(&good[..10]), Err(JournalError::Truncated(10)));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(parse(&b), Err(JournalError::Magic));
        let mut b = good.clone();
        b[6] = 2;
        assert_eq!(parse(&b), Err(JournalError::Version(2)));
        let mut b = good.clone();
        b[12] ^= 1;
        assert_eq!(parse(&b), Err(JournalError::Check));
        let mut h = header();
        h.block_size_log2 = 40;
        assert!(
            matches!(parse(&h.encode()), Err(JournalError::Invalid(m)) if m.contains("block size"))
        );
        // A name length pointing past the end.
        let mut b = good.clone();
        b[50] = 0xff;
        b[51] = 0xff;
        assert!(matches!(parse(&b), Err(JournalError::Truncated(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let mut j = journal(&[(1, 1)]);
            j.extend_from_slice(&bytes);
            let p = parse(&j).unwrap();
            proptest::prop_assert!(p.records.len() <= 1 + bytes.len() / RECORD_LEN);
        }
    }
}
