//! Reed-Solomon cost at the FEC plane's geometry: encoding every recovery
//! shard of a block, and rebuilding a block with 5 % and 20 % of its source
//! shards missing (replaced by recovery shards). Throughput is block bytes
//! per second, to set against the link rate (200 Mbit/s = 25 MB/s).
//! The `-light-loss` cases take the recovery count a sender that measured
//! 5 % loss gives a 1 MiB block (`fec::codec::recovery_for`: 256 of 755)
//! instead of the most (`r = k`).
//!
//! `cargo bench -p chunkstream-engine --bench fec`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use chunkstream_engine::fec::codec::{Geometry, encode_recovery, reconstruct};

/// Shard payload at a 1452-byte pinned MTU (see `transport::Tuning`).
const SHARD: usize = 1390;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec");
    g.sample_size(20);
    let cases = [
        (64usize << 10, ""),
        (256 << 10, ""),
        (1 << 20, ""),
        (1 << 20, "-light-loss"),
    ];
    for (block, sizing) in cases {
        let geo = match sizing {
            "" => Geometry::new(block, SHARD).unwrap(),
            _ => Geometry::sized_for(block, SHARD, 0.21).unwrap(),
        };
        let data: Vec<u8> = (0..block).map(|i| (i * 7 % 251) as u8).collect();
        g.throughput(Throughput::Bytes(block as u64));
        g.bench_with_input(
            BenchmarkId::new(format!("encode{sizing}"), block >> 10),
            &data,
            |b, d| b.iter(|| encode_recovery(&geo, d).unwrap()),
        );
        let rec = encode_recovery(&geo, &data).unwrap();
        let all: Vec<Option<Vec<u8>>> = (0..geo.k)
            .map(|i| Some(geo.source_shard(&data, i).into_owned()))
            .chain(rec.chunks(SHARD).map(|c| Some(c.to_vec())))
            .collect();
        for missing_pct in [5usize, 20] {
            let missing = (geo.k * missing_pct).div_ceil(100);
            let mut shards = all.clone();
            // Every 100/pct-th source shard is gone; recovery shards fill in.
            let step = (geo.k / missing).max(1);
            for i in (0..geo.k).step_by(step).take(missing) {
                shards[i] = None;
            }
            let mut out = Vec::with_capacity(block);
            g.bench_function(
                BenchmarkId::new(
                    format!("decode-{missing_pct}pct-missing{sizing}"),
                    block >> 10,
                ),
                |b| b.iter(|| reconstruct(&geo, &shards, &mut out).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
