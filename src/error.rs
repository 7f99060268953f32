//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::format::FormatError;

/// Everything that can go wrong in this crate. Reads never return it (a failed `get` is a
/// miss); writes, maintenance and opening do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An input file named by an entry could not be read when `put` hashed it.
    #[error("input {path}: {source}")]
    Input {
        /// The input's path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A cache directory or file is unsafe to use: owned by another user, writable by group or
    /// others, or a symlink where a real file or directory belongs. Also returned when a cache
    /// directory cannot take another pack: its pack generations (or base ids) are exhausted, or
    /// a file this cache did not write is in the way of the next pack (a compaction's).
    #[error("{path}: refusing to use: {problem}")]
    Insecure {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A cache file failed its format checks.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: FormatError,
    },
    /// Another writer held the lock for longer than the configured wait.
    #[error("{path}: writer lock still held by another process after {waited:?}")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the write (`put`, `put_many`, `compact`, `clear`, `refresh_racy`) waited.
        waited: Duration,
    },
    /// The cache is read-only to this process (a cache shipped in an image and owned by root,
    /// a read-only mount): it serves hits, and `put`, `compact` and `clear` return this.
    #[error("{path}: read-only to this process: nothing is stored")]
    ReadOnly {
        /// The cache directory.
        path: PathBuf,
    },
    /// The entry handed to `put` cannot be stored.
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// No cache directory could be chosen: no `BYTECODE_PACK_CACHE_DIR` and no per-user cache
    /// directory in the environment.
    #[error(
        "no cache directory: set BYTECODE_PACK_CACHE_DIR, or XDG_CACHE_HOME / HOME (LOCALAPPDATA on Windows)"
    )]
    NoCacheDir,
    /// QuickJS failed to compile, load or evaluate a module.
    #[cfg(feature = "quickjs")]
    #[error("module {module}: {message}")]
    QuickJs {
        /// The module's name.
        module: String,
        /// The engine's message, with the stack where there is one.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
