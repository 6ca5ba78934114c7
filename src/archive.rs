//! A release directory carried to another host (SPEC section 10): `pack`
//! writes it as one tar archive and says its content hash; `unpack`
//! extracts an archive beside the host's releases, checks the content hash
//! of what it got against the one the build host said before anything can
//! use it, and only then freezes it (root's, read-only) and renames it into
//! place. A Nix store path travels with `nix copy` instead, whose hash Nix
//! checks itself.

use std::fs::File;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;

/// Writes `package` (a release directory) to `out` as a tar archive of one
/// directory named as the package, with no owner, time or mode beyond the
/// executable bit; its content hash.
pub fn pack(package: &Utf8Path, out: &Utf8Path) -> Result<String, Error> {
    let package = package
        .canonicalize_utf8()
        .map_err(|e| Error::io("resolve", package, e))?;
    let name = package
        .file_name()
        .ok_or_else(|| Error::problem(format!("{package} has no name to carry")))?;
    if !package.is_dir() {
        return Err(Error::problem(format!(
            "{package} is not a release directory (a Nix store path travels with `nix copy`)"
        )));
    }
    let hash = crate::content::hash(&package)?;
    let dir = out.parent().unwrap_or(Utf8Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".djshim-pack-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a file in", dir, e))?;
    let mut builder = tar::Builder::new(tmp.as_file());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(name, &package)
        .and_then(|()| builder.finish())
        .map_err(|e| Error::io("archive", &package, e))?;
    drop(builder);
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", out, e))?;
    tmp.persist(out)
        .map_err(|e| Error::io("rename into place", out, e.error))?;
    if crate::content::hash(&package)? != hash {
        return Err(Error::problem(format!(
            "{package} changed while it was archived; archive it again"
        )));
    }
    Ok(hash)
}

/// Extracts `archive` into `into`, as the release its one directory
/// names, when its content hash is `hash`: checked before it is frozen
/// and renamed into place, so nothing can use other bytes. A release of
/// that name already there with that hash is kept (a second run changes
/// nothing). The release's path.
pub fn unpack(archive: &Utf8Path, hash: &str, into: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    std::fs::create_dir_all(into).map_err(|e| Error::io("create directory", into, e))?;
    let work = tempfile::Builder::new()
        .prefix(".djshim-unpack-")
        .tempdir_in(into)
        .map_err(|e| Error::io("create a directory in", into, e))?;
    let work_path = Utf8Path::from_path(work.path())
        .ok_or_else(|| Error::problem(format!("{into}: a path that is not UTF-8")))?;
    let file = File::open(archive).map_err(|e| Error::io("open", archive, e))?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(false);
    tar.set_overwrite(false);
    tar.set_unpack_xattrs(false);
    tar.unpack(work_path)
        .map_err(|e| Error::io("unpack", archive, e))?;
    let entries: Vec<_> = work_path
        .read_dir_utf8()
        .map_err(|e| Error::io("read directory", work_path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io("read directory", work_path, e))?;
    let [entry] = entries.as_slice() else {
        return Err(Error::problem(format!(
            "{archive} holds {} top-level entries; a release archive holds one directory \
             (`djshim pack` writes one)",
            entries.len()
        )));
    };
    let name = entry.file_name().to_owned();
    let unpacked = entry.path().to_owned();
    if !entry.file_type().is_ok_and(|t| t.is_dir()) || name.starts_with('.') {
        return Err(Error::problem(format!(
            "{archive} holds `{name}`, not a release directory"
        )));
    }
    let got = crate::content::hash(&unpacked)?;
    if got != hash {
        return Err(Error::with_help(
            format!(
                "{archive} is not the release that was built: its content hash is {got}, not \
                 {hash}; nothing was kept"
            ),
            "carry it again from the build host (`djshim pack` says the hash there)",
        ));
    }
    let release = into.join(&name);
    if release.exists() {
        let there = crate::content::hash(&release)?;
        if there == hash {
            return Ok(release);
        }
        return Err(Error::with_help(
            format!("{release} is there already with other bytes (content hash {there})"),
            "a release's name is its commit: remove the other one if nothing runs it",
        ));
    }
    crate::build_account::freeze(&unpacked)?;
    std::fs::rename(&unpacked, &release).map_err(|e| Error::io("rename", &unpacked, e))?;
    crate::write::sync_dir(into)?;
    Ok(release)
}
