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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Creates pools of block buffers.
#[derive(Debug)]
pub struct BufferPool;

impl BufferPool {
    /// A pool of `count` buffers of `buf_len` bytes. Memory is allocated the
    /// first time each buffer is used, never more than `count × buf_len`.
    pub fn split(count: usize, buf_len: usize) -> BufferSource {
        let count = count.max(1);
        let (tx, rx) = mpsc::channel(count);
        for _ in 0..count {
            tx.try_send(Vec::new())
                .expect("channel sized for every buffer");
        }
        BufferSource {
            free: rx,
            ret: Arc::new(Return {
                tx,
                allocations: AtomicU64::new(0),
            }),
            buf_len,
        }
    }
}

#[derive(Debug)]
struct Return {
    tx: mpsc::Sender<Vec<u8>>,
    allocations: AtomicU64,
}

/// The reader's end of the pool.
#[derive(Debug)]
pub struct BufferSource {
    free: mpsc::Receiver<Vec<u8>>,
    ret: Arc<Return>,
    buf_len: usize,
}

impl BufferSource {
    /// Waits (asynchronously) for a free buffer.
    pub async fn acquire(&mut self) -> PooledBuffer {
        let vec = self.free.recv().await.expect("the pool holds a sender");
        self.prepare(vec)
    }

    /// Waits (blocking the thread) for a free buffer.
    pub fn acquire_blocking(&mut self) -> PooledBuffer {
        let vec = self.free.blocking_recv().expect("the pool holds a sender");
        self.prepare(vec)
    }

    fn prepare(&self, mut vec: Vec<u8>) -> PooledBuffer {
        vec.clear();
        if vec.capacity() < self.buf_len {
            vec = Vec::with_capacity(self.buf_len);
            self.ret.allocations.fetch_add(1, Ordering::Relaxed);
        }
        PooledBuffer {
            vec,
            ret: self.ret.clone(),
        }
    }

    /// How many buffers were allocated so far (never more than the pool size).
    pub fn allocations(&self) -> u64 {
        self.ret.allocations.load(Ordering::Relaxed)
    }
}

/// A buffer taken from the pool; goes back when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    vec: Vec<u8>,
    ret: Arc<Return>,
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
        // Never blocks: the channel has room for every buffer of the pool.
        // Fails only when the reader is gone, and then nobody needs it.
        let _ = self.ret.tx.try_send(std::mem::take(&mut self.vec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_slice_is_dropped() {
        let mut src = BufferPool::split(2, 1024);
        let mut a = src.acquire_blocking();
        a.vec_mut().extend_from_slice(&[1; 1000]);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let slice = bytes.slice(10..20);
        assert_eq!(slice.as_ptr(), ptr.wrapping_add(10), "slices share memory");
        let _b = src.acquire_blocking();
        assert!(src.free.try_recv().is_err(), "pool of two is empty");
        drop(bytes);
        assert!(
            src.free.try_recv().is_err(),
            "a slice still holds the buffer"
        );
        drop(slice);
        let back = src.free.try_recv().expect("buffer returned");
        assert_eq!(back.as_ptr(), ptr, "the same memory is reused");
        assert_eq!(src.allocations(), 2);
    }
}
