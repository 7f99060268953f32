//! A cache that travels with the code: a tree moved, copied or extracted elsewhere starts
//! without compiling; two versions of one project sharing a cache alternate without
//! compiling; an edit in a copy is never answered with the original's bytecode.
//!
//! Starts run in child processes (this binary re-invoked, `child` test) with the working
//! directory in the project, as a host runs: module entries are recorded under it.
#![cfg(all(unix, feature = "quickjs"))]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytecode_pack::Cache;
use bytecode_pack::quickjs;
use common::child::Child;
use common::tree::{copy_tree, ship_tree};

/// A host start: `main.js` through `PackResolver` + `PackLoader`; prints its result, what it
/// compiled and loaded from the cache, and how many inputs its lookups re-hashed.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    if common::child::role().is_none() {
        return;
    }
    common::child::become_user();
    let mut builder = Cache::builder(common::child::path_var("BP_ROOT"));
    if std::env::var_os("BP_COMPACT_EVERY_PUT").is_some() {
        builder = builder.auto_compact(0, 0.0);
    }
    if std::env::var_os("BP_COMPACT_AT_HALF_DEAD").is_some() {
        builder = builder.auto_compact(1, 0.5);
    }
    let cache = builder.open().unwrap();
    if let Some(how) = std::env::var_os("BP_COUNT_OPEN_FILES") {
        return count_open_files(&cache, how == "flush");
    }
    if let Some(doomed) = std::env::var_os("BP_DELETE_BETWEEN_IMPORTS") {
        return import_twice(&cache, Path::new(&doomed));
    }
    let result = common::host::start_main(&cache);
    let c = quickjs::process_counters();
    println!("result={result}");
    println!("compiles={}", c.compiles);
    println!("cache_loads={}", c.cache_loads);
    println!("probed={}", c.probed_resolutions);
    println!(
        "rehashes={}",
        cache.stats().unwrap().counters.input_rehashes
    );
}

/// A start of `main.js` that prints how many of the project's files and directories the
/// process holds open once the import is done, after a flush of its loader if `flush`, and
/// after the runtime is dropped.
fn count_open_files(cache: &Cache, flush: bool) {
    use rquickjs::loader::FileResolver;
    use rquickjs::{Context, Module, Runtime};
    let project = std::env::current_dir().unwrap().canonicalize().unwrap();
    // Descriptors on the project's files, and on its directories (kept to open files in).
    let open = || {
        let targets: Vec<PathBuf> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(&project))
            .collect();
        let dirs = targets.iter().filter(|t| t.is_dir()).count();
        format!("{} {dirs}", targets.len() - dirs)
    };
    let runtime = Runtime::new().unwrap();
    let loader = quickjs::PackLoader::new(cache.clone());
    let flusher = loader.clone();
    let resolver =
        quickjs::PackResolver::new(FileResolver::default().with_path("."), cache.clone());
    runtime.set_loader(resolver, loader);
    let context = Context::full(&runtime).unwrap();
    let began = std::time::Instant::now();
    context.with(|ctx| {
        let module = Module::import(&ctx, "main.js").unwrap();
        module.finish::<rquickjs::Object>().unwrap();
    });
    println!("import_ms={}", began.elapsed().as_millis());
    println!("open_after_import={}", open());
    if flush {
        flusher.flush().unwrap();
        println!("open_after_flush={}", open());
    }
    drop((flusher, context, runtime));
    println!("open_after_drop={}", open());
}

/// Imports `main.js` in a context, deletes `doomed`, lets the resolver's round end, and
/// imports it again in a new context of the same runtime; prints both results.
fn import_twice(cache: &Cache, doomed: &Path) {
    use rquickjs::loader::FileResolver;
    use rquickjs::{CatchResultExt, Coerced, Context, Module, Object, Runtime};
    let runtime = Runtime::new().unwrap();
    let resolver =
        quickjs::PackResolver::new(FileResolver::default().with_path("."), cache.clone());
    runtime.set_loader(resolver, quickjs::PackLoader::new(cache.clone()));
    let import = || {
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let imported = Module::import(&ctx, "main.js").and_then(|p| p.finish::<Object>());
            match imported.catch(&ctx) {
                Ok(namespace) => namespace.get::<_, Coerced<String>>("result").unwrap().0,
                Err(e) => format!("error: {}", e.to_string().replace('\n', " | ")),
            }
        })
    };
    println!("first={}", import());
    fs::remove_file(doomed).unwrap();
    // Past the resolver's round (100 ms), in which directories are not checked again.
    std::thread::sleep(std::time::Duration::from_millis(250));
    println!("second={}", import());
}

#[derive(Debug, PartialEq)]
struct Start {
    result: String,
    compiles: u64,
    rehashes: u64,
    /// Imports resolved by probing the filesystem.
    probed: u64,
}

/// Runs a start in `project` over the cache under `root`.
fn start(project: &Path, root: &Path) -> Start {
    start_with(Child::new("start"), project, root)
}

fn start_with(child: Child, project: &Path, root: &Path) -> Start {
    let stdout = child
        .current_dir(project)
        .env("BP_ROOT", root)
        .run()
        .expect_success();
    Start {
        result: field(&stdout, "result").to_owned(),
        compiles: field(&stdout, "compiles").parse().unwrap(),
        rehashes: field(&stdout, "rehashes").parse().unwrap(),
        probed: field(&stdout, "probed").parse().unwrap(),
    }
}

/// The value of a child's `name=value` line.
fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

/// A project of four modules in two directories, written long enough ago to be trusted. Two
/// imports name their file (one probe decides them), two leave its extension to the
/// resolver's patterns (a listing of their directory can vouch for them).
fn project(at: &Path) {
    common::lib_project(
        at,
        &[
            (
                "main.js",
                "import { add } from './lib/math.js';\n\
         import { describe } from './lib/describe';\n\
         import { version } from './version';\n\
         export const result = `${describe(add(2, 3))} ${version}`;\n",
            ),
            ("version.js", "export const version = 'v1';\n"),
        ],
    );
}

const V1: &str = "value=5 next=6 v1";

fn warm_project() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, base) = common::canonical_tempdir();
    let (dir, root) = (base.join("app"), base.join("cache"));
    project(&dir);
    let first = start(&dir, &root);
    assert_eq!((first.result.as_str(), first.compiles), (V1, 4));
    common::let_ctime_age();
    let warm = start(&dir, &root);
    assert_eq!((warm.compiles, warm.rehashes), (0, 0), "{warm:?}");
    (tmp, dir, root)
}

/// A copy of a warm project made beside it, aged past the racy window: the temporary
/// directory holding both, the copy, and the cache's root.
fn warm_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, dir, root) = warm_project();
    let copy = dir.with_file_name("copy");
    copy_tree(&dir, &copy);
    common::let_ctime_age();
    (tmp, copy, root)
}

/// The output of a child start in `project` over `root` with the variable `name` set to
/// `value` (which chooses what the child does).
fn start_in(project: &Path, root: &Path, name: &str, value: impl AsRef<std::ffi::OsStr>) -> String {
    Child::new(name)
        .current_dir(project)
        .env("BP_ROOT", root)
        .env(name, value)
        .run()
        .expect_success()
}

/// `mv` of the project (the same inodes): the next start compiles nothing and re-hashes
/// nothing, as a warm start before the move.
#[test]
fn a_moved_tree_starts_warm() {
    let (_tmp, dir, root) = warm_project();
    let moved = dir.with_file_name("moved-app");
    fs::rename(&dir, &moved).unwrap();
    let after = start(&moved, &root);
    // (Its root directory's ctime changed with the rename, within the racy window: the
    // answers found there are probed again.)
    assert_eq!(
        (after.result.as_str(), after.compiles, after.rehashes),
        (V1, 0, 0),
        "{after:?}"
    );
}

/// A copy (new inodes and ctimes): the first start compiles nothing, and the start after it
/// is warm again (nothing re-hashed, nothing probed).
#[test]
fn a_copied_tree_compiles_nothing_and_is_warm_the_start_after() {
    let (_tmp, copy, root) = warm_copy();
    let first = start(&copy, &root);
    // Its directories hold what the original's held: the original's answers stand, those
    // without an extension by their directories' listings, those that name their file by
    // finding it again.
    assert_eq!(
        (first.result.as_str(), first.compiles, first.probed),
        (V1, 0, 0),
        "{first:?}"
    );
    common::let_ctime_age();
    let second = start(&copy, &root);
    assert_eq!(
        (second.compiles, second.rehashes, second.probed),
        (0, 0, 0),
        "{second:?}"
    );
}

/// A copy's first start reads every module's file; it closes them together after its loads
/// rather than one at a time during them: by its loader's flush, or by the runtime's drop
/// (which stores the batch), with the directory handles it opened files through. Nothing
/// stays open after either.
#[cfg(target_os = "linux")]
#[test]
fn a_copys_start_closes_the_files_it_read_by_the_flush_or_the_drop() {
    for how in ["flush", "drop"] {
        let Some(stdout) = a_quick_copys_start_counting_open_files(how) else {
            continue;
        };
        let count = |name: &str| -> (usize, usize) {
            let (files, dirs) = field(&stdout, name).split_once(' ').unwrap();
            (files.parse().unwrap(), dirs.parse().unwrap())
        };
        // The four modules' files, read and not yet closed: the start paid no `close`. So is
        // `lib/`, where `./lib/math.js` was found again: that file was opened through it.
        assert_eq!(count("open_after_import"), (4, 1), "{how}: {stdout}");
        if how == "flush" {
            assert_eq!(count("open_after_flush"), (0, 0), "{how}: {stdout}");
        }
        assert_eq!(count("open_after_drop"), (0, 0), "{how}: {stdout}");
    }
}

/// The output of a child's first start in a fresh warm copy, counting the files it holds open
/// (`how`: "flush" or "drop", see `count_open_files`), from a start whose import took under
/// 80 ms: a slower one, on a loaded machine, closes at its next load what waited 100 ms.
/// Tried up to five times, each in a copy of its own; `None` (reported as skipped) if every
/// import was slower: what waits then is closed by design, and no count would be exact.
#[cfg(target_os = "linux")]
fn a_quick_copys_start_counting_open_files(how: &str) -> Option<String> {
    let mut slowest = Vec::new();
    for _ in 0..5 {
        let (_tmp, copy, root) = warm_copy();
        let stdout = start_in(&copy, &root, "BP_COUNT_OPEN_FILES", how);
        let import_ms: u64 = field(&stdout, "import_ms").parse().unwrap();
        if import_ms < 80 {
            return Some(stdout);
        }
        slowest.push(import_ms);
    }
    let why = format!("every import took 80 ms or more ({slowest:?} ms): the machine is loaded");
    common::skipped("open files after a copy's import", &why);
    None
}

/// A file found again in a copy stands while its directory keeps the stamp it was found
/// under: once the file is deleted (its directory stamped anew), a later import of it in the
/// same process fails to resolve, as with `FileResolver`.
#[test]
fn a_file_found_again_then_deleted_fails_to_resolve_in_the_same_process() {
    let (_tmp, copy, root) = warm_copy();
    let doomed = copy.join("lib/math.js");
    let stdout = start_in(&copy, &root, "BP_DELETE_BETWEEN_IMPORTS", doomed);
    assert!(stdout.contains(&format!("first={V1}\n")), "{stdout}");
    let second = stdout.lines().find_map(|l| l.strip_prefix("second="));
    let second = second.unwrap_or_else(|| panic!("no second import in {stdout}"));
    // Resolving fails (not loading a file the resolver vouched for).
    assert!(
        second.contains("Error resolving module './lib/math.js'"),
        "{stdout}"
    );
}

/// In a copy whose `lib/` gained a file, the answer found there for a name without an
/// extension is probed again (a new file could win over it); the others still come from the
/// original's table: `./version`, whose directory's listing is unchanged, and the names of
/// files in `lib/`, each found again where it was.
#[test]
fn a_copy_with_a_changed_directory_probes_only_there() {
    let (_tmp, dir, root) = warm_project();
    let copy = dir.with_file_name("copy");
    copy_tree(&dir, &copy);
    fs::write(copy.join("lib/extra.js"), "export const extra = 1;\n").unwrap();
    common::let_ctime_age();
    let first = start(&copy, &root);
    assert_eq!(
        (first.result.as_str(), first.compiles),
        (V1, 0),
        "{first:?}"
    );
    // main.js imports ./lib/math.js, ./lib/describe and ./version, describe.js imports
    // ./math.js: only ./lib/describe is probed.
    assert_eq!(first.probed, 1, "{first:?}");
    // What it found, again or anew, was stored under `lib/`'s new stamp.
    common::let_ctime_age();
    let second = start(&copy, &root);
    assert_eq!(
        (second.result.as_str(), second.compiles, second.probed),
        (V1, 0, 0),
        "{second:?}"
    );
}

/// In a copy where a file an import names is gone, or is a directory now, that import fails
/// to resolve, as `FileResolver`'s does: the original's answer is not found again.
#[test]
fn in_a_copy_an_import_of_a_file_gone_fails_to_resolve() {
    let (_tmp, dir, root) = warm_project();
    for becomes_a_directory in [false, true] {
        let name = if becomes_a_directory {
            "directory"
        } else {
            "gone"
        };
        let copy = dir.with_file_name(format!("copy-{name}"));
        copy_tree(&dir, &copy);
        fs::remove_file(copy.join("lib/math.js")).unwrap();
        if becomes_a_directory {
            fs::create_dir(copy.join("lib/math.js")).unwrap();
        }
        common::let_ctime_age();
        let first = start(&copy, &root);
        assert!(
            first.result.contains("resolving module './lib/math.js'"),
            "{name}: {first:?}"
        );
    }
}

/// A tar archive of the project extracted elsewhere (whole-second mtimes, fresh ctimes): the
/// first start compiles nothing.
#[test]
fn a_tar_extracted_tree_compiles_nothing() {
    let (_tmp, dir, root) = warm_project();
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_dir_all("app", &dir).unwrap();
    let bytes = archive.into_inner().unwrap();
    let elsewhere = dir.with_file_name("extracted");
    tar::Archive::new(&bytes[..]).unpack(&elsewhere).unwrap();
    let first = start(&elsewhere.join("app"), &root);
    assert_eq!(
        (first.result.as_str(), first.compiles),
        (V1, 0),
        "{first:?}"
    );
}

/// Two versions of one project sharing one cache (two worktrees on different branches: one
/// module differs), started alternately: once each has started once, neither compiles
/// anything, and each gets its own version.
#[test]
fn two_versions_sharing_a_cache_alternate_without_compiling() {
    let (_tmp, one, root) = warm_project();
    let two = one.with_file_name("worktree");
    copy_tree(&one, &two);
    fs::write(two.join("version.js"), "export const version = 'v2';\n").unwrap();
    common::let_ctime_age();
    let first = start(&two, &root);
    assert_eq!(first.compiles, 1, "only the module that differs: {first:?}");
    for round in 0..3 {
        for (dir, version) in [(&one, "v1"), (&two, "v2")] {
            let s = start(dir, &root);
            assert_eq!(s.compiles, 0, "round {round}, {version}: {s:?}");
            assert!(s.result.ends_with(version), "round {round}: {s:?}");
        }
    }
}

/// Two trees extracted from reproducible archives (every mtime the same instant, as
/// SOURCE_DATE_EPOCH leaves them) that differ in one module of the same size: stat data
/// other than the inode and ctime cannot tell them apart, yet each start gets its own tree.
#[test]
fn reproducible_copies_with_equal_mtimes_and_sizes_keep_their_own_contents() {
    let (_tmp, one, root) = warm_project();
    let two = one.with_file_name("extracted");
    copy_tree(&one, &two);
    fs::write(two.join("version.js"), "export const version = 'v9';\n").unwrap();
    for tree in [&one, &two] {
        let status = std::process::Command::new("find")
            .arg(tree)
            .args(["-exec", "touch", "-h", "-d", "@315532800", "{}", "+"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    common::let_ctime_age();
    for round in 0..3 {
        for (dir, version) in [(&two, "v9"), (&one, "v1")] {
            let s = start(dir, &root);
            assert!(s.result.ends_with(version), "round {round}: {s:?}");
            if round > 0 {
                assert_eq!(s.compiles, 0, "round {round}, {version}: {s:?}");
            }
        }
    }
}

/// An edit in a copy is the copy's: it is compiled there, and the original keeps its own.
/// Reverting it is answered from the cache (the content was compiled before).
#[test]
fn an_edit_in_a_copy_is_never_answered_with_the_originals_bytecode() {
    let (_tmp, dir, root) = warm_project();
    let copy = dir.with_file_name("copy");
    copy_tree(&dir, &copy);
    let math = copy.join("lib/math.js");
    let original = fs::read(&math).unwrap();
    fs::write(&math, "export const add = (a, b) => a * b;\n").unwrap();
    let edited = start(&copy, &root);
    assert_eq!(edited.result, "value=6 next=6 v1", "{edited:?}");
    assert_eq!(edited.compiles, 1, "{edited:?}");
    assert_eq!(start(&dir, &root).result, V1);
    fs::write(&math, original).unwrap();
    let reverted = start(&copy, &root);
    assert_eq!((reverted.result.as_str(), reverted.compiles), (V1, 0));
}

/// A moved tree's records follow it: the first start there re-records where it is, so a
/// compaction after the move checks the tree where it is now and keeps it warm.
#[test]
fn a_moved_tree_stays_warm_through_a_compaction() {
    let (_tmp, dir, root) = warm_project();
    let moved = dir.with_file_name("moved-app");
    fs::rename(&dir, &moved).unwrap();
    assert_eq!(start(&moved, &root).compiles, 0);
    let report = Cache::open(&root).unwrap().compact().unwrap();
    assert_eq!(
        (report.dropped_stale, report.dropped_pointers),
        (0, 0),
        "{report:?}"
    );
    let after = start(&moved, &root);
    assert_eq!((after.compiles, after.rehashes), (0, 0), "{after:?}");
}

/// Old locations are reclaimed: a throwaway copy of the tree, with one module of its own,
/// started once and deleted, leaves records a compaction drops (its modules, its resolutions,
/// and the pointer to the one module only it compiled), while the original's stay: it starts
/// warm, and a new copy still finds the original's bytecode.
#[test]
fn a_deleted_copys_records_are_reclaimed_by_compaction() {
    let (_tmp, dir, root) = warm_project();
    let copy = dir.with_file_name("throwaway");
    copy_tree(&dir, &copy);
    fs::write(copy.join("version.js"), "export const version = 'tmp';\n").unwrap();
    common::let_ctime_age();
    assert_eq!(start(&copy, &root).compiles, 1);
    fs::remove_dir_all(&copy).unwrap();
    let cache = Cache::open(&root).unwrap();
    let report = cache.compact().unwrap();
    assert_eq!(
        report.dropped_stale, 5,
        "the copy's four modules and resolutions: {report:?}"
    );
    assert_eq!(
        report.dropped_pointers, 1,
        "to its own version.js: {report:?}"
    );
    let after = start(&dir, &root);
    assert_eq!(
        (after.result.as_str(), after.compiles),
        (V1, 0),
        "{after:?}"
    );
    let another = dir.with_file_name("another");
    copy_tree(&dir, &another);
    common::let_ctime_age();
    assert_eq!(start(&another, &root).compiles, 0);
}

/// The first write after a move compacts (here every put does): it judges the tree where the
/// start found it, not where it was recorded, so the moved tree's records survive it.
#[test]
fn a_compaction_in_the_first_write_after_a_move_keeps_the_moved_tree() {
    let (_tmp, dir, root) = warm_project();
    let moved = dir.with_file_name("moved-app");
    fs::rename(&dir, &moved).unwrap();
    let compacting = Child::new("start").env("BP_COMPACT_EVERY_PUT", "1");
    assert_eq!(start_with(compacting, &moved, &root).compiles, 0);
    common::let_ctime_age();
    let after = start(&moved, &root);
    assert_eq!((after.compiles, after.rehashes), (0, 0), "{after:?}");
}

/// Throwaway copies started once and deleted: `stats` counts what they left as dead, and the
/// next write compacts it away on its own (dead space past half of the pack), where it counted
/// it as live and never compacted.
#[test]
fn deleted_copies_count_as_dead_and_are_reclaimed_automatically() {
    let (_tmp, dir, root) = warm_project();
    for i in 0..3 {
        let copy = dir.with_file_name(format!("throwaway-{i}"));
        copy_tree(&dir, &copy);
        common::let_ctime_age();
        assert_eq!(start(&copy, &root).compiles, 0);
        fs::remove_dir_all(&copy).unwrap();
    }
    let before = Cache::open(&root).unwrap().stats().unwrap();
    assert!(
        before.dead_bytes() > before.pack_bytes / 2,
        "the copies' entries are dead: {before:?}"
    );
    // An edit in the original: its start compiles one module and stores it.
    fs::write(dir.join("version.js"), "export const version = 'v3';\n").unwrap();
    let edited = start_with(
        Child::new("start").env("BP_COMPACT_AT_HALF_DEAD", "1"),
        &dir,
        &root,
    );
    assert_eq!(edited.compiles, 1, "{edited:?}");
    let after = Cache::open(&root).unwrap().stats().unwrap();
    assert!(after.generation > before.generation, "compacted: {after:?}");
    assert!(
        after.pack_bytes < before.pack_bytes / 2,
        "{before:?} -> {after:?}"
    );
    assert!(after.dead_bytes() < after.pack_bytes / 10, "{after:?}");
    common::let_ctime_age();
    assert_eq!(start(&dir, &root).compiles, 0);
}

/// A tree and its cache shipped by root (an image build: root started it, then `chmod -R
/// go-w,a+rX`), started by an unprivileged user: the modules load from the cache and root's
/// resolutions are used where this user may search, so nothing is probed.
#[test]
fn a_cache_shipped_by_root_resolves_for_an_app_user_without_probing() {
    let Some((_tmp, dir, root)) = shipped_by_root(|_| {}) else {
        return;
    };
    let start = start_with(Child::new("start").run_as(65534), &dir, &root);
    assert_eq!(
        (start.result.as_str(), start.compiles, start.probed),
        (V1, 0, 0),
        "{start:?}"
    );
}

/// Where the app user may not search a directory root's answers came from (root searches
/// anything), they are not used: the user's start fails to resolve there, as `FileResolver`
/// does for it, and probes.
#[test]
fn root_answers_through_a_directory_the_app_user_cannot_search_are_not_used() {
    let lib_for_root_only = |dir: &Path| {
        fs::set_permissions(dir.join("lib"), fs::Permissions::from_mode(0o700)).unwrap();
    };
    let Some((_tmp, dir, root)) = shipped_by_root(lib_for_root_only) else {
        return;
    };
    let start = start_with(Child::new("start").run_as(65534), &dir, &root);
    assert!(start.result.starts_with("error"), "{start:?}");
    assert!(start.probed >= 1, "{start:?}");
}

/// A warm project and cache made by root, readable by all and writable by none but root,
/// after `adjust` changed the project and root started it again (its answers stamped as
/// root saw them); `None` (with a note) where this process is not root.
fn shipped_by_root(adjust: impl FnOnce(&Path)) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skipped("shipped_by_root", "needs root to start as another user");
        return None;
    }
    let (tmp, dir, root) = warm_project();
    ship_tree(tmp.path());
    adjust(&dir);
    common::let_ctime_age();
    assert_eq!(start(&dir, &root).result, V1, "root searches anything");
    // What that start wrote, shipped too.
    ship_tree(&root);
    common::let_ctime_age();
    Some((tmp, dir, root))
}

/// A tree moved, whose first start since looks up only some of its entries: that start's
/// re-recording moves the tree whole, so a later compaction keeps the others too, instead of
/// dropping them with the root that is gone (a start of another entry point would hit them).
#[test]
fn a_compaction_after_a_moved_trees_first_start_keeps_the_entries_it_did_not_look_up() {
    use bytecode_pack::{Input, LookupOptions, NewEntry};
    let (_tmp, base) = common::canonical_tempdir();
    let (tree, moved) = (base.join("tree"), base.join("moved"));
    fs::create_dir(&tree).unwrap();
    let cache = Cache::open(base.join("cache")).unwrap();
    let keys = [common::key("moved", 0), common::key("moved", 1)];
    for (key, name) in keys.iter().zip(["a.js", "b.js"]) {
        let file = tree.join(name);
        fs::write(&file, name).unwrap();
        let entry = NewEntry::new(name, name.as_bytes())
            .inputs(vec![Input::path(&file)])
            .relative_to(&tree);
        cache.put(key, &entry).unwrap();
    }
    fs::rename(&tree, &moved).unwrap();
    let here = || LookupOptions::default().root(&moved);
    assert!(
        cache.lookup_with(&keys[0], here()).is_ok(),
        "the first start's lookup"
    );
    // Its exit re-records what it found; a later process compacts.
    drop(cache);
    let later = Cache::open(base.join("cache")).unwrap();
    later.compact().unwrap();
    for key in &keys {
        assert!(later.lookup_with(key, here()).is_ok(), "kept: {key:?}");
    }
}

/// A moved tree's first store does not compact for the bytes that moved with the tree: they
/// are live under its new root, whatever an estimate made before the lock counted under the
/// root that is gone.
#[test]
fn a_moved_trees_first_store_does_not_compact_for_bytes_that_moved_with_it() {
    use bytecode_pack::{Input, LookupOptions, NewEntry};
    let (_tmp, base) = common::canonical_tempdir();
    let (tree, moved) = (base.join("tree"), base.join("moved"));
    fs::create_dir(&tree).unwrap();
    // Compacts as soon as more than half of any pack is dead.
    let cache = Cache::builder(base.join("cache"))
        .auto_compact(1, 0.5)
        .open()
        .unwrap();
    let keys = [common::key("moved", 0), common::key("moved", 1)];
    for (key, name) in keys.iter().zip(["a.js", "b.js"]) {
        let file = tree.join(name);
        fs::write(&file, name).unwrap();
        let entry = NewEntry::new(name, &[7; 4096])
            .inputs(vec![Input::path(&file)])
            .relative_to(&tree);
        cache.put(key, &entry).unwrap();
    }
    fs::rename(&tree, &moved).unwrap();
    // The tree's first start since: a new process.
    drop(cache);
    let cache = Cache::builder(base.join("cache"))
        .auto_compact(1, 0.5)
        .open()
        .unwrap();
    let before = cache.stats().unwrap().generation;
    let here = || LookupOptions::default().root(&moved);
    assert!(cache.lookup_with(&keys[0], here()).is_ok());
    let other = common::key("moved", 2);
    cache.put(&other, &NewEntry::new("c", b"c")).unwrap();
    assert_eq!(cache.stats().unwrap().generation, before, "no compaction");
    for key in &keys {
        assert!(cache.lookup_with(key, here()).is_ok());
    }
}
