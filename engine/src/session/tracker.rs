//! Sans-IO accounting of a receiving session: which blocks of which file
//! have been verified and written, which whole-file hashes the sender
//! announced, and when a file is ready to be checked and renamed.
//!
//! [`ReceiveTracker`] is driven by the receiver with three inputs:
//! [`ReceiveTracker::block_arrived`] when a block stream's header is read
//! (refusing duplicates), [`ReceiveTracker::block_written`] once its digest
//! matched and it is on disk, and [`ReceiveTracker::file_hash`] when the
//! sender's FILE_HASH arrives. Each returns `Some(file)` when that file has
//! all its blocks *and* its announced hash; [`ReceiveTracker::verify`] then
//! merges the block digests and compares.
//!
//! A resumed file starts with the blocks its `.part` already holds
//! ([`ReceiveTracker::hold`], verified against the journal before): they
//! count as written, but a block the sender sends again (its source
//! changed) is taken as any other and replaces the held one.

#![deny(clippy::disallowed_methods)]

use crate::hash::{BlockDigest, file_hash};
use crate::manifest::Manifest;

#[derive(Debug, Clone)]
struct FileState {
    digests: Vec<Option<BlockDigest>>,
    arrived: Vec<bool>,
    /// Held from an earlier attempt and not sent again (yet).
    held: Vec<bool>,
    missing: u64,
    announced: Option<[u8; 32]>,
    done: bool,
}

/// Per-file block accounting of one receiving session.
#[derive(Debug, Clone)]
pub struct ReceiveTracker {
    manifest: Manifest,
    files: Vec<FileState>,
    files_left: usize,
}

impl ReceiveTracker {
    /// Tracks the files of `manifest`.
    pub fn new(manifest: Manifest) -> Self {
        let mut t = Self {
            manifest: Manifest::new(manifest.block_size(), Vec::new())
                .expect("the block size of a checked manifest"),
            files: Vec::new(),
            files_left: 0,
        };
        t.grow(manifest);
        t
    }

    /// `manifest` is this tracker's with more files after them (ADD_FILES).
    pub fn grow(&mut self, manifest: Manifest) {
        for f in self.files.len()..manifest.files().len() {
            let n = manifest.block_count(f) as usize;
            self.files.push(FileState {
                digests: vec![None; n],
                arrived: vec![false; n],
                held: vec![false; n],
                missing: n as u64,
                announced: None,
                done: false,
            });
            self.files_left += 1;
        }
        self.manifest = manifest;
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A block stream for (file, block) started. Refuses a block seen before.
    /// The caller has checked the block against the manifest.
    pub fn block_arrived(&mut self, file: u32, block: u64) -> Result<(), String> {
        let seen = &mut self.files[file as usize].arrived[block as usize];
        if std::mem::replace(seen, true) {
            return Err(format!("block {block} of file {file} sent twice"));
        }
        Ok(())
    }

    /// Whether a stream for (file, block) was already seen.
    pub fn has_arrived(&self, file: u32, block: u64) -> bool {
        self.files[file as usize].arrived[block as usize]
    }

    /// Whether (file, block) is verified and written in this session (a
    /// held block is not: the sender may send it again).
    pub fn is_written(&self, file: u32, block: u64) -> bool {
        let f = &self.files[file as usize];
        f.digests[block as usize].is_some() && !f.held[block as usize]
    }

    /// A block was verified and written. Returns the file if it is now ready.
    pub fn block_written(&mut self, file: u32, block: u64, digest: BlockDigest) -> Option<u32> {
        let f = &mut self.files[file as usize];
        f.held[block as usize] = false;
        if f.digests[block as usize].replace(digest).is_none() {
            f.missing -= 1;
        }
        self.ready(file)
    }

    /// (file, block) is already in the `.part`, verified, from an earlier
    /// attempt. Out-of-range blocks are ignored (the caller parsed them from
    /// a journal checked against this manifest).
    pub fn hold(&mut self, file: u32, block: u64, digest: BlockDigest) {
        let Some(f) = self.files.get_mut(file as usize) else {
            return;
        };
        let b = block as usize;
        if b >= f.digests.len() || f.digests[b].is_some() {
            return;
        }
        f.digests[b] = Some(digest);
        f.held[b] = true;
        f.missing -= 1;
    }

    /// The sender announced a file's hash. Returns the file if it is ready.
    pub fn file_hash(&mut self, file: u32, hash: [u8; 32]) -> Result<Option<u32>, String> {
        let f = self.files.get_mut(file as usize).ok_or_else(|| {
            format!(
                "FILE_HASH for file {file} of {}",
                self.manifest.files().len()
            )
        })?;
        match f.announced {
            // Sent again after the sender's control path changed.
            Some(known) if known == hash => return Ok(None),
            Some(_) => {
                return Err(format!(
                    "FILE_HASH for file {file} sent twice, and different"
                ));
            }
            None => f.announced = Some(hash),
        }
        Ok(self.ready(file))
    }

    fn ready(&self, file: u32) -> Option<u32> {
        let f = &self.files[file as usize];
        (f.missing == 0 && f.announced.is_some() && !f.done).then_some(file)
    }

    /// Merges the block digests of a ready file and compares with the
    /// announced hash. Returns the verified hash.
    pub fn verify(&self, file: u32) -> Result<blake3::Hash, String> {
        let f = &self.files[file as usize];
        let digests: Vec<_> = f
            .digests
            .iter()
            .map(|d| d.expect("ready files have every block"))
            .collect();
        let entry = &self.manifest.files()[file as usize];
        let got = file_hash(&digests, entry.size, self.manifest.block_size());
        let announced = blake3::Hash::from_bytes(f.announced.expect("ready files have a hash"));
        if got != announced {
            return Err(format!(
                "{:?}: received data hashes to {got}, sender announced {announced}",
                entry.name
            ));
        }
        Ok(got)
    }

    /// Marks a file as renamed into place. Returns true when every file is.
    pub fn file_done(&mut self, file: u32) -> bool {
        let f = &mut self.files[file as usize];
        if !std::mem::replace(&mut f.done, true) {
            self.files_left -= 1;
        }
        self.files_left == 0
    }

    /// True when every file is done (also for an empty manifest).
    pub fn all_done(&self) -> bool {
        self.files_left == 0
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use crate::hash::block_digest;
    use crate::wire::ManifestEntry;
    use proptest::prelude::*;

    fn setup(sizes: &[u64]) -> (ReceiveTracker, Vec<Vec<u8>>) {
        let files = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ManifestEntry {
                name: format!("f{i}"),
                size,
            })
            .collect();
        let data = sizes
            .iter()
            .map(|&s| (0..s).map(|i| (i % 251) as u8).collect())
            .collect();
        (
            ReceiveTracker::new(Manifest::new(1024, files).unwrap()),
            data,
        )
    }

    proptest! {
        #[test]
        fn any_arrival_order_completes_each_file_once(order in Just(()).prop_perturb(|_, mut rng| {
            let mut v: Vec<(u32, Option<u64>)> = vec![(0, None), (1, None), (2, None)];
            for b in 0..5 { v.push((0, Some(b))); }
            v.push((1, Some(0)));
            for i in (1..v.len()).rev() { v.swap(i, (rng.next_u32() as usize) % (i + 1)); }
            v
        })) {
            let (mut t, data) = setup(&[4100, 1, 0]);
            let mut completed = Vec::new();
            for (file, block) in order {
                let d = &data[file as usize];
                let ready = match block {
                    Some(b) => {
                        t.block_arrived(file, b).unwrap();
                        let start = (b * 1024) as usize;
                        let chunk = &d[start..(start + 1024).min(d.len())];
                        t.block_written(file, b, block_digest(chunk, start as u64, d.len() as u64))
                    }
                    None => t.file_hash(file, *blake3::hash(d).as_bytes()).unwrap(),
                };
                if let Some(f) = ready {
                    prop_assert_eq!(t.verify(f).unwrap(), blake3::hash(&data[f as usize]));
                    completed.push(f);
                    t.file_done(f);
                }
            }
            completed.sort();
            prop_assert_eq!(completed, vec![0, 1, 2]);
            prop_assert!(t.all_done());
        }
    }

    #[test]
    fn held_blocks_count_and_a_block_sent_again_replaces_its_digest() {
        let (mut t, data) = setup(&[3000]);
        let d = &data[0];
        let digest = |b: usize, bytes: &[u8]| block_digest(bytes, (b * 1024) as u64, 3000);
        // Blocks 0 and 2 held; block 0's held digest is stale (its source
        // changed since).
        t.hold(0, 0, [7; 32]);
        t.hold(0, 2, digest(2, &d[2048..]));
        t.hold(0, 9, [1; 32]);
        assert!(!t.is_written(0, 0), "a held block may come again");
        assert_eq!(t.file_hash(0, *blake3::hash(d).as_bytes()).unwrap(), None);
        t.block_arrived(0, 1).unwrap();
        assert_eq!(t.block_written(0, 1, digest(1, &d[1024..2048])), Some(0));
        assert!(t.verify(0).is_err(), "the stale held block fails the file");
        // Sent again: replaces it, the count stays.
        t.block_arrived(0, 0).unwrap();
        assert_eq!(t.block_written(0, 0, digest(0, &d[..1024])), Some(0));
        assert!(t.is_written(0, 0));
        assert_eq!(t.verify(0).unwrap(), blake3::hash(d));
    }

    #[test]
    fn a_wrong_announced_hash_fails_verification() {
        let (mut t, data) = setup(&[10]);
        t.block_arrived(0, 0).unwrap();
        assert_eq!(t.block_written(0, 0, block_digest(&data[0], 0, 10)), None);
        assert_eq!(t.file_hash(0, [0; 32]).unwrap(), Some(0));
        assert!(t.verify(0).unwrap_err().contains("sender announced"));
    }

    #[test]
    fn duplicates_are_refused_and_an_identical_hash_again_is_a_no_op() {
        let (mut t, _) = setup(&[10]);
        t.block_arrived(0, 0).unwrap();
        assert!(t.block_arrived(0, 0).unwrap_err().contains("twice"));
        t.file_hash(0, [1; 32]).unwrap();
        // Sent again after the sender's control path changed.
        assert_eq!(t.file_hash(0, [1; 32]), Ok(None));
        assert!(
            t.file_hash(0, [2; 32])
                .unwrap_err()
                .contains("twice, and different")
        );
        assert!(t.file_hash(9, [1; 32]).unwrap_err().contains("file 9 of 1"));
    }
}
