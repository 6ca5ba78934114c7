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
//! neither. Changes to one instance are serialised by its lock (see
//! [`Lock`]). A generation pointing into the Nix store is registered as an
//! indirect garbage-collector root (see [`gc_root`]), so `nix-store --gc`
//! keeps every package a generation can still switch to.

use std::fs;
use std::io;
use std::time::SystemTime;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;
use crate::gcroot as gc_root;
use crate::model::{Instance, Model};

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

/// Where a profile link points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// No profile link yet.
    None,
    /// One of its generations.
    Generation(u32),
    /// Somewhere else (edited by hand): the link's target as written.
    Elsewhere(Utf8PathBuf),
}

/// The device and inode of `path` itself (not followed): two paths to one
/// generation link compare equal.
fn same_file(path: &Utf8Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    path.symlink_metadata().ok().map(|m| (m.dev(), m.ino()))
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

    /// The file name of generation `number`.
    pub fn generation_name(&self, number: u32) -> String {
        crate::layout::generation(&self.name, number)
    }

    /// The generation number a file name in the directory stands for:
    /// `<name>-<N>-link`, N in plain decimal digits (no sign, no leading
    /// zero), so that each number has exactly one link.
    fn number_of(&self, file_name: &str) -> Option<u32> {
        let digits = file_name
            .strip_prefix(self.name.as_str())?
            .strip_prefix('-')?
            .strip_suffix("-link")?;
        let plain = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !(digits.starts_with('0') && digits.len() > 1);
        plain.then(|| digits.parse().ok()).flatten()
    }

    /// Every generation, oldest first; empty when the directory is missing.
    pub fn generations(&self) -> Result<Vec<Generation>, Error> {
        let entries = match self.dir.read_dir_utf8() {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let mut generations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let Some(number) = self.number_of(entry.file_name()) else {
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

    /// What the profile link points at, judged from the generation links
    /// themselves: a link written by hand (absolute, or through another
    /// path to the same generation link) still names its generation.
    pub fn current(&self, generations: &[Generation]) -> Result<Current, Error> {
        let link = self.link();
        let target = match link.read_link_utf8() {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Current::None),
            Err(e) => return Err(Error::io("read link", &link, e)),
        };
        let first_hop = same_file(&self.dir.join(&target));
        let found = generations
            .iter()
            .rev()
            .find(|g| first_hop.is_some() && same_file(&g.link) == first_hop);
        Ok(match found {
            Some(g) => Current::Generation(g.number),
            None => Current::Elsewhere(target),
        })
    }

    /// The next generation's number.
    pub fn next_number(&self, generations: &[Generation]) -> Result<u32, Error> {
        match generations.last() {
            None => Ok(1),
            Some(g) => g.number.checked_add(1).ok_or_else(|| {
                Error::problem(format!(
                    "{} is generation {}, the last number there is; rename the generation \
                     links of {} to smaller numbers (or prune them with `--keep`)",
                    g.link, g.number, self.name
                ))
            }),
        }
    }

    /// The generations that run now: the current one, and any whose
    /// package is where the profile leads (a link edited by hand may point
    /// at a package directly). `--keep` never deletes these.
    pub fn running(&self, generations: &[Generation]) -> Result<Vec<u32>, Error> {
        let mut running = Vec::new();
        if let Current::Generation(n) = self.current(generations)? {
            running.push(n);
        }
        if let Ok(package) = self.link().canonicalize_utf8() {
            for g in generations {
                if g.link.canonicalize_utf8().is_ok_and(|p| p == package) {
                    running.push(g.number);
                }
            }
        }
        Ok(running)
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

    /// Removes the profile link (the undo of a first deploy): the instance
    /// runs nothing.
    pub fn unlink(&self) -> Result<(), Error> {
        let link = self.link();
        match fs::remove_file(&link) {
            Ok(()) => crate::write::sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &link, e)),
        }
    }

    /// Deletes a generation (never the current one), its GC root and its
    /// deploy record.
    pub fn delete(&self, generation: &Generation) -> Result<(), Error> {
        fs::remove_file(&generation.link).map_err(|e| Error::io("remove", &generation.link, e))?;
        let _ = fs::remove_file(crate::layout::record(
            &self.dir,
            &self.name,
            generation.number,
        ));
        gc_root::release(&generation.link)
    }
}

fn read_link(link: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    link.read_link_utf8()
        .map_err(|e| Error::io("read link", link, e))
}

/// The instance named, which must run its profile.
pub fn profiled<'m>(model: &'m Model, name: &str) -> Result<(&'m Instance, Profile), Error> {
    let instance = model.select(&[name.to_owned()])?[0];
    if !instance.profile {
        return Err(Error::usage_help(
            format!(
                "instance `{name}` has `package` set ({}), so it runs that path, not a profile",
                instance.package
            ),
            "remove `package` from the instance (and its `[defaults]`) to pin it",
        ));
    }
    Ok((instance, Profile::at(&instance.package)))
}

/// The generation the profile points to, among `generations`.
pub fn current<'g>(
    profile: &Profile,
    generations: &'g [Generation],
) -> Result<Option<&'g Generation>, Error> {
    Ok(match profile.current(generations)? {
        Current::Generation(n) => generations.iter().find(|g| g.number == n),
        _ => None,
    })
}

/// An absolute path to an existing directory, links resolved: a `result`
/// link of nix-build pins the store path it points to, not the link.
pub fn resolve(path: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    if !path.is_absolute() {
        return Err(Error::usage_help(
            format!("`{path}` is not an absolute path"),
            format!(
                "give the package's full path, e.g. \
             `/nix/store/…-mywebsite` or `$PWD/{path}`"
            ),
        ));
    }
    let real = path
        .canonicalize_utf8()
        .map_err(|e| Error::io("resolve", path, e))?;
    if !real.is_dir() {
        return Err(Error::problem(format!(
            "{path} is not a directory; a package is the directory holding manage.py"
        )));
    }
    Ok(real)
}

/// An instance's exclusive lock, held while it lives. Taken before
/// anything of the instance is read, by deploy, rollback, pin and the
/// recovery of each; the holder writes what it is into the file, so a
/// waiting run can say what it waits for.
#[derive(Debug)]
pub struct Lock {
    _held: crate::lock::Held,
}

impl Lock {
    /// Waits for the lock of `profile`'s instance, saying once what it
    /// waits for.
    pub fn take(profile: &Profile, what: &str) -> Result<Lock, Error> {
        Ok(Lock {
            _held: crate::lock::file(&Lock::path(profile)?, what)?,
        })
    }

    /// The lock of `profile`'s instance if no one holds it; else an error
    /// saying who does.
    pub fn try_take(profile: &Profile, what: &str) -> Result<Lock, String> {
        let path = Lock::path(profile).map_err(|e| e.to_string())?;
        Ok(Lock {
            _held: crate::lock::try_file(&path, what)?,
        })
    }

    /// The lock file's path, its directory made when missing.
    fn path(profile: &Profile) -> Result<Utf8PathBuf, Error> {
        fs::create_dir_all(&profile.dir)
            .map_err(|e| Error::io("create directory", &profile.dir, e))?;
        Ok(crate::layout::lock(&profile.dir, &profile.name))
    }
}
