//! Filesystem primitives with the cache's security rules: private directories, private files,
//! no symlinks followed inside the cache directory, I/O errors that carry their path.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// Makes sure `dir` exists and is safe: a real directory (for `follow_symlink == false`),
/// owned by this user, not writable by group or others. Creates it, and missing parents,
/// with mode 0700.
pub(crate) fn ensure_private_dir(dir: &Path, follow_symlink: bool) -> Result<()> {
    let meta = if follow_symlink {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            sys::create_private_dir(dir).map_err(Error::io(dir))?;
            fs::symlink_metadata(dir).map_err(Error::io(dir))?
        }
        Err(e) => return Err(Error::io(dir)(e)),
    };
    check_private_dir(dir, &meta)
}

/// Checks that the existing directory `dir` (a symlink to one is followed if `follow_symlink`)
/// belongs to this user and is not writable by group or others, as [`ensure_private_dir`] does,
/// without creating it: nobody else can swap what is inside it.
pub(crate) fn require_private_dir(dir: &Path, follow_symlink: bool) -> Result<()> {
    let meta = if follow_symlink {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    };
    check_private_dir(dir, &meta.map_err(Error::io(dir))?)
}

fn check_private_dir(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.file_type().is_symlink() {
        return Err(insecure(dir, "is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(insecure(dir, "is not a directory"));
    }
    match sys::check_owner_and_mode(meta) {
        Some(problem) => Err(insecure(dir, problem)),
        None => Ok(()),
    }
}

fn insecure(path: &Path, problem: impl Into<String>) -> Error {
    Error::Insecure {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The error for a path that is not a regular file: a FIFO, a device, a socket or a directory
/// where a file belongs. Reading one could block forever or never end.
pub(crate) fn not_a_regular_file(meta: &fs::Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({})", file_kind(meta)),
    )
}

/// An error unless `path` (followed through symlinks) is a regular file, asked before it is
/// opened: opening a device can act (a tape rewinds, a watchdog arms), and the paths this
/// guards come from files a package ships (a source map's `sources`, a module's map URL).
/// What is opened after is checked again: the path may change in between.
pub(crate) fn refuse_unless_regular(path: &Path) -> io::Result<()> {
    let named = fs::metadata(path)?;
    match named.is_file() {
        true => Ok(()),
        false => Err(not_a_regular_file(&named)),
    }
}

/// A short name for what a path is, for error messages.
pub(crate) fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if let Some(kind) = sys::special_file_kind(&t) {
        return kind;
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Checks the opened descriptor (`fstat`, not the path, so a path swapped between a check and
/// the `open` cannot slip a FIFO or a device past it) is a regular file.
fn checked_regular(file: File) -> io::Result<(File, fs::Metadata)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_regular_file(&meta));
    }
    Ok((file, meta))
}

/// How opening one of the cache's own files for reading went.
pub(crate) enum CacheFile {
    /// A regular file, with its descriptor's metadata.
    Regular(File, fs::Metadata),
    /// There is none.
    Missing,
    /// Something else has the name: a FIFO, a device, a directory, a symlink.
    NotAFile(&'static str),
}

/// Opens an existing cache file for reading without following a symlink and without
/// blocking; says what is there instead if it is not a regular file.
pub(crate) fn open_cache_file(path: &Path) -> io::Result<CacheFile> {
    let file = match sys::open_cache_options().read(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CacheFile::Missing),
        Err(e) => match sys::open_error_kind(&e) {
            Some(kind) => return Ok(CacheFile::NotAFile(kind)),
            None => return Err(e),
        },
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(CacheFile::NotAFile(file_kind(&meta)));
    }
    Ok(CacheFile::Regular(file, meta))
}

/// The first `limit` bytes of one of the cache's own files (fewer if it is shorter), read
/// without following a symlink or blocking; an error names what is there instead.
pub(crate) fn read_prefix(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = match open_cache_file(path)? {
        CacheFile::Regular(file, _) => file,
        CacheFile::Missing => return Err(io::ErrorKind::NotFound.into()),
        CacheFile::NotAFile(kind) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {kind}"),
            ));
        }
    };
    let mut prefix = Vec::new();
    file.take(limit).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// Opens a file a user named (an input) for reading: symlinks are followed, as the user's
/// tools would, but a FIFO never blocks the open and anything but a regular file is refused.
pub(crate) fn open_user_file(path: &Path) -> io::Result<(File, fs::Metadata)> {
    checked_regular(sys::open_for_reading(path)?)
}

/// [`open_user_file`], refusing a file of more than `max_len` bytes before anything is read (a
/// sparse file of a terabyte costs nothing to make).
pub(crate) fn open_user_file_within(path: &Path, max_len: u64) -> io::Result<(File, fs::Metadata)> {
    let (file, meta) = open_user_file(path)?;
    refuse_longer(&meta, max_len)?;
    Ok((file, meta))
}

/// An error if the file `meta` describes is more than `max_len` bytes long.
fn refuse_longer(meta: &fs::Metadata, max_len: u64) -> io::Result<()> {
    if meta.len() > max_len {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{} bytes, more than the {max_len} allowed here", meta.len()),
        ));
    }
    Ok(())
}

/// Reads a file a user named, whole: non-blocking open, regular files only, at most
/// `max_len` bytes (a larger file is refused before anything is allocated or read: a sparse
/// file of a terabyte costs nothing to make), and no more than the size `fstat` gave (a file
/// that grows meanwhile is read as it was). Also returns the descriptor's metadata, taken
/// before the read. Errors name the path.
#[cfg(feature = "quickjs")]
pub(crate) fn read_user_file(path: &Path, max_len: u64) -> io::Result<(Vec<u8>, fs::Metadata)> {
    let (mut file, meta) = open_named_user_file(path)?;
    let content = read_opened(&mut file, &meta, path, max_len)?;
    Ok((content, meta))
}

/// [`open_user_file`], its errors naming the path.
#[cfg(feature = "quickjs")]
pub(crate) fn open_named_user_file(path: &Path) -> io::Result<(File, fs::Metadata)> {
    open_user_file(path).map_err(|e| with_path(path, e))
}

/// [`read_user_file`] of a regular file already opened at `path`, whose descriptor's
/// metadata is `meta`.
#[cfg(feature = "quickjs")]
pub(crate) fn read_opened(
    file: &mut File,
    meta: &fs::Metadata,
    path: &Path,
    max_len: u64,
) -> io::Result<Vec<u8>> {
    use std::io::Read;
    refuse_longer(meta, max_len).map_err(|e| with_path(path, e))?;
    let mut content = Vec::new();
    // Fallible: memory the machine does not have is an error, not an abort.
    content
        .try_reserve_exact(usize::try_from(meta.len()).unwrap_or(usize::MAX))
        .map_err(|e| with_path(path, io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
    file.by_ref()
        .take(meta.len())
        .read_to_end(&mut content)
        .map_err(|e| with_path(path, e))?;
    Ok(content)
}

#[cfg(feature = "quickjs")]
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Streams `file` through XXH3-128, reading at most `limit + 1` bytes: the digest and how many
/// bytes were read. More than `limit` means the file grew while it was read; the caller treats
/// the content as unstable. Memory use is one buffer, whatever the file's size.
pub(crate) fn hash_bounded(file: &mut File, limit: u64) -> io::Result<([u8; 16], u64)> {
    use std::io::Read;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    // Sized to the file (most sources are a few KiB): a zeroed 64 KiB buffer per input would
    // cost more than reading it.
    let mut buf = vec![0u8; limit.saturating_add(1).clamp(1, 64 << 10) as usize];
    let mut total = 0u64;
    let mut reader = file.take(limit.saturating_add(1));
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.digest128().to_le_bytes(), total))
}

/// Opens (creating if needed) a cache file for reading and writing without following a
/// symlink; anything but a regular file is refused.
pub(crate) fn open_write(path: &Path, create: bool) -> io::Result<File> {
    let file = sys::open_cache_options()
        .read(true)
        .write(true)
        .create(create)
        .open(path)?;
    checked_regular(file).map(|(file, _)| file)
}

/// The file linked at `path` now, opened as [`open_write`] opens it, if it is not `file`
/// (compared by `fstat` of both open files, so two live inodes): a lock taken on a lock file
/// that was unlinked meanwhile, as pruning unlinks an idle cache's, excludes nobody.
pub(crate) fn replaced_at(file: &File, path: &Path, create: bool) -> io::Result<Option<File>> {
    let there = open_write(path, create)?;
    Ok((!sys::same_file(file, &there)?).then_some(there))
}

/// Creates a new cache file that must not exist yet.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    sys::open_cache_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Flushes a directory's entries (a completed `rename`) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    sys::sync_dir(dir).map_err(Error::io(dir))
}
