//! Reader backends: io_uring (tokio-uring, QUEUE_DEPTH reads in flight)
//! against pread, reading a 256 MiB file that sits in the page cache, with
//! the blocks dropped on arrival (their buffers go straight back to the
//! pool). Also the reader feeding the Rayon hashing stage, which is what a
//! sender really runs.
//!
//! `cargo bench -p chunkstream-engine --bench reader`

use std::sync::Arc;

use chunkstream_engine::manifest::{Manifest, collect_sources};
use chunkstream_engine::source::{BufferPool, ReaderKind, spawn_reader};
use chunkstream_engine::wire::ManifestEntry;
use chunkstream_engine::work::{Plane, start_pipeline};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FILE_LEN: u64 = 256 << 20;

fn fixture() -> (
    tempfile::TempDir,
    Vec<chunkstream_engine::manifest::SourceFile>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.bin");
    let mut data = vec![0u8; FILE_LEN as usize];
    blake3::Hasher::new().finalize_xof().fill(&mut data);
    std::fs::write(&path, &data).unwrap();
    let files = collect_sources(&[path]).unwrap();
    (dir, files)
}

fn manifest(files: &[chunkstream_engine::manifest::SourceFile], block: u64) -> Manifest {
    let entries = files
        .iter()
        .map(|f| ManifestEntry {
            name: f.name.clone(),
            size: f.size,
        })
        .collect();
    Manifest::new(block, entries).unwrap()
}

fn readers(c: &mut Criterion) {
    let (_dir, files) = fixture();
    let mut group = c.benchmark_group("read 256 MiB from page cache");
    group.throughput(Throughput::Bytes(FILE_LEN));
    group.sample_size(10);
    for block in [64 << 10, 1 << 20] {
        for kind in [ReaderKind::Uring, ReaderKind::Pread] {
            group.bench_function(format!("{kind}, {} KiB blocks", block >> 10), |b| {
                b.iter(|| {
                    let pool = BufferPool::split(64, block as usize);
                    let emit = Arc::new(|r: Result<_, _>| {
                        r.unwrap();
                        true
                    });
                    let (used, thread) = spawn_reader(
                        kind,
                        files.clone(),
                        manifest(&files, block),
                        None,
                        pool,
                        emit,
                    )
                    .unwrap();
                    assert_eq!(used, kind);
                    thread.join().unwrap();
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("read + BLAKE3 on Rayon, 256 MiB");
    group.throughput(Throughput::Bytes(FILE_LEN));
    group.sample_size(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for kind in [ReaderKind::Uring, ReaderKind::Pread] {
        group.bench_function(format!("{kind}, 1 MiB blocks"), |b| {
            b.iter(|| {
                let m = manifest(&files, 1 << 20);
                let mut p =
                    start_pipeline(kind, files.clone(), m, Plane::Reliable, 64 << 20).unwrap();
                for _ in 0..(FILE_LEN >> 20) {
                    rt.block_on(p.blocks.recv()).unwrap().unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, readers);
criterion_main!(benches);
