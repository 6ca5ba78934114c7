//! Everything djshim asks of Django, always through a shim of the instance
//! (as its account, with its environment and env files, exactly as
//! `generate` writes it): the deep check of a package and the migration
//! record of a database, and the two Python programs that answer them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

use crate::error::Error;
use crate::model::{Instance, Model};
use crate::process::Process;
use crate::render::{Artifact, Renderer};

/// How long one question to Django may take (a settings module that hangs
/// on import must not hang djshim).
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);

/// Shims of an instance written into a directory djshim owns: one that
/// follows the instance's profile, one per package asked for. The
/// directory is made anew at each start (a killed run's copy goes then)
/// and removed when this is dropped.
#[derive(Debug)]
pub struct Shims {
    dir: Utf8PathBuf,
    model: Model,
    instance: Instance,
    made: BTreeMap<Utf8PathBuf, Utf8PathBuf>,
}

impl Shims {
    /// Shims of `instance` in `dir` (emptied first).
    pub fn new(model: &Model, instance: &Instance, dir: &Utf8Path) -> Result<Shims, Error> {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", dir, e)),
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", dir, e))?;
        let shims = Shims {
            dir: dir.to_owned(),
            model: model.clone(),
            instance: instance.clone(),
            made: BTreeMap::new(),
        };
        if crate::render::needs_helper(instance) {
            shims.put(&crate::render::helper(
                &model.project,
                crate::installation::helper_binary()?,
            ))?;
        }
        Ok(shims)
    }

    /// Shims in a fresh temporary directory (for `check` and `pin`, which
    /// hold no lock on the instance).
    pub fn temporary(
        model: &Model,
        instance: &Instance,
    ) -> Result<(tempfile::TempDir, Shims), Error> {
        let tmp = tempfile::Builder::new()
            .prefix("djshim-probe-")
            .tempdir()
            .map_err(|e| Error::io("create", Utf8Path::new("a temporary directory"), e))?;
        let dir = Utf8PathBuf::from_path_buf(tmp.path().join("shims"))
            .map_err(|_| Error::problem("the temporary directory's path is not UTF-8"))?;
        let shims = Shims::new(model, instance, &dir)?;
        Ok((tmp, shims))
    }

    fn put(&self, artifact: &Artifact) -> Result<Utf8PathBuf, Error> {
        let path = self.dir.join(&artifact.name);
        fs::write(&path, &artifact.bytes).map_err(|e| Error::io("write", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &path, e))?;
        Ok(path)
    }

    /// The shim that runs `package` (`None`: what the profile points at
    /// when it starts).
    pub fn shim(&mut self, package: Option<&Utf8Path>) -> Result<Utf8PathBuf, Error> {
        let key = package.map_or_else(|| Utf8PathBuf::from("profile"), Utf8Path::to_owned);
        let instance = match package {
            Some(p) if self.instance.profile => self.instance.rebased(p),
            _ => self.instance.clone(),
        };
        self.made_for(key, &instance)
    }

    /// The shim of generation `number` on `package` before it is switched
    /// to ([`Instance::generation`]: its static files in its own
    /// directory).
    pub fn generation(&mut self, number: u32, package: &Utf8Path) -> Result<Utf8PathBuf, Error> {
        let instance = self.instance.generation(number, package);
        self.made_for(Utf8PathBuf::from(format!("{number}:{package}")), &instance)
    }

    fn made_for(&mut self, key: Utf8PathBuf, instance: &Instance) -> Result<Utf8PathBuf, Error> {
        if let Some(path) = self.made.get(&key) {
            return Ok(path.clone());
        }
        let mut artifact = Renderer::new().shim(&self.model, instance, &self.dir)?;
        artifact.name = format!("shim-{}", self.made.len());
        let path = self.put(&artifact)?;
        self.made.insert(key, path.clone());
        Ok(path)
    }
}

impl Drop for Shims {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `code` with `manage.py shell -c` through `shim` and reads the JSON
/// it prints after `DJSHIM:`. A failure leads with its cause: the last
/// line of the traceback (`ImproperlyConfigured: …`), then the rest.
fn probe<T: for<'de> Deserialize<'de>>(shim: &Utf8Path, code: &str) -> Result<T, String> {
    let out = Process::new(shim)
        .args(["shell", "-c", code])
        .timeout(PROBE_TIMEOUT)
        .output()
        .map_err(|e| cause_first(&e))?;
    let text = String::from_utf8_lossy(&out);
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("DJSHIM:"))
        .ok_or_else(|| format!("manage.py shell printed no answer:\n{text}"))?;
    serde_json::from_str(line)
        .map_err(|e| format!("manage.py shell printed a bad answer ({e}): {line}"))
}

/// A failed probe's error with the line that says why first: the
/// program's text (a Python probe of 30 lines) says nothing to the user.
fn cause_first(e: &Error) -> String {
    match e {
        Error::Command { how, stderr, .. } => {
            let cause = stderr.last().cloned().unwrap_or_else(|| how.clone());
            let mut text = format!("{cause} (manage.py shell: {how})");
            for line in stderr.iter().rev().skip(1).take(4).rev() {
                text.push_str("\n    | ");
                text.push_str(line);
            }
            text
        }
        other => other.to_string(),
    }
}

/// The database's state before a switch, as the candidate's code sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Migrations {
    /// Per app with new migrations: its newest applied one (`None`: zero).
    pub targets: BTreeMap<String, Option<String>>,
    /// The candidate's unapplied migrations: app, name, reversible.
    pub new: Vec<(String, String, bool)>,
    /// The new migrations that the code running now may fail against
    /// until the restart (`app.name`, what they do): a column or table
    /// removed, renamed or altered, a NOT NULL column without a database
    /// default.
    #[serde(default)]
    pub breaking: Vec<(String, Vec<String>)>,
    /// Migrations the database has applied that the candidate does not
    /// know (`app.name`, of apps it has): a newer release applied them, and
    /// only its code can reverse them.
    #[serde(default)]
    pub unknown: Vec<String>,
}

impl Migrations {
    /// `app.name` of each new migration that cannot be reversed.
    pub fn irreversible(&self) -> Vec<String> {
        self.new
            .iter()
            .filter(|(_, _, reversible)| !reversible)
            .map(|(app, name, _)| format!("{app}.{name}"))
            .collect()
    }
}

/// What a deploy asks of its candidate, in one Django start: the
/// [`problems`] of the deep check, then, when there are none, the
/// migration state (through `shim`, the candidate's code).
pub fn deploy_questions(instance: &Instance, shim: &Utf8Path) -> Result<Migrations, Error> {
    #[derive(Deserialize)]
    struct Answer {
        problems: Vec<String>,
        migrations: Option<Migrations>,
        error: Option<String>,
    }
    let code = format!("{}{MIGRATIONS}{ANSWER}", deep_check_code(instance));
    let answer: Answer = probe(shim, &code).map_err(|e| {
        Error::problem(format!(
            "the candidate cannot run as {}:\n  the settings do not load: {e}",
            instance.name
        ))
    })?;
    if !answer.problems.is_empty() {
        return Err(Error::problem(format!(
            "the candidate cannot run as {}:\n  {}",
            instance.name,
            answer.problems.join("\n  ")
        )));
    }
    answer.migrations.ok_or_else(|| {
        Error::problem(format!(
            "the migrations cannot be read: {}",
            answer.error.unwrap_or_default()
        ))
    })
}

/// `manage.py shell -c` code that migrates each app of `targets` back to
/// its target (`None`: zero) in turn, in one process.
pub fn migrate_back_code(targets: &[(String, Option<String>)]) -> Result<String, Error> {
    let targets = serde_json::to_string(targets)
        .map_err(|e| Error::problem(format!("cannot write the targets: {e}")))?;
    // A JSON string literal of the JSON text is also a Python one.
    let literal = serde_json::to_string(&targets).unwrap_or_default();
    Ok(MIGRATE_BACK.replace("@TARGETS@", &literal))
}

/// `manage.py shell -c` code: `migrate APP TARGET` for each target in
/// turn, in one process.
const MIGRATE_BACK: &str = r#"
import json
from django.core.management import call_command
for app, target in json.loads(@TARGETS@):
    call_command("migrate", app, target or "zero", interactive=False)
"#;

/// The end of the deploy's program: both answers, after `DJSHIM:`.
const ANSWER: &str = r#"
migrations, error = None, None
if not problems:
    try:
        migrations = record()
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
print("DJSHIM:" + json.dumps({"problems": problems, "migrations": migrations, "error": error}))
"#;

/// What Django itself says of `instance`, asked through `shim`:
/// `manage.py check`, the static and media roots Django ends up with, the
/// modules the server and services start, the commands the jobs and
/// services run. Empty when all is well.
pub fn problems(instance: &Instance, shim: &Utf8Path) -> Vec<String> {
    let code = format!(
        "{}\nprint(\"DJSHIM:\" + json.dumps(problems))\n",
        deep_check_code(instance)
    );
    match probe::<Vec<String>>(shim, &code) {
        Ok(found) => found,
        Err(e) => vec![format!("the settings do not load: {e}")],
    }
}

/// The deep check's program for `instance`: what it expects filled in.
fn deep_check_code(instance: &Instance) -> String {
    let expected = serde_json::json!({
        "roots": {
            "STATIC_ROOT": instance.static_root.as_ref().map(|p| p.as_str()),
            "MEDIA_ROOT": instance.media_root.as_ref().map(|p| p.as_str()),
        },
        "modules": modules(instance),
        "commands": commands(instance),
    });
    // A JSON string literal of the JSON text is also a Python one.
    let literal = serde_json::to_string(&expected.to_string()).unwrap_or_default();
    DEEP_CHECK.replace("@EXPECTED@", &literal)
}

/// Whether `instance`'s manage.py is Django's: a manage.py that never
/// mentions Django (a test probe, a wrapper of another framework) is not
/// asked, since its `shell -c` is not Django's.
pub fn is_django(instance: &Instance) -> bool {
    fs::read_to_string(&instance.manage).is_ok_and(|t| t.contains("django"))
}

/// [`problems`] of `instance`, through a shim in a temporary directory;
/// none when its manage.py is not Django's.
pub fn deep_problems(model: &Model, instance: &Instance) -> Result<Vec<String>, Error> {
    if !is_django(instance) {
        return Ok(Vec::new());
    }
    let (_tmp, mut shims) = Shims::temporary(model, instance)?;
    let shim = shims.shim(None)?;
    Ok(problems(instance, &shim))
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
        .map(|j| &j.manage)
        .chain(instance.services.values().filter_map(|s| s.run.manage()))
        .filter_map(|args| args.first().cloned())
        .collect()
}

/// `manage.py shell -c` code: what `deploy` asks of the candidate; it
/// leaves its findings in `problems` (the callers print them).
const DEEP_CHECK: &str = r#"
import importlib.util, json, os
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
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
        env = "DJANGO_" + key
        problems.append(f"Django's {key} is {have!r}, not {want!r} as configured: the settings set it "
            f"themselves; give the instance a settings module of its own that imports the "
            f"application's and then sets `{key} = os.environ[{env!r}]` (djshim exports {env}), "
            f"and point `settings` at it")
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
    elif isinstance(known[name], str):
        # Found is not enough: a job's command whose module cannot be
        # imported (a dependency the release lacks) fails at every run.
        try:
            load_command_class(known[name], name)
        except Exception as e:
            problems.append(f"the management command {name!r} cannot be loaded: {type(e).__name__}: {e}")
"#;

/// `manage.py shell -c` code: `record()`, the migration state, per app the newest
/// applied migration of every app the candidate brings new ones to, and
/// whether each new one can be reversed.
///
/// The graph is the loader's, as `migrate` builds it: a squashed
/// migration stands for the ones it replaces (applied when all of them
/// are), and names the database holds that are no node of the graph (the
/// replaced ones, gone from the graph once a squash is complete) are not
/// looked up in it.
const MIGRATIONS: &str = r#"
import json
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
def record():
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    graph = executor.loader.graph
    applied = {n for n in executor.loader.applied_migrations if n in graph.node_map}
    plan = executor.migration_plan(graph.leaf_nodes())
    targets = {}
    for app in sorted({m.app_label for m, _ in plan}):
        mine = [n for n in applied if n[0] == app]
        leaves = [n for n in mine if not any(c in applied and c[0] == app for c in graph.node_map[n].children)]
        targets[app] = sorted(leaves)[-1][1] if leaves else None
    new = [[m.app_label, m.name, all(op.reversible for op in m.operations)] for m, _ in plan]
    breaking = [[f"{m.app_label}.{m.name}", why] for m, _ in plan if (why := breaks(m))]
    apps = {n[0] for n in graph.node_map}
    replaced = {r for m in executor.loader.replacements.values() for r in m.replaces}
    unknown = sorted(f"{a}.{n}" for a, n in executor.loader.applied_migrations
                     if a in apps and (a, n) not in graph.node_map and (a, n) not in replaced)
    return {"targets": targets, "new": new, "breaking": breaking, "unknown": unknown}
def breaks(migration):
    from django.db.migrations import operations as ops
    from django.db.models import NOT_PROVIDED
    why = []
    for op in migration.operations:
        if isinstance(op, (ops.RemoveField, ops.DeleteModel, ops.RenameField, ops.RenameModel, ops.AlterField)):
            why.append(op.describe())
        elif isinstance(op, ops.AddField):
            field = op.field
            no_default = getattr(field, "db_default", NOT_PROVIDED) is NOT_PROVIDED
            if not field.null and not field.many_to_many and no_default:
                why.append(op.describe() + " (NOT NULL, no database default)")
    return why
"#;
