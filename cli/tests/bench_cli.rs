//! `bench` and `compare` as a user runs them: a small scenario over the UDP
//! relay, a verified report, a comparison table, and clear errors.

mod common;

use std::process::Command;

use common::*;

const SCENARIO: &str = r#"
name = "tiny"
description = "test"
file_size = "2MiB"
repetitions = 1
timeout = "30s"
contenders = ["chunkstream", "quinn-cubic"]

[[path]]
rate = "50mbit"
delay = "2ms"

[sweep]
loss = ["0%", "2%"]
"#;

#[test]
fn bench_writes_a_verified_report_and_compare_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("tiny.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out_dir = tmp.path().join("results");
    let peer_logs = tmp.path().join("peer-logs");
    std::fs::create_dir(&peer_logs).unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(&out_dir)
        .env("CHUNKSTREAM_BENCH_STDERR", &peer_logs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Four runs, a receiver and a sender each: every peer's stderr is kept.
    assert_eq!(std::fs::read_dir(&peer_logs).unwrap().count(), 8);
    assert!(
        err.contains("[4/4] quinn-cubic at 2% loss #1: "),
        "progress lines: {err}"
    );
    let report_path = out_dir.join("tiny.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["schema"], "chunkstream-bench/1");
    assert_eq!(report["backend"], "udp-relay");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for run in runs {
        assert_eq!(run["verified"], true, "{run}");
        assert!(run["goodput_bps"].as_f64().unwrap() > 0.0);
        assert!(run["wire_bytes"][0].as_u64().unwrap() >= 2 << 20, "{run}");
        assert!(run["sender"]["cpu_seconds"].as_f64().is_some(), "{run}");
        if run["contender"] == "chunkstream" {
            assert_eq!(
                run["block_latency_ms"]["blocks"], 2,
                "two 1 MiB blocks: {run}"
            );
        }
        assert!(
            !run["series"]["samples"].as_array().unwrap().is_empty()
                || run["seconds"].as_f64().unwrap() < 0.3
        );
    }
    let lossy: u64 = runs
        .iter()
        .filter(|r| r["loss"] == 0.02)
        .map(|r| r["dropped_random"][0].as_u64().unwrap())
        .sum();
    assert!(lossy > 0, "2% loss dropped nothing");

    let cmp = Command::new(BIN)
        .arg("compare")
        .arg(&report_path)
        .arg(&report_path)
        .output()
        .unwrap();
    assert_success(&cmp);
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(
        text.contains("| 2% | chunkstream |") && text.contains("1.00×"),
        "{text}"
    );
    // A report that sweeps loss plots goodput against it.
    let svg = tmp.path().join("sweep.svg");
    let cmp = Command::new(BIN)
        .arg("compare")
        .arg(&report_path)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert_success(&cmp);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("goodput vs random loss") && drawn.contains("quinn-cubic"));
}

#[test]
fn compare_plots_a_report_without_a_loss_sweep_as_bars() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("flat.toml");
    let flat = SCENARIO
        .replace("name = \"tiny\"", "name = \"flat\"")
        .replace("[sweep]\nloss = [\"0%\", \"2%\"]\n", "");
    std::fs::write(&scenario, flat).unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = tmp.path().join("flat.svg");
    let cmp = Command::new(BIN)
        .arg("compare")
        .arg(tmp.path().join("flat.json"))
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert_success(&cmp);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.contains("goodput per contender")
            && drawn.contains("chunkstream")
            && drawn.contains("quinn-cubic")
            && drawn.contains("link rate"),
        "{drawn}"
    );
}

#[test]
fn bad_scenarios_and_reports_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        SCENARIO.replace("rate = \"50mbit\"", "rate = \"50mbit\"\nwobble = 3"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `wobble`"), "{err}");

    let out = Command::new(BIN)
        .args(["bench", "no-such-scenario"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scenario \"no-such-scenario\""));

    let not_report = tmp.path().join("x.json");
    std::fs::write(&not_report, r#"{"schema":"something-else/9"}"#).unwrap();
    let out = Command::new(BIN)
        .arg("compare")
        .arg(&not_report)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("report schema \"something-else/9\""));
}

/// A scenario with several paths on the relay backend: chunkstream stripes
/// over one relay per path, plain quinn uses the first path only, and the
/// report carries per-path counts for what each used.
#[test]
fn a_multi_path_scenario_stripes_chunkstream_over_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("mp.toml");
    std::fs::write(
        &scenario,
        "name = \"mp\"\nfile_size = \"8MiB\"\ntimeout = \"30s\"\ncontenders = [\"chunkstream\", \"quinn-cubic\"]\n\
         [[path]]\nrate = \"40mbit\"\ndelay = \"2ms\"\n[[path]]\nrate = \"40mbit\"\ndelay = \"2ms\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_success(&out);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("mp.json")).unwrap())
            .unwrap();
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["verified"], true, "{run}");
        let delivered: Vec<u64> = run["delivered_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        if run["contender"] == "chunkstream" {
            assert_eq!(run["paths_used"], 2, "{run}");
            assert!(
                delivered.len() == 2 && delivered.iter().all(|&b| b > 1 << 20),
                "{run}"
            );
        } else {
            assert_eq!(run["paths_used"], 1, "{run}");
            assert_eq!(delivered.len(), 1, "{run}");
        }
    }
}
