//! The UDP relay between real sockets: loss and delay as configured, and a
//! real chunkstream transfer across a lossy, delayed relay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use tokio::net::UdpSocket;

async fn echo_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

fn link(delay_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(delay_ms),
        loss: LossModel::Bernoulli { p: loss },
        ..Default::default()
    }
}

#[tokio::test]
async fn delay_is_added_in_each_direction() {
    let server = echo_server().await;
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        to: server,
        forward: link(20, 0.0),
        reverse: link(20, 0.0),
        seed: 1,
    })
    .await
    .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(relay.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        let t = Instant::now();
        client.send(b"ping").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let rtt = t.elapsed();
        assert_eq!(&buf[..n], b"ping");
        // 2 × 20 ms, plus up to ~1 ms of timer granularity per direction,
        // and scheduling: a CI run with a build beside it measured 57 ms.
        // Below 70 ms still rules out a delay added twice (80 ms).
        assert!(
            rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(70),
            "rtt {rtt:?}"
        );
    }
    let stats = relay.stop().await;
    assert_eq!((stats.forward.forwarded, stats.reverse.forwarded), (5, 5));
}

/// Two clients talking through one relay at once each get their own
/// replies: the relay keeps one upstream socket per client, so the server
/// sees two peers (a sender's MTU race dials from two sockets at once).
#[tokio::test]
async fn each_client_gets_its_own_replies() {
    let server = echo_server().await;
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        to: server,
        forward: link(5, 0.0),
        reverse: link(5, 0.0),
        seed: 1,
    })
    .await
    .unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    a.connect(relay.local_addr()).await.unwrap();
    b.connect(relay.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    for round in 0..3u8 {
        // Both send before either reads: with one shared upstream socket
        // both echoes went to whoever spoke last.
        a.send(&[b'a', round]).await.unwrap();
        b.send(&[b'b', round]).await.unwrap();
        for (client, tag) in [(&a, b'a'), (&b, b'b')] {
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("an echo within 2 s")
                .unwrap();
            assert_eq!(&buf[..n], &[tag, round]);
        }
    }
    let stats = relay.stop().await;
    assert_eq!((stats.forward.forwarded, stats.reverse.forwarded), (6, 6));
}

#[tokio::test]
async fn loss_matches_the_setting_and_is_counted() {
    let server = echo_server().await;
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        to: server,
        forward: link(0, 0.10),
        reverse: link(0, 0.0),
        seed: 7,
    })
    .await
    .unwrap();
    let client = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    client.connect(relay.local_addr()).await.unwrap();
    let total = 4000u64;
    // Read replies while sending, so the client's own buffer never overflows.
    let reader = tokio::spawn({
        let client = client.clone();
        async move {
            let mut got = 0u64;
            let mut buf = [0u8; 16];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await
            {
                got += 1;
            }
            got
        }
    });
    for i in 0..total {
        client.send(&(i as u32).to_be_bytes()).await.unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let got = reader.await.unwrap();
    let stats = relay.stop().await;
    assert_eq!(stats.forward.offered, total);
    assert_eq!(
        stats.forward.dropped_random + stats.forward.forwarded,
        total
    );
    assert_eq!(
        got, stats.forward.forwarded,
        "every forwarded datagram came back"
    );
    let loss = stats.forward.dropped_random as f64 / total as f64;
    // 4000 trials: standard error 0.47 points; tolerance 2 points.
    assert!((loss - 0.10).abs() < 0.02, "measured loss {loss}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkstream_transfer_survives_a_lossy_delayed_relay() {
    use chunkstream_engine::manifest::collect_sources;
    use chunkstream_engine::session::{Receiver, SendConfig, send_files};
    use chunkstream_engine::transport::Tuning;
    use chunkstream_engine::transport::identity::Identity;

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("payload.bin");
    let mut data = vec![0u8; 3 << 20];
    blake3::Hasher::new().finalize_xof().fill(&mut data);
    std::fs::write(&src, &data).unwrap();

    let identity = Identity::generate().unwrap();
    let out = tmp.path().join("out");
    let receiver = Receiver::bind(
        &["127.0.0.1:0".parse().unwrap()],
        &out,
        "tok".into(),
        &identity,
        &Tuning::default(),
    )
    .unwrap();
    let server = receiver.local_addrs()[0];
    let serving = tokio::spawn(async move { receiver.serve(true, |_| {}).await });
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        to: server,
        forward: link(5, 0.01),
        reverse: link(5, 0.01),
        seed: 3,
    })
    .await
    .unwrap();
    let mut cfg = SendConfig::new(relay.local_addr(), identity.fingerprint(), "tok");
    cfg.block_size = 256 << 10;
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        send_files(collect_sources(&[src]).unwrap(), &cfg, |_| {}),
    )
    .await
    .expect("transfer finished in time")
    .expect("transfer succeeded");
    serving.await.unwrap().unwrap();
    let stats = relay.stop().await;
    assert_eq!(
        report.files[0].blake3,
        blake3::hash(&data).to_hex().as_str()
    );
    assert_eq!(std::fs::read(out.join("payload.bin")).unwrap(), data);
    assert!(
        stats.forward.dropped_random > 0,
        "the link really lost packets: {stats:?}"
    );
}
