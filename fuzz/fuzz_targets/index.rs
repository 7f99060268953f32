//! Index files: a reader's lookups and a writer's decode must never panic, hang or misbehave,
//! whatever the bytes.
#![no_main]

mod common;

use bytecode_pack::format;
use bytecode_pack::fuzzing::index_as_reader;
use common::{Bytes, TAG, body, damage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    if b.byte() & 1 == 0 {
        // Raw bytes, with a header sealed for this build so the table and records are reached.
        let mut file = b.0.to_vec();
        if file.len() >= format::INDEX_HEADER_LEN {
            let valid = format::encode_index(&format::IndexBody::default(), TAG).expect("small");
            file[..64].copy_from_slice(&valid[..64]);
            file[32..40].copy_from_slice(&valid[32..40]);
            let rows = ((file.len() - format::INDEX_HEADER_LEN) / format::ROW_LEN)
                .min(u32::from(file[64]) as usize);
            file[64..68].copy_from_slice(&(rows as u32).to_le_bytes());
            let records = file.len() - format::INDEX_HEADER_LEN - rows * format::ROW_LEN;
            file[72..80].copy_from_slice(&(records as u64).to_le_bytes());
            let sum = xxhash_rust::xxh3::xxh3_64(&file[..88]);
            file[88..96].copy_from_slice(&sum.to_le_bytes());
        }
        index_as_reader(&file, TAG);
    } else {
        // A valid index built from the input, then damaged.
        let body = body(&mut b);
        let mut file = format::encode_index(&body, TAG).expect("small");
        let pristine = file.clone();
        damage(&mut file, &mut b);
        index_as_reader(&file, TAG);
        if file == pristine {
            assert_eq!(
                format::decode_index(&file, TAG).map(|(b, _)| b).ok(),
                Some(body)
            );
        }
    }
});
