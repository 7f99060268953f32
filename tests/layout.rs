//! The code's layout as a test: module dependencies point one way (no cycles between the
//! crate's modules), and the ABI tag's rquickjs series matches Cargo.toml.

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

#[test]
fn module_dependencies_have_no_cycles() {
    let graph = module_graph();
    assert!(graph.len() > 10, "{graph:?}");
    // Depth-first search; a back edge is a cycle, reported with its path.
    fn visit<'g>(
        m: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("module cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for dep in &graph[m] {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
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
