//! The partial files an output folder holds: `NAME.part` files that
//! interrupted transfers left (with their journals, [`crate::journal`]),
//! listed when `recv` starts and, on request, discarded once older than a
//! given age.
//!
//! The folder is walked without following symbolic links, at most
//! [`MAX_DEPTH`] folders deep and [`MAX_ENTRIES`] entries in all, so a huge
//! or hostile tree cannot hold the receiver up. A partial file's age is the
//! time since its `.part` or its journal was last written, whichever is
//! later.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Deepest folder looked into.
pub const MAX_DEPTH: usize = 32;
/// Most folder entries looked at.
pub const MAX_ENTRIES: usize = 100_000;

/// One partial file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Partial {
    /// The name it will have once complete, relative to the output folder.
    pub name: String,
    /// Size of the `.part`.
    pub size: u64,
    /// Bytes its journal records as written (before they are checked again
    /// on resume); 0 without a readable journal.
    pub journaled_bytes: u64,
    /// Whether a journal is beside it (without one it cannot be resumed).
    pub journal: bool,
    /// Since it was last written.
    #[serde(serialize_with = "secs")]
    pub age: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(p).ok()?.modified().ok()
}

fn journaled_bytes(journal: &Path, size: u64) -> Option<u64> {
    let meta = std::fs::symlink_metadata(journal).ok()?;
    // A journal of a file of this size is at most a few records per block.
    if !meta.file_type().is_file() || meta.len() > (64 << 20) {
        return None;
    }
    let parsed = crate::journal::parse(&std::fs::read(journal).ok()?).ok()?;
    let block = 1u64 << parsed.header.block_size_log2;
    Some(
        (parsed.records.len() as u64)
            .saturating_mul(block)
            .min(size),
    )
}

/// The partial files under `out`, sorted by name, aged against `now`.
pub fn list_partials(out: &Path, now: SystemTime) -> Vec<Partial> {
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(out.to_owned(), 0)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                break;
            }
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let (true, Some(stem)) = (ft.is_file(), file_name.strip_suffix(".part")) else {
                continue;
            };
            let Ok(rel) = path
                .with_file_name(stem)
                .strip_prefix(out)
                .map(Path::to_owned)
            else {
                continue;
            };
            let size = entry.metadata().map_or(0, |m| m.len());
            let journal = path.with_file_name(format!("{file_name}{}", crate::journal::SUFFIX));
            let last = [modified(&path), modified(&journal)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            let journaled = journaled_bytes(&journal, size);
            found.push(Partial {
                name: rel.to_string_lossy().into_owned(),
                size,
                journaled_bytes: journaled.unwrap_or(0),
                journal: journaled.is_some(),
                age: now.duration_since(last).unwrap_or_default(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Removes the partial files under `out` (the `.part` and its journal) not
/// written for longer than `older_than`; returns those removed. A file that
/// cannot be removed is left, with a log line.
pub fn discard_partials(out: &Path, older_than: Duration, now: SystemTime) -> Vec<Partial> {
    let mut gone = Vec::new();
    for p in list_partials(out, now) {
        if p.age <= older_than {
            continue;
        }
        let part = out.join(format!("{}.part", p.name));
        let journal = out.join(format!("{}.part{}", p.name, crate::journal::SUFFIX));
        match std::fs::remove_file(&part) {
            Ok(()) => {
                let _ = std::fs::remove_file(&journal);
                gone.push(p);
            }
            Err(e) => tracing::warn!("cannot remove {}: {e}", part.display()),
        }
    }
    gone
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the files' times are real
mod tests {
    use super::*;
    use crate::journal::{JournalHeader, encode_record};

    #[test]
    fn partials_are_listed_with_their_journals_and_old_ones_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("done.bin"), b"complete").unwrap();
        std::fs::write(out.join("sub/a.bin.part"), vec![0u8; 5000]).unwrap();
        let mut j = JournalHeader {
            name: "sub/a.bin".into(),
            size: 5000,
            block_size_log2: 10,
            identity: None,
        }
        .encode();
        j.extend_from_slice(&encode_record(0, &[1; 32]));
        j.extend_from_slice(&encode_record(4, &[2; 32]));
        std::fs::write(out.join("sub/a.bin.part.journal"), j).unwrap();
        std::fs::write(out.join("b.bin.part"), vec![0u8; 10]).unwrap();
        // A symlink named like a partial file is not one.
        std::os::unix::fs::symlink("/etc/passwd", out.join("c.part")).unwrap();

        let now = SystemTime::now();
        let list = list_partials(out, now);
        let summary: Vec<_> = list
            .iter()
            .map(|p| (p.name.as_str(), p.size, p.journaled_bytes, p.journal))
            .collect();
        assert_eq!(
            summary,
            [("b.bin", 10, 0, false), ("sub/a.bin", 5000, 2048, true)]
        );
        assert!(list.iter().all(|p| p.age < Duration::from_secs(60)));

        // Nothing is an hour old yet; an hour from now, both are.
        assert!(discard_partials(out, Duration::from_secs(3600), now).is_empty());
        let later = now + Duration::from_secs(7200);
        let gone = discard_partials(out, Duration::from_secs(3600), later);
        assert_eq!(gone.len(), 2);
        assert!(list_partials(out, later).is_empty());
        assert!(!out.join("sub/a.bin.part.journal").exists());
        assert!(out.join("done.bin").exists() && out.join("c.part").exists());
    }
}
