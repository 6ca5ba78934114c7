//! The units djshim writes, run by a real systemd (PID 1 of the container
//! of tests/it/machine.rs): djshim itself runs in the container, as root on
//! a fresh Debian server would, and each test drives `systemctl` there.
//! Each test has a project name and a port of its own: they share the
//! container.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::machine::{Guest, Machine, machine, python};
use crate::support::{Expect, assert_status, text};

const CLIENT: &str = include_str!("../nspawn/client.py");

/// The example project as instance `prod` of `project`, run by the account
/// `project`, pinned through its profile to release `a` (answering
/// `instance=prod`), with release `b` (answering `instance=prod-b`) beside
/// it, state under `/var/lib/<project>-prod`, served by gunicorn behind a
/// socket on `port` (workers recycled every 3 requests); `extra` is added
/// to the instance's table.
fn site(project: &str, port: u16, extra: &str) -> Guest {
    let m = machine();
    let guest = m.guest();
    m.account(project, &[]);
    guest.release("a");
    guest.release("b");
    guest.world.write(
        "b/mywebsite/settings/production.py",
        "from .base import *  # noqa: F403\n\nINSTANCE = \"prod-b\"\n",
    );
    guest.write(
        "djshim.toml",
        &format!(
            "project = \"{project}\"\nprofiles_dir = \"profiles\"\nunits_dir = \"/etc/systemd/system\"\n\
             [instances.prod]\npython = \"{python}\"\n\
             settings = \"mywebsite.settings.production\"\nuser = \"{project}\"\n\
             state_dir = \"/var/lib/{project}-prod\"\n\
             env = {{ MYWEBSITE_DB = \"/var/lib/{project}-prod/db.sqlite3\", \
             DJANGO_ALLOWED_HOSTS = \"localhost\" }}\n{extra}\n\
             [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \
             \"--workers\", \"2\", \"--max-requests\", \"3\"]\n\
             socket = \"127.0.0.1:{port}\"\n",
            python = python(),
        ),
    );
    guest
}

/// Pins `prod` to `a`, writes the shims and the units, migrates through the
/// shim (as root, which switches to the account), starts the target.
fn start(guest: &Guest) {
    let m = guest.machine;
    guest.djshim_ok(&["pin", "prod", guest.path("a").as_str()]);
    guest.djshim_ok(&["generate"]);
    let shim = guest.path(&format!("bin/{}-prod", project(guest)));
    let output = m.run(&[shim.as_str(), "migrate", "--noinput"]);
    assert_status(&output, 0);
    guest.djshim_ok(&["systemd"]);
    m.systemctl(&["daemon-reload"]);
    m.systemctl(&["start", &format!("{}-prod.target", project(guest))]);
}

/// [`start`], with the tmpfiles.d file the units need installed first.
fn start_with_tmpfiles(guest: &Guest) {
    let m = guest.machine;
    let project = project(guest);
    guest.djshim_ok(&["pin", "prod", guest.path("a").as_str()]);
    guest.djshim_ok(&["generate"]);
    let shim = guest.path(&format!("bin/{project}-prod"));
    m.ok(&[shim.as_str(), "migrate", "--noinput"]);
    guest.djshim_ok(&["systemd"]);
    m.ok(&[
        "systemd-tmpfiles",
        "--create",
        &format!("/etc/systemd/system/{project}-prod.tmpfiles.conf"),
    ]);
    m.systemctl(&["daemon-reload"]);
    m.systemctl(&["start", &format!("{project}-prod.target")]);
}

fn project(guest: &Guest) -> String {
    let config = guest.world.read("djshim.toml");
    let line = config.lines().next().unwrap();
    line.trim_start_matches("project = \"")
        .trim_end_matches('"')
        .to_owned()
}

/// A client loop on `http://127.0.0.1:PORT/PATH` in the container (at
/// most 120 s), until [`finish`].
fn client(guest: &Guest, port: u16, path: &str) -> Child {
    let _ = std::fs::remove_file(guest.world.path("client.stop"));
    guest.write("client.py", CLIENT);
    guest
        .machine
        .command(
            "/",
            &[
                &python(),
                guest.path("client.py").as_str(),
                &port.to_string(),
                guest.path("client.stop").as_str(),
                "120",
                path,
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops the client loop; its summary.
fn finish(guest: &Guest, client: Child) -> serde_json::Value {
    guest.write("client.stop", "");
    let output = client.wait_with_output().unwrap();
    assert_status(&output, 0);
    serde_json::from_str(&text(&output).0).unwrap()
}

/// What the instance answers on `/`, asserted to answer.
#[track_caller]
fn get(m: &Machine, port: u16) -> String {
    let body = m.get(port, "/");
    assert!(!body.is_empty(), "no answer on port {port}");
    body
}

#[test]
fn the_server_takes_its_socket_from_systemd_and_restarts_lose_no_request() {
    let port = 8101;
    let guest = site("sdsock", port, "");
    let m = guest.machine;
    start(&guest);
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    let main = m.property("sdsock-prod.service", "MainPID");
    assert_eq!(m.property("sdsock-prod.service", "User"), "sdsock");
    let status = m.ok(&["cat", &format!("/proc/{main}/status")]);
    let uid = m.ok(&["id", "-u", "sdsock"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(uid.trim())),
        "{status}"
    );

    // Three restarts of the instance under a client loop: none refused.
    let loop_ = client(&guest, port, "/");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        m.systemctl(&["restart", "sdsock-prod.target"]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let summary = finish(&guest, loop_);
    assert_eq!(summary["failures"], 0, "{summary}");
    // Requests went on through the restarts: a loaded machine made 39 in
    // the 6 s (an idle one 100 or more), so the bar is what any machine
    // makes, not a rate.
    assert!(summary["requests"].as_u64().unwrap() >= 10, "{summary}");
    assert_ne!(m.property("sdsock-prod.service", "MainPID"), main);

    // A pin while it serves changes nothing until a restart: workers
    // recycled every 3 requests come from the generation the server
    // started with.
    guest.djshim_ok(&["pin", "prod", guest.path("b").as_str()]);
    let answers: Vec<String> = (0..15).map(|_| get(m, port)).collect();
    assert!(
        answers.iter().all(|a| a == "instance=prod questions=0\n"),
        "{answers:?}"
    );
    m.systemctl(&["restart", "sdsock-prod.target"]);
    assert_eq!(get(m, port), "instance=prod-b questions=0\n");
}

/// What systemd itself gives a unit's process, and the shim (run by root
/// from a bare environment) does not: the unit's bookkeeping, its
/// directories, the socket it hands over, the account's shell. Nothing
/// else may differ.
const SYSTEMD_ONLY: &[&str] = &[
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "SHELL",
];

/// Code for `manage.py shell -c` that writes the environment manage.py
/// was started with (`/proc/self/environ`: before Django sets `TZ`, or
/// Python `LC_CTYPE`) as JSON to `to`.
fn dump_env(to: &str) -> String {
    format!(
        "import json; env = open('/proc/self/environ', 'rb').read().split(b'\\0'); \
         json.dump(dict(v.decode().split('=', 1) for v in env if v), open({to:?}, 'w'))"
    )
}

fn without_systemd(mut env: BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.retain(|k, _| !SYSTEMD_ONLY.contains(&k.as_str()));
    env
}

/// The same environment for the shim and every unit of a profile instance,
/// variable by variable: the server (whose `PYTHONPATH` starts with
/// manage.py's directory, as manage.py's own `sys.path` does), a
/// management-command service, a job. The env file lies in a directory
/// whose name systemd would misread if quoted (`~#&%;`) and sets
/// `VIRTUAL_ENV`, which the unit's launcher used to set over it; the state
/// directory has such a name too (`WorkingDirectory=`, tmpfiles.d).
#[test]
fn every_unit_runs_with_the_shims_environment() {
    environment_case("sdenv", "/etc/sdenv", "/srv/sdenv/state", 8102);
}

/// The same, with the env file and the state directory where systemd would
/// misread a quoted path (`~#&;`): `EnvironmentFile=` and
/// `WorkingDirectory=` take no quotes.
#[test]
fn paths_that_need_no_quotes_are_written_without() {
    environment_case(
        "sdpath",
        "/etc/sdpath/a~b#c&d;e",
        "/srv/sdpath/st~ate#1",
        8107,
    );
}

fn environment_case(project: &str, secrets: &str, state: &str, port: u16) {
    let m = machine();
    let guest = m.guest();
    m.account(project, &[]);
    guest.release("a");
    m.ok(&["install", "-d", "-m", "0755", secrets]);
    m.ok(&[
        "sh",
        "-c",
        &format!(
            "umask 077; printf 'SECRET_KEY=s3cr3t\\nVIRTUAL_ENV=/from/the/env/file\\n' > '{secrets}/prod.env'"
        ),
    ]);
    guest.write(
        "djshim.toml",
        &format!(
            "project = \"{project}\"\nprofiles_dir = \"profiles\"\nunits_dir = \"/etc/systemd/system\"\n\
             [instances.prod]\npython = \"{python}\"\nsettings = \"mywebsite.settings.production\"\n\
             user = \"{project}\"\nstate_dir = \"{state}\"\nenv_file = [\"{secrets}/prod.env\"]\n\
             env = {{ MYWEBSITE_DB = \"{state}/db.sqlite3\", DJANGO_ALLOWED_HOSTS = \"localhost\" }}\n\
             [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\"]\n\
             socket = \"127.0.0.1:{port}\"\n\
             [instances.prod.services.sendalerts]\nmanage = [\"sendalerts\"]\n\
             [instances.prod.services.http]\ncommand = [\"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"0\"]\n\
             [instances.prod.jobs.dumpenv]\nmanage = [\"shell\", \"-c\", {job:?}]\n\
             schedule = \"17 3 * * *\"\n",
            python = python(),
            job = dump_env(&format!("{state}/job.json")),
        ),
    );
    guest.djshim_ok(&["pin", "prod", guest.path("a").as_str()]);
    guest.djshim_ok(&["generate"]);
    m.ok(&[
        guest.path(&format!("bin/{project}-prod")).as_str(),
        "migrate",
        "--noinput",
    ]);
    guest.djshim_ok(&["systemd"]);
    m.ok(&[
        "systemd-tmpfiles",
        "--create",
        &format!("/etc/systemd/system/{project}-prod.tmpfiles.conf"),
    ]);
    m.systemctl(&["daemon-reload"]);
    m.systemctl(&["start", &format!("{project}-prod.target")]);
    m.systemctl(&["start", &format!("{project}-prod-dumpenv.service")]);
    let job: BTreeMap<String, String> =
        serde_json::from_str(&m.ok(&["cat", &format!("{state}/job.json")])).unwrap();

    // The shim, run by root from nothing but systemd's PATH and the
    // system's locale (systemd passes its own `LANG` to every unit; without
    // one Python would set `LC_CTYPE` itself, PEP 538).
    let shim = guest.path(&format!("bin/{project}-prod"));
    let shim_json = format!("{state}/shim.json");
    let lang = format!("LANG={}", job["LANG"]);
    m.ok(&[
        "env",
        "-i",
        &format!("PATH={}", djshim::units::SERVICE_PATH),
        &lang,
        shim.as_str(),
        "shell",
        "-c",
        &dump_env(&shim_json),
    ]);
    let shim: BTreeMap<String, String> = serde_json::from_str(&m.ok(&["cat", &shim_json])).unwrap();
    assert_eq!(shim["VIRTUAL_ENV"], "/from/the/env/file");
    assert_eq!(shim["SECRET_KEY"], "s3cr3t");
    assert_eq!(shim["USER"], project);
    assert_eq!(without_systemd(job.clone()), shim, "job vs shim");
    assert_eq!(job["PWD"], state, "{job:?}");

    m.wait_state(
        &format!("{project}-prod-sendalerts.service"),
        "active",
        Duration::from_secs(20),
    );
    let worker = m.environ(&m.property(&format!("{project}-prod-sendalerts.service"), "MainPID"));
    assert_eq!(without_systemd(worker), shim, "service vs shim");

    assert_eq!(get(m, port), "instance=prod questions=0\n");
    // A python service and the server: manage.py's directory first on
    // `PYTHONPATH`, as manage.py's own `sys.path` has it.
    let http = format!("{project}-prod-http.service");
    m.wait_state(&http, "active", Duration::from_secs(20));
    let mut python_service = without_systemd(m.environ(&m.property(&http, "MainPID")));
    let mut server =
        without_systemd(m.environ(&m.property(&format!("{project}-prod.service"), "MainPID")));
    let package = m.ok(&[
        "readlink",
        "-f",
        guest.path(&format!("profiles/{project}-prod")).as_str(),
    ]);
    assert_eq!(server["PYTHONPATH"], package.trim());
    server.remove("PYTHONPATH");
    // The server's runtime files (gunicorn's control socket) go to its
    // runtime directory, not under the account's home.
    assert_eq!(server["XDG_RUNTIME_DIR"], format!("/run/{project}-prod"));
    server.remove("XDG_RUNTIME_DIR");
    assert_eq!(python_service["PYTHONPATH"], package.trim());
    python_service.remove("PYTHONPATH");
    let mut expected = shim.clone();
    expected.remove("PYTHONPATH");
    assert_eq!(server, expected, "server vs shim");
    assert_eq!(python_service, expected, "python service vs shim");
}

/// `systemctl show -P PROP UNIT` of a timestamp, in microseconds: the
/// seconds within the minute (`07:31:00.000818` → 0.000818).
fn seconds_in_minute(m: &Machine, unit: &str, property: &str) -> f64 {
    let stamp = m.ok(&[
        "systemctl",
        "show",
        "--timestamp=us+utc",
        "-P",
        property,
        unit,
    ]);
    // "Wed 2026-12-02 07:31:00.000818 UTC"
    let time = stamp.split_whitespace().nth(2).unwrap_or_default();
    time.rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{stamp:?}"))
}

/// Services are kept up (`Restart=always`: `kill -9` brings a new process);
/// a job's timer fires within a second of its cron time (`AccuracySec=1s`;
/// systemd's default would be anywhere in the minute); and restarting the
/// instance never runs a job (systemd 252 fires a *restarted* timer at once
/// when its last time has passed, so timers are not part of the target:
/// they only stop with it).
#[test]
fn services_stay_up_and_timers_fire_on_time_but_never_on_a_restart() {
    let m = machine();
    let guest = m.guest();
    m.account("sdjob", &[]);
    guest.release("a");
    let ticks = "/var/lib/sdjob-prod/ticks";
    guest.write(
        "djshim.toml",
        &format!(
            "project = \"sdjob\"\nprofiles_dir = \"profiles\"\nunits_dir = \"/etc/systemd/system\"\n\
             [instances.prod]\npython = \"{python}\"\nsettings = \"mywebsite.settings.production\"\n\
             user = \"sdjob\"\nstate_dir = \"/var/lib/sdjob-prod\"\n\
             env = {{ MYWEBSITE_DB = \"/var/lib/sdjob-prod/db.sqlite3\" }}\n\
             [instances.prod.services.sendalerts]\nmanage = [\"sendalerts\"]\n\
             [instances.prod.jobs.tick]\nmanage = [\"shell\", \"-c\", {code:?}]\n\
             schedule = \"* * * * *\"\n",
            python = python(),
            code = format!("import time; open({ticks:?}, 'a').write('%f\\n' % time.time())"),
        ),
    );
    guest.djshim_ok(&["pin", "prod", guest.path("a").as_str()]);
    guest.djshim_ok(&["systemd"]);
    m.systemctl(&["daemon-reload"]);
    m.systemctl(&["start", "sdjob-prod.target"]);

    m.wait_state(
        "sdjob-prod-sendalerts.service",
        "active",
        Duration::from_secs(20),
    );
    let first = m.property("sdjob-prod-sendalerts.service", "MainPID");
    m.ok(&["kill", "-9", &first]);
    let start = std::time::Instant::now();
    while m.property("sdjob-prod-sendalerts.service", "MainPID") == first
        || m.property("sdjob-prod-sendalerts.service", "ActiveState") != "active"
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            m.journal("sdjob-prod-sendalerts.service")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        m.property("sdjob-prod-sendalerts.service", "NRestarts"),
        "1"
    );

    // The first tick, at the next minute (at most a minute away; two with
    // systemd's default accuracy).
    let count = || m.sh(&format!("cat {ticks} 2>/dev/null | wc -l")).stdout;
    let start = std::time::Instant::now();
    while String::from_utf8_lossy(&count()).trim() == "0" {
        assert!(
            start.elapsed() < Duration::from_secs(130),
            "{}",
            m.journal("sdjob-prod-tick.service")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let late = seconds_in_minute(m, "sdjob-prod-tick.timer", "LastTriggerUSec");

    // Right after a tick, the next is ~55 s away: two restarts of the
    // instance run nothing.
    let before = count();
    for _ in 0..2 {
        m.systemctl(&["restart", "sdjob-prod.target"]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let after = count();
    let mut wrong = Vec::new();
    if after != before {
        wrong.push(format!(
            "restarting the instance ran the job: {} ticks, then {}",
            String::from_utf8_lossy(&before).trim(),
            String::from_utf8_lossy(&after).trim()
        ));
    }
    if late >= 1.0 {
        wrong.push(format!("the timer fired {late} s after the minute"));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(m.property("sdjob-prod-tick.timer", "ActiveState"), "active");
    // Stopping the instance stops its timers.
    m.systemctl(&["stop", "sdjob-prod.target"]);
    m.wait_state("sdjob-prod-tick.timer", "inactive", Duration::from_secs(10));
    m.wait_state(
        "sdjob-prod-sendalerts.service",
        "inactive",
        Duration::from_secs(20),
    );
}

/// The directories the units make, and who the processes are: the state
/// directory (`StateDirectory=`), the media directory (tmpfiles.d) and the
/// pinned generation's static files belong to the account and its group
/// alike; the server runs with the
/// account's uid, gid and supplementary groups, as the shim does.
#[test]
fn the_units_directories_and_groups_are_the_accounts() {
    let port = 8104;
    let m = machine();
    m.group("sdgrp-extra");
    let guest = site(
        "sdgrp",
        port,
        "static_root = \"/var/lib/sdgrp-prod/static\"\nmedia_root = \"/srv/sdgrp/media\"",
    );
    m.ok(&["usermod", "-a", "-G", "sdgrp-extra", "sdgrp"]);
    start_with_tmpfiles(&guest);
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    let owner = |path: &str| m.ok(&["stat", "-c", "%U:%G %a", path]).trim().to_owned();
    assert_eq!(owner("/var/lib/sdgrp-prod"), "sdgrp:sdgrp 750");
    // The static root is a link to the pinned generation's static files,
    // which the pin made (no unit makes them: see deploys.rs).
    assert_eq!(
        m.ok(&["readlink", "/var/lib/sdgrp-prod/static"]).trim(),
        "static-1"
    );
    assert_eq!(owner("/var/lib/sdgrp-prod/static-1"), "sdgrp:sdgrp 750");
    assert_eq!(owner("/srv/sdgrp/media"), "sdgrp:sdgrp 750");

    let (server, by_shim) = server_and_shim_ids(&guest);
    assert_eq!(server, by_shim);
    let extra = m.ok(&["getent", "group", "sdgrp-extra"]);
    let gid = extra.trim().split(':').nth(2).unwrap();
    assert!(server[2].split(' ').any(|g| g == gid), "{server:?}");
}

/// The `Uid:`, `Gid:` and `Groups:` lines of /proc/PID/status (each
/// word once spaced) of prod's server, and of a process prod's shim runs.
fn server_and_shim_ids(guest: &Guest) -> (Vec<String>, Vec<String>) {
    let m = guest.machine;
    let project = project(guest);
    let ids = |status: String| -> Vec<String> {
        status
            .lines()
            .filter(|l| ["Uid:", "Gid:", "Groups:"].iter().any(|k| l.starts_with(k)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let main = m.property(&format!("{project}-prod.service"), "MainPID");
    let server = ids(m.ok(&["cat", &format!("/proc/{main}/status")]));
    let shim = guest.path(&format!("bin/{project}-prod"));
    let by_shim = ids(m.ok(&[
        shim.as_str(),
        "shell",
        "-c",
        "print(open('/proc/self/status').read())",
    ]));
    (server, by_shim)
}

/// `server.socket = "[::1]:PORT"` is written as systemd reads it: the
/// socket unit listens there and the server answers.
#[test]
fn an_ipv6_socket_serves() {
    let port = 8106;
    let guest = site("sdsix", port, "");
    let m = guest.machine;
    let config = guest.world.read("djshim.toml");
    guest.write(
        "djshim.toml",
        &config.replace("127.0.0.1:8106", "[::1]:8106"),
    );
    start(&guest);
    let answer = m.ok(&[
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "20",
        "-H",
        "Host: localhost",
        "http://[::1]:8106/",
    ]);
    assert_eq!(answer, "instance=prod questions=0\n");
    assert_eq!(
        m.property("sdsix-prod.socket", "Listen"),
        "[::1]:8106 (Stream)"
    );
}

/// The example project in a git repository of the container, deployed to
/// instance `prod` of `project` (account `<project>-prod`, builds as
/// `<project>-build`) by `djshim deploy` with the default `restart` and a
/// health URL, its server behind a socket on `port`; `deploy` is added to
/// `[defaults.deploy]`.
struct DeploySite {
    guest: Guest,
    project: String,
    /// The PostgreSQL server prod's database is on (else SQLite).
    postgres: Option<crate::postgres::Postgres>,
}

impl DeploySite {
    fn new(project: &str, port: u16, deploy: &str) -> DeploySite {
        DeploySite::on(project, port, deploy, false)
    }

    /// The site, its database on a PostgreSQL server of its own (`pg`),
    /// which runs on this machine with its socket in the world the
    /// container sees.
    fn on(project: &str, port: u16, deploy: &str, pg: bool) -> DeploySite {
        let guest = machine().guest();
        let repo = guest.world.path("repo");
        crate::support::copy_tree(&crate::support::root().join("examples/mywebsite"), &repo);
        for args in [
            &["init", "--quiet", "--initial-branch=main"][..],
            &["add", "."],
            &["commit", "--quiet", "-m", "first"],
        ] {
            crate::support::git(&repo, args);
        }
        let postgres = pg.then(|| crate::postgres::Postgres::start_in(&guest.world.path("")));
        let site = DeploySite {
            guest,
            project: project.to_owned(),
            postgres,
        };
        site.configure(port, deploy);
        site
    }

    /// Writes djshim.toml with `deploy` in `[defaults.deploy]`.
    fn configure(&self, port: u16, deploy: &str) {
        self.guest.write(
            "djshim.toml",
            &format!(
                "project = \"{project}\"\nprofiles_dir = \"profiles\"\n\
                 [build]\nrepo = \"repo\"\nref = \"main\"\ncommand = [\"true\"]\nreleases_dir = \"releases\"\n\
                 user = \"{project}-build\"\n\
                 [defaults]\npython = \"{python}\"\nsettings = \"mywebsite.settings.production\"\n\
                 user = \"{project}-{{instance}}\"\nstate_dir = \"/var/lib/{project}-{{instance}}\"\n\
                 static_root = \"/var/lib/{project}-{{instance}}/static\"\n\
                 env = {{ MYWEBSITE_DB = \"/var/lib/{project}-{{instance}}/db.sqlite3\", \
                 DJANGO_ALLOWED_HOSTS = \"localhost,127.0.0.1\"{pg} }}\n\
                 [defaults.deploy]\nhealth = \"http://127.0.0.1:{port}/health\"\nhealth_timeout = 30\n{deploy}\n\
                 [instances.prod]\n\
                 [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--workers\", \"2\"]\n\
                 socket = \"127.0.0.1:{port}\"\n",
                project = self.project,
                python = python(),
                pg = self.postgres.as_ref().map_or_else(String::new, |pg| {
                    let dir = pg.socket_dir.strip_prefix(self.guest.world.path("")).unwrap();
                    format!(", MYWEBSITE_PG_HOST = \"{}\"", self.guest.path(dir.as_str()))
                }),
            ),
        );
    }

    /// Writes the shims and the units, loads the units, deploys prod.
    fn install_and_deploy(&self) {
        let guest = &self.guest;
        guest.djshim_ok(&["generate"]);
        guest.djshim_ok(&["systemd", "--out", "/etc/systemd/system"]);
        guest.machine.systemctl(&["daemon-reload"]);
        assert_status(&guest.djshim(&["deploy", "prod"]), 0);
    }

    /// Commits migration `n` that adds `votes` (`add`) or drops it, with
    /// the model that goes with it.
    fn commit_votes(&self, n: u32, add: bool) {
        let [model, migration] = votes_commit(n, add);
        let message = if add { "votes" } else { "no votes" };
        self.commit(
            &[(&model.0, &model.1), (&migration.0, &migration.1)],
            message,
        );
    }

    fn accounts(&self) {
        let m = self.guest.machine;
        m.account(&format!("{}-build", self.project), &["--create-home"]);
        m.account(&format!("{}-prod", self.project), &[]);
    }

    /// Commits the files given (path in the repository, content).
    fn commit(&self, files: &[(&str, &str)], message: &str) {
        let repo = self.guest.world.path("repo");
        for (path, content) in files {
            self.guest.world.write(&format!("repo/{path}"), content);
        }
        crate::support::git(&repo, &["add", "."]);
        crate::support::git(&repo, &["commit", "--quiet", "-m", message]);
    }

    /// The columns of prod's `polls_question` table.
    fn columns(&self) -> String {
        if self.postgres.is_some() {
            let shim = self.guest.path(&format!("bin/{}-prod", self.project));
            let code = "from django.db import connection; c = connection.cursor(); \
                        print([col.name for col in connection.introspection.get_table_description(c, 'polls_question')])";
            return self.guest.machine.ok(&[shim.as_str(), "shell", "-c", code]);
        }
        let db = format!("/var/lib/{}-prod/db.sqlite3", self.project);
        self.guest.machine.ok(&[
            &python(),
            "-c",
            &format!(
                "import sqlite3; print([c[1] for c in sqlite3.connect({db:?}).execute('pragma table_info(polls_question)')])"
            ),
        ])
    }
}

/// A fresh server, from nothing to serving, with the commands the README
/// gives in order, then `deploy` and `rollback` with the default `restart`
/// (`systemctl try-restart <target>`) and a health URL: a new migration
/// deployed; a release whose health view fails rolled back on its own (its
/// migration reversed, the old code serving); `rollback` by hand.
#[test]
fn deploy_and_rollback_drive_the_real_units() {
    let port = 8105;
    let site = DeploySite::new("sddeploy", port, "");
    let (m, guest) = (site.guest.machine, &site.guest);
    // The first-run commands (README "On a fresh server"), in order.
    site.accounts();
    let check = guest.djshim_ok(&["check"]);
    assert!(
        check.contains("prod: `package`: warning: not deployed yet"),
        "{check}"
    );
    assert!(check.ends_with("prod: ok\n"), "{check}");
    guest.djshim_ok(&["generate"]);
    guest.djshim_ok(&["systemd", "--out", "/etc/systemd/system"]);
    m.systemctl(&["daemon-reload"]);
    m.systemctl(&["enable", "sddeploy-prod.target"]);
    let first = guest.djshim(&["deploy", "prod"]);
    assert_status(&first, 0);
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    assert_eq!(m.property("sddeploy-prod.service", "ActiveState"), "active");

    // A new migration, deployed: the target restarted on the new code.
    let server = m.property("sddeploy-prod.service", "MainPID");
    site.commit(
        &[
            ("polls/models.py", crate::site::VOTES_MODEL),
            (
                "polls/migrations/0002_question_votes.py",
                crate::site::VOTES_MIGRATION,
            ),
        ],
        "votes",
    );
    assert_status(&guest.djshim(&["deploy", "prod"]), 0);
    assert_ne!(m.property("sddeploy-prod.service", "MainPID"), server);
    let columns = || site.columns();
    assert!(columns().contains("'votes'"), "{}", columns());

    // A release whose health view fails: undone on its own.
    let views = guest.world.read("repo/polls/views.py").replace(
        "list(Question.objects.all()[:1])",
        "raise RuntimeError('broken')",
    );
    site.commit(&[("polls/views.py", &views)], "broken health");
    let broken = guest.djshim(&["deploy", "prod"]);
    assert_status(&broken, 3);
    assert!(
        text(&broken).1.contains("deploy: health: failed after "),
        "{}",
        text(&broken).1
    );
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    assert!(
        m.ok(&[
            "curl",
            "-sS",
            "-H",
            "Host: localhost",
            &format!("http://127.0.0.1:{port}/health")
        ]) == "ok\n"
    );

    // And back by hand, past the migration: the column is gone, the
    // first release serves.
    assert_status(&guest.djshim(&["rollback", "prod"]), 0);
    assert!(!columns().contains("'votes'"), "{}", columns());
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    assert_eq!(m.property("sddeploy-prod.service", "ActiveState"), "active");
}

/// A package under /tmp runs from the shim but not from a unit, whose
/// `/tmp` is its own (`PrivateTmp=yes`): `check` and `djshim systemd` say
/// so before systemd fails the start.
#[test]
fn a_package_under_tmp_is_reported_before_systemd_fails_it() {
    let m = machine();
    let guest = m.guest();
    m.account("sdtmp", &[]);
    guest.release("a");
    m.ok(&["cp", "-r", guest.path("a").as_str(), "/tmp/sdtmp-a"]);
    m.ok(&["chmod", "-R", "a+rX", "/tmp/sdtmp-a"]);
    guest.write(
        "djshim.toml",
        &format!(
            "project = \"sdtmp\"\nunits_dir = \"/etc/systemd/system\"\n\
             [instances.prod]\npackage = \"/tmp/sdtmp-a\"\npython = \"{python}\"\n\
             settings = \"mywebsite.settings.production\"\nuser = \"sdtmp\"\n\
             env = {{ MYWEBSITE_DB = \"/var/lib/sdtmp/db.sqlite3\" }}\n\
             [instances.prod.jobs.check]\nmanage = [\"check\"]\nschedule = \"@daily\"\n",
            python = python(),
        ),
    );
    let warning = "prod: `package`: warning: /tmp/sdtmp-a is under /tmp, which the instance's \
                   units do not see (`PrivateTmp=yes`): systemd cannot start them; move it out of /tmp";
    let check = guest.djshim_ok(&["check"]);
    assert!(check.contains(warning), "{check}");
    let systemd = guest.djshim(&["systemd"]);
    assert_status(&systemd, 0);
    assert!(text(&systemd).1.contains(warning), "{}", text(&systemd).1);
    // The shim runs it; the unit cannot.
    guest.djshim_ok(&["generate"]);
    m.ok(&[guest.path("bin/sdtmp-prod").as_str(), "check"]);
    m.systemctl(&["daemon-reload"]);
    let start = m.run(&["systemctl", "start", "sdtmp-prod-check.service"]);
    assert!(!start.status.success());
    // The unit's own /tmp is empty: the interpreter finds no manage.py.
    let journal = m.journal("sdtmp-prod-check.service");
    assert!(
        journal.contains("can't open file '/tmp/sdtmp-a/manage.py'"),
        "{journal}"
    );
}

/// A migration that adds `votes` (`add` true) or drops it: the model of
/// the commit, and the migration file, numbered `n`.
fn votes_commit(n: u32, add: bool) -> [(String, String); 2] {
    let model = if add {
        crate::site::VOTES_MODEL.to_owned()
    } else {
        fs_model_without_votes()
    };
    let operation = if add {
        "migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0))"
    } else {
        "migrations.RemoveField(\"question\", \"votes\")"
    };
    let previous = if n == 2 {
        "0001_initial".to_owned()
    } else {
        format!("{:04}_step", n - 1)
    };
    let migration = format!(
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"polls\", \"{previous}\")]\n    operations = [\n        {operation},\n    ]\n"
    );
    [
        ("polls/models.py".to_owned(), model),
        (format!("polls/migrations/{n:04}_step.py"), migration),
    ]
}

fn fs_model_without_votes() -> String {
    std::fs::read_to_string(crate::support::root().join("examples/mywebsite/polls/models.py"))
        .unwrap()
}

/// `[deploy] window` measured with a client loop on `/health` (which reads
/// every column) through a deploy whose migration drops a column the old
/// code still selects, with a 3 s step after the migration: keeping the
/// old code serving (`serve`, today's default) answers 500 in that window;
/// `stop` holds every request on the socket until the new code serves (no
/// failure at all); `503` answers 503 with `Retry-After`, never 500.
#[test]
fn a_deploy_window_keeps_the_old_code_from_a_changed_schema() {
    window_case("sdwin", 8108, false);
}

/// The same on PostgreSQL.
#[test]
fn a_deploy_window_keeps_the_old_code_from_a_changed_schema_on_postgresql() {
    window_case("sdwinpg", 8109, true);
}

/// For a failure's message: when a step of `stderr` took 20 s or more (a
/// restart held up to systemd's 90 s stop timeout was seen once on a
/// loaded machine) or the loop saw a failure that is neither the 500 of
/// old code on a new schema nor the window's 503 (a timeout, a reset), the
/// server unit's journal with precise times, which says which process did
/// what when.
fn journal_if_odd(m: &Machine, project: &str, stderr: &str, into: &mut serde_json::Value) {
    let slow = stderr.lines().any(|l| {
        l.rsplit_once(": done in ")
            .and_then(|(_, t)| t.trim_end_matches(" s").parse::<f64>().ok())
            .is_some_and(|t| t >= 20.0)
    });
    let odd = into["errors"].as_object().is_some_and(|e| {
        e.keys()
            .any(|k| k != "HTTP 500" && k != "HTTP 503 Retry-After 5")
    });
    if slow || odd {
        let journal = m.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-n",
            "150",
            "-u",
            &format!("{project}-prod.service"),
        ]);
        into["journal"] = text(&journal).0.into();
    }
}

/// `djshim ARGS` (which must succeed) while a client loop asks for
/// /health, from half a second before to half a second after: what the
/// loop saw, with djshim's stderr under `key` (and the server's journal
/// when something was odd).
fn under_load(site: &DeploySite, port: u16, args: &[&str], key: &str) -> serde_json::Value {
    let guest = &site.guest;
    let running = client(guest, port, "/health");
    std::thread::sleep(Duration::from_millis(500));
    let output = guest.djshim(args);
    assert_status(&output, 0);
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = finish(guest, running);
    let stderr = text(&output).1;
    journal_if_odd(guest.machine, &site.project, &stderr, &mut seen);
    seen[key] = stderr.into();
    seen
}

/// One mode's summary for a failure's message: what the loop saw first,
/// then djshim's lines that took a second or more, then the journal (last,
/// where a log cut in its middle keeps it).
fn told(seen: &serde_json::Value) -> String {
    use std::fmt::Write;

    let mut out = format!(
        "requests {} failures {} errors {} slowest {} s\n",
        seen["requests"], seen["failures"], seen["errors"], seen["slowest"]
    );
    for key in ["deploy", "rollback"] {
        let Some(stderr) = seen[key].as_str() else {
            continue;
        };
        writeln!(out, "{key}, its steps of 1 s or more:").unwrap();
        for line in stderr.lines().filter(|l| {
            l.rsplit_once(": done in ")
                .and_then(|(_, t)| t.trim_end_matches(" s").parse::<f64>().ok())
                .is_some_and(|t| t >= 1.0)
        }) {
            writeln!(out, "  {line}").unwrap();
        }
    }
    if let Some(journal) = seen["journal"].as_str() {
        write!(out, "the server's journal:\n{journal}").unwrap();
    }
    out
}

fn window_case(project: &str, port: u16, pg: bool) {
    let site = DeploySite::on(project, port, "", pg);
    let (m, guest) = (site.guest.machine, &site.guest);
    site.accounts();
    site.install_and_deploy();

    let mut n = 2;
    let mut results = BTreeMap::new();
    let mut rollbacks = BTreeMap::new();
    for window in ["serve", "stop", "503"] {
        site.configure(
            port,
            &format!(
                "window = \"{window}\"\nsteps = [[\"migrate\", \"--noinput\"], \
                 [\"shell\", \"-c\", \"import time; time.sleep(3)\"]]"
            ),
        );
        guest.djshim_ok(&["systemd", "--out", "/etc/systemd/system"]);
        m.systemctl(&["daemon-reload"]);
        // The column comes, without a client loop…
        site.commit_votes(n, true);
        assert_status(&guest.djshim(&["deploy", "prod"]), 0);
        n += 1;
        // A rollback drops it again under the code that selects it: the
        // window holds through the way back too.
        let back = under_load(&site, port, &["rollback", "prod"], "rollback");
        assert!(!site.columns().contains("'votes'"));
        rollbacks.insert(window, back);
        assert_status(&guest.djshim(&["deploy", "prod"]), 0);
        assert!(site.columns().contains("'votes'"));
        // …comes again and goes, under one.
        site.commit_votes(n, false);
        n += 1;
        let summary = under_load(&site, port, &["deploy", "prod"], "deploy");
        assert!(!site.columns().contains("'votes'"));
        results.insert(window, summary);
    }
    // Each of the many restarts stopped gunicorn's workers by the master's
    // one SIGTERM (KillMode=mixed), which they handle: none died of a
    // signal, the mark of the race that once held a restart 30 s. And
    // gunicorn's control socket found a place it may write (issue 23,
    // item 9: under `$HOME` it failed at every start).
    let journal = text(&m.run(&[
        "journalctl",
        "--no-pager",
        "-u",
        &format!("{project}-prod.service"),
    ]))
    .0;
    let killed: Vec<&str> = journal
        .lines()
        .filter(|l| {
            ["was sent SIG", "Logging error", "Control server error"]
                .iter()
                .any(|mark| l.contains(mark))
        })
        .collect();
    assert!(killed.is_empty(), "{}", killed.join("\n"));
    for (what, seen) in [("deploy", &results), ("rollback", &rollbacks)] {
        let errors = |w: &str| seen[w]["errors"].as_object().unwrap().clone();
        assert!(
            errors("serve").contains_key("HTTP 500"),
            "the old code served the new schema without an error through the {what}: {}",
            told(&seen["serve"])
        );
        assert_eq!(
            seen["stop"]["failures"],
            0,
            "the {what} with `stop`: {}",
            told(&seen["stop"])
        );
        assert!(
            seen["stop"]["slowest"].as_f64().unwrap() > 2.0,
            "requests were not held through the {what} with `stop`: {}",
            told(&seen["stop"])
        );
        let unavailable = errors("503");
        assert!(
            unavailable.keys().all(|k| k == "HTTP 503 Retry-After 5") && !unavailable.is_empty(),
            "the {what} with `503`: {}",
            told(&seen["503"])
        );
        for (mode, summary) in seen {
            println!("{what} with `{mode}`: {}", told(summary));
        }
    }
}

/// With `group`, the server's group is that group (`Group=`), as the
/// shim's, and the directories the units make are the account's and that
/// group's.
#[test]
fn an_instance_group_is_the_units_group() {
    let port = 8110;
    let m = machine();
    m.group("sdgid-web");
    let guest = site(
        "sdgid",
        port,
        "group = \"sdgid-web\"\nmedia_root = \"/srv/sdgid/media\"",
    );
    start_with_tmpfiles(&guest);
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    let owner = |path: &str| m.ok(&["stat", "-c", "%U:%G", path]).trim().to_owned();
    assert_eq!(owner("/var/lib/sdgid-prod"), "sdgid:sdgid-web");
    assert_eq!(owner("/srv/sdgid/media"), "sdgid:sdgid-web");
    let (server, by_shim) = server_and_shim_ids(&guest);
    let web = m.ok(&["getent", "group", "sdgid-web"]);
    let gid = web.trim().split(':').nth(2).unwrap();
    assert!(server[1].starts_with(&format!("Gid: {gid} ")), "{server:?}");
    assert_eq!(server, by_shim);
}

/// A build here stops every process of its build account, found in /proc,
/// which also shows the container's processes: one there with the build
/// account's number (another account of the container's own) is left
/// alone. On a fresh machine the container's accounts got the numbers the
/// host's test accounts got later, and the host's builds killed the
/// container's launchers and deploy steps.
#[test]
fn a_build_here_leaves_a_containers_process_of_the_same_uid_alone() {
    let m = machine();
    let build = crate::accounts::accounts().build_uid.to_string();
    // `-o`: the number may already be known in the container's view.
    m.ok(&[
        "useradd",
        "--system",
        "--no-create-home",
        "-o",
        "--uid",
        &build,
        "sdsameuid",
    ]);
    let started = m.sh(&format!(
        "setpriv --reuid={build} --regid={build} --clear-groups sleep 300 \
         </dev/null >/dev/null 2>&1 & echo $!"
    ));
    assert_status(&started, 0);
    let pid = text(&started).0.trim().to_owned();
    let alive = || m.run(&["kill", "-0", &pid]).status.success();
    assert!(alive());

    let world = crate::support::World::new();
    crate::builds::repository(&world);
    crate::builds::config(&world, "command = [\"sh\", \"build.sh\"]");
    assert_status(&world.djshim(&["build"]), 0);
    let survived = alive();
    m.run(&["kill", &pid]);
    assert!(
        survived,
        "the build on the host killed the container's process {pid}"
    );
}

/// A window is checked, never trusted: with `window = "stop"` in the config
/// but the units systemd runs written without one (the new user's case), or
/// written anew but not loaded (`daemon-reload` missing), the deploy stops
/// before the migration, says why, and the old code keeps its schema. Once
/// the units are written and loaded, the same deploy goes through.
#[test]
fn a_window_the_running_units_do_not_hold_stops_the_deploy_before_the_migration() {
    let port = 8112;
    let site = DeploySite::on("sdstale", port, "", false);
    let (m, guest) = (site.guest.machine, &site.guest);
    site.accounts();
    site.install_and_deploy();
    site.configure(
        port,
        "window = \"stop\"\nsteps = [[\"migrate\", \"--noinput\"]]",
    );
    site.commit_votes(2, true);
    let history = || guest.djshim_ok(&["history", "prod"]);

    // The units on disk and in systemd were written under `serve`.
    let deploy = guest.djshim(&["deploy", "prod"]);
    assert_status(&deploy, 3);
    let stderr = text(&deploy).1;
    assert!(
        stderr.contains(
            "djshim: error: the deploy of /srv/djshim-it/"
        ) && stderr.contains(
            "the deploy window did not open: sdstale-prod.service does not run the `stop` window \
             (its main process runs /srv/djshim-venv/bin/python3 -m gunicorn mywebsite.wsgi)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("manage.py migrate"), "{stderr}");
    assert!(!site.columns().contains("'votes'"), "{}", site.columns());
    assert_eq!(get(m, port), "instance=prod questions=0\n");

    // Written anew, not loaded.
    guest.djshim_ok(&["systemd", "--out", "/etc/systemd/system"]);
    let deploy = guest.djshim(&["deploy", "prod"]);
    assert_status(&deploy, 1);
    let stderr = text(&deploy).1;
    assert!(
        stderr.contains(
            "djshim: error: deploy: check that systemd runs the units on disk: \
             sdstale-prod.service changed on disk since systemd loaded it, so the \
             deploy window (`window = \"stop\"`) could not be trusted to hold requests\n  = help: \
             run `systemctl daemon-reload` (after `djshim systemd`), then deploy again\n"
        ),
        "{stderr}"
    );
    assert!(!site.columns().contains("'votes'"));
    // The first refusal was undone (a failed generation 2), the second
    // came before any plan: generation 1 runs.
    let after = history();
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.len(), 2, "{after}");
    assert!(lines[0].ends_with("(current)"), "{after}");
    assert!(
        lines[1].ends_with("(failed deploy: rollback skips it)"),
        "{after}"
    );

    m.systemctl(&["daemon-reload"]);
    let deploy = guest.djshim(&["deploy", "prod"]);
    assert_status(&deploy, 0);
    assert!(
        text(&deploy)
            .1
            .contains("check that sdstale-prod.service holds requests: done"),
        "{}",
        text(&deploy).1
    );
    assert!(site.columns().contains("'votes'"));
}

/// `kill -9` of djshim alone (not its process group) while the account's
/// `migrate` runs on PostgreSQL: the migrate dies with it (the helper keeps
/// the parent-death signal across the switch to the account), so the next
/// `rollback` undoes the deploy and nothing commits behind its back. Before,
/// the orphan committed its migration seconds after the rollback said the
/// instance was back (seen on a `NetBox`).
#[test]
fn a_killed_deploys_migrate_dies_with_it_on_postgresql() {
    let port = 8113;
    let site = DeploySite::on("sdkill", port, "", true);
    let (m, guest) = (site.guest.machine, &site.guest);
    site.accounts();
    site.install_and_deploy();
    // A migration that holds its transaction for 10 s, then adds `votes`.
    let slow = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"polls\", \"0001_initial\")]\n    operations = [\n        \
         migrations.RunSQL(\"SELECT pg_sleep(10)\", migrations.RunSQL.noop),\n        \
         migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0)),\n    ]\n";
    site.commit(
        &[
            ("polls/models.py", crate::site::VOTES_MODEL),
            ("polls/migrations/0002_slow_votes.py", slow),
        ],
        "slow votes",
    );
    let world = guest.at.as_str();
    let mut deploy = m
        .command(
            world,
            &[&format!("{}/djshim", crate::machine::BIN), "deploy", "prod"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(deploy.stderr.take().unwrap()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("djshim: deploy: manage.py migrate") && line.ends_with('…') {
            break;
        }
    }
    // The rest is read on (a closed pipe would end djshim by itself).
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).count());
    assert!(seen.contains("manage.py migrate"), "{seen}");
    // Inside pg_sleep by now; djshim alone is killed, in the container.
    std::thread::sleep(Duration::from_secs(2));
    let migrate = || {
        m.run(&["pgrep", "-u", "sdkill-prod", "-f", "manage.py migrate"])
            .status
            .success()
    };
    assert!(
        migrate(),
        "the account's migrate is not running:\n{seen}\n{}",
        m.ok(&["ps", "-eo", "user:20,pid,ppid,args"])
    );
    m.ok(&[
        "sh",
        "-c",
        "for p in $(pgrep -f 'djshim deploy prod'); do \
         [ \"$(readlink /proc/$p/cwd)\" = \"$0\" ] && kill -9 $p; done; true",
        world,
    ]);
    let _ = deploy.wait();
    // The account's migrate went with it, at once (its migration had 8 s
    // to go).
    let killed = std::time::Instant::now();
    while migrate() {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the account's migrate outlived djshim"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rollback = guest.djshim(&["rollback", "prod"]);
    assert_status(&rollback, 0);
    assert!(
        text(&rollback).1.contains("was interrupted; undoing it"),
        "{}",
        text(&rollback).1
    );
    // Past the slow migration's end: nothing committed behind the rollback.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed()));
    assert!(!site.columns().contains("'votes'"), "{}", site.columns());
    assert_eq!(get(m, port), "instance=prod questions=0\n");
    // (The reader ends when the last writer of djshim's stderr does.)
    let _ = rest.join();
}

/// A step that outlasts `window_timeout` is stopped at the window's
/// deadline and the deploy undone; the undo opens the window afresh (the
/// launcher had started serving when the first one ran out), so the old
/// code never serves the schema on its way back: no request fails.
#[test]
fn a_window_that_runs_out_is_opened_again_for_the_undo() {
    let port = 8114;
    let site = DeploySite::on("sdwinout", port, "", false);
    let guest = &site.guest;
    site.accounts();
    // A window of 3 s, and a step after the migration that takes 6.
    site.configure(
        port,
        "window = \"stop\"\nwindow_timeout = 3\nsteps = [[\"migrate\", \"--noinput\"], \
         [\"shell\", \"-c\", \"import time; time.sleep(6)\"]]",
    );
    site.install_and_deploy();
    // The column comes with code that selects it: once the window runs
    // out, that code serves; the undo then drops the column under it.
    site.commit_votes(2, true);
    let client = client(guest, port, "/health");
    std::thread::sleep(Duration::from_millis(500));
    let deploy = guest.djshim(&["deploy", "prod"]);
    std::thread::sleep(Duration::from_millis(500));
    let summary = finish(guest, client);
    assert_status(&deploy, 3);
    let stderr = text(&deploy).1;
    assert_eq!(summary["failures"], 0, "{summary:#}\n{stderr}");
    for line in [
        "did not end by its deadline: killed",
        "djshim: deploy: undo: open the window: requests wait (at most 3 s): done in ",
        "djshim: deploy: undo: window: systemctl try-restart sdwinout-prod.service: done in ",
        "djshim: deploy: undo: migrate polls 0001_initial",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
    assert!(!site.columns().contains("'votes'"), "{}", site.columns());
}

/// The window with the default steps, through a deploy whose migration
/// drops a column the old code selects (`window = "stop"`, SQLite): no
/// request fails, and the window covers the migration alone. The static
/// files are collected before it opens, with the candidate's code, and the
/// deploy says how long requests were held; `status` then finds the
/// units active. The figures (the slowest
/// request against the migration's and the restart's time) are printed
/// for the README; a time is never asserted.
#[test]
fn the_window_holds_requests_through_the_migration_alone() {
    let port = 8111;
    let site = DeploySite::on("sdshort", port, "window = \"stop\"", false);
    site.accounts();
    site.install_and_deploy();
    site.commit_votes(2, true);
    assert_status(&site.guest.djshim(&["deploy", "prod"]), 0);
    site.commit_votes(3, false);
    let seen = under_load(&site, port, &["deploy", "prod"], "deploy");
    println!("slowest request {} s; {}", seen["slowest"], told(&seen));
    assert!(!site.columns().contains("'votes'"));
    assert_eq!(seen["failures"], 0, "{}", told(&seen));
    let stderr = seen["deploy"].as_str().unwrap();
    let at = |what: &str| crate::support::line_of(stderr, &format!("djshim: deploy: {what}"));
    assert!(
        at("manage.py collectstatic") < at("open the window"),
        "{stderr}"
    );
    assert!(at("switch to") < at("manage.py migrate"), "{stderr}");
    let held = stderr
        .lines()
        .find(|l| l.starts_with("djshim: deploy: requests waited for "))
        .unwrap_or_else(|| panic!("the deploy does not say how long requests waited:\n{stderr}"));
    println!("{held}");
    // `djshim status` asks systemd (issue 24, item 6).
    let seen: serde_json::Value =
        serde_json::from_str(&site.guest.djshim_ok(&["status", "--json", "prod"])).unwrap();
    let prod = &seen["instances"]["prod"];
    for unit in ["service", "socket", "target"] {
        assert_eq!(
            prod["units"][format!("sdshort-prod.{unit}")],
            "active",
            "{prod:#}"
        );
    }
    assert_eq!(prod["healthy"], true, "{prod:#}");
}

/// A window that ran out is closed (its launcher serves): `status` says
/// none, a rollback plans none (and its file, removed, bounds none of its
/// steps), and `open` opens it afresh. Before, its file counted as an
/// open window: the renewal's check that the launcher holds failed, and
/// so did `open`; and the file's passed deadline stopped each step of the
/// rollback at once.
fn an_ended_window_is_closed(site: &DeploySite, port: u16, flag: &camino::Utf8Path) {
    let guest = &site.guest;
    site.configure(port, "window = \"stop\"\nwindow_timeout = 2");
    guest.djshim_ok(&["window", "prod", "open"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(guest.machine, port), "instance=prod questions=0\n");
    assert!(flag.exists());
    let status: serde_json::Value =
        serde_json::from_str(&guest.djshim_ok(&["status", "--json", "prod"])).unwrap();
    assert_eq!(
        status["instances"]["prod"]["window_until"],
        serde_json::Value::Null
    );
    let (_, stderr) = Expect::new()
        .stdout_has("prod: generation 2 -> 1: ")
        .stderr_has("djshim: rollback: manage.py migrate --noinput: done in ")
        .stderr_has("djshim: rollback: health: done in ")
        .check(&guest.djshim(&["rollback", "prod"]));
    assert!(!stderr.contains("window"), "{stderr}");
    assert!(
        !flag.exists(),
        "the ended window's file bounds no later step"
    );
    assert_eq!(
        guest.djshim_ok(&["window", "prod", "open"]),
        "prod: window open (`stop`): no old code serves\n"
    );
    guest.djshim_ok(&["window", "prod", "close"]);
    site.configure(port, "window = \"stop\"");
}

/// `djshim window prod open|close` (SPEC section 10: the window held on
/// every host while one migrates the shared database): open, requests wait
/// and none fails; open again, only the deadline is renewed; a deploy on
/// the open window switches, restarts and closes it; close with none open
/// says so, and an open then close serves the same code again; a window
/// that ran out is closed.
#[test]
fn an_engine_holds_the_window_open_across_a_migration_elsewhere() {
    let port = 8115;
    let site = DeploySite::on("sdhold", port, "window = \"stop\"", false);
    site.accounts();
    site.install_and_deploy();
    let guest = &site.guest;
    // The window file, as this side of the container sees it.
    let flag = guest.world.path("profiles/.sdhold-prod.window");

    let running = client(guest, port, "/health");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        guest.djshim_ok(&["window", "prod", "open"]),
        "prod: window open (`stop`): no old code serves\n"
    );
    assert_eq!(
        guest.djshim_ok(&["window", "prod", "open"]),
        "prod: window open already (`stop`): its deadline renewed\n"
    );
    // Held while "another host" would migrate.
    std::thread::sleep(Duration::from_secs(2));
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    assert_status(&guest.djshim(&["deploy", "prod"]), 0);
    std::thread::sleep(Duration::from_millis(500));
    let seen = finish(guest, running);
    assert_eq!(seen["failures"], 0, "{}", told(&seen));
    assert!(seen["slowest"].as_f64().unwrap() > 2.0, "{}", told(&seen));
    assert!(!flag.exists(), "the deploy closed the window");
    assert_eq!(get(guest.machine, port), "instance=prod questions=0\n");

    assert_eq!(
        guest.djshim_ok(&["window", "prod", "close"]),
        "prod: no window open; nothing to do\n"
    );
    guest.djshim_ok(&["window", "prod", "open"]);
    assert!(flag.exists());
    assert_eq!(
        guest.djshim_ok(&["window", "prod", "close"]),
        "prod: window closed: the server starts what the profile points at\n"
    );
    assert_eq!(get(guest.machine, port), "instance=prod questions=0\n");

    an_ended_window_is_closed(&site, port, &flag);

    // The same through the Ansible collection's module, run by the real
    // ansible-playbook inside the container, where systemd is.
    let args = format!(
        "instance: prod\n        config: {}\n        executable: {}/djshim",
        guest.path("djshim.toml"),
        crate::machine::BIN
    );
    let playbook = guest.write(
        "window.yml",
        &format!(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n\
             {task}        state: open\n      register: opened\n\
             {task}        state: open\n      register: again\n\
             {task}        state: closed\n      register: closed\n\
             {task}        state: closed\n      check_mode: true\n      register: would\n\
             \x20   - ansible.builtin.assert:\n        that:\n\
             \x20         - opened is changed\n          - opened.djshim.window_until > 0\n\
             \x20         - again is not changed\n          - closed is changed\n\
             \x20         - closed.djshim.window_until is none\n          - would is not changed\n",
            task = format!("    - djshim.django.window:\n        {args}\n"),
        ),
    );
    let venv = "/srv/djshim-venv";
    guest.machine.ok(&[
        "env",
        "LANG=C.UTF-8",
        &format!("HOME={}", guest.path("")),
        &format!("ANSIBLE_LOCAL_TEMP={}", guest.path("ansible-tmp")),
        &format!(
            "ANSIBLE_COLLECTIONS_PATH={}",
            crate::support::root().join("ansible")
        ),
        &format!("{venv}/bin/ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        &format!("ansible_python_interpreter={venv}/bin/python3"),
        playbook.as_str(),
    ]);
}

/// A request that window.py (`window = "503"`) accepted, whose bytes come
/// only after the server unit was told to stop, still gets its 503: the
/// stop's SIGTERM goes to the launcher alone (KillMode=mixed), which passes
/// it on and waits for window.py to finish its answers. Before, systemd
/// killed window.py as soon as the launcher ended, and the client saw its
/// connection reset (CI saw one, under load).
#[test]
fn a_stop_lets_the_window_finish_the_answers_it_began() {
    let port = 8116;
    let site = DeploySite::on("sdlate", port, "window = \"503\"", false);
    site.accounts();
    site.install_and_deploy();
    let guest = &site.guest;
    guest.djshim_ok(&["window", "prod", "open"]);
    // Connects at once, sends its request 1.5 s later.
    let late = guest.write(
        "late.py",
        &format!(
            "import socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\n\
             time.sleep(1.5)\ns.sendall(b'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n\
             try:\n    print(s.recv(100).split(b'\\r\\n')[0].decode())\n\
             except OSError as e:\n    print(type(e).__name__)\n"
        ),
    );
    let client = guest
        .machine
        .command("/", &[&python(), late.as_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    guest.machine.systemctl(&["stop", "sdlate-prod.service"]);
    let output = client.wait_with_output().unwrap();
    assert_status(&output, 0);
    assert_eq!(
        text(&output).0,
        "HTTP/1.1 503 Service Unavailable\n",
        "{}",
        guest.machine.journal("sdlate-prod.service")
    );
}
