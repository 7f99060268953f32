//! Group `quickjs`: load from the cache + evaluate vs compile + evaluate, in a fresh context
//! each time.

use bytecode_pack::quickjs::{self, CompileOptions};
use bytecode_pack::{Cache, Key};
use criterion::{BatchSize, BenchmarkId, Criterion};
use rquickjs::{Context, Module, Runtime};

use crate::fixtures::Sized;

/// 7. Load from the cache + evaluate vs compile + evaluate, in a fresh context each time.
pub fn bench(c: &mut Criterion, sizes: &[Sized]) {
    let mut group = c.benchmark_group("quickjs");
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::open(tmp.path().join("cache")).unwrap();
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
