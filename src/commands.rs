//! One function per subcommand: load, run the pipeline, report.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;

use camino::{Utf8Path, Utf8PathBuf};

use crate::cli::{
    CheckArgs, Cli, Command, CronArgs, GenerateArgs, InitArgs, NixosArgs, ShowArgs, SystemdArgs,
    WriteArgs,
};
use crate::config::{self, Source};
use crate::error::Error;
use crate::model::{Model, is_name};
use crate::render::{self, Artifact, Renderer};
use crate::write::{self, Change};
use crate::{check, release_commands, units};

const DEFAULT_CONFIG: &str = "djshim.toml";
const STARTER: &str = include_str!("starter.toml");

/// Runs the command `cli` names.
pub fn run(cli: &Cli) -> Result<ExitCode, Error> {
    let config = cli
        .config
        .as_deref()
        .unwrap_or(Utf8Path::new(DEFAULT_CONFIG));
    let stdout = io::stdout();
    let out = &mut stdout.lock();
    match &cli.command {
        Command::Init(args) => init(config, args, out),
        Command::Check(args) => check(&load(config)?, args, out),
        Command::Generate(args) => generate(&load(config)?, args, out),
        Command::List => list(&load(config)?, out),
        Command::Show(args) => show(&load(config)?, args, out),
        Command::Pin(args) => release_commands::pin(&load(config)?, args, out),
        Command::Rollback(args) => release_commands::rollback(&load(config)?, args, out),
        Command::History(args) => release_commands::history(&load(config)?, args, out),
        Command::Status(args) => release_commands::status(&load(config)?, args, out),
        Command::Systemd(args) => systemd(&load(config)?, args, out),
        Command::Cron(args) => cron(&load(config)?, args, out),
        Command::Nixos(args) => nixos(&load(config)?, args, out),
        Command::Deploy(args) => release_commands::deploy(&load(config)?, args, out),
        Command::Build(args) => {
            crate::release::build(&load(config)?, args.reference.as_deref(), out)
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Window(args) => release_commands::window(&load(config)?, args, out),
        Command::Pack(args) => {
            let hash = crate::archive::pack(&args.package, &args.out)?;
            say(out, format_args!("{hash}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Unpack(args) => {
            let into = match &args.into {
                Some(dir) => dir.clone(),
                None => load(config)?.build.map(|b| b.releases_dir).ok_or_else(|| {
                    Error::usage_help(
                        "no `[build]` in the config names where releases go",
                        "give `--into DIR`",
                    )
                })?,
            };
            let release = crate::archive::unpack(&args.archive, &args.hash, &into)?;
            say(out, format_args!("{release}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads, parses and validates the config.
pub fn load(path: &Utf8Path) -> Result<Model, Error> {
    let source = Source::read(path)?;
    let raw = config::parse(&source)?;
    let model = Model::build(&source, &raw)?;
    for warning in &model.warnings {
        eprintln!("djshim: warning: {warning}");
    }
    Ok(model)
}

/// The starter config for `project`.
pub fn starter(project: &str) -> String {
    STARTER.replace("@PROJECT@", project)
}

/// The name of the Django project next to `dir`: the top package of the
/// settings module that a `manage.py` in `dir`, its parent, or a directory
/// right below either names (`mywebsite.settings` → `mywebsite`).
fn django_project(dir: &std::path::Path) -> Option<String> {
    let mut places = Vec::new();
    for base in [Some(dir), dir.parent()].into_iter().flatten() {
        places.push(base.to_owned());
        let mut below: Vec<_> = std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        below.sort();
        places.extend(below);
    }
    places.iter().find_map(|place| {
        let text = std::fs::read_to_string(place.join("manage.py")).ok()?;
        let rest = &text[text.find("DJANGO_SETTINGS_MODULE")? + "DJANGO_SETTINGS_MODULE".len()..];
        let module = rest
            .split(['"', '\''])
            .nth(2)
            .filter(|m| crate::model::is_module(m))?;
        let name = module.split('.').next()?;
        is_name(name).then(|| name.to_owned())
    })
}

fn init(path: &Utf8Path, args: &InitArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let mut placeholder = false;
    let project = match &args.project {
        Some(name) if is_name(name) => name.clone(),
        Some(name) => {
            return Err(Error::usage(format!(
                "`{}` is not a valid project name: use lowercase letters, digits, `_` and `-`, \
                 starting with a letter or digit",
                crate::error::clean(name)
            )));
        }
        None => std::env::current_dir()
            .ok()
            .and_then(|d| django_project(&d))
            .unwrap_or_else(|| {
                placeholder = true;
                "mywebsite".to_owned()
            }),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_str().is_empty() => p,
        _ => Utf8Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".djshim-init-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("write", path, e))?;
    tmp.write_all(starter(&project).as_bytes())
        .map_err(|e| Error::io("write", path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("write", path, e))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(Error::io("write", path, e.error)),
    }
    if placeholder {
        return say(
            out,
            format_args!(
                "wrote {path} for project `{project}`, a placeholder: no manage.py was found here, \
                 beside or below; set `project` in it (or start again with `djshim init --project \
                 NAME`), then run `djshim check`"
            ),
        )
        .map(|()| ExitCode::SUCCESS);
    }
    say(
        out,
        format_args!("wrote {path} for project `{project}`; edit it, then run `djshim check`"),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn check(model: &Model, args: &CheckArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let mut problems = 0;
    let units = check::installed_units(model)?;
    let selected = model.select(&args.instances)?;
    // A unit of no instance (one the config dropped) is said once.
    for problem in units
        .iter()
        .filter(|p| !model.instances.contains_key(&p.instance))
    {
        say(out, format_args!("{problem}"))?;
        problems += 1;
    }
    for instance in selected {
        let mut found = check::instance(instance);
        found.extend(
            units
                .iter()
                .filter(|p| p.instance == instance.name)
                .cloned(),
        );
        // Django is asked only about a package that is there (a profile
        // instance not deployed yet has none).
        if found.iter().all(|p| p.warning) && instance.package.is_dir() {
            found.extend(check::deep(model, instance)?);
        }
        for problem in &found {
            say(out, format_args!("{problem}"))?;
        }
        let failed = found.iter().filter(|p| !p.warning).count();
        if failed == 0 {
            say(out, format_args!("{}: ok", instance.name))?;
        }
        problems += failed;
    }
    if problems > 0 {
        return Err(Error::CheckFailed { problems });
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(model: &Model, args: &GenerateArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let selected = model.select(&args.instances)?;
    // The shims name their helper by its full path: `--out s1` is made
    // absolute, so a shim runs from any directory.
    let dir = match &args.write.out {
        Some(out) => absolute(out)?,
        None => model.bin_dir.clone(),
    };
    let mut artifacts = Renderer::new().shims(model, &selected, &dir)?;
    let mut wanted: BTreeSet<String> = model
        .instances
        .values()
        .map(|i| i.full_name.clone())
        .collect();
    if model.instances.values().any(render::needs_helper) {
        let helper = render::helper(&model.project, crate::installation::helper_binary()?);
        wanted.insert(helper.name.clone());
        artifacts.push(helper);
    }
    write_all(model, &dir, &artifacts, &wanted, &args.write, out)?;
    Ok(ExitCode::SUCCESS)
}

/// `path` from the current directory, when relative.
fn absolute(path: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    let full = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
    Utf8PathBuf::from_path_buf(full).map_err(|p| {
        Error::usage(format!(
            "`{}` is not UTF-8 once made absolute",
            crate::error::clean(&p.to_string_lossy())
        ))
    })
}

fn systemd(model: &Model, args: &SystemdArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let artifacts = units::units(&Renderer::new(), model)?;
    warn_sandbox(model);
    let changes = write_all(
        model,
        &model.units_dir,
        &artifacts,
        &units::wanted(&artifacts),
        &args.write,
        out,
    )?;
    // systemd keeps a removed unit loaded (a timer whose service vanished
    // fails) until it is stopped and the files reloaded.
    let removed: Vec<&str> = changes
        .iter()
        .filter(|(name, change)| {
            *change == Change::Remove
                && [".timer", ".service", ".socket", ".target"]
                    .iter()
                    .any(|kind| name.ends_with(kind))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if !removed.is_empty() && !args.write.dry_run {
        let units = removed.join(" ");
        let notice = crate::error::Notice {
            message: format!("{units} removed: systemd runs them until they are stopped"),
            help: format!(
                "`systemctl stop {units} && systemctl daemon-reload && systemctl reset-failed`"
            ),
        };
        eprintln!("djshim: {notice}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What the units of `model` cannot reach in their sandbox, said before
/// they are written (`check` says it too).
fn warn_sandbox(model: &Model) {
    for problem in model.instances.values().flat_map(check::sandbox) {
        eprintln!("djshim: {problem}");
    }
}

fn nixos(model: &Model, args: &NixosArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let text = crate::nixos::module(&Renderer::new(), model)?;
    warn_sandbox(model);
    match &args.out {
        Some(file) => {
            let name = file.file_name().ok_or_else(|| {
                Error::usage_help(
                    format!("`--out {file}` names no file"),
                    "e.g. `--out mywebsite.nix`",
                )
            })?;
            let dir = match file.parent() {
                Some(dir) if !dir.as_str().is_empty() => dir,
                _ => Utf8Path::new("."),
            };
            crate::write::write_atomic(dir, name, text.as_bytes(), 0o644)?;
            say(out, format_args!("wrote {file}"))?;
        }
        None => out
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("write", Utf8Path::new("stdout"), e))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn cron(model: &Model, args: &CronArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let bin = args.bin.as_deref().unwrap_or(&model.bin_dir);
    // Both end up in root's crontab: a line break there would be a second
    // line, run as root.
    for (flag, path) in [("--bin", bin), ("--lock-dir", args.lock_dir.as_path())] {
        if !path.is_absolute() || path.as_str().chars().any(char::is_control) {
            let example = if flag == "--bin" {
                "/usr/local/bin"
            } else {
                "/run/djshim-cron"
            };
            return Err(Error::usage_help(
                format!(
                    "`{flag} {}` must be an absolute path without control characters",
                    crate::error::clean(path.as_str())
                ),
                format!("e.g. `{flag} {example}`"),
            ));
        }
    }
    lock_dir_is_roots(&args.lock_dir)?;
    let text = units::crontab(&Renderer::new(), model, bin, &args.lock_dir)?;
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", Utf8Path::new("stdout"), e))?;
    Ok(ExitCode::SUCCESS)
}

/// The cron jobs' locks must lie where only root can make or take them:
/// in a world-writable directory (`/run/lock`), anyone could create and
/// hold a job's lock first, and the job would never run. Every directory
/// from `/` to it (links followed where they lie) must be root's and not
/// group- or world-writable ([`check::root_only_way`]): a root-only
/// `locks` inside an account's directory could be swapped for a link, and
/// root's `flock` would create the link's target.
fn lock_dir_is_roots(dir: &Utf8Path) -> Result<(), Error> {
    match check::root_only_way(dir.as_std_path()) {
        Ok(()) => Ok(()),
        Err((judged, wrong)) => Err(Error::with_help(
            format!(
                "the lock directory {dir}: {} {wrong}, so another account could take a job's lock \
             first (or have root's `flock` create a file where it points) and the job would \
             never run",
                crate::error::clean(&judged.to_string_lossy())
            ),
            "give a directory only root can write, on a way only root can \
             change, e.g. `--lock-dir /run/djshim-cron` (the cron lines make it)",
        )),
    }
}

/// Syncs `dir` (or `--out`) with `artifacts` and prints one line per file
/// written or removed (or, with `--dry-run`, the diff).
fn write_all(
    model: &Model,
    dir: &Utf8Path,
    artifacts: &[Artifact],
    wanted: &BTreeSet<String>,
    args: &WriteArgs,
    out: &mut dyn Write,
) -> Result<Vec<(String, Change)>, Error> {
    let dir = match &args.out {
        Some(out) => absolute(out)?,
        None => dir.to_owned(),
    };
    let dir = dir.as_path();
    let options = write::Options {
        dry_run: args.dry_run,
        force: args.force,
    };
    let changes = write::sync(dir, &model.project, artifacts, wanted, options, out)?;
    if !args.dry_run {
        let named = model
            .instances
            .values()
            .flat_map(crate::model::Instance::store_paths)
            .collect();
        crate::gcroot::sync(dir, &model.project, &named)?;
        for (name, change) in changes.iter().filter(|(_, c)| *c != Change::Unchanged) {
            say(out, format_args!("{} {}", change.verb(), dir.join(name)))?;
        }
    }
    Ok(changes)
}

fn list(model: &Model, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let renderer = Renderer::new();
    let mut rows = vec![["INSTANCE", "SHIM", "PACKAGE", "SETTINGS", "STATE"].map(String::from)];
    let commits = crate::release::commits(model);
    // The helper beside the shims: present, and this djshim's (when known).
    let helper_current = std::fs::read(model.bin_dir.join(render::helper_name(&model.project)))
        .is_ok_and(|bytes| crate::installation::helper_binary().map_or(true, |h| h == bytes));
    // Installed units that differ from the config's: the instance's
    // service would not run what its shim runs.
    let units = check::installed_units(model)?;
    for instance in model.instances.values() {
        let shim: Utf8PathBuf = model.bin_dir.join(&instance.full_name);
        let expected = renderer.shim(model, instance, &model.bin_dir)?;
        let state = match std::fs::read(&shim) {
            Ok(_) if render::needs_helper(instance) && !helper_current => "stale",
            Ok(bytes) if bytes != expected.bytes => "stale",
            Ok(_) if units.iter().any(|p| p.instance == instance.name) => "units stale",
            Ok(_) => "up to date",
            Err(_) => "missing",
        };
        let mut package = if instance.profile {
            match std::fs::canonicalize(&instance.package) {
                Ok(target) => format!("{} -> {}", instance.package, target.display()),
                Err(_) => format!("{} (not pinned)", instance.package),
            }
        } else {
            instance.package.to_string()
        };
        if let Some(commit) = crate::release::commit_of(&commits, &instance.package) {
            let _ = write!(package, " (commit {commit})");
        }
        rows.push([
            instance.name.clone(),
            shim.to_string(),
            package,
            instance.settings.clone(),
            state.into(),
        ]);
    }
    crate::progress::table(out, &rows)?;
    Ok(ExitCode::SUCCESS)
}

fn show(model: &Model, args: &ShowArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let instance = model.select(std::slice::from_ref(&args.instance))?[0];
    let shim = Renderer::new().shim(model, instance, &model.bin_dir)?;
    out.write_all(&shim.bytes)
        .map_err(|e| Error::io("write", Utf8Path::new("stdout"), e))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) use crate::progress::say;
