//! Handshake packets sent more than once, so a random loss does not cost a
//! probe timeout.
//!
//! The FEC plane protects data, but the QUIC handshake before it travels
//! unprotected: on a link with random loss `p`, each handshake datagram is
//! lost with probability `p`, and quinn then waits a probe timeout (about
//! 3 × the initial RTT, 0.3 s with [`super::Tuning::initial_rtt`]) before
//! sending it again. The loss sweep's seeded 5 % runs lost one in two runs
//! and paid those 0.3 s on a 3.4 s transfer.
//!
//! [`RedundantHandshakeSocket`] wraps quinn's UDP socket and sends every
//! datagram that starts with a long-header packet (Initial, Handshake,
//! 0-RTT: first bit set, RFC 9000 §17.2) several times in a row.
//! Short-header packets (all 1-RTT traffic, i.e. everything after the
//! handshake) go out once. The copies carry the same packet number, so the
//! peer's QUIC stack processes the first to arrive and discards the others
//! as duplicates (RFC 9000 §12.3): with `n` copies a handshake datagram is
//! lost with `pⁿ` instead of `p`, for a few extra kilobytes per connection.
//! A copy is best effort: if the socket would block, it is skipped, never
//! retried.
//!
//! How many: a client sends [`CLIENT_COPIES`] (3). With two, a seeded 20 %
//! run of the bench lost both copies of the first Initial (`p²` = 4 % per
//! datagram, and a handshake has several) and waited 0.3 s: 125 instead of
//! 137 Mbit/s; with three it is 0.8 %. A server sends [`SERVER_COPIES`]
//! (2): before it has validated the client's address it may send at most
//! three times what it received (RFC 9000 §8.1, against amplification
//! from spoofed addresses). quinn counts that limit on the datagrams it
//! sends itself, so the copies multiply it; chunkstream's first server
//! flight is ~1.2 kB against the client's padded 1 452-byte Initial, so two
//! copies stay under the limit and three would not with a larger
//! certificate.
//!
//! **The session's setup after the handshake.** The frames that open a
//! session (the receiver's WELCOME, HAVE and READY; the sender's HELLO and
//! MANIFEST when they do not ride with its last handshake packet) travel
//! in 1-RTT packets, once. One of them lost costs a round trip and more:
//! the sender admits only two blocks before READY, and the receiver
//! notices the loss only when later packets are acknowledged. On the
//! relayed satellite path (1 s RTT, 5 % each way) 4 of 20 seeded 8 MiB
//! sends took 1.4-4.3 s longer than the rest, and a trace of one showed
//! READY a round trip late. So short-header datagrams that are small
//! (at most [`EARLY_SMALL`] bytes: control frames and acknowledgements,
//! never a full shard) and go to a destination within [`EARLY_WINDOW`] of
//! the first short-header datagram to it are sent as often as long-header
//! ones. The socket remembers when it first sent to each destination (at
//! most [`MAX_DESTINATIONS`], older ones forgotten first). A receiver
//! sends its first short-header datagram when the sender's last handshake
//! packet (with HELLO) arrives — its connection IDs are empty, so it has
//! nothing to send earlier — and READY follows within milliseconds, at any
//! round trip. A later connection from the same address and port gets no
//! copies: senders dial each connection from a socket of its own.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Whether a UDP datagram starts with a QUIC long-header packet.
pub fn is_long_header(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 0x80 != 0)
}

/// How many times a client sends each long-header datagram.
pub const CLIENT_COPIES: usize = 3;
/// How many times a server sends each long-header datagram.
pub const SERVER_COPIES: usize = 2;

/// Short-header datagrams of at most this many bytes may be early ones
/// (see the module doc): acknowledgements and control frames are well
/// under it, a shard (1 452 bytes by default) is not.
pub const EARLY_SMALL: usize = 600;
/// How long after its first short-header datagram to a destination the
/// socket still sends small ones there several times: the session's setup
/// happens in the first few milliseconds of it, whatever the round trip.
pub const EARLY_WINDOW: Duration = Duration::from_millis(250);
/// Destinations remembered at once.
pub const MAX_DESTINATIONS: usize = 1024;

/// A quinn socket that sends long-header datagrams, and a connection's
/// first small short-header ones, several times.
pub struct RedundantHandshakeSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    copies: usize,
    /// When the first short-header datagram went to each destination.
    first_short: Mutex<HashMap<SocketAddr, Instant>>,
}

impl RedundantHandshakeSocket {
    /// Wraps `inner`, sending each long-header datagram `copies` times (at
    /// least once).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, copies: usize) -> Self {
        Self {
            inner,
            copies: copies.max(1),
            first_short: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a short-header datagram to `to` sent `now` is in its
    /// destination's [`EARLY_WINDOW`].
    fn early(&self, to: SocketAddr, now: Instant) -> bool {
        let mut first = self.first_short.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() >= MAX_DESTINATIONS && !first.contains_key(&to) {
            first.retain(|_, at| now.saturating_duration_since(*at) < EARLY_WINDOW);
            if first.len() >= MAX_DESTINATIONS {
                return false;
            }
        }
        let at = *first.entry(to).or_insert(now);
        now.saturating_duration_since(at) < EARLY_WINDOW
    }

    /// How many times to send `transmit`, at `now`.
    fn copies_of(&self, transmit: &Transmit, now: Instant) -> usize {
        if is_long_header(transmit.contents) {
            return self.copies;
        }
        // One datagram (not a GSO batch), small, early for its destination.
        let single = transmit
            .segment_size
            .is_none_or(|s| s >= transmit.contents.len());
        if single && transmit.contents.len() <= EARLY_SMALL && self.early(transmit.destination, now)
        {
            self.copies
        } else {
            1
        }
    }
}

impl fmt::Debug for RedundantHandshakeSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedundantHandshakeSocket")
            .field("inner", &self.inner)
            .field("copies", &self.copies)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for RedundantHandshakeSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        // Best effort: the original went out; a copy that would block or
        // fail is simply not sent.
        for _ in 1..self.copies_of(transmit, Instant::now()) {
            let _ = self.inner.try_send(transmit);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime;

    #[test]
    fn long_header_is_the_first_bit() {
        // An Initial (0xc0 | type 0 | pn len), a Handshake (0xe0), a
        // 1-RTT short header (0x40 fixed bit), an empty datagram.
        assert!(is_long_header(&[0xc3, 0, 0, 0, 1]));
        assert!(is_long_header(&[0xe1]));
        assert!(!is_long_header(&[0x41, 0xaa]));
        assert!(!is_long_header(&[]));
    }

    /// Long-header datagrams arrive `copies` times, so does a small
    /// short-header one early in the connection, a full-size one once.
    #[tokio::test]
    async fn sends_long_headers_and_early_small_short_headers_as_often_as_asked() {
        for copies in [CLIENT_COPIES, SERVER_COPIES] {
            let mut want = vec![vec![0xc0u8, 1, 2]; copies];
            want.extend(vec![vec![0x40, 3, 4]; copies]);
            want.push(full_size_short());
            assert_eq!(received(copies).await, want, "{copies} copies");
        }
    }

    fn full_size_short() -> Vec<u8> {
        let mut d = vec![0x40u8; EARLY_SMALL + 1];
        d[1] = 5;
        d
    }

    fn transmit(to: SocketAddr, contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    fn socket(copies: usize) -> RedundantHandshakeSocket {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        RedundantHandshakeSocket::new(quinn::TokioRuntime.wrap_udp_socket(tx).unwrap(), copies)
    }

    #[tokio::test]
    async fn small_short_headers_are_copied_only_in_their_destinations_first_window() {
        let s = socket(3);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let t0 = Instant::now();
        let small = [0x40u8, 1, 2];
        let ms = Duration::from_millis;
        assert_eq!(s.copies_of(&transmit(a, &small, None), t0), 3);
        assert_eq!(s.copies_of(&transmit(a, &small, None), t0 + ms(249)), 3);
        assert_eq!(
            s.copies_of(&transmit(a, &small, None), t0 + EARLY_WINDOW),
            1
        );
        // Another destination has a window of its own.
        assert_eq!(s.copies_of(&transmit(b, &small, None), t0 + ms(300)), 3);
        // Long headers always; a full-size datagram or a GSO batch of small
        // ones never, early or not.
        assert_eq!(s.copies_of(&transmit(a, &[0xc0, 1], None), t0 + ms(900)), 3);
        let big = full_size_short();
        assert_eq!(s.copies_of(&transmit(b, &big, None), t0 + ms(300)), 1);
        let batch = [0x40u8; 64];
        assert_eq!(s.copies_of(&transmit(b, &batch, Some(32)), t0 + ms(300)), 1);
    }

    #[tokio::test]
    async fn destinations_remembered_are_bounded() {
        let s = socket(2);
        let t0 = Instant::now();
        let small = [0x40u8, 1];
        for port in 0..MAX_DESTINATIONS as u16 {
            let to = SocketAddr::from(([127, 0, 0, 1], 1000 + port));
            assert_eq!(s.copies_of(&transmit(to, &small, None), t0), 2);
        }
        let late: SocketAddr = "127.0.0.2:9".parse().unwrap();
        // Full of destinations still in their window: no room, one copy.
        let full = t0 + Duration::from_millis(1);
        assert_eq!(s.copies_of(&transmit(late, &small, None), full), 1);
        // Once their windows are over they are forgotten.
        let later = t0 + EARLY_WINDOW;
        assert_eq!(s.copies_of(&transmit(late, &small, None), later), 2);
        assert!(s.first_short.lock().unwrap().len() <= MAX_DESTINATIONS);
    }

    async fn received(copies: usize) -> Vec<Vec<u8>> {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = quinn::TokioRuntime.wrap_udp_socket(tx).unwrap();
        let socket = Arc::new(RedundantHandshakeSocket::new(tx, copies));
        let mut poller = socket.clone().create_io_poller();
        let destination = rx.local_addr().unwrap();
        let big = full_size_short();
        for contents in [&[0xc0u8, 1, 2][..], &[0x40, 3, 4], &big] {
            let transmit = Transmit {
                destination,
                ecn: None,
                contents,
                segment_size: None,
                src_ip: None,
            };
            // tokio learns the socket is writable only by polling it.
            std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                .await
                .unwrap();
            socket.try_send(&transmit).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        // One more datagram than expected would be a bug, so wait a little
        // for one after the last.
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv(&mut buf)).await
        {
            got.push(buf[..n].to_vec());
        }
        got
    }
}
