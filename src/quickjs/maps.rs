//! A module's source map, found and made ready to store: from the `//# sourceMappingURL=`
//! comment that ends its source (a `.map` file beside it, or an inline `data:` URL), or
//! given by a host's build; its `sources` rewritten relative to the project root and its
//! `sourcesContent` dropped, so that a stored map names the user's files wherever the tree
//! lies and costs only its mappings.
//!
//! A map that cannot be used (missing, malformed, truncated, too large, a special file, or
//! naming sources outside the project) is left out with one warning: the module loads and its
//! frames keep their generated positions.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use sourcemap::DecodedMap;
use xxhash_rust::xxh3::xxh3_128;

use crate::freshness::Input;
use crate::inputs::{guarded, regular};

/// The largest source map read or kept, 16 MiB: far past what a module's map takes. A larger
/// one is refused before it is read.
pub(crate) const MAX_MAP_LEN: u64 = 16 << 20;

/// What a module's entry records of the map file its map came from (as its sidecar): this
/// tag, the URL, and the XXH3-128 of the file as read.
const FILE_RECORD: &str = "bytecode-pack map file 1";

/// A module's map as its source names it: an inline `data:` URL, or a map file beside it,
/// read (once) when the map is made ready to store or when its record is asked for. Nothing
/// is read or parsed when it is found: a first start runs its application first, and a copy
/// of a tree whose entry already holds the map only reads the file, to compare its record
/// (and the module's file, to check it still holds what was compiled).
pub(crate) struct FoundMap {
    /// The module's directory, which a map file's URL (and an inline map's sources) are
    /// relative to.
    dir: PathBuf,
    url: MapUrl,
}

/// Where a module's map is.
enum MapUrl {
    /// A `data:` URL: the module's own content, which its entry's hash covers.
    Inline(String),
    /// A map file, by its URL, and the file once read (`Err`: it could not be, and that was
    /// warned about). Read only while the module's file (`module`) still holds what was
    /// compiled (`compiled`, its hash): a rebuild since may have replaced the map too, and the
    /// new map does not describe the code that runs.
    File {
        url: String,
        module: PathBuf,
        compiled: [u8; 16],
        read: Option<Result<MapFileRead, ()>>,
    },
}

/// A map file as read: its bytes, its directory (which its sources are relative to) and the
/// record of it its entry keeps.
struct MapFileRead {
    bytes: Vec<u8>,
    base: PathBuf,
    record: String,
}

impl FoundMap {
    /// The record of the map file its entry keeps as its sidecar (`None` for an inline map,
    /// which the module's own content covers): the tag, the URL and the XXH3-128 of the file
    /// as read. `Err` (with one warning) if the file cannot be read.
    pub(crate) fn file_record(&mut self, name: &str) -> Result<Option<&str>, ()> {
        let MapUrl::File {
            url,
            module,
            compiled,
            read,
        } = &mut self.url
        else {
            return Ok(None);
        };
        let read = read.get_or_insert_with(|| {
            if !crate::freshness::file_holds(module, *compiled) {
                warn(name, "its module changed since it was compiled");
                return Err(());
            }
            let (bytes, base) = read_file(&self.dir.join(&*url)).map_err(|why| warn(name, &why))?;
            let record = format!("{FILE_RECORD}\n{url}\n{:032x}", xxh3_128(&bytes));
            Ok(MapFileRead {
                bytes,
                base,
                record,
            })
        });
        match read {
            Ok(read) => Ok(Some(&read.record)),
            Err(()) => Err(()),
        }
    }

    /// The map, ready to store: sources relative to `root`, and the record of its file.
    /// `None`, with one warning, if it cannot be read, is malformed or names sources outside
    /// the project.
    fn normalized(mut self, name: &str, root: &Path) -> Option<(String, Option<String>)> {
        let record = self.file_record(name).ok()?.map(str::to_owned);
        let (map, base) = match self.url {
            MapUrl::Inline(url) => (inline(&url), self.dir),
            MapUrl::File {
                read: Some(Ok(read)),
                ..
            } => (parse(&read.bytes), read.base),
            // Read by `file_record` above, which returned early where it could not be.
            MapUrl::File { .. } => return None,
        };
        let json = map
            .and_then(|map| guarded(|| normalized(map, &base, root, Outside::Refused)))
            .map_err(|why| warn(name, &why))
            .ok()?;
        Some((json, record))
    }
}

/// Module `name`'s map, if its `source` (read from `path`, to which a map URL is relative, and
/// compiled as the content whose hash is `compiled`) names one. `None` if it names none, or (with one warning) if the URL names no file beside
/// the module. Nothing is read yet (see [`FoundMap`]).
pub(crate) fn find(name: &str, source: &[u8], path: &Path, compiled: [u8; 16]) -> Option<FoundMap> {
    let url = mapping_url(source)?;
    let url = if url.starts_with("data:") {
        MapUrl::Inline(url.to_owned())
    } else if url.contains("://") {
        warn(name, &format!("{url}: not a file beside the module"));
        return None;
    } else {
        MapUrl::File {
            url: url.to_owned(),
            module: path.to_path_buf(),
            compiled,
            read: None,
        }
    };
    Some(FoundMap {
        dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
        url,
    })
}

/// A module's map as its entry stores it (sources relative to the root) and the record of
/// its file, made when first needed: by a stack through the module, or by the store after the
/// start's loads. A first start runs its application before it reads, parses or rewrites any
/// map.
pub(crate) struct PendingMap {
    /// What it is made from, until it is.
    found: Mutex<Option<Found>>,
    made: OnceLock<Option<(Arc<str>, Option<String>)>>,
}

/// A map found, its module's name (for the warning), the root, and, for a module whose
/// bytecode came from another tree's entry, that entry's map (see [`CopiedMap`]).
struct Found {
    map: FoundMap,
    name: Box<str>,
    root: Arc<Path>,
    copied: Option<CopiedMap>,
}

/// The map another tree's entry holds, for a module loaded from that entry: this tree's map
/// too while this tree's map file is the one it was made from. Known by the entry's key and
/// the map's checksum, and looked up again when the map is made: a map that is never made
/// (its module never stored, by a read-only cache) keeps no snapshot of the cache mapped.
pub(crate) struct CopiedMap {
    pub cache: crate::Cache,
    pub key: crate::Key,
    pub checksum: [u8; 16],
}

impl PendingMap {
    /// A map ready to store as it is (given, not read from a file).
    pub(crate) fn ready(json: Arc<str>) -> PendingMap {
        PendingMap {
            found: Mutex::new(None),
            made: OnceLock::from(Some((json, None))),
        }
    }

    /// Module `name`'s map `found`, to be made ready with its sources relative to `root`;
    /// for a module loaded from another tree's entry, `copied`, whose map it is while the map
    /// file is the one that map was made from.
    pub(crate) fn of_found(
        found: FoundMap,
        name: &str,
        root: Arc<Path>,
        copied: Option<CopiedMap>,
    ) -> PendingMap {
        let found = Found {
            map: found,
            name: name.into(),
            root,
            copied,
        };
        PendingMap {
            found: Mutex::new(Some(found)),
            made: OnceLock::new(),
        }
    }

    /// The map ready to store and the record of its file (made now if it was not); `None`
    /// if it cannot be used (warned once, when it was made).
    pub(crate) fn made(&self) -> Option<(&Arc<str>, Option<&str>)> {
        let (json, record) = self
            .made
            .get_or_init(|| self.found.lock().take()?.made())
            .as_ref()?;
        Some((json, record.as_deref()))
    }

    /// The map ready to store (see [`PendingMap::made`]).
    pub(crate) fn json(&self) -> Option<&Arc<str>> {
        self.made().map(|(json, _)| json)
    }
}

impl Found {
    /// The copied entry's map if this tree's map file is the one it was made from (an inline
    /// map is part of the content, so the same), parsing nothing; else the map found, made
    /// ready.
    fn made(mut self) -> Option<(Arc<str>, Option<String>)> {
        let copied = self
            .copied
            .as_ref()
            .and_then(|copied| entry_holding_map(&copied.cache, &copied.key, copied.checksum).ok());
        if let Some(hit) = &copied
            && let Ok(record) = self.map.file_record(&self.name)
            && Ok(record) == hit.stored_aux()
            && let Some(json) = hit.source_map()
        {
            return Some((Arc::from(json), record.map(str::to_owned)));
        }
        let (json, record) = self.map.normalized(&self.name, &self.root)?;
        Some((Arc::from(json), record))
    }
}

/// The entry under `key`, found without checking its inputs (a copy's entry has another
/// tree's), if it still holds the map stored with `checksum`; else why not.
pub(crate) fn entry_holding_map(
    cache: &crate::Cache,
    key: &crate::Key,
    checksum: [u8; 16],
) -> Result<crate::Hit, &'static str> {
    let unchecked = crate::LookupOptions::default().without_input_checks();
    let hit = cache
        .lookup_with(key, unchecked)
        .map_err(|_| "its cache entry is gone")?;
    if hit.source_map_checksum() != Some(checksum) {
        return Err("its cache entry holds another map now");
    }
    Ok(hit)
}

/// The map to use for module `name` (its file at `path`) loaded from the cache, which holds
/// `stored` and, as its sidecar, `record` (see [`FoundMap::file_record`]): the stored one while
/// the map file holds the bytes it was made from, else the file's map as it is now (an edited
/// map is used without compiling the module again). An error says why none can be used.
pub(crate) fn current(
    path: &Path,
    stored: &str,
    record: Option<&str>,
    root: &Path,
) -> Result<String, String> {
    let Some((url, hash)) = record.and_then(|r| {
        let mut fields = r.strip_prefix(FILE_RECORD)?.strip_prefix('\n')?.split('\n');
        Some((
            fields.next()?,
            u128::from_str_radix(fields.next()?, 16).ok()?,
        ))
    }) else {
        return Ok(stored.to_owned());
    };
    let (bytes, base) = read_file(&path.parent().unwrap_or(Path::new("")).join(url))?;
    if xxh3_128(&bytes) == hash {
        return Ok(stored.to_owned());
    }
    let map = parse(&bytes)?;
    guarded(|| normalized(map, &base, root, Outside::Refused))
}

/// The inputs a source map a host's build returned for module `name` names (its `sources`,
/// relative to `base`, each recorded from its `sourcesContent` where the map has it, what the
/// bundler read, else by path: see [`crate::inputs::files_of_map`]), and the map to keep: its
/// `sources` relative to `root` where they lie under it (else absolute: the host chose them).
/// Parsed once for both. No inputs and no map, with one warning, if it cannot be parsed; no
/// map, with one warning, if it cannot be kept.
pub(crate) fn of_build(
    name: &str,
    map: &str,
    base: &Path,
    root: &Path,
) -> (Vec<Input>, Option<String>) {
    // Flattened once, guarded: an index map's flattening can panic in the map crate.
    let flat = match parse(map.as_bytes()).and_then(|map| guarded(|| regular(map))) {
        Ok(flat) => flat,
        Err(why) => {
            warn(name, &why);
            return (Vec::new(), None);
        }
    };
    let inputs = crate::inputs::files_of_map(&flat, base)
        .into_iter()
        .map(|(path, content)| match content {
            Some(content) => Input::with_content(path, content.as_bytes()),
            None => Input::path(path),
        })
        .collect();
    if map.len() as u64 > MAX_MAP_LEN {
        warn(name, &format!("{} bytes, over {MAX_MAP_LEN}", map.len()));
        return (inputs, None);
    }
    let kept = guarded(|| normalized(DecodedMap::Regular(flat), base, root, Outside::Absolute))
        .map_err(|why| warn(name, &why))
        .ok();
    (inputs, kept)
}

fn warn(name: &str, why: &str) {
    log::warn!(
        "bytecode-pack: {name}: source map not used ({why}); its stack frames keep their \
         generated positions"
    );
}

/// The URL of the `sourceMappingURL` comment on the source's last non-blank line, as
/// JavaScript engines and Node read it (an earlier one, in a string or a comment, is not the
/// module's).
pub(crate) fn mapping_url(source: &[u8]) -> Option<&str> {
    let end = source.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    let start = source[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = std::str::from_utf8(&source[start..end]).ok()?;
    let url = line
        .strip_prefix("//# sourceMappingURL=")
        .or_else(|| line.strip_prefix("//@ sourceMappingURL="))?
        .trim();
    (!url.is_empty() && !url.contains(char::is_whitespace)).then_some(url)
}

/// An inline map: a `data:` URL with a JSON media type and base64.
fn inline(url: &str) -> Result<DecodedMap, String> {
    // Base64 takes 4 bytes for 3.
    if url.len() as u64 > MAX_MAP_LEN / 3 * 4 + 64 {
        return Err(format!(
            "inline map of {} bytes, over {MAX_MAP_LEN}",
            url.len()
        ));
    }
    guarded(|| sourcemap::decode_data_url(url).map_err(|e| format!("inline map: {e}")))
}

/// A map file's bytes, read bounded (a FIFO, a device or a directory is refused, never
/// read), and its directory (which its sources are relative to).
fn read_file(path: &Path) -> Result<(Vec<u8>, PathBuf), String> {
    // The URL comes from the module's content: anything but a regular file is refused before
    // it is opened (a device, named absolutely or through `..`).
    crate::fsys::refuse_unless_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (bytes, _) = crate::fsys::read_user_file(path, MAX_MAP_LEN).map_err(|e| e.to_string())?;
    Ok((bytes, path.parent().unwrap_or(Path::new("")).to_path_buf()))
}

fn parse(bytes: &[u8]) -> Result<DecodedMap, String> {
    guarded(|| sourcemap::decode_slice(bytes).map_err(|e| format!("malformed: {e}")))
}

/// What becomes of a map's source outside the project root.
#[derive(Clone, Copy)]
enum Outside {
    /// The map is not used: a module's map names files outside the tree it lies in.
    Refused,
    /// Kept as an absolute path.
    Absolute,
}

/// The map with every source resolved against `base` (and the map's `sourceRoot`) and kept
/// relative to `root`, with no `sourcesContent`, as JSON. Sources that are URLs other than
/// `file:` are kept as they are (they name no file).
fn normalized(
    map: DecodedMap,
    base: &Path,
    root: &Path,
    outside: Outside,
) -> Result<String, String> {
    let mut map = regular(map)?;
    // Written back one `;` per generated line: an index map's section offsets could make a
    // small map a huge one.
    let lines = map.tokens().map(|t| t.get_dst_line()).max().unwrap_or(0);
    if u64::from(lines) > MAX_MAP_LEN {
        return Err(format!("maps {lines} generated lines"));
    }
    // Each source with the map's `sourceRoot` applied.
    let sources: Vec<String> = (0..map.get_source_count())
        .map(|idx| map.get_source(idx).unwrap_or("").to_owned())
        .collect();
    map.set_source_root(None::<&str>);
    let root = lexical(root);
    for (idx, source) in (0..).zip(sources) {
        // A source that names no file stays one (a frame it maps is left as it is), rather
        // than becoming the directory it is resolved against.
        if !names_a_file(&source) {
            map.set_source(idx, "");
            map.set_source_contents(idx, None);
            continue;
        }
        let kept = match source.split_once("://") {
            Some(("file", path)) => relative_in(&root, &lexical(Path::new(path)), outside)?,
            Some(_) => source,
            None => relative_in(&root, &lexical(&base.join(&source)), outside)?,
        };
        map.set_source(idx, &kept);
        map.set_source_contents(idx, None);
    }
    let mut json = Vec::new();
    map.to_writer(&mut json).map_err(|e| e.to_string())?;
    String::from_utf8(json).map_err(|e| e.to_string())
}

/// Whether a map's source names a file: not empty, not a directory (an empty or null source
/// comes back from the map crate as `<sourceRoot>/` where the map has a root), and without
/// control characters (which would write lines of their own into a stack).
pub(crate) fn names_a_file(source: &str) -> bool {
    !source.is_empty() && !source.ends_with('/') && !source.chars().any(char::is_control)
}

/// `path` relative to `root` ("" for the root itself); if it lies outside, as `outside`
/// says.
fn relative_in(root: &Path, path: &Path, outside: Outside) -> Result<String, String> {
    let relative = match (path.strip_prefix(root), outside) {
        (Ok(relative), _) => relative,
        (Err(_), Outside::Absolute) => path,
        (Err(_), Outside::Refused) => {
            return Err(format!(
                "source {} lies outside the project",
                path.display()
            ));
        }
    };
    relative
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("source {} is not UTF-8", path.display()))
}

/// `path` made absolute against the working directory, with `.` and `..` applied to its
/// text (a map's sources need not exist: they are never opened).
fn lexical(path: &Path) -> PathBuf {
    let mut out = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::content_hash;
    use sourcemap::SourceMap;

    #[test]
    fn the_url_is_read_from_the_last_non_blank_line_only() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (b"x;\n//# sourceMappingURL=a.js.map", Some("a.js.map")),
            (
                b"x;\n//# sourceMappingURL=a.js.map\n\n  \n",
                Some("a.js.map"),
            ),
            (b"//@ sourceMappingURL=old.map", Some("old.map")),
            (b"//# sourceMappingURL=a.map\nx;", None),
            (b"x; //# sourceMappingURL=a.map", None),
            (b"x;\n//# sourceMappingURL=", None),
            (b"", None),
        ];
        for (source, url) in cases {
            assert_eq!(
                mapping_url(source),
                url,
                "{:?}",
                String::from_utf8_lossy(source)
            );
        }
    }

    /// A small index map whose section lies four billion lines down would be written back as
    /// gigabytes of `;`: refused instead.
    #[test]
    fn an_index_map_far_past_its_lines_is_refused() {
        let map = r#"{"version":3,"sections":[{"offset":{"line":4000000000,"column":0},
            "map":{"version":3,"sources":["a.ts"],"names":[],"mappings":"AAAA"}}]}"#;
        assert!(
            of_build("m", map, Path::new("/p"), Path::new("/p"))
                .1
                .is_none()
        );
        let near = map.replace("4000000000", "3");
        assert!(
            of_build("m", &near, Path::new("/p"), Path::new("/p"))
                .1
                .is_some()
        );
    }

    #[test]
    fn sources_are_kept_relative_to_the_root_and_outside_ones_refused() {
        let map = r#"{"version":3,"sources":["../src/a.ts","b.ts"],"sourcesContent":["x","y"],"names":[],"mappings":"AAAA"}"#;
        let json = of_build("m", map, Path::new("/p/dist"), Path::new("/p"))
            .1
            .unwrap();
        let kept = SourceMap::from_slice(json.as_bytes()).unwrap();
        let sources: Vec<_> = kept.sources().collect();
        assert_eq!(sources, ["src/a.ts", "dist/b.ts"]);
        assert!(
            kept.get_source_contents(0).is_none(),
            "sourcesContent dropped"
        );
        let outside = of_build("m", map, Path::new("/p/dist"), Path::new("/p/dist/x"))
            .1
            .unwrap();
        let kept = SourceMap::from_slice(outside.as_bytes()).unwrap();
        assert_eq!(kept.get_source(0), Some("/p/src/a.ts"), "kept absolute");
        let tmp = crate::private_tempdir();
        let inside = map_file_beside_a_module(tmp.path(), map);
        assert!(
            inside.normalized("m", tmp.path()).is_some(),
            "read and kept"
        );
        let found = map_file_beside_a_module(tmp.path(), map);
        assert!(
            found.normalized("m", &tmp.path().join("dist/x")).is_none(),
            "refused"
        );
        let (inputs, kept) = of_build("m", "{\"version\":3,", Path::new("/p"), Path::new("/p"));
        assert!(inputs.is_empty() && kept.is_none());
    }

    /// A map URL naming something other than a regular file (here a FIFO; a device alike) is
    /// refused before it is opened, since opening a device can act: watched with inotify, the
    /// FIFO is never opened.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_map_url_naming_a_fifo_is_refused_unopened() {
        use rustix::fs::{CWD, FileType, Mode, inotify, mknodat};
        let tmp = crate::private_tempdir();
        let dist = tmp.path().join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        let fifo = dist.join("m.js.map");
        mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        let watch = inotify::init(inotify::CreateFlags::NONBLOCK).unwrap();
        inotify::add_watch(&watch, &fifo, inotify::WatchFlags::OPEN).unwrap();
        let source = b"x;\n//# sourceMappingURL=m.js.map\n";
        std::fs::write(dist.join("m.js"), source).unwrap();
        let mut found = find("m", source, &dist.join("m.js"), content_hash(source)).unwrap();
        assert!(found.file_record("m").is_err(), "refused");
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        match inotify::Reader::new(&watch, &mut buf).next() {
            Err(rustix::io::Errno::AGAIN) => {}
            other => panic!("the FIFO was opened: {:?}", other.map(|e| e.events())),
        }
    }

    /// A null or empty source names no file, with a `sourceRoot` too (the map crate gives it
    /// back as the root's directory): it is stored empty, not as that directory.
    #[test]
    fn a_source_naming_no_file_is_stored_empty_whatever_the_source_root() {
        let map = r#"{"version":3,"sourceRoot":"../src","sources":[null,"","a.ts"],"names":[],"mappings":"AAAA;ACAA;ACAA"}"#;
        let (_, kept) = of_build("m", map, Path::new("/p/dist"), Path::new("/p"));
        let kept = SourceMap::from_slice(kept.unwrap().as_bytes()).unwrap();
        let sources: Vec<&str> = kept.sources().collect();
        assert_eq!(sources, ["", "", "src/a.ts"]);
    }

    /// `m.js.map` holding `map` in `root`'s `dist/`, found as the map of `dist/m.js`.
    fn map_file_beside_a_module(root: &Path, map: &str) -> FoundMap {
        let dist = root.join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(dist.join("m.js.map"), map).unwrap();
        let source = b"x;\n//# sourceMappingURL=m.js.map\n";
        std::fs::write(dist.join("m.js"), source).unwrap();
        find("m", source, &dist.join("m.js"), content_hash(source)).unwrap()
    }

    /// A map file is not read once the module's file no longer holds what was compiled (a
    /// rebuild since may have replaced the map as well): the map is none.
    #[test]
    fn a_map_file_is_not_read_for_a_module_changed_since_it_was_compiled() {
        let map = r#"{"version":3,"sources":["a.ts"],"names":[],"mappings":"AAAA"}"#;
        let tmp = crate::private_tempdir();
        let mut found = map_file_beside_a_module(tmp.path(), map);
        std::fs::write(tmp.path().join("dist/m.js"), "y;").unwrap();
        assert!(found.file_record("m").is_err());
        let mut found = map_file_beside_a_module(tmp.path(), map);
        assert!(found.file_record("m").unwrap().is_some(), "unchanged: read");
    }

    /// A found map is read and made ready when first asked for, and once. One that cannot be
    /// used is none, every time.
    #[test]
    fn a_pending_map_is_made_when_first_needed_and_once() {
        let map = r#"{"version":3,"sources":["../src/a.ts"],"sourcesContent":["x"],"names":[],"mappings":"AAAA"}"#;
        let tmp = crate::private_tempdir();
        let found = map_file_beside_a_module(tmp.path(), map);
        assert!(
            matches!(found.url, MapUrl::File { read: None, .. }),
            "not read when found"
        );
        let pending = PendingMap::of_found(found, "m", tmp.path().into(), None);
        assert!(pending.made.get().is_none(), "not made when found");
        let (json, record) = pending.made().unwrap();
        let json = Arc::clone(json);
        let kept = SourceMap::from_slice(json.as_bytes()).unwrap();
        assert_eq!(kept.get_source(0), Some("src/a.ts"));
        assert!(kept.get_source_contents(0).is_none());
        let hash = format!("{:032x}", xxh3_128(map.as_bytes()));
        assert_eq!(
            record,
            Some(format!("{FILE_RECORD}\nm.js.map\n{hash}").as_str())
        );
        assert!(Arc::ptr_eq(pending.json().unwrap(), &json), "made once");
        let outside = map_file_beside_a_module(&tmp.path().join("q"), map);
        let outside = PendingMap::of_found(outside, "m", tmp.path().join("q/dist/x").into(), None);
        assert!(outside.json().is_none() && outside.json().is_none());
        let gone = map_file_beside_a_module(&tmp.path().join("gone"), map);
        std::fs::remove_dir_all(tmp.path().join("gone")).unwrap();
        assert!(
            PendingMap::of_found(gone, "m", tmp.path().into(), None)
                .made()
                .is_none()
        );
        let ready = PendingMap::ready(Arc::clone(&json));
        assert!(Arc::ptr_eq(ready.json().unwrap(), &json));
    }

    /// One parse gives both the map's input files (those that exist, with the content the
    /// bundler read) and the map to keep.
    #[test]
    fn a_build_map_names_its_existing_sources_with_the_content_read() {
        let tmp = crate::private_tempdir();
        let (src, dist) = (tmp.path().join("src"), tmp.path().join("dist"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(src.join("a.ts"), "x").unwrap();
        let map = r#"{"version":3,"sources":["../src/a.ts","../src/gone.ts"],"sourcesContent":["read",null],"names":[],"mappings":"AAAA"}"#;
        let (inputs, kept) = of_build("m", map, &dist, tmp.path());
        let a = crate::freshness::recorded_path(&dist.join("../src/a.ts"));
        assert_eq!(inputs, [Input::with_content(a, b"read")]);
        assert!(kept.is_some());
    }
}
