//! The child side: one start of one variant in a fresh process whose working directory is the
//! extracted code base. Prints `<nanoseconds to ready> <nanoseconds to stored> <exported
//! names> <modules compiled by a cache miss> <inputs re-hashed>` on stdout (the last is the
//! pack's count of inputs whose stat data was too recent to trust; 0 for other variants).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytecode_pack::Cache;
use bytecode_pack::quickjs::PackLoader;
use rquickjs::loader::{FileResolver, Loader, Resolver, ScriptLoader};
use rquickjs::{CatchResultExt, Context, Module, Object, Runtime};

use crate::limit::{self, BytecodeLog, RecordingLoader, RecordingResolver, ResolutionLog};
use crate::per_file::PerFileCache;
use crate::per_file_loader::{self, PerFileLoader};
use crate::{DIR, ENTRY, MJS, PRECOMPILE, RECORD, SHIPPED, UID, Variant};

/// What one start measured.
struct Start {
    /// From `Runtime::new()` to the entry's import finished: the application is running.
    ready: Duration,
    /// `ready` plus the store (the pack variants' flushes; the same as `ready` for others).
    stored: Duration,
    exports: usize,
}

/// The resolver every variant starts from (the `limit` only replays what it answered).
fn file_resolver(mjs: bool) -> FileResolver {
    let resolver = FileResolver::default().with_path(".");
    if mjs {
        resolver.with_pattern("{}.mjs")
    } else {
        resolver
    }
}

/// What a pack variant stores at the end of a start, after the ready clock and inside the
/// stored one: `PackLoader::flush`, which also stores what its `PackResolver` learned (a
/// host gets the same when the runtime is dropped).
type Store = Box<dyn FnOnce()>;

/// The pack variants' cache, kept to read its counters after the clock.
static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();

fn open_cache(dir: PathBuf) -> Cache {
    let cache = Cache::open(dir).unwrap();
    let _ = CACHE.set(cache.clone());
    cache
}

/// The layered variant's cache: the app user's writable one at `upper`, over the shipped one
/// beside it.
fn open_layered(upper: PathBuf) -> Cache {
    let shipped = Cache::open(upper.parent().unwrap().join(SHIPPED)).unwrap();
    let cache = Cache::builder(upper).fall_back_to(shipped).open().unwrap();
    let _ = CACHE.set(cache.clone());
    cache
}

/// Becomes the user [`UID`] names, if set: before the clock, as a service starts as its user.
fn become_user() {
    let Ok(uid) = std::env::var(UID) else {
        return;
    };
    let uid: u32 = uid.parse().unwrap();
    // SAFETY: plain syscalls; the parent made what this user needs readable.
    unsafe {
        assert_eq!(libc::setgid(uid), 0);
        assert_eq!(libc::setuid(uid), 0);
    }
}

fn flush_loader(loader: PackLoader) -> Option<Store> {
    Some(Box::new(move || loader.flush().unwrap()))
}

/// One start. The clock runs from just before `Runtime::new()`; it reads `ready` once the
/// entry's import (every module loaded, linked and evaluated) finished, and `stored` once
/// `store` ran after that: for the pack variants, `PackLoader::flush`, which stores the
/// modules this start compiled (a host gets the same at the runtime's drop, off its
/// critical path). `make` (a cache's `open`, for the cache variants) runs after
/// `Runtime::new()`, inside the clock. Counting the exports, and tearing the runtime down,
/// are off the clock for every variant.
fn start<R, L>(entry: &str, make: impl FnOnce() -> (R, L, Option<Store>)) -> Start
where
    R: Resolver + 'static,
    L: Loader + 'static,
{
    let clock = Instant::now();
    let runtime = Runtime::new().unwrap();
    // The 201 tsc modules import each other 200 deep: linking recurses that deep.
    runtime.set_max_stack_size(4 << 20);
    let (resolver, loader, store) = make();
    runtime.set_loader(resolver, loader);
    let context = Context::full(&runtime).unwrap();
    let (ready, stored, exports) = context.with(|ctx| {
        let namespace = Module::import(&ctx, entry)
            .and_then(|promise| promise.finish::<Object>())
            .catch(&ctx)
            .unwrap_or_else(|e| panic!("importing {entry}: {e}"));
        let ready = clock.elapsed();
        if let Some(store) = store {
            store();
        }
        let stored = clock.elapsed();
        (ready, stored, namespace.keys::<String>().count())
    });
    drop(context);
    drop(runtime);
    Start {
        ready,
        stored,
        exports,
    }
}

/// [`Variant::CopiedReads`]: every module the record run in `recorded` loaded, read as a
/// copy's first start reads it (`O_NOATIME`, then `fstat`, one read, close), timed.
fn read_modules(recorded: &std::path::Path) -> Start {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let names = limit::module_names(recorded);
    let clock = Instant::now();
    for name in &names {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let len = file.metadata().unwrap().len();
        let mut content = Vec::with_capacity(len as usize);
        (&mut file).take(len).read_to_end(&mut content).unwrap();
        std::hint::black_box(&content);
    }
    let ready = clock.elapsed();
    Start {
        ready,
        stored: ready,
        exports: names.len(),
    }
}

pub fn run(job: &str) {
    become_user();
    let entry = std::env::var(ENTRY).unwrap();
    let mjs = std::env::var(MJS).as_deref() == Ok("1");
    let dir = || PathBuf::from(std::env::var_os(DIR).expect("BP_APP_DIR"));
    if job == PRECOMPILE {
        // What `bytecode-pack precompile <entry>` does, in the code base's directory.
        let cache = Cache::open(dir()).unwrap();
        let request = bytecode_pack::quickjs::Precompile::new().entry(entry.as_str());
        let report = bytecode_pack::quickjs::precompile(
            &cache,
            &|| file_resolver(mjs),
            &request,
            &|_, _| {},
        )
        .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        println!("0 0 0 {} 0", report.compiled);
        return;
    }
    let (start, misses) = if job == RECORD {
        record(&entry, mjs, &dir())
    } else {
        let variant = Variant::from_name(job).unwrap_or_else(|| panic!("unknown variant {job}"));
        let start = match variant {
            Variant::ScriptLoader => {
                let loader = if mjs {
                    ScriptLoader::default().with_extension("mjs")
                } else {
                    ScriptLoader::default()
                };
                start(&entry, || (file_resolver(mjs), loader, None))
            }
            Variant::PerFile => start(&entry, || {
                let cache = PerFileCache::new(&dir());
                (file_resolver(mjs), PerFileLoader { cache }, None)
            }),
            Variant::PackCold | Variant::PackWarm => start(&entry, || {
                let cache = open_cache(dir());
                let loader = PackLoader::new(cache);
                (file_resolver(mjs), loader.clone(), flush_loader(loader))
            }),
            Variant::Limit => {
                // Before the clock: every resolution and every module's bytecode, in memory.
                let (resolver, loader) = limit::read(&dir());
                start(&entry, move || (resolver, loader, None))
            }
            Variant::CopiedReads => read_modules(&dir()),
            Variant::PackResolverCold
            | Variant::PackResolverWarm
            | Variant::PackResolverSealed
            | Variant::PackResolverMoved
            | Variant::PackResolverCopied
            | Variant::PackResolverCopiedSecond
            | Variant::PackResolverRecopied
            | Variant::PackResolverPrecompiled
            | Variant::PackResolverReadOnly
            | Variant::PackResolverLayered => start(&entry, || {
                let cache = if variant == Variant::PackResolverLayered {
                    open_layered(dir())
                } else if variant == Variant::PackResolverSealed {
                    let cache = Cache::builder(dir()).sealed(true).open().unwrap();
                    let _ = CACHE.set(cache.clone());
                    cache
                } else {
                    open_cache(dir())
                };
                let resolver =
                    bytecode_pack::quickjs::PackResolver::new(file_resolver(mjs), cache.clone());
                let loader = PackLoader::new(cache);
                // One publication stores the modules and the resolver's answers.
                (resolver, loader.clone(), flush_loader(loader))
            }),
        };
        let misses = bytecode_pack::quickjs::process_counters().compiles
            + per_file_loader::MISSES.load(std::sync::atomic::Ordering::Relaxed);
        (start, misses)
    };
    let rehashed = CACHE
        .get()
        .map_or(0, |cache| cache.stats().unwrap().counters.input_rehashes);
    println!(
        "{} {} {} {misses} {rehashed}",
        start.ready.as_nanos(),
        start.stored.as_nanos(),
        start.exports
    );
}

/// The record run behind the `limit`: compiles everything through recording wrappers, then
/// stores every resolution and every module's bytecode in `dir`. Reports the module count
/// as its misses.
fn record(entry: &str, mjs: bool, dir: &std::path::Path) -> (Start, u64) {
    let resolutions = ResolutionLog::default();
    let bytecode = BytecodeLog::default();
    let start = start(entry, || {
        let resolver = RecordingResolver {
            inner: file_resolver(mjs),
            log: resolutions.clone(),
        };
        let loader = RecordingLoader {
            log: bytecode.clone(),
        };
        (resolver, loader, None)
    });
    limit::store(dir, &resolutions, &bytecode);
    let modules = bytecode.lock().unwrap().len() as u64;
    (start, modules)
}
