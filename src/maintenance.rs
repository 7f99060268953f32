//! Housekeeping across ABI tags: caches left under a root by other QuickJS or crate versions.
//!
//! Pruning deletes files, so it deletes only what it can prove this crate wrote: a directory
//! under the root qualifies only if it is a real directory owned by this user, is proven a
//! cache (by the marker every writer leaves, [`MARKER_FILE`], whose content names the
//! directory's ABI tag, or, for caches older than the marker, by an index or pack carrying
//! this crate's magic), and holds nothing but files with this crate's names: headers with this
//! crate's magic numbers, or empty where a crashed writer can leave them empty (a temp file, a
//! pack, a marker cut short). Anything else is skipped and reported, never touched; a
//! qualifying directory is emptied file by file and removed with `rmdir`, never recursively.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::abi::abi_tag;
use crate::error::{Error, Result};
use crate::files::{CacheFile, INDEX_FILE, LOCK_FILE, MARKER_FILE, Verdict};
use crate::fsys;

/// A cache directory under a root that belongs to another build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtherAbi {
    /// The directory's name: that build's ABI tag.
    pub abi_tag: String,
    /// The directory.
    pub path: PathBuf,
    /// Bytes of the files in it.
    pub bytes: u64,
    /// When it was last written to: the newest mtime of the directory and its files.
    pub last_used: SystemTime,
}

/// A directory under the root that looks like a cache by its name but is not one this crate
/// can prove it wrote; never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The directory.
    pub path: PathBuf,
    /// Why it was left alone.
    pub reason: String,
}

/// What [`prune_other_abis`] removed, and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// The directories removed.
    pub removed: Vec<OtherAbi>,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Directories named like a cache that were not removed, and why.
    pub skipped: Vec<Skipped>,
}

/// Whether a directory name looks like an ABI tag of this crate (`bp<version>-…`): only a
/// pre-filter, the proof is [`inspect`].
fn is_abi_dir_name(name: &str) -> bool {
    name.strip_prefix("bp")
        .and_then(|rest| rest.split('-').next())
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// One file of a candidate cache directory.
struct CacheDirFile {
    path: PathBuf,
    bytes: u64,
}

/// Proves that `dir` (named `name`) is a cache directory this crate wrote and lists its files,
/// or says why it is not.
fn inspect(dir: &Path, name: &str) -> std::result::Result<(OtherAbi, Vec<CacheDirFile>), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err(format!("is {}", fsys::file_kind(&meta)));
    }
    if let Some(problem) = crate::sys::check_owner_and_mode(&meta) {
        return Err(problem);
    }
    let mut last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let mut files = Vec::new();
    let mut marked = false;
    let mut has_index_or_pack = false;
    for entry in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err("holds a file whose name bytecode-pack never writes".into());
        };
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{file_name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "holds {file_name}, which is {}",
                fsys::file_kind(&meta)
            ));
        }
        let Some(kind) = CacheFile::of(file_name) else {
            return Err(format!(
                "holds {file_name}, a name bytecode-pack never writes"
            ));
        };
        match kind.judge(&path, name) {
            // An empty pack or a marker cut short is no proof, but no disproof either.
            Verdict::Proof if kind == CacheFile::Marker => marked = true,
            Verdict::Proof => has_index_or_pack = true,
            Verdict::Ours => {}
            Verdict::Foreign if kind == CacheFile::Marker => {
                return Err(format!(
                    "{MARKER_FILE} was not written by bytecode-pack for {name}"
                ));
            }
            Verdict::Foreign if kind == CacheFile::Lock => {
                return Err(format!("{LOCK_FILE} is not empty"));
            }
            Verdict::Foreign => {
                return Err(format!("{file_name} does not carry bytecode-pack's header"));
            }
        }
        last_used = last_used.max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        files.push(CacheDirFile {
            path,
            bytes: meta.len(),
        });
    }
    // Caches written before the marker existed are recognised by their headers alone.
    if !marked && !has_index_or_pack {
        return Err(format!(
            "has no {MARKER_FILE}, index or pack: not a bytecode-pack cache"
        ));
    }
    let other = OtherAbi {
        abi_tag: name.to_owned(),
        path: dir.to_path_buf(),
        // Saturating: sparse files can claim any size.
        bytes: files.iter().map(|f| f.bytes).fold(0, u64::saturating_add),
        last_used,
    };
    Ok((other, files))
}

/// Every directory under `root` named like another build's cache, proven or not.
fn candidates(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name != abi_tag() && is_abi_dir_name(&name) {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The caches under `root` that belong to other ABI tags than this build's: only directories
/// proven to be caches this crate wrote (see the module docs).
pub fn other_abis(root: &Path) -> Result<Vec<OtherAbi>> {
    Ok(candidates(root)?
        .into_iter()
        .filter_map(|(name, path)| inspect(&path, &name).ok().map(|(other, _)| other))
        .collect())
}

/// Removes the caches of other ABI tags under `root` that nobody has written to for at least
/// `unused_for`. This build's cache is never touched, nor is any directory that is not
/// provably a cache this crate wrote (reported in [`PruneReport::skipped`]), nor one whose
/// writer lock is held right now. The root must belong to this user and not be writable by
/// group or others (as [`crate::Cache::open`] requires): otherwise another user could swap a
/// proven cache for a link to their choice of directory between the proof and the removals.
pub fn prune_other_abis(root: &Path, unused_for: Duration) -> Result<PruneReport> {
    match crate::fsys::require_private_dir(root, true) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PruneReport::default());
        }
        checked => checked?,
    }
    let now = SystemTime::now();
    let mut report = PruneReport::default();
    for (name, dir) in candidates(root)? {
        let skip = |reason: String| Skipped {
            path: dir.clone(),
            reason,
        };
        let other = match inspect(&dir, &name) {
            Ok((other, _)) => other,
            Err(reason) => {
                report.skipped.push(skip(reason));
                continue;
            }
        };
        let idle = now.duration_since(other.last_used).unwrap_or_default();
        if idle < unused_for {
            continue;
        }
        match remove_cache_dir(&dir, &name, other.last_used) {
            Ok(removed) => {
                report.bytes_freed = report.bytes_freed.saturating_add(removed.bytes);
                report.removed.push(removed);
            }
            Err(reason) => report.skipped.push(skip(reason)),
        }
    }
    Ok(report)
}

/// Empties and removes a cache directory found unused since `last_used`: under its own writer
/// lock (skipped if a writer of that build holds it, or if the lock cannot be opened for
/// another reason than its absence), proven and listed again under that lock (skipped if it
/// was written to since), index first so a reader of that build sees an empty cache, marker
/// last, then `rmdir`, which fails rather than delete anything that appeared meanwhile.
fn remove_cache_dir(
    dir: &Path,
    name: &str,
    last_used: SystemTime,
) -> std::result::Result<OtherAbi, String> {
    let lock_path = dir.join(LOCK_FILE);
    let _lock = match fsys::open_write(&lock_path, false) {
        Ok(file) => match file.try_lock() {
            // Still the file linked there (another pruner may have removed it meanwhile, and
            // a writer of that build created another).
            Ok(()) => match fsys::replaced_at(&file, &lock_path, false) {
                Ok(None) => Some(file),
                _ => return Err("its writer lock was replaced meanwhile".into()),
            },
            Err(_) => return Err("its writer lock is held: in use".into()),
        },
        // No writer of that build has written since the lock file went (or ever).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot take its writer lock: {e}")),
    };
    let (other, mut files) = inspect(dir, name)?;
    if other.last_used > last_used {
        return Err("written to while it was being pruned".into());
    }
    let rank = |f: &CacheDirFile| match f.path.file_name().and_then(|n| n.to_str()) {
        Some(INDEX_FILE) => 0,
        Some(MARKER_FILE) => 3,
        Some(LOCK_FILE) => 2,
        _ => 1,
    };
    files.sort_by_key(rank);
    for file in &files {
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", file.path.display())),
        }
    }
    fs::remove_dir(dir).map_err(|e| format!("not empty after removing its files: {e}"))?;
    Ok(other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::marker_content;

    fn cache_like(dir: &Path, tag: &str) {
        crate::sys::create_private_dir(dir).unwrap();
        fs::write(dir.join(MARKER_FILE), marker_content(tag)).unwrap();
        let mut index = crate::format::INDEX_MAGIC.to_vec();
        index.extend_from_slice(&[0; 100]);
        fs::write(dir.join("index"), index).unwrap();
    }

    fn age(path: &Path, by: Duration) {
        let t = SystemTime::now() - by;
        for entry in fs::read_dir(path).unwrap() {
            fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn only_stale_dirs_of_other_tags_are_pruned() {
        let tmp = crate::private_tempdir();
        let root = tmp.path();
        let ours = root.join(abi_tag());
        let old_tag = "bp0-quickjs-ng0.1.0-x86_64-le-64";
        let old = root.join(old_tag);
        let recent_tag = "bp1-quickjs-ng9.9.9-x86_64-le-64";
        let recent = root.join(recent_tag);
        let unrelated = root.join("notes");
        cache_like(&ours, abi_tag());
        cache_like(&old, old_tag);
        cache_like(&recent, recent_tag);
        fs::create_dir(&unrelated).unwrap();
        fs::write(unrelated.join("index"), b"12345").unwrap();
        for d in [&ours, &old, &unrelated] {
            age(d, Duration::from_secs(40 * 24 * 3600));
        }
        let listed: Vec<String> = other_abis(root)
            .unwrap()
            .into_iter()
            .map(|o| o.abi_tag)
            .collect();
        assert_eq!(listed, [old_tag, recent_tag]);
        let report = prune_other_abis(root, crate::DEFAULT_PRUNE_AGE).unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!(
            report.bytes_freed,
            (marker_content(old_tag).len() + 108) as u64
        );
        assert!(!old.exists() && recent.exists() && ours.exists() && unrelated.exists());
    }

    #[test]
    fn a_cache_written_to_after_it_was_found_idle_is_kept() {
        let tmp = crate::private_tempdir();
        let tag = "bp0-quickjs-ng0.1.0-x86_64-le-64";
        let dir = tmp.path().join(tag);
        cache_like(&dir, tag);
        age(&dir, Duration::from_secs(40 * 24 * 3600));
        // Found idle as of 50 days ago; its files say 40: a writer came in between.
        let found_idle_since = SystemTime::now() - Duration::from_secs(50 * 24 * 3600);
        let refused = remove_cache_dir(&dir, tag, found_idle_since).unwrap_err();
        assert!(refused.contains("written to"), "{refused}");
        assert!(dir.join("index").exists() && dir.join(MARKER_FILE).exists());
        // Found idle as of what its files say: removed, whole.
        let (other, _) = inspect(&dir, tag).unwrap();
        let removed = remove_cache_dir(&dir, tag, other.last_used).unwrap();
        assert_eq!(removed.bytes, other.bytes);
        assert!(!dir.exists());
    }

    #[test]
    fn an_empty_cache_dir_is_as_old_as_the_dir_not_the_epoch() {
        let tmp = crate::private_tempdir();
        let tag = "bp0-empty";
        let dir = tmp.path().join(tag);
        crate::sys::create_private_dir(&dir).unwrap();
        fs::write(dir.join(MARKER_FILE), marker_content(tag)).unwrap();
        let listed = other_abis(tmp.path()).unwrap();
        let idle = SystemTime::now()
            .duration_since(listed[0].last_used)
            .unwrap();
        assert!(idle < Duration::from_secs(3600), "{idle:?}");
        let report = prune_other_abis(tmp.path(), Duration::from_secs(3600)).unwrap();
        assert!(report.removed.is_empty() && dir.exists());
    }
}
