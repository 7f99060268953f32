//! Where there is no `statx` (macOS, Windows and others): `stat` through `std`, the probe by
//! `symlink_metadata`, the clock by `Instant`, and every filesystem's ctimes taken as this
//! kernel's (Linux is the tested platform; FORMAT.md says what that trusts).

use std::io;
use std::path::Path;

use super::Ctime;
use super::imp::stat_record;
use crate::format::StatRecord;

pub(crate) fn stat_path(path: &Path) -> io::Result<StatRecord> {
    std::fs::metadata(path).map(|m| stat_record(&m))
}

/// The filesystem is not asked: ctimes are taken as this kernel's.
pub(crate) fn ctime_of(_dev: u64) -> Ctime {
    Ctime::LocalClock
}

#[cfg(feature = "quickjs")]
pub(crate) fn probe(path: &Path) -> super::Probe {
    super::Probe::portable(path)
}

/// A monotonic clock read per resolver call.
#[cfg(feature = "quickjs")]
pub(crate) fn coarse_clock() -> std::time::Duration {
    super::elapsed_since_first_use()
}
