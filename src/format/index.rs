//! The index file: header, key table and records; full or a delta over a base.

use xxhash_rust::xxh3::xxh3_64;

use super::{
    ArchivedEntryRecord, CHECKSUM_LEN, EntryRecord, FormatError, IndexBody, OWN_FIELDS_AT,
    header_checksum, layout_fingerprint, open_header, seal_header, start_header, u32_at, u64_at,
};

/// Length of an index file's header; the key table starts here.
pub const INDEX_HEADER_LEN: usize = 128;
/// Length of one key-table row.
pub const ROW_LEN: usize = 32;
/// Alignment of every record in the index (and of the records region).
pub const RECORD_ALIGN: usize = 16;
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"BCPKIDX\0";

/// The index header's own fields, each after the one before.
const LAYOUT_AT: usize = OWN_FIELDS_AT;
/// Where the header's generation is: everything before it (magic, version, ABI tag, layout
/// fingerprint) is common to every index of a build.
pub(crate) const GENERATION_AT: usize = LAYOUT_AT + 8;
const PACK_LEN_AT: usize = GENERATION_AT + 8;
const NEXT_SEQ_AT: usize = PACK_LEN_AT + 8;
/// Where the header's row count (`u32`) is.
pub(crate) const COUNT_AT: usize = NEXT_SEQ_AT + 8;
const RESERVED_AT: usize = COUNT_AT + 4;
/// Where the header's records-region length (`u64`) is.
pub(crate) const RECORDS_LEN_AT: usize = RESERVED_AT + 4;
const BASE_ID_AT: usize = RECORDS_LEN_AT + 8;
const BASE_LEN_AT: usize = BASE_ID_AT + 8;
const BASE_CHECKSUM_AT: usize = BASE_LEN_AT + 8;
const LIVE_ENTRIES_AT: usize = BASE_CHECKSUM_AT + 8;
const LIVE_BYTES_AT: usize = LIVE_ENTRIES_AT + 8;
const _: () = assert!(LIVE_BYTES_AT + 8 == INDEX_HEADER_LEN - CHECKSUM_LEN);

/// Where a row's fields are.
const ROW_OFFSET_AT: usize = 16;
const ROW_LEN_AT: usize = ROW_OFFSET_AT + 4;
const ROW_CHECKSUM_AT: usize = ROW_LEN_AT + 4;
const _: () = assert!(ROW_CHECKSUM_AT + 8 == ROW_LEN);

/// A delta's reference to the full index it extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRef {
    /// The base file is `base-<id>`; never 0.
    pub id: u64,
    /// Its exact length.
    pub len: u64,
    /// Its header checksum.
    pub checksum: u64,
}

/// What an index's header says besides its table: written by [`IndexEncoder::finish`], read
/// by [`check_index_header`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexFields {
    /// The pack generation: the pack is `pack-<generation>`.
    pub generation: u64,
    /// Committed pack length.
    pub pack_len: u64,
    /// Next insertion sequence number.
    pub next_seq: u64,
    /// The base this index is a delta over, if any.
    pub base: Option<BaseRef>,
    /// Distinct live keys, this file and its base together.
    pub live_entries: u64,
    /// The pack header plus the segments of every live entry.
    pub live_bytes: u64,
}

/// The index header's fields, after [`check_index_header`] accepted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Everything but the table's shape.
    pub fields: IndexFields,
    /// Number of rows.
    pub count: usize,
    /// Length of the records region.
    pub records_len: usize,
    /// This header's own checksum: what a delta's [`BaseRef`] names.
    pub checksum: u64,
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

/// Builds an index file row by row, in key order: new records serialised, or records of
/// another index copied verbatim with their row's checksum.
#[derive(Default)]
pub struct IndexEncoder {
    table: Vec<u8>,
    records: Vec<u8>,
    count: u32,
    last_key: Option<[u8; 16]>,
}

impl IndexEncoder {
    /// An encoder with room for `rows` rows of about `record_bytes` in all.
    pub fn with_capacity(rows: usize, record_bytes: usize) -> IndexEncoder {
        IndexEncoder {
            table: Vec::with_capacity(rows * ROW_LEN),
            records: Vec::with_capacity(record_bytes + rows * RECORD_ALIGN),
            ..IndexEncoder::default()
        }
    }

    /// Appends a row for `entry`, serialising it.
    pub fn push_record(&mut self, entry: &EntryRecord) -> Result<(), FormatError> {
        let archived = rkyv::to_bytes::<rkyv::rancor::BoxedError>(entry)
            .expect("serialising plain owned data into a Vec cannot fail");
        let checksum = record_checksum(&entry.key, &archived);
        self.push_bytes(&entry.key, &archived, checksum)
    }

    /// Appends a row whose record bytes and checksum are copied from another index: a
    /// record is position-independent, and a damaged one stays detectably damaged.
    pub fn push_bytes(
        &mut self,
        key: &[u8; 16],
        record: &[u8],
        checksum: u64,
    ) -> Result<(), FormatError> {
        debug_assert!(self.last_key.is_none_or(|k| &k < key), "rows out of order");
        self.last_key = Some(*key);
        let offset = u32::try_from(self.records.len()).map_err(|_| FormatError::TooLarge {
            what: "index records region",
        })?;
        let len = u32::try_from(record.len()).map_err(|_| FormatError::TooLarge {
            what: "index record",
        })?;
        self.count = self.count.checked_add(1).ok_or(FormatError::TooLarge {
            what: "entry count",
        })?;
        self.table.extend_from_slice(key);
        self.table.extend_from_slice(&offset.to_le_bytes());
        self.table.extend_from_slice(&len.to_le_bytes());
        self.table.extend_from_slice(&checksum.to_le_bytes());
        self.records.extend_from_slice(record);
        self.records
            .resize(self.records.len().next_multiple_of(RECORD_ALIGN), 0);
        Ok(())
    }

    /// The complete file.
    pub fn finish(self, fields: &IndexFields, abi_tag: &str) -> Vec<u8> {
        let mut h: [u8; INDEX_HEADER_LEN] = start_header(INDEX_MAGIC, abi_tag);
        let mut put = |at: usize, value: u64| h[at..at + 8].copy_from_slice(&value.to_le_bytes());
        put(LAYOUT_AT, layout_fingerprint());
        put(GENERATION_AT, fields.generation);
        put(PACK_LEN_AT, fields.pack_len);
        put(NEXT_SEQ_AT, fields.next_seq);
        put(RECORDS_LEN_AT, self.records.len() as u64);
        let base = fields.base.unwrap_or(BaseRef {
            id: 0,
            len: 0,
            checksum: 0,
        });
        put(BASE_ID_AT, base.id);
        put(BASE_LEN_AT, base.len);
        put(BASE_CHECKSUM_AT, base.checksum);
        put(LIVE_ENTRIES_AT, fields.live_entries);
        put(LIVE_BYTES_AT, fields.live_bytes);
        h[COUNT_AT..RESERVED_AT].copy_from_slice(&self.count.to_le_bytes());
        seal_header(&mut h);
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + self.table.len() + self.records.len());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.table);
        out.extend_from_slice(&self.records);
        out
    }
}

/// Serialises `body` into a complete full index file (no base). Fails only if a field would
/// not fit its width: more than `u32::MAX` entries, or records past 4 GiB.
pub fn encode_index(body: &IndexBody, abi_tag: &str) -> Result<Vec<u8>, FormatError> {
    let mut encoder = IndexEncoder::with_capacity(body.entries.len(), body.entries.len() * 256);
    for entry in &body.entries {
        encoder.push_record(entry)?;
    }
    let fields = IndexFields {
        generation: body.generation,
        pack_len: body.pack_len,
        next_seq: body.next_seq,
        base: None,
        live_entries: body.entries.len() as u64,
        live_bytes: body.live_bytes(),
    };
    Ok(encoder.finish(&fields, abi_tag))
}

/// Checks an index file's header and that the file is exactly as long as the header says.
/// Touches nothing past the header: rows and records are checked when they are used.
pub fn check_index_header(file: &[u8], abi_tag: &str) -> Result<IndexHeader, FormatError> {
    open_header(file, INDEX_MAGIC, INDEX_HEADER_LEN, abi_tag)?;
    if u64_at(file, LAYOUT_AT) != layout_fingerprint() {
        return Err(FormatError::Layout);
    }
    let count = u32_at(file, COUNT_AT) as u64;
    let records_len = u64_at(file, RECORDS_LEN_AT);
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
    // Writers count up from it, one per record and base: past half the range it can only
    // have been forged, and counting on would wrap to 0, which names no base.
    let next_seq = u64_at(file, NEXT_SEQ_AT);
    if next_seq > u64::MAX / 2 {
        return Err(FormatError::TooLarge {
            what: "next sequence number",
        });
    }
    let base_id = u64_at(file, BASE_ID_AT);
    let base = (base_id != 0).then(|| BaseRef {
        id: base_id,
        len: u64_at(file, BASE_LEN_AT),
        checksum: u64_at(file, BASE_CHECKSUM_AT),
    });
    Ok(IndexHeader {
        fields: IndexFields {
            generation: u64_at(file, GENERATION_AT),
            pack_len: u64_at(file, PACK_LEN_AT),
            next_seq,
            base,
            live_entries: u64_at(file, LIVE_ENTRIES_AT),
            live_bytes: u64_at(file, LIVE_BYTES_AT),
        },
        // Both fit: the file that holds them is in memory.
        count: count as usize,
        records_len: records_len as usize,
        checksum: header_checksum(file, INDEX_HEADER_LEN),
    })
}

/// Whether `base` (a checked full index) is the one `reference` names: same length, same
/// header checksum, no base of its own, and the delta's generation.
pub fn base_matches(
    base: &IndexHeader,
    base_len: usize,
    reference: &BaseRef,
    generation: u64,
) -> bool {
    base.fields.base.is_none()
        && base_len as u64 == reference.len
        && base.checksum == reference.checksum
        && base.fields.generation == generation
}

/// The row count after which a delta over a base of `base_rows` is merged into one full
/// index: about the square root of twice the base, at least 64. A put rewrites the delta (half
/// the threshold on average) and pays a merge (the whole index) once per threshold puts, so
/// this balances the two: a put costs O(sqrt n) record copies instead of O(n).
pub fn merge_threshold(base_rows: usize) -> usize {
    ((2 * base_rows) as f64).sqrt().ceil().max(64.0) as usize
}

/// Row `i` of a checked index. `i` must be below `header.count`.
pub fn index_row(file: &[u8], header: &IndexHeader, i: usize) -> Row {
    debug_assert!(i < header.count);
    let at = INDEX_HEADER_LEN + i * ROW_LEN;
    let r = &file[at..at + ROW_LEN];
    Row {
        key: r[..ROW_OFFSET_AT].try_into().expect("16 bytes"),
        offset: u32_at(r, ROW_OFFSET_AT),
        len: u32_at(r, ROW_LEN_AT),
        checksum: u64_at(r, ROW_CHECKSUM_AT),
    }
}

/// The row holding `key`. Keys are XXH3 digests, uniform over their range, so interpolation
/// on the first 8 bytes lands within a few rows in two or three rounds (a few cache misses
/// instead of the ~17 of a binary search at 100,000 entries); a bounded number of rounds, then
/// binary search, keeps the worst case logarithmic. On a damaged (unsorted) table this may miss
/// a key that is there, never return a row for another key; a key outside the first and last
/// rows' range goes on to the binary search rather than missing at once, so that one damaged
/// key at either end does not hide the whole table.
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
        if target < low || target > high || high <= low {
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

/// Recomputes every row's record checksum of a file whose header checks out, as a writer with
/// a bug (or someone forging records) would leave them: the fuzzers' way past the checksums,
/// to the validator behind them.
pub(crate) fn reseal_record_checksums(file: &mut [u8], abi_tag: &str) {
    let Ok(header) = check_index_header(file, abi_tag) else {
        return;
    };
    for i in 0..header.count {
        let Ok((row, record)) = index_record_span(file, &header, i) else {
            continue;
        };
        let checksum = record_checksum(&row.key, record);
        let at = INDEX_HEADER_LEN + i * ROW_LEN + ROW_CHECKSUM_AT;
        file[at..at + 8].copy_from_slice(&checksum.to_le_bytes());
    }
}

/// Full structural validation of a record with rkyv's validator, after its checksum: catches
/// what a checksum cannot (a writer bug, bytes forged to match it), saying what was wrong. Run
/// by `verify`, the writer's decode and the fuzzers; a lookup runs [`record_is_valid`].
pub fn validate_record(record: &[u8]) -> Result<&ArchivedEntryRecord, FormatError> {
    rkyv::access::<ArchivedEntryRecord, rkyv::rancor::BoxedError>(record)
        .map_err(|e| FormatError::Malformed(e.to_string()))
}

/// [`validate_record`] without saying what was wrong: what a lookup needs, in about half the
/// instructions (no error is built, so none is traced).
pub fn record_is_valid(record: &[u8]) -> Option<&ArchivedEntryRecord> {
    rkyv::access::<ArchivedEntryRecord, rkyv::rancor::Failure>(record).ok()
}

/// Row `i`'s record, checked (checksum, rkyv validator, key) and deserialised.
pub fn decode_record(
    file: &[u8],
    header: &IndexHeader,
    i: usize,
) -> Result<EntryRecord, FormatError> {
    let archived = validate_record(index_record(file, header, i)?)?;
    let entry = rkyv::deserialize::<EntryRecord, rkyv::rancor::BoxedError>(archived)
        .map_err(|e| FormatError::Malformed(e.to_string()))?;
    if entry.key != index_row(file, header, i).key {
        return Err(FormatError::Malformed(
            "record key is not its row's key".into(),
        ));
    }
    Ok(entry)
}

/// Decodes one index file's records (a full index, or a delta's own rows), validating every
/// record. Entries whose row or record is damaged are dropped and counted: the rest of the
/// cache survives. The body's header fields are this file's.
pub fn decode_index(file: &[u8], abi_tag: &str) -> Result<(IndexBody, usize), FormatError> {
    let header = check_index_header(file, abi_tag)?;
    let mut body = IndexBody {
        generation: header.fields.generation,
        pack_len: header.fields.pack_len,
        next_seq: header.fields.next_seq,
        entries: Vec::with_capacity(header.count),
    };
    let mut dropped = 0;
    for i in 0..header.count {
        match decode_record(file, &header, i) {
            Ok(entry) => body.entries.push(entry),
            Err(_) => dropped += 1,
        }
    }
    body.entries.sort_by_key(|e| e.key);
    body.entries.dedup_by_key(|e| e.key);
    Ok((body, dropped))
}
