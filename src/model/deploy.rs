//! The `deploy` keys: what `djshim deploy` runs after switching an
//! instance, and how it knows the instance is healthy. Part of the model's
//! [`Builder`].

use std::time::Duration;

use super::{Builder, Scope};
use crate::config::{RawDeploy, RawHealth, StrList};

/// How an instance is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    /// manage.py commands run through the shim after a switch.
    pub steps: Vec<Vec<String>>,
    /// The command that restarts the instance's processes.
    pub restart: Vec<String>,
    pub health: Option<Health>,
    pub health_timeout: Duration,
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

impl Builder<'_> {
    /// `deploy`: the instance's keys, each one else `[defaults.deploy]`'s,
    /// else the default.
    pub(super) fn deploy(
        &mut self,
        project: &str,
        instance: &str,
        defaults: Option<&RawDeploy>,
        own: Option<&RawDeploy>,
    ) -> Deploy {
        let empty = RawDeploy::default();
        let (defaults, own) = (defaults.unwrap_or(&empty), own.unwrap_or(&empty));
        macro_rules! key {
            ($f:ident) => {
                match (&own.$f, &defaults.$f) {
                    (Some(v), _) => {
                        Some((v, format!("instances.{instance}.deploy.{}", stringify!($f))))
                    }
                    (None, Some(v)) => Some((v, format!("defaults.deploy.{}", stringify!($f)))),
                    (None, None) => None,
                }
            };
        }
        let scope = |key: String| Scope {
            project,
            instance: Some(instance),
            key,
        };
        let steps = match key!(steps) {
            None => vec![
                vec!["migrate".to_owned(), "--noinput".to_owned()],
                vec![
                    "collectstatic".to_owned(),
                    "--noinput".to_owned(),
                    "--clear".to_owned(),
                ],
            ],
            Some((list, key)) => list
                .get_ref()
                .iter()
                .enumerate()
                .filter_map(|(i, step)| self.command(step, &scope(format!("{key}[{i}]"))))
                .collect(),
        };
        let restart = match key!(restart) {
            None => vec![
                "systemctl".to_owned(),
                "try-restart".to_owned(),
                format!("{project}-{instance}.target"),
            ],
            Some((list, key)) => self.command(list, &scope(key)).unwrap_or_default(),
        };
        let health = key!(health).and_then(|(v, key)| match v.get_ref() {
            RawHealth::Url(url) => {
                let parsed = parse_url(url);
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
        let health_timeout = match key!(health_timeout) {
            None => Duration::from_secs(30),
            Some((v, key)) => {
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
                    Duration::from_secs(30)
                }
            }
        };
        Deploy {
            steps,
            restart,
            health,
            health_timeout,
        }
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

/// `http://host[:port][/path]`, host a name or an address.
fn parse_url(url: &str) -> Option<Health> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse().ok()?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let plain = |c: char| c.is_ascii_alphanumeric() || ".-:".contains(c);
    (!host.is_empty() && host.chars().all(plain) && !path.chars().any(char::is_whitespace)).then(
        || Health::Url {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        },
    )
}
