//! Each generation's collected static files, in a directory of its own,
//! and the instance's `static_root` a link to the running generation's.
//! The directory is `<static_root>-<N>` beside the root, or a directory
//! inside the package when the build collected them
//! (`static_in_package`). A deploy collects into the new generation's
//! directory before anything changes for the site (the old code keeps
//! serving the files its pages name); the switch moves the link with the
//! profile, so a rollback moves the static files back with no collect; a
//! generation's files go when the generation is deleted.

use camino::Utf8Path;

use crate::error::Error;

/// Makes a generation's directory `dir`, owned by the instance's account
/// (`user`, `group`) as the state directory is, when it is missing.
pub fn make(dir: &Utf8Path, user: Option<&str>, group: Option<&str>) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    crate::accounts::make_owned_dir(dir, user, group)
}

/// Before the first switch of an instance deployed before its
/// generations had their own static files: a `root` that is still a
/// directory becomes `own` (the directory of the generation running until
/// now) when that is missing, and is removed otherwise (it holds only what
/// collectstatic wrote). Nothing to do when `root` is a link already.
pub fn adopt(root: &Utf8Path, own: Option<&Utf8Path>) -> Result<(), Error> {
    let parent = root.parent().expect("static_root is absolute");
    let meta = std::fs::symlink_metadata(root);
    if !meta.as_ref().is_ok_and(std::fs::Metadata::is_dir) {
        return Ok(());
    }
    match own {
        Some(own) if !own.exists() && own.parent() == Some(parent) => {
            std::fs::rename(root, own).map_err(|e| Error::io("rename", root, e))?;
        }
        _ => std::fs::remove_dir_all(root).map_err(|e| Error::io("remove", root, e))?,
    }
    crate::write::sync_dir(parent)
}

/// Points `root` at a generation's directory `dir`, atomically (a new link
/// renamed over the old one): by its name when it lies beside `root`,
/// else by its absolute path (a package's).
pub fn point(root: &Utf8Path, dir: &Utf8Path) -> Result<(), Error> {
    let parent = root.parent().expect("static_root is absolute");
    let target = match dir.parent() {
        Some(p) if p == parent => dir.file_name().map_or(dir, Utf8Path::new),
        _ => dir,
    };
    let fresh = parent.join(format!(
        ".{}.link-{}",
        root.file_name().unwrap_or("static"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(target, &fresh).map_err(|e| Error::io("create link", &fresh, e))?;
    std::fs::rename(&fresh, root).map_err(|e| Error::io("rename", &fresh, e))?;
    crate::write::sync_dir(parent)
}

/// Deletes a generation's directory `dir`, if it is there.
pub fn delete(dir: &Utf8Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir, e)),
        _ => Ok(()),
    }
}
