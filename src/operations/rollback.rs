//! `djshim rollback`: the way deploys came, backwards — each generation's
//! migrations reversed with its own code, newest first, then the switch,
//! the target's steps, restart and health.

use camino::Utf8Path;

use super::journal::Record;
use super::plan::{Code, OnKill, Outcome, Plan, Planned, Step, Undo};
use super::{
    Journaled, Moved, Say, Shared, after_steps, before_steps, command_step, deep_check, execute,
    health, machine_check, manage_steps, open, window,
};
use crate::error::Error;
use crate::model::{Instance, Model};
use crate::profile::{Current, Generation, Profile, current, resolve};
use crate::progress::timed;

/// What `rollback` is to do.
#[derive(Debug, Clone, Copy)]
pub enum Back<'a> {
    /// To the newest older generation that ran another package healthy.
    Previous,
    /// To generation N.
    To(u32),
    /// To the newest generation, not newer than the current one, that runs
    /// this package: the same release has another number on each host of
    /// a fleet.
    Package(&'a Utf8Path),
}

/// `djshim rollback`: the way deploys came, backwards. An interrupted
/// run is finished or undone first, and when there was one, that is the
/// rollback. Else every generation after the target that a deploy made
/// has its migrations reversed, newest first, each with its own code;
/// then the switch, the steps, the restart and the health probe with the
/// target's code. Killed, a rollback goes on where it was.
pub fn rollback(
    model: &Model,
    name: &str,
    back: Back<'_>,
    shared: Shared,
    say: Say,
) -> Result<Moved, Error> {
    let (mut world, recovered) = open(model, name, "rollback", Journaled::Recover, say)?;
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
        return Err(Error::with_help(
            format!("instance `{name}` has no generation yet"),
            format!(
                "deploy one with `djshim deploy \
             {name}`, or pin one with `djshim pin {name} PATH`"
            ),
        ));
    }
    let target = target(name, &profile, &generations, now, back)?;
    if let Some(now) = now.filter(|now| target.number > now.number) {
        return Err(Error::with_help(
            format!(
                "generation {} of instance `{name}` is newer than the one it runs ({}): a rollback \
             only goes back, and moving the profile forward would skip the migrations, the \
             steps, the restart and the health probe",
                target.number, now.number
            ),
            format!(
                "go forward with `djshim deploy \
             {name} --path {}`",
                target.target
            ),
        ));
    }
    if now.is_some_and(|c| c.number == target.number) {
        return Ok(Moved::Already {
            number: target.number,
            package: target.target.clone(),
        });
    }
    let checked = instance.generation(target.number, &target.target);
    // A generation a deploy recorded healthy ran here already: the machine
    // checks (no Python start) are enough; Django's deep check is for code
    // that never ran (a pinned generation).
    if Record::of(&profile, target.number)?.is_some_and(|r| r.healthy) {
        timed(
            "rollback: check the machine (the target ran healthy)",
            || machine_check(&checked),
        )?;
    } else {
        timed("rollback: check", || {
            let shim = world.shims.generation(target.number, &target.target)?;
            deep_check(&checked, &shim)
        })?;
    }
    let plan = rollback_plan(&shared.apply(instance), &profile, &generations, now, target)?;
    window::ready_for(&plan, instance)?;
    match execute(plan, &mut world)? {
        Outcome::Done => Ok(Moved::To {
            number: target.number,
            package: target.target.clone(),
            from: now.map(|g| (g.number, g.target.clone())),
        }),
        Outcome::Undone(failure) => Err(Error::Undone(Box::new(Error::problem(format!(
            "the rollback of {name} to generation {} failed: {failure}\n  = {name} is back where \
             it was{}",
            target.number,
            now.map(|g| format!(", on generation {}: {}", g.number, g.target))
                .unwrap_or_default()
        ))))),
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
    // A window an engine opened (`djshim window open`, on every host of
    // a rollout) is renewed and closed after the restart, as a deploy's.
    let opened = window::until(&crate::layout::window(&profile.dir, &profile.name)).is_some();
    let (open, close) = ((migrates_back || opened) && now.is_some())
        .then(|| window::steps(instance))
        .flatten()
        .map(|w| {
            let open = if migrates_back {
                w.open
            } else {
                w.open
                    .into_iter()
                    .filter(|p| matches!(p.step, Step::Window { .. } | Step::Held { .. }))
                    .collect()
            };
            (open, w.close)
        })
        .unzip();
    if let Some(open) = open {
        steps.splice(0..0, open);
    }
    // A target whose static files were never collected in a directory of
    // its own (deployed before generations had one, or pinned before that)
    // collects them first, with its code, before anything changes; any
    // other's are where its deploy collected them, and the switch points
    // the site at them again.
    if instance
        .generation_static(target.number, &target.target)
        .is_some_and(|dir| !dir.is_dir())
    {
        let code = Code::Generation {
            number: target.number,
            package: target.target.clone(),
        };
        steps.splice(0..0, before_steps(instance, &code));
    }
    let mut forward = vec![Step::Switch {
        to: now.map(|g| g.number),
    }];
    if deployed {
        forward.extend(manage_steps(instance));
        forward.push(command_step("restart", &deploy.restart));
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
        steps.push(Planned {
            step: command_step("restart", &deploy.restart),
            undo: Undo::nothing(),
        });
    }
    // After the restart, as a deploy's (see there); without one (the
    // target was pinned, not deployed), the launcher that holds starts the
    // target's code once the window closes.
    steps.extend(close);
    if deployed {
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
            return Err(Error::with_help(
                format!(
                    "generation {} of instance `{name}` brought migrations that cannot be reversed \
                 ({}), so no rollback takes the database back past it",
                    g.number,
                    record.irreversible.join(", ")
                ),
                format!(
                    "deploy a fix \
                 forward (`djshim deploy {name}`), or restore the database from a backup made \
                 before generation {} and then `djshim pin {name}` the package that matches it",
                    g.number
                ),
            ));
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

/// The generation `back` names, given the one running now (`now`).
fn target<'g>(
    name: &str,
    profile: &Profile,
    generations: &'g [Generation],
    now: Option<&Generation>,
    back: Back<'_>,
) -> Result<&'g Generation, Error> {
    Ok(match back {
        Back::To(n) => generations.iter().find(|g| g.number == n).ok_or_else(|| {
            let known: Vec<String> = generations.iter().map(|g| g.number.to_string()).collect();
            Error::problem(format!(
                "instance `{name}` has no generation {n}; it has {}",
                known.join(", ")
            ))
        })?,
        Back::Package(path) => {
            let package = resolve(path)?;
            generations
                .iter()
                .rev()
                .filter(|g| now.is_none_or(|now| g.number <= now.number))
                .find(|g| g.target == package)
                .ok_or_else(|| {
                    Error::with_help(
                        format!(
                            "no generation of instance `{name}` up to the current one runs \
                             {package}"
                        ),
                        format!("`djshim history {name}` lists them; deploy it if it is new"),
                    )
                })?
        }
        Back::Previous => {
            let Some(now) = now else {
                return Err(Error::with_help(
                    format!(
                        "the profile {} is missing, so there is no generation before it",
                        profile.link()
                    ),
                    format!("switch to one with `djshim rollback {name} --to N`"),
                ));
            };
            previous(profile, generations, now)?.ok_or_else(|| {
                Error::problem(format!(
                    "generation {} of instance `{name}` has no older generation with another \
                     package that ran healthy; there is nothing to roll back to",
                    now.number
                ))
            })?
        }
    })
}

/// A profile link that points at no generation: no "before" to go to.
fn elsewhere(
    instance: &Instance,
    profile: &Profile,
    generations: &[Generation],
    target: &Utf8Path,
) -> Error {
    let known: Vec<String> = generations.iter().map(|g| g.number.to_string()).collect();
    Error::with_help(
        format!(
            "the profile {} points at {target}, which is none of its generations ({}), \
         so there is no generation before it",
            profile.link(),
            known.join(", ")
        ),
        format!(
            "switch to one with \
         `djshim rollback {} --to N`",
            instance.name
        ),
    )
}
