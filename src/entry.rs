//! What goes into the cache and what comes out: [`NewEntry`], [`Hit`] and [`EntryInfo`].

use std::sync::Arc;

use crate::format::ArchivedEntryRecord;
use crate::freshness::Input;
use crate::key::Key;
use crate::snapshot::{EntryAt, Snapshot};

/// What [`crate::Cache::put`] stores: bytecode, and optionally a source map, an opaque sidecar and
/// the inputs whose content the bytecode depends on.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub(crate) module_name: &'a str,
    pub(crate) bytecode: &'a [u8],
    pub(crate) source_map: Option<&'a str>,
    pub(crate) aux: Option<&'a str>,
    pub(crate) inputs: Vec<Input>,
    pub(crate) flags: u32,
    pub(crate) root: Option<&'a std::path::Path>,
}

impl<'a> NewEntry<'a> {
    /// An entry for `module_name` holding `bytecode`.
    pub fn new(module_name: &'a str, bytecode: &'a [u8]) -> Self {
        NewEntry {
            module_name,
            bytecode,
            source_map: None,
            aux: None,
            inputs: Vec::new(),
            flags: 0,
            root: None,
        }
    }

    /// Marks the bytecode as produced by this crate's QuickJS compile path.
    #[cfg(feature = "quickjs")]
    pub(crate) fn engine_bytecode(mut self) -> Self {
        self.flags |= crate::format::FLAG_ENGINE_BYTECODE;
        self
    }

    /// Marks the entry as a pointer: its bytecode is the key of another entry, and it is kept
    /// only while that entry is.
    #[cfg(feature = "quickjs")]
    pub(crate) fn pointer(mut self) -> Self {
        self.flags |= crate::format::FLAG_POINTER;
        self
    }

    /// Bytecode, source map and aux, in segment-kind order.
    pub(crate) fn payloads(&self) -> [Option<&'a [u8]>; 3] {
        [
            Some(self.bytecode),
            self.source_map.map(str::as_bytes),
            self.aux.map(str::as_bytes),
        ]
    }

    /// Bytes the entry takes in the pack: its segments with their headers.
    pub(crate) fn stored_len(&self) -> u64 {
        self.payloads()
            .iter()
            .flatten()
            .map(|p| p.len() as u64 + crate::format::SEGMENT_HEADER_LEN)
            .sum()
    }

    /// Stores the module's source map with it.
    pub fn source_map(mut self, source_map: &'a str) -> Self {
        self.source_map = Some(source_map);
        self
    }

    /// Stores an opaque caller sidecar with it (e.g. a JSON list of the module's imports).
    pub fn aux(mut self, aux: &'a str) -> Self {
        self.aux = Some(aux);
        self
    }

    /// The files the bytecode was compiled from; if any of them changes, the entry misses.
    pub fn inputs(mut self, inputs: Vec<Input>) -> Self {
        self.inputs = inputs;
        self
    }

    /// Records the inputs under `root` (the project's directory; a relative one is made
    /// absolute against the working directory, as inputs are) relative to it, and `root`
    /// with them, so that the entry survives its tree being moved: a lookup with
    /// [`LookupOptions::root`](crate::LookupOptions::root) checks them under the root it names
    /// (and has the new root re-recorded by the handle's next write), any other lookup and a
    /// compaction under the recorded one. A compaction drops the entry once its recorded root
    /// is gone. Inputs outside `root` stay absolute.
    pub fn relative_to(mut self, root: &'a std::path::Path) -> Self {
        self.root = Some(root);
        self
    }
}

/// A cache hit: verified bytes, borrowed straight from the mapped pack.
///
/// A `Hit` keeps its snapshot of the cache alive, so its bytes stay valid while other handles
/// or processes append, compact or clear.
pub struct Hit {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) entry: EntryAt,
    /// Where the bytecode is in the pack mapping, resolved once.
    pub(crate) bytecode: std::ops::Range<usize>,
}

impl Hit {
    /// The key the entry is stored under.
    #[cfg(feature = "quickjs")]
    pub(crate) fn key(&self) -> crate::Key {
        crate::Key::from_bytes(self.record().key)
    }

    fn record(&self) -> &ArchivedEntryRecord {
        // The record passed its checks when the hit was made, and that verdict is kept.
        self.snapshot
            .record(self.entry)
            .expect("a hit's record was checked")
    }

    /// The bytecode, checksum-verified, zero-copy.
    pub fn bytecode(&self) -> &[u8] {
        self.snapshot
            .pack()
            .get(self.bytecode.clone())
            .expect("a hit's bytecode range was taken from its checked mapping")
    }

    /// The module name given to `put`.
    pub fn module_name(&self) -> &str {
        self.record().module_name.as_str()
    }

    /// The source map, if one was stored. Its checksum is checked here, at each call, not when
    /// the hit was made: a map whose bytes are damaged is `None` (with a warning), and the
    /// bytecode still serves.
    pub fn source_map(&self) -> Option<&str> {
        self.checked_text(self.record().source_map.as_ref()?, "source map")
    }

    /// The checksum the source map's segment was stored with (XXH3-128 of its bytes, checked
    /// when the map is read), if it has one: what identifies this map without reading it.
    #[cfg(feature = "quickjs")]
    pub(crate) fn source_map_checksum(&self) -> Option<[u8; 16]> {
        self.record().source_map.as_ref().map(|s| s.checksum)
    }

    /// The content hashes recorded for the entry's inputs, in order.
    #[cfg(feature = "quickjs")]
    pub(crate) fn recorded_input_hashes(&self) -> impl Iterator<Item = [u8; 16]> + '_ {
        self.record().inputs.iter().map(|input| input.content_hash)
    }

    /// Whether the bytecode was stored from this crate's own QuickJS compile path
    /// (`quickjs::Bytecode`), not handed to `put` by a caller: only such bytecode is ever given
    /// to `Module::load`.
    pub fn is_engine_bytecode(&self) -> bool {
        self.record().flags.to_native() & crate::format::FLAG_ENGINE_BYTECODE != 0
    }

    /// Whether the entry is a pointer this crate stored (its bytecode is another entry's key).
    #[cfg(feature = "quickjs")]
    pub(crate) fn is_pointer(&self) -> bool {
        self.record().flags.to_native() & crate::format::FLAG_POINTER != 0
    }

    /// The caller's sidecar, if one was stored; checked as [`Hit::source_map`] is.
    pub fn aux(&self) -> Option<&str> {
        self.checked_text(self.record().aux.as_ref()?, "aux")
    }

    /// The caller's sidecar: `Ok(None)` if none was stored, `Err(())` if its bytes are damaged
    /// (which [`Hit::aux`] also says as `None`).
    #[cfg(feature = "quickjs")]
    pub(crate) fn stored_aux(&self) -> Result<Option<&str>, ()> {
        match self.record().aux.as_ref() {
            None => Ok(None),
            Some(segment) => self.checked_text(segment, "aux").map(Some).ok_or(()),
        }
    }

    /// The text of one of this entry's segments, if its bytes pass their checksum.
    fn checked_text(
        &self,
        segment: &crate::format::ArchivedSegmentRef,
        what: &str,
    ) -> Option<&str> {
        let Some(bytes) = self.snapshot.checked_segment(segment) else {
            log::warn!(
                "bytecode-pack: the {what} of cached {} is damaged, left out",
                self.module_name()
            );
            return None;
        };
        std::str::from_utf8(bytes).ok()
    }
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("module_name", &self.module_name())
            .field("bytecode_len", &self.bytecode().len())
            .finish()
    }
}

/// One live entry, as listed by [`crate::Cache::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Its key.
    pub key: Key,
    /// The module name given to `put`.
    pub module_name: String,
    /// Bytecode length.
    pub bytecode_bytes: u64,
    /// Bytes of all its segments in the pack, headers included.
    pub stored_bytes: u64,
    /// How many inputs it records.
    pub inputs: u64,
    /// When it was recorded.
    pub recorded_at: std::time::SystemTime,
}
