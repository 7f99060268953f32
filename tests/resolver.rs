//! `PackResolver` answers exactly as rquickjs's `FileResolver` does, from answers kept in the
//! cache with the stat data of the directories they came from, across edits and starts.
//!
//! `PackResolver` resolves against the working directory it was created in, so every scenario
//! runs in a child process (this binary re-invoked, `child` test) whose working directory is a
//! temp project. A child simulates process starts: each start makes a new `PackResolver` over
//! one shared `Cache` (dropped at the end of the start, so what it learned is stored) and a
//! fresh `FileResolver`, asks both the same `(base, name)` questions through
//! `Resolver::resolve`, and asserts the answers are equal (the same string, or both errors).
//!
//! Named scenarios also assert the answer itself (so a broken setup cannot pass), that the
//! answers are read from the cache, that a directory stamped after the racy window is trusted
//! (a start over it stores nothing), and that one stamped within it is probed again.
#![cfg(feature = "quickjs")]
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{PackLoader, PackResolver};
use common::child::Child;
use rquickjs::loader::{FileResolver, Resolver};
use rquickjs::{Context, Ctx, Module, Runtime};

/// Longer than the fine racy window (30 ms): a directory stamped this long after its
/// directory's last change is trusted by later starts.
const PAST_RACY: Duration = Duration::from_millis(150);

/// Longer than a `PackResolver`'s directory checks stand within a run (100 ms).
const PAST_RECHECK: Duration = Duration::from_millis(150);

/// How long any one child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// The resolver both sides use: search paths `.` and `lib`, patterns `{}.js` (the default),
/// `{}.mjs` and `{}/index.js`.
fn file_resolver() -> FileResolver {
    FileResolver::default()
        .with_path(".")
        .with_path("lib")
        .with_pattern("{}.mjs")
        .with_pattern("{}/index.js")
}

// ---------------------------------------------------------------------------------------------
// The child side.

#[test]
#[ignore = "entry point for child processes spawned by the other tests"]
fn child() {
    let Some(role) = common::child::role() else {
        return;
    };
    let cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
    let runtime = Runtime::new().unwrap();
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        let mut host = Host {
            ctx: &ctx,
            cache,
            starts: 0,
        };
        match role.as_str() {
            "later-pattern" => later_pattern(&mut host),
            "search-path-order" => search_path_order(&mut host),
            "delete-rename" => delete_rename(&mut host),
            "file-to-directory" => file_to_directory(&mut host),
            "symlinked-directory" => symlinked_directory(&mut host),
            "project" => project(&mut host),
            "empty-base" => empty_base(&mut host),
            "differential" => differential(&mut host),
            "settable-ctime" => settable_ctime(&mut host),
            "long-lived" => long_lived(&mut host),
            "deleted-cwd" => deleted_cwd(&mut host),
            "long-cwd" => long_cwd(&mut host),
            "replaced-mid-round" => replaced_mid_round(&mut host),
            other => panic!("unknown role {other}"),
        }
    });
    drop(context);
    drop(runtime);
}

/// One child process: simulated starts over one cache.
struct Host<'a, 'js> {
    ctx: &'a Ctx<'js>,
    cache: Cache,
    starts: usize,
}

/// What both resolvers answered to one question in one start.
#[derive(Debug, Clone)]
struct Answer {
    base: String,
    name: String,
    file: Option<String>,
    pack: Option<String>,
}

/// One start: the answers, and what the `PackResolver` did with the cache.
struct Start {
    answers: Vec<Answer>,
    /// Entries it stored (at drop): 1 when it stamped some directory anew or learned a new
    /// answer, 0 when every directory it used was trusted and every answer known.
    puts: u64,
    /// Cache hits: 1 when it loaded its answers from the cache.
    hits: u64,
}

impl Host<'_, '_> {
    /// One simulated process start: a new `PackResolver` over the shared cache and a fresh
    /// `FileResolver`, both asked every question; the `PackResolver` is dropped at the end.
    /// Every other start pairs it with a `PackLoader`, as a host does: its probes then open
    /// the files they find, for the loader.
    fn start(&mut self, queries: &[(&str, &str)]) -> Start {
        let before = self.cache.stats().unwrap().counters;
        let mut file = file_resolver();
        let mut pack = PackResolver::new(file_resolver(), self.cache.clone());
        let loader = (self.starts % 2 == 1).then(|| PackLoader::new(self.cache.clone()));
        let answers = queries
            .iter()
            .map(|&(base, name)| Answer {
                base: base.to_owned(),
                name: name.to_owned(),
                file: Resolver::resolve(&mut file, self.ctx, base, name, None).ok(),
                pack: Resolver::resolve(&mut pack, self.ctx, base, name, None).ok(),
            })
            .collect();
        drop(pack);
        drop(loader);
        let after = self.cache.stats().unwrap().counters;
        self.starts += 1;
        Start {
            answers,
            puts: after.puts - before.puts,
            hits: after.hits - before.hits,
        }
    }
}

/// A question and the answer both resolvers must give (`None`: both must fail).
#[derive(Debug, Clone, Copy)]
struct Expect {
    base: &'static str,
    name: &'static str,
    answer: Option<&'static str>,
}

const fn q(base: &'static str, name: &'static str, answer: Option<&'static str>) -> Expect {
    Expect { base, name, answer }
}

impl Expect {
    /// Whether every directory the question probes exists, so that once their stamps are
    /// trusted a start asking only such questions probes nothing and stores nothing.
    /// (Questions that may probe a missing directory are left out, to keep the set simple.)
    ///
    /// An answer found means its directory exists, and for relative names every earlier probe
    /// was in that directory or its parent; a bare name found under `lib/` first probed
    /// `./name/`, which usually does not exist.
    fn probes_existing_dirs_only(&self) -> bool {
        match self.answer {
            None => false,
            Some(answer) => self.name.starts_with('.') || !answer.starts_with("lib/"),
        }
    }

    /// The directory the answer was found in, relative to the working directory.
    fn answer_dir(&self) -> Option<PathBuf> {
        let parent = Path::new(self.answer?).parent()?;
        Some(if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        })
    }
}

/// A directory's stat data as `PackResolver` compares it (following symlinks).
fn dir_stamp(dir: &Path) -> Option<(u64, u64, i64, i64, i64, i64)> {
    let m = fs::metadata(dir).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

fn queries_of(expect: &[Expect]) -> Vec<(&'static str, &'static str)> {
    expect.iter().map(|e| (e.base, e.name)).collect()
}

impl Host<'_, '_> {
    /// Asserts a start's answers: `PackResolver` agrees with `FileResolver`, and both give the
    /// expected answer.
    fn check(&self, label: &str, phase: &str, start: &Start, expect: &[Expect]) {
        println!(
            "step {label:?}, {phase}: puts={} hits={}",
            start.puts, start.hits
        );
        for (a, e) in start.answers.iter().zip(expect) {
            assert_eq!(
                a.pack, a.file,
                "step {label:?}, {phase}: ({:?}, {:?}): PackResolver answered {:?}, \
                 FileResolver {:?}",
                a.base, a.name, a.pack, a.file
            );
            assert_eq!(
                a.file.as_deref(),
                e.answer,
                "step {label:?}, {phase}: ({:?}, {:?}): FileResolver itself answered {:?}, \
                 the scenario expects {:?} (test setup)",
                a.base,
                a.name,
                a.file,
                e.answer
            );
        }
        if !start.answers.is_empty() && self.starts > 1 {
            assert!(
                start.hits >= 1,
                "step {label:?}, {phase}: the PackResolver did not load its answers from the cache"
            );
        }
    }

    /// Makes an edit (the first step makes the initial tree) and checks several starts after
    /// it:
    ///
    /// 1. right after the edit, the questions whose probes all land in existing directories
    ///    (the "quiet set"): stamps taken before the edit must be rejected;
    /// 2. right after, every question;
    /// 3. right after, the quiet set again: stamps taken within the racy window of the edit
    ///    must not be trusted (if the edit changed a directory the quiet set probes, this
    ///    start stamps it again and stores);
    /// 4. after the racy window, every question: directories are stamped again, trusted;
    /// 5. the quiet set: every stamp is trusted now, so nothing is probed or stored.
    fn step(&mut self, label: &str, edit: impl FnOnce(), expect: &[Expect]) {
        let quiet: Vec<Expect> = expect
            .iter()
            .copied()
            .filter(Expect::probes_existing_dirs_only)
            .collect();
        let quiet_dirs: Vec<PathBuf> = quiet.iter().filter_map(Expect::answer_dir).collect();
        let stamps: Vec<_> = quiet_dirs.iter().map(|d| dir_stamp(d)).collect();
        let first = self.starts == 0;

        let edit_started = Instant::now();
        edit();
        let touched: Vec<&PathBuf> = quiet_dirs
            .iter()
            .zip(&stamps)
            .filter(|(d, s)| dir_stamp(d) != **s)
            .map(|(d, _)| d)
            .collect();

        if !quiet.is_empty() {
            let s = self.start(&queries_of(&quiet));
            self.check(label, "1: quiet set right after the edit", &s, &quiet);
            if !touched.is_empty() || first {
                assert!(
                    s.puts >= 1,
                    "step {label:?}: {touched:?} changed, but the first start after the edit \
                     stamped no directory anew"
                );
            }
        }
        let s = self.start(&queries_of(expect));
        self.check(label, "2: all, right after the edit", &s, expect);
        if !quiet.is_empty() {
            // Started within 10 ms of the edit, the previous start stamped the edited
            // directories within 30 ms of their change (the ctime trails the clock by a few
            // coarse ticks at most): the stamps are racy and must not be trusted. A slower
            // machine skips this check; the racy rule itself is unit-tested in `stored.rs`.
            let fast = edit_started.elapsed() < Duration::from_millis(10);
            let s = self.start(&queries_of(&quiet));
            self.check(
                label,
                "3: quiet set, still within the racy window",
                &s,
                &quiet,
            );
            if (!touched.is_empty() || first) && !fast {
                common::skipped(
                    &format!("step {label:?}: racy stamps are not trusted"),
                    "this start began more than 10 ms after the edit",
                );
            }
            if (!touched.is_empty() || first) && fast {
                assert!(
                    s.puts >= 1,
                    "step {label:?}: {touched:?} changed within the racy window of the \
                     previous start's stamp, but this start trusted it"
                );
            }
        }
        std::thread::sleep(PAST_RACY);
        let s = self.start(&queries_of(expect));
        self.check(label, "4: all, after the racy window", &s, expect);
        if !quiet.is_empty() {
            let s = self.start(&queries_of(&quiet));
            self.check(label, "5: quiet set, stamps trusted", &s, &quiet);
            assert_eq!(
                s.puts, 0,
                "step {label:?}: nothing changed since the last start, which ran after the \
                 racy window, yet directories were stamped again"
            );
        }
    }
}

// Filesystem edits, relative to the working directory.

fn write(path: &str) {
    if let Some(parent) = Path::new(path).parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, format!("export default {path:?};\n")).unwrap();
}

fn mkdir(path: &str) {
    fs::create_dir_all(path).unwrap();
}

fn remove(path: &str) {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        fs::remove_dir_all(path).unwrap();
    } else {
        fs::remove_file(path).unwrap();
    }
}

fn rename(from: &str, to: &str) {
    fs::rename(from, to).unwrap();
}

/// Points symlink `link` at `target`: a new symlink renamed over the old one (atomic, as
/// package managers switch versions).
fn switch_symlink(target: &str, link: &str) {
    let tmp = format!("{link}.tmp-switch");
    symlink(target, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Named scenarios (child side).

/// (a) `./x` resolved through a later pattern (`x.mjs`), then `x.js` appears and must win.
/// On a filesystem whose ctime a user can set (FAT; pretended here through the
/// `fault-injection` feature), no directory stamp can vouch for anything: every start probes
/// as `FileResolver` does and gives its answers, including after an edit, and stores nothing
/// (it would otherwise write its table at every start).
fn settable_ctime(h: &mut Host) {
    let agree = |phase: &str, start: &Start, expect: &[Expect]| {
        for (a, e) in start.answers.iter().zip(expect) {
            assert_eq!(a.pack, a.file, "{phase}: ({:?}, {:?})", a.base, a.name);
            assert_eq!(a.file.as_deref(), e.answer, "{phase}: test setup");
        }
        assert_eq!(start.puts, 0, "{phase}: stored its table");
    };
    write("main.js");
    write("x.mjs");
    let before = [
        q("main.js", "./x", Some("x.mjs")),
        q("main.js", "x", Some("x.mjs")),
    ];
    for phase in ["first start", "second start, past the racy window"] {
        std::thread::sleep(PAST_RACY);
        agree(phase, &h.start(&queries_of(&before)), &before);
    }
    write("x.js");
    let after = [
        q("main.js", "./x", Some("x.js")),
        q("main.js", "x", Some("x.js")),
    ];
    agree("after x.js appeared", &h.start(&queries_of(&after)), &after);
    println!("settable ctime: done");
}

fn later_pattern(h: &mut Host) {
    h.step(
        "x.mjs only",
        || {
            write("main.js");
            write("lib/util.js");
            write("x.mjs");
        },
        &[
            q("main.js", "./x", Some("x.mjs")),
            q("lib/util.js", "../x", Some("x.mjs")),
            q("main.js", "x", Some("x.mjs")),
            q("main.js", "./x.js", None),
            q("main.js", "./x.mjs", Some("x.mjs")),
        ],
    );
    h.step(
        "x.js appears",
        || write("x.js"),
        &[
            q("main.js", "./x", Some("x.js")),
            q("lib/util.js", "../x", Some("x.js")),
            q("main.js", "x", Some("x.js")),
            q("main.js", "./x.js", Some("x.js")),
            q("main.js", "./x.mjs", Some("x.mjs")),
        ],
    );
    h.step(
        "lib/x.js appears (later search path: no effect)",
        || write("lib/x.js"),
        &[
            q("main.js", "./x", Some("x.js")),
            q("main.js", "x", Some("x.js")),
            q("lib/util.js", "./x", Some("lib/x.js")),
            q("lib/util.js", "./x.js", Some("lib/x.js")),
        ],
    );
    h.step(
        "x.js and x.mjs deleted",
        || {
            remove("x.js");
            remove("x.mjs");
        },
        &[
            q("main.js", "./x", None),
            q("lib/util.js", "../x", None),
            q("main.js", "x", Some("lib/x.js")),
            q("main.js", "./x.js", None),
            q("main.js", "./x.mjs", None),
            q("lib/util.js", "./x", Some("lib/x.js")),
        ],
    );
    h.step(
        "directory x/ with index.js appears",
        || write("x/index.js"),
        &[
            q("main.js", "./x", Some("x/index.js")),
            q("lib/util.js", "../x", Some("x/index.js")),
            q("main.js", "x", Some("x/index.js")),
            q("main.js", "./x.js", None),
        ],
    );
    h.step(
        "x.mjs reappears (earlier pattern than {}/index.js)",
        || write("x.mjs"),
        &[
            q("main.js", "./x", Some("x.mjs")),
            q("lib/util.js", "../x", Some("x.mjs")),
            q("main.js", "x", Some("x.mjs")),
            q("main.js", "./x/index", Some("x/index.js")),
        ],
    );
}

/// (b) A new file earlier on the search path: bare `m` resolved from `lib/m.js`, then `m.js`
/// appears at the root (search path `.`, before `lib`) and must win.
fn search_path_order(h: &mut Host) {
    h.step(
        "lib/m.js only",
        || {
            write("main.js");
            write("lib/a.js");
            write("lib/m.js");
            // A directory named like the module, without an index: probed by `{}/index.js`.
            write("m/README.md");
        },
        &[
            q("main.js", "m", Some("lib/m.js")),
            q("lib/a.js", "./m", Some("lib/m.js")),
            q("main.js", "./m", None),
            q("main.js", "./lib/m", Some("lib/m.js")),
        ],
    );
    h.step(
        "m.js appears at the root",
        || write("m.js"),
        &[
            q("main.js", "m", Some("m.js")),
            q("lib/a.js", "./m", Some("lib/m.js")),
            q("main.js", "./m", Some("m.js")),
            q("lib/a.js", "../m", Some("m.js")),
        ],
    );
    h.step(
        "m.js renamed to m.mjs",
        || rename("m.js", "m.mjs"),
        &[
            q("main.js", "m", Some("m.mjs")),
            q("main.js", "./m", Some("m.mjs")),
            q("main.js", "./m.js", None),
            q("lib/a.js", "./m", Some("lib/m.js")),
        ],
    );
    h.step(
        "m.mjs deleted",
        || remove("m.mjs"),
        &[
            q("main.js", "m", Some("lib/m.js")),
            q("main.js", "./m", None),
            q("lib/a.js", "./m", Some("lib/m.js")),
        ],
    );
    h.step(
        "m/index.js appears",
        || write("m/index.js"),
        &[
            q("main.js", "m", Some("m/index.js")),
            q("main.js", "./m", Some("m/index.js")),
            q("lib/a.js", "./m", Some("lib/m.js")),
        ],
    );
    h.step(
        "lib/ deleted",
        || remove("lib"),
        &[
            q("main.js", "m", Some("m/index.js")),
            q("lib/a.js", "./m", None),
            q("main.js", "./lib/m", None),
        ],
    );
}

/// (c) Modules deleted and renamed (within a directory, across directories, and a whole
/// directory renamed away and back).
fn delete_rename(h: &mut Host) {
    h.step(
        "initial",
        || {
            write("main.js");
            write("a.js");
            write("b.js");
            write("lib/c.js");
            write("lib/d.mjs");
        },
        &[
            q("main.js", "./a", Some("a.js")),
            q("main.js", "./b", Some("b.js")),
            q("main.js", "./b.js", Some("b.js")),
            q("main.js", "./b.mjs", None),
            q("main.js", "c", Some("lib/c.js")),
            q("main.js", "./lib/c", Some("lib/c.js")),
            q("lib/c.js", "./d", Some("lib/d.mjs")),
            q("lib/c.js", "../a", Some("a.js")),
        ],
    );
    h.step(
        "a.js deleted",
        || remove("a.js"),
        &[
            q("main.js", "./a", None),
            q("lib/c.js", "../a", None),
            q("main.js", "./b", Some("b.js")),
        ],
    );
    h.step(
        "b.js renamed to b.mjs",
        || rename("b.js", "b.mjs"),
        &[
            q("main.js", "./b", Some("b.mjs")),
            q("main.js", "./b.js", None),
            q("main.js", "./b.mjs", Some("b.mjs")),
            q("main.js", "b", Some("b.mjs")),
        ],
    );
    h.step(
        "lib/c.js moved to the root",
        || rename("lib/c.js", "c.js"),
        &[
            q("main.js", "c", Some("c.js")),
            q("main.js", "./lib/c", None),
            q("main.js", "./c", Some("c.js")),
            q("lib/d.mjs", "../c", Some("c.js")),
        ],
    );
    h.step(
        "b.mjs renamed over c.js",
        || rename("b.mjs", "c.js"),
        &[
            q("main.js", "c", Some("c.js")),
            q("main.js", "./b", None),
            q("main.js", "./b.mjs", None),
        ],
    );
    h.step(
        "lib/ renamed to lib2/",
        || rename("lib", "lib2"),
        &[
            q("main.js", "d", None),
            q("main.js", "./lib/d", None),
            q("main.js", "./lib2/d", Some("lib2/d.mjs")),
            q("lib/c.js", "./d", None),
        ],
    );
    h.step(
        "lib2/ renamed back to lib/",
        || rename("lib2", "lib"),
        &[
            q("main.js", "d", Some("lib/d.mjs")),
            q("main.js", "./lib/d", Some("lib/d.mjs")),
            q("main.js", "./lib2/d", None),
            q("lib/c.js", "./d", Some("lib/d.mjs")),
        ],
    );
}

/// (d) A file replaced by a directory of the same name, and back: `y.js` becomes a directory
/// holding `index.js`; `z` (no extension) becomes a directory holding `index.js`, which
/// `./z` then finds through `{}/index.js`.
fn file_to_directory(h: &mut Host) {
    let y_file = [
        q("main.js", "./y", Some("y.js")),
        q("main.js", "./y.js", Some("y.js")),
        q("main.js", "./y.js/index", None),
        q("main.js", "./y.js/index.js", None),
        q("main.js", "y", Some("y.js")),
    ];
    let y_dir = [
        q("main.js", "./y", None),
        q("main.js", "./y.js", None),
        q("main.js", "./y.js/index", Some("y.js/index.js")),
        q("main.js", "./y.js/index.js", Some("y.js/index.js")),
        q("main.js", "y", None),
    ];
    let z_file = [
        q("main.js", "./z", None),
        q("main.js", "./z/index", None),
        q("main.js", "z", None),
        q("lib/a.js", "../z", None),
    ];
    let z_dir = [
        q("main.js", "./z", Some("z/index.js")),
        q("main.js", "./z/index", Some("z/index.js")),
        q("main.js", "z", Some("z/index.js")),
        q("lib/a.js", "../z", Some("z/index.js")),
    ];
    let both = |a: &[Expect], b: &[Expect]| [a, b].concat();
    h.step(
        "y.js and z are files",
        || {
            write("main.js");
            write("lib/a.js");
            write("y.js");
            write("z");
        },
        &both(&y_file, &z_file),
    );
    h.step(
        "y.js becomes a directory holding index.js",
        || {
            remove("y.js");
            write("y.js/index.js");
        },
        &both(&y_dir, &z_file),
    );
    h.step(
        "z becomes a directory holding index.js",
        || {
            remove("z");
            write("z/index.js");
        },
        &both(&y_dir, &z_dir),
    );
    h.step(
        "y.js becomes a file again",
        || {
            remove("y.js");
            write("y.js");
        },
        &both(&y_file, &z_dir),
    );
    h.step(
        "z becomes a file again (renamed over by a file)",
        || {
            write("z-new");
            remove("z");
            rename("z-new", "z");
        },
        &both(&y_file, &z_file),
    );
}

/// (e) A symlinked directory switched: `node_modules/pkg -> ../store/pkg1` (a.js, index.js)
/// switched to `../store/pkg2` (b.js), edited behind the link, switched back, its target
/// directory replaced; and a symlink to a file made dangling.
fn symlinked_directory(h: &mut Host) {
    fn expect(a: bool, b: bool, index: bool, one: bool) -> Vec<Expect> {
        let some = |on: bool, answer: &'static str| on.then_some(answer);
        vec![
            q(
                "main.js",
                "./node_modules/pkg/a",
                some(a, "node_modules/pkg/a.js"),
            ),
            q(
                "main.js",
                "./node_modules/pkg/b",
                some(b, "node_modules/pkg/b.js"),
            ),
            q(
                "main.js",
                "./node_modules/pkg/a.js",
                some(a, "node_modules/pkg/a.js"),
            ),
            q(
                "main.js",
                "./node_modules/pkg/b.js",
                some(b, "node_modules/pkg/b.js"),
            ),
            q(
                "main.js",
                "./node_modules/pkg",
                some(index, "node_modules/pkg/index.js"),
            ),
            q(
                "node_modules/pkg/index.js",
                "./b",
                some(b, "node_modules/pkg/b.js"),
            ),
            q(
                "main.js",
                "node_modules/pkg/a",
                some(a, "node_modules/pkg/a.js"),
            ),
            q(
                "main.js",
                "./node_modules/one",
                some(one, "node_modules/one.js"),
            ),
        ]
    }
    h.step(
        "pkg -> pkg1",
        || {
            write("main.js");
            write("store/pkg1/a.js");
            write("store/pkg1/index.js");
            write("store/pkg2/b.js");
            mkdir("node_modules");
            symlink("../store/pkg1", "node_modules/pkg").unwrap();
            symlink("../store/pkg1/a.js", "node_modules/one.js").unwrap();
        },
        &expect(true, false, true, true),
    );
    h.step(
        "pkg switched to pkg2 (atomic rename)",
        || switch_symlink("../store/pkg2", "node_modules/pkg"),
        &expect(false, true, false, true),
    );
    h.step(
        "a.js added behind the link (store/pkg2/a.js)",
        || write("store/pkg2/a.js"),
        &expect(true, true, false, true),
    );
    h.step(
        "pkg switched back to pkg1 (remove and create)",
        || {
            remove("node_modules/pkg");
            symlink("../store/pkg1", "node_modules/pkg").unwrap();
        },
        &expect(true, false, true, true),
    );
    h.step(
        "one.js made dangling",
        || switch_symlink("../store/pkg3/a.js", "node_modules/one.js"),
        &expect(true, false, true, false),
    );
    h.step(
        "store/pkg1/a.js deleted behind the link",
        || remove("store/pkg1/a.js"),
        &expect(false, false, true, false),
    );
    h.step(
        "store/pkg1 replaced by store/pkg2's directory (same link, new target directory)",
        || {
            rename("store/pkg1", "store/old-pkg1");
            rename("store/pkg2", "store/pkg1");
        },
        &expect(true, true, false, false),
    );
    h.step(
        "one.js's target appears",
        || write("store/pkg3/a.js"),
        &expect(true, true, false, true),
    );
}

/// (f) One start in one of two projects sharing a cache: the answers the parent expects for
/// `x` (`BP_EXPECT`: `x.js` or `x.mjs`); prints the start's puts and hits.
fn project(h: &mut Host) {
    let x: &'static str = match std::env::var("BP_EXPECT").unwrap().as_str() {
        "x.js" => "x.js",
        "x.mjs" => "x.mjs",
        other => panic!("BP_EXPECT={other}"),
    };
    let has_js = x == "x.js";
    let expect = [
        q("main.js", "./x", Some(x)),
        q("lib/a.js", "../x", Some(x)),
        q("main.js", "x", Some(x)),
        q("main.js", "./x.js", has_js.then_some("x.js")),
    ];
    let s = h.start(&queries_of(&expect));
    for (a, e) in s.answers.iter().zip(&expect) {
        assert_eq!(
            a.pack, a.file,
            "({:?}, {:?}): PackResolver answered {:?}, FileResolver {:?}",
            a.base, a.name, a.pack, a.file
        );
        assert_eq!(a.file.as_deref(), e.answer, "test setup");
    }
    println!("puts={} hits={}", s.puts, s.hits);
}

/// Base `""` (what `Module::import` passes when no module is running): `FileResolver` does not
/// normalise the name then (`./a` is `./a.js`), while from base `main.js` the same name is
/// `a.js`. Both bases' directory is `""`; the answers must still differ.
fn empty_base(h: &mut Host) {
    write("main.js");
    write("a.js");
    write("sub/c.js");
    let orders: [&[(&str, &str)]; 2] = [
        &[
            ("main.js", "./a"),
            ("", "./a"),
            ("main.js", "./a.js"),
            ("", "./a.js"),
            ("sub/x.js", "./c"),
            ("", "./sub/c"),
            // Not normalized from an empty base: the exact path conversion decides.
            ("", "./a.js/"),
            ("", "./sub/../a.js"),
            ("", "./sub//c.js"),
        ],
        &[
            ("", "./a"),
            ("main.js", "./a"),
            ("", "./a.js"),
            ("main.js", "./a.js"),
            ("", "./sub/c"),
            ("sub/x.js", "./c"),
        ],
    ];
    for round in 0..2 {
        for (i, queries) in orders.iter().enumerate() {
            let s = h.start(queries);
            for a in &s.answers {
                println!(
                    "round {round} order {i}: ({:?}, {:?}) file={:?} pack={:?}",
                    a.base, a.name, a.file, a.pack
                );
            }
            for a in &s.answers {
                assert!(a.file.is_some(), "test setup: {a:?}");
                assert_eq!(
                    a.pack, a.file,
                    "round {round}, order {i}: ({:?}, {:?}): PackResolver answered {:?}, \
                     FileResolver {:?}",
                    a.base, a.name, a.pack, a.file
                );
            }
        }
        std::thread::sleep(PAST_RACY);
    }
}

/// (h) One resolver living through edits, as a server that imports on demand keeps one: asked
/// again once its directory checks are due (100 ms), it answers as `FileResolver` does at that
/// moment. Its first life computes its answers; the second starts from answers stored by an
/// earlier start, its directories trusted.
fn long_lived(h: &mut Host) {
    fn reset() {
        for path in ["x.js", "x.mjs", "y.mjs", "x", "m.js"] {
            if fs::symlink_metadata(path).is_ok() {
                remove(path);
            }
        }
        write("main.js");
        write("lib/util.js");
        write("lib/m.js");
        write("x.mjs");
    }
    let queries = [
        ("main.js", "./x"),
        ("lib/util.js", "../x"),
        ("main.js", "x"),
        ("main.js", "m"),
    ];
    // Each edit, and what `./x` and `m` resolve to after it (checked on FileResolver's side,
    // so the edits cannot miss).
    type Edit = (
        &'static str,
        fn(),
        Option<&'static str>,
        Option<&'static str>,
    );
    let edits: [Edit; 6] = [
        (
            "x.js appears",
            || write("x.js"),
            Some("x.js"),
            Some("lib/m.js"),
        ),
        (
            "m.js appears earlier on the search path",
            || write("m.js"),
            Some("x.js"),
            Some("m.js"),
        ),
        (
            "x.js deleted",
            || remove("x.js"),
            Some("x.mjs"),
            Some("m.js"),
        ),
        (
            "x.mjs renamed",
            || rename("x.mjs", "y.mjs"),
            None,
            Some("m.js"),
        ),
        (
            "x/index.js appears",
            || write("x/index.js"),
            Some("x/index.js"),
            Some("m.js"),
        ),
        (
            "m.js replaced by a directory",
            || {
                remove("m.js");
                mkdir("m.js");
            },
            Some("x/index.js"),
            Some("lib/m.js"),
        ),
    ];
    for life in ["answers computed in the run", "answers read from the cache"] {
        reset();
        std::thread::sleep(PAST_RACY);
        if life == "answers read from the cache" {
            h.start(&queries);
            std::thread::sleep(PAST_RACY);
        }
        let before = h.cache.stats().unwrap().counters;
        let mut file = file_resolver();
        let mut pack = PackResolver::new(file_resolver(), h.cache.clone());
        let mut ask = |phase: &str| -> Vec<Option<String>> {
            queries
                .iter()
                .map(|&(base, name)| {
                    let f = Resolver::resolve(&mut file, h.ctx, base, name, None).ok();
                    let p = Resolver::resolve(&mut pack, h.ctx, base, name, None).ok();
                    assert_eq!(p, f, "{life}, {phase}: ({base:?}, {name:?})");
                    f
                })
                .collect()
        };
        assert_eq!(
            ask("before any edit")[0].as_deref(),
            Some("x.mjs"),
            "test setup"
        );
        for (label, edit, x, m) in edits {
            edit();
            std::thread::sleep(PAST_RECHECK);
            let answers = ask(label);
            assert_eq!(answers[0].as_deref(), x, "{label}: test setup");
            assert_eq!(answers[3].as_deref(), m, "{label}: test setup");
        }
        if life == "answers read from the cache" {
            let after = h.cache.stats().unwrap().counters;
            assert_eq!(
                after.hits - before.hits,
                1,
                "the second life read stored answers"
            );
        }
        drop(pack);
    }
    println!("long-lived: done");
}

/// A working directory deleted after the process entered it: `FileResolver`'s relative probes
/// find nothing there. The resolver must not take the root for it (a name that spells out an
/// absolute path without its leading `/` would then resolve from `/`).
fn deleted_cwd(h: &mut Host) {
    let project = std::env::current_dir().unwrap();
    write("x.js");
    mkdir("gone");
    std::env::set_current_dir("gone").unwrap();
    fs::remove_dir(project.join("gone")).unwrap();
    assert!(std::env::current_dir().is_err(), "test setup");
    let spelled = format!("./{}/x", project.to_str().unwrap().trim_start_matches('/'));
    let bare = spelled.trim_start_matches("./").to_owned();
    for _ in 0..2 {
        let s = h.start(&[("main.js", &spelled), ("main.js", &bare)]);
        for a in &s.answers {
            assert_eq!(a.file, None, "test setup: {a:?}");
            assert_eq!(a.pack, a.file, "{a:?}");
        }
    }
    println!("deleted cwd: done");
}

/// A directory replaced in the middle of a round (`mv lib lib.old && mkdir lib`), after a
/// failed resolution had the resolver check it again: an answer found again there probes the
/// new directory, as `FileResolver` does, not the old one through a handle opened on it earlier
/// in the round (with a `PackLoader` beside it, probes open what they find through directory
/// handles).
fn replaced_mid_round(h: &mut Host) {
    for file in ["lib/a.js", "lib/m.js", "lib/n.js"] {
        write(file);
    }
    std::thread::sleep(PAST_RACY);
    let stored = h.start(&[("lib/m.js", "./a.js")]);
    assert_eq!(stored.answers[0].pack.as_deref(), Some("lib/a.js"));
    // Changed since its answers were stored: they are found again, by a probe each.
    write("lib/x.js");
    std::thread::sleep(PAST_RACY);
    let mut pack = PackResolver::new(file_resolver(), h.cache.clone());
    let loader = PackLoader::new(h.cache.clone());
    let mut file = file_resolver();
    let ctx = h.ctx;
    let ask = |resolver: &mut dyn Resolver, base: &str, name: &str| {
        Resolver::resolve(resolver, ctx, base, name, None).ok()
    };
    let found = ask(&mut pack, "lib/m.js", "./a.js");
    assert_eq!(found.as_deref(), Some("lib/a.js"), "test setup");
    rename("lib", "lib.old");
    mkdir("lib");
    write("lib/other.js");
    assert_eq!(ask(&mut pack, "lib/m.js", "./missing.js"), None);
    let expected = ask(&mut file, "lib/n.js", "./a.js");
    assert_eq!(expected, None, "test setup");
    assert_eq!(ask(&mut pack, "lib/n.js", "./a.js"), expected);
    drop((pack, loader));
    println!("replaced mid-round: done");
}

/// A working directory whose path is close to `PATH_MAX` (4096 bytes): the relative paths
/// `FileResolver` probes and `ScriptLoader` reads work, while the same files by absolute path
/// are too long for the kernel. Both the resolver and the loader must still find them.
fn long_cwd(h: &mut Host) {
    let part = "d".repeat(200);
    for _ in 0..30 {
        if std::env::current_dir().unwrap().as_os_str().len() >= 3850 {
            break;
        }
        fs::create_dir(&part).unwrap();
        std::env::set_current_dir(&part).unwrap();
    }
    let cwd_len = std::env::current_dir().unwrap().as_os_str().len();
    let dir = "e".repeat(250);
    assert!(
        cwd_len >= 3850 && cwd_len + dir.len() + 6 >= 4096,
        "test setup: {cwd_len}"
    );
    write(&format!("{dir}/x.js"));
    write(&format!("{dir}/y.js"));
    fs::write(
        "main.js",
        format!("import x from './{dir}/x'; globalThis.answer = x;\n"),
    )
    .unwrap();
    let relative = format!("./{dir}/x");
    let sibling = format!("{dir}/y.js");
    let queries = [
        ("main.js", relative.as_str()),
        ("main.js", &relative[2..]),
        (sibling.as_str(), "./x"),
    ];
    for _ in 0..2 {
        let s = h.start(&queries);
        for a in &s.answers {
            assert_eq!(
                a.file.as_deref(),
                Some(format!("{dir}/x.js").as_str()),
                "test setup"
            );
            assert_eq!(a.pack, a.file, "({:?}, {:?})", a.base, a.name);
        }
        std::thread::sleep(PAST_RACY);
    }
    for start in 0..2 {
        let runtime = Runtime::new().unwrap();
        runtime.set_loader(
            PackResolver::new(file_resolver(), h.cache.clone()),
            PackLoader::new(h.cache.clone()),
        );
        let context = Context::full(&runtime).unwrap();
        let answer: String = context.with(|ctx| {
            Module::import(&ctx, "main.js")
                .and_then(|p| p.finish::<()>())
                .unwrap_or_else(|e| panic!("start {start}: {e}"));
            ctx.globals().get("answer").unwrap()
        });
        assert_eq!(answer, format!("{dir}/x.js"), "start {start}");
    }
    println!("long cwd: done");
}

// ---------------------------------------------------------------------------------------------
// The differential test (child side): random edits to a generated tree, compared every start.

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMES: [&str; 8] = ["a", "b", "c", "m", "x", "index", "sub", "lib"];
const EXTENSIONS: [&str; 3] = ["", ".js", ".mjs"];
const ROUNDS: usize = 30;
/// The differential child stops early (with what it checked) rather than exceed this.
const DIFFERENTIAL_BUDGET: Duration = Duration::from_secs(40);

/// The questions every start asks: relative names from three bases, and bare names.
const QUERIES: [(&str, &str); 52] = {
    const B: [&str; 3] = ["main.js", "lib/a.js", "sub/x.js"];
    const R: [&str; 11] = [
        "./a", "./a.js", "./b.mjs", "./sub", "./sub/c", "./m", "../b.js", "../b", "../lib/m",
        "./index", "./x",
    ];
    const BARE: [&str; 7] = ["m", "a", "sub/c", "sub", "x.mjs", "lib/index", "c"];
    // Names FileResolver does not take apart as plain components (`.`, `..`, empty components,
    // a trailing slash, a leading `/`), names that leave the project for the store beside it,
    // and bases that are empty (`Module::import`'s) or in a directory that may not exist.
    const ODD: [(&str, &str); 12] = [
        ("main.js", "./sub/../a"),
        ("main.js", "./sub//c"),
        ("main.js", "././m"),
        ("main.js", "./a/"),
        ("main.js", "/lib/a"),
        ("main.js", "lib/../m"),
        ("main.js", "../store/p1/a"),
        ("sub/x.js", "../../store/p2/m"),
        ("", "./sub/../a"),
        ("", "./sub//c.js"),
        ("", "./x/"),
        ("sub/deeper/y.js", "../c"),
    ];
    let mut out = [("", ""); 52];
    let mut i = 0;
    let mut b = 0;
    while b < B.len() {
        let mut r = 0;
        while r < R.len() {
            out[i] = (B[b], R[r]);
            i += 1;
            r += 1;
        }
        b += 1;
    }
    let mut n = 0;
    while n < BARE.len() {
        out[i] = ("main.js", BARE[n]);
        i += 1;
        n += 1;
    }
    let mut o = 0;
    while o < ODD.len() {
        out[i] = ODD[o];
        i += 1;
        o += 1;
    }
    out
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    Dir,
    Link,
}

/// `dir/name`, with `.` as the working directory.
fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The entries under `dir` (not following symlinks, at most `depth` levels), sorted.
fn walk(dir: &str, depth: usize, out: &mut Vec<(String, Node)>) {
    let Ok(read) = fs::read_dir(dir) else { return };
    let mut names: Vec<String> = read
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let path = join(dir, &name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let node = if meta.file_type().is_symlink() {
            Node::Link
        } else if meta.is_dir() {
            Node::Dir
        } else {
            Node::File
        };
        out.push((path.clone(), node));
        if node == Node::Dir && depth > 1 {
            walk(&path, depth - 1, out);
        }
    }
}

/// The project's and the store's entries (the store lies outside the project, beside it).
fn tree() -> Vec<(String, Node)> {
    let mut out = Vec::new();
    walk(".", 3, &mut out);
    walk("../store", 3, &mut out);
    out
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The store's two package directories: kept (never deleted or moved except by swapping them).
const STORE_ROOTS: [&str; 2] = ["../store/p1", "../store/p2"];

fn random_name(rng: &mut Rng) -> String {
    format!("{}{}", rng.pick(&NAMES), rng.pick(&EXTENSIONS))
}

fn symlink_targets(abs_base: &Path) -> Vec<String> {
    let mut targets: Vec<String> = [
        "a.js",
        "b.mjs",
        "m.js",
        "sub",
        "lib",
        "../lib",
        "../sub",
        "..",
        ".",
        "../a.js",
        "../store/p1",
        "../../store/p2",
        "../store/p1/a.js",
        "missing.js",
        "gone/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for t in ["store/p1", "store/p2", "store/p1/a.js", "store/p2/index.js"] {
        targets.push(abs_base.join(t).display().to_string());
    }
    targets
}

/// Makes one random edit; returns what it did.
fn random_edit(rng: &mut Rng, targets: &[String]) -> String {
    for _ in 0..100 {
        let entries = tree();
        let movable: Vec<&(String, Node)> = entries
            .iter()
            .filter(|(p, _)| !STORE_ROOTS.contains(&p.as_str()))
            .collect();
        let mut dirs: Vec<String> = vec![".".to_owned()];
        dirs.extend(
            entries
                .iter()
                .filter(|(_, n)| *n == Node::Dir)
                .map(|(p, _)| p.clone()),
        );
        // A tree thinned out by deletions and renames grows again first.
        let project_entries = entries
            .iter()
            .filter(|(p, _)| !p.starts_with("../"))
            .count();
        let roll = if project_entries < 16 {
            rng.below(28)
        } else {
            rng.below(100)
        };
        match roll {
            // Create a file.
            0..20 => {
                let path = join(rng.pick::<String>(&dirs), &random_name(rng));
                if exists(&path) {
                    continue;
                }
                write(&path);
                return format!("create file {path}");
            }
            // Create a directory, maybe with index.js and another file in it.
            20..28 => {
                let path = join(rng.pick::<String>(&dirs), &random_name(rng));
                if exists(&path) {
                    continue;
                }
                mkdir(&path);
                let mut what = format!("create dir {path}");
                if rng.chance(50) {
                    write(&join(&path, "index.js"));
                    what += " with index.js";
                }
                if rng.chance(50) {
                    let inner = join(&path, &random_name(rng));
                    if !exists(&inner) {
                        write(&inner);
                        what += &format!(" and {inner}");
                    }
                }
                return what;
            }
            // Delete anything.
            28..43 => {
                if movable.is_empty() {
                    continue;
                }
                let (path, node) = rng.pick(&movable);
                remove(path);
                return format!("delete {node:?} {path}");
            }
            // Rename anything, possibly to another directory, possibly over a file.
            43..58 => {
                if movable.is_empty() {
                    continue;
                }
                let (from, node) = {
                    let entry = rng.pick(&movable);
                    (entry.0.clone(), entry.1)
                };
                let to = join(rng.pick::<String>(&dirs), &random_name(rng));
                if to == from || to.starts_with(&format!("{from}/")) {
                    continue;
                }
                let over = match fs::symlink_metadata(&to) {
                    Err(_) => false,
                    Ok(m) if m.is_dir() || node == Node::Dir => continue,
                    Ok(_) => true,
                };
                rename(&from, &to);
                let verb = if over { "over" } else { "to" };
                return format!("rename {node:?} {from} {verb} {to}");
            }
            // Replace a file by a directory holding index.js, or a directory by a file.
            58..68 => {
                let candidates: Vec<&&(String, Node)> =
                    movable.iter().filter(|(_, n)| *n != Node::Link).collect();
                if candidates.is_empty() {
                    continue;
                }
                let (path, node) = *rng.pick(&candidates);
                remove(path);
                if *node == Node::File {
                    write(&join(path, "index.js"));
                    return format!("replace file {path} by a directory holding index.js");
                }
                write(path);
                return format!("replace directory {path} by a file");
            }
            // Create or switch a symlink.
            68..85 => {
                let links: Vec<&&(String, Node)> =
                    movable.iter().filter(|(_, n)| *n == Node::Link).collect();
                let path = if !links.is_empty() && rng.chance(60) {
                    rng.pick(&links).0.clone()
                } else {
                    let path = join(rng.pick::<String>(&dirs), &random_name(rng));
                    if exists(&path) {
                        continue;
                    }
                    path
                };
                let target = rng.pick(targets).clone();
                if !exists(&path) {
                    symlink(&target, &path).unwrap();
                    return format!("symlink {path} -> {target}");
                }
                if rng.chance(50) {
                    switch_symlink(&target, &path);
                    return format!("switch symlink {path} -> {target} (atomic rename)");
                }
                remove(&path);
                symlink(&target, &path).unwrap();
                return format!("switch symlink {path} -> {target} (remove, create)");
            }
            // Swap the store's two directories: links to them now see the other's files.
            85..90 => {
                rename("../store/p1", "../store/p-swap");
                rename("../store/p2", "../store/p1");
                rename("../store/p-swap", "../store/p2");
                return "swap ../store/p1 and ../store/p2".to_owned();
            }
            // Rewrite a file's content: no directory changes.
            _ => {
                let files: Vec<&&(String, Node)> =
                    movable.iter().filter(|(_, n)| *n == Node::File).collect();
                if files.is_empty() {
                    continue;
                }
                let (path, _) = *rng.pick(&files);
                fs::write(path, "export const rewritten = 1;\n").unwrap();
                return format!("rewrite {path}");
            }
        }
    }
    "nothing (no edit applied)".to_owned()
}

fn differential(h: &mut Host) {
    let seed: u64 = std::env::var("BP_SEED").unwrap().parse().unwrap();
    let abs_base = std::env::current_dir()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let targets = symlink_targets(&abs_base);
    let mut rng = Rng::new(seed);
    let began = Instant::now();

    // The generated tree: three directories of the project and the store's two, ~8 names each.
    for dir in ["lib", "sub", "../store/p1", "../store/p2"] {
        mkdir(dir);
    }
    write("main.js");
    write("lib/a.js");
    write("sub/x.js");
    let mut log: Vec<String> = Vec::new();
    for dir in [".", "lib", "sub", "../store/p1", "../store/p2"] {
        for _ in 0..8 {
            let path = join(dir, &random_name(&mut rng));
            if exists(&path) {
                continue;
            }
            let what = match rng.below(10) {
                0..6 => {
                    write(&path);
                    format!("file {path}")
                }
                6..8 => {
                    mkdir(&path);
                    if rng.chance(60) {
                        write(&join(&path, "index.js"));
                        format!("dir {path} with index.js")
                    } else {
                        format!("dir {path}")
                    }
                }
                _ => {
                    let target = rng.pick(&targets).clone();
                    symlink(&target, &path).unwrap();
                    format!("symlink {path} -> {target}")
                }
            };
            log.push(format!("setup: {what}"));
        }
    }

    let mut rounds = 0;
    let (mut trusted_starts, mut agreeing_answers, mut found) = (0, 0, 0);
    // Which of the odd questions (after the first 40) found a module in some start.
    let mut odd_found = [false; QUERIES.len() - 40];
    // One resolver that lives through every round, as a long-lived host's does (on its own
    // handle, so that what it learns is stored only when it is dropped): in the rounds that
    // sleep past its checks' 100 ms, its answers must be FileResolver's too.
    let lived_cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
    let mut lived = PackResolver::new(file_resolver(), lived_cache);
    let mut lived_answers = 0;
    let mut places = vec![std::env::current_dir().unwrap()];
    let mut travels = 0;
    for round in 0..ROUNDS {
        if began.elapsed() > DIFFERENTIAL_BUDGET {
            println!("time budget spent after {round} rounds");
            break;
        }
        let mut edits: Vec<String> = (0..1 + rng.below(3))
            .map(|_| random_edit(&mut rng, &targets))
            .collect();
        let travel = travel(&mut rng, round, &mut places);
        if let Some(travel) = &travel {
            // A host's resolver resolves against the directory it started in: a new one.
            let cache = Cache::open(common::child::path_var("BP_ROOT")).unwrap();
            lived = PackResolver::new(file_resolver(), cache);
            let cwd = std::env::current_dir().unwrap();
            edits.push(format!("{travel:?} to {}", cwd.display()));
            travels += 1;
        }
        let slept = round % 2 == 1;
        if slept {
            std::thread::sleep(PAST_RACY);
        }
        let start = h.start(&QUERIES);
        for e in &edits {
            log.push(format!("round {round}: {e}"));
        }
        let context = format!("seed {seed}, round {round} (slept {slept}), edits {edits:?}");
        expect_agreement(h, &context, &start, &log);
        if slept {
            for a in &start.answers {
                let answer = Resolver::resolve(&mut lived, h.ctx, &a.base, &a.name, None).ok();
                assert_eq!(
                    answer, a.file,
                    "{context}: the long-lived resolver, ({:?}, {:?})",
                    a.base, a.name
                );
                lived_answers += 1;
            }
        }
        // A fresh copy is a new root: no answers of its own yet.
        if round > 0 && travel != Some(Travel::Copied) {
            assert!(
                start.hits >= 1,
                "{context}: answers were not loaded from the cache"
            );
        }
        agreeing_answers += start.answers.len();
        found += start.answers.iter().filter(|a| a.file.is_some()).count();
        for (seen, answer) in odd_found.iter_mut().zip(&start.answers[40..]) {
            *seen |= answer.file.is_some();
        }

        if slept {
            // Past the racy window, that start stamped every directory it probed, trusted. The
            // questions it found a module for probe existing directories only (see
            // `Expect::probes_existing_dirs_only`): asked again, they must be answered from
            // the cache alone, storing nothing, and still agree.
            let settled: Vec<(&str, &str)> = QUERIES
                .iter()
                .zip(&start.answers)
                .filter(|(_, a)| match &a.file {
                    Some(found) => a.name.starts_with('.') || !found.starts_with("lib/"),
                    None => false,
                })
                .map(|(q, _)| *q)
                .collect();
            if !settled.is_empty() {
                let again = h.start(&settled);
                let context = format!("{context}, settled start");
                expect_agreement(h, &context, &again, &log);
                assert_eq!(
                    again.puts, 0,
                    "{context}: directories stamped past the racy window were stamped again"
                );
                trusted_starts += 1;
                agreeing_answers += again.answers.len();
                found += again.answers.len();
            }
        }
        rounds += 1;
    }
    println!(
        "seed {seed}: {rounds} rounds, {agreeing_answers} answers agreed ({found} found, {} \
         errors), {trusted_starts} settled starts stored nothing, {lived_answers} answers of the \
         long-lived resolver agreed, {travels} moves, copies and returns",
        agreeing_answers - found
    );
    assert!(travels >= 4, "the tree travelled only {travels} times");
    assert!(
        lived_answers >= QUERIES.len(),
        "the long-lived resolver was not asked"
    );
    // The tree must make the comparison meaningful: both kinds of answer, in quantity.
    assert!(rounds >= 10, "only {rounds} rounds ran");
    assert!(found >= rounds, "too few questions found a module: {found}");
    assert!(
        agreeing_answers - found >= rounds,
        "too few questions failed to resolve"
    );
    assert!(trusted_starts >= 1, "no settled start");
    let odd: Vec<_> = QUERIES[40..]
        .iter()
        .zip(odd_found)
        .filter_map(|(q, seen)| seen.then_some(q))
        .collect();
    // Counted over every seed by the parent: a tree that happens to hold few modules finds
    // none for some seeds.
    println!("odd questions that found a module: {} {odd:?}", odd.len());
}

/// How the project travelled before a round's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Travel {
    /// `mv` to a new path beside it: the same inodes.
    Moved,
    /// `cp -a` to a new path beside it (new inodes and ctimes, every mtime set to one
    /// instant), the original left as it was.
    Copied,
    /// Back to a copy left behind earlier, whose tree has not seen the edits since.
    Returned,
}

/// Every few rounds the project travels (the store beside it stays): moved, copied, or back
/// to a copy left behind, so that answers recorded in one place are asked for in another
/// whose tree may differ. The working directory follows it.
fn travel(rng: &mut Rng, round: usize, places: &mut Vec<PathBuf>) -> Option<Travel> {
    let here = std::env::current_dir().unwrap();
    let to = here.with_file_name(format!("project-{round}"));
    let travel = match round % 5 {
        2 => {
            fs::rename(&here, &to).unwrap();
            let i = places.iter().position(|p| *p == here).unwrap();
            places[i] = to.clone();
            Travel::Moved
        }
        4 => {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(&here)
                .arg(&to)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "cp -a {} {}",
                here.display(),
                to.display()
            );
            // Every mtime set to one instant, as reproducible archives and image layers
            // (SOURCE_DATE_EPOCH) leave them: copies of different trees look alike to mtimes.
            let status = std::process::Command::new("find")
                .arg(&to)
                .args(["-exec", "touch", "-h", "-d", "@315532800", "{}", "+"])
                .status()
                .unwrap();
            assert!(status.success(), "touch {}", to.display());
            places.push(to.clone());
            Travel::Copied
        }
        0 if places.len() > 1 && rng.chance(70) => {
            let others: Vec<&PathBuf> = places.iter().filter(|p| **p != here).collect();
            let back = rng.pick(&others).to_path_buf();
            std::env::set_current_dir(&back).unwrap();
            return Some(Travel::Returned);
        }
        _ => return None,
    };
    std::env::set_current_dir(&to).unwrap();
    Some(travel)
}

/// Panics, with the edits so far, the tree and each disagreement (also asked of a
/// `PackResolver` over an empty cache), if the start's resolvers disagreed.
fn expect_agreement(h: &Host, context: &str, start: &Start, log: &[String]) {
    let wrong: Vec<&Answer> = start.answers.iter().filter(|a| a.pack != a.file).collect();
    if wrong.is_empty() {
        return;
    }
    println!("{context}: PackResolver disagrees with FileResolver");
    println!("--- every edit so far ---");
    for line in log {
        println!("{line}");
    }
    println!("--- tree now ---");
    for (path, node) in tree() {
        let target = fs::read_link(&path)
            .map(|t| format!(" -> {}", t.display()))
            .unwrap_or_default();
        println!("{node:?} {path}{target}");
    }
    println!("--- disagreements ---");
    for a in &wrong {
        // The same question to a PackResolver over an empty cache, asked alone: tells a stale
        // cached answer from a wrong answer computed in this start.
        let cold_root = common::tempdir();
        let cold_cache = Cache::open(cold_root.path()).unwrap();
        let mut cold = PackResolver::new(file_resolver(), cold_cache);
        let alone = Resolver::resolve(&mut cold, h.ctx, &a.base, &a.name, None).ok();
        println!(
            "({:?}, {:?}): PackResolver {:?}, FileResolver {:?}, PackResolver over an empty \
             cache asked alone {:?}",
            a.base, a.name, a.pack, a.file, alone
        );
    }
    panic!(
        "{context}: PackResolver disagrees on {} of {} questions; first: ({:?}, {:?}): \
         PackResolver {:?}, FileResolver {:?} (details on stdout)",
        wrong.len(),
        start.answers.len(),
        wrong[0].base,
        wrong[0].name,
        wrong[0].pack,
        wrong[0].file
    );
}

// ---------------------------------------------------------------------------------------------
// The parent side.

/// A temp directory holding `project/` (a child's working directory) and `cache/`.
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let (tmp, base) = common::canonical_tempdir();
        fs::create_dir_all(base.join("project")).unwrap();
        Sandbox { _tmp: tmp, base }
    }

    fn project(&self) -> PathBuf {
        self.base.join("project")
    }

    fn root(&self) -> PathBuf {
        self.base.join("cache")
    }
}

/// Runs a child in `role` with working directory `dir` and cache root `root`; panics with
/// everything it printed unless it succeeded.
fn run(role: &str, dir: &Path, root: &Path, env: &[(&str, &str)]) -> String {
    let mut child = Child::new(role).current_dir(dir).env("BP_ROOT", root);
    for (name, value) in env {
        child = child.env(name, value);
    }
    let out = child.run_with_limit(CHILD_LIMIT);
    if !out.status.success() {
        let last = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(300)..].join("\n")
        };
        panic!(
            "child {role} in {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            dir.display(),
            out.status,
            last(&out.stdout),
            last(&out.stderr)
        );
    }
    out.stdout
}

/// Runs a child in `role` in a new sandbox; it must succeed and print `done`.
fn child_says(role: &str, env: &[(&str, &str)], done: &str) {
    let sandbox = Sandbox::new();
    let out = run(role, &sandbox.project(), &sandbox.root(), env);
    assert!(out.contains(done), "{out}");
}

fn scenario(role: &str) {
    child_says(role, &[], "5: quiet set, stamps trusted");
}

#[test]
fn a_new_file_matching_an_earlier_pattern_wins_over_a_known_answer() {
    scenario("later-pattern");
}

#[test]
fn a_new_file_earlier_on_the_search_path_wins_over_a_known_answer() {
    scenario("search-path-order");
}

#[test]
fn deleted_and_renamed_modules_stop_resolving_or_resolve_anew() {
    scenario("delete-rename");
}

#[test]
fn a_file_replaced_by_a_directory_of_its_name_stops_resolving() {
    scenario("file-to-directory");
}

#[test]
fn answers_through_a_switched_symlinked_directory_follow_the_switch() {
    scenario("symlinked-directory");
}

/// (f) Two projects with the same relative names share one cache root: A has `x.js`, B only
/// `x.mjs`. Starts alternate between them, inside and past the racy window; then the two
/// project directories are swapped (each working directory path now holds the other's
/// files), and finally B gains an `x.js`.
#[test]
fn two_projects_sharing_one_cache_root_keep_apart_and_follow_a_swap() {
    let sandbox = Sandbox::new();
    let (one, two) = (sandbox.base.join("one"), sandbox.base.join("two"));
    for (dir, x) in [(&one, "x.js"), (&two, "x.mjs")] {
        fs::create_dir_all(dir.join("lib")).unwrap();
        fs::write(dir.join("main.js"), "").unwrap();
        fs::write(dir.join("lib/a.js"), "").unwrap();
        fs::write(dir.join(x), "").unwrap();
    }
    let root = sandbox.root();
    let start = |dir: &Path, x: &str| -> (u64, u64) {
        let out = run("project", dir, &root, &[("BP_EXPECT", x)]);
        let field = |name: &str| -> u64 {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {out}"))
                .parse()
                .unwrap()
        };
        (field("puts"), field("hits"))
    };

    // Inside the racy window (its stamps cannot vouch yet), then past it: each start
    // answers for its own project (the child checks `BP_EXPECT`).
    for _ in 0..2 {
        start(&one, "x.js");
        start(&two, "x.mjs");
    }
    std::thread::sleep(PAST_RACY);
    for _ in 0..2 {
        start(&one, "x.js");
        start(&two, "x.mjs");
    }
    // Past the racy window: each project's answers are trusted, and loaded from the cache.
    assert_eq!(start(&one, "x.js"), (0, 1));
    assert_eq!(start(&two, "x.mjs"), (0, 1));

    // Swap the directories: the same working directory paths, the other files.
    let swap = sandbox.base.join("swap");
    fs::rename(&one, &swap).unwrap();
    fs::rename(&two, &one).unwrap();
    fs::rename(&swap, &two).unwrap();
    for _ in 0..2 {
        start(&one, "x.mjs");
        start(&two, "x.js");
    }
    std::thread::sleep(PAST_RACY);
    for _ in 0..2 {
        start(&one, "x.mjs");
        start(&two, "x.js");
    }
    assert_eq!(start(&one, "x.mjs").0, 0);
    assert_eq!(start(&two, "x.js").0, 0);

    // The x.mjs project gains an x.js, which must win at once.
    fs::write(one.join("x.js"), "").unwrap();
    for _ in 0..2 {
        start(&one, "x.js");
        start(&two, "x.js");
    }
}

/// (h) A resolver that outlives a start, through edits (see `long_lived`).
#[test]
fn a_long_lived_resolver_sees_edits_once_its_checks_are_due() {
    child_says("long-lived", &[], "long-lived: done");
}

#[test]
fn a_directory_replaced_mid_round_is_probed_anew_not_through_an_old_handle() {
    child_says("replaced-mid-round", &[], "replaced mid-round: done");
}

#[test]
fn a_deleted_working_directory_is_not_the_root() {
    child_says("deleted-cwd", &[], "deleted cwd: done");
}

#[test]
fn paths_too_long_for_the_kernel_resolve_and_load_as_relative_ones_do() {
    child_says("long-cwd", &[], "long cwd: done");
}

/// (g) Where a filesystem's ctime can be set (FAT, exFAT; pretended here), no directory stamp
/// can vouch: every start probes as `FileResolver` does, answers as it does, and stores
/// nothing (the child checks each start).
#[cfg(feature = "fault-injection")]
#[test]
fn on_a_filesystem_whose_ctime_can_be_set_every_start_probes_and_stores_nothing() {
    child_says(
        "settable-ctime",
        &[("BYTECODE_PACK_PRETEND_CTIME_SETTABLE", "1")],
        "settable ctime: done",
    );
}

/// `Module::import` from the host passes base `""`, from which `FileResolver` answers `./a`
/// with `./a.js`, while from base `main.js` (the same directory, `""`) it answers `a.js`.
#[test]
fn empty_base_and_a_base_in_the_root_are_answered_apart() {
    let sandbox = Sandbox::new();
    run("empty-base", &sandbox.project(), &sandbox.root(), &[]);
}

/// Random edits to a generated tree (files with and without extensions, directories with and
/// without index.js, symlinks to files, to directories and dangling, a store outside the
/// project behind symlinks), 30 rounds of 1-3 edits each, every other round after the racy
/// window; each round one start asks 52 questions of both resolvers. Every few rounds the
/// project is moved, copied (the copy edited from then on), or the start runs back in a copy
/// left behind: answers recorded in one tree must never answer for another.
#[test]
fn differential_against_file_resolver_under_random_edits() {
    // BP_RESOLVER_SEEDS=n runs seeds 1..=n instead, for a longer search.
    let seeds: Vec<u64> = match std::env::var("BP_RESOLVER_SEEDS") {
        Ok(n) => (1..=n.parse().expect("BP_RESOLVER_SEEDS: a number")).collect(),
        Err(_) => vec![1, 2, 3],
    };
    let mut odd_found = 0;
    for seed in &seeds {
        let sandbox = Sandbox::new();
        let out = run(
            "differential",
            &sandbox.project(),
            &sandbox.root(),
            &[("BP_SEED", &seed.to_string())],
        );
        println!("{}", out.trim());
        let count = out
            .lines()
            .find_map(|l| l.strip_prefix("odd questions that found a module: "))
            .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .expect("the child counts the odd questions that found a module");
        odd_found += count;
    }
    // The odd names (`..`, `//`, a trailing slash, the store outside the project, an empty
    // base) must be compared on trees where they find modules, not only where both fail.
    assert!(
        odd_found >= 2 * seeds.len(),
        "too few odd questions found a module: {odd_found} over {} seeds",
        seeds.len()
    );
}
