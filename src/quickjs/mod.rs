//! QuickJS glue through rquickjs: compile to bytecode, load verified bytecode, a one-call path
//! for hosts, [`PackLoader`], a cache-backed module loader, and [`PackResolver`], a
//! `FileResolver` whose answers are kept in the cache.
//!
//! A host that uses rquickjs's file loader switches to the pack by changing one line, as the
//! README shows: its `FileResolver` goes inside a [`PackResolver`] and `ScriptLoader` becomes
//! [`PackLoader`], both given the cache. Names are resolved against the working directory each
//! was created in, as `FileResolver` resolves them and rquickjs's own `ScriptLoader` reads
//! them. [`PackLoader`] also works with a plain `FileResolver`, which then probes files on
//! every start:
//!
//! ```no_run
//! use bytecode_pack::Cache;
//! use bytecode_pack::quickjs::{PackLoader, PackResolver};
//! use rquickjs::{Context, Module, Runtime, loader::FileResolver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::open_default_or_uncached(); // uncached, with a warning, where none can be opened
//! let runtime = Runtime::new()?;
//! // was: runtime.set_loader(FileResolver::default().with_path("."), ScriptLoader::default());
//! runtime.set_loader(
//!     PackResolver::new(FileResolver::default().with_path("."), cache.clone()),
//!     PackLoader::new(cache),
//! );
//! let context = Context::full(&runtime)?;
//! context.with(|ctx| -> rquickjs::Result<()> {
//!     // src/main.js, its imports and theirs: compiled once, then loaded from the pack.
//!     let promise = Module::import(&ctx, "src/main.js")?;
//!     promise.finish::<rquickjs::Object>()?;
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! Bundles and transpiled files: [`declare_built`] looks a built module up by its build's
//! entry files and configuration, and runs the build only on a miss; the build's source map
//! `sources` become the module's inputs, so that editing any of them makes it miss. A source
//! map may omit files the bundler inlined completely (a module of constants, a re-export), so
//! a host with a bundler adds the bundler's own module graph to the build's inputs too.
//!
//! **Stack traces in the user's files.** Frames of modules that carry a source map name the
//! original file, line and column, as `node --enable-source-maps` does: modules
//! [`PackLoader`] loads whose source ends with a `//# sourceMappingURL=` comment (a `.map` file
//! beside them, whose hash the module's entry records and a stack checks, or an inline
//! `data:` URL), and modules [`declare_built`] gives with a map. Nothing to switch on; on a
//! first start and a warm one alike. A stack is mapped when it is read; a map is parsed the
//! first time a stack passes through its module, not at load (a first start also reads and
//! prepares each map file when its entries are stored). A host's own `Error.prepareStackTrace`
//! keeps working, and is given the mapped call sites. A map that cannot be used (malformed,
//! missing, too large, not a regular file, or, for [`PackLoader`], naming sources outside the
//! working directory) leaves its frames as they are, with one warning.

use std::sync::atomic::{AtomicU64, Ordering};

use rquickjs::module::Declared;
use rquickjs::{CatchResultExt, Ctx, Module, WriteOptions};

mod batch;
mod built;
mod closing;
#[allow(unsafe_code)]
mod engine;
mod glue;
mod handoff;
mod imports;
mod loader;
mod maps;
mod precompile;
pub(crate) mod resolver;
mod stack;

pub use built::{Build, BuildKey, BuiltModule, declare_built};
pub use loader::PackLoader;
pub use precompile::{Precompile, PrecompileReport, precompile};
pub use resolver::PackResolver;

use crate::cache::Cache;
use crate::entry::{Hit, NewEntry};
use crate::error::{Error, Result};
use crate::key::Key;

/// How bytecode is written. Part of the cache key: entries written with other options are
/// other entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    /// Leave the source text out (`Function.prototype.toString` then shows no body). Smaller.
    pub strip_source: bool,
    /// Leave debug information out (stack traces lose file and line). Smaller still.
    pub strip_debug: bool,
}

impl CompileOptions {
    /// Both strips: the smallest bytecode, for production.
    pub const STRIPPED: CompileOptions = CompileOptions {
        strip_source: true,
        strip_debug: true,
    };

    fn write_options(self) -> WriteOptions {
        WriteOptions {
            strip_source: self.strip_source,
            strip_debug: self.strip_debug,
            ..WriteOptions::default()
        }
    }

    /// Folds the options and the module's name into a key: the name is baked into bytecode
    /// and is the base for resolving its relative imports.
    fn key(self, base: Key, module_name: &str) -> Key {
        let flags = [u8::from(self.strip_source), u8::from(self.strip_debug)];
        base.derive(&[&flags[..], module_name.as_bytes()])
    }
}

/// Bytecode produced by [`compile`]: the only bytecode [`load`] accepts back from the cache,
/// because it came out of this engine's `Module::write` rather than from a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytecode(Vec<u8>);

impl Bytecode {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// An entry storing this bytecode for `module_name`, loadable by [`load`].
    pub fn entry<'a>(&'a self, module_name: &'a str) -> NewEntry<'a> {
        NewEntry::new(module_name, &self.0).engine_bytecode()
    }
}

/// Where a module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from verified cached bytecode; nothing was compiled.
    Cache,
    /// Compiled from source (and stored for next time).
    Compiled,
}

static COMPILES: AtomicU64 = AtomicU64::new(0);
static CACHE_LOADS: AtomicU64 = AtomicU64::new(0);
pub(crate) static PROBED_RESOLUTIONS: AtomicU64 = AtomicU64::new(0);
static HITS_COMPILED: AtomicU64 = AtomicU64::new(0);

/// Process-wide counts of what this module did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessCounters {
    /// Modules this crate compiled to bytecode: on a miss, or through [`compile`].
    pub compiles: u64,
    /// Modules loaded from cached bytecode.
    pub cache_loads: u64,
    /// Imports a [`PackResolver`] resolved by probing the filesystem, as `FileResolver`
    /// does: with no answer stored, or none that still stood.
    pub probed_resolutions: u64,
    /// Cache hits [`PackLoader`] compiled from their unchanged source instead of loading
    /// their bytecode, where in a graph of thousands of modules that costs less.
    pub hits_compiled: u64,
}

/// What this process has compiled and loaded through this module so far.
pub fn process_counters() -> ProcessCounters {
    ProcessCounters {
        compiles: COMPILES.load(Ordering::Relaxed),
        cache_loads: CACHE_LOADS.load(Ordering::Relaxed),
        probed_resolutions: PROBED_RESOLUTIONS.load(Ordering::Relaxed),
        hits_compiled: HITS_COMPILED.load(Ordering::Relaxed),
    }
}

fn js_error(ctx: &Ctx<'_>, module: &str, e: rquickjs::Error) -> Error {
    let caught = Err::<(), _>(e).catch(ctx).unwrap_err();
    Error::QuickJs {
        module: module.to_owned(),
        message: caught.to_string().trim_end().to_owned(),
    }
}

/// Compiles `source` as module `name` and returns the declared module and its bytecode.
/// Declaring resolves the module's imports, through the runtime's loader.
pub fn compile<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: &[u8],
    options: CompileOptions,
) -> Result<(Module<'js, Declared>, Bytecode)> {
    compile_js(ctx, name, source, options).map_err(|e| js_error(ctx, name, e))
}

/// [`compile`] with the engine's own error, so a loader passes a `SyntaxError` on unchanged.
fn compile_js<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: &[u8],
    options: CompileOptions,
) -> rquickjs::Result<(Module<'js, Declared>, Bytecode)> {
    let declared = Module::declare(ctx.clone(), name, source)?;
    COMPILES.fetch_add(1, Ordering::Relaxed);
    let bytecode = declared.write(options.write_options())?;
    Ok((declared, Bytecode(bytecode)))
}

/// Compiles module `name` from `source` without writing its bytecode (the cache holds it
/// already): what [`PackLoader`] does where that costs less than loading the bytecode (see
/// `imports`).
fn declare_js<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: Vec<u8>,
) -> rquickjs::Result<Module<'js, Declared>> {
    let declared = Module::declare(ctx.clone(), name, source)?;
    HITS_COMPILED.fetch_add(1, Ordering::Relaxed);
    Ok(declared)
}

/// Loads a module from a cache hit. Only a [`crate::Hit`] can be passed, and only one whose
/// entry was stored from a [`Bytecode`]: its bytes came out of this engine's `Module::write`,
/// were written for this ABI tag and passed their checksum, the conditions `Module::load`
/// needs. Any other entry (bytes a caller `put` by hand) is refused with an error.
pub fn load<'js>(ctx: &Ctx<'js>, hit: &Hit) -> Result<Module<'js, Declared>> {
    if !hit.is_engine_bytecode() {
        return Err(Error::InvalidEntry(format!(
            "{}: not stored from bytecode_pack::quickjs::Bytecode; refusing to load it",
            hit.module_name()
        )));
    }
    let module = engine::load_verified_bytecode(ctx, hit)
        .map_err(|e| js_error(ctx, hit.module_name(), e))?;
    CACHE_LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(module)
}

/// The compile-only path: module `name` with `source`, from the cache when an entry for
/// exactly this name, source and options exists, else compiled and stored. Returns the
/// declared module (not yet evaluated) and where it came from. The key is the source itself,
/// so nothing else is checked; a host that builds its source (a bundle, a transpiled file)
/// uses [`declare_built`] instead, which skips the build too. A failure to store is logged,
/// not returned: the cache is an optimisation.
///
/// ```
/// use bytecode_pack::Cache;
/// use bytecode_pack::quickjs::{CompileOptions, Origin, declare_cached};
/// use rquickjs::{Context, Runtime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let cache = Cache::open(dir.path().join("cache"))?;
/// let source = b"export const answer = 6 * 7;";
/// for expected in [Origin::Compiled, Origin::Cache] {
///     let runtime = Runtime::new()?; // a fresh engine each time, as a new process has
///     let context = Context::full(&runtime)?;
///     context.with(|ctx| -> Result<(), bytecode_pack::Error> {
///         let (module, origin) =
///             declare_cached(&cache, &ctx, "answer.js", source, CompileOptions::default())?;
///         assert_eq!(origin, expected);
///         let (module, promise) = module.eval().unwrap();
///         promise.finish::<()>().unwrap();
///         assert_eq!(module.get::<_, i32>("answer").unwrap(), 42);
///         Ok(())
///     })?;
/// }
/// # Ok(()) }
/// ```
pub fn declare_cached<'js>(
    cache: &Cache,
    ctx: &Ctx<'js>,
    name: &str,
    source: &[u8],
    options: CompileOptions,
) -> Result<(Module<'js, Declared>, Origin)> {
    let key = options.key(Key::for_source(name, source), name);
    if let Some(hit) = cache.get(&key) {
        match load(ctx, &hit) {
            Ok(module) => return Ok((module, Origin::Cache)),
            Err(e) => log::warn!("bytecode-pack: cached {name} did not load, recompiling: {e}"),
        }
    }
    let (module, bytecode) = compile(ctx, name, source, options)?;
    if let Err(e) = cache.put(&key, &bytecode.entry(name)) {
        log::warn!("bytecode-pack: cannot cache {name}: {e}");
    }
    Ok((module, Origin::Compiled))
}
