//! The answers a [`super::PackResolver`] keeps in the cache, as one table searched as it is: a
//! warm start copies the payload's bytes once and looks each answer up in them, instead of
//! decoding every answer into maps first.
//!
//! The payload (inside the entry's checksummed segment; integers little-endian; layout in
//! FORMAT.md, "Entries the crate stores for itself"):
//!
//! ```text
//! header   magic, then u32 counts: directories, answers, slots, directory ids, string bytes; u32 0
//! dirs     80 bytes each: path (u32 offset, u32 length into the strings), recording instant
//!          (i64), flags (u64: 1 stat present, 2 listing present), size, mtime, ctime, inode,
//!          device (u64 each), listing (u128)
//! answers  32 bytes each: scope, name, value (u32 offset and length each, into the strings),
//!          directories (u32 offset and count into the directory ids)
//! slots    u32 each: an answer's index + 1, or 0; open addressing by `slot_hash`, linear probing
//! ids      u32 each: directory indices
//! strings  UTF-8, shared by equal strings
//! ```

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::listing::Listing;
use crate::format::StatRecord;
use crate::freshness;

/// Versioned on its own: a change to the payload changes the magic and the entry's name.
pub(crate) const MAGIC: &[u8; 8] = b"BPRSLV5\0";
pub(crate) const HEADER_LEN: usize = 32;
pub(crate) const DIR_LEN: usize = 80;
const HAS_STAT: u64 = 1;
const HAS_LISTING: u64 = 2;
pub(crate) const ANSWER_LEN: usize = 32;

/// A directory's stat data as a run recorded it (`None`: the directory did not exist, as a
/// search path or an `x/index.js` candidate may not), the instant it was taken (before the
/// `stat`, as for inputs), and the [`Listing`] of its entries where one was certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirStamp {
    pub stat: Option<StatRecord>,
    pub recorded_at_ns: i64,
    pub listing: Option<Listing>,
}

impl DirStamp {
    /// Whether this stamp can ever vouch for its directory: not on a filesystem whose ctime
    /// is not the kernel's (an absent directory's stamp always can).
    pub fn can_vouch(&self) -> bool {
        self.stat
            .is_none_or(|stat| crate::sys::ctime_of(stat.dev).kept_by_a_kernel())
    }

    /// Whether the directory still holds the names it held when stamped: its stat data
    /// (ctime and mtime change whenever an entry is added, removed or renamed; the inode
    /// whenever a symlinked path switches target) is unchanged and was old enough to trust
    /// when recorded, by the same racy rule as inputs; or it was absent and still is.
    pub fn still_valid(&self, now: Option<&StatRecord>) -> bool {
        match (&self.stat, now) {
            (None, None) => true,
            (Some(stamp), Some(now)) => {
                now == stamp && freshness::stat_is_trusted(stamp, self.recorded_at_ns)
            }
            _ => false,
        }
    }
}

/// An answer to store: the name `name` imported from `scope` resolved to `value`, computed
/// from the directories `dirs` (indices into the stored directory list).
pub(crate) struct AnswerToStore<'a> {
    pub scope: &'a str,
    pub name: &'a str,
    pub value: &'a str,
    pub dirs: Vec<u32>,
}

/// A stored answer, read in place. Its strings are checked as UTF-8 only when read as text:
/// finding one compares bytes.
pub(crate) struct StoredAnswer<'a> {
    /// Its position in the table.
    index: u32,
    scope: &'a [u8],
    name: &'a [u8],
    value: &'a [u8],
    dirs: &'a [u8],
}

impl<'a> StoredAnswer<'a> {
    /// The scope, name and value, if all three are UTF-8.
    pub fn text(&self) -> Option<(&'a str, &'a str, &'a str)> {
        let text = std::str::from_utf8;
        Some((text(self.scope).ok()?, text(self.name).ok()?, self.value()?))
    }

    /// The path the name resolved to, if it is UTF-8.
    pub fn value(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }

    /// Its position in the table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The directories it was computed from (indices, not yet checked against the table).
    pub fn dirs(&self) -> impl Iterator<Item = u32> + '_ {
        self.dirs.chunks_exact(4).map(u32_le)
    }
}

/// The payload of a stored entry, its layout and directories checked when opened; every read
/// of an answer is bounds-checked, so a payload that lies (it cannot, past its checksum, but a
/// reader does not rely on that) gives absent answers, never a panic.
pub(crate) struct StoredAnswers {
    bytes: Vec<u8>,
    dirs: u32,
    answers: u32,
    slots: u32,
    ids_at: usize,
    strings_at: usize,
}

impl StoredAnswers {
    /// Checks the header, that the regions it gives fill the payload exactly, and that every
    /// directory reads back: a table whose directory ids could not be kept apart is refused
    /// whole.
    pub fn open(bytes: Vec<u8>) -> Option<Self> {
        let header = bytes.get(..HEADER_LEN)?;
        if &header[..8] != MAGIC {
            return None;
        }
        let count = |at: usize| u32_le(&header[at..at + 4]);
        let (dirs, answers, slots, ids, strings) =
            (count(8), count(12), count(16), count(20), count(24));
        if !slots.is_power_of_two() || slots <= answers || count(28) != 0 {
            return None;
        }
        let ids_at = [(dirs, DIR_LEN), (answers, ANSWER_LEN), (slots, 4)]
            .iter()
            .try_fold(HEADER_LEN, |at, &(n, len)| {
                at.checked_add((n as usize).checked_mul(len)?)
            })?;
        let strings_at = ids_at.checked_add((ids as usize).checked_mul(4)?)?;
        if strings_at.checked_add(strings as usize)? != bytes.len() {
            return None;
        }
        let table = StoredAnswers {
            bytes,
            dirs,
            answers,
            slots,
            ids_at,
            strings_at,
        };
        (0..dirs).all(|id| table.dir(id).is_some()).then_some(table)
    }

    /// How many directories the table holds (their indices are `0..dir_count`).
    pub fn dir_count(&self) -> u32 {
        self.dirs
    }

    /// How many answers the table holds (their indices are `0..answer_count`).
    pub fn answer_count(&self) -> u32 {
        self.answers
    }

    /// Directory `id`: its path and stamp.
    pub fn dir(&self, id: u32) -> Option<(&str, DirStamp)> {
        if id >= self.dirs {
            return None;
        }
        let at = HEADER_LEN + id as usize * DIR_LEN;
        let record = self.bytes.get(at..at + DIR_LEN)?;
        let field = |i: usize| u64_le(&record[8 * i..8 * i + 8]);
        let path = self.string(u32_le(&record[..4]), u32_le(&record[4..8]))?;
        let path = std::str::from_utf8(path).ok()?;
        let flags = field(2);
        if flags & !(HAS_STAT | HAS_LISTING) != 0 {
            return None;
        }
        let stat = (flags & HAS_STAT != 0).then(|| StatRecord {
            size: field(3),
            mtime_ns: field(4) as i64,
            ctime_ns: field(5) as i64,
            ino: field(6),
            dev: field(7),
        });
        let listing = (flags & HAS_LISTING != 0).then(|| {
            Listing::from_bits(u128::from_le_bytes(record[64..80].try_into().expect("16")))
        });
        let recorded_at_ns = field(1) as i64;
        Some((
            path,
            DirStamp {
                stat,
                recorded_at_ns,
                listing,
            },
        ))
    }

    /// Every answer, in table order.
    pub fn answers(&self) -> impl Iterator<Item = StoredAnswer<'_>> {
        (0..self.answers).filter_map(|i| self.answer(i))
    }

    /// The answer for `name` imported from `scope`, if one is stored.
    pub fn find(&self, scope: &str, name: &str) -> Option<StoredAnswer<'_>> {
        self.find_in(scope, scope_seed(scope), name)
    }

    /// [`StoredAnswers::find`] with the scope's [`scope_seed`] already computed (a module's
    /// imports share it).
    pub fn find_in(&self, scope: &str, seed: u64, name: &str) -> Option<StoredAnswer<'_>> {
        let mask = self.slots - 1;
        let slots_at =
            HEADER_LEN + self.dirs as usize * DIR_LEN + self.answers as usize * ANSWER_LEN;
        let mut slot = slot_hash(seed, name) as u32 & mask;
        for _ in 0..self.slots {
            let at = slots_at + slot as usize * 4;
            let entry = u32_le(self.bytes.get(at..at + 4)?);
            let i = entry.checked_sub(1)?;
            // Only the answer that matches is read whole.
            let record = self.answer_record(i)?;
            let field = |k: usize| u32_le(&record[4 * k..4 * k + 4]);
            if self.string(field(2), field(3))? == name.as_bytes()
                && self.string(field(0), field(1))? == scope.as_bytes()
            {
                return self.answer(i);
            }
            slot = (slot + 1) & mask;
        }
        None
    }

    fn answer_record(&self, i: u32) -> Option<&[u8]> {
        if i >= self.answers {
            return None;
        }
        let at = HEADER_LEN + self.dirs as usize * DIR_LEN + i as usize * ANSWER_LEN;
        self.bytes.get(at..at + ANSWER_LEN)
    }

    fn answer(&self, i: u32) -> Option<StoredAnswer<'_>> {
        let record = self.answer_record(i)?;
        let field = |k: usize| u32_le(&record[4 * k..4 * k + 4]);
        let ids_from = (field(6) as usize)
            .checked_mul(4)?
            .checked_add(self.ids_at)?;
        let ids_to = ids_from.checked_add((field(7) as usize).checked_mul(4)?)?;
        let dirs = self.bytes.get(ids_from..ids_to.min(self.strings_at))?;
        // Every answer comes from at least one directory probed: one with none (a crafted
        // table) would stand unchecked in every start.
        if dirs.is_empty() || dirs.len() != ids_to - ids_from {
            return None;
        }
        Some(StoredAnswer {
            index: i,
            scope: self.string(field(0), field(1))?,
            name: self.string(field(2), field(3))?,
            value: self.string(field(4), field(5))?,
            dirs,
        })
    }

    fn string(&self, at: u32, len: u32) -> Option<&[u8]> {
        let from = self.strings_at.checked_add(at as usize)?;
        self.bytes.get(from..from.checked_add(len as usize)?)
    }
}

/// Where the search for `name` starts in the slot table, given its scope's [`scope_seed`].
fn slot_hash(seed: u64, name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed)
}

/// The seed a scope's names are hashed with.
pub(crate) fn scope_seed(scope: &str) -> u64 {
    xxh3_64(scope.as_bytes())
}

/// The payload for these directories (index = position) and answers.
pub(crate) fn encode<'a>(
    dirs: impl ExactSizeIterator<Item = (&'a str, DirStamp)>,
    answers: &[AnswerToStore<'a>],
) -> Vec<u8> {
    let dir_count = dirs.len();
    let slots = (answers.len() * 2 + 1).next_power_of_two();
    let id_count: usize = answers.iter().map(|a| a.dirs.len()).sum();
    let mut strings = Strings::default();
    let mut out = Vec::with_capacity(
        HEADER_LEN + dir_count * DIR_LEN + answers.len() * ANSWER_LEN + (slots + id_count) * 4,
    );
    out.extend_from_slice(MAGIC);
    let strings_len_at = 24;
    for n in [dir_count, answers.len(), slots, id_count, 0, 0] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for (path, stamp) in dirs {
        let (at, len) = strings.add(path);
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&stamp.recorded_at_ns.to_le_bytes());
        let flags = stamp.stat.map_or(0, |_| HAS_STAT) | stamp.listing.map_or(0, |_| HAS_LISTING);
        let stat = stamp.stat.map_or([0; 5], |s| {
            [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev]
        });
        std::iter::once(flags)
            .chain(stat)
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        let listing = stamp.listing.map_or(0, Listing::bits);
        out.extend_from_slice(&listing.to_le_bytes());
    }
    let mut table = vec![0u32; slots];
    let mut ids_at = 0u32;
    for (i, answer) in answers.iter().enumerate() {
        for s in [answer.scope, answer.name, answer.value] {
            let (at, len) = strings.add(s);
            out.extend_from_slice(&at.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&ids_at.to_le_bytes());
        out.extend_from_slice(&(answer.dirs.len() as u32).to_le_bytes());
        ids_at += answer.dirs.len() as u32;
        let mask = slots - 1;
        let mut slot = slot_hash(scope_seed(answer.scope), answer.name) as usize & mask;
        while table[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        table[slot] = i as u32 + 1;
    }
    table
        .iter()
        .for_each(|e| out.extend_from_slice(&e.to_le_bytes()));
    for answer in answers {
        answer
            .dirs
            .iter()
            .for_each(|id| out.extend_from_slice(&id.to_le_bytes()));
    }
    let strings_len = strings.bytes.len() as u32;
    out[strings_len_at..strings_len_at + 4].copy_from_slice(&strings_len.to_le_bytes());
    out.extend_from_slice(strings.bytes.as_bytes());
    out
}

/// The strings region, each distinct string once.
#[derive(Default)]
struct Strings<'a> {
    bytes: String,
    seen: FxHashMap<&'a str, (u32, u32)>,
}

impl<'a> Strings<'a> {
    fn add(&mut self, s: &'a str) -> (u32, u32) {
        *self.seen.entry(s).or_insert_with(|| {
            let at = self.bytes.len() as u32;
            self.bytes.push_str(s);
            (at, s.len() as u32)
        })
    }
}

fn u32_le(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

fn u64_le(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u64) -> DirStamp {
        DirStamp {
            stat: Some(StatRecord {
                size: n,
                mtime_ns: -2,
                ctime_ns: 3,
                ino: 4,
                dev: 5,
            }),
            recorded_at_ns: 6,
            listing: n
                .is_multiple_of(2)
                .then_some(Listing::from_bits(u128::MAX - n as u128)),
        }
    }

    #[test]
    fn the_table_round_trips_and_any_cut_is_rejected() {
        let absent = DirStamp {
            stat: None,
            recorded_at_ns: -7,
            listing: None,
        };
        let dirs = [("/a/b", stamp(1)), ("/a/absent", absent), ("/é", stamp(2))];
        // Enough answers that some share a first slot and are found by probing on.
        let names: Vec<String> = (0..300).map(|i| format!("./m{i}")).collect();
        let values: Vec<String> = (0..300).map(|i| format!("a/m{i}.js")).collect();
        let answers: Vec<_> = (0..300)
            .map(|i| AnswerToStore {
                scope: ["a", "\0search paths", "é"][i % 3],
                name: &names[i],
                value: &values[i],
                dirs: vec![i as u32 % 3, 1],
            })
            .collect();
        let bytes = encode(dirs.iter().copied(), &answers);
        let table = StoredAnswers::open(bytes.clone()).unwrap();
        assert_eq!(table.dir_count(), 3);
        for (id, (path, stamp)) in dirs.iter().enumerate() {
            assert_eq!(table.dir(id as u32), Some((*path, *stamp)));
        }
        assert!(table.dir(3).is_none());
        for answer in &answers {
            let found = table.find(answer.scope, answer.name).unwrap();
            let text = (answer.scope, answer.name, answer.value);
            assert_eq!(found.text(), Some(text));
            assert_eq!(found.dirs().collect::<Vec<_>>(), answer.dirs);
        }
        assert!(
            table.find("a", "./m1").is_none(),
            "./m1 is in another scope"
        );
        assert!(table.find("b", "./m0").is_none());
        assert_eq!(table.answers().count(), 300);
        for cut in 0..bytes.len() {
            assert!(StoredAnswers::open(bytes[..cut].to_vec()).is_none());
        }
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"BPRSLV4\0");
        assert!(StoredAnswers::open(old).is_none());
        // A directory that does not read back (a flag unknown): refused whole, since writing
        // the table back without it would shift every later directory's id.
        let mut bad_dir = bytes.clone();
        bad_dir[HEADER_LEN + 16] = 4;
        assert!(StoredAnswers::open(bad_dir).is_none());
        let mut reserved = bytes.clone();
        reserved[28] = 1;
        assert!(StoredAnswers::open(reserved).is_none());
        // An empty table: one empty slot, so a search ends.
        let empty = encode(std::iter::empty(), &[]);
        assert!(StoredAnswers::open(empty).unwrap().find("a", "b").is_none());
    }

    /// An answer that names no directory (never stored by a resolver; a crafted table) is
    /// not one: nothing would ever check it.
    #[test]
    fn an_answer_from_no_directory_is_not_found() {
        let answer = |dirs| AnswerToStore {
            scope: "a",
            name: "./m",
            value: "a/m.js",
            dirs,
        };
        let dirs = [("/a", stamp(1))];
        let with = |answers: &[AnswerToStore<'_>]| {
            StoredAnswers::open(encode(dirs.iter().copied(), answers)).unwrap()
        };
        assert!(with(&[answer(vec![0])]).find("a", "./m").is_some());
        let table = with(&[answer(vec![])]);
        assert!(table.find("a", "./m").is_none());
        assert_eq!(table.answers().count(), 0);
    }

    /// A payload that lies past its checksum (which a reader does not rely on) gives absent
    /// answers or a refusal, never a panic: every byte flipped, every answer looked up.
    #[test]
    fn damaged_tables_never_panic() {
        let answers = [AnswerToStore {
            scope: "a",
            name: "./x",
            value: "a/x.js",
            dirs: vec![0],
        }];
        let bytes = encode([("/a", stamp(1))].into_iter(), &answers);
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                if let Some(table) = StoredAnswers::open(damaged) {
                    let _ = table.find("a", "./x").map(|a| (a.dirs().count(), a.text()));
                    let _ = table.answers().count();
                    let _ = table.dir(0);
                }
            }
        }
    }

    /// A stamp taken within the racy window of its directory's last change never vouches,
    /// though its stat data is unchanged: an entry added in the same tick of the kernel's
    /// clock would not have moved the ctime. Taken later, it vouches for as long as the
    /// stat data stays the same (where the filesystem's ctime is the kernel's).
    #[test]
    fn a_stamp_taken_right_after_its_directorys_change_does_not_vouch() {
        let dir = crate::private_tempdir();
        let now = crate::sys::stat_path(dir.path()).unwrap();
        let taken_after = |ms: i64| DirStamp {
            stat: Some(now),
            recorded_at_ns: now.ctime_ns + ms * 1_000_000,
            listing: None,
        };
        assert!(!taken_after(1).still_valid(Some(&now)));
        assert!(!taken_after(20).still_valid(Some(&now)));
        // Past the window of whole-second ctimes too (2 s).
        let kept = crate::sys::ctime_of(now.dev).kept_by_a_kernel();
        assert_eq!(taken_after(3_000).still_valid(Some(&now)), kept);
        let changed = StatRecord {
            ctime_ns: now.ctime_ns + 1,
            ..now
        };
        assert!(!taken_after(3_000).still_valid(Some(&changed)));
        assert!(!taken_after(3_000).still_valid(None));
    }
}
