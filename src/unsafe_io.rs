//! The crate's only `unsafe` code: mapping cache files, and reading a checked index in place.
//!
//! # The invariants this module relies on
//!
//! 1. **Mapped files never shrink and are never rewritten in place.** The index is replaced by
//!    `rename`, never written after publication; a pack is only appended to, beyond the
//!    committed length any reader maps; old generations are unlinked, which leaves existing
//!    mappings intact. So a mapping's bytes stay valid and unchanged for its whole life. Another
//!    program truncating these files (0600, owned by the user) is outside what any mmap-based
//!    store can defend against, and would raise SIGBUS.
//! 2. **Unchecked rkyv access only follows a checksum.** A [`CheckedIndex`] exists only after
//!    [`format::check_index`] accepted its bytes (header, exact length, layout fingerprint,
//!    body XXH3-128, alignment), so the body is byte-for-byte what this build's serializer
//!    produced, which rkyv guarantees is a valid archive. The bytes cannot change afterwards:
//!    [`StableBytes`] is implemented only for owners whose contents are fixed.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

use crate::format::{self, ArchivedIndexBody, FormatError, INDEX_BODY_OFFSET};

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

/// An index file whose bytes passed [`format::check_index`].
pub(crate) struct CheckedIndex<B> {
    bytes: B,
}

impl<B: StableBytes> CheckedIndex<B> {
    /// Checks `bytes` as a whole index file for `abi_tag`.
    pub(crate) fn new(bytes: B, abi_tag: &str) -> Result<Self, FormatError> {
        format::check_index(bytes.as_ref(), abi_tag)?;
        Ok(CheckedIndex { bytes })
    }

    /// The body's bytes (for full validation by `verify`).
    pub(crate) fn body_bytes(&self) -> &[u8] {
        &self.bytes.as_ref()[INDEX_BODY_OFFSET..]
    }

    /// The archived index, read in place.
    pub(crate) fn body(&self) -> &ArchivedIndexBody {
        // SAFETY: invariant 2: `new` checked these exact bytes, and `StableBytes` owners do
        // not change them, so they are a valid, aligned archive of `IndexBody`.
        unsafe { rkyv::access_unchecked::<ArchivedIndexBody>(self.body_bytes()) }
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

/// Hands a hit's bytecode to QuickJS.
#[cfg(feature = "quickjs")]
pub(crate) fn load_verified_bytecode<'js>(
    ctx: &rquickjs::Ctx<'js>,
    hit: &crate::Hit,
) -> rquickjs::Result<rquickjs::Module<'js, rquickjs::module::Declared>> {
    // SAFETY: `Module::load` trusts its input. A `Hit` only exists for an entry whose segments
    // passed their XXH3-128 checksums in a cache directory, index and pack whose headers carry
    // this build's ABI tag (QuickJS version, arch, endianness, pointer width), and the bytes
    // were produced by `Module::write` of this same engine version. The engine copies what it
    // needs (quickjs-ng ignores JS_READ_OBJ_ROM_DATA), so borrowing the mapping for the call
    // is enough, and the `Hit` keeps the mapping alive for it.
    unsafe { rquickjs::Module::load(ctx.clone(), hit.bytecode()) }
}
