//! Group `concurrent`: hit throughput with 1 and 2 reader threads while another thread puts.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytecode_pack::{Key, NewEntry};
use criterion::{BenchmarkId, Criterion, Throughput};

use crate::fixtures::{Sized, content_key, filled_cache};

/// 6. Hit throughput with 1 and 2 reader threads while another thread puts.
pub fn bench(c: &mut Criterion, module: &Sized) {
    let mut group = c.benchmark_group("concurrent");
    let tmp = tempfile::tempdir().unwrap();
    let cache = filled_cache(&tmp.path().join("cache"), 1000, &module.bytecode);
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
