//! Files added to a running session (a session held open, see
//! `send/core/open.rs` and "Sessions held open" in [`crate::wire`]): the
//! driver's side. Batches come from the caller on a channel; each is
//! appended to the core's manifest (ADD_FILES) and, once the receiver took
//! it, gets a reader pipeline of its own in the block source, in its
//! class.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::core::SenderCore;
use crate::session::SessionError;
use crate::session::classes::BlockSource;

/// Files added while the session runs (a session held open, see
/// [`crate::send::core`]'s `open.rs`): batches come on `batches` until its
/// sender is dropped; each gets its own reader pipeline once the receiver
/// took it.
pub(crate) struct MoreFiles {
    pub batches: mpsc::UnboundedReceiver<crate::session::FileBatch>,
    /// Every file of the session so far, in session order.
    pub sources: Vec<crate::manifest::SourceFile>,
    pub reader: crate::source::ReaderKind,
    pub plane: crate::work::Plane,
    /// Block memory of each batch's pipeline.
    pub budget: usize,
    /// Batches sent and not yet taken: their class, by first file.
    pub classes: HashMap<u32, crate::multipath::priority::Class>,
    /// Whether batches may still come.
    pub open: bool,
}

impl MoreFiles {
    /// A batch from the caller: appended to the session (ADD_FILES), or
    /// refused (a name already in the session) with the reason.
    pub(super) fn take(&mut self, core: &mut SenderCore, batch: crate::session::FileBatch) {
        let entries = batch
            .files
            .iter()
            .map(|f| crate::wire::ManifestEntry {
                name: f.name.clone(),
                size: f.size,
            })
            .collect();
        let count = batch.files.len();
        let answer = core.add_files(entries, batch.class).map(|first| {
            self.sources.extend(batch.files);
            self.classes.insert(first, batch.class);
            first as usize..first as usize + count
        });
        tracing::debug!(?answer, "files added to the session");
        if let Some(reply) = batch.added {
            let _ = reply.send(answer.map_err(|e| e.to_string()));
        }
    }

    /// The receiver took the batch at `first`: its reader starts.
    pub(super) fn start(
        &mut self,
        core: &SenderCore,
        pipeline: &mut BlockSource,
        first: u32,
        count: u32,
    ) -> Result<crate::multipath::priority::Class, SessionError> {
        let class = self
            .classes
            .remove(&first)
            .unwrap_or(crate::multipath::priority::Class::Normal);
        let mut only = vec![false; self.sources.len()];
        for o in only.iter_mut().skip(first as usize).take(count as usize) {
            *o = true;
        }
        let p = crate::work::start_pipeline_for(
            self.reader,
            self.sources.clone(),
            core.manifest().clone(),
            self.plane,
            self.budget,
            Some(only),
            pipeline.ahead.clone(),
        )
        .map_err(SessionError::Reader)?;
        pipeline.add(class, p);
        Ok(class)
    }
}
