//! Tests of the sender core: both planes, driven by hand on a chosen clock.

#![allow(clippy::disallowed_methods)] // tests pick an arbitrary start
use super::*;
use crate::wire::{FecStatus, ManifestEntry};

fn core(paths: usize, now: Instant) -> SenderCore {
    core_for_file(4 << 16, paths, now)
}

/// A core sending one file of `size` bytes in 64 KiB blocks.
fn core_for_file(size: u64, paths: usize, now: Instant) -> SenderCore {
    let manifest = Manifest::new(
        1 << 16,
        vec![ManifestEntry {
            name: "f".into(),
            size,
        }],
    )
    .unwrap();
    let mut cfg = CoreConfig::default();
    cfg.shard_bytes(1024).path_caps(vec![None; paths]);
    let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, now);
    for i in 0..paths {
        c.path_up(i, now);
    }
    c
}

fn admit(c: &mut SenderCore, block: u64, now: Instant) {
    let header = BlockHeader {
        file: 0,
        block,
        len: 1 << 16,
        digest: [block as u8; 32],
    };
    c.admit_block(now, &header, Some(Geometry::new(1 << 16, 1024).unwrap()));
}

fn status(needed: Vec<(u32, u64, u32)>, micros: u64) -> Frame {
    Frame::FecStatus(FecStatus {
        micros,
        delivered: 0,
        shards: 0,
        needed,
    })
}

fn drain(c: &mut SenderCore, now: Instant) -> Vec<(usize, ShardRef)> {
    let mut out = Vec::new();
    while let Some(Transmit::Shard { path, shard }) = c.poll_transmit(now, |_| true) {
        c.on_sent(path, &shard, now);
        out.push((path, shard));
    }
    out
}

#[test]
fn a_flood_of_reports_and_unknown_blocks_plans_nothing_extra() {
    let t0 = Instant::now();
    let mut c = core(2, t0);
    admit(&mut c, 0, t0);
    let mut now = t0;
    let mut sent = 0;
    for _ in 0..1000 {
        if sent > 64 {
            break;
        }
        now += Duration::from_millis(1);
        sent += drain(&mut c, now).len();
    }
    // Loss not measured yet: 1 % up front.
    assert!(sent > 64, "the block's sources and recovery shards: {sent}");
    // A hostile receiver lists blocks that do not exist, 1000 times
    // (block 0 listed as complete, so that its silence does not count).
    let bogus: Vec<_> = std::iter::once((0, 0, 0))
        .chain((10..1000).map(|b| (0, b, 64)))
        .collect();
    now += Duration::from_secs(1);
    for i in 0..1000 {
        c.handle_frame(i % 2, status(bogus.clone(), 1_000_000), now)
            .unwrap();
    }
    assert_eq!(c.planned().2, 0, "no repairs for blocks that do not exist");
    // The same deficit for a real block on both paths, many times at
    // once: one answer.
    for i in 0..100 {
        c.handle_frame(i % 2, status(vec![(0, 0, 5)], 1_000_000), now)
            .unwrap();
    }
    let repairs = c.planned().2;
    assert!((5..=8).contains(&repairs), "{repairs}");
    assert!(c.urgent.len() <= 8);
}

#[test]
fn acknowledgements_and_file_done_count_once_across_paths() {
    let t0 = Instant::now();
    let mut c = core(3, t0);
    for b in 0..4 {
        admit(&mut c, b, t0);
    }
    for path in 0..3 {
        for b in 0..4 {
            c.handle_frame(path, Frame::BlockAck { file: 0, block: b }, t0)
                .unwrap();
        }
        c.handle_frame(path, Frame::FileDone { file: 0 }, t0)
            .unwrap();
    }
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    let acks = events
        .iter()
        .filter(|e| matches!(e, CoreEvent::BlockAcked { .. }))
        .count();
    let done = events
        .iter()
        .filter(|e| matches!(e, CoreEvent::FileDone { .. }))
        .count();
    assert_eq!((acks, done), (4, 1));
    assert!(c.is_done());
    let err = c
        .handle_frame(1, Frame::BlockAck { file: 0, block: 4 }, t0)
        .unwrap_err();
    assert!(err.to_string().contains("unknown block 4"), "{err}");
    let err = c
        .handle_frame(1, Frame::FileDone { file: 3 }, t0)
        .unwrap_err();
    assert!(err.to_string().contains("FILE_DONE for file 3"), "{err}");
}

#[test]
fn a_new_control_path_gets_setup_unacked_digests_and_file_hashes_again() {
    let t0 = Instant::now();
    let mut c = core(2, t0);
    for b in 0..4 {
        admit(&mut c, b, t0);
    }
    // Everything so far went out on the old control path.
    let sent: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
    assert!(matches!(sent[0], Frame::FecSetup { .. }));
    assert_eq!(sent.len(), 1 + 4 + 1, "setup, 4 digests, the file hash");
    c.handle_frame(0, Frame::BlockAck { file: 0, block: 1 }, t0)
        .unwrap();
    c.control_path_lost();
    let again: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
    let digests: Vec<u64> = again
        .iter()
        .filter_map(|f| match f {
            Frame::BlockDigest { block, .. } => Some(*block),
            _ => None,
        })
        .collect();
    assert!(matches!(again[0], Frame::FecSetup { .. }));
    assert_eq!(digests, [0, 2, 3], "the acknowledged block is not repeated");
    assert!(matches!(
        again.last(),
        Some(Frame::FileHash { file: 0, .. })
    ));
    // A file already done is not announced again.
    c.handle_frame(0, Frame::FileDone { file: 0 }, t0).unwrap();
    c.control_path_lost();
    let third: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
    assert!(!third.iter().any(|f| matches!(f, Frame::FileHash { .. })));
}

#[test]
fn a_path_whose_reports_stopped_takes_no_shards() {
    let t0 = Instant::now();
    let mut c = core(2, t0);
    for b in 0..4 {
        admit(&mut c, b, t0);
    }
    let mut now = t0;
    let mut per_path = [0usize; 2];
    // Path 0's empty reports make every block silent, so they are sent
    // again; with no later block seen that takes 2 × settle and
    // `fec::accounts::SILENT_WAIT`, hence 900 ms.
    for ms in 1..=900u64 {
        now = t0 + Duration::from_millis(ms);
        c.tick(now);
        // Only path 0 reports.
        if ms % 10 == 0 {
            c.handle_frame(0, status(vec![], ms * 1000), now).unwrap();
        }
        for (p, _) in drain(&mut c, now) {
            // No report, no RTT measured (100 ms assumed): stalled
            // after max(4 × 100 ms, 250 ms).
            if ms > 450 {
                per_path[p] += 1;
            }
        }
    }
    assert!(per_path[0] > 0);
    assert_eq!(per_path[1], 0, "a silent path is stalled");
    let _ = now;
}

fn streams_core(
    paths: usize,
    max_rate: Option<f64>,
    prioritised: bool,
    now: Instant,
) -> SenderCore {
    let manifest = Manifest::new(
        1 << 16,
        vec![ManifestEntry {
            name: "f".into(),
            size: 8 << 16,
        }],
    )
    .unwrap();
    let mut cfg = CoreConfig::default();
    cfg.plane(Plane::Streams)
        .block_size(1 << 16)
        .max_blocks(8)
        .max_rate(max_rate)
        .prioritised(prioritised)
        .path_caps(vec![None; paths]);
    let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, now);
    for i in 0..paths {
        c.path_up(i, now);
    }
    c
}

fn admit_stream(c: &mut SenderCore, block: u64, now: Instant) {
    let header = BlockHeader {
        file: 0,
        block,
        len: 1 << 16,
        digest: [block as u8; 32],
    };
    c.admit_block(now, &header, None);
}

fn blocks_out(c: &mut SenderCore, now: Instant) -> Vec<BlockSend> {
    std::iter::from_fn(|| match c.poll_transmit(now, |_| true) {
        Some(Transmit::Block(b)) => Some(b),
        Some(other) => panic!("a shard on the reliable plane: {other:?}"),
        None => None,
    })
    .collect()
}

#[test]
fn reliable_plane_fills_each_path_to_its_room_and_moves_a_dead_paths_blocks() {
    let t0 = Instant::now();
    let mut c = streams_core(2, None, false, t0);
    for b in 0..8 {
        admit_stream(&mut c, b, t0);
    }
    let out = blocks_out(&mut c, t0);
    // No rate measured yet: four blocks of room on each path.
    let on = |p: usize, out: &[BlockSend]| out.iter().filter(|b| b.path == p).count();
    assert_eq!((on(0, &out), on(1, &out)), (4, 4), "{out:?}");
    // Older blocks get higher stream priorities.
    assert!(out.windows(2).all(|w| w[0].priority > w[1].priority));
    // No FEC_SETUP, no digests (the block header carries them): only
    // the file's hash once every block is read.
    let control: Vec<Frame> = std::iter::from_fn(|| c.poll_control()).collect();
    assert!(
        matches!(control[..], [Frame::FileHash { file: 0, .. }]),
        "{control:?}"
    );

    // Path 0 dies: its blocks come back first, and leave on path 1 as
    // its own are acknowledged.
    let t1 = t0 + Duration::from_millis(50);
    c.path_failed(0, t1);
    assert_eq!(c.poll_event(), Some(CoreEvent::PathDied { path: 0 }));
    assert!(blocks_out(&mut c, t1).is_empty(), "path 1 is full");
    for b in out.iter().filter(|b| b.path == 1) {
        c.handle_frame(
            1,
            Frame::BlockAck {
                file: 0,
                block: b.block,
            },
            t1,
        )
        .unwrap();
    }
    let again = blocks_out(&mut c, t1);
    let mut moved: Vec<u64> = again.iter().map(|b| b.block).collect();
    let mut lost: Vec<u64> = out
        .iter()
        .filter(|b| b.path == 0)
        .map(|b| b.block)
        .collect();
    moved.sort_unstable();
    lost.sort_unstable();
    assert_eq!(moved, lost);
    assert!(again.iter().all(|b| b.path == 1));
    // A stream failing on the dead path changes nothing: the block is
    // on its way again already.
    c.stream_finished(0, 0, lost[0], false, t1);
    assert!(blocks_out(&mut c, t1).is_empty());
    for b in &again {
        c.handle_frame(
            1,
            Frame::BlockAck {
                file: 0,
                block: b.block,
            },
            t1,
        )
        .unwrap();
    }
    c.handle_frame(1, Frame::FileDone { file: 0 }, t1).unwrap();
    assert!(c.is_done());
    let acked = std::iter::from_fn(|| c.poll_event())
        .filter(|e| matches!(e, CoreEvent::BlockAcked { .. }))
        .count();
    assert_eq!(acked, 8);
    assert_eq!(c.path_figures(1).delivered, 8 << 16);
    assert_eq!(c.path_figures(0).delivered, 0);
}

#[test]
fn a_failed_stream_on_a_live_path_fails_the_path() {
    let t0 = Instant::now();
    let mut c = streams_core(2, None, false, t0);
    admit_stream(&mut c, 0, t0);
    let out = blocks_out(&mut c, t0);
    assert_eq!(out.len(), 1);
    c.stream_finished(out[0].path, 0, 0, false, t0);
    assert_eq!(
        c.poll_event(),
        Some(CoreEvent::PathDied { path: out[0].path })
    );
    let again = blocks_out(&mut c, t0);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].path, out[0].path);
}

#[test]
fn reliable_plane_holds_blocks_for_the_rate_cap() {
    let t0 = Instant::now();
    // 64 KiB per second: one block a second.
    let mut c = streams_core(1, Some(65_536.0), false, t0);
    for b in 0..3 {
        admit_stream(&mut c, b, t0);
    }
    assert_eq!(blocks_out(&mut c, t0).len(), 1);
    let wake = c.poll_timeout(t0);
    // The next poll comes no later than liveness's, and the block waits
    // for its turn.
    assert!(wake <= t0 + LIVENESS_EVERY);
    let half = t0 + Duration::from_millis(500);
    c.tick(half);
    assert!(blocks_out(&mut c, half).is_empty());
    assert_eq!(c.poll_timeout(half), half + LIVENESS_EVERY);
    let late = t0 + Duration::from_millis(950);
    c.tick(late);
    assert!(blocks_out(&mut c, late).is_empty());
    let wake = c.poll_timeout(late);
    assert!(
        wake > late && wake <= t0 + Duration::from_millis(1000),
        "{:?}",
        wake - t0
    );
    assert_eq!(
        blocks_out(&mut c, t0 + Duration::from_millis(1000)).len(),
        1
    );
}

#[test]
fn with_priority_classes_a_block_is_admitted_only_when_none_waits() {
    let t0 = Instant::now();
    let mut c = streams_core(1, None, true, t0);
    assert!(c.wants_block());
    admit_stream(&mut c, 0, t0);
    assert!(!c.wants_block(), "block 0 still waits for a stream");
    assert_eq!(blocks_out(&mut c, t0).len(), 1);
    assert!(c.wants_block());
}

#[test]
fn held_blocks_that_match_are_not_sent_and_others_are() {
    let t0 = Instant::now();
    let mut c = core(1, t0);
    let prefix = |b: u64| [b as u8; HAVE_DIGEST_LEN];
    // Block 0 held and the same; block 1 held with another digest (the
    // source changed); block 2 not held.
    c.handle_frame(
        0,
        Frame::Have {
            file: 0,
            first: 0,
            digests: vec![prefix(0), [9; HAVE_DIGEST_LEN]],
        },
        t0,
    )
    .unwrap();
    for b in 0..3 {
        admit(&mut c, b, t0);
    }
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(
        events,
        [CoreEvent::BlockResumed {
            file: 0,
            block: 0,
            bytes: 1 << 16
        }]
    );
    let mut sent = std::collections::BTreeSet::new();
    for ms in 1..=2000 {
        let now = t0 + Duration::from_millis(ms);
        sent.extend(drain(&mut c, now).iter().map(|(_, s)| s.block));
    }
    assert_eq!(sent.into_iter().collect::<Vec<_>>(), [1, 2]);
    let digests: Vec<u64> = std::iter::from_fn(|| c.poll_control())
        .filter_map(|f| match f {
            Frame::BlockDigest { block, .. } => Some(block),
            _ => None,
        })
        .collect();
    assert_eq!(digests, [1, 2], "no digest for the block not sent");
}

#[test]
fn have_for_blocks_that_do_not_exist_is_a_protocol_error_and_no_resume_ignores_have() {
    let t0 = Instant::now();
    let mut c = core(1, t0);
    for (file, first, n) in [(0, 3, 2), (1, 0, 1), (0, u64::MAX, 1)] {
        let err = c
            .handle_frame(
                0,
                Frame::Have {
                    file,
                    first,
                    digests: vec![[0; HAVE_DIGEST_LEN]; n],
                },
                t0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("no such blocks"), "{err}");
    }
    let manifest = Manifest::new(
        1 << 16,
        vec![ManifestEntry {
            name: "f".into(),
            size: 4 << 16,
        }],
    )
    .unwrap();
    let mut cfg = CoreConfig::default();
    cfg.shard_bytes(1024).resume(false);
    let mut c = SenderCore::new(manifest, vec![Class::Normal], cfg, t0);
    c.path_up(0, t0);
    c.handle_frame(
        0,
        Frame::Have {
            file: 0,
            first: 0,
            digests: vec![[0; HAVE_DIGEST_LEN]],
        },
        t0,
    )
    .unwrap();
    admit(&mut c, 0, t0);
    assert_eq!(c.poll_event(), None, "sent, not resumed");
}

fn entry(name: &str, size: u64) -> ManifestEntry {
    ManifestEntry {
        name: name.into(),
        size,
    }
}

#[test]
fn added_files_wait_for_the_receiver_and_a_new_control_path_carries_them_again() {
    let t0 = Instant::now();
    let mut c = core(1, t0);
    c.keep_open(true);
    for b in 0..4 {
        admit(&mut c, b, t0);
    }
    assert!(!c.wants_block(), "every block of the first file is in");
    let controls = |c: &mut SenderCore| std::iter::from_fn(|| c.poll_control()).collect::<Vec<_>>();
    controls(&mut c);
    let first = c
        .add_files(vec![entry("g", 2 << 16), entry("e", 0)], Class::Critical)
        .unwrap();
    assert_eq!(first, 1);
    // ADD_FILES, then the empty file's hash, in that order.
    let sent = controls(&mut c);
    assert!(
        matches!(&sent[..], [Frame::AddFiles { first: 1, files }, Frame::FileHash { file: 2, .. }] if files.len() == 2)
    );
    assert!(!c.wants_block(), "not before FILES_ADDED");
    let dup = c.add_files(vec![entry("f", 1)], Class::Normal).unwrap_err();
    assert!(dup.to_string().contains("\"f\""), "{dup}");
    // A control path lost now: the batch and KEEP_OPEN go again, right
    // after FEC_SETUP.
    c.control_path_lost();
    let again = controls(&mut c);
    assert!(
        matches!(
            &again[1..3],
            [
                Frame::AddFiles { first: 1, .. },
                Frame::KeepOpen { open: true }
            ]
        ),
        "{again:?}"
    );
    assert!(
        c.handle_frame(0, Frame::FilesAdded { first: 7, count: 1 }, t0)
            .is_err()
    );
    c.handle_frame(0, Frame::FilesAdded { first: 1, count: 2 }, t0)
        .unwrap();
    assert!(
        std::iter::from_fn(|| c.poll_event())
            .any(|e| e == CoreEvent::FilesAdded { first: 1, count: 2 })
    );
    assert!(c.wants_block());
    // A copy of FILES_ADDED (answered again after the path change) is no error.
    c.handle_frame(0, Frame::FilesAdded { first: 1, count: 2 }, t0)
        .unwrap();
    assert!(!c.is_done());
}

/// Path `path`'s first RTT sample, as after the handshake.
fn rtt_sample(c: &mut SenderCore, path: usize, srtt: Duration, now: Instant) {
    c.handle_path_stats(
        path,
        now,
        &PathStats {
            srtt,
            cwnd: 0,
            rx_bytes: 0,
            sent_packets: 0,
            lost_packets: 0,
            datagrams_buffered: 0,
        },
    );
}

#[test]
fn before_the_loss_is_measured_a_short_transfer_on_a_long_path_carries_recovery_for_the_prior() {
    // Two blocks of 64 sources, admitted after the handshake's RTT
    // sample: on a 1 s path each goes out with the recovery shards planned
    // for `PRIOR_LOSS` (a repair would cost a second), on a 20 ms path
    // with the 1 % minimum, counted across blocks (0.64 of a shard each:
    // none with the first, one with the second).
    for (rtt_ms, want) in [(1_000, [8, 16]), (20, [0, 1])] {
        let t0 = Instant::now();
        let mut c = core(1, t0);
        rtt_sample(&mut c, 0, Duration::from_millis(rtt_ms), t0);
        for (b, want) in want.into_iter().enumerate() {
            admit(&mut c, b as u64, t0);
            let (sources, upfront, _, _) = c.planned();
            assert_eq!(
                (sources, upfront),
                (64 * (b as u64 + 1), want),
                "RTT {rtt_ms} ms"
            );
        }
    }
    // A long transfer's first blocks get the 1 % minimum: they are
    // repaired while the rest still leave. (The file above is 256 KiB,
    // this one 64 MiB.)
    let t0 = Instant::now();
    let mut c = core_for_file(64 << 20, 1, t0);
    rtt_sample(&mut c, 0, Duration::from_secs(1), t0);
    admit(&mut c, 0, t0);
    admit(&mut c, 1, t0);
    assert_eq!(c.planned().1, 1);
}

#[test]
fn short_blocks_are_held_by_their_bytes_not_by_the_count_of_full_ones() {
    let t0 = Instant::now();
    // 100 files of 10 000 bytes (one short block each), then one of four
    // full 64 KiB blocks; the budget is four full blocks' bytes.
    let mut files: Vec<ManifestEntry> = (0..100)
        .map(|i| ManifestEntry {
            name: format!("small{i}"),
            size: 10_000,
        })
        .collect();
    files.push(ManifestEntry {
        name: "big".into(),
        size: 8 << 16,
    });
    let manifest = Manifest::new(1 << 16, files).unwrap();
    let mut cfg = CoreConfig::default();
    cfg.shard_bytes(1024)
        .max_blocks(1024)
        .max_block_bytes(Some(4 << 16));
    let mut c = SenderCore::new(manifest, vec![Class::Normal; 101], cfg, t0);
    c.path_up(0, t0);
    let admit_len = |c: &mut SenderCore, file: u32, block: u64, len: u32| {
        let header = BlockHeader {
            file,
            block,
            len,
            digest: [file as u8; 32],
        };
        let g = Geometry::new(len as usize, 1024).unwrap();
        c.admit_block(t0, &header, Some(g));
    };
    let mut small = 0;
    while c.wants_block() && small < 100 {
        admit_len(&mut c, small, 0, 10_000);
        small += 1;
    }
    // 4 × 65 536 bytes hold 26 short blocks and admit a 27th.
    assert_eq!(small, 27, "short blocks are counted by their bytes");
    // Acknowledged, they make room by their bytes again.
    for f in 0..27 {
        c.handle_frame(0, Frame::BlockAck { file: f, block: 0 }, t0)
            .unwrap();
    }
    assert!(c.wants_block());
    let mut full = 0;
    while c.wants_block() && full < 8 {
        admit_len(&mut c, 100, full, 1 << 16);
        full += 1;
    }
    assert_eq!(full, 4, "full blocks: as many as the budget holds");
}
