//! Groups `put` and `compact`: what a write costs as the cache grows, against the price of
//! the per-file design's write and LMDB's, and compaction throughput.

use std::fs;
use std::io::Write;

use bytecode_pack::{Input, Key, NewEntry};
use criterion::{BenchmarkId, Criterion, Throughput};
use xxhash_rust::xxh3::xxh3_128;

use crate::fixtures::{Sized, filled_cache, old_sources};

/// Group 5: `put` latency at 100, 10,000 and 100,000 entries; a per-file temp + write +
/// rename of the same bytes; LMDB's put without fsync; `put_many` of 1,000 entries with one
/// input each, against hashing those inputs and writing the bytes.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("put");
    for n in [100usize, 10_000, 100_000] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = filled_cache(&tmp.path().join("cache"), n, &module.bytecode);
        // 1,024 new keys in turn (so the cache holds n plus at most 1,024 entries): each put
        // adds or replaces an entry, and the delta's periodic merges into its base are part
        // of the average, as while a cache fills.
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("pack/1KB", n), |b| {
            b.iter(|| {
                i += 1;
                let key = Key::for_source("put.js", &(i % 1024).to_le_bytes());
                cache
                    .put(&key, &NewEntry::new("put.js", &module.bytecode))
                    .unwrap()
            })
        });
    }
    {
        // The per-file design's write: the bytes to a temp file, renamed into place.
        let tmp = tempfile::tempdir().unwrap();
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("per_file_temp_rename/1KB", 0), |b| {
            b.iter(|| {
                i += 1;
                let mut file = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
                file.write_all(&module.bytecode).unwrap();
                file.persist(tmp.path().join(format!("{:016x}.bin", i % 4096)))
                    .unwrap();
            })
        });
    }
    {
        let tmp = tempfile::tempdir().unwrap();
        let lmdb = crate::lmdb::Lmdb::open_no_sync(tmp.path());
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("lmdb_no_sync/1KB", 10_000), |b| {
            let keys: Vec<[u8; 16]> = (0..10_000u64)
                .map(|k| xxh3_128(&k.to_le_bytes()).to_le_bytes())
                .collect();
            lmdb.put_all(keys.iter().map(|k| (&k[..], &module.bytecode[..])));
            b.iter(|| {
                i += 1;
                let key = xxh3_128(&(i + 1_000_000).to_le_bytes()).to_le_bytes();
                lmdb.put_all([(&key[..], &module.bytecode[..])]);
            })
        });
    }
    {
        // 1,000 modules with one input each, into an empty cache: what a first start's one
        // batch of compiled modules costs to store.
        let tmp = tempfile::tempdir().unwrap();
        let sources = old_sources(tmp.path(), "m", 1000, 20);
        group.bench_function(BenchmarkId::new("pack_put_many/1000x1KB", 1000), |b| {
            b.iter_batched(
                || tempfile::tempdir_in(tmp.path()).unwrap(),
                |root| {
                    let cache = bytecode_pack::Cache::open(root.path().join("cache")).unwrap();
                    let entries: Vec<NewEntry> = sources
                        .iter()
                        .map(|p| {
                            NewEntry::new("m.js", &module.bytecode).inputs(vec![Input::path(p)])
                        })
                        .collect();
                    cache
                        .put_many(
                            entries.iter().enumerate().map(|(j, e)| {
                                (Key::for_source("many", &(j as u64).to_le_bytes()), e)
                            }),
                        )
                        .unwrap();
                    root
                },
                criterion::BatchSize::PerIteration,
            )
        });
        let out = tmp.path().join("bytes.bin");
        group.bench_function(
            BenchmarkId::new("hash_inputs_write_bytes/1000x1KB", 1000),
            |b| {
                b.iter(|| {
                    let mut file = fs::File::create(&out).unwrap();
                    let mut digest = 0u128;
                    for p in &sources {
                        digest ^= xxh3_128(&fs::read(p).unwrap());
                        file.write_all(&module.bytecode).unwrap();
                    }
                    digest
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("compact");
    group.sample_size(10);
    let tmp = tempfile::tempdir().unwrap();
    let cache = filled_cache(&tmp.path().join("cache"), 10_000, &module.bytecode);
    let live = cache.stats().unwrap().live_bytes;
    group.throughput(Throughput::Bytes(live));
    group.bench_function(BenchmarkId::new("pack", "10000x1KB"), |b| {
        b.iter(|| cache.compact().unwrap())
    });
    group.finish();
}
