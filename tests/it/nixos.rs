//! `djshim nixos`: the module, evaluated by a real Nix and rendered as NixOS
//! renders units (nixos/lib/systemd-lib.nix: a list is one line per
//! element, `true`/`false`, anything else `toString`), equals the unit
//! files `djshim systemd` writes for the same config, key by key; its shims
//! derivation builds with real Nix and gives the shims `generate` gives.
//!
//! nixpkgs cannot be fetched on these machines, so the module is called
//! with a stand-in for the three things of nixpkgs it uses: `lib.mkOption`
//! (the option's declaration, returned as is), `lib.mkIf` (applied at
//! once) and `pkgs.stdenv.hostPlatform.system`. Everything else is Nix.

use std::collections::BTreeMap;
use std::fs;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::profiles::{collect, nix_lock};
use crate::support::{World, assert_status, nix, root, text};

/// The module called as NixOS would call it, with the nixpkgs stand-in.
fn call(module: &Utf8Path, package: &str, attribute: &str) -> String {
    format!(
        "let\n  lib = {{ mkOption = o: o; mkIf = c: v: if c then v else {{ }}; \
         types = {{ package = \"package\"; bool = \"bool\"; }}; }};\n  \
         pkgs = {{ stdenv.hostPlatform.system = builtins.currentSystem; }};\n  \
         config = {{ djshim.mywebsite = {{ package = {package}; accounts = true; }}; }};\n  \
         m = import {module} {{ inherit config lib pkgs; }};\nin m.{attribute}\n"
    )
}

fn eval(expression: &str) -> Value {
    let output = nix("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expression])
        .output()
        .unwrap();
    assert_status(&output, 0);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Settings by section, then key, values in order: a unit file as systemd
/// reads ours (one setting a line, no continuation lines).
type Sections = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn unit_file(text: &str) -> Sections {
    let mut out = Sections::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        out.entry(section.clone())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    out
}

/// NixOS's rendering of one value of a `…Config` set.
fn nixos_values(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().flat_map(nixos_values).collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        other => panic!("NixOS cannot render {other} in a unit"),
    }
}

/// A unit of the evaluated module as NixOS writes it: `description` as
/// `Description=`, each `…Config` set as its section, `wantedBy` as the
/// `WantedBy=` that NixOS turns into `.wants` links.
fn nixos_unit(unit: &Value) -> Sections {
    let mut out = Sections::new();
    let sections = [
        ("unitConfig", "Unit"),
        ("serviceConfig", "Service"),
        ("socketConfig", "Socket"),
        ("timerConfig", "Timer"),
    ];
    for (option, value) in unit.as_object().unwrap() {
        match option.as_str() {
            "description" => {
                out.entry("Unit".into())
                    .or_default()
                    .insert("Description".into(), nixos_values(value));
            }
            "wantedBy" => {
                let names = nixos_values(value).join(" ");
                out.entry("Install".into())
                    .or_default()
                    .insert("WantedBy".into(), vec![names]);
            }
            option => {
                let (_, section) = sections
                    .iter()
                    .find(|(o, _)| *o == option)
                    .unwrap_or_else(|| panic!("unexpected option {option}"));
                let settings = out.entry((*section).into()).or_default();
                for (key, value) in value.as_object().unwrap() {
                    settings.insert(key.clone(), nixos_values(value));
                }
            }
        }
    }
    out
}

/// Every difference between the module's units and the unit files.
fn differences(systemd: &Value, units: &Utf8Path) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (kind, suffix) in [
        ("services", "service"),
        ("sockets", "socket"),
        ("timers", "timer"),
        ("targets", "target"),
    ] {
        let Some(declared) = systemd.get(kind).and_then(Value::as_object) else {
            continue;
        };
        for (name, unit) in declared {
            seen += 1;
            let file = units.join(format!("{name}.{suffix}"));
            let Ok(text) = fs::read_to_string(&file) else {
                wrong.push(format!("{file}: in the module only"));
                continue;
            };
            // The one intended difference: the module's units keep the
            // system's directories of NixOS after the instance's own.
            let text = text.replace(
                djshim::units::SERVICE_PATH,
                djshim::units::NIXOS_SERVICE_PATH,
            );
            let (ours, theirs) = (unit_file(&text), nixos_unit(unit));
            if ours != theirs {
                wrong.push(format!(
                    "{name}.{suffix}:\n  unit file: {ours:?}\n  module:    {theirs:?}"
                ));
            }
        }
    }
    let files = units
        .read_dir_utf8()
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().to_owned();
            !name.starts_with('.') && Utf8Path::new(&name).extension() != Some("conf")
        })
        .count();
    if files != seen {
        wrong.push(format!("{files} unit files, {seen} units in the module"));
    }
    wrong
}

/// The module and the units of `config`, written into `world`.
fn write_both(world: &World, config: &Utf8Path) -> Utf8PathBuf {
    let module = world.path("mywebsite.nix");
    for args in [
        vec!["-c", config.as_str(), "nixos", "--out", module.as_str()],
        vec!["-c", config.as_str(), "systemd", "--out", "units"],
    ] {
        assert_status(&world.djshim(&args), 0);
    }
    module
}

#[test]
fn the_modules_units_are_the_unit_files_key_by_key() {
    let world = World::new();
    let module = write_both(&world, &root().join("tests/fixtures/services.toml"));
    let systemd = eval(&call(&module, "\"/nonexistent\"", "config.systemd"));
    let wrong = differences(&systemd, &world.path("units"));
    assert!(wrong.is_empty(), "{wrong:#?}");
    // tmpfiles.d and the accounts.
    let tmpfiles: Vec<String> =
        fs::read_to_string(world.path("units/mywebsite-prod.tmpfiles.conf"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_owned)
            .collect();
    assert_eq!(systemd["tmpfiles"]["rules"], serde_json::json!(tmpfiles));
    let users = eval(&call(&module, "\"/nonexistent\"", "config.users"));
    assert_eq!(
        users["users"]["mywebsite-prod"],
        serde_json::json!({ "isSystemUser": true, "group": "mywebsite-prod" })
    );
    assert_eq!(users["groups"]["mywebsite-prod"], serde_json::json!({}));
    // The same bytes for the same config.
    let first = fs::read_to_string(&module).unwrap();
    assert_status(
        &world.djshim(&[
            "-c",
            root().join("tests/fixtures/services.toml").as_str(),
            "nixos",
            "--out",
            module.as_str(),
        ]),
        0,
    );
    assert_eq!(fs::read_to_string(&module).unwrap(), first);
    crate::support::golden("golden/nixos/mywebsite.nix", &first);
    // Every unit's PATH keeps the system's directories of NixOS (NixOS's
    // own PATH= is replaced by the unit's): in `Environment=` for a fixed
    // package, in the launcher for a profile.
    let system = format!(":{}", djshim::units::NIXOS_SERVICE_PATH);
    for (name, unit) in systemd["services"].as_object().unwrap() {
        let lines = nixos_unit(unit);
        let text = format!("{lines:?}");
        assert!(text.contains(&system), "{name}: no {system} in {text}");
    }

    // A deliberate drift is caught: one value changed in the module.
    fs::write(
        &module,
        first.replacen("\"Type\" = \"exec\";", "\"Type\" = \"simple\";", 1),
    )
    .unwrap();
    let drifted = eval(&call(&module, "\"/nonexistent\"", "config.systemd"));
    let wrong = differences(&drifted, &world.path("units"));
    assert_eq!(wrong.len(), 1, "{wrong:#?}");
    assert!(wrong[0].contains("\"Type\": [\"simple\"]"), "{wrong:#?}");
}

/// Values no Nix string may hold unescaped: `${…}`, quotes, backslashes,
/// newlines; the module stays valid Nix and each unit its file.
#[test]
fn hostile_values_are_escaped_for_nix() {
    let world = World::new();
    let config = world.write(
        "djshim.toml",
        "project = \"mywebsite\"\nunits_dir = \"units\"\n\
         [instances.prod]\npackage = \"/srv/site/${{pkgs.evil}}\"\npython = \"/usr/bin/python3\"\n\
         settings = \"mywebsite.settings\"\nuser = \"mywebsite-prod\"\nstate_dir = \"/var/lib/x/$${{y}}\"\n\
         env = { A = \"${{builtins.abort \\\"boom\\\"}}\", B = \"line\\nbreak \\\"q\\\" \\\\ ''${{z}}\", C = \"50% $HOME\" }\n\
         [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"${{x}}\", \"a b\", \"\\\"\"]\n",
    );
    let module = write_both(&world, &config);
    let systemd = eval(&call(&module, "\"/nonexistent\"", "config.systemd"));
    let wrong = differences(&systemd, &world.path("units"));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The module's shims package, built by real Nix with djshim as the
/// builder: the shims `djshim generate` writes from the original config
/// (the helper beside them), from a config resolved to absolute paths.
#[test]
fn the_modules_shims_build_with_nix_and_equal_generates() {
    let _nix = nix_lock();
    let world = World::new();
    world.release("pkg");
    let config = world.write(
        "djshim.toml",
        &format!(
            "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\n\
             [defaults]\npython = \"/usr/bin/python3\"\nsettings = \"mywebsite.settings.{{instance}}\"\n\
             state_dir = \"state/{{instance}}\"\nstatic_root = \"state/{{instance}}/static\"\n\
             env = {{ BRACES = \"{{{{literal}}}}\", DB = \"{{instance}}.sqlite3\" }}\n\
             [instances.staging]\npythonpath = [\".\", \"lib\"]\n\
             [instances.prod]\npackage = \"{pkg}\"\nuser = \"root\"\nenv_file = [\"secrets/prod.env\"]\n\
             confirm = [\"flush\"]\n",
            pkg = world.path("pkg"),
        ),
    );
    assert_status(&world.djshim(&["generate"]), 0);
    let module = world.path("mywebsite.nix");
    assert_status(&world.djshim(&["nixos", "--out", module.as_str()]), 0);
    let _ = config;

    // djshim as a package: bin/ with djshim and djshim-exec.
    let package = world.path("djshim-package");
    fs::create_dir_all(package.join("bin")).unwrap();
    let built = Utf8Path::new(env!("CARGO_BIN_EXE_djshim"))
        .parent()
        .unwrap();
    for program in ["djshim", "djshim-exec"] {
        fs::copy(built.join(program), package.join("bin").join(program)).unwrap();
    }
    let added = nix("nix-store")
        .arg("--add")
        .arg(&package)
        .output()
        .unwrap();
    assert_status(&added, 0);
    let store = text(&added).0.trim().to_owned();
    let expression = call(
        &module,
        &format!("builtins.storePath \"{store}\""),
        "config.environment.systemPackages",
    );
    let output = nix("nix-build")
        .arg("--out-link")
        .arg(world.path("result"))
        .args(["-E", &format!("builtins.head ({expression})")])
        .output()
        .unwrap();
    assert_status(&output, 0);
    let out = Utf8PathBuf::from(text(&output).0.trim());
    let mut names: Vec<String> = out
        .join("bin")
        .read_dir_utf8()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".djshim-mywebsite-exec",
            ".djshim-mywebsite.manifest",
            "mywebsite-prod",
            "mywebsite-staging"
        ]
    );
    for shim in ["mywebsite-prod", "mywebsite-staging"] {
        let ours = fs::read_to_string(world.path(&format!("bin/{shim}"))).unwrap();
        let nixs = fs::read_to_string(out.join("bin").join(shim)).unwrap();
        assert_eq!(
            nixs,
            ours.replace(world.path("bin").as_str(), out.join("bin").as_str()),
            "{shim}"
        );
    }
    // Unroot and collect what the test made: the output, then everything
    // that names the djshim package (the derivation, which has it as its
    // builder) and what the derivation names (the config file, the package).
    fs::remove_file(world.path("result")).unwrap();
    assert!(collect(&out));
    let query = |args: &[&str], path: &str| -> Vec<String> {
        let output = nix("nix-store").args(args).arg(path).output().unwrap();
        text(&output).0.lines().map(str::to_owned).collect()
    };
    let mut made = query(&["--query", "--referrers-closure"], &store);
    for drv in made.clone() {
        made.extend(query(&["--query", "--references"], &drv));
    }
    made.sort();
    made.dedup();
    let deleted = nix("nix-store")
        .arg("--delete")
        .args(&made)
        .output()
        .unwrap();
    assert_status(&deleted, 0);
}
