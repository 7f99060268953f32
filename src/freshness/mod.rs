//! Freshness: which files an entry was compiled from, and whether they still hold that content.
//!
//! Each input is recorded with the XXH3-128 of its content and its stat data (size, mtime,
//! ctime, inode, device). A `get` re-hashes an input only when the stat data changed or cannot
//! be trusted, so an unchanged tree costs one `stat` per input.
//!
//! Stat data is not trusted when it is *racy*, as git calls it: a timestamp close to the moment
//! the entry was recorded. Filesystem timestamps are coarse, so a file edited just after it was
//! hashed can keep the same size and mtime; for such inputs every `get` re-hashes instead.
//! How close is "close" depends on the timestamps' granularity: stamps with sub-second digits
//! come from a filesystem with fine timestamps, where the kernel's coarse clock ticks every
//! 1-10 ms, and [`FINE_RACY_WINDOW`] (30 ms) covers three of the coarsest. Whole-second stamps
//! (FAT's 2 s, HFS+, some network filesystems, files extracted by `tar`) get [`RACY_WINDOW`]
//! (2 s), and so do ctimes another machine's clock set (network and cluster filesystems,
//! virtiofs), which may disagree with this one's. Compaction re-records inputs that were racy,
//! so they stop paying the re-hash.
//! An input whose stat changed between before and after hashing is recorded with no stat at
//! all, and always re-hashed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Error, Result};
use crate::format::{ArchivedInputRecord, InputRecord, StatRecord};
use crate::fsys;
use crate::sys::{epoch_nanos, path_from_bytes, stat_path, stat_record};

/// How close to the recording instant a whole-second timestamp must be to count as racy: covers
/// FAT's 2 s granularity. This is the longest racy window.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The racy window for timestamps with sub-second digits (ext4, XFS, btrfs, APFS, tmpfs...),
/// whose granularity is the kernel's coarse clock tick (1-10 ms): three of the coarsest ticks.
/// Every recording instant is taken before the read it vouches for, so an edit after the read
/// (through a system call: a write through a shared `mmap` may not; see FORMAT.md) moves the
/// ctime past `recorded_at - lag`, where the lag is how far the coarse clock trails
/// the fine one: a tick normally, several when timekeeping stalls (a VM exit); 30 ms covers
/// three ticks at HZ=100 and seven at HZ=250. A ctime set by another machine's clock (a
/// network filesystem) gets [`RACY_WINDOW`] instead: clocks kept by NTP agree within it.
pub const FINE_RACY_WINDOW: Duration = Duration::from_millis(30);

/// A file an entry was compiled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    path: PathBuf,
    compiled_hash: Option<[u8; 16]>,
    /// The stat data of the descriptor the compiled content was read from, and when the read
    /// ended: lets `put` skip reading the file again when its stat data is unchanged.
    observed: Option<(StatRecord, i64)>,
    /// For a file recorded by path that a build read at some point after this instant (ns):
    /// `put` refuses it if it may have changed since (see [`Input::read_since`]).
    read_since: Option<i64>,
}

impl Input {
    /// An input whose content is read and hashed when `put` runs. For a file whose bytes were
    /// compiled, use [`Input::with_content`] with those bytes instead: an edit between the
    /// compile and the `put` would otherwise be recorded as the content compiled.
    pub fn path(path: impl Into<PathBuf>) -> Input {
        Input {
            path: path.into(),
            compiled_hash: None,
            observed: None,
            read_since: None,
        }
    }

    /// The file at `path` as it is now, read and hashed: recorded with that content, as a
    /// compiler's read is (see [`Input::with_content`]), so an edit after this read makes the
    /// entry miss. `None` if it cannot be read.
    #[cfg(feature = "quickjs")]
    pub(crate) fn read_now(path: &Path) -> Option<Input> {
        let read_from = now_nanos();
        let (hash, stat) = hash_file(path).ok()?;
        Some(Input {
            path: path.to_path_buf(),
            compiled_hash: Some(hash),
            observed: stat.map(|stat| (stat, read_from)),
            read_since: None,
        })
    }

    /// This input, if it is recorded by path, as read by a build at some point after
    /// `since_ns`: what `put` hashes may then not be what the build read, so `put` refuses
    /// the input ([`Error::Input`]) if its stat data moved at or after that instant, by the
    /// racy rule ([`stat_is_trusted`]), where its filesystem's ctime tells (elsewhere it is
    /// recorded as it is now, as any input by path is).
    #[cfg(feature = "quickjs")]
    pub(crate) fn read_since(self, since_ns: i64) -> Input {
        let read_since = self.compiled_hash.is_none().then_some(since_ns);
        Input { read_since, ..self }
    }

    /// [`Input::with_content`] for bytes read from the descriptor whose `fstat` gave `meta`,
    /// by a read that began at `read_from_ns`.
    #[cfg(feature = "quickjs")]
    pub(crate) fn read_by_compiler(
        path: PathBuf,
        content: &[u8],
        meta: &std::fs::Metadata,
        read_from_ns: i64,
    ) -> Input {
        let stat = stat_record(meta);
        Input {
            observed: (stat.size == content.len() as u64).then_some((stat, read_from_ns)),
            ..Input::with_content(path, content)
        }
    }

    /// An input recorded with the bytes the compiler actually read. If the file no longer
    /// holds exactly these bytes when `put` runs (it was edited between compile and `put`),
    /// the entry is stored so that it misses: it can never serve bytecode for content it was
    /// not compiled from.
    pub fn with_content(path: impl Into<PathBuf>, content: &[u8]) -> Input {
        Input {
            path: path.into(),
            compiled_hash: Some(content_hash(content)),
            observed: None,
            read_since: None,
        }
    }

    /// The input's path, as given.
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// The hash of the content the compiler read, if the input was recorded with it.
    #[cfg(feature = "quickjs")]
    pub(crate) fn content_hash(&self) -> Option<[u8; 16]> {
        self.compiled_hash
    }
}

/// The hash an input's content is recorded by: its XXH3-128, little-endian.
pub(crate) fn content_hash(content: &[u8]) -> [u8; 16] {
    xxh3_128(content).to_le_bytes()
}

pub(crate) fn now_nanos() -> i64 {
    epoch_nanos(SystemTime::now())
}

fn path_bytes(path: PathBuf) -> Vec<u8> {
    path.into_os_string().into_encoded_bytes()
}

/// The path an input is recorded under: absolute, but not canonicalised. Symlinks on the way
/// stay in it, so a symlink switched to another target (`lib.js -> lib-v2.js`, a pnpm store
/// entry replaced) is seen by the next check, which follows the path the user named.
pub(crate) fn recorded_path(path: &Path) -> PathBuf {
    if is_recorded_form(path) {
        // What `absolute` would return, without taking the path apart and rebuilding it
        // (every module a loader looks up comes this way).
        return path.to_path_buf();
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether the tree an entry was recorded under (its root, as recorded) is gone: it names no
/// directory now (a deleted checkout, a temporary directory, the old path of a tree moved and
/// not started since), or no path on this system. Its entries are dead.
pub(crate) fn root_is_gone(recorded: &[u8]) -> bool {
    existing_root(recorded).is_none()
}

/// The root an entry was recorded under, unless it [is gone](root_is_gone).
pub(crate) fn existing_root(recorded: &[u8]) -> Option<&Path> {
    crate::sys::path_from_bytes(recorded).filter(|root| root.is_dir())
}

/// Whether [`recorded_path`] returns `path` unchanged (as `std::path::absolute` would): on Unix
/// an absolute path with no empty or `.` component (it keeps `..`) and no trailing separator.
pub(crate) fn is_recorded_form(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    // What follows each separator: not nothing, another separator, or a lone `.`.
    let plain_after = |at: usize| {
        !matches!(
            &bytes[at + 1..],
            [] | [b'/', ..] | [b'.'] | [b'.', b'/', ..]
        )
    };
    cfg!(unix)
        && bytes.first() == Some(&b'/')
        && (0..bytes.len())
            .filter(|&at| bytes[at] == b'/')
            .all(plain_after)
}

/// The largest input hashed, 4 GiB: far past any file a module is compiled from, and a bound
/// on the time a `put` or a lookup spends reading one (a sparse file of a terabyte costs
/// nothing to make, and `/proc/kcore` claims 128 TiB). A larger input fails `put` with its
/// size and makes a lookup miss, without being read.
const MAX_INPUT_LEN: u64 = 4 << 30;

/// Whether the file at `path` holds the content whose hash ([`content_hash`]) is `hash`, read
/// now as an input is (regular files only, bounded, never blocking); false if it cannot be
/// read.
#[cfg(feature = "quickjs")]
pub(crate) fn file_holds(path: &Path, hash: [u8; 16]) -> bool {
    hash_file(path).is_ok_and(|(now, _)| now == hash)
}

/// Opens `path` (following symlinks, never blocking, regular files only) and hashes its
/// content, streaming. Returns the hash and the stat data that describes exactly that content,
/// or `None` for the stat data if the file changed while it was read (grew, shrank, was
/// replaced): such a record is re-hashed by every check.
fn hash_file(path: &Path) -> std::io::Result<([u8; 16], Option<StatRecord>)> {
    // Anything but a regular file is refused before it is opened, not only after: inputs
    // come from source maps a package ships.
    fsys::refuse_unless_regular(path)?;
    let (mut file, meta) = fsys::open_user_file_within(path, MAX_INPUT_LEN)?;
    let before = stat_record(&meta);
    let (hash, read) = fsys::hash_bounded(&mut file, before.size)?;
    let after = stat_path(path).ok();
    // Known only now: the `stat` just taken learned the file's filesystem. (A pseudo
    // filesystem's files are regular, and reading one is bounded and does not block.)
    if after.is_some_and(|after| crate::sys::ctime_of(after.dev) == crate::sys::Ctime::Pseudo) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            OnPseudoFilesystem,
        ));
    }
    let stable = read == before.size && after == Some(before);
    Ok((hash, stable.then_some(before)))
}

/// Why a file on a kernel pseudo filesystem (procfs, sysfs...) cannot be an input: its files
/// are made up as they are read, so no stat data or hash taken now describes what a later read
/// returns (`/proc/self/status` is 0 bytes long by its stat data, and its ctime never moves).
#[derive(Debug)]
struct OnPseudoFilesystem;

impl std::fmt::Display for OnPseudoFilesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "on a kernel pseudo filesystem (procfs, sysfs...), whose sizes and times do not \
             follow its content: it cannot be an input",
        )
    }
}

impl std::error::Error for OnPseudoFilesystem {}

fn is_on_pseudo_filesystem(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<OnPseudoFilesystem>())
}

/// Hashes `input` for a `put`, and says from when its record is valid (the `recorded_at` of
/// its entry must not be later). The path is made absolute (not canonical) so the record does
/// not depend on the current directory and still names what the user named.
///
/// An input read by the compiler with its stat data observed ([`Input::read_by_compiler`])
/// is not read again: its record is the observed stat data and the hash of what was read,
/// valid from when that read began. That is sound without another `stat`: an edit since then
/// (through a system call) changes the stat data (a lookup then re-hashes and misses), or keeps it only within the
/// racy window of that read, in which the stat data is never trusted.
///
/// `root` is the entry's root as recorded (absolute, from [`recorded_path`]).
pub(crate) fn record(input: &Input, root: Option<&Path>) -> Result<(InputRecord, i64)> {
    let path = recorded_path(&input.path);
    // Relative to the entry's root where it lies under it: checked under the root a lookup
    // names, so the entry survives its tree being moved.
    let stored = match root.and_then(|root| path.strip_prefix(root).ok()) {
        Some(relative) if !relative.as_os_str().is_empty() => path_bytes(relative.to_path_buf()),
        _ => path_bytes(path.clone()),
    };
    if let (Some(content_hash), Some((observed, read_at))) = (input.compiled_hash, input.observed) {
        let record = InputRecord {
            path: stored,
            content_hash,
            stat: Some(observed),
        };
        return Ok((record, read_at));
    }
    // The record is valid from just before the read: a later recording instant could trust
    // stat data that an edit between the read and that instant kept.
    let read_from = now_nanos();
    let record = record_by_reading(input, path.clone(), stored)?;
    if let Some(since) = input.read_since
        && changed_since(&record, since)
    {
        let why = "changed while the build that read it ran, or just before it began";
        return Err(Error::Input {
            path,
            source: std::io::Error::other(why),
        });
    }
    Ok((record, read_from))
}

/// Whether the input `record` describes (its stat data taken as it was hashed) may have
/// changed at or after `since_ns`, where its filesystem's ctime can tell: a stat that moved
/// while it was hashed, or a ctime within the racy window of that instant or after it.
fn changed_since(record: &InputRecord, since_ns: i64) -> bool {
    use crate::sys::Ctime;
    let Some(stat) = record.stat else {
        return true;
    };
    match crate::sys::ctime_of(stat.dev) {
        Ctime::Settable | Ctime::Pseudo => false,
        Ctime::LocalClock => !stat_is_old_enough(&stat, since_ns, false),
        Ctime::RemoteClock => !stat_is_old_enough(&stat, since_ns, true),
    }
}

/// Records the input at `path` (stored as `stored`) by reading it.
fn record_by_reading(input: &Input, path: PathBuf, stored: Vec<u8>) -> Result<InputRecord> {
    match (hash_file(&path), input.compiled_hash) {
        // Refused even with the content the compiler read: the entry could never be checked.
        (Err(source), _) if is_on_pseudo_filesystem(&source) => Err(Error::Input { path, source }),
        (Ok((on_disk, stat)), compiled) => {
            let content_hash = compiled.unwrap_or(on_disk);
            // Trust stat data only if it describes exactly the content recorded.
            let stable = content_hash == on_disk;
            Ok(InputRecord {
                path: stored,
                content_hash,
                stat: stat.filter(|_| stable),
            })
        }
        // The compiler read this file but it is gone (or no longer a file): record it so the
        // entry misses.
        (Err(_), Some(compiled)) => Ok(InputRecord {
            path: stored,
            content_hash: compiled,
            stat: None,
        }),
        (Err(source), None) => Err(Error::Input { path, source }),
    }
}

/// Whether stat data recorded at `recorded_at_ns` can stand in for the content.
///
/// Only the ctime decides. The kernel sets it to its own clock on every change made through a
/// system call (`write`, `truncate`, `rename`, `chmod`...), and no system call sets it to
/// anything else; the mtime can be set to any value (`touch -d`, `tar`, `npm` restore
/// whole-second or future mtimes). So a file whose recorded ctime is older than the racy window
/// before the recording instant cannot be changed through a system call without its ctime
/// moving past that instant, which a check sees. The window follows the ctime's own
/// granularity: sub-second digits mean a fine-grained filesystem.
///
/// One way around it is not seen, as git does not see it either: a write through a shared
/// writable `mmap` of the file to a page that is already dirty moves neither its size nor its
/// times (the kernel stamps the file at the first write fault of a clean page only). Such an
/// edit is served the old bytecode until the next change that moves the ctime.
///
/// Where the ctime is not the kernel's (FAT and exFAT report the settable mtime as the ctime;
/// FUSE other than virtiofs reports what its daemon says), stat data is never trusted and
/// every check re-hashes: a same-size copy with `cp -p` there keeps every field a `stat`
/// shows.
///
/// Where another machine's kernel sets the ctime by its own clock (a network or cluster
/// filesystem, virtiofs), that clock and this one's may disagree by more than the fine window
/// (a lagging server's ctime looks old at once): the wide window applies whatever the
/// granularity (git's window depends on the granularity alone).
pub(crate) fn stat_is_trusted(stat: &StatRecord, recorded_at_ns: i64) -> bool {
    use crate::sys::Ctime;
    match crate::sys::ctime_of(stat.dev) {
        Ctime::Settable | Ctime::Pseudo => false,
        Ctime::LocalClock => stat_is_old_enough(stat, recorded_at_ns, false),
        Ctime::RemoteClock => stat_is_old_enough(stat, recorded_at_ns, true),
    }
}

/// The racy-window half of [`stat_is_trusted`]; `wide` takes the wide window whatever the
/// ctime's granularity.
fn stat_is_old_enough(stat: &StatRecord, recorded_at_ns: i64, wide: bool) -> bool {
    const SECOND: i64 = 1_000_000_000;
    let fine = stat.ctime_ns % SECOND != 0 && !wide;
    let window = if fine { FINE_RACY_WINDOW } else { RACY_WINDOW };
    let horizon = recorded_at_ns.saturating_sub(window.as_nanos() as i64);
    stat.ctime_ns < horizon
}

/// An input a check re-hashed and found unchanged: its position in the entry, the stat data
/// that describes the content read (`None` if the file changed while it was read), and when
/// the read began.
pub(crate) type Rehashed = (usize, Option<StatRecord>, i64);

/// What re-recording re-hashed inputs makes of an entry (see [`rerecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rerecord {
    /// The new recording instant: when the first re-hash began.
    pub(crate) recorded_at_ns: i64,
    /// The stat data to record, by input position: `None` means "always re-hash".
    pub(crate) stats: Vec<(usize, Option<StatRecord>)>,
}

/// The one rule for re-recording inputs that checks re-hashed and found unchanged, for a
/// lookup's refresh and a compaction alike, as `git status` refreshes its index: the entry's
/// new recording instant is when the first re-hash began, and stat data is recorded only if it
/// was already old enough to trust then. (The instant never moves back, since inputs trusted
/// under it would turn racy; after a clock step back it can lie past a re-hash, and only stat
/// data that was trusted when read stays sound.) Every other input re-hashed is recorded with
/// none, to be re-hashed by every check until a re-record finds stat data to trust: keeping
/// its old stat data would let the later instant vouch for stat data that was racy under its
/// own (a same-tick edit it hides). `None` if nothing was re-hashed.
pub(crate) fn rerecord(rehashed: &[Rehashed]) -> Option<Rerecord> {
    let recorded_at_ns = rehashed.iter().map(|r| r.2).min()?;
    let stats = rehashed
        .iter()
        .map(|(i, stat, _)| (*i, stat.filter(|s| stat_is_trusted(s, recorded_at_ns))))
        .collect();
    Some(Rerecord {
        recorded_at_ns,
        stats,
    })
}

/// An input record, archived or owned, as the freshness check reads it.
pub(crate) struct InputView<'a> {
    pub(crate) path: &'a [u8],
    pub(crate) content_hash: &'a [u8; 16],
    pub(crate) stat: Option<StatRecord>,
}

impl<'a> From<&'a ArchivedInputRecord> for InputView<'a> {
    fn from(input: &'a ArchivedInputRecord) -> Self {
        InputView {
            path: input.path.as_slice(),
            content_hash: &input.content_hash,
            stat: input.stat.as_ref().map(|s| StatRecord {
                size: s.size.to_native(),
                mtime_ns: s.mtime_ns.to_native(),
                ctime_ns: s.ctime_ns.to_native(),
                ino: s.ino.to_native(),
                dev: s.dev.to_native(),
            }),
        }
    }
}

impl<'a> From<&'a InputRecord> for InputView<'a> {
    fn from(input: &'a InputRecord) -> Self {
        InputView {
            path: &input.path,
            content_hash: &input.content_hash,
            stat: input.stat,
        }
    }
}

/// What checking an input found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Stat data unchanged and trusted: fresh, nothing was read.
    Trusted,
    /// Re-hashed and unchanged. `stat` describes that content (`None` if the file changed
    /// while it was read): a record with it would be trusted from now on.
    Rehashed {
        /// The stat data to record instead.
        stat: Option<StatRecord>,
        /// Just before the read: the latest recording instant that stat data may be given.
        read_from: i64,
    },
    /// Gone, not a regular file, or different content.
    Stale,
}

/// The one freshness check, for `get` (on archived records) and compaction (on owned ones):
/// one `stat` when the stat data is unchanged and trusted, else a bounded, non-blocking
/// re-hash of the path the user named.
pub(crate) fn check(input: InputView<'_>, recorded_at_ns: i64, root: Option<&Path>) -> Freshness {
    let Some(recorded) = path_from_bytes(input.path) else {
        return Freshness::Stale;
    };
    // A path recorded relative to its entry's root is checked under the root this lookup
    // names; with none (any other lookup, a compaction) it cannot be found: stale.
    let under_root;
    let path = if recorded.is_absolute() {
        recorded
    } else {
        match root {
            Some(root) => {
                under_root = crate::sys::under_root(root, recorded);
                under_root.as_path()
            }
            None => return Freshness::Stale,
        }
    };
    let Ok(now) = stat_path(path) else {
        return Freshness::Stale;
    };
    if let Some(recorded) = input.stat {
        if now == recorded && stat_is_trusted(&recorded, recorded_at_ns) {
            return Freshness::Trusted;
        }
        // Recorded stat data describes the recorded content, so another size is another file.
        if now.size != recorded.size {
            return Freshness::Stale;
        }
    }
    let read_from = now_nanos();
    match hash_file(path) {
        Ok((hash, stat)) if &hash == input.content_hash => Freshness::Rehashed { stat, read_from },
        _ => Freshness::Stale,
    }
}

#[cfg(test)]
mod tests;
