//! [`PackResolver`]: rquickjs's `FileResolver`, answered from cached directory listings.

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

/// What one directory entry is, as far as resolution cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    File,
    /// A symlink: what it points at can change without its directory changing, so it is
    /// checked live every time.
    Symlink,
    Other,
}

/// One directory's listing and the stat data it was taken under; no stat data for a
/// directory that did not exist (a search path or `x/index.js` candidate that is absent).
#[derive(Debug, Clone)]
struct Listing {
    stamp: Option<StatRecord>,
    recorded_at_ns: i64,
    /// `None` for a path that exists but cannot be listed (not a directory, or no read
    /// permission): its names are then checked live.
    entries: Option<FxHashMap<String, Kind>>,
    /// A digest of what the listing says (absent, unlistable, or its names and kinds): an
    /// answer computed from it records the digest, and stands only while it is the same.
    digest: u64,
}

impl Listing {
    /// Whether the directory still holds exactly these names: its stat data (ctime and
    /// mtime change whenever an entry is added, removed or renamed; the inode whenever a
    /// symlinked path switches target) is unchanged and old enough to trust, by the same
    /// racy rule as inputs; or it was absent and still is.
    fn still_valid(&self, now: Option<&StatRecord>) -> bool {
        match (&self.stamp, now) {
            (None, None) => true,
            (Some(stamp), Some(now)) => {
                now == stamp && freshness::stat_is_trusted(stamp, self.recorded_at_ns)
            }
            _ => false,
        }
    }
}

/// A resolution kept across starts, with the directories it was computed from: it stands
/// while each of them is unchanged.
#[derive(Debug, Clone)]
struct Answer {
    value: String,
    /// Each directory consulted, with the digest of its listing then.
    dirs: Vec<(String, u64)>,
    /// Checked (or computed) during this run.
    verified: bool,
}

/// What a resolver keeps in the cache.
#[derive(Debug, Clone, Default)]
struct Store {
    listings: FxHashMap<String, Listing>,
    /// By scope (the base's directory, or a marker for names that do not depend on it), then
    /// by name.
    answers: FxHashMap<String, FxHashMap<String, Answer>>,
}

/// A cache-backed module resolver: the same answers as the [`FileResolver`] it wraps, without
/// probing the filesystem per import.
///
/// `FileResolver` costs a `stat` for every candidate file of every import statement, every
/// start. This resolver answers the same questions ("is `dir/x.js` a file?") from a listing of
/// `dir`, read once and kept in the cache. A start then checks one `stat` per directory it
/// resolves in (a listing whose directory changed, or changed too recently to trust, is read
/// again), as CPython's import system and git's untracked cache do. Entries that are symlinks
/// are checked live, since their target can change without their directory changing.
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
    config: Option<Config>,
    cache: Cache,
    /// The working directory, as a string (resolution is string arithmetic on UTF-8 names).
    cwd: String,
    key: Key,
    /// Listings and answers: loaded from the cache on first use, kept current as needed.
    store: Option<Store>,
    /// Directories checked during this run, and whether each was unchanged.
    checked: FxHashMap<String, bool>,
    /// The directories the resolution being computed consulted, with their listings'
    /// digests; `None` once one of its answers came from a symlink, which is checked live and
    /// never kept.
    consulted: Option<Vec<(String, u64)>>,
    dirty: bool,
}

/// `FileResolver`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    paths: Vec<String>,
    patterns: Vec<String>,
}

impl PackResolver {
    /// Wraps `resolver`, keeping its listings in `cache`.
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
            Ok(cwd) => (config, cwd),
            Err(_) => (None, String::new()),
        };
        let identity = format!("{cwd}\0{resolver:?}");
        let state = ResolverState {
            key: Key::for_source("bytecode-pack directory listings", identity.as_bytes()),
            inner: resolver,
            config,
            cache,
            cwd,
            store: None,
            checked: FxHashMap::default(),
            consulted: Some(Vec::new()),
            dirty: false,
        };
        let state = Arc::new(Mutex::new(state));
        // What it learned joins the loader's batch when the loader flushes first (one
        // publication instead of two), with a clone of the same `Cache`.
        let companion: Arc<dyn Deferred> = state.clone();
        state.lock().cache.defer_with(Arc::downgrade(&companion));
        PackResolver { state }
    }

    /// Stores what this run learned (listings read, answers computed) now, instead of when
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
    /// would say.
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
        let full = if plain {
            format!("{}/{rel}", self.cwd)
        } else {
            match path.to_path(&self.cwd).into_os_string().into_string() {
                Ok(full) => full,
                Err(full) => {
                    self.consulted = None;
                    return Path::new(&full).is_file();
                }
            }
        };
        let Some((dir, name)) = full.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
            self.consulted = None;
            return Path::new(&full).is_file();
        };
        self.check_dir(dir);
        let digest = self.store().listings.get(dir).map_or(0, |l| l.digest);
        if let Some(consulted) = &mut self.consulted
            && !consulted.iter().any(|(d, _)| d == dir)
        {
            consulted.push((dir.to_owned(), digest));
        }
        let kind = match self.store().listings.get(dir).map(|l| &l.entries) {
            Some(Some(entries)) => entries.get(name).copied(),
            // Absent: nothing in it. Unlistable: ask the filesystem.
            None => None,
            Some(None) => Some(Kind::Symlink),
        };
        match kind {
            Some(Kind::File) => true,
            Some(Kind::Symlink) => {
                self.consulted = None;
                Path::new(&full).is_file()
            }
            Some(Kind::Other) | None => false,
        }
    }

    /// Makes `dir`'s listing current (once per run) and says whether it was unchanged.
    fn check_dir(&mut self, dir: &str) -> bool {
        if let Some(&unchanged) = self.checked.get(dir) {
            return unchanged;
        }
        let now = crate::sys::stat_path(Path::new(dir)).ok();
        let unchanged = self
            .store()
            .listings
            .get(dir)
            .is_some_and(|l| l.still_valid(now.as_ref()));
        if !unchanged {
            let listing = read_listing(Path::new(dir));
            self.store().listings.insert(dir.to_owned(), listing);
            self.dirty = true;
        }
        self.checked.insert(dir.to_owned(), unchanged);
        unchanged
    }

    /// `FileResolver::try_patterns`, on listings.
    fn try_patterns(&mut self, path: &RelativePath) -> Option<RelativePathBuf> {
        let patterns = self.config.as_ref()?.patterns.clone();
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

    /// `FileResolver::resolve`, on listings.
    fn resolve_cached(&mut self, base: &str, name: &str) -> Option<RelativePathBuf> {
        if !name.starts_with('.') {
            let paths = self.config.as_ref()?.paths.clone();
            paths.iter().find_map(|path| {
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
                .map_or_else(|| "\0no directory".to_owned(), |d| d.to_string())
        } else {
            "\0search paths".to_owned()
        };
        if let Some(value) = self.known_answer(&scope, name) {
            return Ok(value);
        }
        self.consulted = Some(Vec::new());
        let Some(value) = self.resolve_cached(base, name) else {
            // Directories are checked once per run: a file created since would be missed, so
            // a failed resolution asks the filesystem, and what it consulted is checked again
            // on next use.
            for (dir, _) in self.consulted.take().unwrap_or_default() {
                self.checked.remove(&dir);
            }
            return self.inner.resolve(ctx, base, name, attributes);
        };
        let value = value.to_string();
        // Kept across starts only if computed from listings alone.
        if let Some(dirs) = self.consulted.take() {
            let answer = Answer {
                value: value.clone(),
                dirs,
                verified: true,
            };
            self.store()
                .answers
                .entry(scope)
                .or_default()
                .insert(name.to_owned(), answer);
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
        // Each listing made current, then compared with the one the answer was computed from
        // (which another run may have replaced since).
        let unchanged = dirs.iter().fold(true, |all, (dir, digest)| {
            self.check_dir(dir);
            let same = self
                .store()
                .listings
                .get(dir)
                .is_some_and(|l| l.digest == *digest);
            same && all
        });
        let answers = self.store().answers.get_mut(scope)?;
        if !unchanged {
            // Stale: it must not outlive this run next to listings that are current again.
            answers.remove(name);
            self.dirty = true;
            return None;
        }
        let answer = answers.get_mut(name)?;
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
        let entry = NewEntry::new(LISTINGS_NAME, &bytes);
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
        Some((state.key, LISTINGS_NAME.to_owned(), bytes))
    }
}

impl Drop for ResolverState {
    fn drop(&mut self) {
        if let Err(e) = self.store_if_changed() {
            log::warn!("bytecode-pack: cannot store directory listings: {e}");
        }
    }
}

/// Reads `dir`'s listing: absent (no stat data), unlistable, or its names. Stat data taken
/// before and after must agree, or the listing is kept for this run only (recorded as never
/// trusted).
fn read_listing(dir: &Path) -> Listing {
    // The recording instant comes before the read it vouches for, as for inputs.
    let read_from = freshness::now_nanos();
    let Ok(before) = crate::sys::stat_path(dir) else {
        return Listing {
            stamp: None,
            recorded_at_ns: 0,
            digest: listing_digest(None, Some(&FxHashMap::default())),
            entries: Some(FxHashMap::default()),
        };
    };
    let entries = std::fs::read_dir(dir).ok().and_then(|names| {
        let mut entries = FxHashMap::default();
        for entry in names {
            let entry = entry.ok()?;
            let Ok(name) = entry.file_name().into_string() else {
                // Not UTF-8: no JavaScript specifier can name it.
                continue;
            };
            let kind = match entry.file_type() {
                Ok(t) if t.is_file() => Kind::File,
                Ok(t) if t.is_symlink() => Kind::Symlink,
                _ => Kind::Other,
            };
            entries.insert(name, kind);
        }
        Some(entries)
    });
    let after = crate::sys::stat_path(dir).ok();
    let recorded_at_ns = if after == Some(before) {
        read_from
    } else {
        i64::MIN
    };
    Listing {
        digest: listing_digest(after.as_ref(), entries.as_ref()),
        stamp: after,
        recorded_at_ns,
        entries,
    }
}

/// What a listing says, as a digest: present or absent, listable or not, and its names with
/// their kinds (in name order).
fn listing_digest(stamp: Option<&StatRecord>, entries: Option<&FxHashMap<String, Kind>>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[u8::from(stamp.is_some()), u8::from(entries.is_some())]);
    if let Some(entries) = entries {
        let mut names: Vec<_> = entries.iter().collect();
        names.sort_unstable();
        for (name, kind) in names {
            h.update(&[*kind as u8]);
            h.update(name.as_bytes());
            h.update(&[0]);
        }
    }
    h.digest()
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

const STORE_MAGIC: &[u8; 8] = b"BPRSLV1\0";

/// The module name a resolver's stored listings and answers go under.
const LISTINGS_NAME: &str = "bytecode-pack directory listings";

/// The listings and answers as stored in the cache (inside a checksummed segment).
fn encode_store(store: &Store) -> Vec<u8> {
    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    let mut out = STORE_MAGIC.to_vec();
    out.extend_from_slice(&(store.listings.len() as u32).to_le_bytes());
    for (dir, listing) in &store.listings {
        put_bytes(&mut out, dir.as_bytes());
        match &listing.stamp {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&listing.recorded_at_ns.to_le_bytes());
        out.extend_from_slice(&listing.digest.to_le_bytes());
        match &listing.entries {
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            Some(entries) => {
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for (name, kind) in entries {
                    out.push(match kind {
                        Kind::File => 1,
                        Kind::Symlink => 2,
                        Kind::Other => 3,
                    });
                    put_bytes(&mut out, name.as_bytes());
                }
            }
        }
    }
    let answers: Vec<_> = store
        .answers
        .iter()
        .flat_map(|(scope, names)| names.iter().map(move |(name, a)| (scope, name, a)))
        .collect();
    out.extend_from_slice(&(answers.len() as u32).to_le_bytes());
    for (scope, name, answer) in answers {
        put_bytes(&mut out, scope.as_bytes());
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, answer.value.as_bytes());
        out.extend_from_slice(&(answer.dirs.len() as u32).to_le_bytes());
        for (dir, digest) in &answer.dirs {
            put_bytes(&mut out, dir.as_bytes());
            out.extend_from_slice(&digest.to_le_bytes());
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
    for _ in 0..r.u32()? {
        let dir = r.string()?;
        let stamp = match r.take(1)?[0] {
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
        let digest = r.u64()?;
        let count = r.u32()?;
        let entries = if count == u32::MAX {
            None
        } else {
            let mut entries = FxHashMap::default();
            for _ in 0..count {
                let kind = match r.take(1)?[0] {
                    1 => Kind::File,
                    2 => Kind::Symlink,
                    _ => Kind::Other,
                };
                entries.insert(r.string()?, kind);
            }
            Some(entries)
        };
        store.listings.insert(
            dir,
            Listing {
                stamp,
                recorded_at_ns,
                entries,
                digest,
            },
        );
    }
    for _ in 0..r.u32()? {
        let (scope, name, value) = (r.string()?, r.string()?, r.string()?);
        let dirs = (0..r.u32()?)
            .map(|_| Some((r.string()?, r.u64()?)))
            .collect::<Option<Vec<_>>>()?;
        let answer = Answer {
            value,
            dirs,
            verified: false,
        };
        store.answers.entry(scope).or_default().insert(name, answer);
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
        store.listings.insert(
            "/a/b".to_owned(),
            Listing {
                stamp: Some(StatRecord {
                    size: 1,
                    mtime_ns: -2,
                    ctime_ns: 3,
                    ino: 4,
                    dev: 5,
                }),
                recorded_at_ns: 6,
                digest: 7,
                entries: Some(
                    [
                        ("x.js".to_owned(), Kind::File),
                        ("l".to_owned(), Kind::Symlink),
                    ]
                    .into_iter()
                    .collect(),
                ),
            },
        );
        for (dir, entries) in [("/a/absent", Some(FxHashMap::default())), ("/a/f.js", None)] {
            store.listings.insert(
                dir.to_owned(),
                Listing {
                    stamp: None,
                    recorded_at_ns: 0,
                    digest: 8,
                    entries,
                },
            );
        }
        store.answers.entry("a".into()).or_default().insert(
            "./x".into(),
            Answer {
                value: "a/x.js".into(),
                dirs: vec![("/a/b".into(), 7)],
                verified: true,
            },
        );
        let bytes = encode_store(&store);
        let back = decode_store(&bytes).unwrap();
        assert_eq!(
            back.listings["/a/b"].entries,
            store.listings["/a/b"].entries
        );
        assert_eq!(back.listings["/a/b"].stamp, store.listings["/a/b"].stamp);
        assert!(back.listings["/a/f.js"].entries.is_none());
        assert!(back.listings["/a/absent"].stamp.is_none());
        let answer = &back.answers["a"]["./x"];
        assert_eq!(answer.value, "a/x.js");
        assert_eq!(answer.dirs, [("/a/b".to_owned(), 7)]);
        assert_eq!(back.listings["/a/b"].digest, 7);
        assert!(!answer.verified, "a loaded answer is checked again");
        for cut in 0..bytes.len() {
            assert!(decode_store(&bytes[..cut]).is_none());
        }
    }
}
