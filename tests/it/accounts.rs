//! Accounts, secrets and guarded commands (SPEC section 6), as root with
//! real accounts made by `useradd`, real setpriv, a real pty.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

use crate::support::{
    CRON_PATH, Expect, World, assert_status, from_cron, require, root_dir, text, toml_str, venv,
};

/// The test accounts: `djshimt-app` (primary group `djshimt-app`, also in
/// `djshimt-extra`), `djshimt-other`, and `djshimt-build`, the build
/// account (apart: djshim stops every process of a build account after a
/// build), made once, kept between runs.
pub(crate) struct Accounts {
    pub(crate) app_uid: u32,
    pub(crate) app_gid: u32,
    pub(crate) extra_gid: u32,
    pub(crate) other_uid: u32,
    pub(crate) build_uid: u32,
    pub(crate) build_gid: u32,
}

fn id(args: &[&str]) -> u32 {
    let output = Command::new("id").args(args).output().unwrap();
    assert_status(&output, 0);
    text(&output).0.trim().parse().unwrap()
}

pub(crate) fn accounts() -> &'static Accounts {
    static ACCOUNTS: OnceLock<Accounts> = OnceLock::new();
    ACCOUNTS.get_or_init(|| {
        let me = fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(
            me, 0,
            "the account tests need root (useradd, setpriv, chown): run them as root, as CI does"
        );
        let lock =
            File::create(Utf8Path::new(env!("CARGO_TARGET_TMPDIR")).join("accounts.lock")).unwrap();
        lock.lock().unwrap();
        let exists = |db: &str, name: &str| {
            Command::new("getent")
                .args([db, name])
                .output()
                .unwrap()
                .status
                .success()
        };
        let run = |program: &str, args: &[&str]| {
            let output = Command::new(require(program, "passwd"))
                .args(args)
                .output()
                .unwrap();
            assert_status(&output, 0);
        };
        if !exists("group", "djshimt-extra") {
            run("groupadd", &["--system", "djshimt-extra"]);
        }
        for (name, groups) in [
            ("djshimt-app", "djshimt-extra"),
            ("djshimt-other", ""),
            ("djshimt-build", ""),
        ] {
            if !exists("passwd", name) {
                let mut args = vec![
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--user-group",
                ];
                if !groups.is_empty() {
                    args.extend(["--groups", groups]);
                }
                args.push(name);
                run("useradd", &args);
            }
        }
        Accounts {
            app_uid: id(&["-u", "djshimt-app"]),
            app_gid: id(&["-g", "djshimt-app"]),
            extra_gid: Command::new("getent")
                .args(["group", "djshimt-extra"])
                .output()
                .map(|o| text(&o).0.split(':').nth(2).unwrap().parse().unwrap())
                .unwrap(),
            other_uid: id(&["-u", "djshimt-other"]),
            build_uid: id(&["-u", "djshimt-build"]),
            build_gid: id(&["-g", "djshimt-build"]),
        }
    })
}

/// What the probe saw.
#[derive(Debug, Deserialize)]
pub(crate) struct Report {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) env: BTreeMap<String, String>,
}

pub(crate) const PROBE: &str = r#"import json, os, sys
open(os.path.join(os.path.dirname(__file__), "..", "started"), "a").close()
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()), "env": dict(os.environ)}))
"#;

/// The config of a world holding the probe package at `pkg`: project
/// `t`, instance `app` on Debian's python3, reading `env_files`, then
/// `extra` lines of the instance's.
pub(crate) fn probe_config(world: &World, env_files: &[&Utf8Path], extra: &str) -> String {
    let files: Vec<String> = env_files.iter().map(|p| toml_str(p.as_str())).collect();
    format!(
        "project = \"t\"\n[instances.app]\npackage = \"{}\"\npython = \"/usr/bin/python3\"\n\
         settings = \"t.settings\"\nenv_file = [{}]\n{extra}",
        world.path("pkg"),
        files.join(", ")
    )
}

/// A world the accounts can enter, with the probe package and `extra`
/// lines of instance config. The interpreter is Debian's: the accounts
/// could not reach the test venv's, whose base Python may live under /root.
pub(crate) fn world(extra: &str) -> (World, Utf8PathBuf) {
    accounts();
    let world = World::new();
    fs::set_permissions(world.path(""), fs::Permissions::from_mode(0o777)).unwrap();
    world.write("pkg/manage.py", PROBE);
    let config = format!(
        "project = \"t\"\n[instances.app]\npackage = \"{}\"\npython = \"{}\"\n\
         settings = \"t.settings\"\nuser = \"djshimt-app\"\n{extra}",
        world.path("pkg"),
        require("python3", "python3-minimal").display()
    );
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    let shim = world.path("bin/t-app");
    (world, shim)
}

/// Runs `command` as root from cron's environment, or as `user` (by setpriv).
pub(crate) fn run_as(user: Option<&str>, shim: &Utf8Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new(require("setpriv", "util-linux"));
            c.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ])
            .arg(shim);
            c
        }
        None => Command::new(shim),
    };
    cmd.env_clear()
        .env("PATH", CRON_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub(crate) fn report(output: &Output) -> Report {
    assert_status(output, 0);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn root_switches_to_the_account_with_its_groups() {
    let a = accounts();
    let (_world, shim) = world("");
    // From cron's environment: no $USER, no $HOME.
    let r = report(&run_as(None, &shim, &[]));
    assert_eq!((r.uid, r.gid), (a.app_uid, a.app_gid));
    let mut groups = vec![a.app_gid, a.extra_gid];
    groups.sort_unstable();
    assert_eq!(r.groups, groups);
    assert_eq!(r.env.get("USER").map(String::as_str), Some("djshimt-app"));
    assert_eq!(r.env.get("HOME").map(String::as_str), Some("/nonexistent"));
    // And with no environment at all.
    let output = Command::new(&shim)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(report(&output).uid, a.app_uid);
    // A stale $USER of the caller changes nothing.
    let r = report(&run_as(
        None,
        &shim,
        &[("USER", "djshimt-app"), ("LOGNAME", "x")],
    ));
    assert_eq!(r.uid, a.app_uid);
    // Root's PATH (a rustup's, a pyenv's directory) is not the account's:
    // the instance's directories, then the system's, as its units get
    // (issue 23, item 7).
    let r = report(&run_as(
        None,
        &shim,
        &[("PATH", "/root/.cargo/bin:/root/.pyenv/shims:/usr/bin:/bin")],
    ));
    let python_bin = require("python3", "python3-minimal")
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        r.env["PATH"],
        format!("{python_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
    // The account running its own shim keeps its PATH after the instance's.
    let r = report(&run_as(Some("djshimt-app"), &shim, &[]));
    assert_eq!(r.env["PATH"], format!("{python_bin}:{CRON_PATH}"));
}

#[test]
fn a_configured_group_is_the_primary_one() {
    let a = accounts();
    let (_world, shim) = world("group = \"djshimt-extra\"\n");
    let r = report(&run_as(None, &shim, &[]));
    assert_eq!((r.uid, r.gid), (a.app_uid, a.extra_gid));
}

#[test]
fn the_account_itself_runs_directly_and_anyone_else_is_turned_away() {
    let a = accounts();
    let (world, shim) = world("");
    let r = report(&run_as(Some("djshimt-app"), &shim, &[]));
    assert_eq!(r.uid, a.app_uid);
    fs::remove_file(world.path("started")).unwrap();

    let output = run_as(Some("djshimt-other"), &shim, &[]);
    assert_status(&output, 77);
    assert_eq!(
        text(&output),
        (
            String::new(),
            format!(
                "t-app: instance app runs as djshimt-app: start it as root or as djshimt-app, not as uid {}\n",
                a.other_uid
            )
        )
    );
    assert!(
        !world.path("started").exists(),
        "manage.py started for a third account"
    );
}

const SECRET: &str = "it's a \"secret\" $(touch PWNED) `touch PWNED` ${HOME} ; rm -rf / #";

#[test]
fn secrets_arrive_verbatim_are_never_evaluated_and_never_written() {
    let dir = root_dir();
    let dir = Utf8Path::from_path(dir.path()).unwrap().to_owned();
    let (world, shim) = world(&format!(
        "env = {{ GREETING = \"from the config\", KEPT = \"yes\" }}\nenv_file = [\"{dir}/secrets.env\", \"{dir}/more.env\"]\n",
    ));
    let secrets = dir.join("secrets.env");
    fs::write(
        &secrets,
        format!(
            "# a comment\n; another\n\n  SECRET_KEY=\"{}\"\nTOKEN = \"spaced value\"  \nBARE=a b c\nEMPTY=\nGREETING=from the first file\n",
            // systemd's double quotes: \ " ` $ escaped, the rest literal.
            SECRET
                .chars()
                .flat_map(|c| {
                    let escape = matches!(c, '\\' | '"' | '`' | '$');
                    escape.then_some('\\').into_iter().chain([c])
                })
                .collect::<String>()
        ),
    )
    .unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    let more = dir.join("more.env");
    fs::write(&more, "GREETING=\"from the second file\"").unwrap();
    fs::set_permissions(&more, fs::Permissions::from_mode(0o640)).unwrap();

    let r = report(&run_as(None, &shim, &[("SECRET_KEY", "stale")]));
    assert_eq!(
        r.uid,
        accounts().app_uid,
        "the secret was read as root, the command runs as the account"
    );
    let env = |k: &str| r.env.get(k).map(String::as_str);
    assert_eq!(env("SECRET_KEY"), Some(SECRET));
    assert_eq!(env("TOKEN"), Some("spaced value"));
    assert_eq!(env("BARE"), Some("a b c"));
    assert_eq!(env("EMPTY"), Some(""));
    assert_eq!(
        env("GREETING"),
        Some("from the second file"),
        "later assignments win, as in systemd"
    );
    assert_eq!(env("KEPT"), Some("yes"));
    assert!(
        world.files().iter().all(|f| !f.ends_with("PWNED")),
        "something in the env file was executed"
    );
    assert!(!std::path::Path::new("PWNED").exists());
    // The shims and the helper beside them (a binary: bytes are searched).
    for file in world.files().iter().filter(|f| f.starts_with("bin/")) {
        let content = fs::read(world.path(file)).unwrap();
        for secret in [SECRET, "spaced value"] {
            assert!(
                !content
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{file} holds a secret"
            );
        }
    }
}

#[test]
fn unsafe_or_broken_env_files_are_refused() {
    let dir = root_dir();
    let path = Utf8Path::from_path(dir.path()).unwrap().join("secrets.env");
    let (world, shim) = world(&format!("env_file = [\"{path}\"]\n"));
    let cases: [(&str, u32, Option<&str>, String); 3] = [
        (
            "SECRET=x\n",
            0o666,
            None,
            format!(
                "t-app: env file {path} is group- or world-writable (mode 666): chmod go-w it\n"
            ),
        ),
        (
            "SECRET=x\n",
            0o620,
            None,
            format!(
                "t-app: env file {path} is group- or world-writable (mode 620): chmod go-w it\n"
            ),
        ),
        (
            "SECRET=x\n",
            0o600,
            Some("djshimt-other"),
            format!(
                "t-app: env file {path} is owned by uid {}, not by root or the instance account\n",
                accounts().other_uid
            ),
        ),
    ];
    for (content, mode, owner, message) in cases {
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let chown = Command::new("chown")
            .arg(owner.unwrap_or("root"))
            .arg(&path)
            .status()
            .unwrap();
        assert!(chown.success());
        let output = run_as(None, &shim, &[]);
        assert_status(&output, 78);
        assert_eq!(text(&output).1, message);
        assert!(!world.path("started").exists());
    }
    // The account's own file is fine.
    Command::new("chown")
        .arg("djshimt-app")
        .arg(&path)
        .status()
        .unwrap();
    fs::write(&path, "SECRET=x\n").unwrap();
    assert_eq!(report(&run_as(None, &shim, &[])).env["SECRET"], "x");
    // Root's alone, and the account runs its own shim: the message says
    // the fix the README gives (issue 23, item 11).
    assert!(
        Command::new("chown")
            .arg("root")
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    let group = text(
        &Command::new("id")
            .args(["-gn", "djshimt-app"])
            .output()
            .unwrap(),
    )
    .0
    .trim()
    .to_owned();
    Expect::new()
        .status(78)
        .stderr(&format!(
            "t-app: env file {path} cannot be opened: Permission denied (os error 13); it is \
             root's alone, for root to run this command (cron, systemd, sudo); for djshimt-app \
             to run it too, make it root:{group} 0640 (`chown root:{group} {path}; chmod 0640 \
             {path}`)\n"
        ))
        .check(&run_as(Some("djshimt-app"), &shim, &[]));
    fs::remove_file(&path).unwrap();
    let output = run_as(None, &shim, &[]);
    assert_status(&output, 78);
    assert_eq!(
        text(&output).1,
        format!("t-app: env file {path} is missing\n")
    );
}

#[test]
fn check_reports_accounts_env_files_and_writable_directories() {
    let (world, _shim) = world("");
    fs::create_dir_all(world.path("state")).unwrap();
    fs::set_permissions(world.path("state"), fs::Permissions::from_mode(0o755)).unwrap();
    let config = world.read("djshim.toml")
        + "env_file = [\"open.env\", \"writable.env\", \"missing.env\"]\nstate_dir = \"state\"\n\
           [instances.ghost]\npackage = \"/nonexistent\"\npython = \"/usr/bin/python3\"\nsettings = \"t.settings\"\n\
           user = \"djshimt-nobody-here\"\ngroup = \"djshimt-no-group\"\n";
    world.write("djshim.toml", &config);
    let open = world.write("open.env", "A=1\n");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let writable = world.write("writable.env", "A=1\n");
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o602)).unwrap();
    let output = world.djshim(&["check"]);
    assert_status(&output, 1);
    let stdout = text(&output).0;
    for line in [
        format!("app: `env_file`: warning: {open} is world-readable (mode 644); secrets belong in a 0600 or 0640 file"),
        format!("app: `env_file`: {writable} is group- or world-writable (mode 602): chmod go-w it"),
        format!("app: `env_file`: {}: no such file", world.path("missing.env")),
        format!("app: `state_dir`: {} is not writable by `djshimt-app`", world.path("state")),
        "ghost: `user`: the account `djshimt-nobody-here` does not exist; create it, e.g. `useradd --system djshimt-nobody-here`".to_owned(),
        "ghost: `group`: the group `djshimt-no-group` does not exist; create it, e.g. `groupadd --system djshimt-no-group`".to_owned(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
}

/// The example Django project with `confirm = ["flush"]` on prod, migrated,
/// holding one question.
fn guarded_django() -> (World, Utf8PathBuf) {
    let world = World::example("confirm = [\"flush\"]\n");
    assert_status(&world.djshim(&["generate"]), 0);
    let shim = world.path("bin/mywebsite-prod");
    let ok = |args: &[&str]| {
        assert_status(&from_cron(&shim, args), 0);
    };
    ok(&["migrate", "--noinput"]);
    ok(&[
        "shell",
        "-c",
        "from polls.models import Question; Question.objects.create(text='q')",
    ]);
    (world, shim)
}

fn questions(shim: &Utf8Path) -> String {
    let output = Command::new(shim)
        .args([
            "shell",
            "-c",
            "from polls.models import Question; print(Question.objects.count())",
        ])
        .env_clear()
        .env("PATH", CRON_PATH)
        .output()
        .unwrap();
    text(&output)
        .0
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Runs the shim in a new session: no controlling terminal, even when the
/// tests themselves run on one.
pub(crate) fn without_terminal(shim: &Utf8Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(require("setsid", "util-linux"))
        .arg("--wait")
        .arg(shim)
        .args(args)
        .env_clear()
        .env("PATH", CRON_PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_guarded_command_needs_the_instance_name() {
    let (_world, shim) = guarded_django();
    assert_eq!(questions(&shim), "1");
    let output = without_terminal(&shim, &["flush", "--noinput"], &[]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        "mywebsite-prod: flush on instance prod needs confirmation: run it on a terminal, or set DJSHIM_CONFIRM=prod\n"
    );
    let output = without_terminal(
        &shim,
        &["flush", "--noinput"],
        &[("DJSHIM_CONFIRM", "staging")],
    );
    assert_status(&output, 1);
    assert_eq!(
        questions(&shim),
        "1",
        "the database changed without confirmation"
    );
    // Other subcommands are not guarded.
    assert_status(&without_terminal(&shim, &["check"], &[]), 0);

    assert_status(
        &without_terminal(
            &shim,
            &["flush", "--noinput"],
            &[("DJSHIM_CONFIRM", "prod")],
        ),
        0,
    );
    assert_eq!(questions(&shim), "0");
}

/// Drives the shim on a real pseudo-terminal: Python's pty module forks
/// the shim as a session leader on the pty, waits for the prompt, types.
const TYPIST: &str = r#"import os, pty, sys
answer, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
while b"go on: " not in seen:
    seen += os.read(fd, 1024)
os.write(fd, answer.encode() + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;

#[test]
fn a_guarded_command_asks_on_the_terminal() {
    let (world, shim) = guarded_django();
    let typist = world.write("typist.py", TYPIST);
    let typed = |answer: &str| {
        Command::new(venv().join("bin/python3"))
            .arg(&typist)
            .arg(answer)
            .arg(&shim)
            .args(["flush", "--noinput"])
            .env_clear()
            .env("PATH", CRON_PATH)
            .output()
            .unwrap()
    };
    let output = typed("staging");
    assert_status(&output, 1);
    let screen = text(&output).0;
    assert!(
        screen
            .contains("mywebsite-prod: flush on instance prod. Type the instance name to go on: "),
        "{screen}"
    );
    assert!(
        screen.contains("not confirmed; nothing was run"),
        "{screen}"
    );
    assert_eq!(questions(&shim), "1");

    let output = typed("prod");
    assert_status(&output, 0);
    assert_eq!(questions(&shim), "0");
}

/// `check` asks the system's own `getent` and `id` (the shim's fixed
/// directories), never whatever the caller's PATH finds first.
#[test]
fn check_does_not_take_its_tools_from_path() {
    let world = World::new();
    world.write(
        "djshim.toml",
        "project = \"t\"\n[instances.app]\npackage = \"/nonexistent\"\npython = \"/usr/bin/python3\"\n\
         settings = \"t.settings\"\nuser = \"djshimt-nobody-here\"\n",
    );
    let liar = world.write(
        "fakebin/getent",
        "#!/bin/sh\necho 'djshimt-nobody-here:x:4242:4242::/:/bin/sh'\n",
    );
    fs::set_permissions(&liar, fs::Permissions::from_mode(0o755)).unwrap();
    let output = world
        .djshim_cmd(&["check"])
        .env("PATH", format!("{}:{CRON_PATH}", world.path("fakebin")))
        .output()
        .unwrap();
    assert_status(&output, 1);
    assert!(
        text(&output).0.lines().any(|l| l
            == "app: `user`: the account `djshimt-nobody-here` does not exist; create it, e.g. `useradd --system djshimt-nobody-here`"),
        "{}",
        text(&output).0
    );
}

/// The name of `user`'s primary group (`id -gn`).
pub(crate) fn primary_group(user: &str) -> String {
    let output = Command::new("id").args(["-gn", user]).output().unwrap();
    assert_status(&output, 0);
    text(&output).0.trim().to_owned()
}

/// A parent-death signal set on the shim (as djshim sets it on every step)
/// survives the switch to the account: the kernel clears it when the uid
/// changes, and the helper sets it again. Before, `kill -9` of a deploy
/// left the account's `migrate` running, which committed after the next
/// command had rolled back.
#[test]
fn the_accounts_process_dies_with_the_process_that_started_it() {
    let (world, shim) = world("");
    world.write(
        "pkg/manage.py",
        "import os, time\nopen(os.path.join(os.path.dirname(__file__), '..', 'pid'), 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
    );
    let mut parent = Command::new("sh")
        .args([
            "-c",
            "setpriv --pdeathsig KILL -- \"$0\" & wait",
            shim.as_str(),
        ])
        .env_clear()
        .env("PATH", CRON_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = world.path("pid");
    let start = std::time::Instant::now();
    let pid = loop {
        if let Ok(pid) = fs::read_to_string(&pid_file)
            && !pid.is_empty()
        {
            break pid;
        }
        assert!(start.elapsed().as_secs() < 20, "manage.py never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let proc = Utf8PathBuf::from(format!("/proc/{pid}"));
    assert_eq!(
        fs::metadata(&proc).unwrap().uid(),
        accounts().app_uid,
        "manage.py runs as the account"
    );
    parent.kill().unwrap();
    parent.wait().unwrap();
    let start = std::time::Instant::now();
    while proc.exists() {
        let state = fs::read_to_string(proc.join("stat")).unwrap_or_default();
        if state.contains(") Z") {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "the account's manage.py ({pid}) outlived the process that started it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
