//! Closing a start's source files after its burst of loads, not one at a time during it.
//!
//! A `close` costs about what the `open` did (the kernel releases the file then): on the
//! first start of a copied tree, where every module's file is opened and read, closing each
//! one as it was read made the start about 10% slower. A start's files are instead closed
//! together when its batch is stored (the runtime dropped, or a flush), or at the first load
//! or resolve 100 ms after the oldest of them was read; past the process's budget
//! ([`limit`]) a file is closed at once. Only where an open file blocks nothing: Windows'
//! renames and deletes fail on an open file, so there the budget is none and a file is
//! closed at once.
//!
//! On Linux the directories whose files a resolver opens by name (a copy's stored answers,
//! found again) are kept here too, as handles the files are opened through: one path walk
//! per directory instead of one per file. They are closed with the files, and at the
//! resolver's next round, when its directories are checked again: a handle must not outlive
//! the check that the directory at its path is the one it was opened on.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How long a file may wait, measured at the start's next load or resolve.
const AT_MOST: Duration = Duration::from_millis(100);

/// The most descriptors that wait in the whole process (files and directory handles, every
/// start's): 256, or a quarter of the process's limit on open files if that is lower, so
/// that a host near its limit is not pushed over it; none where that limit cannot be read.
/// Past it, a file is closed at once.
fn limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let allowed = crate::sys::open_files_limit().unwrap_or(0);
        usize::try_from(allowed / 4).unwrap_or(usize::MAX).min(256)
    })
}

/// Descriptors waiting in every start of the process.
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one more descriptor waiting, if the process's budget has room.
fn reserve() -> bool {
    let room = |held: usize| (held < limit()).then_some(held + 1);
    HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, room)
        .is_ok()
}

/// Counts `count` descriptors closed.
fn release(count: usize) {
    HELD.fetch_sub(count, Ordering::Relaxed);
}

/// The files of one start waiting to be closed.
#[derive(Default)]
pub(crate) struct ClosingLater {
    waiting: Mutex<Waiting>,
    /// Whether any file waits, written under `waiting`'s lock: every load and resolve asks,
    /// and a warm start, which opens no file, skips the lock and the clock.
    occupied: AtomicBool,
}

#[derive(Default)]
struct Waiting {
    files: Vec<File>,
    /// Handles on directories, by the resolver's id for each.
    #[cfg(target_os = "linux")]
    directories: Vec<(u32, std::os::fd::OwnedFd)>,
    /// When the oldest descriptor began waiting (a file read, a directory handle opened; the
    /// coarse clock).
    since: Duration,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        #[cfg(target_os = "linux")]
        if !self.directories.is_empty() {
            return false;
        }
        self.files.is_empty()
    }

    /// Everything waiting, to drop (close) outside the lock.
    fn take(&mut self) -> Waiting {
        std::mem::take(self)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        release(self.directories.len());
        release(self.files.len());
    }
}

impl ClosingLater {
    /// Keeps `file` (read, no longer needed) to close later.
    pub(crate) fn close_later(&self, file: File) {
        if !reserve() {
            return drop(file);
        }
        let mut waiting = self.waiting.lock();
        if waiting.is_empty() {
            waiting.since = crate::sys::coarse_clock();
        }
        waiting.files.push(file);
        self.occupied.store(true, Ordering::Relaxed);
    }

    /// The entry `name` of directory `dir` (the resolver's directory `id`), opened for a
    /// probe as [`crate::sys::open_for_probe`] would open its path, through a handle on the
    /// directory kept with the files (made on first use). `None` where no handle can be had
    /// (then the caller opens the path).
    #[cfg(target_os = "linux")]
    pub(crate) fn open_in_directory(
        &self,
        id: u32,
        dir: &std::path::Path,
        name: &std::ffi::OsStr,
    ) -> Option<std::io::Result<File>> {
        use std::os::fd::AsFd;
        let mut waiting = self.waiting.lock();
        let at = match waiting.directories.iter().position(|(d, _)| *d == id) {
            Some(at) => at,
            None if reserve() => {
                let Ok(handle) = crate::sys::open_directory(dir) else {
                    release(1);
                    return None;
                };
                if waiting.is_empty() {
                    waiting.since = crate::sys::coarse_clock();
                }
                waiting.directories.push((id, handle));
                self.occupied.store(true, Ordering::Relaxed);
                waiting.directories.len() - 1
            }
            None => return None,
        };
        let handle = waiting.directories[at].1.as_fd();
        Some(crate::sys::open_for_probe_in(handle, name))
    }

    /// Closes the directory handles: the resolver's directories are checked again from a new
    /// round on, and a file must be opened through the directory its path names now.
    #[cfg(target_os = "linux")]
    pub(crate) fn close_directories(&self) {
        if !self.occupied.load(Ordering::Relaxed) {
            return;
        }
        let due = std::mem::take(&mut self.waiting.lock().directories);
        release(due.len());
        drop(due);
    }

    /// Closes the files and directory handles waiting, if the oldest has waited long enough.
    pub(crate) fn close_if_due(&self) {
        self.close_everything_if(|waiting| {
            crate::sys::coarse_clock().saturating_sub(waiting.since) >= AT_MOST
        });
    }

    /// Closes every file and directory handle waiting.
    pub(crate) fn close_all(&self) {
        self.close_everything_if(|_| true);
    }

    /// Closes everything waiting if `due` says so of it, outside the lock.
    fn close_everything_if(&self, due: impl FnOnce(&Waiting) -> bool) {
        if !self.occupied.load(Ordering::Relaxed) {
            return;
        }
        let closing = {
            let mut waiting = self.waiting.lock();
            if !due(&waiting) {
                return;
            }
            self.occupied.store(false, Ordering::Relaxed);
            waiting.take()
        };
        drop(closing);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use std::path::Path;

    /// The process's budget of waiting descriptors, which one of these tests fills: they
    /// take it in turn (the test harness runs tests on several threads).
    static BUDGET: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    /// A private directory (by its canonical path) holding `m.js`, and the budget to itself.
    fn directory_with_a_module() -> (
        parking_lot::MutexGuard<'static, ()>,
        tempfile::TempDir,
        std::path::PathBuf,
    ) {
        let budget = BUDGET.lock();
        let tmp = crate::private_tempdir();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::write(dir.join("m.js"), "1").unwrap();
        (budget, tmp, dir)
    }

    /// How many of this process's descriptors are open on `path`.
    fn open_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    /// Files wait until they are due or everything is closed, never past the process's
    /// budget, and are really closed then.
    #[test]
    fn files_wait_until_due_and_never_past_the_limit() {
        let (_budget, _tmp, dir) = directory_with_a_module();
        let path = dir.join("m.js");
        let closing = ClosingLater::default();
        for _ in 0..3 {
            closing.close_later(File::open(&path).unwrap());
        }
        // Waiting since the clock's end: not due, however long this thread is descheduled.
        closing.waiting.lock().since = Duration::MAX;
        closing.close_if_due();
        assert_eq!(open_on(&path), 3, "not due yet");
        closing.waiting.lock().since = Duration::ZERO;
        closing.close_if_due();
        assert_eq!(open_on(&path), 0, "due");
        // Past the process's budget a file is closed at once (other tests may hold some).
        for _ in 0..limit() + 5 {
            closing.close_later(File::open(&path).unwrap());
            assert!(open_on(&path) <= limit());
        }
        closing.close_all();
        assert_eq!(open_on(&path), 0);
    }

    /// A file opened through a directory's handle is opened as `open_for_probe` opens its
    /// path: a final symlink refused, a FIFO without blocking. The handle is made once per
    /// directory and closed with the files.
    #[test]
    fn files_open_through_their_directorys_handle_as_by_their_path() {
        use std::ffi::OsStr;
        let (_budget, _tmp, dir) = directory_with_a_module();
        std::os::unix::fs::symlink("m.js", dir.join("link.js")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo.js"))
            .status()
            .unwrap();
        assert!(made.success());
        let closing = ClosingLater::default();
        let open = |name: &str| {
            closing
                .open_in_directory(7, &dir, OsStr::new(name))
                .unwrap()
        };
        let file = open("m.js").unwrap();
        assert_eq!(std::io::read_to_string(file).unwrap(), "1");
        let refused = open("link.js").unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ELOOP), "{refused}");
        assert!(
            open("fifo.js")
                .unwrap()
                .metadata()
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(open("absent.js").is_err());
        assert_eq!(open_on(&dir), 1, "one handle for the directory");
        closing.close_all();
        assert_eq!(open_on(&dir), 0);
    }

    /// At a resolver's new round the directory handles close and the files wait on; a file
    /// opened after that goes through a new handle.
    #[test]
    fn a_new_round_closes_the_directory_handles_only() {
        let (_budget, _tmp, dir) = directory_with_a_module();
        let closing = ClosingLater::default();
        let open = || {
            let name = std::ffi::OsStr::new("m.js");
            closing.open_in_directory(7, &dir, name).unwrap().unwrap()
        };
        closing.close_later(open());
        assert_eq!((open_on(&dir), open_on(&dir.join("m.js"))), (1, 1));
        closing.close_directories();
        assert_eq!((open_on(&dir), open_on(&dir.join("m.js"))), (0, 1));
        closing.close_later(open());
        assert_eq!((open_on(&dir), open_on(&dir.join("m.js"))), (1, 2));
        closing.close_all();
        assert_eq!((open_on(&dir), open_on(&dir.join("m.js"))), (0, 0));
    }
}
