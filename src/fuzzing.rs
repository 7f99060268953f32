//! Entry points for the fuzzers in `fuzz/`: every parser of on-disk bytes, driven the way the
//! crate drives it, including the unchecked in-place reads behind the per-record checks.
//! Not part of the public API.

use crate::format::{
    self, EntryRecord, IndexBody, InputRecord, SegmentKind, SegmentRef, StatRecord,
};
use crate::unsafe_io::CheckedIndex;

/// The `index` fuzz target: the input is either raw bytes behind a header sealed for this
/// build (so the table and records are reached), or a valid index built from the input and
/// then damaged, its records' checksums then recomputed or not (resealed, damage reaches the
/// validator behind them, as a writer's bug or forged bytes would). A reader's lookups and a
/// writer's decode must never panic, hang or misbehave, and an undamaged file must decode to
/// what was encoded.
pub fn fuzz_index(data: &[u8]) {
    let mut b = Bytes(data);
    if b.byte() & 1 == 0 {
        // Raw bytes, with a header sealed for this build so the table and records are reached.
        let mut file = b.0.to_vec();
        if file.len() >= format::INDEX_HEADER_LEN {
            let valid = format::encode_index(&format::IndexBody::default(), TAG).expect("small");
            // Common header and layout from a valid file, the rest from the input.
            use format::{COUNT_AT, GENERATION_AT, RECORDS_LEN_AT};
            file[..GENERATION_AT].copy_from_slice(&valid[..GENERATION_AT]);
            let rows = ((file.len() - format::INDEX_HEADER_LEN) / format::ROW_LEN)
                .min(u32::from(file[COUNT_AT]) as usize);
            file[COUNT_AT..COUNT_AT + 4].copy_from_slice(&(rows as u32).to_le_bytes());
            let records = file.len() - format::INDEX_HEADER_LEN - rows * format::ROW_LEN;
            file[RECORDS_LEN_AT..RECORDS_LEN_AT + 8]
                .copy_from_slice(&(records as u64).to_le_bytes());
            let end = format::INDEX_HEADER_LEN - 8;
            let sum = xxhash_rust::xxh3::xxh3_64(&file[..end]);
            file[end..format::INDEX_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        }
        index_as_reader(&file, TAG);
    } else {
        // A valid index built from the input, then damaged.
        let body = body(&mut b);
        let mut file = format::encode_index(&body, TAG).expect("small");
        let pristine = file.clone();
        let reseal = b.byte() & 1 == 1;
        damage(&mut file, &mut b);
        if reseal {
            format::reseal_record_checksums(&mut file, TAG);
        }
        index_as_reader(&file, TAG);
        // A writer's decode (every record validated) of whatever is there now.
        let decoded = format::decode_index(&file, TAG).map(|(b, _)| b).ok();
        if file == pristine {
            assert_eq!(decoded, Some(body));
        }
    }
}

/// The `pack` fuzz target: raw bytes after a valid pack header, or valid segments built from
/// the input and then damaged, walked as `verify` walks them.
pub fn fuzz_pack(data: &[u8]) {
    let mut b = Bytes(data);
    let mut pack = format::encode_pack_header(1, TAG).to_vec();
    if b.byte() & 1 == 0 {
        pack.extend_from_slice(b.0);
    } else {
        // Valid segments from the input, then damaged.
        for _ in 0..b.byte() % 8 {
            let kind = SegmentKind::ALL[usize::from(b.byte() % 3)];
            let key: [u8; 16] = b.array();
            let payload: Vec<u8> = (0..b.byte()).map(|_| b.byte()).collect();
            pack.extend_from_slice(&format::encode_segment_header(kind, &key, &payload));
            pack.extend_from_slice(&payload);
        }
        damage(&mut pack, &mut b);
    }
    pack_as_verifier(&pack, TAG);
}

/// The `resolutions` fuzz target (with the `quickjs` feature): `PackResolver`'s stored table,
/// either raw bytes behind a header made consistent (so the regions are reached) or a valid
/// table built from the input and then damaged. Opening, looking up and writing back must never
/// panic or hang, and an undamaged table must give back every answer it was built with.
#[cfg(feature = "quickjs")]
pub fn fuzz_resolutions(data: &[u8]) {
    let mut b = Bytes(data);
    if b.byte() & 1 == 0 {
        // Counts from the input, the regions sized to match, the rest of the input as the
        // regions' bytes.
        let (dirs, answers, ids) = (b.byte() % 4, b.byte() % 8, b.byte() % 16);
        let slots = (u32::from(answers) + 1).next_power_of_two();
        let fixed = stored::HEADER_LEN
            + stored::DIR_LEN * usize::from(dirs)
            + stored::ANSWER_LEN * usize::from(answers)
            + 4 * slots as usize
            + 4 * usize::from(ids);
        let mut bytes = stored::MAGIC.to_vec();
        let strings = b.0.len().saturating_sub(fixed - stored::HEADER_LEN);
        for n in [u32::from(dirs), u32::from(answers), slots, u32::from(ids)] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(&(strings as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(b.0);
        bytes.resize(fixed + strings, 0);
        let _ = exercise_stored_table(bytes);
    } else {
        let dirs: Vec<_> = (0..b.byte() % 6)
            .map(|_| {
                let stat = (b.byte() & 1 == 1).then(|| StatRecord {
                    size: b.u64(),
                    mtime_ns: b.u64() as i64,
                    ctime_ns: b.u64() as i64,
                    ino: b.u64(),
                    dev: b.u64(),
                });
                (format!("/{}", b.string()), stat, b.u64() as i64)
            })
            .collect();
        let dir_count = dirs.len() as u32;
        let mut answers: Vec<(String, String, String, Vec<u32>)> = Vec::new();
        for _ in 0..b.byte() % 24 {
            let (scope, name, value) = (b.string(), b.string(), b.string());
            let ids = match dir_count {
                0 => Vec::new(),
                n => (0..b.byte() % 3).map(|_| u32::from(b.byte()) % n).collect(),
            };
            if !answers.iter().any(|a| a.0 == scope && a.1 == name) {
                answers.push((scope, name, value, ids));
            }
        }
        let mut bytes = encode_table_for_fuzzing(&dirs, &answers);
        let pristine = bytes.clone();
        damage(&mut bytes, &mut b);
        let read = exercise_stored_table(bytes.clone());
        if bytes == pristine {
            let mut read = read.expect("an undamaged table opens");
            // An answer that names no directory is not one (nothing would check it).
            let mut built: Vec<_> = answers
                .into_iter()
                .filter(|(.., ids)| !ids.is_empty())
                .map(|(s, n, v, _)| (s, n, v))
                .collect();
            read.sort();
            built.sort();
            assert_eq!(read, built);
        }
    }
}

#[cfg(feature = "quickjs")]
use crate::quickjs::resolver::{
    dirs::{Dirs, NewAnswers, payload},
    stored::{self, AnswerToStore, DirStamp, StoredAnswers},
};

/// The fuzzers' way in ([`fuzz_resolutions`]): a table built from `dirs` and
/// `answers` (scope, name, value, directory ids), as a run writes it.
#[cfg(feature = "quickjs")]
fn encode_table_for_fuzzing(
    dirs: &[(String, Option<crate::format::StatRecord>, i64)],
    answers: &[(String, String, String, Vec<u32>)],
) -> Vec<u8> {
    let dirs = dirs.iter().map(|(path, stat, recorded_at_ns)| {
        let stamp = DirStamp {
            stat: *stat,
            recorded_at_ns: *recorded_at_ns,
            listing: None,
        };
        (path.as_str(), stamp)
    });
    let answers: Vec<_> = answers
        .iter()
        .map(|(scope, name, value, dirs)| AnswerToStore {
            scope,
            name,
            value,
            dirs: dirs.clone(),
        })
        .collect();
    stored::encode(dirs, &answers)
}

/// The fuzzers' way in: `bytes` opened as a stored table the way a run reads it (every
/// directory, every answer, each answer looked up by its scope and name) and, if it opens,
/// written back as a run that found every directory unchanged writes it. The write-back must
/// open, and hold every answer that could be read whole. Returns the answers read, for the
/// caller's round-trip check.
#[cfg(feature = "quickjs")]
fn exercise_stored_table(bytes: Vec<u8>) -> Option<Vec<(String, String, String)>> {
    let table = StoredAnswers::open(bytes)?;
    let count = table.dir_count();
    let dir_paths: Vec<String> = (0..count)
        .map(|id| table.dir(id).map(|(path, _)| path.to_owned()))
        .collect::<Option<_>>()
        .expect("a table that opened reads every directory back");
    let mut readable = Vec::new();
    for answer in table.answers() {
        let found = answer
            .text()
            .and_then(|(scope, name, _)| table.find(scope, name));
        let whole = answer.dirs().all(|id| id < count);
        if let (Some((scope, name, value)), Some(_), true) = (answer.text(), found, whole) {
            readable.push((scope.to_owned(), name.to_owned(), value.to_owned()));
        }
    }
    let mut dirs = Dirs::new(count, "/");
    dirs.checked.fill(dirs.round);
    let written = payload(Some(&table), &dirs, &NewAnswers::default());
    let again = StoredAnswers::open(written).expect("a written table opens");
    let again_paths: Vec<String> = (0..again.dir_count())
        .filter_map(|id| again.dir(id).map(|(path, _)| path.to_owned()))
        .collect();
    assert_eq!(again_paths, dir_paths, "directories keep their ids");
    for (scope, name, _) in &readable {
        assert!(again.find(scope, name).is_some(), "{scope:?} {name:?} kept");
    }
    Some(readable)
}

const TAG: &str = "fuzz-abi";

/// Reads bytes off the front of the input, zero once it runs out.
struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte()))
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }
    fn string(&mut self) -> String {
        let len = self.byte() % 40;
        (0..len)
            .map(|_| char::from(b'a' + self.byte() % 26))
            .collect()
    }
}

fn segment(b: &mut Bytes) -> SegmentRef {
    SegmentRef {
        offset: b.u64() % 4096,
        len: b.u64() % 4096,
        checksum: b.array(),
    }
}

/// An index body with up to 16 entries, every field from the input.
fn body(b: &mut Bytes) -> IndexBody {
    let mut entries: Vec<EntryRecord> = (0..b.byte() % 16)
        .map(|_| EntryRecord {
            key: b.array(),
            seq: b.u64(),
            module_name: b.string(),
            flags: u32::from(b.byte() & 1),
            recorded_at_ns: b.u64() as i64,
            bytecode: segment(b),
            source_map: (b.byte() & 1 == 1).then(|| segment(b)),
            aux: (b.byte() & 1 == 1).then(|| segment(b)),
            inputs: (0..b.byte() % 4)
                .map(|_| InputRecord {
                    path: b.string().into_bytes(),
                    content_hash: b.array(),
                    stat: (b.byte() & 1 == 1).then(|| StatRecord {
                        size: b.u64(),
                        mtime_ns: b.u64() as i64,
                        ctime_ns: b.u64() as i64,
                        ino: b.u64(),
                        dev: b.u64(),
                    }),
                })
                .collect(),
            root: (b.byte() & 1 == 1).then(|| b.string().into_bytes()),
        })
        .collect();
    entries.sort_by_key(|e| e.key);
    entries.dedup_by_key(|e| e.key);
    IndexBody {
        generation: b.u64(),
        pack_len: b.u64(),
        // A valid header counts in the lower half of the range (see `check_index_header`).
        next_seq: b.u64() >> 1,
        entries,
    }
}

/// Applies up to 8 damages from the input: bit flips, zeroed ranges, truncation, extension.
fn damage(file: &mut Vec<u8>, b: &mut Bytes) {
    for _ in 0..b.byte() % 8 {
        if file.is_empty() {
            return;
        }
        let at = (b.u64() as usize) % file.len();
        match b.byte() % 4 {
            0 => file[at] ^= 1 << (b.byte() % 8),
            1 => {
                let end = (at + usize::from(b.byte())).min(file.len());
                file[at..end].fill(0);
            }
            2 => file.truncate(at),
            _ => file.extend((0..b.byte()).map(|i| i.wrapping_mul(37))),
        }
    }
}

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

#[cfg(test)]
mod tests {
    /// An input the `index` target found (in 3 minutes) against the reader before records were
    /// validated: a damaged record with its checksum recomputed, which rkyv then followed out of
    /// bounds (caught here by the standard library's precondition checks in debug builds, by a
    /// sanitizer under `cargo fuzz`). Now the validator refuses it.
    #[test]
    fn a_resealed_invalid_record_is_refused() {
        super::fuzz_index(include_bytes!(
            "../fuzz/regressions/index-resealed-invalid-record"
        ));
    }

    /// The fuzz targets run here on seeded inputs, so CI builds and exercises them without
    /// `cargo fuzz`.
    #[test]
    fn fuzz_targets_survive_seeded_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..3000 {
            let len = round % 700;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            super::fuzz_index(&data);
            super::fuzz_pack(&data);
            #[cfg(feature = "quickjs")]
            super::fuzz_resolutions(&data);
        }
    }
}
