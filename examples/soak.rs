//! Soak test: several writer processes, several reader processes and a compactor on one cache
//! for N seconds. Every hit's bytes are checked against what was put; at the end every
//! acknowledged put is audited. Not part of CI's default run.
//!
//! ```sh
//! cargo run --release --example soak -- --secs 300 --writers 3 --readers 3
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytecode_pack::{Cache, Key, NewEntry};

fn key(writer: u64, i: u64) -> Key {
    Key::for_source(&format!("soak-w{writer}"), &i.to_le_bytes())
}

/// Writer `w`'s `i`th entry: 200 B to ~8 KB, distinct per entry.
fn payload(writer: u64, i: u64) -> Vec<u8> {
    let len = 200 + ((writer * 7919 + i * 104_729) % 8000) as usize;
    (0..len)
        .map(|j| (j as u64 ^ writer.wrapping_mul(131) ^ i) as u8)
        .collect()
}

struct Args {
    secs: u64,
    writers: u64,
    readers: u64,
    role: Option<String>,
    id: u64,
    root: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        secs: 10,
        writers: 3,
        readers: 3,
        role: None,
        id: 0,
        root: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--secs" => args.secs = number(value()?)?,
            "--writers" => args.writers = number(value()?)?,
            "--readers" => args.readers = number(value()?)?,
            "--role" => args.role = Some(value()?),
            "--id" => args.id = number(value()?)?,
            "--root" => args.root = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: soak --secs N [--writers N] [--readers N]"
                ));
            }
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    match (&args.role, &args.root) {
        (Some(role), Some(root)) => child(role, args.id, root, Duration::from_secs(args.secs)),
        _ => coordinator(&args),
    }
}

fn child(role: &str, id: u64, root: &Path, run_for: Duration) {
    let cache = Cache::builder(root)
        .lock_timeout(Duration::from_secs(60))
        .open()
        .unwrap();
    let deadline = Instant::now() + run_for;
    let mut out = std::io::stdout().lock();
    match role {
        "writer" => {
            let mut i = 0;
            while Instant::now() < deadline && i < 10_000_000 {
                cache
                    .put(&key(id, i), &NewEntry::new("soak.js", &payload(id, i)))
                    .unwrap();
                writeln!(out, "ack {i}").unwrap();
                out.flush().unwrap();
                i += 1;
            }
        }
        "reader" => {
            let (mut gets, mut hits, mut x) =
                (0u64, 0u64, id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            while Instant::now() < deadline && gets < 1_000_000_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (w, i) = (x % 8, (x >> 8) % 3000);
                gets += 1;
                if let Some(hit) = cache.get(&key(w, i)) {
                    assert_eq!(
                        hit.bytecode(),
                        &payload(w, i)[..],
                        "reader {id}: wrong bytes for w{w}/{i}"
                    );
                    hits += 1;
                }
            }
            writeln!(out, "reads {gets} {hits}").unwrap();
        }
        "compactor" => {
            let mut n = 0;
            while Instant::now() < deadline && n < 1_000_000 {
                cache.compact().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            writeln!(out, "compactions {n}").unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, id: u64, root: &Path, secs: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--role",
            role,
            "--id",
            &id.to_string(),
            "--secs",
            &secs.to_string(),
        ])
        .arg("--root")
        .arg(root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn coordinator(args: &Args) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    println!(
        "soak: {} writers, {} readers, 1 compactor, {} s, cache in {}",
        args.writers,
        args.readers,
        args.secs,
        root.display()
    );
    let started = Instant::now();
    let mut children: Vec<(String, u64, Child)> = Vec::new();
    for w in 0..args.writers {
        children.push(("writer".into(), w, spawn("writer", w, &root, args.secs)));
    }
    for r in 0..args.readers {
        children.push(("reader".into(), r, spawn("reader", r, &root, args.secs)));
    }
    children.push((
        "compactor".into(),
        0,
        spawn("compactor", 0, &root, args.secs),
    ));

    let mut acked: HashMap<u64, u64> = HashMap::new();
    let (mut gets, mut hits, mut compactions) = (0u64, 0u64, 0u64);
    let mut failed = false;
    for (role, id, mut child) in children {
        let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .collect();
        if !child.wait().unwrap().success() {
            eprintln!("soak: {role} {id} failed");
            failed = true;
        }
        for line in lines {
            let words: Vec<u64> = line
                .split(' ')
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            match (line.split(' ').next(), words.as_slice()) {
                (Some("ack"), [i]) => {
                    let n = acked.entry(id).or_default();
                    *n = (*n).max(i + 1);
                }
                (Some("reads"), [g, h]) => {
                    gets += g;
                    hits += h;
                }
                (Some("compactions"), [n]) => compactions += n,
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Audit: every acknowledged put, exact, from a fresh handle.
    let cache = Cache::open(&root).unwrap();
    let mut lost = 0u64;
    let puts: u64 = acked.values().sum();
    for (&w, &n) in &acked {
        for i in 0..n {
            match cache.get(&key(w, i)) {
                Some(hit) if hit.bytecode() == payload(w, i) => {}
                _ => lost += 1,
            }
        }
    }
    let report = cache.verify().unwrap();
    let stats = cache.stats().unwrap();
    println!(
        "puts: {puts} ({:.0}/s), gets: {gets} ({:.0}/s, {hits} hits, every one exact), compactions: {compactions}",
        puts as f64 / elapsed,
        gets as f64 / elapsed,
    );
    println!(
        "final: {} entries, pack {} B, live {} B, verify: {}",
        stats.entries,
        stats.pack_bytes,
        stats.live_bytes,
        if report.is_ok() {
            "ok".to_string()
        } else {
            format!("{:?}", report.problems)
        }
    );
    if failed || lost > 0 || !report.is_ok() {
        println!("AUDIT FAILED: {lost} of {puts} acknowledged puts lost or wrong");
        std::process::exit(1);
    }
    println!("AUDIT OK: all {puts} acknowledged puts present and exact");
}
