//! Model → artifacts: the templates of `wrappers/`, and the escapers that
//! make every value a template prints safe for the template's language.
//!
//! The escaper is chosen by the template's name (`*.sh.j2` → POSIX sh) and
//! applied by the engine's formatter to every `{{ value }}`, so a template
//! cannot forget to quote. Printing a value that is not a string (a missing
//! key, `none`, a number) is an error, not an empty word. No I/O here.

use std::borrow::Cow;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};

use crate::model::{self, Instance, Model};

/// One file to be written: a name inside its output directory, a mode, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// The `PATH` systemd gives services; the instance's directories go first,
/// as the shim puts them before the caller's.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The system's directories in a unit of the NixOS module, after the
/// instance's own: a unit's `PATH=` replaces the one NixOS gives every
/// unit (coreutils, grep, sed, systemd…), so the system's profile keeps
/// them reachable, then systemd's directories as elsewhere.
pub const NIXOS_SERVICE_PATH: &str = "/run/wrappers/bin:/run/current-system/sw/bin:/run/current-system/sw/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a unit of an instance that runs its profile sets `PYTHONPATH`,
/// `VIRTUAL_ENV` and `PATH` to: its launcher replaces a value still equal
/// to this (set by no env file) with the one of the generation it starts.
pub const FROM_PROFILE: &str = "@djshim-from-profile@";

const SHIM: (&str, &str) = ("shim.sh.j2", include_str!("../wrappers/shim.sh.j2"));

/// Every template, compiled in. The name's last extension before `.j2`
/// picks the escaper.
const TEMPLATES: [(&str, &str); 14] = [
    SHIM,
    (
        "settings.systemd.j2",
        include_str!("../wrappers/settings.systemd.j2"),
    ),
    ("module.nix.j2", include_str!("../wrappers/module.nix.j2")),
    ("launcher.sh.j2", include_str!("../wrappers/launcher.sh.j2")),
    (
        "server.service.j2",
        include_str!("../wrappers/server.service.j2"),
    ),
    ("job.service.j2", include_str!("../wrappers/job.service.j2")),
    (
        "service.service.j2",
        include_str!("../wrappers/service.service.j2"),
    ),
    (
        "server.socket.j2",
        include_str!("../wrappers/server.socket.j2"),
    ),
    (
        "instance.target.j2",
        include_str!("../wrappers/instance.target.j2"),
    ),
    (
        "tmpfiles.conf.j2",
        include_str!("../wrappers/tmpfiles.conf.j2"),
    ),
    ("job.timer.j2", include_str!("../wrappers/job.timer.j2")),
    (
        "shared-service.systemd.j2",
        include_str!("../wrappers/shared-service.systemd.j2"),
    ),
    (
        "environment.systemd-env.j2",
        include_str!("../wrappers/environment.systemd-env.j2"),
    ),
    (
        "crontab.cron.j2",
        include_str!("../wrappers/crontab.cron.j2"),
    ),
];

/// The template environment: strict, trimmed, escaping by file type.
pub struct Renderer {
    env: Environment<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("static syntax config"),
        );
        env.set_auto_escape_callback(|name| {
            let language = name.strip_suffix(".j2").and_then(|n| n.rsplit('.').next());
            AutoEscape::Custom(Cow::Borrowed(match language {
                Some("sh") => "sh",
                Some("service" | "timer" | "socket" | "target" | "systemd") => "systemd",
                Some("systemd-env") => "systemd-env",
                Some("cron") => "cron",
                Some("nix") => "nix",
                // A template of unknown type may not print any value.
                _ => "none",
            }))
        });
        env.set_formatter(|out, state, value| {
            if value.is_safe() {
                return write!(out, "{value}").map_err(minijinja::Error::from);
            }
            let Some(text) = value.as_str() else {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("refusing to print a non-string value ({})", value.kind()),
                ));
            };
            let escaped = match state.auto_escape() {
                AutoEscape::Custom(lang) if lang == "sh" => sh_quote(text),
                AutoEscape::Custom(lang) if lang == "systemd" => systemd_word(text, true),
                AutoEscape::Custom(lang) if lang == "systemd-env" => systemd_word(text, false),
                AutoEscape::Custom(lang) if lang == "cron" => cron_word(text),
                AutoEscape::Custom(lang) if lang == "nix" => Cow::Owned(nix_str(text)),
                other => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("no escaper for {other:?} in {}", state.name()),
                    ));
                }
            };
            out.write_str(&escaped).map_err(minijinja::Error::from)
        });
        // A path (or socket address) in a setting systemd reads unquoted:
        // the model has refused what cannot stand there; refused again
        // here, so that no template can print it in a form systemd reads
        // differently.
        env.add_filter("raw", |value: &str| {
            systemd_raw(value)
                .map(|text| Value::from_safe_string(text.into_owned()))
                .ok_or_else(|| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("`{value}` cannot stand unquoted in a unit file"),
                    )
                })
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the templates in wrappers/ parse");
        }
        Renderer { env }
    }

    /// The shim of one instance, as `generate` writes it into `dir` (where
    /// the helper lies beside it).
    pub fn shim(
        &self,
        model: &Model,
        instance: &Instance,
        dir: &Utf8Path,
    ) -> Result<Artifact, Error> {
        let words = Words { instance };
        let mut path = vec![instance.python_bin().to_owned()];
        path.extend(instance.path.iter().cloned());
        let variables = instance
            .variables()
            .into_iter()
            .map(|(name, value)| Variable {
                name: Value::from_safe_string(name.to_owned()),
                value: match value {
                    model::Variable::Paths(paths) => words.list(paths),
                    model::Variable::Text(text) => Value::from(text),
                },
            })
            .collect();
        let account_path = |system: &str| {
            instance.user.as_ref().map(|_| {
                let mut all = path.clone();
                all.extend(system.split(':').map(Utf8PathBuf::from));
                words.list(&all)
            })
        };
        let ctx = ShimContext {
            account_path: account_path(SERVICE_PATH),
            account_path_nixos: account_path(NIXOS_SERVICE_PATH),
            project: &model.project,
            instance: &instance.name,
            command: &instance.full_name,
            profile: instance.profile.then(|| instance.package.as_str()),
            manage: words.path(&instance.manage),
            python: words.path(&instance.python),
            settings: &instance.settings,
            pythonpath: (!instance.pythonpath.is_empty()).then(|| words.list(&instance.pythonpath)),
            venv: words.path(instance.venv_root()),
            venv_cfg: words.path(&instance.venv_root().join("pyvenv.cfg")),
            path: words.list(&path),
            variables,
            state_dir: instance.state_dir.as_ref().map(|p| words.path(p)),
            locals: Value::from_safe_string(locals(instance).join(" ")),
            tools: instance.user.is_some(),
            user: instance.user.as_deref(),
            group: instance.group.as_deref(),
            helper: needs_helper(instance)
                .then(|| words.path(&dir.join(helper_name(&model.project)))),
            env_files: instance.env_files.iter().map(|p| words.path(p)).collect(),
            confirm: Value::from_safe_string(
                instance
                    .confirm
                    .iter()
                    .map(|c| sh_quote(c))
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
        };
        let text = self.render(SHIM.0, &ctx)?;
        Ok(Artifact {
            name: instance.full_name.clone(),
            mode: 0o755,
            bytes: text.into_bytes(),
        })
    }

    /// The `sh -c` text that starts a unit of an instance running its
    /// profile (wrappers/launcher.sh.j2): the profile followed once, then
    /// the interpreter (and `manage.py` for a job) with every path from
    /// that generation, the unit's own arguments after it. `server`: the
    /// directory of manage.py goes first on `PYTHONPATH`, as for manage.py.
    pub fn launcher(
        &self,
        instance: &Instance,
        server: bool,
        manage: bool,
        service_path: &[Utf8PathBuf],
        window: Option<&Utf8Path>,
    ) -> Result<String, Error> {
        let words = Words { instance };
        let pythonpath = instance.pythonpath_for(server);
        let mut path = vec![instance.python_bin().to_owned()];
        path.extend(instance.path.iter().cloned());
        path.extend(service_path.iter().cloned());
        let ctx = LauncherContext {
            profile: instance.package.as_str(),
            pythonpath: (!pythonpath.is_empty()).then(|| words.list(&pythonpath)),
            venv: words.path(instance.venv_root()),
            venv_cfg: words.path(&instance.venv_root().join("pyvenv.cfg")),
            path: words.list(&path),
            python: words.path(&instance.python),
            manage: manage.then(|| words.path(&instance.manage)),
            mark: FROM_PROFILE,
            window: window.map(|flag| WindowContext {
                flag: flag.as_str(),
                mode: instance.deploy.window.name(),
                // One line, as every statement of the launcher: the script
                // as a string literal (JSON's escapes are Python's) to exec.
                code: {
                    let script = WINDOW_PY
                        .lines()
                        .filter(|l| !l.trim_start().starts_with('#'))
                        .fold(String::new(), |mut script, line| {
                            script.push_str(line);
                            script.push('\n');
                            script
                        });
                    format!(
                        "exec({})",
                        serde_json::to_string(&script).expect("a string serializes")
                    )
                },
            }),
        };
        let text = self.render("launcher.sh.j2", &ctx)?;
        Ok(text.lines().collect::<Vec<_>>().join("; "))
    }

    /// Every shim of `instances`, in order, for `dir`.
    pub fn shims(
        &self,
        model: &Model,
        instances: &[&Instance],
        dir: &Utf8Path,
    ) -> Result<Vec<Artifact>, Error> {
        instances.iter().map(|i| self.shim(model, i, dir)).collect()
    }

    pub(crate) fn render<S: Serialize>(&self, template: &str, ctx: &S) -> Result<String, Error> {
        let template = self.env.get_template(template).map_err(Error::Template)?;
        template
            .render(Value::from(minijinja::value::Serde(ctx)))
            .map_err(Error::Template)
    }
}

/// What the shim template sees. Strings are escaped by the formatter when
/// printed; paths arrive as [`Words`], already escaped.
#[derive(Serialize)]
struct ShimContext<'a> {
    /// The `PATH` of the account root switches to: the instance's
    /// directories, then the system's as systemd gives its units (on
    /// NixOS, `nixos`), never the caller's.
    account_path: Option<Value>,
    account_path_nixos: Option<Value>,
    project: &'a str,
    instance: &'a str,
    command: &'a str,
    /// The profile link, for an instance that runs its profile.
    profile: Option<&'a str>,
    manage: Value,
    python: Value,
    settings: &'a str,
    pythonpath: Option<Value>,
    venv: Value,
    venv_cfg: Value,
    path: Value,
    variables: Vec<Variable>,
    state_dir: Option<Value>,
    /// The shell variables the script uses, unset first.
    locals: Value,
    /// Whether the script looks up programs and who runs it.
    tools: bool,
    user: Option<&'a str>,
    group: Option<&'a str>,
    /// The helper beside the shim, for an instance that needs it.
    helper: Option<Value>,
    env_files: Vec<Value>,
    /// The `case` pattern of the subcommands to confirm, `a | b`; empty when none.
    confirm: Value,
}

#[derive(Serialize)]
struct LauncherContext<'a> {
    profile: &'a str,
    pythonpath: Option<Value>,
    venv: Value,
    venv_cfg: Value,
    path: Value,
    python: Value,
    manage: Option<Value>,
    mark: &'static str,
    window: Option<WindowContext<'a>>,
}

/// The deploy window of a server's launcher: its file, `stop` or `503`,
/// and wrappers/window.py, which runs it.
#[derive(Serialize)]
struct WindowContext<'a> {
    flag: &'a str,
    mode: &'static str,
    code: String,
}

const WINDOW_PY: &str = include_str!("../wrappers/window.py");

/// The file name of the shims' helper (`djshim-exec`, src/bin/djshim-exec/) in a
/// directory of shims of `project`: hidden, one per project.
pub use crate::layout::helper_name;

/// The helper of `project` (its bytes read by the caller:
/// [`crate::installation::helper_binary`]) as a file to write beside its
/// shims.
pub fn helper(project: &str, bytes: Vec<u8>) -> Artifact {
    Artifact {
        name: helper_name(project),
        mode: 0o755,
        bytes,
    }
}

/// Whether the shim of `instance` execs the helper: to switch accounts or
/// to read env files.
pub fn needs_helper(instance: &Instance) -> bool {
    instance.user.is_some() || !instance.env_files.is_empty()
}

/// The shell variables a shim of `instance` assigns. They are unset at the
/// top: a variable of the same name exported by the caller would otherwise
/// carry the shim's values on into manage.py's environment, or steer the
/// shim.
fn locals(instance: &Instance) -> Vec<&'static str> {
    let mut names = Vec::new();
    if instance.profile {
        names.push("djshim_package");
    }
    if instance.user.is_some() {
        names.extend([
            "djshim_dir",
            "djshim_caller",
            "djshim_key",
            "djshim_value",
            "djshim_line",
            "djshim_entry",
            "djshim_switch",
        ]);
    }
    if !instance.confirm.is_empty() {
        names.push("djshim_answer");
    }
    names
}

/// An exported variable: the name is validated by the model (safe to print
/// bare), the value a string to escape or a path word.
#[derive(Serialize)]
struct Variable {
    name: Value,
    value: Value,
}

/// Paths as sh words. For an instance that runs its profile, a path inside
/// the package becomes `"${djshim_package}"/rest`: the shim follows the
/// profile link once, into `djshim_package`, so that the interpreter,
/// manage.py and every other path come from one generation even when a pin
/// switches the profile while the shim starts. Every other path, and every
/// rest, goes through [`sh_quote`]: these are the only values the shim
/// template prints unescaped, and they are escaped here.
struct Words<'a> {
    instance: &'a Instance,
}

impl Words<'_> {
    fn inside<'p>(&self, path: &'p Utf8Path) -> Option<&'p Utf8Path> {
        self.instance
            .profile
            .then(|| path.strip_prefix(&self.instance.package).ok())
            .flatten()
    }

    fn word(&self, path: &Utf8Path) -> String {
        match self.inside(path) {
            Some(rest) if rest.as_str().is_empty() => "\"${djshim_package}\"".to_owned(),
            Some(rest) => format!("\"${{djshim_package}}\"{}", sh_quote(&format!("/{rest}"))),
            None => sh_quote(path.as_str()).into_owned(),
        }
    }

    fn path(&self, path: &Utf8Path) -> Value {
        Value::from_safe_string(self.word(path))
    }

    /// `a:b:c` as one word: quoted whole, or per entry (`:` needs no
    /// quoting) when an entry lies in the profile's package.
    fn list(&self, paths: &[Utf8PathBuf]) -> Value {
        let word = if paths.iter().any(|p| self.inside(p).is_some()) {
            paths
                .iter()
                .map(|p| self.word(p))
                .collect::<Vec<_>>()
                .join(":")
        } else {
            sh_quote(&crate::model::join(paths)).into_owned()
        };
        Value::from_safe_string(word)
    }
}

pub use crate::quote::{cron_word, nix_str, sh_quote, systemd_raw, systemd_word};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(sh_quote("/nix/store/abc-x/bin"), "/nix/store/abc-x/bin");
        assert_eq!(sh_quote(""), r#""""#);
        assert_eq!(sh_quote("a b"), r#""a b""#);
        assert_eq!(sh_quote("it's"), r#""it's""#);
        assert_eq!(sh_quote(r#"$(x)`y`"\"#), r#""\$(x)\`y\`\"\\""#);
        assert_eq!(sh_quote("~root"), r#""~root""#);
        assert_eq!(sh_quote("a\nb"), "\"a\nb\"");
    }

    #[test]
    fn systemd_and_cron_words() {
        assert_eq!(
            systemd_word("/nix/store/x-y/bin/python3", true),
            "/nix/store/x-y/bin/python3"
        );
        assert_eq!(systemd_word("a b", true), r#""a b""#);
        assert_eq!(systemd_word(r#"50% "$x" \"#, true), r#""50%% \"$$x\" \\""#);
        assert_eq!(systemd_word("K=$x%", false), r#""K=$x%%""#);
        assert_eq!(systemd_word("a\nb\u{1}", true), r#""a\nb\x01""#);
        assert_eq!(systemd_word(";", true), r"\;");
        assert_eq!(nix_str("plain"), r#""plain""#);
        assert_eq!(nix_str("${x} $${y} $x"), r#""\${x} $\${y} $x""#);
        assert_eq!(nix_str("a\"b\\c\nd\te\rf"), r#""a\"b\\c\nd\te\rf""#);
        assert_eq!(nix_str("''${x}"), r#""''\${x}""#);
        assert_eq!(systemd_word("", true), r#""""#);
        assert_eq!(cron_word("50%"), r"50\%");
        assert_eq!(cron_word("a b%"), r#""a b\%""#);
        assert_eq!(cron_word("plain"), "plain");
    }

    #[test]
    fn a_template_cannot_print_an_undefined_or_non_string_value() {
        let mut r = Renderer::new();
        r.env.add_template("t.sh.j2", "{{ missing }}").unwrap();
        assert!(r.render("t.sh.j2", &()).is_err());
        r.env.add_template("n.sh.j2", "{{ 3 }}").unwrap();
        assert!(r.render("n.sh.j2", &()).is_err());
        r.env.add_template("u.txt.j2", "{{ 'x' }}").unwrap();
        assert!(r.render("u.txt.j2", &()).is_err());
    }
}
