//! The UDP relay: puts a [`LinkModel`] per direction between a UDP client
//! and a UDP server on loopback. No root needed.
//!
//! ```text
//! client ──► relay.listen ──[forward model]──► relay socket ──► server (`to`)
//! client ◄── relay.listen ◄─[reverse model]─── relay socket ◄── server
//! ```
//!
//! The client is whoever sent the latest packet to the listen address. Each
//! datagram is offered to its direction's model with the current time; a
//! delivered datagram waits in a time-ordered heap until its arrival time.
//! Timers come from tokio, whose resolution is one millisecond: at 200 Mbit/s
//! that releases packets in bursts of up to ~17, adding up to 1 ms of
//! jitter but keeping the average rate (the model, not the timer, decides
//! the rate).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::model::{LinkConfig, LinkModel, LinkStats, Verdict};

/// Settings of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients send to.
    pub listen: SocketAddr,
    /// The server behind the relay.
    pub to: SocketAddr,
    /// Client → server direction.
    pub forward: LinkConfig,
    /// Server → client direction.
    pub reverse: LinkConfig,
    /// Seed of the forward model; the reverse model uses `seed + 1`.
    pub seed: u64,
}

/// Counts of both directions.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RelayStats {
    /// Client → server.
    pub forward: LinkStats,
    /// Server → client.
    pub reverse: LinkStats,
}

/// A running relay; stops when dropped or with [`Relay::stop`].
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    models: Arc<Mutex<(LinkModel, LinkModel)>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Forward,
    Reverse,
}

impl Relay {
    /// Binds the listen address and starts relaying.
    pub async fn start(cfg: RelayConfig) -> anyhow::Result<Self> {
        cfg.forward.validate().map_err(anyhow::Error::msg)?;
        cfg.reverse.validate().map_err(anyhow::Error::msg)?;
        let client_side = UdpSocket::bind(cfg.listen).await?;
        let any: SocketAddr = if cfg.to.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let server_side = UdpSocket::bind(any).await?;
        server_side.connect(cfg.to).await?;
        let local_addr = client_side.local_addr()?;
        let models = Arc::new(Mutex::new((
            LinkModel::new(cfg.forward, cfg.seed),
            LinkModel::new(cfg.reverse, cfg.seed.wrapping_add(1)),
        )));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(client_side, server_side, models.clone(), stopped));
        Ok(Self {
            local_addr,
            models,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counts so far.
    pub fn stats(&self) -> RelayStats {
        let m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        RelayStats {
            forward: m.0.stats(),
            reverse: m.1.stats(),
        }
    }

    /// Stops relaying and returns the final counts.
    pub async fn stop(mut self) -> RelayStats {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.stats()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A datagram waiting for its arrival time. Ordered by time, then by the
/// order it was scheduled in.
type Pending = Reverse<(Instant, u64, Direction, Vec<u8>)>;

async fn run(
    client_side: UdpSocket,
    server_side: UdpSocket,
    models: Arc<Mutex<(LinkModel, LinkModel)>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut client: Option<SocketAddr> = None;
    let mut buf_c = vec![0u8; 65536];
    let mut buf_s = vec![0u8; 65536];
    loop {
        let next_due = heap.peek().map(|Reverse((at, ..))| *at);
        tokio::select! {
            _ = &mut stopped => break,
            r = client_side.recv_from(&mut buf_c) => {
                let Ok((n, from)) = r else { continue };
                client = Some(from);
                let verdict = models.lock().unwrap_or_else(|p| p.into_inner()).0.offer(Instant::now(), n);
                schedule(&mut heap, &mut seq, verdict, Direction::Forward, &buf_c[..n]);
            }
            r = server_side.recv(&mut buf_s) => {
                // ECONNREFUSED while the server is not up yet: keep going.
                let Ok(n) = r else { continue };
                let verdict = models.lock().unwrap_or_else(|p| p.into_inner()).1.offer(Instant::now(), n);
                schedule(&mut heap, &mut seq, verdict, Direction::Reverse, &buf_s[..n]);
            }
            _ = sleep_until(next_due), if next_due.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
                    let Reverse((_, _, dir, data)) = heap.pop().expect("peeked");
                    // A full socket buffer or an absent peer loses the
                    // datagram, as a real network would.
                    let _ = match (dir, client) {
                        (Direction::Forward, _) => server_side.try_send(&data),
                        (Direction::Reverse, Some(c)) => client_side.try_send_to(&data, c),
                        (Direction::Reverse, None) => Ok(0),
                    };
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn schedule(
    heap: &mut BinaryHeap<Pending>,
    seq: &mut u64,
    verdict: Verdict,
    dir: Direction,
    data: &[u8],
) {
    if let Verdict::Deliver { at, copies } = verdict {
        for _ in 0..copies {
            *seq += 1;
            heap.push(Reverse((at, *seq, dir, data.to_vec())));
        }
    }
}
