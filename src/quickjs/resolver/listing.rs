//! A directory's listing: what lets a copy of a tree keep the answers its original stored
//! (see [`Listing`]).

use crate::format::StatRecord;
use crate::freshness;

/// A directory's entries, names and kinds, hashed in any order with the directory's mode,
/// owner and group (128 bits: a sum of each entry's xxh3-128, plus their count). Two
/// directories with one listing give every probe `FileResolver` makes in them the same
/// answer, wherever they lie: what lets a copy of a tree (new inodes and ctimes) keep the
/// answers its original stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listing(u128);

/// Directories with more entries than this get no listing (the read is bounded).
const MOST_LISTED_ENTRIES: u128 = 1 << 16;

impl Listing {
    /// The listing of the directory at `path` as it is now, certified to be the listing it
    /// had when `stat` was taken at `recorded_at_ns`: that stamp is trusted by the racy rule
    /// (no change could hide in its ctime's tick), and its stat data is unchanged after the
    /// read. `None` where that cannot be shown, where an entry is a symlink (its target can
    /// change without its directory changing), or where the directory cannot be read whole.
    pub fn certified(
        path: &std::path::Path,
        stat: &StatRecord,
        recorded_at_ns: i64,
    ) -> Option<Self> {
        if !freshness::stat_is_trusted(stat, recorded_at_ns)
            || !crate::sys::ctime_of(stat.dev).kept_by_a_kernel()
        {
            return None;
        }
        let (listing, symlinks) = Self::read(path)?;
        let unchanged = crate::sys::stat_path(path).ok()? == *stat;
        (unchanged && !symlinks).then_some(listing)
    }

    /// The listing of the directory at `path` as it is now, uncertified (a hint to find a
    /// table by, never a reason to trust one).
    pub fn hint(path: &std::path::Path) -> Option<Self> {
        Self::read(path).map(|(listing, _)| listing)
    }

    /// The directory's listing, and whether it holds a symlink. `None` if it cannot be read
    /// whole, holds more than [`MOST_LISTED_ENTRIES`] or (off Unix) at all.
    #[cfg(unix)]
    fn read(path: &std::path::Path) -> Option<(Self, bool)> {
        use std::os::unix::fs::MetadataExt;
        use xxhash_rust::xxh3::xxh3_128;
        // Who may search the directory decides what a probe in it sees: its mode and owners
        // are listed (a copy another user made is another listing).
        let meta = std::fs::metadata(path).ok()?;
        let who = [
            u64::from(meta.mode()),
            u64::from(meta.uid()),
            u64::from(meta.gid()),
        ];
        let mut sum = xxh3_128(&who.map(u64::to_le_bytes).concat());
        let (mut count, mut symlinks) = (0u128, false);
        let mut named = Vec::new();
        for entry in std::fs::read_dir(path).ok()? {
            let entry = entry.ok()?;
            count += 1;
            if count > MOST_LISTED_ENTRIES {
                return None;
            }
            let kind = entry.file_type().ok()?;
            symlinks |= kind.is_symlink();
            named.clear();
            named.extend_from_slice(entry.file_name().as_encoded_bytes());
            named.push(match () {
                _ if kind.is_file() => b'f',
                _ if kind.is_dir() => b'd',
                _ if kind.is_symlink() => b'l',
                _ => b'o',
            });
            sum = sum.wrapping_add(xxh3_128(&named));
        }
        Some((Listing(sum ^ (count << 64)), symlinks))
    }

    #[cfg(not(unix))]
    fn read(_: &std::path::Path) -> Option<(Self, bool)> {
        None
    }

    /// As bytes, for a key.
    pub fn to_le_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// The listing as stored (a `u128`, little-endian, in a directory's record).
    pub fn from_bits(bits: u128) -> Self {
        Listing(bits)
    }

    /// Its bits, as stored.
    pub fn bits(self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listings tell directories apart by their entries' names and kinds and the directory's
    /// mode, not by where they lie or when they were made; one with a symlink, or stamped
    /// within the racy window, is not certified.
    #[cfg(unix)]
    #[test]
    fn listings_compare_entries_and_refuse_what_they_cannot_vouch_for() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::private_tempdir();
        let dir = |name: &str, entries: &[(&str, bool)]| {
            let path = tmp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            for (entry, is_dir) in entries {
                match is_dir {
                    true => std::fs::create_dir(path.join(entry)).unwrap(),
                    false => std::fs::write(path.join(entry), entry).unwrap(),
                }
            }
            path
        };
        let a = dir("a", &[("x.js", false), ("sub", true), ("y.mjs", false)]);
        let copy = dir("copy", &[("y.mjs", false), ("x.js", false), ("sub", true)]);
        let kind = dir("kind", &[("x.js", true), ("sub", true), ("y.mjs", false)]);
        let fewer = dir("fewer", &[("x.js", false), ("sub", true)]);
        let certified = |path: &std::path::Path| {
            let stat = crate::sys::stat_path(path).unwrap();
            Listing::certified(path, &stat, stat.ctime_ns + 10_000_000_000)
        };
        let listing = certified(&a).expect("an aged directory of files and directories");
        assert_eq!(certified(&copy), Some(listing));
        assert_ne!(certified(&kind), Some(listing));
        assert_ne!(certified(&fewer), Some(listing));
        let stat = crate::sys::stat_path(&a).unwrap();
        assert_eq!(
            Listing::certified(&a, &stat, stat.ctime_ns + 1_000_000),
            None,
            "racy"
        );
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o500)).unwrap();
        assert_ne!(certified(&copy), Some(listing), "another mode");
        std::os::unix::fs::symlink("x.js", a.join("link.js")).unwrap();
        assert_eq!(certified(&a), None, "a symlink");
        assert!(Listing::hint(&a).is_some(), "a hint lists symlinks too");
        assert_eq!(Listing::hint(&tmp.path().join("absent")), None);
    }
}
