//! The receiver core's tests: acknowledgements, duplicates, resume,
//! reports, and files added to a session held open.

use super::*;
use crate::hash::block_digest;
use crate::wire::ManifestEntry;

fn core(size: u64) -> (ReceiverCore, Vec<u8>) {
    let manifest = Manifest::new(
        1024,
        vec![ManifestEntry {
            name: "f".into(),
            size,
        }],
    )
    .unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    (ReceiverCore::new(manifest), data)
}

fn outputs(c: &mut ReceiverCore) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn header(data: &[u8], block: u64) -> (BlockHeader, BlockDigest) {
    let start = (block * 1024) as usize;
    let bytes = &data[start..(start + 1024).min(data.len())];
    let digest = block_digest(bytes, start as u64, data.len() as u64);
    (
        BlockHeader {
            file: 0,
            block,
            len: bytes.len() as u32,
            digest,
        },
        digest,
    )
}

#[test]
fn stream_blocks_are_acknowledged_on_their_path_and_the_file_finalized_once() {
    let (mut c, data) = core(2000);
    for b in 0..2 {
        let (h, d) = header(&data, b);
        assert_eq!(
            c.on_stream(1, &h).unwrap(),
            StreamVerdict::Take { offset: b * 1024 }
        );
        c.on_written(0, b, d, Some(1)).unwrap();
    }
    c.on_frame(
        0,
        Frame::FileHash {
            file: 0,
            hash: *blake3::hash(&data).as_bytes(),
        },
    )
    .unwrap();
    let out = outputs(&mut c);
    assert!(matches!(
        out[0],
        Output::Send(Target::Path(1), Frame::BlockAck { block: 0, .. })
    ));
    assert!(matches!(out[2], Output::Finalize { file: 0, hash } if hash == blake3::hash(&data)));
    c.on_finalized(0);
    assert!(c.is_done());
    assert!(matches!(
        outputs(&mut c)[..],
        [Output::Send(Target::All, Frame::FileDone { file: 0 })]
    ));
}

#[test]
fn duplicates_are_errors_on_one_path_and_acknowledged_again_on_several() {
    let (mut c, data) = core(2000);
    let (h, d) = header(&data, 0);
    c.on_stream(0, &h).unwrap();
    let err = c.on_stream(0, &h).unwrap_err();
    assert!(err.to_string().contains("sent twice"), "{err}");
    let (mut c, _) = core(2000);
    c.path_joined();
    c.on_stream(0, &h).unwrap();
    // The copy on another path is taken too while the first arrives.
    assert!(matches!(
        c.on_stream(1, &h).unwrap(),
        StreamVerdict::Take { .. }
    ));
    c.on_written(0, 0, d, Some(0)).unwrap();
    c.on_written(0, 0, d, Some(1)).unwrap();
    // Once written, a third copy is acknowledged again and dropped.
    assert_eq!(c.on_stream(2, &h).unwrap(), StreamVerdict::Duplicate);
    let acks: Vec<Target> = outputs(&mut c)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(t, Frame::BlockAck { .. }) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [Target::Path(0), Target::Path(2)]);
    // A failed stream: the sender re-sends it, unless the data was bad.
    assert!(
        c.on_stream_failed(SessionError::ConnectionLost("x".into()))
            .is_ok()
    );
    assert!(
        c.on_stream_failed(SessionError::HashMismatch("x".into()))
            .is_err()
    );
}

#[test]
fn a_held_block_sent_again_is_taken_and_frames_out_of_place_are_refused() {
    let (mut c, data) = core(2000);
    let (h, d) = header(&data, 0);
    c.hold(0, 0, [7; 32]);
    c.path_joined();
    assert!(matches!(
        c.on_stream(0, &h).unwrap(),
        StreamVerdict::Take { .. }
    ));
    c.on_written(0, 0, d, Some(0)).unwrap();
    let err = c
        .on_frame(
            0,
            Frame::BlockDigest {
                file: 0,
                block: 1,
                digest: [0; 32],
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("before FEC_SETUP"), "{err}");
    let err = c.on_frame(0, Frame::Ready).unwrap_err();
    assert!(err.to_string().contains("unexpected Ready"), "{err}");
    assert!(c.status(0, 1).is_none());
    assert!(c.on_corrupt(0, 0).is_err());
}

#[test]
fn reports_repeat_each_decoded_blocks_ack_and_file_done_in_the_next_few_datagrams() {
    use crate::wire::{REPORT_ECHOES, decode_report};
    let (mut c, data) = core(2000);
    c.on_frame(
        0,
        Frame::FecSetup {
            shard_bytes: 512,
            max_blocks: 8,
        },
    )
    .unwrap();
    c.on_frame(
        0,
        Frame::FileHash {
            file: 0,
            hash: *blake3::hash(&data).as_bytes(),
        },
    )
    .unwrap();
    for b in 0..2 {
        let (_, d) = header(&data, b);
        c.on_written(0, b, d, None).unwrap();
    }
    c.on_finalized(0);
    let want = [
        Frame::BlockAck { file: 0, block: 0 },
        Frame::BlockAck { file: 0, block: 1 },
        Frame::FileDone { file: 0 },
    ];
    for round in 0..REPORT_ECHOES + 1 {
        let reports = c.reports(1000 * u64::from(round), &[Some(1200), None]);
        assert!(reports[1].is_none(), "a path without datagrams gets none");
        let mut frames = decode_report(reports[0].as_ref().expect("a report")).unwrap();
        let Some(Frame::FecStatus(st)) = frames.pop() else {
            panic!("{frames:?}")
        };
        assert_eq!(st.micros, 1000 * u64::from(round));
        if round < REPORT_ECHOES {
            assert_eq!(&frames[..], &want[..], "report {round}");
        } else {
            assert!(frames.is_empty(), "echoed too often: {frames:?}");
        }
    }
}

fn entry(name: &str, size: u64) -> ManifestEntry {
    ManifestEntry {
        name: name.into(),
        size,
    }
}

#[test]
fn files_added_to_a_session_held_open_are_checked_numbered_and_awaited() {
    let (mut c, data) = core(1000);
    c.on_frame(0, Frame::KeepOpen { open: true }).unwrap();
    let (h, d) = header(&data, 0);
    c.on_stream(0, &h).unwrap();
    c.on_written(0, 0, d, Some(0)).unwrap();
    let hash = *blake3::hash(&data).as_bytes();
    c.on_frame(0, Frame::FileHash { file: 0, hash }).unwrap();
    c.on_finalized(0);
    assert!(c.files_done() && !c.is_done(), "held open, it waits");
    outputs(&mut c);
    // Numbered after what the session has; names checked as a manifest's.
    let wrong = c.on_frame(
        2,
        Frame::AddFiles {
            first: 5,
            files: vec![entry("g", 10)],
        },
    );
    assert!(
        wrong
            .unwrap_err()
            .to_string()
            .contains("numbers its first file 5, but the session has 1")
    );
    let unsafe_name = c.on_frame(
        2,
        Frame::AddFiles {
            first: 1,
            files: vec![entry("../g", 10)],
        },
    );
    assert!(matches!(unsafe_name, Err(SessionError::UnsafeName(_))));
    let twice = c.on_frame(
        2,
        Frame::AddFiles {
            first: 1,
            files: vec![entry("f", 10)],
        },
    );
    assert!(
        twice
            .unwrap_err()
            .to_string()
            .contains("\"f\" appears twice")
    );
    let batch = vec![entry("g", 1500), entry("e", 0)];
    c.on_frame(
        2,
        Frame::AddFiles {
            first: 1,
            files: batch.clone(),
        },
    )
    .unwrap();
    assert!(matches!(
        outputs(&mut c)[..],
        [Output::AddFiles {
            path: 2,
            first: 1,
            count: 2
        }]
    ));
    assert_eq!(c.manifest().files().len(), 3);
    assert!(!c.files_done());
    // A copy (the sender's control path changed) is answered again.
    c.on_frame(
        1,
        Frame::AddFiles {
            first: 1,
            files: batch,
        },
    )
    .unwrap();
    assert!(matches!(
        outputs(&mut c)[..],
        [Output::Send(
            Target::Path(1),
            Frame::FilesAdded { first: 1, count: 2 }
        )]
    ));
    // The new files' blocks are checked against the grown manifest.
    let g = BlockHeader {
        file: 1,
        block: 1,
        len: 476,
        digest: [0; 32],
    };
    assert_eq!(
        c.on_stream(0, &g).unwrap(),
        StreamVerdict::Take { offset: 1024 }
    );
    c.on_frame(0, Frame::KeepOpen { open: false }).unwrap();
    assert!(!c.is_done(), "two files are still to come");
}
