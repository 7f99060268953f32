//! Path arithmetic on module names as strings, where it equals `relative-path`'s (every name
//! a start loads): the fast paths of probing.

use relative_path::RelativePath;

/// The directory holding the file at the absolute path `full`, whose entries decide whether
/// it exists: what precedes its last separator, and `/` for a file in the root (a working
/// directory of `/`, as in a container without one set). `None` if `full` names no file.
pub(super) fn directory_of(full: &str) -> Option<&str> {
    match full.rsplit_once('/') {
        Some((_, "")) | None => None,
        Some(("", _)) => Some("/"),
        Some((dir, _)) => Some(dir),
    }
}

/// Whether `name` is relative and every component is a plain name (not empty, `.` or `..`):
/// then path arithmetic on it is string arithmetic, and the exact conversions can be skipped.
pub(crate) fn is_plain_relative(name: &str) -> bool {
    // Over bytes: `str::split` cost a start some 600 instructions a name.
    !name.is_empty()
        && name
            .as_bytes()
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// `RelativePath::parent` of a base module's name, without parsing its components when it is
/// plain (every module a start loads).
pub(super) fn base_dir(base: &str) -> Option<&str> {
    if is_plain_relative(base) {
        return Some(base.rsplit_once('/').map_or("", |(dir, _)| dir));
    }
    RelativePath::new(base).parent().map(RelativePath::as_str)
}

/// Whether one probe decides what `name` resolves to: a relative name with an extension is
/// the file it names, or nothing (`FileResolver::try_patterns`). Probing it costs less than
/// listing its directory.
pub(super) fn one_probe_decides(name: &str) -> bool {
    if !name.starts_with('.') {
        return false;
    }
    let file = name.rsplit_once('/').map_or(name, |(_, file)| file);
    if file.is_empty() || file == "." || file == ".." {
        return RelativePath::new(name).extension().is_some();
    }
    // A plain last component is the file name; it has an extension if a dot follows its
    // first byte (`RelativePath::extension`, without walking the components).
    file.rfind('.').is_some_and(|dot| dot > 0)
}

/// `dir` (absolute) as a run keeps it: relative to the working directory `cwd` if it lies
/// under it (`cwd` itself as ""), else as it is.
pub(super) fn relative_to<'a>(cwd: &str, dir: &'a str) -> &'a str {
    let base = cwd.trim_end_matches('/');
    if dir == cwd || dir.trim_end_matches('/') == base {
        return "";
    }
    match dir
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(relative) if !relative.is_empty() => relative,
        _ => dir,
    }
}

/// The directory a kept path names: under `cwd` if relative (see [`relative_to`]).
pub(super) fn full_path(cwd: &str, kept: &str) -> std::path::PathBuf {
    if kept.starts_with('/') {
        return kept.into();
    }
    let mut full = cwd.trim_end_matches('/').to_owned();
    if kept.is_empty() {
        return if full.is_empty() {
            "/".into()
        } else {
            full.into()
        };
    }
    full.push('/');
    full.push_str(kept);
    full.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A file's directory is its path's parent, the root's files' too: stamping "" instead of
    /// `/` (whose stat always fails, so it looked unchanged forever) kept the root's answers
    /// after its files changed.
    #[test]
    fn a_files_directory_is_its_parent_even_in_the_root() {
        for full in [
            "/x.js",
            "/srv/x.js",
            "/srv/app/lib/x.mjs",
            "//x.js",
            "/a//b.js",
        ] {
            let dir = directory_of(full).unwrap();
            assert_eq!(Some(Path::new(dir)), Path::new(full).parent(), "{full:?}");
        }
        assert!(crate::sys::stat_path(Path::new(directory_of("/x.js").unwrap())).is_ok());
        for no_file in ["/", "/srv/", "x.js", ""] {
            assert_eq!(directory_of(no_file), None, "{no_file:?}");
        }
    }

    /// What the probes and `base_dir` rely on: a plain name's path is the working directory, a
    /// separator and the name, and its parent is what precedes its last separator.
    #[test]
    fn plain_names_are_string_arithmetic() {
        let names = [
            "a.js", "a/b.js", "x./y.js", "a..b/c", "..a/.b", ".", "..", "", "/a", "a/", "a//b",
            "./a", "a/./b", "a/../b", "a/.", "a/..",
        ];
        let plain: Vec<&str> = names.into_iter().filter(|n| is_plain_relative(n)).collect();
        assert_eq!(plain, ["a.js", "a/b.js", "x./y.js", "a..b/c", "..a/.b"]);
        for name in plain {
            for cwd in ["/", "/srv/app"] {
                let exact = RelativePath::new(name).to_path(cwd);
                let joined = format!("{}/{name}", cwd.trim_end_matches('/'));
                assert_eq!(Path::new(&joined), exact, "{cwd:?} {name:?}");
            }
            let parent = RelativePath::new(name).parent().map(RelativePath::as_str);
            assert_eq!(base_dir(name), parent, "{name:?}");
        }
    }

    /// Names with an extension are decided by one probe; others, and bare names, are not.
    #[test]
    fn one_probe_decides_relative_names_with_an_extension() {
        let decided = ["./a.js", "../b.mjs", "./lib/x.y.js", "./.a.js"];
        let undecided = [
            "./a", "lib/a.js", "a.js", "./a.b/c", "./.js", "./a/..", "./",
        ];
        for name in decided {
            assert!(one_probe_decides(name), "{name:?}");
        }
        for name in undecided {
            assert!(!one_probe_decides(name), "{name:?}");
        }
        let more = [
            "./a.",
            "./...",
            "./a/.b.c",
            "./a.js/",
            "./a.js/.",
            "./a.js/..",
            ".",
            "..",
            "./.",
            "./..",
            "../a.b/",
            ".a.js",
            "./a//b.js",
            "./a..",
            "./.a.",
        ];
        for name in more.into_iter().chain(decided).chain(undecided) {
            let exact = name.starts_with('.') && RelativePath::new(name).extension().is_some();
            assert_eq!(one_probe_decides(name), exact, "{name:?}");
        }
    }

    #[test]
    fn base_directories_are_what_relative_path_gives() {
        let bases = [
            "a/b.js",
            "b.js",
            "a/b/c.mjs",
            "a/../b.js",
            "a/..",
            "..",
            ".",
            "",
            "/a/b.js",
            "./a.js",
            "a/./b.js",
            "a//b.js",
            "a/b/",
            "a/b/.",
            "./",
            "a/.b",
            ".a/b",
        ];
        for base in bases {
            let expected = RelativePath::new(base).parent().map(RelativePath::as_str);
            assert_eq!(base_dir(base), expected, "{base:?}");
        }
    }

    /// A directory under the working directory is kept relative to it, so a moved tree's
    /// stamps still name its directories; others stay absolute; both come back whole.
    #[test]
    fn directories_under_the_working_directory_are_kept_relative() {
        let cases = [
            ("/srv/app", "/srv/app", ""),
            ("/srv/app", "/srv/app/lib", "lib"),
            ("/srv/app", "/srv/app/lib/deep", "lib/deep"),
            ("/srv/app", "/srv/application", "/srv/application"),
            ("/srv/app", "/srv", "/srv"),
            ("/srv/app", "/usr/lib/js", "/usr/lib/js"),
            ("/", "/", ""),
            ("/", "/lib", "lib"),
        ];
        for (cwd, dir, kept) in cases {
            assert_eq!(relative_to(cwd, dir), kept, "{cwd:?} {dir:?}");
            assert_eq!(full_path(cwd, kept), Path::new(dir), "{cwd:?} {kept:?}");
        }
    }
}
