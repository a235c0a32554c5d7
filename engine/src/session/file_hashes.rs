//! The sender's whole-file hashes, built from block digests as the Rayon
//! stage finishes blocks in any order. Every data-plane driver (reliable,
//! FEC, multi-path) records blocks here and sends FILE_HASH when a file's
//! last block is in.

use crate::hash::{BlockDigest, file_hash};
use crate::manifest::Manifest;
use crate::wire::BlockHeader;

/// Block digests per file, blocks still to hash, and finished file hashes.
#[derive(Debug)]
pub(crate) struct FileHashes {
    digests: Vec<Vec<Option<BlockDigest>>>,
    missing: Vec<u64>,
    /// Blocks of all files not hashed yet.
    unread: u64,
    /// Whole-file BLAKE3, once every block of the file was hashed.
    pub hashes: Vec<Option<blake3::Hash>>,
}

impl FileHashes {
    /// Nothing hashed yet, except empty files, whose hash is known now.
    pub fn new(manifest: &Manifest) -> Self {
        let mut h = Self {
            digests: Vec::new(),
            missing: Vec::new(),
            unread: 0,
            hashes: Vec::new(),
        };
        h.grow(manifest);
        h
    }

    /// `manifest` has more files than before (a session held open): track
    /// them too.
    pub fn grow(&mut self, manifest: &Manifest) {
        for f in self.missing.len()..manifest.files().len() {
            let m = manifest.block_count(f);
            self.digests.push(vec![None; m as usize]);
            self.missing.push(m);
            self.unread += m;
            self.hashes.push((m == 0).then(|| blake3::hash(b"")));
        }
    }

    /// Blocks of all files not hashed yet.
    pub fn unread(&self) -> u64 {
        self.unread
    }

    /// Records a hashed block; returns the file and its whole-file hash
    /// when this was the file's last block.
    pub fn record(
        &mut self,
        header: &BlockHeader,
        manifest: &Manifest,
    ) -> Option<(u32, blake3::Hash)> {
        let (f, b) = (header.file as usize, header.block as usize);
        self.digests[f][b] = Some(header.digest);
        self.missing[f] -= 1;
        self.unread -= 1;
        if self.missing[f] != 0 {
            return None;
        }
        let all: Vec<BlockDigest> = self.digests[f]
            .iter()
            .map(|d| d.expect("every block hashed"))
            .collect();
        let hash = file_hash(&all, manifest.files()[f].size, manifest.block_size());
        self.hashes[f] = Some(hash);
        Some((header.file, hash))
    }

    /// Whether block `block` of `file` has been hashed (false when out of
    /// range).
    pub fn has_read(&self, file: u32, block: u64) -> bool {
        self.digests
            .get(file as usize)
            .and_then(|d| d.get(block as usize))
            .is_some_and(Option::is_some)
    }

    /// Whether every block of every file has been hashed.
    pub fn all_read(&self) -> bool {
        self.unread == 0
    }
}
