//! What the groups share: generated JavaScript modules and their bytecode, source files aged
//! past the racy window, and pre-filled caches.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytecode_pack::quickjs::{self, CompileOptions};
use bytecode_pack::{Cache, Key, NewEntry};
use rquickjs::{Context, Runtime};

/// A JavaScript module of `functions` small exported functions.
fn js_module(functions: usize) -> String {
    (0..functions)
        .map(|i| {
            format!(
                "export function f{i}(x) {{\n  const a = [x, {i}].map((v) => v * 2 + 1);\n  \
                 return a.reduce((s, v) => s + (v % 3 === 0 ? v / 3 : v), 0);\n}}\n"
            )
        })
        .collect()
}

fn compile_js(source: &str, options: CompileOptions) -> Vec<u8> {
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let (_, bytecode) = quickjs::compile(&ctx, "m.js", source.as_bytes(), options).unwrap();
        bytecode.as_bytes().to_vec()
    })
}

/// A module whose default bytecode is at least `target` bytes, and that bytecode.
pub struct Sized {
    pub label: &'static str,
    pub source: String,
    pub bytecode: Vec<u8>,
}

pub fn sized_module(label: &'static str, target: usize) -> Sized {
    let mut functions = 1;
    loop {
        let source = js_module(functions);
        let bytecode = compile_js(&source, CompileOptions::default());
        if bytecode.len() >= target {
            return Sized {
                label,
                source,
                bytecode,
            };
        }
        functions = (functions * target / bytecode.len()).max(functions + 1);
    }
}

/// Writes a file and backdates it past the racy window: an unchanged source tree.
pub fn old_file(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Lets freshly written inputs age past the racy window, as a real tree's sources have by the
/// time they are compiled: otherwise every lookup re-hashes them (correct, but not the case
/// being measured).
pub fn settle() {
    std::thread::sleep(bytecode_pack::RACY_WINDOW + Duration::from_millis(100));
}

/// An unchanged source tree: `n` files `<prefix><i>.js` under `dir`, each a module of
/// `functions` functions, backdated and settled.
pub fn old_sources(dir: &Path, prefix: &str, n: usize, functions: usize) -> Vec<PathBuf> {
    let files = (0..n)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i}.js"));
            old_file(&p, js_module(functions).as_bytes());
            p
        })
        .collect();
    settle();
    files
}

pub fn content_key(i: usize) -> Key {
    Key::for_source("bench.js", &(i as u64).to_le_bytes())
}

/// A cache under `dir` holding `n` content-keyed entries of `bytecode`, filled in one batch.
pub fn filled_cache(dir: &Path, n: usize, bytecode: &[u8]) -> Cache {
    let cache = Cache::builder(dir).max_bytes(u64::MAX).open().unwrap();
    let entry = NewEntry::new("bench.js", bytecode);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20_000) {
        cache
            .put_many(chunk.iter().map(|&i| (content_key(i), &entry)))
            .unwrap();
    }
    cache
}
