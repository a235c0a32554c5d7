//! The positional-read backend: `pread(2)` on the reader thread.

use std::os::unix::fs::FileExt;

use super::{BufferSource, Emit, ReadPlan, SourceBlock, SourceError};

pub(super) fn read_all(plan: ReadPlan, mut pool: BufferSource, emit: Emit) {
    for (index, source) in plan.files.iter().enumerate() {
        if plan.manifest.block_count(index) == 0 {
            continue;
        }
        let file = match std::fs::File::open(&source.path) {
            Ok(f) => f,
            Err(e) => {
                emit(Err(SourceError::io(&source.path, &e)));
                return;
            }
        };
        for (block, offset, len) in plan.blocks(index) {
            let mut buf = pool.acquire_blocking();
            let vec = buf.vec_mut();
            vec.resize(len, 0);
            if let Err(e) = file.read_exact_at(vec, offset) {
                emit(Err(SourceError::io(&source.path, &e)));
                return;
            }
            let wanted = emit(Ok(SourceBlock {
                file: index as u32,
                block,
                offset,
                file_len: source.size,
                data: buf.freeze(),
            }));
            if !wanted {
                return;
            }
        }
    }
}
