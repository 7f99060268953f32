//! Corruption campaign: flip bits, zero ranges, truncate and extend every file of a populated
//! cache, many times over. Every `get` is a miss or the exact bytes; nothing panics; the cache
//! always takes the next write. The seed is printed so a failure can be replayed.

use std::fs;
use std::path::{Path, PathBuf};

use bytecode_pack::{Cache, Key, NewEntry, abi_tag};

const ENTRIES: u32 = 30;
const TRIALS: u32 = 400;

fn key(i: u32) -> Key {
    Key::for_source("corrupt", &i.to_le_bytes())
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
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
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

#[test]
fn every_get_is_a_miss_or_the_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
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

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("corruption seed {seed}");
    let mut rng = Rng(seed);
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
                    assert_eq!(hit.source_map(), Some(maps[i as usize].as_str()));
                    assert_eq!(hit.aux(), Some("aux"));
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
        fs::create_dir(&dir).unwrap();
    }
    eprintln!("{hits} hits, {misses} misses over {TRIALS} trials");
    assert!(hits > 0 && misses > 0);
}
