//! The receiver's session core (sans-IO): every decision of a receiving
//! session, with the I/O left to its driver
//! (`session/receiver/session.rs`).
//!
//! [`ReceiverCore`] holds the block accounting ([`ReceiveTracker`]), the FEC
//! reassembly once the sender set it up ([`FecReceive`]), and whether the
//! session has several paths. The driver feeds it what happens: control
//! frames from any path ([`ReceiverCore::on_frame`]), shard datagrams
//! ([`ReceiverCore::on_datagram`]), the header of each block stream
//! ([`ReceiverCore::on_stream`]), and what its tasks finished: a block
//! verified and written, a stream that failed, a decoded block that failed
//! its digest, a file renamed. It answers with [`Output`]s: a frame to send
//! on one path or on all, a complete block to decode and verify, a file to
//! verify and rename. Errors it returns end the session, with the message
//! the sender is shown.
//!
//! What it decides:
//!
//! * **Acknowledgements**: a block that came on a stream is acknowledged on
//!   that path; a block decoded from shards (which came over any path) on
//!   every path, so the acknowledgement is not stuck behind a path that
//!   just died. FILE_DONE goes on every path.
//! * **Duplicates**: with one path a block seen twice is a protocol error;
//!   once a second path joined, a block may come again (re-sent after its
//!   path was declared dead): a copy of a block already written is
//!   acknowledged again and dropped, a copy of one still arriving is taken
//!   too (whichever verifies first is written).
//! * **Failures**: with one path a failed block stream ends the session;
//!   with several the sender re-sends it elsewhere, unless the failure was
//!   the data's (digest) or the disk's.
//! * **Resume**: blocks the `.part` already holds ([`ReceiverCore::hold`])
//!   count as written, and a block sent again replaces its held copy.

#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;

use bytes::Bytes;

use super::SessionError;
use super::fec_receive::FecReceive;
use super::tracker::ReceiveTracker;
use crate::fec::collector::CompleteBlock;
use crate::hash::BlockDigest;
use crate::manifest::Manifest;
use crate::wire::{BlockHeader, FecStatus, Frame, REPORT_ECHOES, encode_report};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On this path's control stream (or any live one if it is gone).
    Path(usize),
    /// On every live path.
    All,
}

/// What the driver should do.
#[derive(Debug)]
pub enum Output {
    /// Send a frame.
    Send(Target, Frame),
    /// Decode a complete block from its shards and check it against the
    /// digest (then write it, or report it corrupt).
    Decode(CompleteBlock, BlockDigest),
    /// A file has every block and they hash to what the sender announced:
    /// sync it (with `--fsync`), rename it into place, report it.
    Finalize {
        /// File index.
        file: u32,
        /// Its verified BLAKE3.
        hash: blake3::Hash,
    },
    /// The sender added files `first..first + count` (ADD_FILES on
    /// `path`), already counted here: make room for them, check what
    /// earlier attempts left of them, [`ReceiverCore::hold`] that, and
    /// answer HAVE and FILES_ADDED on `path`.
    AddFiles {
        /// The path whose control stream carried ADD_FILES.
        path: usize,
        /// First file added.
        first: u32,
        /// How many.
        count: u32,
    },
}

/// What to do with a block stream whose header was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamVerdict {
    /// Read, verify and write the block at this offset.
    Take {
        /// Where the block goes in its file.
        offset: u64,
    },
    /// A copy of a block already written (multi-path re-send): stop the
    /// stream; its acknowledgement is queued again.
    Duplicate,
}

/// One receiving session's decisions.
#[derive(Debug)]
pub struct ReceiverCore {
    manifest: Manifest,
    tracker: ReceiveTracker,
    fec: Option<FecReceive>,
    multipath: bool,
    /// The sender holds the session open for more files (KEEP_OPEN).
    open: bool,
    out: VecDeque<Output>,
    /// BLOCK_ACK and FILE_DONE frames still to repeat in report datagrams,
    /// with how many reports each is still due in.
    echoes: VecDeque<(Frame, u8)>,
}

impl ReceiverCore {
    /// A session receiving `manifest` (checked and accepted).
    pub fn new(manifest: Manifest) -> Self {
        Self {
            tracker: ReceiveTracker::new(manifest.clone()),
            manifest,
            fec: None,
            multipath: false,
            open: false,
            out: VecDeque::new(),
            echoes: VecDeque::new(),
        }
    }

    /// (file, block) is already in the `.part`, verified (resume).
    pub fn hold(&mut self, file: u32, block: u64, digest: BlockDigest) {
        self.tracker.hold(file, block, digest);
    }

    /// Whether the session is over: every file verified and in place, and
    /// the sender does not hold it open for more.
    pub fn is_done(&self) -> bool {
        !self.open && self.files_done()
    }

    /// Whether every file so far is verified and in place (a session held
    /// open may still get more).
    pub fn files_done(&self) -> bool {
        self.tracker.all_done()
    }

    /// The session's files so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the sender set up the FEC plane.
    pub fn fec_active(&self) -> bool {
        self.fec.is_some()
    }

    /// Whether more than one path has carried the session.
    pub fn multipath(&self) -> bool {
        self.multipath
    }

    /// Another path joined.
    pub fn path_joined(&mut self) {
        self.multipath = true;
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn ready(&mut self, file: Option<u32>) -> Result<(), SessionError> {
        if let Some(file) = file {
            let hash = self
                .tracker
                .verify(file)
                .map_err(SessionError::HashMismatch)?;
            self.out.push_back(Output::Finalize { file, hash });
        }
        Ok(())
    }

    /// ADD_FILES: `files` join the session as `first..`, checked as a
    /// manifest is (safe names, none twice, the session's bounds).
    fn add_files(
        &mut self,
        path: usize,
        first: u32,
        files: Vec<crate::wire::ManifestEntry>,
    ) -> Result<(), SessionError> {
        let have = self.manifest.files().len();
        let copy = self
            .manifest
            .files()
            .get(first as usize..first as usize + files.len());
        if first as usize + files.len() <= have && copy == Some(&files[..]) {
            // Sent again after the sender's control path changed: answer
            // again (HAVE, if it was lost, only costs a re-send).
            self.out.push_back(Output::Send(
                Target::Path(path),
                Frame::FilesAdded {
                    first,
                    count: files.len() as u32,
                },
            ));
            return Ok(());
        }
        if first as usize != have {
            return Err(SessionError::Protocol(format!(
                "ADD_FILES numbers its first file {first}, but the session has {have}"
            )));
        }
        let refuse =
            |why: String| SessionError::UnsafeName(format!("refusing the added files: {why}"));
        for f in &files {
            crate::names::check_name(&f.name).map_err(|e| refuse(e.to_string()))?;
        }
        let manifest = self.manifest.extended(&files).map_err(|e| match e {
            crate::manifest::ManifestError::DuplicateName(n) => {
                refuse(format!("file name {n:?} appears twice"))
            }
            other => SessionError::Protocol(format!("refusing the added files: {other}")),
        })?;
        if let Some(fec) = &mut self.fec {
            fec.add_files(&manifest, have)?;
        }
        self.tracker.grow(manifest.clone());
        self.manifest = manifest;
        self.out.push_back(Output::AddFiles {
            path,
            first,
            count: files.len() as u32,
        });
        Ok(())
    }

    /// A control frame from the sender, on `path`.
    pub fn on_frame(&mut self, path: usize, frame: Frame) -> Result<(), SessionError> {
        match frame {
            Frame::AddFiles { first, files } => self.add_files(path, first, files)?,
            Frame::KeepOpen { open } => self.open = open,
            Frame::FileHash { file, hash } => {
                let ready = self
                    .tracker
                    .file_hash(file, hash)
                    .map_err(SessionError::Protocol)?;
                self.ready(ready)?;
            }
            Frame::FecSetup {
                shard_bytes,
                max_blocks,
            } => match &self.fec {
                Some(state) if state.same_setup(shard_bytes, max_blocks) => {}
                Some(_) => {
                    return Err(SessionError::Protocol(
                        "FEC_SETUP sent twice, and different".into(),
                    ));
                }
                None => self.fec = Some(FecReceive::new(&self.manifest, shard_bytes, max_blocks)?),
            },
            Frame::BlockDigest {
                file,
                block,
                digest,
            } => {
                let state = self.fec.as_mut().ok_or_else(|| {
                    SessionError::Protocol("BLOCK_DIGEST before FEC_SETUP".into())
                })?;
                if let Some((complete, digest)) =
                    state.on_digest(&self.manifest, file, block, digest)?
                {
                    self.out.push_back(Output::Decode(complete, digest));
                }
            }
            Frame::Error { message, .. } => return Err(SessionError::PeerFailed(message)),
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {:?} from the sender",
                    other.frame_type()
                )));
            }
        }
        Ok(())
    }

    /// A shard datagram that arrived on `path` (ignored before FEC_SETUP:
    /// the receiver takes no datagrams then).
    pub fn on_datagram(&mut self, path: usize, datagram: Bytes) -> Result<(), SessionError> {
        let Some(state) = self.fec.as_mut() else {
            return Ok(());
        };
        if let Some((complete, digest)) = state.on_datagram(&self.manifest, path, datagram)? {
            self.out.push_back(Output::Decode(complete, digest));
        }
        Ok(())
    }

    /// A block stream on `path` announced `header`.
    pub fn on_stream(
        &mut self,
        path: usize,
        header: &BlockHeader,
    ) -> Result<StreamVerdict, SessionError> {
        let offset = self
            .manifest
            .check_block(header)
            .map_err(SessionError::Protocol)?;
        let (file, block) = (header.file, header.block);
        if self.multipath && self.tracker.is_written(file, block) {
            // Re-sent after its path was declared dead, but the first copy
            // made it: acknowledge it again.
            self.out.push_back(Output::Send(
                Target::Path(path),
                Frame::BlockAck { file, block },
            ));
            return Ok(StreamVerdict::Duplicate);
        }
        // With several paths a re-sent copy is taken even while the first
        // is still arriving (it may be stuck on a dead path); whichever is
        // verified first is written, and a second write of the same
        // verified bytes is harmless.
        if !(self.multipath && self.tracker.has_arrived(file, block)) {
            self.tracker
                .block_arrived(file, block)
                .map_err(SessionError::Protocol)?;
        }
        Ok(StreamVerdict::Take { offset })
    }

    /// A block was verified and written; `path` is the path of its stream,
    /// `None` for a block decoded from shards.
    pub fn on_written(
        &mut self,
        file: u32,
        block: u64,
        digest: BlockDigest,
        path: Option<usize>,
    ) -> Result<(), SessionError> {
        if let Some(state) = self.fec.as_mut() {
            state.finished(file, block);
        }
        if self.multipath && self.tracker.is_written(file, block) {
            // A second copy finished too: acknowledged already.
            return Ok(());
        }
        let target = path.map_or(Target::All, Target::Path);
        if path.is_none() {
            self.echo(Frame::BlockAck { file, block });
        }
        self.out
            .push_back(Output::Send(target, Frame::BlockAck { file, block }));
        let ready = self.tracker.block_written(file, block, digest);
        self.ready(ready)
    }

    /// A block stream failed before its block was written.
    pub fn on_stream_failed(&mut self, e: SessionError) -> Result<(), SessionError> {
        // On one path this ends the session; with several, a stream cut by
        // a dying path is re-sent elsewhere.
        if !self.multipath || matches!(e, SessionError::HashMismatch(_) | SessionError::Storage(_))
        {
            return Err(e);
        }
        tracing::debug!(error = %e, "a block stream failed; the sender re-sends it");
        Ok(())
    }

    /// A block decoded from shards failed its digest: ask for it again.
    pub fn on_corrupt(&mut self, file: u32, block: u64) -> Result<(), SessionError> {
        let state = self
            .fec
            .as_mut()
            .ok_or_else(|| SessionError::Protocol("a corrupt block without FEC".into()))?;
        let attempt = state.retry(file, block).ok_or_else(|| {
            SessionError::HashMismatch(format!(
                "block {block} of file {file} failed its digest 255 times"
            ))
        })?;
        tracing::debug!(
            file,
            block,
            attempt,
            "decoded block failed its digest; asking again"
        );
        self.out.push_back(Output::Send(
            Target::Path(0),
            Frame::BlockRetry {
                file,
                block,
                attempt,
            },
        ));
        Ok(())
    }

    /// A file was renamed into place.
    pub fn on_finalized(&mut self, file: u32) {
        self.tracker.file_done(file);
        self.echo(Frame::FileDone { file });
        self.out
            .push_back(Output::Send(Target::All, Frame::FileDone { file }));
    }

    /// Repeats `frame` in the next reports (FEC plane only: the reliable
    /// plane sends no reports).
    fn echo(&mut self, frame: Frame) {
        if self.fec.is_some() {
            self.echoes.push_back((frame, REPORT_ECHOES));
        }
    }

    /// This round's report datagram for each path (see "Reports as
    /// datagrams" in [`crate::wire`]): `rooms[i]` is path `i`'s datagram
    /// size, `None` for a path that takes no datagrams (it gets `None`,
    /// and its FEC_STATUS goes on the control stream). Each echoed
    /// acknowledgement is due in one report fewer afterwards.
    pub fn reports(&mut self, micros: u64, rooms: &[Option<usize>]) -> Vec<Option<Bytes>> {
        let Some(fec) = &self.fec else {
            return vec![None; rooms.len()];
        };
        let echoes: Vec<Frame> = self.echoes.iter().map(|(f, _)| f.clone()).collect();
        let out = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                room.and_then(|max| encode_report(&fec.status(i, micros), &echoes, max))
                    .map(|d| d.freeze())
            })
            .collect();
        for e in self.echoes.iter_mut() {
            e.1 -= 1;
        }
        self.echoes.retain(|e| e.1 > 0);
        out
    }

    /// The FEC_STATUS path `path` gets now (`micros`: the session's clock).
    pub fn status(&self, path: usize, micros: u64) -> Option<FecStatus> {
        self.fec.as_ref().map(|s| s.status(path, micros))
    }
}

#[cfg(test)]
mod tests;
