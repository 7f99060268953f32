//! The per-file cache design (`benches/compare/per_file.rs`) as an rquickjs `Loader`: one
//! `<key>.json` manifest and one `<key>.bin` per module, keyed by the module's path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rquickjs::loader::{ImportAttributes, Loader};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Module, Result, WriteOptions};

use crate::per_file::{self, PerFileCache};

/// Modules this process compiled because the per-file cache missed.
pub static MISSES: AtomicU64 = AtomicU64::new(0);

pub struct PerFileLoader {
    pub cache: PerFileCache,
}

impl Loader for PerFileLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        let path = Path::new(name);
        // The design's lookup: canonical path -> key, manifest, every input re-hashed, bytecode.
        let key = per_file::key_for(&[path]);
        if let Some(bytecode) = self.cache.get(key) {
            // SAFETY: the bytes were produced by `Module::write` in this same binary (below,
            // in an earlier start of this bench run) and stored in a cache dir this run
            // created; the engine and its version are the same.
            return unsafe { Module::load(ctx.clone(), &bytecode) };
        }
        MISSES.fetch_add(1, Ordering::Relaxed);
        let source = std::fs::read(path)?;
        let module = Module::declare(ctx.clone(), name, source)?;
        let bytecode = module.write(WriteOptions::default())?;
        self.cache.put(key, name, &bytecode, &[PathBuf::from(name)]);
        Ok(module)
    }
}
