//! The portable fallback (Windows and others): no owner or mode checks, no ctime or inode,
//! no non-blocking opens (no FIFOs to block on there). Not built or tested on this project's
//! machines.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::format::StatRecord;

/// Which file a snapshot was read from: without inodes, its length and mtime stand in.
pub(crate) type FileIdentity = (u64, u64, i64);

/// No limit assumed: std reaches long paths through the platform's own means (`\\?\` on
/// Windows).
#[cfg(feature = "quickjs")]
pub(crate) const LONGEST_PATH: usize = usize::MAX;

/// Unknown here, so no descriptor waits to be closed (`quickjs::closing`): elsewhere than on
/// Unix an open file blocks its renaming.
#[cfg(feature = "quickjs")]
pub(crate) fn open_files_limit() -> Option<u64> {
    None
}

/// No permission model is read here: every process asks as the same one.
#[cfg(feature = "quickjs")]
pub(crate) fn credentials() -> String {
    String::new()
}

/// No inode here: a directory has no identity that survives a move but not a copy.
#[cfg(feature = "quickjs")]
pub(crate) fn directory_inode(_meta: &fs::Metadata) -> Option<u64> {
    None
}

pub(crate) fn file_identity(meta: &fs::Metadata) -> FileIdentity {
    let mtime = meta.modified().map(super::epoch_nanos).unwrap_or(0);
    (meta.len(), 0, mtime)
}

pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Whether this process may search `dir`: not known here, so no.
#[cfg(feature = "quickjs")]
pub(crate) fn may_search(_dir: &Path) -> bool {
    false
}

/// Whether this process may write in `dir`: not if it is marked read-only.
pub(crate) fn may_write_in(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly())
}

pub(crate) fn check_owner_and_mode(_meta: &fs::Metadata) -> Option<String> {
    None
}

pub(crate) fn open_cache_options() -> OpenOptions {
    OpenOptions::new()
}

pub(crate) fn open_for_reading(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new().read(true).open(path)
}

/// Not offered here (a final symlink would be followed): the resolver probes instead.
#[cfg(feature = "quickjs")]
pub(crate) fn open_for_probe(_path: &Path) -> io::Result<fs::File> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn open_error_kind(_e: &io::Error) -> Option<&'static str> {
    None
}

pub(crate) fn special_file_kind(_t: &fs::FileType) -> Option<&'static str> {
    None
}

pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Always `true`: `std` offers no file identity here, so a lock file removed while a writer
/// waited on it is not noticed on these platforms.
pub(crate) fn same_file(_a: &fs::File, _b: &fs::File) -> io::Result<bool> {
    Ok(true)
}

pub(crate) fn path_from_bytes(bytes: &[u8]) -> Option<&Path> {
    std::str::from_utf8(bytes).ok().map(Path::new)
}

/// The relative path `relative` under `root`.
pub(crate) fn under_root(root: &Path, relative: &Path) -> PathBuf {
    root.join(relative)
}

pub(crate) fn stat_record(meta: &fs::Metadata) -> StatRecord {
    let mtime_ns = meta.modified().map(super::epoch_nanos).unwrap_or(0);
    StatRecord {
        size: meta.len(),
        mtime_ns,
        // No ctime or inode here: the mtime stands in, and the racy rule still applies.
        ctime_ns: mtime_ns,
        ino: 0,
        dev: 0,
    }
}
