//! The public handle: opening a cache, `get`, `put`, maintenance and statistics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::abi::abi_tag;
use crate::compact::{self, CompactReport};
use crate::error::{Error, Result};
use crate::format::ArchivedEntryRecord;
use crate::freshness::{self, Input};
use crate::fsys;
use crate::key::Key;
use crate::options::{Durability, Options};
use crate::snapshot::{self, Found, Snapshot};
use crate::writer::{self, PreparedEntry, WriteState, index_temp};

/// Names the cache root; overrides the per-user cache directory in [`Cache::open_default`].
pub const ENV_CACHE_DIR: &str = "BYTECODE_PACK_CACHE_DIR";
/// Set to `1` (or `true`, `yes`) to make every `get` miss and every `put` a no-op.
pub const ENV_DISABLE: &str = "BYTECODE_PACK_DISABLE";

/// A handle on one cache directory, `<root>/<abi_tag>/`.
///
/// Cheap to clone (clones share one snapshot and one set of counters), `Send` and `Sync`.
/// Any number of handles in any number of processes may use the same directory at once.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// `dir/index`, joined once: a miss checks it for a newer publication.
    index_path: PathBuf,
    options: Options,
    snapshot: ArcSwap<Snapshot>,
    /// Serialises this handle's writers before they contend for the file lock (a flock is
    /// per open file description, so threads must not share one unguarded).
    writer: parking_lot::Mutex<()>,
    /// Whether this handle has swept leftovers of crashed writers yet (once per handle).
    swept: std::sync::atomic::AtomicBool,
    counters: AtomicCounters,
}

/// Options for opening a cache; from [`Cache::builder`].
#[derive(Debug, Clone)]
pub struct CacheBuilder {
    root: PathBuf,
    options: Options,
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
    /// with [`Error::LockTimeout`]. Default 5 s.
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

    /// Makes the handle inert: every `get` misses and every `put` does nothing. Defaults to
    /// whether [`ENV_DISABLE`] is set.
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.options.disabled = disabled;
        self
    }

    /// Opens (creating if needed) the cache under the root. The root is created with mode
    /// 0700 if missing; the root and the cache directory must belong to this user and not be
    /// writable by group or others, and the cache directory must not be a symlink.
    pub fn open(self) -> Result<Cache> {
        // Resolved once: a relative root must not follow the process's later `chdir`s.
        let root = std::path::absolute(&self.root).map_err(Error::io(&self.root))?;
        let dir = root.join(abi_tag());
        let snapshot = if self.options.disabled {
            Snapshot::empty()
        } else {
            fsys::ensure_private_dir(&root, true)?;
            fsys::ensure_private_dir(&dir, false)?;
            Snapshot::load(&dir, abi_tag())?
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                index_path: dir.join(snapshot::INDEX_FILE),
                dir,
                options: self.options,
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: parking_lot::Mutex::new(()),
                swept: std::sync::atomic::AtomicBool::new(false),
                counters: AtomicCounters::default(),
            }),
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

/// What [`Cache::put`] stores: bytecode, and optionally a source map, an opaque sidecar and
/// the inputs whose content the bytecode depends on.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub(crate) module_name: &'a str,
    pub(crate) bytecode: &'a [u8],
    pub(crate) source_map: Option<&'a str>,
    pub(crate) aux: Option<&'a str>,
    pub(crate) inputs: Vec<Input>,
    pub(crate) flags: u32,
}

impl<'a> NewEntry<'a> {
    /// An entry for `module_name` holding `bytecode`.
    pub fn new(module_name: &'a str, bytecode: &'a [u8]) -> Self {
        NewEntry {
            module_name,
            bytecode,
            source_map: None,
            aux: None,
            inputs: Vec::new(),
            flags: 0,
        }
    }

    /// Marks the bytecode as produced by this crate's QuickJS compile path.
    #[cfg(feature = "quickjs")]
    pub(crate) fn engine_bytecode(mut self) -> Self {
        self.flags |= crate::format::FLAG_ENGINE_BYTECODE;
        self
    }

    /// Bytecode, source map and aux, in segment-kind order.
    pub(crate) fn payloads(&self) -> [Option<&'a [u8]>; 3] {
        [
            Some(self.bytecode),
            self.source_map.map(str::as_bytes),
            self.aux.map(str::as_bytes),
        ]
    }

    /// Bytes the entry takes in the pack: its segments with their headers.
    pub(crate) fn stored_len(&self) -> u64 {
        self.payloads()
            .iter()
            .flatten()
            .map(|p| p.len() as u64 + crate::format::SEGMENT_HEADER_LEN)
            .sum()
    }

    /// Stores the module's source map with it.
    pub fn source_map(mut self, source_map: &'a str) -> Self {
        self.source_map = Some(source_map);
        self
    }

    /// Stores an opaque caller sidecar with it (e.g. a JSON list of the module's imports).
    pub fn aux(mut self, aux: &'a str) -> Self {
        self.aux = Some(aux);
        self
    }

    /// The files the bytecode was compiled from; if any of them changes, the entry misses.
    pub fn inputs(mut self, inputs: Vec<Input>) -> Self {
        self.inputs = inputs;
        self
    }
}

// `Cache` is shared across threads and `Hit`s cross them; keep it that way.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache>();
    assert_send_sync::<Hit>();
};

/// A cache hit: verified bytes, borrowed straight from the mapped pack.
///
/// A `Hit` keeps its snapshot of the cache alive, so its bytes stay valid while other handles
/// or processes append, compact or clear.
pub struct Hit {
    snapshot: Arc<Snapshot>,
    entry: usize,
    /// Where the bytecode is in the pack mapping, resolved once.
    bytecode: std::ops::Range<usize>,
}

impl Hit {
    fn record(&self) -> &ArchivedEntryRecord {
        // The record passed its checks when the hit was made, and that verdict is kept.
        self.snapshot
            .record(self.entry)
            .expect("a hit's record was checked")
    }

    /// The bytecode, checksum-verified, zero-copy.
    pub fn bytecode(&self) -> &[u8] {
        self.snapshot
            .pack()
            .get(self.bytecode.clone())
            .unwrap_or(&[])
    }

    /// The module name given to `put`.
    pub fn module_name(&self) -> &str {
        self.record().module_name.as_str()
    }

    /// The source map, if one was stored.
    pub fn source_map(&self) -> Option<&str> {
        let segment = self.record().source_map.as_ref()?;
        std::str::from_utf8(self.snapshot.segment(segment)).ok()
    }

    /// Whether the bytecode came from this crate's QuickJS compile path.
    #[cfg(feature = "quickjs")]
    pub(crate) fn is_engine_bytecode(&self) -> bool {
        self.record().flags.to_native() & crate::format::FLAG_ENGINE_BYTECODE != 0
    }

    /// The caller's sidecar, if one was stored.
    pub fn aux(&self) -> Option<&str> {
        let segment = self.record().aux.as_ref()?;
        std::str::from_utf8(self.snapshot.segment(segment)).ok()
    }
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("module_name", &self.module_name())
            .field("bytecode_len", &self.bytecode().len())
            .finish()
    }
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
    /// Successful `put`s.
    pub puts: u64,
    /// Compactions run by this handle, requested or automatic.
    pub compactions: u64,
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

#[derive(Default)]
struct AtomicCounters {
    hits: AtomicU64,
    misses_absent: AtomicU64,
    misses_stale: AtomicU64,
    misses_corrupt: AtomicU64,
    misses_io: AtomicU64,
    misses_disabled: AtomicU64,
    input_rehashes: AtomicU64,
    puts: AtomicU64,
    compactions: AtomicU64,
}

impl AtomicCounters {
    fn miss(&self, reason: MissReason) {
        let counter = match reason {
            MissReason::Absent => &self.misses_absent,
            MissReason::Stale => &self.misses_stale,
            MissReason::Corrupt => &self.misses_corrupt,
            MissReason::Io => &self.misses_io,
            MissReason::Disabled => &self.misses_disabled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Counters {
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
        }
    }
}

/// One live entry, as listed by [`Cache::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Its key.
    pub key: Key,
    /// The module name given to `put`.
    pub module_name: String,
    /// Bytecode length.
    pub bytecode_bytes: u64,
    /// Bytes of all its segments in the pack, headers included.
    pub stored_bytes: u64,
    /// How many inputs it records.
    pub inputs: u64,
    /// When it was recorded.
    pub recorded_at: std::time::SystemTime,
}

/// The state of a cache directory, and this handle's counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Live entries.
    pub entries: u64,
    /// Bytes in the current pack file, dead space included.
    pub pack_bytes: u64,
    /// Bytes in the pack that live entries use (header included).
    pub live_bytes: u64,
    /// Bytes of the index file.
    pub index_bytes: u64,
    /// The current pack generation (increases with every compaction or clear).
    pub generation: u64,
    /// The cache directory.
    pub dir: PathBuf,
    /// Why the published index or its pack was rejected, if it was (which file, what was
    /// wrong). Every `get` misses until the next write rebuilds the cache.
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

    /// Options for opening the cache under `root`.
    pub fn builder(root: impl AsRef<Path>) -> CacheBuilder {
        CacheBuilder {
            root: root.as_ref().to_path_buf(),
            options: Options {
                disabled: disabled_by_env(),
                ..Options::default()
            },
        }
    }

    /// The directory this handle uses, `<root>/<abi_tag>/`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Looks up `key`. Any miss, stale input, corruption or I/O error is `None`; the reason
    /// is counted in [`Cache::stats`] and logged at debug level. Never blocks on writers.
    pub fn get(&self, key: &Key) -> Option<Hit> {
        self.lookup(key).ok()
    }

    /// [`Cache::get`], saying why it missed.
    pub fn lookup(&self, key: &Key) -> Result<Hit, MissReason> {
        let inner = &self.inner;
        if inner.options.disabled {
            inner.counters.miss(MissReason::Disabled);
            return Err(MissReason::Disabled);
        }
        let snapshot = inner.snapshot.load_full();
        let counters = &inner.counters;
        let result = match lookup_in(&snapshot, key, counters) {
            Ok(hit) => Ok(hit),
            // A handle sees other processes' writes no later than its next miss.
            Err(reason) => match self.refresh_if_changed(&snapshot) {
                Ok(Some(newer)) => lookup_in(&newer, key, counters),
                Ok(None) => Err(reason),
                Err(e) => {
                    log::debug!("bytecode-pack: cannot reload {}: {e}", inner.dir.display());
                    Err(MissReason::Io)
                }
            },
        };
        match &result {
            Ok(_) => {
                inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => {
                inner.counters.miss(*reason);
                log::debug!("bytecode-pack: miss ({reason:?}) for {key}");
            }
        }
        result
    }

    /// Loads the published index if it is not the one `current` was read from.
    fn refresh_if_changed(&self, current: &Snapshot) -> Result<Option<Arc<Snapshot>>> {
        let published = snapshot::published_identity(&self.inner.index_path);
        if published == current.identity() {
            return Ok(None);
        }
        Ok(Some(self.reload()?))
    }

    fn reload(&self) -> Result<Arc<Snapshot>> {
        let fresh = Arc::new(Snapshot::load(&self.inner.dir, abi_tag())?);
        self.inner.snapshot.store(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Stores `entry` under `key`, replacing any entry there, and publishes it to every
    /// handle. Inputs are hashed before the writer lock is taken. Returns once the entry is
    /// durable against a process crash (and, with [`Durability::Full`], a power loss).
    pub fn put(&self, key: &Key, entry: &NewEntry<'_>) -> Result<()> {
        self.put_many(std::iter::once((*key, entry)))
    }

    /// Stores several entries under one lock and one index publication: much cheaper than
    /// as many `put`s when filling a cache (each publication rewrites the index). All or
    /// nothing: on an error, none of them is published.
    pub fn put_many<'e, 'a: 'e>(
        &self,
        entries: impl IntoIterator<Item = (Key, &'e NewEntry<'a>)>,
    ) -> Result<()> {
        let options = &self.inner.options;
        if options.disabled {
            return Ok(());
        }
        let mut prepared = Vec::new();
        let mut batch_bytes = crate::format::PACK_HEADER_LEN;
        for (key, entry) in entries {
            let size = entry.stored_len();
            batch_bytes = batch_bytes.saturating_add(size);
            if batch_bytes > options.max_bytes {
                // Storing it would mean evicting part of what this very call acknowledges.
                return Err(Error::InvalidEntry(format!(
                    "{}: the batch needs {batch_bytes} bytes, over the cache's max_bytes of {}",
                    entry.module_name, options.max_bytes
                )));
            }
            let inputs = entry
                .inputs
                .iter()
                .map(freshness::record)
                .collect::<Result<Vec<_>>>()?;
            prepared.push(PreparedEntry {
                key,
                entry,
                inputs,
                recorded_at_ns: freshness::now_nanos(),
            });
        }
        if prepared.is_empty() {
            return Ok(());
        }
        let count = prepared.len() as u64;
        let compacted = self.write(|state| {
            let first_new_seq = state.body.next_seq;
            state.append_many(prepared, options.durability)?;
            if options.wants_compaction(state.pack_file_len, state.body.live_bytes()) {
                // The new entries are appended but unpublished: compaction carries them over,
                // and never evicts them.
                compact::compact(state, options, Some(first_new_seq))?;
                return Ok(true);
            }
            Ok(false)
        })?;
        let counters = &self.inner.counters;
        counters.puts.fetch_add(count, Ordering::Relaxed);
        if compacted {
            counters.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Rewrites the live entries into a new pack, dropping superseded, stale (an input is
    /// gone or changed) and corrupt entries, and evicting over the size limit. Readers
    /// holding hits from before keep them.
    ///
    /// ```
    /// use bytecode_pack::{Cache, Key, NewEntry};
    ///
    /// # fn main() -> Result<(), bytecode_pack::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = Cache::open(dir.path())?;
    /// let key = Key::for_source("m.js", b"export default 1");
    /// for version in 0..10u8 {
    ///     cache.put(&key, &NewEntry::new("m.js", &[version; 1000]))?; // supersedes
    /// }
    /// let held = cache.get(&key).unwrap();
    /// let report = cache.compact()?;
    /// assert!(report.pack_bytes_after < report.pack_bytes_before / 5);
    /// assert_eq!(held.bytecode(), &[9; 1000]); // still valid: it maps the old generation
    /// assert_eq!(cache.stats()?.dead_bytes(), 0);
    /// # Ok(()) }
    /// ```
    pub fn compact(&self) -> Result<CompactReport> {
        if self.inner.options.disabled {
            return Ok(CompactReport::default());
        }
        let report = self.write(|state| compact::compact(state, &self.inner.options, None))?;
        self.inner
            .counters
            .compactions
            .fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Removes every entry, starting a new, empty pack generation.
    pub fn clear(&self) -> Result<()> {
        if self.inner.options.disabled {
            return Ok(());
        }
        self.write(|state| {
            state.body.entries.clear();
            state.body.generation += 1;
            state.body.pack_len = 0;
            state.pack_file_len = 0;
            Ok(())
        })
    }

    /// Runs `change` on the published state under the writer lock, then publishes the
    /// result, sweeps leftovers of other generations and refreshes this handle's snapshot.
    fn write<T>(&self, change: impl FnOnce(&mut WriteState) -> Result<T>) -> Result<T> {
        let inner = &self.inner;
        let dir = &inner.dir;
        // One deadline for both waits: this handle's other threads, then other processes.
        let started = Instant::now();
        let deadline = started + inner.options.lock_timeout;
        let _local = inner
            .writer
            .try_lock_until(deadline)
            .ok_or_else(|| Error::LockTimeout {
                path: dir.join(writer::LOCK_FILE),
                waited: started.elapsed(),
            })?;
        if let Err(e) = std::fs::symlink_metadata(dir)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            // Deleted under this running process (a `rm -rf ~/.cache`): start again, with the
            // same checks as opening.
            if let Some(root) = dir.parent() {
                fsys::ensure_private_dir(root, true)?;
            }
            fsys::ensure_private_dir(dir, false)?;
        }
        let _lock = writer::lock(dir, started, deadline)?;
        crate::faults::crash_point("write:locked");
        let mut state = WriteState::load(dir, abi_tag())?;
        let generation_before = state.body.generation;
        let first_write = !inner.swept.load(Ordering::Relaxed);
        if first_write {
            crate::maintenance::mark_cache_dir(dir);
        }
        let out = index_temp(dir).and_then(|temp| {
            let out = change(&mut state)?;
            state.publish(temp, inner.options.durability)?;
            Ok(out)
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                state.roll_back();
                return Err(e);
            }
        };
        crate::faults::crash_point("publish:renamed");
        inner.swept.store(true, Ordering::Relaxed);
        let new_generation = state.body.generation != generation_before;
        if first_write || new_generation {
            writer::sweep(dir, state.body.generation);
        }
        if let (true, Some(age), Some(root)) = (
            new_generation,
            inner.options.prune_other_abis_after,
            dir.parent(),
        ) {
            // Housekeeping rides on compactions, which are rare; a failure only costs space.
            match crate::maintenance::prune_other_abis(root, age) {
                Ok(report) => {
                    for skipped in &report.skipped {
                        log::debug!(
                            "bytecode-pack: not pruning {}: {}",
                            skipped.path.display(),
                            skipped.reason
                        );
                    }
                }
                Err(e) => log::warn!("bytecode-pack: pruning other ABI tags: {e}"),
            }
        }
        drop(_lock);
        if let Err(e) = self.reload() {
            log::debug!("bytecode-pack: cannot reload after writing: {e}");
        }
        Ok(out)
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

    /// Every live entry in the published index, in key order. Reads no segment.
    pub fn entries(&self) -> Result<Vec<EntryInfo>> {
        if self.inner.options.disabled {
            return Ok(Vec::new());
        }
        let snapshot = self.reload()?;
        Ok(snapshot
            .records()
            .flatten()
            .map(|e| {
                let owned = crate::format::SegmentRef::from(&e.bytecode);
                let stored: u64 = crate::format::archived_segments(e)
                    .map(|(_, s)| crate::format::SegmentRef::from(s).stored_len())
                    .sum();
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
        let (mut entries, mut live_bytes) = (0, 0);
        for e in snapshot.records().flatten() {
            entries += 1;
            live_bytes += crate::format::archived_segments(e)
                .map(|(_, s)| crate::format::SegmentRef::from(s).stored_len())
                .sum::<u64>();
        }
        if generation != 0 {
            live_bytes += crate::format::PACK_HEADER_LEN;
        }
        let pack_bytes = std::fs::symlink_metadata(dir.join(snapshot::pack_file_name(generation)))
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

/// Looks `key` up in one snapshot: present, intact, and every input fresh.
fn lookup_in(
    snapshot: &Arc<Snapshot>,
    key: &Key,
    counters: &AtomicCounters,
) -> Result<Hit, MissReason> {
    let (i, entry) = match snapshot.find(key.as_bytes()) {
        Found::Entry(i, entry) => (i, entry),
        Found::Damaged => return Err(MissReason::Corrupt),
        Found::Absent if snapshot.is_damaged() => return Err(MissReason::Corrupt),
        Found::Absent => return Err(MissReason::Absent),
    };
    if !snapshot.segments_intact(i, entry) {
        return Err(MissReason::Corrupt);
    }
    let recorded_at = entry.recorded_at_ns.to_native();
    for input in entry.inputs.iter() {
        match freshness::check(input.into(), recorded_at) {
            freshness::Freshness::Trusted => {}
            freshness::Freshness::Rehashed { .. } => {
                counters.input_rehashes.fetch_add(1, Ordering::Relaxed);
            }
            freshness::Freshness::Stale => return Err(MissReason::Stale),
        }
    }
    let bytecode = snapshot.segment_range(&entry.bytecode);
    Ok(Hit {
        snapshot: Arc::clone(snapshot),
        entry: i,
        bytecode,
    })
}
