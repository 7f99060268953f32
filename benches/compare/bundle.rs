//! `bundle`: the bundle path on real esbuild output (`tests/fixtures/sourcemaps/`: one bundle
//! of 201 TypeScript sources, its map naming all of them).
//!
//! - `declare_built_hit`: `quickjs::declare_built` on a hit: the lookup by the build's entry
//!   file and configuration, the 201 inputs checked (one `stat` each), the bytecode loaded, the
//!   map registered for stack frames. The build does not run.
//! - `seed_by_hand_hit`: the seed's design for the same lookup, written by hand: `Key` from the
//!   entry path and configuration, `Cache::get` (the same 201 checks), `quickjs::load`.
//! - `compile_bundle`: what a hit replaces after the bundler ran: compiling the bundle's source.
//! - `stack_20_frames`: after the first, an error thrown through 20 mapped frames of the
//!   bundle, its stack formatted with original files and lines (the map parsed already).
//! - `stack_20_frames_unmapped`: the same throw in the same bundle loaded without its map.

use std::path::{Path, PathBuf};

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{self, Build, BuildKey, CompileOptions};
use criterion::Criterion;
use rquickjs::{Context, Function, Module, Runtime};

/// The fixture tree, copied into a temp dir (so that the map's sources lie under the
/// working directory the bench runs in).
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("fixtures");
    crate::tree::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sourcemaps"),
        &root,
    );
    // Past the racy window of the copy: hits trust a `stat`.
    std::thread::sleep(bytecode_pack::RACY_WINDOW + std::time::Duration::from_millis(100));
    (tmp, root)
}

const CONFIG: &[u8] = b"esbuild 0.28.2 --bundle --format=esm --sourcemap";

pub fn bench(c: &mut Criterion) {
    let (_tmp, root) = fixture();
    let cwd = std::env::current_dir().unwrap();
    // Built modules' maps keep sources relative to the working directory.
    std::env::set_current_dir(&root).unwrap();
    let source = std::fs::read_to_string("esbuild-bundle/bundle.js").unwrap();
    let map = std::fs::read_to_string("esbuild-bundle/bundle.js.map").unwrap();
    let entry = root.join("bundle-src/entry.ts");
    let entries = [entry.as_path()];
    let key = BuildKey {
        name: "bundle.js",
        entries: &entries,
        config: CONFIG,
        options: CompileOptions::default(),
    };
    let build = || {
        Ok::<_, bytecode_pack::Error>(Build {
            source: source.clone(),
            source_map: Some(map.clone()),
            map_base: Some(root.join("esbuild-bundle")),
            ..Build::default()
        })
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cache_dir.path().join("cache")).unwrap();
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let built = quickjs::declare_built(&cache, &ctx, &key, build).unwrap();
        assert_eq!(built.origin, quickjs::Origin::Compiled);
    });
    // The seed's design: its own entry, keyed by the entry path and the configuration.
    let seed_key = bytecode_pack::Key::for_paths(&entries).derive(&[CONFIG]);
    context.with(|ctx| {
        let (_, bytecode) = quickjs::compile(
            &ctx,
            "bundle.js",
            source.as_bytes(),
            CompileOptions::default(),
        )
        .unwrap();
        let inputs =
            bytecode_pack::collect_inputs(&entries, Some(&map), &root.join("esbuild-bundle"));
        assert!(inputs.len() >= 201, "the bundle's sources");
        let inputs = inputs.into_iter().map(bytecode_pack::Input::path).collect();
        let entry = bytecode.entry("bundle.js").source_map(&map).inputs(inputs);
        cache.put(&seed_key, &entry).unwrap();
    });

    let mut group = c.benchmark_group("bundle");
    group.bench_function("declare_built_hit", |b| {
        b.iter(|| {
            context.with(|ctx| {
                let built = quickjs::declare_built(
                    &cache,
                    &ctx,
                    &key,
                    || -> Result<Build, bytecode_pack::Error> { panic!("a hit never builds") },
                )
                .unwrap();
                built.source_map().map(str::len)
            })
        })
    });
    group.bench_function("seed_by_hand_hit", |b| {
        b.iter(|| {
            context.with(|ctx| {
                let hit = cache.get(&seed_key).expect("a hit");
                let module = quickjs::load(&ctx, &hit).unwrap();
                (module, hit.source_map().map(str::len)).1
            })
        })
    });
    group.bench_function("compile_bundle", |b| {
        b.iter(|| {
            context.with(|ctx| {
                quickjs::compile(
                    &ctx,
                    "bundle.js",
                    source.as_bytes(),
                    CompileOptions::default(),
                )
                .unwrap()
                .1
                .as_bytes()
                .len()
            })
        })
    });
    drop(context);
    drop(runtime);

    for (id, mapped) in [
        ("stack_20_frames", true),
        ("stack_20_frames_unmapped", false),
    ] {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let run: Function = if mapped {
                let built = quickjs::declare_built(&cache, &ctx, &key, build).unwrap();
                let (module, promise) = built.module.eval().unwrap();
                promise.finish::<()>().unwrap();
                module.get("run").unwrap()
            } else {
                let module = Module::declare(ctx.clone(), "plain.js", source.as_str()).unwrap();
                let (module, promise) = module.eval().unwrap();
                promise.finish::<()>().unwrap();
                module.get("run").unwrap()
            };
            ctx.globals().set("run", run).unwrap();
            let throw: Function = ctx
                .eval(
                    "Error.stackTraceLimit = 100; \
                     () => { try { run(); } catch (e) { return e.stack; } }",
                )
                .unwrap();
            // The first throw parses the map; every later one is what is measured.
            let stack: String = throw.call(()).unwrap();
            let frames = stack.lines().filter(|l| l.contains("bundle-src/")).count();
            assert_eq!(frames >= 20, mapped, "{stack}");
            group.bench_function(id, |b| {
                b.iter(|| throw.call::<_, String>(()).unwrap().len())
            });
        });
    }
    group.finish();
    std::env::set_current_dir(cwd).unwrap();
}
