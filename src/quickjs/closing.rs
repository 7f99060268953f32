//! Closing a start's source files after its burst of loads, not one at a time during it.
//!
//! A `close` costs about what the `open` did (the kernel releases the file then): on the
//! first start of a copied tree, where every module's file is opened and read, closing each
//! one as it was read took 6% of the start. A start's files are instead closed together when
//! its batch is stored (the runtime dropped, or a flush), at the first load or resolve 100 ms
//! after the oldest of them was read, or when [`limit`] of them wait. Only where an open file
//! blocks nothing: Windows' renames and deletes fail on an open file, so there a file is
//! closed at once.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How long a file may wait, measured at the start's next load or resolve.
const AT_MOST: Duration = Duration::from_millis(100);

/// The most files that wait: 256, or a quarter of the process's limit on open files if that
/// is lower, so that a host near its limit is not pushed over it.
fn limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let allowed = crate::sys::open_files_limit().unwrap_or(0);
        usize::try_from(allowed / 4).unwrap_or(usize::MAX).min(256)
    })
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
    /// When the oldest file waiting was read (the coarse clock).
    since: Duration,
}

impl ClosingLater {
    /// Keeps `file` (read, no longer needed) to close later.
    pub(crate) fn close_later(&self, file: File) {
        if cfg!(not(unix)) || limit() == 0 {
            return drop(file);
        }
        let mut waiting = self.waiting.lock();
        if waiting.files.len() >= limit() {
            let due = std::mem::take(&mut waiting.files);
            drop(waiting);
            drop(due);
            waiting = self.waiting.lock();
        }
        if waiting.files.is_empty() {
            waiting.since = crate::sys::coarse_clock();
        }
        waiting.files.push(file);
        self.occupied.store(true, Ordering::Relaxed);
    }

    /// Closes the files waiting if the oldest has waited long enough.
    pub(crate) fn close_if_due(&self) {
        if !self.occupied.load(Ordering::Relaxed) {
            return;
        }
        let due = {
            let mut waiting = self.waiting.lock();
            if crate::sys::coarse_clock().saturating_sub(waiting.since) < AT_MOST {
                return;
            }
            self.occupied.store(false, Ordering::Relaxed);
            std::mem::take(&mut waiting.files)
        };
        drop(due);
    }

    /// Closes every file waiting.
    pub(crate) fn close_all(&self) {
        if !self.occupied.load(Ordering::Relaxed) {
            return;
        }
        let due = {
            let mut waiting = self.waiting.lock();
            self.occupied.store(false, Ordering::Relaxed);
            std::mem::take(&mut waiting.files)
        };
        drop(due);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::path::Path;

    /// How many of this process's descriptors are open on `path`.
    fn open_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    /// Files wait until they are due or everything is closed, never past the limit, and are
    /// really closed then.
    #[test]
    fn files_wait_until_due_and_never_past_the_limit() {
        let dir = crate::private_tempdir();
        let path = dir.path().canonicalize().unwrap().join("m.js");
        std::fs::write(&path, "1").unwrap();
        let closing = ClosingLater::default();
        for _ in 0..3 {
            closing.close_later(File::open(&path).unwrap());
        }
        closing.close_if_due();
        assert_eq!(open_on(&path), 3, "not due yet");
        closing.waiting.lock().since = Duration::ZERO;
        closing.close_if_due();
        assert_eq!(open_on(&path), 0, "due");
        for _ in 0..limit() + 5 {
            closing.close_later(File::open(&path).unwrap());
            assert!(open_on(&path) <= limit());
        }
        assert_eq!(open_on(&path), 5, "the limit closed the ones before");
        closing.close_all();
        assert_eq!(open_on(&path), 0);
    }
}
