//! Pack files: header checks and the segment walk must never panic or hang.
#![no_main]

mod common;

use bytecode_pack::format::{self, SegmentKind};
use bytecode_pack::fuzzing::pack_as_verifier;
use common::{Bytes, TAG, damage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut pack = format::encode_pack_header(1, TAG).to_vec();
    if b.byte() & 1 == 0 {
        pack.extend_from_slice(b.0);
    } else {
        // Valid segments from the input, then damaged.
        for _ in 0..b.byte() % 8 {
            let kind = [
                SegmentKind::Bytecode,
                SegmentKind::SourceMap,
                SegmentKind::Aux,
            ][usize::from(b.byte() % 3)];
            let key: [u8; 16] = b.array();
            let payload: Vec<u8> = (0..b.byte()).map(|_| b.byte()).collect();
            pack.extend_from_slice(&format::encode_segment_header(kind, &key, &payload));
            pack.extend_from_slice(&payload);
        }
        damage(&mut pack, &mut b);
    }
    pack_as_verifier(&pack, TAG);
});
