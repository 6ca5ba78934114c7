//! Servers under switches (SPEC section 4): a unit of an instance that runs
//! its profile follows the profile once, when it starts. A real gunicorn,
//! started as its unit says, recycles its workers while the profile is
//! switched back and forth; every answer comes from the generation it
//! started with, and a restart picks up the new one.

use std::fs;
use std::process::Command;

use camino::Utf8PathBuf;

use crate::support::{World, assert_status, from_cron, require, text, venv};
use crate::systemd::{Unit, free_port, http_get, serve, stop};

/// Two releases of the example project, `a` answering `instance=prod` and
/// `b` answering `instance=prod-b`, and an instance `prod` that runs its
/// profile, with a gunicorn server on `port` whose workers are recycled
/// every `max_requests` requests.
fn two_releases(port: u16, max_requests: u32) -> (World, Utf8PathBuf, Utf8PathBuf) {
    let world = World::new();
    let a = world.release("a");
    let b = world.release("b");
    fs::write(
        b.join("mywebsite/settings/production.py"),
        "from .base import *  # noqa: F403\n\nINSTANCE = \"prod-b\"\n",
    )
    .unwrap();
    fs::create_dir_all(world.path("var")).unwrap();
    world.write(
        "djshim.toml",
        &format!(
            "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\nunits_dir = \"units\"\n\
             [instances.prod]\npython = \"{venv}/bin/python3\"\n\
             settings = \"mywebsite.settings.production\"\nuser = \"root\"\nstate_dir = \"var\"\n\
             env = {{ MYWEBSITE_DB = \"{db}\", DJANGO_ALLOWED_HOSTS = \"127.0.0.1,localhost\" }}\n\
             [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \
             \"--bind\", \"127.0.0.1:{port}\", \"--workers\", \"2\", \"--max-requests\", \
             \"{max_requests}\"]\n",
            venv = venv(),
            db = world.path("var/db.sqlite3"),
        ),
    );
    assert_status(&world.djshim(&["pin", "prod", a.as_str()]), 0);
    assert_status(&world.djshim(&["generate"]), 0);
    assert_status(
        &from_cron(world.path("bin/mywebsite-prod"), &["migrate", "--noinput"]),
        0,
    );
    assert_status(&world.djshim(&["systemd"]), 0);
    (world, a, b)
}

fn body(response: &str) -> &str {
    response.rsplit("\r\n\r\n").next().unwrap_or_default()
}

#[test]
fn a_running_server_keeps_its_generation_while_the_profile_moves() {
    let port = free_port();
    let (world, a, b) = two_releases(port, 2);
    let unit = Unit::parse(&world.read("units/mywebsite-prod.service"));
    let (first, server) = serve(&unit, port);
    assert_eq!(body(&first), "instance=prod questions=0\n");

    // 40 requests: with 2 workers recycled every 2 requests, some 20
    // workers are born after the profile moved away; pins go back and
    // forth between the two releases all along.
    let mut answers = Vec::new();
    for i in 0..40 {
        if i % 5 == 0 {
            let to = if i % 10 == 0 { &b } else { &a };
            assert_status(&world.djshim(&["pin", "prod", to.as_str()]), 0);
        }
        answers.push(http_get(port).map(|r| body(&r).to_owned()));
    }
    assert_status(&world.djshim(&["pin", "prod", b.as_str()]), 0);
    answers.push(http_get(port).map(|r| body(&r).to_owned()));
    let stderr = stop(server);
    let wrong: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.as_deref() != Some("instance=prod questions=0\n"))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers not from the generation the server started with: {wrong:?}\n{stderr}"
    );
    assert!(
        stderr.matches("Booting worker").count() >= 10,
        "the workers were not recycled:\n{stderr}"
    );

    // A restart picks up where the profile points now.
    let (again, server) = serve(&unit, port);
    stop(server);
    assert_eq!(body(&again), "instance=prod-b questions=0\n");
}

/// The launcher in `ExecStart=` is POSIX sh that shellcheck and dash accept,
/// the server's with its deploy window.
#[test]
fn the_launcher_of_a_unit_is_clean_sh() {
    let (world, _a, _b) = two_releases(free_port(), 100);
    world.write(
        "djshim.toml",
        &(world.read("djshim.toml").replace(
            "[instances.prod.server]\n",
            "[instances.prod.server]\nsocket = \"127.0.0.1:1\"\n",
        ) + "[instances.prod.jobs.clear]\nmanage = [\"clearsessions\"]\nschedule = \"@daily\"\n\
               [defaults.deploy]\nwindow = \"503\"\n"),
    );
    assert_status(&world.djshim(&["systemd"]), 0);
    for unit in ["mywebsite-prod.service", "mywebsite-prod-clear.service"] {
        let argv = Unit::parse(&world.read(&format!("units/{unit}"))).exec();
        assert_eq!(argv[..2], ["/bin/sh", "-c"], "{unit}");
        assert_eq!(
            argv[2].contains("djshim_window"),
            unit == "mywebsite-prod.service",
            "{unit}: {}",
            argv[2]
        );
        let script = world.write("launcher.sh", &format!("#!/bin/sh\n{}\n", argv[2]));
        let output = Command::new(require("shellcheck", "shellcheck"))
            .args(["--shell=sh", "--enable=all"])
            .arg(&script)
            .output()
            .unwrap();
        assert_status(&output, 0);
        assert_eq!(text(&output).0, "", "{unit}");
        assert_status(
            &Command::new(require("dash", "dash"))
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap(),
            0,
        );
    }
    // The job's unit runs manage.py of the generation it started with.
    let unit = Unit::parse(&world.read("units/mywebsite-prod-clear.service"));
    assert_status(&unit.command().output().unwrap(), 0);
}
