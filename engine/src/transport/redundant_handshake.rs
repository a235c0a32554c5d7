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

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A quinn socket that sends long-header datagrams several times.
pub struct RedundantHandshakeSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    copies: usize,
}

impl RedundantHandshakeSocket {
    /// Wraps `inner`, sending each long-header datagram `copies` times (at
    /// least once).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, copies: usize) -> Self {
        Self {
            inner,
            copies: copies.max(1),
        }
    }
}

impl fmt::Debug for RedundantHandshakeSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedundantHandshakeSocket")
            .field("inner", &self.inner)
            .field("copies", &self.copies)
            .finish()
    }
}

impl AsyncUdpSocket for RedundantHandshakeSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        if is_long_header(transmit.contents) {
            // Best effort: the original went out; a copy that would block
            // or fail is simply not sent.
            for _ in 1..self.copies {
                let _ = self.inner.try_send(transmit);
            }
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

    /// Long-header datagrams arrive `copies` times, short-header ones once.
    #[tokio::test]
    async fn sends_long_headers_as_often_as_asked_and_short_headers_once() {
        for copies in [CLIENT_COPIES, SERVER_COPIES] {
            let mut want = vec![vec![0xc0u8, 1, 2]; copies];
            want.push(vec![0x40, 3, 4]);
            assert_eq!(received(copies).await, want, "{copies} copies");
        }
    }

    async fn received(copies: usize) -> Vec<Vec<u8>> {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = quinn::TokioRuntime.wrap_udp_socket(tx).unwrap();
        let socket = Arc::new(RedundantHandshakeSocket::new(tx, copies));
        let mut poller = socket.clone().create_io_poller();
        let destination = rx.local_addr().unwrap();
        for contents in [&[0xc0u8, 1, 2][..], &[0x40, 3, 4]] {
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
        let mut buf = [0u8; 16];
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
