//! A receiver that takes the QUIC connection and the control stream but
//! never answers HELLO. Keep-alives keep such a connection open, so without
//! a deadline the sender would wait forever; with one it stops after its
//! connect timeout and names the receiver, on both planes (the FEC plane
//! sends its first shards before the answer, so it waits in a different
//! place). The same silent receiver also shows what the sender sends before
//! any answer: HELLO and MANIFEST on the control stream (both planes), and
//! on the FEC plane the first shards as datagrams. And a receiver that
//! answers, says READY, and then never reports: the FEC plane gives up on
//! it after its report timeout instead of waiting for ever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunkstream_engine::manifest::SourceFile;
use chunkstream_engine::send::FecConfig;
use chunkstream_engine::session::control::{ControlWriter, read_frame};
use chunkstream_engine::session::{SendConfig, SessionError, send_files};
use chunkstream_engine::transport::identity::Identity;
use chunkstream_engine::transport::{Congestion, Tuning, server_endpoint};
use chunkstream_engine::wire::{Frame, FrameType, PROTOCOL_VERSION};

/// What the sender did against a receiver that never answers: the error it
/// ended with, how many QUIC datagrams reached the receiver meanwhile, and
/// the types of the first control frames it sent.
struct Outcome {
    err: SessionError,
    datagrams: usize,
    frames: Vec<FrameType>,
}

/// A receiver's endpoint on loopback, and its identity.
fn receiver_endpoint() -> (quinn::Endpoint, Identity) {
    let identity = Identity::generate().unwrap();
    let endpoint = server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        &Tuning::default(),
    )
    .unwrap();
    (endpoint, identity)
}

/// One file of `size` bytes in `dir`, as a source.
fn one_file(dir: &std::path::Path, size: usize) -> Vec<SourceFile> {
    let path = dir.join("f.bin");
    std::fs::write(&path, vec![7u8; size]).unwrap();
    vec![SourceFile {
        path,
        name: "f.bin".into(),
        size: size as u64,
    }]
}

async fn silent_receiver_then_send(fec: bool) -> Outcome {
    let (endpoint, identity) = receiver_endpoint();
    let addr = endpoint.local_addr().unwrap();
    let datagrams = Arc::new(AtomicUsize::new(0));
    let counted = datagrams.clone();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let read = frames.clone();
    let silent = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (_send, mut recv) = conn.accept_bi().await.unwrap();
        // Hold everything open, say nothing; note what arrives unasked.
        let control = async {
            for _ in 0..2 {
                match read_frame(&mut recv).await {
                    Ok(Some(f)) => read.lock().unwrap().push(f.frame_type()),
                    _ => break,
                }
            }
            std::future::pending::<()>().await
        };
        let datagrams = async {
            while conn.read_datagram().await.is_ok() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        };
        tokio::join!(control, datagrams);
    });

    let tmp = tempfile::tempdir().unwrap();
    let sources = one_file(tmp.path(), 300_000);
    let mut cfg = SendConfig::new(addr, identity.fingerprint(), "token");
    cfg.connect_timeout = Duration::from_secs(1);
    if fec {
        cfg.fec = Some(FecConfig::default());
        cfg.tuning.congestion = Congestion::Rate;
    }
    let result = tokio::time::timeout(Duration::from_secs(15), send_files(sources, &cfg, |_| {}))
        .await
        .expect("the sender gave up within its deadline");
    silent.abort();
    let frames = frames.lock().unwrap().clone();
    Outcome {
        err: result.expect_err("nobody answered"),
        datagrams: datagrams.load(Ordering::Relaxed),
        frames,
    }
}

/// What both planes do: the error names the silence, and MANIFEST followed
/// HELLO without waiting for WELCOME (one round trip saved per transfer).
fn assert_both_planes(outcome: &Outcome) {
    let err = &outcome.err;
    assert!(
        matches!(err, SessionError::NoAnswer { secs: 1, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("accepted the connection but did not answer within 1 s"),
        "{text}"
    );
    assert_eq!(outcome.frames, [FrameType::Hello, FrameType::Manifest]);
}

#[tokio::test]
async fn the_reliable_plane_gives_up_on_a_receiver_that_never_answers() {
    let outcome = silent_receiver_then_send(false).await;
    assert_both_planes(&outcome);
    assert_eq!(
        outcome.datagrams, 0,
        "the reliable plane sends no datagrams"
    );
}

#[tokio::test]
async fn the_fec_plane_gives_up_on_a_receiver_that_never_answers() {
    let outcome = silent_receiver_then_send(true).await;
    assert_both_planes(&outcome);
    // Shards follow MANIFEST without waiting for WELCOME or READY (one round
    // trip saved per transfer): some reached the receiver before any answer.
    assert!(
        outcome.datagrams > 0,
        "no shard was sent before the receiver answered"
    );
}

#[tokio::test]
async fn the_fec_plane_gives_up_on_a_receiver_that_stops_reporting_after_ready() {
    let (endpoint, identity) = receiver_endpoint();
    let addr = endpoint.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (send, mut recv) = conn.accept_bi().await.unwrap();
        let mut control = ControlWriter(send);
        // HELLO and MANIFEST, answered as a receiver would; then nothing
        // more, while quinn keeps the connection alive underneath.
        for _ in 0..2 {
            read_frame(&mut recv).await.unwrap().unwrap();
        }
        control
            .send(&Frame::Welcome {
                version: PROTOCOL_VERSION,
            })
            .await
            .unwrap();
        control.send(&Frame::Ready).await.unwrap();
        let _keep = (conn, control, recv);
        std::future::pending::<()>().await
    });
    let tmp = tempfile::tempdir().unwrap();
    let sources = one_file(tmp.path(), 3_000_000);
    let mut cfg = SendConfig::new(addr, identity.fingerprint(), "token");
    cfg.fec = Some(FecConfig {
        report_timeout: Duration::from_secs(2),
        ..FecConfig::default()
    });
    cfg.tuning.congestion = Congestion::Rate;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), send_files(sources, &cfg, |_| {}))
        .await
        .expect("the sender gave up on the silent receiver");
    silent.abort();
    let err = result.expect_err("nobody reported");
    let text = err.to_string();
    assert!(
        text.contains("the receiver stopped reporting: no FEC_STATUS for 2 s"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "gave up after {:?}",
        started.elapsed()
    );
}
