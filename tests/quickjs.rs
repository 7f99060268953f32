//! The QuickJS glue: cached modules behave like compiled ones, a second process compiles
//! nothing, edits invalidate, and no unverified or foreign byte reaches `Module::load`.
//!
//! Host runs happen in child processes (this binary re-invoked, `child` test) with the working
//! directory in a temp project, because rquickjs's `FileResolver` resolves against it.
#![cfg(feature = "quickjs")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bytecode_pack::quickjs::{self, CompileOptions, Origin, PackLoader, PackResolver};
use bytecode_pack::{Cache, Key, NewEntry, abi_tag};
use common::child::Child;
use rquickjs::loader::FileResolver;
use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Runtime};

/// A host process: runs `main.js` through `PackLoader`, prints its result and the counters.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let root = common::child::path_var("BP_ROOT");
    let runtime = Runtime::new().unwrap();
    let resolver = FileResolver::default().with_path(".");
    let cache = Cache::open(&root).unwrap();
    let loader = PackLoader::new(cache.clone());
    match role.as_str() {
        "script-loader" => runtime.set_loader(resolver, rquickjs::loader::ScriptLoader::default()),
        "pack-resolver" => {
            runtime.set_loader(PackResolver::new(resolver, cache.clone()), loader.clone())
        }
        _ => runtime.set_loader(resolver, loader.clone()),
    }
    let context = Context::full(&runtime).unwrap();
    if std::env::var_os("BP_REWRITE_SOURCES").is_some() {
        // The same bytes again, just before they are read: their ctimes are now, well inside
        // the racy window of that read (however long this process took to start).
        for name in ["main.js", "lib/math.js", "lib/describe.js"] {
            fs::write(name, fs::read(name).unwrap()).unwrap();
        }
    }
    let result = context.with(|ctx| {
        match Module::import(&ctx, "main.js")
            .and_then(|p| p.finish::<Object>())
            .catch(&ctx)
        {
            Ok(namespace) => namespace.get::<_, String>("result").unwrap(),
            Err(e) => format!("error: {}", e.to_string().replace('\n', " | ")),
        }
    });
    let c = quickjs::process_counters();
    println!("result={result}");
    println!(
        "compiles={} cache_loads={} hits_compiled={}",
        c.compiles, c.cache_loads, c.hits_compiled
    );
    println!(
        "rehashes={}",
        cache.stats().unwrap().counters.input_rehashes
    );
    // What the loader stores at drop, stored now, to see that it worked.
    println!(
        "flush={}",
        if loader.flush().is_ok() {
            "ok"
        } else {
            "failed"
        }
    );
    drop(context);
    drop(runtime);
}

struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

#[derive(Debug, PartialEq)]
struct Run {
    result: String,
    compiles: u64,
    cache_loads: u64,
    rehashes: u64,
    /// Hits compiled from their source instead of loaded (a large graph).
    hits_compiled: u64,
}

impl Project {
    fn new() -> Project {
        let (tmp, base) = common::canonical_tempdir();
        let dir = base.join("project");
        fs::create_dir_all(dir.join("lib")).unwrap();
        let root = base.join("cache");
        let p = Project {
            _tmp: tmp,
            dir,
            root,
        };
        p.write(
            "main.js",
            "import { add } from './lib/math.js';\n\
             import { describe } from './lib/describe.js';\n\
             export const result = describe(add(2, 3));\n",
        );
        p.write(
            "lib/math.js",
            "export function add(a, b) { return a + b; }\n",
        );
        p.write(
            "lib/describe.js",
            "import { add } from './math.js';\n\
             export const describe = (x) => `value=${x} next=${add(x, 1)}`;\n",
        );
        p
    }

    fn write(&self, name: &str, content: &str) {
        fs::write(self.dir.join(name), content).unwrap();
    }

    fn run(&self) -> Run {
        self.run_with("pack-loader")
    }

    fn run_with(&self, role: &str) -> Run {
        let stdout = self.child(role).run().expect_success();
        Self::parse(&stdout)
    }

    fn child(&self, role: &str) -> Child {
        Child::new(role)
            .current_dir(&self.dir)
            .env("BP_ROOT", &self.root)
    }

    fn parse(stdout: &str) -> Run {
        assert!(stdout.contains("flush=ok"), "{stdout}");
        let field = |name: &str| -> String {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
                .to_owned()
        };
        let result = stdout
            .lines()
            .find_map(|l| l.strip_prefix("result="))
            .unwrap()
            .to_owned();
        Run {
            result,
            compiles: field("compiles").parse().unwrap(),
            cache_loads: field("cache_loads").parse().unwrap(),
            rehashes: field("rehashes").parse().unwrap(),
            hits_compiled: field("hits_compiled").parse().unwrap(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.root.join(abi_tag())
    }
}

#[test]
fn a_second_process_compiles_nothing_and_an_edit_recompiles_only_that_file() {
    let project = Project::new();
    let first = project.run();
    assert_eq!(first.result, "value=5 next=6");
    assert_eq!((first.compiles, first.cache_loads), (3, 0));

    let second = project.run();
    assert_eq!(second.result, first.result);
    assert_eq!(
        (second.compiles, second.cache_loads),
        (0, 3),
        "imports across files from bytecode"
    );

    project.write(
        "lib/math.js",
        "export function add(a, b) { return a + b + 100; }\n",
    );
    let edited = project.run();
    assert_eq!(edited.result, "value=105 next=206");
    assert_eq!((edited.compiles, edited.cache_loads), (1, 2));
    assert_eq!(project.run().compiles, 0);
}

#[test]
fn corrupt_pack_bytes_are_recompiled_never_loaded() {
    let project = Project::new();
    assert_eq!(project.run().compiles, 3);
    // The last entry written is main.js's (imports are compiled while declaring): its bytecode,
    // then its place in the tree, a segment holding the bytecode's 16-byte key. The byte
    // damaged is the bytecode's last.
    let pack = common::pack_file(&project.cache_dir());
    let mut bytes = fs::read(&pack).unwrap();
    const SEGMENT_HEADER_LEN: usize = 56; // FORMAT.md, "Segments"
    let last = bytes.len() - 1 - (SEGMENT_HEADER_LEN + 16);
    bytes[last] ^= 0x55;
    fs::write(&pack, bytes).unwrap();
    assert!(
        !Cache::open(&project.root)
            .unwrap()
            .verify()
            .unwrap()
            .is_ok()
    );

    let run = project.run();
    assert_eq!(run.result, "value=5 next=6");
    assert_eq!((run.compiles, run.cache_loads), (1, 2));
}

#[test]
fn bytecode_under_another_abi_tag_is_never_loaded() {
    let project = Project::new();
    assert_eq!(project.run().compiles, 3);
    // Re-stamp the index as written by another build (another QuickJS, say), with a valid
    // header checksum: only the ABI check stands between those bytes and the engine.
    let index = project.cache_dir().join("index");
    let mut bytes = fs::read(&index).unwrap();
    let other = xxhash_rust::xxh3::xxh3_128(b"bp1-quickjs-ng0.1.0-rquickjs0.14-x86_64-le-64");
    bytes[16..32].copy_from_slice(&other.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..120]);
    bytes[120..128].copy_from_slice(&sum.to_le_bytes());
    fs::write(&index, bytes).unwrap();

    let run = project.run();
    assert_eq!(run.result, "value=5 next=6");
    assert_eq!((run.compiles, run.cache_loads), (3, 0));
    // The next writer rebuilt the cache for this build.
    assert_eq!(project.run().compiles, 0);
}

/// Everything observable about the test module, as strings.
fn observe(ctx: &Ctx<'_>, module: Module<'_>) -> Vec<String> {
    let (module, promise) = module.eval().unwrap();
    promise.finish::<()>().unwrap();
    let divide: Function = module.get("divide").unwrap();
    let ok: f64 = divide.call((6, 3)).unwrap();
    let thrown = match divide.call::<_, f64>((1, 0)).catch(ctx) {
        Err(CaughtError::Exception(e)) => format!(
            "{:?} | {:?}",
            e.message(),
            e.stack().map(|s| s.trim().to_owned())
        ),
        other => panic!(
            "expected an exception, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    };
    let squares: String = module
        .get::<_, Function>("squares")
        .unwrap()
        .call(())
        .unwrap();
    let text: String = module
        .get::<_, Function>("source")
        .unwrap()
        .call(())
        .unwrap();
    vec![ok.to_string(), thrown, squares, text]
}

const BEHAVIOUR_SRC: &str = "\
export function divide(a, b) {
  if (b === 0) {
    throw new RangeError('division by zero');
  }
  return a / b;
}
export const squares = () => JSON.stringify([1, 2, 3].map((x) => x * x));
export const source = () => String(divide).length > 20 ? 'has source' : 'no source';
";

fn declare_and_observe(root: &Path, options: CompileOptions) -> (Origin, Vec<String>) {
    let cache = Cache::open(root).unwrap();
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let (module, origin) = quickjs::declare_cached(
            &cache,
            &ctx,
            "behaviour.js",
            BEHAVIOUR_SRC.as_bytes(),
            options,
        )
        .unwrap();
        (origin, observe(&ctx, module))
    })
}

#[test]
fn a_cached_module_behaves_exactly_like_a_compiled_one() {
    let tmp = common::tempdir();
    for options in [CompileOptions::default(), CompileOptions::STRIPPED] {
        let (origin, compiled) = declare_and_observe(tmp.path(), options);
        assert_eq!(origin, Origin::Compiled);
        let (origin, cached) = declare_and_observe(tmp.path(), options);
        assert_eq!(origin, Origin::Cache);
        if options.strip_debug {
            // The module compiled in this process keeps its debug info; stripped bytecode
            // has none, so only stack traces may differ, and only when asked to strip.
            assert_eq!(compiled[0], cached[0]);
            assert_eq!(compiled[2..], cached[2..]);
            assert!(cached[1].contains("division by zero"), "{}", cached[1]);
        } else {
            assert_eq!(compiled, cached, "{options:?}");
        }
        assert_eq!(compiled[0], "2");
        assert!(compiled[1].contains("division by zero"), "{}", compiled[1]);
        assert_eq!(compiled[2], "[1,4,9]");
        if options == CompileOptions::default() {
            assert!(
                compiled[1].contains("behaviour.js:3"),
                "stack keeps file:line: {}",
                compiled[1]
            );
            assert_eq!(compiled[3], "has source");
        }
    }
}

/// The built-module path: a hit skips the build; an edit to any file the map names, or to the
/// build's configuration, makes it build again; the map and the sidecar come back on a hit.
#[test]
fn a_built_module_skips_its_build_until_an_input_or_the_configuration_changes() {
    let tmp = common::tempdir();
    let dir = tmp.path().canonicalize().unwrap();
    fs::write(
        dir.join("entry.js"),
        "import { h } from './helper.js'; export const v = h();",
    )
    .unwrap();
    fs::write(dir.join("helper.js"), "export const h = () => 1;").unwrap();
    // Inputs by path that changed within the racy window before a build keep it uncached.
    common::let_ctime_age();
    // What a bundler would emit for those two files (its map names both).
    let bundle = "const h = () => 1; export const v = h();";
    let map = r#"{"version":3,"sources":["entry.js","helper.js"],"names":[],"mappings":"AAAA"}"#;
    let cache = Cache::open(dir.join("cache")).unwrap();
    let builds = std::cell::Cell::new(0);
    let entry = dir.join("entry.js");
    let declare = |config: &[u8]| {
        let key = quickjs::BuildKey {
            name: "bundle.js",
            entries: &[entry.as_path()],
            config,
            options: CompileOptions::default(),
        };
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let built = quickjs::declare_built(&cache, &ctx, &key, || {
                builds.set(builds.get() + 1);
                Ok::<_, bytecode_pack::Error>(quickjs::Build {
                    source: bundle.into(),
                    source_map: Some(map.into()),
                    map_base: Some(dir.clone()),
                    aux: Some("metafile".into()),
                    inputs: vec![],
                })
            })
            .unwrap();
            assert_eq!(built.aux(), Some("metafile"));
            let stored_map = built.source_map().expect("the map comes back");
            assert!(stored_map.contains("helper.js"), "{stored_map}");
            built.origin
        })
    };
    assert_eq!(declare(b"v1"), Origin::Compiled);
    assert_eq!(declare(b"v1"), Origin::Cache);
    assert_eq!(builds.get(), 1, "a hit does not build");
    fs::write(dir.join("helper.js"), "export const h = () => 2;").unwrap();
    common::let_ctime_age();
    assert_eq!(declare(b"v1"), Origin::Compiled, "an edited helper");
    assert_eq!(declare(b"v1"), Origin::Cache);
    assert_eq!(declare(b"v2"), Origin::Compiled, "another configuration");
    fs::remove_file(dir.join("helper.js")).unwrap();
    assert_eq!(declare(b"v2"), Origin::Compiled, "a deleted input");
    assert_eq!(builds.get(), 4);
}

/// A file the build read that is edited while the build runs is never served as built: a
/// map's source without `sourcesContent` (recorded by path, after the build) keeps the module
/// uncached; the entry file (read before the build) makes the entry miss.
#[test]
fn a_build_whose_input_changes_while_it_runs_is_not_cached() {
    let tmp = common::tempdir();
    let dir = tmp.path().canonicalize().unwrap();
    let helper = dir.join("helper.js");
    fs::write(dir.join("entry.js"), "import { h } from './helper.js';").unwrap();
    fs::write(&helper, "export const h = () => 1;").unwrap();
    common::let_ctime_age();
    let map = r#"{"version":3,"sources":["entry.js","helper.js"],"names":[],"mappings":"AAAA"}"#;
    let cache = Cache::open(dir.join("cache")).unwrap();
    let entry = dir.join("entry.js");
    let declare = |edit_while_building: Option<(&Path, &str)>| {
        let key = quickjs::BuildKey {
            name: "bundle.js",
            entries: &[entry.as_path()],
            config: b"",
            options: CompileOptions::default(),
        };
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let built = quickjs::declare_built(&cache, &ctx, &key, || {
                // The bundler read the helper as it was; the user saves it before the build ends.
                if let Some((file, content)) = edit_while_building {
                    fs::write(file, content).unwrap();
                }
                Ok::<_, bytecode_pack::Error>(quickjs::Build {
                    source: "export const v = 1;".into(),
                    source_map: Some(map.into()),
                    map_base: Some(dir.clone()),
                    aux: None,
                    inputs: vec![],
                })
            })
            .unwrap();
            built.origin
        })
    };
    let edit_helper = Some((helper.as_path(), "export const h = () => 2;"));
    assert_eq!(declare(edit_helper), Origin::Compiled);
    common::let_ctime_age();
    let not_cached = "the build whose helper was edited was not cached";
    assert_eq!(declare(None), Origin::Compiled, "{not_cached}");
    assert_eq!(declare(None), Origin::Cache, "the next was");
    fs::write(&helper, "export const h = () => 3;").unwrap();
    common::let_ctime_age();
    let edit_entry = Some((entry.as_path(), "import { h } from './helper.js'; h();"));
    assert_eq!(
        declare(edit_entry),
        Origin::Compiled,
        "the helper was edited"
    );
    common::let_ctime_age();
    assert_eq!(
        declare(None),
        Origin::Compiled,
        "the entry was edited while built"
    );
    assert_eq!(declare(None), Origin::Cache);
}

#[test]
fn bytes_put_by_hand_are_never_handed_to_the_engine() {
    let tmp = common::tempdir();
    let cache = Cache::open(tmp.path()).unwrap();
    let key = Key::for_source("evil.js", b"");
    cache
        .put(&key, &NewEntry::new("evil.js", b"\x02not bytecode at all"))
        .unwrap();
    let hit = cache.get(&key).unwrap();
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let Err(err) = quickjs::load(&ctx, &hit) else {
            panic!("bytes put by hand were loaded")
        };
        assert!(err.to_string().contains("refusing to load"), "{err}");
    });
}

#[test]
fn errors_reach_the_host_exactly_as_with_rquickjs_own_loader() {
    let project = Project::new();
    project.write(
        "lib/math.js",
        "export function add(a, b) { return a + ; }\n",
    );
    let ours = project.run();
    let theirs = project.run_with("script-loader");
    assert!(ours.result.starts_with("error: "), "{}", ours.result);
    assert!(ours.result.contains("lib/math.js:1"), "{}", ours.result);
    assert_eq!(ours.result, theirs.result);
}

/// A module file claiming a terabyte (sparse: it costs nothing to make) fails its import with
/// a message naming it, at once: nothing of that size is allocated (which would abort the
/// process) or read (which would take hours).
#[test]
fn a_huge_module_file_is_an_import_error_not_an_abort() {
    let project = Project::new();
    project.write(
        "main.js",
        "import './big.js';\nexport const result = 'ran';\n",
    );
    let big = fs::File::create(project.dir.join("big.js")).unwrap();
    big.set_len(1 << 40).unwrap();
    for role in ["pack-loader", "pack-resolver"] {
        let run = project.run_with(role);
        assert!(run.result.starts_with("error: "), "{role}: {}", run.result);
        assert!(
            run.result.contains("big.js") && run.result.contains("1099511627776 bytes"),
            "{role}: {}",
            run.result
        );
        assert_eq!(run.compiles, 0, "{role}");
    }
}

#[test]
fn with_pack_resolver_a_second_start_compiles_nothing_and_an_edit_recompiles_one() {
    let project = Project::new();
    let first = project.run_with("pack-resolver");
    assert_eq!(first.result, "value=5 next=6");
    assert_eq!((first.compiles, first.cache_loads), (3, 0));
    let second = project.run_with("pack-resolver");
    assert_eq!(second.result, first.result);
    assert_eq!((second.compiles, second.cache_loads), (0, 3));
    project.write(
        "lib/math.js",
        "export function add(a, b) { return a + b + 100; }\n",
    );
    let edited = project.run_with("pack-resolver");
    assert_eq!(edited.result, "value=105 next=206");
    assert_eq!((edited.compiles, edited.cache_loads), (1, 2));
    assert_eq!(project.run_with("pack-resolver").compiles, 0);
    // A new file that now wins a resolution: `./lib/math.js` is explicit, so add a module
    // imported without extension and let a later pattern's file appear first.
    project.write(
        "main.js",
        "import { v } from './lib/v';\nexport const result = `v=${v}`;\n",
    );
    project.write("lib/v.js", "export const v = 'js';\n");
    assert_eq!(project.run_with("pack-resolver").result, "v=js");
    fs::remove_file(project.dir.join("lib/v.js")).unwrap();
    let gone = project.run_with("pack-resolver");
    assert!(gone.result.starts_with("error:"), "{gone:?}");
    assert_eq!(project.run_with("script-loader").result, gone.result);
}

/// A module importing 4,000 others: loaded from bytecode, QuickJS would resolve each of its
/// imports twice, walking its list of modules each time; a warm start compiles it from its
/// unchanged source instead, and loads the rest. An edit of it, or of what it imports, is
/// still seen.
#[test]
fn a_module_importing_thousands_is_compiled_on_a_warm_start_and_edits_are_seen() {
    let project = Project::new();
    let leaves = 4000;
    let main = |extra: &str| {
        let imports: String = (0..leaves)
            .map(|i| format!("import {{ f{i} }} from './lib/m{i}.js';\n"))
            .collect();
        let sum: Vec<String> = (0..leaves).map(|i| format!("f{i}()")).collect();
        format!(
            "{imports}export const result = `sum=${{{}}}{extra}`;\n",
            sum.join(" + ")
        )
    };
    for i in 0..leaves {
        project.write(
            &format!("lib/m{i}.js"),
            &format!("export const f{i} = () => 1;\n"),
        );
    }
    project.write("main.js", &main(""));
    common::let_ctime_age();
    let cold = project.run_with("pack-resolver");
    assert_eq!((cold.result.as_str(), cold.compiles), ("sum=4000", 4001));
    let warm = project.run_with("pack-resolver");
    assert_eq!(
        (
            warm.result.as_str(),
            warm.compiles,
            warm.cache_loads,
            warm.hits_compiled
        ),
        ("sum=4000", 0, 4000, 1),
        "{warm:?}"
    );
    // A copy of the tree (new inodes): its first start finds the module through its content,
    // compiled in the original, and compiles it over that hit all the same.
    let copy = project.dir.with_file_name("copy");
    common::tree::copy_tree(&project.dir, &copy);
    let copied = Child::new("pack-resolver")
        .current_dir(&copy)
        .env("BP_ROOT", &project.root)
        .run()
        .expect_success();
    let copied = Project::parse(&copied);
    assert_eq!(
        (
            copied.result.as_str(),
            copied.compiles,
            copied.hits_compiled
        ),
        ("sum=4000", 0, 1),
        "{copied:?}"
    );
    // What it imports edited: it is still compiled over its hit, and linked to the edit.
    project.write("lib/m7.js", "export const f7 = () => 2;\n");
    let edited = project.run_with("pack-resolver");
    let seen = |run: &Run| (run.result.clone(), run.compiles, run.hits_compiled);
    assert_eq!(seen(&edited), ("sum=4001".into(), 1, 1), "{edited:?}");
    project.write("main.js", &main(" edited"));
    let edited = project.run_with("pack-resolver");
    assert_eq!(
        seen(&edited),
        ("sum=4001 edited".into(), 1, 0),
        "{edited:?}"
    );
    // An edit its stat data cannot show (a write through a shared mapping whose page is
    // already writable moves no time, and keeps the size): a module compiled over its hit is
    // checked by the content it is compiled from, so the edit is seen and stored.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(project.dir.join("main.js"))
        .unwrap();
    // SAFETY: the file is this test's own; nothing truncates it while it is mapped.
    let mut mapped = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let s = std::str::from_utf8(&mapped).unwrap().find("sum=").unwrap();
    // Where the filesystem tracks writes through mappings (ext4), the first write moves the
    // file's times, and a start records them; on tmpfs no write through a mapping moves them.
    mapped[s] = b'S';
    common::let_ctime_age();
    let recorded = project.run_with("pack-resolver");
    assert_eq!(
        seen(&recorded),
        ("Sum=4001 edited".into(), 1, 0),
        "{recorded:?}"
    );
    let mtime = || {
        fs::metadata(project.dir.join("main.js"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime();
    mapped[s + 1] = b'U';
    if mtime() != before {
        // The page was written back meanwhile: this write moved the times, and a `stat` sees
        // it too, so the step below no longer tells the two checks apart.
        common::skipped("an edit stat data cannot show", "main.js's mtime moved");
    }
    let unseen_by_stat = project.run_with("pack-resolver");
    assert_eq!(
        seen(&unseen_by_stat),
        ("SUm=4001 edited".into(), 1, 0),
        "{unseen_by_stat:?}"
    );
    let again = project.run_with("pack-resolver");
    assert_eq!(seen(&again), ("SUm=4001 edited".into(), 0, 1), "{again:?}");
}

#[test]
fn eight_processes_cold_start_one_empty_cache_at_once() {
    let project = Project::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            project
                .child(if i % 2 == 0 {
                    "pack-resolver"
                } else {
                    "pack-loader"
                })
                .spawn()
        })
        .collect();
    for child in children {
        let out = child.wait_with_limit(std::time::Duration::from_secs(60));
        let run = Project::parse(&out.expect_success());
        assert_eq!(run.result, "value=5 next=6");
        assert_eq!(run.compiles + run.cache_loads, 3);
    }
    for role in ["pack-resolver", "pack-loader"] {
        let next = project.run_with(role);
        assert_eq!((next.compiles, next.cache_loads), (0, 3), "{role}");
    }
    assert!(
        Cache::open(&project.root)
            .unwrap()
            .verify()
            .unwrap()
            .is_ok()
    );
}

#[test]
fn a_tree_started_right_after_it_was_written_heals_by_the_third_start() {
    let project = Project::new();
    // Start 1, right after the sources were written: everything is compiled; the sources'
    // ctimes are too recent for their stat data to be trusted yet.
    let child = project.child("pack-resolver");
    let first = Project::parse(&child.env("BP_REWRITE_SOURCES", "1").run().expect_success());
    assert_eq!(first.compiles, 3);
    common::let_ctime_age();
    // Start 2: loads from the cache, re-hashing each racy input once, and re-records them.
    let second = project.run_with("pack-resolver");
    assert_eq!((second.compiles, second.rehashes), (0, 3));
    // Start 3 and later: one `stat` per input, nothing re-hashed, no compaction involved.
    for _ in 0..2 {
        let later = project.run_with("pack-resolver");
        assert_eq!((later.compiles, later.rehashes), (0, 0));
    }
}

/// On a filesystem whose ctime a user can set (FAT, exFAT; pretended here through the
/// `fault-injection` feature), stat data never vouches for a source: every start re-hashes each
/// one, so an edit that keeps the size and puts the mtime back (`cp -p` of a same-size file)
/// is still seen.
#[cfg(feature = "fault-injection")]
#[test]
fn on_a_filesystem_whose_ctime_can_be_set_every_start_rehashes_its_sources() {
    let project = Project::new();
    let run = || {
        let child = project
            .child("pack-resolver")
            .env("BYTECODE_PACK_PRETEND_CTIME_SETTABLE", "1");
        Project::parse(&child.run().expect_success())
    };
    assert_eq!(run().compiles, 3);
    common::let_ctime_age();
    for _ in 0..2 {
        let later = run();
        assert_eq!((later.compiles, later.rehashes), (0, 3));
        assert_eq!(later.result, "value=5 next=6");
    }
    let math = project.dir.join("lib/math.js");
    let mtime = fs::metadata(&math).unwrap().modified().unwrap();
    let before = fs::read(&math).unwrap();
    project.write(
        "lib/math.js",
        "export function add(a, b) { return a * b; }\n",
    );
    assert_eq!(fs::metadata(&math).unwrap().len(), before.len() as u64);
    common::set_mtime(&math, mtime);
    let edited = run();
    assert_eq!(
        (edited.compiles, edited.result.as_str()),
        (1, "value=6 next=6")
    );
}
