//! The errors a user will hit: each must end in a non-zero exit, a one-line
//! reason naming the problem, and no file passed off as complete.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ZERO_FP: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0]
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_missing_source_is_named() {
    let out = send(
        &[
            "/nonexistent/source.bin",
            "--to",
            "127.0.0.1:9",
            "--peer",
            ZERO_FP,
            "--token",
            "t",
        ]
        .map(String::from),
        secs(10),
    );
    assert!(!out.status.success());
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(
        line.contains("cannot read /nonexistent/source.bin") && line.contains("No such file"),
        "{line}"
    );
}

#[test]
fn an_unreachable_receiver_fails_within_the_timeout() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f");
    write_file(&src, 10, 0);
    let started = Instant::now();
    let to = format!("127.0.0.1:{port}");
    let out = send(
        &[
            src.to_str().unwrap(),
            "--to",
            &to,
            "--peer",
            ZERO_FP,
            "--token",
            "t",
            "--connect-timeout",
            "2",
        ]
        .map(String::from),
        secs(20),
    );
    assert!(!out.status.success());
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(
        line.contains(&format!("could not reach a receiver at {to} within 2 s")),
        "{line}"
    );
    assert!(started.elapsed() < secs(10), "took {:?}", started.elapsed());
}

#[test]
fn a_wrong_fingerprint_is_refused_before_any_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("secret.bin");
    write_file(&src, 100_000, 1);
    let out_dir = tmp.path().join("out");
    let recv = Receiver::start(&out_dir, &tmp.path().join("state"), &[]);
    let mut args = vec![src.display().to_string()];
    args.extend([
        "--to".into(),
        recv.addr.clone(),
        "--peer".into(),
        ZERO_FP.into(),
        "--token".into(),
        recv.token.clone(),
    ]);
    let out = send(&args, secs(20));
    assert!(!out.status.success());
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(
        line.contains(&format!("presented fingerprint {}", recv.fingerprint))
            && line.contains(&format!("--peer is {ZERO_FP}")),
        "{line}"
    );
    assert!(
        eventually(secs(5), || recv.stderr().contains("refused connection")
            && recv.stderr().contains("TLS handshake failed")),
        "receiver said: {}",
        recv.stderr()
    );
    assert!(
        entries(&out_dir).is_empty(),
        "receiver wrote {:?}",
        entries(&out_dir)
    );
}

#[test]
fn a_wrong_token_is_refused_and_the_receiver_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.bin");
    write_file(&src, 70_000, 2);
    let out_dir = tmp.path().join("out");
    let recv = Receiver::start(&out_dir, &tmp.path().join("state"), &["--once"]);
    let mut args = vec![src.display().to_string()];
    args.extend([
        "--to".into(),
        recv.addr.clone(),
        "--peer".into(),
        recv.fingerprint.clone(),
        "--token".into(),
        "not-the-token".into(),
    ]);
    let out = send(&args, secs(20));
    assert!(!out.status.success());
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(
        line.contains("refused by the receiver: wrong token"),
        "{line}"
    );
    assert!(
        eventually(secs(5), || recv.stderr().contains("wrong token")),
        "receiver said: {}",
        recv.stderr()
    );
    assert!(
        entries(&out_dir).is_empty(),
        "receiver wrote {:?}",
        entries(&out_dir)
    );
    // A refused connection is not a session: --once still takes the real one.
    let mut good = vec![src.display().to_string()];
    good.extend(recv.send_args());
    let ok = send(&good, secs(30));
    assert!(ok.status.success(), "{}", stderr(&ok));
    let (status, _, err) = recv.wait(secs(20));
    assert!(status.success(), "{err}");
    assert_same_file(&src, &out_dir.join("f.bin"));
}

#[test]
fn an_output_folder_that_cannot_be_written_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(BIN)
        .args(["recv", "--listen", "127.0.0.1:0", "--out"])
        .arg(&file)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = one_error_line(&String::from_utf8_lossy(&out.stderr)).to_owned();
    assert!(
        line.contains("output folder is not writable") && line.contains("not-a-dir"),
        "{line}"
    );

    if skip_unless(is_root(), "a read-only mount needs root (unshare -m)") {
        return;
    }
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let script = format!(
        "mount -t tmpfs -o ro,size=1m none '{}' && exec '{BIN}' recv --listen 127.0.0.1:0 --out '{}' --state-dir '{}'",
        ro.display(),
        ro.display(),
        tmp.path().join("state").display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = one_error_line(&String::from_utf8_lossy(&out.stderr)).to_owned();
    assert!(
        line.contains("output folder is not writable") && line.contains("Read-only file system"),
        "{line}"
    );
}

#[test]
fn a_full_disk_keeps_the_part_file_and_renames_nothing() {
    if skip_unless(is_root(), "a small tmpfs needs root (unshare -m)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    write_file(&src, 16 << 20, 3);
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let listing = tmp.path().join("listing");
    // The tmpfs lives in a private mount namespace and vanishes with it;
    // list it before leaving so the test can see what was left behind.
    let script = format!(
        "mount -t tmpfs -o size=4m none '{d}' && '{BIN}' recv --listen 127.0.0.1:0 --json --once --out '{d}' --state-dir '{s}'; rc=$?; ls -a '{d}' > '{l}'; exit $rc",
        d = small.display(),
        s = tmp.path().join("state").display(),
        l = listing.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script]);
    let recv = Receiver::spawn(cmd, &small);
    let mut args = vec![src.display().to_string()];
    args.extend(recv.send_args());
    let out = send(&args, secs(60));
    assert!(!out.status.success(), "send succeeded onto a 4 MiB disk");
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(line.contains("receiver disk full"), "{line}");
    // Files are named relative to the receiver's --out, never by its path.
    assert!(line.contains("while writing big.bin;"), "{line}");
    assert!(!line.contains(&*small.to_string_lossy()), "{line}");
    let (status, _, err) = recv.wait(secs(30));
    assert!(!status.success());
    assert!(
        err.contains("receiver disk full")
            && err.contains("big.bin.part")
            && err.contains("nothing renamed"),
        "{err}"
    );
    let left = std::fs::read_to_string(&listing).unwrap();
    assert!(left.lines().any(|l| l == "big.bin.part"), "{left}");
    assert!(!left.lines().any(|l| l == "big.bin"), "{left}");
}

fn slow_send(src: &std::path::Path, recv: &Receiver) -> std::process::Child {
    let mut args = vec![src.display().to_string()];
    args.extend(recv.send_args());
    args.extend(["--max-rate".into(), "20MB/s".into()]);
    Command::new(BIN)
        .arg("send")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_receiver_vanishing_mid_transfer_fails_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.bin");
    write_file(&src, 100 << 20, 4);
    let recv = Receiver::start(
        &tmp.path().join("out"),
        &tmp.path().join("state"),
        &["--once"],
    );
    let sender = slow_send(&src, &recv);
    assert!(eventually(secs(10), || recv
        .stdout()
        .contains("session_started")));
    std::thread::sleep(Duration::from_millis(500));
    recv.kill();
    let started = Instant::now();
    let out = finish(sender, secs(40));
    assert!(!out.status.success());
    let line = one_error_line(&stderr(&out)).to_owned();
    assert!(line.contains("connection lost"), "{line}");
    assert!(started.elapsed() < secs(30));
}

#[test]
fn the_sender_vanishing_mid_transfer_keeps_the_part_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.bin");
    write_file(&src, 100 << 20, 5);
    let out_dir = tmp.path().join("out");
    let recv = Receiver::start(&out_dir, &tmp.path().join("state"), &["--once"]);
    let mut sender = slow_send(&src, &recv);
    // Mid-transfer: data has reached the disk (the FEC plane, the default on
    // one path, writes its first block only once it has decoded it).
    let part = out_dir.join("f.bin.part");
    assert!(eventually(secs(10), || part.exists()));
    std::thread::sleep(Duration::from_millis(500));
    sender.kill().unwrap();
    sender.wait().unwrap();
    let (status, out, err) = recv.wait(secs(40));
    assert!(!status.success());
    assert!(out.contains("\"ok\":false"), "{out}");
    let line = one_error_line(&err).to_owned();
    assert!(
        line.contains("connection lost") && line.contains("kept 1 partial file"),
        "{line}"
    );
    assert!(part.exists());
    assert!(!out_dir.join("f.bin").exists());
    // Beside it, the journal of what was written: every block it claims is
    // in the .part, byte for byte.
    let journal = std::fs::read(out_dir.join("f.bin.part.journal")).unwrap();
    let parsed = chunkstream_engine::journal::parse(&journal).unwrap();
    assert!(
        parsed.header.matches("f.bin", 100 << 20, 20),
        "{:?}",
        parsed.header
    );
    assert!(!parsed.records.is_empty());
    let data = std::fs::read(&part).unwrap();
    let source = std::fs::read(&src).unwrap();
    for (block, digest) in &parsed.records {
        let at = (*block as usize) << 20;
        let bytes = &data[at..(at + (1 << 20)).min(data.len())];
        assert_eq!(bytes, &source[at..at + bytes.len()], "block {block}");
        assert_eq!(
            &chunkstream_engine::hash::block_digest(bytes, at as u64, data.len() as u64),
            digest
        );
    }
}
