//! The public handle: `get`, `put`, maintenance and statistics.

mod builder;
mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use builder::{CacheBuilder, ENV_CACHE_DIR, ENV_DISABLE, default_root};
#[cfg(feature = "quickjs")]
pub(crate) use read::ContentProof;
pub use read::LookupOptions;

use crate::entry::{EntryInfo, Hit};
use crate::error::Result;
use crate::files;
use crate::key::Key;
use crate::options::Options;
use crate::snapshot::Snapshot;
use crate::stats::{AtomicCounters, Stats};
use crate::writer::Refresh;

/// A handle on one cache directory, `<root>/<abi_tag>/`.
///
/// Cheap to clone (clones share one snapshot and one set of counters), `Send` and `Sync`.
/// Any number of handles in any number of processes may use the same directory at once.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    /// `dir/index`, joined once: a miss checks it for a newer publication.
    pub(crate) index_path: PathBuf,
    pub(crate) options: Options,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Serialises this handle's writers before they contend for the file lock (a flock is
    /// per open file description, so threads must not share one unguarded).
    pub(crate) writer: parking_lot::Mutex<()>,
    /// Whether this handle has swept leftovers of crashed writers yet (once per handle).
    pub(crate) swept: AtomicBool,
    pub(crate) counters: AtomicCounters,
    /// Entries whose racy inputs lookups re-hashed and found unchanged, with stat data that
    /// can be trusted now: re-recorded by this handle's next write (see
    /// [`Cache::refresh_racy`]).
    pub(crate) racy: parking_lot::Mutex<Vec<Refresh>>,
    /// When the handle was opened, and when (microseconds after) a throttled miss last checked
    /// for a newer publication: [`Cache::lookup_throttled`] checks at most once per interval.
    pub(crate) opened: Instant,
    pub(crate) checked_at_us: AtomicU64,
    /// After an automatic compaction failed: the pack generation it failed on, and the pack
    /// length below which puts do not try again in that generation. A disk too full for a copy
    /// of the live entries stays so for a while; each attempt would fill it for a moment and
    /// re-check every input first. (A new generation, from any compaction or clear, forgets it.)
    pub(crate) compaction_retry: parking_lot::Mutex<Option<(u64, u64)>>,
    /// This process cannot write the cache directory (see [`Cache::is_read_only`]).
    pub(crate) read_only: bool,
    /// The cache lookups fall through to on a miss (see [`CacheBuilder::fall_back_to`]).
    pub(crate) lower: Option<Cache>,
    /// The bytes of entries recorded under roots that are gone, as last counted, and the pack
    /// generation they were counted in (see [`Cache::vanished_in`]).
    pub(crate) vanished: parking_lot::Mutex<Option<(u64, u64)>>,
}

impl Inner {
    /// Whether automatic compaction should run on a pack of `generation` that is `pack_len`
    /// long and holds `live_bytes`, `vanished` of them under trees that are gone (dead too):
    /// the options want it, and it did not fail on this pack lately (see
    /// [`Inner::compaction_retry`]).
    fn compaction_due(
        &self,
        generation: u64,
        pack_len: u64,
        live_bytes: u64,
        vanished: u64,
    ) -> bool {
        let live = live_bytes.saturating_sub(vanished);
        self.options.wants_compaction(pack_len, live)
            && self
                .compaction_retry
                .lock()
                .is_none_or(|(failed_in, retry_at)| failed_in != generation || pack_len >= retry_at)
    }
}

/// The records [`Cache::vanished_in`] reads at most (about): enough to see a root holding a
/// few percent of the entries, few enough that a write does not read the whole index.
const VANISHED_SAMPLE: usize = 256;

/// What [`tally`] counts among the records it reads.
#[derive(Default)]
struct Tally {
    entries: u64,
    /// Bytes of the entries recorded under a root that is gone.
    vanished: u64,
    /// Bytes of all the entries.
    all: u64,
}

/// Every `nth` record of `snapshot`, counted: the entries, their bytes, and the bytes of those
/// recorded under a root (a tree's working directory) that no longer exists (a deleted
/// checkout, a temporary directory, the old path of a moved tree not started since). One
/// `stat` per distinct root.
fn tally(snapshot: &Snapshot, nth: usize) -> Tally {
    let mut gone = GoneRoots::default();
    let mut tally = Tally::default();
    for (_, record) in snapshot.every_nth_record(nth) {
        #[cfg(test)]
        tests::RECORDS_READ.with(|read| read.set(read.get() + 1));
        let Some(record) = record else { continue };
        let len = crate::format::archived_stored_len(record);
        tally.entries += 1;
        tally.all = tally.all.saturating_add(len);
        if gone.holds(record) {
            tally.vanished = tally.vanished.saturating_add(len);
        }
    }
    tally
}

/// Which recorded roots are gone, asked once each.
#[derive(Default)]
struct GoneRoots<'a>(std::collections::HashMap<&'a [u8], bool>);

impl<'a> GoneRoots<'a> {
    /// Whether `record` was recorded under a root that is gone.
    fn holds(&mut self, record: &'a crate::format::ArchivedEntryRecord) -> bool {
        record.root.as_ref().is_some_and(|root| {
            *self
                .0
                .entry(root.as_slice())
                .or_insert_with(|| crate::freshness::root_is_gone(root))
        })
    }
}

/// The last handle on a cache re-records what its lookups found racy, if the writer lock is
/// free at once: a process that only reads (the bundle case) heals as `git status` refreshes
/// its index, never waiting and never failing for it.
impl Drop for Cache {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1
            && let Err(e) = self.refresh_racy()
        {
            log::debug!("bytecode-pack: racy inputs not re-recorded at drop: {e}");
        }
    }
}

// `Cache` is shared across threads and `Hit`s cross them; keep it that way.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache>();
    assert_send_sync::<Hit>();
};

impl Cache {
    /// The bytes of entries recorded under vanished roots in the published pack (of
    /// `live_bytes`), estimated once per handle and pack generation as their share of about
    /// [`VANISHED_SAMPLE`] records evenly spread over the index (and a `stat` per root), and
    /// only for a pack large enough to compact: what automatic compaction counts as dead
    /// besides superseded entries. (A sample, so that the first write of every process does
    /// not read and check every record of a large cache; `stats` counts exactly.)
    pub(crate) fn vanished_in(&self, generation: u64, pack_len: u64, live_bytes: u64) -> u64 {
        if pack_len < self.inner.options.compact_min_bytes {
            return 0;
        }
        let mut counted = self.inner.vanished.lock();
        match *counted {
            Some((in_generation, bytes)) if in_generation == generation => bytes,
            _ => {
                let snapshot = self.inner.snapshot.load_full();
                let nth = snapshot.rows().div_ceil(VANISHED_SAMPLE).max(1);
                let Tally { vanished, all, .. } = tally(&snapshot, nth);
                // A share, so that one large record sampled cannot stand for more than is live.
                let bytes = match all {
                    0 => 0,
                    all => (u128::from(live_bytes) * u128::from(vanished) / u128::from(all)) as u64,
                };
                *counted = Some((generation, bytes));
                bytes
            }
        }
    }

    /// The directory this handle uses, `<root>/<abi_tag>/`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether this process cannot write the cache directory (it belongs to root, as a cache
    /// shipped in a container image does, or is on a read-only mount). Such a handle serves
    /// hits and writes nothing: `put`, `compact` and `clear` return [`crate::Error::ReadOnly`],
    /// and racy inputs are not re-recorded.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Checks everything: the index against the rkyv validator, every entry's segments
    /// against their checksums and the pack's own segment headers. Reports problems; never
    /// changes the cache (a `compact` drops what is corrupt).
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        if self.inner.options.disabled {
            return Ok(crate::VerifyReport::default());
        }
        Ok(crate::verify::verify(&*self.reload()?))
    }

    /// Every live entry in the published index, not in one overall key order: the published
    /// `index` file's entries sorted by key, then (when it is a delta) the base's entries it
    /// does not shadow, sorted by key. Entries whose record fails its checks are left out.
    /// Reads no segment.
    pub fn entries(&self) -> Result<Vec<EntryInfo>> {
        if self.inner.options.disabled {
            return Ok(Vec::new());
        }
        let snapshot = self.reload()?;
        Ok(snapshot
            .records()
            .filter_map(|(_, record)| record)
            .map(|e| {
                let owned = crate::format::SegmentRef::from(&e.bytecode);
                let stored = crate::format::archived_stored_len(e);
                let nanos = e.recorded_at_ns.to_native();
                EntryInfo {
                    key: Key::from_bytes(e.key),
                    module_name: e.module_name.as_str().to_owned(),
                    bytecode_bytes: owned.len,
                    stored_bytes: stored,
                    inputs: e.inputs.len() as u64,
                    recorded_at: std::time::UNIX_EPOCH
                        + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)),
                }
            })
            .collect())
    }

    /// The cache directory's state and this handle's counters. Reads the published index.
    pub fn stats(&self) -> Result<Stats> {
        let counters = self.inner.counters.read();
        let dir = self.inner.dir.clone();
        if self.inner.options.disabled {
            return Ok(Stats {
                entries: 0,
                pack_bytes: 0,
                live_bytes: 0,
                index_bytes: 0,
                generation: 0,
                dir,
                damage: None,
                counters,
            });
        }
        let snapshot = self.reload()?;
        let generation = snapshot.generation();
        // What was recorded under a tree that is gone is dead: the next compaction drops it.
        let Tally {
            entries,
            vanished,
            all: mut live_bytes,
        } = tally(&snapshot, 1);
        if generation != 0 {
            live_bytes += crate::format::PACK_HEADER_LEN;
        }
        live_bytes = live_bytes.saturating_sub(vanished);
        let pack_bytes = std::fs::symlink_metadata(dir.join(files::pack_file_name(generation)))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Stats {
            entries,
            pack_bytes: if generation == 0 { 0 } else { pack_bytes },
            live_bytes,
            index_bytes: snapshot.index_len(),
            generation,
            dir,
            damage: snapshot.damage().map(|d| d.to_string()),
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cache, Input, Key, NewEntry};

    thread_local! {
        /// Records read by `tally` on this thread.
        pub(super) static RECORDS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Stores `count` entries of `len` bytes recorded under a new tree `name` in `dir`.
    fn entries_under(cache: &Cache, dir: &std::path::Path, name: &str, count: u32, len: usize) {
        let root = dir.join(name);
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("m.js"), name).unwrap();
        let bytecode = vec![7u8; len];
        let entry = NewEntry::new("m.js", &bytecode)
            .inputs(vec![Input::path(root.join("m.js"))])
            .relative_to(&root);
        let keys = (0..count).map(|i| Key::for_source(name, &i.to_le_bytes()));
        cache.put_many(keys.map(|k| (k, &entry))).unwrap();
    }

    /// A large cache's write estimates what deleted trees left from a sample of its records,
    /// close to the exact count `stats` makes.
    #[test]
    fn vanished_bytes_are_estimated_from_a_sample_close_to_the_exact_count() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path().join("cache")).unwrap();
        entries_under(&cache, tmp.path(), "kept", 3000, 3000);
        entries_under(&cache, tmp.path(), "deleted", 1500, 3000);
        entries_under(&cache, tmp.path(), "small", 30, 3000);
        std::fs::remove_dir_all(tmp.path().join("deleted")).unwrap();
        std::fs::remove_dir_all(tmp.path().join("small")).unwrap();
        // A new handle: one counts once per pack generation.
        let cache = Cache::open(tmp.path().join("cache")).unwrap();
        let snapshot = cache.inner.snapshot.load_full();
        let exact = super::tally(&snapshot, 1).vanished;
        let fields = snapshot.head().unwrap().index().header().fields;
        assert!(fields.pack_len >= cache.inner.options.compact_min_bytes);
        RECORDS_READ.with(|read| read.set(0));
        let estimate = cache.vanished_in(fields.generation, fields.pack_len, fields.live_bytes);
        let ratio = estimate as f64 / exact as f64;
        assert!((0.85..1.15).contains(&ratio), "{estimate} against {exact}");
        let read = RECORDS_READ.with(|read| read.get());
        assert!(read <= 2 * super::VANISHED_SAMPLE, "{read} records read");
    }
}
