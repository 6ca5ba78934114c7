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

/// Asks the holder: `restart` or `stop`.
const CONTROL: &str = r#"import socket, sys
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
        Site::built_with(postgres, "command = [\"true\"]")
    }

    /// The site, built with `build` (`[build]`'s `command` or `nix` line).
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
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "--quiet", "-m", "first"]);
        let port = free_port();
        fs::create_dir_all(world.path("var/prod")).unwrap();
        fs::create_dir_all(world.path("var/staging")).unwrap();
        let python = require("python3", "python3-minimal");
        world.write("control.py", CONTROL);
        world.write(
            "djshim.toml",
            &format!(
                "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\nunits_dir = \"units\"\n\
                 [build]\nrepo = \"repo\"\nref = \"main\"\n{build}\nreleases_dir = \"releases\"\nuser = \"djshimt-build\"\n\
                 [defaults]\npython = \"{venv}/bin/python3\"\nsettings = \"mywebsite.settings.production\"\n\
                 user = \"root\"\nstate_dir = \"var/{{instance}}\"\nstatic_root = \"var/{{instance}}/static\"\n\
                 static_dirs = [\"profiles/mywebsite-{{instance}}/assets\"]\n\
                 env = {{ MYWEBSITE_DB = \"{db}/{{instance}}.sqlite3\", DJANGO_ALLOWED_HOSTS = \"127.0.0.1,localhost\"{pg} }}\n\
                 [defaults.deploy]\nrestart = [\"true\"]\n\
                 [instances.staging]\n\
                 [instances.prod]\n\
                 [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--workers\", \"1\"]\n\
                 socket = \"127.0.0.1:{port}\"\n\
                 [instances.prod.deploy]\nrestart = [\"{python}\", \"{control}\", \"{sock}\", \"restart\"]\n\
                 health = \"http://127.0.0.1:{port}/health\"\nhealth_timeout = 8\n",
                venv = venv(),
                db = world.path("var"),
                python = python.display(),
                control = world.path("control.py"),
                sock = world.path("holder.sock"),
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
        let mut site = Site::new();
        site.hold_server();
        assert_status(&site.deploy(&["prod"]), 0);
        let first = site.generation_target("prod");
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

    pub(crate) fn deploy(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["deploy"];
        all.extend(args);
        self.world.djshim(&all)
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
pub(crate) const VOTES_MIGRATION: &str = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
     dependencies = [(\"polls\", \"0001_initial\")]\n    operations = [\n        \
     migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0)),\n    ]\n";

/// `djshim deploy prod` started in a process group of its own and killed
/// with SIGKILL (all of it: djshim, the shim, manage.py) when it prints
/// `marker`.
pub(crate) fn killed_deploy(site: &Site, marker: &str) {
    killed(site, &["deploy", "prod"], marker);
}

/// `djshim ARGS` started in a process group of its own and killed with
/// SIGKILL (all of it) when a step starting with `marker` begins.
pub(crate) fn killed(site: &Site, args: &[&str], marker: &str) {
    use std::os::unix::process::CommandExt;
    let mut child = site
        .world
        .djshim_cmd(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(marker) && line.ends_with('…') {
            // `--`: a process group is a negative number, which kill would
            // otherwise read as an option.
            let status = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(status.success());
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "`djshim {}` ended before `{marker}`:\n{seen}",
        args.join(" ")
    );
}

/// Commits the votes migration (0002) and its model.
pub(crate) fn commit_votes(site: &Site) {
    site.commit(
        &[
            ("polls/models.py", VOTES_MODEL),
            ("polls/migrations/0002_question_votes.py", VOTES_MIGRATION),
        ],
        "votes",
    );
}
