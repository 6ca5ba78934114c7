//! The serde mirror of `djshim.toml`: what the file says, nothing more.
//!
//! Every field keeps its source span ([`Spanned`]) so the model stage can
//! point at the exact place of a value it rejects. Unknown keys are errors
//! (`deny_unknown_fields`): a typo must never be silently ignored. No value
//! is interpreted here; that is [`crate::model`]'s job.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Diagnostic, Error, backticked};

/// A string value with its place in the file.
pub type Str = Spanned<String>;
/// A list of strings with the place of the list and of each item.
pub type StrList = Spanned<Vec<Str>>;

/// The config file as read: its name for messages, its text, its directory.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it, used in messages (`djshim.toml:3:1`).
    pub name: String,
    pub text: String,
    /// The absolute directory of the file; relative paths inside resolve here.
    pub dir: Utf8PathBuf,
}

impl Source {
    pub fn read(path: &Utf8Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let absolute = std::path::absolute(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let absolute = Utf8PathBuf::try_from(absolute).map_err(|e| Error::ConfigRead {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
        let dir = absolute
            .parent()
            .map_or_else(|| "/".into(), Utf8Path::to_owned);
        Ok(Source {
            name: path.to_string(),
            text,
            dir,
        })
    }

    /// A diagnostic pointing into this file.
    pub fn diagnostic(
        &self,
        span: Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::at(&self.name, &self.text, span, key, message)
    }
}

/// The top level of `djshim.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub project: Str,
    pub bin_dir: Option<Str>,
    pub profiles_dir: Option<Str>,
    pub units_dir: Option<Str>,
    #[serde(default)]
    pub defaults: RawInstance,
    #[serde(default)]
    pub instances: BTreeMap<Str, RawInstance>,
    pub build: Option<Spanned<RawBuild>>,
}

/// `[build]`: how `djshim build` makes a package from a commit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    pub repo: Option<Str>,
    #[serde(rename = "ref")]
    pub reference: Option<Str>,
    pub nix: Option<Str>,
    pub command: Option<StrList>,
    pub releases_dir: Option<Str>,
    pub user: Option<Str>,
}

/// The keys of one instance, or of `[defaults]`; every one optional here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub package: Option<Str>,
    pub manage: Option<Str>,
    pub python: Option<Str>,
    pub settings: Option<Str>,
    pub pythonpath: Option<StrList>,
    pub path: Option<StrList>,
    pub static_root: Option<Str>,
    pub static_in_package: Option<Str>,
    pub static_dirs: Option<StrList>,
    pub media_root: Option<Str>,
    pub state_dir: Option<Str>,
    pub env: Option<Spanned<BTreeMap<Str, Str>>>,
    pub env_file: Option<StrList>,
    pub user: Option<Str>,
    pub group: Option<Str>,
    pub confirm: Option<StrList>,
    /// The instance's port: `{port}` in its values.
    pub port: Option<Spanned<i64>>,
    pub server: Option<Spanned<RawServer>>,
    pub services: Option<Spanned<BTreeMap<Str, RawService>>>,
    pub jobs: Option<Spanned<BTreeMap<Str, RawJob>>>,
    pub deploy: Option<RawDeploy>,
}

/// `[defaults.deploy]`, `[instances.NAME.deploy]`: how `djshim deploy`
/// moves the instance; each key inherited on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    pub before: Option<Spanned<Vec<StrList>>>,
    pub steps: Option<Spanned<Vec<StrList>>>,
    pub after: Option<Spanned<Vec<StrList>>>,
    pub shared: Option<StrList>,
    pub restart: Option<StrList>,
    pub start: Option<StrList>,
    pub stop: Option<StrList>,
    pub health: Option<Spanned<RawHealth>>,
    pub health_timeout: Option<Spanned<i64>>,
    pub window: Option<Str>,
    pub window_timeout: Option<Spanned<i64>>,
}

/// A URL that must answer 2xx, or a command that must succeed.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHealth {
    Url(String),
    /// (Spans are lost inside an untagged enum: errors point at `health`.)
    Command(Vec<String>),
}

/// `[instances.NAME.server]`: the application server under systemd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub command: StrList,
    pub runtime_dir: Option<Str>,
    pub after: Option<StrList>,
    pub service: Option<Spanned<BTreeMap<Str, Str>>>,
    pub socket: Option<Str>,
}

/// `[instances.NAME.services.SVC]`: a long-running process of the instance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// manage.py's arguments (`["sendalerts"]`)…
    pub manage: Option<StrList>,
    /// …or the interpreter's (`["-m", "celery", …]`).
    pub command: Option<StrList>,
    pub after: Option<StrList>,
    pub service: Option<Spanned<BTreeMap<Str, Str>>>,
}

/// `[instances.NAME.jobs.JOB]`: a scheduled manage.py command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// manage.py's arguments (`["clearsessions"]`).
    pub manage: Option<StrList>,
    /// The old spelling of `manage` (djshim 0.1), kept with a warning.
    pub command: Option<StrList>,
    pub schedule: Str,
    pub service: Option<Spanned<BTreeMap<Str, Str>>>,
}

/// Parses the file, turning a TOML or shape error into a diagnostic that
/// names the key it belongs to.
pub fn parse(source: &Source) -> Result<RawConfig, Error> {
    toml::from_str(&source.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (mut message, help) = reword(e.message());
        // A missing key's span is its whole table: no key to name there.
        let key = if message.starts_with("missing key") {
            None
        } else {
            key_at(&source.text, span.start)
        };
        if message == "duplicate key" {
            message = format!("duplicate key `{}`", &source.text[span.clone()]);
        }
        let mut d = source.diagnostic(span, key, message);
        d.help = help;
        Error::Config(vec![d])
    })
}

/// Turns serde's wording into djshim's: "key" for "field", a short hint
/// instead of the full list of keys.
fn reword(message: &str) -> (String, Option<String>) {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .collect();
        let help = match closest(name, &known) {
            Some(best) => format!("did you mean `{best}`?"),
            None if known.is_empty() => "remove it".to_owned(),
            None => format!("known keys here: {}", backticked(&known)),
        };
        return (format!("unknown key `{name}`"), Some(help));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return (
            format!("missing key `{name}`"),
            Some(format!("add `{name} = …`")),
        );
    }
    let message = message
        .replace("invalid type: ", "wrong type: ")
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected a table");
    (message, None)
}

/// The known key nearest to a misspelt one, if it is near enough.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j] + 1).min(row[j + 1] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The dotted path of the innermost key whose key or value covers `offset`,
/// e.g. `instances.prod.settings` or `defaults.pythonpath[1]`.
///
/// A table's own span covers only its header, so every table is searched,
/// not just those whose span holds the offset.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let table = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(table.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn covers(span: Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(dotted(key.get_ref()));
        if covers(key.span(), offset)
            || find_in_value(value.get_ref(), offset, path)
            || covers(value.span(), offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(t) => find_in_table(t, offset, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let before = path.clone();
            if let Some(last) = path.last_mut() {
                let _ = write!(last, "[{i}]");
            }
            if find_in_value(item.get_ref(), offset, path) || covers(item.span(), offset) {
                return true;
            }
            *path = before;
            false
        }),
        _ => false,
    }
}

/// A key as it would be written in a dotted path: bare when it can be.
pub fn dotted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_reach_nested_values() {
        let text =
            "project = \"p\"\n[instances.prod]\nsettings = \"x\"\npythonpath = [\"a\", \"b\"]\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("\"x\"").as_deref(), Some("instances.prod.settings"));
        assert_eq!(at("\"b\"").as_deref(), Some("instances.prod.pythonpath[1]"));
        assert_eq!(at("project").as_deref(), Some("project"));
    }

    #[test]
    fn misspelt_keys_get_a_suggestion() {
        let (m, h) = reword("unknown field `settngs`, expected one of `settings`, `python`");
        assert_eq!(m, "unknown key `settngs`");
        assert_eq!(h.as_deref(), Some("did you mean `settings`?"));
    }
}
