//! Resume (no root): a transfer interrupted by SIGKILL of the receiver or
//! of the sender, at seeded random points, through two relayed paths (one
//! lossy), on both planes; sent again, it moves only what was missing and
//! the result is the source, byte for byte (BLAKE3 and b3sum). Also: a
//! source changed between attempts (a block rewritten, the file grown), a
//! byte flipped in a journaled block of the `.part`, and `--no-resume`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use common::*;

const MIB: u64 = 1 << 20;

/// Two relayed paths to `to`: 100 Mbit/s clean, 100 Mbit/s losing 0.5 %.
fn relays(rt: &tokio::runtime::Runtime, to: SocketAddr, seed: u64) -> Vec<Relay> {
    [0.0, 0.005]
        .iter()
        .enumerate()
        .map(|(i, &loss)| {
            rt.block_on(Relay::start(RelayConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                to,
                forward: link(100, loss),
                reverse: link(100, 0.0),
                seed: seed * 10 + i as u64,
            }))
            .unwrap()
        })
        .collect()
}

fn send_cmd(rx: &Receiver, src: &Path, relays: &[Relay], plane: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("send")
        .arg(src)
        .args(["--peer", &rx.fingerprint, "--token", &rx.token, "--json"])
        .args(["--plane", plane])
        .args(extra);
    if plane == "fec" && !extra.contains(&"--mtu") {
        // The relays stand for Ethernet paths (through loopback `--mtu
        // auto` would pin 6550-byte datagrams, and the shards sent before
        // HAVE arrives would no longer fit the bound below).
        cmd.args(["--mtu", "1452"]);
    }
    for r in relays {
        cmd.args(["--path", &format!("127.0.0.1={}", r.local_addr())]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A seeded pseudo-random number in `0..1`.
fn unit(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `src` again, to `running` (a receiver still up) or to a fresh
/// receiver on `out`, and checks the result: verified, and no more on the
/// wire than what was missing (plus the plane's overhead and one window of
/// blocks in flight). Returns the bytes the receiver already held and the
/// bytes the resumed send put on the wire.
fn resend_and_check(
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    src: &Path,
    plane: &str,
    seed: u64,
    running: Option<Receiver>,
) -> (u64, u64) {
    let out = tmp.join("out");
    let rx = running.unwrap_or_else(|| Receiver::start(&out, &tmp.join("state"), &["--once"]));
    let paths = relays(rt, rx.addr.parse().unwrap(), seed + 1000);
    let o = finish(
        send_cmd(&rx, src, &paths, plane, &[]).spawn().unwrap(),
        secs(60),
    );
    assert_success(&o);
    let done = last_json(&o);
    let size = std::fs::metadata(src).unwrap().len();
    let resumed = done["files"][0]["resumed_bytes"].as_u64().unwrap();
    let wire = done["wire_bytes"].as_u64().unwrap();
    let missing = size - resumed;
    // FEC: ~5 % headers and redundancy at 0.5 % loss; reliable: ~3 %.
    // Shards of blocks admitted before HAVE arrived: up to 2 MiB.
    assert!(
        wire as f64 <= missing as f64 * 1.15 + (2 * MIB) as f64,
        "{plane}, seed {seed}: {wire} bytes on the wire for {missing} missing"
    );
    // A receiver started for this send exits after it; one kept from the
    // interrupted attempt (no --once) is stopped once the file is in place.
    let name = src.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(eventually(secs(20), || rx
        .stdout()
        .contains("\"event\":\"file_done\"")));
    let rx_out = rx.stdout();
    let rx_err = rx.kill();
    assert!(
        rx_out.matches("\"event\":\"file_done\"").count() == 1,
        "{rx_out}\n{rx_err}"
    );
    if resumed > 0 {
        assert!(rx_out.contains("\"event\":\"resumed\""), "{rx_out}");
    }
    assert_same_file(src, &out.join(src.file_name().unwrap()));
    let journal = out.join(format!("{name}.part.journal"));
    assert!(!journal.exists(), "the journal goes with the .part");
    for r in paths {
        rt.block_on(r.stop());
    }
    (resumed, wire)
}

/// One interrupted attempt: `victim` ("receiver" or "sender") is killed
/// `at` into the transfer, or ("network") both relays stop then and the
/// sender is given up on a second later. Unless the receiver is the
/// victim, it (started without `--once`) stays up and is returned: the
/// next send goes to it while its first session still waits out its idle
/// timeout.
fn interrupted_attempt(
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    src: &Path,
    plane: &str,
    victim: &str,
    at: Duration,
    seed: u64,
) -> Option<Receiver> {
    let out = tmp.join("out");
    let once: &[&str] = if victim == "receiver" {
        &["--once"]
    } else {
        &[]
    };
    let rx = Receiver::start(&out, &tmp.join("state"), once);
    let paths = relays(rt, rx.addr.parse().unwrap(), seed);
    let mut sender = send_cmd(&rx, src, &paths, plane, &[]).spawn().unwrap();
    std::thread::sleep(at);
    let kept = match victim {
        "receiver" => {
            rx.kill();
            kill(&mut sender);
            None
        }
        "network" => {
            for r in paths {
                rt.block_on(r.stop());
            }
            std::thread::sleep(Duration::from_secs(1));
            kill(&mut sender);
            return Some(rx);
        }
        _ => {
            kill(&mut sender);
            Some(rx)
        }
    };
    for r in paths {
        rt.block_on(r.stop());
    }
    kept
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Kills at seeded points, alternating planes; each resumed send checked.
fn kills_resume(victim: &str, attempts: u64, seed0: u64) {
    let rt = runtime();
    let mut resumed_total = 0;
    for i in 0..attempts {
        let seed = seed0 + i;
        let plane = if i % 2 == 0 { "fec" } else { "reliable" };
        let tmp = tempfile::tempdir().unwrap();
        let size = (64 + (unit(seed) * 32.0) as u64) * MIB;
        let src = tmp.path().join("data.bin");
        write_file(&src, size, seed);
        // 64-96 MiB at up to ~190 Mbit/s: 3-4 s; kill between 0.3 s and
        // 2.3 s (start-up included: some kills come before any block).
        let at = Duration::from_secs_f64(0.3 + 2.0 * unit(seed ^ 0x5555));
        let running = interrupted_attempt(&rt, tmp.path(), &src, plane, victim, at, seed);
        let (resumed, wire) = resend_and_check(&rt, tmp.path(), &src, plane, seed, running);
        println!(
            "{victim} killed at {:.2} s ({plane}, {} MiB): {:.1} MiB resumed, \
             {:.3} × the missing bytes on the wire",
            at.as_secs_f64(),
            size / MIB,
            resumed as f64 / MIB as f64,
            wire as f64 / (size - resumed) as f64
        );
        resumed_total += resumed;
    }
    assert!(resumed_total > 0, "no attempt resumed anything");
}

#[test]
fn a_receiver_killed_at_random_points_resumes_on_both_planes_over_two_paths() {
    kills_resume("receiver", 20, 100);
}

#[test]
fn a_sender_killed_at_random_points_resumes_on_both_planes_over_two_paths() {
    kills_resume("sender", 10, 200);
}

#[test]
fn a_network_cut_then_a_new_send_resumes_on_both_planes_over_two_paths() {
    kills_resume("network", 6, 300);
}

/// Interrupts a transfer of `src` half way (the sender killed).
fn half_sent(rt: &tokio::runtime::Runtime, tmp: &Path, src: &Path, plane: &str) {
    interrupted_attempt(
        rt,
        tmp,
        src,
        plane,
        "receiver",
        Duration::from_millis(1500),
        7,
    );
    let journal = std::fs::read(tmp.join("out/data.bin.part.journal")).unwrap();
    let parsed = chunkstream_engine::journal::parse(&journal).unwrap();
    assert!(
        parsed.records.len() > 4,
        "{} blocks journaled",
        parsed.records.len()
    );
}

#[test]
fn a_source_changed_between_attempts_arrives_as_it_is_now() {
    let rt = runtime();
    for plane in ["fec", "reliable"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("data.bin");
        write_file(&src, 64 * MIB, 31);
        half_sent(&rt, tmp.path(), &src, plane);
        // Rewrite a block that was surely sent (the second), and grow the
        // file by a block and a half.
        let mut data = std::fs::read(&src).unwrap();
        data[MIB as usize + 77] ^= 0xff;
        data.extend((0..(3 * MIB / 2)).map(|i| (i % 253) as u8));
        std::fs::write(&src, &data).unwrap();
        let (resumed, _) = resend_and_check(&rt, tmp.path(), &src, plane, 31, None);
        assert!(resumed > 0, "{plane}: the unchanged blocks were kept");
        assert!(
            resumed < 64 * MIB - MIB,
            "{plane}: the rewritten block is sent"
        );
    }
    // Shrunk to 20.5 MiB: the whole blocks both sizes share may be kept.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    write_file(&src, 64 * MIB, 32);
    half_sent(&rt, tmp.path(), &src, "fec");
    let data = std::fs::read(&src).unwrap();
    std::fs::write(&src, &data[..(41 * MIB / 2) as usize]).unwrap();
    let (resumed, _) = resend_and_check(&rt, tmp.path(), &src, "fec", 32, None);
    assert!(resumed > 0 && resumed <= 20 * MIB, "{resumed}");
}

#[test]
fn a_byte_flipped_in_a_journaled_block_is_fetched_again() {
    let rt = runtime();
    for plane in ["fec", "reliable"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("data.bin");
        write_file(&src, 64 * MIB, 41);
        half_sent(&rt, tmp.path(), &src, plane);
        let part = tmp.path().join("out/data.bin.part");
        let journal = std::fs::read(tmp.path().join("out/data.bin.part.journal")).unwrap();
        let parsed = chunkstream_engine::journal::parse(&journal).unwrap();
        let victim = parsed.records[0].0;
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[(victim * MIB + 5) as usize] ^= 1;
        std::fs::write(&part, &bytes).unwrap();
        let journaled = parsed.records.len() as u64 * MIB;
        let (resumed, _) = resend_and_check(&rt, tmp.path(), &src, plane, 41, None);
        assert!(
            resumed > 0 && resumed <= journaled - MIB,
            "{plane}: {resumed} resumed of {journaled} journaled"
        );
    }
}

#[test]
fn no_resume_sends_everything_again() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    write_file(&src, 64 * MIB, 51);
    half_sent(&rt, tmp.path(), &src, "fec");
    let out = tmp.path().join("out");
    let rx = Receiver::start(&out, &tmp.path().join("state"), &["--once"]);
    let paths = relays(&rt, rx.addr.parse().unwrap(), 52);
    let o = finish(
        send_cmd(&rx, &src, &paths, "fec", &["--no-resume"])
            .spawn()
            .unwrap(),
        secs(60),
    );
    assert_success(&o);
    let done = last_json(&o);
    assert_eq!(done["files"][0]["resumed_bytes"], 0, "{done}");
    assert!(done["wire_bytes"].as_u64().unwrap() >= 64 * MIB);
    let (status, _, err) = rx.wait(secs(20));
    assert!(status.success(), "{err}");
    assert_same_file(&src, &out.join("data.bin"));
    for r in paths {
        rt.block_on(r.stop());
    }
}

#[test]
fn recv_lists_partial_files_and_discards_old_ones() {
    use chunkstream_engine::journal::{JournalHeader, encode_record};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let part = |name: &str, blocks: u64, age: Duration| {
        let p = out.join(format!("{name}.part"));
        std::fs::write(&p, vec![0u8; 3 << 20]).unwrap();
        let mut j = JournalHeader {
            name: name.into(),
            size: 3 << 20,
            block_size_log2: 20,
            identity: None,
        }
        .encode();
        for b in 0..blocks {
            j.extend_from_slice(&encode_record(b, &[0; 32]));
        }
        let jp = out.join(format!("{name}.part.journal"));
        std::fs::write(&jp, j).unwrap();
        let when = std::time::SystemTime::now() - age;
        for f in [p, jp] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    };
    part("old.bin", 1, Duration::from_secs(3 * 86_400));
    part("recent.bin", 2, Duration::from_secs(60));
    let rx = Receiver::start(
        &out,
        &tmp.path().join("state"),
        &["--discard-partial-older-than", "2d"],
    );
    assert!(eventually(secs(10), || rx
        .stdout()
        .contains("\"event\":\"partial\"")));
    let lines: Vec<serde_json::Value> = rx
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let discarded = &lines[0];
    assert_eq!(discarded["event"], "partial_discarded", "{lines:?}");
    assert_eq!(discarded["name"], "old.bin");
    let listed = &lines[1];
    assert_eq!(listed["event"], "partial");
    assert_eq!(listed["name"], "recent.bin");
    assert_eq!(listed["journaled_bytes"], 2 << 20);
    assert_eq!(listed["resumable"], true);
    assert!(!out.join("old.bin.part").exists() && !out.join("old.bin.part.journal").exists());
    assert!(out.join("recent.bin.part").exists());
    rx.kill();
    // A bad age is a usage error naming the units.
    let o = Command::new(BIN)
        .args(["recv", "--out"])
        .arg(&out)
        .args(["--discard-partial-older-than", "3 weeks"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("s, m, h or d"));
}
