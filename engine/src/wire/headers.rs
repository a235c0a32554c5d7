//! The headers that start a block stream (reliable plane) and a shard
//! datagram (FEC plane); layouts in the module docs of [`super`].

use bytes::Buf;

use super::*;

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
    /// The block's recovery shards `r` (the same in all its shards).
    pub recovery: u16,
}

impl ShardHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SHARD_HEADER_LEN] {
        let mut out = [0u8; SHARD_HEADER_LEN];
        out[0..4].copy_from_slice(&self.file.to_be_bytes());
        out[4..12].copy_from_slice(&self.block.to_be_bytes());
        out[12..14].copy_from_slice(&self.index.to_be_bytes());
        out[14] = self.attempt;
        out[15..17].copy_from_slice(&self.recovery.to_be_bytes());
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
                recovery: r.get_u16(),
            },
            payload,
        ))
    }
}
