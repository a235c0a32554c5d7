//! Sessions held open (`send_files_open`): files added while a session
//! runs arrive whole, numbered after the files before them; they take
//! their class's share of the bandwidth from the files already moving
//! (the agent's jobs to one receiver share one scheduler); a session whose
//! files are all done waits for more until the caller closes it; a batch
//! naming a file already in the session is refused and the session goes
//! on; an added file resumes from what an earlier attempt left.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunkstream_engine::manifest::SourceFile;
use chunkstream_engine::multipath::priority::Class;
use chunkstream_engine::send::FecConfig;
use chunkstream_engine::session::{
    FileBatch, RecvEvent, SendConfig, SendEvent, send_files, send_files_open,
};
use chunkstream_engine::transport::Congestion;
use common::Setup;
use tokio::sync::{mpsc, oneshot};

const TOKEN: &str = "open";

fn start() -> Setup {
    Setup::serve(TOKEN, |_| {})
}

fn config(s: &Setup, fec: bool, mbit: Option<u64>) -> SendConfig {
    let mut cfg = SendConfig::new(s.addr, s.fingerprint, TOKEN);
    if fec {
        cfg.fec = Some(FecConfig::default());
        cfg.tuning.congestion = Congestion::Rate;
    }
    cfg.max_rate = mbit.map(|m| m * 1_000_000 / 8);
    // Blocks of 256 KiB: the scheduler's turns (5 blocks of Critical, 2 of
    // Normal) are then short beside the test's 6 MiB of Critical.
    cfg.block_size = 256 << 10;
    cfg
}

fn batch(
    files: Vec<SourceFile>,
    class: Class,
) -> (
    FileBatch,
    oneshot::Receiver<Result<std::ops::Range<usize>, String>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        FileBatch {
            files,
            class,
            added: Some(tx),
        },
        rx,
    )
}

/// What the sender reported, with when.
#[derive(Default)]
struct Seen {
    /// (seconds since start, bytes acknowledged per class).
    acked: Vec<(f64, [u64; 3])>,
    added: Vec<(usize, usize)>,
    done: Vec<usize>,
}

/// A Normal file moving at a capped 40 Mbit/s; once 2 MiB of it are
/// acknowledged, a Critical batch (a 6 MiB file and an empty one) joins.
/// While both classes have data, Critical gets 50 / (50 + 20) of the
/// bytes; every file arrives whole, numbered after the first.
async fn a_batch_joins_and_takes_its_share(fec: bool) {
    let s = start();
    let normal = s.source("normal.bin", 20 << 20, 1);
    let critical = s.source("critical.bin", 6 << 20, 2);
    let empty = s.source("empty", 0, 3);
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let started = Instant::now();
    let mut pending = Some((tx, vec![critical, empty]));
    let (replied_tx, replied_rx) = std::sync::mpsc::channel();
    let cfg = config(&s, fec, Some(40));
    let report = send_files_open(vec![normal], &cfg, rx, move |e| {
        let mut seen = log.lock().unwrap();
        match e {
            SendEvent::Acked { by_class, .. } => {
                seen.acked
                    .push((started.elapsed().as_secs_f64(), *by_class));
                if by_class[2] >= 2 << 20
                    && let Some((tx, files)) = pending.take()
                {
                    let (b, reply) = batch(files, Class::Critical);
                    tx.send(b).unwrap();
                    // The batch is the only one: closing the channel lets
                    // the session end once every file is done.
                    drop(tx);
                    replied_tx.send(reply).unwrap();
                }
            }
            SendEvent::FilesAdded { first, count } => seen.added.push((*first, *count)),
            SendEvent::FileDone { file, .. } => seen.done.push(*file),
            _ => {}
        }
    })
    .await
    .expect("the session with an added batch succeeds");
    let reply = replied_rx.recv().unwrap().await.unwrap();
    assert_eq!(reply, Ok(1..3));
    for name in ["normal.bin", "critical.bin", "empty"] {
        s.assert_arrived(name);
    }
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["normal.bin", "critical.bin", "empty"]);
    assert_eq!(report.bytes, 26 << 20);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.added, [(1, 2)]);
    let mut done = seen.done.clone();
    done.sort();
    assert_eq!(done, [0, 1, 2]);
    // The share while both classes had data: from the first MiB of
    // Critical acknowledged (blocks of Normal admitted before the batch
    // came are still being acknowledged before) to the last before
    // Critical was complete.
    let first = seen
        .acked
        .iter()
        .position(|(_, c)| c[0] >= 1 << 20)
        .unwrap();
    let last = seen
        .acked
        .iter()
        .rposition(|(_, c)| c[0] < (6 << 20) - (1 << 20))
        .unwrap();
    assert!(last > first, "no overlap: {first} {last}");
    let (a, b) = (seen.acked[first].1, seen.acked[last].1);
    let crit = (b[0] - a[0]) as f64;
    let norm = (b[2] - a[2]) as f64;
    let share = crit / (crit + norm);
    eprintln!(
        "fec={fec}: Critical took {share:.3} of {:.1} MiB over {:.2} s (50/70 = 0.714)",
        (crit + norm) / (1 << 20) as f64,
        seen.acked[last].0 - seen.acked[first].0
    );
    assert!(
        (0.62..=0.80).contains(&share),
        "Critical's share while both had data was {share:.3}, expected 50/70 = 0.714"
    );
    // The receiver saw one session, grown by the batch.
    let events = s.events.lock().unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, RecvEvent::FilesAdded { files: 2, bytes, .. } if *bytes == 6 << 20)
        ),
        "{events:?}"
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, RecvEvent::SessionStarted { .. }))
        .count();
    assert_eq!(started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_fec_plane_a_batch_joins_a_running_session_and_takes_its_share() {
    a_batch_joins_and_takes_its_share(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_reliable_plane_a_batch_joins_a_running_session_and_takes_its_share() {
    a_batch_joins_and_takes_its_share(false).await;
}

/// Every file of the session is done, but the caller has not closed it: it
/// waits (the receiver too), takes a batch a moment later, and ends when
/// the caller closes it. A batch naming a file already in the session is
/// refused with the name, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_nothing_left_waits_for_more_until_it_is_closed() {
    let s = start();
    let first = s.source("first.bin", 300_000, 4);
    let later = s.source("later.bin", 2_000_000, 5);
    let again = s.source("first.bin", 300_000, 4);
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg = config(&s, true, None);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let session = tokio::spawn(async move {
        send_files_open(vec![first], &cfg, rx, move |e| {
            if let SendEvent::FileDone { file, .. } = e {
                let _ = done_tx.send(*file);
            }
        })
        .await
    });
    assert_eq!(done_rx.recv().await, Some(0));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!session.is_finished(), "the session ended while held open");
    let (dup, dup_reply) = batch(vec![again], Class::High);
    tx.send(dup).unwrap();
    let refused = dup_reply.await.unwrap().unwrap_err();
    assert!(refused.contains("\"first.bin\""), "{refused}");
    let (b, reply) = batch(vec![later], Class::Normal);
    tx.send(b).unwrap();
    assert_eq!(reply.await.unwrap(), Ok(1..2));
    assert_eq!(done_rx.recv().await, Some(1));
    drop(tx);
    let report = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends once closed")
        .unwrap()
        .unwrap();
    assert_eq!(report.files.len(), 2);
    s.assert_arrived("first.bin");
    s.assert_arrived("later.bin");
    // The receiver ends its side when the sender's CONNECTION_CLOSE
    // arrives, which the sender no longer waits out (it lets the close
    // leave and returns): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, RecvEvent::SessionEnded { result: Ok(r), .. } if r.files == 2))
    {
        assert!(
            Instant::now() < deadline,
            "the receiver did not end the session with 2 files"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file interrupted in an earlier session, added to a session held open:
/// the receiver announces what its `.part` holds (HAVE) before taking the
/// batch, and only the rest is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_file_resumes_from_what_an_earlier_attempt_left() {
    let s = start();
    let big = s.source("big.bin", 24 << 20, 6);
    // The first attempt is cut off after 4 MiB.
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<()>();
    let cfg = config(&s, true, Some(80));
    let attempt = send_files(vec![big.clone()], &cfg, move |e| {
        if let SendEvent::Acked { acked_bytes, .. } = e
            && *acked_bytes >= 4 << 20
        {
            let _ = stop_tx.send(());
        }
    });
    tokio::select! {
        r = attempt => panic!("the first attempt was to be cut off, it ended: {r:?}"),
        _ = stop_rx.recv() => {}
    }
    // The receiver notices the sender is gone and keeps the `.part`.
    let part = s.out.join("big.bin.part");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, RecvEvent::SessionEnded { result: Err(_), .. }))
    {
        assert!(Instant::now() < deadline, "the cut-off session never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(part.exists());
    let small = s.source("small.bin", 500_000, 7);
    let (tx, rx) = mpsc::unbounded_channel();
    let (b, reply) = batch(vec![big], Class::Normal);
    tx.send(b).unwrap();
    drop(tx);
    let report = send_files_open(vec![small], &config(&s, true, None), rx, |_| {})
        .await
        .expect("the second session succeeds");
    assert_eq!(reply.await.unwrap(), Ok(1..2));
    s.assert_arrived("big.bin");
    s.assert_arrived("small.bin");
    let resumed = report.files[1].resumed_bytes;
    assert!(
        resumed >= 2 << 20,
        "only {resumed} bytes of big.bin were resumed"
    );
}
