//! How fast the TUN backend's bridge forwards (root: it builds two network
//! namespaces): iperf3 blasts UDP from side A to side B through one
//! emulated link with no rate limit, delay or loss for a few seconds, and
//! the bridge's own counters say what went through. Everything shares this
//! machine's cores, as in a bench run.
//!
//! ```sh
//! sudo cargo run --release -p chunkstream-bench-harness --example tun_throughput -- [SECONDS=3] [DATAGRAM=1400]
//! ```

use std::time::{Duration, Instant};

use chunkstream_bench_harness::link::LinkConfig;
use chunkstream_bench_harness::link::tun::{ADDR_B, TunLink};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(Ok(3), |a| a.parse())?;
    let len: usize = args.next().map_or(Ok(1400), |a| a.parse())?;
    let prefix = format!("tp{}", std::process::id() % 100_000);
    let tun = TunLink::start(&prefix, LinkConfig::default(), LinkConfig::default(), 1).await?;
    let mut server = tun
        .command(false, "iperf3")
        .args(["-s", "-1", "-B", &ADDR_B.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = tun.stats()[0].forward;
    let started = Instant::now();
    let client = tun
        .command(true, "iperf3")
        .args(["-c", &ADDR_B.to_string(), "-u", "-b", "0", "-l"])
        .arg(len.to_string())
        .args(["-t", &secs.to_string()])
        .output()
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = tun.stats()[0].forward;
    let _ = server.kill().await;
    anyhow::ensure!(
        client.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let bytes = after.forwarded_bytes - before.forwarded_bytes;
    let packets = after.forwarded - before.forwarded;
    println!(
        "bridge forwarded {packets} packets, {:.2} Gbit/s of IP packets over {elapsed:.1} s \
         ({len}-byte UDP payloads; offered {} packets)",
        bytes as f64 * 8.0 / elapsed / 1e9,
        after.offered - before.offered,
    );
    tun.stop().await;
    Ok(())
}
