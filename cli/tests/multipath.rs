//! Multi-path on loopback, no root: three UDP relays with unequal rates in
//! front of one receiver stand for three interfaces. On both planes the file
//! arrives intact (BLAKE3 and b3sum), the per-path bytes follow the rates,
//! and a path that dies mid-transfer is made up for on the others and
//! rejoins when it comes back. The FEC plane (the default) keeps going over
//! lossy paths, and `--max-rate` caps the sum of the paths.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use common::*;

async fn relay(listen: SocketAddr, to: SocketAddr, rate_mbit: u64, seed: u64) -> Relay {
    lossy_relay(listen, to, rate_mbit, 0.0, seed).await
}

/// A relay losing `loss` of the data direction's packets.
async fn lossy_relay(
    listen: SocketAddr,
    to: SocketAddr,
    rate_mbit: u64,
    loss: f64,
    seed: u64,
) -> Relay {
    Relay::start(RelayConfig {
        listen,
        to,
        forward: link(rate_mbit, loss),
        reverse: link(rate_mbit, 0.0),
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
        // The relays stand for Ethernet paths; through loopback `--mtu
        // auto` would pin 6550-byte datagrams.
        "--mtu".into(),
        "1452".into(),
    ];
    for r in relays {
        args.push("--path".into());
        args.push(format!("127.0.0.1={r}"));
    }
    args
}

/// A source file of `size` bytes and a receiver (`--once`) in a fresh
/// folder.
fn bed(
    name: &str,
    size: u64,
    seed: u64,
) -> (tempfile::TempDir, std::path::PathBuf, Receiver, SocketAddr) {
    // In RAM, the source flushed: these tests bound rates and shares.
    let tmp = ram_tempdir();
    let src = tmp.path().join(name);
    write_file(&src, size, seed);
    settle_writeback();
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let to = rx.addr.parse().unwrap();
    (tmp, src, rx, to)
}

/// Held by every transfer of this file: run side by side on two cores
/// (with their senders, receivers and relays), they starve each other and
/// the tests that bound a rate or a share fail. A CI run saw the lossy test at 0.42 of its capacity (bound 0.5)
/// with every test of this file running at once; alone it moves ~0.8.
///
/// The relays run in the test's own runtime, which has four workers, not
/// two: with two, the three relays of the lossy test fell behind now and
/// then (5 of 14 runs below 0.55 of capacity, one at 0.23, at this commit
/// and the one before), while the same links as three `relay` processes
/// never did (18 runs, 0.64-0.85); with four workers, 8 of 8 runs moved
/// 0.75-0.82. Clean-clone CI runs still failed it right after the build
/// (0.23-0.46): the sender's pacer lost its budget to late wake-ups on busy
/// cores, fixed in `fec::shard_pacer` (with both cores busy: 0.43-0.54
/// before, 0.73-0.83 after).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_unequal_paths_share_the_file_by_their_rates_on_the_fec_plane() {
    stripe("fec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_unequal_paths_share_the_file_by_their_rates_on_the_reliable_plane() {
    stripe("reliable").await;
}

async fn stripe(plane: &str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (tmp, src, rx, to) = bed("striped.bin", 40 << 20, 31);
    let rates = [20, 40, 60];
    let mut relays = Vec::new();
    for (i, r) in rates.iter().enumerate() {
        relays.push(relay("127.0.0.1:0".parse().unwrap(), to, *r, i as u64).await);
    }
    let addrs: Vec<SocketAddr> = relays.iter().map(Relay::local_addr).collect();
    let mut args = send_args(&rx, &src, &addrs);
    args.extend(["--plane".into(), plane.into()]);
    let (stdout, done) = run_send(args).await;
    let paths = done["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3, "{done}");
    assert_eq!(done["plane"], plane, "{done}");
    let total: u64 = paths.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    if plane == "reliable" {
        assert_eq!(total, 40 << 20, "every byte acknowledged once: {done}");
    } else {
        // Shard bytes delivered, as the receiver's last reports counted
        // them: the file plus a little redundancy. The sender ends on
        // FILE_DONE (control stream) without waiting for the reports that
        // follow it, so under load they trail: a clean-clone CI run
        // counted 41 931 864 bytes, 11 kB under the file, with 402 repair
        // shards sent (~0.6 MB of data the last reports had not caught).
        assert!(
            ((40 << 20) * 95 / 100..(40 << 20) * 11 / 10).contains(&total),
            "{done}"
        );
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_that_dies_and_comes_back_rejoins_on_the_fec_plane() {
    failover("fec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_that_dies_and_comes_back_rejoins_on_the_reliable_plane() {
    failover("reliable").await;
}

async fn failover(plane: &str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (tmp, src, rx, to) = bed("failover.bin", 48 << 20, 32);
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
    let mut args = send_args(&rx, &src, &addrs);
    args.extend(["--plane".into(), plane.into()]);
    let started = Instant::now();
    let sender = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = collect(sender, secs(120));
    // 48 MiB at 48 Mbit/s: about 8.4 s. Path 1 (16 Mbit/s) goes away at
    // about 40 % and comes back at about 70 %.
    tokio::time::sleep_until((started + Duration::from_millis(3400)).into()).await;
    relays[1].take().unwrap().stop().await;
    tokio::time::sleep_until((started + Duration::from_millis(5900)).into()).await;
    relays[1] = Some(relay(addrs[1], to, 16, 9).await);
    let out = tokio::task::spawn_blocking(move || {
        let o = output();
        (
            o.status,
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
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

/// Runs `send` over `relays` with `extra` arguments; the last JSON line.
async fn send_over(
    rx: &Receiver,
    src: &Path,
    relays: &[SocketAddr],
    extra: &[&str],
) -> serde_json::Value {
    let mut args = send_args(rx, src, relays);
    args.extend(extra.iter().map(|s| s.to_string()));
    run_send(args).await.1
}

/// Runs `chunkstream-engine ARGS`, which must succeed: its stdout and its
/// `done` line.
async fn run_send(args: Vec<String>) -> (String, serde_json::Value) {
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = events(&stdout)
        .into_iter()
        .find(|e| e["event"] == "done")
        .expect("a done line");
    (stdout, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fec_plane_keeps_going_over_three_lossy_paths() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (tmp, src, rx, to) = bed("lossy.bin", 32 << 20, 33);
    let paths = [(20u64, 0.01), (40, 0.02), (60, 0.05)];
    let mut relays = Vec::new();
    for (i, (rate, loss)) in paths.iter().enumerate() {
        relays.push(
            lossy_relay(
                "127.0.0.1:0".parse().unwrap(),
                to,
                *rate,
                *loss,
                40 + i as u64,
            )
            .await,
        );
    }
    let addrs: Vec<SocketAddr> = relays.iter().map(Relay::local_addr).collect();
    let done = send_over(&rx, &src, &addrs, &[]).await;
    assert_eq!(done["plane"], "fec");
    let capacity: f64 = paths.iter().map(|(r, l)| *r as f64 * 1e6 * (1.0 - l)).sum();
    let goodput = done["goodput_bps"].as_f64().unwrap();
    eprintln!(
        "three lossy paths: {:.1} Mbit/s, {:.2} of capacity",
        goodput / 1e6,
        goodput / capacity
    );
    // The reliable plane moves a few Mbit/s here (loss-based congestion
    // control); the bound only catches a collapse. The bench measures.
    assert!(goodput > 0.5 * capacity, "{goodput} of {capacity}: {done}");
    let paths = done["paths"].as_array().unwrap();
    for p in paths {
        assert!(p["bytes"].as_u64().unwrap() > 0, "{done}");
    }
    // The 5 % path reports the most loss.
    let loss: Vec<f64> = paths.iter().map(|p| p["loss"].as_f64().unwrap()).collect();
    assert!(loss[2] > loss[0], "{done}");
    let (status, _, _) = rx.wait(secs(20));
    assert!(status.success());
    assert_same_file(&src, &tmp.path().join("out/lossy.bin"));
    for r in relays {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_rate_caps_the_sum_of_the_paths_and_a_path_cap_its_path() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("capped.bin");
    write_file(&src, 12 << 20, 34);
    for (plane, i) in [("fec", 0u64), ("reliable", 1)] {
        let out = tmp.path().join(format!("out-{plane}"));
        let rx = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
        let to: SocketAddr = rx.addr.parse().unwrap();
        let mut relays = Vec::new();
        for (j, r) in [40u64, 80, 120].iter().enumerate() {
            relays.push(
                relay(
                    "127.0.0.1:0".parse().unwrap(),
                    to,
                    *r,
                    50 + 3 * i + j as u64,
                )
                .await,
            );
        }
        let mut addrs: Vec<String> = relays.iter().map(|r| r.local_addr().to_string()).collect();
        // The fastest path capped to 10 Mbit/s on its own.
        addrs[2].push_str("@10mbit");
        let mut args = vec![
            "send".to_owned(),
            src.display().to_string(),
            "--peer".into(),
            rx.fingerprint.clone(),
            "--token".into(),
            rx.token.clone(),
            "--json".into(),
            "--plane".into(),
            plane.into(),
            "--mtu".into(),
            "1452".into(),
            "--max-rate".into(),
            "60mbit".into(),
        ];
        for a in &addrs {
            args.extend(["--path".into(), format!("127.0.0.1={a}")]);
        }
        let (_, done) = run_send(args).await;
        let goodput = done["goodput_bps"].as_f64().unwrap();
        assert!(
            goodput <= 63e6,
            "{plane}: {goodput} over the 60 Mbit/s cap: {done}"
        );
        assert!(goodput >= 30e6, "{plane}: {goodput}: {done}");
        let paths = done["paths"].as_array().unwrap();
        let total: f64 = paths.iter().map(|p| p["bytes"].as_f64().unwrap()).sum();
        let capped = paths[2]["bytes"].as_f64().unwrap() / total;
        // 10 of at most 60 Mbit/s: a sixth, with room for start-up.
        assert!(
            capped < 0.25,
            "{plane}: the capped path carried {capped:.2}: {done}"
        );
        let (status, _, _) = rx.wait(secs(20));
        assert!(status.success());
        assert_same_file(&src, &out.join("capped.bin"));
        for r in relays {
            r.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_whose_remote_never_answers_is_named_and_the_others_carry_the_file() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (tmp, src, rx, to) = bed("partial.bin", 8 << 20, 35);
    let good = relay("127.0.0.1:0".parse().unwrap(), to, 40, 60).await;
    // A UDP socket that takes datagrams and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addrs = [good.local_addr(), silent.local_addr().unwrap()];
    let done = send_over(&rx, &src, &addrs, &[]).await;
    let paths = done["paths"].as_array().unwrap();
    // Dialling it times out (5 s) and is retried with back-off: never up.
    assert_ne!(paths[1]["state"], "up", "{done}");
    assert_eq!(paths[1]["bytes"], 0, "{done}");
    assert!(
        paths[1]["name"]
            .as_str()
            .unwrap()
            .ends_with(&addrs[1].to_string()),
        "{done}"
    );
    let (status, _, _) = rx.wait(secs(20));
    assert!(status.success());
    assert_same_file(&src, &tmp.path().join("out/partial.bin"));
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_extra_path_on_a_missing_interface_is_reported_and_the_transfer_goes_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (tmp, src, rx, to) = bed("iface.bin", 4 << 20, 36);
    let good = relay("127.0.0.1:0".parse().unwrap(), to, 40, 61).await;
    let mut args = send_args(&rx, &src, &[good.local_addr()]);
    args.extend(["--path".into(), format!("nosuch0={}", good.local_addr())]);
    let (stdout, _) = run_send(args).await;
    let down = events(&stdout)
        .into_iter()
        .find(|e| e["event"] == "path" && e["path"] == 1 && e["state"] == "down")
        .unwrap_or_else(|| panic!("path 1 never reported down: {stdout}"));
    let reason = down["reason"].as_str().unwrap();
    assert!(reason.contains("nosuch0"), "{down}");
    let (status, _, _) = rx.wait(secs(20));
    assert!(status.success());
    assert_same_file(&src, &tmp.path().join("out/iface.bin"));
    good.stop().await;
}

#[test]
fn bad_path_lists_and_caps_are_refused_or_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x.bin");
    write_file(&src, 1000, 1);
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .arg("send")
            .arg(&src)
            .args([
                "--peer",
                &"0".repeat(64),
                "--token",
                "t",
                "--connect-timeout",
                "1",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let twice = run(&[
        "--path",
        "127.0.0.1=127.0.0.1:9",
        "--path",
        "127.0.0.1=127.0.0.1:9",
    ]);
    assert_eq!(twice.status.code(), Some(1));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(
        err.contains("127.0.0.1=127.0.0.1:9 is given twice"),
        "{err}"
    );
    let zero = run(&["--path", "127.0.0.1:9", "--max-rate", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(err.contains("must be a positive rate"), "{err}");
    let zero_path = run(&["--path", "127.0.0.1:9@0mbit"]);
    assert_eq!(zero_path.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero_path.stderr).contains("above zero"));
    // An interface that does not exist, on the path that opens the session:
    // the error names the path.
    let no_such = run(&["--path", "nosuch0=127.0.0.1:9"]);
    assert_ne!(no_such.status.code(), Some(0));
    let err = String::from_utf8_lossy(&no_such.stderr);
    assert!(err.contains("--path nosuch0=127.0.0.1:9"), "{err}");
    // A path cap above the total is a warning; the send goes on (and here
    // finds no receiver).
    let above = run(&["--path", "127.0.0.1:9@1gbit", "--max-rate", "10mbit"]);
    let err = String::from_utf8_lossy(&above.stderr);
    assert!(
        err.contains("warning: --path 127.0.0.1:9: its cap is above --max-rate"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:9"), "{err}");
}
