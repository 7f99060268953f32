//! The main job, end to end. Run with `cargo run --release --example demo`.
//!
//! 1. A small project (an entry importing helpers) is run twice through `PackResolver` and
//!    `PackLoader`, each time in a fresh runtime with a fresh cache handle, as a new process
//!    would: the first run compiles (and stores the modules in one batch when the runtime is
//!    dropped), the second resolves and loads from the pack. Then a helper is edited and only
//!    it is recompiled.
//! 2. The store on its own: lookups, a stale input, compaction, stats.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytecode_pack::quickjs::{PackLoader, PackResolver, process_counters};
use bytecode_pack::{Cache, Input, Key, NewEntry};
use rquickjs::loader::FileResolver;
use rquickjs::{Context, Module, Object, Runtime};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A helper module with `n` exported functions: enough code that compiling it costs something.
fn helper_source(name: &str, n: usize, bias: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "export function {name}{i}(x) {{\n  const t = [x, {i}, {bias}].map((v) => v * 3 + 1);\n  \
             let acc = 0;\n  for (const v of t) {{ acc += v % 7 === 0 ? v / 7 : v; }}\n  \
             return acc + '{name}'.length;\n}}\n"
        ));
    }
    s
}

fn write_project(dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir.join("lib"))?;
    std::fs::write(
        dir.join("main.js"),
        "import { math0, math199 } from './lib/math.js';\n\
         import { text0 } from './lib/text.js';\n\
         import { util5 } from './lib/util.js';\n\
         export const result = math0(1) + math199(2) + text0(3) + util5(4);\n",
    )?;
    for (name, bias) in [("math", 0), ("text", 1), ("util", 2)] {
        std::fs::write(
            dir.join(format!("lib/{name}.js")),
            helper_source(name, 200, bias),
        )?;
    }
    Ok(())
}

/// One host start: a fresh runtime and cache handle, `main.js` imported and evaluated, the
/// runtime dropped (when `PackLoader` stores what it compiled): all of it timed.
fn run_host(root: &Path) -> Res<(f64, Duration, u64, u64)> {
    let before = process_counters();
    let start = Instant::now();
    let runtime = Runtime::new()?;
    let cache = Cache::open(root)?;
    // The one-line change from rquickjs's FileResolver + ScriptLoader.
    runtime.set_loader(
        PackResolver::new(FileResolver::default().with_path("."), cache.clone()),
        PackLoader::new(cache),
    );
    let context = Context::full(&runtime)?;
    let result = context.with(|ctx| -> rquickjs::Result<f64> {
        let namespace: Object = Module::import(&ctx, "main.js")?.finish()?;
        namespace.get("result")
    })?;
    drop(context);
    drop(runtime);
    let elapsed = start.elapsed();
    let after = process_counters();
    Ok((
        result,
        elapsed,
        after.compiles - before.compiles,
        after.cache_loads - before.cache_loads,
    ))
}

fn main() -> Res<()> {
    let work = tempfile::tempdir()?;
    let root = work.path().join("cache");
    let project = work.path().join("project");
    write_project(&project)?;
    // rquickjs's FileResolver resolves module names against the working directory.
    std::env::set_current_dir(&project)?;
    println!("cache dir: {}", Cache::open(&root)?.dir().display());

    println!("\n== QuickJS: a project of 4 modules (~107 KB of source), run twice ==");
    let (r1, t1, c1, l1) = run_host(&root)?;
    println!("run 1: result {r1}, {c1} compiled, {l1} from cache, {t1:.2?}");
    let (r2, t2, c2, l2) = run_host(&root)?;
    println!("run 2: result {r2}, {c2} compiled, {l2} from cache, {t2:.2?}");
    assert_eq!((r1, c2), (r2, 0), "second run must compile nothing");
    println!("speedup: {:.1}x", t1.as_secs_f64() / t2.as_secs_f64());

    std::fs::write(project.join("lib/text.js"), helper_source("text", 200, 5))?;
    let (r3, t3, c3, l3) = run_host(&root)?;
    println!("after editing lib/text.js: result {r3}, {c3} compiled, {l3} from cache, {t3:.2?}");

    println!("\n== The store on its own ==");
    let cache = Cache::open(&root)?;
    let src = project.join("standalone.js");
    std::fs::write(&src, "export const answer = 42;")?;
    // An unchanged tree: sources older than the racy window, as they are in practice.
    std::fs::File::options()
        .write(true)
        .open(&src)?
        .set_modified(SystemTime::now() - Duration::from_secs(60))?;
    // Its ctime is still "now": wait out the racy window, or every get would re-hash it.
    std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(50));
    let bytecode: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
    let key = Key::for_paths(&[&src]);
    let t = Instant::now();
    cache.put(
        &key,
        &NewEntry::new("standalone.js", &bytecode).inputs(vec![Input::path(&src)]),
    )?;
    println!("put, 16 KiB with 1 input: {:.2?}", t.elapsed());
    let content_key = Key::for_source("inline.js", b"export default 1");
    cache.put(&content_key, &NewEntry::new("inline.js", &bytecode))?;

    const N: u32 = 20_000;
    for (label, k) in [
        ("path-keyed, 1 input (one stat)", &key),
        ("content-keyed (no syscall)", &content_key),
    ] {
        cache.get(k).ok_or("expected a hit")?;
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(cache.get(k));
        }
        println!("warm get, {label}: {:.0?} each", t.elapsed() / N);
    }

    std::fs::write(&src, "export const answer = 43;")?;
    println!(
        "after editing standalone.js: {:?}",
        cache.lookup(&key).err()
    );

    for i in 0..50u32 {
        cache.put(
            &content_key,
            &NewEntry::new("inline.js", &i.to_le_bytes().repeat(1000)),
        )?;
    }
    let t = Instant::now();
    let report = cache.compact()?;
    println!(
        "compact: {:.2?}, pack {} -> {} bytes, {} stale entries dropped",
        t.elapsed(),
        report.pack_bytes_before,
        report.pack_bytes_after,
        report.dropped_stale
    );
    let stats = cache.stats()?;
    println!(
        "stats: {} entries, pack {} B, live {} B, this handle: {} hits, {} misses",
        stats.entries,
        stats.pack_bytes,
        stats.live_bytes,
        stats.counters.hits,
        stats.counters.misses()
    );
    Ok(())
}
