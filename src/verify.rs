//! Full verification: every check a reader makes lazily (record checksums and rkyv's validator,
//! segment checksums), made eagerly over every entry, plus a walk of the pack's own segment
//! headers.

use std::collections::HashSet;

use crate::format::{self, PACK_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentRef};
use crate::snapshot::Snapshot;

/// What [`crate::Cache::verify`] found. `problems` is empty for a healthy cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Entries in the index.
    pub entries: u64,
    /// Segments whose payload checksums were checked through the index.
    pub segments_checked: u64,
    /// Segments found by walking the committed pack.
    pub segments_in_pack: u64,
    /// Everything wrong, one line each.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing was wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn verify(snapshot: &Snapshot) -> VerifyReport {
    let mut report = VerifyReport::default();
    if let Some(damage) = snapshot.damage() {
        report.problems.push(damage.to_string());
        if snapshot.is_rejected() {
            return report;
        }
    }
    check_index_files(snapshot, &mut report);
    let (header_offsets, reported) = check_entries_segments(snapshot, &mut report);
    walk_pack(snapshot.pack(), &header_offsets, &reported, &mut report);
    report
}

/// Every record of the published index and its base against rkyv's validator and its row's
/// key, and each file's rows for their order.
fn check_index_files(snapshot: &Snapshot, report: &mut VerifyReport) {
    let tables = [("index", snapshot.head()), ("base", snapshot.base())];
    for (name, table) in tables {
        let Some(table) = table else { continue };
        let (file, header) = (table.index().file(), table.index().header());
        for i in 0..header.count {
            let row_key = format::index_row(file, header, i).key;
            match format::index_record(file, header, i).and_then(format::validate_record) {
                Ok(record) if record.key == row_key => {}
                Ok(_) => report
                    .problems
                    .push(format!("{name} record {i}: its key is not its row's key")),
                Err(e) => report.problems.push(format!("{name} record {i}: {e}")),
            }
        }
        let keys: Vec<[u8; 16]> = (0..header.count)
            .map(|i| format::index_row(file, header, i).key)
            .collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            report
                .problems
                .push(format!("{name} rows are not sorted by unique key"));
        }
    }
}

/// Each segment the live entries name (the published index's, then the base's it does not
/// shadow; damaged records were reported already), checked on its own against its payload
/// checksum and the pack's header in front of it, so one damaged segment is reported once.
/// Returns the offsets of the headers found good, sorted, and those already reported.
fn check_entries_segments(
    snapshot: &Snapshot,
    report: &mut VerifyReport,
) -> (Vec<u64>, HashSet<u64>) {
    let entries: Vec<_> = snapshot
        .records()
        .filter_map(|(_, record)| record)
        .collect();
    report.entries = snapshot.records().count() as u64;
    let pack = snapshot.pack();
    let mut header_offsets = Vec::new();
    let mut reported = HashSet::new();
    for entry in &entries {
        let name = entry.module_name.as_str();
        for (kind, archived) in format::archived_segments(entry) {
            let segment = SegmentRef::from(archived);
            report.segments_checked += 1;
            if let Err(e) = format::checked_segment_bytes(pack, &segment) {
                report
                    .problems
                    .push(format!("entry {name:?}: {kind:?}: {e}"));
                reported.insert(segment.offset.saturating_sub(SEGMENT_HEADER_LEN));
                continue;
            }
            let at = segment.offset - SEGMENT_HEADER_LEN;
            header_offsets.push(at);
            match format::scan_segment(pack, at) {
                Ok(seg) if seg.kind == kind && seg.key == entry.key && seg.payload == segment => {}
                _ => report.problems.push(format!(
                    "entry {name:?}: {kind:?} at {} does not match the pack's segment header",
                    segment.offset
                )),
            }
        }
    }
    header_offsets.sort_unstable();
    (header_offsets, reported)
}

/// Walks the pack by its own headers, counting its segments. Past a damaged segment it
/// resumes at the next segment the index knows, so the count covers the rest of the pack.
fn walk_pack(
    pack: &[u8],
    header_offsets: &[u64],
    reported: &HashSet<u64>,
    report: &mut VerifyReport,
) {
    let mut offset = PACK_HEADER_LEN;
    while offset < pack.len() as u64 {
        match format::scan_segment(pack, offset) {
            Ok(seg) => {
                report.segments_in_pack += 1;
                offset = seg.payload.offset + seg.payload.len;
            }
            Err(e) => {
                if !reported.contains(&offset) {
                    report
                        .problems
                        .push(format!("pack: segment at offset {offset}: {e}"));
                }
                match header_offsets.iter().find(|&&at| at > offset) {
                    Some(&next) => offset = next,
                    None => break,
                }
            }
        }
    }
}
