//! BLAKE3 per block (the Rayon job's work) and the cost of merging block
//! digests into the file hash.
//!
//! `cargo bench -p chunkstream-engine --bench hashing`

use chunkstream_engine::hash::{block_digest, file_hash};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("block_digest (one thread)");
    for block in [64usize << 10, 1 << 20, 4 << 20] {
        let mut data = vec![0u8; block];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        group.throughput(Throughput::Bytes(block as u64));
        // A block in the middle of a large file: the chaining-value path.
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{} KiB", block >> 10)),
            &data,
            |b, d| b.iter(|| block_digest(d, 16 * block as u64, u64::MAX / 2)),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("file_hash merge");
    for blocks in [1024u64, 16384] {
        let digests = vec![[7u8; 32]; blocks as usize];
        group.throughput(Throughput::Elements(blocks));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{blocks} blocks")),
            &digests,
            |b, d| b.iter(|| file_hash(d, blocks << 20, 1 << 20)),
        );
    }
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
