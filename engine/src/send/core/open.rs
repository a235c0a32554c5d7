//! A session held open: files added while it runs (see "Sessions held
//! open" in [`crate::wire`]).
//!
//! The agent sends every job to one receiver through one session, so that
//! the priority scheduler shares the bandwidth between jobs as it does
//! between the files of one `send`. [`SenderCore::add_files`] appends a
//! batch to the manifest and queues ADD_FILES; the batch's blocks are not
//! wanted until the receiver answers FILES_ADDED
//! ([`CoreEvent::FilesAdded`]), because it first checks what earlier
//! attempts left of those files and says so (HAVE). Batches are confirmed
//! in any order (the receiver checks them concurrently).
//! [`SenderCore::keep_open`] queues KEEP_OPEN.
//!
//! A control path that fails may have swallowed ADD_FILES or KEEP_OPEN:
//! both are queued again on the next ([`SenderCore::open_again`]); the
//! receiver answers a copy of a batch it has with FILES_ADDED again.

#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;

use super::{CoreEvent, SenderCore};
use crate::multipath::priority::Class;
use crate::session::SessionError;
use crate::wire::{Frame, ManifestEntry};

impl SenderCore {
    /// Appends `files` in `class` to the session, queues ADD_FILES (and the
    /// FILE_HASH of each empty one) and returns the first one's index.
    /// A name already in the session or a session past its bounds is an
    /// error of this batch only; the session goes on.
    pub fn add_files(
        &mut self,
        files: Vec<ManifestEntry>,
        class: Class,
    ) -> Result<u32, SessionError> {
        let first = self.manifest.files().len();
        let grown = self
            .manifest
            .extended(&files)
            .map_err(|e| SessionError::Usage(format!("cannot add these files: {e}")))?;
        let blocks = (first..grown.files().len())
            .map(|f| grown.block_count(f))
            .sum();
        self.manifest = grown;
        self.hashes.grow(&self.manifest);
        self.done.resize(self.manifest.files().len(), false);
        self.class_of_file
            .resize(self.manifest.files().len(), class);
        let first = first as u32;
        self.control.push_back(Frame::AddFiles {
            first,
            files: files.clone(),
        });
        for f in first as usize..self.manifest.files().len() {
            if let Some(h) = self.hashes.hashes[f].filter(|_| self.manifest.block_count(f) == 0) {
                self.control.push_back(Frame::FileHash {
                    file: f as u32,
                    hash: *h.as_bytes(),
                });
            }
        }
        self.awaiting.insert(first, (files, blocks));
        self.awaiting_blocks += blocks;
        Ok(first)
    }

    /// Queues KEEP_OPEN: `true` holds the session open once every file is
    /// done, `false` lets it end then.
    pub fn keep_open(&mut self, open: bool) {
        self.open = Some(open);
        self.control.push_back(Frame::KeepOpen { open });
    }

    /// Whether batches wait for the receiver's FILES_ADDED.
    pub fn files_awaited(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// FILES_ADDED: the receiver took a batch; its blocks may flow. A copy
    /// (the control path changed) is ignored.
    pub(super) fn files_added(&mut self, first: u32, count: u32) -> Result<(), SessionError> {
        match self.awaiting.get(&first) {
            Some((files, _)) if files.len() as u64 == u64::from(count) => {
                let (_, blocks) = self.awaiting.remove(&first).expect("just looked");
                self.awaiting_blocks -= blocks;
                self.events
                    .push_back(CoreEvent::FilesAdded { first, count });
                Ok(())
            }
            None if u64::from(first) + u64::from(count) <= self.manifest.files().len() as u64 => {
                Ok(())
            }
            _ => Err(SessionError::Protocol(format!(
                "FILES_ADDED for files {first}..+{count}, which were not added"
            ))),
        }
    }

    /// What a new control path must carry again first: KEEP_OPEN as last
    /// said, and every batch not confirmed yet.
    pub(super) fn open_again(&self, again: &mut VecDeque<Frame>) {
        for (&first, (files, _)) in &self.awaiting {
            again.push_back(Frame::AddFiles {
                first,
                files: files.clone(),
            });
        }
        if let Some(open) = self.open {
            again.push_back(Frame::KeepOpen { open });
        }
    }
}
