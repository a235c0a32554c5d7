//! QUIC endpoints: sockets, TLS, and windows sized for long fat paths.
//!
//! [`Tuning`] holds the knobs, with defaults chosen for a path of at least
//! 200 Mbit/s × 100 ms (a 2.5 MB bandwidth-delay product) with room for
//! several blocks in flight: quinn's own defaults (1.25 MB per stream) would
//! cap one stream near 25 MB/s at 50 ms RTT.
//!
//! Every endpoint owns one UDP socket built with socket2 ([`bind_udp`]), with
//! large kernel buffers and, when a local interface is named, bound to it with
//! `SO_BINDTODEVICE`. One endpoint per path keeps each socket driven by its
//! own task.

pub mod handshake_cc;
pub mod identity;
pub mod path_mtu;
pub mod redundant_handshake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::ControllerFactory;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    AsyncUdpSocket, Endpoint, EndpointConfig, IdleTimeout, Runtime, TokioRuntime, TransportConfig,
    VarInt,
};
use quinn_proto::RandomConnectionIdGenerator;
use socket2::{Domain, Protocol, Socket, Type};

use handshake_cc::HandshakeTolerantFactory;
use identity::{Fingerprint, Identity, PinnedCertVerifier};
use redundant_handshake::RedundantHandshakeSocket;

/// Which congestion controller quinn runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// quinn's Cubic (its default): loss-based.
    #[default]
    Cubic,
    /// quinn's experimental BBR: model-based, ignores loss.
    Bbr,
    /// Ours ([`crate::fec::rate`]): the FEC plane sets the window through
    /// [`Tuning::rate_window`]; loss events do not shrink it.
    Rate,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(Self::Cubic),
            "bbr" => Ok(Self::Bbr),
            "rate" => Ok(Self::Rate),
            other => Err(format!(
                "unknown congestion controller {other:?} (cubic, bbr, rate)"
            )),
        }
    }
}

/// Transport knobs. Defaults are tuned for ≥ 200 Mbit/s × 100 ms paths.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Congestion controller.
    pub congestion: Congestion,
    /// Connection-level receive window and send buffer (bytes).
    pub connection_window: u64,
    /// Per-stream receive window (bytes); one block travels on one stream.
    pub stream_window: u64,
    /// Requested kernel socket buffer (bytes, each direction).
    pub socket_buffer: usize,
    /// Block streams the receiver lets the sender open at once.
    pub max_concurrent_blocks: u32,
    /// A connection with no traffic for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive interval, well below the idle timeout.
    pub keep_alive: Duration,
    /// The window [`Congestion::Rate`] controllers report.
    pub rate_window: crate::fec::cc::WindowHandle,
    /// Pin the UDP payload size (no MTU discovery, and black-hole detection
    /// cannot shrink it): the FEC plane cuts shards to one size for the
    /// whole session. `None` leaves quinn's discovery on.
    pub pinned_mtu: Option<u16>,
    /// Bytes of received DATAGRAM frames quinn buffers for the application;
    /// `None` tells the peer we take no datagrams (FEC plane unavailable).
    pub datagram_receive_buffer: Option<usize>,
    /// quinn's RTT estimate before the first sample; the first probe
    /// timeout (a lost handshake packet's retransmission) comes after
    /// about 3 × this. RFC 9002's 333 ms makes a lost first packet cost a
    /// second; 100 ms suits the paths this engine is tuned for (up to
    /// ~100 ms RTT), and on a longer path costs at most a spurious
    /// retransmission of a handshake packet.
    pub initial_rtt: Duration,
    /// Wrap the congestion controller in
    /// [`handshake_cc::HandshakeTolerantFactory`], so a lost handshake
    /// packet does not end slow start.
    pub tolerate_handshake_loss: bool,
    /// Send handshake datagrams more than once
    /// ([`redundant_handshake::RedundantHandshakeSocket`]), so a random loss
    /// during the handshake rarely costs a probe timeout.
    pub redundant_handshake: bool,
}

/// The UDP payload the FEC plane pins: a 1500-byte Ethernet MTU minus IPv6
/// and UDP headers (what quinn's MTU discovery would reach at most).
pub const FEC_MTU: u16 = 1452;

impl Default for Tuning {
    fn default() -> Self {
        Self {
            congestion: Congestion::Cubic,
            connection_window: 64 << 20,
            stream_window: 16 << 20,
            socket_buffer: 8 << 20,
            max_concurrent_blocks: 64,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            rate_window: crate::fec::cc::WindowHandle::default(),
            pinned_mtu: None,
            datagram_receive_buffer: Some(32 << 20),
            initial_rtt: Duration::from_millis(100),
            tolerate_handshake_loss: true,
            redundant_handshake: true,
        }
    }
}

impl Tuning {
    /// The quinn transport configuration for these knobs.
    pub fn transport_config(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        let clamp = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
        t.receive_window(clamp(self.connection_window))
            .send_window(self.connection_window)
            .stream_receive_window(clamp(self.stream_window))
            .max_concurrent_uni_streams(self.max_concurrent_blocks.into())
            .max_concurrent_bidi_streams(1u32.into())
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok());
        t.initial_rtt(self.initial_rtt);
        let controller: Arc<dyn ControllerFactory + Send + Sync> = match self.congestion {
            Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
            Congestion::Rate => {
                Arc::new(crate::fec::cc::RateWindowFactory(self.rate_window.clone()))
            }
        };
        // Our rate window ignores loss events anyway; wrapping it changes nothing.
        t.congestion_controller_factory(if self.tolerate_handshake_loss {
            Arc::new(HandshakeTolerantFactory(controller))
        } else {
            controller
        });
        if let Some(mtu) = self.pinned_mtu {
            t.initial_mtu(mtu).min_mtu(mtu).mtu_discovery_config(None);
            if !gso_fits(mtu) {
                t.enable_segmentation_offload(false);
            }
        }
        // A small send buffer keeps "handed to quinn" close to "on the
        // wire": the FEC plane times its repair answers from the former.
        t.datagram_receive_buffer_size(self.datagram_receive_buffer)
            .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
        t
    }
}

/// Errors setting up an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Socket creation or binding failed.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// TLS configuration failed (a bug, not user input).
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A UDP socket with large buffers, optionally bound to a device.
pub fn bind_udp(
    addr: SocketAddr,
    device: Option<&str>,
    buffer: usize,
) -> Result<std::net::UdpSocket, TransportError> {
    let err = |source| TransportError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // The kernel silently caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    if let Some(dev) = device {
        socket.bind_device(Some(dev.as_bytes())).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < buffer {
        tracing::debug!(
            asked = buffer,
            got,
            "UDP receive buffer capped by net.core.rmem_max; raise it for high-BDP paths"
        );
    }
    Ok(socket.into())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A receiver endpoint listening on `addr`.
pub fn server_endpoint(
    addr: SocketAddr,
    identity: &Identity,
    tuning: &Tuning,
) -> Result<Endpoint, TransportError> {
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain(), identity.private_key())
        .map_err(tls)?;
    crypto.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(crypto).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(tuning.transport_config()));
    let socket = bind_udp(addr, None, tuning.socket_buffer)?;
    endpoint(socket, Some(server), tuning).map_err(|source| TransportError::Bind { addr, source })
}

/// A quinn endpoint on `socket`, its handshake datagrams sent several times
/// if the tuning says so: three times from a client, twice from a server
/// (see [`redundant_handshake`] for why the server sends fewer).
fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    tuning: &Tuning,
) -> std::io::Result<Endpoint> {
    let runtime = Arc::new(TokioRuntime);
    let mut socket: Arc<dyn AsyncUdpSocket> = runtime.wrap_udp_socket(socket)?;
    if tuning.redundant_handshake {
        let copies = if server.is_some() {
            redundant_handshake::SERVER_COPIES
        } else {
            redundant_handshake::CLIENT_COPIES
        };
        socket = Arc::new(RedundantHandshakeSocket::new(socket, copies));
    }
    let mut config = EndpointConfig::default();
    // Take datagrams as large as UDP carries: a path whose MTU allows them
    // (loopback, jumbo frames) then carries the FEC plane's shards in
    // fewer, larger packets. quinn's default (1472) would cap every peer
    // at an Ethernet MTU whatever the sender pins.
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("within quinn's bounds");
    if server.is_some() {
        // The receiver's connection IDs are empty: every packet a sender
        // sends carries the ID its receiver chose, and quinn's eight random
        // bytes were 0.56 % of each shard datagram at Ethernet's MTU (1 416
        // bytes of file in a 1 472-byte datagram; 1 424 without). quinn
        // then tells the receiver's connections apart by address, which
        // costs what connection IDs are for: a connection cannot migrate,
        // so a sender whose address changes mid-transfer (a NAT rebinding)
        // loses that path. The sender dials it again and the session goes
        // on (see `multipath::manager`); each path is bound to its own
        // interface and port and never migrates on purpose.
        config.cid_generator(|| Box::new(RandomConnectionIdGenerator::new(0)));
    }
    Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// The largest MTU a sender may pin: quinn pads its first packet, a long-
/// header one, to the MTU, and a long header's length field holds less
/// than 16 KiB (a larger pin panicked inside quinn-proto: `len <
/// 2usize.pow(14)`).
pub const MAX_PINNED_MTU: u16 = 16_383;

/// Datagrams quinn puts in one GSO batch (quinn's `MAX_TRANSMIT_SEGMENTS`).
const QUINN_GSO_SEGMENTS: usize = 10;

/// The most UDP payload one send may carry over IPv4 (65 535 less the IP
/// and UDP headers); a GSO batch counts as one send.
const MAX_IPV4_UDP_PAYLOAD: usize = 65_507;

/// Whether quinn's GSO batches of `mtu`-byte datagrams fit the kernel's
/// 64 KiB bound on one UDP send. quinn batches up to ten datagrams; with
/// larger ones (a 9000-byte jumbo frame's 8952) the batch exceeds the bound,
/// `sendmsg` fails with `EMSGSIZE`, and quinn-udp drops the whole batch
/// silently (it takes that error for an MTU probe): 88 % of the shards of a
/// loopback transfer pinned at 8952 were lost that way. Such MTUs are sent
/// one datagram per system call instead.
pub fn gso_fits(mtu: u16) -> bool {
    usize::from(mtu) * QUINN_GSO_SEGMENTS <= MAX_IPV4_UDP_PAYLOAD
}

/// Bytes of datagrams quinn may hold before sending them.
pub const DATAGRAM_SEND_BUFFER: usize = 512 << 10;

/// The largest UDP payload an endpoint accepts (quinn's bound).
pub const MAX_UDP_PAYLOAD: u16 = 65_527;

/// A sender endpoint bound to `local` that trusts only `peer`.
///
/// Returns the verifier too, so a failed handshake can be explained.
pub fn client_endpoint(
    local: SocketAddr,
    device: Option<&str>,
    peer: Fingerprint,
    tuning: &Tuning,
) -> Result<(Endpoint, Arc<PinnedCertVerifier>), TransportError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertVerifier::new(peer, provider.clone()));
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    crypto.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(crypto).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(tuning.transport_config()));
    let socket = bind_udp(local, device, tuning.socket_buffer)?;
    let mut endpoint = endpoint(socket, None, tuning).map_err(|source| TransportError::Bind {
        addr: local,
        source,
    })?;
    endpoint.set_default_client_config(client);
    Ok((endpoint, verifier))
}
