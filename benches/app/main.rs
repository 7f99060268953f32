//! `cargo bench --bench app`: whole-application starts over real npm ES-module code bases
//! (lodash-es, date-fns, es-toolkit; tarballs in `benches/fixtures/`) and over 201 modules
//! `tsc` compiled, with their source maps (`tsc-mapped`) and without (`tsc-unmapped`; the
//! fixtures in `tests/fixtures/sourcemaps/`), one benchmark id
//! `app/<codebase>/<variant>` per way of loading them. Filter as usual:
//! `cargo bench --bench app -- app/lodash-es/`.
//!
//! Each start is a fresh child process: this binary re-invoked with `BP_APP_CHILD=<variant>`,
//! its working directory the extracted code base (which holds `package/`). The child creates
//! a `Runtime` and a `Context::full`, sets a loader, imports the entry module and waits for
//! it, and reports the nanoseconds from just before `Runtime::new()` to after the import
//! finished (the application is running: "ready"), and to after the store that follows (see
//! below). The parent sums the ready times in `iter_custom`: **process spawn and exit, and
//! everything the parent prepares per start (a fresh cache dir), are excluded**; opening the
//! cache (`Cache::open`, `PerFileCache::new`) is inside the clock, as a real start pays it.
//! Every resolver is `FileResolver::default().with_path(".")`, plus `.with_pattern("{}.mjs")`
//! for es-toolkit.
//!
//! The variants ([`Variant`]):
//! - `script_loader`: rquickjs's `ScriptLoader`; compiles every module.
//! - `per_file`: the per-file cache design (`benches/compare/per_file.rs`) as a loader,
//!   warm: filled by a start before the timed ones.
//! - `pack_cold`: `PackLoader` over an empty cache (a fresh dir per start): compiles and puts
//!   every module, as a user's first start does.
//! - `pack_warm`: `PackLoader` over a cache filled by a start before the timed ones.
//! - `limit`: everything in memory before the clock starts (see `limit.rs` and [`Variant::Limit`]).
//! - `pack_resolver_cold`, `pack_resolver_warm`: `PackResolver` + `PackLoader`, the one-line
//!   change the README recommends, over an empty cache and over a filled one.
//!
//! The store: for the pack variants, after ready, `PackLoader::flush`, the one publication that
//! stores what a start compiled and what its `PackResolver` learned. A host gets the same
//! when its runtime is dropped, off its start's critical path, so the measurement is the
//! ready time; the table also gives each variant's median to stored, what a process that
//! starts and exits pays before it exits. Tearing the runtime down is off every clock.
//!
//! Checks, outside every clock: each start's entry module must export as many names as under
//! `script_loader` (a mismatch panics), a warm start must compile nothing and a cold one every
//! module.
//!
//! At the end two tables on stderr give, per code base, the median of every start the bench
//! timed (warm-up included: the same process each time) to ready and to stored, and six
//! ratios of each. `BP_APP_PAIRS` adds variants started alternately (see `pairs.rs`), for
//! ratios this VM's drift over minutes does not move.

mod child;
mod fixture;
mod limit;
mod pairs;
#[path = "../compare/per_file.rs"]
mod per_file;
mod per_file_loader;
#[path = "../../tests/common/tree.rs"]
mod tree;

use tree::{copy_tree, ship_tree};

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use tempfile::TempDir;

use fixture::{CODEBASES, Codebase};

/// Set in a child: the variant's name, or [`RECORD`].
const CHILD: &str = "BP_APP_CHILD";
/// The entry module, relative to the child's working directory.
const ENTRY: &str = "BP_APP_ENTRY";
/// `1` when the code base imports `.mjs` files.
const MJS: &str = "BP_APP_MJS";
/// The cache dir (per_file, pack_*) or the recorded files (limit, record).
const DIR: &str = "BP_APP_DIR";
/// The child job that records resolutions and bytecode for the `limit`.
const RECORD: &str = "record";
/// The child job that precompiles the code base into the cache dir (outside the clock).
const PRECOMPILE: &str = "precompile";
/// The shipped cache of [`Prep::Shipped`], beside the dir the child is given (its upper
/// cache, when layered).
const SHIPPED: &str = "shipped";

/// One way of loading a code base: one benchmark id each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// rquickjs's `ScriptLoader`: reads and compiles every module.
    ScriptLoader,
    /// The per-file cache design, warm.
    PerFile,
    /// `PackLoader` over an empty cache: compiles and puts every module.
    PackCold,
    /// `PackLoader` over a cache a previous start filled.
    PackWarm,
    /// The in-memory limit: what a start costs once every resolution and every module's
    /// bytecode is already in memory. Before its clock starts the child reads both from files
    /// a record run wrote; inside it, it still creates the runtime and context, deserialises
    /// every module's bytecode (`JS_ReadObject`: atoms, functions, constants), lets QuickJS
    /// match each import against the modules already loaded (a linear scan per import),
    /// links and evaluates every module. What it knows before the clock that no real start
    /// can know without work inside it, and so does not pay:
    /// - which modules the import will reach: the whole graph, found by an earlier run;
    /// - every resolution, `(base, name) -> path`: no `FileResolver` probe (`is_file`, one
    ///   `statx` each) and no check that a file still exists where it did;
    /// - every module's bytecode: no open, read or map of any file, no cache index lookup,
    ///   no checksum;
    /// - that nothing changed: no freshness check of any source (`statx` or re-hash), so it
    ///   would serve stale code after an edit. It is a bound, not a cache.
    Limit,
    /// `PackResolver` + `PackLoader` over an empty cache.
    PackResolverCold,
    /// `PackResolver` + `PackLoader` over a cache a previous start filled.
    PackResolverWarm,
    /// [`Variant::PackResolverWarm`] over a handle opened `sealed` (opt-in: recorded inputs
    /// trusted without a `stat`), to show what checking freshness costs a warm start.
    PackResolverSealed,
    /// [`Variant::PackResolverWarm`], the first start after the tree was moved (`mv`: the same
    /// inodes) to another path.
    PackResolverMoved,
    /// The first start in a fresh copy of the tree (new inodes and ctimes, as `cp -a`, a CI
    /// restore or Docker `COPY` make), over the cache a start of the original filled.
    PackResolverCopied,
    /// The second start in such a copy: warm again once the first recorded where it is.
    PackResolverCopiedSecond,
    /// [`Variant::PackResolverCopied`], the copy deleted and made again at the same path each
    /// time (a CI job re-extracting its checkout): its root often gets the inode number the
    /// deleted one had, so the start finds that copy's entries, all stale, and re-hashes
    /// through them.
    PackResolverRecopied,
    /// The first start over a cache `bytecode-pack precompile` filled (outside the clock).
    PackResolverPrecompiled,
    /// A warm cache shipped as an image ships it (built by root, then `chmod -R go-w,a+rX`),
    /// started by an unprivileged user ([`APP_USER`]) who cannot write it: a read-only handle.
    PackResolverReadOnly,
    /// That shipped cache under a writable one of the app user's (`fall_back_to`), which a
    /// start before the timed ones filled with what the shipped one could not answer.
    PackResolverLayered,
    /// Not a start: in a fresh copy made as for [`Variant::PackResolverCopied`], every module
    /// the start loads is opened, `fstat`ed, read whole and closed, as a copy's first start
    /// reads them to prove their content (no hashing, no cache, no engine). What any cache
    /// that checks a copy's content by reading it pays on top of the engine's work.
    CopiedReads,
}

/// The unprivileged user the shipped-cache variants start as (`nobody`).
const APP_USER: u32 = 65534;
/// Set in a child: the user id it becomes before its clock starts.
const UID: &str = "BP_APP_UID";

/// What the parent prepares for a variant's starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prep {
    /// Nothing: no cache.
    Nothing,
    /// A fresh, empty cache dir per start (outside the clock); each start compiles everything.
    FreshCache,
    /// One cache dir, filled by a start before the timed ones; timed starts compile nothing.
    WarmCache,
    /// The record run's files (done once per code base).
    Recorded,
    /// A copy of the tree and a cache its start filled; each timed start follows a move of
    /// the tree to the other of two paths (outside the clock).
    Moved,
    /// A cache a start of the tree filled; each timed start runs in a fresh copy of the tree
    /// made outside the clock, after `starts_before` untimed starts there. The copy is made at
    /// a new path with a copy of that cache (as `cp -a` of a project and its cache, or a CI
    /// restore, leaves them: the original's entries only), both deleted after the start; or,
    /// `same_path`, the previous copy is deleted and the new one made where it was, over the
    /// one cache every copy's start wrote to.
    Copied { starts_before: u32, same_path: bool },
    /// A fresh cache dir per start, precompiled before it (outside the clock).
    Precompiled,
    /// A cache filled by root and made read-only to others; the starts run as [`APP_USER`],
    /// over it alone or (`layered`) under a writable cache of that user's.
    Shipped { layered: bool },
}

impl Variant {
    /// Every variant, in the table's column order.
    pub const ALL: &[Variant] = &[
        Variant::ScriptLoader,
        Variant::PerFile,
        Variant::PackCold,
        Variant::PackWarm,
        Variant::Limit,
        Variant::PackResolverCold,
        Variant::PackResolverWarm,
        Variant::PackResolverSealed,
        Variant::PackResolverMoved,
        Variant::PackResolverCopied,
        Variant::PackResolverCopiedSecond,
        Variant::PackResolverRecopied,
        Variant::PackResolverPrecompiled,
        Variant::PackResolverReadOnly,
        Variant::PackResolverLayered,
        Variant::CopiedReads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::ScriptLoader => "script_loader",
            Variant::PerFile => "per_file",
            Variant::PackCold => "pack_cold",
            Variant::PackWarm => "pack_warm",
            Variant::Limit => "limit",
            Variant::PackResolverCold => "pack_resolver_cold",
            Variant::PackResolverWarm => "pack_resolver_warm",
            Variant::PackResolverSealed => "pack_resolver_sealed",
            Variant::PackResolverMoved => "pack_resolver_moved",
            Variant::PackResolverCopied => "pack_resolver_copied",
            Variant::PackResolverCopiedSecond => "pack_resolver_copied_second",
            Variant::PackResolverRecopied => "pack_resolver_recopied",
            Variant::PackResolverPrecompiled => "pack_resolver_precompiled",
            Variant::CopiedReads => "copied_reads",
            Variant::PackResolverReadOnly => "pack_resolver_read_only",
            Variant::PackResolverLayered => "pack_resolver_layered",
        }
    }

    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// Whether its starts run as another user (a cache shipped by root).
    fn needs_root(self) -> bool {
        matches!(self.prep(), Prep::Shipped { .. })
    }

    fn prep(self) -> Prep {
        match self {
            Variant::ScriptLoader => Prep::Nothing,
            Variant::PerFile | Variant::PackWarm => Prep::WarmCache,
            Variant::PackCold => Prep::FreshCache,
            Variant::Limit => Prep::Recorded,
            Variant::PackResolverCold => Prep::FreshCache,
            Variant::PackResolverWarm | Variant::PackResolverSealed => Prep::WarmCache,
            Variant::PackResolverMoved => Prep::Moved,
            Variant::PackResolverCopied | Variant::CopiedReads => Prep::Copied {
                starts_before: 0,
                same_path: false,
            },
            Variant::PackResolverCopiedSecond => Prep::Copied {
                starts_before: 1,
                same_path: false,
            },
            Variant::PackResolverRecopied => Prep::Copied {
                starts_before: 0,
                same_path: true,
            },
            Variant::PackResolverPrecompiled => Prep::Precompiled,
            Variant::PackResolverReadOnly => Prep::Shipped { layered: false },
            Variant::PackResolverLayered => Prep::Shipped { layered: true },
        }
    }
}

/// What a child reported.
struct Report {
    /// To the application running (the benchmark's measurement).
    ready: Duration,
    /// To the store after that finished (pack variants; `ready` for the others).
    stored: Duration,
    exports: usize,
    /// Modules compiled because a cache missed (the record run: every module it compiled).
    misses: u64,
    /// Inputs the pack re-hashed because their stat data was too recent to trust.
    rehashed: u64,
}

/// One start of `job` (a variant's name or [`RECORD`]) over the code base extracted at `root`.
fn spawn(codebase: &Codebase, root: &Path, job: &str, dir: Option<&Path>) -> Report {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .current_dir(root)
        .env(CHILD, job)
        .env(ENTRY, codebase.entry)
        .env(MJS, if codebase.mjs { "1" } else { "0" })
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(dir) = dir {
        command.env(DIR, dir);
    }
    if let Some(Prep::Shipped { .. }) = Variant::from_name(job).map(Variant::prep) {
        command.env(UID, APP_USER.to_string());
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "app/{}/{job}: the child failed: {}",
        codebase.name,
        output.status
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<u64> = stdout
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let [ready, stored, exports, misses, rehashed] = fields[..] else {
        panic!(
            "app/{}/{job}: unexpected child output {stdout:?}",
            codebase.name
        );
    };
    Report {
        ready: Duration::from_nanos(ready),
        stored: Duration::from_nanos(stored),
        exports: exports as usize,
        misses,
        rehashed,
    }
}

/// A code base extracted and measured once, shared by its variants.
struct Prepared {
    tmp: TempDir,
    /// The children's working directory (holds `package/`).
    root: PathBuf,
    /// Exported names of the entry module under `script_loader`.
    exports: usize,
    /// Modules a start loads.
    modules: u64,
    /// The record run's files, for the `limit`.
    recorded: PathBuf,
}

impl Prepared {
    fn new(codebase: &Codebase) -> Prepared {
        let tmp = tempfile::tempdir().unwrap();
        let root = fixture::extract(codebase, &tmp.path().join("src"));
        // The kernel set every file's ctime to the extraction instant: let it age past the
        // racy window, as an installed package has by the time it is run. Otherwise the pack
        // re-hashes every input on a hit (correct, but not the case being measured).
        std::thread::sleep(bytecode_pack::RACY_WINDOW + Duration::from_millis(100));
        let reference = spawn(codebase, &root, Variant::ScriptLoader.name(), None);
        let recorded = tmp.path().join("recorded");
        fs::create_dir(&recorded).unwrap();
        let record = spawn(codebase, &root, RECORD, Some(&recorded));
        assert_eq!(
            record.exports, reference.exports,
            "app/{}: the record run's exports",
            codebase.name
        );
        let bytecode = fs::metadata(recorded.join(limit::BYTECODE_FILE))
            .unwrap()
            .len();
        eprintln!(
            "app/{}: {} modules, {} exports, {} KiB of bytecode",
            codebase.name,
            record.misses,
            reference.exports,
            bytecode / 1024
        );
        fs::create_dir(tmp.path().join("caches")).unwrap();
        Prepared {
            exports: reference.exports,
            modules: record.misses,
            root,
            recorded,
            tmp,
        }
    }

    fn caches(&self) -> PathBuf {
        self.tmp.path().join("caches")
    }

    /// Panics unless `report` is a correct start of `variant`.
    fn check(&self, codebase: &Codebase, variant: Variant, report: &Report, misses: u64) {
        let id = format!("app/{}/{}", codebase.name, variant.name());
        assert_eq!(
            report.exports, self.exports,
            "{id}: the entry exports {} names, under script_loader {}",
            report.exports, self.exports
        );
        assert_eq!(
            report.misses, misses,
            "{id}: {} modules compiled on a cache miss, expected {misses}",
            report.misses
        );
    }
}

/// Every timed start's durations (to ready, to stored), per code base and variant, for the
/// table.
type Samples = RefCell<HashMap<(&'static str, Variant), Vec<(Duration, Duration)>>>;

/// Every variant of `codebase`: ids `app/<codebase>/<variant>`. The time of an iteration is
/// what the child reported, summed by `iter_custom`: process spawn and exit, the parent's
/// per-start setup (a fresh cache dir) and the checks are all excluded.
fn bench_codebase(c: &mut Criterion, codebase: &'static Codebase, samples: &Samples) {
    // Extracted on first use, so a filter that matches none of its ids costs nothing.
    let prepared: OnceCell<Prepared> = OnceCell::new();
    let mut group = c.benchmark_group("app");
    // Starts take tens to hundreds of milliseconds: the same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    for &variant in Variant::ALL {
        if !codebase.runs(variant) {
            continue;
        }
        if variant.needs_root() && !is_root() {
            eprintln!(
                "app/{}/{}: SKIPPED (needs root, to ship a cache to another user)",
                codebase.name,
                variant.name()
            );
            continue;
        }
        // The dir this variant's starts use, set up on its first call.
        let mut dir: Option<Option<PathBuf>> = None;
        group.bench_function(format!("{}/{}", codebase.name, variant.name()), |b| {
            let p = prepared.get_or_init(|| Prepared::new(codebase));
            let dir = dir.get_or_insert_with(|| variant_dir(p, codebase, variant));
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let report = timed_start(p, codebase, variant, dir.as_deref());
                    total += report.ready;
                    samples
                        .borrow_mut()
                        .entry((codebase.name, variant))
                        .or_default()
                        .push((report.ready, report.stored));
                }
                total
            })
        });
    }
    group.finish();
}

/// The dir `variant`'s starts use (a filled cache, the record run's files), set up before
/// its first timed start.
fn variant_dir(p: &Prepared, codebase: &Codebase, variant: Variant) -> Option<PathBuf> {
    match variant.prep() {
        Prep::Nothing | Prep::FreshCache | Prep::Precompiled => None,
        Prep::Recorded => Some(p.recorded.clone()),
        Prep::Moved | Prep::Copied { .. } => {
            // Its own tree and cache, so the others' trees stay where they are.
            let own = p.caches().join(variant.name());
            copy_tree(&p.root, &own.join("tree-a"));
            std::thread::sleep(bytecode_pack::RACY_WINDOW);
            if variant == Variant::CopiedReads {
                // Its child reads the module list of the record run.
                return Some(p.recorded.clone());
            }
            let dir = own.join("cache");
            let report = spawn(codebase, &own.join("tree-a"), variant.name(), Some(&dir));
            p.check(codebase, variant, &report, p.modules);
            Some(dir)
        }
        Prep::Shipped { layered } => Some(ship(p, codebase, variant, layered)),
        Prep::WarmCache => {
            let dir = p.caches().join(variant.name());
            let report = spawn(codebase, &p.root, variant.name(), Some(&dir));
            p.check(codebase, variant, &report, p.modules);
            Some(dir)
        }
    }
}

/// One timed start of `variant` over `dir` (what [`variant_dir`] set up), its tree placed and
/// its result checked outside the child's clock.
fn timed_start(p: &Prepared, codebase: &Codebase, variant: Variant, dir: Option<&Path>) -> Report {
    let expected_misses = match variant.prep() {
        Prep::FreshCache => p.modules,
        _ => 0,
    };
    // Created and removed outside the child's clock.
    let fresh = matches!(variant.prep(), Prep::FreshCache | Prep::Precompiled)
        .then(|| tempfile::tempdir_in(p.caches()).unwrap());
    // A root the cache creates itself (private whatever the umask).
    let fresh_root = fresh.as_ref().map(|t| t.path().join("cache"));
    let cache_dir = fresh_root.as_deref().or(dir);
    if variant.prep() == Prep::Precompiled {
        spawn(codebase, &p.root, PRECOMPILE, cache_dir);
    }
    let placed = place_tree(p, variant, cache_dir, codebase);
    let report = spawn(
        codebase,
        &placed.tree,
        variant.name(),
        placed.cache.as_deref(),
    );
    for path in &placed.remove_after {
        fs::remove_dir_all(path).unwrap();
    }
    if variant == Variant::CopiedReads {
        assert_eq!(report.exports as u64, p.modules, "copied_reads: files read");
    } else {
        p.check(codebase, variant, &report, expected_misses);
    }
    report
}

/// Where a timed start of `variant` runs, readied outside the clock: the shared tree, or (moved
/// and copied variants) the variant's own tree moved or copied just before.
fn place_tree(p: &Prepared, variant: Variant, cache: Option<&Path>, codebase: &Codebase) -> Placed {
    let own = p.caches().join(variant.name());
    let shared = |tree| Placed {
        tree,
        cache: cache.map(Path::to_path_buf),
        remove_after: Vec::new(),
    };
    match variant.prep() {
        Prep::Moved => {
            // The tree is at one of two paths: moved to the other.
            let (a, b) = (own.join("tree-a"), own.join("tree-b"));
            let (from, to) = if a.exists() { (a, b) } else { (b, a) };
            fs::rename(&from, &to).unwrap();
            shared(to)
        }
        Prep::Copied {
            starts_before,
            same_path,
        } => {
            let source = own.join("tree-a");
            static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let placed = if same_path {
                let copy = own.join("copy");
                if copy.exists() {
                    fs::remove_dir_all(&copy).unwrap();
                }
                shared(copy)
            } else {
                // The tree copied with its cache as the original's start left it (`copied_reads`
                // is given the record run's files instead, which it only reads).
                let copy = own.join(format!("copy-{n}"));
                let cache = cache.map(|cache| match variant {
                    Variant::CopiedReads => cache.to_path_buf(),
                    _ => {
                        let copied = own.join(format!("cache-{n}"));
                        copy_tree(cache, &copied);
                        copied
                    }
                });
                let mut remove_after = vec![copy.clone()];
                remove_after.extend(
                    cache
                        .iter()
                        .filter(|_| variant != Variant::CopiedReads)
                        .cloned(),
                );
                Placed {
                    tree: copy,
                    cache,
                    remove_after,
                }
            };
            copy_tree(&source, &placed.tree);
            // Past the racy window of the copy's writes, as a restored tree is by its start.
            std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(20));
            for _ in 0..starts_before {
                spawn(
                    codebase,
                    &placed.tree,
                    variant.name(),
                    placed.cache.as_deref(),
                );
                std::thread::sleep(bytecode_pack::FINE_RACY_WINDOW + Duration::from_millis(20));
            }
            placed
        }
        _ => shared(p.root.clone()),
    }
}

/// Where a timed start runs: its tree and cache, and what to delete after it.
struct Placed {
    tree: PathBuf,
    cache: Option<PathBuf>,
    /// A copy and its cache, deleted once the start is over (outside the clock).
    remove_after: Vec<PathBuf>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Readies a [`Prep::Shipped`] variant: a cache a warm start of root's filled, made
/// read-only to others as an image build leaves it, and the path the app user's starts
/// open: that cache, or (`layered`) a writable one of the app user's over it, filled by one
/// start before the timed ones.
fn ship(p: &Prepared, codebase: &Codebase, variant: Variant, layered: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let own = p.caches().join(variant.name());
    let shipped = own.join(SHIPPED);
    let report = spawn(
        codebase,
        &p.root,
        Variant::PackResolverWarm.name(),
        Some(&shipped),
    );
    p.check(codebase, variant, &report, p.modules);
    // `chmod -R go-w,a+rX` on the cache and `a+rx` on the directories above it.
    ship_tree(&shipped);
    for dir in [p.tmp.path(), &p.caches(), &own] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if !layered {
        return shipped;
    }
    let upper = own.join("upper");
    fs::create_dir(&upper).unwrap();
    std::os::unix::fs::chown(&upper, Some(APP_USER), Some(APP_USER)).unwrap();
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o700)).unwrap();
    spawn(codebase, &p.root, variant.name(), Some(&upper));
    upper
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Which of a start's two clocks.
#[derive(Clone, Copy)]
enum Clock {
    Ready,
    Stored,
}

/// Per code base: the median of each variant's starts (ms) to ready, and to stored, and the
/// headline ratios of each.
fn print_table(samples: &Samples) {
    const RATIOS: [(Variant, Variant); 15] = [
        (Variant::ScriptLoader, Variant::PackResolverWarm),
        (Variant::PackResolverWarm, Variant::Limit),
        (Variant::PackResolverSealed, Variant::Limit),
        (Variant::PerFile, Variant::PackResolverWarm),
        (Variant::PackResolverCold, Variant::ScriptLoader),
        (Variant::ScriptLoader, Variant::PackWarm),
        (Variant::PackCold, Variant::ScriptLoader),
        (Variant::PackResolverMoved, Variant::PackResolverWarm),
        (Variant::PackResolverCopied, Variant::PackResolverWarm),
        (Variant::CopiedReads, Variant::PackResolverWarm),
        (Variant::PackResolverCopiedSecond, Variant::PackResolverWarm),
        (Variant::PackResolverRecopied, Variant::PackResolverWarm),
        (Variant::PackResolverPrecompiled, Variant::PackResolverWarm),
        (Variant::PackResolverReadOnly, Variant::PackResolverWarm),
        (Variant::PackResolverLayered, Variant::PackResolverWarm),
    ];
    let samples = samples.borrow();
    if samples.is_empty() {
        return;
    }
    // Every column as wide as its label.
    let ratio_label = |(a, b): (Variant, Variant)| format!("{}/{}", a.name(), b.name());
    let mut header = format!("{:<12}", "codebase");
    for v in Variant::ALL {
        header += &format!(" {:>8}", v.name());
    }
    for ratio in RATIOS {
        header += &format!(" {:>8}", ratio_label(ratio));
    }
    for (clock, title) in [
        (Clock::Ready, "to ready (the measurement)"),
        (
            Clock::Stored,
            "to stored (ready + the flushes a runtime's drop runs)",
        ),
    ] {
        eprintln!(
            "\napp: median start per variant, {title}, ms; every timed start, warm-up included"
        );
        eprintln!("{header}");
        for codebase in &CODEBASES {
            let medians: HashMap<Variant, Duration> = Variant::ALL
                .iter()
                .filter_map(|&v| {
                    let starts = samples.get(&(codebase.name, v))?;
                    let times: Vec<Duration> = starts
                        .iter()
                        .map(|&(ready, stored)| match clock {
                            Clock::Ready => ready,
                            Clock::Stored => stored,
                        })
                        .collect();
                    Some((v, median(&times)?))
                })
                .collect();
            if medians.is_empty() {
                continue;
            }
            let mut row = format!("{:<12}", codebase.name);
            for v in Variant::ALL {
                let cell = medians
                    .get(v)
                    .map_or("-".into(), |m| format!("{:.2}", m.as_secs_f64() * 1e3));
                row += &format!(" {cell:>w$}", w = v.name().len().max(8));
            }
            for ratio @ (a, b) in RATIOS {
                let cell = match (medians.get(&a), medians.get(&b)) {
                    (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
                    _ => "-".into(),
                };
                row += &format!(" {cell:>w$}", w = ratio_label(ratio).len().max(8));
            }
            eprintln!("{row}");
        }
    }
    print_map_costs(&samples);
}

/// The cost of source maps: each variant's median on the tsc code base with its maps, over
/// the same code base without them (to ready).
fn print_map_costs(samples: &HashMap<(&'static str, Variant), Vec<(Duration, Duration)>>) {
    let median_of = |codebase, variant| {
        let starts = samples.get(&(codebase, variant))?;
        median(&starts.iter().map(|&(ready, _)| ready).collect::<Vec<_>>())
    };
    let mut line = String::new();
    for &variant in Variant::ALL {
        if let (Some(with), Some(without)) = (
            median_of("tsc-mapped", variant),
            median_of("tsc-unmapped", variant),
        ) {
            let ratio = with.as_secs_f64() / without.as_secs_f64();
            line += &format!(" {}={ratio:.3}x", variant.name());
        }
    }
    if !line.is_empty() {
        eprintln!("\napp: tsc-mapped / tsc-unmapped, median to ready:{line}");
    }
}

fn main() {
    if let Ok(job) = std::env::var(CHILD) {
        child::run(&job);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let samples = Samples::default();
    for codebase in &CODEBASES {
        bench_codebase(&mut c, codebase, &samples);
    }
    c.final_summary();
    print_table(&samples);
    if std::env::var_os("BP_APP_HEALING").is_some() {
        for codebase in &CODEBASES {
            print_healing(codebase);
        }
    }
    if let Ok(spec) = std::env::var(pairs::PAIRS) {
        pairs::print_pairs(&spec);
    }
    if let Ok(spec) = std::env::var(pairs::MAP_PAIRS) {
        pairs::print_map_pairs(&spec);
    }
}

/// Starts 1-5 of `pack_resolver_warm` right after a fresh extraction, back to back over one
/// new cache: start 1 compiles; while the sources' ctimes are younger than the racy window
/// their stat data cannot be trusted, so a start re-hashes them, and the first start past the
/// window re-records them; from then on a start is warm. Each start is printed with when it
/// began (after the extraction ended), its time to ready, and what it compiled and re-hashed.
/// Printed, not benchmarked (each start happens once). Run with `BP_APP_HEALING=1`.
fn print_healing(codebase: &'static Codebase) {
    let tmp = tempfile::tempdir().unwrap();
    let root = fixture::extract(codebase, &tmp.path().join("src"));
    let extracted = std::time::Instant::now();
    let cache = tmp.path().join("cache");
    let starts: Vec<String> = (0..5)
        .map(|_| {
            let began = extracted.elapsed();
            let report = spawn(
                codebase,
                &root,
                Variant::PackResolverWarm.name(),
                Some(&cache),
            );
            format!(
                "+{} ms: {:.2} ms ({} compiled, {} re-hashed)",
                began.as_millis(),
                report.ready.as_secs_f64() * 1e3,
                report.misses,
                report.rehashed
            )
        })
        .collect();
    eprintln!(
        "app/{} starts 1-5 after extraction: {}",
        codebase.name,
        starts.join("; ")
    );
}
