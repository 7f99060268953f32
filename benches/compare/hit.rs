//! Group `hit`: a warm hit, against every baseline.

use std::fs;
use std::hint::black_box;

use bytecode_pack::{Cache, Input, Key, NewEntry};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use rquickjs::{Context, Module, Runtime};

use crate::fixtures::{Sized, old_file, settle};
use crate::lmdb::Lmdb;
use crate::per_file::{self, PerFileCache};

/// 1. A warm hit, against every baseline.
pub fn bench(c: &mut Criterion, sizes: &[Sized]) {
    let mut group = c.benchmark_group("hit");
    for s in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let entry_file = dir.join("entry.js");
        old_file(&entry_file, s.source.as_bytes());
        let bytecode_file = dir.join("bytecode.bin");
        fs::write(&bytecode_file, &s.bytecode).unwrap();
        settle();

        let cache = Cache::open(dir.join("pack")).unwrap();
        let ck = Key::for_source("entry.js", s.source.as_bytes());
        let pk = Key::for_paths(&[&entry_file]);
        cache
            .put(&ck, &NewEntry::new("entry.js", &s.bytecode))
            .unwrap();
        cache
            .put(
                &pk,
                &NewEntry::new("entry.js", &s.bytecode).inputs(vec![Input::path(&entry_file)]),
            )
            .unwrap();
        let per_file = PerFileCache::new(&dir.join("per-file"));
        let pf_key = per_file::key_for(&[&entry_file]);
        per_file.put(
            pf_key,
            "entry.js",
            &s.bytecode,
            std::slice::from_ref(&entry_file),
        );
        let lmdb = Lmdb::open(&dir.join("lmdb"));
        lmdb.put_all([(&ck.as_bytes()[..], &s.bytecode[..])]);
        assert!(cache.get(&ck).is_some() && cache.get(&pk).is_some());
        assert!(per_file.get(pf_key).is_some() && lmdb.get_len(ck.as_bytes()).is_some());

        group.throughput(Throughput::Bytes(s.bytecode.len() as u64));
        group.bench_function(BenchmarkId::new("pack/content-key", s.label), |b| {
            b.iter(|| cache.get(black_box(&ck)).map(|h| h.bytecode().len()))
        });
        group.bench_function(BenchmarkId::new("pack/path-key-1-input", s.label), |b| {
            b.iter(|| cache.get(black_box(&pk)).map(|h| h.bytecode().len()))
        });
        group.bench_function(BenchmarkId::new("fs-floor/read-file", s.label), |b| {
            b.iter(|| fs::read(black_box(&bytecode_file)).unwrap().len())
        });
        group.bench_function(BenchmarkId::new("per-file/1-input", s.label), |b| {
            b.iter(|| per_file.get(black_box(pf_key)).map(|v| v.len()))
        });
        group.bench_function(BenchmarkId::new("lmdb/get", s.label), |b| {
            b.iter(|| lmdb.get_len(black_box(ck.as_bytes())))
        });
        group.bench_function(BenchmarkId::new("compile-from-source", s.label), |b| {
            b.iter_batched(
                || {
                    let runtime = Runtime::new().unwrap();
                    let context = Context::full(&runtime).unwrap();
                    (runtime, context)
                },
                |(runtime, context)| {
                    context.with(|ctx| {
                        let m = Module::declare(ctx.clone(), "m.js", s.source.as_str()).unwrap();
                        black_box(m.write(Default::default()).unwrap().len());
                    });
                    (runtime, context)
                },
                BatchSize::PerIteration,
            )
        });
        lmdb.close();
    }
    group.finish();
}
