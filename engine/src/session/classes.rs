//! Priority classes on the sender: one reader pipeline per class, merged
//! by deficit round robin ([`crate::multipath::priority::Drr`]).
//!
//! A `send` may tag its inputs Critical, High or Normal. Each class present
//! gets its own reader and Rayon pipeline (the memory budget split between
//! them), so that blocks of every busy class are always ready; the sender
//! takes the next block from [`BlockSource::recv`], which asks the DRR
//! scheduler which class's turn it is. Blocks leave in that order (strictly
//! decreasing stream priority on the reliable plane), so while all classes
//! have data the bytes on the wire split 50/30/20, and a class that runs out
//! leaves its share to the others.

use tokio::sync::mpsc::error::TryRecvError;

use crate::multipath::priority::{Class, Drr};
use crate::source::{ReaderKind, SourceError};
use crate::work::{EncodeAhead, Pipeline, PreparedBlock};

type Item = Result<PreparedBlock, SourceError>;

/// Blocks ready to send, from one pipeline or one per class.
#[derive(Debug)]
pub struct BlockSource {
    pipelines: Vec<(Class, Pipeline, bool)>,
    drr: Drr<Item>,
    /// The reader backend really used.
    pub reader: ReaderKind,
    /// Block buffers in all pools (the bound on block memory in flight).
    pub buffers: usize,
    /// Which class each file belongs to.
    pub class_of_file: Vec<Class>,
    /// Shared by the pipelines: whether they encode FEC blocks ahead.
    pub ahead: EncodeAhead,
}

/// Blocks each class may hold ready beyond the one being sent.
const LOOKAHEAD: usize = 4;

impl BlockSource {
    /// A single pipeline reading every file, whatever their classes.
    pub fn single(p: Pipeline, class_of_file: Vec<Class>) -> Self {
        Self::classed(vec![(Class::Normal, p)], class_of_file, 1 << 20)
    }

    /// One pipeline per class; `quantum` is the DRR credit unit (a block).
    pub fn classed(
        pipelines: Vec<(Class, Pipeline)>,
        class_of_file: Vec<Class>,
        quantum: u64,
    ) -> Self {
        let reader = pipelines.first().map_or(ReaderKind::Pread, |p| p.1.reader);
        let buffers = pipelines.iter().map(|p| p.1.buffers).sum();
        Self {
            pipelines: pipelines.into_iter().map(|(c, p)| (c, p, false)).collect(),
            drr: Drr::new(quantum),
            reader,
            buffers,
            class_of_file,
            ahead: EncodeAhead::default(),
        }
    }

    /// The same, its pipelines started with `ahead` (`work::EncodeAhead`).
    pub fn encoding_ahead_by(mut self, ahead: EncodeAhead) -> Self {
        self.ahead = ahead;
        self
    }

    /// Another pipeline (files added to a session held open), after those
    /// of its class that came before; finished pipelines are let go.
    pub fn add(&mut self, class: Class, p: Pipeline) {
        self.pipelines.retain(|(_, _, done)| !done);
        self.buffers += p.buffers;
        self.pipelines.push((class, p, false));
    }

    fn size(item: &Item) -> u64 {
        item.as_ref().map_or(1, |b| u64::from(b.header.len).max(1))
    }

    /// The next block by the classes' turns; `None` when every reader is done.
    pub async fn recv(&mut self) -> Option<Item> {
        loop {
            for (class, p, done) in &mut self.pipelines {
                while !*done && self.drr.len(*class) < LOOKAHEAD {
                    match p.blocks.try_recv() {
                        Ok(item) => {
                            let size = Self::size(&item);
                            self.drr.push(*class, item, size);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => *done = true,
                    }
                }
            }
            if let Some((_, item)) = self.drr.pop() {
                return Some(item);
            }
            // Nothing ready: wait for whichever pipeline produces next.
            let waiting: Vec<usize> = (0..self.pipelines.len())
                .filter(|&i| !self.pipelines[i].2)
                .collect();
            if waiting.is_empty() {
                return None;
            }
            let (got, i) = {
                let mut futs: Vec<_> = self
                    .pipelines
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, p)| !p.2)
                    .map(|(i, p)| Box::pin(async move { (p.1.blocks.recv().await, i) }))
                    .collect();
                std::future::poll_fn(|cx| {
                    for f in futs.iter_mut() {
                        if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                            return std::task::Poll::Ready(v);
                        }
                    }
                    std::task::Poll::Pending
                })
                .await
            };
            let class = self.pipelines[i].0;
            match got {
                Some(item) => {
                    let size = Self::size(&item);
                    self.drr.push(class, item, size);
                }
                None => self.pipelines[i].2 = true,
            }
        }
    }

    /// The next block, or why there is none: a read error, or a reader
    /// that stopped before the manifest's last block (the drivers only ask
    /// while blocks are still due).
    pub async fn next(&mut self) -> Result<PreparedBlock, super::SessionError> {
        match self.recv().await {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(e.into()),
            None => Err(super::SessionError::Reader(std::io::Error::other(
                "reader stopped early",
            ))),
        }
    }

    /// Block buffers of the smallest pipeline's pool (all of them with one
    /// pipeline).
    pub fn buffers_per_class(&self) -> usize {
        self.pipelines
            .iter()
            .map(|p| p.1.buffers)
            .min()
            .unwrap_or(self.buffers)
    }

    /// Whether blocks of several classes compete (one pipeline per class).
    pub fn prioritised(&self) -> bool {
        self.pipelines.len() > 1
    }
}
