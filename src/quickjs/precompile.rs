//! [`precompile`]: a module graph compiled into the cache ahead of time (at an image's build,
//! in CI), so that the first start where it is deployed compiles nothing; as Python's
//! `compileall` and LLRT's `llrt compile` do.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rquickjs::loader::FileResolver;
use rquickjs::{Context, Runtime};

use super::{CompileOptions, PackLoader, PackResolver, engine, process_counters};
use crate::cache::Cache;
use crate::error::{Error, Result};

/// What to compile ahead of time, relative to the working directory (the project root, as
/// for [`PackLoader`]).
#[derive(Debug, Clone, Default)]
pub struct Precompile {
    entries: Vec<String>,
    dirs: Vec<PathBuf>,
    options: CompileOptions,
    jobs: usize,
}

/// What [`precompile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrecompileReport {
    /// Modules compiled (a module already in the cache is not compiled again).
    pub compiled: u64,
    /// Modules reached in all: from the entries through their imports, and under the dirs.
    pub modules: u64,
    /// Each failure: the entry or file it was reached from, and the engine's message (which
    /// names the module at fault). Every other module is still stored.
    pub failures: Vec<(String, String)>,
    /// Files under the dirs left alone: not regular files (FIFOs, devices, sockets), and
    /// directories reached again through a symlink.
    pub skipped: Vec<PathBuf>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Precompile {
    /// Nothing yet; compiled with default [`CompileOptions`], on every core.
    pub fn new() -> Precompile {
        Precompile::default()
    }

    /// An entry module, by the name a host imports it by (`src/main.js`): it and everything
    /// it imports, resolved as [`PackResolver`] resolves with the same `FileResolver`.
    pub fn entry(mut self, name: impl Into<String>) -> Precompile {
        self.entries.push(name.into());
        self
    }

    /// Every `.js` and `.mjs` file under `dir` (and what they import), as `compileall` does.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Precompile {
        self.dirs.push(dir.into());
        self
    }

    /// Writes bytecode with these options (the host's loader must use the same).
    pub fn options(mut self, options: CompileOptions) -> Precompile {
        self.options = options;
        self
    }

    /// How many threads compile at once (0, the default: one per core; never more than the
    /// cores).
    pub fn jobs(mut self, jobs: usize) -> Precompile {
        self.jobs = jobs;
        self
    }
}

/// Compiles what `request` names into `cache`, resolving with the `FileResolver` that
/// `resolver` makes (one per thread; the host's, configured the same), without evaluating
/// any module: each entry (or file) is reached as a host's import reaches it, and loaded with
/// its imports through a [`PackResolver`] and a [`PackLoader`], which store what they compile.
/// A module that fails (a syntax error, a missing import) is reported with the engine's
/// message; the others are stored. `progress` is called after each entry or file.
pub fn precompile(
    cache: &Cache,
    resolver: &(dyn Fn() -> FileResolver + Sync),
    request: &Precompile,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<PrecompileReport> {
    let started = Instant::now();
    let mut report = PrecompileReport::default();
    let mut names = request.entries.clone();
    for dir in &request.dirs {
        // Named as the root's imports name them: relative to the working directory.
        if dir.is_absolute() {
            return Err(Error::Insecure {
                path: dir.clone(),
                problem: "a directory to precompile is named relative to the project root \
                          (the working directory)"
                    .into(),
            });
        }
        walk(dir, &mut names, &mut report.skipped, &mut HashSet::new())?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // More workers than cores only add runtimes: each compiles with one.
    let jobs = match request.jobs {
        0 => cores,
        n => n.min(cores),
    }
    .clamp(1, names.len().max(1));
    let before = process_counters().compiles;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let chunks: Vec<&[String]> = names.chunks(names.len().div_ceil(jobs).max(1)).collect();
    let total = names.len();
    let tick = || {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress(n, total);
    };
    let compile = |chunk: &[String]| load_all(cache, resolver, request.options, chunk, &tick);
    let results: Vec<Result<Loaded>> = std::thread::scope(|scope| {
        // A chunk whose thread the system refuses (a process or cgroup limit) is compiled here,
        // after the others started.
        let (running, refused): (Vec<_>, Vec<_>) = chunks
            .iter()
            .map(|&chunk| {
                let compile = &compile;
                let spawned =
                    std::thread::Builder::new().spawn_scoped(scope, move || compile(chunk));
                (chunk, spawned)
            })
            .partition(|(_, spawned)| spawned.is_ok());
        let here: Vec<_> = refused
            .into_iter()
            .map(|(chunk, _)| compile(chunk))
            .collect();
        let there = running.into_iter().map(|(_, spawned)| {
            let worker = spawned.expect("partitioned by success");
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        here.into_iter().chain(there).collect()
    });
    for result in results {
        let (modules, failures) = result?;
        report.modules += modules;
        report.failures.extend(failures);
    }
    report.compiled = process_counters().compiles - before;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// How many modules one worker loaded, and its failures (name, message).
type Loaded = (u64, Vec<(String, String)>);

/// Loads `names` and their imports in one runtime, storing what its loader compiles when it is
/// dropped. Returns how many modules it loaded, and the failures.
fn load_all(
    cache: &Cache,
    resolver: &(dyn Fn() -> FileResolver + Sync),
    options: CompileOptions,
    names: &[String],
    progress: &dyn Fn(),
) -> Result<Loaded> {
    let quickjs = |e: rquickjs::Error| Error::QuickJs {
        module: "<precompile>".into(),
        message: e.to_string(),
    };
    let runtime = Runtime::new().map_err(quickjs)?;
    let loaded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    runtime.set_loader(
        PackResolver::new(resolver(), cache.clone()),
        Counted(
            PackLoader::new(cache.clone()).with_options(options),
            loaded.clone(),
        ),
    );
    let context = Context::full(&runtime).map_err(quickjs)?;
    let mut failures = Vec::new();
    // Named like a module in the root: its relative imports resolve against the root.
    let importer = CString::new("<bytecode-pack precompile>.js").expect("no NUL");
    context.with(|ctx| {
        for name in names {
            let source = format!("import {};\n", js_string(&format!("./{name}")));
            let Ok(source) = CString::new(source) else {
                failures.push((name.clone(), "a name with a NUL byte".to_owned()));
                continue;
            };
            if !engine::load_imports_of(&ctx, &importer, &source) {
                let caught = ctx.catch();
                let message = caught
                    .as_exception()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| format!("{caught:?}"));
                failures.push((name.clone(), message.trim_end().to_owned()));
            }
            progress();
        }
    });
    drop(context);
    drop(runtime);
    Ok((loaded.load(std::sync::atomic::Ordering::Relaxed), failures))
}

/// A [`PackLoader`] that counts the modules it loads.
struct Counted(PackLoader, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl rquickjs::loader::Loader for Counted {
    fn load<'js>(
        &mut self,
        ctx: &rquickjs::Ctx<'js>,
        name: &str,
        attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<rquickjs::Module<'js, rquickjs::module::Declared>> {
        let module = self.0.load(ctx, name, attributes)?;
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(module)
    }
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every `.js` / `.mjs` regular file under `dir` (names relative to the working directory,
/// sorted), into `names`. A symlink to a file is followed; a directory reached again (a
/// symlink loop) and anything but a regular file is skipped and listed.
fn walk(
    dir: &Path,
    names: &mut Vec<String>,
    skipped: &mut Vec<PathBuf>,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(Error::io(dir))?;
    let (dev, ino, _) = crate::sys::file_identity(&meta);
    if ino != 0 && !seen.insert((dev, ino)) {
        skipped.push(dir.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, names, skipped, seen)?,
            Ok(m) if m.is_file() => {
                let script = path.extension().is_some_and(|e| e == "js" || e == "mjs");
                if let (true, Some(name)) = (script, path.to_str()) {
                    names.push(name.trim_start_matches("./").to_owned());
                }
            }
            _ => skipped.push(path),
        }
    }
    Ok(())
}
