//! `chunkstream-engine demo`: a real multi-path transfer on loopback with
//! nothing to set up. Starts a receiver in this process (fresh identity,
//! random token, temporary folder), puts one of the bench's UDP relays in
//! front of it per emulated path (rate, delay, loss; by default 40, 80 and
//! 120 Mbit/s, the last one losing 2 % of its packets), generates a file,
//! sends it on the FEC plane over one QUIC connection per path, and checks
//! the received copy by hashing it again.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chunkstream_engine::manifest::collect_sources;
use chunkstream_engine::multipath::spec::{LocalBind, PathSpec};
use chunkstream_engine::session::{Receiver, SendConfig, send_files};
use chunkstream_engine::transport::Tuning;
use chunkstream_engine::transport::identity::Identity;
use serde_json::json;

use chunkstream_bench_harness::link::relay::{Relay, RelayConfig};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};

use crate::output::{json_line, line, path_share, rate};
use chunkstream_bench_harness::units::{duration, percent, rate_bits, size};

/// Run a verified transfer over an emulated link on loopback.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Size of the generated file.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = size)]
    pub size: u64,
    /// Rate of an emulated path; repeat for several paths (one QUIC
    /// connection each).
    #[arg(long, value_name = "RATE", default_values = ["40mbit", "80mbit", "120mbit"], value_parser = rate_bits)]
    pub rate: Vec<u64>,
    /// One-way delay of every emulated path.
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = duration)]
    pub delay: Duration,
    /// Random loss of each emulated path (data direction), in --rate's
    /// order; one value applies to every path.
    #[arg(long, value_name = "PERCENT", default_values = ["0%", "0%", "2%"], value_parser = percent)]
    pub loss: Vec<f64>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let source = dir.path().join("demo.bin");
    write_pseudo_random(&source, args.size)?;
    let source_hash = hash_file(&source)?;

    let identity = Identity::generate()?;
    let token = crate::recv::random_token();
    let out = dir.path().join("received");
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let receiver = Receiver::bind(
        &[listen],
        &out,
        token.clone(),
        &identity,
        &Tuning::default(),
    )?;
    let server = receiver.local_addrs()[0];
    let recv_task = tokio::spawn(async move { receiver.serve(true, |_| {}).await });
    ensure!(!args.rate.is_empty(), "at least one --rate");
    let loss_of = |i: usize| match args.loss.len() {
        0 => 0.0,
        1 => args.loss[0],
        _ => args.loss.get(i).copied().unwrap_or(0.0),
    };
    let mut relays = Vec::new();
    for (i, &rate_bps) in args.rate.iter().enumerate() {
        let forward = LinkConfig {
            rate_bps: Some(rate_bps),
            queue_bytes: LinkConfig::default_queue_bytes(rate_bps, args.delay),
            delay: args.delay,
            loss: LossModel::Bernoulli { p: loss_of(i) },
            ..LinkConfig::default()
        };
        let reverse = LinkConfig {
            loss: LossModel::NONE,
            ..forward.clone()
        };
        relays.push(
            Relay::start(RelayConfig {
                listen,
                to: server,
                forward,
                reverse,
                seed: 1 + i as u64,
            })
            .await?,
        );
    }
    let rates: Vec<String> = args
        .rate
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} Mbit/s at {}% loss", r / 1_000_000, loss_of(i) * 100.0))
        .collect();
    let link = format!(
        "{} path(s): {}; {} ms RTT",
        rates.len(),
        rates.join(", "),
        args.delay.as_millis() * 2,
    );
    if !args.json {
        line(&format!(
            "demo: sending a {} byte file over QUIC through emulated links ({link}) on loopback",
            args.size
        ));
    }
    let mut cfg = SendConfig::new(relays[0].local_addr(), identity.fingerprint(), token);
    cfg.paths = relays
        .iter()
        .map(|r| PathSpec {
            local: LocalBind::Addr(listen.ip()),
            remote: r.local_addr(),
            cap: None,
        })
        .collect();
    cfg.fec = Some(chunkstream_engine::send::FecConfig::default());
    cfg.tuning.congestion = chunkstream_engine::transport::Congestion::Rate;
    let report = send_files(collect_sources(&[source])?, &cfg, |_| {}).await?;
    tokio::time::timeout(Duration::from_secs(10), recv_task)
        .await
        .context("receiver did not finish")???;
    // What each emulated link did to the data direction: a path set to
    // lose nothing still drops what overflows its queue (startup and the
    // controllers' probes), and the path's loss below counts both.
    let mut links = Vec::new();
    for r in relays {
        links.push(r.stop().await.forward);
    }
    let dropped: u64 = links
        .iter()
        .map(|l| l.dropped_random + l.dropped_queue)
        .sum();

    let received_hash = hash_file(&out.join("demo.bin"))?;
    ensure!(
        received_hash == source_hash,
        "received file hashes to {received_hash}, source to {source_hash}"
    );
    let sender_hash = &report.files[0].blake3;
    ensure!(
        *sender_hash == source_hash.to_hex().as_str(),
        "sender's hash {sender_hash} differs from the source's"
    );
    if args.json {
        json_line(&json!({
            "event": "demo_done",
            "bytes": report.bytes,
            "blake3": source_hash.to_hex().to_string(),
            "verified": true,
            "seconds": report.seconds,
            "goodput_bps": report.goodput_bps,
            "reader": report.reader,
            "plane": report.plane,
            "link": link,
            "link_dropped": dropped,
            "links": links.iter().map(|l| json!({
                "offered": l.offered,
                "dropped_random": l.dropped_random,
                "dropped_queue": l.dropped_queue,
            })).collect::<Vec<_>>(),
            "paths": report.paths,
        }));
    } else {
        line(&format!(
            "blake3   {}  (source = received, verified)",
            source_hash.to_hex()
        ));
        line(&format!(
            "goodput  {} ({} bytes in {:.2} s, {} plane, reader {}; the links dropped {} packets)",
            rate(report.goodput_bps),
            report.bytes,
            report.seconds,
            report.plane.name(),
            report.reader,
            dropped
        ));
        for (i, p) in report.paths.iter().enumerate() {
            let link = links.get(i).map_or(String::new(), |l| {
                format!(
                    " (link: {} at random and {} from its full queue, of {} packets)",
                    l.dropped_random, l.dropped_queue, l.offered
                )
            });
            line(&format!("path     {}{link}", path_share(p, &report.paths)));
        }
    }
    Ok(())
}

/// Fills a file with BLAKE3 XOF output: incompressible, fast, reproducible.
fn write_pseudo_random(path: &std::path::Path, size: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut xof = blake3::Hasher::new()
        .update(b"chunkstream demo")
        .finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

fn hash_file(path: &std::path::Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    hasher
        .update_reader(file)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher.finalize())
}
