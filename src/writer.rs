//! The writer: the advisory lock, appending segments, and publishing a new index.
//!
//! Every change happens under an exclusive `flock(2)` on the `lock` file (`File::try_lock`),
//! in this order: map the published index, append segments to the pack, write the new index
//! (a delta over a base, or a full one; see `format`) to a temp file, `rename` it over
//! `index`. A crash at any point leaves either the old index (the appended bytes are a dead
//! tail, a linked base unreferenced) or the new one, each pointing at committed bytes only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::entry::NewEntry;
use crate::error::{Error, Result};
use crate::files::{
    INDEX_FILE, LOCK_FILE, TEMP_PREFIX, base_file_name, pack_file_name, parse_base_name,
    parse_pack_name,
};
use crate::format::{
    self, ArchivedEntryRecord, BaseRef, EntryRecord, IndexEncoder, IndexFields, InputRecord,
    PACK_HEADER_LEN, SegmentKind, SegmentRef, StatRecord,
};
use crate::fsys;
use crate::key::Key;
use crate::options::Durability;
use crate::snapshot::{self, LoadError};
use crate::unsafe_io::CheckedIndex;

/// The exclusive writer lock, released on drop (closing the descriptor releases the flock).
pub(crate) struct WriterLock {
    _file: File,
}

/// Takes the writer lock on `dir`, waiting until `deadline` at the latest (`None`: for as long
/// as it takes). `started` is when the caller began waiting (for the error's report).
pub(crate) fn lock(dir: &Path, started: Instant, deadline: Option<Instant>) -> Result<WriterLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = fsys::open_write(&path, true).map_err(Error::io(&path))?;
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            // Pruning removes an idle cache's lock file while holding it: a writer that opened
            // it before then locks the file there now instead, or it would write beside one
            // that locked that file.
            Ok(()) => match fsys::replaced_at(&file, &path, true).map_err(Error::io(&path))? {
                None => return Ok(WriterLock { _file: file }),
                Some(there) => file = there,
            },
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
        }
        let now = Instant::now();
        let left = deadline.map(|deadline| deadline.saturating_duration_since(now));
        if left == Some(Duration::ZERO) {
            return Err(Error::LockTimeout {
                path,
                waited: now - started,
            });
        }
        std::thread::sleep(left.map_or(pause, |left| pause.min(left)));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Writes every byte of `slices`, in order, in as few `writev` calls as the system allows.
fn write_all_vectored(
    file: &mut File,
    mut slices: &mut [std::io::IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An entry ready to append: its inputs were hashed before the lock was taken.
pub(crate) struct PreparedEntry<'e, 'a> {
    pub(crate) key: Key,
    pub(crate) entry: &'e NewEntry<'a>,
    pub(crate) inputs: Vec<InputRecord>,
    pub(crate) recorded_at_ns: i64,
}

/// The published index a writer found: mapped, never decoded whole.
struct Published {
    head: CheckedIndex<Mmap>,
    base: Option<(BaseRef, CheckedIndex<Mmap>)>,
}

impl Published {
    /// Decodes every intact record into `all`, by key, the delta's over the base's; says how
    /// many were damaged.
    fn decode_into(&self, all: &mut BTreeMap<[u8; 16], EntryRecord>) -> u64 {
        let mut damaged = 0;
        let tables = self.base.as_ref().map(|b| &b.1).into_iter();
        for index in tables.chain([&self.head]) {
            let (file, header) = (index.file(), index.header());
            for i in 0..header.count {
                match format::decode_record(file, header, i) {
                    Ok(entry) => {
                        all.insert(entry.key, entry);
                    }
                    Err(_) => {
                        // A damaged row in the delta also hides the base's entry of its key,
                        // as it does for readers.
                        all.remove(&format::index_row(file, header, i).key);
                        damaged += 1;
                    }
                }
            }
        }
        damaged
    }
}

/// The entries published in `dir`, read without the writer lock (what a compaction will find
/// is judged ahead of it); none if they cannot be read now, which only leaves the judging to
/// the compaction.
pub(crate) fn published_entries(dir: &Path, abi_tag: &'static str) -> Vec<EntryRecord> {
    let mut all = BTreeMap::new();
    if let Ok(Some((published, _))) = WriteState::load_published(dir, abi_tag) {
        published.decode_into(&mut all);
    }
    all.into_values().collect()
}

/// Where a row of the next index comes from: copied from a published file, or new.
#[derive(Clone, Copy)]
enum RowSource<'a> {
    Copy(&'a CheckedIndex<Mmap>, usize),
    New(&'a EntryRecord),
}

impl RowSource<'_> {
    fn key(&self) -> [u8; 16] {
        match self {
            RowSource::Copy(index, i) => format::index_row(index.file(), index.header(), *i).key,
            RowSource::New(record) => record.key,
        }
    }
}

/// Merges two key-sorted row lists; on equal keys `newer` wins.
fn merge_rows<'a>(older: Vec<RowSource<'a>>, newer: Vec<RowSource<'a>>) -> Vec<RowSource<'a>> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut a, mut b) = (older.into_iter().peekable(), newer.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.key().cmp(&y.key()) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

/// The rows of a published table, in key order. A writer writes them sorted, so a table that
/// is not was damaged: a row's key is covered only by its record's checksum (seeded with it).
/// Then only the rows whose record still verifies under their key are kept, sorted, so that one
/// damaged key costs its own entry rather than every row a merge would have to drop to keep
/// the order. Checking the order is one pass of key comparisons over rows a merge reads anyway.
fn all_rows(index: &CheckedIndex<Mmap>) -> Vec<RowSource<'_>> {
    let count = index.header().count;
    let key = |i: usize| format::index_row(index.file(), index.header(), i).key;
    let mut rows: Vec<RowSource<'_>> = (0..count).map(|i| RowSource::Copy(index, i)).collect();
    if (1..count).all(|i| key(i - 1) < key(i)) {
        return rows;
    }
    rows.retain(|row| matches!(row, RowSource::Copy(index, i) if index.record(*i).is_some()));
    rows.sort_by_key(RowSource::key);
    rows.dedup_by_key(|row| row.key());
    rows
}

/// Below this many rows a full index is rewritten whole rather than split into a base and a
/// delta: a third file costs a reader more than rewriting a few records costs a writer.
const SMALL_INDEX: usize = 64;

/// What a writer knows under the lock: the published index (mapped), what this write adds,
/// and the pack's real size.
pub(crate) struct WriteState {
    pub(crate) dir: PathBuf,
    pub(crate) abi_tag: &'static str,
    published: Option<Published>,
    /// What the next publication's header says; kept current as entries are added.
    pub(crate) fields: IndexFields,
    /// Records this write adds, by key; each replaces any published entry of its key.
    added: BTreeMap<[u8; 16], EntryRecord>,
    /// Some: the next publication is a full index of exactly these entries (compaction,
    /// clear) instead of the published index plus `added`.
    rewrite: Option<Vec<EntryRecord>>,
    /// Bytes in the pack file, including any torn tail past `fields.pack_len`.
    pub(crate) pack_file_len: u64,
    /// The generation and committed pack length as published when the lock was taken: what
    /// a failed write rolls the pack back to.
    rollback_to: (u64, u64),
    /// A base file this write linked but has not published yet (removed on roll-back).
    linked: Option<PathBuf>,
    /// Whether the new index was renamed into place (then nothing is rolled back).
    renamed: bool,
}

/// What a publication changed that the caller sweeps after.
pub(crate) struct Publication {
    /// The base the new index names, if any: every other `base-*` file is unreferenced.
    pub(crate) base_id: Option<u64>,
    /// Whether that differs from before.
    pub(crate) base_changed: bool,
}

impl WriteState {
    /// Reads the published index (and its base), mapped. A missing, damaged or foreign index,
    /// base or pack starts a new, empty generation: the cache is rebuilt, never trusted. A pack
    /// that only lost its tail (shorter than the index says) is kept, extended back to its
    /// published length with zeros; the entries it lost are misses until a compaction.
    pub(crate) fn load(dir: &Path, abi_tag: &'static str) -> Result<WriteState> {
        match Self::load_published(dir, abi_tag) {
            Ok(Some((published, mut pack_file_len))) => {
                let fields = published.head.header().fields;
                if pack_file_len < fields.pack_len {
                    pack_file_len = extend_lost_tail(dir, &fields)?;
                }
                return Ok(WriteState {
                    dir: dir.to_path_buf(),
                    abi_tag,
                    published: Some(published),
                    fields,
                    added: BTreeMap::new(),
                    rewrite: None,
                    pack_file_len,
                    rollback_to: (fields.generation, fields.pack_len),
                    linked: None,
                    renamed: false,
                });
            }
            Ok(None) => {}
            Err(LoadError::Io(e)) => return Err(e),
            Err(e) => log::warn!("bytecode-pack: rebuilding: {}", Error::from(e)),
        }
        let (generation, max_base) = highest_names(dir)?;
        // Names past these would overflow: a directory full of such names is not usable.
        let (Some(_), Some(_)) = (generation.checked_add(2), max_base.checked_add(2)) else {
            return Err(Error::Insecure {
                path: dir.to_path_buf(),
                problem: "holds a pack or base file numbered at the end of the range".into(),
            });
        };
        Ok(WriteState {
            dir: dir.to_path_buf(),
            abi_tag,
            published: None,
            fields: IndexFields {
                generation: generation + 1,
                // Above every base id present, so a new base never takes a leftover's name.
                next_seq: max_base + 1,
                ..IndexFields::default()
            },
            added: BTreeMap::new(),
            rewrite: None,
            pack_file_len: 0,
            // Nothing of this generation is published: a failed write removes its pack.
            rollback_to: (generation + 1, 0),
            linked: None,
            renamed: false,
        })
    }

    fn load_published(
        dir: &Path,
        abi_tag: &'static str,
    ) -> Result<Option<(Published, u64)>, LoadError> {
        let Some((head, _)) = snapshot::open_index(&dir.join(INDEX_FILE), abi_tag)? else {
            return Ok(None);
        };
        let fields = head.header().fields;
        let base = match fields.base {
            Some(reference) => Some((
                reference,
                snapshot::open_base(dir, &reference, fields.generation, abi_tag)?,
            )),
            None => None,
        };
        let path = dir.join(pack_file_name(fields.generation));
        // The header and the committed length, checked as readers check them when mapping.
        let pack_file_len =
            snapshot::check_committed_pack(&path, fields.generation, fields.pack_len, abi_tag)?;
        Ok(Some((Published { head, base }, pack_file_len)))
    }

    /// The published record of `key`: `Some(None)` if its row is there but damaged.
    fn published_record(&self, key: &[u8; 16]) -> Option<Option<&ArchivedEntryRecord>> {
        let published = self.published.as_ref()?;
        let tables = std::iter::once(&published.head).chain(published.base.as_ref().map(|b| &b.1));
        for index in tables {
            if let Some(i) = index.find(key) {
                return Some(index.record(i));
            }
        }
        None
    }

    /// Undoes the appends of a write that failed before it was published: the pack goes back
    /// to its published length (a torn tail costs space until the next compaction otherwise,
    /// and a failing write repeated could fill the disk), and a base it linked is removed.
    /// Readers map at most that length and never an unpublished base, so they are not
    /// disturbed. A pack of a generation nobody published is removed.
    pub(crate) fn roll_back(&self) {
        if self.renamed {
            // The new index is in place: what it names must stay.
            return;
        }
        if let Some(linked) = &self.linked {
            let _ = std::fs::remove_file(linked);
        }
        let (generation, committed) = self.rollback_to;
        let path = self.dir.join(pack_file_name(generation));
        let result = if committed < PACK_HEADER_LEN {
            // Only the pack this write created: a file of that name that is not one of ours
            // (the reason the write failed, say) stays.
            if fsys::carries_magic(&path, &[&format::PACK_MAGIC], true) {
                std::fs::remove_file(&path)
            } else {
                Ok(())
            }
        } else {
            fsys::open_write(&path, false).and_then(|f| {
                if f.metadata()?.len() > committed {
                    f.set_len(committed)?;
                }
                Ok(())
            })
        };
        if let Err(e) = result {
            log::warn!(
                "bytecode-pack: cannot roll back {} after a failed write: {e}",
                path.display()
            );
        }
    }

    fn pack_path(&self) -> PathBuf {
        self.dir.join(pack_file_name(self.fields.generation))
    }

    /// Appends entries' segments to the pack in one write and records them, replacing any
    /// entry under the same key. Not visible to anyone until [`WriteState::publish`].
    pub(crate) fn append_many(
        &mut self,
        entries: Vec<PreparedEntry<'_, '_>>,
        durability: Durability,
    ) -> Result<()> {
        let path = self.pack_path();
        let mut file = self.open_pack_for_append(&path)?;
        let start = file.seek(SeekFrom::End(0)).map_err(Error::io(&path))?;
        // Headers are built first; then headers and payloads go out in vectored writes,
        // straight from the callers' buffers.
        let mut headers = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        let mut written = Vec::with_capacity(entries.len());
        let mut end = start;
        for PreparedEntry {
            key,
            entry,
            inputs,
            recorded_at_ns,
        } in entries
        {
            written.push(entry);
            let mut refs = [None; 3];
            for ((kind, payload), slot) in SegmentKind::ALL
                .into_iter()
                .zip(entry.payloads())
                .zip(&mut refs)
            {
                let Some(payload) = payload else { continue };
                let checksum = format::payload_checksum(payload);
                let len = payload.len() as u64;
                headers.push(format::segment_header(kind, key.as_bytes(), len, &checksum));
                end += format::SEGMENT_HEADER_LEN;
                *slot = Some(SegmentRef {
                    offset: end,
                    len,
                    checksum,
                });
                end += len;
            }
            let [bytecode, source_map, aux] = refs;
            records.push(EntryRecord {
                key: *key.as_bytes(),
                seq: 0,
                module_name: entry.module_name.to_owned(),
                flags: entry.flags,
                recorded_at_ns,
                bytecode: bytecode.expect("bytecode is always written"),
                source_map,
                aux,
                inputs,
            });
        }
        let mut slices = Vec::with_capacity(headers.len() * 2);
        let mut headers_left = headers.iter();
        for entry in written {
            for payload in entry.payloads().into_iter().flatten() {
                let header = headers_left.next().expect("one header per payload");
                slices.push(std::io::IoSlice::new(header));
                slices.push(std::io::IoSlice::new(payload));
            }
        }
        // A failed write leaves a torn tail; the caller's roll-back removes it.
        write_all_vectored(&mut file, &mut slices).map_err(Error::io(&path))?;
        if durability == Durability::Full {
            file.sync_data().map_err(Error::io(&path))?;
        }
        crate::faults::crash_point("append:written");
        self.pack_file_len = end;
        self.fields.pack_len = self.pack_file_len;
        for mut record in records {
            record.seq = self.fields.next_seq;
            self.fields.next_seq += 1;
            self.add(record);
        }
        Ok(())
    }

    /// Adds `record` to what this write publishes, keeping the live totals current: it
    /// replaces whatever is stored under its key.
    fn add(&mut self, record: EntryRecord) {
        let replaced = match self.added.get(&record.key) {
            Some(earlier) => Some(Some(earlier.stored_len())),
            None => self
                .published_record(&record.key)
                .map(|found| found.map(format::archived_stored_len)),
        };
        match replaced {
            // A damaged record's size is unknown: compaction recounts.
            Some(old) => {
                self.fields.live_bytes = self.fields.live_bytes.saturating_sub(old.unwrap_or(0))
            }
            None => self.fields.live_entries += 1,
        }
        self.fields.live_bytes += record.stored_len();
        self.added.insert(record.key, record);
    }

    /// Re-records the entry under `key` with fresh stat data for some inputs and a new
    /// recording instant, if it is still the version a lookup checked (same bytecode segment)
    /// and nothing in this write replaced it. Says whether it did.
    pub(crate) fn refresh(
        &mut self,
        key: &[u8; 16],
        version: &SegmentRef,
        stats: &[(usize, StatRecord)],
        observed_at_ns: i64,
    ) -> bool {
        if self.added.contains_key(key) || self.rewrite.is_some() {
            return false;
        }
        let Some(Some(archived)) = self.published_record(key) else {
            return false;
        };
        if SegmentRef::from(&archived.bytecode) != *version {
            return false;
        }
        let Ok(mut record) = rkyv::deserialize::<EntryRecord, rkyv::rancor::BoxedError>(archived)
        else {
            return false;
        };
        for (i, stat) in stats {
            match record.inputs.get_mut(*i) {
                Some(input) => input.stat = Some(*stat),
                None => return false,
            }
        }
        record.recorded_at_ns = record.recorded_at_ns.max(observed_at_ns);
        self.add(record);
        true
    }

    /// Every entry, published or added by this write, decoded and validated (for compaction):
    /// the published index's rows shadow its base's, added ones shadow both; and how many
    /// damaged records were dropped. The state is left as it was, so a compaction that fails
    /// leaves this write's entries to be published without it.
    pub(crate) fn all_entries(&self) -> (Vec<EntryRecord>, u64) {
        let mut all: BTreeMap<[u8; 16], EntryRecord> = BTreeMap::new();
        let dropped = match &self.published {
            Some(published) => published.decode_into(&mut all),
            None => 0,
        };
        all.extend(self.added.iter().map(|(key, entry)| (*key, entry.clone())));
        (all.into_values().collect(), dropped)
    }

    /// Makes the next publication a full index of exactly `entries` in `generation`, whose
    /// pack is `pack_len` long.
    pub(crate) fn replace_all(
        &mut self,
        mut entries: Vec<EntryRecord>,
        generation: u64,
        pack_len: u64,
    ) {
        entries.sort_by_key(|e| e.key);
        self.added.clear();
        self.fields.generation = generation;
        self.fields.pack_len = pack_len;
        self.fields.base = None;
        self.fields.live_entries = entries.len() as u64;
        self.fields.live_bytes = if pack_len >= PACK_HEADER_LEN {
            PACK_HEADER_LEN + entries.iter().map(EntryRecord::stored_len).sum::<u64>()
        } else {
            0
        };
        self.pack_file_len = pack_len;
        self.rewrite = Some(entries);
    }

    /// Opens the current generation's pack, creating it (with its header) if this generation
    /// has none yet.
    fn open_pack_for_append(&mut self, path: &Path) -> Result<File> {
        if self.fields.pack_len >= PACK_HEADER_LEN {
            return fsys::open_write(path, false).map_err(Error::io(path));
        }
        let mut file = match fsys::create_new(path) {
            // Left by a writer that crashed before publishing it: no reader can map it. Only
            // a file of ours (a pack header, or empty) is replaced; anything else is an error.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && (fsys::carries_magic(path, &[&format::PACK_MAGIC], true)) =>
            {
                std::fs::remove_file(path).map_err(Error::io(path))?;
                fsys::create_new(path)
            }
            other => other,
        }
        .map_err(Error::io(path))?;
        let header = format::encode_pack_header(self.fields.generation, self.abi_tag);
        file.write_all(&header).map_err(Error::io(path))?;
        self.fields.pack_len = PACK_HEADER_LEN;
        self.fields.live_bytes = self.fields.live_bytes.max(PACK_HEADER_LEN);
        self.pack_file_len = PACK_HEADER_LEN;
        Ok(file)
    }

    /// Makes the new state the published index: `temp` (from [`index_temp`]), then `rename`.
    ///
    /// Without a full rewrite, only what changed is written: a small index is rewritten
    /// whole; a large full index is hard-linked to `base-<id>` and the new index is a delta
    /// holding just the added entries; a delta grows until [`format::merge_threshold`] of its
    /// base, then both are merged into one full index. Records are copied byte for byte.
    pub(crate) fn publish(
        &mut self,
        temp: tempfile::NamedTempFile,
        durability: Durability,
    ) -> Result<Publication> {
        if self.fields.pack_len < PACK_HEADER_LEN {
            // An empty generation still gets its pack, so readers always find one.
            let path = self.pack_path();
            let pack = self.open_pack_for_append(&path)?;
            if durability == Durability::Full {
                pack.sync_data().map_err(Error::io(&path))?;
            }
        }
        let before = self.fields.base.map(|b| b.id);
        let bytes = self.encode_next()?;
        if let (Durability::Full, Some(base)) = (durability, self.fields.base) {
            // The base the new index names, linked now or by an earlier write, was an index
            // published before, which a writer of lesser durability may have left unflushed:
            // the new index must not name data that could be lost. (Flushing a clean file is
            // cheap.) Opened for writing (nothing is written): Windows flushes only such handles.
            let path = self.dir.join(base_file_name(base.id));
            fsys::open_write(&path, false)
                .and_then(|f| f.sync_all())
                .map_err(Error::io(&path))?;
        }
        if durability == Durability::Full {
            // The files the new index names (a new pack, a compacted one renamed into place, a
            // base just linked) are durable before the name that points at them: a filesystem
            // that does not order its metadata could otherwise keep the index and lose them.
            fsys::sync_dir(&self.dir)?;
        }
        write_atomically(&self.dir, temp, INDEX_FILE, &bytes, durability)?;
        // Published: from here on nothing is rolled back, even if the flush below fails.
        self.linked = None;
        self.renamed = true;
        if durability == Durability::Full {
            fsys::sync_dir(&self.dir)?;
        }
        let base_id = self.fields.base.map(|b| b.id);
        Ok(Publication {
            base_id,
            base_changed: base_id != before,
        })
    }

    /// The bytes of the next index, choosing full or delta (see [`WriteState::publish`]).
    fn encode_next(&mut self) -> Result<Vec<u8>> {
        let index_path = self.dir.join(INDEX_FILE);
        let too_large = |source| Error::Format {
            path: index_path.clone(),
            source,
        };
        if let Some(entries) = &self.rewrite {
            let mut encoder = IndexEncoder::with_capacity(entries.len(), entries.len() * 256);
            for entry in entries {
                encoder.push_record(entry).map_err(too_large)?;
            }
            return Ok(encoder.finish(&self.fields, self.abi_tag));
        }
        let added: Vec<RowSource<'_>> = self.added.values().map(RowSource::New).collect();
        let (rows, base) = match &self.published {
            None => (added, None),
            Some(Published { head, base: None }) => {
                if head.header().count + added.len() <= SMALL_INDEX {
                    (merge_rows(all_rows(head), added), None)
                } else {
                    match link_as_base(&self.dir, self.fields.next_seq, head) {
                        Ok((reference, path)) => {
                            self.linked = Some(path);
                            self.fields.next_seq += 1;
                            (added, Some(reference))
                        }
                        Err(e) => {
                            log::debug!("bytecode-pack: writing a full index: {e}");
                            (merge_rows(all_rows(head), added), None)
                        }
                    }
                }
            }
            Some(Published {
                head,
                base: Some((reference, base)),
            }) => {
                let delta = merge_rows(all_rows(head), added);
                if delta.len() > format::merge_threshold(base.header().count) {
                    crate::faults::crash_point("merge:start");
                    (merge_rows(all_rows(base), delta), None)
                } else {
                    (delta, Some(*reference))
                }
            }
        };
        let mut encoder = IndexEncoder::with_capacity(rows.len(), rows.len() * 256);
        let mut last_key = None;
        for row in rows {
            // Every list merged is sorted (`all_rows` sorts a damaged table), so this only
            // guards the encoder's invariant.
            let key = row.key();
            if last_key.is_some_and(|last| last >= key) {
                continue;
            }
            last_key = Some(key);
            match row {
                RowSource::New(record) => encoder.push_record(record).map_err(too_large)?,
                RowSource::Copy(index, i) => {
                    // A row whose span is out of bounds cannot be copied: its entry is lost,
                    // as it already was for readers.
                    if let Ok((row, bytes)) =
                        format::index_record_span(index.file(), index.header(), i)
                    {
                        encoder
                            .push_bytes(&row.key, bytes, row.checksum)
                            .map_err(too_large)?;
                    }
                }
            }
        }
        self.fields.base = base;
        Ok(encoder.finish(&self.fields, self.abi_tag))
    }
}

/// Extends a pack that lost its tail (shorter than the published `pack_len`) back to that
/// length with zeros, which the lost entries' checksums reject; returns its new length. Done
/// under the writer lock before anything is appended: an append never reuses an offset a
/// reader of the published index may map, and the published length never goes down, so a
/// failed write's roll-back never cuts below what a reader maps. (Only a writer may do this:
/// a process without the lock could cut off what a writer appended meanwhile.)
fn extend_lost_tail(dir: &Path, fields: &IndexFields) -> Result<u64> {
    let path = dir.join(pack_file_name(fields.generation));
    let file = fsys::open_write(&path, false).map_err(Error::io(&path))?;
    let len = file.metadata().map_err(Error::io(&path))?.len();
    if len < fields.pack_len {
        file.set_len(fields.pack_len).map_err(Error::io(&path))?;
    }
    Ok(len.max(fields.pack_len))
}

/// Gives the published full index (`head`, mapped from `dir/index`) a second name,
/// `base-<id>`, so the next index can be a delta over it.
fn link_as_base(dir: &Path, id: u64, head: &CheckedIndex<Mmap>) -> io::Result<(BaseRef, PathBuf)> {
    let path = dir.join(base_file_name(id));
    match std::fs::hard_link(dir.join(INDEX_FILE), &path) {
        // A leftover of a writer that crashed before publishing it: nobody reads it.
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && fsys::carries_magic(&path, &[&format::INDEX_MAGIC], false) =>
        {
            std::fs::remove_file(&path)?;
            std::fs::hard_link(dir.join(INDEX_FILE), &path)?;
        }
        other => other?,
    }
    crate::faults::crash_point("publish:linked");
    let reference = BaseRef {
        id,
        len: head.file_len() as u64,
        checksum: head.header().checksum,
    };
    Ok((reference, path))
}

/// Creates the temp file a write publishes its index through. Taken before anything is
/// appended, so a directory that refuses new files (read-only, full of inodes) fails the write
/// before the pack grows.
pub(crate) fn index_temp(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(Error::io(dir))
}

/// Writes `bytes` to `dir/name` through `tmp` and `rename`, so readers see the old file or
/// the new one, never a mix. Does not flush the directory: once the rename happened the write
/// is published, whatever fails after it, and the caller must not roll it back.
fn write_atomically(
    dir: &Path,
    mut tmp: tempfile::NamedTempFile,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> Result<()> {
    tmp.write_all(bytes).map_err(Error::io(tmp.path()))?;
    if durability == Durability::Full {
        tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
    }
    crate::faults::crash_point("publish:temp-written");
    let target = dir.join(name);
    tmp.persist(&target)
        .map_err(|e| Error::io(&target)(e.error))?;
    Ok(())
}

/// The generation after `generation`; an error at the end of the range (only a forged index
/// gets there).
pub(crate) fn next_generation_after(dir: &Path, generation: u64) -> Result<u64> {
    generation.checked_add(1).ok_or_else(|| Error::Insecure {
        path: dir.to_path_buf(),
        problem: "pack generations exhausted".into(),
    })
}

/// The highest pack generation and base id present (0 if none), so a rebuilt cache never
/// reuses the name of a file some reader may still map.
fn highest_names(dir: &Path) -> Result<(u64, u64)> {
    let (mut generation, mut base) = (0, 0);
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(g) = parse_pack_name(&name) {
            generation = generation.max(g);
        }
        if let Some(id) = parse_base_name(&name) {
            base = base.max(id);
        }
    }
    Ok((generation, base))
}

/// Removes leftovers under the lock: temp files of crashed writers, packs of other
/// generations and bases the published index does not name. Mappings of removed files stay
/// valid for the readers that hold them. Failures are logged, not returned: a leftover only
/// costs space.
pub(crate) fn sweep(dir: &Path, keep_generation: u64, keep_base: Option<u64>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Each name's own header, so only files this cache wrote are removed.
        let magics: &[&[u8; 8]] = if name.starts_with(TEMP_PREFIX) {
            &[&format::INDEX_MAGIC, &format::PACK_MAGIC]
        } else if parse_pack_name(name).is_some_and(|g| g != keep_generation) {
            &[&format::PACK_MAGIC]
        } else if parse_base_name(name).is_some_and(|id| Some(id) != keep_base) {
            &[&format::INDEX_MAGIC]
        } else {
            continue;
        };
        // Only regular files: whatever else has one of our names was not written by us.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            log::warn!(
                "bytecode-pack: leaving {}: {}, not a file this cache wrote",
                entry.path().display(),
                fsys::file_kind(&meta)
            );
            continue;
        }
        // A temp file or a pack may be empty (its writer crashed, or found the disk full,
        // before writing its header); an index or base never is (it is renamed or linked
        // whole). An empty file holds nothing to lose, whoever made it.
        let may_be_empty = name.starts_with(TEMP_PREFIX) || parse_pack_name(name).is_some();
        // The marker's temp file holds the marker's text instead of a header.
        let ours = fsys::carries_magic(&entry.path(), magics, may_be_empty)
            || (name.starts_with(TEMP_PREFIX)
                && crate::maintenance::holds_marker_text(&entry.path(), crate::abi::abi_tag()));
        if !ours {
            log::warn!(
                "bytecode-pack: leaving {}: it does not carry this cache's header",
                entry.path().display()
            );
            continue;
        }
        let len = meta.len();
        match std::fs::remove_file(entry.path()) {
            Ok(()) => freed += len,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "bytecode-pack: cannot remove {}: {e}",
                entry.path().display()
            ),
        }
    }
    freed
}
