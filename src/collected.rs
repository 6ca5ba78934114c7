//! Each generation's collected static files, in a directory of its own
//! beside the instance's `static_root` (`<static_root>-<N>`), and the root
//! itself a link to the running generation's. A deploy collects into the
//! new generation's directory before anything changes for the site (the
//! old code keeps serving the files its pages name); the switch moves the
//! link with the profile, so a rollback moves the static files back with
//! no collect; a generation's files go when the generation is deleted.

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;
use crate::layout::generation_static;

/// Makes generation `number`'s directory under `root`, owned by the
/// instance's account (`user`, `group`) as the state directory is, when
/// it is missing.
pub fn make(
    root: &Utf8Path,
    number: u32,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Utf8PathBuf, Error> {
    let dir = generation_static(root, number);
    if !dir.is_dir() {
        crate::accounts::make_owned_dir(&dir, user, group)?;
    }
    Ok(dir)
}

/// Points `root` at generation `number`'s directory, atomically (a new
/// link renamed over the old one). A `root` that is still a directory (an
/// instance deployed before its generations had their own) becomes the
/// directory of generation `from` (the one running until now) when that
/// has none, and is removed otherwise: it holds only what collectstatic
/// wrote. Generation `number`'s directory exists ([`make`]).
pub fn point(root: &Utf8Path, number: u32, from: Option<u32>) -> Result<(), Error> {
    let dir = generation_static(root, number);
    let meta = std::fs::symlink_metadata(root);
    if meta.as_ref().is_ok_and(std::fs::Metadata::is_dir) {
        match from.map(|n| generation_static(root, n)) {
            Some(own) if !own.exists() => {
                std::fs::rename(root, &own).map_err(|e| Error::io("rename", root, e))?;
            }
            _ => std::fs::remove_dir_all(root).map_err(|e| Error::io("remove", root, e))?,
        }
    }
    let name = dir
        .file_name()
        .expect("a generation's directory has a name");
    let parent = root.parent().expect("static_root is absolute");
    let fresh = parent.join(format!(
        ".{}.link-{}",
        root.file_name().unwrap_or("static"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(name, &fresh).map_err(|e| Error::io("create link", &fresh, e))?;
    std::fs::rename(&fresh, root).map_err(|e| Error::io("rename", &fresh, e))?;
    crate::write::sync_dir(parent)
}

/// Deletes generation `number`'s directory, if it has one.
pub fn delete(root: &Utf8Path, number: u32) -> Result<(), Error> {
    let dir = generation_static(root, number);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &dir, e)),
        _ => Ok(()),
    }
}
