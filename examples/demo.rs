//! The main job, end to end: put and get entries, watch a stale input miss, compact, and print
//! stats and timings. Run with `cargo run --release --example demo`.

use std::time::{Duration, Instant, SystemTime};

use bytecode_pack::{Cache, Input, Key, NewEntry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let root = work.path().join("cache");
    let src = work.path().join("main.js");
    std::fs::write(&src, "export const answer = 42;")?;
    // An unchanged tree: sources older than the racy window, as they are in practice.
    std::fs::File::options()
        .write(true)
        .open(&src)?
        .set_modified(SystemTime::now() - Duration::from_secs(60))?;

    let cache = Cache::open(&root)?;
    println!("cache dir: {}", cache.dir().display());

    let bytecode: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let key = Key::for_paths(&[&src]);
    let t = Instant::now();
    cache.put(
        &key,
        &NewEntry::new("main.js", &bytecode).inputs(vec![Input::path(&src)]),
    )?;
    println!("put 64 KiB entry with 1 input: {:?}", t.elapsed());

    let t = Instant::now();
    let hit = cache.get(&key).ok_or("expected a hit")?;
    println!("first get (checksums the segment): {:?}", t.elapsed());
    assert_eq!(hit.bytecode(), &bytecode[..]);
    let t = Instant::now();
    const N: u32 = 10_000;
    for _ in 0..N {
        std::hint::black_box(cache.get(&key));
    }
    println!(
        "warm get with 1 input (one stat): {:?} each",
        t.elapsed() / N
    );

    let content_key = Key::for_source("inline.js", b"export default 1");
    cache.put(&content_key, &NewEntry::new("inline.js", &bytecode))?;
    cache.get(&content_key);
    let t = Instant::now();
    for _ in 0..N {
        std::hint::black_box(cache.get(&content_key));
    }
    println!(
        "warm get, content-keyed (no syscalls): {:?} each",
        t.elapsed() / N
    );

    std::fs::write(&src, "export const answer = 43;")?;
    println!(
        "after editing main.js, get = {:?}",
        cache.lookup(&key).err()
    );

    for i in 0..50u32 {
        cache.put(
            &content_key,
            &NewEntry::new("inline.js", &i.to_le_bytes().repeat(1000)),
        )?;
    }
    let before = cache.stats()?;
    let t = Instant::now();
    let report = cache.compact()?;
    println!(
        "compacted in {:?}: {} -> {} bytes, {} stale entry dropped",
        t.elapsed(),
        report.pack_bytes_before,
        report.pack_bytes_after,
        report.dropped_stale
    );
    let after = cache.stats()?;
    println!(
        "stats: entries {}, pack {} B (was {}), live {} B, hits {}, misses {}",
        after.entries,
        after.pack_bytes,
        before.pack_bytes,
        after.live_bytes,
        after.counters.hits,
        after.counters.misses()
    );
    Ok(())
}
