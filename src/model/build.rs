//! The `[build]` table: where the code is and how a commit becomes a
//! package. Part of the model's [`Builder`].

use camino::{Utf8Component, Utf8Path, Utf8PathBuf};
use toml::Spanned;

use super::{Base, Builder, Scope};
use crate::config::RawBuild;

/// Where releases built with `command` go, and nix-build's out-links.
pub const DEFAULT_RELEASES_DIR: &str = "/var/lib/djshim/releases";

/// How `djshim build` makes packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub repo: Repo,
    /// The ref to build when none is given; `None`: the repository's HEAD.
    pub reference: Option<String>,
    pub with: BuildWith,
    /// Absolute.
    pub releases_dir: Utf8PathBuf,
    /// The account the commit's code runs as (required when djshim runs
    /// as root).
    pub user: Option<String>,
}

/// A git repository: a directory, or a URL fetched into a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repo {
    Path(Utf8PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildWith {
    /// A Nix file inside the commit, relative to its root.
    Nix(Utf8PathBuf),
    /// A command run inside the exported commit.
    Command(Vec<String>),
}

impl Builder<'_> {
    pub(super) fn build(&mut self, project: &str, raw: &Spanned<RawBuild>) -> Option<Build> {
        let at = raw;
        let raw = raw.get_ref();
        let scope = |key: &str| Scope {
            project,
            instance: None,
            key: format!("build.{key}"),
        };
        let repo = match &raw.repo {
            None => Some(Repo::Path(self.dir().to_owned())),
            Some(v) => {
                let value = self.expand(v, &scope("repo"))?;
                if value.contains("://") || (value.contains(':') && !value.starts_with('/')) {
                    Some(Repo::Url(value))
                } else {
                    self.path(v, &scope("repo"), Base::ConfigDir)
                        .map(Repo::Path)
                }
            }
        };
        let reference = raw.reference.as_ref().and_then(|v| {
            let value = self.expand(v, &scope("ref"))?;
            if value.is_empty() || value.starts_with('-') || value.chars().any(char::is_whitespace)
            {
                self.error(
                    v,
                    "build.ref",
                    format!("`{value}` is not a git ref"),
                    "name a branch, a tag or a commit, e.g. `main`",
                );
                return None;
            }
            Some(value)
        });
        let with = match (&raw.nix, &raw.command) {
            (Some(v), None) => {
                let value = self.expand(v, &scope("nix"))?;
                let path = Utf8PathBuf::from(&value);
                let inside = !value.is_empty()
                    && path
                        .components()
                        .all(|c| matches!(c, Utf8Component::Normal(_) | Utf8Component::CurDir));
                if !inside {
                    self.error(
                        v,
                        "build.nix",
                        format!("`{value}` is not a file inside the repository"),
                        "name the Nix file relative to the repository's root, e.g. `default.nix`",
                    );
                    return None;
                }
                BuildWith::Nix(path)
            }
            (None, Some(list)) => {
                let mut words = Vec::new();
                for (i, v) in list.get_ref().iter().enumerate() {
                    words.push(self.expand(v, &scope(&format!("command[{i}]")))?);
                }
                if words.is_empty() {
                    self.error(
                        list,
                        "build.command",
                        "the command is empty".into(),
                        "give at least one argument",
                    );
                    return None;
                }
                BuildWith::Command(words)
            }
            (both, _) => {
                let what = if both.is_some() { "both" } else { "neither" };
                self.error(
                    at,
                    "build",
                    format!("`[build]` has {what} `nix` and `command`"),
                    "give `nix = \"default.nix\"` (a Nix file in the repository) or \
                     `command = [\"sh\", \"build.sh\"]` (run in the exported commit)",
                );
                return None;
            }
        };
        let releases_dir = match &raw.releases_dir {
            Some(v) => self.path(v, &scope("releases_dir"), Base::ConfigDir)?,
            None => Utf8PathBuf::from(DEFAULT_RELEASES_DIR),
        };
        let user = match &raw.user {
            Some(v) => Some(self.account(v, &scope("user"))?),
            None => None,
        };
        Some(Build {
            repo: repo?,
            reference,
            with,
            releases_dir,
            user,
        })
    }

    fn dir(&self) -> &Utf8Path {
        &self.source.dir
    }
}
