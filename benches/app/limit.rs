//! The in-memory limit: a record run (a [`RecordingResolver`] and a [`RecordingLoader`] that
//! compile every module) writes every resolution and every module's bytecode to two files; a
//! `limit` start reads both into memory before its clock starts and then serves the import
//! from a [`MapResolver`] and a [`MemoryLoader`] that touch no file.
//!
//! File format (bench-private, written and read by this binary in one run): a sequence of
//! records, each a fixed number of fields, each field a `u32` little-endian length and bytes.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Error, Module, Result, WriteOptions};

/// `(base, name, resolved)` per resolver call.
pub const RESOLUTIONS_FILE: &str = "resolutions.bin";
/// `(module name, bytecode)` per loaded module.
pub const BYTECODE_FILE: &str = "bytecode.bin";

pub fn write_records<const N: usize>(path: &Path, records: &[[&[u8]; N]]) {
    let mut out = Vec::new();
    for record in records {
        for field in record {
            out.extend_from_slice(&u32::try_from(field.len()).unwrap().to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

pub fn read_records<const N: usize>(path: &Path) -> Vec<[Vec<u8>; N]> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rest = &bytes[..];
    let mut records = Vec::new();
    while !rest.is_empty() {
        records.push(std::array::from_fn(|_| {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
            let (field, tail) = tail.split_at(len);
            rest = tail;
            field.to_vec()
        }));
    }
    records
}

fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("module names are UTF-8")
}

/// Every resolution seen: `(base, name, resolved)`.
pub type ResolutionLog = Arc<Mutex<Vec<[String; 3]>>>;
/// Every module compiled: `(name, bytecode)`.
pub type BytecodeLog = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Wraps a resolver and records what it answers.
pub struct RecordingResolver<R> {
    pub inner: R,
    pub log: ResolutionLog,
}

impl<R: Resolver> Resolver for RecordingResolver<R> {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        let resolved = self.inner.resolve(ctx, base, name, attributes)?;
        self.log
            .lock()
            .unwrap()
            .push([base.to_owned(), name.to_owned(), resolved.clone()]);
        Ok(resolved)
    }
}

/// Compiles every module from its file, as `ScriptLoader` does, and records its bytecode
/// (default `WriteOptions`, as `PackLoader` writes by default).
pub struct RecordingLoader {
    pub log: BytecodeLog,
}

impl Loader for RecordingLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        let source = fs::read(name)?;
        let module = Module::declare(ctx.clone(), name, source)?;
        let bytecode = module.write(WriteOptions::default())?;
        self.log.lock().unwrap().push((name.to_owned(), bytecode));
        Ok(module)
    }
}

/// Writes a record run's logs into `dir`.
pub fn store(dir: &Path, resolutions: &ResolutionLog, bytecode: &BytecodeLog) {
    let resolutions = resolutions.lock().unwrap();
    let records: Vec<[&[u8]; 3]> = resolutions
        .iter()
        .map(|[b, n, r]| [b.as_bytes(), n.as_bytes(), r.as_bytes()])
        .collect();
    write_records(&dir.join(RESOLUTIONS_FILE), &records);
    let bytecode = bytecode.lock().unwrap();
    let records: Vec<[&[u8]; 2]> = bytecode
        .iter()
        .map(|(n, b)| [n.as_bytes(), &b[..]])
        .collect();
    write_records(&dir.join(BYTECODE_FILE), &records);
}

/// Answers from a map recorded earlier: base, then name (nested, so a lookup by `&str`
/// allocates nothing but the returned `String` the `Resolver` API requires).
pub struct MapResolver(HashMap<String, HashMap<String, String>>);

/// Serves bytecode held in memory.
pub struct MemoryLoader(HashMap<String, Vec<u8>>);

/// Reads what a record run stored in `dir`: everything a `limit` start needs, before its
/// clock starts.
pub fn read(dir: &Path) -> (MapResolver, MemoryLoader) {
    let mut map: HashMap<String, HashMap<String, String>> = HashMap::new();
    for [base, name, resolved] in read_records::<3>(&dir.join(RESOLUTIONS_FILE)) {
        map.entry(utf8(base))
            .or_default()
            .insert(utf8(name), utf8(resolved));
    }
    let modules = read_records::<2>(&dir.join(BYTECODE_FILE))
        .into_iter()
        .map(|[name, bytecode]| (utf8(name), bytecode))
        .collect();
    (MapResolver(map), MemoryLoader(modules))
}

/// The name of every module the record run in `dir` loaded, in load order.
pub fn module_names(dir: &Path) -> Vec<String> {
    read_records::<2>(&dir.join(BYTECODE_FILE))
        .into_iter()
        .map(|[name, _]| utf8(name))
        .collect()
}

impl Resolver for MapResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        self.0
            .get(base)
            .and_then(|names| names.get(name))
            .cloned()
            .ok_or_else(|| Error::new_resolving(base, name))
    }
}

impl Loader for MemoryLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        let bytecode = self.0.get(name).ok_or_else(|| Error::new_loading(name))?;
        // SAFETY: these bytes were produced by `Module::write` in this same binary (the
        // record run, a child process of this bench run), stored in a private temp dir
        // created by this run and read back unchanged; the engine and its version are the
        // same.
        unsafe { Module::load(ctx.clone(), bytecode) }
    }
}
