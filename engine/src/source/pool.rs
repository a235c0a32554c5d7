//! A fixed set of block buffers that return themselves when the data they
//! hold has been sent.
//!
//! [`BufferPool::split`] gives the reader a [`BufferSource`] (the only place
//! buffers are taken from) and keeps a return path. A filled buffer becomes a
//! [`Bytes`] with [`PooledBuffer::freeze`]; that `Bytes` (and every slice of
//! it) shares the same memory, so hashing, slicing into shards and handing
//! it to quinn copy nothing. When the last reference is dropped (quinn
//! releases stream data once the peer acknowledged it) the buffer goes back to
//! the pool. The pool's size is therefore the bound on memory in flight, and
//! an empty pool is the back-pressure that slows the reader down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// Creates pools of block buffers.
#[derive(Debug)]
pub struct BufferPool;

impl BufferPool {
    /// A pool of `count` buffers of `buf_len` bytes. Memory is allocated the
    /// first time each buffer is used, never more than `count × buf_len`.
    /// Free buffers are reused last-in first-out, so a steady flow keeps
    /// reusing the few that are still warm in cache.
    pub fn split(count: usize, buf_len: usize) -> BufferSource {
        BufferSource {
            shared: Arc::new(Shared {
                free: Mutex::new(Vec::new()),
                available: Semaphore::new(count.max(1)),
                allocations: AtomicU64::new(0),
            }),
            buf_len,
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Buffers that came back, most recent last.
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers that may be taken (free or not yet allocated).
    available: Semaphore,
    allocations: AtomicU64,
}

/// The reader's end of the pool.
#[derive(Debug)]
pub struct BufferSource {
    shared: Arc<Shared>,
    buf_len: usize,
}

impl BufferSource {
    /// Waits for a free buffer (works on any async runtime).
    pub async fn acquire(&mut self) -> PooledBuffer {
        self.shared
            .available
            .acquire()
            .await
            .expect("the pool's semaphore is never closed")
            .forget();
        let reused = self
            .shared
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let vec = match reused {
            Some(mut v) => {
                v.clear();
                v
            }
            None => {
                self.shared.allocations.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(self.buf_len)
            }
        };
        PooledBuffer {
            vec,
            shared: self.shared.clone(),
        }
    }

    /// How many buffers were allocated so far (never more than the pool size).
    pub fn allocations(&self) -> u64 {
        self.shared.allocations.load(Ordering::Relaxed)
    }
}

/// A buffer taken from the pool; goes back when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    vec: Vec<u8>,
    shared: Arc<Shared>,
}

impl PooledBuffer {
    /// The buffer, to be filled by a read (its length is the bytes read).
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// Takes the Vec out for an owned-buffer API (io_uring); put it back
    /// with [`PooledBuffer::restore`].
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.vec)
    }

    /// Puts back a Vec taken with [`PooledBuffer::take`].
    pub fn restore(&mut self, vec: Vec<u8>) {
        self.vec = vec;
    }

    /// Freezes the filled bytes into a shareable [`Bytes`] without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.vec
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let vec = std::mem::take(&mut self.vec);
        if vec.capacity() > 0 {
            self.shared
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(vec);
        }
        self.shared.available.add_permits(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_slice_is_dropped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut src = BufferPool::split(2, 1024);
        let mut a = rt.block_on(src.acquire());
        a.vec_mut().extend_from_slice(&[1; 1000]);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let slice = bytes.slice(10..20);
        assert_eq!(slice.as_ptr(), ptr.wrapping_add(10), "slices share memory");
        let b = rt.block_on(src.acquire());
        assert_eq!(
            src.shared.available.available_permits(),
            0,
            "pool of two is empty"
        );
        drop(bytes);
        assert_eq!(
            src.shared.available.available_permits(),
            0,
            "a slice still holds the buffer"
        );
        drop(b);
        drop(slice);
        // Last in, first out: the buffer returned last is handed out next.
        let again = rt.block_on(src.acquire());
        assert_eq!(again.as_ref().as_ptr(), ptr, "the same memory is reused");
        assert_eq!(src.allocations(), 2, "never more than the pool size");
    }
}
