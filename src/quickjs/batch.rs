//! What one start stores: the modules its [`super::PackLoader`] compiled and what its
//! [`super::PackResolver`] learned, published together, once, whatever order the two are
//! dropped in.
//!
//! A resolver and a loader made one after the other on one thread over one cache directory
//! (as `runtime.set_loader(PackResolver::new(..), PackLoader::new(..))` makes them) share one
//! [`StartBatch`]. Each holds it; the batch publishes when the last of them lets go. rquickjs
//! drops the resolver before the loader, a host holding a clone may drop them the other way:
//! either way the start takes the writer lock once and renames the index once.
//!
//! A store at drop does not wait for another process's write: it gives up after
//! [`EXIT_LOCK_WAIT`], and what it could not store is compiled again by the next start.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::closing::ClosingLater;
use super::handoff::Handoff;
use super::loader::Root;
use super::maps::PendingMap;
use super::resolver::STORE_NAME;
use crate::cache::Cache;
use crate::entry::NewEntry;
use crate::error::Result;
use crate::freshness::Input;
use crate::key::Key;

/// How long a store at drop waits for the writer lock before it gives up: long enough for
/// another start's publication (a few milliseconds), far shorter than a compaction.
pub(crate) const EXIT_LOCK_WAIT: Duration = Duration::from_millis(100);

/// Store the pending modules once this many have gathered (or [`FLUSH_BYTES`], or the
/// cache's largest batch), so a long run's memory stays bounded.
const FLUSH_ENTRIES: usize = 4096;
const FLUSH_BYTES: u64 = 64 << 20;

/// What a resolver learned, as an entry: its key, its payload, and the working directory it
/// was learned in.
pub(crate) struct Learned {
    pub(crate) key: Key,
    pub(crate) payload: Vec<u8>,
    pub(crate) root: PathBuf,
    /// Where to point at it from, for copies of the tree and other users to find (see
    /// `PackResolver`).
    pub(crate) pointers: Vec<Key>,
}

/// Something that learns answers during a start and hands them to its batch as one entry.
pub(crate) trait Answers: Send + Sync {
    /// The entry to store (key and payload), if anything changed since it was last taken;
    /// taking it means it is stored, or lost if that store fails (it is only a cache's own
    /// bookkeeping). `None` too if the answers are busy: they are taken at the next
    /// publication.
    fn take_if_changed(&self) -> Option<Learned>;
}

/// A loaded module waiting to be stored: its bytecode, where its source lies, and (for a
/// module under a root) the pointer from its content to that place.
pub(crate) struct PendingModule {
    key: Key,
    name: String,
    bytecode: PendingBytecode,
    input: Input,
    /// Its source map, made ready when stored (or when a stack needed it first), and the
    /// record of the map file it came from (its entry's sidecar).
    map: Option<Arc<PendingMap>>,
    /// For a module under a root: the key of its content's pointer (`None`: a pointer to
    /// another tree's entry stands, and is left pointing there), and the root its input is
    /// recorded under.
    place: Option<(Option<Key>, Arc<Root>)>,
}

/// A pending module's bytecode: compiled in this start, or another tree's entry's (a copy's
/// module, stored again under its own place without copying it out of the pack first).
pub(crate) enum PendingBytecode {
    Compiled(Vec<u8>),
    Stored(crate::Hit),
}

impl PendingBytecode {
    fn as_slice(&self) -> &[u8] {
        match self {
            PendingBytecode::Compiled(bytes) => bytes,
            PendingBytecode::Stored(hit) => hit.bytecode(),
        }
    }
}

impl PendingModule {
    /// Module `name`'s `bytecode` (this engine's, compiled or stored), stored under `key`
    /// with its `input`; under a root with `place`.
    pub(crate) fn new(
        key: Key,
        place: Option<(Option<Key>, Arc<Root>)>,
        name: &str,
        bytecode: PendingBytecode,
        input: Input,
        map: Option<Arc<PendingMap>>,
    ) -> Self {
        PendingModule {
            key,
            name: name.to_owned(),
            bytecode,
            input,
            map,
            place,
        }
    }

    /// Its entries: the bytecode where the source lies (with its map, made now if it was
    /// not: a map that cannot be used goes without the record of its file), and the pointer
    /// to it from its content.
    fn entries(&self) -> Vec<(Key, NewEntry<'_>)> {
        let (mut entry, to_here) = self.entries_without_input();
        if let Some((json, file_record)) = self.map.as_ref().and_then(|map| map.made()) {
            entry = entry.source_map(json);
            if let Some(record) = file_record {
                entry = entry.aux(record);
            }
        }
        let entry = (self.key, entry.inputs(vec![self.input.clone()]));
        std::iter::once(entry).chain(to_here).collect()
    }

    /// [`PendingModule::entries`] without the input the first is recorded with (which takes
    /// no pack bytes) and without its map: the entry where the source lies, and the pointer
    /// if there is one.
    fn entries_without_input(&self) -> (NewEntry<'_>, Option<(Key, NewEntry<'_>)>) {
        let entry = NewEntry::new(&self.name, self.bytecode.as_slice()).engine_bytecode();
        let Some((pointer, root)) = &self.place else {
            return (entry, None);
        };
        let to_here = pointer.map(|pointer| {
            let to_here = NewEntry::new(&self.name, self.key.as_bytes()).pointer();
            (pointer, to_here)
        });
        (entry.relative_to(&root.path), to_here)
    }

    /// Bytes its entries will take in the pack, its map not counted: making it is left for
    /// the store, which fits what it stores to the cache's limits with the maps. (So a batch
    /// counted under the budget may not fit with its maps: only in a cache whose `max_bytes`
    /// is under what one start stores, where the store then leaves out what does not fit, as
    /// it would have left out modules here.)
    fn budgeted_len(&self) -> u64 {
        let (entry, to_here) = self.entries_without_input();
        entry.stored_len() + to_here.map_or(0, |(_, to_here)| to_here.stored_len())
    }
}

/// One start's entries, published once when the last owner is dropped (or on a flush).
pub(crate) struct StartBatch {
    cache: Cache,
    state: Mutex<BatchState>,
    /// A file the resolver opened for the loader to read next.
    pub(crate) handoff: Handoff,
    /// The source files the start read, closed after its loads.
    pub(crate) closing: ClosingLater,
}

#[derive(Default)]
struct BatchState {
    modules: Vec<PendingModule>,
    module_bytes: u64,
    /// Modules compiled since the last publication that the cache could not take with the
    /// others: not kept (see [`StartBatch::add`]).
    left_out: LeftOut,
    /// The paired resolver while it lives: asked for its answers at each publication.
    resolver: Option<Weak<dyn Answers>>,
    /// Answers the resolver handed over when it was dropped.
    handed_over: Option<Learned>,
}

/// Which side of a start an owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Resolver,
    Loader,
}

thread_local! {
    /// The batch of the last resolver or loader made on this thread that has no partner yet:
    /// the next one of the other side over the same handle joins it. One slot per thread, so
    /// a host that makes a runtime per request keeps nothing per runtime.
    static UNPAIRED: RefCell<Option<(Side, Weak<StartBatch>)>> = const { RefCell::new(None) };
}

impl StartBatch {
    /// The batch for a new `side` over `cache`: the unpaired one of the other side made last
    /// on this thread over the same cache directory, else a new one (left for a partner to
    /// join).
    pub(crate) fn join(cache: &Cache, side: Side) -> Arc<StartBatch> {
        UNPAIRED.with_borrow_mut(|slot| {
            let waiting = slot
                .take()
                .filter(|(other, _)| *other != side)
                .and_then(|(_, batch)| batch.upgrade())
                .filter(|batch| batch.cache.dir() == cache.dir());
            let batch = waiting.unwrap_or_else(|| {
                let batch = Arc::new(StartBatch {
                    cache: cache.clone(),
                    state: Mutex::new(BatchState::default()),
                    handoff: Handoff::default(),
                    closing: ClosingLater::default(),
                });
                *slot = Some((side, Arc::downgrade(&batch)));
                batch
            });
            if side == Side::Loader {
                batch.handoff.loader_joined();
            }
            batch
        })
    }

    /// Registers the resolver whose answers this batch publishes.
    pub(crate) fn attach_resolver(&self, resolver: Weak<dyn Answers>) {
        self.state.lock().resolver = Some(resolver);
    }

    /// Takes the answers of a resolver being dropped, for the batch's publication.
    pub(crate) fn hand_over(&self, answers: Learned) {
        self.state.lock().handed_over = Some(answers);
    }

    /// Adds a compiled module; says whether the batch should be stored now. A module that
    /// would take the batch past the cache's size limit is not kept: one publication could
    /// not store it with the others, and the limit means the cache cannot hold them all.
    pub(crate) fn add(&self, module: PendingModule) -> bool {
        let budget = self.cache.max_batch_bytes();
        let len = module.budgeted_len();
        let mut state = self.state.lock();
        if state.module_bytes.saturating_add(len) > budget || !self.can_store() {
            state.left_out.count += 1;
            state.left_out.bytes += len;
            return false;
        }
        state.module_bytes += len;
        state.modules.push(module);
        state.modules.len() >= FLUSH_ENTRIES || state.module_bytes >= FLUSH_BYTES
    }

    /// Whether this batch's cache takes writes (not a disabled or read-only handle).
    fn can_store(&self) -> bool {
        !self.cache.inner.options.disabled && !self.cache.is_read_only()
    }

    /// Stores everything pending in one publication, waiting at most `wait` for the lock
    /// (`None`: the cache's `lock_timeout`); with nothing to store, re-records racy inputs if
    /// the lock is free.
    pub(crate) fn publish(&self, wait: Option<Duration>) -> Result<()> {
        self.closing.close_all();
        let (modules, mut left_out, handed_over, resolver) = {
            let mut state = self.state.lock();
            state.module_bytes = 0;
            let modules = std::mem::take(&mut state.modules);
            let left_out = std::mem::take(&mut state.left_out);
            (
                modules,
                left_out,
                state.handed_over.take(),
                state.resolver.clone(),
            )
        };
        if !self.can_store() {
            // One warning per start at most, and none for a cache the host disabled.
            if left_out.count > 0 && self.cache.is_read_only() {
                log::warn!(
                    "bytecode-pack: {} compiled modules not stored: {} is read-only to this \
                     process; they are compiled again by the next start",
                    left_out.count,
                    self.cache.dir().display()
                );
            }
            return Ok(());
        }
        // Encoded only for a cache that takes them.
        let answers = resolver
            .and_then(|r| r.upgrade())
            .and_then(|r| r.take_if_changed())
            .or(handed_over);
        if modules.is_empty() && answers.is_none() {
            return self.cache.refresh_racy().map(drop);
        }
        // The answers come first: they save every module's probes. A module's entries are
        // stored together or not at all.
        let mut budget = self.cache.max_batch_bytes();
        let mut kept: Vec<Vec<(Key, NewEntry<'_>)>> = Vec::with_capacity(modules.len() + 1);
        if let Some(learned) = &answers {
            // Recorded under the root it was learned in: a compaction drops it once that
            // directory is gone.
            let entry = NewEntry::new(STORE_NAME, &learned.payload).relative_to(&learned.root);
            let mut group = vec![(learned.key, entry)];
            for &pointer in &learned.pointers {
                let to_it = NewEntry::new(STORE_NAME, learned.key.as_bytes()).pointer();
                group.push((pointer, to_it));
            }
            let len: u64 = group.iter().map(|(_, entry)| entry.stored_len()).sum();
            match budget.checked_sub(len) {
                Some(left) => {
                    budget = left;
                    kept.push(group);
                }
                None => log::warn!(
                    "bytecode-pack: the start's resolutions ({len} bytes) not stored: over \
                     the cache's max_bytes of {}; the next start probes again",
                    self.cache.max_batch_bytes() + crate::format::PACK_HEADER_LEN,
                ),
            }
        }
        let (fits, over) = fit_within(modules.iter().map(PendingModule::entries).collect(), budget);
        kept.extend(fits);
        let compiled = modules.len() + left_out.count;
        left_out.count += over.count;
        left_out.bytes += over.bytes;
        if left_out.count > 0 {
            log::warn!(
                "bytecode-pack: {} of {compiled} compiled modules ({} bytes) not stored: over \
                 the cache's max_bytes of {}; they are compiled again by the next start",
                left_out.count,
                left_out.bytes,
                self.cache.max_batch_bytes() + crate::format::PACK_HEADER_LEN,
            );
        }
        let fits = kept.iter().flatten().map(|(key, entry)| (*key, entry));
        match wait {
            Some(wait) => self.cache.put_many_within(fits, wait),
            None => self.cache.put_many(fits),
        }
    }
}

impl Drop for StartBatch {
    fn drop(&mut self) {
        if let Err(e) = self.publish(Some(EXIT_LOCK_WAIT)) {
            log::warn!("bytecode-pack: compiled modules and resolutions not stored: {e}");
        }
    }
}

/// What [`fit_within`] left out.
#[derive(Debug, Default, PartialEq, Eq)]
struct LeftOut {
    count: usize,
    bytes: u64,
}

/// The entries, in order, that fit in `budget` bytes of pack, skipping any that would not:
/// a start that compiled more than the cache may hold stores what fits instead of nothing.
fn fit_within(
    groups: Vec<Vec<(Key, NewEntry<'_>)>>,
    budget: u64,
) -> (Vec<Vec<(Key, NewEntry<'_>)>>, LeftOut) {
    let mut used = 0u64;
    let mut left_out = LeftOut::default();
    let fits = groups
        .into_iter()
        .filter(|group| {
            let len: u64 = group.iter().map(|(_, entry)| entry.stored_len()).sum();
            if used.saturating_add(len) <= budget {
                used += len;
                true
            } else {
                left_out.count += 1;
                left_out.bytes += len;
                false
            }
        })
        .collect();
    (fits, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_over_the_budget_are_skipped_and_the_rest_kept_in_order() {
        let bytes: Vec<Vec<u8>> = [100usize, 500, 200, 400, 50]
            .iter()
            .map(|&n| vec![1; n])
            .collect();
        let entries = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| vec![(Key::for_source("m", &[i as u8]), NewEntry::new("m", b))])
            .collect::<Vec<_>>();
        let header = entries[0][0].1.stored_len() - 100;
        let (fits, left_out) = fit_within(entries, 100 + 200 + 50 + 3 * header + 40);
        let kept: Vec<usize> = fits.iter().map(|g| g[0].1.stored_len() as usize).collect();
        let h = header as usize;
        assert_eq!(kept, [100 + h, 200 + h, 50 + h]);
        assert_eq!(
            left_out,
            LeftOut {
                count: 2,
                bytes: 900 + 2 * header
            }
        );
    }

    #[test]
    fn a_resolver_and_a_loader_made_in_turn_share_one_batch() {
        let root = crate::private_tempdir();
        let cache = Cache::open(root.path()).unwrap();
        let resolver_side = StartBatch::join(&cache, Side::Resolver);
        let loader_side = StartBatch::join(&cache, Side::Loader);
        assert!(Arc::ptr_eq(&resolver_side, &loader_side));
        // The next pair gets its own.
        let next = StartBatch::join(&cache, Side::Loader);
        assert!(!Arc::ptr_eq(&next, &loader_side));
        // Two of one side do not pair, and another cache never joins.
        let again = StartBatch::join(&cache, Side::Loader);
        assert!(!Arc::ptr_eq(&next, &again));
        let elsewhere = crate::private_tempdir();
        let other = Cache::open(elsewhere.path()).unwrap();
        let resolver_elsewhere = StartBatch::join(&other, Side::Resolver);
        assert!(!Arc::ptr_eq(&resolver_elsewhere, &again));
    }
}
