//! Stack traces in the user's files: frames of modules that carry a source map name the
//! original file, line and column, as `node --enable-source-maps` does.
//!
//! Each runtime keeps one [`SourceMaps`]: for each module with a map, where its map is (the
//! cache entry it was loaded from, checked by its stored checksum, or the map a first start
//! found, read and made ready when first needed), and the maps parsed so far. Loading a module
//! only registers it; a map is read from the cache (or made) and parsed the first time a
//! stack passes through the module, and parsed maps are kept for the runtime's life within
//! [`MOST_PARSED_BYTES`].
//!
//! The first module with a map that a context loads makes the context map its stacks (see
//! `glue`): reading an error's `stack` maps the frames QuickJS formatted, once, so nothing
//! runs when an error is made (one made at a stack overflow keeps its stack). A host's own
//! `Error.prepareStackTrace` (quickjs-ng's V8-style hook), set before or after, keeps
//! working: it is called with the mapped call sites, and reading the property gives back the
//! host's function.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rquickjs::Ctx;
use rustc_hash::{FxHashMap, FxHashSet};
use sourcemap::SourceMap;
use xxhash_rust::xxh3::xxh3_128;

use super::maps::PendingMap;
use crate::cache::Cache;
use crate::key::Key;

/// Bytes of maps kept parsed per runtime (counted as their JSON's length); past it the
/// longest unused is dropped, and parsed again if a stack needs it.
pub(crate) const MOST_PARSED_BYTES: usize = 64 << 20;

/// Where a module's map is.
pub(crate) enum MapSource {
    /// In the cache entry under `key`, as the module's source map, stored with `checksum`
    /// (its segment's): a different map under that key since (the module recompiled by
    /// another process) is not this module's, and is not used. For a module whose map came
    /// from a map file, `file`: the map file is read again when the map is first needed, and
    /// used instead if it changed since the entry was stored.
    Stored {
        cache: Cache,
        key: Key,
        checksum: [u8; 16],
        file: Option<MapFile>,
    },
    /// In memory: a map this start found or made, made ready when first needed (it is
    /// stored at the start's end).
    Held(Arc<PendingMap>),
}

/// A module [`super::PackLoader`] loaded: its file, and the project root its map's sources
/// are kept relative to.
pub(crate) struct MapFile {
    pub module: PathBuf,
    pub root: Arc<Path>,
}

impl MapSource {
    /// The map of a cache hit, if it has one; `file` for a module [`super::PackLoader`]
    /// loaded.
    pub(crate) fn of_hit(
        cache: &Cache,
        key: Key,
        hit: &crate::Hit,
        file: Option<MapFile>,
    ) -> Option<MapSource> {
        // Known from the record: a warm load neither reads nor hashes the map's segment (that
        // is checked when a stack needs the map).
        let checksum = hit.source_map_checksum()?;
        Some(MapSource::Stored {
            cache: cache.clone(),
            key,
            checksum,
            file,
        })
    }
}

/// A runtime's source maps.
///
/// Every caller runs inside a context of the runtime (a load, a stack read), holding the
/// runtime's own lock, so this one is never contended: it makes the maps `Sync`, and work
/// done under it (a map read from the cache or a file, a parse) holds up nothing that could
/// run meanwhile.
#[derive(Default)]
pub(crate) struct SourceMaps {
    state: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    /// By the XXH3-128 of the module's name (registering a module allocates nothing).
    modules: FxHashMap<u128, MapSource>,
    parsed: FxHashMap<String, Parsed>,
    /// Parsed modules, least recently used first.
    order: VecDeque<String>,
    parsed_bytes: usize,
    /// Modules whose map was found unusable (warned once, never tried again).
    unusable: FxHashSet<String>,
}

struct Parsed {
    map: Arc<SourceMap>,
    bytes: usize,
}

/// What the runtime keeps: its [`SourceMaps`].
pub(crate) struct RuntimeMaps(pub(crate) Arc<SourceMaps>);

impl SourceMaps {
    /// Where `line` and `col` (1-based, as QuickJS counts them) of module `module` come from:
    /// the original file (relative to the project root), line and column (1-based). `None`
    /// where the module has no usable map or the position maps to no source: no mapping on
    /// its generated line (the nearest one before, on an earlier line, is another line's
    /// code), or a source that names no file (empty, or with control characters, which would
    /// write lines of their own into the stack).
    pub(crate) fn original(&self, module: &str, line: u32, col: u32) -> Option<(String, u32, u32)> {
        let map = self.parsed(module)?;
        // A map is untrusted input to a crate that does arithmetic on its numbers: a panic in
        // it (an overflow in a debug build) is a position not mapped, never a failed stack.
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let line = line.checked_sub(1)?;
            let token = map.lookup_token(line, col.saturating_sub(1))?;
            let source = token.get_source()?;
            if token.get_dst_line() != line || !super::maps::names_a_file(source) {
                return None;
            }
            Some((
                source.to_owned(),
                token.get_src_line().checked_add(1)?,
                token.get_src_col().checked_add(1)?,
            ))
        }));
        found.ok().flatten()
    }

    /// Module `module`'s map, parsed (once, then kept within the budget).
    fn parsed(&self, module: &str) -> Option<Arc<SourceMap>> {
        let named = xxh3_128(module.as_bytes());
        // A map this start read is made ready outside the lock, as a warning is logged.
        let held = match self.state.lock().modules.get(&named) {
            Some(MapSource::Held(map)) => Some(Arc::clone(map)),
            _ => None,
        };
        if let Some(map) = held {
            map.json();
        }
        let mut state = self.state.lock();
        if let Some(parsed) = state.parsed.get(module) {
            let map = Arc::clone(&parsed.map);
            state.touch(module);
            return Some(map);
        }
        if state.unusable.contains(module) {
            return None;
        }
        // Why there is none (`None`: warned already, when a held map was made).
        let json = match state.modules.get(&named)? {
            MapSource::Held(map) => map.json().cloned().ok_or(None),
            MapSource::Stored {
                cache,
                key,
                checksum,
                file,
            } => stored_map(cache, key, *checksum, file.as_ref()).map_err(Some),
        };
        let parsed = json.and_then(|json| {
            let parse = || SourceMap::from_slice(json.as_bytes());
            let map = std::panic::catch_unwind(parse)
                .map_err(|_| Some("the parser failed on it".to_owned()))?
                .map_err(|e| Some(e.to_string()))?;
            // What it takes in memory: its tokens (28 bytes each) and its strings.
            let bytes = map.get_token_count() as usize * 28 + json.len();
            Ok((Arc::new(map), bytes))
        });
        match parsed {
            Ok((map, bytes)) => {
                state.keep(module, Arc::clone(&map), bytes);
                Some(map)
            }
            Err(why) => {
                state.unusable.insert(module.to_owned());
                drop(state);
                if let Some(why) = why {
                    log::warn!(
                        "bytecode-pack: {module}: source map not used ({why}); its stack \
                         frames keep their generated positions"
                    );
                }
                None
            }
        }
    }

    /// Forgets what is known of module `name`'s map: it was loaded again (another context,
    /// a rebuild), with `source` as its map now, or none.
    fn replace(&self, name: &str, source: Option<MapSource>) {
        let mut state = self.state.lock();
        let named = xxh3_128(name.as_bytes());
        match source {
            Some(source) => state.modules.insert(named, source),
            None => state.modules.remove(&named),
        };
        if let Some(dropped) = state.parsed.remove(name) {
            state.parsed_bytes -= dropped.bytes;
            state.order.retain(|m| m != name);
        }
        state.unusable.remove(name);
    }
}

/// A stored map's JSON, if the entry still holds the one registered; for a module loaded
/// from a file whose map file changed since, that file's map.
fn stored_map(
    cache: &Cache,
    key: &Key,
    checksum: [u8; 16],
    file: Option<&MapFile>,
) -> Result<Arc<str>, String> {
    let hit = super::maps::entry_holding_map(cache, key, checksum).map_err(str::to_owned)?;
    let json = hit
        .source_map()
        .ok_or_else(|| "its stored map is damaged or not UTF-8".to_owned())?;
    let Some(file) = file else {
        return Ok(json.into());
    };
    // The record of the map file it came from: damaged, it cannot say whether that file
    // changed since.
    let record = hit
        .stored_aux()
        .map_err(|()| "the record of its map file is damaged".to_owned())?;
    // None for an inline map, which the module's content covers: the stored one. A map file
    // is used over the stored map only while the module's own file holds what its bytecode
    // was compiled from: a module rebuilt after it loaded (its file and its map both new)
    // runs the old code, which the new map does not describe.
    if record.is_none() || !still_compiled_from(&hit, &file.module) {
        return Ok(json.into());
    }
    super::maps::current(&file.module, json, record, &file.root).map(Arc::from)
}

/// Whether the file `module` holds the content `hit`'s bytecode was compiled from (its one
/// recorded input).
fn still_compiled_from(hit: &crate::Hit, module: &Path) -> bool {
    let mut recorded = hit.recorded_input_hashes();
    match (recorded.next(), recorded.next()) {
        (Some(hash), None) => crate::freshness::file_holds(module, hash),
        _ => false,
    }
}

impl Maps {
    fn touch(&mut self, module: &str) {
        if let Some(at) = self.order.iter().position(|m| m == module) {
            let module = self.order.remove(at).expect("position is in range");
            self.order.push_back(module);
        }
    }

    fn keep(&mut self, module: &str, map: Arc<SourceMap>, bytes: usize) {
        while self.parsed_bytes + bytes > MOST_PARSED_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(dropped) = self.parsed.remove(&oldest) {
                self.parsed_bytes -= dropped.bytes;
            }
        }
        self.parsed_bytes += bytes;
        self.order.push_back(module.to_owned());
        self.parsed.insert(module.to_owned(), Parsed { map, bytes });
    }
}

/// Registers module `name`'s map (`source`) with the runtime of `ctx`, and makes the context
/// map its stacks ([`super::glue::install_once`]: only an interrupt is returned); or, for a
/// module loaded without a map, forgets one registered for that name before (another
/// context, an earlier version). `cache`, if given, keeps the mapping script's bytecode.
pub(crate) fn register(
    ctx: &Ctx<'_>,
    name: &str,
    source: Option<MapSource>,
    cache: Option<&Cache>,
) -> rquickjs::Result<()> {
    let Some(source) = source else {
        forget(ctx, name);
        return Ok(());
    };
    let Some(maps) = super::engine::runtime_maps(ctx) else {
        log::warn!(
            "bytecode-pack: {name}: cannot keep its source map (the runtime's userdata is busy)"
        );
        return Ok(());
    };
    maps.replace(name, Some(source));
    super::glue::install_once(ctx, &maps, cache)
}

/// Forgets the map registered for module `name` (see [`register`]).
fn forget(ctx: &Ctx<'_>, name: &str) {
    if let Some(maps) = super::engine::existing_runtime_maps(ctx) {
        maps.replace(name, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A position maps only through a mapping on its own generated line, and only to a source
    /// that names a file: not an empty one, nor one whose control characters would write lines
    /// of their own into the stack.
    #[test]
    fn positions_map_only_on_their_line_and_only_to_plain_sources() {
        let json = r#"{"version":3,"sources":["a.ts","b.ts\n    at evil (/etc/x.js:1:1)",""],"names":[],"mappings":"ACAA;ACAA;AFAA"}"#;
        let maps = SourceMaps::default();
        maps.replace(
            "m",
            Some(MapSource::Held(Arc::new(PendingMap::ready(json.into())))),
        );
        assert_eq!(maps.original("m", 1, 1), None, "a source with a newline");
        assert_eq!(maps.original("m", 2, 1), None, "an empty source");
        assert_eq!(maps.original("m", 3, 1), Some(("a.ts".to_owned(), 1, 1)));
        assert_eq!(maps.original("m", 5, 1), None, "line 5 has no mapping");
    }

    /// Parsed maps stay within their budget: the longest unused is dropped first.
    #[test]
    fn parsed_maps_stay_within_their_budget() {
        let json = br#"{"version":3,"sources":["a.ts"],"names":[],"mappings":"AAAA"}"#;
        let map = Arc::new(SourceMap::from_slice(json).unwrap());
        let mut maps = Maps::default();
        let third = MOST_PARSED_BYTES / 3;
        for module in ["a", "b", "c"] {
            maps.keep(module, Arc::clone(&map), third);
        }
        maps.touch("a");
        maps.keep("d", Arc::clone(&map), third);
        let kept = |m: &str| maps.parsed.contains_key(m);
        assert!(kept("a") && !kept("b") && kept("c") && kept("d"));
        assert!(maps.parsed_bytes <= MOST_PARSED_BYTES);
        // One map over the whole budget is kept alone (a stack needs it).
        maps.keep("huge", map, MOST_PARSED_BYTES + 1);
        assert_eq!(maps.parsed.len(), 1);
        assert_eq!(maps.order.len(), 1);
    }
}
