//! [`PackResolver`]: rquickjs's `FileResolver`, its answers kept in the cache and checked
//! with one `stat` per directory.

mod stored;

use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::Arc;

use relative_path::{RelativePath, RelativePathBuf};
use rquickjs::loader::{FileResolver, ImportAttributes, Resolver};
use rquickjs::{Ctx, Result};

use super::batch::{Answers, Side, StartBatch};
use crate::cache::Cache;
use crate::freshness;
use crate::key::Key;
use crate::sys::Probe;
use stored::{AnswerToStore, DirStamp, StoredAnswers};

/// A resolution computed during this run, with the directories whose entries it was computed
/// from: it stands while each of them is unchanged.
#[derive(Debug, Clone)]
struct Answer {
    value: String,
    /// Each directory probed (see [`Dirs`]).
    dirs: Vec<u32>,
}

/// Answers computed during this run: by scope (the base's directory, or a marker for names
/// that do not depend on it), then by name. They shadow stored ones.
type NewAnswers = FxHashMap<String, FxHashMap<String, Answer>>;

/// Forgets every answer computed from directory `id`: it changed since.
fn forget_answers_from(answers: &mut NewAnswers, id: u32) {
    for names in answers.values_mut() {
        names.retain(|_, answer| !answer.dirs.contains(&id));
    }
    answers.retain(|_, names| !names.is_empty());
}

/// Every directory stamped: first those of the stored table (ids `0..stored`, read from it
/// as needed), then those first stamped during this run.
struct Dirs {
    stored: u32,
    /// Per stored directory: the stamp this run gave it, once it found it changed. Stored
    /// answers computed from a directory stamped again are dead for good.
    restamped: Vec<Option<DirStamp>>,
    /// Directories first stamped during this run, and their stamps.
    added: Vec<(String, DirStamp)>,
    /// Per directory: the round it was last checked in (0: not yet).
    checked: Vec<u32>,
    /// The current round (from 1): a directory's check stands for the round it was made in
    /// (see [`RECHECK_AFTER`]).
    round: u32,
    /// Path to id, built on first need (a start whose every answer is stored never needs it).
    index: Option<FxHashMap<String, u32>>,
}

impl Dirs {
    fn new(stored: u32) -> Dirs {
        Dirs {
            stored,
            restamped: vec![None; stored as usize],
            added: Vec::new(),
            checked: vec![0; stored as usize],
            round: 1,
            index: None,
        }
    }

    /// Whether directory `id` was checked in the current round.
    fn is_current(&self, id: u32) -> bool {
        self.checked.get(id as usize) == Some(&self.round)
    }

    /// Makes every directory's check stale: each is checked again on its next use.
    fn next_round(&mut self) {
        self.round = self.round.checked_add(1).unwrap_or_else(|| {
            self.checked.fill(0);
            1
        });
    }

    /// Makes directory `id` be checked again on its next use.
    fn uncheck(&mut self, id: u32) {
        if let Some(checked) = self.checked.get_mut(id as usize) {
            *checked = 0;
        }
    }

    /// Directory `id`'s path and current stamp.
    fn get<'a>(&'a self, table: Option<&'a StoredAnswers>, id: u32) -> Option<(&'a str, DirStamp)> {
        match id.checked_sub(self.stored) {
            None => {
                let (path, stamp) = table?.dir(id)?;
                Some((path, self.restamped[id as usize].unwrap_or(stamp)))
            }
            Some(added) => self
                .added
                .get(added as usize)
                .map(|(p, s)| (p.as_str(), *s)),
        }
    }

    /// Whether directory `id`'s current stamp can ever vouch for it: not when this run stamped
    /// it on a filesystem whose ctime is not the kernel's. (A stored stamp that still stands
    /// can: one on such a filesystem never stands, so its directory is stamped again first.)
    fn can_vouch(&self, id: u32) -> bool {
        match id.checked_sub(self.stored) {
            None => self
                .restamped
                .get(id as usize)
                .is_none_or(|stamp| stamp.is_none_or(|stamp| stamp.can_vouch())),
            Some(added) => self
                .added
                .get(added as usize)
                .is_none_or(|(_, stamp)| stamp.can_vouch()),
        }
    }

    /// Every directory in id order, with its current stamp; `None` if one cannot be read
    /// (then no id could be trusted to name the same directory once written back).
    fn all<'a>(&'a self, table: Option<&'a StoredAnswers>) -> Option<Vec<(&'a str, DirStamp)>> {
        let total = self.stored + self.added.len() as u32;
        (0..total).map(|id| self.get(table, id)).collect()
    }

    /// Checks directory `id` against its stamp (once per round, unless asked again), stamping
    /// it anew if it changed (and then forgetting the answers computed from it). Says whether
    /// the run has a stamp worth storing: it stamped, and the new stamp can vouch (one that
    /// never can would only cost a write per start).
    fn check(&mut self, table: Option<&StoredAnswers>, answers: &mut NewAnswers, id: u32) -> bool {
        match self.checked.get(id as usize) {
            Some(&round) if round != self.round => {}
            _ => return false,
        }
        let Some((path, stamp)) = self.get(table, id) else {
            return false;
        };
        // The recording instant comes before the `stat` it vouches for, as for inputs.
        let read_from = freshness::now_nanos();
        let now = crate::sys::stat_path(Path::new(path)).ok();
        self.checked[id as usize] = self.round;
        if stamp.still_valid(now.as_ref()) {
            return false;
        }
        let stamp = DirStamp {
            stat: now,
            recorded_at_ns: read_from,
        };
        let worth_storing = stamp.can_vouch();
        match id.checked_sub(self.stored) {
            None => self.restamped[id as usize] = Some(stamp),
            Some(added) => self.added[added as usize].1 = stamp,
        }
        forget_answers_from(answers, id);
        worth_storing
    }

    /// The id of the directory at `path`, stamping it first if it has none; and whether that
    /// stamp is worth storing (see [`Dirs::check`]).
    fn id(&mut self, table: Option<&StoredAnswers>, path: &str) -> (u32, bool) {
        let index = self.index.get_or_insert_with(|| {
            (0..self.stored)
                .filter_map(|id| Some((table?.dir(id)?.0.to_owned(), id)))
                .collect()
        });
        if let Some(&id) = index.get(path) {
            return (id, false);
        }
        let read_from = freshness::now_nanos();
        let stamp = DirStamp {
            stat: crate::sys::stat_path(Path::new(path)).ok(),
            recorded_at_ns: read_from,
        };
        let id = self.stored.saturating_add(self.added.len() as u32);
        index.insert(path.to_owned(), id);
        let worth_storing = stamp.can_vouch();
        self.added.push((path.to_owned(), stamp));
        self.checked.push(self.round);
        (id, worth_storing)
    }

    /// Whether stored answers computed from `id` still stand: it was checked unchanged (in
    /// this round).
    fn unchanged_since_stored(&self, id: u32) -> bool {
        self.is_current(id) && self.restamped.get(id as usize).is_some_and(Option::is_none)
    }
}

/// The directory holding the file at the absolute path `full`, whose entries decide whether
/// it exists: what precedes its last separator, and `/` for a file in the root (a working
/// directory of `/`, as in a container without one set). `None` if `full` names no file.
fn directory_of(full: &str) -> Option<&str> {
    match full.rsplit_once('/') {
        Some((_, "")) | None => None,
        Some(("", _)) => Some("/"),
        Some((dir, _)) => Some(dir),
    }
}

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
/// ```no_run
/// use bytecode_pack::Cache;
/// use bytecode_pack::quickjs::{PackLoader, PackResolver};
/// use rquickjs::{Context, Module, Runtime, loader::FileResolver};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Cache::open_default()?;
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
    /// What the cache held when this run first needed it (`None` inside: nothing usable).
    stored: Option<Option<StoredAnswers>>,
    dirs: Dirs,
    answers: NewAnswers,
    /// The directories the resolution being computed probed.
    consulted: Vec<u32>,
    /// Whether it probed through a symlink (or a path not checked by directory), whose
    /// target can change unseen: its answer is then not kept.
    unkeepable: bool,
    dirty: bool,
    /// A path buffer reused by every probe.
    scratch: String,
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

/// `FileResolver`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    paths: Vec<String>,
    patterns: Vec<String>,
}

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
        let identity = format!("{cwd}\0{resolver:?}\0{}", crate::sys::credentials());
        let batch = StartBatch::join(&cache, Side::Resolver);
        let state = ResolverState {
            key: Key::for_source(STORE_NAME, identity.as_bytes()),
            batch: Arc::clone(&batch),
            inner: resolver,
            config,
            cache,
            cwd,
            stored: None,
            dirs: Dirs::new(0),
            answers: NewAnswers::default(),
            consulted: Vec::new(),
            unkeepable: false,
            dirty: false,
            scratch: String::new(),
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
            let table = self
                .cache
                .get(&self.key)
                // Copied out (a few KB per hundred answers), so that the resolver, which lives as
                // long as its runtime, does not keep a superseded pack mapped.
                .and_then(|hit| StoredAnswers::open(hit.bytecode().to_vec()));
            self.dirs = Dirs::new(table.as_ref().map_or(0, StoredAnswers::dir_count));
            self.stored = Some(table);
        }
    }

    /// The id of the directory at `path`, checked against its stamp (once per round).
    fn check_dir(&mut self, path: &str) -> u32 {
        self.load();
        let table = self.stored.as_ref().and_then(Option::as_ref);
        let (id, mut worth_storing) = self.dirs.id(table, path);
        if !worth_storing {
            worth_storing = self.dirs.check(table, &mut self.answers, id);
        }
        self.dirty |= worth_storing;
        // An answer computed from a directory whose stamp can never vouch is not kept: such a
        // directory costs a probe per start, as with `FileResolver`.
        self.unkeepable |= !self.dirs.can_vouch(id);
        id
    }

    /// Whether `path` (relative to the working directory) is a file, as `Path::is_file`
    /// would say: one probe, after its directory was stamped.
    fn is_file(&mut self, path: &RelativePath) -> bool {
        // `RelativePath::to_path(cwd)` as FileResolver's `to_path(".")` sees it: a plain path
        // is the cwd and the path; anything with `.`/`..` components, empty components or a
        // trailing slash (a name FileResolver did not normalize) takes the exact conversion.
        let rel = path.as_str();
        let plain = is_plain_relative(rel);
        // Built in a buffer kept across calls: a first start probes once per candidate.
        let mut full = std::mem::take(&mut self.scratch);
        full.clear();
        if plain {
            // The root as working directory is "/", not "" + "/".
            full.push_str(self.cwd.trim_end_matches('/'));
            full.push('/');
            full.push_str(rel);
        } else {
            match path.to_path(&self.cwd).into_os_string().into_string() {
                Ok(exact) => full = exact,
                Err(exact) => {
                    self.unkeepable = true;
                    return Path::new(&exact).is_file();
                }
            }
        }
        // A path the kernel would refuse as too long, though the relative path FileResolver
        // probes is not: probed as it does, and not kept.
        if full.len() >= crate::sys::LONGEST_PATH {
            self.unkeepable = true;
            self.scratch = full;
            return path.to_path(".").is_file();
        }
        let found = self.probe(&full);
        self.scratch = full;
        found
    }

    /// [`ResolverState::is_file`] for the full path.
    fn probe(&mut self, full: &str) -> bool {
        let Some(dir) = directory_of(full) else {
            self.unkeepable = true;
            return Path::new(full).is_file();
        };
        // The stamp comes first: an entry added after it changes the directory's stat data.
        let dir_id = self.check_dir(dir);
        if !self.consulted.contains(&dir_id) {
            self.consulted.push(dir_id);
        }
        match crate::sys::probe(Path::new(full)) {
            Probe::File => true,
            Probe::Symlink => {
                self.unkeepable = true;
                Path::new(full).is_file()
            }
            Probe::Other | Probe::Absent => false,
        }
    }

    /// `FileResolver::try_patterns`, recording the directories it probes.
    fn try_patterns(&mut self, path: &RelativePath) -> Option<RelativePathBuf> {
        let config = Arc::clone(self.config.as_ref()?);
        let patterns = &config.patterns;
        if let Some(extension) = path.extension() {
            if !self.is_file(path) {
                return None;
            }
            patterns
                .iter()
                .any(|p| RelativePath::new(p).extension() == Some(extension))
                .then(|| path.to_relative_path_buf())
        } else {
            let file_name = path.file_name()?;
            patterns.iter().find_map(|pattern| {
                let file = path.with_file_name(pattern.replace("{}", file_name));
                self.is_file(&file).then_some(file)
            })
        }
    }

    /// `FileResolver::resolve`, recording the directories it probes.
    fn resolve_cached(&mut self, base: &str, name: &str) -> Option<RelativePathBuf> {
        if !name.starts_with('.') {
            let config = Arc::clone(self.config.as_ref()?);
            config.paths.iter().find_map(|path| {
                let path = RelativePath::new(path).join_normalized(name);
                self.try_patterns(&path)
            })
        } else {
            let base = RelativePath::new(base);
            let path = match base.parent() {
                Some(dir) => dir.join_normalized(name),
                None => name.into(),
            };
            self.try_patterns(&path)
        }
    }
}

/// Whether `name` is relative and every component is a plain name (not empty, `.` or `..`):
/// then path arithmetic on it is string arithmetic, and the exact conversions can be skipped.
fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `RelativePath::parent` of a base module's name, without parsing its components when it is
/// plain (every module a start loads).
fn base_dir(base: &str) -> Option<&str> {
    if is_plain_relative(base) {
        return Some(base.rsplit_once('/').map_or("", |(dir, _)| dir));
    }
    RelativePath::new(base).parent().map(RelativePath::as_str)
}

/// The payload that stores a run's state: every directory with its current stamp, the answers
/// computed during the run, and the stored answers they do not replace whose directories were
/// not stamped again (an answer computed from a directory that changed is never written back
/// under its new stamp).
fn payload(table: Option<&StoredAnswers>, dirs: &Dirs, answers: &NewAnswers) -> Vec<u8> {
    let Some(all_dirs) = dirs.all(table) else {
        // Cannot happen for a table that opened (every directory was read then); start over.
        return stored::encode(std::iter::empty(), &[]);
    };
    let kept = table.into_iter().flat_map(|t| t.answers()).filter_map(|a| {
        let (scope, name, value) = a.text()?;
        let replaced = answers.get(scope).is_some_and(|n| n.contains_key(name));
        let stands = a
            .dirs()
            .all(|id| id < dirs.stored && dirs.restamped[id as usize].is_none());
        (stands && !replaced).then(|| AnswerToStore {
            dirs: a.dirs().collect(),
            scope,
            name,
            value,
        })
    });
    let mut to_store: Vec<AnswerToStore<'_>> = kept.collect();
    for (scope, names) in answers {
        to_store.extend(names.iter().map(|(name, answer)| AnswerToStore {
            scope,
            name,
            value: &answer.value,
            dirs: answer.dirs.clone(),
        }));
    }
    stored::encode(all_dirs.into_iter(), &to_store)
}

/// The fuzzers' way in (`crate::fuzzing::fuzz_resolutions`): a table built from `dirs` and
/// `answers` (scope, name, value, directory ids), as a run writes it.
pub(crate) fn encode_table_for_fuzzing(
    dirs: &[(String, Option<crate::format::StatRecord>, i64)],
    answers: &[(String, String, String, Vec<u32>)],
) -> Vec<u8> {
    let dirs = dirs.iter().map(|(path, stat, recorded_at_ns)| {
        let stamp = DirStamp {
            stat: *stat,
            recorded_at_ns: *recorded_at_ns,
        };
        (path.as_str(), stamp)
    });
    let answers: Vec<_> = answers
        .iter()
        .map(|(scope, name, value, dirs)| AnswerToStore {
            scope,
            name,
            value,
            dirs: dirs.clone(),
        })
        .collect();
    stored::encode(dirs, &answers)
}

/// The fuzzers' way in: `bytes` opened as a stored table the way a run reads it (every
/// directory, every answer, each answer looked up by its scope and name) and, if it opens,
/// written back as a run that found every directory unchanged writes it. The write-back must
/// open, and hold every answer that could be read whole. Returns the answers read, for the
/// caller's round-trip check.
pub(crate) fn exercise_stored_table(bytes: Vec<u8>) -> Option<Vec<(String, String, String)>> {
    let table = StoredAnswers::open(bytes)?;
    let count = table.dir_count();
    let dir_paths: Vec<String> = (0..count)
        .map(|id| table.dir(id).map(|(path, _)| path.to_owned()))
        .collect::<Option<_>>()
        .expect("a table that opened reads every directory back");
    let mut readable = Vec::new();
    for answer in table.answers() {
        let found = answer
            .text()
            .and_then(|(scope, name, _)| table.find(scope, name));
        let whole = answer.dirs().all(|id| id < count);
        if let (Some((scope, name, value)), Some(_), true) = (answer.text(), found, whole) {
            readable.push((scope.to_owned(), name.to_owned(), value.to_owned()));
        }
    }
    let mut dirs = Dirs::new(count);
    dirs.checked.fill(dirs.round);
    let written = payload(Some(&table), &dirs, &NewAnswers::default());
    let again = StoredAnswers::open(written).expect("a written table opens");
    let again_paths: Vec<String> = (0..again.dir_count())
        .filter_map(|id| again.dir(id).map(|(path, _)| path.to_owned()))
        .collect();
    assert_eq!(again_paths, dir_paths, "directories keep their ids");
    for (scope, name, _) in &readable {
        assert!(again.find(scope, name).is_some(), "{scope:?} {name:?} kept");
    }
    Some(readable)
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
        let now = crate::sys::coarse_clock();
        match self.round_started {
            Some(started) if now.saturating_sub(started) < RECHECK_AFTER => {}
            Some(_) => {
                self.dirs.next_round();
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
        self.consulted.clear();
        self.unkeepable = false;
        let Some(value) = self.resolve_cached(base, name) else {
            // Directories are checked once per round: a file created since would be missed, so
            // a failed resolution asks the filesystem, and what it consulted is checked again
            // on next use.
            for id in std::mem::take(&mut self.consulted) {
                self.dirs.uncheck(id);
            }
            return self.inner.resolve(ctx, base, name, attributes);
        };
        let value = value.to_string();
        // Kept across starts only if no probe went through a symlink.
        if !self.unkeepable {
            let answer = Answer {
                value: value.clone(),
                dirs: std::mem::take(&mut self.consulted),
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
    /// if every directory it came from is unchanged.
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
        for id in answer.dirs() {
            // A changed directory is stamped again, which kills every stored answer computed
            // from it (and forgets those of this run).
            self.dirty |= self.dirs.check(Some(table), &mut self.answers, id);
            if !self.dirs.unchanged_since_stored(id) {
                return None;
            }
        }
        answer.value().map(str::to_owned)
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
    fn take_if_changed(&mut self) -> Option<(Key, Vec<u8>)> {
        if !self.dirty {
            return None;
        }
        let bytes = self.encode();
        self.dirty = false;
        Some((self.key, bytes))
    }
}

impl Answers for Mutex<ResolverState> {
    fn take_if_changed(&self) -> Option<(Key, Vec<u8>)> {
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

impl Config {
    /// Reads `FileResolver`'s search paths and patterns back from its `Debug` output (its
    /// fields are private), and checks the reading by rebuilding an equal resolver.
    fn of(resolver: &FileResolver) -> Option<Config> {
        let text = format!("{resolver:?}");
        let config = Config {
            paths: debug_string_list(&text, "paths: [")?,
            patterns: debug_string_list(&text, "patterns: [")?,
        };
        let (first, rest) = config.patterns.split_first()?;
        let rebuilt = rest.iter().fold(
            FileResolver::default().with_paths(config.paths.iter().map(String::as_str)),
            |r, p| r.with_pattern(p.as_str()),
        );
        (first == "{}.js" && format!("{rebuilt:?}") == text).then_some(config)
    }
}

/// The strings of the `Debug`-printed list that starts after `label`.
fn debug_string_list(text: &str, label: &str) -> Option<Vec<String>> {
    let mut rest = &text[text.find(label)? + label.len()..];
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix(']') {
            let _ = after;
            return Some(out);
        }
        rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '"' => break at + 1,
                '\\' => {
                    let (_, e) = chars.next()?;
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '"' | '\'' => e,
                        // \u{...}: anything else makes the reading fail the rebuild check.
                        _ => return None,
                    });
                }
                c => value.push(c),
            }
        };
        out.push(value);
        rest = &rest[end..];
    }
}

/// The module name a resolver's stored answers go under (it names the payload's version:
/// builds storing another layout keep out of each other's way).
pub(crate) const STORE_NAME: &str = "bytecode-pack resolutions 4";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_resolver_settings_are_read_back_exactly() {
        let resolver = FileResolver::default()
            .with_path(".")
            .with_path("lib/\"quoted\"\\dir")
            .with_pattern("{}.mjs")
            .with_pattern("{}/index.js");
        let config = Config::of(&resolver).expect("readable");
        assert_eq!(config.paths, [".", "lib/\"quoted\"\\dir"]);
        assert_eq!(config.patterns, ["{}.js", "{}.mjs", "{}/index.js"]);
        assert_eq!(
            Config::of(&FileResolver::default()).unwrap().paths,
            Vec::<String>::new()
        );
    }

    /// A file's directory is its path's parent, the root's files' too: stamping "" instead of
    /// `/` (whose stat always fails, so it looked unchanged forever) kept the root's answers
    /// after its files changed.
    #[test]
    fn a_files_directory_is_its_parent_even_in_the_root() {
        for full in [
            "/x.js",
            "/srv/x.js",
            "/srv/app/lib/x.mjs",
            "//x.js",
            "/a//b.js",
        ] {
            let dir = directory_of(full).unwrap();
            assert_eq!(Some(Path::new(dir)), Path::new(full).parent(), "{full:?}");
        }
        assert!(crate::sys::stat_path(Path::new(directory_of("/x.js").unwrap())).is_ok());
        for no_file in ["/", "/srv/", "x.js", ""] {
            assert_eq!(directory_of(no_file), None, "{no_file:?}");
        }
    }

    /// What the probes and `base_dir` rely on: a plain name's path is the working directory, a
    /// separator and the name, and its parent is what precedes its last separator.
    #[test]
    fn plain_names_are_string_arithmetic() {
        let names = [
            "a.js", "a/b.js", "x./y.js", "a..b/c", "..a/.b", ".", "..", "", "/a", "a/", "a//b",
            "./a", "a/./b", "a/../b", "a/.", "a/..",
        ];
        for name in names {
            if !is_plain_relative(name) {
                continue;
            }
            for cwd in ["/", "/srv/app"] {
                let exact = RelativePath::new(name).to_path(cwd);
                let joined = format!("{}/{name}", cwd.trim_end_matches('/'));
                assert_eq!(Path::new(&joined), exact, "{cwd:?} {name:?}");
            }
            let parent = RelativePath::new(name).parent().map(RelativePath::as_str);
            assert_eq!(base_dir(name), parent, "{name:?}");
        }
    }

    #[test]
    fn base_directories_are_what_relative_path_gives() {
        let bases = [
            "a/b.js",
            "b.js",
            "a/b/c.mjs",
            "a/../b.js",
            "a/..",
            "..",
            ".",
            "",
            "/a/b.js",
            "./a.js",
            "a/./b.js",
            "a//b.js",
            "a/b/",
            "a/b/.",
            "./",
            "a/.b",
            ".a/b",
        ];
        for base in bases {
            let expected = RelativePath::new(base).parent().map(RelativePath::as_str);
            assert_eq!(base_dir(base), expected, "{base:?}");
        }
    }

    /// What a run writes back: its own answers, the stored answers it did not replace whose
    /// directories were not stamped again, and every directory at its id with its current stamp.
    #[test]
    fn the_payload_keeps_live_answers_and_drops_dead_ones() {
        let stamp = |n| DirStamp {
            stat: None,
            recorded_at_ns: n,
        };
        let answer = |name, value, dirs| AnswerToStore {
            scope: "s",
            name,
            value,
            dirs,
        };
        let table = StoredAnswers::open(stored::encode(
            [("/d0", stamp(1)), ("/d1", stamp(2))].into_iter(),
            &[
                answer("./a", "s/a.js", vec![0]),
                answer("./b", "s/b.js", vec![1]),
                answer("./c", "s/c.js", vec![0, 1]),
                answer("./e", "s/e.js", vec![0]),
            ],
        ))
        .unwrap();
        // This run: /d1 changed (stamped again), /d2 was stamped for the first time, ./e was
        // computed again (its stored answer is replaced) and ./f is new.
        let mut dirs = Dirs::new(table.dir_count());
        dirs.restamped[1] = Some(stamp(20));
        dirs.added.push(("/d2".into(), stamp(30)));
        dirs.checked.push(dirs.round);
        let mut answers = NewAnswers::default();
        let names = answers.entry("s".into()).or_default();
        for (name, dirs) in [("./e", vec![0, 2]), ("./f", vec![2])] {
            let value = format!("s/{}.mjs", &name[2..]);
            names.insert(name.into(), Answer { value, dirs });
        }
        let written = StoredAnswers::open(payload(Some(&table), &dirs, &answers)).unwrap();
        let dir_list: Vec<_> = (0..written.dir_count())
            .map(|id| written.dir(id).unwrap())
            .collect();
        assert_eq!(
            dir_list,
            [("/d0", stamp(1)), ("/d1", stamp(20)), ("/d2", stamp(30))]
        );
        let found = |name| {
            let answer = written.find("s", name)?;
            Some((answer.value()?, answer.dirs().collect::<Vec<_>>()))
        };
        assert_eq!(found("./a"), Some(("s/a.js", vec![0])));
        assert_eq!(found("./b"), None, "computed from /d1, which changed");
        assert_eq!(found("./c"), None, "computed from /d0 and /d1");
        assert_eq!(found("./e"), Some(("s/e.mjs", vec![0, 2])));
        assert_eq!(found("./f"), Some(("s/f.mjs", vec![2])));
        assert_eq!(written.answers().count(), 3);
    }

    #[test]
    fn a_changed_directory_forgets_the_answers_computed_from_it() {
        let mut answers = NewAnswers::default();
        for (scope, dirs) in [("a", vec![0]), ("b", vec![1]), ("c", vec![1, 0])] {
            let answer = Answer {
                value: format!("{scope}/x.js"),
                dirs,
            };
            answers
                .entry(scope.into())
                .or_default()
                .insert("./x".into(), answer);
        }
        forget_answers_from(&mut answers, 0);
        let mut left: Vec<_> = answers.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["b"]);
    }

    /// Stored answers stand only on stored directories checked unchanged in this run; one
    /// stamped again (changed) kills them, and an id outside the table never vouches.
    #[test]
    fn stored_answers_stand_only_on_directories_checked_unchanged() {
        let root = crate::private_tempdir();
        let (same, changed) = (root.path().join("same"), root.path().join("changed"));
        std::fs::create_dir(&same).unwrap();
        std::fs::create_dir(&changed).unwrap();
        // Stamped long after their last change: trusted.
        let old = |path: &Path| DirStamp {
            stat: crate::sys::stat_path(path).ok(),
            recorded_at_ns: i64::MAX / 2,
        };
        let dirs = [
            (same.to_str().unwrap(), old(&same)),
            (changed.to_str().unwrap(), old(&changed)),
        ];
        let answer = |name, dirs| AnswerToStore {
            scope: "s",
            name,
            value: "v",
            dirs,
        };
        let table = StoredAnswers::open(stored::encode(
            dirs.into_iter(),
            &[answer("./a", vec![0]), answer("./b", vec![0, 1])],
        ))
        .unwrap();
        std::fs::write(changed.join("new.js"), "").unwrap();
        let mut state = Dirs::new(table.dir_count());
        let mut answers = NewAnswers::default();
        assert!(!state.unchanged_since_stored(0), "not checked yet");
        assert!(!state.check(Some(&table), &mut answers, 0));
        assert!(state.unchanged_since_stored(0));
        // A file was created in it since its stamp: stamped again.
        assert!(state.check(Some(&table), &mut answers, 1));
        assert!(!state.unchanged_since_stored(1));
        assert!(
            !state.check(Some(&table), &mut answers, 1),
            "once per round"
        );
        assert!(!state.unchanged_since_stored(7));
    }
}
