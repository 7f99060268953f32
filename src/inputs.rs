//! Gathering a module's inputs from its entry files and its source map.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The files a compiled module depends on: `entry_paths` plus every file named in the source
/// map's `sources` that is a regular file, resolved against `cwd` and deduplicated (sorted).
/// Paths are made absolute but not canonicalised: a symlink on the way stays in the path, so
/// switching it to another target is seen as a change.
///
/// Source map entries that are not files (`webpack://…`, `<anonymous>`, inlined virtual
/// modules) or that do not exist are skipped; an unparsable source map contributes nothing.
/// A source map may omit files a bundler inlined completely, so a host with a bundler should
/// add the bundler's own module graph to the inputs.
pub fn collect_inputs<P: AsRef<Path>>(
    entry_paths: &[P],
    source_map_json: Option<&str>,
    cwd: &Path,
) -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    for entry in entry_paths {
        let path = crate::freshness::recorded_path(&cwd.join(entry.as_ref()));
        if path.is_file() {
            found.insert(path);
        }
    }
    if let Some(json) = source_map_json {
        found.extend(source_map_files(json, cwd));
    }
    found.into_iter().collect()
}

/// The files a source map's `sources` name (resolved against `base`, with `sourceRoot`
/// applied; a file named twice is listed twice, callers keep one), each a regular file.
/// Sources that are not files (`webpack://…`, `<anonymous>`, virtual modules) or do not exist
/// are skipped; an unparsable map names none.
pub(crate) fn source_map_files(json: &str, base: &Path) -> Vec<PathBuf> {
    let paths = |map: &sourcemap::SourceMap| {
        files_of_map(map, base)
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    };
    let map = guarded(|| {
        let map = sourcemap::decode_slice(json.as_bytes()).map_err(|e| e.to_string())?;
        regular(map).map(|map| paths(&map))
    });
    map.unwrap_or_else(|why| {
        log::debug!("bytecode-pack: ignoring a source map: {why}");
        Vec::new()
    })
}

/// `work` on an untrusted map, a panic in the map crate (an overflow in a debug build) made an
/// error: a map that cannot be read is not used, it never fails the caller.
pub(crate) fn guarded<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err("the map could not be read".to_owned()))
}

/// The map as a regular one: an index map flattened, a Hermes map without its extensions.
pub(crate) fn regular(map: sourcemap::DecodedMap) -> Result<sourcemap::SourceMap, String> {
    match map {
        sourcemap::DecodedMap::Regular(map) => Ok(map),
        sourcemap::DecodedMap::Index(index) => {
            index.flatten().map_err(|e| format!("index map: {e}"))
        }
        sourcemap::DecodedMap::Hermes(hermes) => Ok((*hermes).clone()),
    }
}

/// [`source_map_files`] of a regular map already parsed, each with its `sourcesContent` where
/// the map has it (what the bundler read), borrowed from the map.
pub(crate) fn files_of_map<'m>(
    map: &'m sourcemap::SourceMap,
    base: &Path,
) -> Vec<(PathBuf, Option<&'m str>)> {
    let mut files = Vec::new();
    for idx in 0..map.get_source_count() {
        let Some(source) = map.get_source(idx) else {
            continue;
        };
        let source = source.strip_prefix("file://").unwrap_or(source);
        if source.contains("://") || source.starts_with('<') || source.is_empty() {
            continue;
        }
        let path = crate::freshness::recorded_path(&base.join(source));
        if path.is_file() {
            files.push((path, map.get_source_contents(idx)));
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_entries_and_existing_sources_once() {
        let dir = crate::private_tempdir();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        for f in ["entry.js", "src/a.js", "src/b.js"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let map = r#"{"version":3,"sources":["src/a.js","./src/b.js","src/missing.js","webpack://x/y.js","entry.js"],"names":[],"mappings":""}"#;
        let got = collect_inputs(&[root.join("entry.js")], Some(map), &root);
        assert_eq!(
            got,
            vec![
                root.join("entry.js"),
                root.join("src/a.js"),
                root.join("src/b.js")
            ]
        );
        assert_eq!(
            collect_inputs(&[root.join("entry.js")], Some("not json"), &root),
            vec![root.join("entry.js")]
        );
    }

    /// An index map whose section offset overflows the map crate's arithmetic (a panic in a
    /// debug build) names no files, and never takes the host down.
    #[test]
    fn a_map_the_map_crate_panics_on_names_nothing() {
        let dir = crate::private_tempdir();
        let root = dir.path().canonicalize().unwrap();
        for file in ["a.js", "entry.js"] {
            std::fs::write(root.join(file), "x").unwrap();
        }
        let map = r#"{"version":3,"sections":[{"offset":{"line":0,"column":4294967295},"map":{"version":3,"sources":["a.js"],"names":[],"mappings":"CAAA"}}]}"#;
        let entry = root.join("entry.js");
        let got = collect_inputs(std::slice::from_ref(&entry), Some(map), &root);
        assert!(
            got == [entry.clone()] || got == [entry, root.join("a.js")],
            "{got:?}"
        );
    }
}
