//! The validated model: what the config means, one struct per instance.
//!
//! Every rule about values lives here: names, placeholders, paths, the
//! settings module, environment names. The result holds only absolute paths
//! and expanded strings, so the render stage can print it without further
//! thought. All problems of a config are collected, not just the first.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Component, Utf8Path, Utf8PathBuf};
use toml::Spanned;

use crate::config::{RawConfig, RawInstance, Source, Str, StrList, dotted};
use crate::error::{Diagnostic, Error};
use crate::schedule::Schedule;

pub use build::{Build, BuildWith, DEFAULT_RELEASES_DIR, Repo};
pub use deploy::{Deploy, Health};

mod build;
mod deploy;
mod placeholders;
mod services;
mod values;

pub use placeholders::{PlaceholderError, expand};

/// Where instance profiles live unless `profiles_dir` says otherwise.
pub const DEFAULT_PROFILES_DIR: &str = "/var/lib/djshim/profiles";

/// `[Service]` settings djshim writes itself; `server.service` may not.
const RESERVED_UNIT: &[&str] = &[
    "ExecStart",
    "User",
    "Group",
    "Environment",
    "EnvironmentFile",
    "WorkingDirectory",
    "Type",
];

/// Variables the shim sets from dedicated keys; `env` may not set them.
const RESERVED_ENV: &[(&str, &str)] = &[
    ("DJANGO_SETTINGS_MODULE", "settings"),
    ("PYTHONPATH", "pythonpath"),
    ("PYTHONHOME", "python"),
    ("PYTHONNOUSERSITE", "python"),
    ("VIRTUAL_ENV", "python"),
    ("PATH", "path"),
    ("DJANGO_STATIC_ROOT", "static_root"),
    ("DJANGO_STATICFILES_DIRS", "static_dirs"),
    ("DJANGO_MEDIA_ROOT", "media_root"),
];

/// The whole config, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// `project`: the first half of every shim name.
    pub project: String,
    /// Where `generate` writes, absolute.
    pub bin_dir: Utf8PathBuf,
    /// Where instance profiles live, absolute.
    pub profiles_dir: Utf8PathBuf,
    /// Where unit files are written, absolute.
    pub units_dir: Utf8PathBuf,
    /// The instances by name, in name order.
    pub instances: BTreeMap<String, Instance>,
    /// `[build]`, if the config has one.
    pub build: Option<Build>,
}

/// One instance with defaults merged, placeholders expanded, paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance name (`prod`).
    pub name: String,
    /// The shim's file name, `<project>-<instance>`.
    pub command: String,
    /// The package root: the configured path, or the profile link.
    pub package: Utf8PathBuf,
    /// True when `package` is the instance's profile link (no `package` key).
    pub profile: bool,
    /// Absolute path of manage.py.
    pub manage: Utf8PathBuf,
    /// Absolute path of the interpreter.
    pub python: Utf8PathBuf,
    /// `DJANGO_SETTINGS_MODULE`, a dotted identifier.
    pub settings: String,
    /// Exactly the entries of `PYTHONPATH`.
    pub pythonpath: Vec<Utf8PathBuf>,
    /// Directories put in front of `PATH`, after the interpreter's own.
    pub path: Vec<Utf8PathBuf>,
    pub static_root: Option<Utf8PathBuf>,
    pub static_dirs: Vec<Utf8PathBuf>,
    pub media_root: Option<Utf8PathBuf>,
    /// Working directory of the command; unchanged when `None`.
    pub state_dir: Option<Utf8PathBuf>,
    /// Further variables, in name order.
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=VALUE` lines read when the command runs, in order.
    pub env_files: Vec<Utf8PathBuf>,
    /// The account the command runs as, and its group (else the account's
    /// primary group).
    pub user: Option<String>,
    pub group: Option<String>,
    /// manage.py subcommands that need the instance name typed first.
    pub confirm: Vec<String>,
    /// The application server run by systemd, if any.
    pub server: Option<Server>,
    /// Further long-running processes, by name.
    pub services: BTreeMap<String, Service>,
    /// How `djshim deploy` moves the instance.
    pub deploy: Deploy,
    /// Scheduled manage.py commands, by name.
    pub jobs: BTreeMap<String, Job>,
}

/// An application server: the instance's python running `command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The interpreter's arguments (`-m gunicorn mywebsite.wsgi …`).
    pub command: Vec<String>,
    /// `RuntimeDirectory=`: a directory under /run owned by the account.
    pub runtime_dir: Option<String>,
    /// Units to start first and order after (`postgresql.service`).
    pub after: Vec<String>,
    /// Further `[Service]` settings, in name order.
    pub service: BTreeMap<String, String>,
    /// A socket systemd listens on and hands to the server.
    pub socket: Option<Socket>,
}

/// Where the server's listening socket is, when systemd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    /// `127.0.0.1:8001`, `[::1]:8001`, or a port alone.
    Tcp(String),
    /// A unix socket's path.
    Unix(Utf8PathBuf),
}

impl Socket {
    /// The value of `ListenStream=`.
    pub fn listen(&self) -> &str {
        match self {
            Socket::Tcp(address) => address,
            Socket::Unix(path) => path.as_str(),
        }
    }
}

/// A long-running process of the instance besides its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// `<project>-<instance>-<service>`: the unit's name.
    pub unit: String,
    /// manage.py's arguments, or the interpreter's.
    pub run: Run,
    /// Units to start first and order after.
    pub after: Vec<String>,
}

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// `manage.py ARGS`.
    Manage(Vec<String>),
    /// `python ARGS`.
    Python(Vec<String>),
}

impl Run {
    /// manage.py's arguments, for a `manage` service.
    pub fn manage(&self) -> Option<&Vec<String>> {
        match self {
            Run::Manage(args) => Some(args),
            Run::Python(_) => None,
        }
    }

    /// The interpreter's arguments, for a `command` service.
    pub fn python(&self) -> Option<&Vec<String>> {
        match self {
            Run::Python(args) => Some(args),
            Run::Manage(_) => None,
        }
    }
}

/// A scheduled manage.py command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    /// `<project>-<instance>-<job>`: the unit and lock name.
    pub unit: String,
    /// manage.py's arguments.
    pub command: Vec<String>,
    pub schedule: Schedule,
}

impl Instance {
    /// The instance as it would run `package` instead of its own: every
    /// path inside the current package moved to the same place in the new
    /// one. How `pin` checks a package before switching to it.
    #[must_use]
    pub fn rebased(&self, package: &Utf8Path) -> Instance {
        let move_path = |p: &Utf8PathBuf| match p.strip_prefix(&self.package) {
            Ok(rest) if rest.as_str().is_empty() => package.to_owned(),
            Ok(rest) => package.join(rest),
            Err(_) => p.clone(),
        };
        let move_all = |v: &Vec<Utf8PathBuf>| v.iter().map(move_path).collect();
        Instance {
            package: package.to_owned(),
            profile: false,
            manage: move_path(&self.manage),
            python: move_path(&self.python),
            pythonpath: move_all(&self.pythonpath),
            path: move_all(&self.path),
            static_dirs: move_all(&self.static_dirs),
            static_root: self.static_root.as_ref().map(move_path),
            media_root: self.media_root.as_ref().map(move_path),
            state_dir: self.state_dir.as_ref().map(move_path),
            ..self.clone()
        }
    }

    /// The interpreter's own `bin` directory, put first on `PATH`.
    pub fn python_bin(&self) -> &Utf8Path {
        self.python.parent().unwrap_or(Utf8Path::new("/"))
    }

    /// `PYTHONPATH` of a process of the instance. A server (the
    /// interpreter run with `-m …`) gets manage.py's directory first, as
    /// manage.py has it as its script's directory, so that
    /// `-m gunicorn mywebsite.wsgi` imports the package manage.py runs.
    pub fn pythonpath_for(&self, server: bool) -> Vec<Utf8PathBuf> {
        let mut paths = Vec::new();
        if server {
            paths.push(self.manage.parent().unwrap_or(&self.package).to_owned());
        }
        paths.extend(self.pythonpath.iter().cloned());
        paths
    }

    /// The Nix store paths that the files generated for this instance name
    /// (a fixed package, the interpreter, `pythonpath`, `path`,
    /// `static_dirs`): what the garbage collector must keep.
    pub fn store_paths(&self) -> BTreeSet<Utf8PathBuf> {
        let fixed = (!self.profile).then_some(&self.package);
        fixed
            .into_iter()
            .chain([&self.python])
            .chain(&self.pythonpath)
            .chain(&self.path)
            .chain(&self.static_dirs)
            .filter_map(|p| crate::gcroot::store_path_of(p))
            .collect()
    }

    /// The directory that is a virtualenv if it holds `pyvenv.cfg`.
    pub fn venv_root(&self) -> &Utf8Path {
        let bin = self.python_bin();
        bin.parent().unwrap_or(bin)
    }

    /// The environment the instance sets beside the Python variables, in
    /// the order the shim and the units export it: static paths, then `env`.
    /// The one list both read, so they cannot drift apart.
    pub fn variables(&self) -> Vec<(&str, Variable<'_>)> {
        let mut vars = Vec::new();
        if let Some(root) = &self.static_root {
            vars.push((
                "DJANGO_STATIC_ROOT",
                Variable::Paths(std::slice::from_ref(root)),
            ));
        }
        if !self.static_dirs.is_empty() {
            vars.push((
                "DJANGO_STATICFILES_DIRS",
                Variable::Paths(&self.static_dirs),
            ));
        }
        if let Some(root) = &self.media_root {
            vars.push((
                "DJANGO_MEDIA_ROOT",
                Variable::Paths(std::slice::from_ref(root)),
            ));
        }
        vars.extend(
            self.env
                .iter()
                .map(|(k, v)| (k.as_str(), Variable::Text(v))),
        );
        vars
    }
}

/// The value of one of an instance's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable<'a> {
    /// Paths, `:`-joined (inside a profile's package, the shim writes them
    /// relative to the generation it resolved).
    Paths(&'a [Utf8PathBuf]),
    /// Text, as written.
    Text(&'a str),
}

impl std::fmt::Display for Variable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variable::Paths(paths) => f.write_str(&join(paths)),
            Variable::Text(text) => f.write_str(text),
        }
    }
}

/// The one rule of inheritance: a key's value is the instance's own, else
/// `[defaults]`'s; with the dotted path of where it is written (for
/// errors). `own_at` and `defaults_at` are the tables' paths
/// (`instances.prod`, `defaults`; `instances.prod.deploy`,
/// `defaults.deploy`).
pub(crate) fn own_else<'a, T>(
    own: Option<&'a T>,
    defaults: Option<&'a T>,
    own_at: &str,
    defaults_at: &str,
    key: &str,
) -> Option<(&'a T, String)> {
    match (own, defaults) {
        (Some(v), _) => Some((v, format!("{own_at}.{key}"))),
        (None, Some(v)) => Some((v, format!("{defaults_at}.{key}"))),
        (None, None) => None,
    }
}

/// A table of `[defaults]` and the same table of an instance, merged by
/// entry name, the instance's entry winning; each entry with its name's
/// place and the dotted key it is written under.
fn merge<'a, V>(
    instance: &str,
    table: &str,
    defaults: Option<&'a Spanned<BTreeMap<Str, V>>>,
    own: Option<&'a Spanned<BTreeMap<Str, V>>>,
) -> BTreeMap<&'a str, (&'a Str, &'a V, String)> {
    let mut merged = BTreeMap::new();
    for (entries, prefix) in [
        (defaults, format!("defaults.{table}")),
        (own, format!("instances.{instance}.{table}")),
    ] {
        for (name, value) in entries.into_iter().flat_map(Spanned::get_ref) {
            merged.insert(
                name.get_ref().as_str(),
                (name, value, format!("{prefix}.{}", dotted(name.get_ref()))),
            );
        }
    }
    merged
}

/// `a:b:c`, the form of `PATH`-like variables.
pub fn join(paths: &[Utf8PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `name` may name a project or an instance: `[a-z0-9][a-z0-9_-]*`.
pub fn is_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `name` may name an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` may name an account: `[a-z_][a-z0-9_-]*` (a trailing `$`
/// allowed, as for Samba machine accounts), at most 32 characters.
pub fn is_account(name: &str) -> bool {
    let body = name;
    name.len() <= 32
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The most bytes one `env` value may hold: far below the kernel's limit
/// for one variable (128 KiB) and systemd's for one unit line (1 MiB),
/// so that the shim and the unit always start.
pub const MAX_ENV_VALUE: usize = 32 * 1024;

/// The instance whose generation link a name looks like
/// (`prod-1-link` → `prod`): profiles live side by side in one directory,
/// so such an instance would share its profile's name with a generation.
fn generation_link_of(name: &str) -> Option<&str> {
    let rest = name.strip_suffix("-link")?;
    let (owner, number) = rest.rsplit_once('-')?;
    (!owner.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then_some(owner)
}

/// Whether `module` is a dotted Python identifier (ASCII).
pub fn is_module(module: &str) -> bool {
    module.split('.').all(is_env_name)
}

impl Model {
    /// Validates a parsed config. Every problem found becomes one diagnostic.
    pub fn build(source: &Source, raw: &RawConfig) -> Result<Model, Error> {
        let mut b = Builder {
            source,
            errors: Vec::new(),
            seen: BTreeSet::new(),
        };
        let project = raw.project.get_ref().clone();
        if !is_name(&project) {
            b.error(
                &raw.project,
                "project",
                format!("`{project}` is not a valid project name"),
                "use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
            );
        }
        let dir = |b: &mut Builder, value: &Option<Str>, key: &str, default: &str| {
            let scope = Scope {
                project: &project,
                instance: None,
                key: key.to_owned(),
            };
            match value {
                Some(v) => b.path(v, &scope, Base::ConfigDir),
                None => Some(normalize(&source.dir.join(default))),
            }
        };
        let bin_dir = dir(&mut b, &raw.bin_dir, "bin_dir", "bin");
        let profiles_dir = dir(
            &mut b,
            &raw.profiles_dir,
            "profiles_dir",
            DEFAULT_PROFILES_DIR,
        );
        let units_dir = dir(&mut b, &raw.units_dir, "units_dir", "units");
        let build = raw.build.as_ref().and_then(|r| b.build(&project, r));

        let mut instances = BTreeMap::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (name, inst) in &raw.instances {
            let key = format!("instances.{}", dotted(name.get_ref()));
            if !is_name(name.get_ref()) {
                b.error(
                    name,
                    &key,
                    format!("`{}` is not a valid instance name", name.get_ref()),
                    "use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
                );
                continue;
            }
            if let Some(owner) = generation_link_of(name.get_ref()) {
                b.error(
                    name,
                    &key,
                    format!(
                        "`{}` is how the profile of instance `{owner}` names a generation link",
                        name.get_ref()
                    ),
                    "an instance name may not end in `-<number>-link`; rename the instance",
                );
                continue;
            }
            let profiles = profiles_dir
                .as_deref()
                .unwrap_or(Utf8Path::new(DEFAULT_PROFILES_DIR));
            if let Some(i) = b.instance(&project, name, &raw.defaults, inst, profiles) {
                // Shims and units share names: `<project>-<instance>` and
                // `<project>-<instance>-<job>` must not meet.
                let units = std::iter::once(&i.command)
                    .chain(i.services.values().map(|s| &s.unit))
                    .chain(i.jobs.values().map(|j| &j.unit));
                for unit in units {
                    if let Some(other) = names.insert(unit.clone(), i.name.clone()) {
                        b.error(
                            name,
                            &key,
                            format!("instances `{other}` and `{}` both make `{unit}`", i.name),
                            "rename an instance, a service or a job",
                        );
                    }
                }
                instances.insert(i.name.clone(), i);
            }
        }
        if !b.errors.is_empty() {
            return Err(Error::Config(b.errors));
        }
        Ok(Model {
            project,
            bin_dir: bin_dir.expect("no errors"),
            profiles_dir: profiles_dir.expect("no errors"),
            units_dir: units_dir.expect("no errors"),
            build,
            instances,
        })
    }

    /// The instances named on the command line, or all when none is named.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Instance>, Error> {
        if names.is_empty() {
            return Ok(self.instances.values().collect());
        }
        names
            .iter()
            .map(|n| {
                self.instances.get(n).ok_or_else(|| Error::UnknownInstance {
                    name: n.clone(),
                    known: self.instances.keys().cloned().collect(),
                })
            })
            .collect()
    }
}

/// What a relative path is relative to.
#[derive(Clone, Copy)]
enum Base<'a> {
    ConfigDir,
    Package(&'a Utf8Path),
    None,
}

/// Where a value is being read: for placeholders and for messages.
#[derive(Clone)]
struct Scope<'a> {
    project: &'a str,
    instance: Option<&'a str>,
    key: String,
}

struct Builder<'a> {
    source: &'a Source,
    errors: Vec<Diagnostic>,
    /// (line, column) of errors already reported: a bad value in `[defaults]`
    /// is reported once, not once per instance that inherits it.
    seen: BTreeSet<(usize, usize)>,
}

impl Builder<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, key: &str, message: String, help: &str) {
        let mut d = self
            .source
            .diagnostic(at.span(), Some(key.to_owned()), message);
        if !help.is_empty() {
            d = d.help(help);
        }
        if self.seen.insert((d.line, d.column)) {
            self.errors.push(d);
        }
    }

    fn instance(
        &mut self,
        project: &str,
        name: &Str,
        defaults: &RawInstance,
        inst: &RawInstance,
        profiles_dir: &Utf8Path,
    ) -> Option<Instance> {
        let instance = name.get_ref().as_str();
        let before = self.errors.len();
        // A key's value and the path of where it is written: the instance's
        // own table, else `[defaults]`.
        let own_at = format!("instances.{instance}");
        macro_rules! field {
            ($f:ident) => {
                own_else(
                    inst.$f.as_ref(),
                    defaults.$f.as_ref(),
                    &own_at,
                    "defaults",
                    stringify!($f),
                )
            };
        }
        let scope = |key: String| Scope {
            project,
            instance: Some(instance),
            key,
        };

        let (package, profile) = match field!(package) {
            Some((v, key)) => (self.path(v, &scope(key), Base::None), false),
            None => (
                Some(profiles_dir.join(format!("{project}-{instance}"))),
                true,
            ),
        };
        let manage = match field!(manage) {
            Some((v, key)) => self.relative(v, &scope(key)),
            None => Some(Utf8PathBuf::from("manage.py")),
        };
        let in_package = Base::Package(package.as_deref().unwrap_or(Utf8Path::new("/")));
        let python = if let Some((v, key)) = field!(python) {
            self.path(v, &scope(key), in_package)
        } else {
            let what = "the interpreter, e.g. `/nix/store/…-python3-env/bin/python3`";
            self.missing(name, instance, "python", what)
        };
        let settings = if let Some((v, key)) = field!(settings) {
            self.settings(v, &scope(key))
        } else {
            let what = "the settings module, e.g. `mywebsite.settings.{instance}`";
            self.missing(name, instance, "settings", what)
        };
        let pythonpath = self.list(field!(pythonpath), &scope, in_package);
        let path = self.list(field!(path), &scope, in_package);
        let static_dirs = self.list(field!(static_dirs), &scope, Base::ConfigDir);
        let mut single = |field: Option<(&Str, String)>| {
            field.and_then(|(v, key)| self.path(v, &scope(key), Base::ConfigDir))
        };
        let static_root = single(field!(static_root));
        let media_root = single(field!(media_root));
        let state_dir = single(field!(state_dir));
        let env = self.env(project, instance, defaults, inst);
        let env_files = self.env_files(field!(env_file), &scope);
        let user = field!(user).and_then(|(v, key)| self.account(v, &scope(key)));
        let group = field!(group).and_then(|(v, key)| self.account(v, &scope(key)));
        if let (Some((v, key)), None) = (field!(group), field!(user)) {
            self.error(
                v,
                &key,
                "`group` without `user`".into(),
                "set `user` too: the group is that of the account the command runs as",
            );
        }
        let confirm = self.names(field!(confirm), &scope);
        let (server, services, jobs) = self.services(project, name, defaults, inst, user.is_some());
        let deploy = self.deploy(
            project,
            instance,
            defaults.deploy.as_ref(),
            inst.deploy.as_ref(),
        );

        if self.errors.len() > before {
            return None;
        }
        let package = package?;
        Some(Instance {
            name: instance.to_owned(),
            command: format!("{project}-{instance}"),
            manage: normalize(&package.join(manage?)),
            package,
            profile,
            python: python?,
            settings: settings?,
            pythonpath,
            path,
            static_root,
            static_dirs,
            media_root,
            state_dir,
            env,
            env_files,
            user,
            group,
            confirm,
            server,
            services,
            deploy,
            jobs,
        })
    }

    /// `env_file`: paths relative to the config.
    fn env_files<'s>(
        &mut self,
        field: Option<(&StrList, String)>,
        scope: &dyn Fn(String) -> Scope<'s>,
    ) -> Vec<Utf8PathBuf> {
        self.list(field, scope, Base::ConfigDir)
    }

    /// A user or group name as `useradd` accepts it.
    pub(super) fn account(&mut self, v: &Str, scope: &Scope<'_>) -> Option<String> {
        let value = self.expand(v, scope)?;
        if value.ends_with('$') {
            self.error(
                v,
                &scope.key,
                format!("`{value}` ends in `$`, the mark of a Samba machine account"),
                "run the instance as a service account (`useradd --system NAME`); names ending \
                 in `$` are refused so that the shim and the unit cannot read them differently",
            );
            return None;
        }
        if is_account(&value) {
            Some(value)
        } else {
            self.error(
                v,
                &scope.key,
                format!("`{value}` is not a valid account name"),
                "use lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32",
            );
            None
        }
    }

    /// manage.py subcommand names (Python identifiers).
    fn names<'s>(
        &mut self,
        field: Option<(&StrList, String)>,
        scope: &dyn Fn(String) -> Scope<'s>,
    ) -> Vec<String> {
        let Some((items, key)) = field else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.get_ref().iter().enumerate() {
            let s = scope(format!("{key}[{i}]"));
            let Some(value) = self.expand(item, &s) else {
                continue;
            };
            if is_env_name(&value) {
                out.push(value);
            } else {
                self.error(
                    item,
                    &s.key,
                    format!("`{value}` is not a manage.py subcommand name"),
                    "name it as you type it after manage.py, e.g. `flush`",
                );
            }
        }
        out
    }

    /// Reports a required key that neither the instance nor `[defaults]` sets.
    fn missing<T>(&mut self, name: &Str, instance: &str, key: &str, what: &str) -> Option<T> {
        self.error(
            name,
            &format!("instances.{instance}"),
            format!("instance `{instance}` has no `{key}`"),
            &format!("set `{key}` ({what}) in `[instances.{instance}]` or in `[defaults]`"),
        );
        None
    }

    /// `env` of the defaults and of the instance, merged by name (the
    /// instance wins), names checked, values expanded.
    fn env(
        &mut self,
        project: &str,
        instance: &str,
        defaults: &RawInstance,
        inst: &RawInstance,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, (k, v, key)) in merge(instance, "env", defaults.env.as_ref(), inst.env.as_ref())
        {
            if !is_env_name(name) {
                self.error(
                    k,
                    &key,
                    format!("`{name}` is not a valid environment variable name"),
                    "use letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            if let Some((_, owner)) = RESERVED_ENV.iter().find(|(n, _)| *n == name) {
                self.error(
                    k,
                    &key,
                    format!("`{name}` is set by djshim itself"),
                    &format!("use the `{owner}` key instead of `env`"),
                );
                continue;
            }
            if name.starts_with("DJSHIM_") || name.starts_with("djshim_") {
                self.error(
                    k,
                    &key,
                    format!("`{name}` would steer the shim itself"),
                    "names starting with `DJSHIM_` or `djshim_` are djshim's; pick another name",
                );
                continue;
            }
            let scope = Scope {
                project,
                instance: Some(instance),
                key,
            };
            if let Some(value) = self.expand(v, &scope) {
                if value.len() > MAX_ENV_VALUE {
                    self.error(
                        v,
                        &scope.key,
                        format!(
                            "the value of `{name}` is {} bytes; the most a variable may hold is {MAX_ENV_VALUE}",
                            value.len()
                        ),
                        "the kernel refuses to start a command with a variable over 128 KiB \
                         and systemd a unit line over 1 MiB; keep large data in a file the \
                         application reads, and its path here",
                    );
                    continue;
                }
                env.insert(name.to_owned(), value);
            }
        }
        env
    }

    fn settings(&mut self, v: &Str, scope: &Scope<'_>) -> Option<String> {
        let value = self.expand(v, scope)?;
        if is_module(&value) {
            Some(value)
        } else {
            self.error(
                v,
                &scope.key,
                format!("`{value}` is not a dotted Python module name"),
                "write it the way Python imports it, e.g. `mywebsite.settings.production`",
            );
            None
        }
    }
}

/// Lexically normalized: `.` and repeated `/` dropped; `..` kept, since
/// removing it would be wrong across symlinks.
pub fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    let mut out = Utf8PathBuf::new();
    for c in path.components() {
        if c != Utf8Component::CurDir {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_braces_escape() {
        assert_eq!(
            expand("{project}-{instance} {{x}}", "p", Some("i")).unwrap(),
            "p-i {x}"
        );
        assert_eq!(expand("a{nope}", "p", Some("i")).unwrap_err().at, 1);
        assert_eq!(
            expand("a}", "p", None).unwrap_err().message,
            "unmatched `}`"
        );
        assert!(expand("{instance}", "p", None).is_err());
        assert_eq!(expand("{", "p", None).unwrap_err().message, "unclosed `{`");
    }

    #[test]
    fn names() {
        assert!(is_name("prod") && is_name("0a_b-c"));
        assert!(!is_name("../x") && !is_name("Prod") && !is_name("-x") && !is_name(""));
        assert!(is_module("a.b_c.D1") && !is_module("a..b") && !is_module("1a") && !is_module(""));
    }
}
