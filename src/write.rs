//! Artifacts → files: the only stage that writes.
//!
//! A directory djshim writes into is kept like a set: the manifest names the
//! files djshim owns there; `sync` writes what changed, removes what the
//! config no longer wants, and never touches a file it does not own unless
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

/// The file in each output directory that lists what djshim owns there.
pub const MANIFEST: &str = ".djshim-manifest";
/// Temporary files start with this; leftovers of a killed run are removed.
const TEMP_PREFIX: &str = ".djshim-tmp-";
const MANIFEST_HEADER: &str = "# Files in this directory that djshim wrote and may replace or remove.\n\
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
struct Step<'a> {
    name: String,
    change: Change,
    old: Option<Vec<u8>>,
    new: Option<&'a Artifact>,
}

/// Brings `dir` in line with the config: writes `artifacts`, keeps the other
/// owned files whose names are in `wanted`, removes owned files that are not.
/// Returns each file's change, in name order.
pub fn sync(
    dir: &Utf8Path,
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
        Some(lock(dir)?)
    } else {
        None
    };
    if !options.dry_run {
        remove_leftovers(dir)?;
    }
    let owned = read_manifest(dir)?;
    let steps = plan(dir, artifacts, wanted, &owned, options.force)?;

    if options.dry_run {
        for step in &steps {
            print_diff(dir, step, diff_out).map_err(|e| Error::io("write the diff of", dir, e))?;
        }
    } else {
        apply(dir, &steps, &owned, wanted)?;
    }
    Ok(steps.into_iter().map(|s| (s.name, s.change)).collect())
}

fn plan<'a>(
    dir: &Utf8Path,
    artifacts: &'a [Artifact],
    wanted: &BTreeSet<String>,
    owned: &BTreeSet<String>,
    force: bool,
) -> Result<Vec<Step<'a>>, Error> {
    let mut steps = Vec::new();
    let mut foreign = Vec::new();
    for artifact in artifacts {
        let path = dir.join(&artifact.name);
        let old = read_if_exists(&path)?;
        let change = match &old {
            None => Change::Create,
            Some(_) if !owned.contains(&artifact.name) && !force => {
                foreign.push(path);
                continue;
            }
            Some(bytes) if *bytes == artifact.bytes && mode(&path)? == artifact.mode => {
                Change::Unchanged
            }
            Some(_) => Change::Update,
        };
        steps.push(Step {
            name: artifact.name.clone(),
            change,
            old,
            new: Some(artifact),
        });
    }
    if !foreign.is_empty() {
        return Err(Error::Foreign { paths: foreign });
    }
    for name in owned.difference(wanted) {
        if let Some(old) = read_if_exists(&dir.join(name))? {
            steps.push(Step {
                name: name.clone(),
                change: Change::Remove,
                old: Some(old),
                new: None,
            });
        }
    }
    steps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(steps)
}

fn apply(
    dir: &Utf8Path,
    steps: &[Step<'_>],
    owned: &BTreeSet<String>,
    wanted: &BTreeSet<String>,
) -> Result<(), Error> {
    let written: BTreeSet<String> = steps
        .iter()
        .filter(|s| s.new.is_some())
        .map(|s| s.name.clone())
        .collect();
    // First claim every file about to be written, so that a run killed half
    // way still owns (and will replace or prune) whatever it left behind.
    let claimed: BTreeSet<String> = owned.union(&written).cloned().collect();
    write_manifest(dir, owned, &claimed)?;
    let changed = steps
        .iter()
        .filter(|s| matches!(s.change, Change::Create | Change::Update));
    write_all(dir, changed.filter_map(|s| s.new))?;
    for step in steps.iter().filter(|s| s.change == Change::Remove) {
        let path = dir.join(&step.name);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    }
    let kept: BTreeSet<String> = claimed.intersection(wanted).cloned().collect();
    write_manifest(dir, &claimed, &kept)?;
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
    let handle = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    rustix::fs::syncfs(&handle).map_err(|e| Error::io("sync", dir, e.into()))?;
    for (tmp, path) in staged {
        tmp.persist(&path)
            .map_err(|e| Error::io("rename into place", &path, e.error))?;
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

/// An exclusive lock on the directory itself (flock on its descriptor), so
/// no lock file is left behind.
fn lock(dir: &Utf8Path) -> Result<File, Error> {
    let handle = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    handle.lock().map_err(|e| Error::io("lock", dir, e))?;
    Ok(handle)
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

/// The names the manifest of `dir` lists; empty when there is none.
pub fn read_manifest(dir: &Utf8Path) -> Result<BTreeSet<String>, Error> {
    let path = dir.join(MANIFEST);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(BTreeSet::new());
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::Manifest {
        path: path.clone(),
        line: 1,
        problem: "is not UTF-8".into(),
    })?;
    let mut names = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Names are plain file names: an edited manifest must not make
        // djshim replace or delete anything outside its directory.
        if line.contains('/') || line.starts_with('.') {
            return Err(Error::Manifest {
                path,
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
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
) -> Result<(), Error> {
    if old == new && dir.join(MANIFEST).exists() {
        return Ok(());
    }
    let mut text = String::from(MANIFEST_HEADER);
    for name in new {
        text.push_str(name);
        text.push('\n');
    }
    write_atomic(dir, MANIFEST, text.as_bytes(), 0o644)?;
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

fn print_diff(dir: &Utf8Path, step: &Step<'_>, out: &mut dyn Write) -> io::Result<()> {
    if step.change == Change::Unchanged {
        return Ok(());
    }
    let path: Utf8PathBuf = dir.join(&step.name);
    let old = step
        .old
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let new = step
        .new
        .map(|a| String::from_utf8_lossy(&a.bytes))
        .unwrap_or_default();
    let (from, to) = match step.change {
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
            step.new.map_or(0, |a| a.mode)
        );
    }
    write!(
        out,
        "{}",
        diff.unified_diff().context_radius(3).header(&from, &to)
    )
}
