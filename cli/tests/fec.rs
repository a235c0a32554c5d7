//! The FEC plane end to end, through the bench's UDP relay on loopback (no
//! root): lossy and bursty links, corrupted shards, a receiver without
//! datagrams. Every transfer is checked with BLAKE3 (and b3sum where
//! installed) against the source.

mod common;

use std::path::Path;
use std::time::Duration;

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig, RelayStats};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use common::*;

fn link(rate_mbit: u64, delay_ms: u64, loss: LossModel) -> LinkConfig {
    let rate = rate_mbit * 1_000_000;
    let delay = Duration::from_millis(delay_ms);
    LinkConfig {
        rate_bps: Some(rate),
        queue_bytes: LinkConfig::default_queue_bytes(rate, delay),
        delay,
        loss,
        ..LinkConfig::default()
    }
}

/// Sends `file` on the FEC plane through a relay with `forward` and
/// `reverse` links; returns the sender's output and the relay's counts.
/// Unless `extra` sets `--mtu`, the session pins 1452 bytes: the relay
/// stands for an Ethernet path, and through loopback `--mtu auto` would pin
/// 6550-byte datagrams (tested on its own below).
fn send_via(
    rx: &Receiver,
    file: &Path,
    forward: LinkConfig,
    reverse: LinkConfig,
    extra: &[&str],
) -> (std::process::Output, RelayStats) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt
        .block_on(Relay::start(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            to: rx.addr.parse().unwrap(),
            forward,
            reverse,
            seed: 42,
        }))
        .unwrap();
    let mut args = vec![file.display().to_string()];
    args.extend(rx.send_args());
    assert_eq!(args[1], "--to");
    args[2] = relay.local_addr().to_string(); // through the relay
    args.extend(["--plane", "fec", "--json"].map(String::from));
    if !extra.contains(&"--mtu") {
        args.extend(["--mtu", "1452"].map(String::from));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = send(&args, secs(120));
    (out, rt.block_on(relay.stop()))
}

/// Sends `file` over a relay with `loss` in the data direction; returns the
/// sender's output and the relay's forward drop counts (random, queue).
fn send_through_relay(
    rx: &Receiver,
    file: &Path,
    loss: LossModel,
    extra: &[&str],
) -> (std::process::Output, u64, u64) {
    let forward = link(100, 5, loss);
    let (out, stats) = send_via(rx, file, forward, link(100, 5, LossModel::NONE), extra);
    (
        out,
        stats.forward.dropped_random,
        stats.forward.dropped_queue,
    )
}

fn fec_report(out: &std::process::Output) -> serde_json::Value {
    let v = last_json(out);
    assert_eq!(v["event"], "done", "{v}\n{}", stderr(out));
    assert_eq!(v["plane"], "fec", "{v}");
    v["fec"].clone()
}

#[test]
fn random_loss_is_repaired_and_the_file_arrives_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("lossy.bin");
    write_file(&src, 12 << 20 | 12345, 7); // not a whole number of blocks
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    // No up-front redundancy: every lost source shard must be repaired
    // with recovery shards sent on the receiver's reports.
    let (out, random, _) = send_through_relay(
        &rx,
        &src,
        LossModel::Bernoulli { p: 0.05 },
        &["--fec", "10+0"],
    );
    let fec = fec_report(&out);
    assert!(random > 100, "the link dropped only {random} packets");
    assert!(fec["repair_shards"].as_u64().unwrap() > 0, "{fec}");
    assert_eq!(fec["congestion"], "rate");
    assert_eq!(fec["redundancy"], "10+0");
    assert_eq!(fec["upfront_recovery"], 0);
    assert!(rx.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/lossy.bin"));
}

#[test]
fn bursty_loss_with_adaptive_redundancy_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bursty.bin");
    write_file(&src, 8 << 20, 8);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let loss = LossModel::GilbertElliott {
        p: 0.05,
        mean_burst: 8.0,
    };
    let (out, random, _) = send_through_relay(&rx, &src, loss, &["--fec", "adaptive"]);
    let fec = fec_report(&out);
    assert!(random > 50, "the link dropped only {random} packets");
    assert_eq!(fec["redundancy"], "adaptive");
    assert!(rx.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/bursty.bin"));
}

#[test]
fn corrupted_shards_are_caught_by_the_digest_and_the_block_is_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("corrupt.bin");
    write_file(&src, 6 << 20, 9);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    // One flipped byte in every 997th shard; a block has ~750 sources, so
    // most blocks decode from a corrupted shard at least once.
    let (out, _, _) = send_through_relay(&rx, &src, LossModel::NONE, &["--corrupt-every", "997"]);
    let fec = fec_report(&out);
    assert!(fec["retried_blocks"].as_u64().unwrap() >= 1, "{fec}");
    assert!(rx.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/corrupt.bin"));
}

#[test]
fn a_receiver_without_datagrams_gets_the_reliable_plane_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("plain.bin");
    write_file(&src, 3 << 20, 10);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once", "--no-datagrams"],
    );
    let mut args = vec![src.display().to_string()];
    args.extend(rx.send_args());
    args.extend(["--plane", "fec", "--json"].map(String::from));
    let out = send(&args, secs(60));
    let v = last_json(&out);
    assert_eq!(v["event"], "done", "{v}");
    assert_eq!(v["plane"], "reliable", "{v}");
    assert!(
        stderr(&out)
            .contains("FEC plane unavailable (the receiver does not accept QUIC datagrams)"),
        "{}",
        stderr(&out)
    );
    assert!(rx.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/plain.bin"));
}

#[test]
fn bad_fec_and_cc_settings_are_refused_with_the_reason() {
    for (flag, value, want) in [
        ("--fec", "10", "expected DATA+PARITY"),
        ("--fec", "0+3", "DATA must be at least 1"),
        ("--cc", "reno", "unknown congestion controller \"reno\""),
        (
            "--mtu",
            "1000",
            "expected auto, discover or a size from 1200 to 16383 bytes",
        ),
        // Above 16 KiB quinn-proto panicked on its first packet.
        (
            "--mtu",
            "32000",
            "expected auto, discover or a size from 1200 to 16383 bytes",
        ),
        (
            "--priority",
            "urgent=x",
            "unknown priority \"urgent\" (critical, high, normal)",
        ),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["send", "x", "--to", "127.0.0.1:1", "--peer"])
            .arg("0".repeat(64))
            .args(["--token", "t", "--plane", "fec", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&out).contains(want),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
}

/// Sends `file` to `rx` through a relay whose path drops UDP payloads above
/// 1472 bytes without a word (a 1500-byte hop behind a jumbo route), with
/// `--mtu auto` unless `extra` pins a size.
fn send_through_black_hole(rx: &Receiver, file: &Path, extra: &[&str]) -> std::process::Output {
    let ethernet = LinkConfig {
        max_packet: Some(1472),
        ..link(100, 5, LossModel::NONE)
    };
    let mtu: &[&str] = if extra.contains(&"--mtu") {
        &[]
    } else {
        &["--mtu", "auto"]
    };
    let extra = [mtu, extra].concat();
    let (out, stats) = send_via(rx, file, ethernet.clone(), ethernet, &extra);
    assert!(
        stats.forward.dropped_too_big > 0,
        "the large dial never met the black hole: {stats:?}"
    );
    out
}

/// Whether `shard_bytes` is what a UDP payload of `mtu` leaves: less the
/// QUIC packet's header, tag and DATAGRAM frame (about 40 bytes) and the
/// shard header (15).
fn fits_mtu(shard_bytes: &serde_json::Value, mtu: u64) -> bool {
    shard_bytes
        .as_u64()
        .is_some_and(|b| (mtu - 80..=mtu - 15).contains(&b))
}

#[test]
fn auto_mtu_sends_large_datagrams_where_the_route_carries_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("jumbo.bin");
    write_file(&src, 6 << 20, 21);
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let mut args = vec![src.display().to_string()];
    args.extend(rx.send_args());
    args.extend(["--plane", "fec", "--json"].map(String::from));
    let out = send(&args, secs(60));
    let fec = fec_report(&out);
    // Loopback's route MTU is 65 536: the session pins 6550, the largest
    // size quinn still batches ten of into one GSO send.
    assert!(fits_mtu(&fec["shard_bytes"], 6550), "{fec}");
    assert!(!stderr(&out).contains("did not carry"), "{}", stderr(&out));
    let (status, stdout, rx_err) = rx.wait(secs(20));
    assert!(status.success(), "{rx_err}");
    // The 1452-byte dial raced beside it was closed as a probe, not
    // reported as a refused sender.
    assert!(!stdout.contains("refused"), "{stdout}");
    assert_same_file(&src, &tmp.path().join("out/jumbo.bin"));
}

#[test]
fn a_path_that_drops_large_datagrams_falls_back_to_1452_and_says_so() {
    for pinned in [None, Some("8952")] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("hole.bin");
        write_file(&src, 4 << 20, 22);
        let rx = Receiver::start(
            &tmp.path().join("out"),
            &tmp.path().join("state"),
            &["--once"],
        );
        let extra: Vec<&str> = pinned.map(|m| vec!["--mtu", m]).unwrap_or_default();
        let out = send_through_black_hole(&rx, &src, &extra);
        let tried = pinned.unwrap_or("6550");
        assert!(
            stderr(&out).contains(&format!(
                "the path did not carry {tried}-byte datagrams (a black hole behind the route's MTU); sending 1452-byte datagrams"
            )),
            "{}",
            stderr(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(
                r#"{{"event":"mtu_fallback","tried":{tried},"using":1452}}"#
            )),
            "{text}"
        );
        let fec = fec_report(&out);
        assert!(fits_mtu(&fec["shard_bytes"], 1452), "{fec}");
        // Exactly: quinn's bound on a short-header packet's overhead (flags
        // 1, packet number 4, tag 16), its DATAGRAM frame's (9), the shard
        // header (17), rounded down to even; no connection ID, as the
        // receiver's are empty (`transport::endpoint`). With quinn's
        // default eight-byte IDs it was 1396.
        assert_eq!(fec["shard_bytes"], 1452 - 21 - 9 - 17 - 1, "{fec}");
        assert!(rx.wait(secs(20)).0.success());
        assert_same_file(&src, &tmp.path().join("out/hole.bin"));
    }
}

/// A second send over the same relayed path to the same receiver starts
/// from what the first carried (`send`'s path memory); `--cold-start` does
/// not; a memory file that is not one is reported, ignored and replaced.
#[test]
fn a_second_send_over_the_same_path_starts_from_what_the_first_carried() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("warm.bin");
    write_file(&src, 16 << 20, 11);
    let rx = Receiver::start(&tmp.path().join("out"), &tmp.path().join("state"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt
        .block_on(Relay::start(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            to: rx.addr.parse().unwrap(),
            forward: link(100, 10, LossModel::Bernoulli { p: 0.02 }),
            reverse: link(100, 10, LossModel::NONE),
            seed: 7,
        }))
        .unwrap();
    let memory = tmp.path().join("sender-state");
    let send_once = |extra: &[&str]| {
        let mut args = vec![src.display().to_string()];
        args.extend(rx.send_args());
        args[2] = relay.local_addr().to_string();
        args.extend(["--plane", "fec", "--json", "--mtu", "1452", "--state-dir"].map(String::from));
        args.push(memory.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = send(&args, secs(60));
        let done = last_json(&out);
        assert_eq!(done["event"], "done", "{done}\n{}", stderr(&out));
        assert_same_file(&src, &tmp.path().join("out/warm.bin"));
        (done["paths"][0].clone(), stderr(&out))
    };
    let (first, _) = send_once(&[]);
    assert!(
        first.get("warm_start").is_none(),
        "nothing remembered yet: {first}"
    );
    let carried = first["carried"]["rate_bps"]
        .as_f64()
        .unwrap_or_else(|| panic!("carried: {first}"));
    assert!((50e6..200e6).contains(&carried), "{first}");
    let file = memory.join("path-memory.json");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("memory written")).unwrap();
    assert_eq!(kept["paths"][0]["path"], relay.local_addr().to_string());
    assert_eq!(kept["paths"][0]["peer"], rx.fingerprint.as_str());

    let (second, _) = send_once(&[]);
    assert_eq!(second["warm_start"], true, "{second}");
    let (cold, _) = send_once(&["--cold-start"]);
    assert!(cold.get("warm_start").is_none(), "{cold}");

    std::fs::write(&file, b"not json").unwrap();
    let (after, err) = send_once(&[]);
    assert!(after.get("warm_start").is_none(), "{after}");
    assert!(err.contains("is not a path memory file"), "{err}");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("replaced with a whole file");
    assert_eq!(kept["version"], 1);
    rt.block_on(relay.stop());
}

#[test]
fn a_folder_of_many_small_files_over_a_lossy_path_arrives_intact() {
    // 600 files of 1 byte to 20 kB (each one short block, many in flight
    // at once: block memory is counted in bytes) and one of four blocks,
    // through a path losing 5 % one way and 1 % the other.
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("small");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut names = Vec::new();
    for i in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let name = format!("f{i:03}.bin");
        write_file(&folder.join(&name), 1 + x % 20_000, i);
        names.push(name);
    }
    write_file(&folder.join("big.bin"), (3 << 20) + 5, 999);
    names.push("big.bin".into());
    let rx = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let (out, _) = send_via(
        &rx,
        &folder,
        link(100, 5, LossModel::Bernoulli { p: 0.05 }),
        link(100, 5, LossModel::Bernoulli { p: 0.01 }),
        &[],
    );
    let done = last_json(&out);
    assert_eq!(done["event"], "done", "{done}\n{}", stderr(&out));
    assert_eq!(done["files"].as_array().unwrap().len(), 601, "{done}");
    assert_eq!(done["block_latency_ms"]["blocks"], 604, "{done}");
    assert!(rx.wait(secs(20)).0.success());
    let received = tmp.path().join("out/small");
    for name in &names {
        assert_eq!(
            blake3_file(&received.join(name)),
            blake3_file(&folder.join(name)),
            "{name} differs"
        );
    }
    for name in ["f000.bin", "f599.bin", "big.bin"] {
        assert_same_file(&folder.join(name), &received.join(name));
    }
    let left: Vec<_> = std::fs::read_dir(&received)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.ends_with(".journal"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(std::fs::read_dir(&received).unwrap().count(), 601);
}
