//! Housekeeping across ABI tags: caches left under a root by other QuickJS or crate versions.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::abi::abi_tag;
use crate::error::{Error, Result};
use crate::snapshot::INDEX_FILE;

/// How long another ABI tag's cache must have gone unused before [`prune_other_abis`] removes
/// it by default.
pub const DEFAULT_PRUNE_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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
    /// When it was last written to (its newest file's mtime).
    pub last_used: SystemTime,
}

/// What [`prune_other_abis`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// The directories removed.
    pub removed: Vec<OtherAbi>,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Whether a directory name looks like an ABI tag of this crate (`bp<version>-…`).
fn is_abi_dir_name(name: &str) -> bool {
    name.strip_prefix("bp")
        .and_then(|rest| rest.split('-').next())
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// The caches under `root` that belong to other ABI tags than this build's.
pub fn other_abis(root: &Path) -> Result<Vec<OtherAbi>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || name == abi_tag() || !is_abi_dir_name(&name) {
            continue;
        }
        let path = entry.path();
        let (mut bytes, mut last_used) = (0, SystemTime::UNIX_EPOCH);
        let files = fs::read_dir(&path).map_err(Error::io(&path))?;
        for file in files.flatten() {
            if let Ok(meta) = file.metadata() {
                bytes += meta.len();
                last_used = last_used.max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            }
        }
        found.push(OtherAbi {
            abi_tag: name,
            path,
            bytes,
            last_used,
        });
    }
    found.sort_by(|a, b| a.abi_tag.cmp(&b.abi_tag));
    Ok(found)
}

/// Removes the caches of other ABI tags under `root` that nobody has written to for at least
/// `unused_for`. This build's cache is never touched. A cache whose index is being replaced
/// right now has a fresh mtime and is kept.
pub fn prune_other_abis(root: &Path, unused_for: Duration) -> Result<PruneReport> {
    let now = SystemTime::now();
    let mut report = PruneReport::default();
    for other in other_abis(root)? {
        let idle = now.duration_since(other.last_used).unwrap_or_default();
        if idle < unused_for {
            continue;
        }
        // Unlink the index first: a reader of that build then sees an empty cache, never a
        // half-deleted one.
        let _ = fs::remove_file(other.path.join(INDEX_FILE));
        fs::remove_dir_all(&other.path).map_err(Error::io(&other.path))?;
        report.bytes_freed += other.bytes;
        report.removed.push(other);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stale_dirs_of_other_tags_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let ours = root.join(abi_tag());
        let old = root.join("bp0-quickjs-ng0.1.0-x86_64-le-64");
        let recent = root.join("bp1-quickjs-ng9.9.9-x86_64-le-64");
        let unrelated = root.join("notes");
        for d in [&ours, &old, &recent, &unrelated] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("index"), b"12345").unwrap();
        }
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        for d in [&ours, &old, &unrelated] {
            fs::File::options()
                .write(true)
                .open(d.join("index"))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let listed: Vec<String> = other_abis(root)
            .unwrap()
            .into_iter()
            .map(|o| o.abi_tag)
            .collect();
        assert_eq!(listed.len(), 2);
        let report = prune_other_abis(root, DEFAULT_PRUNE_AGE).unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.bytes_freed, 5);
        assert!(!old.exists() && recent.exists() && ours.exists() && unrelated.exists());
    }
}
