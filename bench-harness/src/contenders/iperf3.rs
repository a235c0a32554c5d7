//! iperf3 as a baseline: the TCP number most people quote.
//!
//! iperf3 moves memory, not a file. Its `-F` option reads a file on the
//! client, but the server's `-F` copy stops when the test clock does and
//! keeps only what had arrived (46.7 of 50 MB in a loopback check), so the
//! bytes cannot be verified. Reports therefore mark iperf3 runs as
//! *unverifiable*: goodput is iperf3's own receiver-side rate
//! (`end.sum_received.bits_per_second`) for a test of the file's size
//! (`-n`), and the congestion controller is the one iperf3 says the sender
//! used (`-C` sets it per socket).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::external::{ToolRun, run_tool};
use crate::usage::ProcessUsage;

/// What one iperf3 client run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Iperf3Report {
    /// Bytes the server received within the test.
    pub bytes_received: u64,
    /// The server's test duration.
    pub seconds: f64,
    /// The server's received rate.
    pub goodput_bps: f64,
    /// The sender's congestion controller, as iperf3 reports it.
    pub congestion: String,
    /// CPU and peak RSS of the iperf3 client.
    pub usage: ProcessUsage,
}

/// Serves exactly one iperf3 test on `listen`, then returns its usage.
pub fn serve_one(listen: SocketAddr, limit: Duration) -> Result<ProcessUsage> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-1", "-J", "-B"])
        .arg(listen.ip().to_string())
        .arg("-p")
        .arg(listen.port().to_string());
    Ok(run_tool(cmd, limit)?.ok("iperf3 -s")?.usage)
}

/// Parses the JSON `iperf3 -c -J` prints.
pub fn parse_client_json(text: &str) -> Result<(u64, f64, f64, String)> {
    let v: serde_json::Value =
        serde_json::from_str(text).context("iperf3 printed something that is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let r = &v["end"]["sum_received"];
    let bytes = r["bytes"]
        .as_u64()
        .context("iperf3 JSON lacks end.sum_received.bytes")?;
    let seconds = r["seconds"]
        .as_f64()
        .context("iperf3 JSON lacks end.sum_received.seconds")?;
    let bps = r["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON lacks end.sum_received.bits_per_second")?;
    let cc = v["end"]["sender_tcp_congestion"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    Ok((bytes, seconds, bps, cc))
}

/// Runs one client test of `bytes` bytes to `to` with controller `cc`.
/// The server may still be starting: a refused connection is retried for
/// up to 5 s.
pub fn send(to: SocketAddr, bytes: u64, cc: &str, limit: Duration) -> Result<Iperf3Report> {
    let started = Instant::now();
    let run: ToolRun = loop {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-J", "-c"])
            .arg(to.ip().to_string())
            .arg("-p")
            .arg(to.port().to_string())
            .arg("-n")
            .arg(bytes.to_string())
            .arg("-C")
            .arg(cc);
        let run = run_tool(cmd, limit)?;
        // iperf3 3.12 exits 0 even when it could not connect (-J puts the
        // error in its JSON), so the output decides.
        let refused = run.stdout.contains("Connection refused");
        if !refused || started.elapsed() > Duration::from_secs(5) {
            break run;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (bytes_received, seconds, goodput_bps, congestion) = parse_client_json(&run.stdout)?;
    if run.code != Some(0) {
        bail!("iperf3 -c exited with {:?}", run.code);
    }
    Ok(Iperf3Report {
        bytes_received,
        seconds,
        goodput_bps,
        congestion,
        usage: run.usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_json_is_read_and_errors_are_kept() {
        let ok = r#"{"start":{},"end":{"sum_received":{"bytes":1000,"seconds":0.5,"bits_per_second":16000.0},"sender_tcp_congestion":"bbr"}}"#;
        assert_eq!(
            parse_client_json(ok).unwrap(),
            (1000, 0.5, 16000.0, "bbr".to_owned())
        );
        let refused =
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        let e = parse_client_json(refused).unwrap_err().to_string();
        assert_eq!(e, "iperf3: unable to connect to server: Connection refused");
        assert!(
            parse_client_json("{}")
                .unwrap_err()
                .to_string()
                .contains("sum_received.bytes")
        );
    }

    /// A real iperf3 pair on loopback, when iperf3 is installed (CI installs it).
    #[test]
    fn a_loopback_test_reports_rate_and_controller() {
        if Command::new("iperf3").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI must install iperf3");
            eprintln!("skipped: iperf3 not installed");
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // The server comes up late: the client must retry, not fail.
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            serve_one(addr, Duration::from_secs(30))
        });
        let r = send(addr, 20_000_000, "cubic", Duration::from_secs(30)).unwrap();
        server.join().unwrap().unwrap();
        assert_eq!(r.congestion, "cubic");
        assert!(r.bytes_received > 1_000_000, "{r:?}");
        assert!(r.goodput_bps > 0.0 && r.seconds > 0.0, "{r:?}");
    }
}
