//! `chunkstream-engine relay`: put an emulated bad link in front of any UDP
//! program, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use chunkstream_bench_harness::link::relay::{Relay, RelayConfig, RelayStats};
use chunkstream_bench_harness::link::{LinkConfig, LossModel};
use serde_json::json;

use chunkstream_bench_harness::units::{duration, percent, rate_bits, size};

/// Relay UDP through an emulated link: rate, delay, jitter, loss.
///
/// The same settings apply to both directions. Counts per direction are
/// printed on stderr when it stops (with --json, as one JSON object).
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Address clients send to.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The server behind the relay.
    #[arg(long, value_name = "ADDR")]
    pub to: SocketAddr,
    /// Bottleneck rate, e.g. 200mbit (unlimited if unset).
    #[arg(long, value_name = "RATE", value_parser = rate_bits)]
    pub rate: Option<u64>,
    /// Bottleneck queue [default: 1.5 × bandwidth-delay product, at least 96 KB].
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub queue: Option<u64>,
    /// One-way delay, e.g. 20ms.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = duration)]
    pub delay: Duration,
    /// Uniform jitter in ±DURATION (packets keep their order).
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = duration)]
    pub jitter: Duration,
    /// Random loss after the bottleneck, e.g. 5%.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = percent)]
    pub loss: f64,
    /// Mean length of loss bursts in packets (Gilbert-Elliott); 1 = independent losses.
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    pub loss_burst: f64,
    /// Share of packets that skip ahead of earlier ones.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = percent)]
    pub reorder: f64,
    /// Share of packets delivered twice.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = percent)]
    pub duplicate: f64,
    /// Lose the first N packets in each direction (e.g. a handshake packet).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub drop_first: u64,
    /// Path MTU: UDP payloads larger than BYTES vanish without a word (a
    /// black hole, as behind a router that sends no ICMP), e.g. 1472.
    #[arg(long, value_name = "BYTES")]
    pub max_packet: Option<usize>,
    /// Random seed: the same seed and traffic give the same losses.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the final counts as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl RelayArgs {
    /// The link settings these flags describe.
    pub fn link(&self) -> LinkConfig {
        let rate_bps = self.rate;
        LinkConfig {
            rate_bps,
            queue_bytes: self.queue.unwrap_or_else(|| {
                rate_bps.map_or(0, |r| LinkConfig::default_queue_bytes(r, self.delay))
            }),
            delay: self.delay,
            jitter: self.jitter,
            loss: if self.loss_burst > 1.0 {
                LossModel::GilbertElliott {
                    p: self.loss,
                    mean_burst: self.loss_burst,
                }
            } else {
                LossModel::Bernoulli { p: self.loss }
            },
            reorder: self.reorder,
            duplicate: self.duplicate,
            drop_first: self.drop_first,
            max_packet: self.max_packet,
        }
    }
}

pub async fn run(args: RelayArgs) -> Result<()> {
    let link = args.link();
    link.validate()
        .map_err(|e| anyhow::anyhow!("invalid link: {e}"))?;
    let relay = Relay::start(RelayConfig {
        listen: args.listen,
        to: args.to,
        forward: link.clone(),
        reverse: link,
        seed: args.seed,
    })
    .await?;
    eprintln!(
        "relaying {} -> {} (Ctrl-C to stop)",
        relay.local_addr(),
        args.to
    );
    wait_for_stop().await?;
    let stats = relay.stop().await;
    print_stats(&stats, args.json);
    Ok(())
}

async fn wait_for_stop() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn print_stats(s: &RelayStats, json: bool) {
    if json {
        eprintln!(
            "{}",
            json!({"event": "relay_stopped", "forward": s.forward, "reverse": s.reverse})
        );
        return;
    }
    for (name, d) in [("client->server", s.forward), ("server->client", s.reverse)] {
        eprintln!(
            "{name}: {} forwarded ({} bytes), {} dropped (random loss), {} dropped (queue full), {} dropped (too big), {} duplicated, {} reordered",
            d.forwarded,
            d.forwarded_bytes,
            d.dropped_random,
            d.dropped_queue,
            d.dropped_too_big,
            d.duplicated,
            d.reordered
        );
    }
}
