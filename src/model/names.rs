//! The name rules of the model: which strings may name a project, an
//! instance, an account, a variable, a Python module; how paths join.

use camino::{Utf8Component, Utf8Path, Utf8PathBuf};

/// `a:b:c`, the form of `PATH`-like variables.
pub fn join(paths: &[Utf8PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `name` may name a project or an instance: `[a-z0-9][a-z0-9_-]*`.
pub fn is_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `name` may name an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` may name an account: `[a-z_][a-z0-9_-]*` (a trailing `$`
/// allowed, as for Samba machine accounts), at most 32 characters.
pub fn is_account(name: &str) -> bool {
    let body = name;
    name.len() <= 32
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The most bytes one `env` value may hold: far below the kernel's limit
/// for one variable (128 KiB) and systemd's for one unit line (1 MiB),
/// so that the shim and the unit always start.
pub const MAX_ENV_VALUE: usize = 32 * 1024;

/// The instance whose generation link a name looks like
/// (`prod-1-link` → `prod`): profiles live side by side in one directory,
/// so such an instance would share its profile's name with a generation.
pub(super) fn generation_link_of(name: &str) -> Option<&str> {
    let rest = name.strip_suffix("-link")?;
    let (owner, number) = rest.rsplit_once('-')?;
    (!owner.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then_some(owner)
}

/// Whether `module` is a dotted Python identifier (ASCII).
pub fn is_module(module: &str) -> bool {
    module.split('.').all(is_env_name)
}

/// Lexically normalized: `.` and repeated `/` dropped; `..` kept, since
/// removing it would be wrong across symlinks.
pub fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    let mut out = Utf8PathBuf::new();
    for c in path.components() {
        if c != Utf8Component::CurDir {
            out.push(c);
        }
    }
    out
}
