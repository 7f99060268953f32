//! The pack file: its header and the segments appended after it.

use xxhash_rust::xxh3::xxh3_64;

use super::{
    ArchivedSegmentRef, CHECKSUM_LEN, FormatError, OWN_FIELDS_AT, SegmentKind, SegmentRef,
    open_header, payload_checksum, seal_header, start_header, u64_at,
};

/// Length of a pack file's header; the first segment starts here.
pub const PACK_HEADER_LEN: u64 = PACK_HEADER_BYTES as u64;
const PACK_HEADER_BYTES: usize = 64;
pub(crate) const PACK_MAGIC: [u8; 8] = *b"BCPKPACK";

/// The pack header's own fields.
const PACK_GENERATION_AT: usize = OWN_FIELDS_AT;
const PACK_RESERVED_AT: usize = PACK_GENERATION_AT + 8;
const PACK_RESERVED_LEN: usize = 16;
const _: () = assert!(PACK_RESERVED_AT + PACK_RESERVED_LEN == PACK_HEADER_BYTES - CHECKSUM_LEN);

/// Length of a segment header; the payload starts this far after the segment's offset.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_HEADER_BYTES as u64;
const SEGMENT_HEADER_BYTES: usize = 56;
const SEGMENT_MAGIC: [u8; 4] = *b"BSEG";

/// Where a segment header's fields are.
const SEG_MAGIC_AT: usize = 0;
const SEG_KIND_AT: usize = SEG_MAGIC_AT + 4;
const SEG_KEY_AT: usize = SEG_KIND_AT + 4; // kind, then 3 reserved bytes
const SEG_LEN_AT: usize = SEG_KEY_AT + 16;
const SEG_PAYLOAD_SUM_AT: usize = SEG_LEN_AT + 8;
const SEG_HEADER_SUM_AT: usize = SEG_PAYLOAD_SUM_AT + 16;
const _: () = assert!(SEG_HEADER_SUM_AT + CHECKSUM_LEN == SEGMENT_HEADER_BYTES);

/// The header of a new pack file of `generation`.
pub fn encode_pack_header(generation: u64, abi_tag: &str) -> [u8; PACK_HEADER_BYTES] {
    let mut h: [u8; PACK_HEADER_BYTES] = start_header(PACK_MAGIC, abi_tag);
    h[PACK_GENERATION_AT..PACK_RESERVED_AT].copy_from_slice(&generation.to_le_bytes());
    seal_header(&mut h);
    h
}

/// Checks a pack's header against the generation its index names.
pub fn check_pack_header(pack: &[u8], generation: u64, abi_tag: &str) -> Result<(), FormatError> {
    let header = open_header(pack, PACK_MAGIC, PACK_HEADER_BYTES, abi_tag)?;
    let got = u64_at(header, PACK_GENERATION_AT);
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
) -> [u8; SEGMENT_HEADER_BYTES] {
    segment_header(kind, key, payload.len() as u64, &payload_checksum(payload))
}

/// The header of a segment whose payload has `len` bytes and checksum `payload_sum` (from
/// [`payload_checksum`]), for a writer that keeps the checksum too.
pub fn segment_header(
    kind: SegmentKind,
    key: &[u8; 16],
    len: u64,
    payload_sum: &[u8; 16],
) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[SEG_MAGIC_AT..SEG_KIND_AT].copy_from_slice(&SEGMENT_MAGIC);
    h[SEG_KIND_AT] = kind as u8;
    h[SEG_KEY_AT..SEG_LEN_AT].copy_from_slice(key);
    h[SEG_LEN_AT..SEG_PAYLOAD_SUM_AT].copy_from_slice(&len.to_le_bytes());
    h[SEG_PAYLOAD_SUM_AT..SEG_HEADER_SUM_AT].copy_from_slice(payload_sum);
    let sum = xxh3_64(&h[..SEG_HEADER_SUM_AT]);
    h[SEG_HEADER_SUM_AT..].copy_from_slice(&sum.to_le_bytes());
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
    if h[SEG_MAGIC_AT..SEG_KIND_AT] != SEGMENT_MAGIC {
        return Err(FormatError::Magic);
    }
    if xxh3_64(&h[..SEG_HEADER_SUM_AT]) != u64_at(h, SEG_HEADER_SUM_AT) {
        return Err(FormatError::Checksum {
            what: "segment header",
        });
    }
    let kind = match h[SEG_KIND_AT] {
        1 => SegmentKind::Bytecode,
        2 => SegmentKind::SourceMap,
        3 => SegmentKind::Aux,
        other => return Err(FormatError::Malformed(format!("segment kind {other}"))),
    };
    let payload = SegmentRef {
        offset: header_end,
        len: u64_at(h, SEG_LEN_AT),
        checksum: h[SEG_PAYLOAD_SUM_AT..SEG_HEADER_SUM_AT]
            .try_into()
            .expect("16 bytes"),
    };
    let bytes = segment_bytes(pack, &payload)?;
    if payload_checksum(bytes) != payload.checksum {
        return Err(FormatError::Checksum {
            what: "segment payload",
        });
    }
    Ok(ScannedSegment {
        kind,
        key: h[SEG_KEY_AT..SEG_LEN_AT].try_into().expect("16 bytes"),
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
