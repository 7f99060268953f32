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
    let tmp = common::tempdir();
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
    let tmp = common::tempdir();
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

/// A damaged record in the base misses as corrupt, for its key only. Writes of other keys
/// copy the base as it is (a delta never decodes it), so it stays damaged, and detectably so,
/// until its key is written again (the delta's row shadows it) and a compaction drops it.
#[test]
fn a_damaged_base_record_misses_until_its_key_is_written_and_compaction_drops_it() {
    let (_tmp, root, base) = split_cache();
    let mut bytes = fs::read(&base).unwrap();
    // The last byte of the last record (the file may end in alignment padding, never read).
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let rows = u32_at(64);
    let (offset, len, row) = (0..rows)
        .map(|row| {
            let at = 128 + 32 * row;
            (u32_at(at + 16), u32_at(at + 20), row)
        })
        .max()
        .unwrap();
    let damaged_key: [u8; 16] = bytes[128 + 32 * row..][..16].try_into().unwrap();
    bytes[128 + 32 * rows + offset + len - 1] ^= 0x55;
    // Replaced (not modified in place): a mapped file is never rewritten.
    fs::remove_file(&base).unwrap();
    fs::write(&base, &bytes).unwrap();
    let fresh = Cache::open(&root).unwrap();
    let damaged = (0..100)
        .find(|&i| key(i).as_bytes() == &damaged_key)
        .unwrap();
    for i in 0..100 {
        match fresh.lookup(&key(i)) {
            Err(MissReason::Corrupt) if i == damaged => {}
            Ok(hit) if i != damaged => assert_eq!(hit.bytecode(), &payload(i, 0)[..]),
            other => panic!("key {i}: {:?}", other.map(|h| h.bytecode().len())),
        }
    }
    fresh.put(&key(500), &NewEntry::new("m", b"after")).unwrap();
    assert_eq!(fresh.get(&key(500)).unwrap().bytecode(), b"after");
    assert_eq!(fresh.verify().unwrap().problems.len(), 1);
    fresh
        .put(&key(damaged), &NewEntry::new("m", &payload(damaged, 0)))
        .unwrap();
    assert_eq!(
        fresh.get(&key(damaged)).unwrap().bytecode(),
        &payload(damaged, 0)[..]
    );
    assert_eq!(fresh.compact().unwrap().dropped_corrupt, 1);
    assert!(fresh.verify().unwrap().is_ok());
    assert_eq!(fresh.stats().unwrap().entries, 101);
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

/// A base the published delta names, deleted from outside (or lost in a crash): the cache
/// still opens, its lookups miss as corrupt with the base named as missing, and the next write
/// rebuilds it.
#[test]
fn a_missing_base_is_damage_the_next_write_repairs() {
    let (_tmp, root, base) = split_cache();
    fs::remove_file(&base).unwrap();
    common::assert_missing_file_is_repaired(&root, &key(0), "base-");
}
