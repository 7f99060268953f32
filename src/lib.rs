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
//!   [`quickjs::declare_built`] (bundles and transpiled files, the build skipped on a hit),
//!   `declare_cached`, [`quickjs::PackLoader`], [`quickjs::PackResolver`],
//!   [`quickjs::precompile`], and stack traces mapped through source maps. Without it the
//!   crate is a plain store of bytes.
//! - `cli`: the `bytecode-pack` command-line tool (`src/bin/bytecode-pack.rs`); brings
//!   `quickjs` (for `precompile`).
//! - `fault-injection`: test-only crash points for the crash tests; never enable it in a
//!   release build.
//!
//! # Layout
//!
//! The modules in layers, from the bottom up. A module uses only modules of lower layers:
//! `tests/layout.rs` reads this table and fails on any other dependency.
//!
//! | layer | modules | responsibility |
//! |---|---|---|
//! | 0 | `format`, `options`, `stats`, `verdicts`, `faults` | the on-disk format, byte by byte, with no I/O (see also `FORMAT.md`); tuning knobs; [`MissReason`], [`Counters`], [`Stats`]; per-row verdicts kept once reached; test-only crash points |
//! | 1 | `unsafe_io` | the storage side's only `unsafe`: mmap, in-place reads of checksummed, validated index records, the FFI the platform layer needs |
//! | 2 | `sys`, `abi`, `error` | platform code by concern (owners and modes, stat and probe, which filesystems keep ctimes); the ABI tag; the error type |
//! | 3 | `fsys` | non-blocking, regular-file-only opens, bounded streaming hashes, private dirs |
//! | 4 | `files`, `freshness` | the table of a cache directory's files and what makes one ours; input records, the one freshness check and the racy rule |
//! | 5 | `key`, `inputs`, `snapshot`, `maintenance` | cache keys; `collect_inputs`; the reader's immutable, lock-free view (index, base, pack); pruning other builds |
//! | 6 | `entry`, `verify` | [`NewEntry`], [`Hit`], [`EntryInfo`]; full checks |
//! | 7 | `writer` | one write as a `Transaction`: the lock, appends, the split index, atomic publication, sweeping |
//! | 8 | `compact` | rewriting a generation |
//! | 9 | `cache` | the public handle, [`Cache`] and [`CacheBuilder`]: its state, the read path, the write path |
//! | 10 | `quickjs` | compile and load; [`quickjs::PackLoader`], [`quickjs::PackResolver`]; one publication per start; the one `Module::load` |
//! | 11 | `fuzzing` | fuzzing entry points (hidden) |

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
pub use cache::{Cache, CacheBuilder, ENV_CACHE_DIR, ENV_DISABLE, LookupOptions, default_root};
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
