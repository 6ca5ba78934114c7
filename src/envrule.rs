//! The env-file rule, one implementation for the shims' helper and for
//! `djshim check`: which file may be read for an instance, judged on the
//! file that was opened, never on a name looked up again.
//!
//! A file is opened without blocking (a FIFO cannot hold anyone) and
//! without becoming a controlling terminal, then checked on its
//! descriptor: a regular file, owned by root or the instance's account,
//! not group- or world-writable. A root-owned file read by root for
//! another account must also lie under directories only root can change,
//! or a link the account controls could point it at any file root can
//! read: that path is walked one component at a time from `/`, each
//! directory opened (no link followed) and checked on its descriptor, a
//! link read where it lies and its target walked in turn, the file opened
//! relative to the last directory. No name is looked up twice.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Whom a file is read for.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The account a file may belong to besides root.
    pub owner: u32,
    /// Root reads for another account: a root-owned file's directories
    /// count too.
    pub guard_dirs: bool,
}

/// Why a file may not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    /// The caller may not open it (a file root's alone, read by its
    /// account).
    Denied(String),
    Unreadable(String),
    NotRegular,
    /// Root-owned, read for an account, under this directory that others
    /// than root can change.
    UnsafeDir(PathBuf),
    Writable(u32),
    Owner(u32),
}

impl Refusal {
    /// The reason, after the file's name.
    pub fn describe(&self, account: &str) -> String {
        match self {
            Refusal::Missing => "is missing".into(),
            Refusal::Denied(e) | Refusal::Unreadable(e) => format!("cannot be opened: {e}"),
            Refusal::NotRegular => "is not a regular file".into(),
            Refusal::UnsafeDir(dir) => format!(
                "belongs to root but lies under {}, which others than root can change (a link \
                 there could point it at any file root can read): move it under directories \
                 only root can write, or give it to {account}",
                dir.display()
            ),
            Refusal::Writable(mode) => {
                format!("is group- or world-writable (mode {mode:o}): chmod go-w it")
            }
            Refusal::Owner(uid) => {
                format!("is owned by uid {uid}, not by root or the instance account")
            }
        }
    }
}

/// An env file that was opened: its descriptor and mode, and everything
/// the rule holds against it (the first is the helper's answer; `check`
/// lists them all). Nothing of a refused file is to be read.
#[derive(Debug)]
pub struct Opened {
    pub file: Option<File>,
    pub mode: u32,
    pub refusals: Vec<Refusal>,
}

/// Opens `path` for reading by the rule.
pub fn open(path: &Path, rule: Rule) -> Opened {
    let refused = |r: Refusal| Opened {
        file: None,
        mode: 0,
        refusals: vec![r],
    };
    let opened = if rule.guard_dirs && path.is_absolute() {
        walk(path)
    } else {
        plain(path).map(|file| (file, None))
    };
    let (fd, unsafe_dir) = match opened {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return refused(Refusal::Missing),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return refused(Refusal::Denied(e.to_string()));
        }
        Err(e) => return refused(Refusal::Unreadable(e.to_string())),
    };
    let stat = match rustix::fs::fstat(&fd) {
        Ok(stat) => stat,
        Err(e) => return refused(Refusal::Unreadable(e.to_string())),
    };
    let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    if file_type != rustix::fs::FileType::RegularFile {
        return refused(Refusal::NotRegular);
    }
    let mode = stat.st_mode & 0o7777;
    let mut refusals = Vec::new();
    if let Some(dir) = unsafe_dir.filter(|_| stat.st_uid == 0 && rule.owner != 0) {
        refusals.push(Refusal::UnsafeDir(dir));
    }
    if mode & 0o022 != 0 {
        refusals.push(Refusal::Writable(mode));
    }
    if stat.st_uid != 0 && stat.st_uid != rule.owner {
        refusals.push(Refusal::Owner(stat.st_uid));
    }
    Opened {
        file: Some(File::from(fd)),
        mode,
        refusals,
    }
}

/// The flags of every open of an env file: no blocking on a FIFO, no
/// controlling terminal, not inherited.
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

fn plain(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, file_flags(), Mode::empty())?)
}

/// How many links one walk follows, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// Walks `path` (absolute) from `/`: the file's descriptor, and the first
/// directory on the way that others than root can change.
fn walk(path: &Path) -> io::Result<(OwnedFd, Option<PathBuf>)> {
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = || rustix::fs::open("/", dir_flags, Mode::empty());
    let mut dir = root()?;
    let mut shown = PathBuf::from("/");
    let mut unsafe_dir = None;
    let mut links = 0;
    let check = |dir: &OwnedFd, shown: &Path, unsafe_dir: &mut Option<PathBuf>| {
        let stat = rustix::fs::fstat(dir)?;
        if unsafe_dir.is_none() && (stat.st_uid != 0 || stat.st_mode & 0o022 != 0) {
            *unsafe_dir = Some(shown.to_owned());
        }
        io::Result::Ok(())
    };
    check(&dir, &shown, &mut unsafe_dir)?;
    let mut queue = components(path);
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            dir = rustix::fs::openat(&dir, "..", dir_flags, Mode::empty())?;
            shown.pop();
            check(&dir, &shown, &mut unsafe_dir)?;
            continue;
        }
        let last = queue.is_empty();
        let flags = if last {
            file_flags() | OFlags::NOFOLLOW
        } else {
            dir_flags
        };
        match rustix::fs::openat(&dir, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) if last => return Ok((fd, unsafe_dir)),
            Ok(fd) => {
                dir = fd;
                shown.push(&name);
                check(&dir, &shown, &mut unsafe_dir)?;
            }
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                // A link, read where it lies (in a directory already
                // checked), its target walked in its place.
                let Ok(target) = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new()) else {
                    return Err(e.into());
                };
                links += 1;
                if links > MAX_LINKS {
                    return Err(rustix::io::Errno::LOOP.into());
                }
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                let mut rest = components(&target);
                rest.extend(queue);
                queue = rest;
                if target.is_absolute() {
                    dir = root()?;
                    shown = PathBuf::from("/");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The path named a directory (`/`): not a regular file.
    Ok((dir, unsafe_dir))
}

/// The names of `path` to walk: `.` dropped, `..` kept.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}
