//! Indirect garbage-collector roots, the way `nix-store --add-root --indirect`
//! makes them: a symlink in `$NIX_STATE_DIR/gcroots/auto` pointing at the
//! generation link. Nix's collector treats a symlink there that points to a
//! symlink into the store as a root, and deletes the entry itself once the
//! generation link is gone; we delete it at once when pruning.
//!
//! The same roots keep alive every store path a generated file names (a
//! fixed `package`, an interpreter in the store): see [`sync`].

use std::collections::BTreeSet;
use std::fs;
use std::io;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;

/// Nix's store directory (`$NIX_STORE_DIR`, else `/nix/store`).
pub fn store_dir() -> Utf8PathBuf {
    std::env::var("NIX_STORE_DIR").map_or_else(|_| "/nix/store".into(), Utf8PathBuf::from)
}

/// Where Nix looks for indirect roots.
pub fn auto_dir() -> Utf8PathBuf {
    let state =
        std::env::var("NIX_STATE_DIR").map_or_else(|_| "/nix/var/nix".into(), Utf8PathBuf::from);
    state.join("gcroots/auto")
}

/// The root's name: the link's absolute path, `%`-escaped into one file
/// name. A path too long for one name (255 bytes) keeps its last part
/// and gains a hash of the whole path instead: still one name per link.
pub fn name(link: &Utf8Path) -> String {
    let escaped = link.as_str().replace('%', "%25").replace('/', "%2F");
    let name = format!("djshim{escaped}");
    if name.len() <= 255 {
        return name;
    }
    // FNV-1a, 64 bits: stable across builds and machines.
    let hash = link
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let mut tail = escaped.as_str();
    while tail.len() > 200 {
        let mut chars = tail.chars();
        chars.next();
        tail = chars.as_str();
    }
    format!("djshim-{hash:016x}-{tail}")
}

/// Protects `target` through `link`, if `target` is a store path.
pub fn register(link: &Utf8Path, target: &Utf8Path) -> Result<(), Error> {
    if !target.starts_with(store_dir()) {
        return Ok(());
    }
    let auto = auto_dir();
    let gcroots = auto.parent().unwrap_or(&auto);
    if !gcroots.is_dir() {
        return Err(Error::problem(format!(
            "{target} is a Nix store path, but {gcroots} is missing, so the garbage \
             collector cannot be told to keep it; is Nix installed?"
        )));
    }
    fs::create_dir_all(&auto).map_err(|e| Error::io("create directory", &auto, e))?;
    let root = auto.join(name(link));
    let _ = fs::remove_file(&root);
    std::os::unix::fs::symlink(link, &root).map_err(|e| Error::io("create GC root", &root, e))
}

/// Removes the root of `link`, if there is one.
pub fn release(link: &Utf8Path) -> Result<(), Error> {
    let root = auto_dir().join(name(link));
    match fs::remove_file(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove GC root", &root, e)),
    }
}

/// The store path (`/nix/store/<hash>-<name>`) that `path` lies in, if any.
pub fn store_path_of(path: &Utf8Path) -> Option<Utf8PathBuf> {
    let store = store_dir();
    let rest = path.strip_prefix(&store).ok()?;
    let top = rest.components().next()?;
    Some(store.join(top.as_str()))
}

/// Keeps exactly `paths` (store paths named by what `project` wrote into
/// `dir`) alive: one link each in `dir/.djshim-<project>.gcroots`, each an
/// indirect root; links of paths no longer named are removed with their
/// roots. Paths missing from this machine's store are left alone, and so
/// is a `dir` inside the store (a Nix build's output references what it
/// names, which keeps it alive) or a machine without Nix.
pub fn sync(dir: &Utf8Path, project: &str, paths: &BTreeSet<Utf8PathBuf>) -> Result<(), Error> {
    let links = dir.join(format!(".djshim-{project}.gcroots"));
    let gcroots = auto_dir();
    let usable = !dir.starts_with(store_dir()) && gcroots.parent().is_some_and(Utf8Path::is_dir);
    let wanted: BTreeSet<&Utf8PathBuf> = if usable {
        paths.iter().filter(|p| p.exists()).collect()
    } else {
        BTreeSet::new()
    };
    let mut present = BTreeSet::new();
    match links.read_dir_utf8() {
        Ok(entries) => {
            for entry in entries.flatten() {
                present.insert(entry.file_name().to_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read directory", &links, e)),
    }
    for path in &wanted {
        let name = path.file_name().unwrap_or_default();
        if present.remove(name) {
            continue;
        }
        fs::create_dir_all(&links).map_err(|e| Error::io("create directory", &links, e))?;
        let link = links.join(name);
        std::os::unix::fs::symlink(path, &link).map_err(|e| Error::io("create link", &link, e))?;
        register(&link, path)?;
    }
    for name in present {
        let link = links.join(&name);
        fs::remove_file(&link).map_err(|e| Error::io("remove", &link, e))?;
        release(&link)?;
    }
    if wanted.is_empty() {
        let _ = fs::remove_dir(&links);
    }
    Ok(())
}
