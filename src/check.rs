//! `djshim check`: what the config cannot know, asked of this machine.
//!
//! The model is already valid here; these checks look at the files and the
//! interpreter each instance will use, and report every problem found.

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use camino::Utf8Path;

use crate::error::Error;
use crate::model::{Instance, join};
use crate::process::Process;

/// One problem of one instance on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub instance: String,
    pub key: &'static str,
    pub message: String,
    /// Worth saying, but the instance can run: does not fail `check`.
    pub warning: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let warning = if self.warning { "warning: " } else { "" };
        write!(
            f,
            "{}: `{}`: {warning}{}",
            self.instance, self.key, self.message
        )
    }
}

/// What Django itself says of `instance` (its system checks, as the
/// instance's account), as problems of its `settings`.
pub fn deep(model: &crate::model::Model, instance: &Instance) -> Result<Vec<Problem>, Error> {
    Ok(crate::django::deep_problems(model, instance)?
        .into_iter()
        .map(|message| Problem {
            instance: instance.name.clone(),
            key: "settings",
            message,
            warning: false,
        })
        .collect())
}

/// The problems found of one instance.
struct Found<'i> {
    instance: &'i Instance,
    problems: Vec<Problem>,
}

impl<'i> Found<'i> {
    fn new(instance: &'i Instance) -> Found<'i> {
        Found {
            instance,
            problems: Vec::new(),
        }
    }

    fn say(&mut self, key: &'static str, message: String, warning: bool) {
        self.problems.push(Problem {
            instance: self.instance.name.clone(),
            key,
            message,
            warning,
        });
    }
}

/// Asks Python whether it can find the settings module the way manage.py
/// will: the script's directory first on `sys.path`, then `PYTHONPATH`.
const FIND_SETTINGS: &str = "\
import importlib.util, sys
sys.path[0] = sys.argv[1]
try:
    found = importlib.util.find_spec(sys.argv[2]) is not None
except ModuleNotFoundError:
    found = False
except Exception as e:
    print(f'{type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(3)
sys.exit(0 if found else 4)
";

/// Every problem of `instance` on this machine; empty when it is ready.
pub fn instance(instance: &Instance) -> Vec<Problem> {
    problems(instance, true)
}

/// [`instance`] but for the import of the settings' parents: for `deploy`,
/// whose deep check asks Django itself in the same process that records
/// the migrations (one Python start for both).
pub fn machine(instance: &Instance) -> Vec<Problem> {
    problems(instance, false)
}

fn problems(instance: &Instance, import: bool) -> Vec<Problem> {
    let mut found = Found::new(instance);
    let package_ok = if instance.package.is_dir() {
        true
    } else if instance.profile {
        // Where a fresh server starts: nothing to check in a package yet,
        // and nothing wrong.
        found.say(
            "package",
            format!(
                "not deployed yet: the profile {} points at no package; deploy one with \
                 `djshim deploy {}` (or pin one with `djshim pin {} PATH`)",
                instance.package, instance.name, instance.name
            ),
            true,
        );
        false
    } else {
        found.say(
            "package",
            format!("{}: no such directory", instance.package),
            false,
        );
        false
    };
    let manage_ok = package_ok && instance.manage.is_file();
    if package_ok && !manage_ok {
        found.say(
            "manage",
            format!("{}: no such file", instance.manage),
            false,
        );
    }
    let python_ok = is_executable(&instance.python);
    let in_package = instance.python.starts_with(&instance.package);
    if !python_ok && (package_ok || !in_package) {
        found.say(
            "python",
            format!("{}: missing or not executable", instance.python),
            false,
        );
    }
    for (key, dirs) in [
        ("pythonpath", &instance.pythonpath),
        ("path", &instance.path),
    ] {
        for dir in dirs {
            if package_ok && !dir.is_dir() {
                found.say(key, format!("{dir}: no such directory"), false);
            }
        }
    }
    if let Some(dir) = instance.state_dir.as_ref().filter(|d| !d.is_dir()) {
        if package_ok || !instance.profile {
            found.say("state_dir", format!("{dir}: no such directory"), false);
        } else {
            let message = format!("{dir} does not exist yet: the first deploy (or pin) makes it");
            found.say("state_dir", message, true);
        }
    }
    if import && manage_ok && python_ok {
        find_settings(instance).unwrap_or_else(|message| found.say("settings", message, false));
    }
    found.problems.extend(accounts(instance));
    found.problems.extend(sandbox(instance));
    found.problems
}

/// What the instance's units cannot reach in their sandbox: each unit has
/// `PrivateTmp=yes`, an empty `/tmp` and `/var/tmp` of its own, so an
/// interpreter, package or directory there (after symlinks) is not there
/// for it: systemd fails the start (status 203/EXEC, 200/CHDIR) while the
/// shim runs. (`ProtectHome=read-only` only stops writes, and the units'
/// `ReadWritePaths=` open the instance's directories again: nothing under
/// /home or /root is lost.) Warnings: the shim itself runs.
pub fn sandbox(instance: &Instance) -> Vec<Problem> {
    let private = |settings: &std::collections::BTreeMap<String, String>| {
        !settings
            .get("PrivateTmp")
            .is_some_and(|v| ["no", "false", "0", "off"].contains(&v.as_str()))
    };
    let any_private = instance.server.iter().any(|s| private(&s.service))
        || instance.services.values().any(|s| private(&s.service))
        || instance.jobs.values().any(|j| private(&j.service));
    if !any_private {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let package = instance.package.canonicalize_utf8().ok();
    let paths = [
        ("python", Some(&instance.python)),
        ("package", package.as_ref()),
        ("state_dir", instance.state_dir.as_ref()),
        ("static_root", instance.static_root.as_ref()),
        ("media_root", instance.media_root.as_ref()),
    ];
    for (key, path) in paths {
        let Some(path) = path else { continue };
        // The path itself, then where its symlinks lead.
        let real = path.canonicalize_utf8().unwrap_or_else(|_| path.clone());
        let hidden = [path, &real].into_iter().find_map(|p| {
            ["/tmp", "/var/tmp"]
                .into_iter()
                .find(|tmp| p.starts_with(tmp))
                .map(|tmp| (p, tmp))
        });
        if let Some((hidden, tmp)) = hidden {
            problems.push(Problem {
                instance: instance.name.clone(),
                key,
                message: format!(
                    "{hidden} is under {tmp}, which the instance's units do not see \
                     (`PrivateTmp=yes`): systemd cannot start them; move it out of {tmp}"
                ),
                warning: true,
            });
        }
    }
    problems
}

/// The account and its group exist; env files exist, are safe, and are not
/// world-readable; the instance's writable directories are writable by the
/// account.
fn accounts(instance: &Instance) -> Vec<Problem> {
    let mut found = Found::new(instance);
    // The account whose files these are: the instance's, else whoever runs `check`.
    let account = if let Some(user) = &instance.user {
        let entry = crate::accounts::account(user);
        if entry.is_none() {
            found.say(
                "user",
                format!(
                    "the account `{user}` does not exist; create it, e.g. `useradd --system {user}`"
                ),
                false,
            );
        }
        entry.map(|account| (Some(account.uid), user.clone()))
    } else {
        Some((crate::procs::own_uid(), String::new()))
    };
    if let Some(group) = instance
        .group
        .as_ref()
        .filter(|g| crate::accounts::group(g).is_none())
    {
        found.say(
            "group",
            format!(
                "the group `{group}` does not exist; create it, e.g. `groupadd --system {group}`"
            ),
            false,
        );
    }
    let uid = account.as_ref().and_then(|(uid, _)| *uid);
    for file in &instance.env_files {
        for (message, warning) in env_file(file, uid, instance.user.as_deref()) {
            found.say("env_file", message, warning);
        }
    }
    if let Some((Some(uid), user)) = account.filter(|(_, user)| !user.is_empty()) {
        let groups = crate::accounts::groups_of(&user);
        // Static files a build collected into the package are read-only.
        let static_root = instance
            .static_root
            .as_ref()
            .filter(|_| instance.static_in_package.is_none());
        for (key, dir) in [
            ("state_dir", instance.state_dir.as_ref()),
            ("static_root", static_root),
            ("media_root", instance.media_root.as_ref()),
        ] {
            let Some(dir) = dir else { continue };
            let meta = std::fs::metadata(dir);
            if meta.is_ok_and(|m| !writable(&m, uid, &groups)) {
                found.say(key, format!("{dir} is not writable by `{user}`"), false);
            }
        }
    }
    found.problems
}

/// What the shim will find wrong with one env file, checked by the
/// helper's own rule ([`crate::envrule`]) as root running it for the
/// instance would: on the file it opens, and for a root-owned file read
/// for an account, on each directory of the way there. Only a file the
/// rule lets through is read, for what systemd and the shim make of its
/// lines.
fn env_file(file: &Utf8Path, uid: Option<u32>, user: Option<&str>) -> Vec<(String, bool)> {
    let owner = uid.unwrap_or(0);
    let rule = crate::envrule::Rule {
        owner,
        guard_dirs: user.is_some() && owner != 0,
    };
    let opened = crate::envrule::open(file.as_std_path(), rule);
    let account = user.map_or_else(|| "the instance account".to_owned(), |u| format!("`{u}`"));
    let mut found: Vec<(String, bool)> = opened
        .refusals
        .iter()
        .map(|r| {
            let text = match r {
                crate::envrule::Refusal::Missing => format!("{file}: no such file"),
                crate::envrule::Refusal::UnsafeDir(dir) => format!(
                    "{file} belongs to root but lies under {}, which others than root can \
                     change: the shim will not read it for {account}; move it under \
                     directories only root can write, or give it to {account}",
                    dir.display()
                ),
                _ => format!("{file} {}", r.describe(&account)),
            };
            (text, false)
        })
        .collect();
    let mode = opened.mode;
    if opened.file.is_some() && mode & 0o004 != 0 {
        found.push((
            format!(
                "{file} is world-readable (mode {mode:o}); secrets belong in a 0600 or 0640 file"
            ),
            true,
        ));
    }
    // Nothing of a refused file is read.
    let (Some(mut handle), true) = (opened.file, opened.refusals.is_empty()) else {
        return found;
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut handle, &mut bytes) {
        found.push((format!("{file}: cannot read it: {e}"), false));
        return found;
    }
    let reading = crate::envfile::read(&bytes);
    for (line, what) in reading.problems() {
        found.push((format!("{file}:{line}: {what}"), false));
    }
    for (line, what) in reading.skipped {
        found.push((
            format!("{file}:{line}: skipped by systemd and the shim alike: {what}"),
            true,
        ));
    }
    found
}

/// Whether an account with `uid` and `groups` may create files in a directory.
fn writable(meta: &std::fs::Metadata, uid: u32, groups: &[u32]) -> bool {
    let mode = meta.mode();
    uid == 0
        || (meta.uid() == uid && mode & 0o300 == 0o300)
        || (meta.uid() != uid && groups.contains(&meta.gid()) && mode & 0o030 == 0o030)
        || (meta.uid() != uid && !groups.contains(&meta.gid()) && mode & 0o003 == 0o003)
}

/// How long importing the settings' parents may take: a module that hangs
/// on import must not hang `check`, `pin` or `deploy`.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The command that runs the instance's interpreter the way the shim
/// would: as the instance's account when `check` runs as root. The
/// package's code (its settings import its package) never runs as root on
/// behalf of an instance with an account.
pub fn as_account(instance: &Instance) -> Result<Process, String> {
    let Some(user) = instance
        .user
        .as_deref()
        .filter(|_| crate::procs::own_uid() == Some(0))
    else {
        return Ok(Process::new(&instance.python));
    };
    let Some(account) = crate::accounts::account(user) else {
        return Err(format!(
            "not imported: the account `{user}` does not exist, and the package's code never runs as root"
        ));
    };
    let gid = match &instance.group {
        Some(group) => crate::accounts::group(group)
            .ok_or_else(|| format!("not imported: the group `{group}` does not exist"))?,
        None => account.gid,
    };
    if crate::process::tool("setpriv").is_none() {
        return Err(
            "not imported: setpriv (util-linux) is missing, and the package's code never runs as \
             root"
                .to_owned(),
        );
    }
    Ok(crate::accounts::as_account(&account, gid, &instance.python)
        .env("HOME", &account.home)
        .env("USER", user)
        .env("LOGNAME", user))
}

fn find_settings(instance: &Instance) -> Result<(), String> {
    let script_dir = instance.manage.parent().unwrap_or(Utf8Path::new("/"));
    let mut cmd = as_account(instance)?
        .args(["-c", FIND_SETTINGS, script_dir.as_str(), &instance.settings])
        .env_remove("PYTHONHOME")
        .env("PYTHONNOUSERSITE", "1")
        .timeout(IMPORT_TIMEOUT);
    for (key, value) in instance.variables() {
        cmd = cmd.env(key, value.to_string());
    }
    cmd = if instance.pythonpath.is_empty() {
        cmd.env_remove("PYTHONPATH")
    } else {
        cmd.env("PYTHONPATH", join(&instance.pythonpath))
    };
    if let Some(dir) = instance.state_dir.as_ref().filter(|d| d.is_dir()) {
        cmd = cmd.cwd(dir.clone());
    }
    let (code, _, stderr) = cmd.outcome().map_err(|e| {
        format!(
            "importing the parents of `{}` did not end: {e}",
            instance.settings
        )
    })?;
    let output_stderr = stderr;
    match code {
        Some(0) => Ok(()),
        Some(4) => Err(format!(
            "module `{}` not found by {}",
            instance.settings, instance.python
        )),
        _ => {
            let stderr = String::from_utf8_lossy(&output_stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "importing the parents of `{}` failed: {}",
                instance.settings,
                crate::error::clean(last.trim())
            ))
        }
    }
}

fn is_executable(path: &Utf8Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The units djshim installed for this project (its manifest is in
/// `units_dir`) that differ from what `djshim systemd` writes now, each
/// as a problem of the instance whose unit it is: systemd would run
/// another environment, another `window`, than the shims and the deploy
/// expect. Nothing when the units were never installed there.
pub fn installed_units(model: &crate::model::Model) -> Result<Vec<Problem>, crate::error::Error> {
    let dir = &model.units_dir;
    if !dir
        .join(crate::write::manifest_name(&model.project))
        .is_file()
    {
        return Ok(Vec::new());
    }
    let artifacts = crate::units::units(&crate::render::Renderer::new(), model)?;
    let options = crate::write::Options {
        dry_run: true,
        force: false,
    };
    let changes = crate::write::sync(
        dir,
        &model.project,
        &artifacts,
        &crate::units::wanted(&artifacts),
        options,
        &mut std::io::sink(),
    )?;
    let mut found = Vec::new();
    for (name, change) in changes {
        let how = match change {
            crate::write::Change::Unchanged => continue,
            crate::write::Change::Create => "is missing",
            crate::write::Change::Update => "differs from what the config makes now",
            crate::write::Change::Remove => "is no longer in the config",
        };
        // The instance whose unit it is: the longest command its name
        // starts with (`mywebsite-prod.service`, `mywebsite-prod-x.timer`).
        let owner = model
            .instances
            .values()
            .filter(|i| {
                name.strip_prefix(i.full_name.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '-']))
            })
            .max_by_key(|i| i.full_name.len());
        found.push(Problem {
            instance: owner.map_or_else(|| model.project.clone(), |i| i.name.clone()),
            key: "units_dir",
            message: format!(
                "the installed unit {} {how}: run `djshim systemd`, then `systemctl \
                 daemon-reload`",
                dir.join(&name)
            ),
            warning: false,
        });
    }
    Ok(found)
}

/// Whether only root can change what `path` is: walked from `/` one
/// component at a time, every directory on the way (and `path` itself, if
/// it exists) root's and writable by no one else — or, for a directory on
/// the way, sticky (`/tmp`) with the next component already root's, which
/// no one else can then rename or remove. A link is followed where it lies
/// (in a directory already found root-only), at most 40 of them. What does
/// not exist yet is made later by root in the last directory found, which
/// must be root-only itself. Else the component and what is wrong with it.
pub fn root_only_way(path: &std::path::Path) -> Result<(), (std::path::PathBuf, String)> {
    use std::collections::VecDeque;
    use std::path::{Component, PathBuf};
    let mut todo: VecDeque<PathBuf> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    // The directory `at`, already found root's: whether only root writes
    // it (else it is sticky, and only its root-owned entries are safe).
    let mut sealed = root_only(&at).map_err(|w| (at.clone(), w))?;
    while let Some(next) = todo.pop_front() {
        if next.as_os_str() == ".." {
            at.pop();
            sealed = root_only(&at).map_err(|w| (at.clone(), w))?;
            continue;
        }
        let candidate = at.join(&next);
        let meta = match std::fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if sealed {
                    return Ok(());
                }
                return Err((
                    at,
                    "is writable by others than root, who could make what is not there yet".into(),
                ));
            }
            Err(e) => return Err((candidate, format!("cannot be inspected: {e}"))),
            Ok(meta) => meta,
        };
        if !sealed && meta.uid() != 0 {
            return Err((
                candidate,
                format!(
                    "belongs to uid {} in a directory others can write",
                    meta.uid()
                ),
            ));
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return Err((candidate, "has too many links on the way".into()));
            }
            let target = std::fs::read_link(&candidate)
                .map_err(|e| (candidate.clone(), format!("cannot be read: {e}")))?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            for c in target.components().rev() {
                if matches!(c, Component::Normal(_) | Component::ParentDir) {
                    todo.push_front(PathBuf::from(c.as_os_str()));
                }
            }
            sealed = root_only(&at).map_err(|w| (at.clone(), w))?;
            continue;
        }
        at = candidate;
        sealed = root_only(&at).map_err(|w| (at.clone(), w))?;
    }
    if sealed {
        Ok(())
    } else {
        Err((at, "is writable by others than root".into()))
    }
}

/// Ok(true) for a directory of root's that only root writes, Ok(false) for
/// one of root's that is sticky (others may add entries), else why not.
fn root_only(dir: &std::path::Path) -> Result<bool, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot be inspected: {e}"))?;
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != 0 {
        return Err(format!("belongs to uid {}, not root", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 == 0 {
        Ok(true)
    } else if mode & 0o1000 != 0 {
        Ok(false)
    } else {
        Err(format!("is writable by others than root (mode {mode:o})"))
    }
}
