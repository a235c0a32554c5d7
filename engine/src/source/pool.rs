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
//!
//! The bound is on bytes, not buffers: the pool hands out [`UNITS`] units
//! per full buffer, and a block shorter than a buffer (a small file, a
//! file's last block) takes only the units its length needs, in a buffer
//! of its own size. A pool of 32 one-MiB buffers holds 32 full blocks or
//! 2 048 blocks of 10 kB: counted in buffers, a thousand small files over
//! a 40 ms path went at 32 blocks per round trip (10 MB in 2.4 s where one
//! 10 MB file took 0.8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// Units of the pool's bound per full buffer: a buffer for `len` bytes
/// takes `ceil(len / (buf_len / UNITS))` of them.
pub const UNITS: usize = 64;

/// Creates pools of block buffers.
#[derive(Debug)]
pub struct BufferPool;

impl BufferPool {
    /// A pool of `count` buffers' worth of `buf_len` bytes. Memory is
    /// allocated the first time each buffer is used, never more than
    /// `count × buf_len` in all. Free full buffers are reused last-in
    /// first-out, so a steady flow keeps reusing the few that are still
    /// warm in cache.
    pub fn split(count: usize, buf_len: usize) -> BufferSource {
        BufferSource {
            shared: Arc::new(Shared {
                free: Mutex::new(Vec::new()),
                available: Semaphore::new(count.max(1) * UNITS),
                allocations: AtomicU64::new(0),
            }),
            buf_len,
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Full buffers that came back, most recent last.
    free: Mutex<Vec<Vec<u8>>>,
    /// Units that may be taken (of free buffers or not yet allocated).
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
    /// Waits until the pool has room for `len` bytes (at most a full
    /// buffer), then hands out an empty buffer of at least that capacity:
    /// a full one, reused if one is free, or for a shorter block one of
    /// its own size (works on any async runtime).
    pub async fn acquire(&mut self, len: usize) -> PooledBuffer {
        let full = len >= self.buf_len;
        let units = if full {
            UNITS
        } else {
            len.max(1).div_ceil(self.buf_len.div_ceil(UNITS)).min(UNITS)
        };
        self.shared
            .available
            .acquire_many(units as u32)
            .await
            .expect("the pool's semaphore is never closed")
            .forget();
        let reused = {
            let mut free = self.shared.free.lock().unwrap_or_else(|p| p.into_inner());
            let reused = if full { free.pop() } else { None };
            // Free buffers count against the bound too: keep no more of
            // them than the units nobody holds (the oldest go first).
            let keep = self.shared.available.available_permits() / UNITS;
            let excess = free.len().saturating_sub(keep);
            free.drain(..excess);
            reused
        };
        let vec = match reused {
            Some(mut v) => {
                v.clear();
                v
            }
            None => {
                self.shared.allocations.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(if full { self.buf_len } else { len })
            }
        };
        PooledBuffer {
            vec,
            units,
            buf_len: self.buf_len,
            shared: self.shared.clone(),
        }
    }

    /// How many buffers were allocated so far (full ones never more than
    /// the pool size).
    pub fn allocations(&self) -> u64 {
        self.shared.allocations.load(Ordering::Relaxed)
    }
}

/// A buffer taken from the pool; goes back when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    vec: Vec<u8>,
    /// Units of the pool's bound it holds.
    units: usize,
    /// The pool's full buffer size: only full buffers are kept for reuse.
    buf_len: usize,
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
        if self.units == UNITS && vec.capacity() >= self.buf_len {
            self.shared
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(vec);
        }
        self.shared.available.add_permits(self.units);
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
        let mut a = rt.block_on(src.acquire(1024));
        a.vec_mut().extend_from_slice(&[1; 1000]);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let slice = bytes.slice(10..20);
        assert_eq!(slice.as_ptr(), ptr.wrapping_add(10), "slices share memory");
        let b = rt.block_on(src.acquire(1024));
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
        let again = rt.block_on(src.acquire(1024));
        assert_eq!(again.as_ref().as_ptr(), ptr, "the same memory is reused");
        assert_eq!(src.allocations(), 2, "never more than the pool size");
    }

    #[test]
    fn short_blocks_take_what_their_length_needs_and_the_bound_holds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Two buffers of 64 KiB: 128 units of 1 KiB.
        let mut src = BufferPool::split(2, 64 << 10);
        let full = rt.block_on(src.acquire(64 << 10));
        let mut small = Vec::new();
        for _ in 0..6 {
            // 10 000 bytes: ten units, a buffer of its own size.
            let b = rt.block_on(src.acquire(10_000));
            assert!(b.vec.capacity() >= 10_000 && b.vec.capacity() < 64 << 10);
            small.push(b);
        }
        assert_eq!(src.shared.available.available_permits(), 4);
        // A full buffer must wait for its 64 units.
        let waiting = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(20), src.acquire(64 << 10))
                .await
                .is_err()
        });
        assert!(waiting, "no room for a full buffer beside six short ones");
        drop(small);
        assert_eq!(src.shared.available.available_permits(), 64);
        assert!(
            src.shared.free.lock().unwrap().is_empty(),
            "short buffers are not kept"
        );
        // A returned full buffer is kept while its units are free, and let
        // go once short blocks take them.
        drop(full);
        assert_eq!(src.shared.free.lock().unwrap().len(), 1);
        let held: Vec<_> = (0..7).map(|_| rt.block_on(src.acquire(10_000))).collect();
        assert_eq!(src.shared.available.available_permits(), 58);
        assert!(
            src.shared.free.lock().unwrap().is_empty(),
            "the free buffer's memory now belongs to the short blocks"
        );
        drop(held);
        assert_eq!(src.shared.available.available_permits(), 128);
    }
}
