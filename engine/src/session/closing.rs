//! Closing a sender's connections: the CONNECTION_CLOSE sent, and waited
//! for just long enough to leave the host.
//!
//! A sender whose receiver confirmed every file has nothing left to say
//! but goodbye; it must not exit before that goodbye is on the wire (the
//! receiver would otherwise wait out its idle timeout), and it need not
//! wait for quinn's draining period either.

use std::time::Duration;

use quinn::Connection;

/// The most a finished sender waits for its CONNECTION_CLOSE to go out
/// before it exits (see [`close`]): the endpoint's driver sends it at its
/// next poll, well inside this even on busy cores. It was 100 ms, waited
/// once per path in turn: 0.1 s of a 1 kB transfer's 0.11 s on loopback,
/// and 0.3 s at the end of every three-path transfer.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(15);

/// A connection being closed, and how many datagrams it had sent just
/// before: once it has sent more, the CONNECTION_CLOSE is out (a closed
/// connection sends nothing else). `None`: it was closed already (the
/// sender core's driver closes every path, the first one too), nothing to
/// wait for here.
pub(crate) struct Closing {
    conn: Connection,
    sent_before: Option<u64>,
}

/// Closes `conn` with `code` and `reason` unless it is closed already;
/// [`let_closes_leave`] then waits for the close to leave.
pub(crate) fn close(conn: &Connection, code: u32, reason: &[u8]) -> Closing {
    let sent_before = conn.close_reason().is_none().then(|| {
        let sent = conn.stats().udp_tx.datagrams;
        conn.close(code.into(), reason);
        sent
    });
    Closing {
        conn: conn.clone(),
        sent_before,
    }
}

/// Waits until every connection of `closing` has sent its CONNECTION_CLOSE
/// (quinn counts a datagram when its driver builds it, and the driver
/// hands it to the socket in the same step, under the same lock),
/// at most [`CLOSE_GRACE`]. Not quinn's `wait_idle`: that sits out the
/// draining period (three probe timeouts: 3 s and more at 1 s RTT,
/// measured as 2 s of a 19.5 s satellite transfer), which a sender whose
/// receiver confirmed every file need not wait for; a receiver whose copy
/// of the close is lost ends by its idle timeout. Waiting the whole grace
/// every time was 15 ms of every transfer (0.5 % of 64 MiB at 170 Mbit/s).
pub(crate) async fn let_closes_leave(closing: &[Closing]) {
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    while closing.iter().any(|c| {
        c.sent_before
            .is_some_and(|n| c.conn.stats().udp_tx.datagrams <= n)
    }) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
