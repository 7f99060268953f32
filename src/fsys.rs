//! Filesystem primitives with the cache's security rules: private directories, private files,
//! no symlinks followed inside the cache directory, I/O errors that carry their path.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes sure `dir` exists and is safe: a real directory (for `follow_symlink == false`),
/// owned by this user, not writable by group or others. Creates it, and missing parents,
/// with mode 0700.
pub(crate) fn ensure_private_dir(dir: &Path, follow_symlink: bool) -> Result<()> {
    let meta = if follow_symlink {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(dir)?;
            fs::symlink_metadata(dir).map_err(Error::io(dir))?
        }
        Err(e) => return Err(Error::io(dir)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(insecure(dir, "is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(insecure(dir, "is not a directory"));
    }
    check_owner_and_mode(dir, &meta)
}

fn insecure(path: &Path, problem: impl Into<String>) -> Error {
    Error::Insecure {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(dir)(e)),
    }
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io(dir))
}

#[cfg(unix)]
fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::unsafe_io::current_uid();
    if meta.uid() != me {
        return Err(insecure(
            path,
            format!("owned by uid {}, not by this user (uid {me})", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            path,
            format!(
                "mode {:o} lets group or others write; chmod go-w it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_and_mode(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    Ok(())
}

/// Options for opening files inside the cache directory: never through a symlink, and
/// created private.
fn private_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600);
    }
    opts
}

/// Opens an existing cache file for reading without following a symlink.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    private_options().read(true).open(path)
}

/// Opens (creating if needed) a cache file for reading and writing without following a
/// symlink.
pub(crate) fn open_write(path: &Path, create: bool) -> io::Result<File> {
    private_options()
        .read(true)
        .write(true)
        .create(create)
        .open(path)
}

/// Creates a new cache file that must not exist yet.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Flushes a directory's entries (a completed `rename`) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
