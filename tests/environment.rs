//! What the machine does to a cache: a file-size limit (as a full disk), a read-only cache
//! directory, a cache shipped by root and read by an app user (alone, and under a writable
//! one), one another user owns, no home for a per-user cache, the directory deleted under a
//! running process, the same cache opened twice, the access times of inputs read. Limits and privileges are applied in child
//! processes (this binary re-invoked).
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytecode_pack::{Cache, Error, Input, Key, NewEntry, abi_tag};
use common::child::Child;

fn key(i: u32) -> Key {
    common::key("env", i)
}

/// The child: applies its limit, then reports what get and put did, one line each.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let root = common::child::path_var("BP_ROOT");
    match role.as_str() {
        "fsize" => {
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            // SAFETY: plain syscalls on this process with valid arguments. Ignoring SIGXFSZ
            // makes an oversized write fail with EFBIG instead of killing the process, as a
            // full disk fails with ENOSPC.
            unsafe {
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            }
        }
        "read-only" => common::child::become_user(),
        "shipped" => {
            common::child::become_user();
            return shipped(&root);
        }
        "another-users" => {
            common::child::become_user();
            match Cache::open(&root) {
                Err(e @ Error::Insecure { .. }) => println!("open=insecure: {e}"),
                other => println!("open=other: {:?}", other.map(|c| c.is_read_only())),
            }
            return;
        }
        "another-users-input" => {
            common::child::become_user();
            let input = common::child::path_var("BP_INPUT");
            let cache = Cache::open(&root).unwrap();
            let entry = NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]);
            println!("put={:?}", cache.put(&key(2), &entry));
            println!("get={}", cache.get(&key(2)).is_some());
            return;
        }
        "relative-root" => {
            // In the project's parent: the project and its input named relative to it.
            let cache = Cache::open(&root).unwrap();
            let entry = NewEntry::new("m.js", b"bc")
                .inputs(vec![Input::path("proj/m.js")])
                .relative_to(Path::new("proj"));
            println!("put={:?}", cache.put(&key(3), &entry));
            return;
        }
        "no-home" => {
            let cache = Cache::open_default_or_uncached();
            println!("get={:?}", cache.lookup(&key(0)).err());
            println!("put={:?}", cache.put(&key(0), &NewEntry::new("m", b"bc")));
            return;
        }
        other => panic!("unknown role {other}"),
    }
    let cache = Cache::open(&root).unwrap();
    let hit = cache.get(&key(0)).map(|h| h.bytecode().to_vec());
    println!("get={}", hit.as_deref() == Some(&b"small"[..]));
    let big = vec![7u8; 200 << 10];
    match cache.put(&key(1), &NewEntry::new("big", &big)) {
        Ok(()) => println!("put=ok"),
        Err(e @ Error::Io { .. }) => println!("put=io-error: {e}"),
        Err(e @ Error::ReadOnly { .. }) => println!("put=read-only: {e}"),
        Err(e) => println!("put=other-error: {e}"),
    }
    println!("get-after={}", cache.get(&key(0)).is_some());
    // Failed writes roll their appends back: repeating one does not grow the pack.
    let pack_bytes = || cache.stats().unwrap().pack_bytes;
    let before = pack_bytes();
    for _ in 0..20 {
        assert!(cache.put(&key(1), &NewEntry::new("big", &big)).is_err());
    }
    println!("pack-growth={}", pack_bytes() - before);
}

/// In a child, as an app user: the cache under `root` was shipped by root. It opens
/// read-only and serves hits; writes are refused; then a writable cache of this user's
/// (`BP_UPPER`) is put over it: lookups fall through, writes go to the upper one.
fn shipped(root: &Path) {
    let lower = Cache::open(root).unwrap();
    println!("read-only={}", lower.is_read_only());
    println!("get={}", lower.get(&key(0)).is_some());
    match lower.put(&key(1), &NewEntry::new("m", b"new")) {
        Err(Error::ReadOnly { path }) => println!("put=read-only {}", path.display()),
        other => println!("put=other {other:?}"),
    }
    println!(
        "compact={}",
        matches!(lower.compact(), Err(Error::ReadOnly { .. }))
    );
    let upper_root = common::child::path_var("BP_UPPER");
    let layered = Cache::builder(&upper_root)
        .fall_back_to(lower.clone())
        .open()
        .unwrap();
    println!("layered-get={}", layered.get(&key(0)).is_some());
    layered.put(&key(1), &NewEntry::new("m", b"new")).unwrap();
    println!("layered-put-get={}", layered.get(&key(1)).is_some());
    println!("lower-get-after={}", lower.get(&key(1)).is_some());
    println!("upper-entries={}", layered.stats().unwrap().entries);
}

/// Whether this process is root, which the tests of other users' caches need (they give
/// files away); says so in the output when it is not.
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        common::skipped(test, "needs root to give files to other users");
    }
    root
}

/// Makes `path` and everything below it `uid`'s, readable by all, writable by none but its
/// owner (as an image build leaves a shipped cache: `chmod -R go-w,a+rX`).
fn give_tree(path: &Path, uid: u32) {
    chown_tree(path, uid);
    common::tree::ship_tree(path);
}

/// A populated cache root `name` in a new temp dir that other users can traverse, given to
/// `uid` as [`give_tree`] gives it.
fn populated_cache_of(uid: u32, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = common::tempdir();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join(name);
    populated(&root);
    give_tree(&root, uid);
    (tmp, root)
}

/// Runs the child in `role` on the cache under `root` (as user `uid` for "read-only").
fn run_child(role: &str, root: &Path, uid: u32) -> String {
    Child::new(role)
        .env("BP_ROOT", root)
        .run_as(uid)
        .run()
        .expect_success()
}

fn populated(root: &Path) {
    Cache::open(root)
        .unwrap()
        .put(&key(0), &NewEntry::new("small", b"small"))
        .unwrap();
}

#[test]
fn a_file_size_limit_fails_the_put_cleanly_and_reads_go_on() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    populated(&root);
    let out = run_child("fsize", &root, 0);
    assert!(out.contains("get=true"), "{out}");
    assert!(out.contains("put=io-error"), "{out}");
    assert!(
        out.contains("File too large") || out.contains("too large"),
        "{out}"
    );
    assert!(
        out.contains(&abi_tag().to_string()),
        "the error names the file: {out}"
    );
    assert!(out.contains("get-after=true"), "{out}");
    assert!(out.contains("pack-growth=0"), "{out}");
    // The failed put was rolled back: the cache is whole, has no dead bytes, takes writes.
    let cache = Cache::open(&root).unwrap();
    assert!(cache.verify().unwrap().is_ok());
    assert_eq!(cache.stats().unwrap().dead_bytes(), 0);
    cache.put(&key(2), &NewEntry::new("m", b"fine")).unwrap();
    assert!(cache.get(&key(0)).is_some() && cache.get(&key(2)).is_some());
}

/// A new directory at `path`, private to `uid`.
fn private_dir_of(path: &Path, uid: u32) {
    common::create_private_dir(path);
    chown_tree(path, uid);
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn a_read_only_cache_dir_serves_gets_and_fails_puts_cleanly() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    populated(&root);
    let dir = root.join(abi_tag());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    // Root ignores file modes, so as root the child drops to an unprivileged user who owns
    // the cache; otherwise the mode alone makes the directory read-only.
    let uid = if euid == 0 {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(&root, 65534);
        65534
    } else {
        euid
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let out = run_child("read-only", &root, uid);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(out.contains("get=true"), "{out}");
    assert!(out.contains("put=read-only"), "{out}");
    assert!(out.contains("get-after=true"), "{out}");
    assert!(out.contains("pack-growth=0"), "{out}");
}

/// A cache shipped in an image: built by root, owned by root, not writable by anyone else, read
/// by an unprivileged app user. It opens read-only and serves hits; nothing in it changes;
/// a writable cache of the user's put over it falls through to it and takes the writes.
#[test]
fn a_cache_shipped_by_root_serves_an_app_user_and_takes_no_writes() {
    if !root_or_skip("a_cache_shipped_by_root_serves_an_app_user_and_takes_no_writes") {
        return;
    }
    let (tmp, root) = populated_cache_of(0, "shipped");
    let upper = tmp.path().join("upper");
    private_dir_of(&upper, 65534);
    let before = common::files_as_they_are(&root.join(abi_tag()));
    let out = Child::new("shipped")
        .env("BP_ROOT", &root)
        .run_as(65534)
        .env("BP_UPPER", &upper)
        .run()
        .expect_success();
    for line in [
        "read-only=true",
        "get=true",
        "put=read-only",
        "compact=true",
        "layered-get=true",
        "layered-put-get=true",
        "lower-get-after=false",
        "upper-entries=1",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert_eq!(
        common::files_as_they_are(&root.join(abi_tag())),
        before,
        "nothing in the shipped cache changed"
    );
}

/// A cache another ordinary user owns could have been written by them: it stays refused,
/// even where it is not writable by group or others.
#[test]
fn a_cache_another_ordinary_user_owns_is_refused() {
    if !root_or_skip("a_cache_another_ordinary_user_owns_is_refused") {
        return;
    }
    let (_tmp, root) = populated_cache_of(65533, "theirs");
    let out = Child::new("another-users")
        .env("BP_ROOT", &root)
        .run_as(65534)
        .run()
        .expect_success();
    assert!(out.contains("open=insecure"), "{out}");
    assert!(
        out.contains("owned by uid 65533, neither this user"),
        "{out}"
    );
}

/// A service user with no home for a per-user cache: `Cache::open_default` fails, and the easy
/// path the README shows runs uncached (every lookup a miss, every put a no-op).
#[test]
fn with_no_home_for_a_cache_the_easy_path_runs_uncached() {
    let out = Child::new("no-home")
        .env("BP_ROOT", "/nonexistent")
        .env("HOME", "/dev/null")
        .env_remove("XDG_CACHE_HOME")
        .run()
        .expect_success();
    assert!(out.contains("get=Some(Disabled)"), "{out}");
    assert!(out.contains("put=Ok(())"), "{out}");
}

#[test]
fn the_cache_dir_deleted_under_a_running_process() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    cache.put(&key(0), &NewEntry::new("m", b"small")).unwrap();
    let held = cache.get(&key(0)).unwrap();
    std::fs::remove_dir_all(&root).unwrap();

    // What is mapped stays readable; lookups that need the disk miss; nothing panics.
    assert_eq!(held.bytecode(), b"small");
    assert!(cache.get(&key(9)).is_none());
    assert!(cache.stats().is_ok());
    // The next put starts the cache again.
    cache.put(&key(1), &NewEntry::new("m", b"again")).unwrap();
    assert_eq!(cache.get(&key(1)).unwrap().bytecode(), b"again");
    assert_eq!(Cache::open(&root).unwrap().stats().unwrap().entries, 1);
    let mode = std::fs::metadata(root.join(abi_tag()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn the_same_cache_opened_twice_in_one_process() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let (a, b) = (Cache::open(&root).unwrap(), Cache::open(&root).unwrap());
    std::thread::scope(|s| {
        for (t, handle) in [&a, &b].into_iter().enumerate() {
            s.spawn(move || {
                for i in 0..50u32 {
                    let k = key(t as u32 * 1000 + i);
                    handle
                        .put(&k, &NewEntry::new("m", &i.to_le_bytes()))
                        .unwrap();
                    assert_eq!(handle.get(&k).unwrap().bytecode(), &i.to_le_bytes());
                }
            });
        }
    });
    for t in 0..2u32 {
        for i in 0..50u32 {
            assert_eq!(
                a.get(&key(t * 1000 + i)).unwrap().bytecode(),
                &i.to_le_bytes()
            );
            assert!(b.get(&key(t * 1000 + i)).is_some());
        }
    }
    assert_eq!(a.stats().unwrap().entries, 100);
}

/// A file whose access time is an hour older than its mtime, so the next plain read of it
/// updates the access time (relatime, the default mount option, updates an atime that is not
/// newer than the mtime). Returns that access time.
fn with_stale_atime(path: &Path) -> std::time::SystemTime {
    use std::time::{Duration, SystemTime};
    std::fs::write(path, "export const x = 1;\n").unwrap();
    let now = SystemTime::now();
    let times = std::fs::FileTimes::new()
        .set_accessed(now - Duration::from_secs(7200))
        .set_modified(now - Duration::from_secs(3600));
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(times)
        .unwrap();
    std::fs::metadata(path).unwrap().accessed().unwrap()
}

/// Reading an input to hash it does not write its inode (on Linux, where the reader owns it):
/// a fresh copy of a tree would otherwise pay an inode update per file on its first start. A
/// plain read of a control file shows the mount does update access times.
#[test]
#[cfg(target_os = "linux")]
fn hashing_an_input_leaves_its_access_time_alone() {
    let tmp = common::tempdir();
    let (control, input) = (tmp.path().join("control.js"), tmp.path().join("input.js"));
    let control_atime = with_stale_atime(&control);
    let input_atime = with_stale_atime(&input);
    std::fs::read(&control).unwrap();
    if std::fs::metadata(&control).unwrap().accessed().unwrap() == control_atime {
        common::skipped(
            "hashing_an_input_leaves_its_access_time_alone",
            "this filesystem does not update access times on reads (noatime)",
        );
        return;
    }
    let cache = Cache::open(tmp.path().join("cache")).unwrap();
    let entry = NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]);
    cache.put(&key(2), &entry).unwrap();
    assert_eq!(
        std::fs::metadata(&input).unwrap().accessed().unwrap(),
        input_atime,
        "the put read the input with its access time updated"
    );
}

/// Another user's input cannot be read without updating its access time (`O_NOATIME` is
/// refused): it is read as any reader would, and the put and its hit go through.
#[test]
fn an_input_another_user_owns_is_read_all_the_same() {
    if !root_or_skip("an_input_another_user_owns_is_read_all_the_same") {
        return;
    }
    let tmp = common::tempdir();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let input = tmp.path().join("input.js");
    with_stale_atime(&input);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = tmp.path().join("cache");
    private_dir_of(&root, 65534);
    let out = Child::new("another-users-input")
        .env("BP_ROOT", &root)
        .run_as(65534)
        .env("BP_INPUT", &input)
        .run()
        .expect_success();
    for line in ["put=Ok(())", "get=true"] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

/// A root named relative to the working directory is recorded as the directory it names: a
/// process elsewhere (a compaction, `stats`) neither takes it for a deleted tree nor drops it.
#[test]
fn a_root_named_relative_to_the_working_directory_is_recorded_absolute() {
    let tmp = common::tempdir();
    std::fs::create_dir(tmp.path().join("proj")).unwrap();
    std::fs::write(tmp.path().join("proj/m.js"), "export default 1;\n").unwrap();
    let root = tmp.path().join("cache");
    let out = Child::new("relative-root")
        .env("BP_ROOT", &root)
        .current_dir(tmp.path())
        .run()
        .expect_success();
    assert!(out.contains("put=Ok(())"), "{out}");
    // This process's working directory has no `proj`.
    assert!(!Path::new("proj").exists());
    let cache = Cache::open(&root).unwrap();
    let stats = cache.stats().unwrap();
    assert_eq!(stats.dead_bytes(), 0, "{stats:?}");
    cache.compact().unwrap();
    assert!(cache.get(&key(3)).is_some(), "kept by the compaction");
}
