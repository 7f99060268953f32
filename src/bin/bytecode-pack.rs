//! `bytecode-pack`: inspect and maintain a bytecode-pack cache from the shell.
//!
//! ```sh
//! bytecode-pack stats            # what is in the cache for this build; exit 1 if damaged
//! bytecode-pack list --sort size # its entries
//! bytecode-pack verify           # full integrity check; exit 1 if anything is wrong
//! bytecode-pack compact          # reclaim dead space
//! bytecode-pack prune            # remove caches of other builds unused for 30 days
//! ```
//!
//! Every command takes `--dir ROOT` (default: as `Cache::open_default`) and `--json`.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[path = "bytecode-pack/precompile.rs"]
mod precompile_command;

use bytecode_pack::quickjs::{CompileOptions, Precompile};
use bytecode_pack::{Cache, EntryInfo, abi_tag, default_root, other_abis, prune_other_abis};
use clap::{Parser, Subcommand, ValueEnum};
use precompile_command::precompile_command;
use rquickjs::loader::FileResolver;
use serde_json::json;

/// Inspect and maintain a bytecode-pack cache.
#[derive(Parser)]
#[command(name = "bytecode-pack", version)]
struct Cli {
    /// Cache root (the directory holding one cache per ABI tag). Default: $BYTECODE_PACK_CACHE_DIR,
    /// else the per-user cache directory joined with `bytecode-pack`.
    // Taken as any OS string (clap's path parser calls an empty one "none supplied"): `run`
    // says what is wrong with an empty one.
    #[arg(long, global = true, value_name = "ROOT", value_parser = clap::value_parser!(std::ffi::OsString))]
    dir: Option<std::ffi::OsString>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Entries, sizes, dead space, generation, ABI tag and other builds' caches; exit 1 if the
    /// cache is damaged (the damage is named).
    Stats,
    /// The entries of this build's cache.
    List {
        /// Order of the listing: name (by module name), size (largest bytecode first) or
        /// age (oldest first).
        #[arg(long, value_enum, default_value_t = SortBy::Name)]
        sort: SortBy,
    },
    /// Check every checksum and the index against the pack; exit 1 if anything is wrong.
    Verify,
    /// Rewrite the live entries into a new pack, reclaiming dead space.
    Compact,
    /// Remove every entry of this build's cache.
    Clear,
    /// Compile entry modules and everything they import (and every .js/.mjs under --all
    /// directories) into this build's cache without running them, so that the first start
    /// compiles nothing. Run it in the project directory, where the host starts: names resolve
    /// against it. Exit 1 if a module failed (each is named with the engine's message; the
    /// others are stored).
    Precompile {
        /// Entry modules, as the host imports them (`src/main.js`).
        entries: Vec<String>,
        /// Also every .js and .mjs file under this directory, relative to the project
        /// (repeatable).
        #[arg(long = "all", value_name = "DIR")]
        all: Vec<PathBuf>,
        /// A search path for bare names, as `FileResolver::with_path` (repeatable; default: .).
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
        /// A file pattern besides `{}.js`, as `FileResolver::with_pattern` (repeatable).
        #[arg(long = "pattern", value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Leave source and debug information out (`CompileOptions::STRIPPED`); the host's
        /// `PackLoader` must use the same options.
        #[arg(long)]
        stripped: bool,
        /// Threads compiling at once (0: one per core; at most one per core).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
    },
    /// Remove caches of other ABI tags (other QuickJS or crate versions) unused for a while.
    Prune {
        /// Only those unused for at least this many days.
        #[arg(long, default_value_t = 30)]
        older_than_days: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SortBy {
    Name,
    Size,
    Age,
}

/// A failure to report: one line on stderr, exit code 2.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        // One line, whatever a path in it holds.
        Failure(printable(&e.to_string()))
    }
}

/// What a command found: both renderings, and the exit code. Commands build one; only
/// `main` prints.
struct Report {
    json: serde_json::Value,
    text: Vec<String>,
    code: ExitCode,
}

impl Report {
    fn ok(json: serde_json::Value, text: Vec<String>) -> Report {
        Report {
            json,
            text,
            code: ExitCode::SUCCESS,
        }
    }

    /// Exit 1 when something is damaged, as `verify` does.
    fn failing_if(mut self, damaged: bool) -> Report {
        if damaged {
            self.code = ExitCode::from(1);
        }
        self
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(report) => match print(&cli, &report) {
            Ok(()) => report.code,
            // A reader that stopped early (`bytecode-pack list | head`) wanted no more.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => report.code,
            Err(e) => {
                eprintln!("bytecode-pack: writing to standard output: {e}");
                ExitCode::from(2)
            }
        },
        Err(Failure(message)) => {
            eprintln!("bytecode-pack: {message}");
            ExitCode::from(2)
        }
    }
}

/// Writes `report` to standard output (`println!` would panic on a closed pipe).
fn print(cli: &Cli, report: &Report) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if cli.json {
        writeln!(out, "{}", report.json)?;
    } else {
        for line in &report.text {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()
}

/// A path for JSON output: as text, with bytes that are not UTF-8 replaced (serde refuses a
/// path that is not UTF-8).
fn path_json(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Text from the cache or the file system (a module name, a directory name) made safe for one
/// line of a terminal: control characters (a newline, an escape sequence), line and paragraph
/// separators and bidirectional overrides (which reorder what follows) are escaped, and so is
/// a backslash, so that an escape cannot be forged.
fn printable(text: &str) -> String {
    let escaped = |c: char| {
        c == '\\'
            || c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`printable`] for a path.
fn printable_path(path: &Path) -> String {
    printable(&path.to_string_lossy())
}

fn run(cli: &Cli) -> Result<Report, Failure> {
    let root = match &cli.dir {
        Some(dir) if dir.is_empty() => {
            return Err(Failure(
                "--dir: the directory is empty: name a cache root".to_owned(),
            ));
        }
        Some(dir) => PathBuf::from(dir),
        None => default_root()?,
    };
    // Reading commands must not create a cache where there is none. Stats on a root with no
    // cache yet is an empty cache, as `ccache -s` shows one.
    let dir = root.join(abi_tag());
    // Only a cache that is not there is "no cache": any other error (a root that is a file or
    // a symlink loop, a directory this user cannot read) is reported as it is.
    let exists = match std::fs::symlink_metadata(&dir) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Failure(format!("{}: {e}", printable_path(&dir)))),
    };
    let open = || -> Result<Cache, Failure> {
        if !exists {
            return Err(Failure(format!(
                "no cache for this build at {}",
                printable_path(&dir)
            )));
        }
        Ok(Cache::open(&root)?)
    };
    match cli.command {
        Command::Stats if !exists => Ok(empty_stats(&dir)),
        Command::Verify if !exists => Ok(nothing_to_verify(&dir)),
        Command::Stats => stats(&root, &open()?),
        Command::List { sort } => list(&open()?, sort),
        Command::Verify => verify(&open()?),
        Command::Compact => compact(&open()?),
        Command::Clear => clear(&open()?),
        Command::Prune { older_than_days } => prune(&root, older_than_days),
        Command::Precompile {
            ref entries,
            ref all,
            ref paths,
            ref patterns,
            stripped,
            jobs,
        } => {
            let resolver = move || {
                let with_paths = if paths.is_empty() {
                    FileResolver::default().with_path(".")
                } else {
                    FileResolver::default().with_paths(paths.iter().map(String::as_str))
                };
                patterns
                    .iter()
                    .fold(with_paths, |r, p| r.with_pattern(p.as_str()))
            };
            let mut request = Precompile::new().jobs(jobs);
            if stripped {
                request = request.options(CompileOptions::STRIPPED);
            }
            for entry in entries {
                request = request.entry(entry.trim_start_matches("./"));
            }
            for dir in all {
                request = request.dir(dir);
            }
            precompile_command(&Cache::open(&root)?, &resolver, &request)
        }
    }
}

/// A spinner on a terminal's stderr while `work` runs; nothing when stderr is piped.
fn with_spinner<T>(message: &'static str, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    let out = work();
    bar.finish_and_clear();
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// What `stats` shows for a root with no cache for this build yet: zeros.
fn empty_stats(dir: &Path) -> Report {
    let json = json!({
        "entries": 0, "pack_bytes": 0, "live_bytes": 0, "dead_bytes": 0, "dead_ratio": 0.0,
        "index_bytes": 0, "generation": 0, "abi_tag": abi_tag(), "path": path_json(dir),
        "damage": null, "other_abi_tags": [],
    });
    let text = vec![
        format!("cache       {} (not created yet)", printable_path(dir)),
        format!("abi tag     {}", abi_tag()),
        "entries     0".to_owned(),
    ];
    Report::ok(json, text)
}

fn stats(root: &Path, cache: &Cache) -> Result<Report, Failure> {
    let s = cache.stats()?;
    let others = other_abis(root)?;
    let dead_ratio = if s.pack_bytes == 0 {
        0.0
    } else {
        s.dead_bytes() as f64 / s.pack_bytes as f64
    };
    let json = json!({
        "entries": s.entries,
        "pack_bytes": s.pack_bytes,
        "live_bytes": s.live_bytes,
        "dead_bytes": s.dead_bytes(),
        "dead_ratio": dead_ratio,
        "index_bytes": s.index_bytes,
        "generation": s.generation,
        "abi_tag": abi_tag(),
        "path": path_json(&s.dir),
        "damage": s.damage,
        "other_abi_tags": others
            .iter()
            .map(|o| json!({"abi_tag": o.abi_tag, "path": path_json(&o.path), "bytes": o.bytes}))
            .collect::<Vec<_>>(),
    });
    let mut text = vec![
        format!("cache       {}", printable_path(&s.dir)),
        format!("abi tag     {}", abi_tag()),
        format!("entries     {}", s.entries),
        format!("pack        {}", human(s.pack_bytes)),
        format!("live        {}", human(s.live_bytes)),
        format!(
            "dead        {} ({:.0}%)",
            human(s.dead_bytes()),
            dead_ratio * 100.0
        ),
        format!("index       {}", human(s.index_bytes)),
        format!("generation  {}", s.generation),
    ];
    if others.is_empty() {
        text.push("other builds: none".into());
    } else {
        text.push("other builds:".into());
        for o in &others {
            let idle = human_age(age(o.last_used));
            text.push(format!(
                "  {}  {}  unused {idle}",
                printable(&o.abi_tag),
                human(o.bytes)
            ));
        }
    }
    if let Some(damage) = &s.damage {
        text.push(format!(
            "damaged: {}; every lookup misses until the next write rebuilds it",
            printable(damage)
        ));
    }
    Ok(Report::ok(json, text).failing_if(s.damage.is_some()))
}

fn list(cache: &Cache, sort: SortBy) -> Result<Report, Failure> {
    let mut entries: Vec<EntryInfo> = cache.entries()?;
    match sort {
        SortBy::Name => entries.sort_by(|a, b| a.module_name.cmp(&b.module_name)),
        SortBy::Size => entries.sort_by_key(|e| std::cmp::Reverse(e.bytecode_bytes)),
        SortBy::Age => entries.sort_by_key(|e| e.recorded_at),
    }
    let json = serde_json::Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "key": e.key.to_string(),
                    "module_name": e.module_name,
                    "bytecode_bytes": e.bytecode_bytes,
                    "stored_bytes": e.stored_bytes,
                    "inputs": e.inputs,
                    "age_secs": age(e.recorded_at).as_secs(),
                })
            })
            .collect(),
    );
    let mut text = vec![format!(
        "{:<32}  {:>10}  {:>6}  {:>5}  MODULE",
        "KEY", "BYTECODE", "INPUTS", "AGE"
    )];
    text.extend(entries.iter().map(|e| {
        format!(
            "{:<32}  {:>10}  {:>6}  {:>5}  {}",
            e.key,
            human(e.bytecode_bytes),
            e.inputs,
            human_age(age(e.recorded_at)),
            printable(&e.module_name)
        )
    }));
    Ok(Report::ok(json, text))
}

/// What `verify` reports for a root with no cache for this build yet: nothing to check, which
/// is not a failure (a CI step that verifies a cache it may not have made yet passes).
fn nothing_to_verify(dir: &Path) -> Report {
    let json = json!({
        "ok": true, "exists": false, "entries": 0, "segments_checked": 0, "segments_in_pack": 0,
        "problems": [],
    });
    let text = vec![format!(
        "nothing to check: no cache for this build at {}",
        printable_path(dir)
    )];
    Report::ok(json, text)
}

fn verify(cache: &Cache) -> Result<Report, Failure> {
    let report = with_spinner("verifying", || cache.verify())?;
    let json = json!({
        "ok": report.is_ok(),
        "exists": true,
        "entries": report.entries,
        "segments_checked": report.segments_checked,
        "segments_in_pack": report.segments_in_pack,
        "problems": report.problems,
    });
    let mut text = vec![format!(
        "{} entries, {} segments checked, {} segments in the pack",
        report.entries, report.segments_checked, report.segments_in_pack
    )];
    text.extend(
        report
            .problems
            .iter()
            .map(|p| format!("problem: {}", printable(p))),
    );
    text.push(if report.is_ok() {
        "ok".into()
    } else {
        "damaged: `bytecode-pack compact` drops what is corrupt".into()
    });
    Ok(Report::ok(json, text).failing_if(!report.is_ok()))
}

fn compact(cache: &Cache) -> Result<Report, Failure> {
    let r = with_spinner("compacting", || cache.compact())?;
    let reclaimed = r.pack_bytes_before.saturating_sub(r.pack_bytes_after);
    let json = json!({
        "entries_before": r.entries_before,
        "entries_after": r.entries_after,
        "dropped_stale": r.dropped_stale,
        "dropped_corrupt": r.dropped_corrupt,
        "evicted": r.evicted,
        "pack_bytes_before": r.pack_bytes_before,
        "pack_bytes_after": r.pack_bytes_after,
        "reclaimed_bytes": reclaimed,
        "generation": r.generation,
    });
    let text = vec![format!(
        "reclaimed {} ({} -> {}); kept {} of {} entries ({} stale, {} corrupt, {} evicted)",
        human(reclaimed),
        human(r.pack_bytes_before),
        human(r.pack_bytes_after),
        r.entries_after,
        r.entries_before,
        r.dropped_stale,
        r.dropped_corrupt,
        r.evicted
    )];
    Ok(Report::ok(json, text))
}

fn clear(cache: &Cache) -> Result<Report, Failure> {
    let before = cache.stats()?;
    cache.clear()?;
    let json = json!({"removed_entries": before.entries, "reclaimed_bytes": before.pack_bytes});
    let text = vec![format!(
        "removed {} entries, reclaimed {}",
        before.entries,
        human(before.pack_bytes)
    )];
    Ok(Report::ok(json, text))
}

fn prune(root: &Path, days: u64) -> Result<Report, Failure> {
    if !root.is_dir() {
        return Err(Failure(format!(
            "no cache root at {}",
            printable_path(root)
        )));
    }
    let report = prune_other_abis(root, Duration::from_secs(days.saturating_mul(86_400)))?;
    let json = json!({
        "removed": report
            .removed
            .iter()
            .map(|o| json!({"abi_tag": o.abi_tag, "path": path_json(&o.path), "bytes": o.bytes}))
            .collect::<Vec<_>>(),
        "reclaimed_bytes": report.bytes_freed,
        "skipped": report
            .skipped
            .iter()
            .map(|s| json!({"path": path_json(&s.path), "reason": s.reason}))
            .collect::<Vec<_>>(),
    });
    let mut text: Vec<String> = report
        .removed
        .iter()
        .map(|o| format!("removed {}  {}", printable(&o.abi_tag), human(o.bytes)))
        .collect();
    text.extend(report.skipped.iter().map(|s| {
        format!(
            "skipped {}: {}",
            printable_path(&s.path),
            printable(&s.reason)
        )
    }));
    text.push(format!(
        "removed {} caches of other builds, reclaimed {}",
        report.removed.len(),
        human(report.bytes_freed)
    ));
    Ok(Report::ok(json, text))
}
