//! Tuning knobs, set through [`crate::CacheBuilder`].

use std::time::Duration;

/// How long another ABI tag's cache must have gone unused before
/// [`crate::prune_other_abis`] removes it by default (and compactions prune it).
pub const DEFAULT_PRUNE_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// When written data is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// No `fsync` on `put`. A process crash never loses an acknowledged `put` (the data is in
    /// the page cache and the index was renamed atomically); a power loss may lose recent
    /// puts, or the whole cache (see FORMAT.md), or leave a tail that checksums reject: each a
    /// miss, never wrong bytes. The right default for a cache.
    #[default]
    Process,
    /// `fsync` the pack before publishing, the directory (the new files the index will name)
    /// and the index before renaming it, and the directory after: an acknowledged `put` also
    /// survives a power loss.
    Full,
}

/// The cache's options; see [`crate::CacheBuilder`] for each one's meaning and default.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) max_bytes: u64,
    pub(crate) dead_ratio: f64,
    pub(crate) compact_min_bytes: u64,
    pub(crate) lock_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) disabled: bool,
    pub(crate) prune_other_abis_after: Option<Duration>,
    /// Trust every entry's recorded inputs without checking them (see
    /// [`crate::CacheBuilder::sealed`]).
    pub(crate) sealed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: 512 << 20,
            dead_ratio: 0.5,
            compact_min_bytes: 8 << 20,
            lock_timeout: Duration::from_secs(5),
            durability: Durability::Process,
            disabled: false,
            prune_other_abis_after: Some(DEFAULT_PRUNE_AGE),
            sealed: false,
        }
    }
}

impl Options {
    /// Whether a pack of `pack_bytes` with `live_bytes` in use should be compacted now.
    pub(crate) fn wants_compaction(&self, pack_bytes: u64, live_bytes: u64) -> bool {
        let dead = pack_bytes.saturating_sub(live_bytes);
        live_bytes > self.max_bytes
            || (pack_bytes >= self.compact_min_bytes
                && dead as f64 > self.dead_ratio * pack_bytes as f64)
    }

    /// What eviction shrinks live data to once `max_bytes` is passed: three quarters of it, so
    /// a full cache does not compact on every `put`.
    pub(crate) fn eviction_target(&self) -> u64 {
        self.max_bytes / 4 * 3
    }
}
