//! Publishing a write: the next index, full or a delta over a base, written to a temp file and
//! renamed over `index`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{Published, WriteState};
use crate::error::{Error, Result};
use crate::files::{CacheFile, INDEX_FILE, TEMP_PREFIX, Verdict, base_file_name};
use crate::format::{self, BaseRef, EntryRecord, IndexEncoder, PACK_HEADER_LEN};
use crate::fsys;
use crate::options::Durability;
use crate::unsafe_io::CheckedIndex;

/// What a publication changed that the caller sweeps after.
pub(crate) struct Publication {
    /// The base the new index names, if any: every other `base-*` file is unreferenced.
    pub(crate) base_id: Option<u64>,
    /// Whether that differs from before.
    pub(crate) base_changed: bool,
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

impl WriteState {
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
                    match link_as_base(&self.dir, self.fields.next_seq, head, self.abi_tag) {
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

/// Gives the published full index (`head`, mapped from `dir/index`) a second name,
/// `base-<id>`, so the next index can be a delta over it.
fn link_as_base(
    dir: &Path,
    id: u64,
    head: &CheckedIndex<Mmap>,
    abi_tag: &str,
) -> io::Result<(BaseRef, PathBuf)> {
    let path = dir.join(base_file_name(id));
    match std::fs::hard_link(dir.join(INDEX_FILE), &path) {
        // A leftover of a writer that crashed before publishing it: nobody reads it.
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && CacheFile::Base(id).judge(&path, abi_tag) != Verdict::Foreign =>
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
