//! `chunkstream-engine demo`: a real multi-path transfer on loopback with
//! nothing to set up. Starts a receiver in this process (fresh identity,
//! random token, temporary folder), puts one of the bench's UDP relays in
//! front of it per emulated path (rate, delay, loss; 40, 80 and 120 Mbit/s
//! by default), generates a file, sends it over one QUIC connection per path,
//! and checks the received copy by hashing it again.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chunkstream_engine::manifest::collect_sources;
use chunkstream_engine::session::multipath_sender::{LocalBind, PathSpec};
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
    /// Random loss on every emulated path (data direction).
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = percent)]
    pub loss: f64,
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
    let mut relays = Vec::new();
    for (i, &rate_bps) in args.rate.iter().enumerate() {
        let forward = LinkConfig {
            rate_bps: Some(rate_bps),
            queue_bytes: LinkConfig::default_queue_bytes(rate_bps, args.delay),
            delay: args.delay,
            loss: LossModel::Bernoulli { p: args.loss },
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
        .map(|r| format!("{}", r / 1_000_000))
        .collect();
    let link = format!(
        "{} path(s) of {} Mbit/s, {} ms RTT, {}% loss",
        rates.len(),
        rates.join(" + "),
        args.delay.as_millis() * 2,
        args.loss * 100.0
    );
    if !args.json {
        line(&format!(
            "demo: sending a {} byte file over QUIC through emulated links ({link}) on loopback",
            args.size
        ));
    }
    let mut cfg = SendConfig::new(relays[0].local_addr(), identity.fingerprint(), token);
    cfg.local = LocalBind::Addr(listen.ip());
    cfg.extra_paths = relays
        .iter()
        .skip(1)
        .map(|r| PathSpec {
            local: LocalBind::Addr(listen.ip()),
            remote: r.local_addr(),
        })
        .collect();
    let report = send_files(collect_sources(&[source])?, &cfg, |_| {}).await?;
    tokio::time::timeout(Duration::from_secs(10), recv_task)
        .await
        .context("receiver did not finish")???;
    let mut dropped = 0;
    for r in relays {
        let stats = r.stop().await;
        dropped += stats.forward.dropped_random + stats.forward.dropped_queue;
    }

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
            "link": link,
            "link_dropped": dropped,
            "paths": report.paths,
        }));
    } else {
        line(&format!(
            "blake3   {}  (source = received, verified)",
            source_hash.to_hex()
        ));
        line(&format!(
            "goodput  {} ({} bytes in {:.2} s, reader {}; the link dropped {} packets)",
            rate(report.goodput_bps),
            report.bytes,
            report.seconds,
            report.reader,
            dropped
        ));
        for p in &report.paths {
            line(&format!("path     {}", path_share(p, report.bytes)));
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
