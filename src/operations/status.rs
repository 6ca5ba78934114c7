//! `djshim status`: what an engine (Ansible's facts, a rollout's checks)
//! and a person read of each instance, changing nothing and waiting for no
//! lock (it only tries one, to tell a run in flight from a killed one): the generation it runs, its package and that package's commit and
//! content hash, whether the generation's deploy ended healthy, a run
//! that has not ended, and the state systemd gives each of its units.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::Serialize;

use super::journal::{JournalFile, Record};
use crate::error::Error;
use crate::model::{Instance, Model};
use crate::process::Process;
use crate::profile::{Current, Profile};

/// How long `systemctl show` may take for one instance's units.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// One instance, as `status` reports it.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The instance's name in the config.
    pub instance: String,
    /// The generation its profile runs; none for a fixed `package`, a
    /// profile not deployed yet, or one that points elsewhere.
    pub generation: Option<u32>,
    /// The package it runs (symlinks resolved); none when there is none.
    pub package: Option<Utf8PathBuf>,
    /// The commit the package was built from, when built here.
    pub commit: Option<String>,
    /// `sha256:…` of the package's NAR serialization (see
    /// [`crate::content`]): equal on two hosts when they run the same
    /// bytes.
    pub content_hash: Option<String>,
    /// Whether the running generation's deploy ended healthy; none for a
    /// generation a pin made (or a fixed package).
    pub healthy: Option<bool>,
    /// A run that has not ended: its summary, and whether it holds the
    /// lock now (`running`) or was killed (the next `deploy` or `rollback`
    /// finishes or undoes it).
    pub unfinished: Option<Unfinished>,
    /// When the instance's deploy window ends, in seconds since the epoch,
    /// while one is open (`djshim window`, a deploy in flight).
    pub window_until: Option<u64>,
    /// What its server does in a deploy window (`[deploy] window`: `serve`,
    /// `stop`, `503`): an engine opens windows across hosts only where
    /// they hold.
    pub window: &'static str,
    /// Each unit the config makes for the instance, and systemd's
    /// `ActiveState` of it (`unknown` when systemd could not be asked).
    pub units: BTreeMap<String, String>,
}

/// A run of an instance that has not ended.
#[derive(Debug, Serialize)]
pub struct Unfinished {
    pub summary: String,
    pub running: bool,
}

/// The status of the instances `names` (all when empty), in the config's
/// order.
pub fn status(model: &Model, names: &[String]) -> Result<Vec<Status>, Error> {
    let instances: Vec<&Instance> = if names.is_empty() {
        model.instances.values().collect()
    } else {
        model.select(names)?
    };
    let commits = crate::release::commits(model);
    let mut hashes: BTreeMap<Utf8PathBuf, String> = BTreeMap::new();
    let mut out = Vec::new();
    for instance in instances {
        let mut status = Status {
            instance: instance.name.clone(),
            generation: None,
            package: instance.package.canonicalize_utf8().ok(),
            commit: None,
            content_hash: None,
            healthy: None,
            unfinished: None,
            window_until: None,
            window: instance.deploy.window.name(),
            units: units(instance),
        };
        if instance.profile {
            let profile = Profile::at(&instance.package);
            let generations = profile.generations()?;
            if let Current::Generation(n) = profile.current(&generations)? {
                status.generation = Some(n);
                status.healthy = Record::of(&profile, n)?.map(|r| r.healthy);
            }
            let flag = crate::layout::window(&profile.dir, &profile.name);
            status.window_until = super::window::until(&flag);
            status.unfinished = JournalFile::new(&profile)
                .read()?
                .map(|journal| Unfinished {
                    summary: journal.plan.summary,
                    running: crate::profile::Lock::try_take(
                        &profile,
                        &format!("status {}", instance.name),
                    )
                    .is_err(),
                });
        }
        if let Some(package) = &status.package {
            status.commit = crate::release::commit_of(&commits, package);
            // Instances that run one package hash it once.
            let hash = match hashes.entry(package.clone()) {
                Entry::Occupied(known) => known.get().clone(),
                Entry::Vacant(new) => new.insert(crate::content::hash(package)?).clone(),
            };
            status.content_hash = Some(hash);
        }
        out.push(status);
    }
    Ok(out)
}

/// The units the config makes for `instance` (none without a server,
/// services or jobs), each with systemd's `ActiveState`.
fn units(instance: &Instance) -> BTreeMap<String, String> {
    let full = &instance.full_name;
    let mut names = Vec::new();
    if let Some(server) = &instance.server {
        names.push(format!("{full}.service"));
        if server.socket.is_some() {
            names.push(format!("{full}.socket"));
        }
    }
    names.extend(
        instance
            .services
            .values()
            .map(|s| format!("{}.service", s.unit)),
    );
    names.extend(instance.jobs.values().map(|j| format!("{}.timer", j.unit)));
    if !names.is_empty() {
        names.push(format!("{full}.target"));
    }
    let states = active_states(&names);
    names
        .into_iter()
        .map(|name| {
            let state = states
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            (name, state)
        })
        .collect()
}

/// `systemctl show -p Id,ActiveState` of `names` in one call: a block of
/// two lines per unit. Empty when systemd cannot be asked (no systemctl,
/// not booted with systemd).
fn active_states(names: &[String]) -> BTreeMap<String, String> {
    if names.is_empty() {
        return BTreeMap::new();
    }
    let Ok(out) = Process::new("systemctl")
        .args(["show", "-p", "Id,ActiveState", "--"])
        .args(names)
        .timeout(SYSTEMCTL_TIMEOUT)
        .output()
    else {
        return BTreeMap::new();
    };
    let text = String::from_utf8_lossy(&out);
    let mut states = BTreeMap::new();
    for (name, block) in names.iter().zip(text.split("\n\n")) {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_owned)
        };
        // systemd names a unit by its Id, which can differ for an alias:
        // the blocks come in the order asked.
        if let Some(state) = field("ActiveState=") {
            states.insert(name.clone(), state);
        }
    }
    states
}
