//! `djshim build`: a package made from exactly one commit, never from a
//! working tree. The ref is resolved by git to a full commit id, the
//! commit's tracked files are exported with `git archive`, and then either
//! Nix builds it (`nix-store --add` of the export, `nix-build` of the
//! configured file: the same commit gives the same store path, never a
//! second build) or the configured command runs in the export, which
//! becomes a read-only release directory. A failed build leaves nothing a
//! deploy could pick up.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;
use crate::model::{Build, BuildWith, Model, Repo};
use crate::process::Process;
use crate::steps::step;

/// The commit id shown with a package: the first 12 hex digits.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The release name of `commit`: `<project>-<short id>`, the directory of
/// a command build, the out-link of a Nix build.
fn release_name(project: &str, commit: &str) -> String {
    format!("{project}-{}", short(commit))
}

/// Builds `reference` (else `[build]`'s ref, else the repository's HEAD)
/// and prints the package, a store path or a release directory, as the
/// last line of `out`.
pub fn build(
    model: &Model,
    reference: Option<&str>,
    out: &mut dyn Write,
) -> Result<Utf8PathBuf, Error> {
    let build = model.build.as_ref().ok_or_else(|| {
        Error::Usage(
            "the config has no `[build]` table\n  = help: add one with `repo` and `nix = \
             \"default.nix\"` or `command = [\"sh\", \"build.sh\"]`; see djshim.toml(5)"
                .to_owned(),
        )
    })?;
    let reference = reference.or(build.reference.as_deref()).unwrap_or("HEAD");
    let repo = step("build: fetch", || repository(model, build))?;
    let commit = step(&format!("build: resolve `{reference}`"), || {
        resolve(&repo, reference)
    })?;
    eprintln!("djshim: building commit {commit}");
    fs::create_dir_all(&build.releases_dir)
        .map_err(|e| Error::io("create directory", &build.releases_dir, e))?;
    let _lock = lock(&build.releases_dir)?;
    let package = match &build.with {
        BuildWith::Nix(file) => nix(model, build, &repo, &commit, file)?,
        BuildWith::Command(command) => command_build(model, build, &repo, &commit, command)?,
    };
    writeln!(out, "{package}").map_err(|e| Error::io("write", Utf8Path::new("stdout"), e))?;
    Ok(package)
}

/// The repository to read: the configured directory, or a mirror of the
/// URL in the releases directory, fetched now.
fn repository(model: &Model, build: &Build) -> Result<Utf8PathBuf, Error> {
    match &build.repo {
        Repo::Path(path) => Ok(path.clone()),
        Repo::Url(url) => {
            let mirror = build.releases_dir.join(format!(".{}.git", model.project));
            if mirror.is_dir() {
                git(&mirror)
                    .args(["fetch", "--prune", "--quiet", "origin"])
                    .output()?;
            } else {
                fs::create_dir_all(&build.releases_dir)
                    .map_err(|e| Error::io("create directory", &build.releases_dir, e))?;
                Process::new("git")
                    .args([
                        "clone",
                        "--mirror",
                        "--quiet",
                        "--",
                        url.as_str(),
                        mirror.as_str(),
                    ])
                    .output()?;
            }
            Ok(mirror)
        }
    }
}

fn git(repo: &Utf8Path) -> Process {
    Process::new("git").arg("-C").arg(repo)
}

/// The full id of the commit `reference` names.
fn resolve(repo: &Utf8Path, reference: &str) -> Result<String, Error> {
    let out = git(repo)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{reference}^{{commit}}"),
        ])
        .output()
        .map_err(|_| {
            Error::Problem(format!(
                "`{reference}` names no commit in {repo}\n  = help: give a branch, a tag or a \
                 commit id of that repository"
            ))
        })?;
    let commit = String::from_utf8_lossy(&out).trim().to_owned();
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit)
    } else {
        Err(Error::Problem(format!(
            "git gave `{commit}` for `{reference}`, not a commit id"
        )))
    }
}

/// Writes the tracked files of `commit` into `dir` (which must not exist):
/// `git archive`, so no working tree, uncommitted change or untracked file
/// can reach it. Submodules are not part of the archive: their directories
/// stay empty, and a warning says so.
fn export(repo: &Utf8Path, commit: &str, dir: &Utf8Path) -> Result<(), Error> {
    fs::create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
    git(repo)
        .args(["archive", "--format=tar", commit])
        .pipe(&Process::new("tar").args(["-x", "-C", dir.as_str()]))?;
    if git(repo)
        .args(["cat-file", "-e", &format!("{commit}:.gitmodules")])
        .output()
        .is_ok()
    {
        eprintln!(
            "djshim: warning: commit {} has submodules; they are not exported (their \
             directories are empty): vendor them, or fetch them in the build",
            short(commit)
        );
    }
    Ok(())
}

/// The Nix way: the export added to the store as `<project>-src-<short>`,
/// then `nix-build` of the configured file inside it, with an out-link
/// `<releases_dir>/<project>-<short>` that keeps the result alive.
fn nix(
    model: &Model,
    build: &Build,
    repo: &Utf8Path,
    commit: &str,
    file: &Utf8Path,
) -> Result<Utf8PathBuf, Error> {
    let tmp = tempfile::Builder::new()
        .prefix("djshim-build-")
        .tempdir()
        .map_err(|e| Error::io("create", Utf8Path::new("a temporary directory"), e))?;
    let tmp_dir = Utf8Path::from_path(tmp.path())
        .ok_or_else(|| Error::Problem("the temporary directory's path is not UTF-8".into()))?;
    let src = tmp_dir.join(format!("{}-src-{}", model.project, short(commit)));
    step("build: export", || export(repo, commit, &src))?;
    let source = step("build: nix-store --add", || {
        let out = Process::new("nix-store").arg("--add").arg(&src).output()?;
        Ok(Utf8PathBuf::from(String::from_utf8_lossy(&out).trim()))
    })?;
    let link = build
        .releases_dir
        .join(release_name(&model.project, commit));
    step("build: nix-build", || {
        let out = Process::new("nix-build")
            .arg(source.join(file))
            .arg("--out-link")
            .arg(&link)
            .output_showing_progress()?;
        let text = String::from_utf8_lossy(&out);
        text.lines()
            .last()
            .map(|l| Utf8PathBuf::from(l.trim()))
            .ok_or_else(|| {
                Error::Problem(format!(
                    "nix-build of {} printed no path",
                    source.join(file)
                ))
            })
    })
}

/// The command way: the export in `<releases_dir>/.<name>.tmp`, the command
/// run there, everything made read-only, then renamed to
/// `<releases_dir>/<name>`. A release that exists is that commit's, built
/// before: it is not built again.
fn command_build(
    model: &Model,
    build: &Build,
    repo: &Utf8Path,
    commit: &str,
    command: &[String],
) -> Result<Utf8PathBuf, Error> {
    let name = release_name(&model.project, commit);
    let release = build.releases_dir.join(&name);
    if release.is_dir() {
        eprintln!(
            "djshim: {release} is commit {} already built",
            short(commit)
        );
        return Ok(release);
    }
    let tmp = build.releases_dir.join(format!(".{name}.tmp"));
    remove_tree(&tmp)?;
    let made = (|| {
        step("build: export", || export(repo, commit, &tmp))?;
        step(&format!("build: {}", command.join(" ")), || {
            Process::new(&command[0])
                .args(&command[1..])
                .cwd(tmp.clone())
                .env("DJSHIM_COMMIT", commit)
                .run()
        })?;
        read_only(&tmp)?;
        fs::rename(&tmp, &release).map_err(|e| Error::io("rename into place", &release, e))?;
        crate::write::sync_dir(&build.releases_dir)
    })();
    if made.is_err() {
        let _ = remove_tree(&tmp);
    }
    made.map(|()| release)
}

/// Removes the write bits of every file and directory below `dir`.
fn read_only(dir: &Utf8Path) -> Result<(), Error> {
    for entry in dir
        .read_dir_utf8()
        .map_err(|e| Error::io("read directory", dir, e))?
    {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(|e| Error::io("stat", entry.path(), e))?;
        if meta.is_dir() {
            read_only(entry.path())?;
        }
        if !meta.file_type().is_symlink() {
            let mode = meta.permissions().mode() & !0o222;
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("make read-only", entry.path(), e))?;
        }
    }
    let mode = dir
        .metadata()
        .map_err(|e| Error::io("stat", dir, e))?
        .permissions()
        .mode()
        & !0o222;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("make read-only", dir, e))
}

/// Removes a tree that may be read-only; nothing when it is missing.
fn remove_tree(dir: &Utf8Path) -> Result<(), Error> {
    fn writable(dir: &Utf8Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = dir.read_dir_utf8() {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    writable(entry.path());
                }
            }
        }
    }
    if dir.symlink_metadata().is_err() {
        return Ok(());
    }
    writable(dir);
    fs::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e))
}

fn lock(dir: &Utf8Path) -> Result<fs::File, Error> {
    let handle = fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    handle.lock().map_err(|e| Error::io("lock", dir, e))?;
    Ok(handle)
}

/// The short commit id of every package built here, by the package's real
/// path: the releases (a command build's directory, a Nix build's
/// out-link) are read once, for `history` and `list`.
pub fn commits(model: &Model) -> std::collections::BTreeMap<Utf8PathBuf, String> {
    let Some(build) = model.build.as_ref() else {
        return std::collections::BTreeMap::new();
    };
    let prefix = format!("{}-", model.project);
    let Ok(entries) = build.releases_dir.read_dir_utf8() else {
        return std::collections::BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let short = e.file_name().strip_prefix(&prefix)?.to_owned();
            let plain = short.len() == 12 && short.bytes().all(|b| b.is_ascii_hexdigit());
            plain.then_some(())?;
            Some((e.path().canonicalize_utf8().ok()?, short))
        })
        .collect()
}

/// The short commit id of `package` among `commits`, if it was built here.
pub fn commit_of(
    commits: &std::collections::BTreeMap<Utf8PathBuf, String>,
    package: &Utf8Path,
) -> Option<String> {
    commits.get(&package.canonicalize_utf8().ok()?).cloned()
}
