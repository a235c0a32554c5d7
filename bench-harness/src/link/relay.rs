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
        let client_side = bind(cfg.listen)?;
        let any: SocketAddr = if cfg.to.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let server_side = bind(any)?;
        server_side.connect(cfg.to).await?;
        let local_addr = client_side.local_addr()?;
        let bridge = Bridge::spawn(
            UdpPort::new(client_side, None)?,
            UdpPort::new(server_side, Some(cfg.to))?,
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

/// One of the relay's UDP sockets, read and written in batches with
/// quinn-udp: `recvmmsg` (and GRO where the sender used GSO) in, one GSO
/// send per run of equal-sized packets out. The client side replies to
/// whoever sent last; the server side always talks to the server.
struct UdpPort {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Receive buffers, one per datagram of a batch.
    bufs: Mutex<Vec<u8>>,
    peer: Mutex<Option<SocketAddr>>,
    /// Replies go to the latest sender (the client side).
    follow: bool,
}

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65536;

/// Most bytes one GSO send carries (the kernel's limit is a 64 KiB IP
/// packet, headers included).
const GSO_BYTES: usize = 64_000;

/// Socket buffers of the relay's sockets: a burst that arrives while the
/// relay's task waits for a core waits here instead of being dropped by
/// the kernel (the kernel caps it at net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 8 << 20;

/// A non-blocking UDP socket on `addr` with [`SOCKET_BUFFER`]s.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

impl UdpPort {
    fn new(socket: UdpSocket, peer: Option<SocketAddr>) -> std::io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        Ok(Self {
            socket,
            state,
            bufs: Mutex::new(vec![0u8; MAX_DATAGRAM * quinn_udp::BATCH_SIZE]),
            follow: peer.is_none(),
            peer: Mutex::new(peer),
        })
    }

    fn read_batch(&self, out: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        let mut slices: Vec<std::io::IoSliceMut<'_>> = bufs
            .chunks_mut(MAX_DATAGRAM)
            .map(std::io::IoSliceMut::new)
            .collect();
        let mut meta = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let n = self
            .state
            .recv((&self.socket).into(), &mut slices, &mut meta)?;
        for (m, buf) in meta.iter().zip(slices.iter()).take(n) {
            // GRO: one buffer may hold several datagrams of `stride` bytes.
            let stride = m.stride.max(1);
            out.extend(buf[..m.len].chunks(stride).map(<[u8]>::to_vec));
            if self.follow {
                *self.peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.addr);
            }
        }
        Ok(())
    }
}

impl Port for UdpPort {
    async fn recv(&self, out: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
        loop {
            self.socket.readable().await?;
            match self
                .socket
                .try_io(tokio::io::Interest::READABLE, || self.read_batch(out))
            {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn send(&self, packets: &[Vec<u8>]) {
        let Some(to) = *self.peer.lock().unwrap_or_else(|p| p.into_inner()) else {
            return;
        };
        let most = self.state.max_gso_segments().max(1);
        let mut i = 0;
        let mut joined = Vec::new();
        while i < packets.len() {
            // A run of packets of the first one's size (the last of a run
            // may be shorter), within the kernel's GSO limits.
            let size = packets[i].len().max(1);
            let mut j = i + 1;
            while j < packets.len()
                && j - i < most
                && (j - i + 1) * size <= GSO_BYTES
                && packets[j - 1].len() == size
                && packets[j].len() <= size
            {
                j += 1;
            }
            joined.clear();
            for p in &packets[i..j] {
                joined.extend_from_slice(p);
            }
            let transmit = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents: &joined,
                segment_size: (j - i > 1).then_some(size),
                src_ip: None,
            };
            // A full socket buffer loses the run, as a full queue would.
            let _ = self.socket.try_io(tokio::io::Interest::WRITABLE, || {
                self.state.send((&self.socket).into(), &transmit)
            });
            i = j;
        }
    }
}
