//! The release operations — `deploy`, `rollback`, `pin` — as plans for the
//! one loop of [`plan`]. Each operation takes the instance's lock before it
//! reads anything, finishes or undoes what a killed run left (from the
//! journal, never re-deriving it), asks its questions (the candidate, the
//! deep check as the instance's account, the migration record), then
//! builds its plan: every step with its undo, written out here, so "what
//! does a deploy do and undo?" has one answer to read.
//!
//! The operations print their steps on stderr and return what they did;
//! the front-end prints the result.

pub mod health;
pub mod plan;
pub mod state;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::django::{self, Migrations, Shims};
use crate::error::Error;
use crate::model::{Health, Instance, Model};
use crate::process::Process;
use crate::profile::{Current, Generation, Lock, Profile, current, profiled, resolve};
use crate::steps::step;
use plan::{Code, Journal, OnKill, Outcome, Plan, Planned, Probe, Step, Undo};
use state::JournalFile;
pub use state::Record;

/// How long one of the instance's own commands (restart, start, stop) may
/// take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the candidate package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Candidate<'a> {
    /// A fresh build of a ref (`None`: `[build]`'s ref).
    Build(Option<&'a str>),
    /// A package already on the machine.
    Path(&'a Utf8Path),
    /// Exactly the package another instance runs now.
    From(&'a str),
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The instance already ran the package: nothing was done.
    Already { number: u32, package: Utf8PathBuf },
    /// The instance moved from `from` (`None`: nothing) to generation
    /// `number`, which runs `package`.
    To {
        number: u32,
        package: Utf8PathBuf,
        from: Option<(u32, Utf8PathBuf)>,
    },
    /// A killed run was finished or undone, and that was all (`rollback`
    /// after an interrupted deploy): where the instance is now.
    Recovered { now: Option<(u32, Utf8PathBuf)> },
}

/// Deploys `candidate` to `name`.
pub fn deploy(
    model: &Model,
    name: &str,
    candidate: Candidate<'_>,
    allow_irreversible: bool,
) -> Result<Moved, Error> {
    let (mut world, _) = open(model, name, "deploy", Journaled::Recover)?;
    let (instance, profile) = (world.instance, world.profile.clone());
    let package = step("deploy: candidate", || candidate_package(model, candidate))?;
    eprintln!("djshim: candidate for {name}: {package}");
    let generations = profile.generations()?;
    let old = current(&profile, &generations)?.cloned();
    if let Some(g) = old.as_ref().filter(|g| g.target == package) {
        return Ok(Moved::Already {
            number: g.number,
            package,
        });
    }
    let candidate_instance = instance.rebased(&package);
    make_state_dir(&candidate_instance, "deploy")?;
    let shim = world.shims.shim(Some(&package))?;
    // One Django start answers both: the deep check, then the record.
    let migrations = step("deploy: check and record migrations", || {
        machine_check(&candidate_instance)?;
        django::deploy_questions(&candidate_instance, &shim)
    })?;
    if !migrations.unknown.is_empty() {
        return Err(Error::Problem(format!(
            "not switching {name} to {package}: its database has migrations this package does \
             not know ({}), applied by a newer release; its code would run on a schema it does \
             not know, and only the code that applied them can reverse them\n  = help: roll \
             back to a generation without them (`djshim rollback {name}`, or `--to N`: \
             `djshim history {name}`), which migrates back with the newer code, or deploy a \
             package that has them",
            migrations.unknown.join(", ")
        )));
    }
    report_migrations(&migrations, instance.deploy.window);
    let irreversible = migrations.irreversible();
    // A first deploy is never migrated back (see `deploy_plan`), so what
    // cannot be reversed does not stop it.
    if !allow_irreversible && old.is_some() && !irreversible.is_empty() {
        return Err(Error::Problem(format!(
            "not switching {name} to {package}: these migrations cannot be reversed, so a \
             failed deploy could not take the database back: {}\n  = help: give them a reverse \
             (RunPython's reverse_code, RunSQL's reverse_sql), or pass --allow-irreversible",
            irreversible.join(", ")
        )));
    }
    let number = profile.next_number(&generations)?;
    let plan = deploy_plan(instance, &package, number, old.as_ref(), &migrations);
    window::ready_for(&plan, instance)?;
    match plan::run(plan, &mut world, &mut JournalFile::new(&profile))? {
        Outcome::Done => Ok(Moved::To {
            number,
            package,
            from: old.map(|g| (g.number, g.target)),
        }),
        Outcome::Undone(failure) => {
            let back = match &old {
                Some(g) => format!("{name} is back on generation {}: {}", g.number, g.target),
                None => format!(
                    "{name} had no generation before, and runs none now; its database keeps \
                     what the first deploy's migrations made"
                ),
            };
            Err(Error::Problem(format!(
                "the deploy of {package} failed: {failure}\n  = {back}"
            )))
        }
    }
}

/// The plan of a deploy to generation `number` from `old`.
///
/// Forward: make the generation (its record says "not healthy" until the
/// last step), switch, the deploy steps, restart (a first deploy: start),
/// health, mark it healthy. Undone newest first: the migrations go back
/// with the candidate's code (it alone knows how to reverse them), then
/// the profile goes back and the old code's steps and restart run again.
///
/// A first deploy has no older code that needs the older schema: undoing
/// it stops what it started and removes the profile link (the instance
/// runs nothing, and the next deploy starts afresh), and leaves the
/// database as the candidate's migrations made it — migrating a fresh
/// database back through the initial migrations, often irreversible,
/// would gain nothing.
fn deploy_plan(
    instance: &Instance,
    package: &Utf8Path,
    number: u32,
    old: Option<&Generation>,
    migrations: &Migrations,
) -> Plan {
    let deploy = &instance.deploy;
    let name = &instance.name;
    let candidate = Code::Generation {
        number,
        package: package.to_owned(),
    };
    let mut steps = vec![Planned {
        step: Step::Create {
            number,
            package: package.to_owned(),
            targets: Some(migrations.targets.clone()),
            irreversible: migrations.irreversible(),
        },
        // Last of the undo: its migrations are reversed by then.
        undo: Undo::Steps(vec![Step::Reversed {
            numbers: vec![number],
            reversed: true,
        }]),
    }];
    let back = match old {
        Some(old) => {
            let mut back = vec![Step::Switch {
                to: Some(old.number),
            }];
            back.extend(manage_steps(instance));
            back.push(run("restart", &deploy.restart));
            back
        }
        None => vec![Step::Switch { to: None }],
    };
    // The window opens before the switch (the server's launcher holds
    // requests, or answers 503, from its restart on) and closes before the
    // restart that starts the new code; a first deploy has no old code
    // serving.
    let window = old.and_then(|_| window::steps(instance));
    // Undone, the migrations go back under a window opened afresh: the one
    // the deploy opened may have run out, and the launcher then serves.
    let reopen = window
        .as_ref()
        .map(|w| w.reopen.clone())
        .unwrap_or_default();
    let (open, close) = window.map(|w| (w.open, w.close)).unzip();
    steps.extend(open.into_iter().flatten());
    steps.push(Planned {
        step: Step::Switch { to: Some(number) },
        undo: Undo::Steps(back),
    });
    let irreversible = migrations.irreversible();
    for args in &deploy.steps {
        let undo = if args.first().map(String::as_str) != Some("migrate") || old.is_none() {
            Undo::nothing()
        } else if !irreversible.is_empty() {
            Undo::Impossible(format!(
                "the migrations {} cannot be reversed (the deploy was allowed with \
                 --allow-irreversible), so the database stays migrated and {name} stays on \
                 generation {number}\n  = help: deploy a fix forward (`djshim deploy {name}`), \
                 or restore the database from a backup and switch back by hand",
                irreversible.join(", ")
            ))
        } else if migrations.targets.is_empty() {
            Undo::nothing()
        } else {
            let mut back = reopen.clone();
            back.push(Step::MigrateBack {
                targets: migrations.targets.clone().into_iter().collect(),
                code: candidate.clone(),
            });
            Undo::Steps(back)
        };
        steps.push(Planned {
            step: manage(args),
            undo,
        });
    }
    steps.extend(close);
    if old.is_some() {
        steps.push(Planned {
            step: run("restart", &deploy.restart),
            undo: Undo::nothing(),
        });
    } else {
        steps.push(Planned {
            step: run("start", &deploy.start),
            undo: Undo::Steps(deploy.stop.iter().map(|argv| run("stop", argv)).collect()),
        });
    }
    steps.extend(health(instance));
    steps.extend(after_steps(instance));
    steps.push(Planned {
        step: Step::Healthy { number },
        undo: Undo::nothing(),
    });
    Plan {
        operation: "deploy".into(),
        instance: name.clone(),
        summary: format!("a deploy of {package} to {name} (generation {number})"),
        on_kill: OnKill::Undo,
        steps,
    }
}

/// What `rollback` is to do.
#[derive(Debug, Clone, Copy)]
pub enum Back {
    /// To the newest older generation that ran another package healthy.
    Previous,
    /// To generation N.
    To(u32),
}

/// `djshim rollback`: the way deploys came, backwards. An interrupted
/// run is finished or undone first, and when there was one, that is the
/// rollback. Else every generation after the target that a deploy made
/// has its migrations reversed, newest first, each with its own code;
/// then the switch, the steps, the restart and the health probe with the
/// target's code. Killed, a rollback goes on where it was.
pub fn rollback(model: &Model, name: &str, back: Back) -> Result<Moved, Error> {
    let (mut world, recovered) = open(model, name, "rollback", Journaled::Recover)?;
    let (instance, profile) = (world.instance, world.profile.clone());
    if recovered {
        let generations = profile.generations()?;
        let now = current(&profile, &generations)?.map(|g| (g.number, g.target.clone()));
        return Ok(Moved::Recovered { now });
    }
    let generations = profile.generations()?;
    let now = match profile.current(&generations)? {
        Current::Generation(n) => generations.iter().find(|g| g.number == n),
        Current::Elsewhere(target) if matches!(back, Back::Previous) => {
            return Err(elsewhere(instance, &profile, &generations, &target));
        }
        Current::None | Current::Elsewhere(_) => None,
    };
    if generations.is_empty() {
        return Err(Error::Problem(format!(
            "instance `{name}` has no generation yet\n  = help: deploy one with `djshim deploy \
             {name}`, or pin one with `djshim pin {name} PATH`"
        )));
    }
    let target = match back {
        Back::To(n) => generations.iter().find(|g| g.number == n).ok_or_else(|| {
            let known: Vec<String> = generations.iter().map(|g| g.number.to_string()).collect();
            Error::Problem(format!(
                "instance `{name}` has no generation {n}; it has {}",
                known.join(", ")
            ))
        })?,
        Back::Previous => {
            let Some(now) = now else {
                return Err(Error::Problem(format!(
                    "the profile {} is missing, so there is no generation before it\n  = help: \
                     switch to one with `djshim rollback {name} --to N`",
                    profile.link(),
                )));
            };
            previous(&profile, &generations, now)?.ok_or_else(|| {
                Error::Problem(format!(
                    "generation {} of instance `{name}` has no older generation with another \
                     package that ran healthy; there is nothing to roll back to",
                    now.number
                ))
            })?
        }
    };
    if let Some(now) = now.filter(|now| target.number > now.number) {
        return Err(Error::Problem(format!(
            "generation {} of instance `{name}` is newer than the one it runs ({}): a rollback \
             only goes back, and moving the profile forward would skip the migrations, the \
             steps, the restart and the health probe\n  = help: go forward with `djshim deploy \
             {name} --path {}`",
            target.number, now.number, target.target
        )));
    }
    if now.is_some_and(|c| c.number == target.number) {
        return Ok(Moved::Already {
            number: target.number,
            package: target.target.clone(),
        });
    }
    let checked = instance.rebased(&target.target);
    step("rollback: check", || {
        let shim = world.shims.shim(Some(&target.target))?;
        deep_check(&checked, &shim)
    })?;
    let plan = rollback_plan(instance, &profile, &generations, now, target)?;
    window::ready_for(&plan, instance)?;
    match plan::run(plan, &mut world, &mut JournalFile::new(&profile))? {
        Outcome::Done => Ok(Moved::To {
            number: target.number,
            package: target.target.clone(),
            from: now.map(|g| (g.number, g.target.clone())),
        }),
        Outcome::Undone(failure) => Err(Error::Problem(format!(
            "the rollback of {name} to generation {} failed: {failure}\n  = {name} is back where \
             it was{}",
            target.number,
            now.map(|g| format!(", on generation {}: {}", g.number, g.target))
                .unwrap_or_default()
        ))),
    }
}

/// The newest generation older than `now` that runs another package, was
/// not a failed deploy, and was not itself rolled back (its migrations
/// reversed): going "back" to one that a rollback undid would go forward
/// to code the instance left.
fn previous<'g>(
    profile: &Profile,
    generations: &'g [Generation],
    now: &Generation,
) -> Result<Option<&'g Generation>, Error> {
    for g in generations.iter().rev() {
        if g.number < now.number
            && g.target != now.target
            && Record::of(profile, g.number)?.is_none_or(|r| r.healthy && !r.reversed)
        {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

/// The plan of a rollback from `now` to `target`. Every generation
/// after the target up to the current one that a deploy made has its
/// migrations reversed, newest first, with its own code (a failed
/// deploy's too: they were reversed when it was undone, and migrating to
/// where the database is changes nothing; a pin records none). A
/// generation whose migrations cannot be reversed stops the rollback
/// before anything moves. Undone — when a later step fails — the
/// instance goes forward again the same way.
fn rollback_plan(
    instance: &Instance,
    profile: &Profile,
    generations: &[Generation],
    now: Option<&Generation>,
    target: &Generation,
) -> Result<Plan, Error> {
    let name = &instance.name;
    let deploy = &instance.deploy;
    let top = now.map_or(target.number, |g| g.number);
    let (mut steps, reversed, deployed) = reversals(instance, profile, generations, target, top)?;
    if !reversed.is_empty() {
        steps.push(Planned {
            step: Step::Reversed {
                numbers: reversed.clone(),
                reversed: true,
            },
            undo: Undo::Steps(vec![Step::Reversed {
                numbers: reversed,
                reversed: false,
            }]),
        });
    }
    // The window holds while the schema goes back under the code that
    // serves (the newer code, which may not run on the older schema).
    let migrates_back = steps
        .iter()
        .any(|p| matches!(p.step, Step::MigrateBack { .. }));
    let (open, close) = (migrates_back && now.is_some())
        .then(|| window::steps(instance))
        .flatten()
        .map(|w| (w.open, w.close))
        .unzip();
    if let Some(open) = open {
        steps.splice(0..0, open);
    }
    let mut forward = vec![Step::Switch {
        to: now.map(|g| g.number),
    }];
    if deployed {
        forward.extend(manage_steps(instance));
        forward.push(run("restart", &deploy.restart));
    }
    steps.push(Planned {
        step: Step::Switch {
            to: Some(target.number),
        },
        undo: Undo::Steps(forward),
    });
    // Generations that pins made alone are switched, nothing more, as a
    // pin is.
    if deployed {
        steps.extend(manage_steps(instance).into_iter().map(|step| Planned {
            step,
            undo: Undo::nothing(),
        }));
        steps.extend(close);
        steps.push(Planned {
            step: run("restart", &deploy.restart),
            undo: Undo::nothing(),
        });
        steps.extend(health(instance));
        steps.extend(after_steps(instance));
    }
    Ok(Plan {
        operation: "rollback".into(),
        instance: name.clone(),
        summary: format!(
            "a rollback of {name} to generation {}: {}",
            target.number, target.target
        ),
        on_kill: OnKill::Finish,
        steps,
    })
}

/// The migrations a rollback to `target` from generation `top` reverses:
/// one step per generation between that a deploy made and no rollback
/// reversed yet, newest first, each with its own code; the generations
/// they belong to; whether any generation between was a deploy's.
fn reversals(
    instance: &Instance,
    profile: &Profile,
    generations: &[Generation],
    target: &Generation,
    top: u32,
) -> Result<(Vec<Planned>, Vec<u32>, bool), Error> {
    let name = &instance.name;
    let mut steps = Vec::new();
    let mut deployed = false;
    // The generations whose migrations this rollback reverses.
    let mut reversed = Vec::new();
    for g in generations
        .iter()
        .rev()
        .filter(|g| g.number > target.number && g.number <= top)
    {
        let Some(record) = Record::of(profile, g.number)? else {
            continue;
        };
        deployed = true;
        if record.reversed {
            continue;
        }
        if !record.irreversible.is_empty() {
            return Err(Error::Problem(format!(
                "generation {} of instance `{name}` brought migrations that cannot be reversed \
                 ({}), so no rollback takes the database back past it\n  = help: deploy a fix \
                 forward (`djshim deploy {name}`), or restore the database from a backup made \
                 before generation {} and then `djshim pin {name}` the package that matches it",
                g.number,
                record.irreversible.join(", "),
                g.number
            )));
        }
        reversed.push(g.number);
        let code = Code::Generation {
            number: g.number,
            package: g.target.clone(),
        };
        if !record.targets.is_empty() {
            steps.push(Planned {
                step: Step::MigrateBack {
                    targets: record.targets.into_iter().collect(),
                    code: code.clone(),
                },
                undo: Undo::Steps(vec![Step::Manage {
                    args: vec!["migrate".into(), "--noinput".into()],
                    code,
                }]),
            });
        }
    }
    Ok((steps, reversed, deployed))
}

/// Makes the instance's `state_dir` when it is missing, as the units'
/// `StateDirectory=` (or tmpfiles line) would: owned by the instance's
/// account, mode 0750. The first deploy or pin on a fresh server comes
/// before any unit has started. Not undone: an empty directory the units
/// would make anyway.
pub fn make_state_dir(instance: &Instance, operation: &str) -> Result<(), Error> {
    let Some(dir) = instance.state_dir.as_ref().filter(|d| !d.exists()) else {
        return Ok(());
    };
    step(
        &format!("{operation}: make the state directory {dir}"),
        || {
            use std::os::unix::fs::PermissionsExt;
            let account = match &instance.user {
                Some(user) => Some(
                    nix::unistd::User::from_name(user)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            Error::Problem(format!(
                                "the account `{user}` does not exist\n  = help: create it first \
                             (`useradd --system {user}`)"
                            ))
                        })?,
                ),
                None => None,
            };
            let group = match (&instance.group, &account) {
                (Some(group), _) => Some(
                    nix::unistd::Group::from_name(group)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            Error::Problem(format!("the group `{group}` does not exist"))
                        })?
                        .gid
                        .as_raw(),
                ),
                (None, Some(account)) => Some(account.gid.as_raw()),
                (None, None) => None,
            };
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(|e| Error::io("chmod", dir, e))?;
            if let Some(account) = &account {
                std::os::unix::fs::chown(dir, Some(account.uid.as_raw()), group)
                    .map_err(|e| Error::io("chown", dir, e))?;
            }
            Ok(())
        },
    )
}

/// `pin`'s preparation: the state directory of instance `name` on
/// `package`, made when missing.
pub fn prepare(model: &Model, name: &str, package: &Utf8Path) -> Result<(), Error> {
    let (instance, _) = profiled(model, name)?;
    make_state_dir(&instance.rebased(package), "pin")
}

/// What would stop instance `name` from running `path`: the machine
/// checks of `djshim check`, then Django's own, as the instance's account.
/// Read-only, so `pin` asks it before it takes the lock.
pub fn problems(
    model: &Model,
    name: &str,
    path: &Utf8Path,
) -> Result<(Utf8PathBuf, Vec<crate::check::Problem>), Error> {
    let (instance, _) = profiled(model, name)?;
    let package = resolve(path)?;
    let candidate = instance.rebased(&package);
    let mut problems = crate::check::instance(&candidate);
    problems.retain(|p| !p.warning);
    if problems.is_empty() {
        problems.extend(django::deep_problems(model, &candidate)?);
    }
    Ok((package, problems))
}

/// `djshim pin INSTANCE PACKAGE` (a package [`problems`] found none in):
/// under the lock, a new generation and one switch. A run left unfinished
/// is not built on: it is reported, with the way on.
pub fn pin(model: &Model, name: &str, package: &Utf8Path) -> Result<Moved, Error> {
    let (mut world, _) = open(model, name, "pin", Journaled::Refuse)?;
    let profile = world.profile.clone();
    let package = package.to_owned();
    let generations = profile.generations()?;
    let old = current(&profile, &generations)?.cloned();
    if let Some(g) = old.as_ref().filter(|g| g.target == package) {
        return Ok(Moved::Already {
            number: g.number,
            package,
        });
    }
    let number = profile.next_number(&generations)?;
    let plan = Plan {
        operation: "pin".into(),
        instance: name.to_owned(),
        summary: format!("a pin of {name} to {package} (generation {number})"),
        on_kill: OnKill::Undo,
        steps: vec![
            Planned {
                step: Step::Create {
                    number,
                    package: package.clone(),
                    targets: None,
                    irreversible: Vec::new(),
                },
                undo: Undo::nothing(),
            },
            Planned {
                step: Step::Switch { to: Some(number) },
                undo: Undo::Steps(vec![Step::Switch {
                    to: old.as_ref().map(|g| g.number),
                }]),
            },
        ],
    };
    match plan::run(plan, &mut world, &mut JournalFile::new(&profile))? {
        Outcome::Done => Ok(Moved::To {
            number,
            package,
            from: old.map(|g| (g.number, g.target)),
        }),
        Outcome::Undone(e) => Err(e),
    }
}

/// What [`open`] does with a killed run's journal.
#[derive(Debug, Clone, Copy)]
enum Journaled {
    /// Finishes or undoes it (deploy, rollback).
    Recover,
    /// Refuses to build on it, and says which command goes on (pin).
    Refuse,
}

/// The one way into an instance's generations for deploy, rollback and
/// pin: its lock (waiting for a run in flight), then what a killed run
/// left: first the processes its step left running, then its journal.
/// The world it changes, holding the lock; true when a killed run's
/// journal was there and is now finished or undone.
fn open<'m>(
    model: &'m Model,
    name: &str,
    operation: &str,
    journaled: Journaled,
) -> Result<(Live<'m>, bool), Error> {
    let (instance, profile) = profiled(model, name)?;
    let lock = Lock::take(&profile, &format!("{operation} {name}"))?;
    let mut world = Live::new(model, instance, &profile, lock)?;
    // A process of a killed run's migration committing after the undo
    // would leave the old code on a schema it does not know.
    let step = crate::layout::step_processes(&profile.dir, &profile.name);
    let left = crate::process::stop_left(&step)?;
    if left > 0 {
        eprintln!(
            "djshim: a step of an interrupted run left {left} process{} running: killed",
            if left == 1 { "" } else { "es" }
        );
    }
    let recovered = match journaled {
        Journaled::Recover => recover(&mut world)?,
        Journaled::Refuse => match JournalFile::new(&profile).read()? {
            Some(journal) => return Err(unfinished(&journal, &profile)),
            None => false,
        },
    };
    Ok((world, recovered))
}

/// The error for a journal that a pin or `--keep` will not build on.
fn unfinished(journal: &Journal, profile: &Profile) -> Error {
    let name = &journal.plan.instance;
    if let plan::State::Stuck { .. } = journal.state {
        return plan::stuck(journal);
    }
    let how = match journal.plan.on_kill {
        OnKill::Undo => "undoes it",
        OnKill::Finish => "finishes it",
    };
    Error::Problem(format!(
        "{} was interrupted and is not finished or undone (its journal is {}); the database may \
         be half migrated\n  = help: `djshim rollback {name}` {how}, `djshim deploy {name}` {how} \
         and deploys again",
        journal.plan.summary,
        JournalFile::new(profile).path()
    ))
}

/// Finishes or undoes what a killed run left, as its journal says; true
/// when there was one. A journal that cannot go on by itself (a failed
/// undo, an undo that cannot be done) is an error every time, until the
/// operator has seen to it.
fn recover(world: &mut Live<'_>) -> Result<bool, Error> {
    let mut store = JournalFile::new(&world.profile);
    let Some(journal) = store.read()? else {
        return Ok(false);
    };
    if let plan::State::Stuck { .. } = journal.state {
        let e = plan::stuck(&journal);
        return Err(Error::Problem(format!(
            "{e}\n  = help: make the instance whole by hand (`djshim history`, `manage.py \
             showmigrations`), then remove {}",
            store.path()
        )));
    }
    let how = match (&journal.state, journal.plan.on_kill) {
        (plan::State::Undoing { .. }, _) | (_, OnKill::Undo) => "undoing it",
        (_, OnKill::Finish) => "finishing it",
    };
    eprintln!("djshim: {} was interrupted; {how}", journal.plan.summary);
    match plan::recover(journal, world, &mut store)? {
        Outcome::Done | Outcome::Undone(_) => Ok(true),
    }
}

/// The world a plan changes: the instance's profile, its shims, its
/// database and its processes.
struct Live<'m> {
    instance: &'m Instance,
    profile: Profile,
    shims: Shims,
    /// The plan is being undone.
    undoing: bool,
    /// The instance's lock, let go last (after the shims are removed, so
    /// that the next run's are never removed by this one).
    _lock: Lock,
}

impl<'m> Live<'m> {
    fn new(
        model: &Model,
        instance: &'m Instance,
        profile: &Profile,
        lock: Lock,
    ) -> Result<Live<'m>, Error> {
        Ok(Live {
            instance,
            profile: profile.clone(),
            undoing: false,
            _lock: lock,
            shims: Shims::new(
                model,
                instance,
                &crate::layout::shims(&profile.dir, &profile.name),
            )?,
        })
    }

    fn shim(&mut self, code: &Code) -> Result<Utf8PathBuf, Error> {
        match code {
            Code::Profile => self.shims.shim(None),
            Code::Generation { package, .. } => self.shims.shim(Some(package)),
        }
    }
}

impl Live<'_> {
    /// The instance's window file.
    fn window_file(&self) -> Utf8PathBuf {
        crate::layout::window(&self.profile.dir, &self.profile.name)
    }

    /// `process`, its process group kept in the instance's step file while
    /// it runs (see [`recover`]).
    fn tracked(&self, process: Process) -> Process {
        process.recorded(crate::layout::step_processes(
            &self.profile.dir,
            &self.profile.name,
        ))
    }

    /// `process` with the deploy window's deadline while one is open and
    /// the plan goes forward: past it the launcher serves again, so a step
    /// still changing the schema then is stopped, and the plan undone (the
    /// way back has no deadline: stopping it would leave the schema half
    /// way). Without a window, steps take as long as they take.
    fn bounded(&self, process: Process) -> Process {
        let process = self.tracked(process);
        if self.undoing {
            return process;
        }
        match window::deadline(&self.window_file()) {
            Some(deadline) => process.deadline(deadline),
            None => process,
        }
    }
}

impl plan::World for Live<'_> {
    fn undoing(&mut self, undoing: bool) {
        self.undoing = undoing;
    }

    fn run(&mut self, step: &Step) -> Result<(), Error> {
        match step {
            Step::Create {
                number,
                package,
                targets,
                irreversible,
            } => {
                let link = self.profile.dir.join(self.profile.generation_name(*number));
                if link.read_link_utf8().ok().as_deref() != Some(package.as_path()) {
                    let _ = std::fs::remove_file(&link);
                    self.profile.create(*number, package)?;
                }
                if let Some(targets) = targets {
                    Record {
                        targets: targets.clone(),
                        healthy: false,
                        irreversible: irreversible.clone(),
                        reversed: false,
                    }
                    .write(&self.profile, *number)?;
                }
                Ok(())
            }
            Step::Switch { to: Some(n) } => self.profile.switch(*n),
            Step::Switch { to: None } => self.profile.unlink(),
            Step::Manage { args, code } => {
                let shim = self.shim(code)?;
                self.bounded(Process::new(&shim))
                    .args(args)
                    .env("DJSHIM_CONFIRM", &self.instance.name)
                    .run()
            }
            Step::MigrateBack { targets, code } => {
                let shim = self.shim(code)?;
                let targets = serde_json::to_string(targets)
                    .map_err(|e| Error::Problem(format!("cannot write the targets: {e}")))?;
                // A JSON string literal of the JSON text is also a Python one.
                let literal = serde_json::to_string(&targets).unwrap_or_default();
                self.bounded(Process::new(&shim))
                    .args(["shell", "-c", &MIGRATE_BACK.replace("@TARGETS@", &literal)])
                    .env("DJSHIM_CONFIRM", &self.instance.name)
                    .run()
            }
            Step::Run { argv, .. } => self
                .tracked(Process::new(&argv[0]))
                .args(&argv[1..])
                .timeout(COMMAND_TIMEOUT)
                .run(),
            Step::Health { probe } => health::probe(probe),
            Step::Window { seconds, .. } => window::write(&self.window_file(), *seconds),
            Step::Held { unit, wait } => window::held(unit, &self.window_file(), *wait),
            Step::Healthy { number } => {
                let mut record = Record::of(&self.profile, *number)?.ok_or_else(|| {
                    Error::Problem(format!(
                        "{}: the deploy record of generation {number} is gone",
                        crate::layout::record(&self.profile.dir, &self.profile.name, *number)
                    ))
                })?;
                record.healthy = true;
                record.write(&self.profile, *number)
            }
            Step::Reversed { numbers, reversed } => {
                for number in numbers {
                    if let Some(mut record) = Record::of(&self.profile, *number)? {
                        record.reversed = *reversed;
                        record.write(&self.profile, *number)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `manage.py shell -c` code: `migrate APP TARGET` for each target in
/// turn, in one process.
const MIGRATE_BACK: &str = r#"
import json
from django.core.management import call_command
for app, target in json.loads(@TARGETS@):
    call_command("migrate", app, target or "zero", interactive=False)
"#;

fn manage(args: &[String]) -> Step {
    Step::Manage {
        args: args.to_vec(),
        code: Code::Profile,
    }
}

/// The deploy steps, with the code the profile points at.
fn manage_steps(instance: &Instance) -> Vec<Step> {
    instance.deploy.steps.iter().map(|a| manage(a)).collect()
}

fn run(what: &str, argv: &[String]) -> Step {
    Step::Run {
        what: what.into(),
        argv: argv.to_vec(),
    }
}

/// The steps once the new code serves (`after`): nothing of their own to
/// undo, and a failure undoes the plan.
fn after_steps(instance: &Instance) -> Vec<Planned> {
    instance
        .deploy
        .after
        .iter()
        .map(|args| Planned {
            step: manage(args),
            undo: Undo::nothing(),
        })
        .collect()
}

/// The health probe, if the instance has one.
fn health(instance: &Instance) -> Option<Planned> {
    let timeout = instance.deploy.health_timeout.as_secs();
    let probe = match instance.deploy.health.as_ref()? {
        Health::Url { host, port, path } => Probe::Url {
            host: host.clone(),
            port: *port,
            path: path.clone(),
            timeout,
        },
        Health::Command(argv) => Probe::Command {
            argv: argv.clone(),
            timeout,
        },
    };
    Some(Planned {
        step: Step::Health { probe },
        undo: Undo::nothing(),
    })
}

/// The package a candidate names. `--from OTHER` is read under OTHER's
/// lock, which must be free: promoting while OTHER's deploy, rollback or
/// pin runs would promote what may yet be undone (and waiting for it
/// could wait for ever on two promotions of each other).
fn candidate_package(model: &Model, candidate: Candidate<'_>) -> Result<Utf8PathBuf, Error> {
    match candidate {
        Candidate::Build(reference) => {
            crate::release::build(model, reference, &mut std::io::sink())
        }
        Candidate::Path(path) => resolve(path),
        Candidate::From(other) => {
            let other = model.select(&[other.to_owned()])?[0];
            if !other.profile {
                return other
                    .package
                    .canonicalize_utf8()
                    .map_err(|e| Error::io("resolve the package of", &other.package, e));
            }
            let profile = Profile::at(&other.package);
            let _lock = Lock::try_take(&profile, &format!("deploy --from {}", other.name))
                .map_err(|holder| {
                    Error::Problem(format!(
                        "instance `{0}` is busy: {holder} is under way, and what `{0}` runs \
                         may still change\n  = help: promote once it has ended",
                        other.name
                    ))
                })?;
            if let Some(journal) = JournalFile::new(&profile).read()? {
                return Err(Error::Problem(format!(
                    "instance `{}` runs no complete generation: {} did not end\n  = help: \
                     `djshim rollback {}` or `djshim deploy {}` first",
                    other.name, journal.plan.summary, other.name, other.name
                )));
            }
            let generations = profile.generations()?;
            let Some(g) = current(&profile, &generations)? else {
                return Err(Error::Problem(format!(
                    "instance `{}` runs no generation of its profile, so there is nothing to \
                     promote",
                    other.name
                )));
            };
            if Record::of(&profile, g.number)?.is_some_and(|r| !r.healthy) {
                return Err(Error::Problem(format!(
                    "generation {} of instance `{}` is a deploy that did not end healthy; it is \
                     not promoted",
                    g.number, other.name
                )));
            }
            resolve(&g.target)
        }
    }
}

/// The problems of `djshim check` with a candidate, but warnings; with
/// `import`, the import of its settings' parents too (a deploy leaves it
/// to Django's own questions, asked next in one process).
fn machine_problems(candidate: &Instance, import: bool) -> Vec<String> {
    let found = if import {
        crate::check::instance(candidate)
    } else {
        crate::check::machine(candidate)
    };
    found
        .into_iter()
        .filter(|p| !p.warning)
        .map(|p| p.to_string())
        .collect()
}

/// Ok, or why the candidate cannot run as its instance.
fn cannot_run(candidate: &Instance, problems: &[String]) -> Result<(), Error> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Problem(format!(
        "the candidate cannot run as {}:\n  {}",
        candidate.name,
        problems.join("\n  ")
    )))
}

/// The machine checks of a deploy's candidate.
fn machine_check(candidate: &Instance) -> Result<(), Error> {
    cannot_run(candidate, &machine_problems(candidate, false))
}

/// The deep check of a candidate: the machine checks of `djshim check`,
/// then what Django says of it as the instance's account.
fn deep_check(candidate: &Instance, shim: &Utf8Path) -> Result<(), Error> {
    let mut problems = machine_problems(candidate, true);
    if problems.is_empty() && django::is_django(candidate) {
        problems = django::problems(candidate, shim);
    }
    cannot_run(candidate, &problems)
}

/// The new migrations, summarised: their number, and each that cannot be
/// reversed by name (a first deploy of a large application brings
/// hundreds).
fn report_migrations(migrations: &Migrations, window: crate::model::Window) {
    let count = migrations.new.len();
    let mut apps: BTreeMap<&str, usize> = BTreeMap::new();
    for (app, _, _) in &migrations.new {
        *apps.entry(app).or_default() += 1;
    }
    match count {
        0 => eprintln!("djshim: the candidate brings no new migration"),
        1..=5 => {
            for (app, name, reversible) in &migrations.new {
                let how = if *reversible {
                    "reversible"
                } else {
                    "IRREVERSIBLE"
                };
                eprintln!("djshim: new migration {app}.{name}: {how}");
            }
        }
        _ => {
            let per_app: Vec<String> = apps.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let irreversible = migrations.irreversible();
            eprintln!(
                "djshim: the candidate brings {count} new migrations ({}); {} of them cannot \
                 be reversed",
                per_app.join(", "),
                irreversible.len()
            );
            for m in irreversible {
                eprintln!("djshim: new migration {m}: IRREVERSIBLE");
            }
        }
    }
    // Said before the switch: the old code keeps serving while the steps
    // migrate, until the restart — unless a window keeps it from requests.
    for (migration, why) in &migrations.breaking {
        if window == crate::model::Window::Serve {
            eprintln!(
                "djshim: warning: the code running now may fail against {migration} until the \
                 restart: {} (`[deploy] window = \"stop\"` or `\"503\"` keeps requests from it)",
                why.join("; ")
            );
        } else {
            eprintln!(
                "djshim: {migration} would break the code running now ({}): the window keeps \
                 requests from it",
                why.join("; ")
            );
        }
    }
}

/// A profile link that points at no generation: no "before" to go to.
fn elsewhere(
    instance: &Instance,
    profile: &Profile,
    generations: &[Generation],
    target: &Utf8Path,
) -> Error {
    let known: Vec<String> = generations.iter().map(|g| g.number.to_string()).collect();
    Error::Problem(format!(
        "the profile {} points at {target}, which is none of its generations ({}), \
         so there is no generation before it\n  = help: switch to one with \
         `djshim rollback {} --to N`",
        profile.link(),
        known.join(", "),
        instance.name
    ))
}

/// `djshim pin --keep N`: deletes all but the newest `keep` generations,
/// never one that runs, never while a run is unfinished (its journal may
/// name them). What was deleted, oldest first.
pub fn prune(model: &Model, name: &str, keep: usize) -> Result<Vec<(u32, Utf8PathBuf)>, Error> {
    let (_, profile) = profiled(model, name)?;
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
        deleted.push((g.number, g.target.clone()));
    }
    Ok(deleted)
}
