//! Data safety, by the rule each test protects: what the cache must never remove, never serve
//! and never lose, and how it waits for the writer lock. (Anything that could hang is in
//! `hostile.rs`, in child processes.)
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytecode_pack::{Cache, CacheBuilder, Error, Input, Key, MissReason, NewEntry, abi_tag};
use common::{age_tree, let_ctime_age, set_mtime};

fn key(i: u32) -> Key {
    common::key("safety", i)
}

/// A cache in a new temp dir holding one entry, `key(1)`: the temp dir (kept alive by the
/// caller), the cache root, its ABI directory and the handle.
fn one_entry_cache() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Cache,
) {
    let (tmp, _, root, cache) = configured_cache(|options| options);
    cache.put(&key(1), &NewEntry::new("m", b"bc")).unwrap();
    let dir = root.join(abi_tag());
    (tmp, root, dir, cache)
}

/// A cache at `<new temp dir>/cache`, opened with `configure`'s options: the temp dir (kept
/// alive by the caller), the temp dir's path, the cache root and the handle.
fn configured_cache(
    configure: impl FnOnce(CacheBuilder) -> CacheBuilder,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Cache,
) {
    let (tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let cache = configure(Cache::builder(&root)).open().unwrap();
    (tmp, base, root, cache)
}

/// Takes the writer lock of the cache under `root` as another process would (a second open
/// file description), until the file returned is dropped.
fn hold_writer_lock(root: &Path) -> fs::File {
    let lock = fs::File::options()
        .read(true)
        .write(true)
        .open(root.join(abi_tag()).join("lock"))
        .unwrap();
    lock.lock().unwrap();
    lock
}

/// Returns once another thread of this process has opened `root`'s writer lock file, which
/// this test holds: two descriptors are open on it (Linux: `/proc/self/fd`). Then that thread
/// waits for the lock. Fails after 10 s.
#[cfg(target_os = "linux")]
fn wait_until_another_writer_waits(root: &Path) {
    let lock_path = root.join(abi_tag()).join("lock");
    let open_on_lock = || {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| *target == lock_path)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_on_lock() < 2 {
        assert!(Instant::now() < deadline, "no writer opened the lock file");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Never removes or replaces what it did not write: only files carrying this cache's headers, in
/// directories proven caches of this crate, through no symlink put in a cache's place.
mod never_removes_or_replaces_what_is_not_its_own {
    use super::*;

    #[test]
    fn compaction_never_prunes_a_users_directories_named_like_caches() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("root");
        let cache = Cache::open(&root).unwrap();
        cache.put(&key(1), &NewEntry::new("m", b"bc")).unwrap();
        // Private, as the caches beside them are, so that what is judged is what they hold.
        for dir in [
            "bp2024-taxes",
            "bp2024-taxes/receipts",
            "bp1",
            "bp2023-photos",
        ] {
            common::create_private_dir(&root.join(dir));
        }
        fs::write(root.join("bp2024-taxes/receipts/r1.txt"), "receipt").unwrap();
        fs::write(root.join("bp1/notes.txt"), "notes").unwrap();
        // Even with a file of a cache's name inside, a directory without proof is not a cache.
        fs::write(root.join("bp2023-photos/index"), "my photo index").unwrap();
        for dir in ["bp2024-taxes", "bp1", "bp2023-photos"] {
            age_tree(&root.join(dir), Duration::from_secs(60 * 86_400));
        }
        cache.compact().unwrap();
        let report = bytecode_pack::prune_other_abis(&root, Duration::ZERO).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert_eq!(report.skipped.len(), 3, "{report:?}");
        assert!(
            report.skipped.iter().all(|s| !s.reason.contains("mode")),
            "{report:?}"
        );
        assert_eq!(
            fs::read_to_string(root.join("bp2024-taxes/receipts/r1.txt")).unwrap(),
            "receipt"
        );
        assert_eq!(
            fs::read_to_string(root.join("bp1/notes.txt")).unwrap(),
            "notes"
        );
        assert!(root.join("bp2023-photos/index").exists());
        assert!(bytecode_pack::other_abis(&root).unwrap().is_empty());
    }

    #[test]
    fn sweeping_removes_only_files_carrying_this_caches_headers() {
        let (_tmp, root, dir, cache) = one_entry_cache();
        // A user's files that happen to have the cache's names for leftovers.
        let theirs = [
            ("pack-00000000000000ff", "not a pack"),
            ("base-00000000000000ff", "not an index"),
            (".tmp-notes", "my notes"),
        ];
        for (name, content) in theirs {
            fs::write(dir.join(name), content).unwrap();
        }
        // Real leftovers: an empty temp file of a crashed writer, a pack of an old generation, an
        // empty pack (its writer stopped before the header).
        fs::write(dir.join(".tmp-crashed"), "").unwrap();
        fs::write(dir.join("pack-00000000000000fe"), b"BCPKPACK and the rest").unwrap();
        fs::write(dir.join("pack-00000000000000fd"), "").unwrap();
        // A new handle's first write sweeps; so does compaction.
        Cache::open(&root)
            .unwrap()
            .put(&key(2), &NewEntry::new("m", b"bc"))
            .unwrap();
        cache.compact().unwrap();
        for (name, content) in theirs {
            assert_eq!(
                fs::read_to_string(dir.join(name)).unwrap(),
                content,
                "{name}"
            );
        }
        assert!(!dir.join(".tmp-crashed").exists());
        assert!(!dir.join("pack-00000000000000fe").exists());
        assert!(!dir.join("pack-00000000000000fd").exists());
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), b"bc");
    }

    #[test]
    fn a_split_cache_of_another_build_is_still_recognised_and_pruned() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("root");
        let cache = Cache::open(&root).unwrap();
        for i in 0..100 {
            cache
                .put(&key(i), &NewEntry::new("m", &[i as u8; 100]))
                .unwrap();
        }
        let ours = root.join(abi_tag());
        assert!(
            fs::read_dir(&ours).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("base-")),
            "the index is split"
        );
        // The same files under an older build's name, minus the tag (which names our tag).
        let other = root.join("bp1-quickjs-ng0.1.0-rquickjs0.1-x86_64-le-64");
        common::create_private_dir(&other);
        for entry in fs::read_dir(&ours).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "CACHEDIR.TAG" {
                fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
            }
        }
        age_tree(&other, Duration::from_secs(60 * 86_400));
        let report = bytecode_pack::prune_other_abis(&root, Duration::from_secs(86_400)).unwrap();
        assert_eq!(report.removed.len(), 1, "{report:?}");
        assert!(!other.exists() && ours.exists());
    }

    /// Pruning proves a directory is a cache, then removes its files by name: only in a root
    /// nobody else can write to, where nobody can swap the proven directory in between.
    #[test]
    fn pruning_refuses_a_root_others_can_write_to() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, root, ours, _cache) = one_entry_cache();
        // An older build's cache: the same files (proven by their magic), minus our marker.
        let other = root.join("bp1-quickjs-ng0.1.0-rquickjs0.1-x86_64-le-64");
        common::create_private_dir(&other);
        for name in ["index", "pack-0000000000000001"] {
            fs::copy(ours.join(name), other.join(name)).unwrap();
        }
        age_tree(&other, Duration::from_secs(60 * 86_400));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let refused = bytecode_pack::prune_other_abis(&root, Duration::ZERO);
        assert!(
            matches!(&refused, Err(Error::Insecure { path, .. }) if *path == root),
            "{refused:?}"
        );
        assert!(other.join("index").exists());
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        let report = bytecode_pack::prune_other_abis(&root, Duration::ZERO).unwrap();
        assert_eq!(report.removed.len(), 1, "{report:?}");
        assert!(!other.exists());
        // A root that does not exist has nothing to prune.
        let missing = tmp.path().join("missing");
        let report = bytecode_pack::prune_other_abis(&missing, Duration::ZERO).unwrap();
        assert_eq!(report, bytecode_pack::PruneReport::default());
    }

    /// A marker cut short (a writer killed mid-write, a full disk) is completed by the next
    /// handle's first write; one holding anything else is a user's and left alone. Another
    /// build's cache with a torn marker and an empty pack is still recognised by its headers.
    #[test]
    fn a_torn_marker_is_completed_and_does_not_block_pruning() {
        let (_tmp, root, ours, _cache) = one_entry_cache();
        let marker = ours.join("CACHEDIR.TAG");
        let whole = fs::read_to_string(&marker).unwrap();
        assert!(whole.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
        // Another build's cache: our files under its name, its marker torn, an empty pack.
        let other = root.join("bp1-quickjs-ng0.1.0-rquickjs0.1-x86_64-le-64");
        common::create_private_dir(&other);
        for name in ["index", "pack-0000000000000001"] {
            fs::copy(ours.join(name), other.join(name)).unwrap();
        }
        fs::write(other.join("CACHEDIR.TAG"), &whole.as_bytes()[..20]).unwrap();
        fs::write(other.join("pack-0000000000000002"), "").unwrap();
        // A marker's temp file whose writer was killed before the rename, in both caches.
        fs::write(other.join(".tmp-marker"), &whole.as_bytes()[..60]).unwrap();
        fs::write(ours.join(".tmp-marker"), &whole.as_bytes()[..60]).unwrap();
        age_tree(&other, Duration::from_secs(60 * 86_400));
        for (content, completed) in [("", true), (&whole[..30], true), ("my own tag\n", false)] {
            fs::write(&marker, content).unwrap();
            Cache::open(&root)
                .unwrap()
                .put(&key(2), &NewEntry::new("m", b"bc"))
                .unwrap();
            let now = fs::read_to_string(&marker).unwrap();
            if completed {
                assert_eq!(now, whole, "{content:?}");
            } else {
                assert_eq!(now, content);
            }
        }
        assert!(!ours.join(".tmp-marker").exists(), "swept");
        let report = bytecode_pack::prune_other_abis(&root, Duration::from_secs(86_400)).unwrap();
        assert_eq!(report.removed.len(), 1, "{report:?}");
        assert!(!other.exists() && ours.exists());
    }

    #[test]
    fn empty_files_with_a_caches_names_are_no_proof() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("root");
        Cache::open(&root).unwrap();
        let notes = root.join("bp1-notes");
        common::create_private_dir(&notes);
        fs::write(notes.join("index"), "").unwrap();
        fs::write(notes.join("lock"), "").unwrap();
        fs::write(notes.join(".tmp-draft"), "my draft").unwrap();
        age_tree(&notes, Duration::from_secs(60 * 86_400));
        let report = bytecode_pack::prune_other_abis(&root, Duration::ZERO).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert_eq!(
            fs::read_to_string(notes.join(".tmp-draft")).unwrap(),
            "my draft"
        );
    }

    #[test]
    fn a_users_file_in_the_way_of_a_new_pack_is_never_replaced_or_removed() {
        let (_tmp, _, dir, cache) = one_entry_cache();
        let generation = cache.stats().unwrap().generation;
        let next = dir.join(format!("pack-{:016x}", generation + 1));
        fs::write(&next, "a user's file").unwrap();
        // Compaction and clear both want that name: both refuse, and the file stays.
        let err = cache.compact().unwrap_err();
        assert!(
            matches!(&err, Error::Insecure { path, .. } if path == &next),
            "{err:?}"
        );
        let err = cache.clear().unwrap_err();
        assert!(
            matches!(&err, Error::Insecure { path, .. } | Error::Io { path, .. } if path == &next),
            "{err:?}"
        );
        assert_eq!(fs::read_to_string(&next).unwrap(), "a user's file");
        assert_eq!(cache.get(&key(1)).unwrap().bytecode(), b"bc");
    }

    /// The cache directory replaced by a symlink to a user's directory after the cache was opened:
    /// a write refuses it rather than publish an index over the user's `index`.
    #[test]
    fn a_write_refuses_a_cache_directory_replaced_by_a_symlink_since_open() {
        let (tmp, root, dir, cache) = one_entry_cache();
        let project = tmp.path().join("project");
        fs::create_dir(&project).unwrap();
        fs::write(project.join("index"), "the user's index").unwrap();
        fs::rename(&dir, tmp.path().join("moved-away")).unwrap();
        symlink(&project, &dir).unwrap();
        for write in [
            cache.put(&key(2), &NewEntry::new("m", b"bc")),
            cache.compact().map(drop),
            cache.clear(),
        ] {
            assert!(
                matches!(&write, Err(Error::Insecure { path, .. }) if *path == dir),
                "{write:?} ({})",
                root.display()
            );
        }
        assert_eq!(
            fs::read_to_string(project.join("index")).unwrap(),
            "the user's index"
        );
        assert_eq!(fs::read_dir(&project).unwrap().count(), 1);
    }
}

/// Never serves stale or damaged bytes: a changed input misses, damage is found and reported,
/// and inputs edited while a writer waits for the lock are judged as they are then.
mod never_serves_stale_or_damaged_bytes {
    use super::*;

    #[test]
    fn a_switched_symlink_is_a_changed_input() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("cache");
        // A file symlink, and a pnpm-style directory symlink, each switched to a new target of
        // the same size.
        fs::write(base.join("lib-v1.js"), "export const v = 1;").unwrap();
        fs::write(base.join("lib-v2.js"), "export const v = 2;").unwrap();
        symlink("lib-v1.js", base.join("lib.js")).unwrap();
        for v in ["1", "2"] {
            let store = base.join(format!(".store/pkg@{v}"));
            fs::create_dir_all(&store).unwrap();
            fs::write(store.join("index.js"), format!("export default {v};")).unwrap();
        }
        fs::create_dir(base.join("node_modules")).unwrap();
        symlink("../.store/pkg@1", base.join("node_modules/pkg")).unwrap();
        let_ctime_age();

        let cache = Cache::open(&root).unwrap();
        let inputs = [base.join("lib.js"), base.join("node_modules/pkg/index.js")];
        for (i, input) in inputs.iter().enumerate() {
            cache
                .put(
                    &key(i as u32),
                    &NewEntry::new("m", b"bc").inputs(vec![Input::path(input)]),
                )
                .unwrap();
            assert!(cache.get(&key(i as u32)).is_some());
        }
        let_ctime_age();
        fs::remove_file(base.join("lib.js")).unwrap();
        symlink("lib-v2.js", base.join("lib.js")).unwrap();
        fs::remove_file(base.join("node_modules/pkg")).unwrap();
        symlink("../.store/pkg@2", base.join("node_modules/pkg")).unwrap();
        for i in 0..2 {
            assert_eq!(cache.lookup(&key(i)).err(), Some(MissReason::Stale));
            assert!(Cache::open(&root).unwrap().get(&key(i)).is_none());
        }
        assert_eq!(cache.compact().unwrap().dropped_stale, 2);
        assert!(cache.get(&key(0)).is_none());
    }

    #[test]
    fn future_and_whole_second_mtimes_do_not_make_inputs_racy_forever() {
        let (_tmp, base) = common::canonical_tempdir();
        let cache = Cache::open(base.join("cache")).unwrap();
        let future = base.join("future.js");
        let extracted = base.join("extracted.js");
        fs::write(&future, "export const a = 1;").unwrap();
        fs::write(&extracted, "export const b = 2;").unwrap();
        set_mtime(&future, SystemTime::now() + Duration::from_secs(3600));
        // What tar and npm leave: a whole-second mtime, a fine-grained ctime from extraction.
        let whole = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            );
        set_mtime(&extracted, whole);
        let_ctime_age();
        let entry =
            NewEntry::new("m", b"bc").inputs(vec![Input::path(&future), Input::path(&extracted)]);
        cache.put(&key(1), &entry).unwrap();
        for _ in 0..5 {
            assert!(cache.get(&key(1)).is_some());
        }
        assert_eq!(cache.stats().unwrap().counters.input_rehashes, 0);
        // An edit is still seen, whatever the mtime says.
        fs::write(&future, "export const a = 9;").unwrap();
        set_mtime(&future, SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(cache.lookup(&key(1)).err(), Some(MissReason::Stale));
    }

    #[test]
    fn a_pack_replaced_by_a_directory_is_a_miss_and_the_cache_repairs_itself() {
        let (_tmp, root, dir, _cache) = one_entry_cache();
        let pack = common::pack_file(&dir);
        fs::remove_file(&pack).unwrap();
        fs::create_dir(&pack).unwrap();
        fs::write(pack.join("mine.txt"), "a user's file").unwrap();

        let fresh = Cache::open(&root).unwrap();
        assert_eq!(fresh.lookup(&key(1)).err(), Some(MissReason::Corrupt));
        let damage = fresh.stats().unwrap().damage.unwrap();
        assert!(
            damage.contains("pack-") && damage.contains("directory"),
            "{damage}"
        );
        fresh.compact().unwrap();
        fresh.clear().unwrap();
        fresh.put(&key(2), &NewEntry::new("m", b"again")).unwrap();
        assert_eq!(fresh.get(&key(2)).unwrap().bytecode(), b"again");
        assert!(fresh.verify().unwrap().is_ok());
        assert_eq!(
            fs::read_to_string(pack.join("mine.txt")).unwrap(),
            "a user's file"
        );
    }

    /// A pack the published index names, deleted from outside (or lost in a crash): the
    /// cache still opens, its lookups miss as corrupt with the pack named as missing, and the
    /// next write rebuilds it.
    #[test]
    fn a_missing_pack_is_damage_the_next_write_repairs() {
        let (_tmp, root, dir, _cache) = one_entry_cache();
        fs::remove_file(common::pack_file(&dir)).unwrap();
        common::assert_missing_file_is_repaired(&root, &key(1), "pack-");
    }

    /// Rewrites row `row` of the index file at `path` through `change`, then restores its
    /// checksum, as a writer bug (not bit rot) would leave it.
    fn rewrite_row(path: &Path, row: usize, change: impl FnOnce(&mut [u8])) {
        use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
        let mut file = fs::read(path).unwrap();
        let count = u32::from_le_bytes(file[64..68].try_into().unwrap()) as usize;
        let at = 128 + row * 32;
        change(&mut file[at..at + 32]);
        let offset = u32::from_le_bytes(file[at + 16..at + 20].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(file[at + 20..at + 24].try_into().unwrap()) as usize;
        let start = 128 + count * 32 + offset;
        let key: [u8; 16] = file[at..at + 16].try_into().unwrap();
        let sum = xxh3_64_with_seed(&file[start..start + len], xxh3_64(&key));
        file[at + 24..at + 32].copy_from_slice(&sum.to_le_bytes());
        fs::write(path, file).unwrap();
    }

    #[test]
    fn verify_and_compact_report_damage_exactly() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("cache");
        let cache = Cache::open(&root).unwrap();
        let payloads: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; 300]).collect();
        for (i, p) in payloads.iter().enumerate() {
            cache
                .put(&key(i as u32), &NewEntry::new("m", p).aux("aux"))
                .unwrap();
        }
        let dir = root.join(abi_tag());
        // One payload byte flipped: one problem, for that entry only.
        let pack = common::pack_file(&dir);
        let mut bytes = fs::read(&pack).unwrap();
        let at = bytes
            .windows(300)
            .position(|w| w.iter().all(|&b| b == 3))
            .unwrap();
        bytes[at + 10] ^= 0xff;
        fs::write(&pack, &bytes).unwrap();
        let report = cache.verify().unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        // The walk resumes past the damaged segment and finds the 11 intact ones.
        assert_eq!(report.segments_in_pack, 11);

        // A record whose key is not its row's key (checksums consistent): named by verify.
        // (Another entry's than the one whose payload was damaged: rows are in key order.)
        let index = fs::read(dir.join("index")).unwrap();
        let damaged = *key(3).as_bytes();
        let row = (0..6)
            .rev()
            .find(|r| index[128 + r * 32..128 + r * 32 + 16] != damaged)
            .unwrap();
        rewrite_row(&dir.join("index"), row, |row| row[15] ^= 1);
        let problems = cache.verify().unwrap().problems;
        assert!(
            problems.iter().any(|p| p.contains("not its row's key")),
            "{problems:?}"
        );

        // Compaction counts both: the damaged payload and the record it could not read.
        let report = cache.compact().unwrap();
        assert_eq!(report.dropped_corrupt, 2, "{report:?}");
        assert_eq!(report.entries_after, 4);
        assert!(cache.verify().unwrap().is_ok());
    }

    /// Puts `key(1)` with one input, `input.js` in `dir`, written just before (so racy: every
    /// check re-hashes it); returns the input's path.
    fn put_an_entry_with_an_input(cache: &Cache, dir: &Path) -> std::path::PathBuf {
        let input = dir.join("input.js");
        fs::write(&input, "export default 1").unwrap();
        let entry = NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]);
        cache.put(&key(1), &entry).unwrap();
        input
    }

    /// Runs `write` while another writer holds the lock, and edits `input` once `write` waits for
    /// it: what `write` judged before the lock sees the old content, anything judged under the
    /// lock the edit.
    fn edit_input_while_waiting_for_the_lock<T: Send>(
        root: &Path,
        input: &Path,
        write: impl FnOnce() -> T + Send,
    ) -> T {
        let lock = hold_writer_lock(root);
        std::thread::scope(|s| {
            let writer = s.spawn(write);
            wait_until_another_writer_waits(root);
            fs::write(input, "export default 22").unwrap();
            drop(lock);
            writer.join().unwrap()
        })
    }

    /// An explicit compaction checks inputs (re-hashing those stat data cannot vouch for) before it
    /// takes the writer lock, so other writers do not wait for that. An input edited while it then
    /// waits leaves its entry in the pack, and `get` still misses it.
    #[cfg(target_os = "linux")]
    #[test]
    fn compaction_checks_inputs_before_it_waits_for_the_lock() {
        let (_tmp, base, root, cache) =
            configured_cache(|b| b.lock_timeout(Duration::from_secs(30)));
        let input = put_an_entry_with_an_input(&cache, &base);
        let report =
            edit_input_while_waiting_for_the_lock(&root, &input, || cache.compact()).unwrap();
        assert_eq!((report.entries_after, report.dropped_stale), (1, 0));
        assert_eq!(cache.lookup(&key(1)).err(), Some(MissReason::Stale));
        // The next compaction, which judges the edit, drops it.
        assert_eq!(cache.compact().unwrap().dropped_stale, 1);
    }

    /// The same for the compaction a `put` starts when dead space dominates: a put that will
    /// likely start one checks the inputs before it takes the lock.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_put_that_will_compact_checks_inputs_before_it_waits_for_the_lock() {
        let (_tmp, base) = common::canonical_tempdir();
        let root = base.join("cache");
        let cache = Cache::open(&root).unwrap();
        let input = put_an_entry_with_an_input(&cache, &base);
        // Opened before another handle makes half the pack dead: its next put compacts, which it
        // learns from the published index, not from what it saw when opened.
        let compacting = Cache::builder(&root)
            .auto_compact(1, 0.25)
            .lock_timeout(Duration::from_secs(30))
            .open()
            .unwrap();
        assert!(compacting.get(&key(1)).is_some());
        for version in [1, 2] {
            cache
                .put(&key(2), &NewEntry::new("m", &[version; 1000]))
                .unwrap();
        }
        let generation = cache.stats().unwrap().generation;
        edit_input_while_waiting_for_the_lock(&root, &input, || {
            compacting.put(&key(3), &NewEntry::new("m", b"three"))
        })
        .unwrap();
        let stats = compacting.stats().unwrap();
        assert!(stats.generation > generation, "the put did not compact");
        assert_eq!(
            stats.entries, 3,
            "the entry judged before the lock was dropped"
        );
        assert_eq!(compacting.lookup(&key(1)).err(), Some(MissReason::Stale));
    }

    /// Dead space usually grows past its share by a put that supersedes an entry: such a put is
    /// also known to compact ahead of the lock, from the size of the entry it replaces.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_put_that_supersedes_its_way_into_compaction_checks_inputs_before_the_lock() {
        let (_tmp, base, root, cache) = configured_cache(|b| {
            b.auto_compact(1, 0.25)
                .lock_timeout(Duration::from_secs(30))
        });
        let input = put_an_entry_with_an_input(&cache, &base);
        cache.put(&key(2), &NewEntry::new("m", &[1; 1000])).unwrap();
        let before = cache.stats().unwrap();
        assert_eq!(before.dead_bytes(), 0, "{before:?}");
        // Adds as much as it makes dead: a prediction that only adds sees no dead space at all.
        edit_input_while_waiting_for_the_lock(&root, &input, || {
            cache.put(&key(2), &NewEntry::new("m", &[2; 1000]))
        })
        .unwrap();
        let after = cache.stats().unwrap();
        assert!(
            after.generation > before.generation,
            "the put did not compact"
        );
        assert_eq!(
            after.entries, 2,
            "the entry judged before the lock was dropped"
        );
        assert_eq!(cache.lookup(&key(1)).err(), Some(MissReason::Stale));
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), &[2; 1000]);
    }
}

/// Never loses an acknowledged put: not to its own compaction, nor to a compaction that fails.
mod never_loses_an_acknowledged_put {
    use super::*;

    #[test]
    fn an_acknowledged_put_is_never_evicted_by_its_own_compaction() {
        let (_tmp, base) = common::canonical_tempdir();
        let cache = Cache::builder(base.join("cache"))
            .max_bytes(1 << 20)
            .open()
            .unwrap();
        let a = vec![1u8; 800 << 10];
        let b = vec![2u8; 800 << 10];
        cache.put(&key(1), &NewEntry::new("a", &a)).unwrap();
        cache.put(&key(2), &NewEntry::new("b", &b)).unwrap();
        // The later write displaced the earlier one; the one just acknowledged is there.
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), &b[..]);
        assert!(cache.get(&key(1)).is_none());

        // A batch that cannot fit is refused whole, and nothing of it is published.
        let parts: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 400 << 10]).collect();
        let entries: Vec<NewEntry> = parts.iter().map(|p| NewEntry::new("p", p)).collect();
        let err = cache
            .put_many((0..3).map(|i| (key(10 + i), &entries[i as usize])))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEntry(_)), "{err}");
        assert!(err.to_string().contains("max_bytes"), "{err}");
        assert!((10..13).all(|i| cache.get(&key(i)).is_none()));
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), &b[..]);
        // Two of them fit, and both are readable.
        cache
            .put_many((0..2).map(|i| (key(10 + i), &entries[i as usize])))
            .unwrap();
        assert!((10..12).all(|i| cache.get(&key(i)).is_some()));
    }

    /// A put that triggers compaction, which cannot run (here: a user's file holds the next
    /// pack's name; on a nearly full disk, no room for a copy of every live entry), still stores
    /// its entry: the append is published without compacting. The user's file is left alone.
    #[test]
    fn a_put_whose_compaction_fails_is_stored_without_it() {
        let (_tmp, _, root, cache) = configured_cache(|b| b.auto_compact(1, 0.5));
        cache.put(&key(1), &NewEntry::new("m", &[1; 200])).unwrap();
        let dir = root.join(abi_tag());
        let pack = common::pack_file(&dir);
        let generation =
            u64::from_str_radix(&pack.file_name().unwrap().to_str().unwrap()[5..], 16).unwrap();
        let theirs = dir.join(format!("pack-{:016x}", generation + 1));
        fs::write(&theirs, "a user's notes").unwrap();
        // Superseding key 1 soon leaves more dead bytes than live ones; from then on each put
        // wants compaction, which fails.
        for round in 2..5u8 {
            cache
                .put(&key(1), &NewEntry::new("m", &[round; 200]))
                .unwrap_or_else(|e| panic!("put {round}: {e}"));
            assert_eq!(cache.get(&key(1)).unwrap().bytecode(), &[round; 200]);
        }
        assert_eq!(fs::read_to_string(&theirs).unwrap(), "a user's notes");
        assert_eq!(common::pack_file(&dir), pack, "no compaction ran");
        // Once the name is free, puts try again after the pack has grown by a quarter since the
        // last failure (not at once: a full disk stays full for a while).
        fs::remove_file(&theirs).unwrap();
        cache.put(&key(1), &NewEntry::new("m", &[5; 200])).unwrap();
        assert_eq!(common::pack_file(&dir), pack, "retried at once");
        for round in 6..16u8 {
            cache
                .put(&key(1), &NewEntry::new("m", &[round; 200]))
                .unwrap();
            if common::pack_file(&dir) != pack {
                assert_eq!(cache.get(&key(1)).unwrap().bytecode(), &[round; 200]);
                return;
            }
        }
        panic!("never compacted again");
    }
}

/// Waits for the writer lock as configured, once per write, on the lock file that is there now.
mod waits_for_the_writer_lock_as_configured {
    use super::*;

    /// `Duration::MAX` (past what an `Instant` can hold) means waiting without limit: writes work,
    /// and one that meets a held lock takes it once it is released. (It overflowed the deadline.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_timeout_of_duration_max_waits_for_the_lock() {
        let (_tmp, _, root, cache) = configured_cache(|b| b.lock_timeout(Duration::MAX));
        cache.put(&key(1), &NewEntry::new("m", b"one")).unwrap();
        let lock = hold_writer_lock(&root);
        let released = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let put = s.spawn(|| {
                cache.put(&key(2), &NewEntry::new("m", b"two")).unwrap();
                released.load(std::sync::atomic::Ordering::SeqCst)
            });
            wait_until_another_writer_waits(&root);
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(lock);
            assert!(put.join().unwrap(), "the put did not wait for the lock");
        });
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), b"two");
        cache.compact().unwrap();
        assert_eq!(cache.get(&key(1)).unwrap().bytecode(), b"one");
    }

    #[test]
    fn a_put_waits_for_the_lock_once_and_counts_only_what_it_published() {
        let timeout = Duration::from_secs(1);
        let (_tmp, _, root, cache) = configured_cache(|b| b.lock_timeout(timeout));
        cache.put(&key(1), &NewEntry::new("m", b"bc")).unwrap();
        assert_eq!(cache.stats().unwrap().counters.puts, 1);
        let lock = hold_writer_lock(&root);
        // Two threads of one handle: the second waits for the first's turn and then the file
        // lock, within one deadline.
        let started = Instant::now();
        let waits: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let cache = cache.clone();
                    s.spawn(move || {
                        let t = Instant::now();
                        let err = cache
                            .put(&key(10 + i), &NewEntry::new("m", b"bc"))
                            .unwrap_err();
                        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
                        t.elapsed()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Waiting twice (the handle's turn, then the file lock, each with the whole timeout)
        // would take at least two timeouts; the margin below that absorbs a loaded machine.
        let longest = waits.iter().max().unwrap();
        assert!(
            *longest < timeout * 19 / 10,
            "waited {longest:?} for a {timeout:?} timeout ({:?} in all)",
            started.elapsed()
        );
        let counters = cache.stats().unwrap().counters;
        assert_eq!(counters.puts, 1, "failed puts are not counted");
        assert_eq!(counters.compactions, 0);
        let err = cache.compact().unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        assert_eq!(cache.stats().unwrap().counters.compactions, 0);
        drop(lock);
        cache.compact().unwrap();
        assert_eq!(cache.stats().unwrap().counters.compactions, 1);
    }

    /// Pruning removes an idle cache's lock file while holding it. A writer that opened that file
    /// before and was waiting on it must not take the removed file's lock as exclusive: another
    /// writer may already hold the lock file created after it. It waits for that one instead.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_writer_waiting_on_a_removed_lock_file_waits_for_the_one_there_now() {
        let (_tmp, _, root, cache) = configured_cache(|b| b.lock_timeout(Duration::from_secs(30)));
        let lock_path = root.join(abi_tag()).join("lock");
        cache.put(&key(1), &NewEntry::new("m", b"one")).unwrap();
        let removed = hold_writer_lock(&root);
        std::thread::scope(|s| {
            let (done_tx, done) = std::sync::mpsc::channel();
            let writer = cache.clone();
            s.spawn(move || {
                let put = writer.put(&key(2), &NewEntry::new("m", b"two"));
                done_tx.send(put.map(drop)).unwrap();
            });
            wait_until_another_writer_waits(&root);
            fs::remove_file(&lock_path).unwrap();
            let there_now = fs::File::create(&lock_path).unwrap();
            there_now.lock().unwrap();
            drop(removed);
            assert!(
                done.recv_timeout(Duration::from_millis(300)).is_err(),
                "the put wrote under the removed lock file's lock while the one there now was held"
            );
            assert!(cache.get(&key(2)).is_none());
            drop(there_now);
            let put = done.recv_timeout(Duration::from_secs(20));
            assert!(matches!(put, Ok(Ok(()))), "{put:?}");
        });
        assert_eq!(cache.get(&key(2)).unwrap().bytecode(), b"two");
    }
}

/// A file named as a base numbered past half the range (not the cache's: no writer makes
/// one) makes writes fail with the directory named, instead of publishing an index whose next
/// sequence number no reader accepts (every lookup then missed, every write rebuilt).
#[test]
fn a_base_name_past_half_the_range_fails_writes_clearly() {
    let (_tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let cache = Cache::open(&root).unwrap();
    let dir = root.join(abi_tag());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("base-8000000000000000"), b"not the cache's").unwrap();
    match cache.put(&key(1), &NewEntry::new("m", b"bc")) {
        Err(Error::Insecure { path, .. }) => assert_eq!(path, dir),
        other => panic!("{other:?}"),
    }
}
