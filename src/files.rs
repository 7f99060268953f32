//! The files of a cache directory, in one place: their names, and how a file is judged to be
//! one this crate wrote ([`CacheFile::judge`]). Sweeping, pruning, rolling back and compacting
//! all ask this table before they remove or reuse a file; what each file holds is specified in
//! `format` and `FORMAT.md`.
//!
//! | file | name | ours when it holds | may be empty |
//! |---|---|---|---|
//! | index | `index` | the index magic | no |
//! | base index | `base-<16 hex>` | the index magic | no |
//! | pack | `pack-<16 hex>` | the pack magic | yes: its writer stopped before the header |
//! | lock | `lock` | nothing | always empty |
//! | marker | `CACHEDIR.TAG` | the marker text for its ABI tag | a prefix of it: its writer stopped |
//! | temp file | `.tmp-*` | an index or pack magic, or some of the marker text | yes |

use std::path::Path;

use crate::format::{INDEX_MAGIC, PACK_MAGIC};
use crate::fsys;

/// The published index.
pub(crate) const INDEX_FILE: &str = "index";
/// The writers' `flock(2)` target.
pub(crate) const LOCK_FILE: &str = "lock";
/// The cache directory tag, whose content proves a directory is a cache this crate wrote.
pub(crate) const MARKER_FILE: &str = "CACHEDIR.TAG";
/// Prefix of every temp file; anything carrying it is swept by the next writer.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// The pack file of `generation`: `pack-<16 hex digits>`.
pub(crate) fn pack_file_name(generation: u64) -> String {
    format!("pack-{generation:016x}")
}

/// A base index: `base-<16 hex digits>`.
pub(crate) fn base_file_name(id: u64) -> String {
    format!("base-{id:016x}")
}

/// The id a base file's name carries, if `name` is one.
pub(crate) fn parse_base_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "base-")
}

/// The generation a pack file's name carries, if `name` is one.
pub(crate) fn parse_pack_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "pack-")
}

fn parse_hex_name(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    u64::from_str_radix(hex, 16).ok()
}

/// The content of the marker of the cache directory of `abi_tag`: a cache directory tag
/// (<https://bford.info/cachedir/>) that names the tag, so that its directory is proven a cache
/// of this crate.
pub(crate) fn marker_content(abi_tag: &str) -> String {
    format!(
        "Signature: 8a477f597d28d172789f06886806bc55\n\
         # This file is a cache directory tag created by bytecode-pack.\n\
         # For information about cache directory tags see https://bford.info/cachedir/\n\
         bytecode-pack cache {abi_tag}\n"
    )
}

/// Every kind of file a cache directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheFile {
    Index,
    Base(u64),
    Pack(u64),
    Lock,
    Marker,
    Temp,
}

/// What a file's content says of who wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Ours, and proof that its directory is a cache of this crate: a whole marker, an index,
    /// a pack with its header.
    Proof,
    /// Ours (or holding nothing to lose), but no proof of a cache: a base, a temp file, an
    /// empty pack or lock, a marker cut short.
    Ours,
    /// Not written by this crate (or not for this ABI tag): never removed or reused.
    Foreign,
}

impl CacheFile {
    /// The kind of file named `name`, if it is one of this crate's names.
    pub(crate) fn of(name: &str) -> Option<CacheFile> {
        match name {
            INDEX_FILE => Some(CacheFile::Index),
            LOCK_FILE => Some(CacheFile::Lock),
            MARKER_FILE => Some(CacheFile::Marker),
            _ if name.starts_with(TEMP_PREFIX) => Some(CacheFile::Temp),
            _ => parse_pack_name(name)
                .map(CacheFile::Pack)
                .or_else(|| parse_base_name(name).map(CacheFile::Base)),
        }
    }

    /// Judges the file at `path`, of this kind, in the cache directory of `abi_tag`, by its
    /// first bytes (read without following a symlink or blocking: anything but a regular file
    /// is foreign).
    pub(crate) fn judge(self, path: &Path, abi_tag: &str) -> Verdict {
        let Ok(prefix) = fsys::read_prefix(path, MARKER_PREFIX_LIMIT) else {
            return Verdict::Foreign;
        };
        let magic = |magics: &[&[u8; 8]]| magics.iter().any(|m| prefix.starts_with(&m[..]));
        let marker = || marker_text(&prefix, abi_tag);
        match self {
            CacheFile::Index if magic(&[&INDEX_MAGIC]) => Verdict::Proof,
            CacheFile::Base(_) if magic(&[&INDEX_MAGIC]) => Verdict::Ours,
            CacheFile::Pack(_) if magic(&[&PACK_MAGIC]) => Verdict::Proof,
            CacheFile::Pack(_) | CacheFile::Lock | CacheFile::Temp if prefix.is_empty() => {
                Verdict::Ours
            }
            CacheFile::Temp if magic(&[&INDEX_MAGIC, &PACK_MAGIC]) => Verdict::Ours,
            // The marker's own temp file, written whole before its rename.
            CacheFile::Temp if marker() != MarkerText::Foreign => Verdict::Ours,
            CacheFile::Marker => match marker() {
                MarkerText::Whole => Verdict::Proof,
                MarkerText::CutShort => Verdict::Ours,
                MarkerText::Foreign => Verdict::Foreign,
            },
            _ => Verdict::Foreign,
        }
    }
}

/// More than the marker's length: a longer file is not a marker.
const MARKER_PREFIX_LIMIT: u64 = 512;

/// What a file read as `abi_tag`'s marker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerText {
    Whole,
    /// A prefix of it (empty included): its writer was killed, or the disk was full, mid-write.
    CutShort,
    /// Anything else: not ours.
    Foreign,
}

pub(crate) fn marker_text(content: &[u8], abi_tag: &str) -> MarkerText {
    let ours = marker_content(abi_tag);
    if content == ours.as_bytes() {
        MarkerText::Whole
    } else if ours.as_bytes().starts_with(content) {
        MarkerText::CutShort
    } else {
        MarkerText::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, file by file: what proves a cache, what is ours without proof, what is not
    /// ours (and so is never removed or reused).
    #[test]
    fn files_are_judged_by_their_kind_and_first_bytes() {
        let dir = crate::private_tempdir();
        let tag = "bp2-test";
        let file = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            (CacheFile::of(name).unwrap(), path)
        };
        let mut index = INDEX_MAGIC.to_vec();
        index.extend_from_slice(b"rest");
        let mut pack = PACK_MAGIC.to_vec();
        pack.extend_from_slice(b"rest");
        let marker = marker_content(tag);
        let cases: &[(&str, &[u8], Verdict)] = &[
            ("index", &index, Verdict::Proof),
            ("index", b"", Verdict::Foreign),
            ("index", &pack, Verdict::Foreign),
            ("base-0000000000000001", &index, Verdict::Ours),
            ("base-0000000000000001", b"", Verdict::Foreign),
            ("pack-0000000000000001", &pack, Verdict::Proof),
            ("pack-0000000000000001", b"", Verdict::Ours),
            ("pack-0000000000000001", b"user data", Verdict::Foreign),
            ("lock", b"", Verdict::Ours),
            ("lock", b"x", Verdict::Foreign),
            ("CACHEDIR.TAG", marker.as_bytes(), Verdict::Proof),
            ("CACHEDIR.TAG", &marker.as_bytes()[..20], Verdict::Ours),
            (
                "CACHEDIR.TAG",
                b"Signature: someone else's",
                Verdict::Foreign,
            ),
            (".tmp-a", b"", Verdict::Ours),
            (".tmp-a", &index, Verdict::Ours),
            (".tmp-a", &marker.as_bytes()[..30], Verdict::Ours),
            (".tmp-a", b"notes", Verdict::Foreign),
        ];
        for (name, content, verdict) in cases {
            let (kind, path) = file(name, content);
            assert_eq!(kind.judge(&path, tag), *verdict, "{name} {content:?}");
        }
        // Another tag's marker is not this one's.
        let (kind, path) = file("CACHEDIR.TAG", marker_content("bp2-other").as_bytes());
        assert_eq!(kind.judge(&path, tag), Verdict::Foreign);
        // Not a regular file: foreign, whatever its name.
        let sub = dir.path().join("pack-0000000000000002");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(CacheFile::Pack(2).judge(&sub, tag), Verdict::Foreign);
        assert_eq!(CacheFile::of("notes.txt"), None);
        assert_eq!(CacheFile::of("pack-1"), None);
    }

    #[test]
    fn pack_names_round_trip_and_nothing_else_parses() {
        for g in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(super::parse_pack_name(&super::pack_file_name(g)), Some(g));
            assert_eq!(super::parse_base_name(&super::base_file_name(g)), Some(g));
            assert_eq!(super::parse_pack_name(&super::base_file_name(g)), None);
        }
        for name in [
            "pack-1",
            "pack-",
            "pack-0000000000000001x",
            "index",
            "pack-zzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(super::parse_pack_name(name), None, "{name}");
        }
    }
}
