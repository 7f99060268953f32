//! The one-call path for built modules (bundles, transpiled files): looked up by what the
//! build starts from, so that a hit skips the build as well as the compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rquickjs::module::Declared;
use rquickjs::{Ctx, Module};

use super::maps::{self, PendingMap};
use super::stack::{self, MapSource};
use super::{CompileOptions, Origin, compile, load};
use crate::cache::Cache;
use crate::entry::Hit;
use crate::freshness::Input;
use crate::key::Key;

/// What a built module is looked up by: its name, the files its build starts from, and the
/// build's configuration as bytes (the bundler's options, its version: anything that changes
/// the output for the same files). Two builds that differ in any of them are other entries.
#[derive(Debug, Clone)]
pub struct BuildKey<'a> {
    /// The module's name, as QuickJS gives it (its stack frames name it, its relative
    /// imports resolve against it).
    pub name: &'a str,
    /// The build's entry files.
    pub entries: &'a [&'a Path],
    /// The build's configuration.
    pub config: &'a [u8],
    /// How the bytecode is written.
    pub options: CompileOptions,
}

impl BuildKey<'_> {
    /// The cache key: the entry paths, the configuration, the name and the options.
    pub fn key(&self) -> Key {
        let base = Key::for_paths(self.entries).derive(&[b"built module", self.config]);
        self.options.key(base, self.name)
    }
}

/// What a build made: run only on a miss.
#[derive(Debug, Clone, Default)]
pub struct Build {
    /// The module's source (the bundle, the transpiled file).
    pub source: String,
    /// Its source map, if the build made one: stored with the module, so that its stack
    /// frames name the original files (see the [`super`] module's docs), and given back on a
    /// hit.
    pub source_map: Option<String>,
    /// The directory the map's `sources` are relative to (the map file's own directory, had
    /// it been written to a file); the working directory if `None`.
    pub map_base: Option<PathBuf>,
    /// An opaque sidecar stored with the module and given back on a hit (the bundler's
    /// metafile, the host's own notes).
    pub aux: Option<String>,
    /// Every file the build read beyond those its source map names (the map's `sources` are
    /// inputs already, recorded from its `sourcesContent` where it has them): a file the
    /// bundler inlined without a mapping, a configuration file. Use [`Input::with_content`]
    /// where the build reports what it read: an [`Input::path`] is hashed when the module is
    /// stored, after the build, and one that changed after the build began (or within the racy
    /// window before) keeps the module from being cached, which the next call builds again (a
    /// build that rewrites such a file itself each time is never cached: report what it
    /// wrote with [`Input::with_content`]).
    /// (Where a filesystem's ctime cannot tell, FAT for one, an edit during the build is
    /// recorded as built.)
    pub inputs: Vec<Input>,
}

/// A module [`declare_built`] gave: declared (not yet evaluated), with where it came from and
/// its source map and sidecar.
pub struct BuiltModule<'js> {
    /// The declared module.
    pub module: Module<'js, Declared>,
    /// From the cache, or built and compiled.
    pub origin: Origin,
    output: Output,
}

/// Where a built module's map and sidecar are: in the cache entry it was loaded from, or in
/// the build that just ran.
enum Output {
    Stored(Hit),
    Built(Build),
}

impl BuiltModule<'_> {
    /// The module's source map (its `sources` relative to the working directory, without
    /// `sourcesContent`, as stored), if it has one.
    pub fn source_map(&self) -> Option<&str> {
        match &self.output {
            Output::Stored(hit) => hit.source_map(),
            Output::Built(build) => build.source_map.as_deref(),
        }
    }

    /// The sidecar the build gave, if any.
    pub fn aux(&self) -> Option<&str> {
        match &self.output {
            Output::Stored(hit) => hit.aux(),
            Output::Built(build) => build.aux.as_deref(),
        }
    }
}

/// A built module in one call: from the cache when an entry for `key` exists and every file
/// it was built from is unchanged; else `build` runs, its output is compiled, and stored with
/// every input. On a hit `build` does not run: an unchanged tree skips the bundler and the
/// compile. `build`'s error, and ours (converted with `From`), are returned as `E`. A failure
/// to store is logged, not returned: the cache is an optimisation.
///
/// ```
/// use bytecode_pack::Cache;
/// use bytecode_pack::quickjs::{Build, BuildKey, CompileOptions, Origin, declare_built};
/// use rquickjs::{Context, Runtime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let cache = Cache::open(dir.path().join("cache"))?;
/// let entry = dir.path().join("main.ts");
/// std::fs::write(&entry, "export const answer: number = 6 * 7;")?;
/// let key = BuildKey {
///     name: "bundle.js",
///     entries: &[entry.as_path()],
///     config: b"my-bundler 1.0 --minify=false",
///     options: CompileOptions::default(),
/// };
/// for expected in [Origin::Compiled, Origin::Cache] {
///     let runtime = Runtime::new()?; // a fresh engine each time, as a new process has
///     let context = Context::full(&runtime)?;
///     context.with(|ctx| -> Result<(), Box<dyn std::error::Error>> {
///         let built = declare_built(&cache, &ctx, &key, || {
///             // The bundler runs here, on a miss only.
///             Ok::<_, Box<dyn std::error::Error>>(Build {
///                 source: "export const answer = 6 * 7;".into(),
///                 inputs: vec![bytecode_pack::Input::path(&entry)],
///                 ..Build::default()
///             })
///         })?;
///         assert_eq!(built.origin, expected);
///         let (module, promise) = built.module.eval()?;
///         promise.finish::<()>()?;
///         assert_eq!(module.get::<_, i32>("answer")?, 42);
///         Ok(())
///     })?;
/// }
/// # Ok(()) }
/// ```
pub fn declare_built<'js, E>(
    cache: &Cache,
    ctx: &Ctx<'js>,
    key: &BuildKey<'_>,
    build: impl FnOnce() -> Result<Build, E>,
) -> Result<BuiltModule<'js>, E>
where
    E: From<crate::Error>,
{
    let name = key.name;
    let cache_key = key.key();
    if let Some(hit) = cache.get(&cache_key) {
        match load(ctx, &hit) {
            Ok(module) => {
                let map = MapSource::of_hit(cache, cache_key, &hit, None);
                stack::register(ctx, name, map, Some(cache))
                    .map_err(|e| super::js_error(ctx, name, e))?;
                return Ok(BuiltModule {
                    module,
                    origin: Origin::Cache,
                    output: Output::Stored(hit),
                });
            }
            Err(e) => log::warn!("bytecode-pack: cached {name} did not load, rebuilding: {e}"),
        }
    }
    // Inputs recorded by path are hashed after the build: one that changed since it began may
    // not hold what the build read, and is refused (the module is then not cached). The entry
    // files, known before the build, are hashed here: an edit during the build makes the
    // entry miss, and one just before it costs nothing.
    let started = crate::freshness::now_nanos();
    let entries: Vec<Input> = key
        .entries
        .iter()
        .map(|entry| Input::read_now(entry).unwrap_or_else(|| Input::path(*entry)))
        .collect();
    let mut made = build()?;
    let (module, bytecode) = compile(ctx, name, made.source.as_bytes(), key.options)?;
    let root = std::env::current_dir().unwrap_or_default();
    let mut inputs = made.inputs.clone();
    if let Some(map) = made.source_map.take() {
        let base = made.map_base.clone().unwrap_or_else(|| root.clone());
        let (map_inputs, kept) = maps::of_build(name, &map, &base, &root);
        inputs.extend(map_inputs);
        made.source_map = kept;
    }
    inputs.extend(entries);
    let inputs = distinct(inputs.into_iter().map(|input| input.read_since(started)));
    let mut entry = bytecode.entry(name).inputs(inputs);
    if let Some(json) = &made.source_map {
        entry = entry.source_map(json);
    }
    if let Some(aux) = &made.aux {
        entry = entry.aux(aux);
    }
    if let Err(e) = cache.put(&cache_key, &entry) {
        log::warn!("bytecode-pack: cannot cache {name}: {e}");
    }
    // After the store: an interrupt while the map is registered loses no build.
    let map = made
        .source_map
        .as_ref()
        .map(|json| MapSource::Held(Arc::new(PendingMap::ready(json.as_str().into()))));
    stack::register(ctx, name, map, Some(cache)).map_err(|e| super::js_error(ctx, name, e))?;
    Ok(BuiltModule {
        module,
        origin: Origin::Compiled,
        output: Output::Built(made),
    })
}

/// `inputs` with each path once: a recording of content read (by the build, or before it)
/// over one by path, else the first.
fn distinct(inputs: impl IntoIterator<Item = Input>) -> Vec<Input> {
    let mut seen = rustc_hash::FxHashSet::default();
    let (by_content, by_path): (Vec<_>, Vec<_>) = inputs
        .into_iter()
        .partition(|input| input.content_hash().is_some());
    by_content
        .into_iter()
        .chain(by_path)
        .filter(|input| seen.insert(input.as_path().to_path_buf()))
        .collect()
}
