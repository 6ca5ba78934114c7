//! A deployable site for the tests of deploy, rollback and pin on this
//! machine (deploys.rs, plans.rs): the example project in a real git
//! repository, instances `prod` and `staging`, and a stand-in for systemd
//! that holds prod's server socket and restarts the server when `restart`
//! asks; the migration most tests deploy (votes), and the ways to kill a
//! run at a step.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{World, assert_status, copy_tree, from_cron, git, require, root, text, venv};
use crate::systemd::{Unit, free_port};

/// The server's stand-in for systemd: holds the socket, starts the unit's
/// command with it on descriptor 3, restarts it when told on a control
/// socket (`restart` answers `ok` once the new server runs).
const HOLDER: &str = r#"import json, os, signal, socket, sys
listen, control, env_file, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
env = json.load(open(env_file))
host, port = listen.rsplit(":", 1)
held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
held.bind((host, int(port)))
held.listen(socket.SOMAXCONN)
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.bind(control)
ctl.listen(8)
print("ready", flush=True)
child = None
def start():
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        os.dup2(held.fileno(), 3)
        os.set_inheritable(3, True)
        os.closerange(4, 1024)
        os.execve(argv[0], argv, dict(env, LISTEN_FDS="1", LISTEN_PID=str(os.getpid())))
    return pid
def stop(pid):
    if pid:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
while True:
    conn, _ = ctl.accept()
    word = conn.makefile().readline().strip()
    if word in ("restart", "stop"):
        stop(child)
        child = None
    if word == "restart":
        child = start()
    conn.sendall(b"ok\n")
    conn.close()
    if word == "stop":
        break
"#;

/// Where a process of the site stops when a test says so, so that a kill
/// lands where the test names (never where the timing happens to put it):
/// a process reaching gate KEY finds GATES/KEY armed, takes it (renames it
/// to KEY.inside: one process alone can), starts the Python the armed file
/// holds, if any, in a process of its own (one a killed run would leave
/// behind; its output goes nowhere, so the test's reader of djshim's
/// stderr does not wait for it), and waits while KEY.inside exists: until the test removes it,
/// or kills the process.
pub(crate) const GATE: &str = r#"import os, subprocess, sys, time
def gate(key, gates=None):
    gates = gates or os.environ.get("MYWEBSITE_TEST_GATES")
    if not gates:
        return
    armed = os.path.join(gates, key)
    inside = armed + ".inside"
    try:
        code = open(armed).read()
        os.rename(armed, inside)
    except FileNotFoundError:
        return
    with open(inside, "w") as f:
        f.write(str(os.getpid()))
    if code:
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=os.path.dirname(os.path.abspath(sys.argv[0])),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    while os.path.exists(inside):
        time.sleep(0.02)
"#;

/// Asks the holder: `restart` or `stop`; with a fourth argument, the
/// gates' directory, through gate `restart` first.
const CONTROL: &str = r#"
if len(sys.argv) > 3:
    gate("restart", sys.argv[3])
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
assert s.makefile().readline().strip() == "ok"
"#;

/// A site: the example project in a git repository, an instance `prod`
/// (and `staging`) that deploys from it, and the stand-in holding prod's
/// server once `start_server` is called.
pub(crate) struct Site {
    pub(crate) world: World,
    pub(crate) repo: Utf8PathBuf,
    pub(crate) port: u16,
    holder: Option<Child>,
}

impl Site {
    pub(crate) fn new() -> Site {
        Site::with(None)
    }

    /// The site on PostgreSQL (`Some`: the server's socket directory).
    pub(crate) fn with(postgres: Option<&Utf8Path>) -> Site {
        Site::built_with(
            postgres,
            "command = [\"@PYTHON@\", \"@GATE@\", \"@GATES@\", \"build\"]",
        )
    }

    /// The site, built with `build` (`[build]`'s `command` or `nix` line,
    /// where `@PYTHON@`, `@GATE@` and `@GATES@` name python3, gate.py and
    /// the gates' directory).
    pub(crate) fn built_with(postgres: Option<&Utf8Path>, build: &str) -> Site {
        let world = World::new();
        // The build account, and a world it can walk into.
        crate::accounts::accounts();
        fs::set_permissions(
            world.path(""),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let repo = world.path("repo");
        copy_tree(&root().join("examples/mywebsite"), &repo);
        gated(&repo);
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "--quiet", "-m", "first"]);
        let port = free_port();
        fs::create_dir_all(world.path("var/prod")).unwrap();
        fs::create_dir_all(world.path("var/staging")).unwrap();
        let python = require("python3", "python3-minimal");
        world.write("control.py", &format!("{GATE}{CONTROL}"));
        world.write(
            "gate.py",
            &format!("{GATE}gate(sys.argv[2], sys.argv[1])\n"),
        );
        let gates = world.path("gates");
        fs::create_dir(&gates).unwrap();
        // The build account takes the build's gate.
        fs::set_permissions(&gates, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        world.write(
            "djshim.toml",
            &format!(
                "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\nunits_dir = \"units\"\n\
                 [build]\nrepo = \"repo\"\nref = \"main\"\n{build}\nreleases_dir = \"releases\"\nuser = \"djshimt-build\"\n\
                 [defaults]\npython = \"{venv}/bin/python3\"\nsettings = \"mywebsite.settings.production\"\n\
                 user = \"root\"\nstate_dir = \"var/{{instance}}\"\nstatic_root = \"var/{{instance}}/static\"\n\
                 static_dirs = [\"profiles/mywebsite-{{instance}}/assets\"]\n\
                 env = {{ MYWEBSITE_DB = \"{db}/{{instance}}.sqlite3\", DJANGO_ALLOWED_HOSTS = \"127.0.0.1,localhost\", MYWEBSITE_TEST_GATES = \"{gates}\"{pg} }}\n\
                 [defaults.deploy]\nrestart = [\"true\"]\n\
                 [instances.staging]\n\
                 [instances.prod]\n\
                 [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--workers\", \"1\"]\n\
                 socket = \"127.0.0.1:{port}\"\n\
                 [instances.prod.deploy]\nrestart = [\"{python}\", \"{control}\", \"{sock}\", \"restart\", \"{gates}\"]\n\
                 health = \"http://127.0.0.1:{port}/health\"\nhealth_timeout = 8\n",
                venv = venv(),
                db = world.path("var"),
                python = python.display(),
                control = world.path("control.py"),
                sock = world.path("holder.sock"),
                gates = world.path("gates"),
                build = build
                    .replace("@PYTHON@", &python.display().to_string())
                    .replace("@GATE@", world.path("gate.py").as_str())
                    .replace("@GATES@", world.path("gates").as_str()),
                pg = postgres
                    .map(|dir| format!(", MYWEBSITE_PG_HOST = \"{dir}\""))
                    .unwrap_or_default(),
            ),
        );
        assert_status(&world.djshim(&["generate"]), 0);
        Site {
            world,
            repo,
            port,
            holder: None,
        }
    }

    /// A site whose prod runs its first deploy, its server held; the
    /// package of that first generation.
    pub(crate) fn serving() -> (Site, Utf8PathBuf) {
        Site::serving_on(None)
    }

    /// [`Site::serving`], on PostgreSQL with `Some` (its socket directory).
    pub(crate) fn serving_on(postgres: Option<&Utf8Path>) -> (Site, Utf8PathBuf) {
        let mut site = Site::with(postgres);
        site.hold_server();
        assert_status(&site.deploy(&["prod"]), 0);
        let first = site.generation_target("prod");
        (site, first)
    }

    /// A site whose prod serves its second deploy, the votes migration
    /// ([`commit_votes`]); the package of the first generation.
    pub(crate) fn voted() -> (Site, Utf8PathBuf) {
        let (site, first) = Site::serving();
        commit_votes(&site);
        assert_status(&site.deploy(&["prod"]), 0);
        (site, first)
    }

    /// A site whose staging runs its first deploy (no server held); the
    /// package of that generation.
    pub(crate) fn staged() -> (Site, Utf8PathBuf) {
        let site = Site::new();
        assert_status(&site.deploy(&["staging"]), 0);
        let first = site.generation_target("staging");
        (site, first)
    }

    /// Starts the stand-in for prod's server units (no server runs until
    /// the first `restart`).
    pub(crate) fn hold_server(&mut self) {
        assert_status(&self.world.djshim(&["systemd"]), 0);
        let unit = Unit::parse(&self.world.read("units/mywebsite-prod.service"));
        let command = unit.command();
        let env: std::collections::BTreeMap<String, String> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        let env_file = self
            .world
            .write("env.json", &serde_json::to_string(&env).unwrap());
        let holder = self.world.write("holder.py", HOLDER);
        let mut child = Command::new(require("python3", "python3-minimal"))
            .arg(&holder)
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(self.world.path("holder.sock"))
            .arg(&env_file)
            .arg(unit.one("WorkingDirectory"))
            .arg(command.get_program())
            .args(command.get_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        self.holder = Some(child);
    }

    /// Arms gate `key`: the next process to reach it waits there (after
    /// starting `code`, Python, in a process of its own, unless empty).
    pub(crate) fn arm(&self, key: &str, code: &str) {
        let armed = self.world.write(&format!("gates/{key}"), code);
        fs::set_permissions(armed, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }

    /// Commits the files given (path in the repository, content).
    pub(crate) fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let path = self.repo.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        git(&self.repo, &["add", "."]);
        git(&self.repo, &["commit", "--quiet", "-m", message]);
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    /// Adds `lines` (TOML) to prod's `[deploy]` table.
    pub(crate) fn prod_deploy(&self, lines: &str) {
        self.reconfigure(
            "health_timeout = 8\n",
            &format!("health_timeout = 8\n{lines}\n"),
        );
    }

    /// Replaces `from` (which must be there) in djshim.toml by `to`.
    #[track_caller]
    pub(crate) fn reconfigure(&self, from: &str, to: &str) {
        let config = self.world.read("djshim.toml");
        assert!(config.contains(from), "no `{from}` in:\n{config}");
        self.world
            .write("djshim.toml", &config.replacen(from, to, 1));
    }

    pub(crate) fn deploy(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["deploy"];
        all.extend(args);
        self.world.djshim(&all)
    }

    /// `djshim ARGS` started, its stderr piped (stdout goes nowhere).
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.world
            .djshim_cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// What prod's /health and / answer now.
    pub(crate) fn get(&self, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
            if !answer.is_empty() || Instant::now() > deadline {
                return answer;
            }
        }
    }

    /// The migrations applied to `instance`'s database, through its shim.
    pub(crate) fn migrations(&self, instance: &str) -> String {
        let output = from_cron(
            self.world.path(&format!("bin/mywebsite-{instance}")),
            &["showmigrations", "polls"],
        );
        assert_status(&output, 0);
        text(&output).0
    }

    /// The last line `code` prints, run by prod's shim as `manage.py
    /// shell -c` from cron's environment (which must succeed).
    #[track_caller]
    pub(crate) fn python(&self, code: &str) -> String {
        let output = from_cron(
            self.world.path("bin/mywebsite-prod"),
            &["shell", "-c", code],
        );
        assert_status(&output, 0);
        text(&output)
            .0
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    }

    /// Prod runs `first` again, its database without the votes migration
    /// (0002), and serves.
    #[track_caller]
    pub(crate) fn assert_back_on(&self, first: &Utf8Path) {
        assert_eq!(self.generation_target("prod"), first);
        let migrations = self.migrations("prod");
        assert!(!migrations.contains("[X] 0002"), "{migrations}");
        assert!(self.get("/health").ends_with("\r\n\r\nok\n"));
    }

    pub(crate) fn generation_target(&self, instance: &str) -> Utf8PathBuf {
        Utf8PathBuf::from_path_buf(
            fs::canonicalize(self.world.path(&format!("profiles/mywebsite-{instance}"))).unwrap(),
        )
        .unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            let _ = Command::new("python3")
                .arg(self.world.path("control.py"))
                .arg(self.world.path("holder.sock"))
                .arg("stop")
                .status();
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

/// The model of commit 2: a new field and its (reversible) migration.
pub(crate) const VOTES_MODEL: &str = "from django.db import models\n\n\nclass Question(models.Model):\n    \
     text = models.CharField(max_length=200)\n    published = models.DateTimeField(auto_now_add=True)\n    \
     votes = models.IntegerField(default=0)\n\n    def __str__(self):\n        return self.text\n";
/// The votes migration, through gates `migrate-0002` (after its column is
/// added, in its transaction) and `unmigrate-0002` (before it is dropped).
pub(crate) const VOTES_MIGRATION_GATED: &str = "from django.db import migrations, models\n\
     from polls.gates import gate\n\n\nclass Migration(migrations.Migration):\n    \
     dependencies = [(\"polls\", \"0001_initial\")]\n    operations = [\n        \
     migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0)),\n        \
     migrations.RunPython(\n            lambda apps, schema: gate(\"migrate-0002\"),\n            \
     lambda apps, schema: gate(\"unmigrate-0002\"),\n        ),\n    ]\n";
pub(crate) const VOTES_MIGRATION: &str = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
     dependencies = [(\"polls\", \"0001_initial\")]\n    operations = [\n        \
     migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0)),\n    ]\n";

/// `djshim deploy prod`, killed at gate `key` (see [`killed`]).
pub(crate) fn killed_deploy(site: &Site, key: &str) -> String {
    killed(site, &["deploy", "prod"], key)
}

/// `djshim ARGS` killed with SIGKILL (djshim alone: its steps die with it,
/// or are left behind by it) while a process of its step waits at gate
/// `key`, which is then opened; what djshim wrote to stderr.
pub(crate) fn killed(site: &Site, args: &[&str], key: &str) -> String {
    site.arm(key, "");
    let (stderr, status) = stopped_at(site, args, &[key], "KILL");
    assert!(
        status.code().is_none(),
        "`djshim {}` ended before gate `{key}`:\n{stderr}",
        args.join(" ")
    );
    stderr
}

/// `djshim ARGS`, sent `signal` as each gate of `keys` (armed by the
/// caller) is taken in turn, the gate opened after that: what it wrote to
/// stderr, how it ended.
pub(crate) fn stopped_at(
    site: &Site,
    args: &[&str],
    keys: &[&str],
    signal: &str,
) -> (String, std::process::ExitStatus) {
    let mut child = site.spawn(args);
    let reader = drain(child.stderr.take().unwrap());
    for key in keys {
        let inside = site.world.path(&format!("gates/{key}.inside"));
        if !gate_taken(site, &mut child, key) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`djshim {}` never reached gate `{key}`:\n{}",
                args.join(" "),
                reader.join().unwrap()
            );
        }
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        if signal == "KILL" {
            child.wait().unwrap();
        } else {
            // djshim stops its step's process on the signal: the gate
            // opens only once it is gone, so the step never goes on past
            // it (a migration's reversal let through here dropped its
            // column, and the kill then came before Django recorded it).
            let deadline = Instant::now() + Duration::from_secs(30);
            let holder = loop {
                if let Ok(pid) = fs::read_to_string(&inside).map(|t| t.trim().to_owned())
                    && !pid.is_empty()
                {
                    break pid;
                }
                assert!(Instant::now() < deadline, "gate `{key}` names no process");
                std::thread::sleep(Duration::from_millis(10));
            };
            while Utf8Path::new(&format!("/proc/{holder}")).exists() {
                assert!(
                    Instant::now() < deadline,
                    "the process at gate `{key}` outlived the signal by 30 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // A process that did not die with djshim (the server answering
        // the health probe) goes on.
        let _ = fs::remove_file(&inside);
    }
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status)
}

/// Waits (at most 120 s) until a process of `child` takes gate `key`;
/// false when `child` ended first or the time ran out.
pub(crate) fn gate_taken(site: &Site, child: &mut Child, key: &str) -> bool {
    let inside = site.world.path(&format!("gates/{key}.inside"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !inside.exists() {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Reads `pipe` to its end in a thread.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Makes the example project at `repo` stop at gates: `polls/gates.py`,
/// gate `manage-COMMAND` as each `manage.py COMMAND` starts, gate `health`
/// in the health view.
fn gated(repo: &Utf8Path) {
    fs::write(repo.join("polls/gates.py"), GATE).unwrap();
    fs::write(
        repo.join("polls/apps.py"),
        "import sys\n\nfrom django.apps import AppConfig\n\n\nclass PollsConfig(AppConfig):\n    \
         name = \"polls\"\n\n    def ready(self):\n        from .gates import gate\n\n        \
         if sys.argv[0].endswith(\"manage.py\") and len(sys.argv) > 1:\n            \
         gate(\"manage-\" + sys.argv[1])\n",
    )
    .unwrap();
    let views = repo.join("polls/views.py");
    let text = fs::read_to_string(&views).unwrap();
    let text = text.replace(
        "    list(Question.objects.all()[:1])",
        "    from .gates import gate\n\n    gate(\"health\")\n    list(Question.objects.all()[:1])",
    );
    assert!(text.contains("gate(\"health\")"), "{text}");
    fs::write(views, text).unwrap();
}

/// Commits the votes migration (0002, through its gates) and its model.
pub(crate) fn commit_votes(site: &Site) {
    site.commit(
        &[
            ("polls/models.py", VOTES_MODEL),
            (
                "polls/migrations/0002_question_votes.py",
                VOTES_MIGRATION_GATED,
            ),
        ],
        "votes",
    );
}
