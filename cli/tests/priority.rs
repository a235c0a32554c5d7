//! Priority classes on one shaped link (loopback relay, 80 Mbit/s, no root),
//! on both planes: three inputs, one per class, share the link 50/30/20
//! while all three have data (within ±5 points, from `send --json` progress
//! lines), each arrives intact; a lone Normal input gets the whole link.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use common::*;

const RATE: u64 = 80_000_000;

/// Each test measures rates: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn shaped(to: SocketAddr) -> Relay {
    let delay = Duration::from_millis(5);
    let link = LinkConfig {
        rate_bps: Some(RATE),
        queue_bytes: LinkConfig::default_queue_bytes(RATE, delay),
        delay,
        loss: LossModel::NONE,
        ..LinkConfig::default()
    };
    Relay::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        to,
        forward: link.clone(),
        reverse: link,
        seed: 3,
    })
    .await
    .unwrap()
}

fn lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `send` to `rx` through `relay`, with `--json`. The relay stands for an
/// Ethernet path: through loopback `--mtu auto` would pin 6550-byte
/// datagrams.
fn send_through(relay: &Relay, rx: &Receiver) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "send",
        "--to",
        &relay.local_addr().to_string(),
        "--mtu",
        "1452",
    ])
    .args(["--peer", &rx.fingerprint, "--token", &rx.token, "--json"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_classes_share_the_link_50_30_20_on_the_fec_plane() {
    share_50_30_20("fec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_classes_share_the_link_50_30_20_on_the_reliable_plane() {
    share_50_30_20("reliable").await;
}

async fn share_50_30_20(plane: &str) {
    let _one_at_a_time = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let size = 32u64 << 20;
    let names = ["critical", "high", "normal"];
    for (i, n) in names.iter().enumerate() {
        write_file(&tmp.path().join(format!("{n}.bin")), size, 50 + i as u64);
    }
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let relay = shaped(rx.addr.parse().unwrap()).await;
    let mut cmd = send_through(&relay, &rx);
    cmd.args(["--plane", plane]);
    for n in names {
        cmd.arg("--priority").arg(format!(
            "{n}={}",
            tmp.path().join(format!("{n}.bin")).display()
        ));
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_success(&out);
    let progress: Vec<[f64; 3]> = lines(&out.stdout)
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| names.map(|n| e["by_class"][n].as_u64().unwrap() as f64))
        .collect();
    // While all three are busy: from the first line where every class has
    // data to the last before any class completes.
    let busy: Vec<&[f64; 3]> = progress
        .iter()
        .filter(|p| p.iter().all(|&b| b > 0.0 && b < size as f64))
        .collect();
    assert!(
        busy.len() >= 5,
        "too few progress lines while all were busy: {progress:?}"
    );
    let (first, last) = (busy[0], busy[busy.len() - 1]);
    let moved: Vec<f64> = (0..3).map(|i| last[i] - first[i]).collect();
    let total: f64 = moved.iter().sum();
    let shares: Vec<f64> = moved.iter().map(|m| m / total).collect();
    println!("{plane}: shares while all three were busy: {shares:.3?}");
    for (s, want) in shares.iter().zip([0.5, 0.3, 0.2]) {
        assert!(
            (s - want).abs() <= 0.05,
            "shares {shares:.3?}, want 50/30/20"
        );
    }
    assert!(rx.wait(secs(20)).0.success());
    for n in names {
        let name = format!("{n}.bin");
        assert_same_file(&tmp.path().join(&name), &tmp.path().join("out").join(&name));
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_normal_transfer_gets_the_whole_link() {
    let _one_at_a_time = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("alone.bin");
    write_file(&src, 32 << 20, 60);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let relay = shaped(rx.addr.parse().unwrap()).await;
    let mut cmd = send_through(&relay, &rx);
    cmd.arg("--priority")
        .arg(format!("normal={}", src.display()));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_success(&out);
    let done = lines(&out.stdout)
        .into_iter()
        .find(|e| e["event"] == "done")
        .unwrap();
    let goodput = done["goodput_bps"].as_f64().unwrap();
    println!(
        "lone normal: {:.1} Mbit/s on an 80 Mbit/s link",
        goodput / 1e6
    );
    // Work conservation, not a rate benchmark (the bench measures rates):
    // a Normal class held to its 20 % share would move 16 Mbit/s, to 50 %
    // 40. Typical runs move 68-73; with the relay in this test process 2
    // runs of 14 moved 55-57, so the bound is 0.6 of the link, not 0.7.
    assert!(goodput >= 0.6 * RATE as f64, "{:.1} Mbit/s", goodput / 1e6);
    assert!(rx.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/alone.bin"));
    relay.stop().await;
}
