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

use memmap2::Mmap;

use crate::entry::NewEntry;
use crate::error::{Error, Result};
use crate::files::{CacheFile, INDEX_FILE, Verdict, pack_file_name};
use crate::format::{
    self, ArchivedEntryRecord, BaseRef, EntryRecord, IndexFields, InputRecord, PACK_HEADER_LEN,
    SegmentKind, SegmentRef, StatRecord,
};
use crate::fsys;
use crate::key::Key;
use crate::options::Durability;
use crate::snapshot::{self, LoadError};
use crate::unsafe_io::CheckedIndex;

mod lock;
mod marker;
mod names;
mod publish;
mod transaction;

use lock::{WriterLock, lock};
use marker::mark_cache_dir;
pub(crate) use names::next_generation_after;
use names::{highest_names, sweep};
use publish::index_temp;
pub(crate) use transaction::{Commit, Transaction};

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

/// Fresh stat data for an entry's inputs, observed by a lookup that re-hashed them and found
/// them unchanged: re-recorded by the next write (see [`WriteState::refresh`]).
pub(crate) struct Refresh {
    pub(crate) key: [u8; 16],
    /// Which version of the entry was checked: its bytecode segment.
    pub(crate) version: SegmentRef,
    /// Input positions and their stat data, each describing the content recorded (`None`:
    /// always re-hash).
    pub(crate) stats: Vec<(usize, Option<StatRecord>)>,
    /// When the lookup's checks ended: the new recording instant.
    pub(crate) observed_at_ns: i64,
    /// The root the entry's relative inputs were found under, where it differs from the one
    /// recorded (the tree was moved).
    pub(crate) root: Option<Vec<u8>>,
}

/// An entry ready to append: its inputs were hashed before the lock was taken.
pub(crate) struct PreparedEntry<'e, 'a> {
    pub(crate) key: Key,
    pub(crate) entry: &'e NewEntry<'a>,
    pub(crate) inputs: Vec<InputRecord>,
    pub(crate) recorded_at_ns: i64,
    /// The entry's root as recorded (absolute; see [`crate::freshness::recorded_path`]).
    pub(crate) root: Option<std::path::PathBuf>,
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
    /// The roots of trees found moved by this write's refreshes: recorded root, where it is
    /// now (see [`WriteState::move_trees_whole`]).
    moved_roots: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Whether this write re-recorded a moved tree's entries under its new root: bytes an
    /// estimate made before the lock counted as under a vanished root are live again.
    pub(crate) moved_trees: bool,
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
                    moved_roots: Default::default(),
                    moved_trees: false,
                });
            }
            Ok(None) => {}
            Err(LoadError::Io(e)) => return Err(e),
            Err(e) => log::warn!("bytecode-pack: rebuilding: {}", Error::from(e)),
        }
        let (generation, max_base) = highest_names(dir)?;
        // Names past these would overflow, and a base id past half the range makes a next
        // sequence number no reader accepts (see `check_index_header`): a directory holding
        // such names is not usable.
        if generation.checked_add(2).is_none() || max_base >= u64::MAX / 2 {
            return Err(Error::Insecure {
                path: dir.to_path_buf(),
                problem: "holds a pack or base file numbered at the end of the range".into(),
            });
        }
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
            moved_roots: Default::default(),
            moved_trees: false,
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
            if CacheFile::Pack(generation).judge(&path, self.abi_tag) != Verdict::Foreign {
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
            root,
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
                root: root.map(|root| root.into_os_string().into_encoded_bytes()),
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
        account_replacement(&mut self.fields, replaced, record.stored_len());
        self.added.insert(record.key, record);
    }

    /// Re-records the entry under `key` with fresh stat data for some inputs and a new
    /// recording instant, if it is still the version a lookup checked (same bytecode segment)
    /// and nothing in this write replaced it. Says whether it did.
    pub(crate) fn refresh(&mut self, refresh: &Refresh) -> bool {
        let Refresh {
            key,
            version,
            stats,
            observed_at_ns,
            root,
        } = refresh;
        let observed_at_ns = *observed_at_ns;
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
                Some(input) => input.stat = *stat,
                None => return false,
            }
        }
        record.recorded_at_ns = record.recorded_at_ns.max(observed_at_ns);
        if let Some(root) = root {
            if let Some(recorded) = record.root.take().filter(|recorded| recorded != root) {
                self.moved_roots.insert(recorded, root.clone());
            }
            record.root = Some(root.clone());
        }
        self.add(record);
        true
    }

    /// Re-records under its new root every published entry of a tree this write's refreshes
    /// found moved (a lookup under the root it is at now hit one of its entries), where the
    /// root it was recorded under is gone: the tree moved whole, and its entries that start
    /// did not look up would otherwise be dropped by a compaction with that root. (Their
    /// inputs are checked under the new root by every lookup, as any entry's.) A root that
    /// exists again holds another tree: its entries stay.
    pub(crate) fn move_trees_whole(&mut self) {
        if self.moved_roots.is_empty() || self.rewrite.is_some() {
            return;
        }
        let moved = std::mem::take(&mut self.moved_roots);
        let gone: std::collections::HashMap<&Vec<u8>, &Vec<u8>> = moved
            .iter()
            .filter(|(recorded, _)| crate::freshness::existing_root(recorded).is_none())
            .collect();
        if gone.is_empty() {
            return;
        }
        let (entries, _) = self.all_entries();
        for mut record in entries {
            let now = record.root.as_ref().and_then(|recorded| gone.get(recorded));
            if let Some(now) = now.map(|now| (*now).clone())
                && !self.added.contains_key(&record.key)
            {
                record.root = Some(now);
                self.add(record);
                self.moved_trees = true;
            }
        }
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
                    && CacheFile::Pack(self.fields.generation).judge(path, self.abi_tag)
                        != Verdict::Foreign =>
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
}

/// The one rule for the live totals an index header carries: an entry of `stored_len` bytes
/// replaces whatever is stored under its key (`replaced`: nothing, or the stored length of
/// what it replaces, unknown for a damaged record, which a compaction recounts). A writer
/// keeps its totals by it, and a put that predicts a compaction before the lock counts by it.
pub(crate) fn account_replacement(
    fields: &mut IndexFields,
    replaced: Option<Option<u64>>,
    stored_len: u64,
) {
    match replaced {
        Some(old) => fields.live_bytes = fields.live_bytes.saturating_sub(old.unwrap_or(0)),
        None => fields.live_entries += 1,
    }
    fields.live_bytes = fields.live_bytes.saturating_add(stored_len);
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
