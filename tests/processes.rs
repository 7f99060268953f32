//! Several real processes on one cache: this test binary re-invokes itself as writers,
//! compactors and environment probes (the `child` test, ignored unless asked for).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytecode_pack::{Cache, Key, NewEntry, abi_tag};

const ROLE: &str = "BP_TEST_ROLE";

fn key(writer: u32, i: u32) -> Key {
    Key::for_source(&format!("w{writer}"), &i.to_le_bytes())
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
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let root = PathBuf::from(std::env::var("BP_ROOT").unwrap_or_default());
    let id = env_u32("BP_ID");
    let count = env_u32("BP_COUNT");
    let deadline = Instant::now() + Duration::from_secs(env_u32("BP_SECS").max(1) as u64);
    let out = std::io::stdout();
    match role.as_str() {
        "writer" => {
            let cache = Cache::builder(&root)
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
            let cache = Cache::builder(&root)
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

fn spawn(role: &str, root: &Path, id: u32, count: u32, secs: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--quiet"])
        .env(ROLE, role)
        .env("BP_ROOT", root)
        .env("BP_ID", id.to_string())
        .env("BP_COUNT", count.to_string())
        .env("BP_SECS", secs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads a child's acknowledgements in the background, so a killed child's are all kept.
fn collect_acks(child: &mut Child) -> std::thread::JoinHandle<HashSet<u32>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse().ok()))
            .collect()
    })
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
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    assert!(cache.get(&key(9, 0)).is_none());
    let mut child = spawn("writer", &root, 9, 3, 30);
    let acks = collect_acks(&mut child);
    assert!(child.wait().unwrap().success());
    assert_eq!(acks.join().unwrap().len(), 3);
    for i in 0..3 {
        assert_eq!(
            cache.get(&key(9, i)).expect("visible").bytecode(),
            &payload(9, i)[..]
        );
    }
}

#[test]
fn writers_and_a_compactor_in_parallel_while_this_process_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let reader = Cache::open(&root).unwrap();
    let writers: u32 = 3;
    let per_writer: u32 = 60;
    let mut children: Vec<(u32, Child)> = (0..writers)
        .map(|w| (w, spawn("writer", &root, w, per_writer, 60)))
        .collect();
    let ack_threads: Vec<_> = children
        .iter_mut()
        .map(|(w, c)| (*w, collect_acks(c)))
        .collect();
    let mut compactor = spawn("compactor", &root, 0, 15, 60);

    // Read while they work: every hit must be exact.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut hits, mut rounds) = (0u32, 0u32);
    while Instant::now() < deadline && rounds < 5000 {
        rounds += 1;
        let (w, i) = (rounds % writers, (rounds / writers) % per_writer);
        if let Some(hit) = reader.get(&key(w, i)) {
            assert_eq!(hit.bytecode(), &payload(w, i)[..]);
            hits += 1;
        }
        if children
            .iter_mut()
            .all(|(_, c)| c.try_wait().unwrap().is_some())
        {
            break;
        }
    }
    for (_, c) in &mut children {
        assert!(c.wait().unwrap().success());
    }
    assert!(compactor.wait().unwrap().success());
    let acked: HashMap<u32, HashSet<u32>> = ack_threads
        .into_iter()
        .map(|(w, t)| (w, t.join().unwrap()))
        .collect();
    assert!(acked.values().all(|a| a.len() == per_writer as usize));
    audit(&root, &acked);
    let stats = Cache::open(&root).unwrap().stats().unwrap();
    assert_eq!(stats.entries, u64::from(writers * per_writer));
    eprintln!("reader saw {hits} hits in {rounds} lookups");
}

/// A small xorshift: the kill timings vary per run, and the seed is printed for a rerun.
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
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill timing seed {seed}");
    let mut acked: HashMap<u32, HashSet<u32>> = HashMap::new();
    for (round, delay) in kill_delays(seed, 8).into_iter().enumerate() {
        // Each round's writer uses its own id, so acknowledged keys are never superseded.
        let id = round as u32;
        let mut writer = spawn("writer", &root, id, 100_000, 20);
        let acks = collect_acks(&mut writer);
        let mut compactor = spawn("compactor", &root, 0, 100_000, 20);
        std::thread::sleep(delay);
        writer.kill().unwrap(); // SIGKILL
        compactor.kill().unwrap();
        writer.wait().unwrap();
        compactor.wait().unwrap();
        acked.insert(id, acks.join().unwrap());
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
    let leftovers: Vec<_> = std::fs::read_dir(root.join(abi_tag()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    audit(&root, &acked);
}

fn probe(envs: &[(&str, &Path)], removed: &[&str], extra: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child", "--exact", "--ignored", "--nocapture", "--quiet"])
        .env(ROLE, "env-probe")
        .env_remove("BYTECODE_PACK_CACHE_DIR")
        .env_remove("BYTECODE_PACK_DISABLE");
    for name in removed {
        cmd.env_remove(name);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("dir="))
        .unwrap()
        .to_owned()
}

#[test]
fn environment_chooses_the_directory_and_can_disable() {
    let tmp = tempfile::tempdir().unwrap();
    let explicit = tmp.path().join("explicit");
    let line = probe(&[("BYTECODE_PACK_CACHE_DIR", &explicit)], &[], &[]);
    assert_eq!(
        line,
        format!("dir={} hit=true", explicit.join(abi_tag()).display())
    );

    #[cfg(target_os = "linux")]
    {
        let xdg = tmp.path().join("xdg");
        let line = probe(&[("XDG_CACHE_HOME", &xdg)], &[], &[]);
        let expected = xdg.join("bytecode-pack").join(abi_tag());
        assert_eq!(line, format!("dir={} hit=true", expected.display()));

        let home = tmp.path().join("home");
        let line = probe(&[("HOME", &home)], &["XDG_CACHE_HOME"], &[]);
        let expected = home.join(".cache/bytecode-pack").join(abi_tag());
        assert_eq!(line, format!("dir={} hit=true", expected.display()));
    }

    let disabled = tmp.path().join("disabled");
    let line = probe(
        &[("BYTECODE_PACK_CACHE_DIR", &disabled)],
        &[],
        &[("BYTECODE_PACK_DISABLE", "1")],
    );
    assert!(line.ends_with("hit=false"), "{line}");
    assert!(!disabled.exists());
}
