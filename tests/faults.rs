//! Fault injection: a writer or compactor process is killed at every deterministic crash
//! point (feature `fault-injection`), then the cache is audited: it opens, serves every entry
//! acknowledged before, is not left locked, takes new writes, and sweeps the debris.
#![cfg(all(unix, feature = "fault-injection"))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use bytecode_pack::faults::CRASH_POINTS;
use bytecode_pack::{Cache, Key, NewEntry, abi_tag};
use common::child::Child;

fn key(i: u32) -> Key {
    common::key("fault", i)
}

fn payload(i: u32) -> Vec<u8> {
    (0..500 + i * 13)
        .map(|j| (j ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// The child: runs one operation, which dies at the crash point named in its environment.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
    match role.as_str() {
        "put" => cache
            .put(&key(1000), &NewEntry::new("m", &payload(1000)))
            .unwrap(),
        "put_many" => {
            let entries: Vec<_> = (1000..1010).map(payload).collect();
            let batch: Vec<NewEntry> = entries.iter().map(|p| NewEntry::new("m", p)).collect();
            cache
                .put_many((1000..1010).zip(&batch).map(|(i, e)| (key(i), e)))
                .unwrap()
        }
        "compact" => drop(cache.compact().unwrap()),
        // Enough single puts to split the index and merge the delta back.
        "fill" => {
            for i in 2000..2100 {
                cache
                    .put(&key(i), &NewEntry::new("m", &payload(i)))
                    .unwrap();
            }
        }
        "clear" => cache.clear().unwrap(),
        other => panic!("unknown role {other}"),
    }
}

/// 80 entries, 20 of them superseded once, then compacted: a full index past the small-index
/// size, so the next put splits it into a base and a delta.
fn populate(root: &Path) {
    let cache = Cache::open(root).unwrap();
    for i in 0..ENTRIES {
        cache
            .put(&key(i), &NewEntry::new("m", &payload(i)))
            .unwrap();
    }
    // Superseded versions give compaction something to drop.
    for i in 0..20 {
        cache
            .put(&key(i), &NewEntry::new("m", &payload(i)))
            .unwrap();
    }
    cache.compact().unwrap();
}

const ENTRIES: u32 = 80;

/// Runs `role` in a child that dies at `crash_at`; whether it did is in the exit status.
fn run_child(root: &Path, role: &str, crash_at: &str) -> std::process::ExitStatus {
    Child::new(role)
        .env("BP_ROOT", root)
        .env("BYTECODE_PACK_CRASH_AT", crash_at)
        .run()
        .status
}

#[test]
fn every_crash_point_leaves_a_cache_that_serves_what_was_acknowledged() {
    let mut crashes = 0;
    for role in ["put", "put_many", "fill", "compact", "clear"] {
        for point in CRASH_POINTS {
            let tmp = common::tempdir();
            let root = tmp.path().join("cache");
            populate(&root);
            let status = run_child(&root, role, point);
            // The injected crash is an abort; any other failure (a panic) is a bug.
            let crashed = status.signal() == Some(libc::SIGABRT);
            assert!(crashed || status.success(), "{role}@{point}: {status}");
            crashes += usize::from(crashed);

            // The lock died with the process: a new writer gets it at its first try.
            let cache = Cache::builder(&root)
                .lock_timeout(Duration::ZERO)
                .open()
                .unwrap();
            if let Err(e) = cache.put(&key(5000), &NewEntry::new("m", b"after")) {
                panic!("{role}@{point}: lock left held? {e}");
            }

            // Every acknowledged entry is there, exact; a cleared cache only if clear finished.
            let cleared = role == "clear" && (!crashed || *point == "publish:renamed");
            for i in 0..ENTRIES {
                match cache.get(&key(i)) {
                    Some(hit) => assert_eq!(hit.bytecode(), &payload(i)[..], "{role}@{point}: {i}"),
                    None => assert!(cleared, "{role}@{point}: acknowledged entry {i} lost"),
                }
            }
            // The interrupted write itself is all or nothing.
            if role.starts_with("put") {
                let done = !crashed || *point == "publish:renamed";
                assert_eq!(cache.get(&key(1000)).is_some(), done, "{role}@{point}");
            }
            let report = cache.verify().unwrap();
            assert!(report.is_ok(), "{role}@{point}: {report:?}");
            let dir = root.join(abi_tag());
            let debris = common::temp_file_names(&dir);
            assert!(debris.is_empty(), "{role}@{point}: not swept: {debris:?}");
            let packs = common::cache_files_named(&dir, "pack-").len();
            assert!(packs <= 2, "{role}@{point}: {packs} packs");
            let bases = common::cache_files_named(&dir, "base-").len();
            assert!(bases <= 1, "{role}@{point}: {bases} bases");
        }
    }
    // Each role passes most points: the test must really have crashed processes.
    assert!(crashes >= 12, "only {crashes} crashes happened");
}
