//! What a start stores, and when: one publication per start whatever order the resolver and
//! the loader are dropped in; an exit is never held by another process's writer lock; a start
//! that compiled more than the cache may hold stores what fits; a host that makes a runtime
//! per request keeps nothing per runtime.
//!
//! Starts run in child processes (this binary re-invoked, `child` test) with the working
//! directory in a temp project, because rquickjs's `FileResolver` resolves against it.
#![cfg(feature = "quickjs")]

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytecode_pack::quickjs::{self, PackLoader, PackResolver};
use bytecode_pack::{Cache, abi_tag};
use common::child::Child;
use rquickjs::loader::FileResolver;
use rquickjs::{Context, Module, Object, Runtime};

/// A host process in a role; see each test for what it does.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    common::print_warnings();
    common::child::become_user();
    let root = common::child::path_var("BP_ROOT");
    let mut builder = Cache::builder(&root).lock_timeout(Duration::from_secs(5));
    if let Ok(max) = std::env::var("BP_MAX_BYTES") {
        builder = builder.max_bytes(max.parse().unwrap());
    }
    let cache = builder.open().unwrap();
    match role.as_str() {
        "start" => start(&cache),
        "runtime-per-request" => runtime_per_request(&cache),
        other => panic!("unknown role {other}"),
    }
}

/// One start of `main.js` through `PackResolver` + `PackLoader`, dropping them in the order
/// `BP_DROP` names: as rquickjs does (the resolver first), or with a clone of the loader or
/// the resolver held past the runtime. Prints what it compiled and published, and how long
/// the drop took.
fn start(cache: &Cache) {
    let runtime = Runtime::new().unwrap();
    let resolver = PackResolver::new(FileResolver::default().with_path("."), cache.clone());
    let loader = PackLoader::new(cache.clone());
    let (held_resolver, held_loader) = match std::env::var("BP_DROP").unwrap().as_str() {
        "rquickjs" => (None, None),
        "loader-last" => (None, Some(loader.clone())),
        "resolver-last" => (Some(resolver.clone()), None),
        other => panic!("unknown drop order {other}"),
    };
    runtime.set_loader(resolver, loader);
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        Module::import(&ctx, "main.js")
            .and_then(|p| p.finish::<Object>())
            .unwrap();
    });
    let dropping = Instant::now();
    drop(context);
    drop(runtime);
    drop(held_resolver);
    drop(held_loader);
    let dropped_in = dropping.elapsed();
    let counters = cache.stats().unwrap().counters;
    println!("compiles={}", quickjs::process_counters().compiles);
    println!("publications={}", counters.publications);
    println!("drop_ms={}", dropped_in.as_millis());
}

/// Reads this process's resident set size from `/proc/self/statm`, in bytes.
fn rss() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A server's loop: a runtime per request, each with its own resolver and loader over one
/// long-lived handle, each importing `main.js` from a warm cache. Prints the RSS after a
/// warm-up and after the rest.
fn runtime_per_request(cache: &Cache) {
    let request = || {
        let result = common::host::start_main(cache);
        assert!(!result.starts_with("error"), "{result}");
    };
    let resolver_only = || {
        drop(PackResolver::new(
            FileResolver::default().with_path("."),
            cache.clone(),
        ))
    };
    for _ in 0..200 {
        request();
    }
    for _ in 0..2_000 {
        resolver_only();
    }
    let before = rss();
    for _ in 0..2_000 {
        request();
    }
    for _ in 0..60_000 {
        resolver_only();
    }
    println!("growth={}", rss().saturating_sub(before));
    println!("compiles={}", quickjs::process_counters().compiles);
}

/// The number a child printed as `name=<n>`.
fn field(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        .parse()
        .unwrap()
}

struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

#[derive(Debug)]
struct Start {
    compiles: u64,
    publications: u64,
    drop_ms: u64,
    warnings: Vec<String>,
}

impl Project {
    /// `main.js` importing `modules` modules, each of about `body` bytes of source.
    fn new(modules: usize, body: usize) -> Project {
        let (tmp, base) = common::canonical_tempdir();
        let dir = base.join("project");
        fs::create_dir_all(dir.join("lib")).unwrap();
        let mut main = String::new();
        for i in 0..modules {
            main.push_str(&format!("import {{ f{i} }} from './lib/m{i}.js';\n"));
            let mut module = format!("export function f{i}(x) {{\n  let y = x + {i};\n");
            while module.len() < body {
                module.push_str(&format!("  y = (y * 31 + {}) % 1000003;\n", module.len()));
            }
            module.push_str("  return y;\n}\n");
            fs::write(dir.join(format!("lib/m{i}.js")), module).unwrap();
        }
        let calls: Vec<String> = (0..modules).map(|i| format!("f{i}(1)")).collect();
        main.push_str(&format!("export const result = [{}];\n", calls.join(", ")));
        fs::write(dir.join("main.js"), main).unwrap();
        // Starts come later than the racy window of the tree's creation, as a real tree's do.
        common::let_ctime_age();
        Project {
            _tmp: tmp,
            dir,
            root: base.join("cache"),
        }
    }

    fn child(&self, role: &str) -> Child {
        Child::new(role)
            .current_dir(&self.dir)
            .env("BP_ROOT", &self.root)
    }

    fn start(&self, drop_order: &str) -> Start {
        self.start_with(self.child("start").env("BP_DROP", drop_order))
    }

    fn start_with(&self, child: Child) -> Start {
        let stdout = child.run().expect_success();
        let field = |name: &str| field(&stdout, name);
        Start {
            compiles: field("compiles"),
            publications: field("publications"),
            drop_ms: field("drop_ms"),
            warnings: stdout
                .lines()
                .filter_map(|l| l.strip_prefix("warn: "))
                .map(str::to_owned)
                .collect(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.root.join(abi_tag())
    }
}

/// rquickjs drops the resolver before the loader, and a host holding a clone can make it the
/// other way round: either way a first start stores its modules and its resolutions in one
/// publication, and a warm start publishes nothing.
#[test]
fn a_start_publishes_once_whatever_the_drop_order() {
    for order in ["rquickjs", "loader-last", "resolver-last"] {
        let project = Project::new(3, 100);
        let first = project.start(order);
        assert_eq!(first.compiles, 4, "{order}");
        assert_eq!(first.publications, 1, "{order}: {first:?}");
        assert!(first.warnings.is_empty(), "{order}: {first:?}");
        common::let_ctime_age();
        let second = project.start(order);
        assert_eq!((second.compiles, second.publications), (0, 0), "{order}");
    }
}

/// Another process holds the writer lock (a long compaction, `flock <cache>/lock sleep 60`):
/// a start that compiled nothing and only has racy inputs to re-record does not wait at all,
/// and one that compiled a module gives up on storing it within a moment, far inside the
/// cache's 5 s `lock_timeout`, with one warning. Once the lock is free, the next start stores
/// what was lost.
#[test]
fn an_exit_is_not_held_by_another_writers_lock() {
    let project = Project::new(3, 100);
    assert_eq!(project.start("rquickjs").compiles, 4);
    common::let_ctime_age();
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(project.cache_dir().join("lock"))
        .unwrap();
    lock.lock().unwrap();

    // Re-saved unchanged (its stat data moved, its content did not): the start re-hashes
    // it, and has new stat data to re-record.
    let math = project.dir.join("lib/m1.js");
    fs::write(&math, fs::read(&math).unwrap()).unwrap();
    common::let_ctime_age();
    let racy = project.start("rquickjs");
    assert_eq!(racy.compiles, 0, "{racy:?}");
    assert_eq!(racy.publications, 0, "{racy:?}");
    assert!(racy.drop_ms < 50, "a refresh waited: {racy:?}");
    assert!(racy.warnings.is_empty(), "{racy:?}");

    // An edit: one module compiled, which cannot be stored while the lock is held.
    fs::write(
        project.dir.join("lib/m2.js"),
        "export function f2(x) { return -x; }\n",
    )
    .unwrap();
    let edited = project.start("resolver-last");
    assert_eq!(edited.compiles, 1, "{edited:?}");
    assert_eq!(edited.publications, 0, "{edited:?}");
    assert!(edited.drop_ms < 1_000, "the store waited: {edited:?}");
    assert_eq!(edited.warnings.len(), 1, "{edited:?}");
    assert!(edited.warnings[0].contains("lock"), "{edited:?}");

    drop(lock);
    let after = project.start("rquickjs");
    assert_eq!(after.compiles, 1, "compiled again, since it was not stored");
    assert_eq!(after.publications, 1);
    common::let_ctime_age();
    assert_eq!(project.start("rquickjs").compiles, 0);
}

/// A cache whose `max_bytes` is less than what a start compiles: the start stores what fits
/// (with one warning saying how much did not), so the next start compiles fewer modules; the
/// cache never exceeds its limit.
#[test]
fn a_start_that_compiles_more_than_the_cache_holds_stores_what_fits() {
    let project = Project::new(40, 2_000);
    let small = |project: &Project| {
        project.start_with(
            project
                .child("start")
                .env("BP_DROP", "rquickjs")
                .env("BP_MAX_BYTES", "60000"),
        )
    };
    let first = small(&project);
    assert_eq!(first.compiles, 41);
    assert_eq!(first.publications, 1, "{first:?}");
    let over_limit: Vec<_> = first
        .warnings
        .iter()
        .filter(|w| w.contains("max_bytes"))
        .collect();
    assert_eq!(over_limit.len(), 1, "{first:?}");
    assert!(
        over_limit[0].contains(" of 41 compiled modules"),
        "{first:?}"
    );
    let cache = Cache::open(&project.root).unwrap();
    let stats = cache.stats().unwrap();
    assert!(stats.entries >= 10, "{stats:?}");
    assert!(stats.pack_bytes <= 60_000, "{stats:?}");
    common::let_ctime_age();
    let second = small(&project);
    assert!(
        second.compiles <= first.compiles - 10,
        "stored entries were not used: {first:?} then {second:?}"
    );
}

/// A start over a cache it cannot write (shipped by root, run as an app user) compiles what
/// changed, stores nothing, writes nothing, and says so in one warning, not one per module.
#[test]
fn a_start_over_a_read_only_cache_warns_once_and_writes_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skipped(
            "a_start_over_a_read_only_cache_warns_once_and_writes_nothing",
            "needs root to give the cache to root and run the start as another user",
        );
        return;
    }
    let project = Project::new(3, 100);
    assert_eq!(project.start("rquickjs").compiles, 4);
    // As an image build leaves them: root's, readable by all, writable by none else.
    common::tree::ship_tree(project.dir.parent().unwrap());
    // Two modules changed since: they are compiled and cannot be stored.
    for m in ["lib/m0.js", "lib/m1.js"] {
        fs::write(
            project.dir.join(m),
            format!("export function f{}(x) {{ return x; }}\n", &m[5..6]),
        )
        .unwrap();
    }
    common::let_ctime_age();
    let before = common::files_as_they_are(&project.cache_dir());
    let start = project.start_with(
        project
            .child("start")
            .env("BP_DROP", "rquickjs")
            .run_as(65534),
    );
    assert_eq!(start.compiles, 2, "{start:?}");
    assert_eq!(start.publications, 0, "{start:?}");
    assert_eq!(start.warnings.len(), 1, "{start:?}");
    assert!(start.warnings[0].contains("read-only"), "{start:?}");
    assert_eq!(common::files_as_they_are(&project.cache_dir()), before);
}

/// A server that makes a runtime per request, each with `PackResolver` + `PackLoader` over one
/// long-lived `Cache`, with nothing to store (a warm steady state): its memory stays flat.
/// Before, every resolver left a registration behind in the handle that only a put pruned.
#[test]
fn a_runtime_per_request_keeps_nothing_per_runtime() {
    let project = Project::new(2, 100);
    assert_eq!(project.start("rquickjs").compiles, 3);
    common::let_ctime_age();
    assert_eq!(project.start("rquickjs").compiles, 0);
    let stdout = project.child("runtime-per-request").run().expect_success();
    let field = |name: &str| field(&stdout, name);
    assert_eq!(field("compiles"), 0, "{stdout}");
    // 62,000 resolvers: 16 bytes each left behind would be 1 MiB; a registration was ~500.
    let growth = field("growth");
    assert!(growth < 4 << 20, "RSS grew by {growth} bytes: {stdout}");
}
