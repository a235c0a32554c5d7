//! Fairness (root): one FEC-plane transfer and one TCP flow (iperf3, Cubic
//! then BBR) share a 100 Mbit/s, 40 ms RTT link on the TUN backend with no random
//! loss, so every drop is congestive. The FEC transfer must complete,
//! verified, without starving the TCP flow: while both run, TCP keeps at
//! least a quarter of the link, and the FEC transfer a tenth (our
//! controller yields to a standing queue, so against Cubic, which fills the
//! queue, it takes the smaller share). Both rates are printed (run with
//! `--nocapture`); `results/README.md` records a run. Skips outside CI
//! without root or iperf3. `FAIRNESS_ROUNDS=N` repeats the pair N times
//! (a starved flow was a 1-in-8 event once; one round cannot show that).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::tun::{ADDR_B, TunLink};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fec_transfer_starves_neither_tcp_cubic_nor_tcp_bbr() {
    let have_iperf3 = std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_ok();
    if skip_unless(is_root() && have_iperf3, "needs root and iperf3") {
        return;
    }
    let rounds = std::env::var("FAIRNESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for _ in 0..rounds {
        for cc in ["cubic", "bbr"] {
            share_a_link_with(cc).await;
        }
    }
}

/// One FEC transfer and one TCP flow under `cc` on one link: both finish,
/// neither is starved.
async fn share_a_link_with(cc: &str) {
    let rate = 100_000_000;
    let link = LinkConfig {
        rate_bps: Some(rate),
        queue_bytes: LinkConfig::default_queue_bytes(rate, Duration::from_millis(20)),
        delay: Duration::from_millis(20),
        loss: LossModel::NONE,
        ..LinkConfig::default()
    };
    let prefix = format!("tf{}", std::process::id() % 100_000);
    let tun = TunLink::start(&prefix, link.clone(), link, 3)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("shared.bin");
    write_file(&src, 48 << 20, 5);
    let out = tmp.path().join("out");

    let mut iperf_server = tun
        .command(false, "iperf3")
        .args(["-s", "-1"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    // TCP Cubic for 14 s; the FEC transfer starts 3 s in.
    let t0 = Instant::now();
    let tcp = tun
        .command(true, "iperf3")
        .args([
            "-c",
            &ADDR_B.to_string(),
            "-C",
            cc,
            "-t",
            "14",
            "-i",
            "1",
            "-J",
        ])
        .output();
    let tcp = tokio::spawn(tcp);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fec_start = t0.elapsed().as_secs_f64();
    let sent = tun
        .command(true, BIN)
        .arg("send")
        .arg(&src)
        .args([
            "--to",
            &format!("{ADDR_B}:4433"),
            "--json",
            "--plane",
            "fec",
        ])
        .args(["--peer", first["fingerprint"].as_str().unwrap()])
        .args(["--token", first["token"].as_str().unwrap()])
        .output();
    let sent = tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("the FEC transfer finished within 60 s")
        .unwrap();
    let fec_end = t0.elapsed().as_secs_f64();
    assert_success(&sent);
    let tcp = tokio::time::timeout(Duration::from_secs(30), tcp)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = iperf_server.wait().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), recv.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    assert_same_file(&src, &out.join("shared.bin"));

    let v: serde_json::Value = serde_json::from_slice(&tcp.stdout).unwrap();
    assert_eq!(v["end"]["sender_tcp_congestion"], cc);
    // TCP's mean rate over the whole seconds in which both flows ran.
    let overlap: Vec<f64> = v["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            let (s, e) = (
                i["sum"]["start"].as_f64().unwrap(),
                i["sum"]["end"].as_f64().unwrap(),
            );
            s >= fec_start && e <= fec_end
        })
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap())
        .collect();
    assert!(
        overlap.len() >= 2,
        "the flows overlapped for {} whole seconds",
        overlap.len()
    );
    let tcp_rate = overlap.iter().sum::<f64>() / overlap.len() as f64;
    let per_second: Vec<String> = v["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{:.0}", i["sum"]["bits_per_second"].as_f64().unwrap() / 1e6))
        .collect();
    let fec_rate = (48u64 << 20) as f64 * 8.0 / (fec_end - fec_start);
    println!(
        "shared 100 Mbit/s link: FEC plane {:.1} Mbit/s (whole transfer, {fec_start:.1}-{fec_end:.1} s), TCP {cc} {:.1} Mbit/s (mean of {} s of overlap; each second: {})",
        fec_rate / 1e6,
        tcp_rate / 1e6,
        overlap.len(),
        per_second.join(" ")
    );
    assert!(
        tcp_rate >= 0.25 * rate as f64,
        "TCP {cc} starved: {:.1} Mbit/s",
        tcp_rate / 1e6
    );
    assert!(
        fec_rate >= 0.1 * rate as f64,
        "FEC starved by TCP {cc}: {:.1} Mbit/s",
        fec_rate / 1e6
    );
    drop(tun);
}
