//! What a handle counts, and what a cache directory holds: misses by reason, counters, stats.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a lookup missed. Counted per handle in [`Stats::counters`] and logged at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MissReason {
    /// No entry under the key.
    Absent,
    /// An input was edited, replaced or deleted since the entry was recorded.
    Stale,
    /// The index or a segment failed its checks.
    Corrupt,
    /// The cache could not be read.
    Io,
    /// The handle is disabled.
    Disabled,
}

/// This handle's lookup and write counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Lookups that returned a hit.
    pub hits: u64,
    /// Misses: no entry under the key.
    pub misses_absent: u64,
    /// Misses: an input changed.
    pub misses_stale: u64,
    /// Misses: the index or a segment failed its checks.
    pub misses_corrupt: u64,
    /// Misses: the cache could not be read.
    pub misses_io: u64,
    /// Misses: the handle is disabled.
    pub misses_disabled: u64,
    /// Inputs whose content lookups re-hashed because their stat data changed or was too
    /// recent to trust (the racy rule, see [`crate::RACY_WINDOW`]). An unchanged tree
    /// whose entries were recorded well after its last edit re-hashes nothing.
    pub input_rehashes: u64,
    /// Entries stored by this handle's successful writes, not calls: a `put` counts 1 and a
    /// `put_many` each entry it stores, including the modules `quickjs::PackLoader` stores
    /// and `quickjs::PackResolver`'s entry of answers when they were given this handle (or a
    /// clone of it).
    pub puts: u64,
    /// Compactions run by this handle, requested or automatic.
    pub compactions: u64,
    /// Index publications by this handle: each write that stored, re-recorded, compacted or
    /// cleared anything renamed one new index into place. A start through
    /// `quickjs::PackResolver` and `quickjs::PackLoader` publishes at most once.
    pub publications: u64,
}

impl Counters {
    /// All misses, whatever the reason.
    pub fn misses(&self) -> u64 {
        self.misses_absent
            + self.misses_stale
            + self.misses_corrupt
            + self.misses_io
            + self.misses_disabled
    }
}

/// The counters as a handle updates them, from any thread.
#[derive(Default)]
pub(crate) struct AtomicCounters {
    hits: AtomicU64,
    misses_absent: AtomicU64,
    misses_stale: AtomicU64,
    misses_corrupt: AtomicU64,
    misses_io: AtomicU64,
    misses_disabled: AtomicU64,
    input_rehashes: AtomicU64,
    puts: AtomicU64,
    compactions: AtomicU64,
    publications: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn input_rehashed(&self) {
        self.input_rehashes.fetch_add(1, Ordering::Relaxed);
    }

    /// After a publication succeeded: `count` entries stored, and whether it compacted.
    /// One index renamed into place.
    pub(crate) fn publication(&self) {
        self.publications.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn published(&self, puts: u64, compacted: bool) {
        self.puts.fetch_add(puts, Ordering::Relaxed);
        if compacted {
            self.compactions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn miss(&self, reason: MissReason) {
        let counter = match reason {
            MissReason::Absent => &self.misses_absent,
            MissReason::Stale => &self.misses_stale,
            MissReason::Corrupt => &self.misses_corrupt,
            MissReason::Io => &self.misses_io,
            MissReason::Disabled => &self.misses_disabled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Counters {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            hits: r(&self.hits),
            misses_absent: r(&self.misses_absent),
            misses_stale: r(&self.misses_stale),
            misses_corrupt: r(&self.misses_corrupt),
            misses_io: r(&self.misses_io),
            misses_disabled: r(&self.misses_disabled),
            input_rehashes: r(&self.input_rehashes),
            puts: r(&self.puts),
            compactions: r(&self.compactions),
            publications: r(&self.publications),
        }
    }
}

/// The state of a cache directory, and this handle's counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Live entries.
    pub entries: u64,
    /// Bytes in the current pack file, dead space included.
    pub pack_bytes: u64,
    /// Bytes in the pack that live entries use (header included). Entries recorded under a
    /// root that no longer exists (a deleted checkout or temporary copy) are not live: they
    /// count as dead, and automatic compaction reclaims them.
    pub live_bytes: u64,
    /// Bytes of the index file, plus its base file's when the index is a delta.
    pub index_bytes: u64,
    /// The current pack generation (increases with every compaction or clear).
    pub generation: u64,
    /// The cache directory.
    pub dir: PathBuf,
    /// Why the published index or its pack was rejected, if it was (which file, what was
    /// wrong): every `get` misses until the next write rebuilds the cache. Or why a pack is
    /// shorter than its index says (it lost its tail): only the entries it lost miss. That
    /// report lasts until the next write extends the pack; the lost entries stay corrupt
    /// misses, which `verify` reports, until a compaction drops them or puts replace them.
    pub damage: Option<String>,
    /// This handle's counters.
    pub counters: Counters,
}

impl Stats {
    /// Dead bytes in the pack: superseded entries and torn tails, reclaimed by compaction.
    pub fn dead_bytes(&self) -> u64 {
        self.pack_bytes.saturating_sub(self.live_bytes)
    }
}
