//! `cargo bench`: bytecode-pack side by side with the per-file design it replaces, the
//! filesystem floor (open + read + close), LMDB (heed) and compiling from source, in one run.
//! Results and the machine are in BENCHMARKS.md; HTML reports land in `target/criterion`.
//!
//! Keys are computed once, outside the timed loops, for every design alike: what is timed is
//! a load by a known key.
//!
//! Filter groups as usual: `cargo bench -- hit`, `cargo bench -- quickjs`.
//!
//! One file per group (`hit.rs`, `inputs.rs`, `cold.rs`, `process.rs`, `scale.rs`, `put.rs`,
//! `concurrent.rs`, `quickjs.rs`, `bundle.rs`); `fixtures.rs` has what they share, `per_file.rs` and
//! `lmdb.rs` the baselines.

mod bundle;
mod cold;
mod concurrent;
mod fixtures;
mod hit;
mod inputs;
mod lmdb;
mod per_file;
mod process;
mod put;
mod quickjs;
mod scale;
// Only its copy is used here.
#[allow(dead_code)]
#[path = "../../tests/common/tree.rs"]
mod tree;

use std::time::Duration;

use criterion::Criterion;

use fixtures::sized_module;

fn main() {
    if let Ok(job) = std::env::var(process::CHILD) {
        process::child(&job);
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
    hit::bench(&mut c, &sizes);
    inputs::bench(&mut c, &sizes[0]);
    cold::bench(&mut c, &sizes[0]);
    process::bench(&mut c, &sizes[0]);
    scale::bench(&mut c);
    put::bench(&mut c, &sizes[0]);
    concurrent::bench(&mut c, &sizes[0]);
    quickjs::bench(&mut c, &sizes);
    bundle::bench(&mut c);
    c.final_summary();
}
