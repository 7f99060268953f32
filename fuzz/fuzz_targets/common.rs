//! Turning fuzz input into valid-then-damaged structures.
#![allow(dead_code)] // shared by the targets; each uses a part

use bytecode_pack::format::{EntryRecord, IndexBody, InputRecord, SegmentRef, StatRecord};

pub const TAG: &str = "fuzz-abi";

/// Reads bytes off the front of the input, zero once it runs out.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte()))
    }
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }
    pub fn string(&mut self) -> String {
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
pub fn body(b: &mut Bytes) -> IndexBody {
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
        })
        .collect();
    entries.sort_by_key(|e| e.key);
    entries.dedup_by_key(|e| e.key);
    IndexBody {
        generation: b.u64(),
        pack_len: b.u64(),
        next_seq: b.u64(),
        entries,
    }
}

/// Applies up to 8 damages from the input: bit flips, zeroed ranges, truncation, extension.
pub fn damage(file: &mut Vec<u8>, b: &mut Bytes) {
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
