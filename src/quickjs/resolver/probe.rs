//! Probing as `FileResolver` does: the same candidates in the same order, each file probed
//! after its directory was stamped, recording which directories a resolution consulted and
//! whether its answer may be kept.

use std::path::Path;
use std::sync::Arc;

use relative_path::{RelativePath, RelativePathBuf};

use super::ResolverState;
use super::paths::{directory_of, is_plain_relative, relative_to};
use crate::sys::Probe;

/// What one resolution's probes found out besides its answer: the directories it consulted
/// (the answer stands while each is unchanged), and whether it may be kept across starts (not
/// if a probe went through a symlink, whose target can change unseen, or through a path not
/// checked by directory).
pub(super) struct Probing {
    pub(super) consulted: Vec<u32>,
    pub(super) keepable: bool,
}

impl Default for Probing {
    fn default() -> Probing {
        Probing {
            consulted: Vec::new(),
            keepable: true,
        }
    }
}

impl ResolverState {
    /// The id of the directory at `path`, checked against its stamp (once per round).
    fn check_dir(&mut self, probing: &mut Probing, path: &str) -> u32 {
        self.load();
        let table = self.stored.as_ref().and_then(Option::as_ref);
        let (id, mut worth_storing) = self.dirs.id(table, path);
        if !worth_storing {
            worth_storing = self.dirs.check(table, &mut self.answers, id);
        }
        self.dirty |= worth_storing;
        // An answer computed from a directory whose stamp can never vouch is not kept: such a
        // directory costs a probe per start, as with `FileResolver`.
        probing.keepable &= self.dirs.can_vouch(id);
        id
    }

    /// Whether `path` (relative to the working directory) is a file, as `Path::is_file`
    /// would say: one probe, after its directory was stamped.
    fn is_file(&mut self, probing: &mut Probing, path: &RelativePath) -> bool {
        // `RelativePath::to_path(cwd)` as FileResolver's `to_path(".")` sees it: a plain path
        // is the cwd and the path; anything with `.`/`..` components, empty components or a
        // trailing slash (a name FileResolver did not normalize) takes the exact conversion.
        let rel = path.as_str();
        let plain = is_plain_relative(rel);
        // Built in a buffer kept across calls: a first start probes once per candidate.
        let mut full = std::mem::take(&mut self.scratch);
        full.clear();
        if plain {
            // The root as working directory is "/", not "" + "/".
            full.push_str(self.cwd.trim_end_matches('/'));
            full.push('/');
            full.push_str(rel);
        } else {
            match path.to_path(&self.cwd).into_os_string().into_string() {
                Ok(exact) => full = exact,
                Err(exact) => {
                    probing.keepable = false;
                    return Path::new(&exact).is_file();
                }
            }
        }
        // A path the kernel would refuse as too long, though the relative path FileResolver
        // probes is not: probed as it does, and not kept.
        if full.len() >= crate::sys::LONGEST_PATH {
            probing.keepable = false;
            self.scratch = full;
            return path.to_path(".").is_file();
        }
        let found = self.probe(probing, &full);
        self.scratch = full;
        found
    }

    /// [`ResolverState::is_file`] for the full path.
    fn probe(&mut self, probing: &mut Probing, full: &str) -> bool {
        let Some(dir) = directory_of(full) else {
            probing.keepable = false;
            return Path::new(full).is_file();
        };
        // The stamp comes first: an entry added after it changes the directory's stat data.
        let dir_id = self.check_dir(probing, relative_to(&self.cwd, dir));
        if !probing.consulted.contains(&dir_id) {
            probing.consulted.push(dir_id);
        }
        // A file found in this round is not looked at again (imports of one module from many
        // places).
        if self.files_found.contains(full) {
            return true;
        }
        match crate::sys::probe(Path::new(full)) {
            Probe::File => {
                self.files_found.insert(full.to_owned());
                true
            }
            Probe::Symlink => {
                probing.keepable = false;
                Path::new(full).is_file()
            }
            Probe::Other | Probe::Absent => false,
        }
    }

    /// `FileResolver::try_patterns`, recording the directories it probes.
    fn try_patterns(
        &mut self,
        probing: &mut Probing,
        path: &RelativePath,
    ) -> Option<RelativePathBuf> {
        let config = Arc::clone(self.config.as_ref()?);
        let patterns = &config.patterns;
        if let Some(extension) = path.extension() {
            if !self.is_file(probing, path) {
                return None;
            }
            patterns
                .iter()
                .any(|p| RelativePath::new(p).extension() == Some(extension))
                .then(|| path.to_relative_path_buf())
        } else {
            let file_name = path.file_name()?;
            patterns.iter().find_map(|pattern| {
                let file = path.with_file_name(pattern.replace("{}", file_name));
                self.is_file(probing, &file).then_some(file)
            })
        }
    }

    /// `FileResolver::resolve`, recording the directories it probes.
    pub(super) fn resolve_cached(
        &mut self,
        probing: &mut Probing,
        base: &str,
        name: &str,
    ) -> Option<RelativePathBuf> {
        if !name.starts_with('.') {
            let config = Arc::clone(self.config.as_ref()?);
            config.paths.iter().find_map(|path| {
                let path = RelativePath::new(path).join_normalized(name);
                self.try_patterns(probing, &path)
            })
        } else {
            let base = RelativePath::new(base);
            let path = match base.parent() {
                Some(dir) => dir.join_normalized(name),
                None => name.into(),
            };
            self.try_patterns(probing, &path)
        }
    }
}
