//! Build-time precompile: a module graph compiled into the cache without evaluating it, so
//! that the first start compiles nothing; failures named with the engine's message while the
//! other modules are still stored; bad files under a directory skipped, nothing hanging.
//!
//! Runs in child processes (this binary re-invoked, `child` test) with the working directory
//! in the project, the root precompile and the host share.
#![cfg(all(unix, feature = "quickjs"))]

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{self, Precompile, precompile};
use common::child::Child;

use rquickjs::loader::FileResolver;

/// `precompile`: entries from `BP_ENTRIES` and dirs from `BP_DIRS` (comma-separated); prints
/// the report. `start`: imports `main.js` as a host does; prints what it compiled.
#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
    let list = |var: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match role.as_str() {
        "precompile" => {
            let jobs = std::env::var("BP_JOBS").map_or(1, |j| j.parse().unwrap());
            let mut request = Precompile::new().jobs(jobs);
            for entry in list("BP_ENTRIES") {
                request = request.entry(entry);
            }
            for dir in list("BP_DIRS") {
                request = request.dir(dir);
            }
            let resolver = || FileResolver::default().with_path(".");
            let report = precompile(&cache, &resolver, &request, &|_, _| {}).unwrap();
            println!("compiled={}", report.compiled);
            println!("modules={}", report.modules);
            println!("skipped={}", report.skipped.len());
            for (name, message) in &report.failures {
                println!("failure={name}: {}", message.replace('\n', " | "));
            }
        }
        "start" => {
            let result = common::host::start_main(&cache);
            println!("result={result}");
            println!("compiles={}", quickjs::process_counters().compiles);
        }
        other => panic!("unknown role {other}"),
    }
}

fn run(project: &Path, root: &Path, role: &str, vars: &[(&str, &str)]) -> String {
    let mut child = Child::new(role).current_dir(project).env("BP_ROOT", root);
    for (name, value) in vars {
        child = child.env(name, value);
    }
    child
        .run_with_limit(Duration::from_secs(120))
        .expect_success()
}

fn lines<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn project(at: &Path) {
    common::lib_project(
        at,
        &[(
            "main.js",
            "import { add } from './lib/math.js';\n\
         import { describe } from './lib/describe.js';\n\
         export const result = describe(add(2, 3));\n",
        )],
    );
}

/// From an entry: the graph is compiled and nothing evaluated (an entry that throws when
/// evaluated, and imports one that does too, precompiles without a failure), and the first
/// start compiles nothing.
#[test]
fn after_a_precompile_the_first_start_compiles_nothing() {
    let (_tmp, base) = common::canonical_tempdir();
    let (dir, root) = (base.join("app"), base.join("cache"));
    project(&dir);
    fs::write(
        dir.join("throws.js"),
        "import './lib/throws-too.js';\nthrow new Error('evaluated');\n",
    )
    .unwrap();
    fs::write(
        dir.join("lib/throws-too.js"),
        "throw new Error('evaluated');\n",
    )
    .unwrap();
    let out = run(
        &dir,
        &root,
        "precompile",
        &[("BP_ENTRIES", "main.js,throws.js")],
    );
    assert_eq!(lines(&out, "compiled="), ["5"], "{out}");
    assert_eq!(lines(&out, "modules="), ["5"], "{out}");
    assert!(lines(&out, "failure=").is_empty(), "{out}");
    let start = run(&dir, &root, "start", &[]);
    assert_eq!(lines(&start, "result="), ["value=5 next=6"], "{start}");
    assert_eq!(lines(&start, "compiles="), ["0"], "{start}");
}

/// A syntax error in one module: reported with its file and the engine's message; every other
/// module under the directory is stored, so the start compiles only `main.js`, which lies
/// outside it. (Two threads compile the directory's files.)
#[test]
fn a_syntax_error_is_reported_and_the_rest_is_stored() {
    let (_tmp, base) = common::canonical_tempdir();
    let (dir, root) = (base.join("app"), base.join("cache"));
    project(&dir);
    fs::write(dir.join("lib/broken.js"), "export const = ;\n").unwrap();
    let out = run(
        &dir,
        &root,
        "precompile",
        &[("BP_DIRS", "lib"), ("BP_JOBS", "2")],
    );
    let failures = lines(&out, "failure=");
    assert_eq!(failures.len(), 1, "{out}");
    assert!(failures[0].starts_with("lib/broken.js: "), "{out}");
    assert!(
        failures[0].contains("lib/broken.js:1"),
        "the engine's position: {out}"
    );
    let compiled: u32 = lines(&out, "compiled=")[0].parse().unwrap();
    // math.js twice when both threads reach it (describe.js imports it).
    assert!(
        (2..=3).contains(&compiled),
        "math and describe, in either thread: {out}"
    );
    let start = run(&dir, &root, "start", &[]);
    assert_eq!(lines(&start, "compiles="), ["1"], "only main.js: {start}");
}

/// Under a directory: a FIFO and a symlink loop are skipped, nothing hangs, and the regular
/// modules are compiled.
#[test]
fn bad_files_under_a_directory_are_skipped_without_hanging() {
    let (_tmp, base) = common::canonical_tempdir();
    let (dir, root) = (base.join("app"), base.join("cache"));
    project(&dir);
    let fifo = std::ffi::CString::new(dir.join("lib/pipe.js").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("..", dir.join("lib/loop")).unwrap();
    let out = run(&dir, &root, "precompile", &[("BP_DIRS", ".")]);
    assert!(lines(&out, "failure=").is_empty(), "{out}");
    assert_eq!(lines(&out, "compiled="), ["3"], "{out}");
    assert_eq!(
        lines(&out, "skipped="),
        ["2"],
        "the FIFO and the loop: {out}"
    );
}
