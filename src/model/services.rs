//! The `server`, `services` and `jobs` keys: what `djshim systemd` and
//! `djshim cron` are made from. Part of the model's [`Builder`].

use std::collections::BTreeMap;

use toml::Spanned;

use camino::Utf8PathBuf;

use super::{
    Builder, Job, RESERVED_UNIT, Run, Scope, Server, Service, Socket, is_name, merge, own_else,
};
use crate::config::{RawInstance, RawService, Str, StrList};
use crate::schedule::Schedule;

impl Builder<'_> {
    /// `server`, `services` and `jobs`, which need an account: without
    /// `user` they would run as root.
    pub(super) fn services(
        &mut self,
        project: &str,
        name: &Str,
        defaults: &RawInstance,
        inst: &RawInstance,
        has_user: bool,
    ) -> (
        Option<Server>,
        BTreeMap<String, Service>,
        BTreeMap<String, Job>,
    ) {
        let instance = name.get_ref();
        let server = self.server(project, instance, defaults, inst);
        let services = self.merged_services(project, instance, defaults, inst);
        let jobs = self.jobs(project, instance, defaults, inst);
        if !has_user && (server.is_some() || !services.is_empty() || !jobs.is_empty()) {
            let what = if server.is_some() {
                "a `server`"
            } else if services.is_empty() {
                "`jobs`"
            } else {
                "`services`"
            };
            self.error(
                name,
                &format!("instances.{instance}"),
                format!("instance `{instance}` has {what} but no `user`: it would run as root"),
                "set `user` to the account the instance runs as",
            );
        }
        (server, services, jobs)
    }

    /// The paths the instance's units hold in settings systemd reads
    /// unquoted (`EnvironmentFile=`, `WorkingDirectory=`, `ReadWritePaths=`,
    /// `StateDirectory=`, tmpfiles.d), where a quote would be read as part
    /// of the path and a space as its end: `dirs` are the resolved
    /// `state_dir`, `static_root` and `media_root`.
    pub(super) fn unit_paths(
        &mut self,
        own_at: &str,
        defaults: &RawInstance,
        inst: &RawInstance,
        dirs: [&Option<Utf8PathBuf>; 3],
        env_files: &[Utf8PathBuf],
    ) {
        let refuse = |b: &mut Self, v: &Str, key: &str, path: &Utf8PathBuf, glob: bool| {
            let why = if crate::quote::systemd_raw(path.as_str()).is_none() {
                "systemd reads this setting unquoted, so spaces, quotes, `\\` and control \
                 characters would change the path"
            } else if glob && path.as_str().contains(['*', '?', '[', ']']) {
                "systemd reads `EnvironmentFile=` as a glob pattern, so `*`, `?` and `[…]` \
                 would name other files"
            } else {
                return;
            };
            b.error(
                v,
                key,
                format!("`{path}` cannot stand in a unit file: {why}"),
                "rename the directory, or leave `server`, `services` and `jobs` out of \
                 this instance",
            );
        };
        let raw = [
            (
                inst.state_dir.as_ref(),
                defaults.state_dir.as_ref(),
                "state_dir",
            ),
            (
                inst.static_root.as_ref(),
                defaults.static_root.as_ref(),
                "static_root",
            ),
            (
                inst.media_root.as_ref(),
                defaults.media_root.as_ref(),
                "media_root",
            ),
        ];
        for ((own, default, name), path) in raw.into_iter().zip(dirs) {
            if let (Some((v, key)), Some(path)) =
                (own_else(own, default, own_at, "defaults", name), path)
            {
                refuse(self, v, &key, path, false);
            }
        }
        let list = own_else(
            inst.env_file.as_ref(),
            defaults.env_file.as_ref(),
            own_at,
            "defaults",
            "env_file",
        );
        if let Some((list, key)) = list {
            for (i, (v, path)) in list.get_ref().iter().zip(env_files).enumerate() {
                refuse(self, v, &format!("{key}[{i}]"), path, true);
            }
        }
    }

    /// `services` of the defaults and of the instance, merged by name.
    fn merged_services(
        &mut self,
        project: &str,
        instance: &str,
        defaults: &RawInstance,
        inst: &RawInstance,
    ) -> BTreeMap<String, Service> {
        let jobs = merge(instance, "jobs", defaults.jobs.as_ref(), inst.jobs.as_ref());
        let mut services = BTreeMap::new();
        for (name, (at, raw, key)) in merge(
            instance,
            "services",
            defaults.services.as_ref(),
            inst.services.as_ref(),
        ) {
            if !is_name(name) {
                self.error(
                    at,
                    &key,
                    format!("`{name}` is not a valid service name"),
                    "use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
                );
                continue;
            }
            if jobs.contains_key(name) {
                self.error(
                    at,
                    &key,
                    format!("`{name}` is both a service and a job of instance `{instance}`"),
                    "their units would have one name; rename one of them",
                );
                continue;
            }
            if let Some(service) = self.service(project, instance, name, at, raw, &key) {
                services.insert(name.to_owned(), service);
            }
        }
        services
    }

    fn service(
        &mut self,
        project: &str,
        instance: &str,
        name: &str,
        at: &Str,
        raw: &RawService,
        key: &str,
    ) -> Option<Service> {
        let scope = |k: &str| Scope {
            project,
            instance: Some(instance),
            key: format!("{key}.{k}"),
        };
        let run = match (&raw.manage, &raw.command) {
            (Some(args), None) => Run::Manage(self.words(args, &scope("manage"), false)?),
            (None, Some(args)) => Run::Python(self.words(args, &scope("command"), false)?),
            (both, _) => {
                let what = if both.is_some() { "both" } else { "neither" };
                self.error(
                    at,
                    key,
                    format!("service `{name}` has {what} `manage` and `command`"),
                    "give `manage = [\"sendalerts\"]` (manage.py's arguments) or \
                     `command = [\"-m\", \"celery\", …]` (the interpreter's), not both",
                );
                return None;
            }
        };
        let after = self.after(raw.after.as_ref(), &scope("after"));
        let service = self.unit_settings(raw.service.as_ref(), key, [project, instance]);
        Some(Service {
            name: name.to_owned(),
            unit: format!("{project}-{instance}-{name}"),
            run,
            after,
            service,
        })
    }

    /// `server.socket`: `ListenStream=` of the socket systemd holds for the
    /// server: `HOST:PORT` (an IP address, IPv6 in brackets), a port alone,
    /// or the absolute path of a unix socket.
    fn socket(&mut self, v: &Str, scope: &Scope<'_>) -> Option<Socket> {
        let value = self.expand(v, scope)?;
        if value.starts_with('/') {
            let plain = value
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"\"'\\%$".contains(c));
            if plain && !value.ends_with('/') {
                return Some(Socket::Unix(Utf8PathBuf::from(value)));
            }
        } else if value.parse::<std::net::SocketAddr>().is_ok()
            || value.parse::<u16>().is_ok_and(|p| p > 0)
                && value.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(Socket::Tcp(value));
        }
        self.error(
            v,
            &scope.key,
            format!("`{value}` is not a socket address"),
            "write `127.0.0.1:8001`, `[::1]:8001`, a port, or the path of a unix socket \
             (`/run/mywebsite-prod/http.sock`)",
        );
        None
    }

    /// `server`: the instance's or, failing that, `[defaults]`'s.
    fn server(
        &mut self,
        project: &str,
        instance: &str,
        defaults: &RawInstance,
        inst: &RawInstance,
    ) -> Option<Server> {
        let (raw, prefix) = match (&inst.server, &defaults.server) {
            (Some(s), _) => (s, format!("instances.{instance}.server")),
            (None, Some(s)) => (s, "defaults.server".to_owned()),
            (None, None) => return None,
        };
        let raw = raw.get_ref();
        let scope = |key: &str| Scope {
            project,
            instance: Some(instance),
            key: format!("{prefix}.{key}"),
        };
        let command = self.words(&raw.command, &scope("command"), false);
        let runtime_dir = raw
            .runtime_dir
            .as_ref()
            .and_then(|v| self.runtime_dir(v, &scope("runtime_dir")));
        let after = self.after(raw.after.as_ref(), &scope("after"));
        let socket = raw
            .socket
            .as_ref()
            .and_then(|v| self.socket(v, &scope("socket")));
        let service = self.unit_settings(raw.service.as_ref(), &prefix, [project, instance]);
        Some(Server {
            command: command?,
            runtime_dir,
            after,
            service,
            socket,
        })
    }

    /// `service`: further `[Service]` settings of a unit (the server's, a
    /// service's, a job's), by one rule for all: a setting that makes the
    /// unit what the shim is (`ExecStart=`, `User=`, `Group=`,
    /// `Environment=`, `EnvironmentFile=`, `WorkingDirectory=`, `Type=`) is
    /// refused; one that djshim writes itself with a default
    /// (`PrivateTmp=`, `Restart=` …) replaces djshim's line; any other is
    /// added. Values are systemd syntax, written as given, on one line.
    fn unit_settings(
        &mut self,
        raw: Option<&Spanned<BTreeMap<Str, Str>>>,
        prefix: &str,
        [project, instance]: [&str; 2],
    ) -> BTreeMap<String, String> {
        let mut service = BTreeMap::new();
        for (k, v) in raw.into_iter().flat_map(Spanned::get_ref) {
            let key = format!("{prefix}.service.{}", k.get_ref());
            let name = k.get_ref();
            if !(name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
                && name.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                self.error(
                    k,
                    &key,
                    format!("`{name}` is not a systemd setting name"),
                    "write it as in systemd.exec(5), e.g. `LimitNOFILE`",
                );
                continue;
            }
            if RESERVED_UNIT.contains(&name.as_str()) {
                self.error(
                    k,
                    &key,
                    format!("`{name}` is set by djshim itself"),
                    "djshim derives it from the instance's keys, as for the shim; remove it here",
                );
                continue;
            }
            let scope = Scope {
                project,
                instance: Some(instance),
                key: key.clone(),
            };
            let Some(value) = self.expand(v, &scope) else {
                continue;
            };
            if value.contains(['\n', '\r']) {
                self.error(
                    v,
                    &key,
                    "a unit setting cannot hold a line break".into(),
                    "put it on one line",
                );
                continue;
            }
            service.insert(name.clone(), value);
        }
        service
    }

    /// `RuntimeDirectory=`: relative, plain parts, no `..`.
    fn runtime_dir(&mut self, v: &Str, scope: &Scope<'_>) -> Option<String> {
        let value = self.expand(v, scope)?;
        let plain = |part: &str| {
            !part.is_empty()
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !value.is_empty() && value.split('/').all(plain) {
            return Some(value);
        }
        self.error(
            v,
            &scope.key,
            format!("`{value}` is not a directory name under /run"),
            "use a name like `{project}-{instance}`: letters, digits, `.`, `_`, `-`, `/` between parts",
        );
        None
    }

    /// Unit names to order after and pull in.
    fn after(&mut self, list: Option<&StrList>, scope: &Scope<'_>) -> Vec<String> {
        let mut after = Vec::new();
        for (i, v) in list.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
            let s = Scope {
                key: format!("{}[{i}]", scope.key),
                ..scope.clone()
            };
            let Some(value) = self.expand(v, &s) else {
                continue;
            };
            if value.contains('.')
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":_.@-".contains(&b))
            {
                after.push(value);
            } else {
                self.error(
                    v,
                    &s.key,
                    format!("`{value}` is not a unit name"),
                    "name a unit with its type, e.g. `postgresql.service`",
                );
            }
        }
        after
    }

    /// `jobs` of the defaults and of the instance, merged by name.
    fn jobs(
        &mut self,
        project: &str,
        instance: &str,
        defaults: &RawInstance,
        inst: &RawInstance,
    ) -> BTreeMap<String, Job> {
        let mut jobs = BTreeMap::new();
        for (name, (at, raw, key)) in
            merge(instance, "jobs", defaults.jobs.as_ref(), inst.jobs.as_ref())
        {
            if !is_name(name) {
                self.error(
                    at,
                    &key,
                    format!("`{name}` is not a valid job name"),
                    "use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
                );
                continue;
            }
            let scope = |k: &str| Scope {
                project,
                instance: Some(instance),
                key: format!("{key}.{k}"),
            };
            let manage = match (&raw.manage, &raw.command) {
                (Some(list), None) => self.words(list, &scope("manage"), true),
                (None, Some(list)) => {
                    self.warn(
                        list,
                        &scope("command").key,
                        "`command` of a job is the old spelling of `manage` (manage.py's \
                         arguments)"
                            .into(),
                        "write `manage = [...]`, as for services: `command` is the \
                         interpreter's arguments in `server` and `services`",
                    );
                    self.words(list, &scope("command"), true)
                }
                (both, _) => {
                    let what = if both.is_some() { "both" } else { "neither" };
                    self.error(
                        at,
                        &key,
                        format!("job `{name}` has {what} `manage` and `command`"),
                        "give `manage = [\"clearsessions\"]`: manage.py's arguments",
                    );
                    None
                }
            };
            let service = self.unit_settings(raw.service.as_ref(), &key, [project, instance]);
            let schedule = self
                .expand(&raw.schedule, &scope("schedule"))
                .and_then(|text| {
                    Schedule::parse(&text)
                        .map_err(|e| {
                            self.error(
                                &raw.schedule,
                                &scope("schedule").key,
                                e,
                                "write it as in crontab(5), e.g. `17 3 * * *` or `@daily`",
                            );
                        })
                        .ok()
                });
            if let (Some(manage), Some(schedule)) = (manage, schedule) {
                let unit = format!("{project}-{instance}-{name}");
                jobs.insert(
                    name.to_owned(),
                    Job {
                        name: name.to_owned(),
                        unit,
                        manage,
                        schedule,
                        service,
                    },
                );
            }
        }
        jobs
    }

    /// A non-empty list of arguments, expanded; `one_line` refuses line
    /// breaks (a crontab line cannot hold one).
    fn words(&mut self, list: &StrList, scope: &Scope<'_>, one_line: bool) -> Option<Vec<String>> {
        if list.get_ref().is_empty() {
            self.error(
                list,
                &scope.key,
                "the command is empty".into(),
                "give at least one argument",
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, v) in list.get_ref().iter().enumerate() {
            let s = Scope {
                key: format!("{}[{i}]", scope.key),
                ..scope.clone()
            };
            let value = self.expand(v, &s)?;
            if one_line && value.contains(['\n', '\r']) {
                self.error(
                    v,
                    &s.key,
                    "a job's argument cannot hold a line break".into(),
                    "a crontab line cannot carry one; put it on one line",
                );
                return None;
            }
            out.push(value);
        }
        Some(out)
    }
}
