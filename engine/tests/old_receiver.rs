//! A receiver of protocol version 1 (before resume) answers our HELLO as a
//! v1 build does: ERROR BAD_VERSION naming both versions, then closes. The
//! sender stops at once, on either plane, and its error says why in the
//! receiver's words (the other direction, a v1 sender to this receiver, is
//! in `hostile_peer.rs`).

use std::time::Duration;

use chunkstream_engine::manifest::SourceFile;
use chunkstream_engine::send::FecConfig;
use chunkstream_engine::session::control::{ControlWriter, read_frame};
use chunkstream_engine::session::{SendConfig, SessionError, send_files};
use chunkstream_engine::transport::identity::Identity;
use chunkstream_engine::transport::{Congestion, Tuning, server_endpoint};
use chunkstream_engine::wire::{Frame, PROTOCOL_VERSION, close_code, error_code};

async fn send_to_a_v1_receiver(fec: bool) -> SessionError {
    let identity = Identity::generate().unwrap();
    let endpoint = server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        &Tuning::default(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let old = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (send, mut recv) = conn.accept_bi().await.unwrap();
        let mut control = ControlWriter(send);
        let Ok(Some(Frame::Hello { version, .. })) = read_frame(&mut recv).await else {
            panic!("expected HELLO");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        // What a version-1 receiver says (handshake.rs, as it was).
        control
            .send(&Frame::error(
                error_code::BAD_VERSION,
                format!("unsupported protocol version {version} (this receiver speaks 1)"),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(close_code::REFUSED.into(), b"bad version");
        endpoint.wait_idle().await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f.bin");
    std::fs::write(&path, vec![7u8; 300_000]).unwrap();
    let sources = vec![SourceFile {
        path,
        name: "f.bin".into(),
        size: 300_000,
    }];
    let mut cfg = SendConfig::new(addr, identity.fingerprint(), "token");
    if fec {
        cfg.fec = Some(FecConfig::default());
        cfg.tuning.congestion = Congestion::Rate;
    }
    let err = tokio::time::timeout(Duration::from_secs(10), send_files(sources, &cfg, |_| {}))
        .await
        .expect("the sender stops at once")
        .expect_err("a v1 receiver refuses");
    old.await.unwrap();
    err
}

#[tokio::test]
async fn a_version_1_receiver_is_named_as_such_on_both_planes() {
    for fec in [false, true] {
        let err = send_to_a_v1_receiver(fec).await;
        let text = err.to_string();
        assert!(
            matches!(err, SessionError::Refused(_))
                && text.contains(&format!("unsupported protocol version {PROTOCOL_VERSION}"))
                && text.contains("speaks 1"),
            "fec {fec}: {text}"
        );
    }
}
