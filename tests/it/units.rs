//! systemd units and cron lines (SPEC section 7): verified by
//! systemd-analyze, timers checked against an independent cron evaluator,
//! the server started for real, a crontab line run under cron's
//! environment, and hostile values parsed back the way systemd reads them.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use djshim::schedule::Schedule;

use crate::accounts::accounts;
use crate::support::{Expect, World, assert_status, from_cron, require, root, text, venv};
use crate::systemd::{Unit, env_file, free_port, serve, stop, verify};

/// A world with the example project and a config with a server and a job
/// for instance `prod`. It runs as root (`user = "root"`, said explicitly):
/// the test venv's interpreter may live where other accounts cannot reach.
fn world(server: &str, extra: &str) -> World {
    let world = World::example(&format!(
        "user = \"root\"\nstate_dir = \"var\"\nstatic_root = \"var/static\"\nenv_file = [\"prod.env\"]\n{extra}\n\
         [instances.prod.server]\ncommand = {server}\n\
         [instances.prod.jobs.clearsessions]\nmanage = [\"clearsessions\"]\nschedule = \"17 3 * * *\"\n",
    ));
    let secrets = world.write("prod.env", "DJANGO_SECRET_KEY=from the env file\n");
    fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    world
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    accounts();
    let world = world("[\"-m\", \"gunicorn\", \"mywebsite.wsgi\"]", "");
    // The real account, which systemd-analyze looks up.
    world.write(
        "djshim.toml",
        &world
            .read("djshim.toml")
            .replace("user = \"root\"", "user = \"djshimt-app\""),
    );
    let output = world.djshim(&["systemd"]);
    assert_status(&output, 0);
    // Every unit written (the target too), not a chosen few.
    let mut units: Vec<Utf8PathBuf> = world
        .path("units")
        .read_dir_utf8()
        .unwrap()
        .map(|e| e.unwrap().path().to_owned())
        .filter(|p| {
            matches!(
                p.extension(),
                Some("service" | "socket" | "timer" | "target")
            )
        })
        .collect();
    units.sort();
    let names: Vec<&str> = units.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(
        names,
        [
            "mywebsite-prod-clearsessions.service",
            "mywebsite-prod-clearsessions.timer",
            "mywebsite-prod.service",
            "mywebsite-prod.target",
        ]
    );
    verify(&units);
    // A second run changes nothing; the units are owned through a manifest.
    assert_eq!(text(&world.djshim(&["systemd"])).0, "");
    assert!(
        world
            .read("units/.djshim-mywebsite.manifest")
            .contains("mywebsite-prod.service")
    );
}

#[test]
fn unit_files_match_their_golden_files() {
    let world = World::new();
    let config = root().join("tests/fixtures/units.toml");
    assert_status(
        &world.djshim(&["-c", config.as_str(), "systemd", "--out", "units"]),
        0,
    );
    let mut files = crate::support::visible_files(&world.path("units"));
    let output = world.djshim(&["-c", config.as_str(), "cron", "--bin", "/usr/local/bin"]);
    assert_status(&output, 0);
    files.insert("crontab".into(), text(&output).0);
    crate::support::golden_dir("golden/units", |_| true, &files);
    // What ends up in root's crontab is validated like a config path: a
    // line break would be a second line, run as root.
    for (flag, value, example) in [
        (
            "--bin",
            "/usr/local/bin\n* * * * * root touch /pwned",
            "/usr/local/bin",
        ),
        ("--bin", "bin", "/usr/local/bin"),
        ("--lock-dir", "/run/lock\rx", "/run/djshim-cron"),
    ] {
        let output = world.djshim(&["-c", config.as_str(), "cron", flag, value]);
        assert_status(&output, 2);
        assert_eq!(
            text(&output).1,
            format!(
                "djshim: error: `{flag} {}` must be an absolute path without control characters\n  \
                 = help: e.g. `{flag} {example}`\n",
                value.replace(['\n', '\r'], "\u{fffd}")
            )
        );
    }
}

/// Next five elapses of a timer with these `OnCalendar=` lines, per
/// `systemd-analyze calendar`, merged as a timer merges them.
fn systemd_elapses(calendar: &[String], base: &str) -> Vec<String> {
    let output = Command::new(require("systemd-analyze", "systemd"))
        .args([
            "calendar",
            "--iterations=5",
            &format!("--base-time={base} UTC"),
        ])
        .args(calendar)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert_status(&output, 0);
    let mut times: Vec<String> = text(&output)
        .0
        .lines()
        .filter_map(|l| {
            l.trim().strip_prefix("Next elapse: ").or_else(|| {
                l.trim()
                    .split_once(": ")
                    .filter(|(k, _)| k.starts_with("Iter."))
                    .map(|(_, v)| v)
            })
        })
        .map(|v| {
            v.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    times.sort();
    times.dedup();
    times.truncate(5);
    times
}

/// Next five runs per croniter, a cron implementation that is not ours.
fn croniter_runs(cron: &str, base: &str) -> Vec<String> {
    let script = "import croniter, datetime, sys\n\
                  it = croniter.croniter(sys.argv[1], datetime.datetime.fromisoformat(sys.argv[2]))\n\
                  for _ in range(5): print(it.get_next(datetime.datetime).strftime('%Y-%m-%d %H:%M:%S'))\n";
    let output = Command::new(venv().join("bin/python3"))
        .args(["-c", script, cron, base])
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output).0.lines().map(str::to_owned).collect()
}

#[test]
fn timers_fire_when_cron_would() {
    let cases = [
        "17 3 * * *",
        "*/15 * * * *",
        "0 * * * *",
        "0 0 1 1 *",
        "30 4 1,15 * *",
        "0 9-17 * * mon-fri",
        "0 9-17/2 * * 1-5",
        "5 4 * * sun",
        "5 4 * * 7",
        "0 0 1,15 * 1",
        "0 12 * jan,jul *",
        "0 0 29 2 *",
        "59 23 31 * *",
        "0 0 * * 0,6",
        "*/7 */5 * * *",
        "1-59/20 0 * * *",
        "0 6 * 3-5 wed",
        "0 0 13 * fri",
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "10,20,30 1 1-7 * *",
        "0 22 * * 1-5",
        "45 */6 * * sat,sun",
    ];
    assert!(cases.len() >= 20);
    for base in ["2026-01-01 00:00:00", "2027-02-27 23:59:30"] {
        for cron in cases {
            let schedule = Schedule::parse(cron).unwrap();
            let expected = croniter_runs(cron, base);
            assert_eq!(
                systemd_elapses(&schedule.calendar(), base),
                expected,
                "`{cron}` from {base}: {:?}",
                schedule.calendar()
            );
        }
    }
    // Vixie cron (Debian's) and croniter differ when a day field starts
    // with `*` and the other is restricted: Vixie requires both, which is
    // what the crontab line will do, so the timer does the same.
    let schedule = Schedule::parse("0 0 */2 * 1").unwrap();
    assert_eq!(
        systemd_elapses(&schedule.calendar(), "2026-01-01 00:00:00"),
        [
            "2026-01-05 00:00:00",
            "2026-01-19 00:00:00",
            "2026-02-09 00:00:00",
            "2026-02-23 00:00:00",
            "2026-03-09 00:00:00"
        ]
    );
}

/// The server unit's `ExecStart=`, run with the unit's environment, env file
/// and working directory, serves the instance on a loopback port. (User=
/// is applied by systemd, which is not PID 1 here; the process runs as root.)
#[test]
fn the_server_unit_really_serves_the_instance() {
    let port = free_port();
    let world = world(
        &format!(
            "[\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--bind\", \"127.0.0.1:{port}\", \"--workers\", \"1\"]"
        ),
        "",
    );
    assert_status(&world.djshim(&["generate"]), 0);
    let migrate = from_cron(world.path("bin/mywebsite-prod"), &["migrate", "--noinput"]);
    assert_status(&migrate, 0);
    assert_status(&world.djshim(&["systemd"]), 0);
    let unit = Unit::parse(&world.read("units/mywebsite-prod.service"));
    let secret = unit
        .command()
        .get_envs()
        .find(|(k, _)| *k == "DJANGO_SECRET_KEY")
        .and_then(|(_, v)| v.map(std::borrow::ToOwned::to_owned));
    assert_eq!(
        secret.as_deref(),
        Some(std::ffi::OsStr::new("from the env file"))
    );
    let (response, server) = serve(&unit, port);
    stop(server);
    assert!(
        response.starts_with("HTTP/1.0 200 OK") || response.starts_with("HTTP/1.1 200 OK"),
        "{response}"
    );
    assert!(
        response.ends_with("instance=prod questions=0\n"),
        "{response}"
    );
}

/// The unit's environment is the shim's: what manage.py sees through the
/// shim (from an empty environment) equals the unit's Environment= plus
/// env files, but for the caller's PATH tail and what the shell adds.
#[test]
fn the_unit_environment_is_the_shims() {
    let world = world(
        "[\"-m\", \"gunicorn\", \"mywebsite.wsgi\"]",
        "pythonpath = [\"/opt/lib\"]\npath = [\"/opt/bin\"]\n",
    );
    assert_status(&world.djshim(&["generate"]), 0);
    assert_status(&world.djshim(&["systemd"]), 0);
    let unit = Unit::parse(&world.read("units/mywebsite-prod-clearsessions.service"));
    let mut expected = unit.environment();
    for file in unit.all("EnvironmentFile") {
        expected.extend(env_file(file));
    }
    let dump = "import os, json; print(json.dumps(dict(os.environ)))";
    let output = from_cron(world.path("bin/mywebsite-prod"), &["shell", "-c", dump]);
    let seen: BTreeMap<String, String> = if output.status.success() {
        serde_json::from_str(text(&output).0.lines().last().unwrap()).unwrap()
    } else {
        panic!("{}", text(&output).1);
    };
    for (key, value) in &expected {
        let got = seen
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the shim's environment"));
        if key == "PATH" {
            let ours = value.strip_suffix(djshim::units::SERVICE_PATH).unwrap();
            assert!(got.starts_with(ours), "PATH {got} vs {value}");
        } else {
            assert_eq!(got, value, "{key}");
        }
    }
}

#[test]
fn hostile_values_survive_into_units_exactly() {
    let hostile = [
        "50% off",
        "$HOME ${PATH} $$",
        "it's \"quoted\"",
        "back\\slash \\n",
        ";",
        "",
        "tab\tand\nnewline",
        "%n%i specifiers",
        "-leading dash",
        "caf\u{e9} \u{65e5}\u{672c}",
        "\u{1}control",
    ];
    let toml_list = hostile
        .iter()
        .map(|s| crate::support::toml_str(&s.replace('{', "{{").replace('}', "}}")))
        .collect::<Vec<_>>()
        .join(", ");
    let env = hostile
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "V{i} = {}",
                crate::support::toml_str(&s.replace('{', "{{").replace('}', "}}"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let world = world(&format!("[{toml_list}]"), "");
    world.write(
        "djshim.toml",
        &(world
            .read("djshim.toml")
            .replacen("env = { ", &format!("env = {{ {env}, "), 1)
            + &format!(
                "[instances.prod.services.m]\nmanage = [{toml_list}]\n\
                 [instances.prod.services.p]\ncommand = [{toml_list}]\n"
            )),
    );
    assert_status(&world.djshim(&["systemd"]), 0);
    let python = format!("{}/bin/python3", venv());
    let manage = world.path("pkg/manage.py").to_string();
    for (unit, program) in [
        ("mywebsite-prod.service", vec![python.as_str()]),
        ("mywebsite-prod-p.service", vec![python.as_str()]),
        (
            "mywebsite-prod-m.service",
            vec![python.as_str(), manage.as_str()],
        ),
    ] {
        let unit = Unit::parse(&world.read(&format!("units/{unit}")));
        let argv = unit.exec();
        assert_eq!(argv[..program.len()], program);
        assert_eq!(&argv[program.len()..], hostile);
        let env = unit.environment();
        for (i, s) in hostile.iter().enumerate() {
            assert_eq!(env[&format!("V{i}")], *s);
        }
    }
    verify(
        &[
            "mywebsite-prod.service",
            "mywebsite-prod-m.service",
            "mywebsite-prod-p.service",
            "mywebsite-prod.target",
        ]
        .map(|u| world.path("units").join(u)),
    );
}

/// An argument cron and sh would both love to misread.
const HOSTILE_ARG: &str = "50% \"q\" $HOME 'x' `id` \\%";

/// A crontab line, run with `sh -c` under cron's environment (its PATH
/// line and nothing else), runs the job; a second start while the first
/// still runs is skipped by the lock.
#[test]
fn a_cron_line_runs_the_job_and_never_overlaps() {
    accounts();
    let world = World::new();
    fs::set_permissions(
        world.path(""),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    world.write(
        "pkg/manage.py",
        "import sys, time\nlog = open(sys.argv[2], 'a')\nlog.write('start\\n'); log.flush()\ntime.sleep(float(sys.argv[3]))\nlog.write('end ' + sys.argv[4] + '\\n')\n",
    );
    world.write(
        "djshim.toml",
        &format!(
            "project = \"cronjob\"\n[instances.prod]\npackage = \"{}\"\npython = \"{}\"\nsettings = \"x.settings\"\n\
             user = \"djshimt-app\"\n[instances.prod.jobs.slow]\nmanage = [\"slow\", \"{}\", \"1.5\", {}]\nschedule = \"*/5 * * * *\"\n",
            world.path("pkg"),
            require("python3", "python3-minimal").display(),
            world.path("log"),
            crate::support::toml_str(HOSTILE_ARG),
        ),
    );
    fs::write(world.path("log"), "").unwrap();
    fs::set_permissions(
        world.path("log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    assert_status(&world.djshim(&["generate"]), 0);
    // A world-writable lock directory (/run/lock is 1777): anyone could
    // take a job's lock first. Refused, as is one made in such a directory.
    for dir in ["/run/lock".to_owned(), world.path("locks").into_string()] {
        let output = world.djshim(&["cron", "--lock-dir", &dir]);
        assert_status(&output, 1);
        assert!(
            text(&output).1.contains("is writable by others than root"),
            "{}",
            text(&output).1
        );
    }
    let locks = crate::support::root_dir();
    let lock_dir = Utf8Path::from_path(locks.path()).unwrap().join("locks");
    let output = world.djshim(&["cron", "--lock-dir", lock_dir.as_str()]);
    assert_status(&output, 0);
    let crontab = text(&output).0;
    let path = crontab
        .lines()
        .find_map(|l| l.strip_prefix("PATH="))
        .unwrap()
        .to_owned();
    let line = crontab.lines().find(|l| l.starts_with("*/5 ")).unwrap();
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(fields[5], "root");
    let command = fields[6].replace("\\%", "%");
    let cron = || {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", &command]).env_clear().env("PATH", &path);
        c
    };
    let mut first = cron().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(world.path("log"))
        .unwrap()
        .contains("start")
    {
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = cron().output().unwrap();
    assert_eq!(
        second.status.code(),
        Some(1),
        "the overlapping run was not skipped"
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(
        fs::read_to_string(world.path("log")).unwrap(),
        format!("start\nend {HOSTILE_ARG}\n")
    );
    assert!(
        cron().status().unwrap().success(),
        "a run after the first finished must go"
    );
    // The line made the lock directory, root's alone.
    let meta = fs::metadata(&lock_dir).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o700
    );
}

/// One shape for every unit kind (djshim.toml(5)): `manage` is manage.py's
/// arguments in services and jobs alike (a job's `command`, the 0.1
/// spelling, still works, with a warning that points at it); `service = {
/// … }` on the server, a service and a job replaces djshim's line of the
/// same name or adds one; `{port}` is written once per instance and used in
/// the socket, the server's command and the health URL.
#[test]
fn every_unit_kind_takes_the_same_keys() {
    let world = World::new();
    world.write(
        "djshim.toml",
        "project = \"mywebsite\"\nunits_dir = \"units\"\nprofiles_dir = \"profiles\"\n\
         [defaults]\npython = \"/usr/bin/python3\"\nsettings = \"mywebsite.settings\"\n\
         user = \"mywebsite-{instance}\"\n\
         [defaults.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--name\", \"{instance}-{port}\"]\n\
         socket = \"127.0.0.1:{port}\"\nservice = { PrivateTmp = \"no\", LimitNOFILE = \"65536\" }\n\
         [defaults.deploy]\nhealth = \"http://127.0.0.1:{port}/health\"\n\
         [instances.staging]\nport = 8002\n\
         [instances.prod]\nport = 8001\n\
         [instances.prod.services.worker]\nmanage = [\"runworker\"]\nservice = { Restart = \"on-failure\" }\n\
         [instances.prod.jobs.clearsessions]\ncommand = [\"clearsessions\"]\nschedule = \"@daily\"\n\
         service = { Nice = \"10\" }\n",
    );
    let output = world.djshim(&["systemd"]);
    assert_status(&output, 0);
    let expected = "djshim: warning: djshim.toml:22:11: instances.prod.jobs.clearsessions.command: \
                    `command` of a job is the old spelling of `manage` (manage.py's arguments)\n   \
                    |\n22 | command = [\"clearsessions\"]\n   |           ^^^^^^^^^^^^^^^^^\n   \
                    = help: write `manage = [...]`, as for services: `command` is the \
                    interpreter's arguments in `server` and `services`\n";
    assert_eq!(text(&output).1, expected);
    let unit = |name: &str| Unit::parse(&world.read(&format!("units/{name}")));
    for (instance, port) in [("prod", 8001), ("staging", 8002)] {
        let socket = unit(&format!("mywebsite-{instance}.socket"));
        assert_eq!(socket.one("ListenStream"), format!("127.0.0.1:{port}"));
        let server = unit(&format!("mywebsite-{instance}.service"));
        assert!(
            server
                .one("ExecStart")
                .ends_with(&format!("--name {instance}-{port}"))
        );
        assert_eq!(server.one("PrivateTmp"), "no");
        assert_eq!(server.one("LimitNOFILE"), "65536");
        assert_eq!(server.one("Restart"), "on-failure");
    }
    let worker = unit("mywebsite-prod-worker.service");
    assert_eq!(worker.one("Restart"), "on-failure");
    assert_eq!(worker.one("PrivateTmp"), "yes");
    let job = unit("mywebsite-prod-clearsessions.service");
    assert_eq!(job.one("Nice"), "10");
    assert!(
        job.one("ExecStart")
            .ends_with("/manage.py \\\"$$@\\\"\" mywebsite-prod-clearsessions clearsessions"),
        "{}",
        job.one("ExecStart")
    );
    let source = djshim::config::Source::read(&world.path("djshim.toml")).unwrap();
    let model =
        djshim::model::Model::build(&source, &djshim::config::parse(&source).unwrap()).unwrap();
    for (instance, port) in [("prod", 8001), ("staging", 8002)] {
        assert_eq!(
            model.instances[instance].deploy.health,
            Some(djshim::model::Health::Url {
                host: "127.0.0.1".into(),
                port,
                path: "/health".into()
            })
        );
    }
}

/// Installed units that differ from what the config makes now are a
/// problem of `check` (naming each unit and the way out) and make `list`
/// say so: a new user set `window = "stop"` after writing the units under
/// `serve`, `check` said ok, `list` said up to date, and the deploy's
/// window held nothing.
#[test]
fn check_and_list_see_installed_units_that_the_config_no_longer_makes() {
    let world = world("[\"-m\", \"gunicorn\", \"mywebsite.wsgi\"]", "");
    // (The worlds are under /tmp, which `check` warns of: left out here.)
    let said = |output: &std::process::Output| {
        let (out, err) = text(output);
        let out: String = out
            .split_inclusive('\n')
            .filter(|l| !l.contains(": warning: "))
            .collect();
        (out, err)
    };
    // Never installed here: nothing to compare.
    assert_status(&world.djshim(&["generate"]), 0);
    let check = world.djshim(&["check"]);
    assert_status(&check, 0);
    assert_eq!(said(&check), ("prod: ok\n".into(), String::new()));
    assert_status(&world.djshim(&["systemd"]), 0);
    let check = world.djshim(&["check"]);
    assert_eq!(said(&check), ("prod: ok\n".into(), String::new()));

    let config = world.read("djshim.toml");
    world.write(
        "djshim.toml",
        &config.replace(
            "DJANGO_ALLOWED_HOSTS = \"127.0.0.1,localhost\"",
            "DJANGO_ALLOWED_HOSTS = \"example.org\"",
        ),
    );
    let check = world.djshim(&["check"]);
    assert_status(&check, 1);
    let units = world.path("units");
    let differs = |unit: &str| {
        format!(
            "prod: `units_dir`: the installed unit {units}/{unit} differs from what the config \
             makes now: run `djshim systemd`, then `systemctl daemon-reload`\n"
        )
    };
    assert_eq!(
        said(&check),
        (
            [
                differs("mywebsite-prod-clearsessions.service"),
                differs("mywebsite-prod.service"),
            ]
            .concat(),
            "djshim: error: check found 2 problems\n".into()
        )
    );
    assert_status(&world.djshim(&["generate"]), 0);
    let list = text(&world.djshim(&["list"])).0;
    assert!(
        list.lines().nth(1).unwrap().ends_with("  units stale"),
        "{list}"
    );

    assert_status(&world.djshim(&["systemd"]), 0);
    let check = world.djshim(&["check"]);
    assert_eq!(said(&check), ("prod: ok\n".into(), String::new()));
    let list = text(&world.djshim(&["list"])).0;
    assert!(
        list.lines().nth(1).unwrap().ends_with("  up to date"),
        "{list}"
    );
}

/// The lock directory is judged from `/`: a root-only `locks` inside a
/// directory an account owns could be swapped for a link by that account,
/// and root's `flock` would create the link's target. Refused, as is a
/// link to a root-only place that lies in the account's directory; a link
/// that lies where only root writes is followed and judged at its target.
#[test]
fn the_lock_directory_is_judged_from_the_root_down() {
    use std::os::unix::fs::PermissionsExt as _;
    let a = accounts();
    let world = World::new();
    world.write(
        "djshim.toml",
        "project = \"cronway\"\n[instances.prod]\npackage = \"/srv/none\"\npython = \"/usr/bin/python3\"\n\
         settings = \"x.settings\"\nuser = \"djshimt-app\"\n[instances.prod.jobs.j]\nmanage = [\"check\"]\nschedule = \"@daily\"\n",
    );
    let base = crate::support::root_dir();
    let base = Utf8Path::from_path(base.path()).unwrap().to_owned();
    let account_dir = base.join("account");
    fs::create_dir(&account_dir).unwrap();
    std::os::unix::fs::chown(&account_dir, Some(a.app_uid), Some(a.app_gid)).unwrap();
    let locks = account_dir.join("locks");
    fs::create_dir(&locks).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o700)).unwrap();
    let sealed = base.join("sealed");
    fs::create_dir(&sealed).unwrap();
    fs::set_permissions(&sealed, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&sealed, account_dir.join("link")).unwrap();
    std::os::unix::fs::symlink(&sealed, base.join("roots-link")).unwrap();

    for dir in [locks.clone(), account_dir.join("link")] {
        let output = world.djshim(&["cron", "--lock-dir", dir.as_str()]);
        assert_status(&output, 1);
        assert!(
            text(&output).1.starts_with(&format!(
                "djshim: error: the lock directory {dir}: {account_dir} belongs to uid {}, not root",
                a.app_uid
            )),
            "{}",
            text(&output).1
        );
        assert!(text(&output).0.is_empty());
    }
    for dir in [sealed.join("locks"), base.join("roots-link/locks")] {
        let output = world.djshim(&["cron", "--lock-dir", dir.as_str()]);
        assert_status(&output, 0);
    }
}

/// Issue 23, item 10: a job removed from the config loses its unit files,
/// and `djshim systemd` says what systemd still needs: stop the removed
/// units, reload, forget their failures (a timer whose service vanished
/// fails every time it fires until then).
#[test]
fn removed_units_are_named_with_the_way_to_stop_them() {
    let world = world("[\"-m\", \"gunicorn\", \"mywebsite.wsgi\"]", "");
    assert_status(&world.djshim(&["systemd"]), 0);
    let config = world.read("djshim.toml");
    world.write(
        "djshim.toml",
        &config.replace(
            "[instances.prod.jobs.clearsessions]\nmanage = [\"clearsessions\"]\nschedule = \"17 3 * * *\"\n",
            "",
        ),
    );
    let units = world.path("units");
    Expect::new()
        .stdout(&format!(
            "removed {units}/mywebsite-prod-clearsessions.service\n\
             removed {units}/mywebsite-prod-clearsessions.timer\n\
             updated {units}/mywebsite-prod.target\n"
        ))
        // (After the warnings about /tmp, where the test's world lies.)
        .stderr_has(
            "djshim: mywebsite-prod-clearsessions.service mywebsite-prod-clearsessions.timer \
             removed: systemd runs them until they are stopped",
        )
        .stderr_has(
            "  = help: `systemctl stop mywebsite-prod-clearsessions.service \
             mywebsite-prod-clearsessions.timer && systemctl daemon-reload && systemctl \
             reset-failed`",
        )
        .check(&world.djshim(&["systemd"]));
    // Nothing removed: nothing said.
    let (_, stderr) = Expect::new()
        .stderr_has("warning")
        .check(&world.djshim(&["systemd"]));
    assert!(!stderr.contains("removed"), "{stderr}");
}
