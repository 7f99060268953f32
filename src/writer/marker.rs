//! The marker every writer leaves in its cache directory, which proves the directory a cache of
//! this crate (see `files` for its content, and `maintenance` for what it proves).

use std::path::Path;

use crate::files::{MARKER_FILE, MarkerText, TEMP_PREFIX, marker_content, marker_text};
use crate::fsys;

/// Leaves the marker in this build's cache directory if it is not there yet, or completes one
/// cut short (empty, or a prefix of its content): written whole to a temp file, then renamed
/// into place. A file of that name holding anything else is left alone. Called under the
/// writer lock. A failure is logged: without the marker the directory is only never pruned.
pub(crate) fn mark_cache_dir(dir: &Path, abi_tag: &str) {
    use std::io::Write;
    let path = dir.join(MARKER_FILE);
    let ours = marker_content(abi_tag);
    let replace = match std::fs::symlink_metadata(&path) {
        Err(_) => false,
        Ok(meta) if !meta.is_file() => return,
        Ok(_) => match fsys::read_prefix(&path, 512) {
            Ok(content) if marker_text(&content, abi_tag) == MarkerText::CutShort => true,
            _ => return,
        },
    };
    let written = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .and_then(|mut temp| {
            temp.write_all(ours.as_bytes())?;
            if replace {
                temp.persist(&path).map(drop).map_err(|e| e.error)
            } else {
                temp.persist_noclobber(&path).map(drop).map_err(|e| e.error)
            }
        })
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Err(e),
            // A filesystem with neither `renameat2` nor hard links (FAT) cannot rename without
            // replacing: the marker is written in place there, as a new file.
            _ if !replace => fsys::create_new(&path)
                .and_then(|mut f| f.write_all(ours.as_bytes()))
                .map_err(|_| e),
            _ => Err(e),
        });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => log::warn!("bytecode-pack: cannot write {}: {e}", path.display()),
    }
}
