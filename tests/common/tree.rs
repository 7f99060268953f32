//! Copying a tree as `cp -a` does, for the tests and the app bench of trees that travel.

use std::fs;
use std::path::Path;

/// Copies the tree at `from` to `to` file by file, keeping mtimes: new inodes and ctimes, the
/// same bytes (as `cp -a`, a CI cache restore or Docker `COPY` make it).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
            let mtime = entry.metadata().unwrap().modified().unwrap();
            fs::File::open(&target)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
    }
}

/// `chmod -R go-w,a+rX` of the tree at `path`: readable by all, writable by none but its
/// owner, as an image build leaves what it ships.
pub fn ship_tree(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let is_dir = path.is_dir();
    let mode = fs::metadata(path).unwrap().permissions().mode();
    let mode = (mode & !0o022) | if is_dir { 0o555 } else { 0o444 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    if is_dir {
        for entry in fs::read_dir(path).unwrap() {
            ship_tree(&entry.unwrap().path());
        }
    }
}
