//! `BP_APP_PAIRS=<a>/<b>[,<c>/<d>...]`: after the timed run, each pair of variants is started
//! alternately on every code base that runs both, `BP_APP_PAIR_ROUNDS` rounds (22 unless set;
//! an odd count is rounded up), a then b in even rounds and b then a in odd ones. Criterion
//! times one variant after the other, minutes apart, and this VM's speed drifts over minutes;
//! alternating cancels the drift out of the ratio. Printed per pair: each variant's median to
//! ready, and the median over each two rounds (one in each order, so that going first or
//! second weighs on neither side) of the geometric mean of their ratios a / b.
//! `BP_APP_PAIR_CODEBASES=<name>,...` limits the code bases.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fixture::CODEBASES;
use crate::{Prepared, Variant, is_root, timed_start, variant_dir};

/// The environment variable naming the pairs.
pub const PAIRS: &str = "BP_APP_PAIRS";
const ROUNDS: &str = "BP_APP_PAIR_ROUNDS";
const ONLY: &str = "BP_APP_PAIR_CODEBASES";

/// Runs and prints the pairs `spec` names (`<a>/<b>,...`).
pub fn print_pairs(spec: &str) {
    let rounds: usize = std::env::var(ROUNDS)
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .unwrap_or(22)
        .clamp(2, 1000)
        .next_multiple_of(2);
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
            let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let v = [a, b][i];
                    let report = timed_start(&p, codebase, v, dirs[&v].as_deref());
                    times[i].push(report.ready);
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
            eprintln!(
                "app pairs: {} {} {:.2} ms / {} {:.2} ms = {:.2}x (median over {rounds} alternated rounds, two at a time)",
                codebase.name,
                a.name(),
                ms(&times[0]),
                b.name(),
                ms(&times[1]),
                median(balanced).exp(),
            );
        }
    }
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
