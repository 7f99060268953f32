//! [`PackResolver`]: rquickjs's `FileResolver`, its answers kept in the cache and checked
//! with one `stat` per directory.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the resolver: known answers first, rounds of directory checks, storing what a run learned |
//! | `probe.rs` | probing as `FileResolver` does, recording the directories consulted |
//! | `dirs.rs` | directory stamps, the run's answers, and the payload that stores them |
//! | `stored.rs` | the stored table, read in place |
//! | `listing.rs` | a directory's listing, which lets a copy keep its original's answers |
//! | `paths.rs` | name and directory arithmetic as strings (the fast paths) |
//! | `config.rs` | `FileResolver`'s settings, read back |

mod config;
pub(crate) mod dirs;
pub(crate) mod listing;
mod paths;
mod probe;
pub(crate) mod stored;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rquickjs::loader::{FileResolver, ImportAttributes, Resolver};
use rquickjs::{Ctx, Result};
use rustc_hash::FxHashSet;

use super::batch::{Answers, Learned, Side, StartBatch};
use crate::cache::Cache;
use crate::key::Key;
use config::Config;
use dirs::{Answer, Dirs, NewAnswers, payload};
use listing::Listing;
pub(crate) use paths::is_plain_relative;
use paths::{base_dir, one_probe_decides};
use probe::Probing;
use stored::StoredAnswers;

/// A cache-backed module resolver: the same answers as the [`FileResolver`] it wraps, without
/// probing the filesystem per import.
///
/// `FileResolver` costs a `stat` for every candidate file of every import statement, every
/// start. This resolver keeps each answer in the cache with the directories it probed to find
/// it, each with the stat data the directory had when probed (taken before the probes). A
/// later start checks one `stat` per directory instead (a directory whose entries change gets
/// a new ctime and mtime), and probes again only in directories that changed or changed too
/// recently to trust, by the racy rule inputs follow; as CPython's import system and git's
/// untracked cache do. An answer that went through a symlink is never kept, since the
/// symlink's target can change without its directory changing.
///
/// In a directory that changed (as every directory of a fresh copy of the tree has), a stored
/// answer for a relative name with an extension stands if its file is still there: one probe
/// decides that name, as it decides it for `FileResolver`. Other answers stand if the
/// directory's entries are the ones it had (its listing). Where a [`super::PackLoader`] made
/// beside this resolver shares its start, the probe that finds such a file again opens it
/// (without following a final symlink, and never blocking), and the loader, which the engine
/// asks for that module next, reads it through that descriptor.
///
/// ```no_run
/// use bytecode_pack::Cache;
/// use bytecode_pack::quickjs::{PackLoader, PackResolver};
/// use rquickjs::{Context, Module, Runtime, loader::FileResolver};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Cache::open_default_or_uncached();
/// let runtime = Runtime::new()?;
/// runtime.set_loader(
///     PackResolver::new(FileResolver::default().with_path("."), cache.clone()),
///     PackLoader::new(cache),
/// );
/// let context = Context::full(&runtime)?;
/// context.with(|ctx| Module::import(&ctx, "src/main.js")?.finish::<rquickjs::Object>().map(drop))?;
/// # Ok(()) }
/// ```
///
/// Within a run, a directory's check stands for 100 ms from the first call of its round (by a
/// coarse clock: up to one kernel tick, 1-10 ms, more), and the answers computed from it
/// meanwhile are those of the directory as it was checked. So a start's imports cost one
/// `stat` per directory, and an answer is never older than that: a file created during the
/// run that would win over a known answer (`x.js` beside the `x.mjs` that `./x` resolved to),
/// or one deleted or renamed, is seen by calls made that long after the round began. A name
/// that fails to resolve asks the filesystem at once, so a file created for a name that had no
/// answer is found by the next call.
///
/// Names resolve against the working directory when the resolver is created (as
/// `FileResolver` resolves against the working directory of each call): a host that changes
/// directory makes a new one. What a run learned is stored with the modules its
/// [`super::PackLoader`] compiled, in one publication, when the last of the two is dropped
/// (rquickjs drops both with the runtime), or on [`PackResolver::flush`].
#[derive(Clone)]
pub struct PackResolver {
    state: Arc<Mutex<ResolverState>>,
}

/// A resolver's state, shared by its clones.
struct ResolverState {
    inner: FileResolver,
    /// The wrapped resolver's search paths and patterns, read back from it; `None` if they
    /// could not be, and then every call goes to the wrapped resolver.
    config: Option<Arc<Config>>,
    cache: Cache,
    /// The start's batch, shared with the loader made beside this resolver: what this run
    /// learned is published with it.
    batch: Arc<StartBatch>,
    /// The working directory, as a string (resolution is string arithmetic on UTF-8 names).
    cwd: String,
    key: Key,
    /// The key of this configuration's tables wherever they lie (`key` without the place),
    /// from which the pointers that let a copy of a tree find its original's table derive.
    anywhere: Key,
    /// The key of the pointer to the last table stored for this place and these settings by
    /// any user (`key` without who asks).
    anyone: Key,
    /// Whether the table came from another tree (a copy's original) or another user, found
    /// through a pointer: then this run does not point the pointers at its own table.
    adopted: bool,
    /// What the cache held when this run first needed it (`None` inside: nothing usable).
    stored: Option<Option<StoredAnswers>>,
    dirs: Dirs,
    answers: NewAnswers,
    dirty: bool,
    /// A path buffer reused by every probe.
    scratch: String,
    /// The files probes found in the current round (full paths): found once per round, as a
    /// directory is checked once per round.
    files_found: FxHashSet<String>,
    /// When the current round of directory checks began (at the first call of the run), by
    /// [`crate::sys::coarse_clock`].
    round_started: Option<Duration>,
    /// The scope of relative names imported from the last base seen, and its seed. QuickJS
    /// resolves a module's imports depth first, so consecutive calls share a base only until an
    /// import has imports of its own; a module's last imports (often leaves) still do.
    last_scope: Option<LastScope>,
}

/// A base module's name, and the scope (with its seed) of the relative names it imports.
struct LastScope {
    base: String,
    scope: String,
    seed: u64,
}

/// How long a directory's check stands within a run: a call this long after the round of
/// checks began starts a new one, in which each directory is checked again on its next use.
/// A start's burst of imports (13 ms for 640 modules here) checks each directory once; a host
/// that imports later (a server's dynamic `import()`) sees the directories as they are then.
const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// The scope of bare names: they do not depend on the base.
const SEARCH_PATHS: &str = "\0search paths";
static SEARCH_PATHS_SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

impl PackResolver {
    /// Wraps `resolver`, keeping its answers in `cache`.
    pub fn new(resolver: FileResolver, cache: Cache) -> PackResolver {
        let config = Config::of(&resolver);
        if config.is_none() {
            log::warn!(
                "bytecode-pack: cannot read FileResolver's settings; not caching resolutions"
            );
        }
        // A working directory that cannot be read (deleted since the process entered it) or is
        // not UTF-8 (it cannot be joined to JavaScript names) leaves every call to `resolver`.
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|cwd| cwd.into_os_string().into_string().ok());
        let (config, cwd) = match cwd {
            Some(cwd) => (config.map(Arc::new), cwd),
            None => (None, String::new()),
        };
        // Who asks is part of the question: a directory another process may search can be one
        // this process may not (its groups differ), and its answers would not load here.
        // Where: the working directory by its inode, which survives a move (`mv`) of the tree
        // and a remount (not its device: see `loader::Root`), so that its answers (kept
        // relative to it) do too; by its path where it has no inode.
        let place = std::fs::metadata(&cwd)
            .ok()
            .and_then(|m| crate::sys::directory_inode(&m))
            .map_or_else(|| cwd.clone(), |ino| format!("directory {ino}"));
        let anywhere = format!("{resolver:?}\0{}", crate::sys::credentials());
        let identity = format!("{place}\0{anywhere}");
        // The same place and settings for anyone: where another user's table is pointed to.
        let anyone = format!("{place}\0{resolver:?}\0anyone");
        let batch = StartBatch::join(&cache, Side::Resolver);
        let dirs = Dirs::new(0, &cwd);
        let state = ResolverState {
            key: Key::for_source(STORE_NAME, identity.as_bytes()),
            anywhere: Key::for_source(STORE_NAME, anywhere.as_bytes()),
            anyone: Key::for_source(STORE_NAME, anyone.as_bytes()),
            adopted: false,
            batch: Arc::clone(&batch),
            inner: resolver,
            config,
            cache,
            cwd,
            stored: None,
            dirs,
            answers: NewAnswers::default(),
            dirty: false,
            scratch: String::new(),
            files_found: FxHashSet::default(),
            round_started: None,
            last_scope: None,
        };
        let state = Arc::new(Mutex::new(state));
        // The batch asks for what this run learned at each publication while it lives.
        let answers: Arc<dyn Answers> = state.clone();
        batch.attach_resolver(Arc::downgrade(&answers));
        PackResolver { state }
    }

    /// Stores what this run learned (directories stamped, answers computed) now, with the
    /// modules its loader compiled so far, instead of when both are dropped; waits for the
    /// writer lock up to the cache's `lock_timeout`. Clones share the state, so a host can
    /// keep a clone to call this.
    pub fn flush(&self) -> crate::Result<()> {
        // Not under the state's lock: the publication takes the answers through it.
        let batch = Arc::clone(&self.state.lock().batch);
        batch.publish(None)
    }
}

impl ResolverState {
    /// Reads the stored answers in place, once.
    fn load(&mut self) {
        if self.stored.is_none() {
            // Under the working directory: a moved tree's table is re-recorded where it is now.
            let here = crate::LookupOptions::default().root(std::path::Path::new(&self.cwd));
            let own = self.cache.lookup_with(&self.key, here).ok();
            let own_found = own.is_some();
            // Else another user's table for this place (a cache root shipped), else the
            // original's of a copy of this tree.
            let (hit, another_user) = match own {
                Some(hit) => (Some(hit), false),
                None => match self.table_through(self.anyone) {
                    Some(hit) => (Some(hit), true),
                    None => (self.table_of_original(), false),
                },
            };
            self.adopted = another_user || hit.is_some() && !own_found;
            // Copied out (a few KB per hundred answers), so that the resolver, which lives as
            // long as its runtime, does not keep a superseded pack mapped.
            let table = hit.and_then(|hit| StoredAnswers::open(hit.bytecode().to_vec()));
            self.dirs = Dirs::new(
                table.as_ref().map_or(0, StoredAnswers::dir_count),
                &self.cwd,
            );
            // Another user's answers stand only in directories this user may search.
            self.dirs.must_search = another_user;
            self.stored = Some(table);
        }
    }
}

impl ResolverState {
    /// Where the tables of trees whose working directory has `listing` are pointed to.
    fn pointer_key(&self, listing: Listing) -> Key {
        self.anywhere.derive(&[b"copies", &listing.to_le_bytes()])
    }

    /// For a tree with no table of its own (a fresh copy): the table of a tree whose working
    /// directory had the same entries when it last stored, its likely original. Its answers
    /// are relative to the working directory, and each stands only where its directories
    /// hold the same entries here (their listings compare equal, [`Dirs::relist`]), or, for
    /// an answer one probe decides, where its file is found again.
    fn table_of_original(&self) -> Option<crate::Hit> {
        let listing = Listing::hint(std::path::Path::new(&self.cwd))?;
        self.table_through(self.pointer_key(listing))
    }

    /// The table the pointer under `pointer` names, if both are there.
    fn table_through(&self, pointer: Key) -> Option<crate::Hit> {
        let unchecked = crate::LookupOptions::default().without_input_checks();
        let pointer = self.cache.lookup_with(&pointer, unchecked).ok()?;
        let target = Key::from_bytes(pointer.bytecode().try_into().ok()?);
        let table = self.cache.lookup_with(&target, unchecked).ok()?;
        (table.module_name() == STORE_NAME).then_some(table)
    }
}

impl Resolver for PackResolver {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        self.state.lock().resolve(ctx, base, name, attributes)
    }
}

impl ResolverState {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        if self.config.is_none() {
            return self.inner.resolve(ctx, base, name, attributes);
        }
        // A file a probe left for the loader is read by the load that follows that probe only.
        self.batch.handoff.discard();
        self.batch.closing.close_if_due();
        let now = crate::sys::coarse_clock();
        match self.round_started {
            Some(started) if now.saturating_sub(started) < RECHECK_AFTER => {}
            Some(_) => {
                self.dirs.next_round();
                self.files_found.clear();
                #[cfg(target_os = "linux")]
                self.batch.closing.close_directories();
                self.round_started = Some(now);
            }
            None => self.round_started = Some(now),
        }
        if !name.starts_with('.') {
            let seed = *SEARCH_PATHS_SEED.get_or_init(|| stored::scope_seed(SEARCH_PATHS));
            return self.resolve_in(ctx, base, name, (SEARCH_PATHS, seed), attributes);
        }
        // Relative names depend on the base's directory only (a base with no directory is a
        // case of its own: FileResolver does not normalize the name then).
        let last = match self.last_scope.take() {
            Some(last) if last.base == base => last,
            reused => {
                let mut last = reused.unwrap_or(LastScope {
                    base: String::new(),
                    scope: String::new(),
                    seed: 0,
                });
                last.base.clear();
                last.base.push_str(base);
                last.scope.clear();
                last.scope
                    .push_str(base_dir(base).unwrap_or("\0no directory"));
                last.seed = stored::scope_seed(&last.scope);
                last
            }
        };
        let resolved = self.resolve_in(ctx, base, name, (&last.scope, last.seed), attributes);
        self.last_scope = Some(last);
        resolved
    }

    /// [`ResolverState::resolve`] of `name`, whose scope (and the scope's seed) is `scope`.
    fn resolve_in<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        (scope, seed): (&str, u64),
        attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        if let Some(value) = self.known_answer(scope, seed, name) {
            return Ok(value);
        }
        super::PROBED_RESOLUTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut probing = Probing::default();
        let Some(value) = self.resolve_cached(&mut probing, base, name) else {
            // Directories are checked once per round: a file created since would be missed, so
            // a failed resolution asks the filesystem, and what it consulted is checked again
            // on next use.
            for id in probing.consulted {
                self.dirs.uncheck(id);
            }
            self.files_found.clear();
            // A handle must not outlive its directory's check (see `closing`): one checked
            // again may be another directory at the same path.
            #[cfg(target_os = "linux")]
            self.batch.closing.close_directories();
            return self.inner.resolve(ctx, base, name, attributes);
        };
        let value = value.to_string();
        // Kept across starts only if no probe went through a symlink.
        if probing.keepable {
            let answer = Answer {
                value: value.clone(),
                dirs: probing.consulted,
            };
            match self.answers.get_mut(scope) {
                Some(names) => names.insert(name.to_owned(), answer),
                None => self
                    .answers
                    .entry(scope.to_owned())
                    .or_default()
                    .insert(name.to_owned(), answer),
            };
            self.dirty = true;
        }
        Ok(value)
    }

    /// A kept answer for `name` in `scope`: one computed during this run, or a stored one
    /// if every directory it came from is unchanged, holds the entries it held (its listing),
    /// or, for an answer one probe decides, still holds its file.
    fn known_answer(&mut self, scope: &str, seed: u64, name: &str) -> Option<String> {
        if let Some(answer) = self.answers.get(scope).and_then(|names| names.get(name)) {
            if answer.dirs.iter().all(|&id| self.dirs.is_current(id)) {
                return Some(answer.value.clone());
            }
            // Computed in an earlier round: it stands if its directories still do (a changed
            // one forgets it).
            let table = self.stored.as_ref().and_then(Option::as_ref);
            for id in answer.dirs.clone() {
                self.dirty |= self.dirs.check(table, &mut self.answers, id);
            }
            if let Some(answer) = self.answers.get(scope).and_then(|names| names.get(name)) {
                return Some(answer.value.clone());
            }
        }
        self.load();
        let table = self.stored.as_ref()?.as_ref()?;
        let answer = table.find_in(scope, seed, name)?;
        let mut probe_in = None;
        for id in answer.dirs() {
            // A changed directory is stamped again, which kills every stored answer computed
            // from it (and forgets those of this run), unless its entries are the same: read
            // from its listing, or for an answer one probe decides, from that probe.
            self.dirty |= self.dirs.check(Some(table), &mut self.answers, id);
            if self.dirs.unchanged_since_stored(id) {
                continue;
            }
            if one_probe_decides(name) && only_dir(&answer) == Some(id) {
                probe_in = Some(id);
                break;
            }
            if !self.dirs.relist(table, id) {
                return None;
            }
        }
        let (index, value) = (answer.index(), answer.value()?.to_owned());
        match probe_in {
            // Found under the directory's current stamp already (the engine resolves each
            // import of a module read from bytecode twice): no entry came or went since.
            Some(dir) if self.dirs.was_found_again(Some(table), index, dir) => Some(value),
            Some(dir) => self.find_again(index, dir, &value).then_some(value),
            None => Some(value),
        }
    }

    /// Whether the stored answer at `index` of the table, `value`, which one probe decides,
    /// stands in its directory `dir` (stamped again in this round: a copy of the tree, or an
    /// entry added): `value` is still a file there. Probed as the probing path would, after the
    /// directory's stamp; the answer then stands under that stamp.
    fn find_again(&mut self, index: u32, dir: u32, value: &str) -> bool {
        let Some(table) = self.stored.as_ref().and_then(Option::as_ref) else {
            return false;
        };
        let in_dir = self.dirs.get(Some(table), dir).map(|(path, _)| path);
        let holder = value.rsplit_once('/').map_or("", |(holder, _)| holder);
        if !is_plain_relative(value) || in_dir != Some(holder) {
            return false;
        }
        let mut full = std::mem::take(&mut self.scratch);
        full.clear();
        full.push_str(self.cwd.trim_end_matches('/'));
        full.push('/');
        full.push_str(value);
        let found = self.files_found.contains(&full)
            || self.probe_in(dir, &full) == crate::sys::Probe::File
                && self.files_found.insert(full.clone());
        if found && self.dirs.can_vouch(dir) {
            self.dirs.found_again(table, index, dir);
        }
        self.scratch = full;
        found
    }

    /// [`super::handoff::Handoff::probe_opening`] of `full`, the path of a file in stored
    /// directory `dir`: on Linux opened through a handle on the directory, kept with the
    /// start's files.
    fn probe_in(&self, dir: u32, full: &str) -> crate::sys::Probe {
        let path = std::path::Path::new(full);
        self.batch.handoff.probe_opening(path, || {
            // A working directory, a separator and a plain relative name: string arithmetic.
            #[cfg(target_os = "linux")]
            if let Some((parent, name)) = full.rsplit_once('/') {
                let (parent, name) = (std::path::Path::new(parent), name.as_ref());
                return self.batch.closing.open_in_directory(dir, parent, name);
            }
            let _ = dir;
            None
        })
    }

    /// The payload to store (see [`payload`]).
    fn encode(&mut self) -> Vec<u8> {
        self.load();
        payload(
            self.stored.as_ref().and_then(Option::as_ref),
            &self.dirs,
            &self.answers,
        )
    }

    /// What this run learned, if anything changed since it was last taken.
    fn take_if_changed(&mut self) -> Option<Learned> {
        if !self.dirty {
            return None;
        }
        let payload = self.encode();
        self.dirty = false;
        // A tree's own table is pointed to from its working directory's listing, for its
        // copies to find, and from its place, for other users; an adopted one's pointers stay
        // with the original.
        let mut pointers = Vec::new();
        if !self.adopted {
            pointers.push(self.anyone);
            pointers.extend(
                Listing::hint(std::path::Path::new(&self.cwd)).map(|l| self.pointer_key(l)),
            );
        }
        Some(Learned {
            key: self.key,
            payload,
            root: self.cwd.clone().into(),
            pointers,
        })
    }
}

impl Answers for Mutex<ResolverState> {
    fn take_if_changed(&self) -> Option<Learned> {
        // Busy means it is resolving on another thread: its answers join the next publication.
        self.try_lock()?.take_if_changed()
    }
}

impl Drop for ResolverState {
    fn drop(&mut self) {
        // Handed to the batch, which publishes them with the loader's modules once both are
        // dropped (this resolver's hold on it goes right after).
        if let Some(answers) = self.take_if_changed() {
            self.batch.hand_over(answers);
        }
    }
}

/// The directory `answer` was computed from, if it was computed from one alone.
fn only_dir(answer: &stored::StoredAnswer<'_>) -> Option<u32> {
    let mut ids = answer.dirs();
    match (ids.next(), ids.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The module name a resolver's stored answers go under (it names the payload's version:
/// builds storing another layout keep out of each other's way).
pub(crate) const STORE_NAME: &str = "bytecode-pack resolutions 6";
