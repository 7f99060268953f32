//! `bytecode-pack`: inspect and maintain a bytecode-pack cache from the shell.
//!
//! ```sh
//! bytecode-pack stats            # what is in the cache for this build
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

use bytecode_pack::{Cache, EntryInfo, abi_tag, default_root, other_abis, prune_other_abis};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

/// Inspect and maintain a bytecode-pack cache.
#[derive(Parser)]
#[command(name = "bytecode-pack", version)]
struct Cli {
    /// Cache root (the directory holding one cache per ABI tag). Default: $BYTECODE_PACK_CACHE_DIR,
    /// else the per-user cache directory joined with `bytecode-pack`.
    #[arg(long, global = true, value_name = "ROOT")]
    dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Entries, sizes, dead space, generation, ABI tag and other builds' caches.
    Stats,
    /// The entries of this build's cache.
    List {
        /// Order of the listing.
        #[arg(long, value_enum, default_value_t = SortBy::Name)]
        sort: SortBy,
    },
    /// Check every checksum and the index against the pack; exit 1 if anything is wrong.
    Verify,
    /// Rewrite the live entries into a new pack, reclaiming dead space.
    Compact,
    /// Remove every entry of this build's cache.
    Clear,
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
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("bytecode-pack: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    let root = match &cli.dir {
        Some(dir) => dir.clone(),
        None => default_root()?,
    };
    if let Command::Prune { older_than_days } = cli.command {
        return prune(cli, &root, older_than_days);
    }
    // Reading commands must not create a cache where there is none. Stats on a root with no
    // cache yet is an empty cache, as `ccache -s` shows one.
    let dir = root.join(abi_tag());
    if std::fs::symlink_metadata(&dir).is_err() {
        if let Command::Stats = cli.command {
            return empty_stats(cli, &dir);
        }
        return Err(Failure(format!(
            "no cache for this build at {}",
            dir.display()
        )));
    }
    let cache = Cache::open(&root)?;
    match cli.command {
        Command::Stats => stats(cli, &root, &cache),
        Command::List { sort } => list(cli, &cache, sort),
        Command::Verify => verify(cli, &cache),
        Command::Compact => compact(cli, &cache),
        Command::Clear => clear(cli, &cache),
        Command::Prune { .. } => unreachable!("handled above"),
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
fn empty_stats(cli: &Cli, dir: &Path) -> Result<ExitCode, Failure> {
    if cli.json {
        let out = json!({
            "entries": 0, "pack_bytes": 0, "live_bytes": 0, "dead_bytes": 0, "dead_ratio": 0.0,
            "index_bytes": 0, "generation": 0, "abi_tag": abi_tag(), "path": dir,
            "damage": null, "other_abi_tags": [],
        });
        println!("{out}");
    } else {
        println!("cache       {} (not created yet)", dir.display());
        println!("abi tag     {}", abi_tag());
        println!("entries     0");
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(cli: &Cli, root: &Path, cache: &Cache) -> Result<ExitCode, Failure> {
    let s = cache.stats()?;
    let others = other_abis(root)?;
    let dead_ratio = if s.pack_bytes == 0 {
        0.0
    } else {
        s.dead_bytes() as f64 / s.pack_bytes as f64
    };
    if cli.json {
        let others: Vec<_> = others
            .iter()
            .map(|o| json!({"abi_tag": o.abi_tag, "path": o.path, "bytes": o.bytes}))
            .collect();
        let out = json!({
            "entries": s.entries,
            "pack_bytes": s.pack_bytes,
            "live_bytes": s.live_bytes,
            "dead_bytes": s.dead_bytes(),
            "dead_ratio": dead_ratio,
            "index_bytes": s.index_bytes,
            "generation": s.generation,
            "abi_tag": abi_tag(),
            "path": s.dir,
            "damage": s.damage,
            "other_abi_tags": others,
        });
        println!("{out}");
        return Ok(damage_code(&s.damage));
    }
    println!("cache       {}", s.dir.display());
    println!("abi tag     {}", abi_tag());
    println!("entries     {}", s.entries);
    println!("pack        {}", human(s.pack_bytes));
    println!("live        {}", human(s.live_bytes));
    println!(
        "dead        {} ({:.0}%)",
        human(s.dead_bytes()),
        dead_ratio * 100.0
    );
    println!("index       {}", human(s.index_bytes));
    println!("generation  {}", s.generation);
    if others.is_empty() {
        println!("other builds: none");
    } else {
        println!("other builds:");
        for o in &others {
            let idle = human_age(age(o.last_used));
            println!("  {}  {}  unused {idle}", o.abi_tag, human(o.bytes));
        }
    }
    if let Some(damage) = &s.damage {
        println!("damaged: {damage}; every lookup misses until the next write rebuilds it");
    }
    Ok(damage_code(&s.damage))
}

/// Exit 1 when the cache is damaged, as `verify` does.
fn damage_code(damage: &Option<String>) -> ExitCode {
    if damage.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn list(cli: &Cli, cache: &Cache, sort: SortBy) -> Result<ExitCode, Failure> {
    let mut entries: Vec<EntryInfo> = cache.entries()?;
    match sort {
        SortBy::Name => entries.sort_by(|a, b| a.module_name.cmp(&b.module_name)),
        SortBy::Size => entries.sort_by_key(|e| std::cmp::Reverse(e.bytecode_bytes)),
        SortBy::Age => entries.sort_by_key(|e| e.recorded_at),
    }
    if cli.json {
        let rows: Vec<_> = entries
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
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32}  {:>10}  {:>6}  {:>5}  MODULE",
        "KEY", "BYTECODE", "INPUTS", "AGE"
    );
    for e in &entries {
        println!(
            "{:<32}  {:>10}  {:>6}  {:>5}  {}",
            e.key,
            human(e.bytecode_bytes),
            e.inputs,
            human_age(age(e.recorded_at)),
            e.module_name
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(cli: &Cli, cache: &Cache) -> Result<ExitCode, Failure> {
    let report = with_spinner("verifying", || cache.verify())?;
    if cli.json {
        let out = json!({
            "ok": report.is_ok(),
            "entries": report.entries,
            "segments_checked": report.segments_checked,
            "segments_in_pack": report.segments_in_pack,
            "problems": report.problems,
        });
        println!("{out}");
    } else {
        println!(
            "{} entries, {} segments checked, {} segments in the pack",
            report.entries, report.segments_checked, report.segments_in_pack
        );
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        println!(
            "{}",
            if report.is_ok() {
                "ok"
            } else {
                "damaged: `bytecode-pack compact` drops what is corrupt"
            }
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn compact(cli: &Cli, cache: &Cache) -> Result<ExitCode, Failure> {
    let r = with_spinner("compacting", || cache.compact())?;
    let reclaimed = r.pack_bytes_before.saturating_sub(r.pack_bytes_after);
    if cli.json {
        let out = json!({
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
        println!("{out}");
    } else {
        println!(
            "reclaimed {} ({} -> {}); kept {} of {} entries ({} stale, {} corrupt, {} evicted)",
            human(reclaimed),
            human(r.pack_bytes_before),
            human(r.pack_bytes_after),
            r.entries_after,
            r.entries_before,
            r.dropped_stale,
            r.dropped_corrupt,
            r.evicted
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clear(cli: &Cli, cache: &Cache) -> Result<ExitCode, Failure> {
    let before = cache.stats()?;
    cache.clear()?;
    if cli.json {
        println!(
            "{}",
            json!({"removed_entries": before.entries, "reclaimed_bytes": before.pack_bytes})
        );
    } else {
        println!(
            "removed {} entries, reclaimed {}",
            before.entries,
            human(before.pack_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(cli: &Cli, root: &Path, days: u64) -> Result<ExitCode, Failure> {
    if !root.is_dir() {
        return Err(Failure(format!("no cache root at {}", root.display())));
    }
    let report = prune_other_abis(root, Duration::from_secs(days.saturating_mul(86_400)))?;
    if cli.json {
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|o| json!({"abi_tag": o.abi_tag, "path": o.path, "bytes": o.bytes}))
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|s| json!({"path": s.path, "reason": s.reason}))
            .collect();
        println!(
            "{}",
            json!({"removed": removed, "reclaimed_bytes": report.bytes_freed, "skipped": skipped})
        );
    } else {
        for o in &report.removed {
            println!("removed {}  {}", o.abi_tag, human(o.bytes));
        }
        for s in &report.skipped {
            println!("skipped {}: {}", s.path.display(), s.reason);
        }
        println!(
            "removed {} caches of other builds, reclaimed {}",
            report.removed.len(),
            human(report.bytes_freed)
        );
    }
    Ok(ExitCode::SUCCESS)
}
