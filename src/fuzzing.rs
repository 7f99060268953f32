//! Entry points for the fuzzers in `fuzz/`: every parser of on-disk bytes, driven the way the
//! crate drives it, including the unchecked in-place reads behind the per-record checks.
//! Not part of the public API.

use crate::format;
use crate::unsafe_io::CheckedIndex;

/// Parses `bytes` as an index file the way a reader does: header, lookups of every row's key
/// and of absent keys, and each record's fields read in place.
pub fn index_as_reader(bytes: &[u8], abi_tag: &str) {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    let Ok(index) = CheckedIndex::new(aligned, abi_tag) else {
        return;
    };
    let (file, header) = (index.file(), *index.header());
    for i in 0..header.count.min(4096) {
        let key = format::index_row(file, &header, i).key;
        let found = index.find(&key);
        if let Some(record) = found.and_then(|j| index.record(j)) {
            // Touch every field the reader uses.
            assert_eq!(record.key, key);
            let _ = record.module_name.as_str().len();
            let _ = record.bytecode.offset.to_native() ^ record.bytecode.len.to_native();
            for input in record.inputs.iter() {
                let _ = input.path.as_slice().len();
                let _ = input.stat.as_ref().map(|s| s.size.to_native());
            }
        }
    }
    let _ = index.find(&[0x5a; 16]);
    let _ = format::decode_index(file, abi_tag);
}

/// Parses `bytes` as a pack file: the header, then a walk over its segments.
pub fn pack_as_verifier(bytes: &[u8], abi_tag: &str) {
    let _ = format::check_pack_header(bytes, 1, abi_tag);
    let mut offset = format::PACK_HEADER_LEN;
    for _ in 0..10_000 {
        match format::scan_segment(bytes, offset) {
            Ok(seg) => {
                let next = seg.payload.offset + seg.payload.len;
                if next <= offset {
                    break;
                }
                offset = next;
            }
            Err(_) => break,
        }
    }
}
