//! A receiver under load: more senders than it runs at once are refused
//! as busy and get in by themselves with back-off, never reset or timed
//! out; a connection that never says HELLO is dropped at its deadline and
//! holds nobody up; a sender that stays refused past its busy timeout says
//! so.

mod common;

use std::time::{Duration, Instant};

use chunkstream_engine::send::FecConfig;
use chunkstream_engine::session::{RecvEvent, SendConfig, SendEvent, SessionError, send_files};
use chunkstream_engine::transport::{Tuning, client_endpoint};
use common::{Setup, blake3_of};

const TOKEN: &str = "load";

/// A receiver serving for ever with at most `max_connections`, HELLO
/// deadline `hello`.
fn start(max_connections: usize, hello: Duration) -> Setup {
    Setup::serve(TOKEN, |r| {
        r.set_max_connections(max_connections)
            .set_hello_timeout(hello);
    })
}

fn config(s: &Setup) -> SendConfig {
    let mut cfg = SendConfig::new(s.addr, s.fingerprint, TOKEN);
    cfg.fec = Some(FecConfig::default());
    cfg
}

/// Opens a QUIC connection to the receiver and says nothing.
async fn silent_connection(s: &Setup) -> (quinn::Endpoint, quinn::Connection) {
    let (endpoint, _) = client_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        None,
        s.fingerprint,
        &Tuning::default(),
    )
    .unwrap();
    let conn = endpoint
        .connect(s.addr, "chunkstream")
        .unwrap()
        .await
        .unwrap();
    (endpoint, conn)
}

/// Forty senders at once against a receiver that runs eight connections:
/// the rest are refused as busy, retry by themselves, and every file
/// arrives whole. No sender sees a reset, a timeout or any other error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_beyond_the_limit_are_told_busy_and_all_get_through() {
    const SENDERS: usize = 40;
    let s = start(8, Duration::from_secs(10));
    let mut tasks = Vec::new();
    for i in 0..SENDERS {
        let file = s.source(&format!("f{i}.bin"), 256 << 10, i as u8);
        let cfg = config(&s);
        tasks.push(tokio::spawn(async move {
            let mut busy = 0u32;
            let r = send_files(vec![file], &cfg, |e| {
                if let SendEvent::Busy { .. } = e {
                    busy += 1;
                }
            })
            .await;
            (r, busy)
        }));
    }
    let mut told_busy = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (r, busy) = t.await.unwrap();
        if let Err(e) = r {
            panic!("sender {i} failed: {e}");
        }
        told_busy += usize::from(busy > 0);
        let name = format!("f{i}.bin");
        assert_eq!(blake3_of(&s.out.join(&name)), blake3_of(&s.src.join(&name)));
    }
    let refusals = s
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, RecvEvent::Busy { .. }))
        .count();
    assert!(
        told_busy > 0 && refusals > 0,
        "forty senders against eight slots: some must have been told busy ({told_busy} senders, {refusals} refusals)"
    );
}

/// A connection that never says HELLO holds the receiver's only slot: a
/// sender is refused as busy until the receiver drops the silent one at its
/// HELLO deadline, then gets in and delivers.
#[tokio::test]
async fn a_connection_that_never_says_hello_is_dropped_at_the_deadline() {
    let s = start(1, Duration::from_millis(800));
    let (_endpoint, silent) = silent_connection(&s).await;
    let file = s.source("late.bin", 100_000, 3);
    let mut busy = 0u32;
    let started = Instant::now();
    send_files(vec![file], &config(&s), |e| {
        if let SendEvent::Busy { .. } = e {
            busy += 1;
        }
    })
    .await
    .expect("the sender gets in once the silent connection is dropped");
    assert!(busy > 0, "the sender was never told busy");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        blake3_of(&s.out.join("late.bin")),
        blake3_of(&s.src.join("late.bin"))
    );
    // The receiver closed the silent connection and said why.
    let closed = tokio::time::timeout(Duration::from_secs(2), silent.closed()).await;
    assert!(closed.is_ok(), "the silent connection is still open");
    let events = s.events.lock().unwrap();
    assert!(
        events.iter().any(|e| matches!(e, RecvEvent::Refused { reason, .. } if reason.contains("no HELLO within 0.8 s"))),
        "no refusal naming the HELLO deadline: {events:?}"
    );
}

/// A receiver that stays busy past the sender's busy timeout: the sender
/// gives up with an error that says busy, and names the receiver.
#[tokio::test]
async fn a_sender_refused_past_its_busy_timeout_says_the_receiver_is_busy() {
    let s = start(1, Duration::from_secs(30));
    let (_endpoint, _silent) = silent_connection(&s).await;
    let file = s.source("never.bin", 1000, 1);
    let mut cfg = config(&s);
    cfg.busy_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = send_files(vec![file], &cfg, |_| {}).await.unwrap_err();
    assert!(
        matches!(err, SessionError::Busy { .. }),
        "expected busy, got {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&s.addr.to_string()) && text.contains("is busy"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!s.out.join("never.bin").exists());
}
