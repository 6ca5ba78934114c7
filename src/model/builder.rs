//! The model's builder: the raw config checked and turned into the
//! model, every problem collected; and the one rule of inheritance (an
//! instance's own key, else `[defaults]`'s).

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};
use toml::Spanned;

use super::{
    DEFAULT_PROFILES_DIR, Instance, MAX_ENV_VALUE, Model, RESERVED_ENV, generation_link_of,
    is_account, is_env_name, is_module, is_name, normalize,
};
use crate::config::{RawConfig, RawInstance, Source, Str, StrList, dotted};
use crate::error::{Diagnostic, Error};

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
pub(super) fn merge<'a, V>(
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

impl Model {
    /// Validates a parsed config. Every problem found becomes one diagnostic.
    pub fn build(source: &Source, raw: &RawConfig) -> Result<Model, Error> {
        let mut b = Builder {
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
            port: None,
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
                let units = std::iter::once(&i.full_name)
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
            warnings: b.warnings,
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
pub(super) enum Base<'a> {
    ConfigDir,
    Package(&'a Utf8Path),
    None,
}

/// Where a value is being read: for placeholders and for messages.
#[derive(Clone)]
pub(super) struct Scope<'a> {
    pub(super) project: &'a str,
    pub(super) instance: Option<&'a str>,
    pub(super) key: String,
}

pub(super) struct Builder<'a> {
    pub(super) source: &'a Source,
    pub(super) errors: Vec<Diagnostic>,
    /// What the config should change, though it is valid.
    pub(super) warnings: Vec<Diagnostic>,
    /// The `port` of the instance being built: `{port}`.
    pub(super) port: Option<u16>,
    /// (line, column) of errors already reported: a bad value in `[defaults]`
    /// is reported once, not once per instance that inherits it.
    pub(super) seen: BTreeSet<(usize, usize)>,
}

impl Builder<'_> {
    /// A warning: the config works, but should change.
    pub(super) fn warn<T>(&mut self, at: &Spanned<T>, key: &str, message: String, help: &str) {
        let d = self
            .source
            .diagnostic(at.span(), Some(key.to_owned()), message)
            .help(help);
        if !self
            .warnings
            .iter()
            .any(|w| (w.line, w.column) == (d.line, d.column))
        {
            self.warnings.push(d);
        }
    }

    pub(super) fn error<T>(&mut self, at: &Spanned<T>, key: &str, message: String, help: &str) {
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

    pub(super) fn instance(
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

        self.port = field!(port).and_then(|(v, key)| self.port(v, &key));
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
        let in_package = field!(static_in_package);
        let static_in_package =
            self.static_in_package(in_package, &scope, static_root.as_ref(), profile);
        let env = self.env(project, instance, defaults, inst);
        let env_files = self.env_files(field!(env_file), &scope);
        let user = field!(user).and_then(|(v, key)| self.account(v, &scope(key)));
        let group = field!(group).and_then(|(v, key)| self.account(v, &scope(key)));
        self.group_needs_user(field!(group), field!(user).is_some());
        let confirm = self.names(field!(confirm), &scope);
        let (server, services, jobs) = self.services(project, name, defaults, inst, user.is_some());
        if server.is_some() || !services.is_empty() || !jobs.is_empty() {
            let dirs = [&state_dir, &static_root, &media_root];
            self.unit_paths(&own_at, defaults, inst, dirs, &env_files);
        }
        let socket = server.as_ref().is_some_and(|s| s.socket.is_some());
        let raw = [&defaults.deploy, &inst.deploy];
        let deploy = self.deploy(project, instance, raw, socket, static_in_package.is_some());

        if self.errors.len() > before {
            return None;
        }
        let package = package?;
        Some(Instance {
            name: instance.to_owned(),
            full_name: format!("{project}-{instance}"),
            manage: normalize(&package.join(manage?)),
            package,
            profile,
            python: python?,
            settings: settings?,
            pythonpath,
            path,
            static_root,
            static_in_package,
            static_dirs,
            media_root,
            state_dir,
            env,
            env_files,
            user,
            group,
            confirm,
            port: self.port,
            server,
            services,
            deploy,
            jobs,
        })
    }

    /// `port`: 1 to 65535.
    fn port(&mut self, v: &Spanned<i64>, key: &str) -> Option<u16> {
        let port = u16::try_from(*v.get_ref()).ok().filter(|p| *p > 0);
        if port.is_none() {
            self.error(
                v,
                key,
                format!("`{}` is not a port", v.get_ref()),
                "give a TCP port, 1 to 65535, e.g. `port = 8001`",
            );
        }
        port
    }

    /// `group` names the group of the account `user` runs as.
    fn group_needs_user(&mut self, group: Option<(&Str, String)>, user: bool) {
        if let (Some((v, key)), false) = (group, user) {
            self.error(
                v,
                &key,
                "`group` without `user`".into(),
                "set `user` too: the group is that of the account the command runs as",
            );
        }
    }

    /// `env_file`: paths relative to the config.
    pub(super) fn env_files<'s>(
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
    pub(super) fn names<'s>(
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
    pub(super) fn missing<T>(
        &mut self,
        name: &Str,
        instance: &str,
        key: &str,
        what: &str,
    ) -> Option<T> {
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
    pub(super) fn env(
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

    pub(super) fn settings(&mut self, v: &Str, scope: &Scope<'_>) -> Option<String> {
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
