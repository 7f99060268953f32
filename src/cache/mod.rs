//! The public handle: `get`, `put`, maintenance and statistics.

mod builder;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use builder::{CacheBuilder, ENV_CACHE_DIR, ENV_DISABLE, default_root};

use crate::abi::abi_tag;
use crate::compact::{self, CompactReport};
use crate::entry::{EntryInfo, Hit, NewEntry};
use crate::error::{Error, Result};
use crate::files;
use crate::format;
use crate::freshness;
use crate::key::Key;
use crate::options::Options;
use crate::snapshot::{self, Found, Snapshot};
use crate::stats::{AtomicCounters, MissReason, Stats};
use crate::writer::{self, Commit, PreparedEntry, Refresh, Transaction, WriteState};

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
}

impl Inner {
    /// Whether automatic compaction may run on a pack of `generation` that is `pack_len` long
    /// (see [`Inner::compaction_retry`]).
    fn may_compact(&self, generation: u64, pack_len: u64) -> bool {
        self.compaction_retry
            .lock()
            .is_none_or(|(failed_in, retry_at)| failed_in != generation || pack_len >= retry_at)
    }
}

/// At most this many refreshes wait for a write; more are dropped (they only cost re-hashes).
const MAX_PENDING_REFRESHES: usize = 1 << 16;

// `Cache` is shared across threads and `Hit`s cross them; keep it that way.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache>();
    assert_send_sync::<Hit>();
};

impl Cache {
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
        self.lookup_with(key, None)
    }

    /// [`Cache::lookup`] for a caller that misses in runs (a first start misses on every
    /// module, and `quickjs::PackLoader` looks modules up this way): a miss checks for a newer
    /// publication (a `stat` of the index) only if no throttled miss through this handle did
    /// in the last `interval`, so other processes' writes are seen within `interval` rather
    /// than by the next miss.
    pub fn lookup_throttled(&self, key: &Key, interval: Duration) -> Result<Hit, MissReason> {
        self.lookup_with(key, Some(interval))
    }

    fn lookup_with(&self, key: &Key, throttle: Option<Duration>) -> Result<Hit, MissReason> {
        let inner = &self.inner;
        if inner.options.disabled {
            inner.counters.miss(MissReason::Disabled);
            return Err(MissReason::Disabled);
        }
        let snapshot = inner.snapshot.load_full();
        let result = match lookup_in(&snapshot, key, inner) {
            Ok(hit) => Ok(hit),
            // A handle sees other processes' writes no later than its next miss (or, throttled,
            // its next miss once the interval passed).
            Err(reason) if !self.due_for_refresh(throttle) => Err(reason),
            Err(reason) => match self.refresh_if_changed(&snapshot) {
                Ok(Some(newer)) => lookup_in(&newer, key, inner),
                Ok(None) => Err(reason),
                Err(e) => {
                    log::debug!("bytecode-pack: cannot reload {}: {e}", inner.dir.display());
                    Err(MissReason::Io)
                }
            },
        };
        match &result {
            Ok(_) => {
                inner.counters.hit();
            }
            Err(reason) => {
                inner.counters.miss(*reason);
                log::debug!("bytecode-pack: miss ({reason:?}) for {key}");
            }
        }
        result
    }

    /// Whether a throttled miss should check for a newer publication now; notes the check.
    /// An unthrottled miss always checks and reads no clock.
    fn due_for_refresh(&self, throttle: Option<Duration>) -> bool {
        let Some(interval) = throttle else {
            return true;
        };
        // Microseconds since opening, plus one: 0 means never checked.
        let now = self.inner.opened.elapsed().as_micros() as u64 + 1;
        let last = self.inner.checked_at_us.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= interval.as_micros() as u64;
        if due {
            self.inner.checked_at_us.store(now, Ordering::Relaxed);
        }
        due
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
    /// durable against a process crash (and, with [`crate::Durability::Full`], a power loss).
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
        self.put_many_within(entries, self.inner.options.lock_timeout)
    }

    /// [`Cache::put_many`], waiting at most `wait` for the writer lock (another process's
    /// write or compaction) instead of the handle's `lock_timeout`: for a store at exit that
    /// should give up quickly, since what it could not store is only compiled again next time
    /// (`quickjs::PackLoader` stores so).
    pub fn put_many_within<'e, 'a: 'e>(
        &self,
        entries: impl IntoIterator<Item = (Key, &'e NewEntry<'a>)>,
        wait: Duration,
    ) -> Result<()> {
        if self.inner.options.disabled {
            return Ok(());
        }
        self.put_batch(entries.into_iter().collect(), wait)
    }

    /// The most a batch of entries may take in the pack (their [`NewEntry`] stored lengths
    /// added up): a larger batch fails `put_many`, since storing it would evict part of what
    /// the call acknowledges.
    pub fn max_batch_bytes(&self) -> u64 {
        (self.inner.options.max_bytes).saturating_sub(crate::format::PACK_HEADER_LEN)
    }

    fn put_batch(&self, entries: Vec<(Key, &NewEntry<'_>)>, wait: Duration) -> Result<()> {
        let options = &self.inner.options;
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
            let mut valid_from = i64::MAX;
            let inputs = entry
                .inputs
                .iter()
                .map(|input| {
                    freshness::record(input).map(|(record, from)| {
                        valid_from = valid_from.min(from);
                        record
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            prepared.push(PreparedEntry {
                key,
                entry,
                inputs,
                // After every input was hashed, or when the earliest observed read began.
                recorded_at_ns: freshness::now_nanos().min(valid_from),
            });
        }
        if prepared.is_empty() {
            return Ok(());
        }
        let count = prepared.len() as u64;
        // A put that will likely compact, by the published index, judges the published
        // entries' inputs before it takes the lock, as `compact` does.
        let checked_ahead = if self.compaction_likely(&prepared) {
            self.check_inputs_ahead()
        } else {
            compact::CheckedAhead::default()
        };
        let inner = &self.inner;
        let compacted = self.write(wait, |state| {
            let first_new_seq = state.fields.next_seq;
            state.append_many(prepared, options.durability)?;
            if options.wants_compaction(state.pack_file_len, state.fields.live_bytes)
                && inner.may_compact(state.fields.generation, state.pack_file_len)
            {
                // The new entries are appended but unpublished: compaction carries them over,
                // and never evicts them.
                match compact::compact(state, options, Some(first_new_seq), checked_ahead) {
                    Ok(_) => {
                        *inner.compaction_retry.lock() = None;
                        return Ok(true);
                    }
                    // The rewrite needs room for every live entry where the append needed
                    // room for its own (a disk nearly full), or its name is taken: the
                    // append is published as it is, and puts try again once the pack has
                    // grown by a quarter.
                    Err(e) => {
                        log::warn!("bytecode-pack: compaction failed, put without it: {e}");
                        let len = state.pack_file_len;
                        *inner.compaction_retry.lock() =
                            Some((state.fields.generation, len.saturating_add(len / 4)));
                    }
                }
            }
            Ok(false)
        })?;
        self.inner.counters.published(count, compacted);
        Ok(())
    }

    /// Rewrites the live entries into a new pack, dropping superseded, stale (an input is
    /// gone or changed) and corrupt entries, and evicting over the size limit. Readers
    /// holding hits from before keep them. Inputs are checked before the writer lock is
    /// taken (only entries written meanwhile are checked under it), so other writers do not
    /// wait for the re-hashing.
    ///
    /// ```
    /// use bytecode_pack::{Cache, Key, NewEntry};
    ///
    /// # fn main() -> Result<(), bytecode_pack::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = Cache::open(dir.path().join("cache"))?;
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
        let checked_ahead = self.check_inputs_ahead();
        let options = &self.inner.options;
        let report = self.write(options.lock_timeout, |state| {
            compact::compact(state, options, None, checked_ahead)
        })?;
        self.inner.counters.published(0, true);
        Ok(report)
    }

    /// Whether publishing `batch` would start a compaction, judged by the published index and
    /// counted by the writer's own rule ([`writer::account_replacement`]): the pack grows by
    /// every entry, and live data by the entries less what they supersede (the usual way dead
    /// space grows past its share).
    fn compaction_likely(&self, batch: &[PreparedEntry]) -> bool {
        let current = self.inner.snapshot.load_full();
        let snapshot = match self.refresh_if_changed(&current) {
            Ok(Some(fresh)) => fresh,
            _ => current,
        };
        let Some(head) = snapshot.head() else {
            return false;
        };
        let mut fields = head.index().header().fields;
        let mut in_batch = HashMap::with_capacity(batch.len());
        for prepared in batch {
            let (key, len) = (*prepared.key.as_bytes(), prepared.entry.stored_len());
            fields.pack_len = fields.pack_len.saturating_add(len);
            let replaced = match in_batch.insert(key, len) {
                Some(earlier) => Some(Some(earlier)),
                None => match snapshot.find(&key) {
                    Found::Entry(_, stored) => Some(Some(format::archived_stored_len(stored))),
                    Found::Damaged => Some(None),
                    Found::Absent => None,
                },
            };
            writer::account_replacement(&mut fields, replaced, len);
        }
        (self.inner.options).wants_compaction(fields.pack_len, fields.live_bytes)
            && self.inner.may_compact(fields.generation, fields.pack_len)
    }

    /// Judges the published entries' inputs for a compaction without the writer lock, so that
    /// under it only entries published meanwhile are judged. A cache that cannot be read now
    /// is judged under the lock instead.
    fn check_inputs_ahead(&self) -> compact::CheckedAhead {
        compact::check_inputs_ahead(writer::published_entries(&self.inner.dir, abi_tag()))
    }

    /// Removes every entry, starting a new, empty pack generation.
    pub fn clear(&self) -> Result<()> {
        if self.inner.options.disabled {
            return Ok(());
        }
        self.write(self.inner.options.lock_timeout, |state| {
            let generation = writer::next_generation_after(&state.dir, state.fields.generation)?;
            state.replace_all(Vec::new(), generation, 0);
            Ok(())
        })
    }

    /// Runs `change` on the published state under the writer lock (waiting for it at most
    /// `wait`), then publishes the result, sweeps leftovers of other generations and refreshes
    /// this handle's snapshot.
    fn write<T>(
        &self,
        wait: Duration,
        change: impl FnOnce(&mut WriteState) -> Result<T>,
    ) -> Result<T> {
        self.write_counting_refreshes(wait, change)
            .map(|(out, _)| out)
    }

    /// Re-records the stat data of inputs that lookups through this handle had to re-hash
    /// because it was racy (recorded too close to an edit, as after `tar` or `npm install`)
    /// and found unchanged, so that later lookups trust one `stat` again, as `git status`
    /// refreshes its index. Puts do this on the way; a host that only reads calls it, e.g. at
    /// exit ([`crate::quickjs::PackLoader`] does when dropped).
    ///
    /// Never waits: if another writer holds the lock, nothing is written and the refreshes
    /// stay pending for this handle's next write. Returns how many entries were re-recorded;
    /// an entry superseded or compacted meanwhile is left alone.
    pub fn refresh_racy(&self) -> Result<usize> {
        if self.inner.options.disabled || self.inner.racy.lock().is_empty() {
            return Ok(0);
        }
        match self.write_counting_refreshes(Duration::ZERO, |_| Ok(())) {
            Ok((_, refreshed)) => Ok(refreshed),
            Err(Error::LockTimeout { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// [`Cache::write`], also applying the pending refreshes; says how many took.
    fn write_counting_refreshes<T>(
        &self,
        wait: Duration,
        change: impl FnOnce(&mut WriteState) -> Result<T>,
    ) -> Result<(T, usize)> {
        let inner = &self.inner;
        // One deadline for both waits: this handle's other threads, then other processes.
        let started = Instant::now();
        // A wait past what an `Instant` can hold (`Duration::MAX`) means no deadline.
        let deadline = started.checked_add(wait);
        let local = match deadline {
            Some(deadline) => inner.writer.try_lock_until(deadline),
            None => Some(inner.writer.lock()),
        };
        let _local = local.ok_or_else(|| Error::LockTimeout {
            path: inner.dir.join(files::LOCK_FILE),
            waited: started.elapsed(),
        })?;
        let first_write = !inner.swept.load(Ordering::Relaxed);
        let mut write = Transaction::begin(&inner.dir, abi_tag(), started, deadline, first_write)?;
        let refreshes = std::mem::take(&mut *inner.racy.lock());
        let out = change(write.state())?;
        let refreshed = refreshes
            .iter()
            .filter(|r| write.state().refresh(r))
            .count();
        let committed = write.commit(Commit {
            durability: inner.options.durability,
            sweep_anyway: first_write,
        })?;
        inner.counters.publication();
        inner.swept.store(true, Ordering::Relaxed);
        if committed.new_generation {
            self.prune_other_abis();
        }
        if let Err(e) = self.reload() {
            log::debug!("bytecode-pack: cannot reload after writing: {e}");
        }
        Ok((out, refreshed))
    }

    /// Removes other builds' caches under this one's root that went unused for the configured
    /// age: housekeeping that rides on new generations (compactions), which are rare. A failure
    /// only costs space.
    fn prune_other_abis(&self) {
        let (Some(age), Some(root)) = (
            self.inner.options.prune_other_abis_after,
            self.inner.dir.parent(),
        ) else {
            return;
        };
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
        for (_, e) in snapshot.records() {
            let Some(e) = e else { continue };
            entries += 1;
            live_bytes += crate::format::archived_segments(e)
                .map(|(_, s)| crate::format::SegmentRef::from(s).stored_len())
                .sum::<u64>();
        }
        if generation != 0 {
            live_bytes += crate::format::PACK_HEADER_LEN;
        }
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

/// Looks `key` up in one snapshot: present, intact, and every input fresh.
fn lookup_in(snapshot: &Arc<Snapshot>, key: &Key, inner: &Inner) -> Result<Hit, MissReason> {
    let (i, entry) = match snapshot.find(key.as_bytes()) {
        Found::Entry(i, entry) => (i, entry),
        Found::Damaged => return Err(MissReason::Corrupt),
        Found::Absent if snapshot.is_rejected() => return Err(MissReason::Corrupt),
        Found::Absent => return Err(MissReason::Absent),
    };
    if !snapshot.segments_intact(i, entry) {
        return Err(MissReason::Corrupt);
    }
    let recorded_at = entry.recorded_at_ns.to_native();
    let mut rehashed = Vec::new();
    for (i, input) in entry.inputs.iter().enumerate() {
        match freshness::check(input.into(), recorded_at) {
            freshness::Freshness::Trusted => {}
            freshness::Freshness::Rehashed { stat, read_from } => {
                inner.counters.input_rehashed();
                rehashed.push((i, stat, read_from));
            }
            freshness::Freshness::Stale => return Err(MissReason::Stale),
        }
    }
    // Re-recorded by the handle's next write, if that lets later lookups trust one `stat`.
    if let Some(rerecord) = freshness::rerecord(&rehashed)
        && rerecord.stats.iter().any(|(_, stat)| stat.is_some())
    {
        let mut racy = inner.racy.lock();
        if racy.len() < MAX_PENDING_REFRESHES {
            racy.push(Refresh {
                key: *key.as_bytes(),
                version: (&entry.bytecode).into(),
                stats: rerecord.stats,
                observed_at_ns: rerecord.recorded_at_ns,
            });
        }
    }
    let bytecode = snapshot.segment_range(&entry.bytecode);
    Ok(Hit {
        snapshot: Arc::clone(snapshot),
        entry: i,
        bytecode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_miss_sees_other_handles_writes_once_its_interval_passed() {
        let root = crate::private_tempdir();
        let (reader, writer) = (
            Cache::open(root.path()).unwrap(),
            Cache::open(root.path()).unwrap(),
        );
        let long = Duration::from_secs(3600);
        let (first, second) = (Key::for_source("a.js", b"1"), Key::for_source("b.js", b"2"));
        // The first miss checks (nothing published yet).
        assert_eq!(
            reader.lookup_throttled(&first, long).err(),
            Some(MissReason::Absent)
        );
        writer.put(&first, &NewEntry::new("a.js", b"one")).unwrap();
        // Within the interval: no check, so the other handle's write is not seen yet.
        assert_eq!(
            reader.lookup_throttled(&first, long).err(),
            Some(MissReason::Absent)
        );
        // An unthrottled miss always checks.
        assert_eq!(reader.lookup(&first).unwrap().bytecode(), b"one");
        writer.put(&second, &NewEntry::new("b.js", b"two")).unwrap();
        // Once the interval passed (here: none), a throttled miss checks too.
        let hit = reader.lookup_throttled(&second, Duration::ZERO).unwrap();
        assert_eq!(hit.bytecode(), b"two");
    }
}
