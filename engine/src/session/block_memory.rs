//! Block memory: how much a sending session holds in flight, and how it
//! splits between its reader pipelines (one per priority class present).
//!
//! The budget bounds block buffers (and on the FEC plane their recovery
//! shards), so a sender's memory stays flat in the file's size; it grows
//! with the round trip because a block stays in flight for one, and on the
//! FEC plane for one more per repair.

use std::time::Duration;

use super::classes::BlockSource;
use super::error::SessionError;
use super::sender::SendConfig;
use crate::manifest::{Manifest, SourceFile};
use crate::multipath::priority::Class;
use crate::work::{EncodeAhead, Plane, start_pipeline_for};

/// Block memory in flight on a path of this much round trip unless the
/// user says otherwise: 64 MiB, and more on long paths, where a block stays
/// in flight for a round trip and, on the FEC plane, one more per repair;
/// at most 512 MiB. Measured on a 200 Mbit/s link of 1 s RTT losing 5 %
/// both ways (256 MiB, relay on loopback, three runs each): 64 MiB (32
/// blocks on the FEC plane) moved 108-112 Mbit/s, 256 MiB 120-124.
pub fn memory_for_rtt(rtt: Duration) -> usize {
    const BASE: usize = 64 << 20;
    const PER: Duration = Duration::from_millis(250);
    let scale = (rtt.as_secs_f64() / PER.as_secs_f64()).max(1.0);
    ((BASE as f64 * scale) as usize).min(512 << 20)
}

/// Block memory of each of `classes` pipelines: on the FEC plane a block
/// in flight may also hold its recovery shards (as many as its source
/// shards, encoded once one is to be sent: on a lossy path, nearly every
/// block), so half the budget goes to block buffers. Measured: with the
/// whole budget for buffers the sender peaked at 195 MB over three paths
/// (64 blocks of data and recovery).
pub(crate) fn class_budget(plane: Plane, memory: usize, classes: usize) -> usize {
    let budget = match plane {
        Plane::Fec { .. } => memory / 2,
        Plane::Reliable => memory,
    };
    budget / classes.max(1)
}

/// The reader pipelines: one, or one per priority class present (the
/// memory budget split between them; three ways in a session held open).
pub(crate) fn block_source(
    cfg: &SendConfig,
    sources: Vec<SourceFile>,
    manifest: &Manifest,
    plane: Plane,
    memory: usize,
    open: bool,
) -> Result<BlockSource, SessionError> {
    let files = sources.len();
    let class_of_file: Vec<Class> = (0..files)
        .map(|i| cfg.classes.get(i).copied().unwrap_or(Class::Normal))
        .collect();
    let present: Vec<Class> = Class::ALL
        .into_iter()
        .filter(|c| class_of_file.contains(c))
        .collect();
    let ahead = EncodeAhead::default();
    if present.len() <= 1 && !open {
        let budget = class_budget(plane, memory, 1);
        let p = start_pipeline_for(
            cfg.reader,
            sources,
            manifest.clone(),
            plane,
            budget,
            None,
            ahead.clone(),
        )
        .map_err(SessionError::Reader)?;
        return Ok(BlockSource::single(p, class_of_file).encoding_ahead_by(ahead));
    }
    let budget = class_budget(plane, memory, if open { 3 } else { present.len() });
    let mut pipelines = Vec::new();
    for class in present {
        let only = class_of_file.iter().map(|c| *c == class).collect();
        let p = start_pipeline_for(
            cfg.reader,
            sources.clone(),
            manifest.clone(),
            plane,
            budget,
            Some(only),
            ahead.clone(),
        )
        .map_err(SessionError::Reader)?;
        pipelines.push((class, p));
    }
    Ok(
        BlockSource::classed(pipelines, class_of_file, manifest.block_size())
            .encoding_ahead_by(ahead),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_in_flight_grows_with_the_round_trip_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(memory_for_rtt(ms(1)), 64 << 20);
        assert_eq!(memory_for_rtt(ms(250)), 64 << 20);
        assert_eq!(memory_for_rtt(ms(1000)), 256 << 20);
        assert_eq!(memory_for_rtt(Duration::from_secs(30)), 512 << 20);
    }
}
