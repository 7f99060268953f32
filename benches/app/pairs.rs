//! `BP_APP_PAIRS=<a>/<b>[,<c>/<d>...]`: after the timed run, each pair of variants is started
//! alternately on every code base that runs both, `BP_APP_PAIR_ROUNDS` rounds (22 unless set;
//! an odd count is rounded up), a then b in even rounds and b then a in odd ones. Criterion
//! times one variant after the other, minutes apart, and this VM's speed drifts over minutes;
//! alternating cancels the drift out of the ratio. Printed per pair: each variant's median to
//! ready, and the median over each two rounds (one in each order, so that going first or
//! second weighs on neither side) of the geometric mean of their ratios a / b.
//! `BP_APP_PAIR_CODEBASES=<name>,...` limits the code bases.
//!
//! `BP_APP_MAP_PAIRS=<variant>[,<variant>...]`: each variant is started alternately on
//! `tsc-mapped` and on `tsc-unmapped` (the same modules without their maps), in the same
//! rounds, and printed the same way: what the maps cost that start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fixture::{CODEBASES, Codebase};
use crate::{Prepared, Variant, is_root, timed_start, variant_dir};

/// The environment variable naming the pairs.
pub const PAIRS: &str = "BP_APP_PAIRS";
/// The environment variable naming the variants started with and without maps.
pub const MAP_PAIRS: &str = "BP_APP_MAP_PAIRS";
const ROUNDS: &str = "BP_APP_PAIR_ROUNDS";
const ONLY: &str = "BP_APP_PAIR_CODEBASES";

/// Runs and prints the pairs `spec` names (`<a>/<b>,...`).
pub fn print_pairs(spec: &str) {
    let rounds = rounds();
    let pairs: Vec<(Variant, Variant)> = spec
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (a, b) = pair
                .split_once('/')
                .unwrap_or_else(|| panic!("{PAIRS}: {pair:?} is not <variant>/<variant>"));
            let variant = |name: &str| {
                let name = name.trim();
                Variant::from_name(name).unwrap_or_else(|| panic!("{PAIRS}: no variant {name}"))
            };
            (variant(a), variant(b))
        })
        .collect();
    let only = std::env::var(ONLY).ok();
    let chosen = |name: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|o| o.trim() == name))
    };
    for codebase in CODEBASES.iter().filter(|c| chosen(c.name)) {
        let runs = |v: Variant| codebase.runs(v) && (!v.needs_root() || is_root());
        let pairs: Vec<_> = pairs.iter().filter(|(a, b)| runs(*a) && runs(*b)).collect();
        if pairs.is_empty() {
            continue;
        }
        let p = Prepared::new(codebase);
        let mut dirs: HashMap<Variant, Option<PathBuf>> = HashMap::new();
        for &&(a, b) in &pairs {
            for v in [a, b] {
                dirs.entry(v)
                    .or_insert_with(|| variant_dir(&p, codebase, v));
            }
            let starts = [
                (&p, codebase, a, dirs[&a].as_deref()),
                (&p, codebase, b, dirs[&b].as_deref()),
            ];
            let (ms_a, ms_b, ratio) = alternate(starts, rounds);
            eprintln!(
                "app pairs: {} {} {ms_a:.2} ms / {} {ms_b:.2} ms = {ratio:.2}x (median over {rounds} alternated rounds, two at a time)",
                codebase.name,
                a.name(),
                b.name(),
            );
        }
    }
}

/// Runs and prints each variant `spec` names (`<variant>,...`) on `tsc-mapped` against
/// `tsc-unmapped`.
pub fn print_map_pairs(spec: &str) {
    let rounds = rounds();
    let codebase = |name| {
        CODEBASES
            .iter()
            .find(|c| c.name == name)
            .expect("a map fixture")
    };
    let (mapped, unmapped) = (codebase("tsc-mapped"), codebase("tsc-unmapped"));
    let (p_mapped, p_unmapped) = (Prepared::new(mapped), Prepared::new(unmapped));
    for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let v =
            Variant::from_name(name).unwrap_or_else(|| panic!("{MAP_PAIRS}: no variant {name}"));
        let dirs = [
            variant_dir(&p_mapped, mapped, v),
            variant_dir(&p_unmapped, unmapped, v),
        ];
        let starts = [
            (&p_mapped, mapped, v, dirs[0].as_deref()),
            (&p_unmapped, unmapped, v, dirs[1].as_deref()),
        ];
        let (ms_a, ms_b, ratio) = alternate(starts, rounds);
        eprintln!(
            "app map pairs: {} tsc-mapped {ms_a:.2} ms / tsc-unmapped {ms_b:.2} ms = {ratio:.3}x (median over {rounds} alternated rounds, two at a time)",
            v.name(),
        );
    }
}

/// `BP_APP_PAIR_ROUNDS`, even.
fn rounds() -> usize {
    std::env::var(ROUNDS)
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .unwrap_or(22)
        .clamp(2, 1000)
        .next_multiple_of(2)
}

/// One start (what [`timed_start`] takes).
type Start<'a> = (
    &'a Prepared,
    &'a Codebase,
    Variant,
    Option<&'a std::path::Path>,
);

/// The two `starts` alternated for `rounds` rounds, a then b in even rounds and b then a in
/// odd ones: each one's median to ready (ms), and the median over each two rounds of the
/// geometric mean of their ratios a / b.
fn alternate(starts: [Start<'_>; 2], rounds: usize) -> (f64, f64, f64) {
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (p, codebase, variant, dir) = starts[i];
            times[i].push(timed_start(p, codebase, variant, dir).ready);
        }
    }
    let ratios: Vec<f64> = times[0]
        .iter()
        .zip(&times[1])
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    // A round with a first and the next with b first.
    // Their median taken over logarithms, so that an even count's middle two meet at
    // their geometric mean and a/b stays the inverse of b/a.
    let balanced: Vec<f64> = ratios.chunks(2).map(|r| (r[0] * r[1]).ln() / 2.0).collect();
    let ms = |d: &[Duration]| median(d.iter().map(Duration::as_secs_f64).collect()) * 1e3;
    (ms(&times[0]), ms(&times[1]), median(balanced).exp())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}
