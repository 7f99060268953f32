//! The code bases: npm tarballs vendored under `benches/fixtures/` (see the README there),
//! extracted into a temp dir at bench start.

use std::fs;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// One npm package whose ES-module entry a start imports.
pub struct Codebase {
    /// The id segment: `app/<name>/<variant>`.
    pub name: &'static str,
    /// The tarball's file name under `benches/fixtures/`.
    pub tarball: &'static str,
    /// The module a start imports, relative to the extraction root (the child's working
    /// directory); npm tarballs put everything under `package/`.
    pub entry: &'static str,
    /// Imports name `./x.mjs` files: the resolver gets the `{}.mjs` pattern and
    /// `ScriptLoader` the `mjs` extension.
    pub mjs: bool,
}

pub static CODEBASES: [Codebase; 3] = [
    Codebase {
        name: "lodash-es",
        tarball: "lodash-es-4.18.1.tgz",
        entry: "package/lodash.js",
        mjs: false,
    },
    Codebase {
        name: "date-fns",
        tarball: "date-fns-4.4.0-js-only.tgz",
        entry: "package/index.js",
        mjs: false,
    },
    Codebase {
        name: "es-toolkit",
        tarball: "es-toolkit-1.53.2.tgz",
        entry: "package/dist/index.mjs",
        mjs: true,
    },
];

/// Extracts `codebase`'s tarball into `dest` (which then holds `package/`) and returns `dest`.
/// `tar` restores the tarball's whole-second mtimes (npm writes 1985-10-26); the kernel sets
/// each file's ctime to the extraction instant.
pub fn extract(codebase: &Codebase, dest: &Path) -> PathBuf {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/fixtures")
        .join(codebase.tarball);
    let file = fs::File::open(&tarball).unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    fs::create_dir_all(dest).unwrap();
    tar::Archive::new(GzDecoder::new(file))
        .unpack(dest)
        .unwrap_or_else(|e| panic!("extracting {}: {e}", tarball.display()));
    assert!(
        dest.join(codebase.entry).is_file(),
        "{}: no {}",
        codebase.tarball,
        codebase.entry
    );
    dest.to_path_buf()
}
