//! [`RowVerdicts`]: a verdict per row of a mapped file, reached once and kept. Mapped bytes
//! never change (see `unsafe_io`), so a row checked once in a mapping stays checked; readers
//! on every thread share the verdicts without a lock.

use std::sync::atomic::{AtomicU8, Ordering};

const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const BAD: u8 = 2;

/// Per row: unchecked, good or bad.
pub(crate) struct RowVerdicts(Box<[AtomicU8]>);

impl RowVerdicts {
    /// `rows` rows, none checked yet.
    pub(crate) fn new(rows: usize) -> RowVerdicts {
        RowVerdicts((0..rows).map(|_| AtomicU8::new(UNCHECKED)).collect())
    }

    /// The verdict on row `i`: `Some(None)` while unchecked, `None` if there is no such row.
    pub(crate) fn get(&self, i: usize) -> Option<Option<bool>> {
        Some(match self.0.get(i)?.load(Ordering::Acquire) {
            GOOD => Some(true),
            BAD => Some(false),
            _ => None,
        })
    }

    /// Keeps the verdict reached on row `i` (a row out of range is ignored).
    pub(crate) fn set(&self, i: usize, good: bool) {
        if let Some(verdict) = self.0.get(i) {
            verdict.store(if good { GOOD } else { BAD }, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_verdict_is_kept_once_reached() {
        let verdicts = super::RowVerdicts::new(2);
        assert_eq!(verdicts.get(0), Some(None));
        verdicts.set(0, true);
        verdicts.set(1, false);
        verdicts.set(7, true);
        assert_eq!(
            (verdicts.get(0), verdicts.get(1), verdicts.get(2)),
            (Some(Some(true)), Some(Some(false)), None)
        );
    }
}
