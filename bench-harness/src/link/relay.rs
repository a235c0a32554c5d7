//! The UDP relay: puts a [`LinkModel`] per direction between a UDP client
//! and a UDP server on loopback. No root needed.
//!
//! ```text
//! client ──► relay.listen ──[forward model]──► relay socket ──► server (`to`)
//! client ◄── relay.listen ◄─[reverse model]─── relay socket ◄── server
//! ```
//!
//! Each client address gets its own upstream socket, as a NAT gives each
//! client its own mapping: the server sees one peer per client, and its
//! replies go back to the client they answer. Up to [`MAX_CLIENTS`]
//! clients; packets from more are dropped. All clients share the two link
//! models, as hosts behind one access link share it. (A sender dialling
//! twice at once, as the MTU race does, needs this: with one upstream
//! socket the replies went to whichever client spoke last.) The
//! scheduling (models, arrival-time heap, timers) is [`super::bridge`]'s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::net::UdpSocket;

pub use super::bridge::RelayStats;
use super::bridge::{Bridge, Packet, Port};
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
        let client_side = BatchSocket::new(bind(cfg.listen, None)?)?;
        let local_addr = client_side.socket.local_addr()?;
        let clients = Arc::new(Mutex::new(Vec::new()));
        let bridge = Bridge::spawn(
            ClientPort {
                socket: client_side,
                clients: clients.clone(),
            },
            ServerPort {
                to: cfg.to,
                upstream: Mutex::new(Vec::new()),
            },
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

/// Most clients one relay tells apart; packets from more are dropped.
pub const MAX_CLIENTS: usize = 64;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65536;

/// Most bytes one GSO send carries (the kernel's limit is a 64 KiB IP
/// packet, headers included).
const GSO_BYTES: usize = 64_000;

/// Socket buffers of the relay's sockets: a burst that arrives while the
/// relay's task waits for a core waits here instead of being dropped by
/// the kernel (the kernel caps it at net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 8 << 20;

/// A non-blocking UDP socket on `addr` with [`SOCKET_BUFFER`]s, connected
/// to `peer` if given.
fn bind(addr: SocketAddr, peer: Option<SocketAddr>) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if let Some(peer) = peer {
        socket.connect(&peer.into())?;
    }
    UdpSocket::from_std(socket.into())
}

/// A UDP socket read and written in batches with quinn-udp: `recvmmsg`
/// (and GRO where the sender used GSO) in, one GSO send per run of
/// equal-sized packets to one destination out.
struct BatchSocket {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Receive buffers, one per datagram of a batch.
    bufs: Mutex<Vec<u8>>,
}

impl BatchSocket {
    fn new(socket: UdpSocket) -> std::io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        Ok(Self {
            socket,
            state,
            bufs: Mutex::new(vec![0u8; MAX_DATAGRAM * quinn_udp::BATCH_SIZE]),
        })
    }

    /// Reads what is queued without waiting, appending each datagram with
    /// the flow `flow_of` gives its sender (`None` drops it).
    fn read_batch(
        &self,
        out: &mut Vec<Packet>,
        mut flow_of: impl FnMut(SocketAddr) -> Option<usize>,
    ) -> std::io::Result<()> {
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
            let Some(flow) = flow_of(m.addr) else {
                continue;
            };
            // GRO: one buffer may hold several datagrams of `stride` bytes.
            let stride = m.stride.max(1);
            out.extend(buf[..m.len].chunks(stride).map(|bytes| Packet {
                flow,
                bytes: bytes.to_vec(),
            }));
        }
        Ok(())
    }

    /// Polls for queued datagrams and reads them: `Ready` once some were
    /// read (or on an error), `Pending` with the waker registered.
    fn poll_read(
        &self,
        cx: &mut std::task::Context<'_>,
        out: &mut Vec<Packet>,
        mut flow_of: impl FnMut(SocketAddr) -> Option<usize>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self.socket.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            match self.socket.try_io(tokio::io::Interest::READABLE, || {
                self.read_batch(out, &mut flow_of)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    /// Sends `packets` to `to` without waiting, in runs of equal size.
    fn send_all(&self, to: SocketAddr, packets: &[&Packet]) {
        let most = self.state.max_gso_segments().max(1);
        let mut i = 0;
        let mut joined = Vec::new();
        while i < packets.len() {
            // A run of packets of the first one's size (the last of a run
            // may be shorter), within the kernel's GSO limits.
            let size = packets[i].bytes.len().max(1);
            let mut j = i + 1;
            while j < packets.len()
                && j - i < most
                && (j - i + 1) * size <= GSO_BYTES
                && packets[j - 1].bytes.len() == size
                && packets[j].bytes.len() <= size
            {
                j += 1;
            }
            joined.clear();
            for p in &packets[i..j] {
                joined.extend_from_slice(&p.bytes);
            }
            let transmit = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents: &joined,
                segment_size: (j - i > 1).then_some(size),
                src_ip: None,
            };
            // A full socket buffer loses the run, as a full queue would.
            // The system call is made directly, not through tokio's
            // `try_io`: nothing here waits for writability, and `try_io`
            // refuses a socket whose first writable event the reactor has
            // not seen yet (a client's new upstream socket).
            let _ = self.state.send((&self.socket).into(), &transmit);
            i = j;
        }
    }
}

/// Calls `f` on each run of consecutive packets of one flow.
fn for_each_flow_run(packets: &[Packet], mut f: impl FnMut(usize, &[&Packet])) {
    let mut run: Vec<&Packet> = Vec::new();
    for p in packets {
        if run.first().is_some_and(|first| first.flow != p.flow) {
            f(run[0].flow, &run);
            run.clear();
        }
        run.push(p);
    }
    if let Some(first) = run.first() {
        f(first.flow, &run);
    }
}

/// The listen side: a client's flow is its index in `clients`.
struct ClientPort {
    socket: BatchSocket,
    clients: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ClientPort {
    fn flow_of(clients: &mut Vec<SocketAddr>, addr: SocketAddr) -> Option<usize> {
        if let Some(i) = clients.iter().position(|c| *c == addr) {
            return Some(i);
        }
        (clients.len() < MAX_CLIENTS).then(|| {
            clients.push(addr);
            clients.len() - 1
        })
    }
}

impl Port for ClientPort {
    async fn recv(&self, out: &mut Vec<Packet>) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            self.socket
                .poll_read(cx, out, |addr| Self::flow_of(&mut clients, addr))
        })
        .await
    }

    fn send(&self, packets: &[Packet]) {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for_each_flow_run(packets, |flow, run| {
            if let Some(to) = clients.get(flow) {
                self.socket.send_all(*to, run);
            }
        });
    }
}

/// The server side: one socket connected to the server per client flow,
/// opened when that client's first packet leaves the link.
struct ServerPort {
    to: SocketAddr,
    /// Indexed by flow.
    upstream: Mutex<Vec<Arc<BatchSocket>>>,
}

impl ServerPort {
    fn upstream(&self, flow: usize) -> std::io::Result<Arc<BatchSocket>> {
        let mut upstream = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        while upstream.len() <= flow {
            let any: SocketAddr = if self.to.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .expect("literal address");
            upstream.push(Arc::new(BatchSocket::new(bind(any, Some(self.to))?)?));
        }
        Ok(upstream[flow].clone())
    }
}

impl Port for ServerPort {
    /// Waits on every upstream socket open when called; one opened later
    /// joins at the next call (the bridge calls again after every event,
    /// and a socket only opens when a packet is sent on it).
    async fn recv(&self, out: &mut Vec<Packet>) -> std::io::Result<()> {
        let sockets = self
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        std::future::poll_fn(|cx| {
            let mut read = false;
            for (flow, socket) in sockets.iter().enumerate() {
                match socket.poll_read(cx, out, |_| Some(flow)) {
                    Poll::Ready(Ok(())) => read = true,
                    Poll::Ready(Err(e)) if !read => return Poll::Ready(Err(e)),
                    _ => {}
                }
            }
            if read {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn send(&self, packets: &[Packet]) {
        for_each_flow_run(packets, |flow, run| {
            if let Ok(socket) = self.upstream(flow) {
                socket.send_all(self.to, run);
            }
        });
    }
}
