//! The on-disk format: every byte this crate writes is laid out here, and only here.
//!
//! This module does no I/O. It turns owned values into bytes and checks bytes handed to it, so
//! it is tested on `Vec`s and fuzzed without a filesystem. `FORMAT.md` at the repository root
//! is the prose version of the same specification, with the concurrency protocol around it.
//! The files' names are in `crate::files`.
//!
//! # Files in a cache directory (`<root>/<abi_tag>/`)
//!
//! | name | written by | contents |
//! |---|---|---|
//! | `index` | writers, by temp file + `rename` | the published index: an [index file](#index-file), either *full* or a *delta* naming a base |
//! | `base-<id as 16 hex digits>` | writers, by `link(2)` of a full `index` | an earlier full index that the current delta extends; immutable |
//! | `pack-<generation as 16 hex digits>` | writers, append-only | [pack header](#pack-file) + [segments](#segment) |
//! | `lock` | writers | empty; `flock(2)`ed exclusively around every change |
//! | `CACHEDIR.TAG` | writers | the cache directory tag that proves the directory is a cache |
//! | `.tmp-*` | writers, under the lock | a file being prepared; a leftover is swept by the next writer |
//!
//! All integers are little-endian. Checksums are XXH3: 128-bit over payloads, 64-bit over
//! fixed-size headers and over each index record (seeded with its key).
//!
//! Every header starts with the same 32 bytes: magic (8), [`FORMAT_VERSION`] (4), header length
//! (4), `xxh3_128` of the ABI tag string ([`crate::abi_tag`]) (16); and ends with the `xxh3_64`
//! of all its bytes before the last 8.
//!
//! # Index file
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | common header start, magic `b"BCPKIDX\0"` |
//! | 32 | 8 | layout fingerprint of the archived types ([`layout_fingerprint`]) |
//! | 40 | 8 | pack generation: the pack is `pack-<generation>` |
//! | 48 | 8 | committed pack length |
//! | 56 | 8 | next insertion sequence number |
//! | 64 | 4 | row count `n` |
//! | 68 | 4 | reserved, zero |
//! | 72 | 8 | records length `r` in bytes; the file is exactly `128 + 32 n + r` long |
//! | 80 | 8 | base id: 0 for a full index, else the delta extends `base-<id>` |
//! | 88 | 8 | the base file's exact length (0 without a base) |
//! | 96 | 8 | the base file's header checksum (0 without a base) |
//! | 104 | 8 | live entries: distinct keys in this file and its base together |
//! | 112 | 8 | live bytes: the pack header plus every live entry's segments |
//! | 120 | 8 | `xxh3_64` of bytes 0..120 |
//! | 128 | 32 n | key table: `n` [rows](#row), sorted by key |
//! | 128 + 32 n | r | records: one rkyv archive of [`EntryRecord`] per row, each 16-byte aligned |
//!
//! A *full* index holds every live entry. A *delta* holds the entries written since its base
//! was published, and every lookup checks it first: a key in the delta shadows the same key in
//! the base. A base is a full index that was published as `index` and then hard-linked to its
//! `base-<id>` name, so it is checked exactly as a full index is, plus its length and header
//! checksum against the delta's reference (a stale or foreign file of that name fails). This is
//! git's split index: a `put` rewrites only the delta, so its cost does not grow with the
//! cache; once the delta outgrows [`merge_threshold`] of its base, a writer merges both into
//! one full index again (by copying checksummed records byte for byte).
//!
//! ## Row
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | key |
//! | 16 | 4 | record offset from the start of the records region (a multiple of 16) |
//! | 20 | 4 | record length |
//! | 24 | 8 | `xxh3_64` of the record's bytes, seeded with `xxh3_64(key)` |
//!
//! Opening an index checks only the header (and that the file is exactly as long as it says),
//! so it costs the same at 10 entries or 100,000. A lookup searches the table and checks the
//! one record it needs; a reader remembers the verdict for the life of its snapshot. A damaged
//! record therefore makes only its own entry miss; a damaged row key may hide other rows of its
//! table from the search until a writer rewrites the table without it. A record is read in
//! place, through `unsafe_io::CheckedIndex`, once its checksum (seeded with its key) matched
//! and rkyv's validator accepted it (about 600 instructions per record, once per snapshot);
//! `verify` runs both over every record. A record is
//! position-independent (rkyv's relative pointers stay inside it), so writers copy records
//! with their row's checksum verbatim.
//!
//! # Pack file
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | common header start, magic `b"BCPKPACK"` |
//! | 32 | 8 | generation (matches the file name and the index's `generation`) |
//! | 40 | 16 | reserved, zero |
//! | 56 | 8 | `xxh3_64` of bytes 0..56 |
//! | 64 | .. | segments, back to back |
//!
//! The pack is only ever appended to. The index records how many bytes of it are committed
//! (`pack_len`); bytes past that are a torn append from a crashed writer, never read, and count
//! as dead space until compaction drops them. A pack is never truncated below a published
//! length: readers map it.
//!
//! # Segment
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"BSEG"` |
//! | 4 | 1 | kind: 1 bytecode, 2 source map, 3 aux |
//! | 5 | 3 | reserved, zero |
//! | 8 | 16 | the entry's key |
//! | 24 | 8 | payload length |
//! | 32 | 16 | `xxh3_128` of the payload |
//! | 48 | 8 | `xxh3_64` of bytes 0..48 |
//! | 56 | .. | payload |
//!
//! The index's [`SegmentRef`] repeats offset, length and checksum, so a reader never trusts the
//! pack's own headers; they exist so that `verify` and recovery can walk a pack on its own.
//!
//! # Evolution
//!
//! Any change to a header, a segment or an archived type bumps [`FORMAT_VERSION`]. The version is
//! part of the ABI tag, so a new version uses a new directory and never reads an old one; the
//! old directory is left for pruning. There is no in-place migration: this is a cache, and
//! rebuilding it is always correct.
//!
//! | version | change |
//! |---|---|
//! | 1 | first format: full index only, 96-byte index header |
//! | 2 | split index: delta + base files, 128-byte index header with the base reference and live totals |

mod index;
mod pack;
#[cfg(test)]
mod tests;

pub use index::*;
pub use pack::*;

use rkyv::{Archive, Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

/// Bumped on any change to the bytes this module writes.
pub const FORMAT_VERSION: u32 = 3;

/// Where the common header fields are, in every header.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + 8;
const HEADER_LEN_AT: usize = VERSION_AT + 4;
const ABI_AT: usize = HEADER_LEN_AT + 4;
/// Where each header's own fields start.
const OWN_FIELDS_AT: usize = ABI_AT + 16;
/// Every header's last 8 bytes are its checksum.
const CHECKSUM_LEN: usize = 8;

/// [`EntryRecord::flags`]: the bytecode was produced by this crate's own QuickJS compile
/// path (not handed to `put` by a caller), so it may be given to `Module::load`.
pub const FLAG_ENGINE_BYTECODE: u32 = 1;

/// [`EntryRecord::flags`]: the entry is a pointer, its bytecode segment the 16-byte key of
/// another entry; a compaction drops it once that entry is gone.
pub const FLAG_POINTER: u32 = 2;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SegmentKind {
    /// Compiled bytecode, handed to the engine.
    Bytecode = 1,
    /// The entry's source map (UTF-8).
    SourceMap = 2,
    /// The caller's opaque sidecar (UTF-8).
    Aux = 3,
}

impl SegmentKind {
    /// Every kind, in the order an entry's segments are written, stored and listed: the one
    /// definition of an entry's segments ([`crate::NewEntry`]'s payloads, [`EntryRecord`]'s
    /// references and the pack all follow it).
    pub const ALL: [SegmentKind; 3] = [
        SegmentKind::Bytecode,
        SegmentKind::SourceMap,
        SegmentKind::Aux,
    ];
}

/// Why bytes were rejected. Every variant is a miss for readers and a rebuild for writers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file is shorter than its fixed header, or its length disagrees with the header.
    #[error("length {got} bytes, expected {expected}")]
    Length {
        /// What the header (or the format) requires.
        expected: u64,
        /// What is there.
        got: u64,
    },
    /// The first bytes are not this format's magic number.
    #[error("bad magic number")]
    Magic,
    /// Written by another format version.
    #[error("format version {got}, expected {expected}")]
    Version {
        /// This build's [`FORMAT_VERSION`].
        expected: u32,
        /// The file's.
        got: u32,
    },
    /// Written for another ABI tag (QuickJS version, arch, endianness or pointer width).
    #[error("written for another ABI tag")]
    Abi,
    /// Written by a build whose archived types have another layout.
    #[error("archived type layout differs from this build")]
    Layout,
    /// A checksum did not match.
    #[error("{what} checksum mismatch")]
    Checksum {
        /// Which checksum.
        what: &'static str,
    },
    /// A pack belongs to another generation than the index names.
    #[error("generation {got}, expected {expected}")]
    Generation {
        /// What the index names.
        expected: u64,
        /// What the pack header says.
        got: u64,
    },
    /// The body does not start 16-byte aligned in memory (an in-memory caller's mistake).
    #[error("index body is not 16-byte aligned in memory")]
    Misaligned,
    /// A reference points outside the committed part of the pack.
    #[error("segment {offset}+{len} lies outside the committed {committed} bytes")]
    OutOfBounds {
        /// The segment's payload offset.
        offset: u64,
        /// The segment's payload length.
        len: u64,
        /// Committed pack length.
        committed: u64,
    },
    /// A field would not fit its width in the format.
    #[error("{what} too large for the format")]
    TooLarge {
        /// Which field.
        what: &'static str,
    },
    /// A file the published index names (its pack, or the base it extends) is not there,
    /// every time the index is read again: deleted from outside, or lost in a crash.
    #[error("is named by the published index but missing")]
    Missing,
    /// Something other than a regular file has the file's name (a FIFO, a device, a
    /// directory, a symlink): it is never read.
    #[error("is {kind}, not a regular file")]
    NotAFile {
        /// What is there.
        kind: &'static str,
    },
    /// The bytes are structurally malformed: a header whose length field disagrees with its
    /// kind's, an index record shorter than its root (checked on every read of a record), a
    /// record rkyv's validator rejects or whose key is not its row's (when records are decoded:
    /// `verify`, compaction, the fuzzers), a segment of unknown kind (walking a pack), or a base
    /// that is not the one the index names.
    #[error("index body is malformed: {0}")]
    Malformed(String),
}

/// The index, owned (as writers hold it): every live entry, sorted by key, and where the
/// pack's committed data ends. Encoded as a header, a key table and one rkyv record per entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexBody {
    /// The pack generation this index describes: `pack-<generation>`.
    pub generation: u64,
    /// Committed length of that pack, header included.
    pub pack_len: u64,
    /// Next insertion sequence number; eviction drops the smallest first.
    pub next_seq: u64,
    /// One record per key, sorted by key, no duplicates.
    pub entries: Vec<EntryRecord>,
}

/// One cached module.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The key's 16 bytes.
    pub key: [u8; 16],
    /// Insertion order, for least-recently-inserted eviction.
    pub seq: u64,
    /// The module's name, as given to `NewEntry::new`.
    pub module_name: String,
    /// Bit set: [`FLAG_ENGINE_BYTECODE`], [`FLAG_POINTER`].
    pub flags: u32,
    /// Wall-clock nanoseconds since the epoch, no later than the start of the earliest read
    /// of an input (for an entry without inputs, when it was prepared for the write); stat
    /// data within the racy window before this instant is not trusted.
    pub recorded_at_ns: i64,
    /// Where the bytecode is.
    pub bytecode: SegmentRef,
    /// Where the source map is, if any.
    pub source_map: Option<SegmentRef>,
    /// Where the aux sidecar is, if any.
    pub aux: Option<SegmentRef>,
    /// Every input the entry depends on.
    pub inputs: Vec<InputRecord>,
    /// The absolute root its relative inputs were recorded under (OS bytes), if any: where a
    /// lookup that names no root, and a compaction, check them.
    pub root: Option<Vec<u8>>,
}

/// A segment's payload in the pack.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRef {
    /// Offset of the payload (not the segment header) from the start of the pack.
    pub offset: u64,
    /// Payload length.
    pub len: u64,
    /// `xxh3_128` of the payload, little-endian.
    pub checksum: [u8; 16],
}

/// An input file and what it held when the entry was recorded.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// The path's bytes (`OsStr` bytes on Unix).
    pub path: Vec<u8>,
    /// `xxh3_128` of the content the entry was compiled from, little-endian.
    pub content_hash: [u8; 16],
    /// Stat data that short-cuts re-hashing; `None` means "always re-hash".
    pub stat: Option<StatRecord>,
}

/// The stat fields that change when a file's content may have changed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRecord {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

impl SegmentRef {
    /// Bytes this segment takes in the pack, header included (saturating: a record is read
    /// before its segments are bounds-checked, and a crafted one may claim any length).
    pub fn stored_len(&self) -> u64 {
        SEGMENT_HEADER_LEN.saturating_add(self.len)
    }
}

impl EntryRecord {
    /// Bytes this entry's segments take in the pack.
    pub fn stored_len(&self) -> u64 {
        self.segments()
            .map(|(_, s)| s.stored_len())
            .fold(0, u64::saturating_add)
    }

    /// The entry's segments with their kinds.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentKind, &SegmentRef)> {
        std::iter::once((SegmentKind::Bytecode, &self.bytecode))
            .chain(self.source_map.iter().map(|s| (SegmentKind::SourceMap, s)))
            .chain(self.aux.iter().map(|s| (SegmentKind::Aux, s)))
    }

    /// [`EntryRecord::segments`], to move them (a compaction's copy).
    pub fn segments_mut(&mut self) -> impl Iterator<Item = (SegmentKind, &mut SegmentRef)> {
        std::iter::once((SegmentKind::Bytecode, &mut self.bytecode))
            .chain(
                self.source_map
                    .iter_mut()
                    .map(|s| (SegmentKind::SourceMap, s)),
            )
            .chain(self.aux.iter_mut().map(|s| (SegmentKind::Aux, s)))
    }
}

/// An archived entry's segments with their kinds: bytecode, then source map and aux where
/// present (the order [`EntryRecord::segments`] and the pack use).
pub fn archived_segments(
    entry: &ArchivedEntryRecord,
) -> impl Iterator<Item = (SegmentKind, &ArchivedSegmentRef)> {
    std::iter::once((SegmentKind::Bytecode, &entry.bytecode))
        .chain(
            entry
                .source_map
                .as_ref()
                .map(|s| (SegmentKind::SourceMap, s)),
        )
        .chain(entry.aux.as_ref().map(|s| (SegmentKind::Aux, s)))
}

/// Bytes an archived entry's segments take in the pack ([`EntryRecord::stored_len`]).
pub fn archived_stored_len(entry: &ArchivedEntryRecord) -> u64 {
    archived_segments(entry)
        .map(|(_, s)| SegmentRef::from(s).stored_len())
        .fold(0, u64::saturating_add)
}

impl IndexBody {
    /// Live bytes in the pack: header plus every entry's segments.
    pub fn live_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(EntryRecord::stored_len)
            .fold(PACK_HEADER_LEN, u64::saturating_add)
    }
}

/// A fingerprint of the archived types' sizes and alignments, stored in the index header so a
/// build whose layout differs (a forgotten [`FORMAT_VERSION`] bump) rejects the file instead
/// of reading it through unchecked access. The idea is odht's: record your own type sizes.
pub fn layout_fingerprint() -> u64 {
    use std::mem::{align_of, size_of};
    let sizes = [
        INDEX_HEADER_LEN,
        ROW_LEN,
        size_of::<ArchivedEntryRecord>(),
        align_of::<ArchivedEntryRecord>(),
        size_of::<ArchivedSegmentRef>(),
        size_of::<ArchivedInputRecord>(),
        size_of::<ArchivedStatRecord>(),
        size_of::<rkyv::option::ArchivedOption<ArchivedSegmentRef>>(),
    ];
    let mut bytes = Vec::with_capacity(sizes.len() * 8);
    for s in sizes {
        bytes.extend_from_slice(&(s as u64).to_le_bytes());
    }
    xxh3_64(&bytes)
}

/// `xxh3_128` of the ABI tag, as stored in headers.
pub fn abi_hash(abi_tag: &str) -> [u8; 16] {
    xxh3_128(abi_tag.as_bytes()).to_le_bytes()
}

/// `xxh3_128` of a payload, as stored in [`SegmentRef::checksum`] and segment headers.
pub fn payload_checksum(bytes: &[u8]) -> [u8; 16] {
    xxh3_128(bytes).to_le_bytes()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Starts a header of `N` bytes: magic, version, header length and ABI hash. The caller
/// fills in its own fields from [`OWN_FIELDS_AT`] on, then calls [`seal_header`].
fn start_header<const N: usize>(magic: [u8; 8], abi_tag: &str) -> [u8; N] {
    const { assert!(N > OWN_FIELDS_AT + CHECKSUM_LEN) };
    let mut h = [0u8; N];
    h[MAGIC_AT..VERSION_AT].copy_from_slice(&magic);
    h[VERSION_AT..HEADER_LEN_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[HEADER_LEN_AT..ABI_AT].copy_from_slice(&(N as u32).to_le_bytes());
    h[ABI_AT..OWN_FIELDS_AT].copy_from_slice(&abi_hash(abi_tag));
    h
}

/// Writes the header checksum into its last 8 bytes: `xxh3_64` of all the bytes before.
fn seal_header(h: &mut [u8]) {
    let end = h.len() - CHECKSUM_LEN;
    let sum = xxh3_64(&h[..end]);
    h[end..].copy_from_slice(&sum.to_le_bytes());
}

/// The checksum [`seal_header`] wrote into a header of `len` bytes.
fn header_checksum(h: &[u8], len: usize) -> u64 {
    u64_at(h, len - CHECKSUM_LEN)
}

/// Checks what [`start_header`] and [`seal_header`] wrote into the first `len` bytes of a
/// file; returns the header for the caller to read its own fields from.
fn open_header<'a>(
    bytes: &'a [u8],
    magic: [u8; 8],
    len: usize,
    abi_tag: &str,
) -> Result<&'a [u8], FormatError> {
    if bytes.len() < len {
        return Err(FormatError::Length {
            expected: len as u64,
            got: bytes.len() as u64,
        });
    }
    if bytes[MAGIC_AT..VERSION_AT] != magic {
        return Err(FormatError::Magic);
    }
    if xxh3_64(&bytes[..len - CHECKSUM_LEN]) != header_checksum(bytes, len) {
        return Err(FormatError::Checksum { what: "header" });
    }
    let version = u32_at(bytes, VERSION_AT);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            expected: FORMAT_VERSION,
            got: version,
        });
    }
    if u32_at(bytes, HEADER_LEN_AT) as usize != len {
        return Err(FormatError::Malformed("header length".into()));
    }
    if bytes[ABI_AT..OWN_FIELDS_AT] != abi_hash(abi_tag) {
        return Err(FormatError::Abi);
    }
    Ok(&bytes[..len])
}
