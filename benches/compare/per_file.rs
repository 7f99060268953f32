//! The design bytecode-pack replaces: two files per entry, `<key>.bin` (bytecode) and
//! `<key>.json` (a manifest with the module name, source map, aux and every input with its
//! content hash). The key is a 64-bit `DefaultHasher` hash of the canonical entry paths. Every
//! load reads and parses the manifest, reads and re-hashes every input, then reads the
//! bytecode; writes go through a temp file and `rename`.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

#[derive(Serialize, Deserialize)]
struct Manifest {
    module_name: String,
    source_map: Option<String>,
    aux: Option<String>,
    inputs: Vec<ManifestInput>,
}

#[derive(Serialize, Deserialize)]
struct ManifestInput {
    path: PathBuf,
    hash: u64,
}

pub struct PerFileCache {
    dir: PathBuf,
}

/// The per-file design's key: `DefaultHasher` over the canonical entry paths.
pub fn key_for(entry_paths: &[&Path]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in entry_paths {
        p.canonicalize()
            .unwrap_or_else(|_| p.to_path_buf())
            .hash(&mut h);
    }
    h.finish()
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

impl PerFileCache {
    pub fn new(dir: &Path) -> PerFileCache {
        fs::create_dir_all(dir).unwrap();
        PerFileCache {
            dir: dir.to_path_buf(),
        }
    }

    pub fn put(&self, key: u64, module_name: &str, bytecode: &[u8], inputs: &[PathBuf]) {
        let manifest = Manifest {
            module_name: module_name.to_owned(),
            source_map: None,
            aux: None,
            inputs: inputs
                .iter()
                .map(|p| ManifestInput {
                    path: p.clone(),
                    hash: xxh3_64(&fs::read(p).unwrap()),
                })
                .collect(),
        };
        write_atomically(&self.dir.join(format!("{key:016x}.bin")), bytecode);
        let json = serde_json::to_vec(&manifest).unwrap();
        write_atomically(&self.dir.join(format!("{key:016x}.json")), &json);
    }

    /// A load: manifest, every input re-hashed, then the bytecode.
    pub fn get(&self, key: u64) -> Option<Vec<u8>> {
        let json = fs::read(self.dir.join(format!("{key:016x}.json"))).ok()?;
        let manifest: Manifest = serde_json::from_slice(&json).ok()?;
        for input in &manifest.inputs {
            if xxh3_64(&fs::read(&input.path).ok()?) != input.hash {
                return None;
            }
        }
        fs::read(self.dir.join(format!("{key:016x}.bin"))).ok()
    }
}
