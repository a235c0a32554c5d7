//! Codec tests: round trips (proptest), bounds, hostile input.

use super::*;
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    let name = "[a-z0-9/._-]{1,40}";
    prop_oneof![
        (
            any::<u16>(),
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN)
        )
            .prop_map(|(version, session_id, token)| Frame::Hello {
                version,
                session_id,
                token
            }),
        any::<u16>().prop_map(|version| Frame::Welcome { version }),
        (
            MIN_BLOCK_SIZE_LOG2..=MAX_BLOCK_SIZE_LOG2,
            proptest::collection::vec((name, any::<u64>()), 0..20)
        )
            .prop_map(|(block_size_log2, files)| Frame::Manifest {
                block_size_log2,
                files: files
                    .into_iter()
                    .map(|(name, size)| ManifestEntry { name, size })
                    .collect()
            }),
        Just(Frame::Ready),
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(file, hash)| Frame::FileHash { file, hash }),
        (any::<u32>(), any::<u64>()).prop_map(|(file, block)| Frame::BlockAck { file, block }),
        any::<u32>().prop_map(|file| Frame::FileDone { file }),
        (any::<u16>(), ".{0,200}").prop_map(|(code, message)| Frame::error(code, message)),
        (any::<u16>(), any::<u16>()).prop_map(|(shard_bytes, max_blocks)| Frame::FecSetup {
            shard_bytes,
            max_blocks
        }),
        (any::<u32>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(file, block, digest)| {
            Frame::BlockDigest {
                file,
                block,
                digest,
            }
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<(u32, u64, u32)>(), 0..50)
        )
            .prop_map(
                |(micros, delivered, shards, needed)| Frame::FecStatus(FecStatus {
                    micros,
                    delivered,
                    shards,
                    needed
                })
            ),
        (any::<u32>(), any::<u64>(), any::<u8>()).prop_map(|(file, block, attempt)| {
            Frame::BlockRetry {
                file,
                block,
                attempt,
            }
        }),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 16]>(), 0..40)
        )
            .prop_map(|(file, first, digests)| Frame::Have {
                file,
                first,
                digests
            }),
        (
            any::<u32>(),
            proptest::collection::vec((name, any::<u64>()), 0..20)
        )
            .prop_map(|(first, files)| Frame::AddFiles {
                first,
                files: files
                    .into_iter()
                    .map(|(name, size)| ManifestEntry { name, size })
                    .collect()
            }),
        (any::<u32>(), any::<u32>()).prop_map(|(first, count)| Frame::FilesAdded { first, count }),
        any::<bool>().prop_map(|open| Frame::KeepOpen { open }),
    ]
}

proptest! {
    #[test]
    fn shard_headers_round_trip(file: u32, block: u64, index: u16, attempt: u8, recovery: u16, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let h = ShardHeader { file, block, index, attempt, recovery };
        let mut d = h.encode().to_vec();
        d.extend_from_slice(&payload);
        let (back, rest) = ShardHeader::decode(&d).unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(rest, &payload[..]);
        prop_assert!(ShardHeader::decode(&d[..SHARD_HEADER_LEN - 1]).is_none());
    }

    #[test]
    fn frames_round_trip(frame in arb_frame()) {
        let bytes = frame.encode();
        let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_strict_prefix_is_incomplete(frame in arb_frame()) {
        let bytes = frame.encode();
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_frame(&bytes[..cut]), Ok(None));
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn garbage_behind_a_valid_header_never_panics(
        ty in 1u8..=0x10,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![ty];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn block_headers_round_trip(file: u32, block: u64, len: u32, digest: [u8; 32]) {
        let h = BlockHeader { file, block, len, digest };
        prop_assert_eq!(BlockHeader::decode(&h.encode()), h);
    }
}

#[test]
fn oversized_body_is_refused_before_reading_it() {
    let mut header = [FrameType::Manifest as u8, 0, 0, 0, 0];
    header[1..].copy_from_slice(&((MAX_MANIFEST_LEN + 1) as u32).to_be_bytes());
    assert!(matches!(
        parse_frame_header(header),
        Err(WireError::FrameTooLong {
            frame: "MANIFEST",
            ..
        })
    ));
    // A HELLO claiming 4 GiB is refused from its header alone.
    assert!(matches!(
        decode_frame(&[0x01, 0xff, 0xff, 0xff, 0xff]),
        Err(WireError::FrameTooLong { frame: "HELLO", .. })
    ));
}

#[test]
fn manifest_count_is_bounded_by_body_length() {
    // Claims 4 billion files in an 8-byte body: must not allocate for them.
    let body = [20u8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0];
    assert_eq!(
        Frame::decode_body(FrameType::Manifest, &body),
        Err(WireError::CountTooLarge {
            count: u32::MAX,
            max: 0
        })
    );
}

#[test]
fn bad_fields_are_named() {
    assert_eq!(
        decode_frame(&[0x42]),
        Err(WireError::UnknownFrameType(0x42))
    );
    let bad_utf8 = [0x08, 0, 0, 0, 6, 0, 1, 0, 2, 0xff, 0xfe];
    assert_eq!(
        decode_frame(&bad_utf8),
        Err(WireError::BadUtf8("error message"))
    );
    let trailing = [0x07, 0, 0, 0, 5, 0, 0, 0, 1, 9];
    assert_eq!(
        decode_frame(&trailing),
        Err(WireError::FrameTooLong {
            frame: "FILE_DONE",
            len: 5,
            max: 4
        })
    );
    let block_size = [0x03, 0, 0, 0, 5, 9, 0, 0, 0, 0];
    assert_eq!(decode_frame(&block_size), Err(WireError::BadBlockSize(9)));
    let short_token = [
        0x01, 0, 0, 0, 20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
    ];
    assert_eq!(
        decode_frame(&short_token),
        Err(WireError::Truncated("HELLO"))
    );
}

fn status(entries: usize) -> FecStatus {
    FecStatus {
        micros: 7,
        delivered: 1 << 20,
        shards: 750,
        needed: (0..entries as u64).map(|b| (0, b, 3)).collect(),
    }
}

#[test]
fn a_report_carries_its_status_and_echoes_and_decodes_back() {
    let echoes = vec![
        Frame::BlockAck { file: 0, block: 9 },
        Frame::FileDone { file: 0 },
    ];
    let d = encode_report(&status(3), &echoes, 1200).expect("fits");
    let frames = decode_report(&d).unwrap();
    assert_eq!(frames[2], Frame::FecStatus(status(3)));
    assert_eq!(&frames[..2], &echoes[..]);
}

#[test]
fn a_report_carries_its_whole_status_and_every_echo_or_is_not_a_datagram() {
    let echoes: Vec<Frame> = (0..40)
        .map(|b| Frame::BlockAck { file: 1, block: b })
        .collect();
    // 64 entries and 40 acknowledgements need more than 1 200 bytes: the
    // status goes on the control stream instead.
    let room = FRAME_HEADER_LEN + 26 + 64 * 16;
    assert!(room + 40 * 17 > 1200);
    assert_eq!(encode_report(&status(64), &echoes, 1200), None);
    let d = encode_report(&status(64), &echoes, room + 40 * 17).expect("fits");
    let frames = decode_report(&d).unwrap();
    assert_eq!(frames.last(), Some(&Frame::FecStatus(status(64))));
    assert_eq!(&frames[..40], &echoes[..]);
    // Fewer acknowledgements fit beside the same status.
    let few = &echoes[..(1200 - room) / 17];
    let d = encode_report(&status(64), few, 1200).expect("fits");
    assert!(d.len() <= 1200, "{}", d.len());
    assert_eq!(decode_report(&d).unwrap().len(), few.len() + 1);
    assert_eq!(encode_report(&status(100), &[], 1200), None);
}

#[test]
fn a_report_with_a_stream_only_frame_or_a_cut_frame_is_refused() {
    let mut d = encode_report(&status(1), &[], 1200).unwrap();
    d.extend_from_slice(&Frame::Ready.encode());
    assert_eq!(decode_report(&d), Err(WireError::NotInReport("READY")));
    let d = encode_report(&status(1), &[], 1200).unwrap();
    assert_eq!(
        decode_report(&d[..d.len() - 1]),
        Err(WireError::Truncated("report datagram"))
    );
    assert_eq!(decode_report(&[]), Ok(vec![]));
}

#[test]
fn error_messages_are_cut_on_a_char_boundary() {
    let long = "é".repeat(MAX_ERROR_LEN);
    let Frame::Error { message, .. } = Frame::error(1, long) else {
        unreachable!()
    };
    assert!(message.len() <= MAX_ERROR_LEN);
    assert!(message.chars().all(|c| c == 'é'));
}

#[test]
fn keep_open_takes_only_zero_or_one() {
    let bytes = [FrameType::KeepOpen as u8, 0, 0, 0, 1, 2];
    assert_eq!(decode_frame(&bytes), Err(WireError::BadFlag("KEEP_OPEN")));
}

#[test]
fn add_files_cannot_announce_more_files_than_it_holds() {
    let mut bytes = vec![FrameType::AddFiles as u8, 0, 0, 0, 8];
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_frame(&bytes),
        Err(WireError::CountTooLarge {
            count: u32::MAX,
            ..
        })
    ));
}
