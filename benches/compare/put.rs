//! Groups `put` and `compact`: `put` latency, and compaction throughput.

use bytecode_pack::{Key, NewEntry};
use criterion::{BenchmarkId, Criterion, Throughput};

use crate::fixtures::{Sized, filled_cache};

/// 5. `put` latency, and compaction throughput.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("put");
    for n in [100usize, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = filled_cache(tmp.path(), n, &module.bytecode);
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("pack/1KB", n), |b| {
            b.iter(|| {
                i += 1;
                let key = Key::for_source("put.js", &(i % 64).to_le_bytes());
                cache
                    .put(&key, &NewEntry::new("put.js", &module.bytecode))
                    .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("compact");
    group.sample_size(10);
    let tmp = tempfile::tempdir().unwrap();
    let cache = filled_cache(tmp.path(), 10_000, &module.bytecode);
    let live = cache.stats().unwrap().live_bytes;
    group.throughput(Throughput::Bytes(live));
    group.bench_function(BenchmarkId::new("pack", "10000x1KB"), |b| {
        b.iter(|| cache.compact().unwrap())
    });
    group.finish();
}
