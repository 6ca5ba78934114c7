//! Docs that cannot drift: the man pages and completions committed under
//! man/ and completions/ are renders of the live clap definitions, and
//! djshim.toml(5) names every key a full config can hold.

use clap::CommandFactory;
use clap_complete::Shell;
use djshim::cli::Cli;
use toml::de::{DeTable, DeValue};

use crate::support::{golden, root};

fn render_man(cmd: clap::Command) -> String {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn man_pages_are_rendered_from_the_cli() {
    let cmd = Cli::command();
    golden("../man/djshim.1", &render_man(cmd.clone()));
    for sub in cmd.get_subcommands() {
        // clap takes `&'static str` names here (its `string` feature is off).
        let name: &'static str = Box::leak(format!("djshim-{}", sub.get_name()).into_boxed_str());
        let version: &'static str = Box::leak(cmd.get_version().unwrap_or_default().into());
        let page = sub.clone().name(name).version(version);
        golden(&format!("../man/{name}.1"), &render_man(page));
    }
}

#[test]
fn completions_are_rendered_from_the_cli() {
    for (shell, file) in [
        (Shell::Bash, "djshim.bash"),
        (Shell::Zsh, "_djshim"),
        (Shell::Fish, "djshim.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "djshim", &mut out);
        golden(
            &format!("../completions/{file}"),
            &String::from_utf8(out).unwrap(),
        );
    }
}

/// Every key of tests/fixtures/full.toml (which sets every key there is)
/// is described in man/djshim.toml.5.
#[test]
fn the_config_man_page_names_every_key() {
    let page = std::fs::read_to_string(root().join("man/djshim.toml.5")).unwrap();
    let full = std::fs::read_to_string(root().join("tests/fixtures/full.toml")).unwrap();
    let table = DeTable::parse(&full).unwrap();
    let mut keys = Vec::new();
    collect(table.get_ref(), "", &mut keys);
    assert!(keys.len() >= 20, "full.toml has only {keys:?}");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !page.contains(&format!("\\fB{k}\\fR")))
        .collect();
    assert!(
        missing.is_empty(),
        "djshim.toml.5 does not describe {missing:?}"
    );
}

/// Key names, skipping the names users choose (instances, variables, jobs,
/// extra systemd settings).
fn collect(table: &DeTable<'_>, parent: &str, keys: &mut Vec<String>) {
    for (key, value) in table {
        let key = key.get_ref().to_string();
        let user_named = matches!(
            parent,
            "instances" | "env" | "jobs" | "services" | "service"
        );
        if !user_named && !keys.contains(&key) {
            keys.push(key.clone());
        }
        if let DeValue::Table(t) = value.get_ref() {
            collect(t, if user_named { "" } else { &key }, keys);
        }
    }
}

/// `.ci/run` runs exactly the test command the README gives.
#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let command = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo fmt --check"))
        .expect("the README gives a test command");
    assert_eq!(ci.lines().last().map(str::trim), Some(command));
}

/// The README's worked example of an instance with workers is the fixture
/// the unit tests render (tests/fixtures/workers.toml, without its header).
#[test]
fn the_readme_workers_example_is_the_tested_fixture() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fixture = std::fs::read_to_string(root().join("tests/fixtures/workers.toml")).unwrap();
    let body: String = fixture
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(
        readme.contains(&format!("```toml\n{body}```")),
        "README's example differs from tests/fixtures/workers.toml"
    );
}
