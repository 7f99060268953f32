//! Group `scale`: hit latency as the index grows.

use std::hint::black_box;

use bytecode_pack::Key;
use criterion::{BenchmarkId, Criterion};

use crate::fixtures::{content_key, filled_cache};

/// 4. Hit latency as the index grows.
pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    let bytecode = vec![7u8; 64];
    for n in [100usize, 10_000, 100_000] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = filled_cache(&tmp.path().join("cache"), n, &bytecode);
        // Spread lookups over the index so they do not all hit one hot cache line.
        let probes: Vec<Key> = (0..1024).map(|i| content_key(i * 7919 % n)).collect();
        for k in &probes {
            assert!(cache.get(k).is_some());
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("pack/content-key", n), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                cache.get(black_box(&probes[i])).map(|h| h.bytecode().len())
            })
        });
    }
    group.finish();
}
