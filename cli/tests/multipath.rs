//! Multi-path on loopback, no root: three UDP relays with unequal rates in
//! front of one receiver stand for three interfaces. The file arrives intact
//! (BLAKE3 and b3sum), the per-path bytes follow the rates, and a path that
//! dies mid-transfer has its blocks re-sent on the others and rejoins when
//! it comes back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use common::*;

fn link(rate_mbit: u64) -> LinkConfig {
    let rate = rate_mbit * 1_000_000;
    let delay = Duration::from_millis(5);
    LinkConfig {
        rate_bps: Some(rate),
        queue_bytes: LinkConfig::default_queue_bytes(rate, delay),
        delay,
        loss: LossModel::NONE,
        ..LinkConfig::default()
    }
}

async fn relay(listen: SocketAddr, to: SocketAddr, rate_mbit: u64, seed: u64) -> Relay {
    Relay::start(RelayConfig {
        listen,
        to,
        forward: link(rate_mbit),
        reverse: link(rate_mbit),
        seed,
    })
    .await
    .unwrap()
}

fn send_args(rx: &Receiver, file: &Path, relays: &[SocketAddr]) -> Vec<String> {
    let mut args = vec![
        "send".to_owned(),
        file.display().to_string(),
        "--peer".into(),
        rx.fingerprint.clone(),
        "--token".into(),
        rx.token.clone(),
        "--json".into(),
    ];
    for r in relays {
        args.push("--path".into());
        args.push(format!("127.0.0.1={r}"));
    }
    args
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_unequal_paths_share_the_file_by_their_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("striped.bin");
    write_file(&src, 40 << 20, 31);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let to: SocketAddr = rx.addr.parse().unwrap();
    let rates = [20, 40, 60];
    let mut relays = Vec::new();
    for (i, r) in rates.iter().enumerate() {
        relays.push(relay("127.0.0.1:0".parse().unwrap(), to, *r, i as u64).await);
    }
    let addrs: Vec<SocketAddr> = relays.iter().map(Relay::local_addr).collect();
    let args = send_args(&rx, &src, &addrs);
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = events(&stdout)
        .into_iter()
        .find(|e| e["event"] == "done")
        .unwrap();
    let paths = done["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3, "{done}");
    let total: u64 = paths.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert_eq!(total, 40 << 20, "every byte acknowledged once: {done}");
    for (p, want) in paths.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        let share = p["bytes"].as_u64().unwrap() as f64 / total as f64;
        assert!(
            (share - want).abs() < 0.12,
            "path {} carried {share:.2}, rates say {want:.2}: {done}",
            p["name"]
        );
    }
    // Progress lines name every path with its measured rate.
    let progress = events(&stdout)
        .into_iter()
        .rfind(|e| e["event"] == "progress")
        .expect("progress lines");
    let rates = progress["paths"].as_array().unwrap();
    assert_eq!(rates.len(), 3, "{progress}");
    assert!(
        rates.iter().all(|p| p["rate_bps"].as_f64().unwrap() > 0.0),
        "{progress}"
    );
    let (status, rx_out, _) = rx.wait(secs(20));
    assert!(status.success());
    assert_eq!(rx_out.matches("path_joined").count(), 2, "{rx_out}");
    assert_same_file(&src, &tmp.path().join("out/striped.bin"));
    for r in relays {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_dies_and_comes_back_rejoins_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("failover.bin");
    write_file(&src, 48 << 20, 32);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let to: SocketAddr = rx.addr.parse().unwrap();
    let mut relays = Vec::new();
    for (i, r) in [8u64, 16, 24].iter().enumerate() {
        relays.push(Some(
            relay("127.0.0.1:0".parse().unwrap(), to, *r, i as u64).await,
        ));
    }
    let addrs: Vec<SocketAddr> = relays
        .iter()
        .map(|r| r.as_ref().unwrap().local_addr())
        .collect();
    let args = send_args(&rx, &src, &addrs);
    let started = Instant::now();
    let mut sender = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 48 MiB at 48 Mbit/s: about 8.4 s. Path 1 (16 Mbit/s) goes away at
    // about 40 % and comes back at about 70 %.
    tokio::time::sleep_until((started + Duration::from_millis(3400)).into()).await;
    relays[1].take().unwrap().stop().await;
    tokio::time::sleep_until((started + Duration::from_millis(5900)).into()).await;
    relays[1] = Some(relay(addrs[1], to, 16, 9).await);
    let out = tokio::task::spawn_blocking(move || {
        let status = wait_bounded(&mut sender, secs(120));
        let mut stdout = String::new();
        std::io::Read::read_to_string(sender.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(sender.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stdout, stderr)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "{}\n{}", out.2, out.1);
    let evs = events(&out.1);
    let states: Vec<String> = evs
        .iter()
        .filter(|e| e["event"] == "path" && e["path"] == 1)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect();
    let down = states
        .iter()
        .position(|s| s == "down")
        .unwrap_or_else(|| panic!("path 1 never went down: {states:?}"));
    assert!(
        states[down..].iter().any(|s| s == "up"),
        "path 1 never rejoined: {states:?}"
    );
    let (status, rx_out, _) = rx.wait(secs(20));
    assert!(status.success());
    assert!(
        rx_out.matches("path_joined").count() >= 3,
        "the re-dialled path joined again: {rx_out}"
    );
    assert_same_file(&src, &tmp.path().join("out/failover.bin"));
    // Late copies of re-sent blocks must not recreate a partial file.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for r in relays.into_iter().flatten() {
        r.stop().await;
    }
}

#[test]
fn options_that_do_not_combine_with_several_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x.bin");
    write_file(&src, 1000, 1);
    for extra in [["--max-rate", "10mbit"], ["--plane", "fec"]] {
        let out = Command::new(BIN)
            .arg("send")
            .arg(&src)
            .args(["--peer", &"0".repeat(64), "--token", "t"])
            .args([
                "--path",
                "127.0.0.1=127.0.0.1:9",
                "--path",
                "127.0.0.1=127.0.0.1:10",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("one path for now"), "{extra:?}: {err}");
    }
}

#[test]
fn priority_classes_on_the_fec_plane_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x.bin");
    write_file(&src, 1000, 1);
    let out = Command::new(BIN)
        .arg("send")
        .args([
            "--to",
            "127.0.0.1:9",
            "--peer",
            &"0".repeat(64),
            "--token",
            "t",
        ])
        .args(["--plane", "fec", "--priority"])
        .arg(format!("critical={}", src.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reliable plane only"), "{err}");
}
