//! Unix: modes and owners, `O_NOFOLLOW | O_NONBLOCK`, directory sync, file identity, stat
//! records with ctime and inode, the process's credentials. (How a path is `stat`ed, and what
//! a filesystem's ctimes are worth, is `linux/` on Linux and `portable.rs` elsewhere.)

use crate::format::StatRecord;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Which file a snapshot was read from: device, inode and ctime. The ctime tells a file apart
/// from a later one that reuses a freed inode number (a rejected index is not kept mapped, so
/// its inode can be reused).
pub(crate) type FileIdentity = (u64, u64, i64);

pub(crate) fn file_identity(meta: &fs::Metadata) -> FileIdentity {
    let ctime = meta
        .ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec());
    (meta.dev(), meta.ino(), ctime)
}

/// A directory's inode number: kept by a rename on one filesystem (`mv`) and by a remount,
/// new for a copy.
#[cfg(feature = "quickjs")]
pub(crate) fn directory_inode(meta: &fs::Metadata) -> Option<u64> {
    Some(meta.ino())
}

/// Creates `dir` and missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The longest path the kernel takes, with its terminating NUL: a longer one fails with
/// `ENAMETOOLONG`, although the same file may be reachable by a shorter relative path.
#[cfg(feature = "quickjs")]
pub(crate) const LONGEST_PATH: usize = libc::PATH_MAX as usize;

#[cfg(feature = "quickjs")]
pub(crate) use crate::unsafe_io::credentials;

/// This process's soft limit on open files (`RLIMIT_NOFILE`); `u64::MAX` if unlimited.
#[cfg(feature = "quickjs")]
pub(crate) fn open_files_limit() -> Option<u64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Some(limit.current.unwrap_or(u64::MAX))
}

/// What is wrong with a cache directory's owner or mode, if anything: it must be this user's
/// and not writable by group or others.
pub(crate) fn check_owner_and_mode(meta: &fs::Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    // Root's files are as safe as this user's, the rule ssh applies to its own: nobody else
    // can swap what is in them. (A cache shipped in an image is root's, read by an app user.)
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "owned by uid {}, neither this user (uid {me}) nor root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "mode {:o} lets group or others write; chmod go-w it",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Whether this process may search directory `dir` (and every directory on its path), as the
/// kernel would judge it now for its effective ids: what a `stat` of a file in it needs.
#[cfg(feature = "quickjs")]
pub(crate) fn may_search(dir: &Path) -> bool {
    may(dir, rustix::fs::Access::EXEC_OK)
}

/// Whether this process may create and replace files in the directory `dir`, as the kernel
/// would judge it now for its effective ids: not in a directory another user owns without
/// granting it, nor on a read-only mount (`EROFS`).
pub(crate) fn may_write_in(dir: &Path) -> bool {
    may(dir, rustix::fs::Access::WRITE_OK)
}

/// `faccessat(dir, access)` with `AT_EACCESS`: for the effective ids, as other calls are
/// judged. Where the kernel cannot judge for them (before Linux 5.8, in a set-id process) the
/// answer is no.
fn may(dir: &Path, access: rustix::fs::Access) -> bool {
    rustix::fs::accessat(rustix::fs::CWD, dir, access, rustix::fs::AtFlags::EACCESS).is_ok()
}

/// Options for the cache's own files: never through a symlink, never blocking on a FIFO put
/// in a file's place, created private.
pub(crate) fn open_cache_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .mode(0o600);
    opts
}

/// Opens a file a user named for reading: symlinks followed, a FIFO never blocks the open.
///
/// On Linux the read does not update the file's access time where the kernel allows it
/// (`O_NOATIME`: files this user owns, or any with `CAP_FOWNER`), as git reads its objects. In
/// a fresh copy of a tree the first read of each file would otherwise update its inode (its
/// ctime is newer than its atime): 15% of the time reading a fresh copy's modules takes.
/// Refused once with `EPERM` (another user's file), the flag is dropped for the process.
/// Opens whatever is there: [`crate::fsys::open_user_file`] checks it is a regular file.
pub(crate) fn open_for_reading(path: &Path) -> io::Result<fs::File> {
    open_user_file_with(path, 0)
}

/// [`open_for_reading`], but a final symlink is refused (`ELOOP`): a resolver's probe that
/// opens what it finds.
#[cfg(feature = "quickjs")]
pub(crate) fn open_for_probe(path: &Path) -> io::Result<fs::File> {
    open_user_file_with(path, PROBE_FLAGS)
}

/// The flags a probe adds to a user file's ([`open_for_probe`]).
#[cfg(feature = "quickjs")]
pub(crate) const PROBE_FLAGS: libc::c_int = libc::O_NOFOLLOW;

fn open_user_file_with(path: &Path, flags: libc::c_int) -> io::Result<fs::File> {
    with_noatime_first(flags, |flags| {
        OpenOptions::new().read(true).custom_flags(flags).open(path)
    })
}

/// `open(flags)` of a file a user named, for reading: `flags` and `O_CLOEXEC | O_NONBLOCK |
/// O_NOCTTY` (a terminal opened by mistake never becomes the process's controlling one), with
/// `O_NOATIME` where the kernel allows it (see [`open_for_reading`]; refused once, it is not
/// asked again in this process).
pub(crate) fn with_noatime_first(
    flags: libc::c_int,
    open: impl Fn(libc::c_int) -> io::Result<fs::File>,
) -> io::Result<fs::File> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY | flags;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);
        if !NOATIME_REFUSED.load(Ordering::Relaxed) {
            match open(libc::O_NOATIME | flags) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    NOATIME_REFUSED.store(true, Ordering::Relaxed);
                }
                opened => return opened,
            }
        }
    }
    open(flags)
}

/// What a failed `open` of a cache file says about what is there: a symlink (`O_NOFOLLOW`
/// gives `ELOOP`) or a socket (`ENXIO`).
pub(crate) fn open_error_kind(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Some("a symbolic link"),
        Some(libc::ENXIO) => Some("a socket"),
        _ => None,
    }
}

/// The kinds only Unix has.
pub(crate) fn special_file_kind(t: &fs::FileType) -> Option<&'static str> {
    if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// Flushes a directory's entries (a completed `rename`) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    // O_DIRECTORY: whatever else has taken the directory's place fails instead of blocking.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dir)?
        .sync_all()
}

/// Whether two open files are the same file (device and inode).
pub(crate) fn same_file(a: &fs::File, b: &fs::File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

pub(crate) fn path_from_bytes(bytes: &[u8]) -> Option<&Path> {
    use std::os::unix::ffi::OsStrExt;
    Some(Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// The relative path `relative` under `root`: what `root.join(relative)` makes, built in one
/// allocation without parsing either path (a warm start makes one per module it checks:
/// about 150 instructions, where `join` takes about 900).
pub(crate) fn under_root(root: &Path, relative: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let (root, relative) = (root.as_os_str().as_bytes(), relative.as_os_str().as_bytes());
    debug_assert!(
        !relative.starts_with(b"/"),
        "an absolute path replaces the root"
    );
    let mut joined = Vec::with_capacity(root.len() + 1 + relative.len());
    joined.extend_from_slice(root);
    if root.last().is_some_and(|&last| last != b'/') {
        joined.push(b'/');
    }
    joined.extend_from_slice(relative);
    PathBuf::from(std::ffi::OsString::from_vec(joined))
}

pub(crate) fn stat_record(meta: &fs::Metadata) -> StatRecord {
    StatRecord {
        size: meta.size(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `under_root` makes the bytes `Path::join` makes, for every shape of root (paths
    /// compare by components, so the bytes are compared).
    #[test]
    fn under_root_joins_byte_for_byte_as_path_join_does() {
        for root in ["/", "", "/a", "/a/", "a/b", "/a//", "."] {
            for relative in ["x", "x/y", "./x", "../x", "", "x/", "x//y"] {
                let (root, relative) = (Path::new(root), Path::new(relative));
                assert_eq!(
                    under_root(root, relative).as_os_str(),
                    root.join(relative).as_os_str(),
                    "{root:?} joined with {relative:?}"
                );
            }
        }
    }
}
