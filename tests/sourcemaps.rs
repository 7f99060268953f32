//! Stack frames of modules that carry source maps name the original files and lines, as
//! `node --enable-source-maps` names them, on a first start and on a warm one; bad maps never
//! break the program.
//!
//! The fixtures (`tests/fixtures/sourcemaps/`) are real `tsc` and `esbuild` output with Node's
//! stacks for the same code; see their README. Each start is a child process (this binary
//! re-invoked) whose working directory is a copy of the fixtures.
#![cfg(feature = "quickjs")]
#![cfg(unix)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{self, PackLoader, PackResolver};
use common::child::Child;
use common::tree::copy_tree;
use rquickjs::loader::FileResolver;
use rquickjs::{CatchResultExt, Context, Module, Runtime};

/// A host start: imports `BP_ENTRY` from a driver module that calls its `run()` and keeps
/// the thrown error's stack (with `BP_HOST_PREPARE`, after setting its own
/// `Error.prepareStackTrace`); prints the stack, what it compiled and the warnings.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    common::print_warnings();
    let cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
    if role == "built" {
        return built_bundle(&cache);
    }
    let entry = std::env::var("BP_ENTRY").unwrap();
    // Before: set by a script run before any module loads (imports are hoisted, so setting it
    // at the top of the driver would run after its imports loaded).
    let host_before = std::env::var("BP_HOST_PREPARE").as_deref() == Ok("before");
    let host_after = match std::env::var("BP_HOST_PREPARE").as_deref() {
        Ok("after") => HOST_PREPARE,
        _ => "",
    };
    let prelude = std::env::var("BP_PRELUDE").unwrap_or_default();
    let driver = format!(
        "import {{ run }} from '{entry}';\n{host_after}\n{prelude}\nError.stackTraceLimit = 100;\n\
         let stack = 'did not throw';\ntry {{ run(); }} catch (e) {{ stack = e.stack; }}\n\
         export {{ stack }};\n"
    );
    let runtime = Runtime::new().unwrap();
    // A chain of 200 imports links 200 modules deep (the parent gives this thread the stack).
    runtime.set_max_stack_size(8 << 20);
    runtime.set_loader(
        PackResolver::new(FileResolver::default().with_path("."), cache.clone()),
        PackLoader::new(cache.clone()),
    );
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        // `BP_COPY_AFTER_LOADS=<from>:<to>`: `copyAfterLoads()` copies a file, for a prelude
        // to call once every module has loaded.
        if let Ok(copy) = std::env::var("BP_COPY_AFTER_LOADS") {
            // `<from>:<to>[,<from>:<to>...]`, copied in order.
            let pairs: Vec<(String, String)> = copy
                .split(',')
                .map(|pair| {
                    let (from, to) = pair.split_once(':').unwrap();
                    (from.to_owned(), to.to_owned())
                })
                .collect();
            let copy = rquickjs::Function::new(ctx.clone(), move || {
                for (from, to) in &pairs {
                    fs::copy(from, to).unwrap();
                }
            })
            .unwrap();
            ctx.globals().set("copyAfterLoads", copy).unwrap();
        }
        if host_before {
            ctx.eval::<(), _>(HOST_PREPARE)
                .catch(&ctx)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let stack: String = Module::declare(ctx.clone(), "driver.js", driver)
            .and_then(|m| m.eval())
            .and_then(|(module, promise)| {
                promise.finish::<()>()?;
                module.get("stack")
            })
            .catch(&ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        for line in stack.lines() {
            println!("stack: {line}");
        }
        if let Ok(global) = std::env::var("BP_PRINT") {
            let value: rquickjs::Value = ctx.globals().get(global.as_str()).unwrap();
            println!("printed: {value:?}");
        }
    });
    drop(context);
    drop(runtime);
    println!("compiles={}", quickjs::process_counters().compiles);
}

/// A host of the bundle path: the esbuild bundle through `declare_built`, its build (reading
/// the bundler's output, as if the bundler ran) counted; prints the stack of its `run()`.
fn built_bundle(cache: &Cache) {
    let entry = std::env::current_dir().unwrap().join("bundle-src/entry.ts");
    let key = quickjs::BuildKey {
        name: "bundle.js",
        entries: &[entry.as_path()],
        config: b"esbuild 0.28.2 --bundle --format=esm --sourcemap",
        options: quickjs::CompileOptions::default(),
    };
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let built = quickjs::declare_built(cache, &ctx, &key, || {
            println!("built");
            Ok::<_, bytecode_pack::Error>(quickjs::Build {
                source: fs::read_to_string("esbuild-bundle/bundle.js").unwrap(),
                source_map: Some(fs::read_to_string("esbuild-bundle/bundle.js.map").unwrap()),
                map_base: Some(std::env::current_dir().unwrap().join("esbuild-bundle")),
                ..quickjs::Build::default()
            })
        })
        .unwrap();
        let (module, promise) = built.module.eval().unwrap();
        promise.finish::<()>().unwrap();
        let run: rquickjs::Function = module.get("run").unwrap();
        ctx.globals().set("run", run).unwrap();
        let stack: String = ctx
            .eval(
                "Error.stackTraceLimit = 100; let s = 'did not throw'; \
                 try { run(); } catch (e) { s = e.stack; } s",
            )
            .unwrap();
        for line in stack.lines() {
            println!("stack: {line}");
        }
    });
    println!("compiles={}", quickjs::process_counters().compiles);
}

/// A host's own `Error.prepareStackTrace`: one `file:line` per call site, joined by `|`.
const HOST_PREPARE: &str = "globalThis.hostPrepare = (error, sites) => 'host:' + \
     sites.map((s) => `${s.getFileName()}:${s.getLineNumber()}:${s.getColumnNumber()}`).join('|'); \
     Error.prepareStackTrace = globalThis.hostPrepare;";

struct Start {
    stack: Vec<String>,
    compiles: u64,
    warnings: Vec<String>,
    /// What `BP_PRINT` named.
    printed: String,
}

fn start(project: &Path, cache: &Path, entry: &str, env: &[(&str, &str)]) -> Start {
    let mut child = Child::new("start")
        .env("RUST_MIN_STACK", (64 << 20).to_string())
        .current_dir(project)
        .env("BP_ROOT", cache)
        .env("BP_ENTRY", entry);
    for (name, value) in env {
        child = child.env(name, value);
    }
    let out = child
        .run_with_limit(Duration::from_secs(60))
        .expect_success();
    let lines = |prefix: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    Start {
        stack: lines("stack: "),
        compiles: lines("compiles=")[0].parse().unwrap(),
        warnings: lines("warn: "),
        printed: lines("printed: ").join("\n"),
    }
}

/// A copy of the fixtures, and a cache beside it.
fn fixtures() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, base) = common::canonical_tempdir();
    let project = base.join("project");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sourcemaps"),
        &project,
    );
    common::let_ctime_age();
    (tmp, project, base.join("cache"))
}

/// `(file, line)` of each frame of a stack in QuickJS's (and V8's) format: `at name
/// (file:line:col)` or `at file:line:col`.
fn frames(stack: &[String]) -> Vec<(String, u32)> {
    stack
        .iter()
        .filter_map(|line| {
            let at = line.trim().strip_prefix("at ")?;
            let place = match at.rsplit_once(" (") {
                Some((_, place)) => place.strip_suffix(')')?,
                None => at,
            };
            let mut parts = place.rsplitn(3, ':');
            let (_col, line, file) = (parts.next()?, parts.next()?, parts.next()?);
            Some((file.to_owned(), line.parse().ok()?))
        })
        .collect()
}

/// Node's frames for `case`, without the driver's own (the last).
fn node_frames(project: &Path, case: &str) -> Vec<(String, u32)> {
    let text = fs::read_to_string(project.join(format!("expected-node/{case}.txt"))).unwrap();
    let lines: Vec<String> = text.lines().map(|l| l.replace("<FIXTURES>/", "")).collect();
    let mut frames = frames(&lines);
    assert!(frames.pop().unwrap().0.ends_with("driver.mjs"));
    frames
}

/// Our frames in the fixture's files (the driver's own dropped).
fn our_frames(start: &Start) -> Vec<(String, u32)> {
    let mut frames = frames(&start.stack);
    frames.retain(|(file, _)| file != "driver.js");
    frames
}

/// The file of the innermost frame in the user's code.
fn innermost_file(start: &Start) -> String {
    let frames = our_frames(start).into_iter().next();
    frames
        .unwrap_or_else(|| panic!("no frame of ours: {:?}", start.stack))
        .0
}

/// The record of a module's map file its entry keeps (the start of it, without the hash).
const MAP_RECORD: &str = "bytecode-pack map file 1\nutil.js.map\n";

/// Whether the pack of the cache under `cache` holds the record of `util.js.map` in `dist`
/// as the file is now.
fn pack_holds_the_util_map_record(cache: &Path, dist: &Path) -> bool {
    let pack = fs::read(common::pack_file(&cache.join(bytecode_pack::abi_tag()))).unwrap();
    let hash = xxhash_rust::xxh3::xxh3_128(&fs::read(dist.join("util.js.map")).unwrap());
    let record = format!("{MAP_RECORD}{hash:032x}");
    pack.windows(record.len()).any(|w| w == record.as_bytes())
}

fn maps_as_node_does(case: &str, entry: &str) {
    let (_tmp, project, cache) = fixtures();
    let expected = node_frames(&project, case);
    assert!(expected.len() >= 3, "{expected:?}");
    let first = start(&project, &cache, entry, &[]);
    assert!(first.compiles >= 1, "the first start compiles");
    assert_eq!(
        our_frames(&first),
        expected,
        "first start: {:?}",
        first.stack
    );
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let warm = start(&project, &cache, entry, &[]);
    assert_eq!(warm.compiles, 0, "the second start is warm");
    assert_eq!(our_frames(&warm), expected, "warm start: {:?}", warm.stack);
}

#[test]
fn tsc_output_with_map_files_names_the_typescript_lines() {
    maps_as_node_does("tsc-external", "tsc-external/main.js");
}

#[test]
fn tsc_output_with_inline_maps_names_the_typescript_lines() {
    maps_as_node_does("tsc-inline", "tsc-inline/main.js");
}

#[test]
fn an_esbuild_bundle_names_each_frame_in_its_own_source() {
    maps_as_node_does("esbuild-bundle", "esbuild-bundle/bundle.js");
    maps_as_node_does("esbuild-bundle-inline", "esbuild-bundle/bundle-inline.js");
}

/// A copy of the tree (new inodes, as `cp -a` makes) compiles nothing and maps as the
/// original does.
#[test]
fn a_copied_tree_compiles_nothing_and_keeps_its_frames_mapped() {
    let (_tmp, project, cache) = fixtures();
    let expected = node_frames(&project, "tsc-external");
    for (case, entry) in [
        ("tsc-external", "tsc-external/main.js"),
        ("tsc-inline", "tsc-inline/main.js"),
    ] {
        start(&project, &cache, entry, &[]);
        let copy = project.with_file_name(format!("copy-{case}"));
        copy_tree(&project, &copy);
        common::let_ctime_age();
        let s = start(&copy, &cache, entry, &[]);
        assert_eq!(s.compiles, 0, "{case}");
        assert_eq!(our_frames(&s), expected, "{case}: {:?}", s.stack);
    }
}

/// A copy whose map file differs from the one the original's map was made from uses its own
/// file's map (the original's entry is reused for the bytecode only), and stores it.
#[test]
fn a_copy_with_an_edited_map_file_uses_its_own_map() {
    let (_tmp, project, cache) = fixtures();
    let entry = "tsc-external/main.js";
    let original = start(&project, &cache, entry, &[]);
    assert_eq!(innermost_file(&original), "src-ts/src/util.ts");
    let copy = project.with_file_name("copy");
    copy_tree(&project, &copy);
    let first = start_with_util_map_edited(&copy, &cache, entry);
    assert_eq!(first.compiles, 0, "the bytecode is the original's");
    assert!(
        pack_holds_the_util_map_record(&cache, &copy.join("tsc-external")),
        "the copy's map is stored with its file's record"
    );
    assert_eq!(
        innermost_file(&first),
        "src-ts/src/middle.ts",
        "{:?}",
        first.stack
    );
    let second = start(&copy, &cache, entry, &[]);
    assert_eq!(innermost_file(&second), "src-ts/src/middle.ts");
    let original = start(&project, &cache, entry, &[]);
    assert_eq!(innermost_file(&original), "src-ts/src/util.ts");
}

#[test]
fn two_hundred_modules_each_with_its_map_name_their_own_sources() {
    maps_as_node_does("tsc-many", "tsc-many/entry.js");
}

/// The bundle path: built once, then a hit that skips the build; both map the bundle's frames
/// to its 201 sources as Node does.
#[test]
fn a_built_bundles_frames_name_its_sources_on_a_build_and_on_a_hit() {
    let (_tmp, project, cache) = fixtures();
    let expected = node_frames(&project, "esbuild-bundle");
    for (run, builds) in [("built", 1), ("hit", 0)] {
        let out = Child::new("built")
            .current_dir(&project)
            .env("BP_ROOT", &cache)
            .run_with_limit(Duration::from_secs(60))
            .expect_success();
        assert_eq!(
            out.lines().filter(|l| *l == "built").count(),
            builds,
            "{run}"
        );
        let stack: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("stack: "))
            .map(str::to_owned)
            .collect();
        let frames: Vec<_> = frames(&stack)
            .into_iter()
            .filter(|(file, _)| file.starts_with("bundle-src/"))
            .collect();
        assert_eq!(frames, expected, "{run}: {stack:?}");
    }
}

/// A host's own `Error.prepareStackTrace`, set before or after the first mapped module loads,
/// is what formats the stack, it is given the mapped call sites (file, line and column), and
/// reading the property gives back the host's own function.
#[test]
fn a_hosts_own_prepare_stack_trace_is_called_with_mapped_call_sites() {
    let (_tmp, project, cache) = fixtures();
    for when in ["before", "after", "before"] {
        let s = start(
            &project,
            &cache,
            "tsc-external/main.js",
            &[
                ("BP_HOST_PREPARE", when),
                (
                    "BP_PRELUDE",
                    "globalThis.same = String(Error.prepareStackTrace === globalThis.hostPrepare);",
                ),
                ("BP_PRINT", "same"),
            ],
        );
        let stack = s.stack.join("\n");
        assert!(
            stack.starts_with("host:src-ts/src/util.ts:18:29|src-ts/src/middle.ts:10:11|"),
            "{when}: {stack}"
        );
        assert!(s.printed.contains("\"true\""), "{when}: {:?}", s.printed);
    }
}

/// Mapping never costs a program its stacks: with the built-ins the mapping uses replaced
/// by throwing ones, and at a stack overflow, `error.stack` is still a string, mapped where
/// it can be.
#[test]
fn stacks_survive_patched_built_ins_and_a_stack_overflow() {
    let (_tmp, project, cache) = fixtures();
    let patched = "for (const f of ['map', 'join', 'forEach']) \
         Array.prototype[f] = () => { throw new Error('patched ' + f); }; \
         Function.prototype.call = () => { throw new Error('patched call'); };";
    let s = start(
        &project,
        &cache,
        "tsc-external/main.js",
        &[("BP_PRELUDE", patched)],
    );
    assert_eq!(
        our_frames(&s)[0],
        ("src-ts/src/util.ts".into(), 18),
        "{:?}",
        s.stack
    );
    let overflow = "const deep = () => deep() + 1; \
         try { deep(); } catch (e) { globalThis.overflow = typeof e.stack; }";
    let s = start(
        &project,
        &cache,
        "tsc-external/main.js",
        &[("BP_PRELUDE", overflow), ("BP_PRINT", "overflow")],
    );
    assert!(s.printed.contains("string"), "{:?}", s.printed);
}

/// A start of `entry` after `util.js.map` became another real map (`middle.js`'s, whose
/// lines name `middle.ts`).
fn start_with_util_map_edited(project: &Path, cache: &Path, entry: &str) -> Start {
    let dist = project.join("tsc-external");
    fs::copy(dist.join("middle.js.map"), dist.join("util.js.map")).unwrap();
    common::let_ctime_age();
    start(project, cache, entry, &[])
}

/// A first start reads a module's map file when a stack first passes through the module, not
/// as the module loads: a map file changed between the two is the one used, and stored.
/// (Read at load, the frame would name `util.ts`.)
#[test]
fn a_first_start_reads_a_map_file_when_a_stack_first_needs_it() {
    let (_tmp, project, cache) = fixtures();
    let entry = "tsc-external/main.js";
    let copy = "tsc-external/middle.js.map:tsc-external/util.js.map";
    let env = [
        ("BP_COPY_AFTER_LOADS", copy),
        ("BP_PRELUDE", "copyAfterLoads();"),
    ];
    let first = start(&project, &cache, entry, &env);
    assert!(first.compiles > 0);
    assert_eq!(
        innermost_file(&first),
        "src-ts/src/middle.ts",
        "{:?}",
        first.stack
    );
    assert!(
        pack_holds_the_util_map_record(&cache, &project.join("tsc-external")),
        "stored with the record of the file as it was read"
    );
    common::let_ctime_age();
    let warm = start(&project, &cache, entry, &[]);
    assert_eq!(warm.compiles, 0);
    assert_eq!(innermost_file(&warm), "src-ts/src/middle.ts");
}

/// A changed map file is used by the next start, without compiling its module again: a
/// stored map is checked against its file when a stack first passes through the module.
/// (The new map is another real one: `middle.js`'s, whose lines name `middle.ts`.)
#[test]
fn an_edited_map_file_is_used_by_the_next_start() {
    let (_tmp, project, cache) = fixtures();
    let entry = "tsc-external/main.js";
    let before = start(&project, &cache, entry, &[]);
    assert_eq!(our_frames(&before)[0], ("src-ts/src/util.ts".into(), 18));
    let after = start_with_util_map_edited(&project, &cache, entry);
    assert_eq!(after.compiles, 0, "a map is no module's input");
    assert_eq!(
        innermost_file(&after),
        "src-ts/src/middle.ts",
        "{:?}",
        after.stack
    );
}

/// A warm start whose module and its map file are both rebuilt after the module loaded, before
/// a stack passes through it, maps the loaded code through the map stored with it: the map
/// file is used over the stored map only while the module's file still holds what its
/// bytecode was compiled from. (Through the rebuilt map, the frame would name `middle.ts`.)
#[test]
fn a_module_rebuilt_after_it_loaded_keeps_the_map_stored_with_it() {
    let (_tmp, project, cache) = fixtures();
    let entry = "tsc-external/main.js";
    let cold = start(&project, &cache, entry, &[]);
    assert_eq!(our_frames(&cold)[0], ("src-ts/src/util.ts".into(), 18));
    let rebuild = "tsc-external/middle.js.map:tsc-external/util.js.map,\
        tsc-external/middle.js:tsc-external/util.js";
    let env = [
        ("BP_COPY_AFTER_LOADS", rebuild),
        ("BP_PRELUDE", "copyAfterLoads();"),
    ];
    let rebuilt = start(&project, &cache, entry, &env);
    assert_eq!(
        rebuilt.compiles, 0,
        "util.js was loaded before it was rebuilt"
    );
    assert_eq!(
        our_frames(&rebuilt)[0],
        ("src-ts/src/util.ts".into(), 18),
        "{:?}",
        rebuilt.stack
    );
}

/// A map whose record of its file is damaged in the pack is not used: that record is what
/// says whether the file changed, so the stored map could be stale. (Here it is: the file
/// was edited.) The frame keeps its generated file: neither the old map's `util.ts` nor,
/// through a damaged record read as if intact, the edited file's `middle.ts`.
#[test]
fn a_map_whose_file_record_is_damaged_is_not_used() {
    let (_tmp, project, cache) = fixtures();
    let entry = "tsc-external/main.js";
    let before = start(&project, &cache, entry, &[]);
    assert_eq!(our_frames(&before)[0], ("src-ts/src/util.ts".into(), 18));
    let pack = common::pack_file(&cache.join(bytecode_pack::abi_tag()));
    let mut bytes = fs::read(&pack).unwrap();
    let record = MAP_RECORD.as_bytes();
    let at = bytes
        .windows(record.len())
        .position(|w| w == record)
        .expect("util.js's map file record is in the pack");
    // A hex digit of the file's hash, made another: only the segment's checksum can tell.
    let digit = at + record.len();
    bytes[digit] = if bytes[digit] == b'0' { b'1' } else { b'0' };
    fs::write(&pack, bytes).unwrap();
    let after = start_with_util_map_edited(&project, &cache, entry);
    assert_eq!(after.compiles, 0, "the bytecode is intact");
    assert_eq!(
        innermost_file(&after),
        "tsc-external/util.js",
        "a map was used: {:?}",
        after.stack
    );
}

/// Bad maps: the program runs, the frames keep their generated positions, one warning per
/// map, and nothing hangs or reads without bound.
#[test]
fn bad_maps_leave_generated_positions_and_one_warning() {
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil); 6] = [
        ("malformed", |map| {
            fs::write(map, b"{\"version\":3,\"sources\":[").unwrap()
        }),
        ("truncated", |map| {
            let bytes = fs::read(map).unwrap();
            fs::write(map, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("missing", |map| fs::remove_file(map).unwrap()),
        ("50 MB", |map| {
            let file = fs::File::create(map).unwrap();
            file.set_len(50 << 20).unwrap();
        }),
        ("a FIFO", |map| {
            fs::remove_file(map).unwrap();
            let status = std::process::Command::new("mkfifo")
                .arg(map)
                .status()
                .unwrap();
            assert!(status.success());
        }),
        ("a device", |map| {
            fs::remove_file(map).unwrap();
            std::os::unix::fs::symlink("/dev/zero", map).unwrap();
        }),
    ];
    for (what, spoil) in cases {
        let (_tmp, project, cache) = fixtures();
        spoil(&project.join("tsc-external/util.js.map"));
        for run in ["first", "warm"] {
            let s = start(&project, &cache, "tsc-external/main.js", &[]);
            let frames = our_frames(&s);
            assert_eq!(
                frames[0],
                ("tsc-external/util.js".into(), 4),
                "{what}, {run} start: {:?}",
                s.stack
            );
            assert_eq!(frames[1].0, "src-ts/src/middle.ts", "{what}: {:?}", s.stack);
            let about_util: Vec<_> = s
                .warnings
                .iter()
                .filter(|w| w.contains("util.js"))
                .collect();
            // One warning when the module is compiled; the warm start loads it (stored
            // without the map) and says nothing more.
            let (warnings, compiles) = if run == "first" { (1, 3) } else { (0, 0) };
            assert_eq!(
                about_util.len(),
                warnings,
                "{what}, {run}: {:?}",
                s.warnings
            );
            assert_eq!(s.compiles, compiles, "{what}, {run} start");
        }
    }
}

/// A map whose sources lie outside the project (the working directory) is not used: its
/// frames keep their generated positions, with one warning.
#[test]
fn a_map_naming_sources_outside_the_project_is_not_used() {
    let (_tmp, project, cache) = fixtures();
    let inner = project.join("tsc-external");
    let s = start(&inner, &cache, "main.js", &[]);
    let frames = our_frames(&s);
    assert_eq!(frames[0], ("util.js".into(), 4), "{:?}", s.stack);
    assert_eq!(s.warnings.len(), 3, "one per map: {:?}", s.warnings);
    assert!(
        s.warnings[0].contains("outside the project"),
        "{:?}",
        s.warnings
    );
}
