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
use std::sync::Mutex;

use tokio::net::UdpSocket;

pub use super::bridge::RelayStats;
use super::bridge::{Bridge, Port};
use super::model::LinkConfig;

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

/// A running relay; stops when dropped or with [`Relay::stop`].
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    bridge: Bridge,
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
        let client_side = ClientSide {
            socket: client_side,
            client: Mutex::new(None),
        };
        let bridge = Bridge::spawn(
            client_side,
            ServerSide(server_side),
            cfg.forward,
            cfg.reverse,
            cfg.seed,
        );
        Ok(Self { local_addr, bridge })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counts so far.
    pub fn stats(&self) -> RelayStats {
        self.bridge.stats()
    }

    /// Stops relaying and returns the final counts.
    pub async fn stop(mut self) -> RelayStats {
        self.bridge.stop().await
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
