//! A real `recv` / `send` pair in two network namespaces joined by the TUN
//! backend (10 ms each way, 1 % loss): the file arrives intact and the
//! namespaces are removed. Root only; skips with the reason outside CI.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chunkstream_bench_harness::link::tun::{ADDR_B, TunLink};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_across_the_tun_link_verifies() {
    if skip_unless(is_root(), "the TUN backend needs root") {
        return;
    }
    let link = |loss| LinkConfig {
        rate_bps: Some(100_000_000),
        queue_bytes: LinkConfig::default_queue_bytes(100_000_000, Duration::from_millis(10)),
        delay: Duration::from_millis(10),
        loss: LossModel::Bernoulli { p: loss },
        ..LinkConfig::default()
    };
    let prefix = format!("tc{}", std::process::id() % 100_000);
    let tun = TunLink::start(&prefix, link(0.01), link(0.0), 11)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("across.bin");
    write_file(&src, 3 << 20, 21);
    let out = tmp.path().join("out");

    let mut recv = tun
        .command(false, BIN)
        .args([
            "recv",
            "--listen",
            &format!("{ADDR_B}:4433"),
            "--once",
            "--json",
            "--out",
        ])
        .arg(&out)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(recv.stdout.take().unwrap()).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let send = tun
        .command(true, BIN)
        .arg("send")
        .arg(&src)
        .args([
            "--to",
            &format!("{ADDR_B}:4433"),
            "--json",
            "--block-size",
            "256KiB",
        ])
        .args([
            "--peer",
            first["fingerprint"].as_str().unwrap(),
            "--token",
            first["token"].as_str().unwrap(),
        ])
        .output();
    let sent = tokio::time::timeout(Duration::from_secs(120), send)
        .await
        .expect("send finished")
        .unwrap();
    assert_success(&sent);
    let status = tokio::time::timeout(Duration::from_secs(20), recv.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_same_file(&src, &out.join("across.bin"));
    let stats = tun.stop().await;
    assert!(
        stats.forward.dropped_random > 0,
        "the link lost nothing: {stats:?}"
    );
    let left = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!left.contains(&prefix), "namespaces left behind: {left}");
}
