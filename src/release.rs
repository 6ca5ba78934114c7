//! `djshim build`: a package made from exactly one commit, never from a
//! working tree. The ref is resolved by git to a full commit id, the
//! commit's tracked files are exported byte for byte (`git ls-tree` and
//! `git cat-file`, never `git archive`, whose attributes change files), and then either
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
use crate::progress::timed;

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
        Error::usage_help(
            "the config has no `[build]` table",
            "add one with `repo` and `nix = \"default.nix\"` or `command = [\"sh\", \
             \"build.sh\"]`; see djshim.toml(5)",
        )
    })?;
    let reference = reference.or(build.reference.as_deref()).unwrap_or("HEAD");
    let repo = timed("build: fetch", || repository(model, build))?;
    let commit = timed(&format!("build: resolve `{reference}`"), || {
        resolve(&repo, reference)
    })?;
    eprintln!("djshim: building commit {commit}");
    fs::create_dir_all(&build.releases_dir)
        .map_err(|e| Error::io("create directory", &build.releases_dir, e))?;
    let _lock = crate::lock::directory(&build.releases_dir)?;
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
            let mirror = crate::layout::mirror(&build.releases_dir, &model.project);
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
            Error::with_help(
                format!("`{reference}` names no commit in {repo}"),
                "give a branch, a tag or a \
                 commit id of that repository",
            )
        })?;
    let commit = String::from_utf8_lossy(&out).trim().to_owned();
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit)
    } else {
        Err(Error::problem(format!(
            "git gave `{commit}` for `{reference}`, not a commit id"
        )))
    }
}

/// Writes the tracked files of `commit` into `dir` (which must not
/// exist), byte for byte: the tree as `git ls-tree` lists it, each blob as
/// `git cat-file` gives it. Not `git archive`, which applies attributes
/// (`export-ignore`, `export-subst`, also from the uncommitted
/// `.git/info/attributes`), nor a checkout, which applies filters and
/// line-ending conversions. Submodules are not part of a commit's tree:
/// their directories stay empty, and a warning says so.
fn export(repo: &Utf8Path, commit: &str, dir: &Utf8Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt as _;
    fs::create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let entries = tree(repo, commit, dir)?;
    refuse_overlaps(&entries, dir, commit)?;
    let blobs: Vec<&str> = entries
        .iter()
        .filter(|(_, kind, _, _)| kind == b"blob")
        .map(|(_, _, object, _)| object.as_str())
        .collect();
    let contents = if blobs.is_empty() {
        Vec::new()
    } else {
        let mut request = blobs.join("\n").into_bytes();
        request.push(b'\n');
        git(repo)
            .args(["cat-file", "--batch"])
            .input(request)
            .output()?
    };
    let mut rest = contents.as_slice();
    let mut submodules = false;
    let io = |path: &std::path::Path, e: std::io::Error| {
        Error::io("write", Utf8Path::new(&path.to_string_lossy()), e)
    };
    for (mode, kind, object, path) in &entries {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        if kind == b"commit" {
            submodules = true;
            fs::create_dir_all(path).map_err(|e| io(path, e))?;
            continue;
        }
        let (header, after) = split_line(rest);
        let header = String::from_utf8_lossy(header);
        let size: usize = match header.split(' ').collect::<Vec<_>>()[..] {
            [id, "blob", size] if id == object => size.parse().unwrap_or(usize::MAX),
            _ => {
                return Err(Error::with_help(
                    format!(
                        "{repo} lacks object {object} ({}) of commit {commit}: `{header}`",
                        path.strip_prefix(dir).unwrap_or(path).display()
                    ),
                    format!(
                        "a \
                     partial or shallow clone has not every object; `git -C {repo} fetch \
                     --refetch` (or `--unshallow`) fetches them"
                    ),
                ));
            }
        };
        if after.len() < size + 1 {
            return Err(Error::problem(format!(
                "git cat-file ended inside object {object}"
            )));
        }
        let (content, next) = after.split_at(size);
        rest = &next[1..];
        if mode == b"120000" {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(content), path)
                .map_err(|e| io(path, e))?;
        } else {
            // A new file, never through a link (the check above leaves
            // none in the way; this holds even so).
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
                .open(path)
                .and_then(|mut f| f.write_all(content))
                .map_err(|e| io(path, e))?;
            let mode = if mode == b"100755" { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))?;
        }
    }
    if submodules {
        eprintln!(
            "djshim: warning: commit {} has submodules; they are not exported (their \
             directories are empty): vendor them, or fetch them in the build",
            short(commit)
        );
    }
    Ok(())
}

/// One entry of a commit's tree: mode, kind, object id, and the path it
/// is written to under the export's directory.
type Entry = (Vec<u8>, Vec<u8>, String, std::path::PathBuf);

/// The entries of `commit`'s tree (`git ls-tree -r`), each path under `dir`;
/// a path that is absolute or holds `..` is refused.
fn tree(repo: &Utf8Path, commit: &str, dir: &Utf8Path) -> Result<Vec<Entry>, Error> {
    use std::os::unix::ffi::OsStrExt as _;
    let listing = git(repo)
        .args(["ls-tree", "-r", "-z", "--full-tree", commit])
        .output()?;
    let mut entries = Vec::new();
    for record in listing.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let bad = || {
            Error::problem(format!(
                "git ls-tree printed `{}`",
                String::from_utf8_lossy(record)
            ))
        };
        let tab = record.iter().position(|&b| b == b'\t').ok_or_else(bad)?;
        let mut fields = record[..tab].split(|&b| b == b' ');
        let (Some(mode), Some(kind), Some(object)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&record[tab + 1..]));
        if path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad());
        }
        entries.push((
            mode.to_vec(),
            kind.to_vec(),
            String::from_utf8_lossy(object).into_owned(),
            dir.as_std_path().join(path),
        ));
    }
    Ok(entries)
}

/// Refuses a tree that names a path twice, or a file, link or submodule
/// and then something inside it (`a -> /etc` and then `a/x`: `git mktree`
/// makes such trees, and fetch accepts them). Written as listed, the
/// second entry would go through the link the first made, and root would
/// write outside the release.
fn refuse_overlaps(entries: &[Entry], dir: &Utf8Path, commit: &str) -> Result<(), Error> {
    let mut leaves = std::collections::BTreeSet::new();
    for (.., path) in entries {
        if !leaves.insert(path.as_path()) {
            return Err(overlap(dir, commit, path, "twice"));
        }
    }
    for (.., path) in entries {
        for ancestor in path.ancestors().skip(1) {
            if leaves.contains(ancestor) {
                return Err(overlap(
                    dir,
                    commit,
                    ancestor,
                    &format!(
                        "as a file, link or submodule, and {} inside it",
                        path.strip_prefix(dir).unwrap_or(path).display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn overlap(dir: &Utf8Path, commit: &str, path: &std::path::Path, how: &str) -> Error {
    Error::with_help(
        format!(
            "commit {commit}'s tree names `{}` {how}: no checkout can hold it, and writing it would \
         follow what the commit put there; nothing was exported",
            crate::error::clean(&path.strip_prefix(dir).unwrap_or(path).to_string_lossy())
        ),
        "such a tree is made \
         by hand (`git mktree`); build another commit",
    )
}

/// The first line of `bytes` (without its newline) and the rest.
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
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
        .ok_or_else(|| Error::problem("the temporary directory's path is not UTF-8"))?;
    let src = tmp_dir.join(format!("{}-src-{}", model.project, short(commit)));
    timed("build: export", || export(repo, commit, &src))?;
    let source = timed("build: nix-store --add", || {
        let out = Process::new("nix-store").arg("--add").arg(&src).output()?;
        Ok(Utf8PathBuf::from(String::from_utf8_lossy(&out).trim()))
    })?;
    let link = build
        .releases_dir
        .join(release_name(&model.project, commit));
    let account = crate::build_account::BuildAccount::for_nix(build)?;
    let epoch = commit_time(repo, commit)?;
    timed("build: nix-build", || {
        // Restricted evaluation: the commit's Nix code reads the exported
        // source and nothing else of the machine.
        // The build account cannot write the releases directory: it builds
        // without an out-link, and djshim (root) adds the link after.
        let mut build = account
            .nix_build(&source, commit, &epoch)
            .arg(source.join(file))
            .args(["--option", "restrict-eval", "true", "-I"])
            .arg(format!("src={source}"));
        build = if account.is_other() {
            build.arg("--no-out-link")
        } else {
            build.arg("--out-link").arg(&link)
        };
        let out = build.output_showing_progress()?;
        let text = String::from_utf8_lossy(&out);
        let package = text
            .lines()
            .last()
            .map(|l| Utf8PathBuf::from(l.trim()))
            .ok_or_else(|| {
                Error::problem(format!(
                    "nix-build of {} printed no path",
                    source.join(file)
                ))
            })?;
        if account.is_other() {
            Process::new("nix-store")
                .args([
                    "--realise",
                    package.as_str(),
                    "--add-root",
                    link.as_str(),
                    "--indirect",
                ])
                .output()?;
        }
        Ok(package)
    })
}

/// The command way: the export in its final place,
/// `<releases_dir>/<project>-<short id>` (so that what the build makes —
/// a venv's scripts — may name its own path), the command run there as
/// the build account with a clean environment, then the release frozen
/// (root's, read-only, no setuid or setgid bit) and stamped complete. A
/// release with its stamp is that commit's, built before: it is not built
/// again; one without (a build that was killed) is removed and built anew.
fn command_build(
    model: &Model,
    build: &Build,
    repo: &Utf8Path,
    commit: &str,
    command: &[String],
) -> Result<Utf8PathBuf, Error> {
    let name = release_name(&model.project, commit);
    let release = build.releases_dir.join(&name);
    let stamp = build.releases_dir.join(format!(".{name}.built"));
    // A release from before stamps is complete when it is read-only.
    let frozen = || {
        release
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o222 == 0)
    };
    if release.is_dir() && (stamp.exists() || frozen()) {
        eprintln!(
            "djshim: {release} is commit {} already built",
            short(commit)
        );
        return Ok(release);
    }
    let account = crate::build_account::BuildAccount::for_build(build)?;
    remove_tree(&release)?;
    let made = (|| {
        timed("build: export", || export(repo, commit, &release))?;
        let epoch = commit_time(repo, commit)?;
        account.hand(&release)?;
        let ran = timed(&format!("build: {}", command.join(" ")), || {
            account
                .command(&command[0], &release, commit, &epoch)
                .args(&command[1..])
                .run()
        });
        // Whatever the build left running goes before the release is
        // frozen, so nothing of the account can change it afterwards.
        account.stop_leftovers();
        ran?;
        timed("build: freeze", || crate::build_account::freeze(&release))?;
        fs::write(&stamp, format!("{commit}\n")).map_err(|e| Error::io("write", &stamp, e))?;
        crate::write::sync_dir(&build.releases_dir)
    })();
    if made.is_err() {
        let _ = remove_tree(&release);
        let _ = fs::remove_file(&stamp);
    }
    made.map(|()| release)
}

/// The commit's time, as `SOURCE_DATE_EPOCH` (reproducible builds).
fn commit_time(repo: &Utf8Path, commit: &str) -> Result<String, Error> {
    let out = git(repo)
        .args(["show", "-s", "--format=%ct", commit])
        .output()?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
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
