//! Artifacts → files: the only stage that writes.
//!
//! A directory djshim writes into is kept like a set: each project's
//! manifest (`.djshim-<project>.manifest`) names the files that project
//! owns there, so several projects can share `/usr/local/bin`; `sync`
//! writes what changed, removes what the config no longer wants, never
//! touches a file of another project, and never a file nobody wrote unless
//! forced. Each file is written to a temporary file in the same directory,
//! synced and renamed into place, so a reader (or a `kill -9`) sees the old
//! file or the new one, never a torn one. An exclusive lock on the directory
//! keeps two runs from interleaving.

use std::collections::BTreeSet;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;
use crate::render::Artifact;

/// The manifest of djshim 0.1, one per directory whatever the project:
/// still read, so that an upgrade takes over the files it lists, and
/// emptied as the projects claim them.
pub const LEGACY_MANIFEST: &str = ".djshim-manifest";

/// The file in an output directory that lists what `project` owns there.
pub use crate::layout::manifest as manifest_name;
/// Temporary files start with this; leftovers of a killed run are removed.
const TEMP_PREFIX: &str = ".djshim-tmp-";
const MANIFEST_HEADER: &str = "# Files in this directory that djshim wrote for this project and may replace or remove.\n\
                               # Written by djshim; do not edit.\n";

/// What `sync` does, or would do, to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Unchanged,
    Remove,
}

impl Change {
    pub fn verb(self) -> &'static str {
        match self {
            Change::Create => "created",
            Change::Update => "updated",
            Change::Unchanged => "unchanged",
            Change::Remove => "removed",
        }
    }
}

/// How `sync` may act.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print a unified diff of every change to stdout; write nothing.
    pub dry_run: bool,
    /// Take over files djshim did not write.
    pub force: bool,
}

/// One file's planned change, with its old content for the diff.
#[derive(Debug)]
struct FileChange<'a> {
    name: String,
    change: Change,
    old: Option<Vec<u8>>,
    new: Option<&'a Artifact>,
}

/// Brings `dir` in line with the config of `project`: writes `artifacts`,
/// keeps the project's other files whose names are in `wanted`, removes
/// the project's files that are not. Returns each file's change, in name
/// order.
pub fn sync(
    dir: &Utf8Path,
    project: &str,
    artifacts: &[Artifact],
    wanted: &BTreeSet<String>,
    options: Options,
    diff_out: &mut dyn Write,
) -> Result<Vec<(String, Change)>, Error> {
    let exists = dir.is_dir();
    if !exists && !options.dry_run {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    // Held until the end of this function; released when dropped.
    let _lock = if exists || !options.dry_run {
        Some(crate::lock::directory(dir)?)
    } else {
        None
    };
    if !options.dry_run {
        remove_leftovers(dir)?;
    }
    let owners = Owners::read(dir, project)?;
    let changes = plan(dir, artifacts, wanted, &owners, options.force)?;

    if options.dry_run {
        for change in &changes {
            print_diff(dir, change, diff_out)
                .map_err(|e| Error::io("write the diff of", dir, e))?;
        }
    } else {
        apply(dir, project, &changes, &owners, wanted)?;
    }
    Ok(changes.into_iter().map(|c| (c.name, c.change)).collect())
}

/// Who owns what in one directory, as its manifests say.
#[derive(Debug, Default)]
struct Owners {
    /// This project's files.
    own: BTreeSet<String>,
    /// Files of the 0.1 manifest, which this project may take over.
    legacy: BTreeSet<String>,
    /// Files of other projects, with the project's name.
    others: std::collections::BTreeMap<String, String>,
}

impl Owners {
    fn read(dir: &Utf8Path, project: &str) -> Result<Owners, Error> {
        let mut owners = Owners {
            own: read_manifest(&dir.join(manifest_name(project)))?,
            legacy: read_manifest(&dir.join(LEGACY_MANIFEST))?,
            ..Owners::default()
        };
        let entries = match dir.read_dir_utf8() {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(owners),
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        for entry in entries.flatten() {
            let Some(other) = entry
                .file_name()
                .strip_prefix(".djshim-")
                .and_then(|n| n.strip_suffix(".manifest"))
                .filter(|other| *other != project)
            else {
                continue;
            };
            for name in read_manifest(entry.path())? {
                owners.others.insert(name, other.to_owned());
            }
        }
        Ok(owners)
    }
}

fn plan<'a>(
    dir: &Utf8Path,
    artifacts: &'a [Artifact],
    wanted: &BTreeSet<String>,
    owners: &Owners,
    force: bool,
) -> Result<Vec<FileChange<'a>>, Error> {
    let mut changes = Vec::new();
    let mut foreign = Vec::new();
    let mut theirs = Vec::new();
    for artifact in artifacts {
        let path = dir.join(&artifact.name);
        if let Some(other) = owners.others.get(&artifact.name) {
            theirs.push((path, other.clone()));
            continue;
        }
        let old = read_if_exists(&path)?;
        let ours = owners.own.contains(&artifact.name) || owners.legacy.contains(&artifact.name);
        let change = match &old {
            None => Change::Create,
            Some(_) if !ours && !force => {
                foreign.push(path);
                continue;
            }
            Some(bytes) if *bytes == artifact.bytes && mode(&path)? == artifact.mode => {
                Change::Unchanged
            }
            Some(_) => Change::Update,
        };
        changes.push(FileChange {
            name: artifact.name.clone(),
            change,
            old,
            new: Some(artifact),
        });
    }
    if !theirs.is_empty() {
        return Err(Error::OtherProject { paths: theirs });
    }
    if !foreign.is_empty() {
        return Err(Error::Foreign { paths: foreign });
    }
    for name in owners.own.difference(wanted) {
        if let Some(old) = read_if_exists(&dir.join(name))? {
            changes.push(FileChange {
                name: name.clone(),
                change: Change::Remove,
                old: Some(old),
                new: None,
            });
        }
    }
    changes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(changes)
}

fn apply(
    dir: &Utf8Path,
    project: &str,
    changes: &[FileChange<'_>],
    owners: &Owners,
    wanted: &BTreeSet<String>,
) -> Result<(), Error> {
    let manifest = manifest_name(project);
    let owned = &owners.own;
    let written: BTreeSet<String> = changes
        .iter()
        .filter(|s| s.new.is_some())
        .map(|s| s.name.clone())
        .collect();
    // First claim every file about to be written, so that a run killed half
    // way still owns (and will replace or prune) whatever it left behind.
    let claimed: BTreeSet<String> = owned.union(&written).cloned().collect();
    write_manifest(dir, &manifest, owned, &claimed)?;
    // What this project now owns leaves the 0.1 manifest.
    let legacy: BTreeSet<String> = owners.legacy.difference(&claimed).cloned().collect();
    if legacy != owners.legacy {
        if legacy.is_empty() {
            let path = dir.join(LEGACY_MANIFEST);
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        } else {
            write_manifest(dir, LEGACY_MANIFEST, &owners.legacy, &legacy)?;
        }
    }
    let to_write = changes
        .iter()
        .filter(|s| matches!(s.change, Change::Create | Change::Update));
    write_all(dir, to_write.filter_map(|s| s.new))?;
    for removed in changes.iter().filter(|s| s.change == Change::Remove) {
        let path = dir.join(&removed.name);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    }
    let kept: BTreeSet<String> = claimed.intersection(wanted).cloned().collect();
    write_manifest(dir, &manifest, &claimed, &kept)?;
    sync_dir(dir)
}

/// Writes many files at once: each new content goes to a temporary file
/// beside its target; one `syncfs` makes all of them durable (one flush
/// instead of one per file); only then is each renamed into place. A
/// failure before the renames (a full disk, say) changes no file at all.
pub fn write_all<'a>(
    dir: &Utf8Path,
    artifacts: impl Iterator<Item = &'a Artifact>,
) -> Result<(), Error> {
    let mut staged = Vec::new();
    for a in artifacts {
        let path = dir.join(&a.name);
        let fail = |e: io::Error| Error::io("write", &path, e);
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(fail)?;
        tmp.write_all(&a.bytes).map_err(fail)?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(a.mode))
            .map_err(fail)?;
        // Closed now (thousands of open files would hit the descriptor
        // limit); the path still removes itself if dropped unpersisted.
        staged.push((tmp.into_temp_path(), path));
    }
    if staged.is_empty() {
        return Ok(());
    }
    // Every file to be replaced gets a hard link beside it first: a rename
    // that fails half way is undone by putting those back. A file that
    // cannot be linked (immutable, say) fails here, before any rename.
    let mut backups = Vec::new();
    for (_, path) in &staged {
        let backup = match fs::symlink_metadata(path) {
            Ok(_) => {
                let backup = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .make_in(dir, |tmp| fs::hard_link(path, tmp))
                    .map_err(|e| Error::io("prepare to replace", path, e))?;
                Some(backup.into_temp_path())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        backups.push(backup);
    }
    let handle = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    rustix::fs::syncfs(&handle).map_err(|e| Error::io("sync", dir, e.into()))?;
    let mut done: Vec<(Utf8PathBuf, Option<tempfile::TempPath>)> = Vec::new();
    for ((tmp, path), backup) in staged.into_iter().zip(backups) {
        if let Err(e) = tmp.persist(&path) {
            // Back to the old files, newest change first.
            for (path, backup) in done.into_iter().rev() {
                let _ = match backup {
                    Some(backup) => backup.persist(&path).map_err(|e| e.error),
                    None => fs::remove_file(&path),
                };
            }
            return Err(Error::io("rename into place", &path, e.error));
        }
        done.push((path, backup));
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` with `mode`: temporary file in the same
/// directory, permissions, fsync, rename. The directory is synced by the caller.
pub fn write_atomic(dir: &Utf8Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    let fail = |e: io::Error| Error::io("write", &path, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(&path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Syncs a directory, making the renames in it durable.
pub fn sync_dir(dir: &Utf8Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

fn remove_leftovers(dir: &Utf8Path) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The names a manifest lists; empty when there is none.
pub fn read_manifest(path: &Utf8Path) -> Result<BTreeSet<String>, Error> {
    let Some(bytes) = read_if_exists(path)? else {
        return Ok(BTreeSet::new());
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::Manifest {
        path: path.to_owned(),
        line: 1,
        problem: "is not UTF-8".into(),
    })?;
    let mut names = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Names are plain file names: an edited manifest must not make
        // djshim replace or delete anything outside its directory. The
        // one hidden name is the shims' helper.
        let helper = line
            .strip_prefix(".djshim-")
            .and_then(|rest| rest.strip_suffix("-exec"))
            .is_some_and(crate::model::is_name);
        if line.contains('/') || (line.starts_with('.') && !helper) {
            return Err(Error::Manifest {
                path: path.to_owned(),
                line: i + 1,
                problem: format!(
                    "`{}` is not a file name djshim writes",
                    crate::error::clean(line)
                ),
            });
        }
        names.insert(line.to_owned());
    }
    Ok(names)
}

fn write_manifest(
    dir: &Utf8Path,
    manifest: &str,
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
) -> Result<(), Error> {
    if old == new && dir.join(manifest).exists() {
        return Ok(());
    }
    let mut text = String::from(MANIFEST_HEADER);
    for name in new {
        text.push_str(name);
        text.push('\n');
    }
    write_atomic(dir, manifest, text.as_bytes(), 0o644)?;
    sync_dir(dir)
}

fn read_if_exists(path: &Utf8Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn mode(path: &Utf8Path) -> Result<u32, Error> {
    let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok(meta.permissions().mode() & 0o7777)
}

fn print_diff(dir: &Utf8Path, change: &FileChange<'_>, out: &mut dyn Write) -> io::Result<()> {
    if change.change == Change::Unchanged {
        return Ok(());
    }
    let path: Utf8PathBuf = dir.join(&change.name);
    let binary = |bytes: &[u8]| std::str::from_utf8(bytes).is_err();
    if change.old.as_deref().is_some_and(binary) || change.new.is_some_and(|a| binary(&a.bytes)) {
        // The shims' helper: no lines to compare.
        let verb = match change.change {
            Change::Create => "would be created",
            Change::Remove => "would be removed",
            _ => "would change",
        };
        return writeln!(out, "binary file {path} {verb}");
    }
    let old = change
        .old
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let new = change
        .new
        .map(|a| String::from_utf8_lossy(&a.bytes))
        .unwrap_or_default();
    let (from, to) = match change.change {
        Change::Create => ("/dev/null".to_owned(), path.to_string()),
        Change::Remove => (path.to_string(), "/dev/null".to_owned()),
        _ => (path.to_string(), path.to_string()),
    };
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    if diff
        .ops()
        .iter()
        .all(|op| op.tag() == similar::DiffTag::Equal)
    {
        // Same text, other mode.
        return writeln!(
            out,
            "mode of {path} becomes {:o}",
            change.new.map_or(0, |a| a.mode)
        );
    }
    write!(
        out,
        "{}",
        diff.unified_diff().context_radius(3).header(&from, &to)
    )
}
