//! `bytecode-pack precompile`: the module graph compiled into the cache ahead of time, with a
//! progress bar on a terminal and a summary.

use std::io::IsTerminal;

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{Precompile, precompile};
use rquickjs::loader::FileResolver;
use serde_json::json;

use super::{Failure, Report, human, path_json, printable, printable_path};

pub(super) fn precompile_command(
    cache: &Cache,
    resolver: &(dyn Fn() -> FileResolver + Sync),
    request: &Precompile,
) -> Result<Report, Failure> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("precompiling");
        bar
    });
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let report = precompile(cache, resolver, request, &progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stored = cache.stats()?.live_bytes;
    let json = json!({
        "compiled": report.compiled,
        "modules": report.modules,
        "live_bytes": stored,
        "seconds": report.elapsed.as_secs_f64(),
        "failures": report
            .failures
            .iter()
            .map(|(name, message)| json!({"module": name, "message": message}))
            .collect::<Vec<_>>(),
        "skipped": report.skipped.iter().map(|p| path_json(p)).collect::<Vec<_>>(),
    });
    let mut text = vec![format!(
        "{} modules reached, {} compiled, cache {} live, in {:.2} s",
        report.modules,
        report.compiled,
        human(stored),
        report.elapsed.as_secs_f64()
    )];
    text.extend(
        report
            .failures
            .iter()
            .map(|(name, message)| format!("failed {}: {}", printable(name), printable(message))),
    );
    text.extend(report.skipped.iter().map(|p| {
        format!(
            "skipped {} (not a regular file, or seen before)",
            printable_path(p)
        )
    }));
    Ok(Report::ok(json, text).failing_if(!report.failures.is_empty()))
}
