//! The split index: a put rewrites only a delta over a base, merged back into one full index
//! once the delta outgrows its threshold. Checked against a plain map through many puts,
//! merges, compactions and reopenings, and with the base damaged or left over.

mod common;

use std::collections::HashMap;
use std::fs;

use bytecode_pack::{Cache, Key, MissReason, NewEntry, abi_tag};
use common::cache_files_named as names;

fn key(i: u32) -> Key {
    common::key("split", i)
}

fn payload(i: u32, version: u32) -> Vec<u8> {
    let len = 20 + (i as usize * 37 + version as usize * 11) % 300;
    (0..len)
        .map(|j| (j as u32 ^ i ^ (version << 3)) as u8)
        .collect()
}

#[test]
fn single_puts_through_splits_and_merges_match_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let writer = Cache::open(&root).unwrap();
    let reader = Cache::open(&root).unwrap();
    let dir = root.join(abi_tag());
    let mut model: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut saw_base = false;
    // 700 puts over 300 keys: the index passes the small-index size, is split, and the delta
    // is merged back several times; some keys are superseded along the way.
    for step in 0..700u32 {
        let i = (step * 7919) % 300;
        let bytes = payload(i, step);
        writer.put(&key(i), &NewEntry::new("m", &bytes)).unwrap();
        model.insert(i, bytes);
        saw_base |= !names(&dir, "base-").is_empty();
        assert!(
            names(&dir, "base-").len() <= 1,
            "unreferenced bases are swept"
        );
        // A handle sees others' writes by its next miss (it may serve a superseded version
        // until then, FORMAT.md): an absent key always reaches the newest publication.
        assert_eq!(
            reader.lookup(&key(10_000 + step)).err(),
            Some(MissReason::Absent)
        );
        assert_eq!(reader.get(&key(i)).unwrap().bytecode(), &model[&i][..]);
        if step % 50 == 49 {
            let fresh = Cache::open(&root).unwrap();
            for (i, bytes) in &model {
                assert_eq!(
                    fresh.get(&key(*i)).unwrap().bytecode(),
                    &bytes[..],
                    "step {step}"
                );
            }
            assert_eq!(fresh.entries().unwrap().len(), model.len());
            let stats = fresh.stats().unwrap();
            assert_eq!(stats.entries, model.len() as u64);
            assert!(fresh.verify().unwrap().is_ok(), "step {step}");
        }
        if step == 400 {
            writer.compact().unwrap();
            assert!(
                names(&dir, "base-").is_empty(),
                "compaction writes a full index"
            );
        }
    }
    assert!(saw_base, "the index was split at some point");
}

/// A cache of 100 entries put one by one, so its index is a delta over a base: the root and
/// the base file.
fn split_cache() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    for i in 0..100 {
        cache
            .put(&key(i), &NewEntry::new("m", &payload(i, 0)))
            .unwrap();
    }
    let base = names(&root.join(abi_tag()), "base-")
        .pop()
        .expect("split by now");
    (tmp, root, base)
}

#[test]
fn a_damaged_base_is_a_miss_and_the_next_write_rebuilds() {
    let (_tmp, root, base) = split_cache();
    let mut bytes = fs::read(&base).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    // Replaced (not modified in place): a mapped file is never rewritten.
    fs::remove_file(&base).unwrap();
    fs::write(&base, &bytes).unwrap();
    let fresh = Cache::open(&root).unwrap();
    // Whichever entry the flipped byte belongs to misses; the others either hit exactly or
    // miss as corrupt (a base whose header no longer matches is rejected whole).
    for i in 0..100 {
        match fresh.lookup(&key(i)) {
            Ok(hit) => assert_eq!(hit.bytecode(), &payload(i, 0)[..]),
            Err(reason) => assert_eq!(reason, MissReason::Corrupt),
        }
    }
    fresh.put(&key(500), &NewEntry::new("m", b"after")).unwrap();
    assert_eq!(fresh.get(&key(500)).unwrap().bytecode(), b"after");
    assert!(fresh.verify().unwrap().is_ok());
}

#[test]
fn a_base_of_the_wrong_length_is_rejected_whole() {
    let (_tmp, root, base) = split_cache();
    let mut bytes = fs::read(&base).unwrap();
    bytes.extend_from_slice(&[0; 16]);
    fs::remove_file(&base).unwrap();
    fs::write(&base, &bytes).unwrap();
    let fresh = Cache::open(&root).unwrap();
    let damage = fresh.stats().unwrap().damage.expect("reported");
    assert!(damage.contains("base-"), "{damage}");
    assert_eq!(fresh.lookup(&key(0)).err(), Some(MissReason::Corrupt));
}
