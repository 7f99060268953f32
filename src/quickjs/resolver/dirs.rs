//! What a run knows of directories and answers: every directory stamped ([`Dirs`], with the
//! rounds of checks within a run), the answers computed during it ([`NewAnswers`]), and the
//! payload that stores both ([`payload`]).

use rustc_hash::FxHashMap;

use super::listing::Listing;
use super::paths::full_path;
use super::stored::{AnswerToStore, DirStamp, StoredAnswers, encode};
use crate::format::StatRecord;
use crate::freshness;

/// A resolution computed during this run, with the directories whose entries it was computed
/// from: it stands while each of them is unchanged.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) value: String,
    /// Each directory probed (see [`Dirs`]).
    pub(crate) dirs: Vec<u32>,
}

/// Answers computed during this run: by scope (the base's directory, or a marker for names
/// that do not depend on it), then by name. They shadow stored ones.
pub(crate) type NewAnswers = FxHashMap<String, FxHashMap<String, Answer>>;

/// Forgets every answer computed from directory `id`: it changed since.
pub(super) fn forget_answers_from(answers: &mut NewAnswers, id: u32) {
    for names in answers.values_mut() {
        names.retain(|_, answer| !answer.dirs.contains(&id));
    }
    answers.retain(|_, names| !names.is_empty());
}

/// How a stored directory stamped again (its stat data changed) compares with its stored
/// [`Listing`]. The comparison reads the whole directory, so it waits for an answer that needs
/// it ([`Dirs::relist`]), or for the store, off the start's critical path: an answer one probe
/// decides is probed instead (a copied tree's first start would otherwise list every directory
/// it imports from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Relisted {
    /// Not stamped again, or stamped again with other entries, or with none that can be
    /// compared (gone, or not searchable by this process).
    #[default]
    No,
    /// Stamped again, its listing not compared yet.
    Due,
    /// Stamped again with the entries it had (a copy of the directory, or one whose entries
    /// were put back as they were): its stored answers stand.
    Same,
}

/// Every directory stamped: first those of the stored table (ids `0..stored`, read from it
/// as needed), then those first stamped during this run.
pub(crate) struct Dirs {
    pub(crate) stored: u32,
    /// Per stored directory: the stamp this run gave it, once it found its stat data changed.
    /// Stored answers computed from a directory stamped again are dead, unless its listing is
    /// the stored one (`relisted`) or the answer's file was found again after the new stamp
    /// (`found_again`).
    pub(crate) restamped: Vec<Option<DirStamp>>,
    /// Per stored directory: how its entries compare with the stored ones once it was stamped
    /// again.
    relisted: Vec<Relisted>,
    /// Stored answers one probe decides (see [`super::paths::one_probe_decides`]) whose
    /// directory was stamped again, found again by that probe after the new stamp: each stands
    /// while its directory keeps that stamp (by stat data and instant).
    found_again: Vec<Option<(Option<StatRecord>, i64)>>,
    /// Directories first stamped during this run, and their stamps.
    pub(crate) added: Vec<(String, DirStamp)>,
    /// Per directory: the round it was last checked in (0: not yet).
    pub(crate) checked: Vec<u32>,
    /// The current round (from 1): a directory's check stands for the round it was made in
    /// (see [`RECHECK_AFTER`]).
    pub(crate) round: u32,
    /// Path to id, built on first need (a start whose every answer is stored never needs it).
    index: Option<FxHashMap<String, u32>>,
    /// The working directory: a directory under it is kept by its path relative to it (the
    /// directory itself as ""), so that a moved tree's stamps still name its directories.
    cwd: String,
    /// Whether the stored table is another user's: its answers stand only in directories this
    /// process may search (what its probes need), checked with each directory.
    pub(crate) must_search: bool,
}

impl Dirs {
    pub(crate) fn new(stored: u32, cwd: &str) -> Dirs {
        Dirs {
            cwd: cwd.to_owned(),
            stored,
            restamped: vec![None; stored as usize],
            relisted: vec![Relisted::No; stored as usize],
            found_again: Vec::new(),
            added: Vec::new(),
            checked: vec![0; stored as usize],
            round: 1,
            index: None,
            must_search: false,
        }
    }

    /// Whether directory `id` was checked in the current round.
    pub(crate) fn is_current(&self, id: u32) -> bool {
        self.checked.get(id as usize) == Some(&self.round)
    }

    /// Makes every directory's check stale: each is checked again on its next use.
    pub(crate) fn next_round(&mut self) {
        self.round = self.round.checked_add(1).unwrap_or_else(|| {
            self.checked.fill(0);
            1
        });
    }

    /// Makes directory `id` be checked again on its next use.
    pub(crate) fn uncheck(&mut self, id: u32) {
        if let Some(checked) = self.checked.get_mut(id as usize) {
            *checked = 0;
        }
    }

    /// Directory `id`'s path and current stamp.
    pub(crate) fn get<'a>(
        &'a self,
        table: Option<&'a StoredAnswers>,
        id: u32,
    ) -> Option<(&'a str, DirStamp)> {
        match id.checked_sub(self.stored) {
            None => {
                let (path, stamp) = table?.dir(id)?;
                Some((path, self.restamped[id as usize].unwrap_or(stamp)))
            }
            Some(added) => self
                .added
                .get(added as usize)
                .map(|(p, s)| (p.as_str(), *s)),
        }
    }

    /// Whether directory `id`'s current stamp can ever vouch for it: not when this run stamped
    /// it on a filesystem whose ctime is not the kernel's. (A stored stamp that still stands
    /// can: one on such a filesystem never stands, so its directory is stamped again first.)
    pub(crate) fn can_vouch(&self, id: u32) -> bool {
        match id.checked_sub(self.stored) {
            None => self
                .restamped
                .get(id as usize)
                .is_none_or(|stamp| stamp.is_none_or(|stamp| stamp.can_vouch())),
            Some(added) => self
                .added
                .get(added as usize)
                .is_none_or(|(_, stamp)| stamp.can_vouch()),
        }
    }

    /// Every directory in id order, with its current stamp; `None` if one cannot be read
    /// (then no id could be trusted to name the same directory once written back).
    pub(crate) fn all<'a>(
        &'a self,
        table: Option<&'a StoredAnswers>,
    ) -> Option<Vec<(&'a str, DirStamp)>> {
        let total = self.stored + self.added.len() as u32;
        (0..total).map(|id| self.get(table, id)).collect()
    }

    /// Checks directory `id` against its stamp (once per round, unless asked again), stamping
    /// it anew if it changed (and then forgetting the answers computed from it). Says whether
    /// the run has a stamp worth storing: it stamped, and the new stamp can vouch (one that
    /// never can would only cost a write per start).
    pub(crate) fn check(
        &mut self,
        table: Option<&StoredAnswers>,
        answers: &mut NewAnswers,
        id: u32,
    ) -> bool {
        match self.checked.get(id as usize) {
            Some(&round) if round != self.round => {}
            _ => return false,
        }
        let Some((path, stamp)) = self.get(table, id) else {
            return false;
        };
        // The recording instant comes before the `stat` it vouches for, as for inputs.
        let read_from = freshness::now_nanos();
        let full = full_path(&self.cwd, path);
        let now = crate::sys::stat_path(&full).ok();
        self.checked[id as usize] = self.round;
        // A directory another user's probes saw that this process may not search gives it
        // other answers: stamped again, its stored answers dropped. (Once stamped again, the
        // stamp is this process's own, from its own probes.)
        let searchable = !self.must_search
            || id >= self.stored
            || self.restamped[id as usize].is_some()
            || stamp.stat.is_none()
            || crate::sys::may_search(&full);
        if searchable && stamp.still_valid(now.as_ref()) {
            return false;
        }
        // Its stat data changed, its entries perhaps not (a copy of the tree, a `touch`): its
        // listing is compared with the stored one when an answer needs it.
        let stamp = DirStamp {
            stat: now,
            recorded_at_ns: read_from,
            listing: None,
        };
        let worth_storing = stamp.can_vouch();
        match id.checked_sub(self.stored) {
            None => {
                let id = id as usize;
                self.restamped[id] = Some(stamp);
                self.relisted[id] = if searchable && stamp.stat.is_some() {
                    Relisted::Due
                } else {
                    Relisted::No
                };
            }
            Some(added) => self.added[added as usize].1 = stamp,
        }
        forget_answers_from(answers, id);
        worth_storing
    }

    /// Whether stored directory `id`, stamped again in this round, has the entries it had
    /// when stored: its listing now, certified for its new stamp, equals the stored one (a
    /// copy of the directory, or one whose entries were put back as they were). Then its
    /// stored answers stand. Compared once per stamp.
    pub(crate) fn relist(&mut self, table: &StoredAnswers, id: u32) -> bool {
        let i = id as usize;
        if !self.is_current(id) {
            return false;
        }
        match self.relisted.get(i) {
            Some(Relisted::Due) => {}
            relisted => return relisted == Some(&Relisted::Same),
        }
        // Compared once: what it finds stands for this stamp.
        self.relisted[i] = Relisted::No;
        let (Some((path, stored)), Some(stamp)) = (table.dir(id), self.restamped[i]) else {
            return false;
        };
        let (Some(stored_listing), Some(stat)) = (stored.listing, &stamp.stat) else {
            return false;
        };
        let full = full_path(&self.cwd, path);
        let listing = Listing::certified(&full, stat, stamp.recorded_at_ns);
        if listing != Some(stored_listing) {
            return false;
        }
        self.restamped[i] = Some(DirStamp { listing, ..stamp });
        self.relisted[i] = Relisted::Same;
        true
    }

    /// The id of the directory at `path` (as [`super::paths::relative_to`] keeps it), stamping
    /// it first if it has none; and whether that stamp is worth storing (see [`Dirs::check`]).
    pub(crate) fn id(&mut self, table: Option<&StoredAnswers>, path: &str) -> (u32, bool) {
        let index = self.index.get_or_insert_with(|| {
            (0..self.stored)
                .filter_map(|id| Some((table?.dir(id)?.0.to_owned(), id)))
                .collect()
        });
        if let Some(&id) = index.get(path) {
            return (id, false);
        }
        let read_from = freshness::now_nanos();
        let stamp = DirStamp {
            stat: crate::sys::stat_path(&full_path(&self.cwd, path)).ok(),
            recorded_at_ns: read_from,
            listing: None,
        };
        let id = self.stored.saturating_add(self.added.len() as u32);
        index.insert(path.to_owned(), id);
        let worth_storing = stamp.can_vouch();
        self.added.push((path.to_owned(), stamp));
        self.checked.push(self.round);
        (id, worth_storing)
    }

    /// Notes that stored answer `index`, computed from stored directory `id` alone, was found
    /// again by its probe, taken after `id`'s current stamp.
    pub(crate) fn found_again(&mut self, table: &StoredAnswers, index: u32, id: u32) {
        let Some((_, stamp)) = self.get(Some(table), id) else {
            return;
        };
        if self.found_again.is_empty() {
            self.found_again = vec![None; table.answer_count() as usize];
        }
        if let Some(slot) = self.found_again.get_mut(index as usize) {
            *slot = Some((stamp.stat, stamp.recorded_at_ns));
        }
    }

    /// Whether stored answer `index`, computed from directory `dir` alone, was found again
    /// under that directory's current stamp.
    pub(crate) fn was_found_again(
        &self,
        table: Option<&StoredAnswers>,
        index: u32,
        dir: u32,
    ) -> bool {
        let Some(Some(found)) = self.found_again.get(index as usize) else {
            return false;
        };
        self.get(table, dir)
            .is_some_and(|(_, now)| *found == (now.stat, now.recorded_at_ns))
    }

    /// Whether stored answers computed from `id` still stand: it was checked unchanged (in
    /// this round), by its stat data or its listing.
    pub(crate) fn unchanged_since_stored(&self, id: u32) -> bool {
        self.is_current(id) && self.stored_answers_stand(id)
    }

    /// Whether stored answers computed from stored directory `id` stand: not stamped again,
    /// or stamped again with its stored listing.
    fn stored_answers_stand(&self, id: u32) -> bool {
        let id = id as usize;
        id < self.stored as usize
            && (self.restamped[id].is_none() || self.relisted[id] == Relisted::Same)
    }

    /// Every directory's current stamp, as [`Dirs::all`], with a certified listing added to
    /// each stamp that has none and can have one (what lets a copy of the tree keep its
    /// answers). Reads those directories: called when storing, off a start's critical path.
    fn all_listed<'a>(
        &'a self,
        table: Option<&'a StoredAnswers>,
    ) -> Option<Vec<(&'a str, DirStamp)>> {
        let mut all = self.all(table)?;
        for (path, stamp) in &mut all {
            if let (None, Some(stat)) = (stamp.listing, &stamp.stat) {
                let full = full_path(&self.cwd, path);
                stamp.listing = Listing::certified(&full, stat, stamp.recorded_at_ns);
            }
        }
        Some(all)
    }
}

/// The payload that stores a run's state: every directory with its current stamp, the answers
/// computed during the run, and the stored answers they do not replace that still stand:
/// their directories were not stamped again, or were with the entries they had (their
/// listings equal), or the answer's file was found again after the new stamp. Any other
/// answer computed from a directory that changed is never written back under its new stamp.
pub(crate) fn payload(table: Option<&StoredAnswers>, dirs: &Dirs, answers: &NewAnswers) -> Vec<u8> {
    let Some(all_dirs) = dirs.all_listed(table) else {
        // Cannot happen for a table that opened (every directory was read then); start over.
        return encode(std::iter::empty(), &[]);
    };
    // A directory stamped again whose listing no answer needed: its stored answers stand if
    // the listing taken for its new stamp is the stored one.
    let relisted_now: Vec<bool> = (0..dirs.stored)
        .map(|id| {
            let stored = table.and_then(|t| t.dir(id)).and_then(|(_, s)| s.listing);
            dirs.relisted[id as usize] == Relisted::Due
                && stored.is_some()
                && all_dirs.get(id as usize).map(|(_, s)| s.listing) == Some(stored)
        })
        .collect();
    let stands =
        |id: u32| dirs.stored_answers_stand(id) || relisted_now.get(id as usize) == Some(&true);
    let kept = table.into_iter().flat_map(|t| t.answers()).filter_map(|a| {
        let (scope, name, value) = a.text()?;
        let replaced = answers.get(scope).is_some_and(|n| n.contains_key(name));
        let found_again =
            super::only_dir(&a).is_some_and(|only| dirs.was_found_again(table, a.index(), only));
        let stands = found_again || a.dirs().all(stands);
        (stands && !replaced).then(|| AnswerToStore {
            dirs: a.dirs().collect(),
            scope,
            name,
            value,
        })
    });
    let mut to_store: Vec<AnswerToStore<'_>> = kept.collect();
    for (scope, names) in answers {
        to_store.extend(names.iter().map(|(name, answer)| AnswerToStore {
            scope,
            name,
            value: &answer.value,
            dirs: answer.dirs.clone(),
        }));
    }
    encode(all_dirs.into_iter(), &to_store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::quickjs::resolver::stored;

    /// What a run writes back: its own answers, the stored answers it did not replace whose
    /// directories were not stamped again, and every directory at its id with its current stamp.
    #[test]
    fn the_payload_keeps_live_answers_and_drops_dead_ones() {
        let stamp = |n| DirStamp {
            stat: None,
            recorded_at_ns: n,
            listing: None,
        };
        let answer = |name, value, dirs| AnswerToStore {
            scope: "s",
            name,
            value,
            dirs,
        };
        let table = StoredAnswers::open(stored::encode(
            [("/d0", stamp(1)), ("/d1", stamp(2))].into_iter(),
            &[
                answer("./a", "s/a.js", vec![0]),
                answer("./b", "s/b.js", vec![1]),
                answer("./c", "s/c.js", vec![0, 1]),
                answer("./e", "s/e.js", vec![0]),
            ],
        ))
        .unwrap();
        // This run: /d1 changed (stamped again), /d2 was stamped for the first time, ./e was
        // computed again (its stored answer is replaced) and ./f is new.
        let mut dirs = Dirs::new(table.dir_count(), "/nowhere");
        dirs.restamped[1] = Some(stamp(20));
        dirs.added.push(("/d2".into(), stamp(30)));
        dirs.checked.push(dirs.round);
        let mut answers = NewAnswers::default();
        let names = answers.entry("s".into()).or_default();
        for (name, dirs) in [("./e", vec![0, 2]), ("./f", vec![2])] {
            let value = format!("s/{}.mjs", &name[2..]);
            names.insert(name.into(), Answer { value, dirs });
        }
        let written = StoredAnswers::open(payload(Some(&table), &dirs, &answers)).unwrap();
        let dir_list: Vec<_> = (0..written.dir_count())
            .map(|id| written.dir(id).unwrap())
            .collect();
        assert_eq!(
            dir_list,
            [("/d0", stamp(1)), ("/d1", stamp(20)), ("/d2", stamp(30))]
        );
        let found = |name| {
            let answer = written.find("s", name)?;
            Some((answer.value()?, answer.dirs().collect::<Vec<_>>()))
        };
        assert_eq!(found("./a"), Some(("s/a.js", vec![0])));
        assert_eq!(found("./b"), None, "computed from /d1, which changed");
        assert_eq!(found("./c"), None, "computed from /d0 and /d1");
        assert_eq!(found("./e"), Some(("s/e.mjs", vec![0, 2])));
        assert_eq!(found("./f"), Some(("s/f.mjs", vec![2])));
        assert_eq!(written.answers().count(), 3);
    }

    /// A directory stamped again (in a copy of the tree: a new inode and ctime) keeps its
    /// stored answers if its entries are the same: read from its listing when an answer needs
    /// it, or, if none did, when the run's answers are stored. One that gained an entry keeps
    /// none.
    #[cfg(unix)]
    #[test]
    fn a_copied_directory_keeps_its_answers_by_its_listing_when_needed_or_at_the_store() {
        let root = crate::private_tempdir();
        let tree = |name: &str, extra: bool| {
            let lib = root.path().join(name).join("lib");
            std::fs::create_dir_all(&lib).unwrap();
            for file in ["a.js", "b.mjs"] {
                std::fs::write(lib.join(file), file).unwrap();
            }
            if extra {
                std::fs::write(lib.join("c.js"), "").unwrap();
            }
            root.path().join(name).to_str().unwrap().to_owned()
        };
        let (original, same, grown) = (
            tree("original", false),
            tree("same", false),
            tree("grown", true),
        );
        std::thread::sleep(crate::FINE_RACY_WINDOW + std::time::Duration::from_millis(20));
        let lib = Path::new(&original).join("lib");
        let stat = crate::sys::stat_path(&lib).unwrap();
        let recorded_at_ns = freshness::now_nanos();
        let listing = Listing::certified(&lib, &stat, recorded_at_ns);
        assert!(listing.is_some(), "an aged directory of files");
        let stamp = DirStamp {
            stat: Some(stat),
            recorded_at_ns,
            listing,
        };
        let answer = AnswerToStore {
            scope: "lib",
            name: "./a",
            value: "lib/a.js",
            dirs: vec![0],
        };
        let table = StoredAnswers::open(stored::encode([("lib", stamp)].into_iter(), &[answer]));
        let table = table.unwrap();
        // Whether a start in `cwd` relisted `lib` (if asked to), and whether it wrote back
        // the stored answer.
        let start = |cwd: &str, relist_now: bool| {
            let mut dirs = Dirs::new(table.dir_count(), cwd);
            let mut answers = NewAnswers::default();
            dirs.check(Some(&table), &mut answers, 0);
            assert!(!dirs.unchanged_since_stored(0), "{cwd}: stamped again");
            let relisted = relist_now && dirs.relist(&table, 0);
            assert_eq!(dirs.unchanged_since_stored(0), relisted);
            let written = StoredAnswers::open(payload(Some(&table), &dirs, &answers)).unwrap();
            (relisted, written.find("lib", "./a").is_some())
        };
        assert_eq!(start(&same, true), (true, true));
        assert_eq!(start(&same, false), (false, true));
        assert_eq!(start(&grown, true), (false, false));
        assert_eq!(start(&grown, false), (false, false));
    }

    #[test]
    fn a_changed_directory_forgets_the_answers_computed_from_it() {
        let mut answers = NewAnswers::default();
        for (scope, dirs) in [("a", vec![0]), ("b", vec![1]), ("c", vec![1, 0])] {
            let answer = Answer {
                value: format!("{scope}/x.js"),
                dirs,
            };
            answers
                .entry(scope.into())
                .or_default()
                .insert("./x".into(), answer);
        }
        forget_answers_from(&mut answers, 0);
        let mut left: Vec<_> = answers.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["b"]);
    }

    /// Stored answers stand only on stored directories checked unchanged in this run; one
    /// stamped again (changed) kills them, and an id outside the table never vouches.
    #[test]
    fn stored_answers_stand_only_on_directories_checked_unchanged() {
        let root = crate::private_tempdir();
        let (same, changed) = (root.path().join("same"), root.path().join("changed"));
        std::fs::create_dir(&same).unwrap();
        std::fs::create_dir(&changed).unwrap();
        // Stamped long after their last change: trusted.
        let old = |path: &Path| DirStamp {
            stat: crate::sys::stat_path(path).ok(),
            recorded_at_ns: i64::MAX / 2,
            listing: None,
        };
        let dirs = [
            (same.to_str().unwrap(), old(&same)),
            (changed.to_str().unwrap(), old(&changed)),
        ];
        let answer = |name, dirs| AnswerToStore {
            scope: "s",
            name,
            value: "v",
            dirs,
        };
        let table = StoredAnswers::open(stored::encode(
            dirs.into_iter(),
            &[answer("./a", vec![0]), answer("./b", vec![0, 1])],
        ))
        .unwrap();
        std::fs::write(changed.join("new.js"), "").unwrap();
        let mut state = Dirs::new(table.dir_count(), "/nowhere");
        let mut answers = NewAnswers::default();
        assert!(!state.unchanged_since_stored(0), "not checked yet");
        assert!(!state.check(Some(&table), &mut answers, 0));
        assert!(state.unchanged_since_stored(0));
        // A file was created in it since its stamp: stamped again.
        assert!(state.check(Some(&table), &mut answers, 1));
        assert!(!state.unchanged_since_stored(1));
        assert!(
            !state.check(Some(&table), &mut answers, 1),
            "once per round"
        );
        assert!(!state.unchanged_since_stored(7));
    }
}
