//! The shims' helper, `djshim-exec`: copied beside the shims by `generate`
//! and owned through the manifest; a shim keeps working when djshim's own
//! copy goes; a djshim without it writes nothing; env files as the helper
//! reads them (any number of them, systemd's NUL and UTF-8 rules).
//! Accounts are in accounts.rs and envfiles.rs; here root runs instances
//! without one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::accounts::PROBE;
use crate::support::{CRON_PATH, Expect, World, assert_status, text};

const HELPER: &str = "bin/.djshim-t-exec";

/// A world with instance `app` (manage.py reports its environment) whose
/// shim reads `env_files`.
fn world(env_files: &[&Utf8Path]) -> World {
    let world = World::new();
    world.write("pkg/manage.py", PROBE);
    world.write("djshim.toml", &config(&world, env_files));
    world
}

fn config(world: &World, env_files: &[&Utf8Path]) -> String {
    crate::accounts::probe_config(world, env_files, "")
}

/// Runs the shim from cron's environment; its manage.py's report.
fn run(shim: &Utf8Path) -> (std::process::Output, Option<serde_json::Value>) {
    let output = Command::new(shim)
        .env_clear()
        .env("PATH", CRON_PATH)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).ok();
    (output, report)
}

fn env_file(world: &World, name: &str, content: &[u8]) -> Utf8PathBuf {
    let path = world.path(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn generate_copies_the_helper_beside_the_shims_and_owns_it() {
    let scratch = World::new();
    let env = env_file(&scratch, "site.env", b"A=1\n");
    let world = world(&[&env]);

    let dry = world.djshim(&["generate", "--dry-run"]);
    assert_status(&dry, 0);
    assert!(
        text(&dry).0.contains(&format!(
            "binary file {} would be created\n",
            world.path(HELPER)
        )),
        "{}",
        text(&dry).0
    );
    assert!(!world.path("bin").exists(), "--dry-run wrote");

    let output = world.djshim(&["generate"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .0
            .contains(&format!("created {}\n", world.path(HELPER)))
    );
    let helper = world.path(HELPER);
    assert_eq!(
        fs::read(&helper).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_djshim-exec")).unwrap(),
        "the helper is a copy of the djshim-exec beside djshim"
    );
    assert_eq!(
        fs::metadata(&helper).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert!(
        world
            .read("bin/.djshim-t.manifest")
            .lines()
            .any(|l| l == ".djshim-t-exec")
    );
    let (output, report) = run(&world.path("bin/t-app"));
    assert_status(&output, 0);
    assert_eq!(report.unwrap()["env"]["A"], "1");

    // No instance needs it any more: it goes, like a shim of a gone instance.
    world.write("djshim.toml", &config(&world, &[]));
    let output = world.djshim(&["generate"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .0
            .contains(&format!("removed {}\n", world.path(HELPER)))
    );
    assert!(!helper.exists());
    assert!(!world.read("bin/t-app").contains(".djshim-t-exec"));
}

/// A djshim installed without its helper: one error naming the file it
/// looked for, and nothing written. A shim already written keeps working
/// when djshim's own copy goes away (it runs the copy beside it).
#[test]
fn the_helper_is_a_copy_and_without_one_nothing_is_written() {
    let install = World::new();
    let djshim = install.path("djshim");
    fs::copy(env!("CARGO_BIN_EXE_djshim"), &djshim).unwrap();
    let env = env_file(&install, "site.env", b"B=2\n");
    let world = world(&[&env]);
    let generate = |djshim: &Utf8Path| {
        Command::new(djshim)
            .arg("generate")
            .current_dir(world.path(""))
            .env_clear()
            .env("PATH", CRON_PATH)
            .output()
            .unwrap()
    };

    let before = world.files();
    Expect::new()
        .status(1)
        .stderr(&format!(
            "djshim: error: the shims' helper {} cannot be read (No such file or directory (os \
             error 2))\n  = help: it is built and installed with djshim (`cargo build`, `cargo \
             install --path .`)\n",
            install.path("djshim-exec")
        ))
        .check(&generate(&djshim));
    assert_eq!(world.files(), before, "something was written");

    fs::copy(
        env!("CARGO_BIN_EXE_djshim-exec"),
        install.path("djshim-exec"),
    )
    .unwrap();
    assert_status(&generate(&djshim), 0);
    fs::remove_file(install.path("djshim-exec")).unwrap();
    fs::remove_file(&djshim).unwrap();
    let (output, report) = run(&world.path("bin/t-app"));
    assert_status(&output, 0);
    assert_eq!(report.unwrap()["env"]["B"], "2");

    // The shim's own copy gone: one line, 127, as for a missing interpreter.
    Expect::new()
        .stdout_has("up to date")
        .check(&world.djshim(&["list"]));
    fs::remove_file(world.path(HELPER)).unwrap();
    let (output, _) = run(&world.path("bin/t-app"));
    assert_status(&output, 127);
    assert_eq!(
        text(&output).1,
        format!(
            "t-app: the helper {} is missing: run djshim generate again\n",
            world.path(HELPER)
        )
    );
    let list = world.djshim(&["list"]);
    assert!(text(&list).0.contains(" stale\n"), "{}", text(&list).0);
}

#[test]
fn any_number_of_env_files_are_read_in_order() {
    let scratch = World::new();
    let files: Vec<Utf8PathBuf> = (0..12)
        .map(|i| {
            env_file(
                &scratch,
                &format!("{i}.env"),
                format!("N{i}={i}\nLAST={i}\n").as_bytes(),
            )
        })
        .collect();
    let refs: Vec<&Utf8Path> = files.iter().map(Utf8PathBuf::as_path).collect();
    let world = world(&refs);
    assert_status(&world.djshim(&["generate"]), 0);
    let (output, report) = run(&world.path("bin/t-app"));
    assert_status(&output, 0);
    let env = &report.unwrap()["env"];
    for i in 0..12 {
        assert_eq!(env[format!("N{i}")], i.to_string());
    }
    assert_eq!(env["LAST"], "11", "a later file wins, as in systemd");
}

/// What systemd 252 does with a NUL byte (`load_env_file` refuses the whole
/// file: EBADMSG, the unit does not start) and with a value that is not
/// UTF-8 (the file is refused), the shim does: exit 78, nothing runs.
#[test]
fn a_nul_or_a_value_that_is_not_utf8_refuses_an_env_file() {
    let scratch = World::new();
    let world = World::new();
    world.write("pkg/manage.py", PROBE);
    let refused = |file: &Utf8Path, stderr: String| {
        world.write("djshim.toml", &config(&world, &[file]));
        assert_status(&world.djshim(&["generate"]), 0);
        let (output, _) = run(&world.path("bin/t-app"));
        assert_status(&output, 78);
        assert_eq!(text(&output).1, stderr);
        assert!(output.stdout.is_empty(), "manage.py ran");
    };
    let nul = env_file(&scratch, "nul.env", b"A=1\nB=2\0C=3\nD=4\n");
    refused(
        &nul,
        format!(
            "t-app: {nul}:2: a NUL byte: systemd refuses such a file (the unit does not start), and so does the shim\n"
        ),
    );
    let latin1 = env_file(&scratch, "latin1.env", b"A=1\nNAME=caf\xe9\n");
    refused(
        &latin1,
        format!(
            "t-app: {latin1}:2: the value of `NAME` is not UTF-8 as systemd reads it (systemd refuses such a file too)\n"
        ),
    );
}

/// Root's shim leaves the account to the helper (NSS): an account that
/// does not exist stops it with 77 and nothing runs.
#[test]
fn an_account_that_does_not_exist_stops_the_shim() {
    let world = world(&[]);
    let config = world.read("djshim.toml") + "user = \"djshimt-ghost\"\n";
    world.write("djshim.toml", &config);
    assert_status(&world.djshim(&["generate"]), 0);
    let (output, _) = run(&world.path("bin/t-app"));
    assert_status(&output, 77);
    assert_eq!(
        text(&output).1,
        "t-app: the account djshimt-ghost does not exist\n"
    );
    assert!(output.stdout.is_empty(), "manage.py ran");
}

/// `generate --out DIR` with a relative DIR names the helper by its full
/// path: the shim runs from any directory (it ran only from the one
/// `generate` ran in).
#[test]
fn a_relative_out_directory_gives_shims_that_run_from_anywhere() {
    let scratch = World::new();
    let env = env_file(&scratch, "site.env", b"A=1\n");
    let world = world(&[&env]);
    let output = world.djshim(&["generate", "--out", "s1"]);
    assert_status(&output, 0);
    let shim = world.path("s1/t-app");
    let text_of_shim = fs::read_to_string(&shim).unwrap();
    let helper = world.path("s1/.djshim-t-exec");
    assert!(
        text_of_shim.contains(&format!("exec {helper} ")),
        "{text_of_shim}"
    );
    // `run` starts it from the tests' own directory, not the world's.
    assert_ne!(std::env::current_dir().unwrap(), world.path(""));
    let (output, report) = run(&shim);
    assert_status(&output, 0);
    assert_eq!(report.unwrap()["env"]["A"], "1");
}
