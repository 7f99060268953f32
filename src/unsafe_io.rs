//! The storage side's only `unsafe` code: mapping cache files, reading a checked index in
//! place, and two argument-less FFI calls. (The engine side's one `Module::load` is in
//! `quickjs::engine`.)
//!
//! # The invariants this module relies on
//!
//! 1. **Mapped files never shrink and are never rewritten in place.** The index is replaced by
//!    `rename`, never written after publication; a pack is only appended to, beyond the
//!    committed length any reader maps; old generations are unlinked, which leaves existing
//!    mappings intact. So a mapping's bytes stay valid and unchanged for its whole life. Another
//!    program truncating these files (0600, owned by the user) is outside what any mmap-based
//!    store can defend against, and would raise SIGBUS.
//! 2. **Unchecked rkyv access only follows a checksum.** [`CheckedIndex::record`] reads an
//!    entry's record in place only after [`format::index_record`] accepted it: in bounds,
//!    16-byte aligned, and its XXH3-64 (seeded with the row's key) matching, in a file whose
//!    header carries this build's format version, ABI tag and archived-layout fingerprint. So
//!    the record is byte-for-byte what this build's serializer produced, which rkyv guarantees
//!    is a valid archive. The verdict is remembered per record, which is sound because the
//!    bytes cannot change: [`StableBytes`] is implemented only for owners whose contents are
//!    fixed.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

use std::sync::atomic::{AtomicU8, Ordering};

use crate::format::{self, ArchivedEntryRecord, FormatError, IndexHeader};

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
    verdicts: Box<[AtomicU8]>,
}

const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const BAD: u8 = 2;

impl<B: StableBytes> CheckedIndex<B> {
    /// Checks `bytes` as an index file for `abi_tag` (its header and length only: O(1)).
    pub(crate) fn new(bytes: B, abi_tag: &str) -> Result<Self, FormatError> {
        let header = format::check_index_header(bytes.as_ref(), abi_tag)?;
        let verdicts = (0..header.count)
            .map(|_| AtomicU8::new(UNCHECKED))
            .collect();
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
        let verdict = self.verdicts.get(i)?;
        match verdict.load(Ordering::Acquire) {
            GOOD => {
                // Checked before: only the span is recomputed, and nothing is written, so
                // readers on other threads never contend for this cache line.
                let (_, bytes) = format::index_record_span(self.file(), &self.header, i).ok()?;
                // SAFETY: invariant 2: these exact bytes passed `index_record` (bounds,
                // alignment, key-seeded checksum, key match) on an earlier call, and
                // `StableBytes` owners never change them.
                return Some(unsafe { rkyv::access_unchecked::<ArchivedEntryRecord>(bytes) });
            }
            BAD => return None,
            _ => {}
        }
        let Ok(bytes) = format::index_record(self.file(), &self.header, i) else {
            verdict.store(BAD, Ordering::Release);
            return None;
        };
        // SAFETY: invariant 2: `index_record` just checked these exact bytes (bounds,
        // alignment, the key-seeded checksum) in a file whose header matched this build, and
        // `StableBytes` owners never change them.
        let record = unsafe { rkyv::access_unchecked::<ArchivedEntryRecord>(bytes) };
        let good = record.key == format::index_row(self.file(), &self.header, i).key;
        verdict.store(if good { GOOD } else { BAD }, Ordering::Release);
        good.then_some(record)
    }

    /// The whole file's length.
    pub(crate) fn file_len(&self) -> usize {
        self.bytes.as_ref().len()
    }
}

/// This process's effective user id, to check who owns the cache directory.
#[cfg(unix)]
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and always succeeds.
    unsafe { libc::geteuid() }
}

/// The linked QuickJS's version string, from `JS_GetVersion`.
#[cfg(feature = "quickjs")]
pub(crate) fn quickjs_version() -> String {
    // SAFETY: JS_GetVersion takes no arguments and returns a pointer to a static,
    // NUL-terminated string literal compiled into the engine.
    let version = unsafe { std::ffi::CStr::from_ptr(rquickjs::qjs::JS_GetVersion()) };
    version.to_string_lossy().into_owned()
}
