//! Docs that cannot drift: the man pages and completions committed under
//! man/ and completions/ are renders of the live clap definitions, and
//! djshim.toml(5) names every key a full config can hold.

use camino::{Utf8Path, Utf8PathBuf};
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
    let mut pages = std::collections::BTreeMap::new();
    pages.insert("djshim.1".to_owned(), render_man(cmd.clone()));
    for sub in cmd.get_subcommands() {
        // clap takes `&'static str` names here (its `string` feature is off).
        let name: &'static str = Box::leak(format!("djshim-{}", sub.get_name()).into_boxed_str());
        let version: &'static str = Box::leak(cmd.get_version().unwrap_or_default().into());
        let page = sub.clone().name(name).version(version);
        pages.insert(format!("{name}.1"), render_man(page));
    }
    // Every page of a command, and none of a command that is gone
    // (djshim.toml.5 is written by hand).
    crate::support::golden_dir("../man", |name| name.ends_with(".1"), &pages);
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
/// Every unit test runs: a binary whose tests `cargo test` skips (`test =
/// false`, to keep an empty run out of the log) holds none. The helper's
/// tests once went unrun for sessions this way.
#[test]
fn no_unit_test_is_in_a_target_whose_tests_are_skipped() {
    #[derive(serde::Deserialize)]
    struct Manifest {
        bin: Vec<Bin>,
    }
    #[derive(serde::Deserialize)]
    struct Bin {
        name: String,
        path: Option<String>,
        test: Option<bool>,
    }
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: Manifest = toml::from_str(&text).unwrap();
    for bin in manifest.bin.iter().filter(|b| b.test == Some(false)) {
        let path = bin.path.clone().unwrap_or_else(|| {
            if bin.name == "djshim" {
                "src/main.rs".to_owned()
            } else {
                format!("src/bin/{}.rs", bin.name)
            }
        });
        // The binary's own files: its main file, and its folder when it
        // has one under src/bin/.
        let main = root().join(&path);
        let mut files = vec![main.clone()];
        if main.parent().unwrap().parent() == Some(root().join("src/bin").as_path()) {
            files = main
                .parent()
                .unwrap()
                .read_dir_utf8()
                .unwrap()
                .map(|e| e.unwrap().path().to_owned())
                .collect();
        }
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            assert!(
                !source.contains("#[cfg(test)]"),
                "{file} has unit tests, but Cargo.toml says `test = false` for `{}`: they never run",
                bin.name
            );
        }
    }
}

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

/// The README's worked example of an instance with services is the fixture
/// the unit tests render (tests/fixtures/services.toml, without its header).
#[test]
fn the_readme_services_example_is_the_tested_fixture() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fixture = std::fs::read_to_string(root().join("tests/fixtures/services.toml")).unwrap();
    let body: String = fixture
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(
        readme.contains(&format!("```toml\n{body}```")),
        "README's example differs from tests/fixtures/services.toml"
    );
}

/// The source files of the library and binaries, with their text (line
/// comments dropped).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Utf8Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = Utf8PathBuf::from_path_buf(entry.unwrap().path()).unwrap();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension() == Some("rs") {
                let text: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                let rel = path.strip_prefix(root()).unwrap().to_string();
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("src"), &mut out);
    out.sort();
    out
}

/// The layers of src/, bottom up, each module (a file or folder under
/// src/) in one. STYLE.md's map with one difference: its "world" is two
/// layers here. The primitives (children, /proc, accounts, locks, file
/// names) sit below the pipeline, which uses some of them (model marks GC
/// roots, write takes locks); the adapters that speak to Django and run
/// the build account take the validated model's types, so they sit above
/// it.
const LAYERS: [(&str, &[&str]); 6] = [
    (
        "leaves",
        &[
            "error",
            "quote",
            "layout",
            "envfile",
            "envrule",
            "procs",
            "progress",
            "schedule",
            "interrupt",
        ],
    ),
    (
        "world primitives",
        &[
            "process",
            "lock",
            "gcroot",
            "accounts",
            "installation",
            "content",
        ],
    ),
    (
        "pipeline",
        &["config", "model", "render", "units", "nixos", "write"],
    ),
    ("world adapters", &["django", "build_account"]),
    (
        "operations",
        &[
            "archive",
            "check",
            "collected",
            "profile",
            "release",
            "operations",
        ],
    ),
    (
        "front-end",
        &["cli", "commands", "release_commands", "main", "lib"],
    ),
];

/// The modules of src/ that `text` names (`crate::NAME`, `crate::{A, B}`).
fn imports(text: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => return true,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        false
                    })
                    .map_or(group.len(), |(at, _)| at);
                let mut depth = 0;
                group[..end]
                    .split(|c| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        c == ',' && depth == 0
                    })
                    .collect()
            }
            None => vec![rest],
        };
        for name in names {
            let name: String = name
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Layer rule: every module is in a layer of [`LAYERS`], and imports only
/// modules of its own layer or a lower one (python3 ../shared/hooks/layers.py
/// checks that there are no circles within a layer).
#[test]
fn imports_go_down_the_layers() {
    let rank = |module: &str| LAYERS.iter().position(|(_, names)| names.contains(&module));
    let mut unplaced = std::collections::BTreeSet::new();
    let mut upward = Vec::new();
    for (path, text) in sources() {
        let Some(rel) = path.strip_prefix("src/") else {
            continue;
        };
        if rel.starts_with("bin/") {
            continue;
        }
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let Some(own) = rank(module) else {
            unplaced.insert(module.to_owned());
            continue;
        };
        for dep in imports(&text) {
            match rank(&dep) {
                None => {
                    unplaced.insert(dep);
                }
                Some(theirs) if theirs > own => upward.push(format!(
                    "{path} ({}) imports {dep} ({})",
                    LAYERS[own].0, LAYERS[theirs].0
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer of LAYERS: {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports going up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    assert_eq!(
        imports("use crate::operations::{self, X};\nuse crate::{cli::A, model::{B, C}, error};"),
        ["cli", "error", "model", "operations"]
            .map(String::from)
            .into()
    );
}

/// Layer rule: the front-end (`main.rs`, `cli.rs`, `commands.rs`,
/// `release_commands.rs`) is the only code that knows the CLI's types.
#[test]
fn no_cli_types_below_the_front_end() {
    let front = [
        "src/main.rs",
        "src/cli.rs",
        "src/commands.rs",
        "src/release_commands.rs",
    ];
    let below: Vec<String> = sources()
        .into_iter()
        .filter(|(path, _)| !front.contains(&path.as_str()))
        .filter(|(_, text)| text.contains("crate::cli") || text.contains("clap::"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        below.is_empty(),
        "CLI types below the front-end in {below:?}"
    );
}

/// Layer rule: every child process starts in src/process.rs (deadlines,
/// process groups, the command in every error), except the helper's own
/// (src/bin/djshim-exec/exec.rs: its final exec and its relay's account side).
#[test]
fn no_child_process_outside_the_process_module() {
    let allowed = ["src/process.rs", "src/bin/djshim-exec/exec.rs"];
    let spawners: Vec<String> = sources()
        .into_iter()
        .filter(|(path, _)| !allowed.contains(&path.as_str()))
        .filter(|(_, text)| text.contains("Command::new") || text.contains("process::Command"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        spawners.is_empty(),
        "child processes started in {spawners:?}"
    );
}
