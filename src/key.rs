//! Cache keys: 128-bit XXH3 digests with the ABI tag folded in.

use std::fmt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::abi::abi_tag;

/// What an entry is stored under.
///
/// Keys are stable across processes, Rust releases and machines of the same ABI tag: they are
/// XXH3-128 digests (never `DefaultHasher`, whose output may change between Rust releases).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 16]);

impl Key {
    /// The key for a module compiled from the files at `paths` (usually the entry file, or a
    /// bundle's entry points). Paths are made absolute against the current directory (`.`
    /// components dropped; symlinks and `..` kept, since resolving them costs a `readlink` per
    /// component and two spellings of one file only cost an extra entry), sorted and
    /// deduplicated, so the order of the list does not matter. Freshness is the inputs' job, not the key's: the same paths give the same key
    /// after an edit, and the entry's recorded inputs decide whether it is still good.
    pub fn for_paths<P: AsRef<Path>>(paths: &[P]) -> Key {
        let mut h = domain("paths");
        let mut add = |p: &Path| {
            let bytes = p.as_os_str().as_encoded_bytes();
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        if let [only] = paths {
            // The common case (a loader's one module) needs no list to sort.
            add(&crate::freshness::recorded_path(only.as_ref()));
        } else {
            let mut canonical: Vec<PathBuf> = paths
                .iter()
                .map(|p| crate::freshness::recorded_path(p.as_ref()))
                .collect();
            canonical.sort();
            canonical.dedup();
            for p in &canonical {
                add(p);
            }
        }
        Key(h.digest128().to_le_bytes())
    }

    /// A content-addressed key: the module's name and its exact source. An entry stored under
    /// it needs no inputs, since different source means a different key.
    pub fn for_source(name: &str, source: &[u8]) -> Key {
        let mut h = domain("source");
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(source);
        Key(h.digest128().to_le_bytes())
    }

    /// A key from raw bytes (e.g. one printed by the CLI, or a digest of the caller's own).
    /// The ABI tag is *not* folded in: the caller owns this key's meaning.
    pub const fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// A key for a variant of this one, e.g. the same source compiled with other options:
    /// the digest of this key followed by `parts`, each length-prefixed.
    pub fn derive(&self, parts: &[&[u8]]) -> Key {
        let mut h = domain("derived");
        h.update(&self.0);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Key(h.digest128().to_le_bytes())
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A hasher pre-seeded with the key kind and the ABI tag, so keys of different kinds or builds
/// never collide by construction.
fn domain(kind: &str) -> Xxh3 {
    let mut h = Xxh3::new();
    h.update(b"bytecode-pack key\0");
    h.update(kind.as_bytes());
    h.update(b"\0");
    h.update(abi_tag().as_bytes());
    h.update(b"\0");
    h
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_ignore_order_duplicates_and_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.js");
        let b = dir.path().join("b.js");
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "2").unwrap();
        let dotted = dir.path().join(".").join("a.js");
        assert_eq!(
            Key::for_paths(&[&a, &b]),
            Key::for_paths(&[&b, &dotted, &a])
        );
        assert_ne!(Key::for_paths(&[&a]), Key::for_paths(&[&b]));
    }

    #[test]
    fn source_keys_depend_on_name_and_bytes() {
        let k = Key::for_source("m", b"export default 1");
        assert_eq!(k, Key::for_source("m", b"export default 1"));
        assert_ne!(k, Key::for_source("n", b"export default 1"));
        assert_ne!(k, Key::for_source("m", b"export default 2"));
        // The length prefix keeps name and source apart.
        assert_ne!(Key::for_source("ab", b"c"), Key::for_source("a", b"bc"));
        assert_eq!(format!("{k}").len(), 32);
    }
}
