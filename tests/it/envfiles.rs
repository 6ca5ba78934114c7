//! Env files against an adversary (SPEC section 6): the instance's account
//! controls what its own files say and where its directories point, and
//! root runs the shim (from cron, from a terminal). Nothing in a file may
//! steer root or the shim, a link may never hand the account a file it
//! could not read, the terminal is never shared, and the files read as
//! systemd reads them. Real accounts, the helper, runuser, ptys and gcc.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use camino::{Utf8Path, Utf8PathBuf};

use crate::accounts::{accounts, probe_config, report, run_as, world};
use crate::support::{
    CRON_PATH, World, assert_status, from_cron, require, root_dir, text, toml_str,
};

/// Writes `content` to `dir/name` with `mode`, owned by `owner`.
pub(crate) fn put(
    dir: &Utf8Path,
    name: &str,
    content: &[u8],
    mode: u32,
    owner: &str,
) -> Utf8PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    chown(&path, owner);
    path
}

pub(crate) fn chown(path: &Utf8Path, owner: &str) {
    let status = Command::new("chown")
        .args(["-h", owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

pub(crate) fn tempdir_path(dir: &tempfile::TempDir) -> &Utf8Path {
    Utf8Path::from_path(dir.path()).unwrap()
}

/// The shim run as root with no terminal at all (cron, systemd).
fn detached(shim: &Utf8Path, args: &[&str]) -> Output {
    crate::accounts::without_terminal(shim, args, &[])
}

/// A shared library that, loaded into any process, appends that process's
/// uid to `marker`.
fn preload_library(world: &World, marker: &Utf8Path) -> Utf8PathBuf {
    let source = world.write(
        "mark.c",
        &format!(
            "#include <stdio.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void mark(void) {{\n\
             FILE *f = fopen(\"{marker}\", \"a\");\n\
             if (f) {{ fprintf(f, \"%d\\n\", (int) getuid()); fclose(f); }}\n}}\n"
        ),
    );
    let library = world.path("mark.so");
    let output = Command::new(require("gcc", "gcc"))
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .unwrap();
    assert_status(&output, 0);
    fs::set_permissions(&library, fs::Permissions::from_mode(0o755)).unwrap();
    library
}

#[test]
fn nothing_in_an_env_file_steers_root_or_the_shim() {
    let secrets = root_dir();
    let env = put(tempdir_path(&secrets), "app.env", b"", 0o600, "root");
    let (world, shim) = world(&format!(
        "env_file = [{}]\nconfirm = [\"flush\"]\n",
        toml_str(env.as_str())
    ));
    let marker = world.path("pwned");
    let evil = world.write(
        "evil.sh",
        &format!("#!/bin/sh\necho $(id -u) >> {marker}\n"),
    );
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o755)).unwrap();
    let library = preload_library(&world, &marker);
    let cases = [
        (format!("djshim_setpriv={evil}"), "djshim_setpriv", "check"),
        (
            format!("djshim_dir={}", world.path("")),
            "djshim_dir",
            "check",
        ),
        (format!("LD_PRELOAD={library}"), "LD_PRELOAD", "check"),
        (format!("LD_AUDIT={library}"), "LD_AUDIT", "check"),
        (
            "LD_LIBRARY_PATH=/tmp".to_owned(),
            "LD_LIBRARY_PATH",
            "check",
        ),
        ("DJSHIM_CONFIRM=app".to_owned(), "DJSHIM_CONFIRM", "check"),
        ("PPID=1".to_owned(), "PPID", "check"),
    ];
    for (line, name, subcommand) in cases {
        // The account owns the file: it writes whatever it likes.
        let env = put(
            tempdir_path(&secrets),
            "app.env",
            format!("SAFE=1\n{line}\n").as_bytes(),
            0o600,
            "djshimt-app",
        );
        let output = detached(&shim, &[subcommand]);
        assert_status(&output, 78);
        assert_eq!(
            text(&output).1,
            format!(
                "t-app: {env}:2: {name} may not be set from an env file: it would steer the loader, djshim or the shell\n"
            ),
            "{line}"
        );
        assert!(
            !marker.exists(),
            "{line}: something ran: {}",
            fs::read_to_string(&marker).unwrap_or_default()
        );
        assert!(!world.path("started").exists(), "{line}: manage.py ran");
    }
    // The confirmation comes from whoever runs the shim, never from a file.
    let output = detached(&shim, &["flush"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        "t-app: flush on instance app needs confirmation: run it on a terminal, or set DJSHIM_CONFIRM=app\n"
    );
    assert!(!world.path("started").exists(), "flush ran unconfirmed");
}

/// Runs argv on a new pseudo-terminal, as a root shell on a terminal would,
/// with the terminal on stdin (`terminal`) or only as the controlling
/// terminal (`detached-input`); then says how many bytes wait on that
/// terminal's input, which is where pushed keystrokes land.
const TERMINAL: &str = r#"import fcntl, os, pty, struct, subprocess, sys, termios
mode, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    stdin = None if mode == "terminal" else subprocess.DEVNULL
    status = subprocess.run(argv, stdin=stdin).returncode
    pending = struct.unpack("i", fcntl.ioctl(0, termios.FIONREAD, b"\0" * 4))[0]
    print(f"\nstatus={status} pending={pending}", flush=True)
    os._exit(0)
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
"#;

/// manage.py of the account's choosing: it tries to push a command into
/// whatever terminal it can reach, then reports and exits 3.
const PUSHER: &str = r#"import fcntl, json, os, sys, termios
try:
    fd = os.open("/dev/tty", os.O_RDWR)
    for byte in b"touch /tmp/djshim-pushed\n":
        fcntl.ioctl(fd, termios.TIOCSTI, bytes([byte]))
    pushed = "pushed"
except OSError as e:
    pushed = f"refused: {e.strerror}"
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "tty": os.isatty(0), "pushed": pushed, "env": dict(os.environ)}))
sys.exit(3)
"#;

struct Screen {
    report: serde_json::Value,
    status: i32,
    pending: usize,
    text: String,
}

fn on_terminal(world: &World, mode: &str, shim: &Utf8Path, args: &[&str]) -> Screen {
    let harness = world.write("terminal.py", TERMINAL);
    let mut words = vec![harness.as_str(), mode, shim.as_str()];
    words.extend(args);
    let output = from_cron(require("python3", "python3-minimal"), &words);
    assert_status(&output, 0);
    let screen = text(&output).0;
    let report = screen
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report on the terminal:\n{screen}"));
    let last = screen
        .lines()
        .rev()
        .find(|l| l.starts_with("status="))
        .unwrap();
    let (status, pending) = last.trim_end().split_once(' ').unwrap();
    Screen {
        report: serde_json::from_str(report).unwrap(),
        status: status.trim_start_matches("status=").parse().unwrap(),
        pending: pending.trim_start_matches("pending=").parse().unwrap(),
        text: screen,
    }
}

#[test]
fn a_switched_command_never_shares_roots_terminal() {
    let a = accounts();
    let secrets = root_dir();
    // Debug switches of util-linux's runuser: root's runuser would print
    // its debug lines if it saw them. They are for the account's process.
    let env = put(
        tempdir_path(&secrets),
        "app.env",
        b"SU_DEBUG=all\nULPTY_DEBUG=all\nMARK=from the file\n",
        0o600,
        "root",
    );
    for group in ["", "group = \"djshimt-extra\"\n"] {
        let (world, shim) = world(&format!("env_file = [{}]\n{group}", toml_str(env.as_str())));
        world.write("pkg/manage.py", PUSHER);

        // Interactive: a new terminal for the account, as `su --pty` gives.
        let screen = on_terminal(&world, "terminal", &shim, &["shell"]);
        assert_eq!(screen.status, 3, "{}", screen.text);
        // The push works on this kernel (into the command's own terminal),
        // so an empty root terminal below means something.
        assert_eq!(
            screen.report["pushed"], "pushed",
            "TIOCSTI is off on this kernel (sysctl dev.tty.legacy_tiocsti=0): this test needs it on"
        );
        assert_eq!(screen.pending, 0, "keystrokes reached root's terminal");
        let r = &screen.report;
        assert_eq!(r["uid"], a.app_uid);
        assert_eq!(r["tty"], true, "an interactive command keeps a terminal");
        assert_eq!(r["env"]["MARK"], "from the file");
        assert_eq!(r["env"]["SU_DEBUG"], "all");
        assert!(
            !screen.text.contains("su: "),
            "root's runuser saw the env file:\n{}",
            screen.text
        );
        let groups: Vec<u32> = serde_json::from_value(r["groups"].clone()).unwrap();
        if group.is_empty() {
            assert_eq!(r["gid"], a.app_gid);
            assert!(groups.contains(&a.app_gid) && groups.contains(&a.extra_gid));
        } else {
            // systemd's rule: the account's groups with the instance's
            // group as the base (tests/it/terminals.rs compares the paths).
            assert_eq!(r["gid"], a.extra_gid);
            assert!(groups.contains(&a.extra_gid), "{groups:?}");
        }

        // A terminal, but input from elsewhere: the command still gets a
        // terminal of its own (the one it pushes into), never root's.
        let screen = on_terminal(&world, "detached-input", &shim, &["migrate"]);
        assert_eq!(screen.status, 3, "{}", screen.text);
        assert_eq!(screen.pending, 0, "keystrokes reached root's terminal");
        assert_eq!(screen.report["pushed"], "pushed");
        assert_eq!(screen.report["tty"], false);
        assert_eq!(screen.report["uid"], a.app_uid);
    }
    assert!(!Utf8Path::new("/tmp/djshim-pushed").exists());
}

#[test]
fn a_link_in_the_accounts_directory_never_yields_a_root_only_file() {
    let secrets = root_dir();
    let secrets = tempdir_path(&secrets);
    let root_only = put(secrets, "other.env", b"SECRET=root-only\n", 0o600, "root");
    let own_dir = secrets.join("app");
    fs::create_dir(&own_dir).unwrap();
    chown(&own_dir, "djshimt-app");
    let own = put(&own_dir, "own.env", b"SECRET=mine\n", 0o600, "djshimt-app");
    let link = own_dir.join("app.env");
    std::os::unix::fs::symlink(&root_only, &link).unwrap();
    let (world, shim) = world(&format!("env_file = [{}]\n", toml_str(link.as_str())));

    let refusal = format!(
        "t-app: env file {link} belongs to root but lies under {own_dir}, which others than root \
         can change (a link there could point it at any file root can read): move it under \
         directories only root can write, or give it to djshimt-app\n"
    );
    let output = run_as(None, &shim, &[]);
    assert_status(&output, 78);
    assert_eq!(text(&output).1, refusal);
    let check = world.djshim(&["check"]);
    assert_status(&check, 1);
    assert!(
        text(&check).0.contains(&format!(
            "app: `env_file`: {link} belongs to root but lies under {own_dir}, which others than \
             root can change: the shim will not read it for `djshimt-app`"
        )),
        "{}",
        text(&check).0
    );

    // The account swaps the link between its own file and the root-only
    // one as fast as it can while root runs the shim.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
        let (link, tmp) = (link.clone(), own_dir.join("tmp"));
        let targets = [own.clone(), root_only.clone()];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for target in &targets {
                    let _ = fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    fs::rename(&tmp, &link).unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (mut read, mut refused) = (0, 0);
    for _ in 0..150 {
        let output = run_as(None, &shim, &[]);
        let (stdout, stderr) = text(&output);
        assert!(
            !stdout.contains("root-only") && !stderr.contains("root-only"),
            "the account got root's file:\n{stdout}{stderr}"
        );
        match output.status.code() {
            Some(0) => {
                assert_eq!(report(&output).env["SECRET"], "mine");
                read += 1;
            }
            Some(78) => {
                assert_eq!(stderr, refusal);
                refused += 1;
            }
            other => panic!("unexpected exit {other:?}:\n{stderr}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(swaps.load(Ordering::Relaxed) > 150, "the link hardly moved");
    assert_eq!(read + refused, 150);
}

/// What `NAME` is in the environment a shim's manage.py gets from an env
/// file holding `content`, for both ways the shim reads: in its own shell
/// (no switch of accounts) and in the account's after a switch; under dash
/// and under bash in POSIX mode.
fn readings(content: &[u8]) -> Vec<(String, serde_json::Value)> {
    let secrets = root_dir();
    let env = put(tempdir_path(&secrets), "site.env", content, 0o600, "root");
    let mut seen = Vec::new();
    for user in ["", "user = \"djshimt-app\"\n"] {
        let world = World::new();
        fs::set_permissions(world.path(""), fs::Permissions::from_mode(0o777)).unwrap();
        world.write("pkg/manage.py", crate::accounts::PROBE);
        world.write("djshim.toml", &probe_config(&world, &[&env], user));
        assert_status(&world.djshim(&["generate"]), 0);
        let shim = world.path("bin/t-app");
        for shell in [
            vec!["/bin/dash".to_owned()],
            vec![
                require("bash", "bash").display().to_string(),
                "--posix".to_owned(),
            ],
        ] {
            let output = Command::new(&shell[0])
                .args(&shell[1..])
                .arg(&shim)
                .env_clear()
                .env("PATH", CRON_PATH)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_status(&output, 0);
            let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let how = format!(
                "{} {}",
                shell.join(" "),
                if user.is_empty() {
                    "as root"
                } else {
                    "switched"
                }
            );
            seen.push((how, r["env"].clone()));
        }
    }
    seen
}

/// An env file, the `NAME=value` pairs it sets, the names it must not set.
type Case = (
    &'static [u8],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn env_files_read_as_systemd_reads_them() {
    // (file, expected NAME=value pairs, names that must be absent); the
    // values follow systemd's EnvironmentFile= rules (env-file parser).
    let cases: &[Case] = &[
        (
            b"A=1\r\nB=\"two\"\r\n\r\nC='three'\r\n",
            &[("A", "1"), ("B", "two"), ("C", "three")],
            &[],
        ),
        (
            b"K=\"a\" # not a comment\n",
            &[("K", "a# not a comment")],
            &[],
        ),
        (
            b"L=one \\\n  two\nL2=x\\\r\nL3=y\n",
            &[("L", "one   two"), ("L2", "x"), ("L3", "y")],
            &[],
        ),
        (
            b"D=\"a\\\"b\\\\c\\`d\\$e\\qf\"\n",
            &[("D", "a\"b\\c`d$e\\qf")],
            &[],
        ),
        (
            b"S='a\\b \"c\" $x'\nM='x\ny'\n",
            &[("S", "a\\b \"c\" $x"), ("M", "x\ny")],
            &[],
        ),
        (
            b"J=\"a b\" 'c d'  e\nW=a\\\"b\\\\c\n",
            &[("J", "a bc de"), ("W", "a\"b\\c")],
            &[],
        ),
        (
            b"  B1 =  spaced value  \n\tT\t=\tv\t\nE=\nF=\"\"\n",
            &[("B1", "spaced value"), ("T", "v"), ("E", ""), ("F", "")],
            &[],
        ),
        (
            b"Q=a=b\nR=1\nR=2\nP=$HOME `x` $(y)\nU8=\xc3\xbcn\xc3\xaf\n",
            &[
                ("Q", "a=b"),
                ("R", "2"),
                ("P", "$HOME `x` $(y)"),
                ("U8", "\u{fc}n\u{ef}"),
            ],
            &[],
        ),
        (
            b"export X=1\nnot a line\n2FA=on\n; semi\n# note\nN=1\nOK=1",
            &[("N", "1"), ("OK", "1")],
            &["X", "2FA"],
        ),
        (b"Z=\"open\nY=2", &[("Z", "open\nY=2")], &["Y"]),
    ];
    for (content, expected, absent) in cases {
        for (how, env) in readings(content) {
            let file = String::from_utf8_lossy(content);
            for (name, value) in *expected {
                assert_eq!(env[*name], *value, "{name} from {file:?} ({how})");
            }
            for name in *absent {
                assert!(env.get(*name).is_none(), "{name} from {file:?} ({how})");
            }
        }
    }
}

#[test]
fn check_says_where_systemd_and_the_shim_read_a_file_differently() {
    let secrets = root_dir();
    let dir = tempdir_path(&secrets);
    let old = put(
        dir,
        "old.env",
        b"# note \\\nN=1\nexport X=1\n",
        0o600,
        "root",
    );
    let bad = put(
        dir,
        "bad.env",
        b"A=1\nLD_PRELOAD=/x.so\nB=\xff\nC=1\0D=2\n",
        0o600,
        "root",
    );
    let (world, _shim) = world(&format!(
        "env_file = [{}, {}]\n",
        toml_str(old.as_str()),
        toml_str(bad.as_str())
    ));
    let output = world.djshim(&["check"]);
    assert_status(&output, 1);
    let stdout = text(&output).0;
    for line in [
        format!(
            "app: `env_file`: {old}:1: a comment ends in a backslash: systemd before 254 (Debian 12 has 252) also skips the next line, newer systemd reads it; the shim refuses the file (exit 78): remove the backslash"
        ),
        format!(
            "app: `env_file`: warning: {old}:3: skipped by systemd and the shim alike: `export X` is not a variable name"
        ),
        format!(
            "app: `env_file`: {bad}:4: a NUL byte: systemd refuses the whole file (the unit does not start), the shim too (exit 78)"
        ),
        format!(
            "app: `env_file`: {bad}:2: `LD_PRELOAD` may not be set from an env file: the shim refuses it (exit 78)"
        ),
        format!(
            "app: `env_file`: {bad}:3: the value of `B` is not UTF-8 as systemd reads it (invalid bytes or a noncharacter): systemd refuses the whole file, the shim too (exit 78)"
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

/// `check` and `pin` import the package (its settings' parents) as the
/// instance's account, never as root.
#[test]
fn check_and_pin_run_the_packages_code_as_the_account() {
    let a = accounts();
    let (world, _shim) = world("");
    let marker = world.path("imported-by");
    world.write(
        "pkg/t/__init__.py",
        &format!(
            "import os\nopen({:?}, \"a\").write(f\"{{os.getuid()}}\\n\")\n",
            marker.as_str()
        ),
    );
    world.write("pkg/t/settings.py", "");
    fs::set_permissions(world.path("pkg/t"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_status(&world.djshim(&["check"]), 0);
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        format!("{}\n", a.app_uid)
    );

    fs::remove_file(&marker).unwrap();
    let config = world
        .read("djshim.toml")
        .replace(&format!("package = \"{}\"\n", world.path("pkg")), "");
    world.write(
        "djshim.toml",
        &format!("profiles_dir = \"profiles\"\n{config}"),
    );
    assert_status(
        &world.djshim(&["pin", "app", world.path("pkg").as_str()]),
        0,
    );
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        format!("{}\n", a.app_uid)
    );
}

/// Someone the instance does not run as is told so (77) before anything
/// else, even when the interpreter is out of their reach.
#[test]
fn the_account_check_comes_first() {
    let a = accounts();
    let hidden = root_dir();
    let hidden = tempdir_path(&hidden);
    fs::set_permissions(hidden, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(
        require("python3", "python3-minimal"),
        hidden.join("python3"),
    )
    .unwrap();
    let (world, shim) = world("");
    let config = world.read("djshim.toml").replace(
        "python = \"/usr/bin/python3\"",
        &format!("python = \"{hidden}/python3\""),
    );
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    let output = run_as(Some("djshimt-other"), &shim, &[]);
    assert_status(&output, 77);
    assert_eq!(
        text(&output).1,
        format!(
            "t-app: instance app runs as djshimt-app: start it as root or as djshimt-app, not as uid {}\n",
            a.other_uid
        )
    );
}

/// bash imports functions from the environment, even as `sh` (NixOS's
/// /bin/sh): a caller's `printf`, `[` or `read` must not replace the
/// shell's own inside the shim or its env-file reader.
#[test]
fn functions_exported_by_the_caller_cannot_replace_the_shims_commands() {
    let secrets = root_dir();
    let env = put(
        tempdir_path(&secrets),
        "site.env",
        b"FROM_FILE=\"yes\"\n",
        0o600,
        "root",
    );
    let world = World::new();
    world.write("pkg/manage.py", crate::accounts::PROBE);
    world.write("djshim.toml", &probe_config(&world, &[&env], ""));
    assert_status(&world.djshim(&["generate"]), 0);
    let mut cmd = Command::new(require("bash", "bash"));
    cmd.arg("--posix")
        .arg(world.path("bin/t-app"))
        .env_clear()
        .env("PATH", CRON_PATH)
        .stdin(Stdio::null());
    for name in ["[", "test", "printf", "read", "cd", "command", "true"] {
        cmd.env(format!("BASH_FUNC_{name}%%"), "() { echo EVIL; exit 99; }");
    }
    let output = cmd.output().unwrap();
    assert_status(&output, 0);
    assert_eq!(report(&output).env["FROM_FILE"], "yes");
}
