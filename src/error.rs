//! Every way djshim can fail, how a user reads it, and its exit status.
//!
//! The kinds of failure and their layout live here: a problem's message
//! and its `help` (the fix) are two fields, written out in one place, and
//! the exit status follows from the kind of failure, never from the call
//! site. Config errors carry [`Diagnostic`]s that point at the file, line
//! and key. The wording of one problem stays where the problem is found,
//! with the values it names.

use std::fmt;
use std::io;
use std::ops::Range;
use std::process::ExitCode;

use camino::{Utf8Path, Utf8PathBuf};

/// The command ran and found a problem (check failed, refused to overwrite).
pub const EXIT_PROBLEM: u8 = 1;
/// Bad usage or an invalid config.
pub const EXIT_USAGE: u8 = 2;
/// A deploy, rollback or pin failed once it had begun to change the
/// instance, and undid what it did: the instance runs what it ran before.
pub const EXIT_UNDONE: u8 = 3;
/// A deploy, rollback or pin failed and could not undo what it did (or was
/// stopped in its undo): its journal is kept, and says what is left.
pub const EXIT_NOT_UNDONE: u8 = 4;

/// A failure of one djshim command.
#[derive(Debug)]
pub enum Error {
    /// The config file could not be read.
    ConfigRead {
        path: Utf8PathBuf,
        source: io::Error,
    },
    /// The config is invalid; every problem found is listed.
    Config(Vec<Diagnostic>),
    /// The command found a problem it explains itself (exit 1), and what
    /// to do about it when there is something to say.
    Problem {
        message: String,
        help: Option<String>,
    },
    /// A command-line value clap could not judge, and the fix when there
    /// is one to say.
    Usage {
        message: String,
        help: Option<String>,
    },
    /// An instance named on the command line is not in the config.
    UnknownInstance { name: String, known: Vec<String> },
    /// Files that djshim did not write stand where it would write.
    Foreign { paths: Vec<Utf8PathBuf> },
    /// Files to write that another project's manifest lists.
    OtherProject { paths: Vec<(Utf8PathBuf, String)> },
    /// `init` found a config already in place.
    Exists { path: Utf8PathBuf },
    /// The manifest of an output directory is not one djshim wrote.
    Manifest {
        path: Utf8PathBuf,
        line: usize,
        problem: String,
    },
    /// `check` found problems on this machine (already printed).
    CheckFailed { problems: usize },
    /// A file-system operation failed.
    Io {
        action: String,
        path: Utf8PathBuf,
        source: io::Error,
    },
    /// A template failed to render: a bug in djshim, not in the config.
    Template(minijinja::Error),
    /// A step of a build or deploy failed.
    Step { step: String, source: Box<Error> },
    /// A plan failed and was undone (exit 3): the failure.
    Undone(Box<Error>),
    /// A plan failed and was not undone (exit 4): the failure.
    NotUndone(Box<Error>),
    /// A program djshim ran failed: the command line, how it ended, the
    /// last lines it wrote to stderr.
    Command {
        command: String,
        how: String,
        stderr: Vec<String>,
    },
}

impl Error {
    /// The exit status this failure ends the process with (SPEC section 2).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Config(_)
            | Error::Usage { .. }
            | Error::UnknownInstance { .. }
            | Error::ConfigRead { .. } => EXIT_USAGE,
            Error::Undone(_) => EXIT_UNDONE,
            Error::NotUndone(_) => EXIT_NOT_UNDONE,
            _ => EXIT_PROBLEM,
        })
    }

    /// A write to a closed pipe (`djshim list | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// A problem the command explains itself.
    pub fn problem(message: impl Into<String>) -> Self {
        Error::Problem {
            message: message.into(),
            help: None,
        }
    }

    /// A problem, and what to do about it.
    pub fn with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::Problem {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    /// A command-line value that cannot be used.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            help: None,
        }
    }

    /// A command-line value that cannot be used, and the fix.
    pub fn usage_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    pub fn io(action: &str, path: &Utf8Path, source: io::Error) -> Self {
        Error::Io {
            action: action.to_owned(),
            path: path.to_owned(),
            source,
        }
    }
}

/// What djshim says without failing (a warning), laid out as a problem
/// is: the message, then the fix.
pub struct Notice {
    pub message: String,
    pub help: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  = help: {}", self.message, self.help)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ConfigRead { path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(
                    f,
                    "{path}: no such config file\n  = help: create one with `djshim init`, \
                     or name it with `--config PATH` or `$DJSHIM_CONFIG`"
                )
            }
            Error::ConfigRead { path, source } => write!(f, "{path}: cannot read: {source}"),
            Error::Config(diagnostics) => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                        f.write_str("djshim: error: ")?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
            Error::Usage { message, help } | Error::Problem { message, help } => {
                f.write_str(message)?;
                match help {
                    Some(help) => write!(f, "\n  = help: {help}"),
                    None => Ok(()),
                }
            }
            Error::UnknownInstance { name, known } => {
                write!(f, "no instance `{}` in the config", clean(name))?;
                if known.is_empty() {
                    write!(f, "\n  = help: the config defines no instances")
                } else {
                    write!(f, "\n  = help: instances are: {}", backticked(known))
                }
            }
            Error::Foreign { paths } => {
                write!(f, "refusing to overwrite files that djshim did not write:")?;
                for path in paths {
                    write!(f, "\n  {path}")?;
                }
                write!(
                    f,
                    "\n  = help: move them away, or pass `--force` to take them over"
                )
            }
            Error::Step { step, source } => write!(f, "{step}: {source}"),
            Error::Undone(e) | Error::NotUndone(e) => write!(f, "{e}"),
            Error::Command {
                command,
                how,
                stderr,
            } => {
                write!(f, "`{command}` failed: {how}")?;
                for line in stderr {
                    write!(f, "\n  | {line}")?;
                }
                Ok(())
            }
            Error::OtherProject { paths } => {
                write!(f, "refusing to touch files of another project:")?;
                for (path, project) in paths {
                    write!(f, "\n  {path} (project `{project}`)")?;
                }
                write!(
                    f,
                    "\n  = help: two projects make the same file name here; rename an instance \
                     or a project, or write one of them elsewhere (`--out`)"
                )
            }
            Error::Exists { path } => write!(
                f,
                "{path} already exists; `init` never overwrites a config\n  \
                 = help: edit it, or pass `--config OTHER.toml` to start another"
            ),
            Error::Manifest {
                path,
                line,
                problem,
            } => write!(
                f,
                "{path}:{line}: {problem}\n  = help: this file lists the files djshim owns in its \
                 directory; restore it or remove the directory's generated files and the manifest"
            ),
            Error::CheckFailed { problems } => {
                let s = if *problems == 1 { "" } else { "s" };
                write!(f, "check found {problems} problem{s}")
            }
            Error::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {path}: {source}"),
            Error::Template(e) => write!(f, "internal error while rendering a template: {e:#}"),
        }
    }
}

impl std::error::Error for Error {}

/// A problem at one place of a source file, rendered like a compiler error:
///
/// ```text
/// djshim.toml:14:12: instances.prod.settings: `my-site.settings` is not a dotted Python module name
///    |
/// 14 | settings = "my-site.settings"
///    |            ^^^^^^^^^^^^^^^^^^
///    = help: write it the way Python imports it, e.g. `mywebsite.settings.production`
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line and column (in characters) of the culprit.
    pub line: usize,
    pub column: usize,
    /// The dotted key the problem belongs to, when there is one.
    pub key: Option<String>,
    pub message: String,
    /// The source line, control characters made visible-safe.
    pub source_line: String,
    /// How many characters of `source_line` the caret underlines.
    pub width: usize,
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at byte range `span` of `text`.
    pub fn at(
        file: &str,
        text: &str,
        span: Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(text, span.end.clamp(start, line_end));
        let width = text[start..end].chars().count().max(1);
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            key,
            message: message.into(),
            source_line: clean(text[line_start..line_end].trim_end_matches('\r')),
            width,
            help: None,
        }
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A long line (a 40 KiB value, say) is shown as a window of
        // SHOWN characters around the culprit.
        const SHOWN: usize = 100;
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{}: ", clean(key))?;
        }
        write!(f, "{}", clean(&self.message))?;
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let chars: Vec<char> = self.source_line.chars().collect();
        let at = self.column - 1;
        let start = at.saturating_sub(20).min(chars.len());
        let start = if at < SHOWN - 20 { 0 } else { start };
        let end = (start + SHOWN).min(chars.len());
        let (before, after) = (
            if start > 0 { "…" } else { "" },
            if end < chars.len() { "…" } else { "" },
        );
        let shown: String = chars[start..end].iter().collect();
        write!(f, "\n{pad} |\n{number} | {before}{shown}{after}")?;
        let lead = " ".repeat(at - start + before.chars().count());
        let width = self.width.min(end.saturating_sub(at)).max(1);
        write!(f, "\n{pad} | {lead}{}", "^".repeat(width))?;
        if let Some(help) = &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

/// Text from the config made safe to echo to a terminal: control characters
/// (escape sequences, carriage returns, tabs) are replaced.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// `a`, `b`, `c` — for lists in help lines.
pub fn backticked<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", clean(s.as_ref())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_points_at_line_and_column() {
        let text = "project = \"x\"\nbin_dir = 5\n";
        let d = Diagnostic::at("djshim.toml", text, 24..25, Some("bin_dir".into()), "bad")
            .help("fix it");
        assert_eq!(
            d.to_string(),
            "djshim.toml:2:11: bin_dir: bad\n  |\n2 | bin_dir = 5\n  |           ^\n  = help: fix it"
        );
    }

    #[test]
    fn control_characters_are_not_echoed() {
        let d = Diagnostic::at("f", "a = \"\u{1b}[31m\"", 4..12, None, "m");
        assert!(!d.to_string().contains('\u{1b}'));
    }
}
