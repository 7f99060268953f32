//! Opening a cache: where it lives, and the options it is opened with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{Cache, Inner};
use crate::abi::abi_tag;
use crate::error::{Error, Result};
use crate::files;
use crate::fsys;
use crate::options::{Durability, Options};
use crate::snapshot::Snapshot;
use crate::stats::AtomicCounters;

/// Names the cache root; overrides the per-user cache directory in [`Cache::open_default`].
pub const ENV_CACHE_DIR: &str = "BYTECODE_PACK_CACHE_DIR";
/// Set to `1` (or `true`, `yes`) to make every `get` miss and every `put` a no-op.
pub const ENV_DISABLE: &str = "BYTECODE_PACK_DISABLE";

/// Options for opening a cache; from [`Cache::builder`].
#[derive(Clone)]
pub struct CacheBuilder {
    root: PathBuf,
    options: Options,
    lower: Option<Cache>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("root", &self.root)
            .field("options", &self.options)
            .field("lower", &self.lower.as_ref().map(Cache::dir))
            .finish()
    }
}

impl CacheBuilder {
    /// Live bytes (bytecode, source maps and aux, with their headers) above which the least
    /// recently inserted entries are evicted, down to three quarters of the limit. Default
    /// 512 MiB. An entry larger than the limit is refused by `put`.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.options.max_bytes = bytes;
        self
    }

    /// Compact automatically after a `put` once the pack is at least `min_pack_bytes` long and
    /// more than `dead_ratio` of it is dead (superseded entries, torn tails). Defaults 8 MiB
    /// and 0.5.
    pub fn auto_compact(mut self, min_pack_bytes: u64, dead_ratio: f64) -> Self {
        self.options.compact_min_bytes = min_pack_bytes;
        self.options.dead_ratio = dead_ratio.clamp(0.0, 1.0);
        self
    }

    /// How long `put`, `compact` and `clear` wait for another writer's lock before failing
    /// with [`Error::LockTimeout`]. Default 5 s; `Duration::MAX` waits without limit.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.options.lock_timeout = timeout;
        self
    }

    /// When writes are flushed to stable storage. Default [`Durability::Process`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// Caches of other ABI tags under the same root (left by other QuickJS or crate versions)
    /// are removed by compactions once nobody has written to them for this long; `None` keeps
    /// them. Default 30 days ([`crate::DEFAULT_PRUNE_AGE`]).
    pub fn prune_other_abis_after(mut self, unused_for: Option<Duration>) -> Self {
        self.options.prune_other_abis_after = unused_for;
        self
    }

    /// Puts `lower`, typically a cache shipped read-only with the code (built by
    /// `bytecode-pack` at image build time), under this one: a lookup that misses here is
    /// looked up there, and writes go here only. Modules compiled after deployment are kept,
    /// and the shipped ones are never copied. `stats`, `entries`, `verify` and `compact` see
    /// this cache only.
    pub fn fall_back_to(mut self, lower: Cache) -> Self {
        self.lower = Some(lower);
        self
    }

    /// Trusts every entry's recorded inputs without checking them: a hit costs no `stat` at
    /// all, as Python's unchecked hash-based `.pyc` files (PEP 552). **Only for a tree that
    /// cannot change after deployment** (a read-only image layer, a sealed bundle): an input
    /// edited in place is then served the bytecode of its old content until the entry is
    /// replaced. Off by default: every hit checks its inputs.
    pub fn sealed(mut self, sealed: bool) -> Self {
        self.options.sealed = sealed;
        self
    }

    /// Makes the handle inert: every `get` misses and every `put` does nothing. Defaults to
    /// whether [`ENV_DISABLE`] is set.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.options.disabled = disabled;
        self
    }

    /// Opens (creating if needed) the cache under the root. The root is created with mode
    /// 0700 if missing; the root and the cache directory must belong to this user or to root
    /// and not be writable by group or others (the rule ssh applies to its files), and the
    /// cache directory must not be a symlink. A cache directory this process cannot write
    /// (root's, or on a read-only mount) opens read-only: see [`Cache::is_read_only`].
    pub fn open(self) -> Result<Cache> {
        // Resolved once: a relative root must not follow the process's later `chdir`s.
        let root = std::path::absolute(&self.root).map_err(Error::io(&self.root))?;
        let dir = root.join(abi_tag());
        if self.options.disabled {
            return Ok(Cache::with_state(
                dir,
                self.options,
                Snapshot::empty(),
                false,
                self.lower,
            ));
        }
        fsys::ensure_private_dir(&root, true)?;
        fsys::ensure_private_dir(&dir, false)?;
        let read_only = !crate::sys::may_write_in(&dir);
        let snapshot = Snapshot::load(&dir, abi_tag())?;
        Ok(Cache::with_state(
            dir,
            self.options,
            snapshot,
            read_only,
            self.lower,
        ))
    }

    /// [`CacheBuilder::open`], or, where no cache can be opened (no writable home for a
    /// service user, a root that is not safe to use), a disabled handle, with one warning
    /// that says why: the host runs uncached instead of failing.
    pub fn open_or_uncached(self) -> Cache {
        let lower = self.lower.clone();
        let dir = self.root.join(abi_tag());
        self.open().unwrap_or_else(|e| {
            log::warn!("bytecode-pack: running uncached: {e}");
            Cache::uncached(dir, lower)
        })
    }
}

fn disabled_by_env() -> bool {
    std::env::var(ENV_DISABLE).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// The root [`Cache::open_default`] uses: [`ENV_CACHE_DIR`] if set, else the per-user cache
/// directory joined with `bytecode-pack`. Never a shared temp directory.
pub fn default_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_CACHE_DIR).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("bytecode-pack"))
        .ok_or(Error::NoCacheDir)
}

impl Cache {
    /// Opens the cache for this build under `root`, in `root/<abi_tag>/`, with default
    /// options. See [`CacheBuilder::open`] for the directory checks.
    pub fn open(root: impl AsRef<Path>) -> Result<Cache> {
        Cache::builder(root).open()
    }

    /// Opens the cache under [`default_root`].
    pub fn open_default() -> Result<Cache> {
        Cache::open(default_root()?)
    }

    /// [`Cache::open_default`], or, where no cache can be opened there (no per-user cache
    /// directory, as for a service user without a writable `HOME`), a disabled handle with one
    /// warning: the easy path for a host, which then runs uncached instead of failing.
    pub fn open_default_or_uncached() -> Cache {
        match default_root() {
            Ok(root) => Cache::builder(root).open_or_uncached(),
            Err(e) => {
                log::warn!("bytecode-pack: running uncached: {e}");
                Cache::uncached(PathBuf::new(), None)
            }
        }
    }

    /// A disabled handle on `dir` that never touches the disk (see
    /// [`CacheBuilder::disabled`]), with `lower` underneath.
    fn uncached(dir: PathBuf, lower: Option<Cache>) -> Cache {
        let options = Options {
            disabled: true,
            ..Options::default()
        };
        Cache::with_state(dir, options, Snapshot::empty(), false, lower)
    }

    fn with_state(
        dir: PathBuf,
        options: Options,
        snapshot: Snapshot,
        read_only: bool,
        lower: Option<Cache>,
    ) -> Cache {
        Cache {
            inner: Arc::new(Inner {
                index_path: dir.join(files::INDEX_FILE),
                dir,
                options,
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: parking_lot::Mutex::new(()),
                swept: AtomicBool::new(false),
                counters: AtomicCounters::default(),
                racy: parking_lot::Mutex::new(Vec::new()),
                opened: std::time::Instant::now(),
                checked_at_us: std::sync::atomic::AtomicU64::new(0),
                compaction_retry: parking_lot::Mutex::new(None),
                read_only,
                lower,
                vanished: parking_lot::Mutex::new(None),
            }),
        }
    }

    /// Options for opening the cache under `root`.
    pub fn builder(root: impl AsRef<Path>) -> CacheBuilder {
        CacheBuilder {
            root: root.as_ref().to_path_buf(),
            options: Options {
                disabled: disabled_by_env(),
                ..Options::default()
            },
            lower: None,
        }
    }
}
