//! A module file passed from a start's [`super::PackResolver`] to its [`super::PackLoader`]:
//! where the resolver must find a stored answer's file again (its directory changed, as in a
//! fresh copy of the tree), it opens the file rather than `stat` it, and the loader, which the
//! engine calls for that module next, reads it through that descriptor. One path walk per
//! module instead of two.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::sys::Probe;

/// A regular file a resolver's probe opened: its path, the descriptor, the descriptor's
/// metadata, and when the probe began (the recording instant its stat data may be given, as
/// for a file the loader opens itself).
pub(crate) struct OpenedModule {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) meta: Metadata,
    pub(crate) read_from_ns: i64,
}

/// One start's hand-off: at most one file waits in it. The engine loads a module right after
/// resolving it, so the loader takes the file the resolver just opened. A file nobody takes
/// (the module was loaded already) is closed at the resolver's next call, so a file is read
/// only by the load that follows its probe.
#[derive(Default)]
pub(crate) struct Handoff {
    /// Whether a loader shares the start: without one, nothing would take a file, and a probe
    /// costs less than an open.
    loader: AtomicBool,
    waiting: Mutex<Option<OpenedModule>>,
    /// Whether a file waits, written under `waiting`'s lock: `take` and `discard` run on every
    /// load and resolve of a start, and skip the lock when nothing waits (a warm start's every
    /// call). Read without the lock it is a hint: a file missed that way is read by its path.
    occupied: AtomicBool,
}

impl Handoff {
    pub(crate) fn loader_joined(&self) {
        self.loader.store(true, Ordering::Relaxed);
    }

    /// What is at `path`, a final symlink not followed, as [`crate::sys::probe`] says, for a
    /// path that held a regular file when its answer was stored: where a loader shares the
    /// start, the probe opens it (never blocking, never taking a terminal as controlling one)
    /// and leaves a regular file for the loader. (Other probes only `stat`: opening would
    /// reach every candidate `FileResolver` looks at, FIFOs and devices included.) `open`
    /// opens `path` as [`crate::sys::open_for_probe`] does, or `None` has it do so.
    pub(crate) fn probe_opening(
        &self,
        path: &Path,
        open: impl FnOnce() -> Option<std::io::Result<File>>,
    ) -> Probe {
        if !self.loader.load(Ordering::Relaxed) {
            return crate::sys::probe(path);
        }
        let read_from_ns = crate::freshness::now_nanos();
        let opened = open().unwrap_or_else(|| crate::sys::open_for_probe(path));
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Absent,
            // A symlink (refused), a socket, a file this process may see but not read: the
            // probe says what it is.
            Err(_) => return crate::sys::probe(path),
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() => {
                let mut waiting = self.waiting.lock();
                *waiting = Some(OpenedModule {
                    path: path.to_path_buf(),
                    file,
                    meta,
                    read_from_ns,
                });
                self.occupied.store(true, Ordering::Relaxed);
                Probe::File
            }
            Ok(_) => Probe::Other,
            Err(_) => crate::sys::probe(path),
        }
    }

    /// Closes the file waiting, if any: nothing takes it now.
    pub(crate) fn discard(&self) {
        self.take_any();
    }

    /// The file waiting, if it is the one at `path`; whatever waited is taken either way.
    pub(crate) fn take(&self, path: &Path) -> Option<OpenedModule> {
        self.take_any().filter(|waiting| waiting.path == path)
    }

    fn take_any(&self) -> Option<OpenedModule> {
        if !self.occupied.load(Ordering::Relaxed) {
            return None;
        }
        let mut waiting = self.waiting.lock();
        self.occupied.store(false, Ordering::Relaxed);
        waiting.take()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    impl Handoff {
        fn probe_opening_path(&self, path: &Path) -> Probe {
            self.probe_opening(path, || None)
        }
    }

    /// With a loader in the start, a probe opens a regular file and leaves it for the loader
    /// to take at that path; anything else is said as `sys::probe` says it, without blocking
    /// (a FIFO) and without leaving it. Without a loader nothing is opened.
    #[test]
    fn a_probe_leaves_regular_files_for_the_loader_and_nothing_else() {
        let dir = crate::private_tempdir();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("m.js"), "export default 1;").unwrap();
        std::os::unix::fs::symlink("m.js", at("link.js")).unwrap();
        std::fs::create_dir(at("dir.js")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(at("fifo.js"))
            .status()
            .unwrap();
        assert!(made.success());

        let alone = Handoff::default();
        assert_eq!(alone.probe_opening_path(&at("m.js")), Probe::File);
        assert!(alone.take(&at("m.js")).is_none(), "opened without a loader");

        let paired = Handoff::default();
        paired.loader_joined();
        let others = [
            ("fifo.js", Probe::Other),
            ("link.js", Probe::Symlink),
            ("dir.js", Probe::Other),
            ("absent.js", Probe::Absent),
        ];
        for (name, kind) in others {
            assert_eq!(paired.probe_opening_path(&at(name)), kind, "{name}");
            assert!(paired.take(&at(name)).is_none(), "{name} left to load");
        }
        assert_eq!(paired.probe_opening_path(&at("m.js")), Probe::File);
        assert!(paired.take(&at("link.js")).is_none(), "another path");
        assert!(
            paired.take(&at("m.js")).is_none(),
            "closed by the take before"
        );
        paired.probe_opening_path(&at("m.js"));
        let opened = paired.take(&at("m.js")).expect("left for the loader");
        let content = std::io::read_to_string(opened.file).unwrap();
        assert_eq!(
            (content.as_str(), opened.meta.len()),
            ("export default 1;", 17)
        );
        assert!(paired.take(&at("m.js")).is_none(), "taken once");
        // The resolver's next call closes what no load took.
        paired.probe_opening_path(&at("m.js"));
        paired.discard();
        assert!(paired.take(&at("m.js")).is_none(), "discarded");
    }
}
