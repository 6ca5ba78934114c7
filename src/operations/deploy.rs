//! `djshim deploy`: the candidate (built, given, or promoted from another
//! instance under its lock), its questions (its content hash when one is
//! named, the deep check and the migration record, in one Django start),
//! and the plan: new generation, window, switch, steps, restart, health,
//! healthy. `deploy --prepare` asks the same questions and stops there.

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::journal::{JournalFile, Record};
use super::plan::{Code, OnKill, Outcome, Plan, Planned, Step, Undo};
use super::{
    Candidate, Journaled, Moved, Notice, Say, Shared, Source, after_steps, before_steps,
    command_step, execute, health, machine_check, make_state_dir, manage, manage_steps, open,
    window,
};
use crate::django::{self, Migrations};
use crate::error::Error;
use crate::model::{Instance, Model};
use crate::profile::{Generation, Lock, Profile, current, profiled, resolve};
use crate::progress::timed;

/// What a deploy's questions found about a candidate, before any change.
enum Asked {
    /// The instance runs it already.
    Already { number: u32, package: Utf8PathBuf },
    /// It can be switched to, as generation `number` after `old`.
    New {
        package: Utf8PathBuf,
        number: u32,
        old: Option<Generation>,
        migrations: Migrations,
    },
}

/// Who asks a deploy's questions: the operation (`deploy`, `deploy
/// --prepare`) of an instance, and where its notices go.
struct Asker<'a> {
    model: &'a Model,
    instance: &'a Instance,
    profile: &'a Profile,
    operation: &'a str,
    say: Say,
}

/// The deploy's questions of `candidate`: the package (built, given or
/// promoted), its content hash when the candidate names one, the machine
/// checks and Django's (as the instance's account, through `shims`), the
/// migration record, and the refusals (migrations the package does not
/// know, irreversible ones without `allow_irreversible`). Changes nothing
/// but the instance's state directory, made when missing.
fn ask(
    asker: &Asker<'_>,
    shims: &mut django::Shims,
    candidate: Candidate<'_>,
    allow_irreversible: bool,
) -> Result<Asked, Error> {
    let Asker {
        model,
        instance,
        profile,
        operation,
        say,
    } = *asker;
    let name = &instance.name;
    let package = timed(&format!("{operation}: candidate"), || {
        candidate_package(model, candidate)
    })?;
    say(Notice::Candidate {
        instance: name,
        package: &package,
    });
    if let Some(wanted) = candidate.hash {
        let hash = timed(&format!("{operation}: content hash"), || {
            crate::content::hash(&package)
        })?;
        if hash != wanted {
            return Err(Error::with_help(
                format!(
                    "{package} is not the package that was built: its content hash is {hash}, \
                     not {wanted}"
                ),
                "bring it to this host again (`nix copy`, or the release archive), then deploy",
            ));
        }
    }
    let generations = profile.generations()?;
    let old = current(profile, &generations)?.cloned();
    if let Some(g) = old.as_ref().filter(|g| g.target == package) {
        return Ok(Asked::Already {
            number: g.number,
            package,
        });
    }
    let number = profile.next_number(&generations)?;
    let candidate_instance = instance.generation(number, &package);
    make_state_dir(&candidate_instance, operation)?;
    let shim = shims.generation(number, &package)?;
    // One Django start answers both: the deep check, then the record.
    let migrations = timed(&format!("{operation}: check and record migrations"), || {
        machine_check(&candidate_instance)?;
        django::deploy_questions(&candidate_instance, &shim)
    })?;
    if !migrations.unknown.is_empty() {
        return Err(Error::with_help(
            format!(
                "not switching {name} to {package}: its database has migrations this package does \
             not know ({}), applied by a newer release; its code would run on a schema it does \
             not know, and only the code that applied them can reverse them",
                migrations.unknown.join(", ")
            ),
            format!(
                "roll \
             back to a generation without them (`djshim rollback {name}`, or `--to N`: \
             `djshim history {name}`), which migrates back with the newer code, or deploy a \
             package that has them"
            ),
        ));
    }
    say(Notice::Migrations {
        migrations: &migrations,
        window: instance.deploy.window,
        serving: old.is_some(),
    });
    let irreversible = migrations.irreversible();
    // A first deploy is never migrated back (see `deploy_plan`), so what
    // cannot be reversed does not stop it.
    if !allow_irreversible && old.is_some() && !irreversible.is_empty() {
        return Err(Error::with_help(
            format!(
                "not switching {name} to {package}: these migrations cannot be reversed, so a \
             failed deploy could not take the database back: {}",
                irreversible.join(", ")
            ),
            "give them a reverse \
             (RunPython's reverse_code, RunSQL's reverse_sql), or pass --allow-irreversible",
        ));
    }
    Ok(Asked::New {
        package,
        number,
        old,
        migrations,
    })
}

/// Deploys `candidate` to `name`.
pub fn deploy(
    model: &Model,
    name: &str,
    candidate: Candidate<'_>,
    allow_irreversible: bool,
    shared: Shared,
    say: Say,
) -> Result<Moved, Error> {
    let (mut world, _) = open(model, name, "deploy", Journaled::Recover, say)?;
    let (instance, profile) = (world.instance, world.profile.clone());
    let questions = Asker {
        model,
        instance,
        profile: &profile,
        operation: "deploy",
        say,
    };
    let asked = ask(&questions, &mut world.shims, candidate, allow_irreversible)?;
    let (package, number, old, migrations) = match asked {
        Asked::Already { number, package } => return Ok(Moved::Already { number, package }),
        Asked::New {
            package,
            number,
            old,
            migrations,
        } => (package, number, old, migrations),
    };
    if shared == Shared::Elsewhere {
        refuse_unmigrated(instance, &package, &migrations)?;
    }
    let planned = shared.apply(instance);
    let plan = deploy_plan(&planned, &package, number, old.as_ref(), &migrations);
    window::ready_for(&plan, instance)?;
    match execute(plan, &mut world)? {
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
            Err(Error::Undone(Box::new(Error::problem(format!(
                "the deploy of {package} failed: {failure}\n  = {back}"
            )))))
        }
    }
}

/// A host that leaves `migrate` to another host of its rollout deploys
/// only onto a database that host has migrated: its new code would
/// otherwise serve a schema it does not know (a rollout's first host
/// deploys, and migrates, before the others).
fn refuse_unmigrated(
    instance: &Instance,
    package: &Utf8Path,
    migrations: &Migrations,
) -> Result<(), Error> {
    if migrations.new.is_empty() || !instance.deploy.shared.iter().any(|c| c == "migrate") {
        return Ok(());
    }
    let new: Vec<String> = migrations
        .new
        .iter()
        .map(|(app, n, _)| format!("{app}.{n}"))
        .collect();
    Err(Error::with_help(
        format!(
            "not switching {} to {package}: its database lacks the package's migrations ({}), \
             and --skip-shared leaves `migrate` to another host",
            instance.name,
            new.join(", ")
        ),
        "deploy the rollout's first host (without --skip-shared) first: it migrates the shared \
         database",
    ))
}

/// The plan of a deploy to generation `number` from `old`.
///
/// Forward: make the generation (its record says "not healthy" until the
/// last step), its `before` steps with its code, switch, the deploy steps, restart (a first deploy: start),
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
    // With the candidate's code, before anything changes for the site:
    // what does not change the schema (collectstatic, into the
    // generation's own static files) stays out of the window.
    steps.extend(before_steps(instance, &candidate));
    let back = match old {
        Some(old) => {
            let mut back = vec![Step::Switch {
                to: Some(old.number),
            }];
            back.extend(manage_steps(instance));
            back.push(command_step("restart", &deploy.restart));
            back
        }
        None => vec![Step::Switch { to: None }],
    };
    // The window opens before the switch (the server's launcher holds
    // requests, or answers 503, from its restart on) and closes after the
    // restart, which the launcher ends by starting the new code; a first
    // deploy has no old code serving.
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
    if old.is_some() {
        steps.push(Planned {
            step: command_step("restart", &deploy.restart),
            undo: Undo::nothing(),
        });
    } else {
        steps.push(Planned {
            step: command_step("start", &deploy.start),
            undo: Undo::Steps(
                deploy
                    .stop
                    .iter()
                    .map(|argv| command_step("stop", argv))
                    .collect(),
            ),
        });
    }
    // Closed once the restart has started the launcher anew (in the
    // window still): its one start of the new code is the window's end.
    // Closed before it, the old launcher would start the new code and the
    // restart stop it mid-start (a gunicorn stopped while it boots its
    // workers once held the restart for systemd's 90 s stop timeout).
    steps.extend(close);
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

/// The package a candidate names. `--from OTHER` is read under OTHER's
/// lock, which must be free: promoting while OTHER's deploy, rollback or
/// pin runs would promote what may yet be undone (and waiting for it
/// could wait for ever on two promotions of each other).
fn candidate_package(model: &Model, candidate: Candidate<'_>) -> Result<Utf8PathBuf, Error> {
    match candidate.source {
        Source::Build(reference) => crate::release::build(model, reference, &mut std::io::sink()),
        Source::Path(path) => resolve(path),
        Source::From(other) => {
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
                    Error::with_help(
                        format!(
                            "instance `{}` is busy: {holder} is under way, and what `{}` runs \
                             may still change",
                            other.name, other.name
                        ),
                        "promote once it has ended",
                    )
                })?;
            if let Some(journal) = JournalFile::new(&profile).read()? {
                return Err(Error::with_help(
                    format!(
                        "instance `{}` runs no complete generation: {} did not end",
                        other.name, journal.plan.summary
                    ),
                    format!(
                        "`djshim rollback {}` or `djshim deploy {}` first",
                        other.name, other.name
                    ),
                ));
            }
            let generations = profile.generations()?;
            let Some(g) = current(&profile, &generations)? else {
                return Err(Error::problem(format!(
                    "instance `{}` runs no generation of its profile, so there is nothing to \
                     promote",
                    other.name
                )));
            };
            if Record::of(&profile, g.number)?.is_some_and(|r| !r.healthy) {
                return Err(Error::problem(format!(
                    "generation {} of instance `{}` is a deploy that did not end healthy; it is \
                     not promoted",
                    g.number, other.name
                )));
            }
            resolve(&g.target)
        }
    }
}

/// What `deploy --prepare` found: the candidate can be deployed now.
#[derive(Debug, Serialize)]
pub struct Prepared {
    pub instance: String,
    pub package: Utf8PathBuf,
    /// See [`crate::content`].
    pub content_hash: String,
    /// The instance runs it already: a deploy would change nothing.
    pub already: bool,
    /// With `already`: the deploy that put it there applied migrations
    /// (and they were not reversed since). In a rollout run again after
    /// it was cut short, the first host says so, and the hosts not
    /// switched yet run code older than the schema: they are held again.
    pub migrated: bool,
    /// The candidate's new migrations (`app.name`), and those of them that
    /// cannot be reversed.
    pub new_migrations: Vec<String>,
    pub irreversible: Vec<String>,
}

/// `djshim deploy --prepare`: a deploy's questions and refusals (the
/// candidate here and, with a hash, the same bytes; the deep check as the
/// instance's account; the migration record), without the instance's lock
/// and changing nothing but its state directory, made when missing. A run
/// of the instance that did not end is not prepared for.
pub fn prepare(
    model: &Model,
    name: &str,
    candidate: Candidate<'_>,
    allow_irreversible: bool,
    say: Say,
) -> Result<Prepared, Error> {
    let (instance, profile) = profiled(model, name)?;
    if let Some(journal) = JournalFile::new(&profile).read()? {
        return Err(Error::with_help(
            format!(
                "instance `{name}` is not ready: {} did not end",
                journal.plan.summary
            ),
            format!("`djshim deploy {name}` or `djshim rollback {name}` finishes or undoes it"),
        ));
    }
    let (_tmp, mut shims) = django::Shims::temporary(model, instance)?;
    let operation = "deploy --prepare";
    let questions = Asker {
        model,
        instance,
        profile: &profile,
        operation,
        say,
    };
    let asked = ask(&questions, &mut shims, candidate, allow_irreversible)?;
    let (package, already, migrations) = match asked {
        Asked::Already { number, package } => {
            let record = Record::of(&profile, number)?;
            let migrated = record.is_some_and(|r| !r.targets.is_empty() && !r.reversed);
            (package, Some(migrated), None)
        }
        Asked::New {
            package,
            migrations,
            ..
        } => (package, None, Some(migrations)),
    };
    // A hash the candidate named was checked by the questions already.
    let content_hash = match candidate.hash {
        Some(hash) => hash.to_owned(),
        None => timed(&format!("{operation}: content hash"), || {
            crate::content::hash(&package)
        })?,
    };
    Ok(Prepared {
        instance: name.to_owned(),
        package,
        content_hash,
        already: already.is_some(),
        migrated: already == Some(true),
        new_migrations: migrations
            .as_ref()
            .map(|m| {
                m.new
                    .iter()
                    .map(|(app, n, _)| format!("{app}.{n}"))
                    .collect()
            })
            .unwrap_or_default(),
        irreversible: migrations
            .as_ref()
            .map(Migrations::irreversible)
            .unwrap_or_default(),
    })
}
