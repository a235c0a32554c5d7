//! One namespace scenario end to end (root): the TUN backend carries
//! chunkstream and the TCP baselines (plain copy, iperf3, rsync over SSH)
//! with their controllers named; every file-moving contender verified,
//! iperf3 reported with its own rate and marked unverifiable, and no
//! namespace is left behind; on several paths, kernel MPTCP and chunkstream
//! use every one of them. Skips with the reason outside CI.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::*;

/// The tests compare the host's namespace list before and after: one at a
/// time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_tun_scenario_runs_quic_and_tcp_over_the_same_link() {
    if skip_unless(is_root(), "the TUN backend needs root") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("tun.toml");
    std::fs::write(
        &scenario,
        r#"
name = "tun-tiny"
file_size = "2MiB"
timeout = "60s"
backend = "tun"
contenders = ["chunkstream", "tcp-bbr", "tcp-cubic", "iperf3-bbr", "rsync-ssh"]

[[path]]
rate = "50mbit"
delay = "5ms"
loss = "0.5%"
"#,
    )
    .unwrap();
    let before = namespaces();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("tun-tiny.json")).unwrap())
            .unwrap();
    assert_eq!(report["backend"], "tun");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for run in runs {
        let contender = run["contender"].as_str().unwrap();
        if contender == "iperf3-bbr" {
            assert_eq!(run["verified"], false, "{run}");
            assert_eq!(run["verifiable"], false, "{run}");
            assert!(run["error"].is_null(), "{run}");
            let g = run["goodput_bps"].as_f64().unwrap();
            assert!(g > 1e6 && g < 50e6, "iperf3 rate {g} on a 50 Mbit/s link");
        } else {
            assert_eq!(run["verified"], true, "{run}");
            assert!(run["wire_bytes"][0].as_u64().unwrap() >= 2 << 20, "{run}");
        }
        match contender {
            "tcp-bbr" | "iperf3-bbr" | "rsync-ssh" => {
                assert_eq!(run["tcp_congestion"], "bbr", "{run}")
            }
            "tcp-cubic" => assert_eq!(run["tcp_congestion"], "cubic", "{run}"),
            _ => {}
        }
        if contender != "chunkstream" {
            assert!(run["sender"]["cpu_seconds"].as_f64().is_some(), "{run}");
        }
    }
    let table = Command::new(BIN)
        .arg("compare")
        .arg(tmp.path().join("tun-tiny.json"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("iperf3-bbr") && table.contains('†'),
        "{table}"
    );
    assert_eq!(namespaces(), before, "namespaces left behind");
}

#[test]
fn mptcp_and_chunkstream_use_every_path_of_a_multi_path_tun_scenario() {
    if skip_unless(is_root(), "the TUN backend needs root") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("mp.toml");
    std::fs::write(
        &scenario,
        r#"
name = "mp-tun-tiny"
file_size = "8MiB"
timeout = "60s"
backend = "tun"
contenders = ["mptcp-bbr", "chunkstream-fec", "chunkstream", "tcp-bbr"]

[[path]]
rate = "40mbit"
delay = "5ms"

[[path]]
rate = "40mbit"
delay = "5ms"
loss = "1%"
"#,
    )
    .unwrap();
    let before = namespaces();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("mp-tun-tiny.json")).unwrap(),
    )
    .unwrap();
    for run in report["runs"].as_array().unwrap() {
        let contender = run["contender"].as_str().unwrap();
        assert_eq!(run["verified"], true, "{run}");
        let delivered: Vec<u64> = run["delivered_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        if contender == "tcp-bbr" {
            // One path: the first.
            assert_eq!(delivered.len(), 1, "{run}");
        } else {
            // Each of the two equal paths carried a real share.
            assert_eq!(delivered.len(), 2, "{run}");
            for d in &delivered {
                assert!(*d >= 1 << 20, "{contender}: {delivered:?}");
            }
        }
        if contender == "mptcp-bbr" {
            assert_eq!(run["tcp_congestion"], "bbr", "{run}");
        }
    }
    assert_eq!(namespaces(), before, "namespaces left behind");
}

#[test]
fn a_tun_scenario_without_root_is_refused_at_once() {
    if skip_unless(is_root(), "dropping to an unprivileged user needs root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("t.toml");
    std::fs::write(&scenario, "name = \"t\"\nfile_size = \"1MiB\"\nbackend = \"tun\"\ncontenders = [\"tcp-bbr\"]\n[[path]]\nrate = \"10mbit\"\n").unwrap();
    // World-readable copies, so the unprivileged user can run and read them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&scenario, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exe = tmp.path().join("chunkstream-engine");
    std::fs::copy(BIN, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("backend = \"tun\""),
        "{err}"
    );
    assert!(!err.contains("[1/1]"), "it started running: {err}");
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
