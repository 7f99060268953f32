//! `PackResolver`'s stored table: opening, looking up and writing back must never panic or
//! hang, whatever the bytes. The logic lives in the crate (`bytecode_pack::fuzzing`). Needs the
//! engine: `cargo fuzz run resolutions --features resolutions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bytecode_pack::fuzzing::fuzz_resolutions(data));
