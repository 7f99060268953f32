//! Several real processes on one cache: this test binary re-invokes itself as writers,
//! compactors and environment probes (the `child` test, ignored unless asked for).
#![cfg(unix)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytecode_pack::{Cache, Key, NewEntry, abi_tag};
use common::child::{Child, Running};

/// Writer `w`'s `i`th key: each writer has its own domain.
fn key(writer: u32, i: u32) -> Key {
    common::key(&format!("w{writer}"), i)
}

/// What writer `w` stores as its `i`th entry: distinct per entry, sizes from 1 byte to ~12 KB.
fn payload(writer: u32, i: u32) -> Vec<u8> {
    let len = 1 + ((writer as usize * 7919 + i as usize * 104_729) % 12_000);
    (0..len)
        .map(|j| (j as u32 ^ writer.wrapping_mul(31) ^ i) as u8)
        .collect()
}

fn env_u32(name: &str) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The child processes' entry point.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let id = env_u32("BP_ID");
    let count = env_u32("BP_COUNT");
    let deadline = Instant::now() + Duration::from_secs(env_u32("BP_SECS").max(1) as u64);
    let out = std::io::stdout();
    match role.as_str() {
        "writer" => {
            let cache = Cache::builder(common::child::path_var("BP_ROOT"))
                .lock_timeout(Duration::from_secs(30))
                .open()
                .unwrap();
            for i in 0..count {
                if Instant::now() > deadline {
                    break;
                }
                cache
                    .put(&key(id, i), &NewEntry::new("m", &payload(id, i)))
                    .unwrap();
                writeln!(out.lock(), "ack {i}").unwrap();
                // Read back an earlier entry of ours: it must be exact.
                let j = i / 2;
                if let Some(hit) = cache.get(&key(id, j)) {
                    assert_eq!(
                        hit.bytecode(),
                        &payload(id, j)[..],
                        "writer {id} read back {j}"
                    );
                }
            }
        }
        "compactor" => {
            let cache = Cache::builder(common::child::path_var("BP_ROOT"))
                .lock_timeout(Duration::from_secs(30))
                .open()
                .unwrap();
            for _ in 0..count {
                if Instant::now() > deadline {
                    break;
                }
                cache.compact().unwrap();
                writeln!(out.lock(), "compacted").unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "env-probe" => {
            // Runs with the environment the parent chose: report what open_default does.
            let cache = Cache::open_default().unwrap();
            let k = Key::for_source("probe", b"");
            cache.put(&k, &NewEntry::new("probe", b"bytes")).unwrap();
            let hit = cache.get(&k).is_some();
            writeln!(out.lock(), "dir={} hit={hit}", cache.dir().display()).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

/// A writer or compactor child, started: it prints `ack <i>` for each acknowledged put.
fn spawn(role: &str, root: &Path, id: u32, count: u32, secs: u32) -> Running {
    Child::new(role)
        .env("BP_ROOT", root)
        .env("BP_ID", id.to_string())
        .env("BP_COUNT", count.to_string())
        .env("BP_SECS", secs.to_string())
        .spawn()
}

/// The entries a child acknowledged (all of them, also if it was killed).
fn acks(stdout: &str) -> HashSet<u32> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse().ok()))
        .collect()
}

/// Every acknowledged entry is present and exact in a fresh handle.
fn audit(root: &Path, acked: &HashMap<u32, HashSet<u32>>) {
    let cache = Cache::open(root).unwrap();
    for (&w, acks) in acked {
        for &i in acks {
            let hit = cache
                .get(&key(w, i))
                .unwrap_or_else(|| panic!("acked put w{w}/{i} lost"));
            assert_eq!(hit.bytecode(), &payload(w, i)[..], "w{w}/{i}");
        }
    }
    let report = cache.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn a_handle_sees_another_process_puts_on_its_next_miss() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    assert!(cache.get(&key(9, 0)).is_none());
    let out = spawn("writer", &root, 9, 3, 30).wait().expect_success();
    assert_eq!(acks(&out).len(), 3);
    for i in 0..3 {
        assert_eq!(
            cache.get(&key(9, i)).expect("visible").bytecode(),
            &payload(9, i)[..]
        );
    }
}

#[test]
fn writers_and_a_compactor_in_parallel_while_this_process_reads() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let reader = Cache::open(&root).unwrap();
    let writers: u32 = 3;
    let per_writer: u32 = 60;
    let mut children: Vec<(u32, Running)> = (0..writers)
        .map(|w| (w, spawn("writer", &root, w, per_writer, 60)))
        .collect();
    let compactor = spawn("compactor", &root, 0, 15, 60);

    // Read while they work: every hit must be exact.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut hits, mut rounds) = (0u32, 0u32);
    while Instant::now() < deadline {
        rounds += 1;
        let (w, i) = (rounds % writers, (rounds / writers) % per_writer);
        if let Some(hit) = reader.get(&key(w, i)) {
            assert_eq!(hit.bytecode(), &payload(w, i)[..]);
            hits += 1;
        }
        if children.iter_mut().all(|(_, c)| c.try_wait().is_some()) {
            break;
        }
    }
    assert!(hits > 0, "no hit in {rounds} lookups while the writers ran");
    let acked: HashMap<u32, HashSet<u32>> = children
        .into_iter()
        .map(|(w, c)| (w, acks(&c.wait().expect_success())))
        .collect();
    compactor.wait().expect_success();
    assert!(acked.values().all(|a| a.len() == per_writer as usize));
    audit(&root, &acked);
    let stats = Cache::open(&root).unwrap().stats().unwrap();
    assert_eq!(stats.entries, u64::from(writers * per_writer));
    eprintln!("reader saw {hits} hits in {rounds} lookups");
}

/// SIGKILLs `child` and collects its output, asserting it had not failed on its own first.
#[track_caller]
fn kill_9(mut child: Running) -> common::child::Output {
    child.kill();
    let out = child.wait();
    let killed = out.status.signal() == Some(libc::SIGKILL);
    assert!(
        killed || out.status.success(),
        "{}: {}\n{}",
        out.role,
        out.status,
        out.tail(20)
    );
    out
}

/// A small xorshift: the kill timings vary per run; `BP_SEED` replays a run's.
fn kill_delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(15 + x % 200)
        })
        .collect()
}

#[test]
fn kill_9_during_put_and_compact_loses_nothing_acknowledged() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let seed = common::seed("kill timing");
    let mut acked: HashMap<u32, HashSet<u32>> = HashMap::new();
    for (round, delay) in kill_delays(seed, 8).into_iter().enumerate() {
        // Each round's writer uses its own id, so acknowledged keys are never superseded.
        let id = round as u32;
        let writer = spawn("writer", &root, id, 100_000, 20);
        let compactor = spawn("compactor", &root, 0, 100_000, 20);
        std::thread::sleep(delay);
        // Killed, or done: a child that failed on its own (a read-back mismatch) is a bug.
        let (writer, compactor) = (kill_9(writer), kill_9(compactor));
        acked.insert(id, acks(&writer.stdout));
        drop(compactor);
        audit(&root, &acked);
    }
    assert!(
        acked.values().map(HashSet::len).sum::<usize>() > 0,
        "writers made progress"
    );

    // The cache takes new writes, and the next writer sweeps the crashed ones' temp files.
    let cache = Cache::open(&root).unwrap();
    cache
        .put(&key(99, 0), &NewEntry::new("m", b"after"))
        .unwrap();
    cache.compact().unwrap();
    let leftovers = common::temp_file_names(&root.join(abi_tag()));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    audit(&root, &acked);
}

/// What `open_default` chose in a child with the environment `child` sets.
fn probe(child: Child) -> String {
    child
        .run()
        .expect_success()
        .lines()
        .find(|l| l.starts_with("dir="))
        .unwrap()
        .to_owned()
}

#[test]
fn environment_chooses_the_directory_and_can_disable() {
    let tmp = common::tempdir();
    let explicit = tmp.path().join("explicit");
    let line = probe(Child::new("env-probe").env("BYTECODE_PACK_CACHE_DIR", &explicit));
    assert_eq!(
        line,
        format!("dir={} hit=true", explicit.join(abi_tag()).display())
    );

    #[cfg(target_os = "linux")]
    {
        let xdg = tmp.path().join("xdg");
        let line = probe(Child::new("env-probe").env("XDG_CACHE_HOME", &xdg));
        let expected = xdg.join("bytecode-pack").join(abi_tag());
        assert_eq!(line, format!("dir={} hit=true", expected.display()));

        let home = tmp.path().join("home");
        let line = probe(
            Child::new("env-probe")
                .env("HOME", &home)
                .env_remove("XDG_CACHE_HOME"),
        );
        let expected = home.join(".cache/bytecode-pack").join(abi_tag());
        assert_eq!(line, format!("dir={} hit=true", expected.display()));
    }

    let disabled = tmp.path().join("disabled");
    let line = probe(
        Child::new("env-probe")
            .env("BYTECODE_PACK_CACHE_DIR", &disabled)
            .env("BYTECODE_PACK_DISABLE", "1"),
    );
    assert!(line.ends_with("hit=false"), "{line}");
    assert!(!disabled.exists());
}
