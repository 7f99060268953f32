//! Linux: `stat` through `statx` (the fields compared, and the mount's unique id), the
//! resolver's probe and clock, and which filesystems keep trustworthy ctimes.

mod filesystems;

use std::io;
use std::path::Path;

use crate::format::StatRecord;
use crate::sys::stat_record;
pub(crate) use filesystems::ctime_of;
use filesystems::learn_filesystem;
#[cfg(test)]
pub(crate) use filesystems::learn_made_up_device;
use std::fs;

/// A monotonic clock read per resolver call: the kernel's coarse one (through the vDSO,
/// ticking every 1-10 ms). `Instant::now` there cost about 2% of a warm es-toolkit start (1,059
/// calls; A/B both orders); this clock measured within the noise.
#[cfg(feature = "quickjs")]
pub(crate) fn coarse_clock() -> std::time::Duration {
    // A kernel without it lacks it for good: the fallback is never mixed with it.
    crate::unsafe_io::monotonic_coarse().unwrap_or_else(crate::sys::elapsed_since_first_use)
}

/// The stat data of `path` (following symlinks). On Linux a `statx` asking for only the
/// fields compared: the one syscall a fresh input costs, ~7% cheaper than `fs::metadata`.
/// It also learns the device's filesystem (see [`ctime_of`]) the first time it
/// is seen through a mount.
pub(crate) fn stat_path(path: &Path) -> io::Result<StatRecord> {
    let (record, mount) = statx_path(path)?;
    learn_filesystem(path, record.dev, mount);
    Ok(record)
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8), which rustix does not name.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// A `statx` of `path`: its stat data and its mount's unique id (0 where the kernel gives
/// none).
fn statx_path(path: &Path) -> io::Result<(StatRecord, u64)> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let mask = StatxFlags::SIZE
        | StatxFlags::MTIME
        | StatxFlags::CTIME
        | StatxFlags::INO
        | StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    // A network filesystem (NFS, SMB, virtiofs) answers from attributes it cached for up to a
    // minute, which hide an edit made on another machine that `open` would see: the stat data
    // that vouches for content asks the server. Local filesystems ignore the flag.
    match statx(CWD, path, AtFlags::STATX_FORCE_SYNC, mask) {
        Ok(st) => {
            let nanos = |t: rustix::fs::StatxTimestamp| {
                t.tv_sec
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.tv_nsec))
            };
            let record = StatRecord {
                size: st.stx_size,
                mtime_ns: nanos(st.stx_mtime),
                ctime_ns: nanos(st.stx_ctime),
                ino: st.stx_ino,
                dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            };
            let unique = st.stx_mask & STATX_MNT_ID_UNIQUE != 0;
            Ok((record, if unique { st.stx_mnt_id } else { 0 }))
        }
        // A kernel or sandbox without statx: the portable path.
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            fs::metadata(path).map(|m| (stat_record(&m), 0))
        }
        Err(e) => Err(e.into()),
    }
}

/// A handle on the directory at `path` to open its files by name ([`open_for_probe_in`]),
/// which walks no path per file. `O_PATH`: it reads nothing.
#[cfg(feature = "quickjs")]
pub(crate) fn open_directory(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(open(path, flags, Mode::empty())?)
}

/// [`crate::sys::open_for_probe`] of the entry `name` of the directory `dir` is a handle on.
#[cfg(feature = "quickjs")]
pub(crate) fn open_for_probe_in(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> io::Result<fs::File> {
    use rustix::fs::{Mode, OFlags, openat};
    super::imp::with_noatime_first(super::imp::PROBE_FLAGS, |flags| {
        // Bits of a non-negative `c_int`, as `open(2)` takes them.
        let flags = OFlags::RDONLY | OFlags::from_bits_retain(flags as u32);
        Ok(openat(dir, name, flags, Mode::empty())?.into())
    })
}

/// [`crate::sys::Probe`] of `path`: on Linux a `statx` asking for the file type only.
#[cfg(feature = "quickjs")]
pub(crate) fn probe(path: &Path) -> crate::sys::Probe {
    use rustix::fs::{AtFlags, CWD, FileType, StatxFlags, statx};
    match statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::RegularFile => crate::sys::Probe::File,
            FileType::Symlink => crate::sys::Probe::Symlink,
            _ => crate::sys::Probe::Other,
        },
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            crate::sys::Probe::portable(path)
        }
        Err(_) => crate::sys::Probe::Absent,
    }
}
