//! The `deploy` keys: what `djshim deploy` runs after switching an
//! instance, and how it knows the instance is healthy. Part of the model's
//! [`Builder`].

use std::time::Duration;

use toml::Spanned;

use super::{Builder, Scope, own_else};
use crate::config::{RawDeploy, RawHealth, Str, StrList};

/// How an instance is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    /// manage.py commands run with the candidate's code before anything
    /// changes for the site (before the window opens and the switch): the
    /// commands that do not change the schema and that the new code needs
    /// done before it serves (collectstatic, into the generation's own
    /// static directory).
    pub before: Vec<Vec<String>>,
    /// manage.py commands run through the shim after a switch, in the
    /// window: the ones that change the schema.
    pub steps: Vec<Vec<String>>,
    /// manage.py commands run once the new code serves (after the health
    /// probe); a failure rolls back as any step's does.
    pub after: Vec<Vec<String>>,
    /// The manage.py commands (by name) of `before`, `steps` and `after`
    /// that act on what every host of a fleet shares (the database): in a
    /// rollout across hosts, one host runs them and the others deploy with
    /// `--skip-shared`. The rest (collectstatic into the host's own static
    /// root) run on every host.
    pub shared: Vec<String>,
    /// The command that restarts the instance's processes.
    pub restart: Vec<String>,
    /// The command that starts them, at a first deploy (when nothing of
    /// the instance may run yet).
    pub start: Vec<String>,
    /// The command that stops them, when a first deploy is undone.
    pub stop: Option<Vec<String>>,
    pub health: Option<Health>,
    pub health_timeout: Duration,
    /// What the server does between the switch and the restart.
    pub window: Window,
    /// How long the server holds requests (or answers 503) at most.
    pub window_timeout: Duration,
}

/// What the server does while a deploy runs its steps (`[deploy] window`):
/// the old code keeps serving (and may fail against a schema the new
/// migrations changed), or requests wait, or get 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The old code serves until the restart (the default).
    Serve,
    /// The server is stopped; requests wait on the socket systemd holds.
    Stop,
    /// Requests get `503 Service Unavailable` with `Retry-After`.
    Unavailable,
}

impl Window {
    pub fn name(self) -> &'static str {
        match self {
            Window::Serve => "serve",
            Window::Stop => "stop",
            Window::Unavailable => "503",
        }
    }
}

/// When an instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `http://HOST[:PORT]/PATH` answers 2xx.
    Url {
        host: String,
        port: u16,
        path: String,
    },
    /// This command succeeds.
    Command(Vec<String>),
}

/// An instance's `[deploy]` table over `[defaults.deploy]`: where each
/// key is read from, and the scope its values expand in.
struct Tables<'a> {
    project: &'a str,
    instance: &'a str,
    own: &'a RawDeploy,
    defaults: &'a RawDeploy,
    own_at: String,
}

impl<'a> Tables<'a> {
    fn scope(&self, key: String) -> Scope<'a> {
        Scope {
            project: self.project,
            instance: Some(self.instance),
            key,
        }
    }
}

/// Key `$field` of `$tables`: the instance's value, else the default's,
/// with the dotted key it was read under.
macro_rules! key {
    ($tables:expr, $field:ident) => {
        own_else(
            $tables.own.$field.as_ref(),
            $tables.defaults.$field.as_ref(),
            &$tables.own_at,
            "defaults.deploy",
            stringify!($field),
        )
    };
}

impl Builder<'_> {
    /// `deploy`: the instance's keys, each one else `[defaults.deploy]`'s,
    /// else the default.
    pub(super) fn deploy(
        &mut self,
        project: &str,
        instance: &str,
        [defaults, own]: [&Option<RawDeploy>; 2],
        socket: bool,
        static_in_package: bool,
    ) -> Deploy {
        let empty = RawDeploy::default();
        let (defaults, own) = (
            defaults.as_ref().unwrap_or(&empty),
            own.as_ref().unwrap_or(&empty),
        );
        let tables = Tables {
            project,
            instance,
            own,
            defaults,
            own_at: format!("instances.{instance}.deploy"),
        };
        let scope = |key: String| tables.scope(key);
        let words = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let before = match key!(tables, before) {
            // Collected when the package was built.
            None if static_in_package => Vec::new(),
            None => vec![words(&["collectstatic", "--noinput", "--clear"])],
            Some((list, key)) => self.commands_of(list, &key, &scope),
        };
        let steps = match key!(tables, steps) {
            None => vec![words(&["migrate", "--noinput"])],
            Some((list, key)) => self.commands_of(list, &key, &scope),
        };
        let after = match key!(tables, after) {
            None => Vec::new(),
            Some((list, key)) => self.commands_of(list, &key, &scope),
        };
        let shared = match key!(tables, shared) {
            None => words(&["migrate"]),
            Some((list, key)) => self.shared(list, &key, [&before, &steps, &after]),
        };
        let (restart, start, stop) = self.commands(&tables);
        let health = key!(tables, health).and_then(|(v, key)| match v.get_ref() {
            RawHealth::Url(url) => {
                let url = self.expand(&Spanned::new(v.span(), url.clone()), &scope(key.clone()))?;
                let parsed = parse_url(&url);
                if parsed.is_none() {
                    self.error(
                        v,
                        &key,
                        format!("`{url}` is not an http:// URL"),
                        "give a URL of the instance, e.g. `http://127.0.0.1:8001/health`, or a command list",
                    );
                }
                parsed
            }
            RawHealth::Command(words) => {
                let mut out = Vec::new();
                for (i, w) in words.iter().enumerate() {
                    let word = toml::Spanned::new(v.span(), w.clone());
                    out.push(self.expand(&word, &scope(format!("{key}[{i}]")))?);
                }
                if out.is_empty() {
                    self.error(v, &key, "the command is empty".into(), "give at least one word");
                    return None;
                }
                Some(Health::Command(out))
            }
        });
        let health_timeout = self.seconds(key!(tables, health_timeout), 30);
        let window = self.window(key!(tables, window), socket);
        let window_timeout = self.seconds(key!(tables, window_timeout), 300);
        Deploy {
            before,
            steps,
            after,
            shared,
            restart,
            start,
            stop,
            health,
            health_timeout,
            window,
            window_timeout,
        }
    }

    /// `window`: `serve`, `stop` or `503`; the last two need a socket
    /// systemd holds for the server.
    fn window(&mut self, field: Option<(&Str, String)>, socket: bool) -> Window {
        match field {
            None => Window::Serve,
            Some((v, key)) => {
                let window = match v.get_ref().as_str() {
                    "serve" => Some(Window::Serve),
                    "stop" => Some(Window::Stop),
                    "503" => Some(Window::Unavailable),
                    _ => None,
                };
                match window {
                    None => self.error(
                        v,
                        &key,
                        format!("`{}` is not a window", v.get_ref()),
                        "give `serve` (the old code serves), `stop` (requests wait) or `503`",
                    ),
                    Some(w) if w != Window::Serve && !socket => self.error(
                        v,
                        &key,
                        format!(
                            "`window = \"{}\"` needs a server on a socket systemd holds",
                            w.name()
                        ),
                        "set `server.socket` (requests wait on it, or get 503 through it)",
                    ),
                    Some(_) => {}
                }
                window.unwrap_or(Window::Serve)
            }
        }
    }

    /// `shared`: names of the instance's own deploy commands (a name that
    /// is none of them would mark nothing, so a typo is refused).
    fn shared(
        &mut self,
        list: &StrList,
        key: &str,
        commands: [&Vec<Vec<String>>; 3],
    ) -> Vec<String> {
        let mut out = Vec::new();
        for word in list.get_ref() {
            let name = word.get_ref();
            let known = commands
                .iter()
                .any(|c| c.iter().any(|argv| argv[0] == *name));
            if known {
                out.push(name.clone());
            } else {
                self.error(
                    word,
                    key,
                    format!("`{name}` is none of the instance's deploy commands"),
                    "name the first word of a `before`, `steps` or `after` command, e.g. \
                     `shared = [\"migrate\"]`",
                );
            }
        }
        out
    }

    /// A timeout key: seconds, 1 to 3600.
    fn seconds(&mut self, field: Option<(&Spanned<i64>, String)>, default: u64) -> Duration {
        let Some((v, key)) = field else {
            return Duration::from_secs(default);
        };
        let seconds = *v.get_ref();
        if (1..=3600).contains(&seconds) {
            Duration::from_secs(seconds.unsigned_abs())
        } else {
            self.error(
                v,
                &key,
                format!("`{seconds}` is not a timeout"),
                "give seconds, 1 to 3600",
            );
            Duration::from_secs(default)
        }
    }

    /// `restart`, `start` and `stop`: each the instance's key, else
    /// `[defaults.deploy]`'s, else the default.
    fn commands(&mut self, tables: &Tables<'_>) -> (Vec<String>, Vec<String>, Option<Vec<String>>) {
        let scope = |key: String| tables.scope(key);
        let (project, instance) = (tables.project, tables.instance);
        let systemctl = |verb: &str| {
            vec![
                "systemctl".to_owned(),
                verb.to_owned(),
                format!("{project}-{instance}.target"),
            ]
        };
        let own_restart = key!(tables, restart).is_some();
        let restart = match key!(tables, restart) {
            None => systemctl("try-restart"),
            Some((list, key)) => self.command(list, &scope(key)).unwrap_or_default(),
        };
        // With a `restart` of one's own, a first deploy starts with it too,
        // and nothing is stopped: djshim does not guess at another manager.
        let start = match key!(tables, start) {
            None if own_restart => restart.clone(),
            None => systemctl("start"),
            Some((list, key)) => self.command(list, &scope(key)).unwrap_or_default(),
        };
        let stop = match key!(tables, stop) {
            None if own_restart => None,
            None => Some(systemctl("stop")),
            Some((list, key)) => self.command(list, &scope(key)),
        };
        (restart, start, stop)
    }

    /// A list of manage.py commands (`steps`, `after`), each non-empty.
    fn commands_of<'s>(
        &mut self,
        list: &Spanned<Vec<StrList>>,
        key: &str,
        scope: &dyn Fn(String) -> Scope<'s>,
    ) -> Vec<Vec<String>> {
        list.get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, step)| self.command(step, &scope(format!("{key}[{i}]"))))
            .collect()
    }

    /// A non-empty command, its words expanded.
    fn command(&mut self, list: &StrList, scope: &Scope<'_>) -> Option<Vec<String>> {
        if list.get_ref().is_empty() {
            self.error(
                list,
                &scope.key,
                "the command is empty".into(),
                "give at least one word",
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, w) in list.get_ref().iter().enumerate() {
            let s = Scope {
                key: format!("{}[{i}]", scope.key),
                ..scope.clone()
            };
            out.push(self.expand(w, &s)?);
        }
        Some(out)
    }
}

/// `http://host[:port][/path]`, host a name, an IPv4 address or an IPv6
/// address in brackets (`http://[::1]:8001/health`).
fn parse_url(url: &str) -> Option<Health> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, port) = if let Some(inside) = authority.strip_prefix('[') {
        let (host, after) = inside.split_once(']')?;
        let port = match after {
            "" => 80,
            p => port(p.strip_prefix(':')?)?,
        };
        let address = |c: char| c.is_ascii_hexdigit() || ".:".contains(c);
        (host.contains(':') && host.chars().all(address)).then_some((host, port))?
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, p)) => (host, port(p)?),
            None => (authority, 80),
        };
        let name = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
        host.chars().all(name).then_some((host, port))?
    };
    (!host.is_empty() && !path.chars().any(|c| c.is_whitespace() || c.is_control())).then(|| {
        Health::Url {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }
    })
}
