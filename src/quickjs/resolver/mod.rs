//! [`PackResolver`]: rquickjs's `FileResolver`, its answers kept in the cache and checked
//! with one `stat` per directory.

use std::path::Path;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::Arc;

use relative_path::{RelativePath, RelativePathBuf};
use rquickjs::loader::{FileResolver, ImportAttributes, Resolver};
use rquickjs::{Ctx, Result};

use crate::cache::{Cache, Deferred};
use crate::entry::NewEntry;
use crate::format::StatRecord;
use crate::freshness;
use crate::key::Key;
use crate::sys::Probe;

/// A directory's stat data as a run recorded it (`None`: the directory did not exist, as a
/// search path or an `x/index.js` candidate may not), and the instant it was taken (before the
/// `stat`, as for inputs).
#[derive(Debug, Clone, Copy)]
struct DirStamp {
    stat: Option<StatRecord>,
    recorded_at_ns: i64,
}

impl DirStamp {
    /// Whether the directory still holds the names it held when stamped: its stat data
    /// (ctime and mtime change whenever an entry is added, removed or renamed; the inode
    /// whenever a symlinked path switches target) is unchanged and was old enough to trust
    /// when recorded, by the same racy rule as inputs; or it was absent and still is.
    fn still_valid(&self, now: Option<&StatRecord>) -> bool {
        match (&self.stat, now) {
            (None, None) => true,
            (Some(stamp), Some(now)) => {
                now == stamp && freshness::stat_is_trusted(stamp, self.recorded_at_ns)
            }
            _ => false,
        }
    }
}

/// A resolution kept across starts, with the directories whose entries it was computed from:
/// it stands while each of them is unchanged.
#[derive(Debug, Clone)]
struct Answer {
    value: String,
    /// Each directory probed, as an index into [`Store::dirs`].
    dirs: Vec<u32>,
    /// Checked (or computed) during this run.
    verified: bool,
}

/// What a resolver keeps in the cache.
#[derive(Debug, Clone, Default)]
struct Store {
    /// Every directory stamped (those the answers depend on, and any other probed), with its
    /// stamp; answers refer to them by index.
    dirs: Vec<(String, DirStamp)>,
    dir_index: FxHashMap<String, u32>,
    /// By scope (the base's directory, or a marker for names that do not depend on it), then
    /// by name.
    answers: FxHashMap<String, FxHashMap<String, Answer>>,
}

impl Store {
    /// Forgets every answer computed from `dir` (by index): the directory changed since.
    fn forget_answers_from(&mut self, dir: u32) {
        for names in self.answers.values_mut() {
            names.retain(|_, answer| !answer.dirs.contains(&dir));
        }
        self.answers.retain(|_, names| !names.is_empty());
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
/// Within one run each directory is checked once: a file that appears during the run is
/// still found (a failed resolution asks the filesystem), but one deleted or renamed during
/// the run keeps its answer until the next run (its load then fails).
///
/// Names resolve against the working directory when the resolver is created (as
/// `FileResolver` resolves against the working directory of each call): a host that changes
/// directory makes a new one. What a run learned is stored when the last clone is dropped
/// (rquickjs drops its own with the runtime), or on [`PackResolver::flush`].
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
    /// The working directory, as a string (resolution is string arithmetic on UTF-8 names).
    cwd: String,
    key: Key,
    /// Directory stamps and answers: loaded from the cache on first use, kept current.
    store: Option<Store>,
    /// Directories checked during this run: their index in the store, and whether each was
    /// unchanged since its stamp.
    checked: FxHashMap<String, (u32, bool)>,
    /// The directories the resolution being computed probed; `None` once it probed a
    /// symlink, whose target can change unseen, so that the answer is not kept.
    consulted: Option<Vec<u32>>,
    dirty: bool,
    /// A path buffer reused by every probe.
    scratch: String,
}

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
        let cwd = std::env::current_dir().unwrap_or_default();
        // A working directory that is not UTF-8 cannot be joined to JavaScript names.
        let (config, cwd) = match cwd.into_os_string().into_string() {
            Ok(cwd) => (config.map(Arc::new), cwd),
            Err(_) => (None, String::new()),
        };
        let identity = format!("{cwd}\0{resolver:?}");
        let state = ResolverState {
            key: Key::for_source(STORE_NAME, identity.as_bytes()),
            inner: resolver,
            config,
            cache,
            cwd,
            store: None,
            checked: FxHashMap::default(),
            consulted: Some(Vec::new()),
            dirty: false,
            scratch: String::new(),
        };
        let state = Arc::new(Mutex::new(state));
        // What it learned joins the loader's batch when the loader flushes first (one
        // publication instead of two), with a clone of the same `Cache`.
        let companion: Arc<dyn Deferred> = state.clone();
        state.lock().cache.defer_with(Arc::downgrade(&companion));
        PackResolver { state }
    }

    /// Stores what this run learned (directories stamped, answers computed) now, instead of when
    /// the last clone is dropped; does nothing if nothing changed. Clones share the state, so
    /// a host can keep a clone to call this.
    pub fn flush(&self) -> crate::Result<()> {
        self.state.lock().store_if_changed()
    }
}

impl ResolverState {
    fn store(&mut self) -> &mut Store {
        if self.store.is_none() {
            let loaded = self
                .cache
                .get(&self.key)
                .and_then(|hit| decode_store(hit.bytecode()))
                .unwrap_or_default();
            self.store = Some(loaded);
        }
        self.store.as_mut().expect("just loaded")
    }

    /// Whether `path` (relative to the working directory) is a file, as `Path::is_file`
    /// would say: one probe, after its directory was stamped.
    fn is_file(&mut self, path: &RelativePath) -> bool {
        // `RelativePath::to_path(cwd)` as FileResolver's `to_path(".")` sees it: a plain path
        // is the cwd and the path; anything with `.`/`..` components, empty components or a
        // trailing slash (a name FileResolver did not normalize) takes the exact conversion.
        let rel = path.as_str();
        let plain = !(rel.is_empty()
            || rel.ends_with('/')
            || rel.starts_with('/')
            || rel.contains("./")
            || rel.contains("//")
            || rel == "."
            || rel == ".."
            || rel.ends_with("/.")
            || rel.ends_with("/.."));
        // Built in a buffer kept across calls: a first start probes once per candidate.
        let mut full = std::mem::take(&mut self.scratch);
        full.clear();
        if plain {
            full.push_str(&self.cwd);
            full.push('/');
            full.push_str(rel);
        } else {
            match path.to_path(&self.cwd).into_os_string().into_string() {
                Ok(exact) => full = exact,
                Err(exact) => {
                    self.consulted = None;
                    return Path::new(&exact).is_file();
                }
            }
        }
        let found = self.probe(&full);
        self.scratch = full;
        found
    }

    /// [`ResolverState::is_file`] for the full path.
    fn probe(&mut self, full: &str) -> bool {
        let Some((dir, _)) = full.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
            self.consulted = None;
            return Path::new(full).is_file();
        };
        // The stamp comes first: an entry added after it changes the directory's stat data.
        let (dir_id, _) = self.check_dir(dir);
        if let Some(consulted) = &mut self.consulted
            && !consulted.contains(&dir_id)
        {
            consulted.push(dir_id);
        }
        match crate::sys::probe(Path::new(full)) {
            Probe::File => true,
            Probe::Symlink => {
                self.consulted = None;
                Path::new(full).is_file()
            }
            Probe::Other | Probe::Absent => false,
        }
    }

    /// Checks `dir` against its stamp (once per run), stamping it anew if it changed, and
    /// says whether it was unchanged. Answers computed from an older stamp are forgotten.
    fn check_dir(&mut self, dir: &str) -> (u32, bool) {
        if let Some(&checked) = self.checked.get(dir) {
            return checked;
        }
        // The recording instant comes before the `stat` it vouches for, as for inputs.
        let read_from = freshness::now_nanos();
        let now = crate::sys::stat_path(Path::new(dir)).ok();
        let store = self.store();
        let known = store.dir_index.get(dir).copied();
        let unchanged = known.is_some_and(|id| store.dirs[id as usize].1.still_valid(now.as_ref()));
        let stamp = DirStamp {
            stat: now,
            recorded_at_ns: read_from,
        };
        let id = match known {
            Some(id) if unchanged => id,
            Some(id) => {
                store.dirs[id as usize].1 = stamp;
                store.forget_answers_from(id);
                id
            }
            None => {
                let id = u32::try_from(store.dirs.len()).unwrap_or(u32::MAX);
                store.dirs.push((dir.to_owned(), stamp));
                store.dir_index.insert(dir.to_owned(), id);
                id
            }
        };
        if !unchanged {
            self.dirty = true;
        }
        self.checked.insert(dir.to_owned(), (id, unchanged));
        (id, unchanged)
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
        // Relative names depend on the base's directory only (a base with no directory is a
        // case of its own: FileResolver does not normalize the name then); others not on the
        // base at all.
        let scope = if name.starts_with('.') {
            RelativePath::new(base)
                .parent()
                .map_or("\0no directory", RelativePath::as_str)
        } else {
            "\0search paths"
        };
        if let Some(value) = self.known_answer(scope, name) {
            return Ok(value);
        }
        self.consulted = Some(Vec::new());
        let Some(value) = self.resolve_cached(base, name) else {
            // Directories are checked once per run: a file created since would be missed, so
            // a failed resolution asks the filesystem, and what it consulted is checked again
            // on next use.
            let probed = self.consulted.take().unwrap_or_default();
            let store = self.store();
            let dirs: Vec<String> = probed
                .iter()
                .map(|&id| store.dirs[id as usize].0.clone())
                .collect();
            for dir in dirs {
                self.checked.remove(&dir);
            }
            return self.inner.resolve(ctx, base, name, attributes);
        };
        let value = value.to_string();
        // Kept across starts only if no probe went through a symlink.
        if let Some(dirs) = self.consulted.take() {
            let answer = Answer {
                value: value.clone(),
                dirs,
                verified: true,
            };
            let answers = &mut self.store().answers;
            match answers.get_mut(scope) {
                Some(names) => names.insert(name.to_owned(), answer),
                None => answers
                    .entry(scope.to_owned())
                    .or_default()
                    .insert(name.to_owned(), answer),
            };
            self.dirty = true;
        }
        Ok(value)
    }
}

impl ResolverState {
    /// A kept answer for `name` in `scope`, if every directory it came from is unchanged.
    fn known_answer(&mut self, scope: &str, name: &str) -> Option<String> {
        let answer = self.store().answers.get(scope)?.get(name)?;
        if answer.verified {
            return Some(answer.value.clone());
        }
        let dirs = answer.dirs.clone();
        for id in dirs {
            let dir = self.store().dirs.get(id as usize)?.0.clone();
            // A changed directory forgets this answer (and every other computed from it).
            if !self.check_dir(&dir).1 {
                return None;
            }
        }
        let answer = self.store().answers.get_mut(scope)?.get_mut(name)?;
        answer.verified = true;
        Some(answer.value.clone())
    }
}

impl ResolverState {
    fn store_if_changed(&mut self) -> crate::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        let bytes = encode_store(store);
        let entry = NewEntry::new(STORE_NAME, &bytes);
        self.cache.put(&self.key, &entry)?;
        self.dirty = false;
        Ok(())
    }
}

impl Deferred for Mutex<ResolverState> {
    fn take_if_changed(&self) -> Option<(Key, String, Vec<u8>)> {
        // Busy means it is storing on its own (or resolving): leave it to that.
        let mut state = self.try_lock()?;
        if !state.dirty {
            return None;
        }
        let bytes = encode_store(state.store.as_ref()?);
        state.dirty = false;
        Some((state.key, STORE_NAME.to_owned(), bytes))
    }
}

impl Drop for ResolverState {
    fn drop(&mut self) {
        if let Err(e) = self.store_if_changed() {
            log::warn!("bytecode-pack: cannot store resolutions: {e}");
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

const STORE_MAGIC: &[u8; 8] = b"BPRSLV3\0";

/// The module name a resolver's stored answers go under.
const STORE_NAME: &str = "bytecode-pack resolutions";

/// The directory stamps and answers as stored in the cache (inside a checksummed segment):
/// after the magic, the stamps (`u32` count; each: path, `0` for absent or `1` and five `u64`
/// stat fields, recording instant), then the answers by scope (`u32` count of scopes; each:
/// the scope, a `u32` count of answers, and per answer its name, value, a `u32` count of
/// directory indices and the indices). Strings are a `u32` length and UTF-8; integers
/// little-endian.
fn encode_store(store: &Store) -> Vec<u8> {
    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    let mut out = STORE_MAGIC.to_vec();
    out.extend_from_slice(&(store.dirs.len() as u32).to_le_bytes());
    for (dir, stamp) in &store.dirs {
        put_bytes(&mut out, dir.as_bytes());
        match &stamp.stat {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&stamp.recorded_at_ns.to_le_bytes());
    }
    out.extend_from_slice(&(store.answers.len() as u32).to_le_bytes());
    for (scope, names) in &store.answers {
        put_bytes(&mut out, scope.as_bytes());
        out.extend_from_slice(&(names.len() as u32).to_le_bytes());
        for (name, answer) in names {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, answer.value.as_bytes());
            out.extend_from_slice(&(answer.dirs.len() as u32).to_le_bytes());
            for id in &answer.dirs {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    out
}

/// The inverse of [`encode_store`]; `None` for anything malformed.
fn decode_store(bytes: &[u8]) -> Option<Store> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn string(&mut self) -> Option<String> {
            let n = self.u32()? as usize;
            Some(std::str::from_utf8(self.take(n)?).ok()?.to_owned())
        }
    }
    let mut r = Reader(bytes);
    (r.take(8)? == STORE_MAGIC).then_some(())?;
    let mut store = Store::default();
    for id in 0..r.u32()? {
        let dir = r.string()?;
        let stat = match r.take(1)?[0] {
            0 => None,
            1 => Some(StatRecord {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
                dev: r.u64()?,
            }),
            _ => return None,
        };
        let recorded_at_ns = r.u64()? as i64;
        if store.dir_index.insert(dir.clone(), id).is_some() {
            return None;
        }
        store.dirs.push((
            dir,
            DirStamp {
                stat,
                recorded_at_ns,
            },
        ));
    }
    let dir_count = store.dirs.len();
    let scopes = r.u32()?;
    store.answers.reserve(scopes as usize);
    for _ in 0..scopes {
        let scope = r.string()?;
        let count = r.u32()?;
        let mut names = FxHashMap::default();
        names.reserve(count.min(1 << 16) as usize);
        for _ in 0..count {
            let (name, value) = (r.string()?, r.string()?);
            let dirs = (0..r.u32()?)
                .map(|_| r.u32().filter(|&id| (id as usize) < dir_count))
                .collect::<Option<Vec<_>>>()?;
            let answer = Answer {
                value,
                dirs,
                verified: false,
            };
            names.insert(name, answer);
        }
        store.answers.insert(scope, names);
    }
    r.0.is_empty().then_some(store)
}

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

    #[test]
    fn the_store_round_trips_and_garbage_is_rejected() {
        let mut store = Store::default();
        let stat = StatRecord {
            size: 1,
            mtime_ns: -2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        };
        for (dir, stat) in [("/a/b", Some(stat)), ("/a/absent", None)] {
            store
                .dir_index
                .insert(dir.to_owned(), store.dirs.len() as u32);
            let stamp = DirStamp {
                stat,
                recorded_at_ns: 6,
            };
            store.dirs.push((dir.to_owned(), stamp));
        }
        store.answers.entry("a".into()).or_default().insert(
            "./x".into(),
            Answer {
                value: "a/x.js".into(),
                dirs: vec![0, 1],
                verified: true,
            },
        );
        let bytes = encode_store(&store);
        let back = decode_store(&bytes).unwrap();
        assert_eq!(back.dirs[0].0, "/a/b");
        assert_eq!(back.dirs[0].1.stat, Some(stat));
        assert_eq!(back.dirs[0].1.recorded_at_ns, 6);
        assert!(back.dirs[1].1.stat.is_none());
        assert_eq!(back.dir_index["/a/absent"], 1);
        let answer = &back.answers["a"]["./x"];
        assert_eq!(answer.value, "a/x.js");
        assert_eq!(answer.dirs, [0, 1]);
        assert!(!answer.verified, "a loaded answer is checked again");
        for cut in 0..bytes.len() {
            assert!(decode_store(&bytes[..cut]).is_none());
        }
        // An answer naming a directory that is not in the table.
        let mut bad = store.clone();
        bad.answers
            .get_mut("a")
            .unwrap()
            .get_mut("./x")
            .unwrap()
            .dirs = vec![2];
        assert!(decode_store(&encode_store(&bad)).is_none());
    }

    #[test]
    fn a_changed_directory_forgets_the_answers_computed_from_it() {
        let mut store = Store::default();
        for (scope, dirs) in [("a", vec![0]), ("b", vec![1]), ("c", vec![1, 0])] {
            let answer = Answer {
                value: format!("{scope}/x.js"),
                dirs,
                verified: false,
            };
            store
                .answers
                .entry(scope.into())
                .or_default()
                .insert("./x".into(), answer);
        }
        store.forget_answers_from(0);
        let mut left: Vec<_> = store.answers.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["b"]);
    }
}
