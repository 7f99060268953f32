//! Cache keys: 128-bit XXH3 digests with the ABI tag folded in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

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
    /// deduplicated, so the order of the list does not matter. Freshness is the inputs' job,
    /// not the key's: the same paths give the same key after an edit, and the entry's recorded
    /// inputs decide whether it is still good.
    pub fn for_paths<P: AsRef<Path>>(paths: &[P]) -> Key {
        if let [only] = paths {
            // The common case (a loader's one module): no list to sort, and a path that is
            // already what `recorded_path` returns is hashed where it lies.
            let only = only.as_ref();
            if crate::freshness::is_recorded_form(only) {
                return Key::for_recorded_paths(std::iter::once(only));
            }
            let recorded = crate::freshness::recorded_path(only);
            return Key::for_recorded_paths(std::iter::once(recorded.as_path()));
        }
        let mut canonical: Vec<PathBuf> = paths
            .iter()
            .map(|p| crate::freshness::recorded_path(p.as_ref()))
            .collect();
        canonical.sort();
        canonical.dedup();
        Key::for_recorded_paths(canonical.iter().map(PathBuf::as_path))
    }

    /// The key for paths already in recorded form, sorted and deduplicated: each
    /// length-prefixed after the domain, hashed in one pass.
    fn for_recorded_paths<'a>(paths: impl Iterator<Item = &'a Path> + Clone) -> Key {
        let bytes = |p: &'a Path| p.as_os_str().as_encoded_bytes();
        let parts = paths.clone().map(bytes);
        let len = parts.map(|p| 8 + p.len()).sum::<usize>();
        let mut material = Domain::Paths.start(len);
        for p in paths.map(bytes) {
            material.extend_from_slice(&(p.len() as u64).to_le_bytes());
            material.extend_from_slice(p);
        }
        Key(xxh3_128(&material).to_le_bytes())
    }

    /// A content-addressed key: the module's name and its exact source. An entry stored under
    /// it needs no inputs, since different source means a different key.
    pub fn for_source(name: &str, source: &[u8]) -> Key {
        // Streamed: a source can be large, and is not worth copying to hash it in one pass.
        let mut h = Xxh3::new();
        h.update(Domain::Source.prefix());
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
        let len = 16 + parts.iter().map(|p| 8 + p.len()).sum::<usize>();
        let mut material = Domain::Derived.start(len);
        material.extend_from_slice(&self.0);
        for part in parts {
            material.extend_from_slice(&(part.len() as u64).to_le_bytes());
            material.extend_from_slice(part);
        }
        Key(xxh3_128(&material).to_le_bytes())
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// The kinds of key. Each key is the XXH3-128 of its kind's prefix (`bytecode-pack key\0`,
/// the kind's name, `\0`, the ABI tag, `\0`) followed by its own material, so keys of
/// different kinds or builds never collide by construction.
#[derive(Clone, Copy)]
enum Domain {
    Paths,
    Source,
    Derived,
}

impl Domain {
    const ALL: [Domain; 3] = [Domain::Paths, Domain::Source, Domain::Derived];

    /// The kind's name in its prefix (part of every key's value: never change one).
    fn name(self) -> &'static str {
        match self {
            Domain::Paths => "paths",
            Domain::Source => "source",
            Domain::Derived => "derived",
        }
    }

    fn prefix(self) -> &'static [u8] {
        static PREFIXES: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
        let prefixes = PREFIXES.get_or_init(|| {
            Domain::ALL.map(|kind| {
                let parts: [&[u8]; 5] = [
                    b"bytecode-pack key\0",
                    kind.name().as_bytes(),
                    b"\0",
                    abi_tag().as_bytes(),
                    b"\0",
                ];
                parts.concat()
            })
        });
        // `ALL` lists the kinds in declaration order, so a kind's discriminant is its place.
        &prefixes[self as usize]
    }

    /// A buffer holding the prefix, with room for `len` more bytes.
    fn start(self, len: usize) -> Vec<u8> {
        let prefix = self.prefix();
        let mut material = Vec::with_capacity(prefix.len() + len);
        material.extend_from_slice(prefix);
        material
    }
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
        let dir = crate::private_tempdir();
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

    /// Keys must not change between releases of one ABI (stored entries would be orphaned):
    /// each is the XXH3-128 of its domain and its length-prefixed parts, here streamed part by
    /// part as the first releases computed it.
    #[test]
    fn keys_are_the_digest_of_their_domain_and_parts() {
        fn streamed(kind: &str, parts: &[&[u8]]) -> Key {
            let mut h = Xxh3::new();
            for part in [b"bytecode-pack key\0", kind.as_bytes(), b"\0"] {
                h.update(part);
            }
            h.update(abi_tag().as_bytes());
            h.update(b"\0");
            parts.iter().for_each(|p| h.update(p));
            Key(h.digest128().to_le_bytes())
        }
        let len = |b: &[u8]| (b.len() as u64).to_le_bytes();
        let (a, b) = ("/srv/app/a.js", "/srv/app/lib/b.mjs");
        assert_eq!(
            Key::for_paths(&[a]),
            streamed("paths", &[&len(a.as_bytes()), a.as_bytes()])
        );
        assert_eq!(
            Key::for_paths(&[b, a, a]),
            streamed(
                "paths",
                &[
                    &len(a.as_bytes()),
                    a.as_bytes(),
                    &len(b.as_bytes()),
                    b.as_bytes()
                ]
            )
        );
        let relative = Key::for_paths(&["x/./y.js"]);
        let absolute = std::path::absolute("x/y.js").unwrap();
        let absolute = absolute.as_os_str().as_encoded_bytes();
        assert_eq!(relative, streamed("paths", &[&len(absolute), absolute]));
        let source = Key::for_source("m.js", b"export default 1");
        assert_eq!(
            source,
            streamed("source", &[&len(b"m.js"), b"m.js", b"export default 1"])
        );
        assert_eq!(
            source.derive(&[b"\x01\x00", b"m.js"]),
            streamed(
                "derived",
                &[
                    &source.0,
                    &len(b"\x01\x00"),
                    b"\x01\x00",
                    &len(b"m.js"),
                    b"m.js"
                ]
            )
        );
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
