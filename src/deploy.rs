//! `djshim deploy`: move an instance to a new package without ever leaving
//! it broken. A list of named steps, each printed as it starts and ends:
//! check the candidate deeply as the instance's account, record the
//! database's migrations, switch the profile, run the deploy steps
//! (migrate, collectstatic) through the instance's shim, restart, probe
//! health. A failure after the switch undoes it in reverse: the database
//! migrated back with the candidate's code (it alone knows how), the
//! profile switched back, the steps run again with the old code, a restart.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::{Health, Instance, Model};
use crate::process::Process;
use crate::profile::{Profile, current, profiled, resolve};
use crate::render::{Artifact, Renderer};
use crate::steps::{say, step};

/// Where the candidate package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Candidate<'a> {
    /// A fresh build of a ref (`None`: `[build]`'s ref).
    Build(Option<&'a str>),
    /// A package already on the machine.
    Path(&'a Utf8Path),
    /// Exactly the package another instance runs now.
    From(&'a str),
}

/// The database's state before the switch, as the candidate's code sees it.
#[derive(Debug, Deserialize, Serialize)]
struct Migrations {
    /// Per app with new migrations: its newest applied one (`None`: zero).
    targets: BTreeMap<String, Option<String>>,
    /// The candidate's unapplied migrations: app, name, reversible.
    new: Vec<(String, String, bool)>,
}

/// What a deploy leaves beside a generation: the migration state before
/// it (where `rollback` takes the database back to), and whether it ran
/// healthy.
#[derive(Debug, Deserialize, Serialize)]
pub struct Record {
    targets: BTreeMap<String, Option<String>>,
    pub healthy: bool,
}

impl Record {
    pub fn of(profile: &Profile, number: u32) -> Option<Record> {
        serde_json::from_str(&profile.read_record(number)?).ok()
    }

    fn write(&self, profile: &Profile, number: u32) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Problem(format!("cannot write a deploy record: {e}")))?;
        profile.write_record(number, &text)
    }
}

/// Deploys `candidate` to `name`.
pub fn deploy(
    model: &Model,
    name: &str,
    candidate: Candidate<'_>,
    allow_irreversible: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let (instance, profile) = profiled(model, name)?;
    let package = step("deploy: candidate", || candidate_package(model, candidate))?;
    eprintln!("djshim: candidate for {name}: {package}");
    let _lock = profile.lock()?;
    recover(model, instance, &profile)?;
    let generations = profile.generations()?;
    let old = current(&profile, &generations)?.cloned();
    if old.as_ref().is_some_and(|g| g.target == package) {
        say(
            out,
            format_args!("{name}: already runs {package}; nothing to do"),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let candidate_instance = instance.rebased(&package);
    let shims = Shims::new(model, instance, &candidate_instance)?;
    step("deploy: check", || {
        deep_check(&candidate_instance, &shims.candidate)
    })?;
    let migrations = step("deploy: record migrations", || {
        probe::<Migrations>(&shims.candidate, MIGRATIONS)
    })?;
    report_migrations(&migrations);
    if !allow_irreversible {
        refuse_irreversible(name, &package, &migrations)?;
    }
    let number = profile.next_number(&generations)?;
    // Written before the switch, removed when the deploy is done or undone:
    // a deploy killed in between is undone by the next deploy or rollback.
    let journal = Journal {
        old: old.as_ref().map(|g| g.number),
        new: number,
        package: package.clone(),
        targets: migrations.targets.clone(),
    };
    journal.write(&profile)?;
    step("deploy: switch", || {
        profile.create(number, &package)?;
        profile.switch(number)
    })?;
    let outcome = after_switch(instance, &shims.instance);
    Record {
        targets: migrations.targets.clone(),
        healthy: outcome.is_ok(),
    }
    .write(&profile, number)?;
    match outcome {
        Ok(()) => {
            Journal::remove(&profile)?;
            say(
                out,
                format_args!(
                    "{name}: generation {number}: {package}{}",
                    old.map(|g| format!(" (was generation {}: {})", g.number, g.target))
                        .unwrap_or_default()
                ),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("djshim: deploy of {package} failed; rolling {name} back");
            let undone = undo(
                instance,
                &profile,
                &shims,
                &migrations.targets,
                old.as_ref(),
            )
            .and_then(|()| Journal::remove(&profile));
            let back = match (&undone, &old) {
                (Ok(()), Some(g)) => {
                    format!("{name} is back on generation {}: {}", g.number, g.target)
                }
                (Ok(()), None) => {
                    format!("{name} had no generation before; its database is back where it was")
                }
                (Err(e), _) => format!("rolling back failed too: {e}"),
            };
            Err(Error::Problem(format!("{failure}\n  = {back}")))
        }
    }
}

/// `djshim rollback` of a generation a deploy made: the same way
/// backwards. The migrations the current generation added are reversed
/// with its own code, then the profile goes to `to`, and the steps, the
/// restart and the health probe run with that generation's code.
pub fn backwards(
    model: &Model,
    instance: &Instance,
    profile: &Profile,
    record: &Record,
    to: u32,
) -> Result<(), Error> {
    let shims = Shims::new(model, instance, instance)?;
    migrate_back(&shims.instance, &record.targets)?;
    step(&format!("rollback: switch to generation {to}"), || {
        profile.switch(to)
    })?;
    after_switch(instance, &shims.instance)
}

/// A deploy in flight: what the next deploy or rollback needs to undo it
/// if this one is killed.
#[derive(Debug, Deserialize, Serialize)]
struct Journal {
    old: Option<u32>,
    new: u32,
    package: Utf8PathBuf,
    targets: BTreeMap<String, Option<String>>,
}

impl Journal {
    fn path(profile: &Profile) -> Utf8PathBuf {
        profile
            .dir
            .join(format!(".{}.deploy-journal.json", profile.name))
    }

    fn write(&self, profile: &Profile) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Problem(format!("cannot write the deploy journal: {e}")))?;
        let path = Journal::path(profile);
        crate::write::write_atomic(
            &profile.dir,
            path.file_name().unwrap_or_default(),
            text.as_bytes(),
            0o644,
        )?;
        crate::write::sync_dir(&profile.dir)
    }

    fn read(profile: &Profile) -> Result<Option<Journal>, Error> {
        let path = Journal::path(profile);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::Problem(format!(
                    "{path}: not a deploy journal djshim wrote ({e}); remove it"
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    fn remove(profile: &Profile) -> Result<(), Error> {
        let path = Journal::path(profile);
        match std::fs::remove_file(&path) {
            Ok(()) => crate::write::sync_dir(&profile.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}

/// Whether a deploy of this profile was interrupted and not yet undone.
pub fn interrupted(profile: &Profile) -> Result<bool, Error> {
    Ok(Journal::read(profile)?.is_some())
}

/// Undoes a deploy that was killed: if the profile runs its new
/// generation, the database is migrated back with that code and the
/// profile switched back; then the steps and the restart run with the old
/// code. True when there was one to undo. Called under the profile lock.
pub fn recover(model: &Model, instance: &Instance, profile: &Profile) -> Result<bool, Error> {
    let Some(journal) = Journal::read(profile)? else {
        return Ok(false);
    };
    eprintln!(
        "djshim: a deploy of {} to {} (generation {}) was interrupted; undoing it",
        journal.package, instance.name, journal.new
    );
    let generations = profile.generations()?;
    let runs_new = matches!(
        profile.current(&generations)?,
        crate::profile::Current::Generation(n) if n == journal.new
    );
    let shims = Shims::new(model, instance, instance)?;
    let old = journal
        .old
        .and_then(|n| generations.iter().find(|g| g.number == n));
    if runs_new {
        undo(instance, profile, &shims, &journal.targets, old)?;
    } else if old.is_some() {
        // Killed before the switch, or while undoing after switching back:
        // the old code's steps and restart again, which change nothing when
        // nothing was left half done.
        run_steps(instance, &shims.instance)?;
        restart(instance, "rollback")?;
    }
    if generations.iter().any(|g| g.number == journal.new) {
        Record {
            targets: journal.targets,
            healthy: false,
        }
        .write(profile, journal.new)?;
    }
    Journal::remove(profile)?;
    Ok(true)
}

/// The package a candidate names.
fn candidate_package(model: &Model, candidate: Candidate<'_>) -> Result<Utf8PathBuf, Error> {
    match candidate {
        Candidate::Build(reference) => {
            crate::release::build(model, reference, &mut std::io::sink())
        }
        Candidate::Path(path) => resolve(path),
        Candidate::From(other) => {
            let other = model.select(&[other.to_owned()])?[0];
            other
                .package
                .canonicalize_utf8()
                .map_err(|e| Error::io("resolve the package of", &other.package, e))
        }
    }
}

/// Stops a deploy whose new migrations could not be taken back.
fn refuse_irreversible(
    name: &str,
    package: &Utf8Path,
    migrations: &Migrations,
) -> Result<(), Error> {
    let irreversible: Vec<String> = migrations
        .new
        .iter()
        .filter(|(_, _, reversible)| !reversible)
        .map(|(app, migration, _)| format!("{app}.{migration}"))
        .collect();
    if irreversible.is_empty() {
        return Ok(());
    }
    Err(Error::Problem(format!(
        "not switching {name} to {package}: these migrations cannot be reversed, so a \
         failed deploy could not take the database back: {}\n  = help: give them a reverse \
         (RunPython's reverse_code, RunSQL's reverse_sql), or pass --allow-irreversible",
        irreversible.join(", ")
    )))
}

/// The steps after the switch: the deploy steps through the shim, the
/// restart, the health probe.
fn after_switch(instance: &Instance, shim: &Utf8Path) -> Result<(), Error> {
    let deploy = &instance.deploy;
    run_steps(instance, shim)?;
    restart(instance, "deploy")?;
    if let Some(health) = &deploy.health {
        step("deploy: health", || healthy(health, deploy.health_timeout))?;
    }
    Ok(())
}

/// The instance's `restart` command, as a step of `phase`.
fn restart(instance: &Instance, phase: &str) -> Result<(), Error> {
    let command = &instance.deploy.restart;
    step(&format!("{phase}: restart: {}", command.join(" ")), || {
        Process::new(&command[0])
            .args(&command[1..])
            .timeout(Duration::from_secs(300))
            .run()
    })
}

fn run_steps(instance: &Instance, shim: &Utf8Path) -> Result<(), Error> {
    for args in &instance.deploy.steps {
        step(&format!("deploy: manage.py {}", args.join(" ")), || {
            Process::new(shim)
                .args(args)
                .env("DJSHIM_CONFIRM", &instance.name)
                .run()
        })?;
    }
    Ok(())
}

/// Migrates each app back to `targets` (`None`: before its first
/// migration) through `shim`, one step each.
fn migrate_back(shim: &Utf8Path, targets: &BTreeMap<String, Option<String>>) -> Result<(), Error> {
    for (app, target) in targets {
        let target = target.as_deref().unwrap_or("zero");
        step(&format!("rollback: migrate {app} {target}"), || {
            Process::new(shim)
                .args(["migrate", app, target, "--noinput"])
                .run()
        })?;
    }
    Ok(())
}

/// Back to where the deploy started: the database migrated back with the
/// candidate's code (the profile still points at it), the profile switched
/// back, the steps and the restart with the old code.
fn undo(
    instance: &Instance,
    profile: &Profile,
    shims: &Shims,
    targets: &BTreeMap<String, Option<String>>,
    old: Option<&crate::profile::Generation>,
) -> Result<(), Error> {
    migrate_back(&shims.instance, targets)?;
    let Some(old) = old else {
        return Ok(());
    };
    step(
        &format!("rollback: switch back to generation {}", old.number),
        || profile.switch(old.number),
    )?;
    run_steps(instance, &shims.instance)?;
    restart(instance, "rollback")
}

/// The instance's shim (following its profile) and a shim of the instance
/// on the candidate package, written into a temporary directory: exactly
/// what `generate` writes, so every step runs with the shim's environment,
/// account and env files.
struct Shims {
    _dir: tempfile::TempDir,
    instance: Utf8PathBuf,
    candidate: Utf8PathBuf,
}

impl Shims {
    fn new(model: &Model, instance: &Instance, candidate: &Instance) -> Result<Shims, Error> {
        let dir = tempfile::Builder::new()
            .prefix("djshim-deploy-")
            .tempdir()
            .map_err(|e| Error::io("create", Utf8Path::new("a temporary directory"), e))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", Utf8Path::new("a temporary directory"), e))?;
        let base = Utf8PathBuf::from_path_buf(dir.path().to_owned())
            .map_err(|_| Error::Problem("the temporary directory's path is not UTF-8".into()))?;
        let renderer = Renderer::new();
        let put = |artifact: &Artifact| -> Result<Utf8PathBuf, Error> {
            let path = base.join(&artifact.name);
            std::fs::write(&path, &artifact.bytes).map_err(|e| Error::io("write", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &path, e))?;
            Ok(path)
        };
        if crate::render::needs_helper(instance) || crate::render::needs_helper(candidate) {
            put(&crate::commands::helper(&model.project)?)?;
        }
        let write = |name: &str, instance: &Instance| -> Result<Utf8PathBuf, Error> {
            let mut shim = renderer.shim(model, instance, &base)?;
            name.clone_into(&mut shim.name);
            put(&shim)
        };
        let instance = write("instance", instance)?;
        let candidate = write("candidate", candidate)?;
        Ok(Shims {
            _dir: dir,
            instance,
            candidate,
        })
    }
}

/// Runs `code` with `manage.py shell -c` through `shim` and reads the JSON
/// it prints after `DJSHIM:`.
fn probe<T: for<'de> Deserialize<'de>>(shim: &Utf8Path, code: &str) -> Result<T, Error> {
    let out = Process::new(shim)
        .args(["shell", "-c", code])
        .timeout(Duration::from_secs(300))
        .output()?;
    let text = String::from_utf8_lossy(&out);
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("DJSHIM:"))
        .ok_or_else(|| Error::Problem(format!("{shim} shell printed no answer:\n{text}")))?;
    serde_json::from_str(line)
        .map_err(|e| Error::Problem(format!("{shim} shell printed a bad answer ({e}): {line}")))
}

/// What the shim, the units and the services need of the candidate: the
/// machine checks of `djshim check`, then, as the instance's account,
/// `django.setup()`, `manage.py check`, the static and media roots Django
/// ends up with, the modules the server and services start, the commands
/// the jobs and services run.
fn deep_check(candidate: &Instance, shim: &Utf8Path) -> Result<(), Error> {
    let mut problems: Vec<String> = crate::check::instance(candidate)
        .into_iter()
        .filter(|p| !p.warning)
        .map(|p| p.to_string())
        .collect();
    if problems.is_empty() {
        problems = probe_problems(candidate, shim);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Problem(format!(
            "the candidate cannot run as {}:\n  {}",
            candidate.name,
            problems.join("\n  ")
        )))
    }
}

/// What Django itself says of `instance`, asked through a shim of it
/// (as its account, with its environment and env files): for `check` and
/// `pin`, whose own checks cannot see a settings module that fails to
/// import, an interpreter without Django, a server module that is missing.
///
/// A manage.py that never mentions Django (a test probe, a wrapper of
/// another framework) is not asked: its `shell -c` is not Django's.
pub fn deep_problems(
    model: &Model,
    instance: &Instance,
) -> Result<Vec<crate::check::Problem>, Error> {
    let django = std::fs::read_to_string(&instance.manage).is_ok_and(|t| t.contains("django"));
    if !django {
        return Ok(Vec::new());
    }
    let shims = Shims::new(model, instance, instance)?;
    Ok(probe_problems(instance, &shims.instance)
        .into_iter()
        .map(|message| crate::check::Problem {
            instance: instance.name.clone(),
            key: "settings",
            message,
            warning: false,
        })
        .collect())
}

/// The deep check's answer: Django's own problems with `candidate`, or
/// why the settings do not load at all.
fn probe_problems(candidate: &Instance, shim: &Utf8Path) -> Vec<String> {
    let expected = serde_json::json!({
        "roots": {
            "STATIC_ROOT": candidate.static_root.as_ref().map(|p| p.as_str()),
            "MEDIA_ROOT": candidate.media_root.as_ref().map(|p| p.as_str()),
        },
        "modules": modules(candidate),
        "commands": commands(candidate),
    });
    // A JSON string literal of the JSON text is also a Python one.
    let literal = serde_json::to_string(&expected.to_string()).unwrap_or_default();
    let code = DEEP_CHECK.replace("@EXPECTED@", &literal);
    match probe::<Vec<String>>(shim, &code) {
        Ok(found) => found,
        Err(e) => vec![format!("the settings do not load: {e}")],
    }
}

/// The Python modules the server and the services start with `-m`, and
/// the application module a server like gunicorn is given.
fn modules(instance: &Instance) -> Vec<String> {
    let commands = instance
        .server
        .iter()
        .map(|s| &s.command)
        .chain(instance.services.values().filter_map(|s| s.run.python()));
    let mut modules = Vec::new();
    for args in commands {
        if let [flag, module, rest @ ..] = args.as_slice()
            && flag == "-m"
        {
            modules.push(module.clone());
            if matches!(module.as_str(), "gunicorn" | "uvicorn" | "daphne")
                && let Some(app) = rest.iter().find(|a| !a.starts_with('-'))
            {
                let app = app.split(':').next().unwrap_or(app);
                if crate::model::is_module(app) {
                    modules.push(app.to_owned());
                }
            }
        }
    }
    modules
}

/// The management commands jobs and services run.
fn commands(instance: &Instance) -> Vec<String> {
    instance
        .jobs
        .values()
        .map(|j| &j.command)
        .chain(instance.services.values().filter_map(|s| s.run.manage()))
        .filter_map(|args| args.first().cloned())
        .collect()
}

fn report_migrations(migrations: &Migrations) {
    if migrations.new.is_empty() {
        eprintln!("djshim: the candidate brings no new migration");
    }
    for (app, name, reversible) in &migrations.new {
        let how = if *reversible {
            "reversible"
        } else {
            "IRREVERSIBLE"
        };
        eprintln!("djshim: new migration {app}.{name}: {how}");
    }
}

/// Probes `health` until it answers or `timeout` passes.
fn healthy(health: &Health, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        last = match health {
            Health::Url { host, port, path } => http_status(host, *port, path),
            Health::Command(words) => Process::new(&words[0])
                .args(&words[1..])
                .timeout(timeout)
                .output()
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if last.is_ok() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last.map_err(|why| Error::Problem(format!("not healthy within {} s: {why}", timeout.as_secs())))
}

/// One GET; Ok on a 2xx answer.
fn http_status(host: &str, port: u16, path: &str) -> Result<(), String> {
    let mut stream =
        TcpStream::connect((host, port)).map_err(|e| format!("http://{host}:{port}{path}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        _ => Err(format!("http://{host}:{port}{path} answered `{status}`")),
    }
}

/// `manage.py shell -c` code: what `deploy` asks of the candidate.
const DEEP_CHECK: &str = r#"
import importlib.util, json, os
from django.conf import settings
from django.core.management import call_command, get_commands
expected = json.loads(@EXPECTED@)
problems = []
try:
    call_command("check")
except Exception as e:
    problems.append("manage.py check: " + " ".join(str(e).split()))
for key, want in expected["roots"].items():
    have = getattr(settings, key, None)
    have = os.path.normpath(str(have)) if have else None
    if want is not None and have != os.path.normpath(want):
        problems.append(f"Django's {key} is {have!r}, not {want!r} as configured")
for module in expected["modules"]:
    try:
        found = importlib.util.find_spec(module) is not None
    except Exception as e:
        found = False
    if not found:
        problems.append(f"the module {module} cannot be imported")
known = get_commands()
for name in expected["commands"]:
    if name not in known:
        problems.append(f"there is no management command {name!r}")
print("DJSHIM:" + json.dumps(problems))
"#;

/// `manage.py shell -c` code: the migration state, per app the newest
/// applied migration of every app the candidate brings new ones to, and
/// whether each new one can be reversed.
const MIGRATIONS: &str = r#"
import json
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
graph = executor.loader.graph
applied = set(executor.loader.applied_migrations)
plan = executor.migration_plan(graph.leaf_nodes())
targets = {}
for app in sorted({m.app_label for m, _ in plan}):
    mine = [n for n in applied if n[0] == app]
    leaves = [n for n in mine if not any(c in applied and c[0] == app for c in graph.node_map[n].children)]
    targets[app] = sorted(leaves)[-1][1] if leaves else None
new = [[m.app_label, m.name, all(op.reversible for op in m.operations)] for m, _ in plan]
print("DJSHIM:" + json.dumps({"targets": targets, "new": new}))
"#;
