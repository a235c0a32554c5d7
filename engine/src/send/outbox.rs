//! What the driver holds to send, and how the core's [`Transmit`]s become
//! bytes on a connection: the prepared blocks the core admitted, kept
//! until acknowledged (a block holds its pooled buffer until then); a
//! shard sent as a QUIC datagram, only while quinn has room for it in that
//! connection's buffer, so one full path never holds up the others; a
//! block on a stream of its own, written by a task whose end comes back
//! through [`Outbox::next_written`].

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};

use super::core::{SenderCore, Transmit};
use super::links::{Links, receiver_ended, send_block};
use crate::fec::accounts::ShardRef;
use crate::session::SessionError;
use crate::wire::SHARD_HEADER_LEN;
use crate::work::PreparedBlock;

/// A block's stream that ended: path, (file, block), and how.
pub(super) type Written = (usize, (u32, u64), Result<(), SessionError>);

/// The blocks in flight and the streams being written.
pub(super) struct Outbox {
    blocks: HashMap<(u32, u64), PreparedBlock>,
    writers: JoinSet<Written>,
    shards_sent: u64,
    /// Corrupt every k-th shard (a test's hostile sender).
    corrupt_every: Option<u64>,
    /// A shard's datagram, header included.
    shard_len: usize,
}

impl Outbox {
    /// An empty outbox for shards of `shard_bytes` payload (0 on the
    /// reliable plane).
    pub(super) fn new(shard_bytes: usize, corrupt_every: Option<u64>) -> Self {
        Self {
            blocks: HashMap::new(),
            writers: JoinSet::new(),
            shards_sent: 0,
            corrupt_every,
            shard_len: SHARD_HEADER_LEN + shard_bytes,
        }
    }

    /// Holds an admitted block until [`remove`](Self::remove).
    pub(super) fn hold(&mut self, block: PreparedBlock) {
        self.blocks
            .insert((block.header.file, block.header.block), block);
    }

    /// Lets go of a block (acknowledged, or already at the receiver).
    pub(super) fn remove(&mut self, file: u32, block: u64) {
        self.blocks.remove(&(file, block));
    }

    /// How many blocks are held.
    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether a block's stream is being written ([`next_written`]
    /// (Self::next_written) would wait for ever if not).
    pub(super) fn writing(&self) -> bool {
        !self.writers.is_empty()
    }

    /// The next block stream to end.
    pub(super) async fn next_written(&mut self) -> Option<Result<Written, JoinError>> {
        self.writers.join_next().await
    }

    /// Sends what the core hands out, at most `budget` units, while the
    /// paths have room. A shard that quinn refuses fails its path (or,
    /// with one path, the session).
    pub(super) fn transmit(
        &mut self,
        core: &mut SenderCore,
        links: &Links,
        now: Instant,
        mut budget: usize,
        streams: bool,
    ) -> Result<(), SessionError> {
        // Recovery shards whose encoding is still running on a Rayon
        // worker: handed back to the core after this round, tried again
        // at the next (the driver never waits for the coder).
        let mut not_ready = Vec::new();
        let result = self.transmit_until(core, links, now, &mut budget, streams, &mut not_ready);
        for shard in not_ready.into_iter().rev() {
            core.unsent(shard);
        }
        result
    }

    fn transmit_until(
        &mut self,
        core: &mut SenderCore,
        links: &Links,
        now: Instant,
        budget: &mut usize,
        streams: bool,
        not_ready: &mut Vec<ShardRef>,
    ) -> Result<(), SessionError> {
        let n = links.live.len();
        let shard_len = self.shard_len;
        let room = |i: usize| {
            links.live[i]
                .as_ref()
                .is_some_and(|l| streams || l.conn.datagram_send_buffer_space() >= shard_len)
        };
        while *budget > 0 {
            match core.poll_transmit(now, room) {
                None => break,
                Some(Transmit::Block(b)) => {
                    let (Some(block), Some(link)) =
                        (self.blocks.get(&(b.file, b.block)), &links.live[b.path])
                    else {
                        core.stream_finished(b.path, b.file, b.block, false, now);
                        continue;
                    };
                    let (block, conn, id) = (block.clone(), link.conn.clone(), (b.file, b.block));
                    self.writers.spawn(async move {
                        (b.path, id, send_block(&conn, block, b.priority).await)
                    });
                }
                Some(Transmit::Shard { path: i, shard }) => {
                    let (Some(block), Some(link)) =
                        (self.blocks.get(&(shard.file, shard.block)), &links.live[i])
                    else {
                        continue;
                    };
                    let Some(d) =
                        datagram(block, &shard, self.shards_sent + 1, self.corrupt_every)?
                    else {
                        not_ready.push(shard);
                        *budget -= 1;
                        continue;
                    };
                    self.shards_sent += 1;
                    match link.conn.send_datagram(d) {
                        Ok(()) => core.on_sent(i, &shard, now),
                        Err(e) => {
                            core.unsent(shard);
                            if let Some(e) = receiver_ended(&link.conn) {
                                return Err(e);
                            }
                            if n == 1 {
                                return Err(match link.conn.close_reason() {
                                    Some(r) => SessionError::from_connection(r),
                                    None => SessionError::ConnectionLost(format!(
                                        "sending a shard: {e}"
                                    )),
                                });
                            }
                            tracing::debug!(path = i, error = %e, "sending a shard failed");
                            core.path_failed(i, now);
                            break;
                        }
                    }
                }
            }
            *budget -= 1;
        }
        Ok(())
    }
}

/// The datagram carrying `shard` of `block` (the `nth` shard this sender
/// sends; every `corrupt_every`-th is corrupted), or `None` for a recovery
/// shard whose block's recovery shards are not encoded yet (their encoding
/// is then started: `work`'s module doc).
fn datagram(
    block: &PreparedBlock,
    shard: &ShardRef,
    nth: u64,
    corrupt_every: Option<u64>,
) -> Result<Option<Bytes>, SessionError> {
    let g = block.geometry.expect("FEC blocks carry their geometry");
    let recovery = if usize::from(shard.index) >= g.k {
        match block.recovery_if_ready() {
            Some(r) => r?,
            None => return Ok(None),
        }
    } else {
        Bytes::new()
    };
    let mut d = shard.datagram(&g, &block.data, &recovery);
    if corrupt_every.is_some_and(|k| nth % k.max(1) == 0) {
        let last = d.len() - 1;
        d[last] ^= 0x5a;
    }
    Ok(Some(d.freeze()))
}
