//! The code's layout as a test: every module depends only on modules of lower layers, as the
//! layout table in `src/lib.rs` documents them, and the ABI tag's rquickjs series matches
//! Cargo.toml.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The crate's modules (a file, or the files under a directory) and the modules each one names as
/// `crate::<module>`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut visit = |module: String, text: &str| {
        let deps = graph.entry(module.clone()).or_default();
        // Code only: a doc link to another module is not a dependency.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = code.as_str();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module && name.chars().next().unwrap().is_lowercase() {
                deps.insert(name);
            }
        }
    };
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            // Every file below it, nested modules included, belongs to the top-level module.
            let mut dirs = vec![path];
            while let Some(dir) = dirs.pop() {
                for file in fs::read_dir(&dir).unwrap() {
                    let file = file.unwrap().path();
                    if file.is_dir() {
                        dirs.push(file);
                    } else {
                        visit(name.clone(), &fs::read_to_string(&file).unwrap());
                    }
                }
            }
        } else if name != "lib" {
            visit(name, &fs::read_to_string(&path).unwrap());
        }
    }
    // Re-exported items (`crate::Cache`, `crate::abi_tag`) are not modules.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// The layers `src/lib.rs` documents: each module named in its layout table (a row
/// `//! | <layer> | `a`, `b` | ... |`) with its layer.
fn documented_layers() -> BTreeMap<String, u32> {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let mut cells = row.split(" | ");
        let (Some(layer), Some(modules)) = (cells.next(), cells.next()) else {
            continue;
        };
        let Ok(layer) = layer.trim().parse::<u32>() else {
            continue;
        };
        for module in modules.split(", ") {
            let module = module.trim().trim_matches('`');
            assert!(
                layers.insert(module.to_owned(), layer).is_none(),
                "{module} is in two layers"
            );
        }
    }
    layers
}

#[test]
fn every_module_uses_only_lower_layers_as_lib_rs_documents() {
    let graph = module_graph();
    let layers = documented_layers();
    assert!(graph.len() > 10, "{graph:?}");
    let modules: BTreeSet<&String> = graph.keys().collect();
    let documented: BTreeSet<&String> = layers.keys().collect();
    assert_eq!(
        modules, documented,
        "src/lib.rs's layout table names every module, once"
    );
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if layers[dep] >= layers[module] {
                wrong.push(format!(
                    "{module} (layer {}) uses {dep} (layer {})",
                    layers[module], layers[dep]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_abi_tags_rquickjs_series_is_the_one_cargo_toml_requires() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.starts_with("rquickjs ="))
        .expect("rquickjs dependency");
    let wanted = format!("version = \"{}\"", bytecode_pack::RQUICKJS_SERIES);
    assert!(line.contains(&wanted), "{line} vs {wanted}");
}
