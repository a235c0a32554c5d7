//! A hostile or broken sender talks to a real receiver: it passes the
//! fingerprint and token checks, then sends names and frames our own sender
//! never would. The receiver must refuse with a clear error, keep serving,
//! and write nothing outside its output folder.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chunkstream_engine::session::control::{ControlWriter, read_frame};
use chunkstream_engine::session::{Receiver, RecvEvent};
use chunkstream_engine::transport::identity::{Fingerprint, Identity};
use chunkstream_engine::transport::{Tuning, client_endpoint};
use chunkstream_engine::wire::{
    BlockHeader, Frame, ManifestEntry, PROTOCOL_VERSION, ShardHeader, error_code,
};
use quinn::Connection;
use tokio::sync::mpsc;

const TOKEN: &str = "let-me-in";

struct Setup {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    events: mpsc::UnboundedReceiver<RecvEvent>,
    _tmp: tempfile::TempDir,
    out: std::path::PathBuf,
    outside: std::path::PathBuf,
}

async fn start_receiver() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let identity = Identity::generate().unwrap();
    let receiver = Receiver::bind(
        &["127.0.0.1:0".parse().unwrap()],
        &out,
        TOKEN.into(),
        &identity,
        &Tuning::default(),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, out.join("link")).unwrap();
    let addr = receiver.local_addrs()[0];
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = receiver.serve(false, move |e| drop(tx.send(e))).await;
    });
    Setup {
        addr,
        fingerprint: identity.fingerprint(),
        events,
        _tmp: tmp,
        out,
        outside,
    }
}

/// Dials the receiver (pinning its real fingerprint).
async fn dial(s: &Setup) -> Connection {
    let (endpoint, _) = client_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        None,
        s.fingerprint,
        &Tuning::default(),
    )
    .unwrap();
    endpoint
        .connect(s.addr, "chunkstream")
        .unwrap()
        .await
        .unwrap()
}

/// Dials, says HELLO with the right token, and returns the open control stream.
async fn authenticated(s: &Setup) -> (Connection, ControlWriter, quinn::RecvStream) {
    let conn = dial(s).await;
    let (send, mut recv) = conn.open_bi().await.unwrap();
    let mut control = ControlWriter(send);
    control
        .send(&Frame::Hello {
            version: PROTOCOL_VERSION,
            session_id: [7; 16],
            token: TOKEN.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    assert!(matches!(
        read_frame(&mut recv).await.unwrap(),
        Some(Frame::Welcome { .. })
    ));
    (conn, control, recv)
}

async fn manifest_reply(
    s: &Setup,
    name: &str,
) -> (Connection, ControlWriter, quinn::RecvStream, Option<Frame>) {
    manifest_reply_sized(s, name, 10).await
}

/// [`manifest_reply`] for a file of `size` bytes (64 KiB blocks).
async fn manifest_reply_sized(
    s: &Setup,
    name: &str,
    size: u64,
) -> (Connection, ControlWriter, quinn::RecvStream, Option<Frame>) {
    let (conn, mut control, mut recv) = authenticated(s).await;
    control
        .send(&Frame::Manifest {
            block_size_log2: 16,
            files: vec![ManifestEntry {
                name: name.into(),
                size,
            }],
        })
        .await
        .unwrap();
    let reply = next_frame(&mut recv).await;
    (conn, control, recv, reply)
}

/// Sends file 0's only block, ten correct bytes, on a stream of its own.
async fn send_ten_byte_block(conn: &Connection) {
    let data = b"0123456789";
    let header = BlockHeader {
        file: 0,
        block: 0,
        len: 10,
        digest: *blake3::hash(data).as_bytes(),
    };
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(&header.encode()).await.unwrap();
    stream.write_all(data).await.unwrap();
    stream.finish().unwrap();
}

fn nothing_written_but(dir: &Path, allowed: &[&str]) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "written outside the output folder: {left:?}"
    );
}

fn nothing_written(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "written outside the output folder: {left:?}"
    );
}

#[tokio::test]
async fn traversal_and_absolute_names_are_refused() {
    let s = start_receiver().await;
    for name in ["../escape", "/tmp/escape", "a/../../escape", "ok/./x", ""] {
        let (_conn, _c, _r, reply) = manifest_reply(&s, name).await;
        match reply {
            Some(Frame::Error { code, message }) => {
                assert_eq!(code, error_code::UNSAFE_NAME, "{name:?}: {message}");
                assert!(
                    message.contains("refusing the manifest"),
                    "{name:?}: {message}"
                );
            }
            other => panic!("{name:?}: expected ERROR, got {other:?}"),
        }
    }
    nothing_written(&s.outside);
    assert!(!s.out.parent().unwrap().join("escape").exists());
}

/// The next control frame, within 5 s.
async fn next_frame(recv: &mut quinn::RecvStream) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(5), read_frame(recv))
        .await
        .unwrap()
        .ok()
        .flatten()
}

/// A sender of protocol version 1 (no resume) is told which versions
/// meet, in an ERROR frame it shows its user, and nothing is written.
#[tokio::test]
async fn a_sender_of_the_previous_version_gets_a_clear_version_error() {
    let s = start_receiver().await;
    let conn = dial(&s).await;
    let (send, mut recv) = conn.open_bi().await.unwrap();
    let mut control = ControlWriter(send);
    control
        .send(&Frame::Hello {
            version: PROTOCOL_VERSION - 1,
            session_id: [9; 16],
            token: TOKEN.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    match next_frame(&mut recv).await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, error_code::BAD_VERSION);
            assert!(
                message.contains(&format!(
                    "unsupported protocol version {}",
                    PROTOCOL_VERSION - 1
                )) && message.contains(&format!("speaks {PROTOCOL_VERSION}")),
                "{message}"
            );
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(PROTOCOL_VERSION, 6);
    nothing_written(&s.outside);
    let names: Vec<_> = std::fs::read_dir(&s.out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["link"], "nothing but the test's own symlink");
}

/// A `.part` planted as a symbolic link (with a journal that would make it
/// look resumable) is neither read back nor written through: the manifest
/// is refused, naming the link, and the link's target is untouched.
#[tokio::test]
async fn a_part_file_that_is_a_symlink_is_not_resumed_or_written_through() {
    use chunkstream_engine::journal::{JournalHeader, encode_record};
    let s = start_receiver().await;
    let target = s.outside.join("target");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, s.out.join("victim.bin.part")).unwrap();
    let mut journal = JournalHeader {
        name: "victim.bin".into(),
        size: 10,
        block_size_log2: 16,
        identity: None,
    }
    .encode();
    journal.extend_from_slice(&encode_record(0, &[0; 32]));
    std::fs::write(s.out.join("victim.bin.part.journal"), journal).unwrap();
    let (conn, _control, mut recv, reply) = manifest_reply(&s, "victim.bin").await;
    // Not resumed: no HAVE, just READY (the .part is made at the first block).
    assert_eq!(reply, Some(Frame::Ready));
    send_ten_byte_block(&conn).await;
    match next_frame(&mut recv).await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, error_code::STORAGE);
            assert!(
                message.contains("victim.bin.part") && message.contains("symbolic link"),
                "{message}"
            );
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    nothing_written_but(&s.outside, &["target"]);
}

/// Our FEC sender sends its first shards right after MANIFEST, before the
/// receiver said READY. A receiver that refuses the manifest must refuse
/// just the same with shards already queued, and write none of them.
#[tokio::test]
async fn shards_sent_before_ready_do_not_get_past_a_refused_manifest() {
    let s = start_receiver().await;
    let conn = dial(&s).await;
    let (send, mut recv) = conn.open_bi().await.unwrap();
    let mut control = ControlWriter(send);
    for frame in [
        Frame::Hello {
            version: PROTOCOL_VERSION,
            session_id: [9; 16],
            token: TOKEN.as_bytes().to_vec(),
        },
        Frame::Manifest {
            block_size_log2: 16,
            files: vec![ManifestEntry {
                name: "../escape".into(),
                size: 64,
            }],
        },
        Frame::FecSetup {
            shard_bytes: 64,
            max_blocks: 1,
        },
    ] {
        control.send(&frame).await.unwrap();
    }
    for index in 0..4u16 {
        let mut d = ShardHeader {
            file: 0,
            block: 0,
            index,
            attempt: 0,
            recovery: 4,
        }
        .encode()
        .to_vec();
        d.extend_from_slice(&[0xab; 64]);
        conn.send_datagram(d.into()).unwrap();
    }
    assert!(matches!(
        next_frame(&mut recv).await,
        Some(Frame::Welcome { .. })
    ));
    match next_frame(&mut recv).await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, error_code::UNSAFE_NAME, "{message}");
            assert!(message.contains("refusing the manifest"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    nothing_written(&s.outside);
    assert!(!s.out.parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn a_symlink_in_the_output_folder_does_not_lead_outside() {
    let s = start_receiver().await;
    let (conn, _control, mut recv, reply) = manifest_reply(&s, "link/payload").await;
    assert_eq!(reply, Some(Frame::Ready), "the name itself is well-formed");
    send_ten_byte_block(&conn).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv))
        .await
        .unwrap();
    match reply {
        Ok(Some(Frame::Error { code, message })) => {
            assert_eq!(code, error_code::STORAGE);
            assert!(message.contains("symbolic link"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    nothing_written(&s.outside);
}

#[tokio::test]
async fn malformed_frames_and_blocks_close_the_session_not_the_receiver() {
    let mut s = start_receiver().await;
    // An unknown frame type where MANIFEST belongs.
    let (conn, mut control, _recv) = authenticated(&s).await;
    control.0.write_all(&[0x42, 0, 0, 0, 0]).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(
        reason.to_string().contains("unknown frame type 0x42"),
        "{reason}"
    );

    // A MANIFEST header announcing more than the limit.
    let (conn, mut control, _recv) = authenticated(&s).await;
    control
        .0
        .write_all(&[0x03, 0x7f, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(reason.to_string().contains("exceeds the limit"), "{reason}");

    // A block for a file the manifest does not have.
    let (conn, _control, _recv, reply) = manifest_reply(&s, "fine").await;
    assert_eq!(reply, Some(Frame::Ready));
    let mut stream = conn.open_uni().await.unwrap();
    let bogus = BlockHeader {
        file: 9,
        block: 0,
        len: 1,
        digest: [0; 32],
    };
    stream.write_all(&bogus.encode()).await.unwrap();
    stream.finish().unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(reason.to_string().contains("file 9 of 1"), "{reason}");

    // A block whose bytes do not match its digest.
    let (conn, _control, mut recv, reply) = manifest_reply(&s, "tampered").await;
    assert_eq!(reply, Some(Frame::Ready));
    let mut stream = conn.open_uni().await.unwrap();
    let header = BlockHeader {
        file: 0,
        block: 0,
        len: 10,
        digest: *blake3::hash(b"0123456789").as_bytes(),
    };
    stream.write_all(&header.encode()).await.unwrap();
    stream.write_all(b"0123456780").await.unwrap();
    stream.finish().unwrap();
    match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv))
        .await
        .unwrap()
    {
        Ok(Some(Frame::Error { code, message })) => {
            assert_eq!(code, error_code::HASH_MISMATCH);
            assert!(message.contains("does not match its digest"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert!(
        !s.out.join("tampered").exists(),
        "a corrupt file was renamed into place"
    );

    // The receiver still serves: a wrong token is refused as usual.
    let conn = dial(&s).await;
    let (send, _r) = conn.open_bi().await.unwrap();
    ControlWriter(send)
        .send(&Frame::Hello {
            version: PROTOCOL_VERSION,
            session_id: [1; 16],
            token: b"nope".to_vec(),
        })
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert!(reason.to_string().contains("wrong token"), "{reason}");
    let mut refused = false;
    while let Ok(e) = s.events.try_recv() {
        refused |= matches!(e, RecvEvent::Refused { ref reason, .. } if reason == "wrong token");
    }
    assert!(refused, "the refusal was reported");
}

#[tokio::test]
async fn a_manifest_announcing_absurd_sizes_is_refused_without_allocating() {
    let s = start_receiver().await;
    let (_conn, mut control, mut recv) = authenticated(&s).await;
    // 2^62 bytes in 1 KiB blocks: 2^52 blocks of tracking, were it allocated.
    control
        .send(&Frame::Manifest {
            block_size_log2: 10,
            files: vec![ManifestEntry {
                name: "huge".into(),
                size: 1 << 62,
            }],
        })
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv))
        .await
        .unwrap()
    {
        Ok(Some(Frame::Error { code, message })) => {
            assert_eq!(code, error_code::PROTOCOL);
            assert!(message.contains("exceed the limit"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    // Still serving afterwards.
    let (_c, _w, _r) = authenticated(&s).await;
}

/// A shard whose header claims a recovery count the block cannot have, or
/// another than the block's earlier shards said (protocol v5), is the
/// sender's protocol error: the receiver says so (ERROR), allocates nothing
/// for the block, writes nothing and keeps serving.
#[tokio::test]
async fn a_shard_with_an_impossible_recovery_count_is_a_protocol_error() {
    let s = start_receiver().await;
    // A 100-byte file in a session of 64-byte shards: k = 2 shards of 50
    // bytes, so r is 1 to 4.
    for (first, second, says) in [
        (0u16, None, "0 recovery shards for a block of 2"),
        (9, None, "9 recovery shards for a block of 2"),
        (4, Some(2u16), "says 2 recovery shards, an earlier one 4"),
    ] {
        let (conn, mut control, mut recv, reply) = manifest_reply_sized(&s, "coded", 100).await;
        assert_eq!(reply, Some(Frame::Ready));
        control
            .send(&Frame::FecSetup {
                shard_bytes: 64,
                max_blocks: 4,
            })
            .await
            .unwrap();
        // Recovery shards 0 and 1 (wire indices 2 and 3): neither completes
        // the block alone.
        let shards = [(2u16, Some(first)), (3, second)];
        for (index, recovery) in shards {
            let Some(recovery) = recovery else { continue };
            let mut d = ShardHeader {
                file: 0,
                block: 0,
                index,
                attempt: 0,
                recovery,
            }
            .encode()
            .to_vec();
            d.extend_from_slice(&[0x11; 50]);
            conn.send_datagram(d.into()).unwrap();
        }
        match tokio::time::timeout(Duration::from_secs(5), next_frame(&mut recv)).await {
            Ok(Some(Frame::Error { code, message })) => {
                assert_eq!(code, error_code::PROTOCOL, "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("expected ERROR saying {says:?}, got {other:?}"),
        }
        assert!(!s.out.join("coded").exists());
    }
    nothing_written(&s.outside);
}
