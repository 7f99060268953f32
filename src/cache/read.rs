//! The read path: lookups, lock-free, against the handle's snapshot; a miss checks for a newer
//! publication.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Cache, Inner};
use crate::abi::abi_tag;
use crate::entry::Hit;
use crate::error::Result;
use crate::format::ArchivedEntryRecord;
use crate::freshness;
use crate::key::Key;
use crate::snapshot::{self, Found, Snapshot};
use crate::stats::MissReason;
use crate::writer::Refresh;

/// At most this many refreshes wait for a write; more are dropped (they only cost re-hashes).
const MAX_PENDING_REFRESHES: usize = 1 << 16;

/// Whose lookup a lookup is (see [`Cache::lookup_as`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Own,
    Underneath,
}

/// How [`Cache::lookup_with`] looks an entry up.
#[derive(Debug, Clone, Copy, Default)]
pub struct LookupOptions<'a> {
    root: Option<&'a Path>,
    refresh_interval: Option<Duration>,
    skip_input_checks: bool,
    #[cfg(feature = "quickjs")]
    content_proof: Option<ProveByContent<'a>>,
}

/// What a caller that reads an entry's only input anyway found in it (see
/// [`LookupOptions::proven_by_content`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "quickjs"), allow(dead_code))]
pub(crate) enum ContentProof {
    /// The content the entry was compiled from: it is fresh, whatever its stat data says.
    Same,
    /// Other content: the entry is stale, whatever its stat data says.
    Changed,
    /// Not read: its stat data decides, as for any lookup.
    Unknown,
}

/// A caller's check of a hit's input by its content.
#[cfg(feature = "quickjs")]
#[derive(Clone, Copy)]
pub(crate) struct ProveByContent<'a>(&'a dyn Fn(&Hit) -> ContentProof);

#[cfg(feature = "quickjs")]
impl std::fmt::Debug for ProveByContent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProveByContent")
    }
}

impl<'a> LookupOptions<'a> {
    /// Checks inputs recorded relative to a root ([`crate::NewEntry::relative_to`]) under
    /// `root`: where the tree is now. Without it such inputs are not found, and the entry
    /// misses as stale. Roots are recorded absolute: a relative `root` is made absolute (a
    /// `getcwd`) on each hit of a handle that can write, to tell a move from another spelling
    /// of the same directory, so a caller looking up many entries names it absolute.
    pub fn root(mut self, root: &'a Path) -> Self {
        self.root = Some(root);
        self
    }

    /// For a caller that misses in runs (a first start misses on every module, and
    /// `quickjs::PackLoader` looks modules up this way): a miss checks for a newer publication
    /// (a `stat` of the index) only if no such miss through this handle did in the last
    /// `interval`, so other processes' writes are seen within `interval` rather than by the
    /// next miss. By default every miss checks.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = Some(interval);
        self
    }

    /// Checks no input: for an entry found by the content it was compiled from, whose
    /// inputs belong to another tree (see `quickjs::PackLoader`).
    #[cfg(feature = "quickjs")]
    pub(crate) fn without_input_checks(mut self) -> Self {
        self.skip_input_checks = true;
        self
    }

    /// For a caller that reads a hit's input anyway (`quickjs::PackLoader` compiling a module
    /// over its hit): `prove` is asked first, with the hit found, and its answer by content
    /// stands in for the `stat` of the input. Asked of every entry found, sealed or not.
    #[cfg(feature = "quickjs")]
    pub(crate) fn proven_by_content(mut self, prove: &'a dyn Fn(&Hit) -> ContentProof) -> Self {
        self.content_proof = Some(ProveByContent(prove));
        self
    }

    /// What the caller's check by content says of `hit`.
    fn content_proof(&self, _hit: &Hit) -> ContentProof {
        #[cfg(feature = "quickjs")]
        if let Some(ProveByContent(prove)) = self.content_proof {
            return prove(_hit);
        }
        ContentProof::Unknown
    }
}

impl Cache {
    /// Looks up `key`. Any miss, stale input, corruption or I/O error is `None`; the reason
    /// is counted in [`Cache::stats`] and logged at debug level. Never blocks on writers.
    pub fn get(&self, key: &Key) -> Option<Hit> {
        self.lookup(key).ok()
    }

    /// [`Cache::get`], saying why it missed.
    pub fn lookup(&self, key: &Key) -> Result<Hit, MissReason> {
        self.lookup_with(key, LookupOptions::default())
    }

    /// [`Cache::lookup`], as `options` say: under which root inputs recorded relative to one
    /// are checked, and how often a miss checks for other processes' writes.
    pub fn lookup_with(&self, key: &Key, options: LookupOptions<'_>) -> Result<Hit, MissReason> {
        self.lookup_as(key, options, Layer::Own)
    }

    /// [`Cache::lookup_with`], as this handle's own lookup or as the cache under another
    /// ([`crate::CacheBuilder::fall_back_to`]), which must never be written through it.
    fn lookup_as(
        &self,
        key: &Key,
        options: LookupOptions<'_>,
        layer: Layer,
    ) -> Result<Hit, MissReason> {
        let inner = &self.inner;
        // What lookups find to re-record waits for a write: never of a handle that cannot
        // write, nor of a cache underneath another (the upper takes the writes).
        let queue = layer == Layer::Own && !inner.read_only && !inner.options.disabled;
        if inner.options.disabled {
            // A host that runs uncached (no cache of its own could be opened) still reads
            // the one shipped underneath.
            if let Some(lower) = &inner.lower {
                return lower.lookup_as(key, options, Layer::Underneath);
            }
            inner.counters.miss(MissReason::Disabled);
            return Err(MissReason::Disabled);
        }
        let snapshot = inner.snapshot.load_full();
        let result = match lookup_in(&snapshot, key, inner, options, queue) {
            Ok(hit) => Ok(hit),
            // A miss here may be a hit in the cache underneath (a shipped, read-only one),
            // asked before this cache looks for newer publications: its hit is as fresh as
            // one here would be, and a start over a shipped cache pays no `stat` of this
            // cache's index per module.
            Err(reason) => match inner
                .lower
                .as_ref()
                .map(|lower| lower.lookup_as(key, options, Layer::Underneath))
            {
                Some(Ok(hit)) => Ok(hit),
                _ => self.after_miss(&snapshot, key, options, queue, reason),
            },
        };
        match &result {
            Ok(_) => {
                inner.counters.hit();
            }
            Err(reason) => {
                inner.counters.miss(*reason);
                log::debug!("bytecode-pack: miss ({reason:?}) for {key}");
            }
        }
        result
    }

    /// After a miss in `snapshot`: the lookup again in a newer publication, if one is due to
    /// be looked for and there is one. A handle sees other processes' writes no later than
    /// its next miss (or, throttled, its next miss once the interval passed).
    fn after_miss(
        &self,
        snapshot: &Arc<Snapshot>,
        key: &Key,
        options: LookupOptions<'_>,
        queue: bool,
        reason: MissReason,
    ) -> Result<Hit, MissReason> {
        if !self.due_for_refresh(options.refresh_interval) {
            return Err(reason);
        }
        match self.refresh_if_changed(snapshot) {
            Ok(Some(newer)) => lookup_in(&newer, key, &self.inner, options, queue),
            Ok(None) => Err(reason),
            Err(e) => {
                log::debug!(
                    "bytecode-pack: cannot reload {}: {e}",
                    self.inner.dir.display()
                );
                Err(MissReason::Io)
            }
        }
    }

    /// Whether a throttled miss should check for a newer publication now; notes the check.
    /// An unthrottled miss always checks and reads no clock.
    fn due_for_refresh(&self, throttle: Option<Duration>) -> bool {
        let Some(interval) = throttle else {
            return true;
        };
        // Microseconds since opening, plus one: 0 means never checked.
        let now = self.inner.opened.elapsed().as_micros() as u64 + 1;
        let last = self.inner.checked_at_us.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= interval.as_micros() as u64;
        if due {
            self.inner.checked_at_us.store(now, Ordering::Relaxed);
        }
        due
    }

    /// Loads the published index if it is not the one `current` was read from.
    pub(super) fn refresh_if_changed(&self, current: &Snapshot) -> Result<Option<Arc<Snapshot>>> {
        let published = snapshot::published_identity(&self.inner.index_path);
        if published == current.identity() {
            return Ok(None);
        }
        Ok(Some(self.reload()?))
    }

    pub(super) fn reload(&self) -> Result<Arc<Snapshot>> {
        let fresh = Arc::new(Snapshot::load(&self.inner.dir, abi_tag())?);
        self.inner.snapshot.store(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// Looks `key` up in one snapshot: present, intact, and every input fresh.
fn lookup_in(
    snapshot: &Arc<Snapshot>,
    key: &Key,
    inner: &Inner,
    options: LookupOptions<'_>,
    queue_refreshes: bool,
) -> Result<Hit, MissReason> {
    let root = options.root;
    let (i, entry) = match snapshot.find(key.as_bytes()) {
        Found::Entry(i, entry) => (i, entry),
        Found::Damaged => return Err(MissReason::Corrupt),
        Found::Absent if snapshot.is_rejected() => return Err(MissReason::Corrupt),
        Found::Absent => return Err(MissReason::Absent),
    };
    if !snapshot.segments_intact(i, entry) {
        return Err(MissReason::Corrupt);
    }
    let bytecode = snapshot.segment_range(&entry.bytecode);
    let hit = Hit {
        snapshot: Arc::clone(snapshot),
        entry: i,
        bytecode,
    };
    let proven = options.content_proof(&hit);
    // Sealed (the tree cannot change after deployment, by the host's word) or found by
    // content (its inputs are another tree's): no input is checked.
    if inner.options.sealed || options.skip_input_checks {
        return Ok(hit);
    }
    match proven {
        // Read and compared by the caller just now: a `stat` could only say less.
        ContentProof::Same => queue_refresh(key, entry, inner, root, queue_refreshes, None),
        ContentProof::Changed => return Err(MissReason::Stale),
        ContentProof::Unknown => check_inputs(key, entry, inner, root, queue_refreshes)?,
    }
    Ok(hit)
}

/// Checks `entry`'s inputs (relative ones under `root`, else where they were recorded), and
/// queues for the handle's next write what would let later lookups cost less: stat data that
/// can be trusted again, and the root of a tree found elsewhere than recorded (moved), so that
/// a compaction checks it where it is now.
fn check_inputs(
    key: &Key,
    entry: &ArchivedEntryRecord,
    inner: &Inner,
    root: Option<&Path>,
    queue_refreshes: bool,
) -> Result<(), MissReason> {
    let recorded_at = entry.recorded_at_ns.to_native();
    // Relative inputs are checked under the root the lookup names, else where they were
    // recorded.
    let recorded_root = entry.root.as_ref().map(|r| r.as_slice());
    let checked_under = root.or_else(|| recorded_root.and_then(crate::sys::path_from_bytes));
    let mut rehashed = Vec::new();
    for (i, input) in entry.inputs.iter().enumerate() {
        match freshness::check(input.into(), recorded_at, checked_under) {
            freshness::Freshness::Trusted => {}
            freshness::Freshness::Rehashed { stat, read_from } => {
                inner.counters.input_rehashed();
                rehashed.push((i, stat, read_from));
            }
            freshness::Freshness::Stale => return Err(MissReason::Stale),
        }
    }
    let rerecord = freshness::rerecord(&rehashed)
        .filter(|rerecord| rerecord.stats.iter().any(|(_, stat)| stat.is_some()));
    queue_refresh(key, entry, inner, root, queue_refreshes, rerecord);
    Ok(())
}

/// Queues for the handle's next write the stat data of `entry`'s inputs that can be trusted
/// again (`rerecord`), and where its tree is now if it moved (see [`check_inputs`]).
fn queue_refresh(
    key: &Key,
    entry: &ArchivedEntryRecord,
    inner: &Inner,
    root: Option<&Path>,
    queue_refreshes: bool,
    rerecord: Option<freshness::Rerecord>,
) {
    let recorded_at = entry.recorded_at_ns.to_native();
    let recorded_root = entry.root.as_ref().map(|r| r.as_slice());
    // Where the tree is now, if it moved: compared as recorded (absolute), and only when the
    // names differ (a root named another way is not a move).
    let moved_to = match (root, recorded_root) {
        (Some(now), Some(then))
            if queue_refreshes && now.as_os_str().as_encoded_bytes() != then =>
        {
            Some(freshness::recorded_path(now))
                .filter(|now| now.as_os_str().as_encoded_bytes() != then)
        }
        _ => None,
    };
    if queue_refreshes && (rerecord.is_some() || moved_to.is_some()) {
        let mut racy = inner.racy.lock();
        if racy.len() < MAX_PENDING_REFRESHES {
            let (stats, observed_at_ns) =
                rerecord.map_or((Vec::new(), recorded_at), |r| (r.stats, r.recorded_at_ns));
            racy.push(Refresh {
                key: *key.as_bytes(),
                version: (&entry.bytecode).into(),
                stats,
                observed_at_ns,
                root: moved_to.map(|root| root.into_os_string().into_encoded_bytes()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::NewEntry;

    /// A caller's answer by content stands in for the input's `stat`: other content misses
    /// as stale with the file's stat data unchanged, the same content hits with the file's
    /// times moved, and no answer leaves the `stat` to decide.
    #[cfg(feature = "quickjs")]
    #[test]
    fn a_proof_by_content_decides_instead_of_the_inputs_stat() {
        use crate::freshness::Input;
        let root = crate::private_tempdir();
        let cache = Cache::open(root.path()).unwrap();
        let source = root.path().join("m.js");
        std::fs::write(&source, "1").unwrap();
        let key = Key::for_source("m.js", b"1");
        let entry = NewEntry::new("m.js", b"code").inputs(vec![Input::path(&source)]);
        cache.put(&key, &entry).unwrap();
        let asked = std::cell::Cell::new(0);
        let lookup = |proof: ContentProof| {
            let prove = |_: &Hit| {
                asked.set(asked.get() + 1);
                proof
            };
            let options = LookupOptions::default().proven_by_content(&prove);
            cache
                .lookup_with(&key, options)
                .map(|hit| hit.bytecode().to_vec())
        };
        assert_eq!(lookup(ContentProof::Changed), Err(MissReason::Stale));
        assert_eq!(lookup(ContentProof::Unknown).unwrap(), b"code");
        // An edit its stat data shows: the stat decides when the caller knows nothing...
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&source, "2").unwrap();
        assert_eq!(lookup(ContentProof::Unknown), Err(MissReason::Stale));
        // ...and the caller's check of the content, when it made one.
        assert_eq!(lookup(ContentProof::Same).unwrap(), b"code");
        assert_eq!(asked.get(), 4);
        // A sealed handle checks nothing, by its host's word: it is asked, and not heeded.
        let sealed = Cache::builder(root.path()).sealed(true).open().unwrap();
        let changed = |_: &Hit| {
            asked.set(asked.get() + 1);
            ContentProof::Changed
        };
        let options = LookupOptions::default().proven_by_content(&changed);
        assert_eq!(
            sealed.lookup_with(&key, options).unwrap().bytecode(),
            b"code"
        );
        assert_eq!(asked.get(), 5);
    }

    /// A lookup its caller proves by content still records where a moved tree is now, so
    /// that a compaction does not drop the tree's entries as recorded under a root that is
    /// gone.
    #[cfg(feature = "quickjs")]
    #[test]
    fn a_proof_by_content_still_records_where_a_moved_tree_is() {
        use crate::freshness::Input;
        let tmp = crate::private_tempdir();
        let (tree, moved) = (tmp.path().join("tree"), tmp.path().join("moved"));
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("m.js"), "1").unwrap();
        let cache = Cache::open(tmp.path().join("cache")).unwrap();
        let key = Key::for_source("m.js", b"1");
        let entry = NewEntry::new("m.js", b"code")
            .relative_to(&tree)
            .inputs(vec![Input::path(tree.join("m.js"))]);
        cache.put(&key, &entry).unwrap();
        std::fs::rename(&tree, &moved).unwrap();
        let same = |_: &Hit| ContentProof::Same;
        let proven = LookupOptions::default()
            .root(&moved)
            .proven_by_content(&same);
        assert!(cache.lookup_with(&key, proven).is_ok());
        assert_eq!(cache.refresh_racy().unwrap(), 1);
        let report = cache.compact().unwrap();
        assert_eq!(report.dropped_stale, 0, "{report:?}");
        let checked = LookupOptions::default().root(&moved);
        assert_eq!(
            cache.lookup_with(&key, checked).unwrap().bytecode(),
            b"code"
        );
    }

    #[test]
    fn a_throttled_miss_sees_other_handles_writes_once_its_interval_passed() {
        let root = crate::private_tempdir();
        let (reader, writer) = (
            Cache::open(root.path()).unwrap(),
            Cache::open(root.path()).unwrap(),
        );
        let long = Duration::from_secs(3600);
        let (first, second) = (Key::for_source("a.js", b"1"), Key::for_source("b.js", b"2"));
        // The first miss checks (nothing published yet).
        assert_eq!(
            reader
                .lookup_with(&first, LookupOptions::default().refresh_interval(long))
                .err(),
            Some(MissReason::Absent)
        );
        writer.put(&first, &NewEntry::new("a.js", b"one")).unwrap();
        // Within the interval: no check, so the other handle's write is not seen yet.
        assert_eq!(
            reader
                .lookup_with(&first, LookupOptions::default().refresh_interval(long))
                .err(),
            Some(MissReason::Absent)
        );
        // An unthrottled miss always checks.
        assert_eq!(reader.lookup(&first).unwrap().bytecode(), b"one");
        writer.put(&second, &NewEntry::new("b.js", b"two")).unwrap();
        // Once the interval passed (here: none), a throttled miss checks too.
        let hit = reader
            .lookup_with(
                &second,
                LookupOptions::default().refresh_interval(Duration::ZERO),
            )
            .unwrap();
        assert_eq!(hit.bytecode(), b"two");
    }
}
