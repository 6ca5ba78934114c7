//! `djshim systemd` and `djshim cron`: the instance's application server
//! and scheduled jobs, from the same model as its shim, so that the service
//! runs the same interpreter, package, account, environment and env files
//! as `mywebsite-prod` typed in a shell.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};
use minijinja::Value;
use serde::Serialize;

use crate::error::Error;
use crate::model::{Instance, Job, Model, join};
use crate::render::{Artifact, Renderer};

/// The `PATH` systemd gives services; the instance's directories go first,
/// as the shim puts them before the caller's.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every unit of an instance shares with its shim.
#[derive(Serialize)]
struct Base<'a> {
    project: &'a str,
    instance: &'a str,
    unit: &'a str,
    user: &'a str,
    group: Option<&'a str>,
    /// `KEY=VALUE` assignments, each one `Environment=` word.
    environment: Vec<String>,
    env_files: Vec<&'a str>,
    state_dir: Option<&'a str>,
    writable: Vec<&'a str>,
    /// `ExecStart=`'s words, each escaped when printed.
    exec: Vec<String>,
}

#[derive(Serialize)]
struct ServerContext<'a> {
    #[serde(flatten)]
    base: Base<'a>,
    after: &'a [String],
    runtime_dir: Option<&'a str>,
    service: Vec<Setting>,
}

/// An extra `[Service]` line, written as the config gives it: its name is
/// validated, its value is systemd syntax by design (`ReadWritePaths=/a /b`).
#[derive(Serialize)]
struct Setting {
    name: Value,
    value: Value,
}

#[derive(Serialize)]
struct JobContext<'a> {
    #[serde(flatten)]
    base: Base<'a>,
    job: &'a str,
    schedule: &'a str,
    calendar: Vec<String>,
}

/// The environment a unit sets: what the shim exports, in the same order,
/// with systemd's own `PATH` in place of the caller's. A server also gets
/// manage.py's directory first on `PYTHONPATH`: manage.py has it as the
/// script's directory, and `-m gunicorn mywebsite.wsgi` must import the
/// same package.
///
/// An instance that runs its profile leaves `PYTHONPATH`, `PATH` and
/// `VIRTUAL_ENV` to its launcher ([`Renderer::launcher`]), which sets them
/// from the generation it starts.
pub fn environment(instance: &Instance, server: bool) -> Vec<(String, String)> {
    let mut vars = vec![(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        instance.settings.clone(),
    )];
    if instance.profile {
        vars.push(("PYTHONNOUSERSITE".into(), "1".into()));
        vars.extend(
            instance
                .variables()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_string())),
        );
        return vars;
    }
    let mut pythonpath = Vec::new();
    if server {
        pythonpath.push(
            instance
                .manage
                .parent()
                .unwrap_or(&instance.package)
                .to_owned(),
        );
    }
    pythonpath.extend(instance.pythonpath.iter().cloned());
    if !pythonpath.is_empty() {
        vars.push(("PYTHONPATH".into(), join(&pythonpath)));
    }
    vars.push(("PYTHONNOUSERSITE".into(), "1".into()));
    let mut path = vec![instance.python_bin().to_owned()];
    path.extend(instance.path.iter().cloned());
    vars.push(("PATH".into(), format!("{}:{SERVICE_PATH}", join(&path))));
    // The shim tests for pyvenv.cfg when it runs; a unit cannot, so the
    // test is made here, when the unit is written.
    if instance.venv_root().join("pyvenv.cfg").is_file() {
        vars.push(("VIRTUAL_ENV".into(), instance.venv_root().to_string()));
    }
    vars.extend(
        instance
            .variables()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_string())),
    );
    vars
}

/// Refuses paths that a unit file cannot hold as a plain value.
fn unit_safe<'p>(instance: &Instance, path: &'p Utf8Path) -> Result<&'p str, Error> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "\"'\\\\%$".contains(c);
    if path.as_str().contains(bad) {
        return Err(Error::Usage(format!(
            "instance `{}`: the path `{path}` cannot stand in a unit file: spaces, quotes, `%`, `$` \
             and `\\\\` have meanings there\n  = help: rename the directory, or leave `server` and \
             `jobs` out of this instance",
            instance.name
        )));
    }
    Ok(path.as_str())
}

/// What `ExecStart=` runs: the interpreter (with manage.py for a job) and
/// `args`; for an instance that runs its profile, `sh -c` with the
/// launcher first, so that the unit follows the profile once, when it
/// starts.
fn exec_line(
    renderer: &Renderer,
    instance: &Instance,
    unit: &str,
    server: bool,
    args: &[String],
) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    if instance.profile {
        let service_path: Vec<Utf8PathBuf> =
            SERVICE_PATH.split(':').map(Utf8PathBuf::from).collect();
        words.extend([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            renderer.launcher(instance, server, !server, &service_path)?,
            unit.to_owned(),
        ]);
    } else {
        words.push(unit_safe(instance, &instance.python)?.to_owned());
        if !server {
            words.push(unit_safe(instance, &instance.manage)?.to_owned());
        }
    }
    words.extend(args.iter().cloned());
    Ok(words)
}

fn base<'a>(
    model: &'a Model,
    instance: &'a Instance,
    unit: &'a str,
    server: bool,
    exec: Vec<String>,
) -> Result<Base<'a>, Error> {
    let safe = |p: &'a Utf8Path| unit_safe(instance, p);
    let writable = [
        &instance.state_dir,
        &instance.static_root,
        &instance.media_root,
    ]
    .into_iter()
    .flatten()
    .map(|p| safe(p))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Base {
        project: &model.project,
        instance: &instance.name,
        unit,
        user: instance
            .user
            .as_deref()
            .expect("the model requires `user` for servers and jobs"),
        group: instance.group.as_deref(),
        environment: environment(instance, server)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        env_files: instance
            .env_files
            .iter()
            .map(|p| safe(p))
            .collect::<Result<_, _>>()?,
        state_dir: instance.state_dir.as_deref().map(safe).transpose()?,
        writable,
        exec,
    })
}

/// Every unit of the model: `<project>-<instance>.service` for a server,
/// a `.service` and a `.timer` per job.
pub fn units(renderer: &Renderer, model: &Model) -> Result<Vec<Artifact>, Error> {
    let mut out = Vec::new();
    let file = |name: String, text: String| Artifact {
        name,
        mode: 0o644,
        bytes: text.into_bytes(),
    };
    for instance in model.instances.values() {
        if let Some(server) = &instance.server {
            let exec = exec_line(renderer, instance, &instance.command, true, &server.command)?;
            let ctx = ServerContext {
                base: base(model, instance, &instance.command, true, exec)?,
                after: &server.after,
                runtime_dir: server.runtime_dir.as_deref(),
                service: server
                    .service
                    .iter()
                    .map(|(k, v)| Setting {
                        name: Value::from_safe_string(k.clone()),
                        value: Value::from_safe_string(v.clone()),
                    })
                    .collect(),
            };
            let text = renderer.render("server.service.j2", &ctx)?;
            out.push(file(format!("{}.service", instance.command), text));
        }
        for job in instance.jobs.values() {
            let ctx = job_context(renderer, model, instance, job)?;
            out.push(file(
                format!("{}.service", job.unit),
                renderer.render("job.service.j2", &ctx)?,
            ));
            out.push(file(
                format!("{}.timer", job.unit),
                renderer.render("job.timer.j2", &ctx)?,
            ));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn job_context<'a>(
    renderer: &Renderer,
    model: &'a Model,
    instance: &'a Instance,
    job: &'a Job,
) -> Result<JobContext<'a>, Error> {
    let exec = exec_line(renderer, instance, &job.unit, false, &job.command)?;
    Ok(JobContext {
        base: base(model, instance, &job.unit, false, exec)?,
        job: &job.name,
        schedule: &job.schedule.cron,
        calendar: job.schedule.calendar(),
    })
}

/// The names of every unit the config makes (what `djshim systemd` owns).
pub fn wanted(units: &[Artifact]) -> BTreeSet<String> {
    units.iter().map(|a| a.name.clone()).collect()
}

#[derive(Serialize)]
struct CronContext<'a> {
    project: &'a str,
    jobs: Vec<CronJob<'a>>,
}

#[derive(Serialize)]
struct CronJob<'a> {
    unit: &'a str,
    schedule: &'a str,
    lock: String,
    shim: String,
    command: &'a [String],
}

/// The `/etc/cron.d` file of the model's jobs: each calls its instance's
/// shim in `bin`, under `flock -n` on `<lock_dir>/<unit>.lock`.
pub fn crontab(
    renderer: &Renderer,
    model: &Model,
    bin: &Utf8Path,
    lock_dir: &Utf8Path,
) -> Result<String, Error> {
    let jobs: Vec<CronJob<'_>> = model
        .instances
        .values()
        .flat_map(|i| i.jobs.values().map(move |j| (i, j)))
        .map(|(instance, job)| CronJob {
            unit: &job.unit,
            schedule: &job.schedule.cron,
            lock: lock_dir.join(format!("{}.lock", job.unit)).into_string(),
            shim: bin.join(&instance.command).into_string(),
            command: &job.command,
        })
        .collect();
    renderer.render(
        "crontab.cron.j2",
        &CronContext {
            project: &model.project,
            jobs,
        },
    )
}
