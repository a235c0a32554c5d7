//! The positional-read backend: `pread(2)` on the reader thread.

use std::os::unix::fs::FileExt;

use super::{BufferSource, Emit, ReadPlan, SourceBlock, SourceError};

pub(super) fn read_all(plan: ReadPlan, pool: BufferSource, emit: Emit) {
    // A current-thread runtime only to await free buffers; reads are plain
    // blocking pread(2) calls on this thread.
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt.block_on(read_files(plan, pool, emit)),
        Err(e) => {
            let path = plan
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default();
            emit(Err(SourceError {
                path,
                message: format!("cannot start the reader: {e}"),
            }));
        }
    }
}

async fn read_files(plan: ReadPlan, mut pool: BufferSource, emit: Emit) {
    for (index, source) in plan.files.iter().enumerate() {
        if plan.manifest.block_count(index) == 0 || !plan.includes(index) {
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
            let mut buf = pool.acquire(len).await;
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
