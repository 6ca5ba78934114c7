//! The test world: a temporary directory per test, the djshim binary run
//! with a sealed environment, the shared Python venv, required tools.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};

/// The repository root.
pub fn root() -> &'static Utf8Path {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Cron's environment: the only variables a shim may rely on.
pub const CRON_PATH: &str = "/usr/bin:/bin";

/// Fails the test, saying how to install `tool`, when it is missing.
pub fn require(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(tool);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "this test needs `{tool}`, which is not installed: run `apt-get install {package}` \
         (or `.ci/run`, which installs everything the tests need)"
    );
}

/// A Nix command (`nix-store`, `nix-build`) that needs nothing of the
/// machine but Debian's nix-bin: no `nixbld` group, no `/etc/nix/nix.conf`,
/// no network. `NIX_CONFIG` takes precedence over the config files, so a
/// developer's own Nix settings cannot change what the tests see either.
pub fn nix(tool: &str) -> Command {
    let mut cmd = Command::new(require(tool, "nix-bin"));
    cmd.env("NIX_CONFIG", NIX_CONFIG);
    cmd
}

/// Builds run as root without build users (nix-bin creates no `nixbld`
/// group), outside a sandbox (none without one), and never ask a binary
/// cache (the machines reach no cache).
pub const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nsubstituters =\n";

/// The venv with django and gunicorn (tests/requirements.txt), made by
/// tests/make-venv on first use under target/tmp and shared by every test,
/// the benchmark and examples/quickstart. A file lock serialises its creation across the
/// test processes.
pub fn venv() -> &'static Utf8Path {
    static VENV: OnceLock<Utf8PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let tmp = Utf8Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(tmp).unwrap();
        let venv = tmp.join("venv");
        let lock = File::create(tmp.join("venv.lock")).unwrap();
        lock.lock().unwrap();
        run_ok(
            Command::new("sh")
                .arg(root().join("tests/make-venv"))
                .arg(&venv),
            "tests/make-venv (installs django and gunicorn from PyPI)",
        );
        venv
    })
}

fn run_ok(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(status.success(), "{what} failed with {status}");
}

/// A directory that only root can change, up to `/`, as `/etc/mywebsite`
/// would be: where root keeps the env files it reads for an account (the
/// shim refuses a root-owned file under a directory others can change, and
/// the test worlds live under the world-writable `/tmp`).
pub fn root_dir() -> tempfile::TempDir {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = Utf8Path::new("/run/djshim-tests");
    fs::create_dir_all(base).unwrap();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("secrets-")
        .tempdir_in(base)
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for ancestor in dir.path().ancestors() {
        let meta = fs::metadata(ancestor).unwrap();
        assert!(
            meta.uid() == 0 && meta.mode() & 0o022 == 0,
            "{} must belong to root and not be group- or world-writable for these tests",
            ancestor.display()
        );
    }
    dir
}

/// Runs git in `repo` with an identity of its own; its stdout, trimmed.
pub fn git(repo: &Utf8Path, args: &[&str]) -> String {
    let output = Command::new(require("git", "git"))
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "djshim tests")
        .env("GIT_AUTHOR_EMAIL", "tests@djshim.invalid")
        .env("GIT_COMMITTER_NAME", "djshim tests")
        .env("GIT_COMMITTER_EMAIL", "tests@djshim.invalid")
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output).0.trim().to_owned()
}

/// A temporary world for one test.
#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        World {
            dir: tempfile::Builder::new()
                .prefix("djshim-test-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A world in `dir` (a directory a container sees, say).
    pub fn new_in(dir: &Utf8Path) -> Self {
        World {
            dir: tempfile::Builder::new()
                .prefix("world-")
                .tempdir_in(dir)
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> Utf8PathBuf {
        let base = Utf8Path::from_path(self.dir.path()).expect("UTF-8 temp dir");
        if rel.is_empty() {
            base.to_owned()
        } else {
            base.join(rel)
        }
    }

    /// Writes a file (creating parents) and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> Utf8PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Copies the example Django project to `rel` (a "release").
    pub fn release(&self, rel: &str) -> Utf8PathBuf {
        let to = self.path(rel);
        copy_tree(&root().join("examples/mywebsite"), &to);
        to
    }

    /// A world holding the example project's release at `pkg` and an
    /// empty `var`, and a djshim.toml whose instance `prod` (of project
    /// `mywebsite`, units in `units`) runs that package with the test
    /// venv's Python on `var/db.sqlite3`; `rest` follows (more keys of
    /// `[instances.prod]`, then tables).
    pub fn example(rest: &str) -> World {
        let world = World::new();
        world.release("pkg");
        fs::create_dir_all(world.path("var")).unwrap();
        world.write(
            "djshim.toml",
            &format!(
                "project = \"mywebsite\"\nunits_dir = \"units\"\n[instances.prod]\npackage = \"{pkg}\"\n\
                 python = \"{venv}/bin/python3\"\nsettings = \"mywebsite.settings.production\"\n\
                 env = {{ MYWEBSITE_DB = \"{db}\", DJANGO_ALLOWED_HOSTS = \"127.0.0.1,localhost\" }}\n{rest}",
                pkg = world.path("pkg"),
                venv = venv(),
                db = world.path("var/db.sqlite3"),
            ),
        );
        world
    }

    /// `djshim build` here, its Nix builds with the tests' `NIX_CONFIG`.
    pub fn nix_build(&self) -> Output {
        require("nix-build", "nix-bin");
        self.djshim_cmd(&["build"])
            .env("NIX_CONFIG", NIX_CONFIG)
            .output()
            .unwrap()
    }

    /// `djshim ARGS` in this world's directory, with a sealed environment.
    pub fn djshim(&self, args: &[&str]) -> Output {
        self.djshim_cmd(args).output().unwrap()
    }

    pub fn djshim_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_djshim"));
        cmd.args(args)
            .current_dir(self.path(""))
            .env_clear()
            .env("PATH", CRON_PATH);
        cmd
    }

    /// Every file below the world, relative, sorted: to prove nothing was written.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.path(""), &self.path(""), &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Utf8Path, dir: &Utf8Path, out: &mut Vec<String>) {
    for entry in dir.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            walk(base, path, out);
        } else {
            out.push(path.strip_prefix(base).unwrap().to_string());
        }
    }
}

pub fn copy_tree(from: &Utf8Path, to: &Utf8Path) {
    fs::create_dir_all(to).unwrap();
    for entry in from.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == "bin" || entry.path().extension() == Some("toml") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(entry.path(), &to.join(name));
        } else {
            fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

/// Runs `program ARGS` from cron's environment: nothing but
/// `PATH=/usr/bin:/bin`, and no input.
pub fn from_cron(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", CRON_PATH)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The files of `dir` that djshim writes for others (not its dot-files:
/// manifests, locks), by name, each with its text.
pub fn visible_files(dir: &Utf8Path) -> std::collections::BTreeMap<String, String> {
    dir.read_dir_utf8()
        .unwrap()
        .map(Result::unwrap)
        .filter(|entry| !entry.file_name().starts_with('.'))
        .map(|entry| {
            let text = fs::read_to_string(entry.path()).unwrap();
            (entry.file_name().to_owned(), text)
        })
        .collect()
}

/// The index of the first line of `text` that starts with `prefix`, for
/// asserting the order of what a command said; a test failure naming the
/// text when there is none.
pub fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// Strings of stdout and stderr, for messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a run must show, in the way of just's `Test`: status 0 and empty
/// stdout and stderr unless the test says otherwise, so a test that does
/// not look at a stream still fails on an unexpected line there. Each
/// stream is expected whole (`stdout`, `stderr`) or by the lines it must
/// hold, in order (`stdout_has`, `stderr_has`); [`Expect::check`] asserts
/// it all, showing both streams on a mismatch.
#[must_use]
pub struct Expect {
    status: i32,
    stdout: Stream,
    stderr: Stream,
}

enum Stream {
    Whole(String),
    /// These parts, each within a line, in this order.
    Has(Vec<String>),
}

impl Expect {
    pub fn new() -> Expect {
        Expect {
            status: 0,
            stdout: Stream::Whole(String::new()),
            stderr: Stream::Whole(String::new()),
        }
    }

    pub fn status(mut self, status: i32) -> Expect {
        self.status = status;
        self
    }

    pub fn stdout(mut self, text: &str) -> Expect {
        self.stdout = Stream::Whole(text.to_owned());
        self
    }

    pub fn stderr(mut self, text: &str) -> Expect {
        self.stderr = Stream::Whole(text.to_owned());
        self
    }

    pub fn stdout_has(mut self, part: &str) -> Expect {
        self.stdout = Stream::has(self.stdout, part);
        self
    }

    pub fn stderr_has(mut self, part: &str) -> Expect {
        self.stderr = Stream::has(self.stderr, part);
        self
    }

    /// Asserts `output` is as expected; its streams, for more checks.
    #[track_caller]
    pub fn check(self, output: &Output) -> (String, String) {
        let (out, err) = text(output);
        let shown = format!("stdout:\n{out}\nstderr:\n{err}");
        assert_eq!(output.status.code(), Some(self.status), "{shown}");
        for (name, stream, text) in [
            ("stdout", &self.stdout, &out),
            ("stderr", &self.stderr, &err),
        ] {
            match stream {
                Stream::Whole(whole) => assert_eq!(text, whole, "{name} differs; {shown}"),
                Stream::Has(parts) => {
                    let mut lines = text.lines();
                    for part in parts {
                        assert!(
                            lines.any(|l| l.contains(part.as_str())),
                            "{name} has no line with {part:?} (after the ones before it); {shown}"
                        );
                    }
                }
            }
        }
        (out, err)
    }
}

impl Stream {
    fn has(self, part: &str) -> Stream {
        match self {
            Stream::Has(mut parts) => {
                parts.push(part.to_owned());
                Stream::Has(parts)
            }
            Stream::Whole(_) => Stream::Has(vec![part.to_owned()]),
        }
    }
}

/// Asserts that `text` (a command's stderr, say) has every one of `parts`,
/// in any order.
#[track_caller]
pub fn has_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}

/// Asserts the exit status, showing both streams when it differs.
#[track_caller]
pub fn assert_status(output: &Output, code: i32) {
    let (out, err) = text(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
}

/// TOML basic string for any text: for configs built from test data.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether golden files are to be rewritten: `DJSHIM_BLESS=1` (any other
/// value, `0` too, compares). Never under `CI=true`: there every golden
/// test would pass on whatever the code wrote.
fn blessing() -> bool {
    let bless = std::env::var_os("DJSHIM_BLESS").is_some_and(|v| v == "1");
    assert!(
        !(bless && std::env::var_os("CI").is_some_and(|v| v == "true")),
        "DJSHIM_BLESS=1 with CI=true: golden files would be rewritten, not compared; unset one"
    );
    bless
}

/// A directory of golden files (under tests/), compared whole: the names
/// that `keep` accepts there must be exactly those of `actual` (a file no
/// longer written, or a new one, fails), each with its content. Blessing
/// rewrites them and removes the stale ones.
#[track_caller]
pub fn golden_dir(
    rel: &str,
    keep: impl Fn(&str) -> bool,
    actual: &std::collections::BTreeMap<String, String>,
) {
    let dir = root().join("tests").join(rel);
    let committed: std::collections::BTreeSet<String> = dir
        .read_dir_utf8()
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_owned())
                .filter(|name| keep(name))
                .collect()
        })
        .unwrap_or_default();
    let wanted: std::collections::BTreeSet<String> = actual.keys().cloned().collect();
    if blessing() {
        for stale in committed.difference(&wanted) {
            fs::remove_file(dir.join(stale)).unwrap();
        }
    } else {
        assert_eq!(
            committed, wanted,
            "{dir}: the committed golden files are not the files written (run with \
             DJSHIM_BLESS=1 to accept)"
        );
    }
    for (name, text) in actual {
        golden(&format!("{rel}/{name}"), text);
    }
}

/// Golden files: compares `actual` with the committed file, or rewrites it
/// when `DJSHIM_BLESS=1`, so a reviewer sees every change of output in the diff.
#[track_caller]
pub fn golden(rel: &str, actual: &str) {
    let path = root().join("tests").join(rel);
    if blessing() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{path} is missing; run with DJSHIM_BLESS=1 to create it"));
    assert!(
        expected == actual,
        "{path} differs from the output (run with DJSHIM_BLESS=1 to accept):\n{}",
        similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("expected", "actual")
    );
}

/// The builder fails on what a test did not expect: a line on a stream it
/// did not look at, a part missing, another status.
#[test]
fn expect_fails_on_the_unexpected() {
    use std::os::unix::process::ExitStatusExt as _;
    let output = |code: i32, stdout: &str, stderr: &str| Output {
        status: std::process::ExitStatus::from_raw(code << 8),
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    let fails = |expect: Expect, output: Output| {
        std::panic::catch_unwind(move || {
            expect.check(&output);
        })
        .is_err()
    };
    Expect::new().check(&output(0, "", ""));
    Expect::new()
        .stdout_has("a")
        .stdout_has("c")
        .check(&output(0, "a\nb\nc\n", ""));
    assert!(fails(Expect::new(), output(0, "", "warning\n")));
    assert!(fails(Expect::new(), output(1, "", "")));
    assert!(fails(
        Expect::new().stdout_has("c").stdout_has("a"),
        output(0, "a\nc\n", "")
    ));
    assert!(fails(Expect::new().stderr("x\n"), output(0, "", "y\n")));
}
