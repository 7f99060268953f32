//! Group `cold`: a new handle and its first hit.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytecode_pack::{Cache, Key};
use criterion::{BenchmarkId, Criterion};

use crate::fixtures::{Sized, content_key, filled_cache};
use crate::lmdb::Lmdb;
use crate::per_file::PerFileCache;

/// 3. A new handle and its first hit.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("cold");
    for n in [100usize, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let root = dir.join("pack");
        drop(filled_cache(&root, n, &module.bytecode));
        let probe = content_key(n / 2);

        let per_file = PerFileCache::new(&dir.join("per-file"));
        for i in 0..n {
            per_file.put(i as u64, "bench.js", &module.bytecode, &[]);
        }
        let lmdb_dir = dir.join("lmdb");
        let lmdb = Lmdb::open(&lmdb_dir);
        let keys: Vec<Key> = (0..n).map(content_key).collect();
        lmdb.put_all(
            keys.iter()
                .map(|k| (&k.as_bytes()[..], &module.bytecode[..])),
        );
        lmdb.close();

        group.bench_function(BenchmarkId::new("pack/open+first-hit", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let cache = Cache::open(black_box(&root)).unwrap();
                    black_box(cache.get(&probe).map(|h| h.bytecode().len()));
                    total += start.elapsed();
                    drop(cache);
                }
                total
            })
        });
        group.bench_function(BenchmarkId::new("per-file/first-load", n), |b| {
            b.iter(|| per_file.get(black_box((n / 2) as u64)).map(|v| v.len()))
        });
        group.bench_function(BenchmarkId::new("lmdb/open+first-get", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let lmdb = Lmdb::open(black_box(&lmdb_dir));
                    black_box(lmdb.get_len(probe.as_bytes()));
                    total += start.elapsed();
                    lmdb.close();
                }
                total
            })
        });
    }
    group.finish();
}
