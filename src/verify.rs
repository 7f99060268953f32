//! Full verification: every check a reader makes lazily, made eagerly, plus the rkyv validator
//! over the index body and a walk of the pack's own segment headers.

use std::collections::HashMap;

use crate::format::{self, PACK_HEADER_LEN, SegmentKind, SegmentRef};
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
    if snapshot.is_damaged() {
        report
            .problems
            .push("the index file fails its header or checksum checks".into());
        return report;
    }
    let Some(index) = snapshot.index() else {
        return report;
    };
    let (file, header) = (index.file(), index.header());
    report.entries = header.count as u64;
    let mut entries = Vec::with_capacity(header.count);
    for i in 0..header.count {
        match format::index_record(file, header, i).and_then(format::validate_record) {
            Ok(record) => entries.push(record),
            Err(e) => report.problems.push(format!("index record {i}: {e}")),
        }
    }
    let keys: Vec<[u8; 16]> = (0..header.count)
        .map(|i| format::index_row(file, header, i).key)
        .collect();
    if keys.windows(2).any(|w| w[0] >= w[1]) {
        report
            .problems
            .push("index rows are not sorted by unique key".into());
    }
    let pack = snapshot.pack();

    // Walk the pack by its own headers; remember where each segment's payload starts.
    let mut walked: HashMap<u64, (SegmentKind, [u8; 16], u64)> = HashMap::new();
    let mut offset = PACK_HEADER_LEN;
    while offset < pack.len() as u64 {
        match format::scan_segment(pack, offset) {
            Ok(seg) => {
                walked.insert(seg.payload.offset, (seg.kind, seg.key, seg.payload.len));
                offset = seg.payload.offset + seg.payload.len;
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("pack: segment at offset {offset}: {e}"));
                break;
            }
        }
    }
    report.segments_in_pack = walked.len() as u64;

    for entry in entries {
        let key = entry.key;
        let name = entry.module_name.as_str();
        let segments = [
            Some((SegmentKind::Bytecode, &entry.bytecode)),
            entry
                .source_map
                .as_ref()
                .map(|s| (SegmentKind::SourceMap, s)),
            entry.aux.as_ref().map(|s| (SegmentKind::Aux, s)),
        ];
        for (kind, archived) in segments.into_iter().flatten() {
            let segment = SegmentRef::from(archived);
            report.segments_checked += 1;
            if let Err(e) = format::checked_segment_bytes(pack, &segment) {
                report
                    .problems
                    .push(format!("entry {name:?}: {kind:?}: {e}"));
                continue;
            }
            match walked.get(&segment.offset) {
                Some(&(k, owner, len)) if k == kind && owner == key && len == segment.len => {}
                _ => report.problems.push(format!(
                    "entry {name:?}: {kind:?} at {} does not match the pack's segment header",
                    segment.offset
                )),
            }
        }
    }
    report
}
