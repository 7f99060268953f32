//! The write path: puts, compaction, clearing and re-recording racy inputs, each one
//! [`Transaction`] under the writer lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Cache;
use crate::abi::abi_tag;
use crate::compact::{self, CompactReport};
use crate::entry::NewEntry;
use crate::error::{Error, Result};
use crate::files;
use crate::format;
use crate::freshness;
use crate::key::Key;
use crate::snapshot::Found;
use crate::writer::{self, Commit, PreparedEntry, Transaction, WriteState};

impl Cache {
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
        self.refuse_if_read_only()?;
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
            // Absolute, so that `.` or a relative name means the same directory to a process
            // with another working directory.
            let root = entry.root.map(freshness::recorded_path);
            let inputs = entry
                .inputs
                .iter()
                .map(|input| {
                    freshness::record(input, root.as_deref()).map(|(record, from)| {
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
                root,
            });
        }
        if prepared.is_empty() {
            return Ok(());
        }
        let count = prepared.len() as u64;
        // A put that will likely compact, by the published index, judges the published
        // entries' inputs before it takes the lock, as `compact` does.
        // Entries of trees that are gone count as dead: automatic compaction reclaims them.
        let (vanished, likely) = self.compaction_likely(&prepared);
        let checked_ahead = if likely {
            self.check_inputs_ahead()
        } else {
            compact::CheckedAhead::default()
        };
        let inner = &self.inner;
        let compacted = self.write(wait, |state| {
            let first_new_seq = state.fields.next_seq;
            state.append_many(prepared, options.durability)?;
            let (generation, live) = (state.fields.generation, state.fields.live_bytes);
            // Estimated for the generation published before the lock: after another
            // process's compaction it counts bytes that are gone already.
            let vanished = match vanished {
                Some((estimated_for, bytes))
                    if estimated_for == generation && !state.moved_trees =>
                {
                    bytes
                }
                _ => 0,
            };
            if inner.compaction_due(generation, state.pack_file_len, live, vanished) {
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
        self.refuse_if_read_only()?;
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
    /// Also says how many bytes of the published pack were recorded under roots that are gone
    /// (see [`Cache::vanished_in`]), which count as dead.
    fn compaction_likely(&self, batch: &[PreparedEntry]) -> (Option<(u64, u64)>, bool) {
        let current = self.inner.snapshot.load_full();
        let snapshot = match self.refresh_if_changed(&current) {
            Ok(Some(fresh)) => fresh,
            _ => current,
        };
        let Some(head) = snapshot.head() else {
            return (None, false);
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
        let published = head.index().header().fields;
        let vanished = self.vanished_in(
            published.generation,
            published.pack_len,
            published.live_bytes,
        );
        let likely = (self.inner).compaction_due(
            fields.generation,
            fields.pack_len,
            fields.live_bytes,
            vanished,
        );
        (Some((published.generation, vanished)), likely)
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
        self.refuse_if_read_only()?;
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
        if self.inner.options.disabled || self.inner.read_only || self.inner.racy.lock().is_empty()
        {
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
        // Re-recorded before the change, so that a compaction it runs judges entries as they
        // were last found (a moved tree where it is now, not where it was).
        let refreshes = std::mem::take(&mut *inner.racy.lock());
        let refreshed = refreshes
            .iter()
            .filter(|r| write.state().refresh(r))
            .count();
        write.state().move_trees_whole();
        if write.state().moved_trees {
            // What this handle counted as under vanished roots moved with its tree.
            *inner.vanished.lock() = None;
        }
        let out = change(write.state())?;
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

    /// [`Error::ReadOnly`] for a handle that cannot write.
    fn refuse_if_read_only(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly {
                path: self.inner.dir.clone(),
            });
        }
        Ok(())
    }
}
