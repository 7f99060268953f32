//! The names a writer picks and the leftovers it sweeps: pack generations, base ids, temp
//! files of crashed writers.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{CacheFile, Verdict, parse_base_name, parse_pack_name};
use crate::fsys;

/// The generation after `generation`; an error at the end of the range (only a forged index
/// gets there).
pub(crate) fn next_generation_after(dir: &Path, generation: u64) -> Result<u64> {
    generation.checked_add(1).ok_or_else(|| Error::Insecure {
        path: dir.to_path_buf(),
        problem: "pack generations exhausted".into(),
    })
}

/// The highest pack generation and base id present (0 if none), so a rebuilt cache never
/// reuses the name of a file some reader may still map.
pub(crate) fn highest_names(dir: &Path) -> Result<(u64, u64)> {
    let (mut generation, mut base) = (0, 0);
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(g) = parse_pack_name(&name) {
            generation = generation.max(g);
        }
        if let Some(id) = parse_base_name(&name) {
            base = base.max(id);
        }
    }
    Ok((generation, base))
}

/// Removes leftovers under the lock: temp files of crashed writers, packs of other
/// generations and bases the published index does not name. Mappings of removed files stay
/// valid for the readers that hold them. Failures are logged, not returned: a leftover only
/// costs space.
pub(crate) fn sweep(
    dir: &Path,
    abi_tag: &str,
    keep_generation: u64,
    keep_base: Option<u64>,
) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed: u64 = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(CacheFile::of) else {
            continue;
        };
        let leftover = match kind {
            CacheFile::Temp => true,
            CacheFile::Pack(generation) => generation != keep_generation,
            CacheFile::Base(id) => Some(id) != keep_base,
            CacheFile::Index | CacheFile::Lock | CacheFile::Marker => false,
        };
        if !leftover {
            continue;
        }
        // Only regular files: whatever else has one of our names was not written by us.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            log::warn!(
                "bytecode-pack: leaving {}: {}, not a file this cache wrote",
                entry.path().display(),
                fsys::file_kind(&meta)
            );
            continue;
        }
        if kind.judge(&entry.path(), abi_tag) == Verdict::Foreign {
            log::warn!(
                "bytecode-pack: leaving {}: it does not carry this cache's header",
                entry.path().display()
            );
            continue;
        }
        let len = meta.len();
        match std::fs::remove_file(entry.path()) {
            Ok(()) => freed = freed.saturating_add(len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "bytecode-pack: cannot remove {}: {e}",
                entry.path().display()
            ),
        }
    }
    freed
}
