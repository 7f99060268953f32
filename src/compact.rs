//! Compaction: rewrite the live entries into a new pack generation.
//!
//! Runs under the writer lock. The new pack is written to a temp file and renamed to
//! `pack-<generation + 1>` before the index naming it is published; the old pack is removed
//! only after that, and readers that still map it keep reading it undisturbed.
//!
//! An explicit compaction, and a `put` that will likely start one, check the entries' inputs
//! before taking the lock ([`check_inputs_ahead`]): that may re-hash every input (where stat
//! data cannot vouch, as on FAT or FUSE), and other writers would wait for it. A verdict
//! reached ahead is only a verdict on which entries to carry over: an input edited after it
//! leaves its entry in the pack, and every `get` still checks it.

use std::collections::HashMap;
use std::io::Write;

use crate::error::{Error, Result};
use crate::files::{self, CacheFile, TEMP_PREFIX, pack_file_name};
use crate::format::{self, EntryRecord, InputRecord, PACK_HEADER_LEN};
use crate::freshness::{self, Freshness};
use crate::options::Options;
use crate::snapshot::map_committed_pack;
use crate::writer::WriteState;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Entries in the index before.
    pub entries_before: u64,
    /// Entries kept.
    pub entries_after: u64,
    /// Entries dropped because an input no longer exists or no longer holds its content.
    pub dropped_stale: u64,
    /// Entries dropped because a segment failed its checksum.
    pub dropped_corrupt: u64,
    /// Pointers dropped because the entry they point to is gone (the ones `PackLoader` keeps
    /// from a module's content to where it was stored, once that tree is gone).
    pub dropped_pointers: u64,
    /// Entries evicted, least recently inserted first, to get under the size limit.
    pub evicted: u64,
    /// Pack file bytes before (including dead space and torn tails).
    pub pack_bytes_before: u64,
    /// Pack file bytes after.
    pub pack_bytes_after: u64,
    /// The new pack generation.
    pub generation: u64,
}

/// Rewrites `state` into a new generation, keeping only intact, fresh entries within the
/// size limit. Entries whose sequence number is at least `protect_from_seq` (those the
/// calling `put` is about to acknowledge) are never evicted. The caller publishes the new
/// index and sweeps the old pack.
pub(crate) fn compact(
    state: &mut WriteState,
    options: &Options,
    protect_from_seq: Option<u64>,
    mut checked_ahead: CheckedAhead,
) -> Result<CompactReport> {
    let (entries, dropped_damaged) = state.all_entries();
    // Records that failed their checks when the index was read were damaged entries too.
    let mut report = CompactReport {
        entries_before: entries.len() as u64 + dropped_damaged,
        dropped_corrupt: dropped_damaged,
        pack_bytes_before: state.pack_file_len,
        ..CompactReport::default()
    };
    let (old_generation, old_pack_len) = (state.fields.generation, state.fields.pack_len);
    let old_pack_path = state.dir.join(pack_file_name(old_generation));
    let old_pack = if old_pack_len >= PACK_HEADER_LEN {
        Some(
            map_committed_pack(&old_pack_path, old_generation, old_pack_len, state.abi_tag)
                .map_err(Error::from)?,
        )
    } else {
        None
    };
    let old_pack: &[u8] = old_pack.as_deref().unwrap_or(&[]);

    let mut kept = keep_intact_and_fresh(
        entries,
        old_pack,
        protect_from_seq,
        &mut checked_ahead,
        &mut report,
    );
    // Evicted first: a pointer stored after its target (as every pointer is) could otherwise
    // outlive the target evicted under it.
    report.evicted = evict(&mut kept, options, protect_from_seq.unwrap_or(u64::MAX));
    report.dropped_pointers = drop_dangling_pointers(&mut kept, old_pack, protect_from_seq);

    let generation = crate::writer::next_generation_after(&state.dir, old_generation)?;
    let new_pack_len = write_new_pack(state, generation, old_pack, &mut kept)?;
    report.entries_after = kept.len() as u64;
    report.pack_bytes_after = new_pack_len;
    report.generation = generation;
    state.replace_all(kept, generation, new_pack_len);
    Ok(report)
}

/// The entries worth carrying over: every segment intact in the old pack and every input
/// fresh (re-recorded where it was racy). Entries the calling put is about to acknowledge
/// (`protect_from_seq` on) are kept unchecked: they were hashed moments ago, and a transient
/// error re-checking them (EMFILE, say) must not drop them.
fn keep_intact_and_fresh(
    entries: Vec<EntryRecord>,
    old_pack: &[u8],
    protect_from_seq: Option<u64>,
    checked_ahead: &mut CheckedAhead,
    report: &mut CompactReport,
) -> Vec<EntryRecord> {
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        if !entry
            .segments()
            .all(|(_, s)| format::checked_segment_bytes(old_pack, s).is_ok())
        {
            report.dropped_corrupt += 1;
            continue;
        }
        if protect_from_seq.is_some_and(|from| entry.seq >= from) {
            kept.push(entry);
            continue;
        }
        match checked_ahead.revalidate(entry) {
            Some(entry) => kept.push(entry),
            None => report.dropped_stale += 1,
        }
    }
    kept
}

/// Drops the pointers ([`format::FLAG_POINTER`]) whose target is not kept. Entries the calling
/// put is about to acknowledge stay. Returns how many were dropped.
fn drop_dangling_pointers(
    kept: &mut Vec<EntryRecord>,
    old_pack: &[u8],
    protect_from_seq: Option<u64>,
) -> u64 {
    let keys: std::collections::HashSet<[u8; 16]> = kept.iter().map(|e| e.key).collect();
    let before = kept.len();
    kept.retain(|e| {
        let target = || -> Option<[u8; 16]> {
            format::segment_bytes(old_pack, &e.bytecode)
                .ok()?
                .try_into()
                .ok()
        };
        e.flags & format::FLAG_POINTER == 0
            || target().is_some_and(|target| keys.contains(&target))
            || protect_from_seq.is_some_and(|from| e.seq >= from)
    });
    (before - kept.len()) as u64
}

/// Copies the segments of `kept` from `old_pack` into `pack-<generation>`, written through a
/// temp file, flushed and renamed into place; points each entry at its new offsets and returns
/// the new pack's length.
fn write_new_pack(
    state: &WriteState,
    generation: u64,
    old_pack: &[u8],
    kept: &mut [EntryRecord],
) -> Result<u64> {
    // Checked before the copy: a leftover pack of that generation (a compactor that crashed)
    // is replaced; anything else of that name is not this cache's to replace. (Writers hold
    // the lock; only another program could put a file there before the rename.)
    let new_pack_path = state.dir.join(pack_file_name(generation));
    if std::fs::symlink_metadata(&new_pack_path).is_ok()
        && CacheFile::Pack(generation).judge(&new_pack_path, state.abi_tag)
            == files::Verdict::Foreign
    {
        return Err(Error::Insecure {
            path: new_pack_path,
            problem: "is in the way of the next pack and was not written by this cache".into(),
        });
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(&state.dir)
        .map_err(Error::io(&state.dir))?;
    let tmp_path = tmp.path().to_path_buf();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
    out.write_all(&format::encode_pack_header(generation, state.abi_tag))
        .map_err(Error::io(&tmp_path))?;
    let mut offset = PACK_HEADER_LEN;
    let half = kept.len() / 2;
    for (copied, entry) in kept.iter_mut().enumerate() {
        if copied == half {
            out.flush().map_err(Error::io(&tmp_path))?;
            crate::faults::crash_point("compact:half-copied");
        }
        let key = entry.key;
        for (kind, segment) in entry.segments_mut() {
            let payload = format::segment_bytes(old_pack, segment).expect("checked intact");
            out.write_all(&format::encode_segment_header(kind, &key, payload))
                .and_then(|()| out.write_all(payload))
                .map_err(Error::io(&tmp_path))?;
            segment.offset = offset + format::SEGMENT_HEADER_LEN;
            offset += segment.stored_len();
        }
    }
    out.flush().map_err(Error::io(&tmp_path))?;
    drop(out);
    // Flushed whatever the durability: the index that will name this pack replaces the old
    // one, which journaling filesystems flush on `rename`, but the pack's new name replaces
    // nothing and its data could still be unwritten after a power loss, with the old pack
    // unlinked: every entry lost. Compaction is rare; this costs it one `fsync`.
    tmp.as_file().sync_all().map_err(Error::io(&tmp_path))?;
    tmp.persist(&new_pack_path)
        .map_err(|e| Error::io(&new_pack_path)(e.error))?;
    crate::faults::crash_point("compact:pack-renamed");
    Ok(offset)
}

/// Keeps an entry only if all its inputs still hold their recorded content, checked as a
/// `get` would; re-records inputs whose stat data was racy or changed with the content intact,
/// so that entries written moments after their sources were saved stop paying a re-hash on
/// every `get`.
fn revalidate_inputs(mut entry: EntryRecord) -> Option<EntryRecord> {
    // An entry recorded under a root is gone with it.
    let root = match entry.root.as_deref() {
        Some(recorded) => Some(freshness::existing_root(recorded)?),
        None => None,
    };
    let mut rehashed = Vec::new();
    for (i, input) in entry.inputs.iter().enumerate() {
        // Inputs recorded relative to a root are checked where it was last recorded.
        match freshness::check(input.into(), entry.recorded_at_ns, root) {
            Freshness::Trusted => {}
            Freshness::Rehashed { stat, read_from } => rehashed.push((i, stat, read_from)),
            Freshness::Stale => return None,
        }
    }
    if let Some(rerecord) = freshness::rerecord(&rehashed) {
        for (i, stat) in rerecord.stats {
            entry.inputs[i].stat = stat;
        }
        entry.recorded_at_ns = entry.recorded_at_ns.max(rerecord.recorded_at_ns);
    }
    Some(entry)
}

/// Verdicts on entries' inputs reached before the writer lock was taken, by key.
#[derive(Default)]
pub(crate) struct CheckedAhead(HashMap<[u8; 16], Verdict>);

/// The inputs, recording instant and root judged, and what [`revalidate_inputs`] made of them
/// (`None`: stale).
struct Verdict {
    judged: (Vec<InputRecord>, i64, Option<Vec<u8>>),
    kept: Option<(Vec<InputRecord>, i64)>,
}

/// Checks the inputs of `entries` (the published ones, read without the lock) as compaction
/// would under it.
pub(crate) fn check_inputs_ahead(entries: Vec<EntryRecord>) -> CheckedAhead {
    CheckedAhead(
        entries
            .into_iter()
            .map(|entry| {
                let judged = (
                    entry.inputs.clone(),
                    entry.recorded_at_ns,
                    entry.root.clone(),
                );
                let key = entry.key;
                let kept = revalidate_inputs(entry).map(|e| (e.inputs, e.recorded_at_ns));
                (key, Verdict { judged, kept })
            })
            .collect(),
    )
}

impl CheckedAhead {
    /// [`revalidate_inputs`] of `entry`, from the verdict reached ahead if it judged exactly
    /// these inputs recorded at this instant (what it re-recorded describes content it read,
    /// as under the lock), else now.
    fn revalidate(&mut self, mut entry: EntryRecord) -> Option<EntryRecord> {
        match self.0.remove(&entry.key) {
            Some(Verdict { judged, kept })
                if judged.0 == entry.inputs
                    && judged.1 == entry.recorded_at_ns
                    && judged.2 == entry.root =>
            {
                (entry.inputs, entry.recorded_at_ns) = kept?;
                Some(entry)
            }
            _ => revalidate_inputs(entry),
        }
    }
}

/// Drops least recently inserted entries until live bytes fit the size limit's target, never
/// one whose sequence number is `protect_from_seq` or later.
fn evict(entries: &mut Vec<EntryRecord>, options: &Options, protect_from_seq: u64) -> u64 {
    let live = |es: &[EntryRecord]| -> u64 { es.iter().map(EntryRecord::stored_len).sum() };
    let mut total = PACK_HEADER_LEN + live(entries);
    if total <= options.max_bytes {
        return 0;
    }
    let mut by_age: Vec<(u64, [u8; 16], u64)> = entries
        .iter()
        .map(|e| (e.seq, e.key, e.stored_len()))
        .collect();
    by_age.sort_unstable();
    let mut dropped = std::collections::HashSet::new();
    for (seq, key, len) in by_age {
        if total <= options.eviction_target() || seq >= protect_from_seq {
            break;
        }
        total -= len;
        dropped.insert(key);
    }
    entries.retain(|e| !dropped.contains(&e.key));
    dropped.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SegmentRef;

    /// An entry recording `input` (its content hash, no stat data) at `recorded_at_ns`.
    fn entry_with_input(input: &std::path::Path, recorded_at_ns: i64) -> EntryRecord {
        let (mut record, _) = freshness::record(&crate::Input::path(input), None).unwrap();
        record.stat = None;
        let segment = SegmentRef {
            offset: 0,
            len: 0,
            checksum: [0; 16],
        };
        EntryRecord {
            key: [1; 16],
            seq: 0,
            module_name: "m".into(),
            flags: 0,
            recorded_at_ns,
            bytecode: segment,
            source_map: None,
            aux: None,
            inputs: vec![record],
            root: None,
        }
    }

    /// A pointer stored after its target (as every pointer is) does not outlive the target
    /// evicted under it: eviction comes before the pointers are checked.
    #[cfg(feature = "quickjs")]
    #[test]
    fn eviction_takes_a_pointer_with_its_target() {
        use crate::{Cache, Key, NewEntry};
        let dir = crate::private_tempdir();
        let cache = Cache::builder(dir.path())
            .max_bytes(16 << 10)
            .open()
            .unwrap();
        let key = |n: u8| Key::from_bytes([n; 16]);
        let (target, pointer, later) = (key(1), key(2), key(3));
        cache
            .put(&target, &NewEntry::new("t", &[7u8; 10 << 10]))
            .unwrap();
        let to_target = NewEntry::new("t", target.as_bytes()).pointer();
        cache.put(&pointer, &to_target).unwrap();
        cache
            .put(&later, &NewEntry::new("l", &[8u8; 8 << 10]))
            .unwrap();
        // That put took the cache over `max_bytes`: it compacted, and evicted.
        assert!(cache.get(&target).is_none(), "evicted: the oldest");
        assert!(cache.get(&later).is_some());
        assert!(cache.get(&pointer).is_none(), "its pointer went with it");
    }

    /// Stat data read just now is racy: compaction must not record it where it would be
    /// trusted, even under a recording instant past the re-hash, as after the clock stepped
    /// back (here: an entry recorded an hour ahead of the clock).
    #[test]
    fn a_racy_input_stays_untrusted_even_if_recorded_after_its_rehash() {
        let dir = crate::private_tempdir();
        let input = dir.path().join("m.js");
        std::fs::write(&input, "export default 1").unwrap();
        let hour = 3_600_000_000_000;
        for recorded_at_ns in [freshness::now_nanos(), freshness::now_nanos() + hour] {
            let rehash_from = freshness::now_nanos();
            let kept = revalidate_inputs(entry_with_input(&input, recorded_at_ns)).unwrap();
            assert!(kept.recorded_at_ns >= recorded_at_ns);
            // Trusted now only if it was when its re-hash began (a slow machine may get there
            // past the racy window of the write).
            let unsound = kept.inputs[0].stat.is_some_and(|stat| {
                freshness::stat_is_trusted(&stat, kept.recorded_at_ns)
                    && !freshness::stat_is_trusted(&stat, rehash_from)
            });
            assert!(!unsound, "{recorded_at_ns}: {:?}", kept.inputs[0].stat);
        }
    }
}
