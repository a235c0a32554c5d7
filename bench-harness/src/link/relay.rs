//! The UDP relay: puts a [`LinkModel`] per direction between a UDP client
//! and a UDP server on loopback. No root needed.
//!
//! ```text
//! client ──► relay.listen ──[forward model]──► relay socket ──► server (`to`)
//! client ◄── relay.listen ◄─[reverse model]─── relay socket ◄── server
//! ```
//!
//! The client is whoever sent the latest packet to the listen address. The
//! scheduling (models, arrival-time heap, timers) is [`super::bridge`]'s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::bridge::{Port, run_bridge};
use super::model::{LinkConfig, LinkModel, LinkStats};

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
        let client_side = ClientSide {
            socket: client_side,
            client: Mutex::new(None),
        };
        let task = tokio::spawn(run_bridge(
            client_side,
            ServerSide(server_side),
            models.clone(),
            stopped,
        ));
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

/// The side clients talk to: replies go to whoever sent last.
struct ClientSide {
    socket: UdpSocket,
    client: Mutex<Option<SocketAddr>>,
}

impl Port for ClientSide {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (n, from) = self.socket.recv_from(buf).await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        Ok(n)
    }

    fn send(&self, packet: &[u8]) {
        if let Some(c) = *self.client.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = self.socket.try_send_to(packet, c);
        }
    }
}

/// The side facing the server: a connected socket.
struct ServerSide(UdpSocket);

impl Port for ServerSide {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf).await
    }

    fn send(&self, packet: &[u8]) {
        let _ = self.0.try_send(packet);
    }
}
