//! The shim at run time (SPEC section 4), against real Python: a probe
//! package whose manage.py reports what it received, and the example
//! Django project in the shared venv. Every shim runs from cron's bare
//! environment (`env -i PATH=/usr/bin:/bin`) unless a test adds to it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use camino::Utf8PathBuf;
use serde::Deserialize;

use crate::support::{CRON_PATH, World, assert_status, from_cron, require, text, venv};

/// What the probe's manage.py saw.
#[derive(Debug, Deserialize)]
pub struct Report {
    /// Arguments after manage.py, hex of their bytes.
    pub argv: Vec<String>,
    pub pid: u32,
    pub cwd: String,
    pub executable: String,
    pub env: BTreeMap<String, String>,
    pub stdin: Option<String>,
    pub path0: String,
}

const PROBE: &str = r#"import json, os, sys
report = {
    "argv": [os.fsencode(a).hex() for a in sys.argv[1:]],
    "pid": os.getpid(),
    "cwd": os.getcwd(),
    "executable": sys.executable,
    "env": dict(os.environ),
    "stdin": sys.stdin.buffer.read().hex() if os.environ.get("PROBE_STDIN") else None,
    "path0": sys.path[0],
}
sys.stdout.write(json.dumps(report))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"#;

/// A world with the probe package, a state dir, and the shim `probe-main`.
pub fn probe_world() -> (World, Utf8PathBuf) {
    let world = World::new();
    world.write("pkg/manage.py", PROBE);
    std::fs::create_dir_all(world.path("state")).unwrap();
    let config = format!(
        "project = \"probe\"\n[instances.main]\npackage = \"{pkg}\"\npython = \"{venv}/bin/python3\"\n\
         settings = \"probe.settings\"\nstate_dir = \"state\"\npythonpath = [\"/opt/lib\"]\n\
         path = [\"/opt/tools/bin\"]\nenv = {{ GREETING = \"hello world\" }}\n",
        pkg = world.path("pkg"),
        venv = venv(),
    );
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    let shim = world.path("bin/probe-main");
    (world, shim)
}

/// Runs `shim` (through `shell` when given) from cron's environment plus `env`.
fn run(
    shim: &Utf8PathBuf,
    shell: Option<&[&str]>,
    args: &[&OsStr],
    env: &[(&str, &str)],
) -> (Report, i32) {
    let mut cmd = match shell {
        Some([program, flags @ ..]) => {
            let mut c = Command::new(program);
            c.args(flags).arg(shim);
            c
        }
        _ => Command::new(shim),
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", CRON_PATH)
        .envs(env.iter().copied());
    let output = cmd.output().unwrap();
    let (stdout, stderr) = text(&output);
    let report =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (report, output.status.code().unwrap())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The shells the shim must work under: its own shebang, dash, bash --posix.
fn shells() -> Vec<Option<Vec<&'static str>>> {
    require("dash", "dash");
    require("bash", "bash");
    vec![
        None,
        Some(vec!["/bin/dash"]),
        Some(vec!["/bin/bash", "--posix"]),
    ]
}

#[test]
fn arguments_arrive_byte_for_byte() {
    let (_world, shim) = probe_world();
    let args: Vec<&[u8]> = vec![
        b"plain",
        b"two words",
        b"",
        b"'single' \"double\"",
        b"$HOME ${PATH} $(id) `id`",
        b"line one\nline two\n",
        b"--settings=evil.settings",
        b"-",
        b"*",
        b"\\ backslash \\n",
        b"\xff\xfe not utf-8 \x80",
        b"caf\xc3\xa9",
    ];
    let os_args: Vec<&OsStr> = args.iter().map(|a| OsStr::from_bytes(a)).collect();
    let expected: Vec<String> = args.iter().map(|a| hex(a)).collect();
    for shell in shells() {
        let (report, code) = run(&shim, shell.as_deref(), &os_args, &[]);
        assert_eq!(code, 0);
        assert_eq!(report.argv, expected, "under {shell:?}");
    }
}

#[test]
fn the_instance_environment_wins_and_the_rest_passes_through() {
    let (world, shim) = probe_world();
    let caller = [
        ("DJANGO_SETTINGS_MODULE", "stale.settings"),
        ("PYTHONPATH", "/stale/path"),
        ("PYTHONHOME", "/stale/home"),
        ("VIRTUAL_ENV", "/stale/venv"),
        ("PYTHONNOUSERSITE", ""),
        ("GREETING", "overridden by the instance"),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm-256color"),
        ("HOME", "/home/someone"),
    ];
    for shell in shells() {
        let (r, _) = run(&shim, shell.as_deref(), &[], &caller);
        let env = |k: &str| r.env.get(k).map(String::as_str);
        assert_eq!(env("DJANGO_SETTINGS_MODULE"), Some("probe.settings"));
        assert_eq!(env("PYTHONPATH"), Some("/opt/lib"));
        assert_eq!(env("PYTHONHOME"), None);
        assert_eq!(env("PYTHONNOUSERSITE"), Some("1"));
        assert_eq!(env("VIRTUAL_ENV"), Some(venv().as_str()));
        assert_eq!(env("GREETING"), Some("hello world"));
        assert_eq!(
            env("PATH"),
            Some(format!("{}/bin:/opt/tools/bin:{CRON_PATH}", venv()).as_str())
        );
        for (k, v) in &caller[6..] {
            assert_eq!(env(k), Some(*v), "{k} must pass through");
        }
        assert_eq!(
            r.executable,
            format!("{}/bin/python3", venv()),
            "sys.executable is the venv's"
        );
        assert_eq!(
            r.cwd,
            world.path("state").as_str(),
            "state_dir is the working directory"
        );
        assert_eq!(
            r.path0,
            world.path("pkg").as_str(),
            "manage.py's directory heads sys.path"
        );
    }
}

#[test]
fn cron_environment_without_path_extras_still_runs() {
    let (_world, shim) = probe_world();
    // Not even PATH: the shim names every program it runs by absolute path.
    let output = Command::new("/bin/sh")
        .arg(&shim)
        .env_clear()
        .output()
        .unwrap();
    assert_status(&output, 0);
    let report: Report = serde_json::from_slice(&output.stdout).unwrap();
    // dash supplies its default PATH when none is inherited; what matters is
    // the instance's directories first and no empty entry (the current
    // directory) anywhere.
    let path = &report.env["PATH"];
    assert!(
        path.starts_with(&format!("{}/bin:/opt/tools/bin", venv())),
        "{path}"
    );
    assert!(
        path.split(':').all(|p| !p.is_empty()),
        "empty entry in {path}"
    );
}

#[test]
fn exit_status_stdin_and_pid_are_manage_pys() {
    let (_world, shim) = probe_world();
    for shell in shells() {
        let (_, code) = run(&shim, shell.as_deref(), &[], &[("PROBE_EXIT", "42")]);
        assert_eq!(code, 42, "under {shell:?}");
    }
    let mut child = Command::new(&shim)
        .env_clear()
        .env("PATH", CRON_PATH)
        .env("PROBE_STDIN", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n\x00\xff")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report: Report = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report.stdin.as_deref(),
        Some(hex(b"from stdin\n\x00\xff").as_str())
    );
    assert_eq!(
        report.pid, pid,
        "manage.py must be exec'd, keeping the shim's pid"
    );
}

#[test]
fn a_missing_package_or_interpreter_is_one_line_and_exit_127() {
    let (world, shim) = probe_world();
    std::fs::rename(world.path("pkg"), world.path("gone")).unwrap();
    let output = from_cron(&shim, &[]);
    assert_status(&output, 127);
    assert_eq!(
        text(&output).1,
        format!(
            "probe-main: {}/manage.py is missing (the package of instance main is not there)\n",
            world.path("pkg")
        )
    );

    std::fs::rename(world.path("gone"), world.path("pkg")).unwrap();
    let config = world.read("djshim.toml").replace(
        &format!("{}/bin/python3", venv()),
        "/nonexistent/bin/python3",
    );
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    let output = from_cron(&shim, &[]);
    assert_status(&output, 127);
    assert_eq!(
        text(&output).1,
        "probe-main: interpreter /nonexistent/bin/python3 is missing or not executable\n"
    );
}

/// The example Django project, two instances on two releases: staging on a
/// copy of 1.4, prod on a read-only copy of 1.3.
fn django_world() -> World {
    let world = World::new();
    world.release("releases/1.4");
    world.release("releases/1.3");
    for dir in ["var/staging", "var/prod"] {
        std::fs::create_dir_all(world.path(dir)).unwrap();
    }
    let config = format!(
        r#"project = "mywebsite"
[defaults]
python = "{venv}/bin/python3"
settings = "mywebsite.settings.{{instance}}"
state_dir = "var/{{instance}}"
static_root = "var/{{instance}}/static"
env = {{ MYWEBSITE_DB = "{root}/var/{{instance}}/db.sqlite3", PYTHONDONTWRITEBYTECODE = "1" }}

[instances.staging]
package = "{root}/releases/1.4"
static_dirs = ["{root}/releases/1.4/assets"]

[instances.prod]
package = "{root}/releases/1.3"
settings = "mywebsite.settings.production"
static_dirs = ["{root}/releases/1.3/assets"]
"#,
        venv = venv(),
        root = world.path(""),
    );
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["check"]), 0);
    assert_status(&world.djshim(&["generate"]), 0);
    world
}

fn manage(world: &World, instance: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let output = Command::new(world.path(&format!("bin/mywebsite-{instance}")))
        .args(args)
        .env_clear()
        .env("PATH", CRON_PATH)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output)
}

#[test]
fn django_instances_migrate_their_own_databases_from_their_own_packages() {
    let world = django_world();
    let prod_package = world.path("releases/1.3");
    let status = Command::new("chmod")
        .args(["-R", "a-w", prod_package.as_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let files_before = world
        .files()
        .into_iter()
        .filter(|f| f.starts_with("releases/1.3"))
        .collect::<Vec<_>>();

    let stale = [
        ("DJANGO_SETTINGS_MODULE", "stale.settings"),
        ("PYTHONPATH", "/stale"),
    ];
    let (out, _) = manage(&world, "staging", &["migrate", "--noinput"], &stale);
    assert!(out.contains("Applying polls.0001_initial... OK"), "{out}");
    assert!(world.path("var/staging/db.sqlite3").is_file());
    assert!(
        !world.path("var/prod/db.sqlite3").exists(),
        "staging touched prod's database"
    );
    let (out, _) = manage(&world, "prod", &["migrate", "--noinput"], &stale);
    assert!(out.contains("Applying polls.0001_initial... OK"), "{out}");

    let probe = "from django.conf import settings; import polls; \
                 print(settings.INSTANCE, settings.DATABASES['default']['NAME'], polls.__file__)";
    for (instance, release, name) in [("staging", "1.4", "staging"), ("prod", "1.3", "prod")] {
        let (out, _) = manage(&world, instance, &["shell", "-c", probe], &stale);
        let expected = format!(
            "{name} {} {}\n",
            world.path(&format!("var/{instance}/db.sqlite3")),
            world.path(&format!("releases/{release}/polls/__init__.py"))
        );
        assert!(
            out.ends_with(&expected),
            "{instance}: {out:?} does not end with {expected:?}"
        );
    }
    let files_after = world
        .files()
        .into_iter()
        .filter(|f| f.starts_with("releases/1.3"))
        .collect::<Vec<_>>();
    assert_eq!(
        files_before, files_after,
        "prod wrote into its read-only package"
    );
    let _ = Command::new("chmod")
        .args(["-R", "u+w", prod_package.as_str()])
        .status();
}

#[test]
fn collectstatic_writes_to_static_root() {
    let world = django_world();
    let (out, _) = manage(&world, "prod", &["collectstatic", "--noinput"], &[]);
    assert!(out.contains("static file"), "{out}");
    assert_eq!(
        world.read("var/prod/static/css/site.css"),
        std::fs::read_to_string(world.path("releases/1.3/assets/css/site.css")).unwrap()
    );
    assert!(!world.path("var/staging/static").exists());
}
