//! Unix: modes and owners, `O_NOFOLLOW | O_NONBLOCK`, ctime and inode, `statx` on Linux.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::StatRecord;

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

/// What is wrong with a cache directory's owner or mode, if anything: it must be this user's
/// and not writable by group or others.
pub(crate) fn check_owner_and_mode(meta: &fs::Metadata) -> Option<String> {
    let me = crate::unsafe_io::current_uid();
    if meta.uid() != me {
        return Some(format!(
            "owned by uid {}, not by this user (uid {me})",
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

/// Options for the cache's own files: never through a symlink, never blocking on a FIFO put
/// in a file's place, created private.
pub(crate) fn open_cache_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .mode(0o600);
    opts
}

/// Options for files a user named: symlinks followed, a FIFO never blocks the open.
pub(crate) fn open_user_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK);
    opts
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

/// Whether `file` is the file linked at `path` now (same device and inode; `false` if
/// nothing is there).
pub(crate) fn is_linked_at(file: &fs::File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(there) => Ok(held.dev() == there.dev() && held.ino() == there.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn path_from_bytes(bytes: &[u8]) -> Option<&Path> {
    use std::os::unix::ffi::OsStrExt;
    Some(Path::new(std::ffi::OsStr::from_bytes(bytes)))
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

/// `statfs` types (`f_type`) whose ctime is not the kernel's own record of the last change:
/// FAT and exFAT store no ctime, and Linux reports their mtime, which `utimensat` sets to
/// anything, in its place; a FUSE filesystem reports whatever its daemon says.
#[cfg(target_os = "linux")]
const MSDOS_SUPER_MAGIC: u32 = 0x4d44; // vfat, msdos
#[cfg(target_os = "linux")]
const EXFAT_SUPER_MAGIC: u32 = 0x2011_bab0;
#[cfg(target_os = "linux")]
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546; // also virtiofs

/// Whether the filesystem of type `magic` that holds device `dev` keeps the ctime itself:
/// not FAT or exFAT, and of FUSE filesystems only virtiofs.
#[cfg(target_os = "linux")]
fn keeps_ctime(magic: u32, dev: u64) -> bool {
    match magic {
        MSDOS_SUPER_MAGIC | EXFAT_SUPER_MAGIC => false,
        FUSE_SUPER_MAGIC => is_virtiofs(dev),
        _ => true,
    }
}

/// Whether device `dev`, a FUSE mount, is virtiofs (a VM's view of its host's files, as Docker
/// Desktop mounts a project): its ctimes are the host kernel's, passed through. Any other
/// FUSE filesystem's are whatever its daemon says. Read from `/proc/self/mountinfo`, once per
/// FUSE device.
#[cfg(target_os = "linux")]
fn is_virtiofs(dev: u64) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        let device = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
        mounts
            .lines()
            .any(|line| mount_type(line, &device) == Some("virtiofs"))
    })
}

/// The filesystem type of a `/proc/self/mountinfo` line if it is for `device`
/// (`major:minor`): the third field, and the first after the ` - ` separator.
#[cfg(target_os = "linux")]
fn mount_type<'a>(line: &'a str, device: &str) -> Option<&'a str> {
    let (mount, filesystem) = line.split_once(" - ")?;
    (mount.split(' ').nth(2)? == device).then(|| filesystem.split(' ').next())?
}

/// What this process learned of each device's filesystem: whether its ctime is kept by the
/// kernel. Devices are few (usually one), so a list. A device number that another filesystem
/// takes over during the process's life (an unmount, then a new mount given the same number)
/// keeps the first verdict: a limit of keying by device.
#[cfg(target_os = "linux")]
static CTIME_KEPT_BY_KERNEL: parking_lot::Mutex<Vec<(u64, bool)>> =
    parking_lot::Mutex::new(Vec::new());

/// Whether the ctimes of device `dev` are set by the kernel alone, as far as this process has
/// learned (by a `stat_path` of a file on it): a device not yet seen is not trusted.
#[cfg(target_os = "linux")]
pub(crate) fn ctime_kept_by_kernel(dev: u64) -> bool {
    if LAST_KEPT.load(Ordering::Relaxed) == dev.wrapping_add(1) {
        return true;
    }
    let kept = learned(dev) == Some(true);
    if kept {
        LAST_KEPT.store(dev.wrapping_add(1), Ordering::Relaxed);
    }
    kept
}

/// What this process learned of device `dev`, if anything.
#[cfg(target_os = "linux")]
fn learned(dev: u64) -> Option<bool> {
    let known = CTIME_KEPT_BY_KERNEL.lock();
    known.iter().find(|(d, _)| *d == dev).map(|&(_, kept)| kept)
}

/// The last device found to keep its ctime, plus one (0: none): a lookup's stats are nearly
/// always on one device, which this answers without taking the lock.
#[cfg(target_os = "linux")]
static LAST_KEPT: AtomicU64 = AtomicU64::new(0);

/// Learns, once per device, whether the filesystem `path` is on keeps its ctime itself.
#[cfg(target_os = "linux")]
fn learn_filesystem(path: &Path, dev: u64) {
    if LAST_KEPT.load(Ordering::Relaxed) == dev.wrapping_add(1) || learned(dev).is_some() {
        return;
    }
    let kept = match rustix::fs::statfs(path) {
        // Only if `path` is still on `dev` (a symlink on it may have switched to another mount
        // between the two calls). The magic numbers are 32-bit; `f_type` is wider on some
        // targets.
        Ok(fs) if statx_path(path).is_ok_and(|again| again.dev == dev) => {
            keeps_ctime(fs.f_type as u32, dev) && !crate::faults::pretend_ctime_settable()
        }
        Ok(_) => return,
        // A sandbox that refuses `statfs` leaves the filesystem unknown for good: untrusted,
        // and not asked again at every stat.
        Err(
            e @ (rustix::io::Errno::NOSYS | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS),
        ) => {
            log::debug!("bytecode-pack: statfs refused ({e}); stat data will not be trusted");
            false
        }
        // Anything else (the file went away meanwhile) is asked again by the next stat; until
        // then the device is untrusted.
        Err(_) => return,
    };
    let mut known = CTIME_KEPT_BY_KERNEL.lock();
    if !known.iter().any(|(d, _)| *d == dev) {
        known.push((dev, kept));
    }
}

/// The stat data of `path` (following symlinks). On Linux a `statx` asking for only the
/// fields compared: the one syscall a fresh input costs, ~7% cheaper than `fs::metadata`.
/// It also learns the device's filesystem (see [`ctime_kept_by_kernel`]) the first time.
#[cfg(target_os = "linux")]
pub(crate) fn stat_path(path: &Path) -> io::Result<StatRecord> {
    let record = statx_path(path)?;
    learn_filesystem(path, record.dev);
    Ok(record)
}

#[cfg(target_os = "linux")]
fn statx_path(path: &Path) -> io::Result<StatRecord> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let mask = StatxFlags::SIZE | StatxFlags::MTIME | StatxFlags::CTIME | StatxFlags::INO;
    match statx(CWD, path, AtFlags::empty(), mask) {
        Ok(st) => {
            let nanos = |t: rustix::fs::StatxTimestamp| {
                t.tv_sec
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.tv_nsec))
            };
            Ok(StatRecord {
                size: st.stx_size,
                mtime_ns: nanos(st.stx_mtime),
                ctime_ns: nanos(st.stx_ctime),
                ino: st.stx_ino,
                dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            })
        }
        // A kernel or sandbox without statx: the portable path.
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            fs::metadata(path).map(|m| stat_record(&m))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`super::Probe`] of `path`: on Linux a `statx` asking for the file type only.
#[cfg(target_os = "linux")]
#[cfg_attr(not(feature = "quickjs"), allow(dead_code))]
pub(crate) fn probe(path: &Path) -> super::Probe {
    use rustix::fs::{AtFlags, CWD, FileType, StatxFlags, statx};
    match statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::RegularFile => super::Probe::File,
            FileType::Symlink => super::Probe::Symlink,
            _ => super::Probe::Other,
        },
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
            super::Probe::portable(path)
        }
        Err(_) => super::Probe::Absent,
    }
}

#[cfg(not(target_os = "linux"))]
#[cfg_attr(not(feature = "quickjs"), allow(dead_code))]
pub(crate) fn probe(path: &Path) -> super::Probe {
    super::Probe::portable(path)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn stat_path(path: &Path) -> io::Result<StatRecord> {
    fs::metadata(path).map(|m| stat_record(&m))
}

/// Elsewhere the filesystem is not asked: ctimes are taken as the kernel's (Linux is the
/// tested platform).
#[cfg(not(target_os = "linux"))]
pub(crate) fn ctime_kept_by_kernel(_dev: u64) -> bool {
    true
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_trusted_once_learned_and_only_if_its_filesystem_keeps_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let dev = fs::metadata(&file).unwrap().dev();
        let unseen = dev ^ 0x5eed_0000_0000;
        assert!(!ctime_kept_by_kernel(unseen));
        let stat = stat_path(&file).unwrap();
        assert_eq!(stat.dev, dev);
        let magic = rustix::fs::statfs(&file).unwrap().f_type as u32;
        assert_eq!(ctime_kept_by_kernel(dev), keeps_ctime(magic, dev));
        assert!(!ctime_kept_by_kernel(unseen));
    }

    #[test]
    fn a_mount_type_is_read_from_its_mountinfo_line() {
        let line = "312 290 0:73 / /work rw,relatime - virtiofs mount0 rw";
        assert_eq!(mount_type(line, "0:73"), Some("virtiofs"));
        assert_eq!(mount_type(line, "0:7"), None);
        // Optional fields before the separator; a mount point with an escaped space.
        let line = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - fuse.sshfs host: rw";
        assert_eq!(mount_type(line, "98:0"), Some("fuse.sshfs"));
        assert_eq!(mount_type("garbage", "98:0"), None);
        assert_eq!(mount_type("1 2 3:4 - ", "3:4"), Some(""));
    }

    #[test]
    fn fat_exfat_and_fuse_do_not_keep_ctime() {
        // A device no mount has: not virtiofs.
        let nowhere = u64::MAX;
        for magic in [0x4d44, 0x2011_bab0, 0x6573_5546] {
            assert!(!keeps_ctime(magic, nowhere), "{magic:#x}");
        }
        // ext4, xfs, btrfs, tmpfs, overlayfs, nfs.
        for magic in [
            0xef53,
            0x5846_5342,
            0x9123_683e,
            0x0102_1994,
            0x794c_7630,
            0x6969,
        ] {
            assert!(keeps_ctime(magic, nowhere), "{magic:#x}");
        }
    }
}
