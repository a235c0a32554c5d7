//! The io_uring backend: tokio-uring, several owned-buffer reads in flight.

use std::rc::Rc;

use tokio_uring::buf::BoundedBuf;

use super::{BufferSource, Emit, QUEUE_DEPTH, ReadPlan, SourceBlock, SourceError};

/// Creates the io_uring runtime; failing here means "fall back to pread".
pub(super) fn runtime() -> std::io::Result<tokio_uring::Runtime> {
    tokio_uring::Runtime::new(tokio_uring::builder().entries(QUEUE_DEPTH as u32 * 2))
}

pub(super) fn read_all(
    rt: tokio_uring::Runtime,
    plan: ReadPlan,
    mut pool: BufferSource,
    emit: Emit,
) {
    rt.block_on(async move {
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(QUEUE_DEPTH));
        let stopped = Rc::new(std::cell::Cell::new(false));
        'files: for (index, source) in plan.files.iter().enumerate() {
            if plan.manifest.block_count(index) == 0 || !plan.includes(index) {
                continue;
            }
            let file = match tokio_uring::fs::File::open(&source.path).await {
                Ok(f) => Rc::new(f),
                Err(e) => {
                    emit(Err(SourceError::io(&source.path, &e)));
                    break;
                }
            };
            for (block, offset, len) in plan.blocks(index) {
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                if stopped.get() {
                    break 'files;
                }
                let mut buf = pool.acquire(len).await;
                let vec = buf.take();
                let (file, emit, path) = (file.clone(), emit.clone(), source.path.clone());
                let stopped = stopped.clone();
                let file_len = source.size;
                tokio_uring::spawn(async move {
                    let (res, slice) = file.read_exact_at(vec.slice(..len), offset).await;
                    buf.restore(slice.into_inner());
                    drop(permit);
                    let failed = res.is_err();
                    let wanted = emit(match res {
                        Ok(()) => Ok(SourceBlock {
                            file: index as u32,
                            block,
                            offset,
                            file_len,
                            data: buf.freeze(),
                        }),
                        Err(e) => Err(SourceError::io(&path, &e)),
                    });
                    if failed || !wanted {
                        stopped.set(true);
                    }
                });
            }
        }
        // Wait for the last reads to land before the runtime goes away.
        let _ = in_flight.acquire_many(QUEUE_DEPTH as u32).await;
    });
}
