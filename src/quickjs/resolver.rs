//! [`PackResolver`]: rquickjs's `FileResolver`, answered from cached directory listings.

use std::path::Path;

use rustc_hash::FxHashMap;

use relative_path::{RelativePath, RelativePathBuf};
use rquickjs::loader::{FileResolver, ImportAttributes, Resolver};
use rquickjs::{Ctx, Error, Result};

use crate::cache::Cache;
use crate::entry::NewEntry;
use crate::format::StatRecord;
use crate::freshness;
use crate::key::Key;

/// What one directory entry is, as far as resolution cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    /// A symlink: what it points at can change without its directory changing, so it is
    /// checked live every time.
    Symlink,
    Other,
}

/// One directory's listing and the stat data it was taken under.
#[derive(Debug, Clone)]
struct Listing {
    stamp: StatRecord,
    recorded_at_ns: i64,
    entries: FxHashMap<String, Kind>,
}

impl Listing {
    /// Whether the directory still holds exactly these names: its stat data (ctime and
    /// mtime change whenever an entry is added, removed or renamed; the inode whenever a
    /// symlinked path switches target) is unchanged and old enough to trust, by the same
    /// racy rule as inputs.
    fn still_valid(&self, now: &StatRecord) -> bool {
        *now == self.stamp && freshness::stat_is_trusted(&self.stamp, self.recorded_at_ns)
    }
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
/// Names resolve against the working directory when the resolver is created (as
/// `FileResolver` resolves against the working directory of each call): a host that changes
/// directory makes a new one. Listings are stored when the resolver is dropped (with the
/// runtime), if any was read.
pub struct PackResolver {
    inner: FileResolver,
    /// The wrapped resolver's search paths and patterns, read back from it; `None` if they
    /// could not be, and then every call goes to the wrapped resolver.
    config: Option<Config>,
    cache: Cache,
    /// The working directory, as a string (resolution is string arithmetic on UTF-8 names).
    cwd: String,
    key: Key,
    /// Listings known, by absolute directory: loaded from the cache on first use, and read
    /// from disk as needed.
    listings: Option<FxHashMap<String, Listing>>,
    /// Directories whose listing was checked during this run (valid now).
    checked: FxHashMap<String, ()>,
    /// Answers already given during this run: directory of the base, then name.
    answers: FxHashMap<String, FxHashMap<String, String>>,
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
        PackResolver {
            key: Key::for_source("bytecode-pack directory listings", identity.as_bytes()),
            inner: resolver,
            config,
            cache,
            cwd,
            listings: None,
            checked: FxHashMap::default(),
            answers: FxHashMap::default(),
            dirty: false,
        }
    }

    fn listings(&mut self) -> &mut FxHashMap<String, Listing> {
        if self.listings.is_none() {
            let loaded = self
                .cache
                .get(&self.key)
                .and_then(|hit| decode_listings(hit.bytecode()))
                .unwrap_or_default();
            self.listings = Some(loaded);
        }
        self.listings.as_mut().expect("just loaded")
    }

    /// Whether `path` (relative to the working directory) is a file, as `Path::is_file`
    /// would say.
    fn is_file(&mut self, path: &RelativePath) -> bool {
        // `RelativePath::to_path(cwd)`, as a string: the cwd, then the normalized path.
        let full = format!("{}/{}", self.cwd, path.as_str());
        let Some((dir, name)) = full.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
            return Path::new(&full).is_file();
        };
        match self.listing(dir).and_then(|l| l.entries.get(name).copied()) {
            Some(Kind::File) => true,
            Some(Kind::Symlink) => Path::new(&full).is_file(),
            Some(Kind::Other) | None => false,
        }
    }

    /// `dir`'s listing, valid now: checked once per run, read again when it changed.
    fn listing(&mut self, dir: &str) -> Option<&Listing> {
        if !self.checked.contains_key(dir) {
            let now = crate::sys::stat_path(Path::new(dir)).ok();
            let valid = match (now, self.listings().get(dir)) {
                (Some(now), Some(listing)) => listing.still_valid(&now),
                _ => false,
            };
            if !valid {
                match read_listing(Path::new(dir)) {
                    Some(listing) => {
                        self.listings().insert(dir.to_owned(), listing);
                    }
                    None => {
                        self.listings().remove(dir);
                    }
                }
                self.dirty = true;
            }
            self.checked.insert(dir.to_owned(), ());
        }
        self.listings().get(dir)
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
        if self.config.is_none() {
            return self.inner.resolve(ctx, base, name, attributes);
        }
        // Relative names depend on the base's directory only; others not on the base at all.
        let scope = if name.starts_with('.') {
            RelativePath::new(base)
                .parent()
                .map_or_else(String::new, |d| d.to_string())
        } else {
            String::new()
        };
        if let Some(answer) = self.answers.get(&scope).and_then(|a| a.get(name)) {
            return Ok(answer.clone());
        }
        let answer = self
            .resolve_cached(base, name)
            .ok_or_else(|| Error::new_resolving(base, name))?
            .to_string();
        self.answers
            .entry(scope)
            .or_default()
            .insert(name.to_owned(), answer.clone());
        Ok(answer)
    }
}

impl Drop for PackResolver {
    fn drop(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(listings) = &self.listings else {
            return;
        };
        let bytes = encode_listings(listings);
        let entry = NewEntry::new("bytecode-pack directory listings", &bytes);
        if let Err(e) = self.cache.put(&self.key, &entry) {
            log::warn!("bytecode-pack: cannot store directory listings: {e}");
        }
    }
}

/// Reads `dir`'s listing; `None` if it is not a readable directory. Stat data taken before
/// and after must agree, or the listing is kept for this run only (recorded as never
/// trusted).
fn read_listing(dir: &Path) -> Option<Listing> {
    let before = crate::sys::stat_path(dir).ok()?;
    let mut entries = FxHashMap::default();
    for entry in std::fs::read_dir(dir).ok()? {
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
    let after = crate::sys::stat_path(dir).ok()?;
    let recorded_at_ns = if before == after {
        freshness::now_nanos()
    } else {
        i64::MIN
    };
    Some(Listing {
        stamp: after,
        recorded_at_ns,
        entries,
    })
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

const LISTINGS_MAGIC: &[u8; 8] = b"BPLIST1\0";

/// The listings as stored in the cache (inside a checksummed segment).
fn encode_listings(listings: &FxHashMap<String, Listing>) -> Vec<u8> {
    let mut out = LISTINGS_MAGIC.to_vec();
    let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    out.extend_from_slice(&(listings.len() as u32).to_le_bytes());
    for (dir, listing) in listings {
        put_bytes(&mut out, dir.as_bytes());
        let s = &listing.stamp;
        for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&listing.recorded_at_ns.to_le_bytes());
        out.extend_from_slice(&(listing.entries.len() as u32).to_le_bytes());
        for (name, kind) in &listing.entries {
            out.push(match kind {
                Kind::File => 1,
                Kind::Symlink => 2,
                Kind::Other => 3,
            });
            put_bytes(&mut out, name.as_bytes());
        }
    }
    out
}

/// The inverse of [`encode_listings`]; `None` for anything malformed.
fn decode_listings(bytes: &[u8]) -> Option<FxHashMap<String, Listing>> {
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
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()? as usize;
            self.take(n)
        }
    }
    let mut r = Reader(bytes);
    (r.take(8)? == LISTINGS_MAGIC).then_some(())?;
    let dirs = r.u32()?;
    let mut out = FxHashMap::default();
    for _ in 0..dirs {
        let dir = std::str::from_utf8(r.bytes()?).ok()?.to_owned();
        let stamp = StatRecord {
            size: r.u64()?,
            mtime_ns: r.u64()? as i64,
            ctime_ns: r.u64()? as i64,
            ino: r.u64()?,
            dev: r.u64()?,
        };
        let recorded_at_ns = r.u64()? as i64;
        let count = r.u32()?;
        let mut entries =
            FxHashMap::with_capacity_and_hasher(count.min(1 << 16) as usize, Default::default());
        for _ in 0..count {
            let kind = match r.take(1)?[0] {
                1 => Kind::File,
                2 => Kind::Symlink,
                _ => Kind::Other,
            };
            let name = std::str::from_utf8(r.bytes()?).ok()?.to_owned();
            entries.insert(name, kind);
        }
        out.insert(
            dir,
            Listing {
                stamp,
                recorded_at_ns,
                entries,
            },
        );
    }
    r.0.is_empty().then_some(out)
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
    fn listings_round_trip_and_garbage_is_rejected() {
        let mut listings = FxHashMap::default();
        listings.insert(
            "/a/b".to_owned(),
            Listing {
                stamp: StatRecord {
                    size: 1,
                    mtime_ns: -2,
                    ctime_ns: 3,
                    ino: 4,
                    dev: 5,
                },
                recorded_at_ns: 6,
                entries: [
                    ("x.js".to_owned(), Kind::File),
                    ("l".to_owned(), Kind::Symlink),
                ]
                .into_iter()
                .collect(),
            },
        );
        let bytes = encode_listings(&listings);
        let back = decode_listings(&bytes).unwrap();
        assert_eq!(back["/a/b"].entries, listings["/a/b"].entries);
        assert_eq!(back["/a/b"].stamp, listings["/a/b"].stamp);
        for cut in 0..bytes.len() {
            assert!(decode_listings(&bytes[..cut]).is_none());
        }
    }
}
