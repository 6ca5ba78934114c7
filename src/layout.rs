//! Every file djshim keeps on disk beside what it generates, named in one
//! place: beside a profile (`dir`, the profile's name `name`) its
//! generations, the journal, the deploy records, the lock, the window and
//! the shims a deploy runs steps through; beside `static_root` each
//! generation's collected static files; in a directory of shims or units
//! the manifest, and beside the shims the helper's copy; beside the
//! releases a remote repository's mirror; in `/run` the build accounts'
//! locks.

use camino::{Utf8Path, Utf8PathBuf};

/// Generation `number` of the profile `name` (Nix's own naming, so
/// `nix-env`-style tools read it): `<name>-<N>-link`.
pub fn generation(name: &str, number: u32) -> String {
    format!("{name}-{number}-link")
}

/// The collected static files of generation `number` of an instance whose
/// `static_root` is `root` (which is a link to the running generation's):
/// `<root>-<N>`, beside it, so the link can name it relatively.
pub fn generation_static(root: &Utf8Path, number: u32) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{root}-{number}"))
}

/// The file in an output directory (shims, units) that lists what
/// `project` owns there.
pub fn manifest(project: &str) -> String {
    format!(".djshim-{project}.manifest")
}

/// The lock of builds as account `account` (in `/run`, root's alone).
pub fn build_lock(account: &str) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("/run/djshim-build-{account}.lock"))
}

/// The mirror of a remote `[build] repo`, beside the releases.
pub fn mirror(releases_dir: &Utf8Path, project: &str) -> Utf8PathBuf {
    releases_dir.join(format!(".{project}.git"))
}

/// The journal of the plan in flight for an instance (one at a time).
pub fn journal(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    dir.join(format!(".{name}.deploy-journal.json"))
}

/// What a deploy knows of generation `number`: the migration state
/// before it, and whether it was healthy.
pub fn record(dir: &Utf8Path, name: &str, number: u32) -> Utf8PathBuf {
    dir.join(format!(".{name}-{number}.deploy.json"))
}

/// The instance's lock: deploy, rollback, pin and recovery hold it.
pub fn lock(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    dir.join(format!(".{name}.lock"))
}

/// The window of a deploy in flight (`[deploy] window`): while it exists,
/// the server's launcher holds requests (or answers 503) instead of
/// starting; it holds the window's deadline, in seconds since the epoch.
pub fn window(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    dir.join(format!(".{name}.window"))
}

/// The process group of the step running now (its number and its
/// leader's start time): left behind by a killed run, it names what the
/// next run stops before anything else.
pub fn step_processes(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    dir.join(format!(".{name}.step-processes"))
}

/// The name of the shims' helper beside the shims of `project`.
pub fn helper_name(project: &str) -> String {
    format!(".djshim-{project}-exec")
}

/// Where deploy, rollback and pin write the instance's shims they run
/// steps through (made anew by each run, so a killed run's copy goes with
/// the next).
pub fn shims(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    dir.join(format!(".{name}.shims"))
}
