//! The on-disk format: every byte this crate writes is laid out here, and only here.
//!
//! This module does no I/O. It turns owned values into bytes and checks bytes handed to it, so
//! it is tested on `Vec`s and fuzzed without a filesystem. `FORMAT.md` at the repository root
//! is the prose version of the same specification, with the concurrency protocol around it.
//!
//! # Files in a cache directory (`<root>/<abi_tag>/`)
//!
//! | name | written by | contents |
//! |---|---|---|
//! | `index` | writers, by temp file + `rename` | [index header](#index-file) + rkyv [`IndexBody`] |
//! | `pack-<generation as 16 hex digits>` | writers, append-only | [pack header](#pack-file) + [segments](#segment) |
//! | `lock` | writers | empty; `flock(2)`ed exclusively around every change |
//! | `.tmp-*` | writers, under the lock | a file being prepared; a leftover is swept by the next writer |
//!
//! All integers are little-endian. Checksums are XXH3: 128-bit over payloads and bodies, 64-bit
//! over fixed-size headers.
//!
//! # Index file
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"BCPKIDX\0"` |
//! | 8 | 4 | [`FORMAT_VERSION`] |
//! | 12 | 4 | header length, [`INDEX_HEADER_LEN`] (96) |
//! | 16 | 16 | `xxh3_128` of the ABI tag string ([`crate::abi_tag`]) |
//! | 32 | 8 | layout fingerprint of the archived types ([`layout_fingerprint`]) |
//! | 40 | 8 | pack generation: the pack is `pack-<generation>` |
//! | 48 | 8 | committed pack length |
//! | 56 | 8 | next insertion sequence number |
//! | 64 | 4 | entry count `n` |
//! | 68 | 4 | reserved, zero |
//! | 72 | 8 | records length `r` in bytes; the file is exactly `96 + 32 n + r` long |
//! | 80 | 8 | reserved, zero |
//! | 88 | 8 | `xxh3_64` of bytes 0..88 |
//! | 96 | 32 n | key table: `n` [rows](#row), sorted by key |
//! | 96 + 32 n | r | records: one rkyv archive of [`EntryRecord`] per row, each 16-byte aligned |
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
//! so it costs the same at 10 entries or 100,000. A lookup binary-searches the table and checks
//! the one record it needs; a reader remembers the verdict for the life of its snapshot. A
//! damaged row or record therefore makes only its own entry miss. Only a record whose checksum
//! (seeded with its key) matched is read in place, without rkyv's validator, through
//! `unsafe_io::CheckedIndex`; `verify` runs the validator over every record too.
//!
//! # Pack file
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"BCPKPACK"` |
//! | 8 | 4 | [`FORMAT_VERSION`] |
//! | 12 | 4 | header length (64) |
//! | 16 | 16 | `xxh3_128` of the ABI tag string |
//! | 32 | 8 | generation (matches the file name and the index's `generation`) |
//! | 40 | 16 | reserved, zero |
//! | 56 | 8 | `xxh3_64` of bytes 0..56 |
//! | 64 | .. | segments, back to back |
//!
//! The pack is only ever appended to. The index records how many bytes of it are committed
//! (`pack_len`); bytes past that are a torn append from a crashed writer, never read, and count
//! as dead space until compaction drops them. A pack is never truncated: readers map it.
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

use rkyv::{Archive, Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

/// Bumped on any change to the bytes this module writes.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a pack file's header.
pub const HEADER_LEN: usize = 64;
/// Length of an index file's header; the key table starts here.
pub const INDEX_HEADER_LEN: usize = 96;
/// Length of one key-table row.
pub const ROW_LEN: usize = 32;
/// Alignment of every record in the index (and of the records region).
pub const RECORD_ALIGN: usize = 16;
/// Length of a pack file's header; the first segment starts here.
pub const PACK_HEADER_LEN: u64 = HEADER_LEN as u64;
/// Length of a segment header; the payload starts this far after the segment's offset.
pub const SEGMENT_HEADER_LEN: u64 = 56;

pub(crate) const INDEX_MAGIC: [u8; 8] = *b"BCPKIDX\0";
pub(crate) const PACK_MAGIC: [u8; 8] = *b"BCPKPACK";
const SEGMENT_MAGIC: [u8; 4] = *b"BSEG";

/// [`EntryRecord::flags`]: the bytecode was produced by this crate's own QuickJS compile
/// path (not handed to `put` by a caller), so it may be given to `Module::load`.
pub const FLAG_ENGINE_BYTECODE: u32 = 1;

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
    /// Something other than a regular file has the file's name (a FIFO, a device, a
    /// directory, a symlink): it is never read.
    #[error("is {kind}, not a regular file")]
    NotAFile {
        /// What is there.
        kind: &'static str,
    },
    /// The rkyv body failed structural validation (only checked by `verify`).
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
    /// Bit set: [`FLAG_ENGINE_BYTECODE`].
    pub flags: u32,
    /// Wall-clock nanoseconds since the epoch, taken after the inputs were hashed; stat data
    /// within the racy window before this instant is not trusted.
    pub recorded_at_ns: i64,
    /// Where the bytecode is.
    pub bytecode: SegmentRef,
    /// Where the source map is, if any.
    pub source_map: Option<SegmentRef>,
    /// Where the aux sidecar is, if any.
    pub aux: Option<SegmentRef>,
    /// Every input the entry depends on.
    pub inputs: Vec<InputRecord>,
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
    /// Bytes this segment takes in the pack, header included.
    pub fn stored_len(&self) -> u64 {
        SEGMENT_HEADER_LEN + self.len
    }
}

impl EntryRecord {
    /// Bytes this entry's segments take in the pack.
    pub fn stored_len(&self) -> u64 {
        self.segments().map(|(_, s)| s.stored_len()).sum()
    }

    /// The entry's segments with their kinds.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentKind, &SegmentRef)> {
        std::iter::once((SegmentKind::Bytecode, &self.bytecode))
            .chain(self.source_map.iter().map(|s| (SegmentKind::SourceMap, s)))
            .chain(self.aux.iter().map(|s| (SegmentKind::Aux, s)))
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

impl IndexBody {
    /// Live bytes in the pack: header plus every entry's segments.
    pub fn live_bytes(&self) -> u64 {
        PACK_HEADER_LEN
            + self
                .entries
                .iter()
                .map(EntryRecord::stored_len)
                .sum::<u64>()
    }

    /// Position of `key` in `entries` (`Ok`) or where it would go (`Err`).
    pub fn position(&self, key: &[u8; 16]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.key.cmp(key))
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

/// Starts a header of `N` bytes: magic, version, header length and ABI hash at 0..32. The
/// caller fills in its own fields from 32 on, then calls [`seal_header`].
fn start_header<const N: usize>(magic: [u8; 8], abi_tag: &str) -> [u8; N] {
    let mut h = [0u8; N];
    h[0..8].copy_from_slice(&magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(N as u32).to_le_bytes());
    h[16..32].copy_from_slice(&abi_hash(abi_tag));
    h
}

/// Writes the header checksum into its last 8 bytes: `xxh3_64` of all the bytes before.
fn seal_header(h: &mut [u8]) {
    let end = h.len() - 8;
    let sum = xxh3_64(&h[..end]);
    h[end..].copy_from_slice(&sum.to_le_bytes());
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
    if bytes[0..8] != magic {
        return Err(FormatError::Magic);
    }
    if xxh3_64(&bytes[..len - 8]) != u64_at(bytes, len - 8) {
        return Err(FormatError::Checksum { what: "header" });
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            expected: FORMAT_VERSION,
            got: version,
        });
    }
    if u32_at(bytes, 12) as usize != len {
        return Err(FormatError::Malformed("header length".into()));
    }
    if bytes[16..32] != abi_hash(abi_tag) {
        return Err(FormatError::Abi);
    }
    Ok(&bytes[..len])
}

/// The index header's fields, after [`check_index_header`] accepted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// The pack generation.
    pub generation: u64,
    /// Committed pack length.
    pub pack_len: u64,
    /// Next insertion sequence number.
    pub next_seq: u64,
    /// Number of rows (entries).
    pub count: usize,
    /// Length of the records region.
    pub records_len: usize,
}

impl IndexHeader {
    fn records_start(&self) -> usize {
        INDEX_HEADER_LEN + ROW_LEN * self.count
    }
}

/// One key-table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The entry's key.
    pub key: [u8; 16],
    /// Record offset within the records region.
    pub offset: u32,
    /// Record length.
    pub len: u32,
    /// `xxh3_64` of the record, seeded with `xxh3_64(key)`.
    pub checksum: u64,
}

fn record_checksum(key: &[u8; 16], record: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(record, xxh3_64(key))
}

/// Serialises `body` into a complete index file. Fails only if a field would not fit its
/// width: more than `u32::MAX` entries, or records past 4 GiB.
pub fn encode_index(body: &IndexBody, abi_tag: &str) -> Result<Vec<u8>, FormatError> {
    let count = body.entries.len();
    let count_field = u32::try_from(count).map_err(|_| FormatError::TooLarge {
        what: "entry count",
    })?;
    let mut table = Vec::with_capacity(count * ROW_LEN);
    let mut records: Vec<u8> = Vec::new();
    for entry in &body.entries {
        let archived = rkyv::to_bytes::<rkyv::rancor::BoxedError>(entry)
            .expect("serialising plain owned data into a Vec cannot fail");
        let offset = u32::try_from(records.len()).map_err(|_| FormatError::TooLarge {
            what: "index records region",
        })?;
        let len = u32::try_from(archived.len()).map_err(|_| FormatError::TooLarge {
            what: "index record",
        })?;
        table.extend_from_slice(&entry.key);
        table.extend_from_slice(&offset.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&record_checksum(&entry.key, &archived).to_le_bytes());
        records.extend_from_slice(&archived);
        records.resize(records.len().next_multiple_of(RECORD_ALIGN), 0);
    }
    let mut h: [u8; INDEX_HEADER_LEN] = start_header(INDEX_MAGIC, abi_tag);
    h[32..40].copy_from_slice(&layout_fingerprint().to_le_bytes());
    h[40..48].copy_from_slice(&body.generation.to_le_bytes());
    h[48..56].copy_from_slice(&body.pack_len.to_le_bytes());
    h[56..64].copy_from_slice(&body.next_seq.to_le_bytes());
    h[64..68].copy_from_slice(&count_field.to_le_bytes());
    h[72..80].copy_from_slice(&(records.len() as u64).to_le_bytes());
    seal_header(&mut h);
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + table.len() + records.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&table);
    out.extend_from_slice(&records);
    Ok(out)
}

/// Checks an index file's header and that the file is exactly as long as the header says.
/// Touches nothing past the header: rows and records are checked when they are used.
pub fn check_index_header(file: &[u8], abi_tag: &str) -> Result<IndexHeader, FormatError> {
    open_header(file, INDEX_MAGIC, INDEX_HEADER_LEN, abi_tag)?;
    if u64_at(file, 32) != layout_fingerprint() {
        return Err(FormatError::Layout);
    }
    let count = u32_at(file, 64) as u64;
    let records_len = u64_at(file, 72);
    let expected = (INDEX_HEADER_LEN as u64)
        .saturating_add(count.saturating_mul(ROW_LEN as u64))
        .saturating_add(records_len);
    if file.len() as u64 != expected {
        return Err(FormatError::Length {
            expected,
            got: file.len() as u64,
        });
    }
    if !(file.as_ptr() as usize).is_multiple_of(RECORD_ALIGN) {
        return Err(FormatError::Misaligned);
    }
    Ok(IndexHeader {
        generation: u64_at(file, 40),
        pack_len: u64_at(file, 48),
        next_seq: u64_at(file, 56),
        // Both fit: the file that holds them is in memory.
        count: count as usize,
        records_len: records_len as usize,
    })
}

/// Row `i` of a checked index. `i` must be below `header.count`.
pub fn index_row(file: &[u8], header: &IndexHeader, i: usize) -> Row {
    debug_assert!(i < header.count);
    let at = INDEX_HEADER_LEN + i * ROW_LEN;
    let r = &file[at..at + ROW_LEN];
    Row {
        key: r[0..16].try_into().expect("16 bytes"),
        offset: u32_at(r, 16),
        len: u32_at(r, 20),
        checksum: u64_at(r, 24),
    }
}

/// The row holding `key`. Keys are XXH3 digests, uniform over their range, so interpolation
/// on the first 8 bytes lands within a few rows in two or three rounds (a few cache misses
/// instead of the ~17 of a binary search at 100,000 entries); a bounded number of rounds, then
/// binary search, keeps the worst case logarithmic. On a damaged (unsorted) table this may miss
/// a key that is there, never return a row for another key.
pub fn find_row(file: &[u8], header: &IndexHeader, key: &[u8; 16]) -> Option<usize> {
    let key_at = |i: usize| -> &[u8] {
        let at = INDEX_HEADER_LEN + i * ROW_LEN;
        &file[at..at + 16]
    };
    let prefix = |k: &[u8]| u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    let target = prefix(key);
    let (mut lo, mut hi) = (0, header.count);
    for _ in 0..4 {
        if hi - lo <= 8 {
            break;
        }
        let (low, high) = (prefix(key_at(lo)), prefix(key_at(hi - 1)));
        if target < low || target > high {
            return None;
        }
        if high <= low {
            break;
        }
        let span = (hi - 1 - lo) as u128;
        let guess = lo + ((u128::from(target - low) * span) / u128::from(high - low)) as usize;
        match key_at(guess).cmp(key) {
            std::cmp::Ordering::Less => lo = guess + 1,
            std::cmp::Ordering::Greater => hi = guess,
            std::cmp::Ordering::Equal => return Some(guess),
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match key_at(mid).cmp(key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

/// The bytes row `i` points at, bounds- and alignment-checked, not yet checksummed.
pub fn index_record_span<'f>(
    file: &'f [u8],
    header: &IndexHeader,
    i: usize,
) -> Result<(Row, &'f [u8]), FormatError> {
    let row = index_row(file, header, i);
    let (offset, len) = (row.offset as usize, row.len as usize);
    if offset.saturating_add(len) > header.records_len {
        return Err(FormatError::OutOfBounds {
            offset: offset as u64,
            len: len as u64,
            committed: header.records_len as u64,
        });
    }
    if !offset.is_multiple_of(RECORD_ALIGN) {
        return Err(FormatError::Misaligned);
    }
    if len < std::mem::size_of::<ArchivedEntryRecord>() {
        return Err(FormatError::Malformed(
            "record shorter than its root".into(),
        ));
    }
    let start = header.records_start() + offset;
    Ok((row, &file[start..start + len]))
}

/// The bytes of row `i`'s record, bounds-, alignment- and checksum-checked: on success they
/// are exactly what this build's serializer wrote for that key.
pub fn index_record<'f>(
    file: &'f [u8],
    header: &IndexHeader,
    i: usize,
) -> Result<&'f [u8], FormatError> {
    let (row, bytes) = index_record_span(file, header, i)?;
    if record_checksum(&row.key, bytes) != row.checksum {
        return Err(FormatError::Checksum {
            what: "index record",
        });
    }
    Ok(bytes)
}

/// Full structural validation of a record with rkyv's validator: slower than the checksum,
/// used by `verify` and the fuzzers to catch what a checksum cannot (a writer bug).
pub fn validate_record(record: &[u8]) -> Result<&ArchivedEntryRecord, FormatError> {
    rkyv::access::<ArchivedEntryRecord, rkyv::rancor::BoxedError>(record)
        .map_err(|e| FormatError::Malformed(e.to_string()))
}

/// Decodes a whole index for a writer, validating every record. Entries whose row or record
/// is damaged are dropped and counted: the rest of the cache survives.
pub fn decode_index(file: &[u8], abi_tag: &str) -> Result<(IndexBody, usize), FormatError> {
    let header = check_index_header(file, abi_tag)?;
    let mut body = IndexBody {
        generation: header.generation,
        pack_len: header.pack_len,
        next_seq: header.next_seq,
        entries: Vec::with_capacity(header.count),
    };
    let mut dropped = 0;
    for i in 0..header.count {
        let decoded = index_record(file, &header, i)
            .and_then(validate_record)
            .and_then(|archived| {
                rkyv::deserialize::<EntryRecord, rkyv::rancor::BoxedError>(archived)
                    .map_err(|e| FormatError::Malformed(e.to_string()))
            });
        match decoded {
            Ok(entry) if entry.key == index_row(file, &header, i).key => body.entries.push(entry),
            _ => dropped += 1,
        }
    }
    body.entries.sort_by_key(|e| e.key);
    body.entries.dedup_by_key(|e| e.key);
    Ok((body, dropped))
}

/// The header of a new pack file of `generation`.
pub fn encode_pack_header(generation: u64, abi_tag: &str) -> [u8; HEADER_LEN] {
    let mut h: [u8; HEADER_LEN] = start_header(PACK_MAGIC, abi_tag);
    h[32..40].copy_from_slice(&generation.to_le_bytes());
    seal_header(&mut h);
    h
}

/// Checks a pack's header against the generation its index names.
pub fn check_pack_header(pack: &[u8], generation: u64, abi_tag: &str) -> Result<(), FormatError> {
    let header = open_header(pack, PACK_MAGIC, HEADER_LEN, abi_tag)?;
    let got = u64_at(header, 32);
    if got != generation {
        return Err(FormatError::Generation {
            expected: generation,
            got,
        });
    }
    Ok(())
}

/// The header of a segment holding `payload`.
pub fn encode_segment_header(
    kind: SegmentKind,
    key: &[u8; 16],
    payload: &[u8],
) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4] = kind as u8;
    h[8..24].copy_from_slice(key);
    h[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[32..48].copy_from_slice(&payload_checksum(payload));
    let sum = xxh3_64(&h[..48]);
    h[48..56].copy_from_slice(&sum.to_le_bytes());
    h
}

/// A segment found by walking a pack on its own (for `verify` and recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedSegment {
    /// What it holds.
    pub kind: SegmentKind,
    /// The key it was written for.
    pub key: [u8; 16],
    /// Where its payload is.
    pub payload: SegmentRef,
}

/// Parses the segment whose header starts at `offset` in `pack`, checking both checksums.
pub fn scan_segment(pack: &[u8], offset: u64) -> Result<ScannedSegment, FormatError> {
    let committed = pack.len() as u64;
    let out_of_bounds = |len| FormatError::OutOfBounds {
        offset,
        len,
        committed,
    };
    let start = usize::try_from(offset).map_err(|_| out_of_bounds(SEGMENT_HEADER_LEN))?;
    let header_end = offset
        .checked_add(SEGMENT_HEADER_LEN)
        .filter(|&end| end <= committed)
        .ok_or_else(|| out_of_bounds(SEGMENT_HEADER_LEN))?;
    let h = &pack[start..header_end as usize];
    if h[0..4] != SEGMENT_MAGIC {
        return Err(FormatError::Magic);
    }
    if xxh3_64(&h[..48]) != u64_at(h, 48) {
        return Err(FormatError::Checksum {
            what: "segment header",
        });
    }
    let kind = match h[4] {
        1 => SegmentKind::Bytecode,
        2 => SegmentKind::SourceMap,
        3 => SegmentKind::Aux,
        other => return Err(FormatError::Malformed(format!("segment kind {other}"))),
    };
    let payload = SegmentRef {
        offset: header_end,
        len: u64_at(h, 24),
        checksum: h[32..48].try_into().expect("16 bytes"),
    };
    let bytes = segment_bytes(pack, &payload)?;
    if payload_checksum(bytes) != payload.checksum {
        return Err(FormatError::Checksum {
            what: "segment payload",
        });
    }
    Ok(ScannedSegment {
        kind,
        key: h[8..24].try_into().expect("16 bytes"),
        payload,
    })
}

/// The payload bytes `segment` names, bounds-checked against the committed pack.
pub fn segment_bytes<'p>(pack: &'p [u8], segment: &SegmentRef) -> Result<&'p [u8], FormatError> {
    let committed = pack.len() as u64;
    let end = segment.offset.checked_add(segment.len);
    match end {
        Some(end) if end <= committed && segment.offset >= PACK_HEADER_LEN => {
            Ok(&pack[segment.offset as usize..end as usize])
        }
        _ => Err(FormatError::OutOfBounds {
            offset: segment.offset,
            len: segment.len,
            committed,
        }),
    }
}

/// [`segment_bytes`], then the payload checksum.
pub fn checked_segment_bytes<'p>(
    pack: &'p [u8],
    segment: &SegmentRef,
) -> Result<&'p [u8], FormatError> {
    let bytes = segment_bytes(pack, segment)?;
    if payload_checksum(bytes) != segment.checksum {
        return Err(FormatError::Checksum {
            what: "segment payload",
        });
    }
    Ok(bytes)
}

/// The owned form of an archived segment reference.
impl From<&ArchivedSegmentRef> for SegmentRef {
    fn from(a: &ArchivedSegmentRef) -> Self {
        SegmentRef {
            offset: a.offset.to_native(),
            len: a.len.to_native(),
            checksum: a.checksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "test-abi";

    fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec {
        let mut v = rkyv::util::AlignedVec::new();
        v.extend_from_slice(bytes);
        v
    }

    fn sample_body() -> IndexBody {
        IndexBody {
            generation: 7,
            pack_len: 1000,
            next_seq: 2,
            entries: vec![EntryRecord {
                key: [3; 16],
                seq: 1,
                module_name: "main.js".into(),
                flags: FLAG_ENGINE_BYTECODE,
                recorded_at_ns: 42,
                bytecode: SegmentRef {
                    offset: 120,
                    len: 10,
                    checksum: [9; 16],
                },
                source_map: None,
                aux: Some(SegmentRef {
                    offset: 200,
                    len: 3,
                    checksum: [1; 16],
                }),
                inputs: vec![InputRecord {
                    path: b"/a/b.js".to_vec(),
                    content_hash: [5; 16],
                    stat: None,
                }],
            }],
        }
    }

    fn two_entry_body() -> IndexBody {
        let mut body = sample_body();
        let mut second = body.entries[0].clone();
        second.key = [4; 16];
        second.module_name = "a much longer module name than fits inline.js".into();
        body.entries.push(second);
        body
    }

    #[test]
    fn index_round_trips_and_every_header_byte_is_covered() {
        let body = two_entry_body();
        let file = aligned(&encode_index(&body, TAG).unwrap());
        let header = check_index_header(&file, TAG).expect("valid");
        assert_eq!(
            (header.generation, header.pack_len, header.count),
            (7, 1000, 2)
        );
        assert_eq!(decode_index(&file, TAG).unwrap(), (body.clone(), 0));
        assert_eq!(find_row(&file, &header, &[4; 16]), Some(1));
        assert_eq!(find_row(&file, &header, &[5; 16]), None);
        let record = validate_record(index_record(&file, &header, 1).unwrap()).unwrap();
        assert_eq!(record.module_name.as_str(), body.entries[1].module_name);

        for i in 0..INDEX_HEADER_LEN {
            let mut bad = aligned(&file);
            bad[i] ^= 0x40;
            assert!(
                check_index_header(&bad, TAG).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn a_damaged_row_or_record_costs_only_its_own_entry() {
        let body = two_entry_body();
        let file = aligned(&encode_index(&body, TAG).unwrap());
        let header = check_index_header(&file, TAG).unwrap();
        for i in INDEX_HEADER_LEN..file.len() {
            let mut bad = aligned(&file);
            bad[i] ^= 0x01;
            let header = check_index_header(&bad, TAG).expect("header untouched");
            let (decoded, dropped) = decode_index(&bad, TAG).unwrap();
            // Padding bytes between records are covered by nothing and may change freely.
            assert!(dropped <= 1, "flip at {i} dropped {dropped}");
            for entry in &decoded.entries {
                assert!(body.entries.contains(entry), "flip at {i} changed an entry");
            }
            for row in 0..header.count {
                if let Ok(bytes) = index_record(&bad, &header, row) {
                    validate_record(bytes).expect("checksummed records are valid");
                }
            }
        }
        assert!(index_record(&file, &header, 0).is_ok());
    }

    #[test]
    fn find_row_finds_every_key_and_nothing_else() {
        for n in [0usize, 1, 2, 9, 100, 5000] {
            let mut body = IndexBody::default();
            let template = sample_body().entries[0].clone();
            body.entries = (0..n as u64)
                .map(|i| EntryRecord {
                    key: xxh3_128(&i.to_le_bytes()).to_le_bytes(),
                    ..template.clone()
                })
                .collect();
            // Clustered keys too: interpolation must not assume uniformity for correctness.
            body.entries.extend((0..n as u8).map(|i| EntryRecord {
                key: [i; 16],
                ..template.clone()
            }));
            body.entries.sort_by_key(|e| e.key);
            body.entries.dedup_by_key(|e| e.key);
            let file = aligned(&encode_index(&body, TAG).unwrap());
            let header = check_index_header(&file, TAG).unwrap();
            for (i, e) in body.entries.iter().enumerate() {
                assert_eq!(find_row(&file, &header, &e.key), Some(i), "n={n}");
            }
            for probe in 0..200u64 {
                let key = xxh3_128(&(probe + 1_000_000).to_le_bytes()).to_le_bytes();
                assert_eq!(find_row(&file, &header, &key), None);
            }
            assert_eq!(find_row(&file, &header, &[0xff; 16]), None);
            assert_eq!(find_row(&file, &header, &[0; 16]), (n > 0).then_some(0));
        }
    }

    #[test]
    fn index_rejects_other_abi_trailing_bytes_and_truncation() {
        let file = aligned(&encode_index(&sample_body(), TAG).unwrap());
        assert_eq!(
            check_index_header(&file, "other").err(),
            Some(FormatError::Abi)
        );
        let mut padded = aligned(&file);
        padded.extend_from_slice(&[0; 16]);
        assert!(matches!(
            check_index_header(&padded, TAG),
            Err(FormatError::Length { .. })
        ));
        let short = aligned(&file[..file.len() - 1]);
        assert!(matches!(
            check_index_header(&short, TAG),
            Err(FormatError::Length { .. })
        ));
        let empty = aligned(&encode_index(&IndexBody::default(), TAG).unwrap());
        assert_eq!(
            decode_index(&empty, TAG).unwrap(),
            (IndexBody::default(), 0)
        );
    }

    #[test]
    fn segments_scan_and_reject_damage() {
        let key = [7u8; 16];
        let payload = b"bytecode bytes";
        let mut pack = encode_pack_header(3, TAG).to_vec();
        pack.extend_from_slice(&encode_segment_header(SegmentKind::Bytecode, &key, payload));
        pack.extend_from_slice(payload);
        check_pack_header(&pack, 3, TAG).unwrap();
        assert!(matches!(
            check_pack_header(&pack, 4, TAG),
            Err(FormatError::Generation { .. })
        ));
        let seg = scan_segment(&pack, PACK_HEADER_LEN).unwrap();
        assert_eq!(seg.kind, SegmentKind::Bytecode);
        assert_eq!(seg.key, key);
        assert_eq!(checked_segment_bytes(&pack, &seg.payload).unwrap(), payload);

        for i in PACK_HEADER_LEN as usize..pack.len() {
            let mut bad = pack.clone();
            bad[i] ^= 0x01;
            assert!(scan_segment(&bad, PACK_HEADER_LEN).is_err(), "flip at {i}");
        }
        assert!(scan_segment(&pack[..pack.len() - 1], PACK_HEADER_LEN).is_err());
        let huge = SegmentRef {
            offset: u64::MAX - 2,
            len: 10,
            checksum: [0; 16],
        };
        assert!(segment_bytes(&pack, &huge).is_err());
    }
}
