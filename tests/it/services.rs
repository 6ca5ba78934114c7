//! Every process of an instance under systemd (SPEC section 7): services
//! beside the server, one target per instance, the directories the units
//! need, and restarts behind a socket that systemd holds. Real gunicorn,
//! a real long-running management command, real systemd-analyze and
//! systemd-tmpfiles, the stand-in of tests/it/systemd.rs and a socket held
//! as `sd_listen_fds(3)` describes; realunits.rs runs the same kinds of
//! units under a real systemd.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::accounts::accounts;
use crate::support::{World, assert_status, from_cron, require, root, text};
use crate::systemd::{Unit, free_port, http_get, verify};

#[test]
fn services_units_match_their_golden_files() {
    let world = World::new();
    let config = root().join("tests/fixtures/services.toml");
    assert_status(
        &world.djshim(&["-c", config.as_str(), "systemd", "--out", "units"]),
        0,
    );
    let files = crate::support::visible_files(&world.path("units"));
    crate::support::golden_dir("golden/services", |_| true, &files);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "mywebsite-prod-celery.service",
            "mywebsite-prod-clearsessions.service",
            "mywebsite-prod-clearsessions.timer",
            "mywebsite-prod-sendalerts.service",
            "mywebsite-prod.service",
            "mywebsite-prod.socket",
            "mywebsite-prod.target",
            "mywebsite-prod.tmpfiles.conf",
        ]
    );
}

/// A world with the example project as `prod`, run by the test account,
/// with a server on a socket, a management-command service, a python
/// service, a job; state under /var/lib, media elsewhere.
fn services_world(port: u16, user: &str) -> World {
    World::example(&format!(
        "user = \"{user}\"\nstate_dir = \"var\"\nstatic_root = \"/var/lib/djshim-test-{port}/static\"\n\
         media_root = \"/srv/djshim-test-{port}/media\"\n\
         [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--workers\", \"2\"]\n\
         socket = \"127.0.0.1:{port}\"\n\
         [instances.prod.services.sendalerts]\nmanage = [\"sendalerts\"]\n\
         [instances.prod.services.http]\ncommand = [\"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"0\"]\n\
         [instances.prod.jobs.clearsessions]\nmanage = [\"clearsessions\"]\nschedule = \"@daily\"\n",
    ))
}

#[test]
fn every_kind_of_unit_passes_systemd_analyze_verify() {
    accounts();
    let world = services_world(free_port(), "djshimt-app");
    assert_status(&world.djshim(&["systemd"]), 0);
    let mut units = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for entry in world.path("units").read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        if let Some(kind) = entry
            .path()
            .extension()
            .filter(|k| ["service", "timer", "socket", "target"].contains(k))
        {
            kinds.insert(kind.to_owned());
            units.push(entry.path().to_owned());
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    verify(&units);
    // Every unit of the instance is part of its target, but the socket,
    // which must stay open while the instance restarts.
    let target = Unit::parse(&world.read("units/mywebsite-prod.target"));
    let wants: Vec<&str> = target.one("Wants").split(' ').collect();
    assert_eq!(
        wants,
        [
            "mywebsite-prod.socket",
            "mywebsite-prod.service",
            "mywebsite-prod-http.service",
            "mywebsite-prod-sendalerts.service",
            "mywebsite-prod-clearsessions.timer"
        ]
    );
    // Timers stop with the target but are not restarted with it (a
    // restarted timer may fire at once: see realunits.rs).
    for name in &wants[1..] {
        let unit = Unit::parse(&world.read(&format!("units/{name}")));
        let key = if name.rsplit('.').next() == Some("timer") {
            "StopPropagatedFrom"
        } else {
            "PartOf"
        };
        assert_eq!(unit.one(key), "mywebsite-prod.target", "{name}");
        assert_eq!(
            unit.all("PartOf").len() + unit.all("StopPropagatedFrom").len(),
            1
        );
    }
    let socket = Unit::parse(&world.read("units/mywebsite-prod.socket"));
    assert!(socket.all("PartOf").is_empty());
}

/// The state directories come from systemd (`StateDirectory=` under
/// /var/lib), the others from the tmpfiles.d file beside the units, made
/// here by the real systemd-tmpfiles in a root of its own.
#[test]
fn the_units_create_the_directories_they_need() {
    let a = accounts();
    let port = free_port();
    let world = services_world(port, "djshimt-app");
    assert_status(&world.djshim(&["systemd"]), 0);
    let server = Unit::parse(&world.read("units/mywebsite-prod.service"));
    assert_eq!(
        server.one("StateDirectory"),
        format!("djshim-test-{port}/static")
    );
    assert_eq!(server.one("StateDirectoryMode"), "0750");
    assert_eq!(
        server.all("ReadWritePaths"),
        [
            format!("-{}", world.path("var")).as_str(),
            &format!("-/srv/djshim-test-{port}/media"),
        ]
    );
    let conf = world.path("units/mywebsite-prod.tmpfiles.conf");
    assert!(
        world
            .read("units/mywebsite-prod.tmpfiles.conf")
            .contains(&format!(
                "\nd /srv/djshim-test-{port}/media 0750 djshimt-app {} -\n",
                crate::accounts::primary_group("djshimt-app")
            ))
    );
    // A root for systemd-tmpfiles that knows the account.
    let sysroot = world.path("sysroot");
    fs::create_dir_all(sysroot.join("etc")).unwrap();
    for file in ["passwd", "group"] {
        fs::copy(format!("/etc/{file}"), sysroot.join("etc").join(file)).unwrap();
    }
    let output = Command::new(require("systemd-tmpfiles", "systemd"))
        .arg("--create")
        .arg(format!("--root={sysroot}"))
        .arg(&conf)
        .output()
        .unwrap();
    assert_status(&output, 0);
    let media = fs::metadata(sysroot.join(format!("srv/djshim-test-{port}/media"))).unwrap();
    assert!(media.is_dir());
    assert_eq!((media.uid(), media.mode() & 0o7777), (a.app_uid, 0o750));
}

/// The service of a management command runs as its unit says, keeps
/// running, and stops on SIGTERM as systemd stops it.
#[test]
fn a_service_runs_its_management_command() {
    let world = services_world(free_port(), "root");
    assert_status(&world.djshim(&["generate"]), 0);
    assert_status(&world.djshim(&["systemd"]), 0);
    let unit = Unit::parse(&world.read("units/mywebsite-prod-sendalerts.service"));
    assert_eq!(unit.one("Restart"), "always");
    let mut service = unit
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(service.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "round 1: instance=prod");
    assert_eq!(lines.next().unwrap().unwrap(), "round 2: instance=prod");
    assert!(service.try_wait().unwrap().is_none(), "the service ended");
    let _ = Command::new("kill").arg(service.id().to_string()).status();
    let status = service.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The same command through the shim: the same environment.
    let shim = from_cron(
        world.path("bin/mywebsite-prod"),
        &["sendalerts", "--rounds", "1"],
    );
    assert_status(&shim, 0);
    assert_eq!(text(&shim).0, "round 1: instance=prod\n");
}

/// Holds a listening socket as systemd's `.socket` unit does and starts the
/// server as `sd_listen_fds(3)` says (the socket on descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` its own pid); or, given `bind`, starts the
/// server to bind its port itself. Reads `start`, `restart` and `stop` on
/// stdin, answers `ok` when done.
const HOLDER: &str = r#"import json, os, signal, socket, sys
mode, listen, env_file, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
env = json.load(open(env_file))
if mode == "socket":
    host, port = listen.rsplit(":", 1)
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind((host, int(port)))
    held.listen(socket.SOMAXCONN)
child = None
def start():
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        child_env = dict(env)
        if mode == "socket":
            os.dup2(held.fileno(), 3)
            os.set_inheritable(3, True)
            child_env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
        os.closerange(4, 1024)
        os.execve(argv[0], argv, child_env)
    return pid
def stop(pid):
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
for line in sys.stdin:
    word = line.strip()
    if word == "start":
        child = start()
    elif word == "restart":
        stop(child)
        child = start()
    elif word == "stop":
        stop(child)
    print("ok", flush=True)
"#;

/// Restarts of the server while a client sends requests: how many fail.
fn requests_lost_in_restarts(socket: bool) -> (usize, usize) {
    let port = free_port();
    let world = services_world(port, "root");
    let mut config = world.read("djshim.toml");
    if !socket {
        config = config
            .replace(&format!("socket = \"127.0.0.1:{port}\"\n"), "")
            .replace(
                "\"--workers\", \"2\"]",
                &format!("\"--workers\", \"2\", \"--bind\", \"127.0.0.1:{port}\"]"),
            );
    }
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    assert_status(
        &from_cron(world.path("bin/mywebsite-prod"), &["migrate", "--noinput"]),
        0,
    );
    assert_status(&world.djshim(&["systemd"]), 0);
    let unit = Unit::parse(&world.read("units/mywebsite-prod.service"));
    let command = unit.command();
    let env: BTreeMap<String, String> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
        .collect();
    let env_file = world.write("env.json", &serde_json::to_string(&env).unwrap());
    let holder = world.write("holder.py", HOLDER);
    let mut argv = vec![command.get_program().to_str().unwrap().to_owned()];
    argv.extend(command.get_args().map(|a| a.to_str().unwrap().to_owned()));
    let mut held = Command::new(require("python3", "python3-minimal"))
        .arg(&holder)
        .arg(if socket { "socket" } else { "bind" })
        .arg(format!("127.0.0.1:{port}"))
        .arg(&env_file)
        .arg(unit.one("WorkingDirectory"))
        .args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_holder = held.stdin.take().unwrap();
    let mut from_holder = BufReader::new(held.stdout.take().unwrap()).lines();
    let mut tell = |word: &str| {
        writeln!(to_holder, "{word}").unwrap();
        assert_eq!(from_holder.next().unwrap().unwrap(), "ok");
    };
    tell("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port).is_none_or(|r| !r.contains(" 200 OK")) {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client sends requests one after another, at most 400 or for 60 s,
    // while the server is restarted three times.
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut sent, mut failed) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::Relaxed) && sent < 400 && Instant::now() < deadline {
                sent += 1;
                if !http_get(port).is_some_and(|r| {
                    r.contains(" 200 OK") && r.ends_with("instance=prod questions=0\n")
                }) {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (sent, failed)
        })
    };
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        tell("restart");
    }
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let (sent, failed) = client.join().unwrap();
    tell("stop");
    drop(to_holder);
    held.wait().unwrap();
    (sent, failed)
}

#[test]
fn restarts_behind_the_socket_lose_no_request() {
    let (sent, failed) = requests_lost_in_restarts(true);
    println!("with the socket unit: {failed} of {sent} requests failed over 3 restarts");
    assert!(sent >= 20, "only {sent} requests were sent");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed behind the socket"
    );
    // The contrast: the same restarts with the server binding its own port.
    let (sent, failed) = requests_lost_in_restarts(false);
    println!("without it: {failed} of {sent} requests failed over 3 restarts");
    assert!(
        failed > 0,
        "no request failed without the socket ({sent} sent)"
    );
}
