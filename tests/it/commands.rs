//! `init`, `check`, `list`, config lookup and usage errors: whole outputs.

use std::fs;
use std::process::Stdio;

use assert_cmd::assert::OutputAssertExt;

use crate::generate::config;
use crate::support::{Expect, World, assert_status, text, venv};

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let w = World::new();
    w.djshim_cmd(&["init", "--project", "shop"])
        .assert()
        .code(0)
        .stdout("wrote djshim.toml for project `shop`; edit it, then run `djshim check`\n");
    let starter = w.read("djshim.toml");
    assert!(
        starter.contains("project = \"shop\"")
            && starter.contains("settings = \"shop.settings.{instance}\"")
    );
    // The starter is a config djshim accepts as it stands, and leads to
    // the deploy path (issue 17, item 1): profile instances (no fixed
    // `package`), a `[build]` with its account, the deploy keys.
    w.djshim_cmd(&["generate"]).assert().code(0);
    assert!(w.path("bin/shop-prod").is_file() && w.path("bin/shop-staging").is_file());
    for line in [
        "[build]",
        "user = \"shop-build\"",
        "[defaults.deploy]",
        "user = \"{project}-{instance}\"",
        "# env_file = ",
        "# [instances.prod.server]",
        "#   djshim deploy prod",
        "{port}",
    ] {
        assert!(
            starter.contains(line),
            "no {line:?} in the starter:\n{starter}"
        );
    }
    assert!(
        !starter.lines().any(|l| l.starts_with("package")),
        "{starter}"
    );
    let list = w.djshim(&["list"]);
    assert!(text(&list).0.contains("profile"), "{}", text(&list).0);

    w.djshim_cmd(&["init"]).assert().code(1).stderr(
        "djshim: error: djshim.toml already exists; `init` never overwrites a config\n  \
         = help: edit it, or pass `--config OTHER.toml` to start another\n",
    );
    assert_eq!(w.read("djshim.toml"), starter);
    w.djshim_cmd(&["init", "--project", "Bad Name"])
        .assert()
        .code(2);
    // Without --project: the Django project beside the config (here the
    // config lives in `site/etc`, manage.py in `site`)...
    w.write(
        "site/manage.py",
        "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bakery.settings.prod')\n",
    );
    fs::create_dir_all(w.path("site/etc")).unwrap();
    w.djshim_cmd(&["init"])
        .current_dir(w.path("site/etc"))
        .assert()
        .code(0)
        .stdout("wrote djshim.toml for project `bakery`; edit it, then run `djshim check`\n");
    assert!(
        w.read("site/etc/djshim.toml")
            .contains("project = \"bakery\"")
    );
    // ...else a placeholder name, and how to choose one.
    fs::create_dir_all(w.path("empty/etc")).unwrap();
    w.djshim_cmd(&["init"])
        .current_dir(w.path("empty/etc"))
        .assert()
        .code(0)
        .stdout(
            "wrote djshim.toml for project `mywebsite`, a placeholder: no manage.py was found \
             here, beside or below; set `project` in it (or start again with `djshim init \
             --project NAME`), then run `djshim check`\n",
        );
    assert!(
        w.read("empty/etc/djshim.toml")
            .contains("project = \"mywebsite\"")
    );
}

/// The starter's way to a running site is the README's "From a fresh
/// server to a running site", command for command (issue 23, item 6).
#[test]
fn the_starter_leads_the_way_the_readme_does() {
    let w = World::new();
    w.djshim_cmd(&["init", "--project", "shop"])
        .assert()
        .code(0);
    let starter = w.read("djshim.toml");
    let readme = std::fs::read_to_string(crate::support::root().join("README.md")).unwrap();
    let section = readme
        .split("### From a fresh server to a running site")
        .nth(1)
        .unwrap();
    let commands = |lines: Vec<&str>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                l.split("   #")
                    .next()
                    .unwrap()
                    .split("  #")
                    .next()
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect()
    };
    let readme_way = commands(
        section
            .lines()
            .skip_while(|l| !l.starts_with("    useradd"))
            .take_while(|l| l.starts_with("    "))
            .map(|l| l.replace("mywebsite", "shop"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    let starter_way = commands(
        starter
            .lines()
            .skip_while(|l| !l.starts_with("#   useradd"))
            .take_while(|l| l.starts_with("#   "))
            .map(|l| &l[1..])
            .collect(),
    );
    assert_eq!(starter_way, readme_way);
    assert_eq!(readme_way.len(), 9, "{readme_way:?}");
}

#[test]
fn the_config_is_found_by_flag_then_environment_then_default() {
    let w = World::new();
    w.write("djshim.toml", &config(1, "default"));
    w.write("env.toml", &config(1, "env"));
    w.write("flag.toml", &config(1, "flag"));
    let settings = |cmd: &mut std::process::Command| {
        let out = text(&cmd.output().unwrap()).0;
        out.lines()
            .find(|l| l.starts_with("export DJANGO_SETTINGS_MODULE"))
            .unwrap()
            .to_owned()
    };
    assert!(settings(&mut w.djshim_cmd(&["show", "i00000"])).ends_with("default"));
    assert!(
        settings(
            w.djshim_cmd(&["show", "i00000"])
                .env("DJSHIM_CONFIG", "env.toml")
        )
        .ends_with("env")
    );
    assert!(
        settings(
            w.djshim_cmd(&["-c", "flag.toml", "show", "i00000"])
                .env("DJSHIM_CONFIG", "env.toml")
        )
        .ends_with("flag")
    );
}

#[test]
fn a_missing_config_says_how_to_make_one() {
    let w = World::new();
    w.djshim_cmd(&["generate"]).assert().code(2).stderr(
        "djshim: error: djshim.toml: no such config file\n  = help: create one with `djshim init`, \
         or name it with `--config PATH` or `$DJSHIM_CONFIG`\n",
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let w = World::new();
    w.djshim_cmd(&["frobnicate"]).assert().code(2);
    w.djshim_cmd(&["generate", "--bogus"]).assert().code(2);
    w.djshim_cmd(&["show"]).assert().code(2);
    for sub in ["init", "check", "generate", "list", "show"] {
        w.djshim_cmd(&[sub, "--help"]).assert().code(0);
    }
    let help = text(&w.djshim(&["--help"])).0;
    assert!(
        help.contains("Exit status:") && help.contains("DJSHIM_CONFIG"),
        "{help}"
    );
}

#[test]
fn check_lists_every_problem_of_every_instance() {
    let w = World::new();
    w.write("pkg/manage.py", "");
    let text_config = format!(
        "project = \"site\"\n[defaults]\npython = \"{venv}/bin/python3\"\nsettings = \"shop.settings\"\n\
         [instances.good]\npackage = \"{pkg}\"\nsettings = \"json.decoder\"\n\
         [instances.bad]\npackage = \"{pkg}\"\nstate_dir = \"nowhere\"\n\
         [instances.gone]\npackage = \"/nonexistent/pkg\"\npython = \"/nonexistent/python3\"\n",
        venv = venv(),
        pkg = w.path("pkg"),
    );
    w.write("djshim.toml", &text_config);
    let output = w.djshim(&["check"]);
    assert_status(&output, 1);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        stdout,
        format!(
            "bad: `state_dir`: {}: no such directory\n\
             bad: `settings`: module `shop.settings` not found by {venv}/bin/python3\n\
             gone: `package`: /nonexistent/pkg: no such directory\n\
             gone: `python`: /nonexistent/python3: missing or not executable\n\
             good: ok\n",
            w.path("nowhere"),
            venv = venv()
        )
    );
    assert_eq!(stderr, "djshim: error: check found 4 problems\n");
    w.djshim_cmd(&["check", "good"])
        .assert()
        .code(0)
        .stdout("good: ok\n");
}

#[test]
fn list_shows_each_instance_and_whether_its_shim_is_current() {
    let w = World::new();
    w.write(
        "djshim.toml",
        &config(2, "x").replace("package = \"/srv/site/{instance}\"\n", ""),
    );
    let list = |w: &World| text(&w.djshim(&["list"])).0;
    assert_status(&w.djshim(&["generate", "i00000"]), 0);
    let rows: Vec<Vec<String>> = list(&w)
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect();
    let bin = w.path("bin");
    let profile = "/var/lib/djshim/profiles/site";
    assert_eq!(
        rows,
        [
            vec![
                "INSTANCE".to_owned(),
                "SHIM".into(),
                "PACKAGE".into(),
                "SETTINGS".into(),
                "STATE".into()
            ],
            vec![
                "i00000".into(),
                format!("{bin}/site-i00000"),
                format!("{profile}-i00000 (not pinned)"),
                "site.settings.x".into(),
                "up to date".into()
            ],
            vec![
                "i00001".into(),
                format!("{bin}/site-i00001"),
                format!("{profile}-i00001 (not pinned)"),
                "site.settings.x".into(),
                "missing".into()
            ],
        ]
    );
    w.write(
        "djshim.toml",
        &w.read("djshim.toml").replace("settings.x", "settings.y"),
    );
    assert!(list(&w).contains("site.settings.y  stale\n"));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let w = World::new();
    w.write("djshim.toml", &config(2000, "x"));
    let mut child = w
        .djshim_cmd(&["list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    output.assert().code(0);
}

/// `check` asks Django itself, through the instance's shim: a settings
/// module that fails to import, an interpreter without Django, a server
/// module that is not there (finding the files is not enough).
#[test]
fn check_asks_django_itself() {
    let w = World::new();
    let pkg = w.release("pkg");
    let config = |python: &str, server: &str| {
        format!(
            "project = \"mywebsite\"\n[instances.prod]\npackage = \"{pkg}\"\npython = \"{python}\"\n\
             settings = \"mywebsite.settings.production\"\nuser = \"root\"\n\
             env = {{ MYWEBSITE_DB = \"{}\" }}\n[instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"{server}\"]\n\
             service = {{ PrivateTmp = \"no\" }}  # (the world lies under /tmp)\n",
            w.path("db.sqlite3")
        )
    };
    let venv_python = format!("{}/bin/python3", crate::support::venv());
    let check = |text: &str| {
        w.write("djshim.toml", text);
        let output = w.djshim(&["check"]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert_eq!(
        check(&config(&venv_python, "mywebsite.wsgi")),
        (Some(0), "prod: ok\n".to_owned())
    );
    let (code, stdout) = check(&config(&venv_python, "mywebsite.wsgi_gone"));
    assert_eq!(code, Some(1));
    assert_eq!(
        stdout,
        "prod: `settings`: the module mywebsite.wsgi_gone cannot be imported\n"
    );
    let (code, stdout) = check(&config("/usr/bin/python3", "mywebsite.wsgi"));
    assert_eq!(code, Some(1));
    assert!(stdout.contains("No module named 'django'"), "{stdout}");
    fs::write(
        pkg.join("mywebsite/settings/production.py"),
        "from .base import *  # noqa\nimport no_such_module\n",
    )
    .unwrap();
    let (code, stdout) = check(&config(&venv_python, "mywebsite.wsgi"));
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("No module named 'no_such_module'"),
        "{stdout}"
    );
}

/// Issue 23, item 8: a job's management command that is found but cannot
/// be imported (a dependency the release lacks) fails `check`, as it would
/// fail at every run of its timer.
#[test]
fn check_loads_the_commands_of_jobs() {
    let w = World::new();
    let pkg = w.release("pkg");
    fs::write(
        pkg.join("polls/management/commands/pruneobjects.py"),
        "import minio  # not in the release\nfrom django.core.management.base import BaseCommand\n\n\n\
         class Command(BaseCommand):\n    def handle(self, *args, **options):\n        pass\n",
    )
    .unwrap();
    w.write(
        "djshim.toml",
        &format!(
            "project = \"mywebsite\"\n[instances.prod]\npackage = \"{pkg}\"\npython = \"{}/bin/python3\"\n\
             settings = \"mywebsite.settings.production\"\nuser = \"root\"\n\
             env = {{ MYWEBSITE_DB = \"{}\" }}\n\
             [instances.prod.jobs.prune]\nmanage = [\"pruneobjects\"]\nschedule = \"* * * * *\"\n",
            crate::support::venv(),
            w.path("db.sqlite3")
        ),
    );
    Expect::new()
        .status(1)
        // (The world lies under /tmp, which the units would not see.)
        .stdout_has("prod: `package`: warning: ")
        .stdout_has(
            "prod: `settings`: the management command 'pruneobjects' cannot be loaded: \
             ModuleNotFoundError: No module named 'minio'",
        )
        .stderr("djshim: error: check found 1 problem\n")
        .check(&w.djshim(&["check"]));
}
