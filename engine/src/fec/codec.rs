//! Reed-Solomon coding of one block: geometry, encoding, reconstruction.
//!
//! A block of `len` bytes is cut into `k = ceil(len / shard_bytes)` source
//! shards of `len / k` bytes each, rounded up to an even number (the last
//! zero-padded to that), where `shard_bytes` is the session's largest
//! shard: a 10 kB block over a 1 398-byte session is 8 shards of 1 250
//! bytes, not 8 of 1 398 with the last one 85 % padding, and a 1 kB block
//! one shard of 1 000 bytes, not 6 502 over loopback (protocol version 6;
//! 20 000 files of 1 kB put 133 MB on the wire before). And `r` recovery
//! shards, computed by [`encode_recovery`] (reed-solomon-simd; its recovery
//! shards depend on both `k` and `r`, so `r` is fixed per block before any
//! shard leaves, and every shard's header carries it). The sender sends all
//! sources, some recovery shards up front, and fresh ones (never a repeat)
//! when the receiver reports a deficit; a block that used all `r` gets its
//! sources again.
//!
//! How many: [`recovery_for`] takes what the measured loss needs with a
//! wide margin, then every recovery shard the coder's working size holds
//! anyway. reed-solomon-simd works on `k` plus `r` rounded up to a power of
//! two, itself rounded up to a power of two; at `r = k` a 1 MiB block of
//! 735 shards works on 2 048, at `r ≤ 256` on 1 024, which decodes in 1.9
//! instead of 3.3 ms and encodes in 0.5 instead of 0.9 (`results/fec-codec.md`).
//! Decoding was a quarter of the receiver's CPU on three lossy veth paths.
//! At most `r = max(k, 4)`: a block survives half its shards lost before
//! the sender runs out of fresh ones.
//!
//! [`reconstruct`] takes any `k` distinct shards and returns the block: a
//! plain copy when every source shard is there, a decode otherwise.

use std::cell::RefCell;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most source shards per block (reed-solomon-simd supports up to 32768
/// originals with as many recovery shards; we stay well inside).
pub const MAX_SOURCE_SHARDS: usize = 16_384;

/// The shard layout of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Block length in bytes.
    pub len: usize,
    /// Payload bytes per shard (even, non-zero).
    pub shard_bytes: usize,
    /// Source shards.
    pub k: usize,
    /// Recovery shards available.
    pub r: usize,
}

/// Why a geometry or a shard set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shard size odd or zero.
    #[error("shard size {0} must be even and non-zero")]
    BadShardSize(usize),
    /// More source shards than supported.
    #[error(
        "a block of {len} bytes needs {k} shards of {shard_bytes} bytes, more than {MAX_SOURCE_SHARDS}"
    )]
    TooManyShards {
        /// Block length.
        len: usize,
        /// Shard size.
        shard_bytes: usize,
        /// Shards needed.
        k: usize,
    },
    /// A recovery count outside 1 to `max(k, 4)`.
    #[error("{r} recovery shards for a block of {k} (at most max(k, 4))")]
    BadRecovery {
        /// Recovery shards asked for.
        r: usize,
        /// Source shards.
        k: usize,
    },
    /// Reconstruction was given fewer than `k` distinct shards.
    #[error("{have} of {k} shards")]
    NotEnough {
        /// Distinct shards given.
        have: usize,
        /// Needed.
        k: usize,
    },
    /// The codec library refused.
    #[error("reed-solomon: {0}")]
    Rs(String),
}

impl Geometry {
    /// The layout of a `len`-byte block (empty blocks do not exist: files of
    /// size 0 have no blocks).
    pub fn new(len: usize, shard_bytes: usize) -> Result<Self, CodecError> {
        if shard_bytes == 0 || shard_bytes % 2 == 1 {
            return Err(CodecError::BadShardSize(shard_bytes));
        }
        let k = len.div_ceil(shard_bytes).max(1);
        if k > MAX_SOURCE_SHARDS {
            return Err(CodecError::TooManyShards {
                len,
                shard_bytes,
                k,
            });
        }
        // The block spread evenly over its `k` shards: never larger than
        // the session's (both even, and `len / k` at most that), and no
        // more shards than before.
        let even = len.div_ceil(k).next_multiple_of(2).max(2);
        let k = len.div_ceil(even).max(1);
        Ok(Self {
            len,
            shard_bytes: even,
            k,
            r: k.max(4),
        })
    }

    /// The same layout with `r` recovery shards (1 to `max(k, 4)`).
    pub fn with_recovery(self, r: usize) -> Result<Self, CodecError> {
        if r == 0 || r > self.k.max(4) {
            return Err(CodecError::BadRecovery { r, k: self.k });
        }
        Ok(Self { r, ..self })
    }

    /// The layout of a `len`-byte block with the recovery shards
    /// [`recovery_for`] gives for `share`.
    pub fn sized_for(len: usize, shard_bytes: usize, share: f64) -> Result<Self, CodecError> {
        let g = Self::new(len, shard_bytes)?;
        g.with_recovery(recovery_for(g.k, share))
    }

    /// All shards, source and recovery.
    pub fn total(&self) -> usize {
        self.k + self.r
    }

    /// Source shard `i` of `data` (padded with zeros if it is the last).
    pub fn source_shard<'a>(&self, data: &'a [u8], i: usize) -> std::borrow::Cow<'a, [u8]> {
        let start = (i * self.shard_bytes).min(data.len());
        let end = ((i + 1) * self.shard_bytes).min(data.len());
        let s = &data[start..end];
        if s.len() == self.shard_bytes {
            std::borrow::Cow::Borrowed(s)
        } else {
            let mut v = s.to_vec();
            v.resize(self.shard_bytes, 0);
            std::borrow::Cow::Owned(v)
        }
    }
}

/// Recovery shards for a block of `k` sources that may need `share × k`
/// of them (see the module doc): at least that plus four, then all that
/// fit the coder's working size, at most `max(k, 4)`.
pub fn recovery_for(k: usize, share: f64) -> usize {
    let most = k.max(4);
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let need = ((k as f64 * share).ceil() as usize + 4).min(most);
    let work = (k + need.next_power_of_two()).next_power_of_two();
    // The largest power of two that fits beside the sources.
    let free = 1usize << (usize::BITS - 1 - (work - k).leading_zeros());
    free.max(need).min(most)
}

fn rs(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::Rs(e.to_string())
}

/// The most working space (bytes of `k + r` shards) a thread keeps between
/// blocks: a 1 MiB block at the default shard size needs ~2 MB.
const KEEP_WORKSPACE: usize = 8 << 20;

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's coder of kind `C`, reset to `g`. A coder's
/// working space (`k + r` shards, rounded up to a power of two) was
/// allocated and zeroed afresh for every block; a thread now keeps it for
/// the next block when it is not larger than [`KEEP_WORKSPACE`].
fn with_coder<C, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<C>>>,
    g: &Geometry,
    make: impl Fn(&Geometry) -> Result<C, reed_solomon_simd::Error>,
    reset: impl Fn(&mut C, &Geometry) -> Result<(), reed_solomon_simd::Error>,
    f: impl FnOnce(&mut C) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    let kept = slot.with(|s| s.borrow_mut().take());
    let mut coder = match kept {
        Some(mut c) => {
            reset(&mut c, g).map_err(rs)?;
            c
        }
        None => make(g).map_err(rs)?,
    };
    let out = f(&mut coder);
    if g.total() * g.shard_bytes <= KEEP_WORKSPACE {
        slot.with(|s| *s.borrow_mut() = Some(coder));
    }
    out
}

/// Computes the block's `r` recovery shards, concatenated.
pub fn encode_recovery(g: &Geometry, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    with_coder(
        &ENCODER,
        g,
        |g| ReedSolomonEncoder::new(g.k, g.r, g.shard_bytes),
        |c, g| c.reset(g.k, g.r, g.shard_bytes),
        |enc| encode_with(enc, g, data),
    )
}

fn encode_with(
    enc: &mut ReedSolomonEncoder,
    g: &Geometry,
    data: &[u8],
) -> Result<Vec<u8>, CodecError> {
    for i in 0..g.k {
        enc.add_original_shard(g.source_shard(data, i))
            .map_err(rs)?;
    }
    let result = enc.encode().map_err(rs)?;
    let mut out = Vec::with_capacity(g.r * g.shard_bytes);
    for shard in result.recovery_iter() {
        out.extend_from_slice(shard);
    }
    Ok(out)
}

/// Rebuilds the block from shards: `shards[i]` is shard `i` in the wire's
/// numbering (`i < k` source, else recovery `i - k`), present or not.
/// Uses every source shard present and just enough recovery shards.
pub fn reconstruct<S: AsRef<[u8]>>(
    g: &Geometry,
    shards: &[Option<S>],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let sources = shards.iter().take(g.k).filter(|s| s.is_some()).count();
    out.clear();
    if sources == g.k {
        for s in shards.iter().take(g.k).flatten() {
            out.extend_from_slice(s.as_ref());
        }
        out.truncate(g.len);
        return Ok(());
    }
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < g.k {
        return Err(CodecError::NotEnough { have, k: g.k });
    }
    with_coder(
        &DECODER,
        g,
        |g| ReedSolomonDecoder::new(g.k, g.r, g.shard_bytes),
        |c, g| c.reset(g.k, g.r, g.shard_bytes),
        |dec| decode_with(dec, g, shards, sources, out),
    )
}

fn decode_with<S: AsRef<[u8]>>(
    dec: &mut ReedSolomonDecoder,
    g: &Geometry,
    shards: &[Option<S>],
    sources: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    for (i, s) in shards.iter().enumerate().take(g.k) {
        if let Some(s) = s {
            dec.add_original_shard(i, s.as_ref()).map_err(rs)?;
        }
    }
    let mut wanted = g.k - sources;
    for (j, s) in shards.iter().enumerate().skip(g.k).take(g.r) {
        if wanted == 0 {
            break;
        }
        if let Some(s) = s {
            dec.add_recovery_shard(j - g.k, s.as_ref()).map_err(rs)?;
            wanted -= 1;
        }
    }
    let restored = dec.decode().map_err(rs)?;
    for (i, s) in shards.iter().enumerate().take(g.k) {
        match s {
            Some(s) => out.extend_from_slice(s.as_ref()),
            None => out.extend_from_slice(
                restored
                    .restored_original(i)
                    .ok_or_else(|| CodecError::Rs(format!("source shard {i} not restored")))?,
            ),
        }
    }
    out.truncate(g.len);
    Ok(())
}

/// Builds reed-solomon-simd's global tables (8 MiB of them, built on first
/// use: the first block took 17 ms to encode on this machine, the next
/// ones 2) by coding and decoding a tiny block. A FEC sender starts this on
/// a Rayon worker before it dials, so the tables are ready by the time the
/// handshake's round trip is over; a receiver starts it when it listens.
/// Returns whether the round trip came back whole (it always should).
pub fn warm_up() -> bool {
    let Ok(g) = Geometry::new(128, 64).and_then(|g| g.with_recovery(2)) else {
        return false;
    };
    let data: Vec<u8> = (0..g.len).map(|i| i as u8).collect();
    let Ok(recovery) = encode_recovery(&g, &data) else {
        return false;
    };
    // Source shard 0 lost: the decode path's tables too.
    let shards = [
        None,
        Some(&data[64..]),
        Some(&recovery[..64]),
        Some(&recovery[64..]),
    ];
    let mut out = Vec::new();
    reconstruct(&g, &shards, &mut out).is_ok() && out == data
}

/// [`warm_up`] on a Rayon worker, returning at once.
pub fn warm_up_in_background() {
    #[allow(clippy::disallowed_methods)] // a log line's timing, not a core's clock
    let started = std::time::Instant::now();
    rayon::spawn(move || {
        let ok = warm_up();
        tracing::debug!(
            ok,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "coder warmed up"
        );
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn warming_up_codes_and_decodes_a_block() {
        assert!(super::warm_up());
    }

    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn all_shards(g: &Geometry, d: &[u8]) -> Vec<Option<Vec<u8>>> {
        let rec = encode_recovery(g, d).unwrap();
        (0..g.k)
            .map(|i| Some(g.source_shard(d, i).into_owned()))
            .chain(rec.chunks(g.shard_bytes).map(|c| Some(c.to_vec())))
            .collect()
    }

    #[test]
    fn geometry_follows_the_rule() {
        let g = Geometry::new(1 << 20, 1400).unwrap();
        assert_eq!((g.k, g.r), (749, 749));
        let g = Geometry::new(10, 1400).unwrap();
        assert_eq!((g.k, g.r), (1, 4));
        assert_eq!(Geometry::new(10, 7), Err(CodecError::BadShardSize(7)));
        assert!(matches!(
            Geometry::new(64 << 20, 1000),
            Err(CodecError::TooManyShards { .. })
        ));
    }

    #[test]
    fn recovery_fills_the_coders_working_size() {
        // A 1 MiB block of 1398-byte shards: 751 sources. Light loss takes
        // the 256 that fit beside them in 1 024; heavy loss all 751.
        assert_eq!(recovery_for(751, 0.0), 256);
        assert_eq!(recovery_for(751, 0.2), 256);
        assert_eq!(recovery_for(751, 0.4), 751);
        assert_eq!(recovery_for(751, f64::NAN), 751);
        // 1 000 sources leave 24 in 1 024: the next size holds 1 000 more.
        assert_eq!(recovery_for(1_000, 0.0), 16);
        assert_eq!(recovery_for(1_000, 0.05), 1_000);
        // Small blocks keep at least four.
        assert_eq!(recovery_for(1, 0.0), 4);
        assert_eq!(recovery_for(3, 0.5), 4);
        for k in 1..3_000 {
            for share in [0.0, 0.01, 0.1, 0.3, 0.6, 1.0] {
                let r = recovery_for(k, share);
                assert!(r >= 1 && r <= k.max(4), "k {k}: r {r}");
                let need = ((k as f64 * share).ceil() as usize + 4).min(k.max(4));
                assert!(r >= need, "k {k} share {share}: r {r} < {need}");
            }
        }
        let g = Geometry::new(1 << 20, 1398).unwrap();
        assert_eq!(
            g.with_recovery(0),
            Err(CodecError::BadRecovery { r: 0, k: 751 })
        );
        assert!(g.with_recovery(752).is_err());
        assert_eq!(Geometry::sized_for(1 << 20, 1398, 0.05).unwrap().r, 256);
    }

    #[test]
    fn too_few_shards_is_an_error_not_a_panic() {
        let g = Geometry::new(5000, 1000).unwrap();
        let mut s = all_shards(&g, &data(5000, 1));
        for x in s.iter_mut().skip(1) {
            *x = None;
        }
        let mut out = Vec::new();
        assert_eq!(
            reconstruct(&g, &s, &mut out),
            Err(CodecError::NotEnough { have: 1, k: 5 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any k of the k + r shards rebuild the block exactly, whatever r.
        #[test]
        fn any_k_shards_rebuild_the_block(
            len in 1usize..40_000,
            shard_half in 8usize..700,
            seed: u8,
            pick_seed: u64,
            share in 0.0f64..1.0,
        ) {
            let g = Geometry::sized_for(len, shard_half * 2, share).unwrap();
            let d = data(len, seed);
            let mut s = all_shards(&g, &d);
            // Drop a random set of r shards: exactly k remain.
            let mut order: Vec<usize> = (0..g.total()).collect();
            let mut x = pick_seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &i in order.iter().take(g.r) {
                s[i] = None;
            }
            let mut out = Vec::new();
            reconstruct(&g, &s, &mut out).unwrap();
            prop_assert_eq!(out, d);
        }
    }
}
