//! Damaged cache files: every file of a populated cache corrupted and truncated in turn,
//! systematically (every 7th byte flipped, cut, extended, zeroed), then in a random campaign
//! (bits flipped, ranges zeroed, files truncated and extended, many times over). Every `get` is
//! a miss or the exact bytes; nothing panics; the cache always takes the next write. The
//! campaign's seed is printed, and `BP_SEED` replays it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bytecode_pack::{Cache, Key, MissReason, NewEntry, abi_tag};
use common::bytes;

const ENTRIES: u32 = 30;
const TRIALS: u32 = 400;

fn key(i: u32) -> Key {
    common::key("corrupt", i)
}

fn bytecode(i: u32) -> Vec<u8> {
    (0..40 + i * 37).map(|j| (j * 7 + i) as u8).collect()
}

fn source_map(i: u32) -> String {
    format!("{{\"version\":3,\"sources\":[\"m{i}.js\"]}}")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::cache_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn damage(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.extend_from_slice(&[0xee; 8]);
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                bytes[at..end].fill(0);
            }
            2 => bytes.truncate(at),
            _ => bytes.extend((0..1 + rng.below(200)).map(|i| i as u8)),
        }
    }
}

/// One way of damaging a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn corrupted_and_truncated_files_are_misses_never_wrong_bytes() {
    let (_tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let dir = root.join(abi_tag());
    let setup = || {
        let _ = fs::remove_dir_all(&root);
        let cache = Cache::open(&root).unwrap();
        for i in 0..4u8 {
            let bc = bytes(i, 300);
            cache
                .put(
                    &Key::for_source("m", &[i]),
                    &NewEntry::new("m", &bc).source_map("{}").aux("a"),
                )
                .unwrap();
        }
    };
    setup();
    let targets: Vec<PathBuf> = common::cache_files(&dir)
        .into_iter()
        .filter(|p| !p.ends_with("lock") && !p.ends_with("CACHEDIR.TAG"))
        .collect();
    assert_eq!(targets.len(), 2, "index and one pack: {targets:?}");
    let mut corrupt_misses = 0;
    for target in &targets {
        setup(); // the previous target's last round may have rebuilt the cache
        let len = fs::metadata(target).unwrap().len() as usize;
        let damages: Vec<Damage> = (0..len)
            .step_by(7)
            .map(|at| Box::new(move |b: &mut Vec<u8>| b[at] ^= 0x10) as Damage)
            .chain([
                Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)) as Damage,
                Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 1)),
                Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&[0xAB; 64])),
                Box::new(|b: &mut Vec<u8>| b.iter_mut().skip(64).take(100).for_each(|x| *x = 0)),
            ])
            .collect();
        for damage in &damages {
            setup();
            let mut content = fs::read(target).unwrap();
            damage(&mut content);
            fs::write(target, &content).unwrap();
            let cache = match Cache::open(&root) {
                Ok(c) => c,
                Err(e) => panic!("open must survive corruption: {e}"),
            };
            for i in 0..4u8 {
                match cache.lookup(&Key::for_source("m", &[i])) {
                    Ok(hit) => {
                        assert_eq!(hit.bytecode(), &bytes(i, 300)[..]);
                        // Sidecars are checked when read: exact, or absent if damaged.
                        assert!(matches!(hit.source_map(), Some("{}") | None));
                        assert!(matches!(hit.aux(), Some("a") | None));
                    }
                    Err(MissReason::Corrupt) => corrupt_misses += 1,
                    // A damaged key in the index table makes its entry unfindable.
                    Err(MissReason::Absent) => {}
                    Err(other) => panic!("unexpected miss {other:?}"),
                }
            }
            // A damaged cache still takes writes.
            cache
                .put(&Key::for_source("new", b""), &NewEntry::new("n", b"ok"))
                .unwrap();
            assert_eq!(
                cache.get(&Key::for_source("new", b"")).unwrap().bytecode(),
                b"ok"
            );
        }
    }
    assert!(corrupt_misses > 0);
}

#[test]
fn every_get_is_a_miss_or_the_exact_bytes() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let dir = root.join(abi_tag());
    let cache = Cache::open(&root).unwrap();
    let codes: Vec<Vec<u8>> = (0..ENTRIES).map(bytecode).collect();
    let maps: Vec<String> = (0..ENTRIES).map(source_map).collect();
    let entries: Vec<NewEntry> = (0..ENTRIES as usize)
        .map(|i| {
            NewEntry::new("m.js", &codes[i])
                .source_map(&maps[i])
                .aux("aux")
        })
        .collect();
    cache
        .put_many((0..ENTRIES).zip(&entries).map(|(i, e)| (key(i), e)))
        .unwrap();
    drop(cache);
    let pristine = snapshot_files(&dir);

    let mut rng = Rng(common::seed("corruption") | 1);
    let (mut hits, mut misses) = (0u32, 0u32);
    for trial in 0..TRIALS {
        for (path, bytes) in &pristine {
            fs::write(path, bytes).unwrap();
        }
        let (target, original) = &pristine[rng.below(pristine.len())];
        let mut bytes = original.clone();
        damage(&mut bytes, &mut rng);
        fs::write(target, &bytes).unwrap();
        if target.ends_with("index") {
            bytecode_pack::fuzzing::index_as_reader(&bytes, abi_tag());
        }

        let cache =
            Cache::open(&root).unwrap_or_else(|e| panic!("trial {trial}: open failed: {e}"));
        for i in 0..ENTRIES {
            match cache.get(&key(i)) {
                Some(hit) => {
                    hits += 1;
                    assert_eq!(
                        hit.bytecode(),
                        &codes[i as usize][..],
                        "trial {trial}, entry {i}"
                    );
                    let map = hit.source_map();
                    assert!(map.is_none_or(|m| m == maps[i as usize]), "trial {trial}");
                    assert!(matches!(hit.aux(), Some("aux") | None), "trial {trial}");
                    assert_eq!(hit.module_name(), "m.js");
                }
                None => misses += 1,
            }
        }
        let _ = cache.verify().unwrap();
        let _ = cache.stats().unwrap();
        let _ = cache.entries().unwrap();
        cache
            .put(&key(1000), &NewEntry::new("after", b"after"))
            .unwrap_or_else(|e| panic!("trial {trial}: put failed: {e}"));
        assert_eq!(cache.get(&key(1000)).unwrap().bytecode(), b"after");
        // Whatever was damaged, compaction leaves a cache that verifies, keeping the new entry.
        cache
            .compact()
            .unwrap_or_else(|e| panic!("trial {trial}: compact failed: {e}"));
        let report = cache.verify().unwrap();
        assert!(
            report.is_ok(),
            "trial {trial} ({}): {report:?}",
            target.display()
        );
        assert_eq!(cache.get(&key(1000)).unwrap().bytecode(), b"after");
        fs::remove_dir_all(&dir).unwrap();
        common::create_private_dir(&dir);
    }
    eprintln!("{hits} hits, {misses} misses over {TRIALS} trials");
    assert!(hits > 0 && misses > 0);
}

/// One damaged row key costs only its own entry, for readers and for the next write: here the
/// first row's key is raised above every other. Readers missed every key then (the search gave
/// up on a key below the first row's), and the next put dropped every row sorting below the
/// damaged key, to keep the table in order.
#[test]
fn a_damaged_row_key_costs_only_its_own_entry() {
    let (_tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let cache = Cache::open(&root).unwrap();
    for i in 0..ENTRIES {
        cache
            .put(&key(i), &NewEntry::new("m", &bytecode(i)))
            .unwrap();
    }
    drop(cache);
    let index = root.join(abi_tag()).join("index");
    let mut bytes = fs::read(&index).unwrap();
    let first = (0..ENTRIES).min_by_key(|&i| *key(i).as_bytes()).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == key(first).as_bytes())
        .expect("the first row's key is in the index");
    bytes[at..at + 16].fill(0xff);
    // A new file renamed in place, as a writer would: nothing maps it yet.
    let damaged = index.with_file_name("damaged");
    fs::write(&damaged, &bytes).unwrap();
    fs::rename(&damaged, &index).unwrap();

    let cache = Cache::open(&root).unwrap();
    let only_the_damaged_one_is_lost = |when: &str| {
        for i in 0..ENTRIES {
            let hit = cache.get(&key(i)).map(|h| h.bytecode().to_vec());
            let expected = (i != first).then(|| bytecode(i));
            assert_eq!(hit, expected, "{when}: entry {i}");
        }
    };
    // Readers find every other entry: the search does not give up on a key outside the
    // (damaged) first row's range.
    only_the_damaged_one_is_lost("before a write");
    cache
        .put(&key(ENTRIES), &NewEntry::new("m", b"new"))
        .unwrap();
    only_the_damaged_one_is_lost("after a write");
    assert_eq!(cache.get(&key(ENTRIES)).unwrap().bytecode(), b"new");
    let report = cache.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A power loss under `Durability::Process` can keep an index while losing the bytes the put
/// it publishes appended to the pack (a journaling filesystem flushes a file renamed over
/// another, not an append). The pack is then shorter than its index says: only the entries it
/// lost are misses; the cache reports the damage, takes the next put (appended over the lost
/// tail, which the lost entries' checksums reject), and compaction drops the lost entries.
#[test]
fn a_pack_that_lost_its_tail_still_serves_the_entries_it_holds() {
    let (_tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let cache = Cache::open(&root).unwrap();
    let kept = 0..ENTRIES / 2;
    let lost = ENTRIES / 2..ENTRIES;
    for i in kept.clone() {
        cache
            .put(&key(i), &NewEntry::new("m", &bytecode(i)))
            .unwrap();
    }
    let pack = common::pack_file(&root.join(abi_tag()));
    // Cut inside the first lost entry's segment header, not at a boundary.
    let cut = fs::metadata(&pack).unwrap().len() + 10;
    let lost_payloads: Vec<(Key, Vec<u8>)> = lost.clone().map(|i| (key(i), bytecode(i))).collect();
    let lost_entries: Vec<(Key, NewEntry<'_>)> = lost_payloads
        .iter()
        .map(|(k, b)| (*k, NewEntry::new("m", b)))
        .collect();
    cache
        .put_many(lost_entries.iter().map(|(k, e)| (*k, e)))
        .unwrap();
    drop(cache);
    let full_len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let cache = Cache::open(&root).unwrap();
    let check = |when: &str| {
        for i in 0..ENTRIES {
            let hit = cache.get(&key(i)).map(|h| h.bytecode().to_vec());
            let expected = kept.contains(&i).then(|| bytecode(i));
            assert_eq!(hit, expected, "{when}: entry {i}");
        }
    };
    check("before a write");
    let damage = cache
        .stats()
        .unwrap()
        .damage
        .expect("the lost tail is reported");
    assert!(damage.contains("pack-"), "{damage}");
    // verify names the damage and still checks every entry.
    let problems = cache.verify().unwrap().problems;
    assert_eq!(problems.len(), 1 + (ENTRIES / 2) as usize, "{problems:?}");
    // A key never stored is a plain miss, not a corrupt one.
    assert_eq!(
        cache.lookup(&key(ENTRIES + 1)).err(),
        Some(MissReason::Absent)
    );
    // The next put first extends the pack back to its published length (so no offset a
    // reader of the old index may map is reused, nor cut by a failed write's roll-back).
    cache
        .put(&key(ENTRIES), &NewEntry::new("m", b"after the loss"))
        .unwrap();
    assert!(fs::metadata(&pack).unwrap().len() > full_len);
    check("after a write");
    assert_eq!(
        cache.get(&key(ENTRIES)).unwrap().bytecode(),
        b"after the loss"
    );
    let problems = cache.verify().unwrap().problems;
    assert_eq!(problems.len(), (ENTRIES / 2) as usize, "{problems:?}");
    let report = cache.compact().unwrap();
    assert_eq!(report.dropped_corrupt, u64::from(ENTRIES / 2), "{report:?}");
    check("after compaction");
    assert_eq!(cache.stats().unwrap().damage, None);
    let verified = cache.verify().unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}
