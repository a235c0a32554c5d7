//! `netem-scripts/` on this machine: builds the namespaces, detects whether
//! the kernel has sch_netem, falls back to tbf + nftables when it does not,
//! and always leaves nothing behind. Needs root: outside CI it skips with
//! the reason printed; under CI=true it must run.

use std::path::PathBuf;
use std::process::{Command, Output};

use chunkstream_bench_harness::usage::running_as_root as is_root;

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts")
}

/// A test that cannot run here: outside CI it skips with `skipped`
/// printed; under CI=true it fails with `ci_failure` (CI must run it).
fn skip_outside_ci(ci_failure: &str, skipped: &str) -> bool {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{ci_failure}");
    eprintln!("SKIPPED: {skipped}");
    true
}

/// Whether `tool --version` runs and succeeds.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip_without_root() -> bool {
    !is_root()
        && skip_outside_ci(
            "CI=true but not root: the netem script tests must run",
            "netem-scripts need root (network namespaces)",
        )
}

/// Without sch_netem (as on this project's machines) the scripts drop
/// packets with nftables, so the tests that shape loss need `nft`.
/// `.ci/run` installs it.
fn skip_without_nft() -> bool {
    !installed("nft")
        && skip_outside_ci(
            "CI=true but nft (nftables) is missing: the netem script tests must run",
            "nft not installed (Debian: apt-get install nftables)",
        )
}

fn run(script: &str, args: &[&str]) -> Output {
    Command::new(scripts().join(script))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
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

/// Tears the topology down when the test ends, passed or failed.
struct Topology(String);

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = run("teardown.sh", &["--prefix", &self.0]);
    }
}

fn prefix(tag: &str) -> String {
    format!("t{tag}{}", std::process::id() % 100_000)
}

/// Does the kernel accept a netem qdisc? Checked on a scratch namespace.
fn kernel_has_netem(p: &str) -> bool {
    let ns = format!("{p}-probe");
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success()
        && Command::new("ip")
            .args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                "1ms",
            ])
            .output()
            .unwrap()
            .status
            .success();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    ok
}

fn ping_loss(ns: &str, addr: &str, count: u32) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.002",
            "-W",
            "1",
            addr,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let received: f64 = s
        .split(',')
        .find(|p| p.contains("received"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {s}"));
    1.0 - received / count as f64
}

#[test]
fn help_is_available() {
    for script in ["setup.sh", "teardown.sh"] {
        let out = run(script, &["--help"]);
        assert!(out.status.success());
        assert!(text(&out).0.contains("Usage:"), "{script}");
    }
}

#[test]
fn paths_are_built_shaped_and_removed() {
    if skip_without_root() || skip_without_nft() {
        return;
    }
    let p = prefix("a");
    let topo = Topology(p.clone());
    let has_netem = kernel_has_netem(&p);
    let out = run(
        "setup.sh",
        &[
            "--prefix",
            &p,
            "--subnet",
            "10.78",
            "--path",
            "100mbit,10ms,20%",
            "--path",
            "200mbit,10ms,0%",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let backend = if has_netem { "netem" } else { "fallback" };
    assert!(
        stdout.trim_end().ends_with(&format!("backend={backend}")),
        "{stdout}"
    );
    let qdiscs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "exec", &format!("{p}-snd"), "tc", "qdisc", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    if has_netem {
        assert!(qdiscs.contains("netem"), "{qdiscs}");
    } else {
        assert!(
            stderr.contains("sch_netem is not available")
                && stderr.contains("delay is unavailable"),
            "{stderr}"
        );
        assert!(
            stdout.contains("delay unavailable (asked 10ms)"),
            "{stdout}"
        );
        assert!(
            qdiscs.contains("tbf")
                && qdiscs.contains("rate 100Mbit")
                && qdiscs.contains("rate 200Mbit"),
            "{qdiscs}"
        );
    }
    // Path 2 is clean; path 1 loses 20 % each way, ~36 % of round trips.
    let snd = format!("{p}-snd");
    assert_eq!(ping_loss(&snd, "10.78.2.2", 50), 0.0);
    let loss = ping_loss(&snd, "10.78.1.2", 400);
    assert!((0.26..0.46).contains(&loss), "round-trip loss {loss}");

    // Running setup again replaces the topology instead of failing.
    let again = run(
        "setup.sh",
        &[
            "--prefix",
            &p,
            "--subnet",
            "10.78",
            "--path",
            "50mbit,1ms,0%",
        ],
    );
    assert!(again.status.success(), "{:?}", text(&again));
    assert_eq!(ping_loss(&snd, "10.78.1.2", 20), 0.0);

    drop(topo);
    assert!(!namespaces().contains(&p), "left behind: {}", namespaces());
    let twice = run("teardown.sh", &["--prefix", &p]);
    assert!(twice.status.success(), "teardown is idempotent");
}

#[test]
fn forced_fallback_uses_tbf_and_nftables() {
    if skip_without_root() || skip_without_nft() {
        return;
    }
    let p = prefix("f");
    let _topo = Topology(p.clone());
    let out = run(
        "setup.sh",
        &[
            "--prefix",
            &p,
            "--subnet",
            "10.79",
            "--fallback",
            "--path",
            "100mbit,5ms,2.5%",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.trim_end().ends_with("backend=fallback"), "{stdout}");
    let rules = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{p}-rcv"),
            "nft",
            "list",
            "ruleset",
        ])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains("numgen random mod 1000000 < 25000 drop"),
        "{rules}"
    );
}

#[test]
fn without_root_the_scripts_say_so() {
    if skip_without_root() {
        return;
    }
    // Drop to an unprivileged user to see what a non-root user sees.
    if !installed("setpriv")
        && skip_outside_ci(
            "CI=true but setpriv (util-linux) is missing",
            "setpriv not installed",
        )
    {
        return;
    }
    // A copy the unprivileged user can read and run, wherever the checkout
    // is (a fresh clone under a 0700 temporary folder is not readable).
    use std::os::unix::fs::PermissionsExt;
    let copy = tempfile::tempdir().unwrap();
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for script in ["setup.sh", "teardown.sh"] {
        let to = copy.path().join(script);
        std::fs::copy(scripts().join(script), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (script, args) in [
        ("setup.sh", vec!["--path", "100mbit,1ms,0%"]),
        ("teardown.sh", vec![]),
    ] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(copy.path().join(script))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{script} ran without root");
        assert!(
            text(&out).1.contains("needs root"),
            "{script}: {:?}",
            text(&out)
        );
    }
}

#[test]
fn bad_paths_are_refused_before_anything_is_built() {
    if skip_without_root() {
        return;
    }
    let p = prefix("b");
    let _topo = Topology(p.clone());
    for (path, field) in [
        ("100mbit,20ms,150%", "over 100%"),
        ("-5mbit,1ms,0%", "rate"),
        ("100mbit,soon,1%", "delay"),
        ("100mbit,1ms", "loss"),
    ] {
        let out = run("setup.sh", &["--prefix", &p, "--path", path]);
        assert!(!out.status.success(), "{path} accepted");
        let (_, stderr) = text(&out);
        assert!(stderr.contains(field), "{path}: {stderr}");
        assert!(
            !namespaces().contains(&p),
            "{path} left namespaces: {}",
            namespaces()
        );
    }
}
