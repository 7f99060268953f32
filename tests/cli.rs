//! The `bytecode-pack` command-line tool, through the built binary.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use bytecode_pack::{Cache, Key, NewEntry, abi_tag};
use common::age_tree;

fn populated() -> (tempfile::TempDir, PathBuf) {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    cache
        .put(
            &Key::for_source("a", b""),
            &NewEntry::new("alpha.js", &[1; 100]),
        )
        .unwrap();
    cache
        .put(
            &Key::for_source("b", b""),
            &NewEntry::new("beta.js", &[2; 5000]),
        )
        .unwrap();
    cache
        .put(
            &Key::for_source("c", b""),
            &NewEntry::new("gamma.js", &[3; 700]),
        )
        .unwrap();
    // A superseded version: dead space for compact to reclaim.
    cache
        .put(
            &Key::for_source("a", b""),
            &NewEntry::new("alpha.js", &[4; 100]),
        )
        .unwrap();
    (tmp, root)
}

fn cli(root: &Path) -> Command {
    let mut cmd = Command::cargo_bin("bytecode-pack").unwrap();
    // A hung command fails its test instead of hanging the suite.
    cmd.timeout(std::time::Duration::from_secs(120))
        .arg("--dir")
        .arg(root)
        .env_remove("BYTECODE_PACK_CACHE_DIR");
    cmd
}

fn json(root: &Path, args: &[&str]) -> serde_json::Value {
    let out = cli(root).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(root: &Path, args: &[&str]) -> String {
    let out = cli(root).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn stats_in_text_and_json() {
    let (_tmp, root) = populated();
    let text = stdout(&root, &["stats"]);
    assert!(text.contains("entries     3"), "{text}");
    assert!(text.contains(abi_tag()), "{text}");
    let v = json(&root, &["stats"]);
    assert_eq!(v["entries"], 3);
    assert_eq!(v["abi_tag"], abi_tag());
    assert!(v["dead_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        v["pack_bytes"].as_u64().unwrap(),
        v["live_bytes"].as_u64().unwrap() + v["dead_bytes"].as_u64().unwrap()
    );
}

#[test]
fn list_sorts_by_name_and_size() {
    let (_tmp, root) = populated();
    let text = stdout(&root, &["list"]);
    let order: Vec<usize> = ["alpha.js", "beta.js", "gamma.js"]
        .iter()
        .map(|n| text.find(n).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    let v = json(&root, &["list", "--sort", "size"]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["module_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta.js", "gamma.js", "alpha.js"]);
    assert_eq!(v[0]["bytecode_bytes"], 5000);
    assert_eq!(v[0]["key"].as_str().unwrap().len(), 32);
}

#[test]
fn verify_exits_1_on_damage() {
    let (_tmp, root) = populated();
    assert!(stdout(&root, &["verify"]).trim_end().ends_with("ok"));
    let pack = common::pack_file(&root.join(abi_tag()));
    let mut bytes = std::fs::read(&pack).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let out = cli(&root).arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("problem:"));
    let v: serde_json::Value = serde_json::from_slice(
        &cli(&root)
            .args(["verify", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn damage_is_reported_with_the_file_it_is_in() {
    let (_tmp, root) = populated();
    let dir = root.join(abi_tag());
    let pack = common::pack_file(&dir);
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(&pack).unwrap();
    // A truncated pack, then a pack with a bad magic: both are the pack's damage, not the
    // index's, and stats says so with exit 1 instead of showing an empty cache.
    for damaged in [
        original[..original.len() / 2].to_vec(),
        [b"XXXXXXXX".as_slice(), &original[8..]].concat(),
    ] {
        std::fs::write(&pack, &damaged).unwrap();
        for command in ["stats", "verify"] {
            let out = cli(&root).arg(command).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{command}: {text}");
            assert!(text.contains(&pack_name), "{command}: {text}");
            assert!(text.contains("damaged"), "{command}: {text}");
        }
    }
    std::fs::write(&pack, &original).unwrap();
    // A damaged index header.
    let index = dir.join("index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&index, bytes).unwrap();
    let out = cli(&root).args(["stats", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["damage"].as_str().unwrap().contains("index"), "{v}");
}

#[test]
fn compact_reclaims_and_clear_empties() {
    let (_tmp, root) = populated();
    let v = json(&root, &["compact"]);
    assert!(v["reclaimed_bytes"].as_u64().unwrap() >= 100);
    assert_eq!(v["entries_after"], 3);
    assert_eq!(json(&root, &["stats"])["dead_bytes"], 0);
    assert!(stdout(&root, &["clear"]).contains("removed 3 entries"));
    assert_eq!(json(&root, &["stats"])["entries"], 0);
}

#[test]
fn prune_removes_only_stale_caches_of_other_builds() {
    let (_tmp, root) = populated();
    // Another build's cache, written before caches carried a marker: proven by its headers.
    let old = root.join("bp0-old-x86_64-le-64");
    common::create_private_dir(&old);
    let mut old_bytes = 0;
    for entry in std::fs::read_dir(root.join(abi_tag())).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "CACHEDIR.TAG" {
            old_bytes += std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
        }
    }
    // A user's directories that only look like caches by their names.
    let taxes = root.join("bp2024-taxes/receipts");
    for dir in ["bp2024-taxes", "bp2024-taxes/receipts", "bp1"] {
        common::create_private_dir(&root.join(dir));
    }
    std::fs::write(taxes.join("r1.txt"), "receipt").unwrap();
    std::fs::write(root.join("bp1/notes.txt"), "notes").unwrap();
    for dir in [&old, &root.join("bp2024-taxes"), &root.join("bp1")] {
        age_tree(dir, Duration::from_secs(40 * 86_400));
    }
    let stats = json(&root, &["stats"]);
    assert_eq!(
        stats["other_abi_tags"].as_array().unwrap().len(),
        1,
        "{stats}"
    );
    assert_eq!(
        stats["other_abi_tags"][0]["abi_tag"],
        "bp0-old-x86_64-le-64"
    );
    assert_eq!(
        json(&root, &["prune", "--older-than-days", "50"])["removed"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let v = json(&root, &["prune"]);
    assert_eq!(v["removed"][0]["abi_tag"], "bp0-old-x86_64-le-64");
    assert_eq!(v["reclaimed_bytes"], old_bytes);
    assert!(!old.exists() && root.join(abi_tag()).exists());
    let skipped: Vec<String> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(skipped.len(), 2, "{v}");
    assert_eq!(
        std::fs::read_to_string(taxes.join("r1.txt")).unwrap(),
        "receipt"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("bp1/notes.txt")).unwrap(),
        "notes"
    );
    let text = stdout(&root, &["prune", "--older-than-days", "0"]);
    assert!(
        text.contains("skipped") && text.contains("bp2024-taxes"),
        "{text}"
    );
    assert!(taxes.join("r1.txt").exists() && root.join("bp1/notes.txt").exists());
}

#[test]
fn bad_arguments_and_missing_dirs_are_one_clear_line() {
    let tmp = common::tempdir();
    let out = cli(tmp.path()).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));

    let missing = tmp.path().join("nowhere");
    // Like `ccache -s`, stats on a root with no cache yet shows an empty one.
    let empty = json(&missing, &["stats"]);
    assert_eq!(empty["entries"], 0);
    assert!(stdout(&missing, &["stats"]).contains("entries     0"));
    // Nor is there anything wrong to find: verify says there is nothing to check, and passes.
    let nothing = cli(&missing).arg("verify").output().unwrap();
    assert_eq!(nothing.status.code(), Some(0));
    let said = String::from_utf8_lossy(&nothing.stdout);
    assert!(said.starts_with("nothing to check: no cache"), "{said}");
    let nothing = json(&missing, &["verify"]);
    assert_eq!(
        (&nothing["ok"], &nothing["exists"]),
        (&true.into(), &false.into())
    );
    for command in ["list", "compact", "clear", "prune"] {
        let out = cli(&missing).arg(command).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
        assert!(
            stderr.contains("nowhere") && !stderr.contains("panicked"),
            "{command}: {stderr}"
        );
    }
    assert!(!missing.exists(), "reading commands create nothing");

    // An empty --dir names no directory, and says so.
    let out = Command::cargo_bin("bytecode-pack")
        .unwrap()
        .timeout(std::time::Duration::from_secs(120))
        .args(["stats", "--dir", ""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the directory is empty"), "{stderr}");
}

/// Paths that are not UTF-8 (serde refuses them as JSON strings) are shown lossily, never a
/// panic; module names with control characters stay on their one line. (Linux: macOS refuses
/// file names that are not UTF-8.)
#[cfg(target_os = "linux")]
#[test]
fn odd_paths_and_module_names_are_shown_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = common::tempdir();
    let root = tmp.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let empty = json(&root, &["stats"]);
    assert_eq!(empty["entries"], 0);
    let cache = Cache::open(&root).unwrap();
    let name = "evil\nname\u{1b}[31m\u{202e}sj.\\n.js";
    cache
        .put(&Key::for_source("evil", b""), &NewEntry::new(name, b"bc"))
        .unwrap();
    let stats = json(&root, &["stats"]);
    assert!(
        stats["path"].as_str().unwrap().contains("caf\u{fffd}"),
        "{stats}"
    );
    let listed = json(&root, &["list"]);
    assert_eq!(listed[0]["module_name"], name);
    let text = stdout(&root, &["list"]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("evil\\nname\\u{1b}[31m\\u{202e}sj.\\\\n.js"),
        "{text}"
    );
    assert_eq!(json(&root, &["prune"])["removed"], serde_json::json!([]));
}

/// A root that is a file or a symlink loop is an error naming it, not "no cache".
#[cfg(unix)]
#[test]
fn a_root_that_cannot_hold_a_cache_is_named_with_its_error() {
    let tmp = common::tempdir();
    let file = tmp.path().join("file");
    std::fs::write(&file, "a user's file").unwrap();
    let looping = tmp.path().join("loop");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    for (root, error) in [(&file, "Not a directory"), (&looping, "symbolic links")] {
        for command in ["stats", "list"] {
            let out = cli(root).arg(command).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
            assert!(
                stderr.contains(&*root.to_string_lossy()) && stderr.contains(error),
                "{command}: {stderr}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a user's file");
}

/// `bytecode-pack list | head -1`: a reader that closes the pipe early ends the listing
/// quietly, with the command's exit code, not with a panic.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let tmp = common::tempdir();
    let root = tmp.path().join("cache");
    let cache = Cache::open(&root).unwrap();
    let entry = NewEntry::new("module.js", b"bc");
    cache
        .put_many((0..100u32).map(|i| (Key::for_source("m", &i.to_le_bytes()), &entry)))
        .unwrap();
    // Standard output is a pipe whose reading end is already closed: the first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bytecode-pack"))
        .arg("--dir")
        .arg(&root)
        .arg("list")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// `precompile` in a project: every module of the entry's graph is stored (the JSON summary
/// counts them); a syntax error makes it exit 1 naming the module, and the rest is stored.
#[test]
fn precompile_stores_the_graph_and_names_what_failed() {
    let (_tmp, base) = common::canonical_tempdir();
    let (project, root) = (base.join("app"), base.join("cache"));
    fs::create_dir_all(project.join("lib")).unwrap();
    fs::write(
        project.join("main.js"),
        "import { a } from './lib/a.js';\nexport const r = a;\n",
    )
    .unwrap();
    fs::write(project.join("lib/a.js"), "export const a = 1;\n").unwrap();
    let out = cli(&root)
        .current_dir(&project)
        .args(["precompile", "main.js", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["compiled"].as_u64(), report["modules"].as_u64()),
        (Some(2), Some(2))
    );

    fs::write(project.join("lib/broken.js"), "export const = ;\n").unwrap();
    let out = cli(&root)
        .current_dir(&project)
        .args(["precompile", "--all", "lib"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed lib/broken.js"), "{stdout}");
}
