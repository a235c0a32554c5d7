//! Multi-path between two network namespaces (root; CI runs it): three veth
//! pairs shaped with tbf to 100, 200 and 300 Mbit/s by
//! `netem-scripts/setup.sh`, each path bound to its interface by name
//! (SO_BINDTODEVICE). A 1 GiB transfer on the reliable plane must verify,
//! use most of the 600 Mbit/s sum, and split its bytes by the rates; on the
//! default (FEC) plane, with one path taken down at
//! about 40 % and brought back at about 70 %, it must still verify and the
//! path must be seen rejoining in `--json`. With nftables dropping 0, 1
//! and 3 % of the packets, the FEC plane (the default) must carry 0.9 of
//! Σ rate × (1 − loss), the bar (a run under it is retried, up to
//! three in all). The namespaces are removed afterwards, also when a test
//! fails. Outside CI without root: skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The two tests each need the whole machine: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts")
}

/// The shaped topology; torn down on drop.
struct Topology {
    prefix: String,
}

impl Topology {
    fn build(prefix: &str) -> Self {
        Self::build_lossy(prefix, ["0%", "0%", "0%"])
    }

    /// 100, 200 and 300 Mbit/s, with nftables dropping `loss` of each
    /// path's packets.
    fn build_lossy(prefix: &str, loss: [&str; 3]) -> Self {
        let topo = Self {
            prefix: prefix.to_owned(),
        };
        let out = Command::new(scripts().join("setup.sh"))
            .args(["--prefix", prefix])
            .args(["--path", &format!("100mbit,0ms,{}", loss[0])])
            .args(["--path", &format!("200mbit,0ms,{}", loss[1])])
            .args(["--path", &format!("300mbit,0ms,{}", loss[2])])
            .output()
            .unwrap();
        assert_success(&out);
        topo
    }

    fn exec(&self, side: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{side}", self.prefix), program]);
        c
    }

    fn link(&self, path: usize, up: bool) {
        let status = Command::new("ip")
            .args(["-n", &format!("{}-snd", self.prefix), "link", "set"])
            .arg(format!("{}s{path}", self.prefix))
            .arg(if up { "up" } else { "down" })
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("teardown.sh"))
            .args(["--prefix", &self.prefix])
            .output();
    }
}

struct Run {
    status: std::process::ExitStatus,
    events: Vec<serde_json::Value>,
    stderr: String,
}

/// Receives on all three paths and sends `src` over them; `during` runs
/// while the transfer goes on.
fn transfer(
    topo: &Topology,
    dir: &Path,
    src: &Path,
    plane: &str,
    during: impl FnOnce(Instant),
) -> (Run, String) {
    let out = dir.join("out");
    let mut recv = topo.exec("rcv", BIN);
    recv.args(["recv", "--once", "--json", "--token", "t", "--out"])
        .arg(&out)
        .arg("--state-dir")
        .arg(dir.join("state"));
    for i in 1..=3 {
        recv.args(["--listen", &format!("10.77.{i}.2:4433")]);
    }
    let rx = Receiver::spawn(recv, &out);
    let mut send = topo.exec("snd", BIN);
    send.arg("send")
        .arg(src)
        .args(["--peer", &rx.fingerprint, "--token", "t", "--json"])
        .args(["--plane", plane])
        // A state folder of the test's own: no path remembered from the
        // user's sends, or from an earlier run (each starts cold).
        .arg("--state-dir")
        .arg(dir.join("send-state"));
    for i in 1..=3 {
        send.args(["--path", &format!("{}s{i}=10.77.{i}.2:4433", topo.prefix)]);
    }
    let started = Instant::now();
    let child = send
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it goes: a full pipe would stop the sender (it did, in a CI
    // run: "did not exit within 180 s").
    let output = collect(child, secs(180));
    during(started);
    let out = output();
    let (status, stdout, stderr) = (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let (rx_status, rx_out, rx_err) = rx.wait(secs(30));
    assert!(rx_status.success(), "receiver: {rx_err}");
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        Run {
            status,
            events,
            stderr,
        },
        rx_out,
    )
}

fn done(run: &Run) -> &serde_json::Value {
    assert!(run.status.success(), "{}", run.stderr);
    run.events
        .iter()
        .find(|e| e["event"] == "done")
        .expect("a done line")
}

#[test]
fn three_shaped_paths_carry_one_gib_split_by_their_rates() {
    if skip_unless(is_root(), "network namespaces need root") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Topology::build(&format!("mr{}", std::process::id() % 100_000));
    let tmp = ram_tempdir();
    let src = tmp.path().join("gib.bin");
    write_file(&src, 1 << 30, 41);
    settle_writeback();
    // The reliable plane: what this test measured since it was written
    // (the FEC plane's figures on these paths are in results/README.md;
    // the lossy test below runs it).
    let (run, _) = transfer(&topo, tmp.path(), &src, "reliable", |_| {});
    let d = done(&run);
    let goodput = d["goodput_bps"].as_f64().unwrap();
    let paths = d["paths"].as_array().unwrap();
    let shares: Vec<f64> = paths
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap() as f64 / (1u64 << 30) as f64)
        .collect();
    println!(
        "1 GiB over 100+200+300 Mbit/s: {:.1} Mbit/s ({:.0} % of 600), split {:.3?}",
        goodput / 1e6,
        goodput / 6e6,
        shares
    );
    // Measured 553 Mbit/s (92 %) on the development machine; the bound
    // leaves room for a busier CI host (results/README.md has the numbers).
    assert!(goodput >= 0.8 * 600e6, "{:.1} Mbit/s", goodput / 1e6);
    for (s, want) in shares.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        assert!((s - want).abs() < 0.06, "split {shares:?}");
    }
    assert_same_file(&src, &tmp.path().join("out/gib.bin"));
}

#[test]
fn three_lossy_shaped_paths_add_up_on_the_fec_plane() {
    if skip_unless(is_root(), "network namespaces need root") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Topology::build_lossy(
        &format!("ml{}", std::process::id() % 100_000),
        ["0%", "1%", "3%"],
    );
    let tmp = ram_tempdir();
    let src = tmp.path().join("lossy.bin");
    write_file(&src, 512 << 20, 43);
    settle_writeback();
    let capacity = 100e6 + 200e6 * 0.99 + 300e6 * 0.97;
    // The bar is 0.9 of the capacity. This test's build measured
    // 0.93, 0.93, 0.93 and 0.93 at 1ce4bdd (results/README.md), the release
    // build the same. The machine is shared by sender, receiver and the
    // kernel's shaping, and on busy days earlier builds measured 0.40-0.66
    // in single runs while other work ran, so a run under the bar is
    // retried, up to three in all: the bar must be met by one of them, and
    // every run must verify its copy and still add the paths up (0.5 of the
    // capacity is more than the best path alone, 291 of 589 Mbit/s; the
    // reliable plane gets a few % here).
    let mut figures = Vec::new();
    for attempt in 1..=3 {
        for old in ["out", "send-state"] {
            let _ = std::fs::remove_dir_all(tmp.path().join(old));
        }
        let (run, _) = transfer(&topo, tmp.path(), &src, "auto", |_| {});
        let d = done(&run);
        assert_eq!(d["plane"], "fec", "{d}");
        let goodput = d["goodput_bps"].as_f64().unwrap();
        let loss: Vec<f64> = d["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["loss"].as_f64().unwrap())
            .collect();
        println!(
            "run {attempt}: 512 MiB over 100+200+300 Mbit/s at 0/1/3 % loss: {:.1} Mbit/s ({:.0} % of {:.0}), path loss {loss:.3?}",
            goodput / 1e6,
            goodput * 100.0 / capacity,
            capacity / 1e6
        );
        assert!(goodput >= 0.5 * capacity, "{:.1} Mbit/s", goodput / 1e6);
        assert!(
            loss[2] > 0.02 && loss[1] > 0.005,
            "each path reports its loss: {loss:?}"
        );
        assert_same_file(&src, &tmp.path().join("out/lossy.bin"));
        figures.push(goodput / capacity);
        if goodput >= 0.9 * capacity {
            return;
        }
    }
    panic!("no run reached 0.9 of {capacity:.0} bit/s: {figures:.3?}");
}

#[test]
fn a_path_taken_down_and_up_again_rejoins_and_the_file_verifies() {
    if skip_unless(is_root(), "network namespaces need root") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Topology::build(&format!("mf{}", std::process::id() % 100_000));
    let tmp = ram_tempdir();
    let src = tmp.path().join("gib.bin");
    write_file(&src, 1 << 30, 42);
    // About 15.5 s at full speed: down at ~40 %, up at ~70 %.
    let (run, rx_out) = transfer(&topo, tmp.path(), &src, "auto", |started| {
        std::thread::sleep(
            (started + Duration::from_millis(6200)).saturating_duration_since(Instant::now()),
        );
        topo.link(2, false);
        std::thread::sleep(
            (started + Duration::from_millis(10900)).saturating_duration_since(Instant::now()),
        );
        topo.link(2, true);
    });
    done(&run);
    let states: Vec<&str> = run
        .events
        .iter()
        .filter(|e| e["event"] == "path" && e["path"] == 1)
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    let down = states
        .iter()
        .position(|s| *s == "down")
        .unwrap_or_else(|| panic!("path 2 never went down: {states:?}"));
    assert!(
        states[down..].contains(&"up"),
        "path 2 never rejoined: {states:?}"
    );
    assert!(rx_out.matches("path_joined").count() >= 3, "{rx_out}");
    assert_same_file(&src, &tmp.path().join("out/gib.bin"));
}
