//! [`PackLoader`]: file modules served from the pack, compiled and stored on a miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rquickjs::loader::{ImportAttributes, Loader};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module};
use rustc_hash::FxHashSet;

use super::batch::{EXIT_LOCK_WAIT, PendingBytecode, PendingModule, Side, StartBatch};
use super::handoff::OpenedModule;
use super::maps::{self, PendingMap};
use super::stack::{self, MapFile, MapSource};
use super::{CompileOptions, compile_js, imports, load};
use crate::LookupOptions;
use crate::cache::{Cache, ContentProof};
use crate::entry::Hit;
use crate::error::Result;
use crate::freshness::{Input, content_hash};
use crate::key::Key;

/// The largest source file a loader reads, 1 GiB: far past any module QuickJS is given to
/// compile. A larger file fails its import at once, with its size, instead of being read (or
/// its claimed size allocated: a sparse file of a terabyte costs nothing to make).
const MAX_SOURCE_LEN: u64 = 1 << 30;

/// A first start misses on every module: each miss checking the index for another process's
/// newer publication would cost a `stat` per module, so misses check at most this often.
const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// A cache-backed rquickjs [`Loader`] for file modules: an `import` is served from the pack
/// when the file is unchanged, and compiled when not. Use it with rquickjs's
/// [`rquickjs::loader::FileResolver`], or with [`super::PackResolver`] around one (which also
/// serves resolutions from the cache), in place of `ScriptLoader`; a second run over
/// unchanged files compiles nothing.
///
/// **When compiled modules are stored.** Not on the import's path: the modules a start
/// compiles are kept in memory and stored in one batch (one lock, one index publication)
/// together with what a [`super::PackResolver`] made just before it on the same thread over the
/// same handle learned, when the last of the two is dropped (rquickjs drops both with the
/// `Runtime`), or when [`PackLoader::flush`] is called on a clone. A batch is also stored
/// when 4096 modules, 64 MiB or the cache's [`Cache::max_batch_bytes`] are pending. A store at
/// drop, or mid-run, waits at most 100 ms for another process's writer lock (a long
/// compaction): what it could not store is compiled again by the next start. Modules beyond
/// the cache's size limit are left out of a batch, with one warning. A process that exits
/// without dropping its runtime (or is killed) loses what was pending. The cache stays correct
/// either way: an entry is published whole or not at all.
///
/// Racy entries heal here too: a lookup that had to re-hash an input (its stat data was
/// recorded too close to an edit, as after `tar` or `npm install`) remembers the fresh stat
/// data, and the same batch re-records it, so the next start trusts a `stat` again.
///
/// Modules another process stores while this one starts are found by this loader's misses
/// within 2 ms of their publication (a miss checks for one at most that often).
///
/// Module names are resolved against the working directory when the loader is created, as
/// the resolver answered them against its own: a host that changes directory makes a new one.
///
/// **Source files it reads** (to compile them, or to hash them in a copied tree) are closed
/// together after the start's loads rather than one at a time during them (a `close` costs
/// about what the `open` did): when the start's batch is stored or flushed, or at the first
/// load or resolve 100 ms after the oldest was read. At most 256 descriptors (files and the
/// resolver's directory handles) wait in the whole process (a quarter of its open-file limit
/// if that is lower, none if it cannot be read); past that a file is closed at once. A
/// host that keeps its runtime after its start and imports nothing more holds them until it
/// drops the runtime or calls [`PackLoader::flush`]. Elsewhere than on Unix, where an open
/// file blocks its renaming, each is closed at once.
///
/// **Graphs of thousands of modules.** QuickJS resolves each import of a module read from
/// bytecode twice, against once for a module it compiles, and each resolution walks its list
/// of loaded modules. Once a context has imported a thousand modules or so, a module whose
/// second walks would cost more than compiling it (many imports, a long list) is compiled from
/// its unchanged source instead of loaded (counted in
/// [`ProcessCounters::hits_compiled`](super::ProcessCounters::hits_compiled)), with its debug
/// information and source text kept whatever the [`CompileOptions`]. The file it is compiled
/// from is checked by its content (the hash of what was read, against the recorded one), in
/// place of a `stat`: other content is compiled and stored again. Smaller graphs, and leaves,
/// always load their bytecode.
#[derive(Clone)]
pub struct PackLoader {
    cache: Cache,
    options: CompileOptions,
    extensions: Vec<String>,
    cwd: Arc<Path>,
    root: Option<Arc<Root>>,
    batch: Arc<StartBatch>,
    /// The modules requested in the current context: about the length of the engine's list
    /// of loaded modules, which each resolution walks. Each runtime's loader (a clone) counts
    /// its own.
    requested: Requested,
}

/// The modules a loader was asked for since its runtime's current context began asking, by
/// the hash of their names. The engine asks for a module once per context (then finds it in
/// its list), so a name asked for again means another context of the runtime is importing:
/// the count starts over. (A collision starts it over early: an underestimate, which only
/// makes a hit load rather than compile.)
#[derive(Default)]
struct Requested(FxHashSet<u64>);

impl Clone for Requested {
    /// A clone goes to another runtime, whose contexts have imported nothing yet.
    fn clone(&self) -> Self {
        Requested::default()
    }
}

/// A gate before the cost model, so that an ordinary start never reads an import count: below
/// this many modules requested a hit is loaded unless its bytecode is [`LARGE_BYTECODE`] or
/// more (a module importing thousands of others), since only there could the model choose to
/// compile by much.
const FEW_MODULES: usize = 1000;
const LARGE_BYTECODE: usize = 64 << 10;

impl PackLoader {
    /// A loader over `cache` for `.js` and `.mjs` files, keeping debug info and source.
    pub fn new(cache: Cache) -> PackLoader {
        let cwd = std::env::current_dir().unwrap_or_default();
        PackLoader {
            batch: StartBatch::join(&cache, Side::Loader),
            root: Root::of(&cwd).map(Arc::new),
            cwd: cwd.into(),
            cache,
            options: CompileOptions::default(),
            extensions: vec!["js".into(), "mjs".into()],
            requested: Requested::default(),
        }
    }

    /// Writes bytecode with these options.
    pub fn with_options(mut self, options: CompileOptions) -> PackLoader {
        self.options = options;
        self
    }

    /// Also loads files with this extension (without the dot).
    pub fn with_extension(mut self, extension: impl Into<String>) -> PackLoader {
        self.extensions.push(extension.into());
        self
    }

    /// Stores the modules compiled so far (and its resolver's answers) now, in one batch,
    /// instead of when the loader is dropped, waiting for the writer lock up to the cache's
    /// `lock_timeout`. Clones share what is pending, so a host can keep a clone to call this.
    pub fn flush(&self) -> Result<()> {
        self.batch.publish(None)
    }

    fn handles(&self, name: &str) -> bool {
        extension(name).is_some_and(|e| self.extensions.iter().any(|x| x == e))
    }

    fn load_file<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        // `cwd.join(name)`, allocated once: `join` copies `cwd` and grows it for `name`.
        let mut path = PathBuf::with_capacity(self.cwd.as_os_str().len() + 1 + name.len());
        path.push(&self.cwd);
        path.push(name);
        if path.as_os_str().len() >= crate::sys::LONGEST_PATH {
            // The kernel refuses so long a path (the cache records inputs by absolute path),
            // but not the relative name ScriptLoader reads: compiled from it, not cached.
            let (source, _) = crate::fsys::read_user_file(Path::new(name), MAX_SOURCE_LEN)?;
            return compile_js(ctx, name, &source, self.options).map(|(module, _)| module);
        }
        self.batch.closing.close_if_due();
        // The file, if the resolver opened it just now; closed if a hit does without it.
        let opened = std::cell::Cell::new(self.batch.handoff.take(&path));
        let throttled = LookupOptions::default().refresh_interval(REFRESH_INTERVAL);
        let located = self.root.as_ref().filter(|_| under_root(name));
        // Where this tree's file is recorded, with its bytecode: one lookup when warm.
        let key = match located {
            Some(root) => root.path_key(self.options, name),
            None => self.options.key(Key::for_paths(&[&path]), name),
        };
        let lookup = match located {
            Some(root) => throttled.root(&root.path),
            None => throttled,
        };
        // A hit compiling costs less for is read anyway: its content, compared with the
        // recorded one, stands in for the `stat` of its file.
        let proven_source = std::cell::Cell::new(None);
        let prove = |hit: &Hit| self.prove_by_content(hit, &path, &opened, &proven_source);
        if let Ok(hit) = self
            .cache
            .lookup_with(&key, lookup.proven_by_content(&prove))
        {
            let module = match proven_source.take() {
                Some(source) => Some(super::declare_js(ctx, name, source)?),
                None => self.load_hit(ctx, name, &hit),
            };
            if let Some(module) = module {
                self.hit_map(ctx, name, key, &hit, path)?;
                return Ok(module);
            }
        }
        let (source, meta, read_from) = self.read_source(&path, opened.take())?;
        // The bytes read are the input recorded: an edit racing this load cannot be cached as
        // the old content.
        let input = Input::read_by_compiler(path.clone(), &source, &meta, read_from);
        // Without debug information no frame has a position to map.
        let map = (!self.options.strip_debug)
            .then(|| maps::find(name, &source, &path, input.content_hash()?))
            .flatten();
        let Some(root) = located else {
            let (module, bytecode) = compile_js(ctx, name, &source, self.options)?;
            let map = self.found_map(ctx, name, map, None)?;
            let bytecode = PendingBytecode::Compiled(bytecode.into_bytes());
            self.store(PendingModule::new(key, None, name, bytecode, input, map));
            return Ok(module);
        };
        // This content compiled in another tree (a copy of this one, another worktree): its
        // bytecode, found through the pointer from the content's key to where it was stored.
        // The pointer stays with the tree that compiled the content (a throwaway copy deleted
        // later takes nothing from it); a tree that compiles it (again) points it home.
        let content = input.content_hash();
        let pointer = content.map(|content| self.options.key(pointer_key(name, content), name));
        let elsewhere =
            pointer.and_then(|pointer| self.compiled_elsewhere(&pointer, name, content));
        if let Some(hit) = elsewhere
            && let Some(module) = self.module_of_hit(ctx, name, &hit, &source)?
        {
            let map = self.found_map(ctx, name, map, Some(&hit))?;
            let place = Some((None, Arc::clone(root)));
            let bytecode = PendingBytecode::Stored(hit);
            self.store(PendingModule::new(key, place, name, bytecode, input, map));
            return Ok(module);
        }
        let (module, bytecode) = compile_js(ctx, name, &source, self.options)?;
        let map = self.found_map(ctx, name, map, None)?;
        let place = Some((pointer, Arc::clone(root)));
        let bytecode = PendingBytecode::Compiled(bytecode.into_bytes());
        self.store(PendingModule::new(key, place, name, bytecode, input, map));
        Ok(module)
    }

    /// The source file at `path`, read through the descriptor its resolver `opened` if it
    /// did, with the descriptor's metadata and the recording instant that stat data may be
    /// given (taken before the open). The file is closed after the start's loads.
    fn read_source(
        &self,
        path: &Path,
        opened: Option<OpenedModule>,
    ) -> std::io::Result<(Vec<u8>, std::fs::Metadata, i64)> {
        let (mut file, meta, read_from) = match opened {
            Some(opened) => (opened.file, opened.meta, opened.read_from_ns),
            None => {
                // The resolver checked a file was there; what is there now may be a FIFO.
                let read_from = crate::freshness::now_nanos();
                let (file, meta) = crate::fsys::open_named_user_file(path)?;
                (file, meta, read_from)
            }
        };
        let source = crate::fsys::read_opened(&mut file, &meta, path, MAX_SOURCE_LEN)?;
        self.batch.closing.close_later(file);
        Ok((source, meta, read_from))
    }

    /// Registers the map of module `name` (its file at `path`) loaded from `hit`, stored under
    /// `key`; or forgets an earlier one if it has none.
    fn hit_map(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        key: Key,
        hit: &Hit,
        path: PathBuf,
    ) -> rquickjs::Result<()> {
        let file = MapFile {
            module: path,
            root: Arc::clone(&self.cwd),
        };
        let map = MapSource::of_hit(&self.cache, key, hit, Some(file));
        stack::register(ctx, name, map, Some(&self.cache))
    }

    /// The map found for module `name` just loaded (compiled, or `copied` from another
    /// tree's entry), registered for its stack frames, to be read and made ready to store
    /// (sources relative to the root) when a stack or the store first needs it: none of that
    /// is on the start's critical path.
    fn found_map(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        found: Option<maps::FoundMap>,
        copied: Option<&Hit>,
    ) -> rquickjs::Result<Option<Arc<PendingMap>>> {
        let Some(found) = found else {
            return stack::register(ctx, name, None, None).map(|()| None);
        };
        let copied = copied.and_then(|hit| {
            Some(maps::CopiedMap {
                cache: self.cache.clone(),
                key: hit.key(),
                checksum: hit.source_map_checksum()?,
            })
        });
        let map = Arc::new(PendingMap::of_found(
            found,
            name,
            Arc::clone(&self.cwd),
            copied,
        ));
        let held = MapSource::Held(Arc::clone(&map));
        stack::register(ctx, name, Some(held), Some(&self.cache))?;
        Ok(Some(map))
    }

    /// The entry another tree stored module `name` in when it had exactly the content whose
    /// hash is `content` (found through the pointer under `pointer`), whatever that tree
    /// holds now: the bytecode was compiled from that content.
    ///
    /// Only a pointer this crate stored, to bytecode this crate compiled: the entry found is
    /// stored again as this tree's engine bytecode, which a later start gives `Module::load`,
    /// and bytes a caller `put` under these keys must never get there.
    fn compiled_elsewhere(
        &self,
        pointer: &Key,
        name: &str,
        content: Option<[u8; 16]>,
    ) -> Option<Hit> {
        let unchecked = LookupOptions::default()
            .refresh_interval(REFRESH_INTERVAL)
            .without_input_checks();
        let pointer = self.cache.lookup_with(pointer, unchecked).ok()?;
        if !pointer.is_pointer() {
            return None;
        }
        let target = Key::from_bytes(pointer.bytecode().try_into().ok()?);
        let hit = self.cache.lookup_with(&target, unchecked).ok()?;
        let same = hit.is_engine_bytecode()
            && hit.module_name() == name
            && content.is_some_and(|c| compiled_from(&hit, c));
        same.then_some(hit)
    }

    /// Whether compiling the module `hit` holds would cost less than loading its bytecode,
    /// with the modules requested so far (see `imports`).
    fn compiling_costs_less(&self, hit: &Hit) -> bool {
        let (requested, len) = (self.requested.0.len(), hit.bytecode().len());
        if requested < FEW_MODULES && len < LARGE_BYTECODE {
            return false;
        }
        imports::import_count(hit.bytecode())
            .is_some_and(|count| imports::compiling_costs_less(count, requested, len))
    }

    /// Whether the file at `path` (`opened` by the resolver, if it was) holds the content `hit`
    /// was compiled from, asked of a hit that compiling costs less for (which reads the file
    /// anyway), with the file's content left in `source` when it does;
    /// [`ContentProof::Unknown`] for any other hit, or a file that cannot be read: its `stat`
    /// decides then.
    fn prove_by_content(
        &self,
        hit: &Hit,
        path: &Path,
        opened: &std::cell::Cell<Option<OpenedModule>>,
        source: &std::cell::Cell<Option<Vec<u8>>>,
    ) -> ContentProof {
        source.set(None);
        // A module's entry has its file as its one input; any other entry is left to `stat`.
        if !self.compiling_costs_less(hit) || hit.recorded_input_hashes().count() != 1 {
            return ContentProof::Unknown;
        }
        // Read as a module compiled from its source is (through the resolver's descriptor if
        // it opened one; closed with the start's other files).
        let Ok((read, _, _)) = self.read_source(path, opened.take()) else {
            return ContentProof::Unknown;
        };
        if !compiled_from(hit, content_hash(&read)) {
            return ContentProof::Changed;
        }
        source.set(Some(read));
        ContentProof::Same
    }

    /// The module `hit` holds, which was compiled from `source`: compiled from it where that
    /// costs less than loading its bytecode, without storing it again; else loaded from its
    /// bytecode (`None`, with a warning, if that did not load).
    fn module_of_hit<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
        hit: &Hit,
        source: &[u8],
    ) -> rquickjs::Result<Option<Module<'js, Declared>>> {
        if self.compiling_costs_less(hit) {
            return super::declare_js(ctx, name, source.to_vec()).map(Some);
        }
        Ok(self.load_hit(ctx, name, hit))
    }

    /// The module a cache hit holds, or `None` (with a warning) if it did not load.
    fn load_hit<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
        hit: &Hit,
    ) -> Option<Module<'js, Declared>> {
        match load(ctx, hit) {
            Ok(module) => Some(module),
            Err(e) => {
                log::warn!("bytecode-pack: cached {name} did not load, recompiling: {e}");
                None
            }
        }
    }

    /// Adds a module to the start's batch, storing the batch if it filled.
    fn store(&self, module: PendingModule) {
        if self.batch.add(module)
            && let Err(e) = self.batch.publish(Some(EXIT_LOCK_WAIT))
        {
            log::warn!("bytecode-pack: cannot store compiled modules: {e}");
        }
    }
}

impl Requested {
    /// Notes a request for module `name`.
    fn note(&mut self, name: &str) {
        let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
        if !self.0.insert(hash) {
            self.0.clear();
            self.0.insert(hash);
        }
    }
}

/// Whether `hit`'s entry was compiled from exactly the content whose hash is `content`.
fn compiled_from(hit: &Hit, content: [u8; 16]) -> bool {
    hit.recorded_input_hashes().eq([content])
}

/// The project root: the loader's working directory, under which module entries are recorded
/// by relative name and relative inputs, so that they survive the tree being moved.
pub(crate) struct Root {
    pub(crate) path: PathBuf,
    /// The key every module's key under this root is derived from: its directory's inode
    /// number, folded in once. The inode is the same after `mv` (on one filesystem), another
    /// after a copy, so that two copies of one project (worktrees) keep their own records. Not
    /// its device: an overlay or network filesystem gets a new device number at every mount (a
    /// container's start), where the inode stays. (Two roots on different filesystems with one
    /// inode number share records, and find each other's stale: a re-hash, never wrong bytes.)
    base: Key,
}

impl Root {
    /// The working directory `cwd` as a root, if it has an identity (Unix).
    fn of(cwd: &Path) -> Option<Root> {
        let ino = crate::sys::directory_inode(&std::fs::metadata(cwd).ok()?)?;
        Some(Root {
            path: cwd.to_path_buf(),
            base: Key::for_source(PATH_ENTRIES, &ino.to_le_bytes()),
        })
    }

    /// The key under which module `name`'s place in this root is recorded (the options'
    /// key folds the name in).
    fn path_key(&self, options: CompileOptions, name: &str) -> Key {
        options.key(self.base, name)
    }
}

/// The name the path keys are derived under.
const PATH_ENTRIES: &str = "bytecode-pack module path 1";

/// The key of the pointer from module `name` with the content whose hash is `content` to the
/// entry of the tree that compiled it (before the options are folded in): derived from the
/// hash the module's input is recorded by, so that a source is hashed once.
fn pointer_key(name: &str, content: [u8; 16]) -> Key {
    Key::for_source(CONTENT_POINTERS, &[name.as_bytes(), &content].concat())
}

/// The name the content pointers' keys are derived under.
const CONTENT_POINTERS: &str = "bytecode-pack content pointer 1";

/// Whether `name` lies under the root: relative, every component a plain name.
fn under_root(name: &str) -> bool {
    // Elsewhere `\` and prefixes like `C:` separate components too: std decides.
    if cfg!(unix) && super::resolver::is_plain_relative(name) {
        return true;
    }
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// `Path::extension` of a module name, without parsing the path's components on Unix when its
/// last one is a plain file name (every module a start loads).
fn extension(name: &str) -> Option<&str> {
    let file = name.rsplit_once('/').map_or(name, |(_, file)| file);
    // Elsewhere `\` and prefixes like `C:` separate components too: std decides.
    if !cfg!(unix) || file.is_empty() || file == "." || file == ".." {
        return Path::new(name).extension().and_then(|e| e.to_str());
    }
    let (stem, extension) = file.rsplit_once('.')?;
    (!stem.is_empty()).then_some(extension)
}

impl Loader for PackLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        if !self.handles(name) {
            return Err(rquickjs::Error::new_loading(name));
        }
        // Counted before the load: the engine lists the module before it reads what it imports.
        self.requested.note(name);
        self.load_file(ctx, name)
    }
}

#[cfg(test)]
mod tests;
