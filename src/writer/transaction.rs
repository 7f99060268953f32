//! [`Transaction`]: one write, from taking the lock to sweeping after it. The code that takes
//! the lock is the code that publishes or rolls back, sweeps and releases it; callers only
//! change the [`WriteState`] in between.

use std::path::Path;
use std::time::Instant;

use super::{WriteState, WriterLock, index_temp, lock, mark_cache_dir, sweep};
use crate::error::Result;
use crate::fsys;
use crate::options::Durability;

/// A write in progress: the writer lock is held and the published state loaded. Dropped
/// without [`Transaction::commit`], it rolls back whatever was appended.
pub(crate) struct Transaction {
    state: WriteState,
    /// The temp file the new index is written through, made before anything is appended: a
    /// directory that refuses new files fails the write before the pack grows.
    temp: Option<tempfile::NamedTempFile>,
    generation_before: u64,
    _lock: WriterLock,
}

/// How a transaction is committed.
pub(crate) struct Commit {
    pub(crate) durability: Durability,
    /// Sweep leftovers even if the generation and base did not change (a handle's first
    /// write: a crashed writer's temp files are found once per handle).
    pub(crate) sweep_anyway: bool,
}

/// What a committed transaction published.
pub(crate) struct Committed {
    /// Whether it started a new pack generation (a compaction, a clear, a rebuild).
    pub(crate) new_generation: bool,
}

impl Transaction {
    /// Begins a write to the cache directory `dir` of `abi_tag`: re-checks the directory as
    /// opening checked it (it may have been deleted, or replaced by a symlink into a directory
    /// of the user's, since), takes the writer lock by `deadline` (`None`: however long it
    /// takes; `started` is when the caller began waiting), checks the directory again with the
    /// lock held, loads the published state, and leaves the directory's marker if `mark`.
    pub(crate) fn begin(
        dir: &Path,
        abi_tag: &'static str,
        started: Instant,
        deadline: Option<Instant>,
        mark: bool,
    ) -> Result<Transaction> {
        if let Some(root) = dir.parent() {
            fsys::ensure_private_dir(root, true)?;
        }
        fsys::ensure_private_dir(dir, false)?;
        let lock = lock(dir, started, deadline)?;
        // Another process may have swapped it meanwhile.
        fsys::require_private_dir(dir, false)?;
        crate::faults::crash_point("write:locked");
        let state = WriteState::load(dir, abi_tag)?;
        if mark {
            mark_cache_dir(dir, abi_tag);
        }
        let temp = Some(index_temp(dir)?);
        Ok(Transaction {
            generation_before: state.fields.generation,
            state,
            temp,
            _lock: lock,
        })
    }

    /// The state to change: what is published, and what this write adds.
    pub(crate) fn state(&mut self) -> &mut WriteState {
        &mut self.state
    }

    /// Publishes the changed state, then sweeps the leftovers a new generation or base leaves,
    /// and releases the lock. On an error before the rename, what was appended is rolled back.
    pub(crate) fn commit(mut self, how: Commit) -> Result<Committed> {
        let temp = self.temp.take().expect("a transaction commits once");
        let publication = match self.state.publish(temp, how.durability) {
            Ok(publication) => publication,
            Err(e) => {
                self.state.roll_back();
                return Err(e);
            }
        };
        crate::faults::crash_point("publish:renamed");
        let state = &self.state;
        let new_generation = state.fields.generation != self.generation_before;
        if how.sweep_anyway || new_generation || publication.base_changed {
            sweep(
                &state.dir,
                state.abi_tag,
                state.fields.generation,
                publication.base_id,
            );
        }
        Ok(Committed { new_generation })
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // Not committed (the change failed, or a panic unwound through it): nothing was
        // renamed, so everything appended is undone. A committed write rolls nothing back.
        if self.temp.is_some() {
            self.state.roll_back();
        }
    }
}
