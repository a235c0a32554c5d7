//! BLAKE3 per block, merged into the whole-file hash without a second pass.
//!
//! A file is cut into blocks of a power-of-two size `B` (at least one BLAKE3
//! chunk, 1 KiB). Block `i` covers bytes `[i·B, i·B + len)`, which is exactly a
//! subtree of the BLAKE3 tree of the whole file, so each block can be hashed
//! on its own, on any thread, in any order, into a 32-byte **block digest**:
//!
//! * for a file that fits in one block, the digest *is* the file's BLAKE3 hash
//!   (root finalization);
//! * otherwise it is the block's non-root chaining value, computed with
//!   [`blake3::hazmat::HasherExt::set_input_offset`].
//!
//! [`file_hash`] merges the digests of all blocks along the same tree shape
//! BLAKE3 uses (`left_subtree_len`), so the result equals `b3sum` of the file.
//! Sender and receiver both compute block digests; the receiver compares each
//! against the one in the block header, then merges its own digests and
//! compares the result with the sender's FILE_HASH.
//!
//! ```
//! use chunkstream_engine::hash::{block_digest, file_hash};
//! let data = vec![7u8; 10_000];
//! let block = 4096;
//! let digests: Vec<_> = data
//!     .chunks(block)
//!     .enumerate()
//!     .map(|(i, c)| block_digest(c, (i * block) as u64, data.len() as u64))
//!     .collect();
//! assert_eq!(file_hash(&digests, data.len() as u64, block as u64), blake3::hash(&data));
//! ```

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// A block's 32-byte digest (see the module docs).
pub type BlockDigest = [u8; 32];

/// Digest of the block that starts at `offset` in a file of `file_len` bytes.
///
/// `offset` must be a multiple of the block size and the block must not be
/// longer than the block size; [`crate::manifest::Manifest::block_span`] guarantees both.
pub fn block_digest(data: &[u8], offset: u64, file_len: u64) -> BlockDigest {
    if offset == 0 && data.len() as u64 == file_len {
        return *blake3::hash(data).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Merges the digests of all blocks of a file into its BLAKE3 hash.
///
/// `digests[i]` is [`block_digest`] of block `i`; `block_size` is a power of
/// two ≥ 1024. Returns the hash `b3sum` prints for the file.
///
/// # Panics
/// If `digests.len()` is not the number of blocks of `file_len` at
/// `block_size`: a caller bug, not input from the wire.
pub fn file_hash(digests: &[BlockDigest], file_len: u64, block_size: u64) -> blake3::Hash {
    assert_eq!(
        digests.len() as u64,
        file_len.div_ceil(block_size),
        "one digest per block"
    );
    match digests {
        [] => blake3::hash(b""),
        [only] => blake3::Hash::from_bytes(*only),
        _ => {
            let (left, right, left_len) = split(digests, file_len, block_size);
            merge_subtrees_root(
                &subtree(left, left_len, block_size),
                &subtree(right, file_len - left_len, block_size),
                Mode::Hash,
            )
        }
    }
}

/// Chaining value of a non-root subtree of `len` bytes made of `digests`.
fn subtree(digests: &[BlockDigest], len: u64, block_size: u64) -> BlockDigest {
    if let [only] = digests {
        return *only;
    }
    let (left, right, left_len) = split(digests, len, block_size);
    merge_subtrees_non_root(
        &subtree(left, left_len, block_size),
        &subtree(right, len - left_len, block_size),
        Mode::Hash,
    )
}

/// Splits a subtree of more than one block where BLAKE3 splits it. The left
/// part is the largest power of two below `len`, hence whole blocks.
fn split(
    digests: &[BlockDigest],
    len: u64,
    block_size: u64,
) -> (&[BlockDigest], &[BlockDigest], u64) {
    let left_len = left_subtree_len(len);
    let (l, r) = digests.split_at((left_len / block_size) as usize);
    (l, r, left_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash_by_blocks(data: &[u8], block: usize) -> blake3::Hash {
        let digests: Vec<_> = data
            .chunks(block)
            .enumerate()
            .map(|(i, c)| block_digest(c, (i * block) as u64, data.len() as u64))
            .collect();
        file_hash(&digests, data.len() as u64, block as u64)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64).wrapping_mul(2654435761) as u8)
            .collect()
    }

    #[test]
    fn sizes_around_block_boundaries_match_plain_blake3() {
        for block in [1024usize, 4096, 65536] {
            for len in [
                0,
                1,
                1023,
                1024,
                1025,
                block - 1,
                block,
                block + 1,
                2 * block,
                3 * block + 7,
                7 * block + 1,
                8 * block,
                9 * block - 1,
            ] {
                let data = pattern(len);
                assert_eq!(
                    hash_by_blocks(&data, block),
                    blake3::hash(&data),
                    "len {len} block {block}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_length_and_block_size_matches_plain_blake3(len in 0usize..300_000, log2 in 10u32..16) {
            let data = pattern(len);
            prop_assert_eq!(hash_by_blocks(&data, 1 << log2), blake3::hash(&data));
        }
    }

    #[test]
    fn a_changed_byte_changes_its_block_digest_only() {
        let mut data = pattern(5000);
        let before: Vec<_> = data
            .chunks(1024)
            .enumerate()
            .map(|(i, c)| block_digest(c, i as u64 * 1024, 5000))
            .collect();
        data[2100] ^= 1;
        let after: Vec<_> = data
            .chunks(1024)
            .enumerate()
            .map(|(i, c)| block_digest(c, i as u64 * 1024, 5000))
            .collect();
        let changed: Vec<_> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert_eq!(changed, vec![2]);
    }
}
