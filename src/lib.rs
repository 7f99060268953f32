//! A cross-process on-disk cache for compiled QuickJS bytecode.
//!
//! One append-only pack file holds the bytecode (with each entry's source map and an opaque
//! `aux` sidecar); an rkyv index, memory-mapped and published by atomic rename, answers
//! lookups without copying and without locks. Writers append under an advisory file lock;
//! compaction rewrites the live entries into a new pack without disturbing readers. Every
//! entry records its input files with XXH3 content hashes, so an edit makes it miss, and every
//! byte handed out has passed a checksum.
//!
//! ```
//! use bytecode_pack::{Cache, Input, Key, NewEntry};
//!
//! # fn main() -> Result<(), bytecode_pack::Error> {
//! let root = tempfile::tempdir().unwrap();
//! let src = root.path().join("main.js");
//! std::fs::write(&src, "export const answer = 42;").unwrap();
//!
//! let cache = Cache::open(root.path().join("cache"))?;
//! let key = Key::for_paths(&[&src]);
//! assert!(cache.get(&key).is_none());
//!
//! let source = std::fs::read(&src).unwrap();
//! let bytecode = b"...bytes from Module::write of `source`...";
//! // The bytes compiled are what the entry records for main.js.
//! let input = Input::with_content(&src, &source);
//! cache.put(&key, &NewEntry::new("main.js", bytecode).inputs(vec![input]))?;
//!
//! let hit = cache.get(&key).expect("fresh entry");
//! assert_eq!(hit.bytecode(), bytecode);
//!
//! std::fs::write(&src, "export const answer = 43;").unwrap(); // an edit makes it miss
//! assert!(cache.get(&key).is_none());
//! # Ok(()) }
//! ```
//!
//! A host that loads modules through rquickjs's `FileResolver` and `ScriptLoader` needs none
//! of this: it changes one line, wrapping its `FileResolver` in a [`quickjs::PackResolver`]
//! and replacing `ScriptLoader` with a [`quickjs::PackLoader`] (see the [`quickjs`] module).
//!
//! # Features
//!
//! - `quickjs` (default): the rquickjs glue, the [`quickjs`] module: compiling, loading,
//!   `declare_cached`, [`quickjs::PackLoader`] and [`quickjs::PackResolver`]. Without it the
//!   crate is a plain store of bytes.
//! - `cli`: the `bytecode-pack` command-line tool (`src/bin/bytecode-pack.rs`).
//! - `fault-injection`: test-only crash points for the crash tests; never enable it in a
//!   release build.
//!
//! # Layout
//!
//! Dependencies point one way, from the public handle down to the format (`tests/layout.rs`
//! fails on a cycle between modules). From the bottom up:
//!
//! | module | responsibility |
//! |---|---|
//! | `format` (`index`, `pack`) | the on-disk format, byte by byte, with no I/O (see also `FORMAT.md`) |
//! | `files` | the names of the files in a cache directory |
//! | `sys` (`unix`, `other`) | platform code: stat data, open flags, owner and mode checks |
//! | `unsafe_io` | the storage side's only `unsafe`: mmap, in-place reads of checksummed, validated index records |
//! | `error`, `options`, `abi`, `key` | the error type; tuning knobs; the ABI tag; cache keys |
//! | `fsys` | non-blocking, regular-file-only opens, bounded streaming hashes, private dirs |
//! | `freshness`, `inputs` | input records, the one freshness check and the racy rule; `collect_inputs` |
//! | `snapshot` | the reader's immutable, lock-free view (index, base, pack) |
//! | `entry`, `stats` | [`NewEntry`], [`Hit`], [`EntryInfo`]; [`MissReason`], [`Counters`], [`Stats`] |
//! | `writer` | the advisory lock, appends, the split index, atomic publication, sweeping |
//! | `compact`, `verify`, `maintenance` | rewriting a generation; full checks; pruning other builds |
//! | `cache` (`builder`) | the public handle: [`Cache`], [`CacheBuilder`] |
//! | `quickjs` (`engine`, `loader`, `resolver`, `resolver::stored`) | compile and load; [`quickjs::PackLoader`], [`quickjs::PackResolver`] and its stored table; the one `Module::load` |
//! | `faults`, `fuzzing` | test-only crash points and fuzzing entry points (hidden) |

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod abi;
mod cache;
mod compact;
mod entry;
mod error;
#[doc(hidden)]
pub mod faults;
mod files;
mod format;
mod freshness;
mod fsys;
#[doc(hidden)]
pub mod fuzzing;
mod inputs;
mod key;
mod maintenance;
mod options;
#[cfg(feature = "quickjs")]
pub mod quickjs;
mod snapshot;
mod stats;
mod sys;
#[allow(unsafe_code)]
mod unsafe_io;
mod verdicts;
mod verify;
mod writer;

pub use abi::{RQUICKJS_SERIES, abi_tag};
pub use cache::{Cache, CacheBuilder, ENV_CACHE_DIR, ENV_DISABLE, default_root};
pub use compact::CompactReport;
pub use entry::{EntryInfo, Hit, NewEntry};
pub use error::{Error, Result};
pub use freshness::{FINE_RACY_WINDOW, Input, RACY_WINDOW};
pub use inputs::collect_inputs;
pub use key::Key;
pub use maintenance::{OtherAbi, PruneReport, Skipped, other_abis, prune_other_abis};
pub use options::{DEFAULT_PRUNE_AGE, Durability};
pub use stats::{Counters, MissReason, Stats};
pub use verify::VerifyReport;

/// A new temp dir only this user can write to, whatever the umask (0002 on many desktops): a
/// cache root must be one, and tests use temp dirs as roots.
#[cfg(test)]
pub(crate) fn private_tempdir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir().unwrap()
}
