//! Helpers shared by the integration tests. Each test file is its own crate and uses only
//! some of them, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod child;
#[cfg(feature = "quickjs")]
pub mod host;
pub mod tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytecode_pack::Key;

/// The key of entry `i` in a test's `domain`: distinct domains never share keys.
pub fn key(domain: &str, i: u32) -> Key {
    Key::for_source(domain, &i.to_le_bytes())
}

/// `len` bytes that differ with `tag`: bytecode whose exact value a test can check.
pub fn bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

/// A random campaign's seed: `BP_SEED` if set (to replay a failure), else from the clock.
/// Printed either way, so a failing run names the seed that replays it.
pub fn seed(campaign: &str) -> u64 {
    let seed = match std::env::var("BP_SEED") {
        Ok(seed) => seed.parse().expect("BP_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{campaign} seed {seed} (BP_SEED={seed} replays it)");
    seed
}

/// Makes the directory `path` private (mode 0700), whatever the umask: as the cache's own
/// directories are, so that the cache checks what a test means it to check.
pub fn create_private_dir(path: &Path) {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).unwrap();
}

/// A new temp dir only this user can write to, whatever the umask (0002 on many desktops): a
/// cache root must be one, and tests use temp dirs as roots.
pub fn tempdir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o700));
    }
    builder.tempdir().unwrap()
}

/// A temp dir and its canonical path (macOS's `/tmp` is a symlink; paths must compare equal).
pub fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let path = tmp.path().canonicalize().unwrap();
    (tmp, path)
}

// ---------------------------------------------------------------------------------------------
// A cache directory's files.

/// Every file in a cache directory, sorted.
pub fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Each file in a directory with its size and mtime, sorted: what "nothing was written" is
/// checked against.
pub fn files_as_they_are(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    cache_files(dir)
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            (p, m.len(), m.modified().unwrap())
        })
        .collect()
}

/// The files in a cache directory whose names start with `prefix`, sorted.
pub fn cache_files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    cache_files(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

/// The (first) `pack-*` file of a cache directory.
pub fn pack_file(dir: &Path) -> PathBuf {
    cache_files_named(dir, "pack-")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no pack file in {}", dir.display()))
}

/// The names of a cache directory's `.tmp-*` files: debris a writer must sweep.
pub fn temp_file_names(dir: &Path) -> Vec<String> {
    cache_files_named(dir, ".tmp-")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Time stamps.

/// Sets a file's mtime.
pub fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Backdates a file's mtime by an hour, past the racy window, as an unchanged tree's are.
pub fn backdate(path: &Path) {
    set_mtime(path, SystemTime::now() - Duration::from_secs(3600));
}

/// Checks a cache at `root` whose index names a file that is gone (`named`: its name's prefix,
/// `pack-` or `base-`): it opens, `held` misses as corrupt, `stats` names the file as missing,
/// and a write rebuilds it, after which it opens undamaged.
pub fn assert_missing_file_is_repaired(root: &Path, held: &bytecode_pack::Key, named: &str) {
    use bytecode_pack::{Cache, MissReason, NewEntry};
    let fresh = Cache::open(root).unwrap();
    assert_eq!(fresh.lookup(held).err(), Some(MissReason::Corrupt));
    let damage = fresh.stats().unwrap().damage.expect("reported");
    assert!(
        damage.contains(named) && damage.contains("missing"),
        "{damage}"
    );
    let another = key("repaired", 0);
    fresh.put(&another, &NewEntry::new("m", b"again")).unwrap();
    assert_eq!(fresh.get(&another).unwrap().bytecode(), b"again");
    assert!(fresh.verify().unwrap().is_ok());
    let reopened = Cache::open(root).unwrap();
    assert!(reopened.stats().unwrap().damage.is_none());
}

/// Waits out the fine racy window after the last change to a file's ctime: the ctime cannot
/// be set, only waited for.
pub fn let_ctime_age() {
    std::thread::sleep(Duration::from_millis(150));
}

/// Sets the mtime of `path` and everything below it `by` into the past.
pub fn age_tree(path: &Path, by: Duration) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            age_tree(&entry.unwrap().path(), by);
        }
    }
    fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - by)
        .unwrap();
}

/// Says in the test run's output that a check could not run on this machine, and why: a check
/// skipped must not pass silently. Written to stderr directly, past libtest's capture.
pub fn skipped(check: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {check}: {why}");
}

/// In a child: prints every warning the crate logs as a `warn:` line on stdout, for the parent
/// to count.
pub fn print_warnings() {
    struct PrintWarnings;
    impl log::Log for PrintWarnings {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                println!("warn: {}", record.args());
            }
        }
        fn flush(&self) {}
    }
    log::set_logger(&PrintWarnings).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
}

/// Two library modules the project tests share: `lib/math.js`, and `lib/describe.js`, which
/// imports it.
pub const LIB_MODULES: [(&str, &str); 2] = [
    ("lib/math.js", "export const add = (a, b) => a + b;\n"),
    (
        "lib/describe.js",
        "import { add } from './math.js';\n\
         export const describe = (x) => `value=${x} next=${add(x, 1)}`;\n",
    ),
];

/// A project at `at`: [`LIB_MODULES`] and `files` beside them, past the racy window of
/// their writes (as an unchanged tree is by its start).
pub fn lib_project(at: &Path, files: &[(&str, &str)]) {
    write_files(at, &LIB_MODULES);
    write_files(at, files);
    let_ctime_age();
}

/// Writes `files` (paths relative to `at`, and contents), making their directories.
pub fn write_files(at: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = at.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}
