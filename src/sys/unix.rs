//! Unix: modes and owners, `O_NOFOLLOW | O_NONBLOCK`, ctime and inode, `statx` on Linux.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicU64, Ordering};

use super::Ctime;
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

/// The longest path the kernel takes, with its terminating NUL: a longer one fails with
/// `ENAMETOOLONG`, although the same file may be reachable by a shorter relative path.
#[cfg(feature = "quickjs")]
pub(crate) const LONGEST_PATH: usize = libc::PATH_MAX as usize;

#[cfg(feature = "quickjs")]
pub(crate) use crate::unsafe_io::credentials;

/// A monotonic clock read per resolver call: the kernel's coarse one (through the vDSO,
/// ticking every 1-10 ms). `Instant::now` there cost about 2% of a warm es-toolkit start (1,059
/// calls; A/B both orders); this clock measured within the noise.
#[cfg(all(target_os = "linux", feature = "quickjs"))]
pub(crate) fn coarse_clock() -> std::time::Duration {
    // A kernel without it lacks it for good: the fallback is never mixed with it.
    crate::unsafe_io::monotonic_coarse().unwrap_or_else(super::elapsed_since_first_use)
}

/// A monotonic clock read per resolver call.
#[cfg(all(not(target_os = "linux"), feature = "quickjs"))]
pub(crate) fn coarse_clock() -> std::time::Duration {
    super::elapsed_since_first_use()
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

/// Whether two open files are the same file (device and inode).
pub(crate) fn same_file(a: &fs::File, b: &fs::File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
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

/// `statfs` types whose ctimes another machine's kernel sets, by its own clock: network
/// filesystems (NFS, SMB/CIFS, 9p as WSL2's `/mnt/c`, Ceph, AFS, Lustre, Coda) and cluster or
/// parallel ones whose nodes each stamp with theirs (GFS2, OCFS2, GPFS, BeeGFS, OrangeFS).
/// virtiofs, a FUSE type, is told apart by its mount; other FUSE filesystems are not trusted
/// at all. Not complete: a remote filesystem missing here gets the fine window, and so does an
/// overlayfs over one (overlayfs reports its own type).
#[cfg(target_os = "linux")]
const REMOTE_CLOCK_MAGICS: [u32; 16] = [
    0x6969,      // NFS
    0xfe53_4d42, // SMB2
    0xff53_4d42, // CIFS
    0x517b,      // SMB
    0x0102_1997, // 9p
    0x00c3_6400, // Ceph
    0x5346_414f, // AFS (OpenAFS)
    0x6b41_4653, // AFS (the kernel's kAFS)
    0x7375_7245, // Coda
    0x0bd0_0bd0, // Lustre
    0x0116_1970, // GFS2
    0x7461_636f, // OCFS2
    0x4750_4653, // GPFS
    0x1983_0326, // BeeGFS
    0x2003_0528, // OrangeFS
    0x1803_1977, // WekaFS
];

/// `statfs` types of the kernel's pseudo filesystems, whose files' sizes and times say nothing
/// of their content: procfs, sysfs, debugfs, tracefs, cgroup v1 and v2, securityfs, configfs,
/// bpffs, pstore, efivarfs, selinuxfs, smackfs, fusectl and binfmt_misc.
#[cfg(target_os = "linux")]
const PSEUDO_MAGICS: [u32; 15] = [
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x7363_6673, // securityfs
    0x6265_6570, // configfs
    0xcafe_4a11, // bpf
    0x6165_676c, // pstore
    0xde5e_81e4, // efivarfs
    0xf97c_ff8c, // selinuxfs
    0x4341_5d53, // smackfs
    0x6573_5543, // fusectl
    0x4249_4e4d, // binfmt_misc
];

/// Who sets the ctimes of the filesystem of type `magic` that holds device `dev`: nobody
/// reliably on FAT and exFAT, and on FUSE but virtiofs; another machine's kernel on network
/// and cluster filesystems and virtiofs; nobody at all on the kernel's pseudo filesystems;
/// this kernel elsewhere.
#[cfg(target_os = "linux")]
fn ctime_kind(magic: u32, dev: u64) -> Ctime {
    match magic {
        m if PSEUDO_MAGICS.contains(&m) => Ctime::Pseudo,
        MSDOS_SUPER_MAGIC | EXFAT_SUPER_MAGIC => Ctime::Settable,
        FUSE_SUPER_MAGIC if is_virtiofs(dev) => Ctime::RemoteClock,
        FUSE_SUPER_MAGIC => Ctime::Settable,
        m if REMOTE_CLOCK_MAGICS.contains(&m) => Ctime::RemoteClock,
        _ => Ctime::LocalClock,
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

/// What this process learned of each device's filesystem: who sets its ctimes, and the mounts
/// seen on it with that verdict.
///
/// A device number names one filesystem at a time, but not for a process's whole life: after
/// an unmount, a new mount may be given the same number (anonymous device numbers, used by
/// FUSE, tmpfs and overlayfs, are handed out lowest free first; a USB stick plugged in where
/// another was is `sdb1` again). So each verdict is also tied to the mounts it was learned
/// on, by the mount id the kernel never reuses (`STATX_MNT_ID_UNIQUE`, Linux 6.8); a stat
/// through a mount not yet seen on its device learns the filesystem again. Before Linux 6.8
/// there is no such id, and a verdict is kept by device alone.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct Verdicts {
    known: Vec<Verdict>,
    /// How many times learners have changed them: a learner that began before another's
    /// change discards its own, which may describe a mount that was replaced meanwhile.
    changes: u64,
}

#[cfg(target_os = "linux")]
struct Verdict {
    dev: u64,
    /// Unique mount ids (0: unknown).
    mounts: Vec<u64>,
    ctime: Ctime,
}

#[cfg(target_os = "linux")]
impl Verdicts {
    /// The verdict on device `dev`, if one was learned.
    fn ctime(&self, dev: u64) -> Option<Ctime> {
        self.known.iter().find(|v| v.dev == dev).map(|v| v.ctime)
    }

    /// Whether `dev` was learned through `mount`, and so needs no new look.
    fn knows(&self, dev: u64, mount: u64) -> bool {
        self.known
            .iter()
            .any(|v| v.dev == dev && v.mounts.contains(&mount))
    }

    /// Records the verdict `ctime` learned for `dev` through `mount`. Another verdict on the
    /// same device is another filesystem that took its number: it replaces the old one.
    fn learn(&mut self, dev: u64, mount: u64, ctime: Ctime) {
        match self.known.iter_mut().find(|v| v.dev == dev) {
            Some(v) if v.ctime == ctime => {
                if !v.mounts.contains(&mount) {
                    // Bounded (automounts come and go): a mount dropped is only asked again.
                    if v.mounts.len() >= MAX_MOUNTS_PER_DEVICE {
                        v.mounts.remove(0);
                    }
                    v.mounts.push(mount);
                }
            }
            Some(v) => {
                *v = Verdict {
                    dev,
                    mounts: vec![mount],
                    ctime,
                }
            }
            None => self.known.push(Verdict {
                dev,
                mounts: vec![mount],
                ctime,
            }),
        }
    }

    /// Forgets the verdict on `dev` unless it was learned through `mount`: a stat through a
    /// mount whose filesystem could not be learned must not be vouched for by another's.
    fn forget_unless_through(&mut self, dev: u64, mount: u64) {
        self.known
            .retain(|v| v.dev != dev || v.mounts.contains(&mount));
    }
}

#[cfg(target_os = "linux")]
const MAX_MOUNTS_PER_DEVICE: usize = 16;

#[cfg(target_os = "linux")]
static VERDICTS: parking_lot::Mutex<Verdicts> = parking_lot::Mutex::new(Verdicts {
    known: Vec::new(),
    changes: 0,
});

/// Who sets the ctimes of device `dev`, as far as this process has learned (by the
/// `stat_path` that returned `dev`, which learns again through a new mount): a device not yet
/// seen is not trusted.
#[cfg(target_os = "linux")]
pub(crate) fn ctime_of(dev: u64) -> Ctime {
    if LAST_LOCAL_DEV.load(Ordering::Relaxed) == dev.wrapping_add(1) {
        return Ctime::LocalClock;
    }
    VERDICTS.lock().ctime(dev).unwrap_or(Ctime::Settable)
}

/// Records `ctime` for a device no real mount has, for tests of what depends on the verdict.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn learn_made_up_device(dev: u64, ctime: Ctime) {
    let mut verdicts = VERDICTS.lock();
    verdicts.learn(dev, 0, ctime);
    verdicts.changes += 1;
}

/// The last device and mount learned to be stamped by this kernel's clock (the device plus
/// one; 0: none): a lookup's stats are nearly always through one mount, which this answers
/// without the lock. Both are stored only under the lock, the mount first. A reader may still
/// pair a device with another update's mount; such a pair only matches a stat through a mount
/// learned `LocalClock`, and every device under one mount is of that mount's filesystem type,
/// so of its verdict.
#[cfg(target_os = "linux")]
static LAST_LOCAL_DEV: AtomicU64 = AtomicU64::new(0);
#[cfg(target_os = "linux")]
static LAST_LOCAL_MOUNT: AtomicU64 = AtomicU64::new(0);

/// Learns who sets the ctimes of the filesystem `path` is on (device `dev`, through `mount`),
/// once per device and mount. The filesystem is asked without the lock held
/// (`statfs` on a dead network mount blocks; other threads must not wait for it).
#[cfg(target_os = "linux")]
fn learn_filesystem(path: &Path, dev: u64, mount: u64) {
    if LAST_LOCAL_DEV.load(Ordering::Relaxed) == dev.wrapping_add(1)
        && LAST_LOCAL_MOUNT.load(Ordering::Relaxed) == mount
    {
        return;
    }
    let changes_before = {
        let verdicts = VERDICTS.lock();
        if verdicts.knows(dev, mount) {
            publish_fast_path(dev, mount, verdicts.ctime(dev) == Some(Ctime::LocalClock));
            return;
        }
        verdicts.changes
    };
    let learned = match rustix::fs::statfs(path) {
        // Only if `path` is still on `dev` through `mount` (a symlink on it may have switched
        // to another mount between the two calls). The magic numbers are 32-bit; `f_type` is
        // wider on some targets.
        Ok(fs) if statx_path(path).is_ok_and(|(again, on)| again.dev == dev && on == mount) => {
            Some(if crate::faults::pretend_ctime_settable() {
                Ctime::Settable
            } else {
                ctime_kind(fs.f_type as u32, dev)
            })
        }
        Ok(_) => None,
        // A sandbox that refuses `statfs` leaves the filesystem unknown for good: untrusted,
        // and not asked again at every stat.
        Err(
            e @ (rustix::io::Errno::NOSYS | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS),
        ) => {
            log::debug!("bytecode-pack: statfs refused ({e}); stat data will not be trusted");
            Some(Ctime::Settable)
        }
        // Anything else (the file went away, a FUSE daemon without `statfs`) is asked again
        // by the next stat.
        Err(_) => None,
    };
    let mut verdicts = VERDICTS.lock();
    let undisturbed = verdicts.changes == changes_before;
    // Every outcome counts, a forgotten verdict too: a learner that began before it may have
    // learned through the mount this one's replaced, and must not record that afterwards.
    verdicts.changes += 1;
    match learned {
        Some(ctime) if undisturbed => {
            verdicts.learn(dev, mount, ctime);
            publish_fast_path(dev, mount, ctime == Ctime::LocalClock);
        }
        // Not learned (the next stat asks again), or another learner changed the verdicts
        // meanwhile, possibly for a mount that replaced this one's: until this mount is
        // learned, the device is untrusted, whatever was learned of it through another.
        _ => {
            verdicts.forget_unless_through(dev, mount);
            publish_fast_path(dev, mount, false);
        }
    }
}

/// Points the fast path at (`dev`, `mount`) if this kernel keeps its ctimes, else takes it off
/// `dev`.
/// Called with [`VERDICTS`] locked.
#[cfg(target_os = "linux")]
fn publish_fast_path(dev: u64, mount: u64, local: bool) {
    if local {
        LAST_LOCAL_MOUNT.store(mount, Ordering::Relaxed);
        LAST_LOCAL_DEV.store(dev.wrapping_add(1), Ordering::Relaxed);
    } else if LAST_LOCAL_DEV.load(Ordering::Relaxed) == dev.wrapping_add(1) {
        LAST_LOCAL_DEV.store(0, Ordering::Relaxed);
    }
}

/// The stat data of `path` (following symlinks). On Linux a `statx` asking for only the
/// fields compared: the one syscall a fresh input costs, ~7% cheaper than `fs::metadata`.
/// It also learns the device's filesystem (see [`ctime_of`]) the first time it
/// is seen through a mount.
#[cfg(target_os = "linux")]
pub(crate) fn stat_path(path: &Path) -> io::Result<StatRecord> {
    let (record, mount) = statx_path(path)?;
    learn_filesystem(path, record.dev, mount);
    Ok(record)
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8), which rustix does not name.
#[cfg(target_os = "linux")]
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// A `statx` of `path`: its stat data and its mount's unique id (0 where the kernel gives
/// none).
#[cfg(target_os = "linux")]
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

/// Elsewhere the filesystem is not asked: ctimes are taken as this kernel's (Linux is the
/// tested platform).
#[cfg(not(target_os = "linux"))]
pub(crate) fn ctime_of(_dev: u64) -> Ctime {
    Ctime::LocalClock
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_trusted_once_learned_and_as_its_filesystem_sets_ctimes() {
        let dir = crate::private_tempdir();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let dev = fs::metadata(&file).unwrap().dev();
        let unseen = dev ^ 0x5eed_0000_0000;
        assert_eq!(ctime_of(unseen), Ctime::Settable);
        let stat = stat_path(&file).unwrap();
        assert_eq!(stat.dev, dev);
        let magic = rustix::fs::statfs(&file).unwrap().f_type as u32;
        assert_eq!(ctime_of(dev), ctime_kind(magic, dev));
        assert_eq!(ctime_of(unseen), Ctime::Settable);
    }

    /// A device number taken over by another filesystem (an unmount, then a new mount) gets
    /// that filesystem's verdict once a stat sees the new mount; bind mounts of one share it.
    #[test]
    fn a_verdict_is_learned_again_through_a_new_mount_of_its_device() {
        const LOCAL: Ctime = Ctime::LocalClock;
        const SETTABLE: Ctime = Ctime::Settable;
        let (dev, other_dev) = (8 << 8 | 17, 8 << 8 | 18);
        let mut verdicts = Verdicts::default();
        assert_eq!(verdicts.ctime(dev), None);
        verdicts.learn(dev, 101, LOCAL);
        verdicts.learn(other_dev, 102, SETTABLE);
        assert!(verdicts.knows(dev, 101) && !verdicts.knows(dev, 103));
        assert_eq!(verdicts.ctime(dev), Some(LOCAL));
        // A bind mount of the same filesystem: same verdict, one more mount known.
        verdicts.learn(dev, 103, LOCAL);
        assert!(verdicts.knows(dev, 101) && verdicts.knows(dev, 103));
        // FAT mounted where it was: the old mounts' verdict goes.
        verdicts.learn(dev, 104, SETTABLE);
        assert_eq!(verdicts.ctime(dev), Some(SETTABLE));
        assert!(!verdicts.knows(dev, 101) && verdicts.knows(dev, 104));
        assert_eq!(verdicts.ctime(other_dev), Some(SETTABLE));
        // A new mount whose filesystem could not be learned: the device has no verdict
        // until it is, whatever the one before said; other devices keep theirs.
        verdicts.learn(dev, 105, LOCAL);
        verdicts.forget_unless_through(dev, 106);
        assert_eq!(verdicts.ctime(dev), None);
        assert_eq!(verdicts.ctime(other_dev), Some(SETTABLE));
        // Through a mount it was learned by, nothing is forgotten.
        verdicts.learn(dev, 107, LOCAL);
        verdicts.forget_unless_through(dev, 107);
        assert_eq!(verdicts.ctime(dev), Some(LOCAL));
        // Mounts come and go; a device remembers the last few.
        for mount in 200..300 {
            verdicts.learn(dev, mount, LOCAL);
        }
        assert!(verdicts.knows(dev, 299) && !verdicts.knows(dev, 200));
        let remembered = verdicts.known.iter().map(|v| v.mounts.len()).max();
        assert_eq!(remembered, Some(MAX_MOUNTS_PER_DEVICE));
    }

    /// This kernel gives the unique mount id (Linux 6.8+), or 0 before.
    #[test]
    fn a_stat_names_its_mount_where_the_kernel_can() {
        let dir = crate::private_tempdir();
        let (record, mount) = statx_path(dir.path()).unwrap();
        assert_eq!(record.ino, fs::metadata(dir.path()).unwrap().ino());
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let mut next = || numbers.next().and_then(|n| n.parse::<u32>().ok()).unwrap();
        let (major, minor) = (next(), next());
        if (major, minor) >= (6, 8) {
            assert_ne!(mount, 0);
            assert_eq!(statx_path(dir.path()).unwrap().1, mount);
        }
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
    fn fat_exfat_and_fuse_do_not_keep_ctime_and_network_filesystems_keep_another_clock() {
        // A device no mount has: not virtiofs.
        let nowhere = u64::MAX;
        for magic in [0x4d44, 0x2011_bab0, 0x6573_5546] {
            assert_eq!(ctime_kind(magic, nowhere), Ctime::Settable, "{magic:#x}");
        }
        // ext4, xfs, btrfs, tmpfs, overlayfs.
        for magic in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994, 0x794c_7630] {
            assert_eq!(ctime_kind(magic, nowhere), Ctime::LocalClock, "{magic:#x}");
        }
        // NFS, SMB2, CIFS, 9p, the kernel's AFS.
        for magic in [0x6969, 0xfe53_4d42, 0xff53_4d42, 0x0102_1997, 0x6b41_4653] {
            assert_eq!(ctime_kind(magic, nowhere), Ctime::RemoteClock, "{magic:#x}");
        }
        // procfs, sysfs, cgroup2: nothing about their files' stat data follows content.
        for magic in [0x9fa0, 0x6265_6572, 0x6367_7270] {
            assert_eq!(ctime_kind(magic, nowhere), Ctime::Pseudo, "{magic:#x}");
            assert!(!Ctime::Pseudo.kept_by_a_kernel());
        }
    }
}
