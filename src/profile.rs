//! Instance profiles: which package an instance without `package` runs.
//!
//! The layout is that of Nix profiles, so a Nix user reads it at a glance:
//!
//! ```text
//! <profiles_dir>/mywebsite-prod          -> mywebsite-prod-4-link
//! <profiles_dir>/mywebsite-prod-3-link   -> /nix/store/…-mywebsite-1.3
//! <profiles_dir>/mywebsite-prod-4-link   -> /nix/store/…-mywebsite-1.4
//! ```
//!
//! All state is in these symlinks: there is no database to corrupt. A switch
//! is one `rename` of a new symlink over the profile link, so a command that
//! starts meanwhile follows the old generation or the new one, never
//! neither. Changes to one directory are serialised by an exclusive lock on
//! it. A generation pointing into the Nix store is registered as an
//! indirect garbage-collector root (see [`gc_root`]), so `nix-store --gc`
//! keeps every package a generation can still switch to.

use std::fs::{self, File};
use std::io;
use std::time::SystemTime;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;

/// One generation: its number, its link, where the link points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub number: u32,
    pub link: Utf8PathBuf,
    pub target: Utf8PathBuf,
    /// When the generation was made (the link's own mtime).
    pub made: SystemTime,
}

/// The profile of one instance.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The directory holding the profile and generation links.
    pub dir: Utf8PathBuf,
    /// `<project>-<instance>`.
    pub name: String,
}

/// An exclusive lock on a profiles directory, held while it lives.
#[derive(Debug)]
pub struct Lock {
    _handle: File,
}

impl Profile {
    /// The profile of the instance whose profile link is `link`.
    pub fn at(link: &Utf8Path) -> Profile {
        Profile {
            dir: link.parent().unwrap_or(Utf8Path::new("/")).to_owned(),
            name: link.file_name().unwrap_or_default().to_owned(),
        }
    }

    /// The profile link itself, `<dir>/<name>`.
    pub fn link(&self) -> Utf8PathBuf {
        self.dir.join(&self.name)
    }

    fn generation_name(&self, number: u32) -> String {
        format!("{}-{number}-link", self.name)
    }

    /// Creates the directory if need be and locks it against other changes.
    pub fn lock(&self) -> Result<Lock, Error> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
        let handle = File::open(&self.dir).map_err(|e| Error::io("open", &self.dir, e))?;
        handle.lock().map_err(|e| Error::io("lock", &self.dir, e))?;
        Ok(Lock { _handle: handle })
    }

    /// Every generation, oldest first; empty when the directory is missing.
    pub fn generations(&self) -> Result<Vec<Generation>, Error> {
        let entries = match self.dir.read_dir_utf8() {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let prefix = format!("{}-", self.name);
        let mut generations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let Some(number) = entry
                .file_name()
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("-link"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let link = entry.path().to_owned();
            let target = read_link(&link)?;
            let made = link
                .symlink_metadata()
                .and_then(|m| m.modified())
                .map_err(|e| Error::io("stat", &link, e))?;
            generations.push(Generation {
                number,
                link,
                target,
                made,
            });
        }
        generations.sort_by_key(|g| g.number);
        Ok(generations)
    }

    /// The number of the generation the profile link points to, if any.
    pub fn current(&self) -> Result<Option<u32>, Error> {
        let link = self.link();
        match link.read_link_utf8() {
            Ok(target) => Ok(target
                .as_str()
                .strip_prefix(&format!("{}-", self.name))
                .and_then(|rest| rest.strip_suffix("-link"))
                .and_then(|n| n.parse().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read link", &link, e)),
        }
    }

    /// Makes generation `number` point at `target` and protects `target`
    /// from the garbage collector when it is a store path.
    pub fn create(&self, number: u32, target: &Utf8Path) -> Result<Generation, Error> {
        let link = self.dir.join(self.generation_name(number));
        std::os::unix::fs::symlink(target, &link)
            .map_err(|e| Error::io("create link", &link, e))?;
        // The root after the link: Nix deletes a root whose link is missing.
        if let Err(e) = gc_root::register(&link, target) {
            let _ = fs::remove_file(&link);
            return Err(e);
        }
        let made = SystemTime::now();
        Ok(Generation {
            number,
            link,
            target: target.to_owned(),
            made,
        })
    }

    /// Points the profile at generation `number`: a new symlink renamed over
    /// the old one, then the directory synced.
    pub fn switch(&self, number: u32) -> Result<(), Error> {
        let link = self.link();
        let tmp = self
            .dir
            .join(format!(".{}.djshim-tmp-{}", self.name, std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(self.generation_name(number), &tmp)
            .map_err(|e| Error::io("create link", &tmp, e))?;
        fs::rename(&tmp, &link).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("switch", &link, e)
        })?;
        crate::write::sync_dir(&self.dir)
    }

    /// Deletes a generation (never the current one) and its GC root.
    pub fn delete(&self, generation: &Generation) -> Result<(), Error> {
        fs::remove_file(&generation.link).map_err(|e| Error::io("remove", &generation.link, e))?;
        gc_root::release(&generation.link)
    }
}

fn read_link(link: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    link.read_link_utf8()
        .map_err(|e| Error::io("read link", link, e))
}

/// Indirect garbage-collector roots, the way `nix-store --add-root --indirect`
/// makes them: a symlink in `$NIX_STATE_DIR/gcroots/auto` pointing at the
/// generation link. Nix's collector treats a symlink there that points to a
/// symlink into the store as a root, and deletes the entry itself once the
/// generation link is gone; we delete it at once when pruning.
pub mod gc_root {
    use super::{Error, Utf8Path, Utf8PathBuf, fs, io};

    /// Nix's store directory (`$NIX_STORE_DIR`, else `/nix/store`).
    pub fn store_dir() -> Utf8PathBuf {
        std::env::var("NIX_STORE_DIR").map_or_else(|_| "/nix/store".into(), Utf8PathBuf::from)
    }

    /// Where Nix looks for indirect roots.
    pub fn auto_dir() -> Utf8PathBuf {
        let state = std::env::var("NIX_STATE_DIR")
            .map_or_else(|_| "/nix/var/nix".into(), Utf8PathBuf::from);
        state.join("gcroots/auto")
    }

    /// The root's name: the link's absolute path, `%`-escaped into one file name.
    pub fn name(link: &Utf8Path) -> String {
        let escaped = link.as_str().replace('%', "%25").replace('/', "%2F");
        format!("djshim{escaped}")
    }

    /// Protects `target` through `link`, if `target` is a store path.
    pub fn register(link: &Utf8Path, target: &Utf8Path) -> Result<(), Error> {
        if !target.starts_with(store_dir()) {
            return Ok(());
        }
        let auto = auto_dir();
        let gcroots = auto.parent().unwrap_or(&auto);
        if !gcroots.is_dir() {
            return Err(Error::Problem(format!(
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
}
