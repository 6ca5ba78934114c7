//! `djshim check`: what the config cannot know, asked of this machine.
//!
//! The model is already valid here; these checks look at the files and the
//! interpreter each instance will use, and report every problem found.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use camino::Utf8Path;

use crate::model::{Instance, join};

/// One problem of one instance on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub instance: String,
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.instance, self.key, self.message)
    }
}

/// Asks Python whether it can find the settings module the way manage.py
/// will: the script's directory first on `sys.path`, then `PYTHONPATH`.
const FIND_SETTINGS: &str = "\
import importlib.util, sys
sys.path[0] = sys.argv[1]
try:
    found = importlib.util.find_spec(sys.argv[2]) is not None
except ModuleNotFoundError:
    found = False
except Exception as e:
    print(f'{type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(3)
sys.exit(0 if found else 4)
";

/// Every problem of `instance` on this machine; empty when it is ready.
pub fn instance(instance: &Instance) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: &'static str, message: String| {
        problems.push(Problem {
            instance: instance.name.clone(),
            key,
            message,
        });
    };
    let package_ok = if instance.package.is_dir() {
        true
    } else if instance.profile {
        problem(
            "package",
            format!(
                "the profile {} points at no package; pin one with `djshim pin`",
                instance.package
            ),
        );
        false
    } else {
        problem(
            "package",
            format!("{}: no such directory", instance.package),
        );
        false
    };
    let manage_ok = package_ok && instance.manage.is_file();
    if package_ok && !manage_ok {
        problem("manage", format!("{}: no such file", instance.manage));
    }
    let python_ok = is_executable(&instance.python);
    if !python_ok {
        problem(
            "python",
            format!("{}: missing or not executable", instance.python),
        );
    }
    for (key, dirs) in [
        ("pythonpath", &instance.pythonpath),
        ("path", &instance.path),
    ] {
        for dir in dirs {
            if package_ok && !dir.is_dir() {
                problem(key, format!("{dir}: no such directory"));
            }
        }
    }
    if let Some(dir) = instance.state_dir.as_ref().filter(|d| !d.is_dir()) {
        problem("state_dir", format!("{dir}: no such directory"));
    }
    if manage_ok && python_ok {
        find_settings(instance).unwrap_or_else(|message| problem("settings", message));
    }
    problems
}

fn find_settings(instance: &Instance) -> Result<(), String> {
    let script_dir = instance.manage.parent().unwrap_or(Utf8Path::new("/"));
    let mut cmd = Command::new(&instance.python);
    cmd.args(["-c", FIND_SETTINGS, script_dir.as_str(), &instance.settings])
        .env_remove("PYTHONHOME")
        .env("PYTHONNOUSERSITE", "1")
        .envs(instance.variables())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if instance.pythonpath.is_empty() {
        cmd.env_remove("PYTHONPATH");
    } else {
        cmd.env("PYTHONPATH", join(&instance.pythonpath));
    }
    if let Some(dir) = instance.state_dir.as_ref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", instance.python))?;
    match output.status.code() {
        Some(0) => Ok(()),
        Some(4) => Err(format!(
            "module `{}` not found by {}",
            instance.settings, instance.python
        )),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "importing the parents of `{}` failed: {}",
                instance.settings,
                crate::error::clean(last.trim())
            ))
        }
    }
}

fn is_executable(path: &Utf8Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
