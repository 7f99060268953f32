//! The storage side's only `unsafe` code: mapping cache files, reading a checked index in
//! place, and the FFI calls rustix does not make as this crate needs them: the supplementary
//! groups read exactly, the coarse clock, the engine's version. (The engine side's one
//! `Module::load` is in `quickjs::engine`.)
//!
//! # The invariants this module relies on
//!
//! 1. **Mapped files never shrink and are never rewritten in place.** The index is replaced by
//!    `rename`, never written after publication; a pack is only appended to, beyond the
//!    committed length any reader maps; old generations are unlinked, which leaves existing
//!    mappings intact. So a mapping's bytes stay valid and unchanged for its whole life. Another
//!    program truncating these files (0600, owned by the user) or writing into them in place
//!    (`cp` over one, `rsync --inplace`, a backup restored into a running cache) is outside
//!    what any mmap-based store can defend against: it would raise SIGBUS, or change bytes a
//!    reader already validated.
//! 2. **Unchecked rkyv access only follows validation.** [`CheckedIndex::record`] reads an
//!    entry's record in place without rkyv's validator only after an earlier call accepted
//!    those bytes: in bounds, 16-byte aligned, its XXH3-64 (seeded with the row's key)
//!    matching, and passing rkyv's validator, in a file whose header carries this build's
//!    format version, ABI tag and archived-layout fingerprint. (The checksum is for damage;
//!    the validator makes even bytes forged to match it safe to read.) The verdict is
//!    remembered per record, which is sound because the bytes cannot change: [`StableBytes`]
//!    is implemented only for owners whose contents are fixed.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

use crate::format::{self, ArchivedEntryRecord, FormatError, IndexHeader};
use crate::verdicts::RowVerdicts;

/// Maps the first `len` bytes of `file` read-only. `len` must not exceed the file's length,
/// which the caller has checked with `fstat` on the same descriptor.
pub(crate) fn map_prefix(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: invariant 1: cache files are never truncated or modified in place while they
    // may be mapped, so the mapped bytes stay valid and immutable for the map's lifetime.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// Byte owners whose contents cannot change while they are borrowed or owned: a read-only
/// mapping of a never-rewritten file, or an owned buffer.
pub(crate) trait StableBytes: AsRef<[u8]> {}
impl StableBytes for Mmap {}
impl StableBytes for rkyv::util::AlignedVec {}

/// An index file whose header passed [`format::check_index_header`]; its records are
/// checked one by one as they are first read.
pub(crate) struct CheckedIndex<B> {
    bytes: B,
    header: IndexHeader,
    /// Per record: unchecked, good or bad.
    verdicts: RowVerdicts,
}

impl<B: StableBytes> CheckedIndex<B> {
    /// Checks `bytes` as an index file for `abi_tag` (its header and length only: O(1)).
    pub(crate) fn new(bytes: B, abi_tag: &str) -> Result<Self, FormatError> {
        let header = format::check_index_header(bytes.as_ref(), abi_tag)?;
        let verdicts = RowVerdicts::new(header.count);
        Ok(CheckedIndex {
            bytes,
            header,
            verdicts,
        })
    }

    /// The header's fields.
    pub(crate) fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// The whole file.
    pub(crate) fn file(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// The row holding `key`.
    pub(crate) fn find(&self, key: &[u8; 16]) -> Option<usize> {
        format::find_row(self.file(), &self.header, key)
    }

    /// Record `i`, read in place, if it passes its checks (once; the verdict is kept).
    pub(crate) fn record(&self, i: usize) -> Option<&ArchivedEntryRecord> {
        match self.verdicts.get(i)? {
            Some(true) => {
                // Checked before: only the span is recomputed, and nothing is written, so
                // readers on other threads never contend for this cache line.
                let (_, bytes) = format::index_record_span(self.file(), &self.header, i).ok()?;
                // SAFETY: invariant 2: these exact bytes passed rkyv's validator (and the
                // key-seeded checksum, and the key match) on an earlier call, and
                // `StableBytes` owners never change them.
                return Some(unsafe { rkyv::access_unchecked::<ArchivedEntryRecord>(bytes) });
            }
            Some(false) => return None,
            None => {}
        }
        // Checksummed, then validated: a checksum catches damage, rkyv's validator what no
        // checksum can (bytes forged to match one, which must not make a read unsound).
        let Some(record) = format::index_record(self.file(), &self.header, i)
            .ok()
            .and_then(format::record_is_valid)
        else {
            self.verdicts.set(i, false);
            return None;
        };
        let good = record.key == format::index_row(self.file(), &self.header, i).key;
        self.verdicts.set(i, good);
        good.then_some(record)
    }

    /// The whole file's length.
    pub(crate) fn file_len(&self) -> usize {
        self.bytes.as_ref().len()
    }
}

/// Who this process is to the kernel's permission checks: its effective user and group ids
/// and its supplementary groups (sorted: their order means nothing), as text for a key. A
/// group list that cannot be read (it changed between the two calls) reads `?`: a key of its
/// own, never another process's. (rustix's `getgroups` would pad a list that shrank between
/// its two calls with root's group.)
#[cfg(all(unix, feature = "quickjs"))]
pub(crate) fn credentials() -> String {
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    // SAFETY: with a size of 0, getgroups(2) only returns how many groups there are and
    // writes nothing (the pointer is not used).
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups: Vec<libc::gid_t> = vec![0; usize::try_from(count).unwrap_or(0)];
    // A size of 0 would only ask the count again (another thread may have set groups since).
    let written = if count > 0 {
        // SAFETY: `groups` has room for `count` ids, the size passed; getgroups(2) writes at
        // most that many and returns how many it wrote, or fails (EINVAL) if they no longer
        // fit.
        unsafe { libc::getgroups(count, groups.as_mut_ptr()) }
    } else {
        count
    };
    match usize::try_from(written) {
        Ok(written) if written <= groups.len() => {
            groups.truncate(written);
            groups.sort_unstable();
            groups.dedup();
            format!("uid {uid} gid {gid} groups {groups:?}")
        }
        _ => format!("uid {uid} gid {gid} groups ?"),
    }
}

/// `CLOCK_MONOTONIC_COARSE`, through libc: glibc reads it from the vDSO as valgrind expects,
/// where rustix's own vDSO parser crashes under valgrind (rustix issue 1559).
/// `None` if the kernel does not have it (before 2.6.32).
#[cfg(all(target_os = "linux", feature = "quickjs"))]
pub(crate) fn monotonic_coarse() -> Option<std::time::Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec`, the only memory clock_gettime(2) writes.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) } != 0;
    (!failed).then(|| {
        std::time::Duration::new(
            u64::try_from(now.tv_sec).unwrap_or(0),
            u32::try_from(now.tv_nsec).unwrap_or(0),
        )
    })
}

/// The linked QuickJS's version string, from `JS_GetVersion`.
#[cfg(feature = "quickjs")]
pub(crate) fn quickjs_version() -> String {
    // SAFETY: JS_GetVersion takes no arguments and returns a pointer to a static,
    // NUL-terminated string literal compiled into the engine.
    let version = unsafe { std::ffi::CStr::from_ptr(rquickjs::qjs::JS_GetVersion()) };
    version.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{EntryRecord, IndexEncoder, IndexFields, InputRecord, SegmentRef};
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

    /// What the kernel reports of this process (effective ids, supplementary groups).
    #[cfg(all(target_os = "linux", feature = "quickjs"))]
    #[test]
    fn credentials_are_what_the_kernel_reports() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| -> Vec<u32> {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line[name.len()..]
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        };
        // Uid and Gid list real, effective, saved and filesystem ids.
        let (uid, gid) = (field("Uid:")[1], field("Gid:")[1]);
        let mut groups = field("Groups:");
        groups.sort_unstable();
        groups.dedup();
        assert_eq!(
            credentials(),
            format!("uid {uid} gid {gid} groups {groups:?}")
        );
    }

    fn entry(key: [u8; 16]) -> EntryRecord {
        let segment = SegmentRef {
            offset: 64,
            len: 2,
            checksum: [0; 16],
        };
        EntryRecord {
            key,
            seq: 0,
            module_name: "a module name long enough to be stored out of line.js".into(),
            flags: 0,
            recorded_at_ns: 0,
            bytecode: segment,
            source_map: None,
            aux: None,
            inputs: vec![InputRecord {
                path: b"/src/a.js".to_vec(),
                content_hash: [1; 16],
                stat: None,
            }],
            root: None,
        }
    }

    /// A record whose checksum matches (as bytes forged to match it would, or a writer bug's)
    /// but that is not a valid archive (its module name is not UTF-8) is refused rather than
    /// read in place; the same record unforged beside it is read.
    #[test]
    fn a_record_matching_its_checksum_but_no_valid_archive_is_refused() {
        let (forged_key, good_key) = ([7; 16], [8; 16]);
        let mut encoder = IndexEncoder::default();
        let mut forged = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&entry(forged_key))
            .unwrap()
            .to_vec();
        let name_at = forged.windows(8).position(|w| w == b"a module").unwrap();
        forged[name_at] = 0xFF;
        let checksum = xxh3_64_with_seed(&forged, xxh3_64(&forged_key));
        encoder.push_bytes(&forged_key, &forged, checksum).unwrap();
        encoder.push_record(&entry(good_key)).unwrap();
        let file = encoder.finish(&IndexFields::default(), "tag");
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        bytes.extend_from_slice(&file);
        let index = CheckedIndex::new(bytes, "tag").unwrap();
        let (forged_row, good_row) = (index.find(&forged_key), index.find(&good_key));
        assert_eq!((forged_row, good_row), (Some(0), Some(1)));
        assert!(index.record(0).is_none());
        assert!(index.record(0).is_none(), "the verdict is kept");
        let good = index.record(1).unwrap();
        assert_eq!(good.module_name.as_str(), entry(good_key).module_name);
        assert!(index.record(1).is_some(), "the verdict is kept");
    }
}
