//! Group `process`: whole processes that load K modules, pack vs per-file. The benchmark
//! binary re-invokes itself as the child, with [`CHILD`] set.

use std::path::Path;
use std::process::Command;

use bytecode_pack::{Cache, Input, Key, NewEntry};
use criterion::{BenchmarkId, Criterion};

use crate::fixtures::{Sized, old_sources};
use crate::per_file::{self, PerFileCache};

/// Set in a child process spawned by the `process` group: `<design>:<k>:<dir>`.
pub const CHILD: &str = "BP_BENCH_CHILD";

/// 3b. Whole processes that load K modules (path-keyed, one input each), pack vs per-file.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("process");
    group.sample_size(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // The child finds them by these names.
    let sources = old_sources(&dir, "m", 50, 4);
    let cache = Cache::open(dir.join("pack")).unwrap();
    let per_file = PerFileCache::new(&dir.join("per-file"));
    for p in &sources {
        let entry = NewEntry::new("m.js", &module.bytecode).inputs(vec![Input::path(p)]);
        cache.put(&Key::for_paths(&[p]), &entry).unwrap();
        per_file.put(
            per_file::key_for(&[p]),
            "m.js",
            &module.bytecode,
            std::slice::from_ref(p),
        );
    }
    let exe = std::env::current_exe().unwrap();
    for k in [1usize, 50] {
        for design in ["pack", "per-file"] {
            let job = format!("{design}:{k}:{}", dir.display());
            assert!(
                Command::new(&exe)
                    .env(CHILD, &job)
                    .status()
                    .unwrap()
                    .success()
            );
            group.bench_function(BenchmarkId::new(design, k), |b| {
                b.iter(|| Command::new(&exe).env(CHILD, &job).status().unwrap())
            });
        }
    }
    group.finish();
}

/// The child side of [`bench`]: open, load K modules by path, exit.
pub fn child(job: &str) {
    let mut parts = job.splitn(3, ':');
    let (design, k, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let k: usize = k.parse().unwrap();
    let dir = Path::new(dir);
    let mut loaded = 0;
    match design {
        "pack" => {
            let cache = Cache::open(dir.join("pack")).unwrap();
            for i in 0..k {
                let p = dir.join(format!("m{i}.js"));
                loaded += usize::from(cache.get(&Key::for_paths(&[&p])).is_some());
            }
        }
        _ => {
            let per_file = PerFileCache::new(&dir.join("per-file"));
            for i in 0..k {
                let p = dir.join(format!("m{i}.js"));
                loaded += usize::from(per_file.get(per_file::key_for(&[&p])).is_some());
            }
        }
    }
    assert_eq!(loaded, k, "{design}: every module must hit");
}
