//! `djshim nixos`: the instances as one NixOS module, from the same units
//! `djshim systemd` writes. On NixOS units come from the system's
//! configuration, not from files dropped into `/etc/systemd/system`; the
//! module declares each unit of each instance with NixOS's options
//! (`systemd.services.<name>.serviceConfig` …) holding exactly the lines of
//! the unit file, so that NixOS, which renders a list as one line per
//! element and a string as itself, writes the same unit. The shims come
//! with it as a package built by `djshim generate` in a derivation, from a
//! config with every value resolved (this machine's paths made absolute,
//! placeholders expanded), so the build needs nothing of this machine.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::Error;
use crate::model::{Instance, Model};
use crate::quote::toml_str;
use crate::render::Renderer;
use crate::units;

#[derive(Serialize)]
struct ModuleContext<'a> {
    project: &'a str,
    instances: Vec<&'a str>,
    /// The shims' config, resolved ([`resolved_config`]).
    config: String,
    units: Vec<NixUnit>,
    tmpfiles: Vec<String>,
    accounts: Vec<Account>,
    groups: BTreeSet<String>,
    /// Store paths the units and shims name: kept in the system's closure.
    store_paths: BTreeSet<String>,
}

/// One unit as NixOS options.
#[derive(Serialize)]
struct NixUnit {
    /// `services`, `sockets`, `timers` or `targets`.
    kind: &'static str,
    name: String,
    description: Option<String>,
    sections: Vec<NixSection>,
    wanted_by: Vec<String>,
}

#[derive(Serialize)]
struct NixSection {
    /// `unitConfig`, `serviceConfig`, `socketConfig`, `timerConfig`.
    option: &'static str,
    settings: Vec<NixSetting>,
}

/// A setting and its values in the unit's order: a list when the unit
/// has the key more than once.
#[derive(Serialize)]
struct NixSetting {
    key: String,
    values: Vec<String>,
    /// More than one value: a Nix list.
    list: bool,
}

#[derive(Serialize)]
struct Account {
    name: String,
    group: String,
    /// The build account builds in its home.
    home: Option<String>,
}

/// The module for `model`.
pub fn module(renderer: &Renderer, model: &Model) -> Result<String, Error> {
    let mut ctx = ModuleContext {
        project: &model.project,
        instances: model.instances.keys().map(String::as_str).collect(),
        config: resolved_config(model),
        units: Vec::new(),
        tmpfiles: Vec::new(),
        accounts: Vec::new(),
        groups: BTreeSet::new(),
        store_paths: store_paths(model),
    };
    for artifact in units::units_with(renderer, model, units::NIXOS_SERVICE_PATH)? {
        let text = String::from_utf8(artifact.bytes).expect("units are UTF-8");
        if camino::Utf8Path::new(&artifact.name).extension() == Some("conf") {
            ctx.tmpfiles.extend(
                text.lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        } else {
            ctx.units.push(nix_unit(&artifact.name, &text));
        }
    }
    // The accounts the instances and builds run as (root is NixOS's own).
    let build = model.build.as_ref().and_then(|b| b.user.as_ref());
    let users = model
        .instances
        .values()
        .filter_map(|i| Some((i.user.as_ref()?, i.group.as_ref(), false)))
        .chain(build.map(|user| (user, None, true)));
    for (user, group, builds) in users {
        if user == "root" || ctx.accounts.iter().any(|a| &a.name == user) {
            continue;
        }
        let group = group.unwrap_or(user).clone();
        ctx.groups.insert(group.clone());
        ctx.accounts.push(Account {
            name: user.clone(),
            group,
            home: builds.then(|| format!("/var/lib/{user}")),
        });
    }
    renderer.render("module.nix.j2", &ctx)
}

/// A unit file of ours as NixOS options: `[Unit]` `Description=` is
/// `description`, the rest of each section its `…Config` attribute set,
/// `[Install]` `WantedBy=` is `wantedBy`.
fn nix_unit(file: &str, text: &str) -> NixUnit {
    let (name, kind) = file.rsplit_once('.').expect("a unit's name has its type");
    let kind = match kind {
        "service" => "services",
        "socket" => "sockets",
        "timer" => "timers",
        "target" => "targets",
        other => unreachable!("djshim writes no .{other} unit"),
    };
    let mut unit = NixUnit {
        kind,
        name: name.to_owned(),
        description: None,
        sections: Vec::new(),
        wanted_by: Vec::new(),
    };
    let mut section = "";
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match name {
                "Unit" => "unitConfig",
                "Service" => "serviceConfig",
                "Socket" => "socketConfig",
                "Timer" => "timerConfig",
                "Install" => "install",
                other => unreachable!("djshim writes no [{other}] section"),
            };
            continue;
        }
        let (key, value) = line.split_once('=').expect("a unit line is KEY=VALUE");
        match (section, key) {
            ("unitConfig", "Description") => unit.description = Some(value.to_owned()),
            ("install", "WantedBy") => unit
                .wanted_by
                .extend(value.split_whitespace().map(str::to_owned)),
            ("install", other) => unreachable!("djshim writes no {other}= in [Install]"),
            (option, key) => {
                if unit.sections.last().is_none_or(|s| s.option != option) {
                    unit.sections.push(NixSection {
                        option,
                        settings: Vec::new(),
                    });
                }
                let settings = &mut unit.sections.last_mut().expect("pushed").settings;
                match settings.iter_mut().find(|s| s.key == key) {
                    Some(setting) => {
                        setting.values.push(value.to_owned());
                        setting.list = true;
                    }
                    None => settings.push(NixSetting {
                        key: key.to_owned(),
                        values: vec![value.to_owned()],
                        list: false,
                    }),
                }
            }
        }
    }
    unit
}

/// The `/nix/store/<hash>-<name>` paths the instances run: fixed packages,
/// interpreters, `pythonpath` and `path` entries.
fn store_paths(model: &Model) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for instance in model.instances.values() {
        let fixed = (!instance.profile).then_some(&instance.package);
        let paths = fixed
            .into_iter()
            .chain([&instance.python])
            .chain(&instance.pythonpath)
            .chain(&instance.path);
        for path in paths {
            let mut parts = path.as_str().splitn(5, '/');
            if let (Some(""), Some("nix"), Some("store"), Some(name)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                out.insert(format!("/nix/store/{name}"));
            }
        }
    }
    out
}

/// A djshim.toml that gives the same shims as `model`'s own config,
/// needing nothing but itself: paths absolute (`manage` relative to the
/// package, as the key is), placeholders expanded (and braces doubled, so
/// they stay text), defaults folded into each instance; only the keys the
/// shims are made from.
pub fn resolved_config(model: &Model) -> String {
    let mut out = String::new();
    let q = |s: &str| toml_str(&s.replace('{', "{{").replace('}', "}}"));
    let list = |items: &mut dyn Iterator<Item = &str>| {
        let items: Vec<String> = items.map(q).collect();
        format!("[{}]", items.join(", "))
    };
    let _ = writeln!(out, "project = {}", q(&model.project));
    let _ = writeln!(out, "profiles_dir = {}", q(model.profiles_dir.as_str()));
    for instance in model.instances.values() {
        let _ = writeln!(out, "\n[instances.{}]", toml_str(&instance.name));
        let mut key = |name: &str, value: String| {
            let _ = writeln!(out, "{name} = {value}");
        };
        if !instance.profile {
            key("package", q(instance.package.as_str()));
        }
        key("manage", q(manage(instance)));
        key("python", q(instance.python.as_str()));
        key("settings", q(&instance.settings));
        for (name, paths) in [
            ("pythonpath", &instance.pythonpath),
            ("path", &instance.path),
            ("static_dirs", &instance.static_dirs),
            ("env_file", &instance.env_files),
        ] {
            if !paths.is_empty() {
                key(name, list(&mut paths.iter().map(|p| p.as_str())));
            }
        }
        for (name, path) in [
            ("static_root", &instance.static_root),
            ("media_root", &instance.media_root),
            ("state_dir", &instance.state_dir),
        ] {
            if let Some(path) = path {
                key(name, q(path.as_str()));
            }
        }
        if !instance.env.is_empty() {
            let pairs: Vec<String> = instance
                .env
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), q(v)))
                .collect();
            key("env", format!("{{ {} }}", pairs.join(", ")));
        }
        for (name, value) in [("user", &instance.user), ("group", &instance.group)] {
            if let Some(value) = value {
                key(name, q(value));
            }
        }
        if !instance.confirm.is_empty() {
            key(
                "confirm",
                list(&mut instance.confirm.iter().map(String::as_str)),
            );
        }
    }
    out
}

/// manage.py relative to the package, as the `manage` key takes it.
fn manage(instance: &Instance) -> &str {
    instance
        .manage
        .strip_prefix(&instance.package)
        .map_or(instance.manage.as_str(), |rel| rel.as_str())
}
