//! Which filesystem keeps which ctimes, and by whose clock: learned once per device and mount
//! from `statfs`, and asked by every freshness check ([`ctime_of`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::statx_path;
use crate::sys::Ctime;

/// `statfs` types (`f_type`) whose ctime is not the kernel's own record of the last change:
/// FAT and exFAT store no ctime, and Linux reports their mtime, which `utimensat` sets to
/// anything, in its place; a FUSE filesystem reports whatever its daemon says.
const MSDOS_SUPER_MAGIC: u32 = 0x4d44; // vfat, msdos
const EXFAT_SUPER_MAGIC: u32 = 0x2011_bab0;
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546; // also virtiofs

/// `statfs` types whose ctimes another machine's kernel sets, by its own clock: network
/// filesystems (NFS, SMB/CIFS, 9p as WSL2's `/mnt/c`, Ceph, AFS, Lustre, Coda) and cluster or
/// parallel ones whose nodes each stamp with theirs (GFS2, OCFS2, GPFS, BeeGFS, OrangeFS).
/// virtiofs, a FUSE type, is told apart by its mount; other FUSE filesystems are not trusted
/// at all. Not complete: a remote filesystem missing here gets the fine window, and so does an
/// overlayfs over one (overlayfs reports its own type).
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
#[derive(Default)]
struct Verdicts {
    known: Vec<Verdict>,
    /// How many times learners have changed them: a learner that began before another's
    /// change discards its own, which may describe a mount that was replaced meanwhile.
    changes: u64,
}

struct Verdict {
    dev: u64,
    /// Unique mount ids (0: unknown).
    mounts: Vec<u64>,
    ctime: Ctime,
}

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

const MAX_MOUNTS_PER_DEVICE: usize = 16;

static VERDICTS: parking_lot::Mutex<Verdicts> = parking_lot::Mutex::new(Verdicts {
    known: Vec::new(),
    changes: 0,
});

/// Who sets the ctimes of device `dev`, as far as this process has learned (by the
/// `stat_path` that returned `dev`, which learns again through a new mount): a device not yet
/// seen is not trusted.
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
static LAST_LOCAL_DEV: AtomicU64 = AtomicU64::new(0);
static LAST_LOCAL_MOUNT: AtomicU64 = AtomicU64::new(0);

/// Learns who sets the ctimes of the filesystem `path` is on (device `dev`, through `mount`),
/// once per device and mount. The filesystem is asked without the lock held
/// (`statfs` on a dead network mount blocks; other threads must not wait for it).
pub(super) fn learn_filesystem(path: &Path, dev: u64, mount: u64) {
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
fn publish_fast_path(dev: u64, mount: u64, local: bool) {
    if local {
        LAST_LOCAL_MOUNT.store(mount, Ordering::Relaxed);
        LAST_LOCAL_DEV.store(dev.wrapping_add(1), Ordering::Relaxed);
    } else if LAST_LOCAL_DEV.load(Ordering::Relaxed) == dev.wrapping_add(1) {
        LAST_LOCAL_DEV.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::stat_path;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

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
