//! Hostile and careless inputs: FIFOs, devices, sockets, directories, dangling and looping
//! symlinks, files growing while read and unreadable files, in every position the cache
//! touches (inputs at `put`, inputs at `get`, the cache's own files, the cache directory, the
//! root). Every operation must end, return a miss or a typed error, and leave everything
//! outside the cache's own files as it was.
//!
//! Anything that could hang runs in a child process (this binary re-invoked) that the parent
//! kills at a time limit; the child prints each step first, so a hang names its step.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytecode_pack::{Cache, Error, Input, Key, MissReason, NewEntry, abi_tag};
use common::child::Child;
use common::let_ctime_age;

const LIMIT: Duration = Duration::from_secs(60);

/// Prints a step before it runs, flushed, so a parent that kills a hung child can name it.
fn step(what: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "step: {what}").unwrap();
    out.flush().unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

/// A tree of a user's files beside the cache: recorded before, compared after.
struct Outside {
    dir: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Outside {
    fn new(base: &Path) -> Outside {
        let dir = base.join("outside");
        fs::create_dir_all(dir.join("nested")).unwrap();
        fs::write(dir.join("precious.txt"), "do not touch").unwrap();
        fs::write(dir.join("nested/notes.txt"), "mine").unwrap();
        let mut outside = Outside {
            dir,
            before: BTreeMap::new(),
        };
        outside.before = outside.listing();
        outside
    }

    fn victim(&self) -> PathBuf {
        self.dir.join("precious.txt")
    }

    fn listing(&self) -> BTreeMap<PathBuf, String> {
        fn walk(path: &Path, out: &mut BTreeMap<PathBuf, String>) {
            let meta = fs::symlink_metadata(path).unwrap();
            let what = if meta.is_dir() {
                for e in fs::read_dir(path).unwrap() {
                    walk(&e.unwrap().path(), out);
                }
                "dir".to_owned()
            } else if meta.is_file() {
                format!(
                    "{:?} {:?}",
                    fs::read(path).unwrap(),
                    meta.modified().unwrap()
                )
            } else {
                format!("{:?}", meta.file_type())
            };
            out.insert(path.to_path_buf(), what);
        }
        let mut out = BTreeMap::new();
        walk(&self.dir, &mut out);
        out
    }

    fn assert_unchanged(&self, context: &str) {
        assert_eq!(
            self.listing(),
            self.before,
            "{context}: files outside the cache changed"
        );
    }
}

/// The special things a path can be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fifo,
    Directory,
    Socket,
    LinkToDevZero,
    LinkToDevNull,
    LinkToUserFile,
    Dangling,
    Loop,
    Unreadable,
}

const KINDS: [Kind; 9] = [
    Kind::Fifo,
    Kind::Directory,
    Kind::Socket,
    Kind::LinkToDevZero,
    Kind::LinkToDevNull,
    Kind::LinkToUserFile,
    Kind::Dangling,
    Kind::Loop,
    Kind::Unreadable,
];

/// Puts `kind` at `path` (which must not exist). Returns what keeps it alive (a socket).
fn make(kind: Kind, path: &Path, outside: &Outside) -> Option<std::os::unix::net::UnixListener> {
    match kind {
        Kind::Fifo => mkfifo(path),
        Kind::Directory => {
            // A user's directory as one usually is, whatever the umask.
            fs::create_dir(path).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(path.join("inside.txt"), "a user's file").unwrap();
        }
        Kind::Socket => return Some(std::os::unix::net::UnixListener::bind(path).unwrap()),
        Kind::LinkToDevZero => symlink("/dev/zero", path).unwrap(),
        Kind::LinkToDevNull => symlink("/dev/null", path).unwrap(),
        Kind::LinkToUserFile => symlink(outside.victim(), path).unwrap(),
        Kind::Dangling => symlink(path.with_extension("nowhere"), path).unwrap(),
        Kind::Loop => {
            let other = path.with_extension("loop");
            symlink(&other, path).unwrap();
            symlink(path, &other).unwrap();
        }
        Kind::Unreadable => {
            fs::write(path, "secret").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
        }
    }
    None
}

/// Removes whatever is at `path` (and a loop's partner), without following links.
fn unmake(path: &Path) {
    let _ = fs::remove_file(path.with_extension("loop"));
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// An error from a cache operation on `root` names the file or directory it is about, which
/// is the root, a file in it, or the directory it is made in (these operations read no
/// input, and nothing here is an invalid entry).
fn typed(e: &Error, root: &Path) -> bool {
    match e {
        Error::Io { path, .. }
        | Error::Insecure { path, .. }
        | Error::Format { path, .. }
        | Error::LockTimeout { path, .. } => {
            path.starts_with(root) || root.parent() == Some(path.as_path())
        }
        _ => false,
    }
}

fn key(i: u32) -> Key {
    common::key("hostile", i)
}

fn payload(i: u32) -> Vec<u8> {
    (0..200 + i).map(|j| (j ^ i) as u8).collect()
}

/// Every operation on a cache under `root`; each must end, and each result must be a hit with
/// the exact bytes, a miss, or a typed error.
fn every_operation(root: &Path, context: &str) {
    step(format!("{context}: open"));
    let cache = match Cache::builder(root)
        .lock_timeout(Duration::from_secs(2))
        .open()
    {
        Ok(cache) => cache,
        Err(e) => {
            assert!(typed(&e, root), "{context}: open: {e:?}");
            return;
        }
    };
    let ok_or_typed = |what: &str, r: Result<(), Error>| {
        if let Err(e) = r {
            assert!(typed(&e, root), "{context}: {what}: {e:?}");
        }
    };
    step(format!("{context}: get"));
    for i in 0..3 {
        if let Some(hit) = cache.get(&key(i)) {
            assert_eq!(hit.bytecode(), &payload(i)[..], "{context}: wrong bytes");
        }
    }
    step(format!("{context}: stats, entries, verify"));
    ok_or_typed("stats", cache.stats().map(drop));
    ok_or_typed("entries", cache.entries().map(drop));
    ok_or_typed("verify", cache.verify().map(drop));
    step(format!("{context}: put"));
    ok_or_typed("put", cache.put(&key(5), &NewEntry::new("m5", &payload(5))));
    step(format!("{context}: compact"));
    ok_or_typed("compact", cache.compact().map(drop));
    step(format!("{context}: get after writes"));
    for i in [0, 5] {
        if let Some(hit) = cache.get(&key(i)) {
            assert_eq!(hit.bytecode(), &payload(i)[..], "{context}: wrong bytes");
        }
    }
    step(format!("{context}: prune"));
    ok_or_typed(
        "prune",
        bytecode_pack::prune_other_abis(root, Duration::ZERO).map(drop),
    );
    step(format!("{context}: clear"));
    ok_or_typed("clear", cache.clear());
}

/// A cache with three entries under `root`.
fn populate(root: &Path) {
    let cache = Cache::open(root).unwrap();
    for i in 0..3 {
        cache
            .put(&key(i), &NewEntry::new("m", &payload(i)))
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each run in a child process with a time limit.

/// Every kind of special file as an input at `put`, and as an input that was a small (or
/// empty) file at `put` and is replaced before `get` and `compact`.
fn special_inputs(base: &Path) {
    let outside = Outside::new(base);
    let root = base.join("cache");
    let src = base.join("src");
    fs::create_dir(&src).unwrap();
    for kind in KINDS {
        for content in ["", "export default 1"] {
            let context = format!("{kind:?} input (was {} bytes)", content.len());
            let path = src.join("input.js");
            let _ = fs::remove_dir_all(&root);
            let cache = Cache::open(&root).unwrap();

            step(format!("{context}: put"));
            let _keep = make(kind, &path, &outside);
            let put = cache.put(
                &key(10),
                &NewEntry::new("m", b"bc").inputs(vec![Input::path(&path)]),
            );
            match (kind, put) {
                // Root reads any mode; otherwise an unreadable file is an input error too.
                (Kind::Unreadable | Kind::LinkToUserFile, Ok(())) => {}
                (_, Ok(())) => panic!("{context}: a special input was accepted"),
                (_, Err(e)) => assert!(
                    matches!(&e, Error::Input { path: p, .. } if p.ends_with("input.js")),
                    "{context}: {e:?}"
                ),
            }
            unmake(&path);

            step(format!("{context}: put a regular file"));
            fs::write(&path, content).unwrap();
            let_ctime_age();
            cache
                .put(
                    &key(11),
                    &NewEntry::new("m", b"bc").inputs(vec![Input::path(&path)]),
                )
                .unwrap();
            assert!(cache.get(&key(11)).is_some(), "{context}");
            fs::remove_file(&path).unwrap();
            let _keep = make(kind, &path, &outside);
            step(format!("{context}: get after the swap"));
            assert!(cache.get(&key(11)).is_none(), "{context}");
            assert!(
                Cache::open(&root).unwrap().get(&key(11)).is_none(),
                "{context}"
            );
            step(format!("{context}: compact"));
            let report = cache.compact().unwrap();
            assert!(report.dropped_stale >= 1, "{context}");
            assert!(
                cache.entries().unwrap().iter().all(|e| e.key != key(11)),
                "{context}"
            );
            step(format!("{context}: another writer is not blocked"));
            Cache::builder(&root)
                .lock_timeout(Duration::from_secs(2))
                .open()
                .unwrap()
                .put(&key(12), &NewEntry::new("m", b"x"))
                .unwrap();
            unmake(&path);
            outside.assert_unchanged(&context);
        }
    }
}

/// A file that grows while it is read, as an input at `put` and at `get`.
fn growing_input(base: &Path) {
    let root = base.join("cache");
    let path = base.join("growing.js");
    fs::write(&path, "x".repeat(1 << 16)).unwrap();
    let cache = Cache::open(&root).unwrap();
    cache
        .put(
            &key(1),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&path)]),
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let grower = {
        let (stop, path) = (Arc::clone(&stop), path.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < LIMIT / 2 {
                // ~40 MB/s, capped at 512 MiB: it keeps growing for the seconds the test takes.
                if f.metadata().unwrap().len() < 512 << 20 {
                    f.write_all(&[b'y'; 4096]).unwrap();
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let started = Instant::now();
    while fs::metadata(&path).unwrap().len() == 1 << 16 && started.elapsed() < LIMIT / 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    step("growing input: get");
    assert!(cache.get(&key(1)).is_none());
    step("growing input: put");
    let put = cache.put(
        &key(2),
        &NewEntry::new("m", b"bc").inputs(vec![Input::path(&path)]),
    );
    assert!(put.is_ok(), "{put:?}");
    step("growing input: get what was put while it grew");
    // A hit here is right only if no byte was appended since the put; either way it ends.
    let _ = cache.get(&key(2));
    stop.store(true, Ordering::Relaxed);
    grower.join().unwrap();
    // What this scenario proves is that put and get end on a file that keeps growing; the
    // last check only confirms a change after the put is a miss (any change would be).
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"z")
        .unwrap();
    assert!(cache.get(&key(2)).is_none());
}

/// Every kind of special file in place of each of the cache's own files, then every
/// operation.
fn special_cache_files(base: &Path) {
    let outside = Outside::new(base);
    let root = base.join("cache");
    for kind in KINDS {
        for name in ["index", "pack", "lock", "CACHEDIR.TAG", ".tmp-leftover"] {
            let context = format!("{kind:?} as {name}");
            let _ = fs::remove_dir_all(&root);
            populate(&root);
            let dir = root.join(abi_tag());
            let path = if name == "pack" {
                common::pack_file(&dir)
            } else {
                dir.join(name)
            };
            unmake(&path);
            let _keep = make(kind, &path, &outside);
            every_operation(&root, &context);
            outside.assert_unchanged(&context);
            // A directory put in place of a cache file is a user's: never deleted.
            if let Kind::Directory = kind {
                assert!(path.join("inside.txt").exists(), "{context}");
            }
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        }
    }
}

/// Every kind of special file as the root and as the cache directory.
fn special_root_and_dir(base: &Path) {
    let outside = Outside::new(base);
    for kind in KINDS {
        let root = base.join("root");
        let context = format!("{kind:?} as the root");
        let _keep = make(kind, &root, &outside);
        every_operation(&root, &context);
        outside.assert_unchanged(&context);
        let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o700));
        unmake(&root);

        let context = format!("{kind:?} as the cache directory");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = root.join(abi_tag());
        let _keep = make(kind, &dir, &outside);
        every_operation(&root, &context);
        outside.assert_unchanged(&context);
        if let Kind::Directory = kind {
            assert!(dir.join("inside.txt").exists(), "{context}");
        }
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        unmake(&dir);
        fs::remove_dir_all(&root).unwrap();
    }
}

/// An input recorded empty, then replaced by a FIFO: `get` and `compact` (which holds the
/// writer lock) must not block on it.
fn fifo_replacing_an_empty_input(base: &Path) {
    let root = base.join("cache");
    let input = base.join("empty.js");
    fs::write(&input, "").unwrap();
    let_ctime_age();
    let cache = Cache::open(&root).unwrap();
    cache
        .put(
            &key(1),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]),
        )
        .unwrap();
    fs::remove_file(&input).unwrap();
    mkfifo(&input);
    step("get");
    assert_eq!(cache.lookup(&key(1)).err(), Some(MissReason::Stale));
    step("compact");
    assert_eq!(cache.compact().unwrap().dropped_stale, 1);
    step("put from another handle");
    let other = Cache::builder(&root)
        .lock_timeout(Duration::from_secs(1))
        .open()
        .unwrap();
    other.put(&key(2), &NewEntry::new("m", b"bc")).unwrap();
}

/// `/dev/zero` as an input, directly and through a symlink that replaced an empty file.
fn dev_zero_input(base: &Path) {
    let root = base.join("cache");
    let cache = Cache::open(&root).unwrap();
    step("put /dev/zero");
    let err = cache
        .put(
            &key(1),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path("/dev/zero")]),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Input { path, .. } if path == Path::new("/dev/zero")),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let input = base.join("empty.js");
    fs::write(&input, "").unwrap();
    let_ctime_age();
    cache
        .put(
            &key(2),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]),
        )
        .unwrap();
    fs::remove_file(&input).unwrap();
    symlink("/dev/zero", &input).unwrap();
    step("get through a symlink to /dev/zero");
    assert!(cache.get(&key(2)).is_none());
}

/// The index replaced by a FIFO: open, get, put and stats go on; the next write rebuilds.
fn index_replaced_by_a_fifo(base: &Path) {
    let root = base.join("cache");
    populate(&root);
    let index = root.join(abi_tag()).join("index");
    fs::remove_file(&index).unwrap();
    mkfifo(&index);
    step("open");
    let cache = Cache::open(&root).unwrap();
    step("get");
    assert_eq!(cache.lookup(&key(0)).err(), Some(MissReason::Corrupt));
    step("stats");
    let damage = cache.stats().unwrap().damage.expect("reported");
    assert!(
        damage.contains("index") && damage.contains("FIFO"),
        "{damage}"
    );
    step("put");
    cache
        .put(&key(7), &NewEntry::new("m", &payload(7)))
        .unwrap();
    assert_eq!(cache.get(&key(7)).unwrap().bytecode(), &payload(7)[..]);
    assert!(fs::symlink_metadata(&index).unwrap().is_file());
}

/// A user's directory in the index's place: readers miss, writes fail with an error naming
/// the index (a file cannot be renamed over a directory) and leave the directory as it was.
fn index_replaced_by_a_directory(base: &Path) {
    let root = base.join("cache");
    populate(&root);
    let index = root.join(abi_tag()).join("index");
    fs::remove_file(&index).unwrap();
    fs::create_dir(&index).unwrap();
    fs::write(index.join("inside.txt"), b"user data").unwrap();
    let cache = Cache::open(&root).unwrap();
    assert_eq!(cache.lookup(&key(0)).err(), Some(MissReason::Corrupt));
    for (what, result) in [
        ("put", cache.put(&key(7), &NewEntry::new("m", &payload(7)))),
        ("compact", cache.compact().map(drop)),
        ("clear", cache.clear()),
    ] {
        match result {
            Err(Error::Io { path, .. }) => assert_eq!(path, index, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(fs::read(index.join("inside.txt")).unwrap(), b"user data");
    assert!(cache.get(&key(7)).is_none());
}

/// A relative root names the directory it named when the cache was opened, whatever the
/// process's working directory is later.
fn relative_root_is_resolved_at_open(base: &Path) {
    let first = base.join("first");
    let second = base.join("second");
    fs::create_dir(&first).unwrap();
    fs::create_dir(&second).unwrap();
    std::env::set_current_dir(&first).unwrap();
    let cache = Cache::open("rel-cache").unwrap();
    std::env::set_current_dir(&second).unwrap();
    cache.put(&key(1), &NewEntry::new("m", b"bc")).unwrap();
    assert!(
        first
            .join("rel-cache")
            .join(abi_tag())
            .join("index")
            .exists()
    );
    assert!(!second.join("rel-cache").exists());
    assert!(cache.dir().is_absolute());
}

/// A 1 GiB input is hashed streaming: the process's peak memory stays far below its size.
fn huge_input_is_streamed(base: &Path) {
    let input = base.join("huge.js");
    fs::File::create(&input).unwrap().set_len(1 << 30).unwrap();
    let cache = Cache::open(base.join("cache")).unwrap();
    cache
        .put(
            &key(1),
            &NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]),
        )
        .unwrap();
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_SELF is valid.
    let max_rss_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage.ru_maxrss
    };
    assert!(max_rss_kib < 256 << 10, "peak RSS {max_rss_kib} KiB");
}

/// An input past the 4 GiB an input may have (a sparse file, as `/proc/kcore` claims 128 TiB)
/// fails `put` with its size at once instead of being read.
fn oversized_input_is_refused_unread(base: &Path) {
    let input = base.join("vast.js");
    fs::File::create(&input).unwrap().set_len(5 << 30).unwrap();
    let cache = Cache::open(base.join("cache")).unwrap();
    let put = cache.put(
        &key(1),
        &NewEntry::new("m", b"bc").inputs(vec![Input::path(&input)]),
    );
    match put {
        Err(Error::Input { path, source }) => {
            assert_eq!(path, input);
            assert!(source.to_string().contains("5368709120 bytes"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(cache.get(&key(1)).is_none());
}

/// Files of the kernel's pseudo filesystems look like regular files whose stat data never
/// moves (`/proc/self/status` is 0 bytes long, and its ctime stays put while its content
/// changes). They are refused as inputs with a typed error naming them, whether named by
/// hand, with the compiler's bytes, or through a source map's `sources`.
fn pseudo_filesystem_inputs_are_refused(base: &Path) {
    let cache = Cache::open(base.join("cache")).unwrap();
    let mut pseudo: Vec<PathBuf> = vec!["/proc/self/status".into()];
    pseudo.extend(
        [
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "/sys/power/state",
        ]
        .map(PathBuf::from)
        .into_iter()
        .filter(|p| p.is_file()),
    );
    for (i, path) in pseudo.iter().enumerate() {
        step(path.display());
        assert!(
            path.is_file(),
            "{} looks like a regular file",
            path.display()
        );
        let content = fs::read(path).unwrap();
        for input in [Input::path(path), Input::with_content(path, &content)] {
            let put = cache.put(
                &key(i as u32),
                &NewEntry::new("m", b"bc").inputs(vec![input]),
            );
            match put {
                Err(Error::Input {
                    path: named,
                    source,
                }) => {
                    assert_eq!(&named, path);
                    assert!(source.to_string().contains("pseudo filesystem"), "{source}");
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }
    step("through a source map");
    let map = r#"{"version":3,"sources":["/proc/self/status"],"names":[],"mappings":""}"#;
    let inputs = bytecode_pack::collect_inputs(&[] as &[&Path], Some(map), base);
    let inputs: Vec<Input> = inputs.into_iter().map(Input::path).collect();
    assert_eq!(inputs.len(), 1);
    let put = cache.put(&key(9), &NewEntry::new("bundle", b"bc").inputs(inputs));
    assert!(matches!(put, Err(Error::Input { .. })), "{put:?}");
    assert_eq!(cache.stats().unwrap().entries, 0);
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        fn dispatch(name: &str, base: &Path) {
            match name {
                $(stringify!($name) => $name(base),)*
                other => panic!("unknown scenario {other}"),
            }
        }
        mod in_a_child_with_a_time_limit {
            $(#[test] fn $name() { super::in_child(stringify!($name)); })*
        }
    };
}

scenarios!(
    special_inputs,
    growing_input,
    special_cache_files,
    special_root_and_dir,
    fifo_replacing_an_empty_input,
    dev_zero_input,
    index_replaced_by_a_fifo,
    index_replaced_by_a_directory,
    relative_root_is_resolved_at_open,
    huge_input_is_streamed,
    oversized_input_is_refused_unread,
    pseudo_filesystem_inputs_are_refused,
);

/// The child's entry point.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(name) = common::child::role() else {
        return;
    };
    let base = common::child::path_var("BP_BASE");
    dispatch(&name, &base);
    step("done");
}

/// Runs scenario `name` in a child process; fails if it fails or outlives [`LIMIT`].
fn in_child(name: &str) {
    let (_tmp, base) = common::canonical_tempdir();
    let work = base.join("work");
    fs::create_dir(&work).unwrap();
    let stdout = Child::new(name)
        .env("BP_BASE", &work)
        .run_with_limit(LIMIT)
        .expect_success();
    assert!(
        stdout.contains("step: done"),
        "{name}: ended early:\n{stdout}"
    );
    // Undo modes a scenario left, so the temp dir can be removed.
    fn unlock(path: &Path) {
        if let Ok(m) = fs::symlink_metadata(path)
            && !m.file_type().is_symlink()
        {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            if m.is_dir() {
                for e in fs::read_dir(path).into_iter().flatten().flatten() {
                    unlock(&e.path());
                }
            }
        }
    }
    unlock(&work);
}
