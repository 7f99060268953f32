//! The writers' advisory lock: an exclusive `flock(2)` on the cache's `lock` file.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::files::LOCK_FILE;
use crate::fsys;

/// The exclusive writer lock, released on drop (closing the descriptor releases the flock).
pub(crate) struct WriterLock {
    _file: File,
}

/// Takes the writer lock on `dir`, waiting until `deadline` at the latest (`None`: for as long
/// as it takes). `started` is when the caller began waiting (for the error's report).
pub(crate) fn lock(dir: &Path, started: Instant, deadline: Option<Instant>) -> Result<WriterLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = fsys::open_write(&path, true).map_err(Error::io(&path))?;
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            // Pruning removes an idle cache's lock file while holding it: a writer that opened
            // it before then locks the file there now instead, or it would write beside one
            // that locked that file.
            Ok(()) => match fsys::replaced_at(&file, &path, true).map_err(Error::io(&path))? {
                None => return Ok(WriterLock { _file: file }),
                Some(there) => file = there,
            },
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
        }
        let now = Instant::now();
        let left = deadline.map(|deadline| deadline.saturating_duration_since(now));
        if left == Some(Duration::ZERO) {
            return Err(Error::LockTimeout {
                path,
                waited: now - started,
            });
        }
        std::thread::sleep(left.map_or(pause, |left| pause.min(left)));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
