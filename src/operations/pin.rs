//! `djshim pin`: a package checked as the instance's account, then a new
//! generation and one switch; `--keep N` deletes old generations.

use camino::{Utf8Path, Utf8PathBuf};

use super::journal::JournalFile;
use super::plan::{Code, OnKill, Outcome, Plan, Planned, Step, Undo};
use super::{Journaled, Moved, Say, before_steps, execute, make_state_dir, open, unfinished};
use crate::error::Error;
use crate::model::Model;
use crate::profile::{Lock, current, profiled, resolve};

/// What a pin did.
#[derive(Debug)]
pub enum Pinned {
    Moved(Moved),
    /// The instance could not run the package: nothing changed.
    CannotRun {
        package: Utf8PathBuf,
        problems: Vec<crate::check::Problem>,
    },
}

/// `djshim pin INSTANCE PATH`: under the lock, the instance's state
/// directory made for the package when missing, the package checked (the
/// machine checks of `djshim check`, then Django's own, as the instance's
/// account), then a new generation and one switch. A run left unfinished
/// is not built on: it is reported, with the way on.
pub fn pin(model: &Model, name: &str, path: &Utf8Path, say: Say) -> Result<Pinned, Error> {
    let (mut world, _) = open(model, name, "pin", Journaled::Refuse, say)?;
    let profile = world.profile.clone();
    let package = resolve(path)?;
    let generations = profile.generations()?;
    let number = profile.next_number(&generations)?;
    let candidate = world.instance.generation(number, &package);
    make_state_dir(&candidate, "pin")?;
    let mut problems = crate::check::instance(&candidate);
    problems.retain(|p| !p.warning);
    if problems.is_empty() {
        problems.extend(crate::check::deep(model, &candidate)?);
    }
    if !problems.is_empty() {
        return Ok(Pinned::CannotRun { package, problems });
    }
    let old = current(&profile, &generations)?.cloned();
    if let Some(g) = old.as_ref().filter(|g| g.target == package) {
        return Ok(Pinned::Moved(Moved::Already {
            number: g.number,
            package,
        }));
    }
    let code = Code::Generation {
        number,
        package: package.clone(),
    };
    let mut steps = vec![Planned {
        step: Step::Create {
            number,
            package: package.clone(),
            targets: None,
            irreversible: Vec::new(),
        },
        undo: Undo::nothing(),
    }];
    // Its static files, collected with its code before the switch (a
    // generation of its own has its own; see `crate::collected`).
    if world.instance.generation_static(number, &package).is_some() {
        steps.extend(before_steps(world.instance, &code));
    }
    steps.push(Planned {
        step: Step::Switch { to: Some(number) },
        undo: Undo::Steps(vec![Step::Switch {
            to: old.as_ref().map(|g| g.number),
        }]),
    });
    let plan = Plan {
        operation: "pin".into(),
        instance: name.to_owned(),
        summary: format!("a pin of {name} to {package} (generation {number})"),
        on_kill: OnKill::Undo,
        steps,
    };
    match execute(plan, &mut world)? {
        Outcome::Done => Ok(Pinned::Moved(Moved::To {
            number,
            package,
            from: old.map(|g| (g.number, g.target)),
        })),
        Outcome::Undone(e) => Err(Error::Undone(Box::new(e))),
    }
}

/// `djshim pin --keep N`: deletes all but the newest `keep` generations
/// (and their static files), never one that runs, never while a run is unfinished (its journal may
/// name them). What was deleted, oldest first.
pub fn prune(model: &Model, name: &str, keep: usize) -> Result<Vec<(u32, Utf8PathBuf)>, Error> {
    let (instance, profile) = profiled(model, name)?;
    let _lock = Lock::take(&profile, &format!("pin {name} --keep {keep}"))?;
    if let Some(journal) = JournalFile::new(&profile).read()? {
        return Err(unfinished(&journal, &profile));
    }
    let generations = profile.generations()?;
    let running = profile.running(&generations)?;
    let cut = generations.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for g in generations[..cut]
        .iter()
        .filter(|g| !running.contains(&g.number))
    {
        profile.delete(g)?;
        // A package's own static files go with the package.
        if let Some(dir) = instance
            .generation_static(g.number, &g.target)
            .filter(|_| instance.static_in_package.is_none())
        {
            crate::collected::delete(&dir)?;
        }
        deleted.push((g.number, g.target.clone()));
    }
    Ok(deleted)
}
