//! The reader's view: one published index and the committed prefix of its pack, both mapped.
//!
//! A snapshot never changes and never takes a lock. Writers publish a new index by `rename`
//! and only append to packs beyond any committed length, so a snapshot's mappings stay valid
//! while other processes write or compact; a [`crate::Hit`] holds its snapshot alive.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::files::{INDEX_FILE, base_file_name, pack_file_name};
use crate::format::{self, ArchivedEntryRecord, BaseRef, FormatError, SegmentKind, SegmentRef};
use crate::fsys::CacheFile;
use crate::sys;
use crate::unsafe_io::{CheckedIndex, map_prefix};
use crate::verdicts::RowVerdicts;

/// Which index file a snapshot was read from: `rename` gives every publication a new inode,
/// and the old one stays allocated while mapped, so equal identities mean the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity(sys::FileIdentity);

fn identity_of(meta: &fs::Metadata) -> FileIdentity {
    FileIdentity(sys::file_identity(meta))
}

/// The identity of the index currently published at `index_path`, `None` if there is none.
pub(crate) fn published_identity(index_path: &Path) -> Option<FileIdentity> {
    fs::symlink_metadata(index_path)
        .ok()
        .map(|m| identity_of(&m))
}

/// One mapped index file (the published one, or the base it extends) and, per row, whether
/// that entry's segments passed their checksums.
pub(crate) struct Table {
    index: CheckedIndex<Mmap>,
    /// Per row: unchecked, good or bad. Mapped bytes never change (see `unsafe_io`), so one
    /// check per snapshot is enough.
    checked: RowVerdicts,
}

impl Table {
    fn new(index: CheckedIndex<Mmap>) -> Table {
        let checked = RowVerdicts::new(index.header().count);
        Table { index, checked }
    }

    /// The checked index file.
    pub(crate) fn index(&self) -> &CheckedIndex<Mmap> {
        &self.index
    }
}

/// Where an entry is: which table, which row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryAt {
    /// The published index (a full index, or a delta).
    Head(usize),
    /// The base the published delta extends.
    Base(usize),
}

/// A consistent, immutable view of a cache directory.
pub(crate) struct Snapshot {
    head: Option<Table>,
    base: Option<Table>,
    pack: Option<Mmap>,
    identity: Option<FileIdentity>,
    /// Why the published index, its base or its pack was rejected: every lookup is a corrupt
    /// miss until a writer publishes a good one. Or, with the index and pack kept, why the
    /// pack is shorter than its index says: it serves the entries it still holds.
    damage: Option<Damage>,
}

/// How many times to re-read the index when its pack or base vanished under us (a writer
/// removed it between our reading the index and opening it).
const LOAD_ATTEMPTS: usize = 4;

impl Snapshot {
    /// The view of a directory with no index yet.
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            head: None,
            base: None,
            pack: None,
            identity: None,
            damage: None,
        }
    }

    /// Reads the published index (and its base) and maps its pack. A missing index is an
    /// empty snapshot; a rejected one is an empty, damaged snapshot (logged), so callers only
    /// see I/O errors.
    pub(crate) fn load(dir: &Path, abi_tag: &str) -> Result<Snapshot> {
        let mut vanished = None;
        for _ in 0..LOAD_ATTEMPTS {
            match Self::try_load(dir, abi_tag) {
                Ok(snapshot) => return Ok(snapshot),
                Err(LoadError::PackVanished { path, identity }) => {
                    vanished = Some((path, identity))
                }
                Err(LoadError::Format {
                    path,
                    source,
                    identity,
                }) => return Ok(Snapshot::damaged(path, source, identity)),
                Err(LoadError::Io(e)) => return Err(e),
            }
        }
        // Still named by the index read last: not a compactor's race but gone for good (deleted
        // from outside, lost in a crash). Damage, as a file of the wrong kind is: lookups miss,
        // and the next write rebuilds, where an error would fail every open until then.
        let (path, identity) = vanished.expect("at least one attempt");
        Ok(Snapshot::damaged(path, FormatError::Missing, identity))
    }

    /// The empty snapshot of an index rejected for `source` at `path` (logged): every lookup
    /// misses until a writer publishes a good one. `identity`: the index's, if it was read.
    fn damaged(path: PathBuf, source: FormatError, identity: Option<FileIdentity>) -> Snapshot {
        log::warn!("bytecode-pack: ignoring {}: {source}", path.display());
        Snapshot {
            damage: Some(Damage { path, source }),
            identity,
            ..Snapshot::empty()
        }
    }

    fn try_load(dir: &Path, abi_tag: &str) -> Result<Snapshot, LoadError> {
        let index_path = dir.join(INDEX_FILE);
        let (head, identity) = match open_index(&index_path, abi_tag) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Snapshot::empty()),
            Err(e) => return Err(e),
        };
        let with_identity = |e: LoadError| match e {
            LoadError::Format { path, source, .. } => LoadError::Format {
                path,
                source,
                identity: Some(identity),
            },
            LoadError::PackVanished { path, .. } => LoadError::PackVanished {
                path,
                identity: Some(identity),
            },
            other => other,
        };
        let fields = head.header().fields;
        let base = match fields.base {
            Some(reference) => Some(
                open_base(dir, &reference, fields.generation, abi_tag).map_err(with_identity)?,
            ),
            None => None,
        };
        let pack_path = dir.join(pack_file_name(fields.generation));
        let pack = map_committed_pack(&pack_path, fields.generation, fields.pack_len, abi_tag)
            .map_err(with_identity)?;
        // A pack that lost its tail is reported, and still serves the entries it holds.
        let damage = (pack.len() as u64) < fields.pack_len;
        let damage = damage.then(|| {
            let source = FormatError::Length {
                expected: fields.pack_len,
                got: pack.len() as u64,
            };
            log::warn!(
                "bytecode-pack: {} lost its tail: {source}",
                pack_path.display()
            );
            Damage {
                path: pack_path,
                source,
            }
        });
        Ok(Snapshot {
            head: Some(Table::new(head)),
            base: base.map(Table::new),
            pack: Some(pack),
            identity: Some(identity),
            damage,
        })
    }

    /// The published index, if there is one.
    pub(crate) fn head(&self) -> Option<&Table> {
        self.head.as_ref()
    }

    /// The base the published index extends, if it is a delta.
    pub(crate) fn base(&self) -> Option<&Table> {
        self.base.as_ref()
    }

    /// The pack generation, 0 if there is no index.
    pub(crate) fn generation(&self) -> u64 {
        self.head
            .as_ref()
            .map_or(0, |t| t.index.header().fields.generation)
    }

    /// Every live entry's position and record (`None` where a record is damaged): the
    /// published index's rows, then the base's rows it does not shadow.
    pub(crate) fn records(
        &self,
    ) -> impl Iterator<Item = (EntryAt, Option<&ArchivedEntryRecord>)> + '_ {
        self.every_nth_record(1)
    }

    /// The rows of the published index and of its base: the live entries, and the base's
    /// rows the index shadows.
    pub(crate) fn rows(&self) -> usize {
        let (head, base) = self.table_rows();
        head + base
    }

    /// The rows of the published index, and of its base.
    fn table_rows(&self) -> (usize, usize) {
        let rows = |t: &Option<Table>| t.as_ref().map_or(0, |t| t.index.header().count);
        (rows(&self.head), rows(&self.base))
    }

    /// [`Snapshot::records`], only every `nth` row of each table: a sample that reads (and
    /// checks) one record in `nth`.
    pub(crate) fn every_nth_record(
        &self,
        nth: usize,
    ) -> impl Iterator<Item = (EntryAt, Option<&ArchivedEntryRecord>)> + '_ {
        let (head_rows, base_rows) = self.table_rows();
        let head = (0..head_rows).step_by(nth).map(EntryAt::Head);
        let base = (0..base_rows).step_by(nth).map(EntryAt::Base).filter(|at| {
            let EntryAt::Base(i) = *at else { return true };
            let base = self.base.as_ref().expect("rows imply a base");
            let key = format::index_row(base.index.file(), base.index.header(), i).key;
            self.head
                .as_ref()
                .is_none_or(|h| h.index.find(&key).is_none())
        });
        head.chain(base).map(|at| (at, self.record(at)))
    }

    fn table(&self, at: EntryAt) -> Option<(&Table, usize)> {
        match at {
            EntryAt::Head(i) => Some((self.head.as_ref()?, i)),
            EntryAt::Base(i) => Some((self.base.as_ref()?, i)),
        }
    }

    /// The record at `at`, if it passes its checks.
    pub(crate) fn record(&self, at: EntryAt) -> Option<&ArchivedEntryRecord> {
        let (table, i) = self.table(at)?;
        table.index.record(i)
    }

    /// The committed bytes of the pack.
    pub(crate) fn pack(&self) -> &[u8] {
        self.pack.as_deref().unwrap_or(&[])
    }

    pub(crate) fn identity(&self) -> Option<FileIdentity> {
        self.identity
    }

    /// Whether the published files were rejected: nothing is served, every lookup is a
    /// corrupt miss. (A pack that only lost its tail is damage that still serves.)
    pub(crate) fn is_rejected(&self) -> bool {
        self.damage.is_some() && self.head.is_none()
    }

    /// Which file was rejected, and why.
    pub(crate) fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The index files' lengths (the published one and its base), 0 if there is none.
    pub(crate) fn index_len(&self) -> u64 {
        [self.head.as_ref(), self.base.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.index.file_len() as u64)
            .sum()
    }

    /// Finds `key`: in the published index first, whose rows shadow the base's.
    pub(crate) fn find(&self, key: &[u8; 16]) -> Found<'_> {
        let Some(head) = &self.head else {
            return Found::Absent;
        };
        if let Some(i) = head.index.find(key) {
            return match head.index.record(i) {
                Some(record) => Found::Entry(EntryAt::Head(i), record),
                None => Found::Damaged,
            };
        }
        let Some(base) = &self.base else {
            return Found::Absent;
        };
        match base.index.find(key) {
            None => Found::Absent,
            Some(i) => match base.index.record(i) {
                Some(record) => Found::Entry(EntryAt::Base(i), record),
                None => Found::Damaged,
            },
        }
    }

    /// Whether the entry at `at` can be served: its bytecode passes its checksum and every
    /// other segment lies in the pack; checked once per snapshot. The source map and aux
    /// segments are checked when read ([`Snapshot::checked_segment`]): a hit reads them only
    /// for a stack trace or on the caller's request, and hashing them on every hit would
    /// make an entry with a map cost a hash of both.
    pub(crate) fn segments_intact(&self, at: EntryAt, entry: &ArchivedEntryRecord) -> bool {
        let Some((table, i)) = self.table(at) else {
            return false;
        };
        match table.checked.get(i) {
            Some(Some(good)) => return good,
            Some(None) => {}
            None => return false,
        }
        let pack = self.pack();
        let good = format::archived_segments(entry).all(|(kind, s)| match kind {
            SegmentKind::Bytecode => format::checked_segment_bytes(pack, &s.into()).is_ok(),
            SegmentKind::SourceMap | SegmentKind::Aux => {
                format::segment_bytes(pack, &s.into()).is_ok()
            }
        });
        table.checked.set(i, good);
        good
    }

    /// Where a segment of an entry whose segments are intact lies in the pack mapping.
    ///
    /// # Panics
    /// If the segment is not in the mapping: only an entry [`Snapshot::segments_intact`]
    /// accepted may be asked, and that check found every segment in bounds.
    pub(crate) fn segment_range(
        &self,
        segment: &format::ArchivedSegmentRef,
    ) -> std::ops::Range<usize> {
        let bytes = self.segment(segment);
        // In bounds of a mapping, so both ends fit in usize.
        let start = SegmentRef::from(segment).offset as usize;
        start..start + bytes.len()
    }

    /// The bytes of a segment of an entry whose segments are intact, if they pass their
    /// checksum.
    pub(crate) fn checked_segment(&self, segment: &format::ArchivedSegmentRef) -> Option<&[u8]> {
        let bytes = self.segment(segment);
        (format::payload_checksum(bytes) == segment.checksum).then_some(bytes)
    }

    /// The bytes of a segment of an entry whose segments are intact.
    ///
    /// # Panics
    /// As [`Snapshot::segment_range`].
    pub(crate) fn segment(&self, segment: &format::ArchivedSegmentRef) -> &[u8] {
        format::segment_bytes(self.pack(), &SegmentRef::from(segment))
            .expect("a segment of an entry whose segments were checked intact is in the pack")
    }
}

/// Opens `base-<id>` and checks it is the full index `reference` names.
pub(crate) fn open_base(
    dir: &Path,
    reference: &BaseRef,
    generation: u64,
    abi_tag: &str,
) -> Result<CheckedIndex<Mmap>, LoadError> {
    let path = dir.join(base_file_name(reference.id));
    let (base, _) = open_index(&path, abi_tag)?.ok_or_else(|| LoadError::PackVanished {
        path: path.clone(),
        identity: None,
    })?;
    if !format::base_matches(base.header(), base.file_len(), reference, generation) {
        return Err(LoadError::Format {
            path,
            source: FormatError::Malformed("not the base the index names".into()),
            identity: None,
        });
    }
    Ok(base)
}

/// A cache file that was rejected when a snapshot was loaded.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// The index, its base or the pack.
    pub(crate) path: PathBuf,
    /// What was wrong with it.
    pub(crate) source: FormatError,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

/// What a lookup found in the index.
pub(crate) enum Found<'s> {
    /// No row for the key.
    Absent,
    /// A row, but its record fails its checks.
    Damaged,
    /// The entry at this position.
    Entry(EntryAt, &'s ArchivedEntryRecord),
}

pub(crate) enum LoadError {
    /// A file the index names is not there; with the index's identity, where it was read.
    PackVanished {
        path: PathBuf,
        identity: Option<FileIdentity>,
    },
    Format {
        path: PathBuf,
        source: FormatError,
        identity: Option<FileIdentity>,
    },
    Io(Error),
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Error {
        match e {
            LoadError::PackVanished { path, .. } => Error::Io {
                path,
                source: io::ErrorKind::NotFound.into(),
            },
            LoadError::Format { path, source, .. } => Error::Format { path, source },
            LoadError::Io(e) => e,
        }
    }
}

/// Opens one of the cache's own files: `Ok(None)` if there is none, a format error (so the
/// cache is rebuilt, never read) if something else than a regular file has its name.
fn open_cache_file(path: &Path) -> Result<Option<(File, fs::Metadata)>, LoadError> {
    match crate::fsys::open_cache_file(path) {
        Ok(CacheFile::Regular(file, meta)) => Ok(Some((file, meta))),
        Ok(CacheFile::Missing) => Ok(None),
        Ok(CacheFile::NotAFile(kind)) => Err(LoadError::Format {
            path: path.to_path_buf(),
            source: FormatError::NotAFile { kind },
            identity: None,
        }),
        Err(e) => Err(LoadError::Io(Error::io(path)(e))),
    }
}

/// Maps and checks the index at `path`; `Ok(None)` if there is none.
pub(crate) fn open_index(
    path: &Path,
    abi_tag: &str,
) -> Result<Option<(CheckedIndex<Mmap>, FileIdentity)>, LoadError> {
    let opened = open_cache_file(path).map_err(|e| match e {
        // Remember which file was rejected, so it is not re-read on every miss.
        LoadError::Format { path, source, .. } => LoadError::Format {
            identity: published_identity(&path),
            path,
            source,
        },
        other => other,
    })?;
    let Some((file, meta)) = opened else {
        return Ok(None);
    };
    let len = meta.len();
    let identity = identity_of(&meta);
    let format_error = |source| LoadError::Format {
        path: path.to_path_buf(),
        source,
        identity: Some(identity),
    };
    let len = usize::try_from(len).map_err(|_| {
        format_error(FormatError::Length {
            expected: 0,
            got: len,
        })
    })?;
    if len < format::INDEX_HEADER_LEN {
        return Err(format_error(FormatError::Length {
            expected: format::INDEX_HEADER_LEN as u64,
            got: len as u64,
        }));
    }
    let map = map_prefix(&file, len).map_err(|e| LoadError::Io(Error::io(path)(e)))?;
    let index = CheckedIndex::new(map, abi_tag).map_err(format_error)?;
    Ok(Some((index, identity)))
}

/// A rejected pack (readers remember the index's identity, not the pack's).
fn pack_error(path: &Path, source: FormatError) -> LoadError {
    LoadError::Format {
        path: path.to_path_buf(),
        source,
        identity: None,
    }
}

/// Opens the pack at `path` and checks it holds a header, and the index naming it at least
/// that (`committed` bytes). Returns the file and its length, which may be less than
/// `committed`: a power loss can lose the bytes a put appended while keeping the index that
/// names them (a journaling filesystem flushes a file renamed over another, not an append).
/// The entries whose segments it lost are misses (out of bounds, or checksums reject the
/// zeros a writer extends it with); every other entry is still served.
fn open_committed_pack(path: &Path, committed: u64) -> Result<(File, u64), LoadError> {
    let Some((file, meta)) = open_cache_file(path)? else {
        return Err(LoadError::PackVanished {
            path: path.to_path_buf(),
            identity: None,
        });
    };
    let len = meta.len();
    if len < format::PACK_HEADER_LEN || committed < format::PACK_HEADER_LEN {
        let source = FormatError::Length {
            expected: committed,
            got: len,
        };
        return Err(pack_error(path, source));
    }
    Ok((file, len))
}

/// What [`map_committed_pack`] checks, without mapping: for a writer, which appends to the
/// pack and reads none of it. Returns the pack file's length.
pub(crate) fn check_committed_pack(
    path: &Path,
    generation: u64,
    committed: u64,
    abi_tag: &str,
) -> Result<u64, LoadError> {
    let (mut file, len) = open_committed_pack(path, committed)?;
    let mut header = [0u8; format::PACK_HEADER_LEN as usize];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        // Truncated since the `fstat`: as short as a torn header.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            let source = FormatError::Length {
                expected: committed,
                got: 0,
            };
            return Err(pack_error(path, source));
        }
        Err(e) => return Err(LoadError::Io(Error::io(path)(e))),
    }
    format::check_pack_header(&header, generation, abi_tag).map_err(|e| pack_error(path, e))?;
    Ok(len)
}

/// Maps the committed prefix of a pack after checking its length and header.
pub(crate) fn map_committed_pack(
    path: &Path,
    generation: u64,
    committed: u64,
    abi_tag: &str,
) -> Result<Mmap, LoadError> {
    let (file, len) = open_committed_pack(path, committed)?;
    let too_long = FormatError::Length {
        expected: committed,
        got: len,
    };
    // Never past the end: reading a mapping beyond it raises SIGBUS.
    let committed = usize::try_from(committed.min(len)).map_err(|_| pack_error(path, too_long))?;
    let map = map_prefix(&file, committed).map_err(|e| LoadError::Io(Error::io(path)(e)))?;
    format::check_pack_header(&map, generation, abi_tag).map_err(|e| pack_error(path, e))?;
    Ok(map)
}
