//! The validated model: what the config means, one struct per instance.
//!
//! Every rule about values lives in this module: its types here, the
//! builder that checks a raw config into them in `model/builder.rs` (every
//! problem collected, not just the first), the name rules in
//! `model/names.rs`, one table's keys per file beside them (build, deploy,
//! services, values, placeholders). The result holds only absolute paths
//! and expanded strings, so the render stage can print it without further
//! thought.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};

use crate::schedule::Schedule;

pub use build::{Build, BuildWith, DEFAULT_RELEASES_DIR, Repo};
pub use deploy::{Deploy, Health, Window};

mod build;
mod builder;
mod deploy;
mod names;
mod placeholders;
mod services;
mod values;

pub(crate) use builder::own_else;
use builder::{Base, Builder, Scope, merge};
use names::generation_link_of;
pub use names::{MAX_ENV_VALUE, is_account, is_env_name, is_module, is_name, join, normalize};

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
    /// What the config should change though it is valid (an old spelling).
    pub warnings: Vec<crate::error::Diagnostic>,
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
    /// `<project>-<instance>`: the file name of its shim, the name of its
    /// units and of its profile.
    pub full_name: String,
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
    /// Where each package holds its static files, collected when it was
    /// built (relative to the package): a generation's static directory
    /// is then in its package, and a deploy collects nothing.
    pub static_in_package: Option<Utf8PathBuf>,
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
    /// `port`: what `{port}` stands for in the instance's values.
    pub port: Option<u16>,
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
    /// Further `[Service]` settings of its unit.
    pub service: BTreeMap<String, String>,
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
    pub manage: Vec<String>,
    pub schedule: Schedule,
    /// Further `[Service]` settings of its unit.
    pub service: BTreeMap<String, String>,
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

    /// Where generation `number` on `package` keeps its collected static
    /// files: for an instance that runs its profile and has a
    /// `static_root`, `<package>/<static_in_package>` (collected at build
    /// time) or else `<static_root>-<N>` (collected by its deploy); the
    /// root is then a link to the running generation's, moved by every
    /// switch. Else none.
    pub fn generation_static(&self, number: u32, package: &Utf8Path) -> Option<Utf8PathBuf> {
        let root = self.static_root.as_deref().filter(|_| self.profile)?;
        Some(match &self.static_in_package {
            Some(inside) => package.join(inside),
            None => crate::layout::generation_static(root, number),
        })
    }

    /// The instance as generation `number` on `package` runs before it is
    /// switched to (its deploy's questions and `before` steps, a rollback's
    /// way back): [`Instance::rebased`], with its static files in the
    /// generation's own directory.
    #[must_use]
    pub fn generation(&self, number: u32, package: &Utf8Path) -> Instance {
        let mut instance = self.rebased(package);
        if let Some(dir) = self.generation_static(number, package) {
            instance.static_root = Some(dir);
        }
        instance
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_braces_escape() {
        assert_eq!(
            expand("{project}-{instance} {{x}}", "p", Some("i"), None).unwrap(),
            "p-i {x}"
        );
        assert_eq!(expand("a{nope}", "p", Some("i"), None).unwrap_err().at, 1);
        assert_eq!(
            expand("a}", "p", None, None).unwrap_err().message,
            "unmatched `}`"
        );
        assert!(expand("{instance}", "p", None, None).is_err());
        assert_eq!(
            expand("{", "p", None, None).unwrap_err().message,
            "unclosed `{`"
        );
        assert_eq!(
            expand("h:{port}", "p", Some("i"), Some(8001)).unwrap(),
            "h:8001"
        );
        assert!(expand("{port}", "p", Some("i"), None).is_err());
    }

    #[test]
    fn names() {
        assert!(is_name("prod") && is_name("0a_b-c"));
        assert!(!is_name("../x") && !is_name("Prod") && !is_name("-x") && !is_name(""));
        assert!(is_module("a.b_c.D1") && !is_module("a..b") && !is_module("1a") && !is_module(""));
    }
}
