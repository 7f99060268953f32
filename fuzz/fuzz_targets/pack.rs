//! Pack files: header checks and the segment walk must never panic or hang. The logic lives
//! in the crate (`bytecode_pack::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bytecode_pack::fuzzing::fuzz_pack(data));
