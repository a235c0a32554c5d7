//! What each path carried at the end of a send, kept between sends so that
//! the next send over the same path starts near its rate instead of
//! growing from 10 Mbit/s (a warm start; the controller's side, and why
//! half of the remembered rate, is `fec::rate::PathMemory`).
//!
//! Kept in `path-memory.json` in the sender's state directory:
//!
//! ```json
//! {"version": 1, "paths": [{"peer": "<receiver fingerprint, hex>",
//!   "path": "LOCAL=REMOTE", "rate_bps": 1.9e8, "min_rtt_ms": 40.1,
//!   "saved_unix": 1796000000}]}
//! ```
//!
//! - A path is known by the receiver's fingerprint and the path's name:
//!   the same address behind another receiver is another path.
//! - An entry older than [`MAX_AGE`] is not used: a path's load changes.
//!   At most [`MAX_ENTRIES`] are kept, the newest.
//! - The file is read only up to [`MAX_FILE`]; a file that is not this
//!   format is not trusted in part: it is ignored with a warning and
//!   replaced when the send ends.
//! - Written to a temporary file and renamed over the old one, so two
//!   sends that end together leave one whole file (the later one's).
//!
//! The merging and lookup are plain functions of the entries and the time
//! ([`lookup`], [`merge`]); [`load`] and [`save`] do the file I/O.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use chunkstream_engine::fec::rate::PathMemory;
use chunkstream_engine::multipath::spec::{PathCarried, PathReport};
use serde::{Deserialize, Serialize};

/// Entries older than this are not used.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Most entries kept.
pub const MAX_ENTRIES: usize = 256;
/// Largest file read.
pub const MAX_FILE: u64 = 1 << 20;
const FILE: &str = "path-memory.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub peer: String,
    pub path: String,
    pub rate_bps: f64,
    pub min_rtt_ms: f64,
    pub saved_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    paths: Vec<Entry>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What is remembered of each of `paths` (by name) to `peer`, fresh at
/// `now`; `None` where nothing usable is.
pub fn lookup(
    entries: &[Entry],
    peer: &str,
    paths: &[String],
    now: SystemTime,
) -> Vec<Option<PathMemory>> {
    let now = unix(now);
    paths
        .iter()
        .map(|name| {
            entries
                .iter()
                .filter(|e| e.peer == peer && &e.path == name)
                .filter(|e| now.saturating_sub(e.saved_unix) <= MAX_AGE.as_secs())
                .filter(|e| e.saved_unix <= now + 60)
                .filter(|e| {
                    e.rate_bps.is_finite()
                        && e.rate_bps > 0.0
                        && e.min_rtt_ms.is_finite()
                        && e.min_rtt_ms > 0.0
                })
                .max_by_key(|e| e.saved_unix)
                .map(|e| {
                    PathCarried {
                        rate_bps: e.rate_bps,
                        min_rtt_ms: e.min_rtt_ms,
                    }
                    .memory()
                })
        })
        .collect()
}

/// `entries` with what `reports` carried to `peer` at `now` in place of
/// what was remembered of the same paths, newest first, at most
/// [`MAX_ENTRIES`].
pub fn merge(
    mut entries: Vec<Entry>,
    peer: &str,
    reports: &[PathReport],
    now: SystemTime,
) -> Vec<Entry> {
    for r in reports {
        let Some(c) = r.carried else { continue };
        entries.retain(|e| !(e.peer == peer && e.path == r.name));
        entries.push(Entry {
            peer: peer.to_owned(),
            path: r.name.clone(),
            rate_bps: c.rate_bps,
            min_rtt_ms: c.min_rtt_ms,
            saved_unix: unix(now),
        });
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.saved_unix));
    entries.truncate(MAX_ENTRIES);
    entries
}

fn file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The entries kept in `dir` (none if there is no file yet), or why the
/// file cannot be trusted.
pub fn load(dir: &Path) -> Result<Vec<Entry>> {
    let path = file(dir);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_FILE,
        "{} is larger than {} bytes",
        path.display(),
        MAX_FILE
    );
    let stored: Stored = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a path memory file", path.display()))?;
    anyhow::ensure!(
        stored.version == VERSION,
        "{} is version {}, this build reads {VERSION}",
        path.display(),
        stored.version
    );
    Ok(stored.paths)
}

/// What is remembered in `dir` of each of `paths` to `peer` now (see
/// [`lookup`]), or why the file cannot be trusted.
pub fn recall(
    dir: &Path,
    peer: &str,
    paths: &[chunkstream_engine::multipath::spec::PathSpec],
) -> Result<Vec<Option<PathMemory>>> {
    let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
    Ok(lookup(&load(dir)?, peer, &names, SystemTime::now()))
}

/// Remembers what `reports` carried to `peer` in `dir`, with what else is
/// kept there (a file that cannot be read is replaced).
pub fn save(dir: &Path, peer: &str, reports: &[PathReport], now: SystemTime) -> Result<()> {
    if reports.iter().all(|r| r.carried.is_none()) {
        return Ok(());
    }
    let entries = merge(load(dir).unwrap_or_default(), peer, reports, now);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec(&Stored {
        version: VERSION,
        paths: entries,
    })?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file(dir)).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("replacing {}", file(dir).display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkstream_engine::multipath::manager::PathState;

    fn report(name: &str, rate_bps: f64) -> PathReport {
        PathReport {
            name: name.into(),
            bytes: 1,
            wire_bytes: 1,
            rtt_ms: 40.0,
            state: PathState::Up,
            loss: Some(0.05),
            warm_start: None,
            carried: Some(PathCarried {
                rate_bps,
                min_rtt_ms: 40.0,
            }),
        }
    }

    const PEER: &str = "ab";

    #[test]
    fn a_path_is_remembered_by_receiver_and_name_for_a_day() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let entries = merge(Vec::new(), PEER, &[report("a=1.2.3.4:5", 190e6)], t0);
        let names = ["a=1.2.3.4:5".to_owned(), "b=1.2.3.4:5".to_owned()];
        let got = lookup(&entries, PEER, &names, t0 + Duration::from_secs(3600));
        assert_eq!(got[0].map(|m| m.rate), Some(190e6 / 8.0));
        assert_eq!(got[0].map(|m| m.min_rtt), Some(Duration::from_millis(40)));
        assert_eq!(got[1], None, "another path");
        assert_eq!(
            lookup(&entries, "cd", &names, t0)[0],
            None,
            "another receiver"
        );
        let late = t0 + MAX_AGE + Duration::from_secs(1);
        assert_eq!(lookup(&entries, PEER, &names, late)[0], None, "too old");
    }

    #[test]
    fn a_newer_send_replaces_the_path_and_the_oldest_go_first() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut entries = Vec::new();
        for i in 0..MAX_ENTRIES + 10 {
            let at = t0 + Duration::from_secs(i as u64);
            entries = merge(entries, PEER, &[report(&format!("p{i}"), 1e6)], at);
        }
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(entries.iter().all(|e| e.path != "p0"), "the oldest went");
        let at = t0 + Duration::from_secs(1000);
        let entries = merge(entries, PEER, &[report("p300", 5e6)], at);
        let same: Vec<_> = entries.iter().filter(|e| e.path == "p300").collect();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].rate_bps, 5e6);
    }

    #[test]
    fn nonsense_in_the_file_is_never_used() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let bad = |rate_bps: f64, min_rtt_ms: f64, saved_unix: u64| Entry {
            peer: PEER.into(),
            path: "p".into(),
            rate_bps,
            min_rtt_ms,
            saved_unix,
        };
        let now = unix(t0);
        for e in [
            bad(-1.0, 40.0, now),
            bad(f64::NAN, 40.0, now),
            bad(f64::INFINITY, 40.0, now),
            bad(1e8, 0.0, now),
            bad(1e8, f64::NAN, now),
            bad(1e8, 40.0, now + 3600),
        ] {
            assert_eq!(
                lookup(std::slice::from_ref(&e), PEER, &["p".into()], t0)[0],
                None,
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_file_that_is_not_path_memory_is_an_error_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no file yet");
        std::fs::write(dir.path().join(FILE), b"{\"version\": 1, \"paths\": [").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("is not a path memory file"),
            "{e:#}"
        );
        std::fs::write(dir.path().join(FILE), b"{\"version\": 9, \"paths\": []}").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("version 9"), "{e:#}");
        std::fs::write(dir.path().join(FILE), vec![b' '; MAX_FILE as usize + 1]).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("larger than"), "{e:#}");
        let now = SystemTime::now();
        save(dir.path(), PEER, &[report("p", 1e8)], now).unwrap();
        let entries = load(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            lookup(&entries, PEER, &["p".into()], now)[0].unwrap().rate,
            1e8 / 8.0
        );
    }
}
