//! Every generated shim: its text pinned by a golden file, linted by
//! shellcheck, parsed by dash and `bash --posix`.

use std::process::Command;

use camino::Utf8PathBuf;

use crate::support::{World, assert_status, require, root, text};

/// The fixture configs whose shims are pinned, by name.
pub fn fixtures() -> Vec<(&'static str, Utf8PathBuf)> {
    vec![
        ("mywebsite", root().join("examples/mywebsite/djshim.toml")),
        ("hostile", root().join("tests/fixtures/hostile.toml")),
        ("profile", root().join("tests/fixtures/profile.toml")),
        ("accounts", root().join("tests/fixtures/accounts.toml")),
    ]
}

/// Generates every fixture into a world; returns (fixture, shim path) pairs.
pub fn generated(world: &World) -> Vec<(&'static str, Utf8PathBuf)> {
    let mut shims = Vec::new();
    for (name, config) in fixtures() {
        let out = world.path(name);
        assert_status(
            &world.djshim(&["-c", config.as_str(), "generate", "--out", out.as_str()]),
            0,
        );
        for entry in out.read_dir_utf8().unwrap() {
            let entry = entry.unwrap();
            if !entry.file_name().starts_with('.') {
                shims.push((name, entry.path().to_owned()));
            }
        }
    }
    shims.sort();
    assert!(shims.len() >= 4);
    shims
}

#[test]
fn shims_match_their_golden_files() {
    let world = World::new();
    let mut dirs: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        std::collections::BTreeMap::new();
    for (fixture, shim) in generated(&world) {
        let name = shim.file_name().unwrap();
        // The helper's path names the temporary output directory.
        let out = world.path(fixture);
        dirs.entry(fixture.to_owned()).or_default().insert(
            name.to_owned(),
            std::fs::read_to_string(&shim)
                .unwrap()
                .replace(out.as_str(), "@OUT@"),
        );
    }
    for (fixture, files) in &dirs {
        crate::support::golden_dir(&format!("golden/{fixture}"), |_| true, files);
    }
}

#[test]
fn shims_pass_shellcheck_with_every_optional_check() {
    let shellcheck = require("shellcheck", "shellcheck");
    let world = World::new();
    for (_, shim) in generated(&world) {
        let output = Command::new(&shellcheck)
            .args([
                "--shell=sh",
                "--enable=all",
                "--severity=style",
                shim.as_str(),
            ])
            .output()
            .unwrap();
        let (out, err) = text(&output);
        assert!(
            output.status.success() && out.is_empty(),
            "{shim}:\n{out}{err}"
        );
    }
}

#[test]
fn shims_parse_under_dash_and_bash_posix() {
    let dash = require("dash", "dash");
    let bash = require("bash", "bash");
    let world = World::new();
    for (_, shim) in generated(&world) {
        for (shell, args) in [(&dash, &["-n"][..]), (&bash, &["--posix", "-n"])] {
            let output = Command::new(shell)
                .args(args)
                .arg(shim.as_str())
                .output()
                .unwrap();
            let (out, err) = text(&output);
            assert!(
                output.status.success() && out.is_empty() && err.is_empty(),
                "{shell:?} {shim}:\n{err}"
            );
        }
    }
}

#[test]
fn show_prints_what_generate_writes() {
    let world = World::new();
    let config = root().join("examples/mywebsite/djshim.toml");
    assert_status(
        &world.djshim(&["-c", config.as_str(), "generate", "--out", "bin"]),
        0,
    );
    for instance in ["staging", "prod"] {
        let output = world.djshim(&["-c", config.as_str(), "show", instance]);
        assert_status(&output, 0);
        assert_eq!(
            output.stdout,
            std::fs::read(world.path(&format!("bin/mywebsite-{instance}"))).unwrap()
        );
    }
}
