//! Index files: a reader's lookups and a writer's decode must never panic, hang or misbehave,
//! whatever the bytes. The logic lives in the crate (`bytecode_pack::fuzzing`), next to the
//! format it exercises.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bytecode_pack::fuzzing::fuzz_index(data));
