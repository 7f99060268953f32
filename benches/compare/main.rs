//! `cargo bench`: bytecode-pack side by side with the per-file design it replaces, the
//! filesystem floor (open + read + close), LMDB (heed) and compiling from source, in one run.
//! Results and the machine are in BENCHMARKS.md; HTML reports land in `target/criterion`.
//!
//! Keys are computed once, outside the timed loops, for every design alike: what is timed is
//! a load by a known key.
//!
//! Filter groups as usual: `cargo bench -- hit`, `cargo bench -- quickjs`.

mod lmdb;
mod per_file;

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytecode_pack::quickjs::{self, CompileOptions};
use bytecode_pack::{Cache, Input, Key, NewEntry};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use rquickjs::{Context, Module, Runtime};

use lmdb::Lmdb;
use per_file::PerFileCache;

/// Set in a child process spawned by the `process` group: `<design>:<k>:<dir>`.
const CHILD: &str = "BP_BENCH_CHILD";

/// A JavaScript module of `functions` small exported functions.
fn js_module(functions: usize) -> String {
    (0..functions)
        .map(|i| {
            format!(
                "export function f{i}(x) {{\n  const a = [x, {i}].map((v) => v * 2 + 1);\n  \
                 return a.reduce((s, v) => s + (v % 3 === 0 ? v / 3 : v), 0);\n}}\n"
            )
        })
        .collect()
}

fn compile_js(source: &str, options: CompileOptions) -> Vec<u8> {
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let (_, bytecode) = quickjs::compile(&ctx, "m.js", source.as_bytes(), options).unwrap();
        bytecode.as_bytes().to_vec()
    })
}

/// A module whose default bytecode is at least `target` bytes, and that bytecode.
struct Sized {
    label: &'static str,
    source: String,
    bytecode: Vec<u8>,
}

fn sized_module(label: &'static str, target: usize) -> Sized {
    let mut functions = 1;
    loop {
        let source = js_module(functions);
        let bytecode = compile_js(&source, CompileOptions::default());
        if bytecode.len() >= target {
            return Sized {
                label,
                source,
                bytecode,
            };
        }
        functions = (functions * target / bytecode.len()).max(functions + 1);
    }
}

/// Writes a file and backdates it past the racy window: an unchanged source tree.
fn old_file(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Lets freshly written inputs age past the racy window, as a real tree's sources have by the
/// time they are compiled: otherwise every lookup re-hashes them (correct, but not the case
/// being measured).
fn settle() {
    std::thread::sleep(bytecode_pack::RACY_WINDOW + Duration::from_millis(100));
}

fn content_key(i: usize) -> Key {
    Key::for_source("bench.js", &(i as u64).to_le_bytes())
}

/// A cache under `dir` holding `n` content-keyed entries of `bytecode`, filled in one batch.
fn filled_cache(dir: &Path, n: usize, bytecode: &[u8]) -> Cache {
    let cache = Cache::builder(dir).max_bytes(u64::MAX).open().unwrap();
    let entry = NewEntry::new("bench.js", bytecode);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20_000) {
        cache
            .put_many(chunk.iter().map(|&i| (content_key(i), &entry)))
            .unwrap();
    }
    cache
}

fn main() {
    if let Ok(job) = std::env::var(CHILD) {
        process_child(&job);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let sizes = [sized_module("1KB", 1024), sized_module("200KB", 200 * 1024)];
    for s in &sizes {
        eprintln!(
            "{}: {} bytes of bytecode from {} bytes of source",
            s.label,
            s.bytecode.len(),
            s.source.len()
        );
    }
    bench_hit(&mut c, &sizes);
    bench_inputs(&mut c, &sizes[0]);
    bench_cold(&mut c, &sizes[0]);
    bench_process(&mut c, &sizes[0]);
    bench_scale(&mut c);
    bench_put_and_compact(&mut c, &sizes[0]);
    bench_concurrent(&mut c, &sizes[0]);
    bench_quickjs(&mut c, &sizes);
    c.final_summary();
}

/// 1. A warm hit, against every baseline.
fn bench_hit(c: &mut Criterion, sizes: &[Sized]) {
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

/// 2. Freshness validation cost by number of inputs.
fn bench_inputs(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("inputs");
    for n in [1usize, 10, 100, 1000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files: Vec<PathBuf> = (0..n)
            .map(|i| {
                let p = dir.join(format!("src{i}.js"));
                old_file(&p, js_module(8).as_bytes());
                p
            })
            .collect();
        settle();
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

/// 3. A new handle and its first hit.
fn bench_cold(c: &mut Criterion, module: &Sized) {
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

/// 3b. Whole processes that load K modules (path-keyed, one input each), pack vs per-file.
fn bench_process(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("process");
    group.sample_size(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let sources: Vec<PathBuf> = (0..50)
        .map(|i| {
            let p = dir.join(format!("m{i}.js"));
            old_file(&p, js_module(4).as_bytes());
            p
        })
        .collect();
    settle();
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

/// The child side of [`bench_process`]: open, load K modules by path, exit.
fn process_child(job: &str) {
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

/// 4. Hit latency as the index grows.
fn bench_scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    let bytecode = vec![7u8; 64];
    for n in [100usize, 10_000, 100_000] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = filled_cache(tmp.path(), n, &bytecode);
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

/// 5. `put` latency, and compaction throughput.
fn bench_put_and_compact(c: &mut Criterion, module: &Sized) {
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

/// 6. Hit throughput with 1 and 2 reader threads while another thread puts.
fn bench_concurrent(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("concurrent");
    let tmp = tempfile::tempdir().unwrap();
    let cache = filled_cache(tmp.path(), 1000, &module.bytecode);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cache, stop, bytecode) = (cache.clone(), Arc::clone(&stop), module.bytecode.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 10_000_000 {
                i += 1;
                let key = Key::for_source("writer.js", &(i % 256).to_le_bytes());
                cache
                    .put(&key, &NewEntry::new("writer.js", &bytecode))
                    .unwrap();
            }
        })
    };
    for readers in [1usize, 2] {
        group.throughput(Throughput::Elements(readers as u64));
        group.bench_function(BenchmarkId::new("pack/hits-while-writing", readers), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for r in 0..readers {
                        let cache = &cache;
                        s.spawn(move || {
                            for i in 0..iters as usize {
                                let key = content_key((i * 31 + r) % 1000);
                                black_box(cache.get(&key).map(|h| h.bytecode().len()));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    group.finish();
}

/// 7. Load from the cache + evaluate vs compile + evaluate, in a fresh context each time.
fn bench_quickjs(c: &mut Criterion, sizes: &[Sized]) {
    let mut group = c.benchmark_group("quickjs");
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::open(tmp.path()).unwrap();
    let fresh = || {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        (runtime, context)
    };
    for s in sizes {
        for (label, options) in [
            ("default", CompileOptions::default()),
            ("stripped", CompileOptions::STRIPPED),
        ] {
            let key = Key::for_source(label, s.source.as_bytes());
            let (runtime, context) = fresh();
            context.with(|ctx| {
                let (_, bytecode) =
                    quickjs::compile(&ctx, "m.js", s.source.as_bytes(), options).unwrap();
                eprintln!(
                    "{} {label}: {} bytes of bytecode",
                    s.label,
                    bytecode.as_bytes().len()
                );
                cache.put(&key, &bytecode.entry("m.js")).unwrap();
            });
            drop((context, runtime));
            let id = format!("{}/{label}", s.label);
            group.bench_function(BenchmarkId::new("compile+eval", &id), |b| {
                b.iter_batched(
                    fresh,
                    |(runtime, context)| {
                        context.with(|ctx| {
                            let m =
                                Module::declare(ctx.clone(), "m.js", s.source.as_str()).unwrap();
                            let (_, promise) = m.eval().unwrap();
                            promise.finish::<()>().unwrap();
                        });
                        (runtime, context)
                    },
                    BatchSize::PerIteration,
                )
            });
            group.bench_function(BenchmarkId::new("cache-load+eval", &id), |b| {
                b.iter_batched(
                    fresh,
                    |(runtime, context)| {
                        context.with(|ctx| {
                            let hit = cache.get(&key).unwrap();
                            let (_, promise) = quickjs::load(&ctx, &hit).unwrap().eval().unwrap();
                            promise.finish::<()>().unwrap();
                        });
                        (runtime, context)
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}
