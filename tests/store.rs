//! The pack store through its public API, on real files. (Damaged files are in
//! `corruption.rs`.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytecode_pack::{Cache, Error, Input, Key, MissReason, NewEntry, abi_tag};
use common::{age_tree, backdate, bytes, cache_files, set_mtime};

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let (tmp, base) = common::canonical_tempdir();
        let src = base.join("src");
        fs::create_dir(&src).unwrap();
        Fixture {
            root: base.join("cache"),
            src,
            _tmp: tmp,
        }
    }

    fn cache(&self) -> Cache {
        Cache::open(&self.root).unwrap()
    }

    /// The key of an entry put in `into` with one input recorded within the 30 ms racy window
    /// of its write, as a lookup through `through` shows (it re-hashes it: `rehashes` counts
    /// one more). A thread descheduled for that long misses the window: then again with a
    /// new file, a bounded number of times.
    fn racy_entry(&self, into: &Cache, through: &Cache, rehashes: &dyn Fn() -> u64) -> Key {
        (0..5)
            .find_map(|attempt| {
                let a = self.src.join(format!("racy{attempt}.js"));
                fs::write(&a, "v1").unwrap();
                let key = Key::for_paths(&[&a]);
                put_with_input(into, &key, &a);
                let before = rehashes();
                assert!(through.get(&key).is_some());
                (rehashes() == before + 1).then_some(key)
            })
            .expect("never recorded within the racy window of its write")
    }

    /// Writes a source file and backdates it past the racy window, as an unchanged tree is.
    fn source(&self, name: &str, content: &str) -> PathBuf {
        let path = self.src.join(name);
        fs::write(&path, content).unwrap();
        backdate(&path);
        path
    }

    fn dir(&self) -> PathBuf {
        self.root.join(abi_tag())
    }
}

/// Stores a small entry whose one input is `input`.
fn put_with_input(cache: &Cache, key: &Key, input: &Path) {
    let entry = NewEntry::new("a", b"bc").inputs(vec![Input::path(input)]);
    cache.put(key, &entry).unwrap();
}

#[test]
fn round_trip_with_every_field() {
    let f = Fixture::new();
    let cache = f.cache();
    let main = f.source("main.js", "export default 1");
    let helper = f.source("helper.js", "export const h = 2");
    let key = Key::for_paths(&[&main]);
    let bc = bytes(1, 5000);
    let entry = NewEntry::new("main.js", &bc)
        .source_map(r#"{"version":3,"sources":["main.js"]}"#)
        .aux("imports: helper.js")
        .inputs(vec![Input::path(&main), Input::path(&helper)]);
    cache.put(&key, &entry).unwrap();

    for handle in [cache.clone(), f.cache()] {
        let hit = handle.get(&key).expect("hit");
        assert_eq!(hit.bytecode(), &bc[..]);
        assert_eq!(hit.module_name(), "main.js");
        assert_eq!(
            hit.source_map(),
            Some(r#"{"version":3,"sources":["main.js"]}"#)
        );
        assert_eq!(hit.aux(), Some("imports: helper.js"));
    }
    let plain = Key::for_source("plain", b"x");
    cache.put(&plain, &NewEntry::new("plain", b"bc")).unwrap();
    let hit = cache.get(&plain).unwrap();
    assert_eq!((hit.source_map(), hit.aux()), (None, None));

    let stats = cache.stats().unwrap();
    assert_eq!(stats.entries, 2);
    assert!(stats.live_bytes > 5000 && stats.pack_bytes >= stats.live_bytes);
    assert_eq!(stats.counters.hits, 2);
    assert_eq!(stats.dir, f.dir());
}

#[test]
fn misses_are_counted_by_reason() {
    let f = Fixture::new();
    let cache = f.cache();
    let key = Key::for_source("m", b"1");
    assert_eq!(cache.lookup(&key).err(), Some(MissReason::Absent));
    let input = f.source("a.js", "a");
    cache
        .put(
            &key,
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]),
        )
        .unwrap();
    fs::write(&input, "b").unwrap();
    assert_eq!(cache.lookup(&key).err(), Some(MissReason::Stale));
    let c = cache.stats().unwrap().counters;
    assert_eq!(
        (c.misses_absent, c.misses_stale, c.hits, c.puts),
        (1, 1, 0, 1)
    );
}

#[test]
fn edited_deleted_and_replaced_inputs_miss() {
    let f = Fixture::new();
    let cache = f.cache();
    let a = f.source("a.js", "const a = 1;");
    let b = f.source("b.js", "const b = 1;");
    let key = Key::for_paths(&[&a]);
    let put = || {
        cache
            .put(
                &key,
                &NewEntry::new("a", b"bc").inputs(vec![Input::path(&a), Input::path(&b)]),
            )
            .unwrap()
    };

    put();
    assert!(cache.get(&key).is_some());
    fs::write(&b, "const b = 2;").unwrap(); // same size, new content
    backdate(&b);
    assert!(cache.get(&key).is_none(), "edit of a dependency");

    put();
    assert!(cache.get(&key).is_some());
    fs::remove_file(&b).unwrap();
    assert!(cache.get(&key).is_none(), "deleted dependency");

    f.source("b.js", "const b = 2;");
    put();
    assert!(cache.get(&key).is_some());
    let tmp = f.src.join("b.new");
    fs::write(&tmp, "const b = 3;").unwrap();
    backdate(&tmp);
    fs::rename(&tmp, &b).unwrap(); // replaced by rename, old mtime
    assert!(cache.get(&key).is_none(), "replaced dependency");
}

#[test]
fn same_content_rewrite_still_hits() {
    let f = Fixture::new();
    let cache = f.cache();
    let a = f.source("a.js", "same");
    let key = Key::for_paths(&[&a]);
    put_with_input(&cache, &key, &a);
    fs::write(&a, "same").unwrap(); // new mtime and ctime, same bytes
    assert!(cache.get(&key).is_some());
}

/// A same-size edit with the mtime put back: the ctime tells it apart (and within one tick of
/// the kernel's clock, the racy window does: the stat data was too young to vouch).
#[test]
fn a_same_size_edit_with_its_mtime_put_back_misses() {
    let f = Fixture::new();
    let cache = f.cache();
    let a = f.src.join("a.js");
    fs::write(&a, "v1").unwrap();
    let stamp = SystemTime::now();
    set_mtime(&a, stamp);
    let key = Key::for_paths(&[&a]);
    put_with_input(&cache, &key, &a);
    assert!(cache.get(&key).is_some());
    // Same size, same mtime, within the same second: stat data alone cannot tell.
    fs::write(&a, "v2").unwrap();
    set_mtime(&a, stamp);
    assert!(cache.get(&key).is_none());
}

/// An input recorded just after it was written is racy: each lookup re-hashes it. A lookup
/// that re-hashes it once it is older than the racy window has it re-recorded by the next
/// write (here `refresh_racy`), after which a `stat` vouches for it again.
#[test]
fn a_racy_input_is_re_recorded_once_old_enough() {
    let f = Fixture::new();
    let cache = f.cache();
    let rehashes = || cache.stats().unwrap().counters.input_rehashes;
    let key = f.racy_entry(&cache, &cache, &rehashes);
    let racy = rehashes();
    assert_eq!(cache.refresh_racy().unwrap(), 0, "too young to re-record");
    std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(20));
    assert!(cache.get(&key).is_some());
    assert_eq!(
        rehashes(),
        racy + 1,
        "racy as recorded, but now old enough to re-record"
    );
    assert_eq!(cache.refresh_racy().unwrap(), 1);
    for _ in 0..3 {
        assert!(cache.get(&key).is_some());
    }
    assert_eq!(rehashes(), racy + 1, "one stat each since");
}

/// A process that only reads heals too: its lookups re-hash a racy input, and the last handle,
/// when dropped, re-records it if the writer lock is free at once, as `git status` refreshes
/// its index. The next process's hit then costs one `stat`, as an aged entry's does.
#[test]
fn a_reader_that_never_writes_re_records_racy_inputs_when_its_last_handle_goes() {
    let f = Fixture::new();
    let writer = f.cache();
    // Recorded within the racy window of its write (a bounded number of tries: a thread
    // descheduled for 30 ms misses it).
    let key = (0..5)
        .find_map(|attempt| {
            let a = f.src.join(format!("a{attempt}.js"));
            fs::write(&a, "v1").unwrap();
            let key = Key::for_paths(&[&a]);
            put_with_input(&writer, &key, &a);
            let reader = f.cache();
            assert!(reader.get(&key).is_some());
            (reader.stats().unwrap().counters.input_rehashes == 1).then_some(key)
        })
        .expect("never recorded within the racy window of its write");
    drop(writer);
    std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(20));
    let reader = f.cache();
    let clone = reader.clone();
    assert!(reader.get(&key).is_some());
    assert_eq!(reader.stats().unwrap().counters.input_rehashes, 1);
    drop(reader);
    assert_eq!(
        clone.stats().unwrap().counters.publications,
        0,
        "not while a clone lives"
    );
    drop(clone);
    let next = f.cache();
    for _ in 0..3 {
        assert!(next.get(&key).is_some());
    }
    assert_eq!(
        next.stats().unwrap().counters.input_rehashes,
        0,
        "re-recorded when the reader's last handle went"
    );
}

/// A cache under another ([`CacheBuilder::fall_back_to`]) is never written through it, even
/// where this process could write it: what lookups through the upper one find racy in it is
/// not re-recorded there when the handles go.
#[test]
fn a_cache_underneath_is_never_written_through_the_one_above() {
    let f = Fixture::new();
    let lower = f.cache();
    let upper_root = f.src.parent().unwrap().join("upper");
    let upper = Cache::builder(&upper_root)
        .fall_back_to(lower.clone())
        .open()
        .unwrap();
    let rehashes = || lower.stats().unwrap().counters.input_rehashes;
    // Racy in the lower cache, which would re-record it: found so through the upper one.
    let key = f.racy_entry(&lower, &upper, &rehashes);
    let before = common::files_as_they_are(&f.dir());
    std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(20));
    // Old enough to re-record now: still racy as recorded, so re-hashed again.
    let racy = rehashes();
    assert!(upper.get(&key).is_some());
    assert_eq!(rehashes(), racy + 1);
    drop(upper);
    assert_eq!(common::files_as_they_are(&f.dir()), before);
    assert_eq!(
        lower.refresh_racy().unwrap(),
        0,
        "nothing queued through the upper"
    );
}

/// A sealed cache trusts what it recorded: no input is looked at, so an edit is not seen (the
/// documented danger); the default cache over the same files sees it.
#[test]
fn a_sealed_cache_checks_no_input() {
    let f = Fixture::new();
    let a = f.source("a.js", "v1");
    let key = Key::for_paths(&[&a]);
    put_with_input(&f.cache(), &key, &a);
    let sealed = Cache::builder(&f.root).sealed(true).open().unwrap();
    fs::write(&a, "v2, edited after the cache was sealed").unwrap();
    assert!(f.cache().get(&key).is_none(), "checked: the edit misses");
    assert!(
        sealed.get(&key).is_some(),
        "sealed: the edit is not looked at"
    );
    fs::remove_file(&a).unwrap();
    assert!(sealed.get(&key).is_some());
    assert_eq!(sealed.stats().unwrap().counters.input_rehashes, 0);
}

/// A cache this process cannot write (a read-only directory here; root's, or a read-only
/// mount, in production) opens read-only: hits are served, writes refused with a typed error
/// naming it, and nothing in it changes.
#[cfg(unix)]
#[test]
fn a_cache_this_process_cannot_write_serves_hits_and_refuses_writes() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let a = f.source("a.js", "v1");
    let key = Key::for_paths(&[&a]);
    put_with_input(&f.cache(), &key, &a);
    let mode = |p: &Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    mode(&f.dir(), 0o500);
    let cache = f.cache();
    let writable = !cache.is_read_only();
    mode(&f.dir(), 0o700);
    if writable {
        // Root may write anywhere a mount allows: the unprivileged case is in environment.rs.
        common::skipped(
            "a_cache_this_process_cannot_write_serves_hits_and_refuses_writes",
            "this process may write a mode 0500 directory (root)",
        );
        return;
    }
    mode(&f.dir(), 0o500);
    let files_before = common::files_as_they_are(&f.dir());
    assert!(cache.get(&key).is_some());
    let put = cache.put(&Key::for_source("b", b""), &NewEntry::new("b", b"bc"));
    assert!(
        matches!(&put, Err(Error::ReadOnly { path }) if *path == f.dir()),
        "{put:?}"
    );
    assert!(matches!(cache.compact(), Err(Error::ReadOnly { .. })));
    assert!(matches!(cache.clear(), Err(Error::ReadOnly { .. })));
    assert_eq!(cache.refresh_racy().unwrap(), 0);
    drop(cache);
    assert_eq!(common::files_as_they_are(&f.dir()), files_before);
    mode(&f.dir(), 0o700);
}

#[test]
fn content_read_by_the_compiler_must_still_be_there() {
    let f = Fixture::new();
    let cache = f.cache();
    let a = f.source("a.js", "edited after compile");
    let key = Key::for_paths(&[&a]);
    let entry =
        NewEntry::new("a", b"bc").inputs(vec![Input::with_content(&a, b"what the compiler read")]);
    cache.put(&key, &entry).unwrap();
    assert!(cache.get(&key).is_none());

    let entry =
        NewEntry::new("a", b"bc").inputs(vec![Input::with_content(&a, b"edited after compile")]);
    cache.put(&key, &entry).unwrap();
    assert!(cache.get(&key).is_some());
}

#[test]
fn missing_input_is_a_typed_error_with_the_path() {
    let f = Fixture::new();
    let cache = f.cache();
    let missing = f.src.join("nope.js");
    let err = cache
        .put(
            &Key::for_source("m", b""),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&missing)]),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Input { path, .. } if path.ends_with("nope.js")),
        "{err}"
    );
}

#[test]
fn a_later_put_supersedes() {
    let f = Fixture::new();
    let cache = f.cache();
    let other = f.cache();
    let key = Key::for_source("m", b"src");
    cache.put(&key, &NewEntry::new("m", b"first")).unwrap();
    assert_eq!(cache.get(&key).unwrap().bytecode(), b"first");
    assert_eq!(other.get(&key).unwrap().bytecode(), b"first");
    cache.put(&key, &NewEntry::new("m", b"second")).unwrap();
    assert_eq!(cache.get(&key).unwrap().bytecode(), b"second");
    assert_eq!(f.cache().get(&key).unwrap().bytecode(), b"second");
    assert_eq!(cache.stats().unwrap().entries, 1);
}

#[test]
fn compaction_keeps_live_entries_shrinks_the_pack_and_old_hits_stay_valid() {
    let f = Fixture::new();
    let cache = f.cache();
    let doomed_input = f.source("doomed.js", "x");
    let keys: Vec<Key> = (0..20u8).map(|i| Key::for_source("m", &[i])).collect();
    for round in 0..3u8 {
        for (i, key) in keys.iter().enumerate() {
            cache
                .put(key, &NewEntry::new("m", &bytes(round ^ i as u8, 4000)))
                .unwrap();
        }
    }
    let edited_input = f.source("edited.js", "before");
    let edited = Key::for_source("edited", b"");
    cache
        .put(
            &edited,
            &NewEntry::new("e", b"bc").inputs(vec![Input::path(&edited_input)]),
        )
        .unwrap();
    fs::write(&edited_input, "after!").unwrap();
    backdate(&edited_input);
    let doomed = Key::for_source("doomed", b"");
    cache
        .put(
            &doomed,
            &NewEntry::new("d", b"bc").inputs(vec![Input::path(&doomed_input)]),
        )
        .unwrap();
    let held = cache.get(&keys[0]).unwrap();
    let held_bytes = held.bytecode().to_vec();
    let before = cache.stats().unwrap();
    fs::remove_file(&doomed_input).unwrap();

    let report = cache.compact().unwrap();
    assert_eq!(report.entries_before, 22);
    assert_eq!(report.entries_after, 20);
    assert_eq!(report.dropped_stale, 2, "a deleted and an edited input");
    let after = cache.stats().unwrap();
    assert!(
        after.pack_bytes * 2 < before.pack_bytes,
        "{} -> {}",
        before.pack_bytes,
        after.pack_bytes
    );
    assert_eq!(after.pack_bytes, after.live_bytes);
    assert_eq!(after.generation, before.generation + 1);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            cache.get(key).unwrap().bytecode(),
            &bytes(2 ^ i as u8, 4000)[..]
        );
    }
    // The hit taken before still reads the old (now unlinked) generation.
    assert_eq!(held.bytecode(), &held_bytes[..]);
    let packs = common::cache_files_named(&f.dir(), "pack-").len();
    assert_eq!(packs, 1, "old generation removed");
    assert!(cache.verify().unwrap().is_ok());
}

#[test]
fn dead_space_triggers_compaction_automatically() {
    let f = Fixture::new();
    let cache = Cache::builder(&f.root)
        .auto_compact(64 << 10, 0.5)
        .open()
        .unwrap();
    let key = Key::for_source("m", b"");
    for i in 0..40u8 {
        cache
            .put(&key, &NewEntry::new("m", &bytes(i, 8000)))
            .unwrap();
    }
    let stats = cache.stats().unwrap();
    assert!(stats.counters.compactions >= 1);
    assert!(
        stats.pack_bytes < (64 << 10) + 16000,
        "pack stayed small: {}",
        stats.pack_bytes
    );
    assert_eq!(cache.get(&key).unwrap().bytecode(), &bytes(39, 8000)[..]);
}

#[test]
fn size_limit_evicts_least_recently_inserted_first() {
    let f = Fixture::new();
    let cache = Cache::builder(&f.root).max_bytes(100_000).open().unwrap();
    let keys: Vec<Key> = (0..30u8).map(|i| Key::for_source("m", &[i])).collect();
    for (i, key) in keys.iter().enumerate() {
        cache
            .put(key, &NewEntry::new("m", &bytes(i as u8, 9000)))
            .unwrap();
    }
    let stats = cache.stats().unwrap();
    assert!(stats.live_bytes <= 100_000);
    assert!(cache.get(&keys[29]).is_some(), "newest kept");
    assert!(cache.get(&keys[0]).is_none(), "oldest evicted");
    let kept: Vec<bool> = keys.iter().map(|k| cache.get(k).is_some()).collect();
    let first_kept = kept.iter().position(|&k| k).unwrap();
    assert!(
        kept[first_kept..].iter().all(|&k| k),
        "evicted in insertion order: {kept:?}"
    );

    let too_big = cache.put(&keys[0], &NewEntry::new("big", &bytes(0, 200_000)));
    assert!(matches!(too_big, Err(Error::InvalidEntry(_))));
}

#[test]
fn clear_removes_everything_and_the_cache_goes_on() {
    let f = Fixture::new();
    let cache = f.cache();
    let key = Key::for_source("m", b"");
    cache.put(&key, &NewEntry::new("m", b"bc")).unwrap();
    let held = cache.get(&key).unwrap();
    cache.clear().unwrap();
    assert!(cache.get(&key).is_none());
    assert!(f.cache().get(&key).is_none());
    assert_eq!(held.bytecode(), b"bc");
    assert_eq!(cache.stats().unwrap().entries, 0);
    cache.put(&key, &NewEntry::new("m", b"again")).unwrap();
    assert_eq!(f.cache().get(&key).unwrap().bytecode(), b"again");
}

#[test]
fn compaction_prunes_caches_of_other_builds_once_unused_long_enough() {
    let f = Fixture::new();
    let cache = f.cache();
    let stale = f.root.join("bp0-quickjs-ng0.1.0-rquickjs0.1-x86_64-le-64");
    let recent = f.root.join("bp0-quickjs-ng0.2.0-rquickjs0.1-x86_64-le-64");
    // Caches of older builds, recognised by their index's magic number.
    for dir in [&stale, &recent] {
        common::create_private_dir(dir);
        fs::write(dir.join("index"), b"BCPKIDX\0old").unwrap();
    }
    let long_ago = Duration::from_secs(31 * 24 * 3600);
    age_tree(&stale, long_ago);
    cache
        .put(&Key::for_source("m", b""), &NewEntry::new("m", b"bc"))
        .unwrap();
    assert!(stale.exists(), "only compactions prune");
    cache.compact().unwrap();
    assert!(!stale.exists() && recent.exists() && f.dir().exists());

    let keep = Cache::builder(&f.root)
        .prune_other_abis_after(None)
        .open()
        .unwrap();
    age_tree(&recent, long_ago);
    keep.compact().unwrap();
    assert!(recent.exists(), "pruning can be turned off");
}

#[test]
fn disabled_handles_do_nothing() {
    let f = Fixture::new();
    let cache = Cache::builder(&f.root).disabled(true).open().unwrap();
    let key = Key::for_source("m", b"");
    cache.put(&key, &NewEntry::new("m", b"bc")).unwrap();
    assert_eq!(cache.lookup(&key).err(), Some(MissReason::Disabled));
    assert!(!f.root.exists(), "a disabled cache touches no files");
}

#[test]
fn verify_reports_a_damaged_segment() {
    let f = Fixture::new();
    let cache = f.cache();
    cache
        .put(
            &Key::for_source("m", b""),
            &NewEntry::new("m", &bytes(1, 1000)),
        )
        .unwrap();
    assert!(cache.verify().unwrap().is_ok());
    let pack = common::pack_file(&f.dir());
    let mut content = fs::read(&pack).unwrap();
    let at = content.len() - 10;
    content[at] ^= 1;
    fs::write(&pack, content).unwrap();
    let report = cache.verify().unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.contains("checksum")),
        "{report:?}"
    );
    let compacted = cache.compact().unwrap();
    assert_eq!(compacted.dropped_corrupt, 1);
    assert!(cache.verify().unwrap().is_ok());
}

/// A source map or aux segment is checked when it is read, not at every hit: one whose bytes
/// are damaged is absent from the hit, whose bytecode (checked) still serves, and `verify`
/// reports it.
#[test]
fn a_damaged_sidecar_is_absent_and_its_bytecode_still_serves() {
    let map = "{\"version\":3,\"mappings\":\"MAP-SEGMENT\"}";
    let aux = "AUX-SEGMENT-BYTES";
    for (damaged, needle) in [("map", "MAP-SEGMENT"), ("aux", "AUX-SEGMENT")] {
        let f = Fixture::new();
        let cache = f.cache();
        let key = Key::for_source("m", b"");
        let code = bytes(2, 500);
        let entry = NewEntry::new("m", &code).source_map(map).aux(aux);
        cache.put(&key, &entry).unwrap();
        drop(cache);
        let pack = common::pack_file(&f.dir());
        let mut content = fs::read(&pack).unwrap();
        let at = content
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("the segment is in the pack");
        content[at] ^= 0x20;
        fs::write(&pack, content).unwrap();

        let cache = f.cache();
        let hit = cache.lookup(&key).expect("the bytecode is intact");
        assert_eq!(hit.bytecode(), &code[..]);
        let (expected_map, expected_aux) = match damaged {
            "map" => (None, Some(aux)),
            _ => (Some(map), None),
        };
        assert_eq!(hit.source_map(), expected_map, "{damaged} damaged");
        assert_eq!(hit.aux(), expected_aux, "{damaged} damaged");
        let report = cache.verify().unwrap();
        assert!(!report.is_ok(), "{damaged} damaged: {report:?}");
    }
}

#[cfg(unix)]
mod permissions {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn created_private() {
        let f = Fixture::new();
        let cache = f.cache();
        cache
            .put(&Key::for_source("m", b""), &NewEntry::new("m", b"bc"))
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f.root), 0o700);
        assert_eq!(mode(&f.dir()), 0o700);
        for file in cache_files(&f.dir()) {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

    #[test]
    fn group_writable_root_is_refused() {
        let f = Fixture::new();
        fs::create_dir(&f.root).unwrap();
        fs::set_permissions(&f.root, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Cache::open(&f.root).err().expect("refused");
        assert!(
            matches!(&err, Error::Insecure { path, .. } if path == &f.root),
            "{err}"
        );
        assert!(err.to_string().contains("group or others"), "{err}");
    }

    #[test]
    fn root_owned_by_another_user_is_refused() {
        let f = Fixture::new();
        fs::create_dir(&f.root).unwrap();
        // Only root can give a directory away; skip the check where that is impossible.
        if let Err(e) = std::os::unix::fs::chown(&f.root, Some(65534), Some(65534)) {
            common::skipped(
                "root_owned_by_another_user_is_refused",
                &format!("needs root to give a directory away ({e})"),
            );
            return;
        }
        let err = Cache::open(&f.root).err().expect("refused");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn symlinked_cache_dir_is_refused() {
        let f = Fixture::new();
        common::create_private_dir(&f.root);
        let elsewhere = f.src.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, f.dir()).unwrap();
        let err = Cache::open(&f.root).err().expect("refused");
        assert!(
            matches!(&err, Error::Insecure { path, .. } if path == &f.dir()),
            "{err}"
        );
    }

    #[test]
    fn symlinked_files_inside_are_not_followed() {
        let f = Fixture::new();
        let cache = f.cache();
        cache
            .put(&Key::for_source("m", b""), &NewEntry::new("m", b"bc"))
            .unwrap();
        let index = f.dir().join("index");
        let copy = f.src.join("index-copy");
        fs::copy(&index, &copy).unwrap();
        fs::remove_file(&index).unwrap();
        symlink(&copy, &index).unwrap();
        // Opening reads the index: the symlink is damage naming it, not a followed link, and
        // every lookup through a new handle misses.
        let other = Cache::open(&f.root).unwrap();
        let damage = other.stats().unwrap().damage.expect("damage reported");
        assert!(
            damage.contains("index") && damage.contains("symbolic link"),
            "{damage}"
        );
        assert!(other.get(&Key::for_source("m", b"")).is_none());
        // An existing handle keeps serving the index it mapped before the link appeared.
        assert!(
            cache.get(&Key::for_source("m", b"")).is_some(),
            "own snapshot still valid"
        );
        let lock = f.dir().join("lock");
        fs::remove_file(&lock).unwrap();
        symlink(f.src.join("victim"), &lock).unwrap();
        let err = cache
            .put(&Key::for_source("x", b""), &NewEntry::new("x", b"bc"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } | Error::Insecure { path, .. } if path == &lock),
            "{err:?}"
        );
        assert!(
            !f.src.join("victim").exists(),
            "no file created through the link"
        );
        // With a real lock file again, the next write replaces the symlinked index with a
        // file of its own, and the link's target is untouched.
        fs::remove_file(&lock).unwrap();
        let before = fs::read(&copy).unwrap();
        other
            .put(&Key::for_source("x", b""), &NewEntry::new("x", b"bc"))
            .unwrap();
        assert!(fs::symlink_metadata(&index).unwrap().is_file());
        assert_eq!(fs::read(&copy).unwrap(), before);
        assert!(other.stats().unwrap().damage.is_none());
    }
}

/// With `Durability::Full` every kind of publication works as with the default: puts that
/// split the index into a base and deltas and merge them again, a compaction, a clear, and
/// puts after it, each seen by a second handle. (That the flushes make them survive a power
/// loss is the flushes' order, which FORMAT.md states; a test cannot cut the power.)
#[test]
fn full_durability_publishes_every_kind_of_write() {
    let (_tmp, base) = common::canonical_tempdir();
    let root = base.join("cache");
    let cache = Cache::builder(&root)
        .durability(bytecode_pack::Durability::Full)
        .open()
        .unwrap();
    let key = |i: u32| common::key("full", i);
    let value = |i: u32| format!("bytecode {i}").into_bytes();
    // A new handle each time: one that hits keeps its snapshot until its next miss.
    let reader = || Cache::open(&root).unwrap();
    let all_there = |upto: u32| {
        let reader = reader();
        (0..upto).all(|i| {
            reader
                .get(&key(i))
                .is_some_and(|h| h.bytecode() == value(i))
        })
    };
    for i in 0..200 {
        cache.put(&key(i), &NewEntry::new("m", &value(i))).unwrap();
    }
    assert!(all_there(200));
    let dir = root.join(abi_tag());
    assert!(
        !common::cache_files_named(&dir, "base-").is_empty(),
        "no base and delta"
    );
    cache.compact().unwrap();
    assert!(all_there(200));
    cache.clear().unwrap();
    assert!(reader().get(&key(0)).is_none());
    cache.put(&key(0), &NewEntry::new("m", &value(0))).unwrap();
    assert!(all_there(1));
}
