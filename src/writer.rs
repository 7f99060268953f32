//! The writer: the advisory lock, appending segments, and publishing a new index.
//!
//! Every change happens under an exclusive `flock(2)` on the `lock` file (`File::try_lock`),
//! in this order: read the published index, append segments to the pack, write the new index
//! to a temp file, `rename` it over `index`. A crash at any point leaves either the old index
//! (the appended bytes are a dead tail) or the new one, each pointing at committed bytes only.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::entry::NewEntry;
use crate::error::{Error, Result};
use crate::files::{INDEX_FILE, LOCK_FILE, TEMP_PREFIX, pack_file_name, parse_pack_name};
use crate::format::{
    self, EntryRecord, IndexBody, InputRecord, PACK_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentKind,
    SegmentRef,
};
use crate::fsys;
use crate::key::Key;
use crate::options::Durability;
use crate::snapshot::{self, LoadError};

/// The exclusive writer lock, released on drop (closing the descriptor releases the flock).
pub(crate) struct WriterLock {
    _file: File,
}

/// Takes the writer lock on `dir`, waiting until `deadline` at the latest. `started` is when
/// the caller began waiting (for the error's report).
pub(crate) fn lock(dir: &Path, started: Instant, deadline: Instant) -> Result<WriterLock> {
    let path = dir.join(LOCK_FILE);
    let file = fsys::open_write(&path, true).map_err(Error::io(&path))?;
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(WriterLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::LockTimeout {
                path,
                waited: now - started,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// An entry ready to append: its inputs were hashed before the lock was taken.
pub(crate) struct PreparedEntry<'e, 'a> {
    pub(crate) key: Key,
    pub(crate) entry: &'e NewEntry<'a>,
    pub(crate) inputs: Vec<InputRecord>,
    pub(crate) recorded_at_ns: i64,
}

/// What a writer knows under the lock: the published index, owned, and the pack's real size.
pub(crate) struct WriteState {
    pub(crate) dir: PathBuf,
    pub(crate) abi_tag: &'static str,
    pub(crate) body: IndexBody,
    /// Bytes in the pack file, including any torn tail past `body.pack_len`.
    pub(crate) pack_file_len: u64,
    /// Index records dropped when the published index was read because they failed their
    /// checks; compaction reports them as corrupt.
    pub(crate) dropped_damaged: u64,
    /// The generation and committed pack length as published when the lock was taken: what
    /// a failed write rolls the pack back to.
    published: (u64, u64),
}

impl WriteState {
    /// Reads the published index. A missing, damaged or foreign index, or a pack that does not
    /// match it, starts a new, empty generation: the cache is rebuilt, never trusted.
    pub(crate) fn load(dir: &Path, abi_tag: &'static str) -> Result<WriteState> {
        let index_path = dir.join(INDEX_FILE);
        let found = match snapshot::open_index(&index_path, abi_tag) {
            Ok(found) => found,
            Err(LoadError::Io(e)) => return Err(e),
            Err(e) => {
                log::warn!("bytecode-pack: rebuilding: {}", Error::from(e));
                None
            }
        };
        if let Some((index, _)) = found {
            // Every record is validated here: writers never read an index in place.
            match format::decode_index(index.file(), abi_tag) {
                Ok((body, dropped)) => {
                    if dropped > 0 {
                        log::warn!(
                            "bytecode-pack: {}: dropping {dropped} damaged index records",
                            index_path.display()
                        );
                    }
                    match pack_len_on_disk(dir, &body, abi_tag) {
                        Ok(pack_file_len) => {
                            return Ok(WriteState {
                                dir: dir.to_path_buf(),
                                abi_tag,
                                published: (body.generation, body.pack_len),
                                body,
                                pack_file_len,
                                dropped_damaged: dropped as u64,
                            });
                        }
                        Err(e) => log::warn!("bytecode-pack: rebuilding: {e}"),
                    }
                }
                Err(e) => log::warn!("bytecode-pack: rebuilding: {}: {e}", index_path.display()),
            }
        }
        let generation = next_generation(dir)?;
        Ok(WriteState {
            dir: dir.to_path_buf(),
            abi_tag,
            body: IndexBody {
                generation,
                ..IndexBody::default()
            },
            pack_file_len: 0,
            dropped_damaged: 0,
            // Nothing of this generation is published: a failed write removes its pack.
            published: (generation, 0),
        })
    }

    /// Undoes the appends of a write that failed before it was published: the pack goes back
    /// to its published length (a torn tail costs space until the next compaction otherwise,
    /// and a failing write repeated could fill the disk). Readers map at most that length, so
    /// they are not disturbed. A pack of a generation nobody published is removed.
    pub(crate) fn roll_back(&self) {
        let (generation, committed) = self.published;
        let path = self.dir.join(pack_file_name(generation));
        let result = if committed < PACK_HEADER_LEN {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => std::fs::remove_file(&path),
                _ => Ok(()),
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
        self.dir.join(pack_file_name(self.body.generation))
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
        let kinds = [
            SegmentKind::Bytecode,
            SegmentKind::SourceMap,
            SegmentKind::Aux,
        ];
        let total: usize = entries
            .iter()
            .flat_map(|p| p.entry.payloads())
            .flatten()
            .map(|p| p.len() + SEGMENT_HEADER_LEN as usize)
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(entries.len());
        for PreparedEntry {
            key,
            entry,
            inputs,
            recorded_at_ns,
        } in entries
        {
            let mut refs = [None; 3];
            for ((kind, payload), slot) in kinds.into_iter().zip(entry.payloads()).zip(&mut refs) {
                let Some(payload) = payload else { continue };
                buf.extend_from_slice(&format::encode_segment_header(
                    kind,
                    key.as_bytes(),
                    payload,
                ));
                *slot = Some(SegmentRef {
                    offset: start + buf.len() as u64,
                    len: payload.len() as u64,
                    checksum: format::payload_checksum(payload),
                });
                buf.extend_from_slice(payload);
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
        // A failed write leaves a torn tail; the caller's roll-back removes it.
        file.write_all(&buf).map_err(Error::io(&path))?;
        if durability == Durability::Full {
            file.sync_data().map_err(Error::io(&path))?;
        }
        crate::faults::crash_point("append:written");
        self.pack_file_len = start + buf.len() as u64;
        self.body.pack_len = self.pack_file_len;
        for record in &mut records {
            record.seq = self.body.next_seq;
            self.body.next_seq += 1;
        }
        if let [record] = &mut records[..] {
            let record = record.clone();
            match self.body.position(&record.key) {
                Ok(i) => self.body.entries[i] = record,
                Err(i) => self.body.entries.insert(i, record),
            }
        } else {
            // A batch: one stable sort, then the latest record of each key wins.
            let mut all = std::mem::take(&mut self.body.entries);
            all.extend(records);
            all.sort_by_key(|e| e.key);
            let mut merged: Vec<EntryRecord> = Vec::with_capacity(all.len());
            for record in all {
                match merged.last_mut() {
                    Some(last) if last.key == record.key => *last = record,
                    _ => merged.push(record),
                }
            }
            self.body.entries = merged;
        }
        Ok(())
    }

    /// Opens the current generation's pack, creating it (with its header) if this generation
    /// has none yet.
    fn open_pack_for_append(&mut self, path: &Path) -> Result<File> {
        if self.body.pack_len >= PACK_HEADER_LEN {
            return fsys::open_write(path, false).map_err(Error::io(path));
        }
        let mut file = match fsys::create_new(path) {
            // Left by a writer that crashed before publishing it: no reader can map it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(path).map_err(Error::io(path))?;
                fsys::create_new(path)
            }
            other => other,
        }
        .map_err(Error::io(path))?;
        let header = format::encode_pack_header(self.body.generation, self.abi_tag);
        file.write_all(&header).map_err(Error::io(path))?;
        self.body.pack_len = PACK_HEADER_LEN;
        self.pack_file_len = PACK_HEADER_LEN;
        Ok(file)
    }

    /// Makes the current body the published index: `temp` (from [`index_temp`]), then
    /// `rename`.
    pub(crate) fn publish(
        &mut self,
        temp: tempfile::NamedTempFile,
        durability: Durability,
    ) -> Result<()> {
        if self.body.pack_len < PACK_HEADER_LEN {
            // An empty generation still gets its pack, so readers always find one.
            let path = self.pack_path();
            drop(self.open_pack_for_append(&path)?);
        }
        let index_path = self.dir.join(INDEX_FILE);
        let bytes =
            format::encode_index(&self.body, self.abi_tag).map_err(|source| Error::Format {
                path: index_path.clone(),
                source,
            })?;
        write_atomically(&self.dir, temp, INDEX_FILE, &bytes, durability)
    }
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
/// the new one, never a mix.
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
    if durability == Durability::Full {
        fsys::sync_dir(dir)?;
    }
    Ok(())
}

/// The pack's on-disk length, after checking it exists, is long enough and has the right
/// header.
fn pack_len_on_disk(dir: &Path, body: &IndexBody, abi_tag: &str) -> Result<u64> {
    let path = dir.join(pack_file_name(body.generation));
    // Mapping checks the header and the committed length in one place shared with readers.
    snapshot::map_committed_pack(&path, body.generation, body.pack_len, abi_tag)
        .map_err(Error::from)?;
    Ok(std::fs::symlink_metadata(&path)
        .map_err(Error::io(&path))?
        .len())
}

/// One more than the highest generation present, so a rebuilt cache never reuses the name
/// of a pack some reader may still map.
fn next_generation(dir: &Path) -> Result<u64> {
    let mut max = 0;
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        if let Some(g) = entry.file_name().to_str().and_then(parse_pack_name) {
            max = max.max(g);
        }
    }
    Ok(max + 1)
}

/// Removes leftovers under the lock: temp files of crashed writers and packs of other
/// generations. Mappings of removed packs stay valid for the readers that hold them.
/// Failures are logged, not returned: a leftover only costs space.
pub(crate) fn sweep(dir: &Path, keep_generation: u64) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = name.starts_with(TEMP_PREFIX)
            || parse_pack_name(name).is_some_and(|g| g != keep_generation);
        if !stale {
            continue;
        }
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
