//! The code bases: npm tarballs vendored under `benches/fixtures/` (see the README there),
//! extracted into a temp dir at bench start; and the source-map fixtures
//! (`tests/fixtures/sourcemaps/`: 201 modules `tsc` compiled, each with its map), copied, with
//! their maps and without (the `sourceMappingURL` comment cut off, nothing else changed).

use std::fs;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// Where a code base's files come from.
pub enum Source {
    /// A tarball under `benches/fixtures/`.
    Tarball(&'static str),
    /// The source-map fixtures, `maps` kept or cut off.
    MapFixtures { maps: bool },
    /// A generated graph of `modules` small modules in one directory, `gen/`: a binary tree
    /// (module i imports 2i+1 and 2i+2) or flat (module 0 imports every other one).
    Generated { modules: usize, flat: bool },
}

impl Codebase {
    /// Whether the bench runs `variant` on it: a generated graph only the starts that show
    /// where a warm start stops paying (the cache's, compiling, the limit) and what its
    /// freshness checks cost (the sealed start).
    pub fn runs(&self, variant: crate::Variant) -> bool {
        use crate::Variant::*;
        !matches!(self.source, Source::Generated { .. })
            || matches!(
                variant,
                ScriptLoader | Limit | PackResolverWarm | PackResolverSealed
            )
    }
}

/// One npm package whose ES-module entry a start imports.
pub struct Codebase {
    /// The id segment: `app/<name>/<variant>`.
    pub name: &'static str,
    /// Where its files come from.
    pub source: Source,
    /// The module a start imports, relative to the extraction root (the child's working
    /// directory); npm tarballs put everything under `package/`.
    pub entry: &'static str,
    /// Imports name `./x.mjs` files: the resolver gets the `{}.mjs` pattern and
    /// `ScriptLoader` the `mjs` extension.
    pub mjs: bool,
}

pub static CODEBASES: [Codebase; 12] = [
    Codebase {
        name: "lodash-es",
        source: Source::Tarball("lodash-es-4.18.1.tgz"),
        entry: "package/lodash.js",
        mjs: false,
    },
    Codebase {
        name: "date-fns",
        source: Source::Tarball("date-fns-4.4.0-js-only.tgz"),
        entry: "package/index.js",
        mjs: false,
    },
    Codebase {
        name: "es-toolkit",
        source: Source::Tarball("es-toolkit-1.53.2.tgz"),
        entry: "package/dist/index.mjs",
        mjs: true,
    },
    Codebase {
        name: "tsc-mapped",
        source: Source::MapFixtures { maps: true },
        entry: "tsc-many/entry.js",
        mjs: false,
    },
    Codebase {
        name: "tsc-unmapped",
        source: Source::MapFixtures { maps: false },
        entry: "tsc-many/entry.js",
        mjs: false,
    },
    Codebase {
        name: "tree-2000",
        source: Source::Generated {
            modules: 2000,
            flat: false,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "tree-3000",
        source: Source::Generated {
            modules: 3000,
            flat: false,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "flat-3000",
        source: Source::Generated {
            modules: 3000,
            flat: true,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "tree-10000",
        source: Source::Generated {
            modules: 10_000,
            flat: false,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "flat-10000",
        source: Source::Generated {
            modules: 10_000,
            flat: true,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "tree-20000",
        source: Source::Generated {
            modules: 20_000,
            flat: false,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
    Codebase {
        name: "flat-20000",
        source: Source::Generated {
            modules: 20_000,
            flat: true,
        },
        entry: "gen/m0.js",
        mjs: false,
    },
];

/// Extracts `codebase`'s tarball into `dest` (which then holds `package/`) and returns `dest`.
/// `tar` restores the tarball's whole-second mtimes (npm writes 1985-10-26); the kernel sets
/// each file's ctime to the extraction instant. The source-map fixtures are copied instead.
pub fn extract(codebase: &Codebase, dest: &Path) -> PathBuf {
    let tarball = match codebase.source {
        Source::Tarball(tarball) => tarball,
        Source::MapFixtures { maps } => return copy_fixtures(maps, dest),
        Source::Generated { modules, flat } => return generate(modules, flat, dest),
    };
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/fixtures")
        .join(tarball);
    let file = fs::File::open(&tarball).unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    fs::create_dir_all(dest).unwrap();
    tar::Archive::new(GzDecoder::new(file))
        .unpack(dest)
        .unwrap_or_else(|e| panic!("extracting {}: {e}", tarball.display()));
    assert!(
        dest.join(codebase.entry).is_file(),
        "{}: no {}",
        tarball.display(),
        codebase.entry
    );
    dest.to_path_buf()
}

/// A generated graph (see [`Source::Generated`]) written under `dest/gen/`.
fn generate(modules: usize, flat: bool, dest: &Path) -> PathBuf {
    let dir = dest.join("gen");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..modules {
        let imports: Vec<usize> = match (flat, i) {
            (true, 0) => (1..modules).collect(),
            (true, _) => Vec::new(),
            (false, _) => [2 * i + 1, 2 * i + 2]
                .into_iter()
                .filter(|&c| c < modules)
                .collect(),
        };
        let mut source = String::new();
        for c in &imports {
            source += &format!("import {{ f{c} }} from './m{c}.js';\n");
        }
        let calls: Vec<String> = imports.iter().map(|c| format!("f{c}()")).collect();
        let body = if calls.is_empty() {
            "1".to_owned()
        } else {
            calls.join(" + ")
        };
        source += &format!("export function f{i}() {{ return {body}; }}\n");
        fs::write(dir.join(format!("m{i}.js")), source).unwrap();
    }
    dest.to_path_buf()
}

/// The source-map fixtures copied to `dest`; without `maps`, every `tsc-many/*.js` ends
/// before its `//# sourceMappingURL=` line.
fn copy_fixtures(maps: bool, dest: &Path) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sourcemaps");
    crate::tree::copy_tree(&fixtures, dest);
    if !maps {
        for entry in fs::read_dir(dest.join("tsc-many")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "js") {
                let source = fs::read_to_string(&path).unwrap();
                let cut = source
                    .rfind("//# sourceMappingURL=")
                    .expect("tsc wrote one");
                fs::write(&path, &source[..cut]).unwrap();
            }
        }
    }
    dest.to_path_buf()
}
