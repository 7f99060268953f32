//! Platform code, split by concern and platform (memmap2's and redb's layout); everything
//! above this module is platform-neutral.
//!
//! | file | what |
//! |---|---|
//! | `unix.rs` (`other.rs` elsewhere) | owners and modes, open flags, directory sync, file identity, stat records, credentials |
//! | `linux/mod.rs` (`portable.rs` elsewhere) | how a path is `stat`ed and probed (on Linux also opened through its directory's handle), the resolver's clock |
//! | `linux/filesystems.rs` (nothing elsewhere) | which filesystems keep trustworthy ctimes, and by whose clock ([`Ctime`]) |
//!
//! Unix is the tested platform, Linux the measured one; `other.rs` and `portable.rs` are the
//! fallbacks (no ownership checks, no ctime or inode, every ctime trusted as local).

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(not(unix), path = "other.rs")]
mod imp;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod portable;

#[cfg(target_os = "linux")]
use linux as stat;
#[cfg(not(target_os = "linux"))]
use portable as stat;

pub(crate) use imp::{
    FileIdentity, check_owner_and_mode, create_private_dir, file_identity, may_write_in,
    open_cache_options, open_error_kind, open_for_reading, path_from_bytes, same_file,
    special_file_kind, stat_record, sync_dir, under_root,
};
#[cfg(feature = "quickjs")]
pub(crate) use imp::{
    LONGEST_PATH, credentials, directory_inode, may_search, open_files_limit, open_for_probe,
};
#[cfg(all(test, target_os = "linux"))]
pub(crate) use linux::learn_made_up_device;
#[cfg(all(feature = "quickjs", target_os = "linux"))]
pub(crate) use linux::{open_directory, open_for_probe_in};
#[cfg(feature = "quickjs")]
pub(crate) use stat::{coarse_clock, probe};
pub(crate) use stat::{ctime_of, stat_path};

/// Who sets a filesystem's ctimes, which decides whether, and within what racy window, stat
/// data can stand in for content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctime {
    /// Not the kernel: FAT and exFAT report the settable mtime, a FUSE daemon what it likes.
    /// Stat data is never trusted.
    Settable,
    /// This kernel, by this machine's clock.
    LocalClock,
    /// Another machine's kernel (a network or cluster filesystem, virtiofs), by its clock,
    /// which may be ahead of or behind this one's: the racy window is the wide one.
    RemoteClock,
    /// A kernel pseudo filesystem (procfs, sysfs, debugfs, cgroupfs...): its files are made
    /// up as they are read, and their sizes and times do not follow their content
    /// (`/proc/self/status` is 0 bytes long and never changes its ctime). Such a file cannot
    /// be an input: `put` refuses it and a lookup misses on it.
    Pseudo,
}

impl Ctime {
    /// Whether stat data can ever stand in for content.
    #[cfg(any(feature = "quickjs", test))]
    pub(crate) fn kept_by_a_kernel(self) -> bool {
        matches!(self, Ctime::LocalClock | Ctime::RemoteClock)
    }
}

/// What is at a path itself, a final symlink not followed: a resolver's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg(feature = "quickjs")]
pub(crate) enum Probe {
    File,
    Symlink,
    /// A directory, FIFO, device or socket.
    Other,
    /// Nothing, or nothing this process may look at.
    Absent,
}

#[cfg(feature = "quickjs")]
impl Probe {
    /// The portable probe: `symlink_metadata`, for platforms (or kernels) without a cheaper
    /// one.
    fn portable(path: &std::path::Path) -> Probe {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => Probe::File,
            Ok(m) if m.file_type().is_symlink() => Probe::Symlink,
            Ok(_) => Probe::Other,
            Err(_) => Probe::Absent,
        }
    }
}

/// Time since this function's first call, by `Instant`: the portable monotonic clock.
#[cfg(feature = "quickjs")]
fn elapsed_since_first_use() -> std::time::Duration {
    static FIRST: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    FIRST.get_or_init(std::time::Instant::now).elapsed()
}

/// Nanoseconds since the epoch, saturating; times before 1970 are negative.
pub(crate) fn epoch_nanos(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}
