//! End-to-end transfers between real `recv` and `send` processes on
//! loopback: every received file must hash (BLAKE3, and `b3sum` where
//! installed) exactly like its source.

mod common;

use common::*;

const BLOCK: u64 = 64 * 1024;

#[test]
fn sizes_around_the_block_boundary_arrive_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7];
    let mut paths = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let p = src.join(format!("f{size}"));
        write_file(&p, size, i as u64);
        paths.push(p);
    }
    let out = tmp.path().join("out");
    let recv = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
    let mut args: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(recv.send_args());
    args.extend(["--block-size".into(), "64KiB".into(), "--json".into()]);
    let sent = send(&args, secs(60));
    assert!(sent.status.success(), "send failed: {}", stderr(&sent));
    let report = last_json(&sent);
    assert_eq!(report["event"], "done");
    assert_eq!(report["bytes"].as_u64().unwrap(), sizes.iter().sum::<u64>());
    let (status, recv_out, recv_err) = recv.wait(secs(20));
    assert!(status.success(), "receiver failed: {recv_err}");
    let done: serde_json::Value = serde_json::from_str(recv_out.lines().last().unwrap()).unwrap();
    assert_eq!(done["event"], "session_done", "{recv_out}");
    assert_eq!(done["ok"], true, "{recv_out}");
    assert!(
        done["usage"]["peak_rss_bytes"].as_u64().unwrap() > 0,
        "{done}"
    );
    for (p, file) in paths.iter().zip(report["files"].as_array().unwrap()) {
        let name = p.file_name().unwrap();
        assert_same_file(p, &out.join(name));
        assert_eq!(
            file["blake3"].as_str().unwrap(),
            blake3_file(p),
            "sender's reported hash"
        );
        let name = name.to_str().unwrap();
        assert!(!out.join(format!("{name}.part")).exists());
        assert!(
            !out.join(format!("{name}.part.journal")).exists(),
            "the journal goes with the .part"
        );
    }
}

#[test]
fn a_100_mib_file_arrives_intact_with_either_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    write_file(&src, 100 << 20, 7);
    for reader in ["uring", "pread"] {
        let out = tmp.path().join(format!("out-{reader}"));
        let recv = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
        let mut args = vec![src.display().to_string()];
        args.extend(recv.send_args());
        args.extend(["--reader".into(), reader.into(), "--json".into()]);
        let sent = send(&args, secs(120));
        assert!(
            sent.status.success(),
            "send ({reader}) failed: {}",
            stderr(&sent)
        );
        let report = last_json(&sent);
        assert_eq!(report["reader"], reader);
        let lat = &report["block_latency_ms"];
        assert_eq!(lat["blocks"], 100, "one latency per 1 MiB block: {lat}");
        let (p50, p99, max) = (
            lat["p50_ms"].as_f64().unwrap(),
            lat["p99_ms"].as_f64().unwrap(),
            lat["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
        assert_eq!(
            report["files"][0]["blake3"].as_str().unwrap(),
            blake3_file(&src)
        );
        let (status, _, err) = recv.wait(secs(20));
        assert!(status.success(), "receiver failed: {err}");
        assert_same_file(&src, &out.join("big.bin"));
    }
}

#[test]
fn a_tree_of_1000_small_files_arrives_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let mut files = Vec::new();
    for i in 0..1000u64 {
        let p = root.join(format!("d{}/e{}/file-{i}.dat", i % 10, i % 7));
        write_file(&p, (i * 37) % 5000, i);
        files.push(p);
    }
    let out = tmp.path().join("out");
    let recv = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
    let mut args = vec![root.display().to_string()];
    args.extend(recv.send_args());
    args.push("--json".into());
    let sent = send(&args, secs(120));
    assert!(sent.status.success(), "send failed: {}", stderr(&sent));
    assert_eq!(last_json(&sent)["files"].as_array().unwrap().len(), 1000);
    let (status, _, err) = recv.wait(secs(20));
    assert!(status.success(), "receiver failed: {err}");
    for p in &files {
        let rel = p.strip_prefix(tmp.path()).unwrap();
        assert_eq!(
            blake3_file(&out.join(rel)),
            blake3_file(p),
            "{}",
            rel.display()
        );
    }
    // b3sum over a sample (one process per file would dominate the test).
    for p in files.iter().step_by(97) {
        assert_same_file(p, &out.join(p.strip_prefix(tmp.path()).unwrap()));
    }
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("logged.bin");
    write_file(&src, 300_000, 3);
    let recv = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let out = std::process::Command::new(BIN)
        .arg("send")
        .arg(&src)
        .args(recv.send_args())
        .env("RUST_LOG", "chunkstream_engine=info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    // stderr is a pipe here: the INFO lines arrive, without ESC sequences.
    assert!(
        log.contains("INFO") && log.contains("transfer started"),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
    assert!(recv.wait(secs(20)).0.success());
    assert_same_file(&src, &tmp.path().join("out/logged.bin"));
}

#[test]
fn human_output_names_the_hash_and_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.txt");
    write_file(&src, 12345, 1);
    let recv = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let mut args = vec![src.display().to_string()];
    args.extend(recv.send_args());
    let sent = send(&args, secs(30));
    assert!(sent.status.success(), "{}", stderr(&sent));
    let text = String::from_utf8_lossy(&sent.stdout);
    assert!(text.contains(&blake3_file(&src)), "{text}");
    assert!(
        text.contains("sent 1 file(s), 12345 bytes") && text.contains("bit/s"),
        "{text}"
    );
}

#[test]
fn the_demo_runs_a_verified_transfer_on_the_fec_plane_over_three_paths_one_lossy() {
    let out = std::process::Command::new(BIN)
        .args(["demo", "--size", "8MiB", "--delay", "2ms", "--json"])
        .output()
        .unwrap();
    assert_success(&out);
    let last = out
        .stdout
        .trim_ascii_end()
        .split(|&b| b == b'\n')
        .next_back()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(last).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["bytes"], 8 << 20);
    assert_eq!(v["plane"], "fec");
    assert_eq!(
        v["link"],
        "3 path(s): 40 Mbit/s at 0% loss, 80 Mbit/s at 0% loss, 120 Mbit/s at 2% loss; 4 ms RTT"
    );
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3, "{v}");
    // Every path carried shards, and each reports what it lost.
    for p in paths {
        assert!(p["bytes"].as_u64().unwrap() > 0, "{v}");
    }
    let loss: Vec<f64> = paths.iter().map(|p| p["loss"].as_f64().unwrap()).collect();
    assert!(loss[2] >= 0.01, "the 2 % path reports its loss: {v}");
    assert!(
        v["link_dropped"].as_u64().unwrap() > 0,
        "the emulated link lost nothing: {v}"
    );
    // Each link's own counts: random loss only where it was asked for,
    // and they add up to the total.
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), 3, "{v}");
    let count = |i: usize, k: &str| links[i][k].as_u64().unwrap();
    assert_eq!(
        count(0, "dropped_random") + count(1, "dropped_random"),
        0,
        "{v}"
    );
    assert!(count(2, "dropped_random") > 0, "{v}");
    assert!((0..3).all(|i| count(i, "offered") > 0), "{v}");
    let summed: u64 = (0..3)
        .map(|i| count(i, "dropped_random") + count(i, "dropped_queue"))
        .sum();
    assert_eq!(summed, v["link_dropped"].as_u64().unwrap(), "{v}");
}

/// `recv` prints one ticket; `send --ticket` alone (no --to, --peer or
/// --token) reaches it and delivers the file intact. A ticket with one
/// character changed is refused as a usage error naming the checksum, and
/// nothing is sent.
#[test]
fn a_ticket_alone_reaches_the_receiver_and_a_damaged_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ticketed.bin");
    write_file(&src, 3 << 20, 41);
    let out = tmp.path().join("out");
    let recv = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
    assert!(recv.ticket.starts_with("cst1"), "ticket {:?}", recv.ticket);

    let mut damaged = recv.ticket.clone().into_bytes();
    let i = damaged.len() / 2;
    damaged[i] = if damaged[i] == b'a' { b'b' } else { b'a' };
    let damaged = String::from_utf8(damaged).unwrap();
    let refused = send(
        &[src.display().to_string(), "--ticket".into(), damaged],
        secs(20),
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("checksum"),
        "{}",
        stderr(&refused)
    );

    let sent = send(
        &[
            src.display().to_string(),
            "--ticket".into(),
            recv.ticket.clone(),
            "--json".into(),
        ],
        secs(60),
    );
    assert!(sent.status.success(), "send failed: {}", stderr(&sent));
    let (status, _, recv_err) = recv.wait(secs(20));
    assert!(status.success(), "receiver failed: {recv_err}");
    assert_same_file(&src, &out.join("ticketed.bin"));
}
