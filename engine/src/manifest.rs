//! What a session transfers: the list of files, their sizes, and the block
//! geometry that cuts them into independently hashed, independently sent
//! blocks.
//!
//! * [`Manifest`] is the receiver's and sender's shared view: names (as they
//!   will appear under the receiver's output folder), sizes and the block size.
//! * [`SourceFile`] pairs a manifest entry with where the sender reads it.
//! * [`collect_sources`] turns the user's `send PATH...` arguments into
//!   sources: a file maps to its own name, a directory to every regular file
//!   below it, named `DIR/sub/file` (relative to the directory's parent).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::names::check_name;
use crate::wire::{BlockHeader, ManifestEntry};

/// Errors building or checking a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A source path could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The path the user gave or found while walking.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Two inputs would land on the same name at the receiver.
    #[error("two inputs would both be received as {0:?}")]
    DuplicateName(String),
    /// A name cannot be represented safely (not UTF-8, or unsafe).
    #[error("cannot send {path}: {reason}")]
    BadName {
        /// Offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Nothing to send.
    #[error("no input files")]
    Empty,
    /// The block size is not a power of two in range.
    #[error("block size {0} must be a power of two between 1 KiB and 64 MiB")]
    BadBlockSize(u64),
    /// More files than one session tracks.
    #[error("{files} files exceed the limit of {max} per session; send them in several sessions")]
    TooManyFiles {
        /// Files in the manifest.
        files: usize,
        /// [`MAX_FILES`].
        max: usize,
    },
    /// More blocks than one session tracks (per-block state is allocated
    /// up front, so the count is bounded before anything is allocated).
    #[error(
        "{blocks} blocks exceed the limit of {max} per session; use a larger --block-size or fewer files"
    )]
    TooManyBlocks {
        /// Blocks the manifest needs.
        blocks: u64,
        /// [`MAX_BLOCKS`].
        max: u64,
    },
}

/// Most blocks one session may have: 16 Mi blocks (16 TiB at the default
/// 1 MiB block size). Each block costs ~40 bytes of tracking on each side.
pub const MAX_BLOCKS: u64 = 1 << 24;

/// Most files one session may have: 1 Mi (each costs ~150 bytes of
/// tracking on each side, plus its name).
pub const MAX_FILES: usize = 1 << 20;

/// Block size and per-file sizes: everything needed to cut files into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    block_size_log2: u8,
    files: Vec<ManifestEntry>,
}

impl Manifest {
    /// Builds a manifest; `block_size` must be a power of two in 1 KiB..=64 MiB.
    pub fn new(block_size: u64, files: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        let log2 = block_size_log2(block_size)?;
        Self::from_wire(log2, files)
    }

    /// Rebuilds a manifest from a decoded MANIFEST frame (the codec already
    /// checked the block size range) and bounds its total block count.
    pub fn from_wire(
        block_size_log2: u8,
        files: Vec<ManifestEntry>,
    ) -> Result<Self, ManifestError> {
        if files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles {
                files: files.len(),
                max: MAX_FILES,
            });
        }
        let m = Self {
            block_size_log2,
            files,
        };
        let blocks = (0..m.files.len()).fold(0u64, |sum, f| sum.saturating_add(m.block_count(f)));
        if blocks > MAX_BLOCKS {
            return Err(ManifestError::TooManyBlocks {
                blocks,
                max: MAX_BLOCKS,
            });
        }
        Ok(m)
    }

    /// This manifest with `more` files appended (ADD_FILES of a session
    /// held open): the same bounds as a whole manifest, and no name twice
    /// in the session.
    pub fn extended(&self, more: &[ManifestEntry]) -> Result<Self, ManifestError> {
        let mut names: HashSet<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        if let Some(dup) = more.iter().find(|f| !names.insert(f.name.as_str())) {
            return Err(ManifestError::DuplicateName(dup.name.clone()));
        }
        let mut files = self.files.clone();
        files.extend_from_slice(more);
        Self::from_wire(self.block_size_log2, files)
    }

    /// log2 of the block size, as sent on the wire.
    pub fn block_size_log2(&self) -> u8 {
        self.block_size_log2
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1 << self.block_size_log2
    }

    /// The files, in manifest order.
    pub fn files(&self) -> &[ManifestEntry] {
        &self.files
    }

    /// Total bytes of all files (saturating: sizes come from the wire).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// Number of blocks of file `file`.
    pub fn block_count(&self, file: usize) -> u64 {
        self.files[file].size.div_ceil(self.block_size())
    }

    /// Offset and length of block `block` of file `file`.
    pub fn block_span(&self, file: usize, block: u64) -> (u64, u32) {
        let size = self.files[file].size;
        let offset = block * self.block_size();
        (offset, (size - offset).min(self.block_size()) as u32)
    }

    /// Checks a block header from the wire against the manifest: the file
    /// exists, the block is inside it, and its length is the expected one.
    /// Returns the block's offset.
    pub fn check_block(&self, h: &BlockHeader) -> Result<u64, String> {
        let Some(entry) = self.files.get(h.file as usize) else {
            return Err(format!(
                "block names file {} of {}",
                h.file,
                self.files.len()
            ));
        };
        let blocks = entry.size.div_ceil(self.block_size());
        if h.block >= blocks {
            return Err(format!(
                "block {} of {:?} is past its {} blocks",
                h.block, entry.name, blocks
            ));
        }
        let (offset, len) = self.block_span(h.file as usize, h.block);
        if h.len != len {
            return Err(format!(
                "block {} of {:?} has {} bytes, expected {}",
                h.block, entry.name, h.len, len
            ));
        }
        Ok(offset)
    }
}

/// Validates a block size and returns its log2.
pub fn block_size_log2(block_size: u64) -> Result<u8, ManifestError> {
    let ok = block_size.is_power_of_two()
        && (1u64 << crate::wire::MIN_BLOCK_SIZE_LOG2..=1u64 << crate::wire::MAX_BLOCK_SIZE_LOG2)
            .contains(&block_size);
    if !ok {
        return Err(ManifestError::BadBlockSize(block_size));
    }
    Ok(block_size.trailing_zeros() as u8)
}

/// A file the sender will read, and the name it gets at the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Where to read it.
    pub path: PathBuf,
    /// Name at the receiver (`/`-separated, relative, checked).
    pub name: String,
    /// Size when it was listed; the sender sends exactly this many bytes.
    pub size: u64,
}

/// Expands the user's inputs into source files, in a stable order.
///
/// Symbolic links met while walking a directory are skipped with a warning
/// (following them could leave the tree or loop); a symlink given directly
/// on the command line is followed, as `cp` does.
pub fn collect_sources(inputs: &[PathBuf]) -> Result<Vec<SourceFile>, ManifestError> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| ManifestError::Unreadable {
            path: input.clone(),
            source,
        })?;
        let base = input_base_name(input)?;
        if meta.is_dir() {
            walk_dir(input, &base, &mut out)?;
        } else if meta.is_file() {
            // Fail now, not mid-transfer, if it cannot be opened.
            std::fs::File::open(input).map_err(|source| ManifestError::Unreadable {
                path: input.clone(),
                source,
            })?;
            out.push(SourceFile {
                path: input.clone(),
                name: base,
                size: meta.len(),
            });
        } else {
            return Err(ManifestError::BadName {
                path: input.clone(),
                reason: "not a regular file or directory".into(),
            });
        }
    }
    if out.is_empty() && inputs.is_empty() {
        return Err(ManifestError::Empty);
    }
    let mut seen = HashSet::new();
    for f in &out {
        if !seen.insert(f.name.as_str()) {
            return Err(ManifestError::DuplicateName(f.name.clone()));
        }
    }
    Ok(out)
}

fn input_base_name(input: &Path) -> Result<String, ManifestError> {
    // `send .` or `send dir/..` has no usable name: use the canonical one.
    let canonical;
    let named = if input.file_name().is_some() {
        input
    } else {
        canonical = input
            .canonicalize()
            .map_err(|source| ManifestError::Unreadable {
                path: input.to_owned(),
                source,
            })?;
        &canonical
    };
    let name =
        named
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ManifestError::BadName {
                path: input.to_owned(),
                reason: "name is not UTF-8 or empty".into(),
            })?;
    Ok(name.to_owned())
}

fn walk_dir(dir: &Path, prefix: &str, out: &mut Vec<SourceFile>) -> Result<(), ManifestError> {
    let unreadable = |path: &Path| {
        let path = path.to_owned();
        move |source| ManifestError::Unreadable { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable(dir))?
        .collect::<Result<_, _>>()
        .map_err(unreadable(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(ManifestError::BadName {
                path,
                reason: "name is not UTF-8".into(),
            });
        };
        let full = format!("{prefix}/{name}");
        check_name(&full).map_err(|reason| ManifestError::BadName {
            path: path.clone(),
            reason: reason.to_string(),
        })?;
        let ty = entry.file_type().map_err(unreadable(&path))?;
        if ty.is_symlink() {
            tracing::warn!(path = %path.display(), "skipping symbolic link");
        } else if ty.is_dir() {
            walk_dir(&path, &full, out)?;
        } else if ty.is_file() {
            let size = entry.metadata().map_err(unreadable(&path))?.len();
            out.push(SourceFile {
                path,
                name: full,
                size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(sizes: &[u64], block: u64) -> Manifest {
        let files = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ManifestEntry {
                name: format!("f{i}"),
                size,
            })
            .collect();
        Manifest::new(block, files).unwrap()
    }

    #[test]
    fn geometry_around_block_boundaries() {
        let m = manifest(&[0, 1, 1023, 1024, 1025, 4096 * 3 + 5], 1024);
        let counts: Vec<_> = (0..6).map(|f| m.block_count(f)).collect();
        assert_eq!(counts, vec![0, 1, 1, 1, 2, 13]);
        assert_eq!(m.block_span(4, 1), (1024, 1));
        assert_eq!(m.block_span(5, 12), (12 * 1024, 5));
        assert_eq!(m.total_bytes(), 1 + 1023 + 1024 + 1025 + 4096 * 3 + 5);
    }

    #[test]
    fn block_headers_outside_the_manifest_are_refused() {
        let m = manifest(&[1025], 1024);
        let h = |file, block, len| BlockHeader {
            file,
            block,
            len,
            digest: [0; 32],
        };
        assert_eq!(m.check_block(&h(0, 1, 1)), Ok(1024));
        assert!(
            m.check_block(&h(1, 0, 1))
                .unwrap_err()
                .contains("file 1 of 1")
        );
        assert!(
            m.check_block(&h(0, 2, 1))
                .unwrap_err()
                .contains("past its 2 blocks")
        );
        assert!(
            m.check_block(&h(0, 0, 1))
                .unwrap_err()
                .contains("expected 1024")
        );
        assert!(m.check_block(&h(0, u64::MAX, 1)).is_err());
    }

    #[test]
    fn block_and_file_counts_are_bounded_before_anything_is_allocated() {
        let huge = |size| {
            vec![ManifestEntry {
                name: "x".into(),
                size,
            }]
        };
        let err = Manifest::new(1024, huge(u64::MAX)).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::TooManyBlocks {
                    max: MAX_BLOCKS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("use a larger --block-size"));
        // Sizes whose sum overflows u64 are refused, not wrapped.
        let two = vec![
            ManifestEntry {
                name: "a".into(),
                size: u64::MAX,
            },
            ManifestEntry {
                name: "b".into(),
                size: u64::MAX,
            },
        ];
        assert!(Manifest::new(1 << 26, two).is_err());
        let many: Vec<_> = (0..=MAX_FILES)
            .map(|_| ManifestEntry {
                name: String::new(),
                size: 0,
            })
            .collect();
        assert!(matches!(
            Manifest::new(1024, many),
            Err(ManifestError::TooManyFiles { .. })
        ));
        // 16 Mi blocks exactly is fine.
        let ok = Manifest::new(1024, huge(MAX_BLOCKS * 1024)).unwrap();
        assert_eq!(ok.total_bytes(), MAX_BLOCKS * 1024);
    }

    #[test]
    fn block_size_must_be_a_power_of_two_in_range() {
        assert_eq!(block_size_log2(1 << 20).unwrap(), 20);
        for bad in [0, 512, 1000, 3 << 20, 1 << 27] {
            assert!(block_size_log2(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn directories_expand_to_relative_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x"), b"xx").unwrap();
        std::fs::write(root.join("top"), b"t").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let single = tmp.path().join("single");
        std::fs::write(&single, b"s").unwrap();
        let got = collect_sources(&[root.clone(), single]).unwrap();
        let names: Vec<_> = got.iter().map(|s| (s.name.as_str(), s.size)).collect();
        assert_eq!(
            names,
            vec![("tree/a/b/x", 2), ("tree/top", 1), ("single", 1)]
        );
    }

    #[test]
    fn missing_inputs_and_duplicates_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = collect_sources(&[missing]).unwrap_err().to_string();
        assert!(err.contains("cannot read") && err.contains("nope"), "{err}");
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        std::fs::write(tmp.path().join("d/f"), b"").unwrap();
        let err = collect_sources(&[tmp.path().join("f"), tmp.path().join("d/f")]).unwrap_err();
        assert!(matches!(err, ManifestError::DuplicateName(n) if n == "f"));
    }

    fn entry(name: &str, size: u64) -> ManifestEntry {
        ManifestEntry {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn files_are_appended_in_order_and_a_name_may_not_come_twice() {
        let m = Manifest::new(1024, vec![entry("a", 3000)]).unwrap();
        let m2 = m.extended(&[entry("b", 10), entry("c", 0)]).unwrap();
        let names: Vec<&str> = m2.files().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m2.block_count(0), 3);
        let e = m2.extended(&[entry("d", 1), entry("a", 1)]).unwrap_err();
        assert_eq!(e.to_string(), "two inputs would both be received as \"a\"");
        assert!(m.extended(&[entry("x", 1), entry("x", 2)]).is_err());
        let huge = m.extended(&[entry("big", MAX_BLOCKS * 1024)]).unwrap_err();
        assert!(
            huge.to_string().contains("blocks exceed the limit"),
            "{huge}"
        );
    }
}
