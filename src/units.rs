//! `djshim systemd` and `djshim cron`: every process of an instance (its
//! application server, its services, its scheduled jobs) from the same
//! model as its shim, so that each runs the same interpreter, package,
//! account, environment and env files as `mywebsite-prod` typed in a shell;
//! one target per instance that they are part of; the socket systemd holds
//! for the server; the directories they need.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};
use minijinja::Value;
use serde::Serialize;

use crate::error::Error;
use crate::model::{Instance, Job, Model, Window, join};
use crate::render::{Artifact, FROM_PROFILE, Renderer};

pub use crate::render::{NIXOS_SERVICE_PATH, SERVICE_PATH};

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
    /// Directories the units may write outside `/var/lib`.
    writable: Vec<&'a str>,
    /// Those under `/var/lib`, relative to it: `StateDirectory=`, which
    /// systemd creates and gives to the account when a unit starts.
    state_directories: Vec<&'a str>,
    /// `ExecStart=`'s words, each escaped when printed.
    exec: Vec<String>,
    /// `<project>-<instance>`: the target every unit is part of.
    target: &'a str,
    /// The config's further `[Service]` settings (`service = { … }`).
    settings: Vec<Setting>,
    /// Their names: djshim's own line of the same name is left out.
    overridden: Vec<&'a str>,
}

#[derive(Serialize)]
struct ServerContext<'a> {
    #[serde(flatten)]
    base: Base<'a>,
    after: &'a [String],
    /// `RuntimeDirectory=` (under /run), also the server's
    /// `XDG_RUNTIME_DIR`: `runtime_dir`, else the unit's name.
    runtime_dir: &'a str,
    /// `ListenStream=` of the socket unit, when systemd holds the socket.
    socket: Option<&'a str>,
}

#[derive(Serialize)]
struct ServiceContext<'a> {
    #[serde(flatten)]
    base: Base<'a>,
    service: &'a str,
    after: &'a [String],
}

#[derive(Serialize)]
struct TargetContext<'a> {
    project: &'a str,
    instance: &'a str,
    unit: &'a str,
    /// The units the target pulls in.
    wants: Vec<String>,
}

#[derive(Serialize)]
struct SocketContext<'a> {
    project: &'a str,
    instance: &'a str,
    unit: &'a str,
    listen: &'a str,
}

#[derive(Serialize)]
struct TmpfilesContext<'a> {
    project: &'a str,
    instance: &'a str,
    user: &'a str,
    group: &'a str,
    directories: Vec<&'a str>,
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
/// An instance that runs its profile sets `PYTHONPATH`, `VIRTUAL_ENV` and
/// `PATH` to [`FROM_PROFILE`]; its launcher ([`Renderer::launcher`]) sets
/// them from the generation it starts unless an env file did: systemd
/// applies `EnvironmentFile=` after `Environment=`, and the shim its env
/// files after its own values, so the env file wins everywhere.
pub fn environment(instance: &Instance, server: bool, system: &str) -> Vec<(String, String)> {
    let mut vars = vec![(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        instance.settings.clone(),
    )];
    if instance.profile {
        vars.extend(
            [
                ("PYTHONPATH", FROM_PROFILE),
                ("PYTHONNOUSERSITE", "1"),
                ("VIRTUAL_ENV", FROM_PROFILE),
                ("PATH", FROM_PROFILE),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        vars.extend(
            instance
                .variables()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_string())),
        );
        return vars;
    }
    let pythonpath = instance.pythonpath_for(server);
    if !pythonpath.is_empty() {
        vars.push(("PYTHONPATH".into(), join(&pythonpath)));
    }
    vars.push(("PYTHONNOUSERSITE".into(), "1".into()));
    let mut path = vec![instance.python_bin().to_owned()];
    path.extend(instance.path.iter().cloned());
    vars.push(("PATH".into(), format!("{}:{system}", join(&path))));
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
    window: Option<&Utf8Path>,
    system: &str,
) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    if instance.profile {
        let service_path: Vec<Utf8PathBuf> = system.split(':').map(Utf8PathBuf::from).collect();
        words.extend([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            renderer.launcher(instance, server, !server, &service_path, window)?,
            unit.to_owned(),
        ]);
    } else {
        words.push(instance.python.to_string());
        if !server {
            words.push(instance.manage.to_string());
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
    settings: &'a BTreeMap<String, String>,
    system: &str,
) -> Base<'a> {
    // Paths go into settings systemd reads unquoted: the model has
    // refused those that cannot stand there.
    let (mut writable, mut state_directories) = (Vec::new(), Vec::new());
    for dir in writable_dirs(instance) {
        match state_directory(dir) {
            Some(relative) => state_directories.push(relative),
            None => writable.push(dir.as_str()),
        }
    }
    Base {
        project: &model.project,
        instance: &instance.name,
        unit,
        user: instance
            .user
            .as_deref()
            .expect("the model requires `user` for servers and jobs"),
        group: instance.group.as_deref(),
        environment: environment(instance, server, system)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        env_files: instance.env_files.iter().map(|p| p.as_str()).collect(),
        state_dir: instance.state_dir.as_deref().map(Utf8Path::as_str),
        writable,
        state_directories,
        exec,
        target: &instance.full_name,
        settings: settings
            .iter()
            .map(|(k, v)| Setting {
                name: Value::from_safe_string(k.clone()),
                value: Value::from_safe_string(v.clone()),
            })
            .collect(),
        overridden: settings.keys().map(String::as_str).collect(),
    }
}

/// The directories an instance writes and its units make: state, static
/// and media. Not the static root of an instance that runs its profile:
/// that is a link to the running generation's static files, which deploys
/// make (`crate::collected`); systemd's `StateDirectory=` and tmpfiles'
/// `d` would refuse a link, and the server never writes there.
fn writable_dirs(instance: &Instance) -> impl Iterator<Item = &Utf8Path> {
    let static_root = instance.static_root.as_ref().filter(|_| !instance.profile);
    [
        instance.state_dir.as_ref(),
        static_root,
        instance.media_root.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(Utf8PathBuf::as_path)
}

/// `dir` relative to `/var/lib`, where `StateDirectory=` can make it.
fn state_directory(dir: &Utf8Path) -> Option<&str> {
    dir.strip_prefix("/var/lib")
        .ok()
        .map(Utf8Path::as_str)
        .filter(|rest| !rest.is_empty())
}

/// Every unit of the model: per instance, `<project>-<instance>.target`
/// and, as configured, the server's `.service` (and `.socket`), one
/// `.service` per service, a `.service` and a `.timer` per job; and
/// `<project>-<instance>.tmpfiles.conf` for directories outside
/// `/var/lib`.
pub fn units(renderer: &Renderer, model: &Model) -> Result<Vec<Artifact>, Error> {
    units_with(renderer, model, SERVICE_PATH)
}

/// [`units`] with `system` as the system's directories of `PATH`, after
/// the instance's own ([`NIXOS_SERVICE_PATH`] for the NixOS module).
pub fn units_with(
    renderer: &Renderer,
    model: &Model,
    system: &str,
) -> Result<Vec<Artifact>, Error> {
    let mut out = Vec::new();
    for instance in model.instances.values() {
        if instance.server.is_some() || !instance.services.is_empty() || !instance.jobs.is_empty() {
            Units {
                renderer,
                model,
                instance,
                system,
                out: &mut out,
            }
            .all()?;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The units of one instance, added to `out`.
struct Units<'a, 'o> {
    renderer: &'a Renderer,
    model: &'a Model,
    instance: &'a Instance,
    /// The system's directories of `PATH`.
    system: &'a str,
    out: &'o mut Vec<Artifact>,
}

impl Units<'_, '_> {
    fn add(&mut self, name: String, template: &str, ctx: &impl Serialize) -> Result<String, Error> {
        let text = self.renderer.render(template, ctx)?;
        self.out.push(Artifact {
            name: name.clone(),
            mode: 0o644,
            bytes: text.into_bytes(),
        });
        Ok(name)
    }

    fn all(mut self) -> Result<(), Error> {
        let (model, instance) = (self.model, self.instance);
        let mut wants = Vec::new();
        if let Some(server) = &instance.server {
            if let Some(socket) = &server.socket {
                let ctx = SocketContext {
                    project: &model.project,
                    instance: &instance.name,
                    unit: &instance.full_name,
                    listen: socket.listen(),
                };
                let name = format!("{}.socket", instance.full_name);
                wants.push(self.add(name, "server.socket.j2", &ctx)?);
            }
            wants.push(self.server(server)?);
        }
        for service in instance.services.values() {
            wants.push(self.service(service)?);
        }
        for job in instance.jobs.values() {
            let ctx = job_context(self.renderer, model, instance, job, self.system)?;
            self.add(format!("{}.service", job.unit), "job.service.j2", &ctx)?;
            wants.push(self.add(format!("{}.timer", job.unit), "job.timer.j2", &ctx)?);
        }
        let ctx = TargetContext {
            project: &model.project,
            instance: &instance.name,
            unit: &instance.full_name,
            wants,
        };
        self.add(
            format!("{}.target", instance.full_name),
            "instance.target.j2",
            &ctx,
        )?;
        self.tmpfiles()
    }

    fn server(&mut self, server: &crate::model::Server) -> Result<String, Error> {
        let instance = self.instance;
        // The deploy window is the server's: only a profile instance is
        // deployed, through its launcher.
        let window = (instance.deploy.window != Window::Serve)
            .then(|| crate::layout::window(&self.model.profiles_dir, &instance.full_name));
        let exec = exec_line(
            self.renderer,
            instance,
            &instance.full_name,
            true,
            &server.command,
            window.as_deref(),
            self.system,
        )?;
        let ctx = ServerContext {
            base: base(
                self.model,
                instance,
                &instance.full_name,
                true,
                exec,
                &server.service,
                self.system,
            ),
            after: &server.after,
            // Every server gets one: its runtime files (gunicorn's control
            // socket) go there, never under the account's home.
            runtime_dir: server.runtime_dir.as_deref().unwrap_or(&instance.full_name),
            socket: server.socket.as_ref().map(crate::model::Socket::listen),
        };
        self.add(
            format!("{}.service", instance.full_name),
            "server.service.j2",
            &ctx,
        )
    }

    /// A service: manage.py's arguments, or the interpreter's (which, like
    /// the server's, get manage.py's directory first on `PYTHONPATH`).
    fn service(&mut self, service: &crate::model::Service) -> Result<String, Error> {
        let (args, python) = match &service.run {
            crate::model::Run::Manage(args) => (args, false),
            crate::model::Run::Python(args) => (args, true),
        };
        let exec = exec_line(
            self.renderer,
            self.instance,
            &service.unit,
            python,
            args,
            None,
            self.system,
        )?;
        let ctx = ServiceContext {
            base: base(
                self.model,
                self.instance,
                &service.unit,
                python,
                exec,
                &service.service,
                self.system,
            ),
            service: &service.name,
            after: &service.after,
        };
        self.add(
            format!("{}.service", service.unit),
            "service.service.j2",
            &ctx,
        )
    }

    /// The directories outside `/var/lib`, for systemd-tmpfiles.
    fn tmpfiles(&mut self) -> Result<(), Error> {
        let instance = self.instance;
        let outside: Vec<&str> = writable_dirs(instance)
            .filter(|d| state_directory(d).is_none())
            .map(Utf8Path::as_str)
            .collect();
        if !outside.is_empty() {
            let user = instance.user.as_deref().unwrap_or("root");
            let group = account_group(user, instance.group.as_deref());
            let ctx = TmpfilesContext {
                project: &self.model.project,
                instance: &instance.name,
                user,
                group: &group,
                directories: outside,
            };
            self.add(
                format!("{}.tmpfiles.conf", instance.full_name),
                "tmpfiles.conf.j2",
                &ctx,
            )?;
        }
        Ok(())
    }
}

/// The group a unit of `user` runs as, as `StateDirectory=` gives it:
/// `group` when set, else the account's primary group (by NSS), else
/// (no such account yet) the group of the account's name, which `useradd`
/// makes with it.
fn account_group(user: &str, group: Option<&str>) -> String {
    if let Some(group) = group {
        return group.to_owned();
    }
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .and_then(|account| nix::unistd::Group::from_gid(account.gid).ok().flatten())
        .map_or_else(|| user.to_owned(), |g| g.name)
}

fn job_context<'a>(
    renderer: &Renderer,
    model: &'a Model,
    instance: &'a Instance,
    job: &'a Job,
    system: &str,
) -> Result<JobContext<'a>, Error> {
    let exec = exec_line(
        renderer,
        instance,
        &job.unit,
        false,
        &job.manage,
        None,
        system,
    )?;
    Ok(JobContext {
        base: base(
            model,
            instance,
            &job.unit,
            false,
            exec,
            &job.service,
            system,
        ),
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
    /// The locks' directory (made by each line when missing).
    lock_dir: &'a str,
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
            shim: bin.join(&instance.full_name).into_string(),
            command: &job.manage,
        })
        .collect();
    renderer.render(
        "crontab.cron.j2",
        &CronContext {
            project: &model.project,
            lock_dir: lock_dir.as_str(),
            jobs,
        },
    )
}
