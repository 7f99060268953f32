//! Group `inputs`: freshness validation cost by number of inputs.

use std::hint::black_box;

use bytecode_pack::{Cache, Input, Key, NewEntry};
use criterion::{BenchmarkId, Criterion};

use crate::fixtures::{Sized, old_sources};
use crate::per_file::{self, PerFileCache};

/// 2. Freshness validation cost by number of inputs.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("inputs");
    for n in [1usize, 10, 100, 1000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = old_sources(dir, "src", n, 8);
        let cache = Cache::open(dir.join("pack")).unwrap();
        let key = Key::for_paths(&files[..1]);
        let inputs = files.iter().map(Input::path).collect();
        cache
            .put(
                &key,
                &NewEntry::new("entry.js", &module.bytecode).inputs(inputs),
            )
            .unwrap();
        let per_file = PerFileCache::new(&dir.join("per-file"));
        let pf_key = per_file::key_for(&[&files[0]]);
        per_file.put(pf_key, "entry.js", &module.bytecode, &files);
        assert!(cache.get(&key).is_some() && per_file.get(pf_key).is_some());

        group.bench_function(BenchmarkId::new("pack", n), |b| {
            b.iter(|| cache.get(black_box(&key)).map(|h| h.bytecode().len()))
        });
        group.bench_function(BenchmarkId::new("per-file", n), |b| {
            b.iter(|| per_file.get(black_box(pf_key)).map(|v| v.len()))
        });
    }
    group.finish();
}
