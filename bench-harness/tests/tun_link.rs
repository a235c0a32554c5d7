//! The TUN backend (root): two namespaces joined through the link model.
//! Delay shows in the round trip, TCP crosses the emulated link (with its
//! congestion controller named), and the namespaces are gone afterwards.
//! (A chunkstream transfer across it is tested in `cli/tests/tun_backend.rs`,
//! where the executable is.) Outside CI without root it skips
//! with the reason printed; under CI=true it must run.

use std::process::Command;

use chunkstream_bench_harness::usage::running_as_root as is_root;
use std::time::Duration;

use chunkstream_bench_harness::link::tun::{ADDR_B, TunLink};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};

fn skip(reason: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {reason}"
    );
    eprintln!("SKIPPED: {reason}");
    true
}

fn link(delay_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        rate_bps: Some(100_000_000),
        queue_bytes: LinkConfig::default_queue_bytes(100_000_000, Duration::from_millis(delay_ms)),
        delay: Duration::from_millis(delay_ms),
        loss: LossModel::Bernoulli { p: loss },
        ..LinkConfig::default()
    }
}

fn namespaces() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_crosses_the_emulated_link_with_its_delay_and_loss() {
    if !is_root() && skip("the TUN backend needs root") {
        return;
    }
    let prefix = format!("tt{}", std::process::id() % 100_000);
    let tun = TunLink::start(&prefix, link(10, 0.01), link(10, 0.0), 5)
        .await
        .unwrap();

    // Delay: 10 ms each way, so the round trip is at least 20 ms.
    let ping = tun
        .command(true, "ping")
        .args(["-c", "5", "-i", "0.05", &ADDR_B.to_string()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    let avg: f64 = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1)?.split('/').nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    assert!((20.0..30.0).contains(&avg), "round trip {avg} ms");

    // TCP, BBR named explicitly (this kernel's default), 2 s across 1 % loss.
    // (Time-based: with -n, iperf3 counts bytes handed to its socket, and the
    // server's total stops when the test does, not when the data arrives.)
    let has_iperf3 = Command::new("iperf3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_iperf3 || !skip("iperf3 is not installed") {
        let mut server = tun
            .command(false, "iperf3")
            .args(["-s", "-1"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = tun
            .command(true, "iperf3")
            .args(["-c", &ADDR_B.to_string(), "-C", "bbr", "-t", "2", "-J"])
            .output()
            .await
            .unwrap();
        let _ = server.wait().await;
        let v: serde_json::Value = serde_json::from_slice(&client.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&client.stdout)));
        assert_eq!(v["end"]["sender_tcp_congestion"], "bbr", "{}", v["end"]);
        let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
        assert!(
            received > 1 << 20,
            "TCP moved only {received} bytes: {}",
            v["end"]
        );
        assert!(
            v["end"]["sum_sent"]["retransmits"].as_u64().unwrap() > 0,
            "1% loss should force retransmits"
        );
    }

    let stats = tun.stop().await;
    assert!(stats.forward.dropped_random > 0, "{stats:?}");
    assert!(
        !namespaces().contains(&prefix),
        "left behind: {}",
        namespaces()
    );
}

/// A process left running in a namespace (a server whose parent was killed)
/// is stopped with it, so the namespace really goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_left_in_the_namespaces_are_stopped_with_the_link() {
    if !is_root() && skip("the TUN backend needs root") {
        return;
    }
    let prefix = format!("tl{}", std::process::id() % 100_000);
    let tun = TunLink::start(&prefix, link(1, 0.0), link(1, 0.0), 1)
        .await
        .unwrap();
    let mut orphan = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-b"), "sleep", "300"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tun);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = orphan.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the process in the namespace still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "killed, not finished: {status}");
    assert!(
        !namespaces().contains(&prefix),
        "left behind: {}",
        namespaces()
    );
}
