//! `chunkstream-engine relay` as a user runs it: in front of a UDP echo
//! server, stopped with SIGTERM, reporting per-direction counts.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A UDP echo server on loopback, and a free loopback address for the relay.
fn echo_server_and_free_port() -> (std::net::SocketAddr, String) {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    });
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (server_addr, format!("127.0.0.1:{port}"))
}

#[test]
fn the_relay_forwards_loses_and_reports_per_direction() {
    let (server_addr, listen) = echo_server_and_free_port();
    let child = Command::new(BIN)
        .args([
            "relay",
            "--listen",
            &listen,
            "--to",
            &server_addr.to_string(),
        ])
        .args(["--delay", "5ms", "--loss", "20%", "--seed", "9", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // RTT is ~10 ms; a late echo is still counted by a later read or the drain.
    client
        .set_read_timeout(Some(Duration::from_millis(40)))
        .unwrap();
    let mut echoed = 0;
    for i in 0..500u32 {
        client.send_to(&i.to_be_bytes(), &listen).unwrap();
        let mut buf = [0u8; 8];
        if client.recv_from(&mut buf).is_ok() {
            echoed += 1;
        }
    }
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    while client.recv_from(&mut buf).is_ok() {
        echoed += 1;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = finish(child, secs(10));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {err}"));
    let (f, r) = (&v["forward"], &v["reverse"]);
    assert_eq!(f["offered"], 500);
    let fwd_lost = f["dropped_random"].as_u64().unwrap();
    let rev_lost = r["dropped_random"].as_u64().unwrap();
    assert_eq!(f["forwarded"].as_u64().unwrap() + fwd_lost, 500);
    assert_eq!(
        r["forwarded"].as_u64().unwrap(),
        echoed,
        "echoes that came back = reverse forwarded"
    );
    // 20 % each way: about 36 % of round trips fail. Wide bounds, 500 trials.
    let round_trip_loss = 1.0 - echoed as f64 / 500.0;
    assert!(
        (0.28..0.44).contains(&round_trip_loss),
        "round-trip loss {round_trip_loss}"
    );
    assert!(rev_lost > 0);
}

#[test]
fn drop_first_loses_exactly_the_first_packets_each_way() {
    let (server_addr, listen) = echo_server_and_free_port();
    let mut child = Command::new(BIN)
        .args(["relay", "--listen", &listen, "--to"])
        .arg(server_addr.to_string())
        .args(["--drop-first", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut echoed = Vec::new();
    for i in 0..10u32 {
        client.send_to(&i.to_be_bytes(), &listen).unwrap();
        let mut buf = [0u8; 4];
        if let Ok((4, _)) = client.recv_from(&mut buf) {
            echoed.push(u32::from_be_bytes(buf));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // Packets 0-2 are lost on the way in; the echoes of 3-5 are the first
    // three packets of the way back, lost too.
    assert_eq!(echoed, [6, 7, 8, 9]);
}

#[test]
fn bad_relay_settings_are_refused_with_the_field_named() {
    let out = Command::new(BIN)
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--loss",
            "150%",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--loss") && err.contains("outside 0%..100%"),
        "{err}"
    );
}
