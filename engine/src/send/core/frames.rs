//! The receiver's control frames as the sender core takes them: a block
//! acknowledged (BLOCK_ACK, on every path: the first counts), a file
//! verified (FILE_DONE), a block's shards to be sent anew (BLOCK_RETRY), the
//! blocks an interrupted transfer left (HAVE), a FEC_STATUS that came on the
//! control stream, FILES_ADDED and ERROR. A frame naming a block or file
//! the manifest does not have is the receiver's protocol error.

#![deny(clippy::disallowed_methods)]

use std::time::Instant;

use super::{CoreEvent, SenderCore};
use crate::session::SessionError;
use crate::wire::Frame;

impl SenderCore {
    /// A control frame from the receiver on path `path`.
    pub fn handle_frame(
        &mut self,
        path: usize,
        frame: Frame,
        now: Instant,
    ) -> Result<(), SessionError> {
        let files = self.manifest.files().len();
        match frame {
            Frame::BlockAck { file, block } => {
                if (file as usize) >= files || block >= self.manifest.block_count(file as usize) {
                    return Err(SessionError::Protocol(format!(
                        "BLOCK_ACK for unknown block {block} of file {file}"
                    )));
                }
                // Acknowledgements come on every path: take the first.
                let fresh = match &self.streams {
                    Some(_) => self.blocks.contains_key(&(file, block)).then_some(0),
                    None => self.accounts.on_acked(file, block),
                };
                if let Some(repair_shards) = fresh
                    && let Some(a) = self.blocks.remove(&(file, block))
                {
                    self.held_bytes -= a.len;
                    // The FEC plane measures from admission (shards of a
                    // block leave over a while), the reliable plane from
                    // the stream's opening.
                    let latency = match &mut self.streams {
                        Some(s) => s.on_acked((file, block), now, &mut self.manager),
                        None => now.saturating_duration_since(a.at),
                    };
                    self.events.push_back(CoreEvent::BlockAcked {
                        file,
                        block,
                        bytes: u64::from(self.manifest.block_span(file as usize, block).1),
                        class: a.class,
                        latency,
                        repair_shards,
                    });
                }
            }
            Frame::FileDone { file } => {
                let f = file as usize;
                if f >= files || self.hashes.hashes[f].is_none() {
                    return Err(SessionError::Protocol(format!(
                        "unexpected FILE_DONE for file {file}"
                    )));
                }
                if !std::mem::replace(&mut self.done[f], true) {
                    self.files_done += 1;
                    self.events.push_back(CoreEvent::FileDone { file });
                }
                if self.is_done()
                    && let Some(s) = &mut self.streams
                {
                    s.settle(now, &mut self.manager);
                }
            }
            Frame::FecStatus(st) => self.on_status(path, st, now),
            Frame::BlockRetry {
                file,
                block,
                attempt,
            } => {
                self.retried_blocks += 1;
                // Shards of the old attempt still queued are useless now.
                self.fresh.retain(|s| (s.file, s.block) != (file, block));
                self.urgent.retain(|s| (s.file, s.block) != (file, block));
                self.urgent
                    .extend(self.accounts.on_retry(file, block, attempt));
            }
            Frame::Have {
                file,
                first,
                digests,
            } => {
                let f = file as usize;
                let end = first.checked_add(digests.len() as u64);
                if f >= files || end.is_none_or(|e| e > self.manifest.block_count(f)) {
                    return Err(SessionError::Protocol(format!(
                        "HAVE for blocks {first}.. of file {file}, which has no such blocks"
                    )));
                }
                if self.cfg.resume {
                    for (i, d) in digests.into_iter().enumerate() {
                        let id = (file, first + i as u64);
                        // A block admitted already is on its way: the
                        // receiver takes it as a replacement.
                        if !self.blocks.contains_key(&id) && !self.hashes.has_read(id.0, id.1) {
                            self.held.insert(id, d);
                        }
                    }
                }
            }
            Frame::FilesAdded { first, count } => self.files_added(first, count)?,
            Frame::Error { code, message } => {
                return Err(crate::session::error::peer_error(code, message));
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {:?} from the receiver",
                    other.frame_type()
                )));
            }
        }
        Ok(())
    }
}
