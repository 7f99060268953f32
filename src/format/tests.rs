//! Round trips and damage detection for every on-disk structure, on in-memory buffers.

use super::*;
use xxhash_rust::xxh3::xxh3_128;

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
            root: Some(b"/a".to_vec()),
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
        (
            header.fields.generation,
            header.fields.pack_len,
            header.count
        ),
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

/// A record read before its segments are bounds-checked may claim any length: what its
/// segments take in the pack saturates instead of overflowing (a panic in a debug build).
#[test]
fn a_records_claimed_lengths_saturate() {
    let mut body = sample_body();
    body.entries[0].bytecode.len = u64::MAX - 1;
    assert_eq!(body.entries[0].stored_len(), u64::MAX);
    assert_eq!(body.live_bytes(), u64::MAX);
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&body.entries[0]).unwrap();
    let archived = rkyv::access::<ArchivedEntryRecord, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(archived_stored_len(archived), u64::MAX);
}

/// A header whose next sequence number is past half the range (forged: writers count up from
/// it, and would wrap to 0, which names no base) is refused.
#[test]
fn a_forged_next_sequence_number_is_refused() {
    let mut body = sample_body();
    body.next_seq = u64::MAX / 2;
    let file = aligned(&encode_index(&body, TAG).unwrap());
    assert!(check_index_header(&file, TAG).is_ok());
    body.next_seq = u64::MAX / 2 + 1;
    let file = aligned(&encode_index(&body, TAG).unwrap());
    assert!(matches!(
        check_index_header(&file, TAG),
        Err(FormatError::TooLarge { .. })
    ));
}
