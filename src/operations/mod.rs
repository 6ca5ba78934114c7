//! The release operations — `deploy`, `rollback`, `pin` — as plans for the
//! one loop of [`plan`]. Each comes in through [`open`]: the instance's
//! lock before anything is read, then what a killed run left (its step's
//! processes stopped, its journal finished or undone, never re-derived).
//! Then it asks its questions (the candidate, the deep check as the
//! instance's account, the migration record) and builds its plan, every
//! step with its undo, written out in its own file (`deploy.rs`,
//! `rollback.rs`, `pin.rs`), so "what does a deploy do and undo?" has one
//! answer to read; `executor.rs` says what each step does.
//!
//! The operations print their steps on stderr (the plan loop's progress);
//! what else they have to say goes to the front-end as a [`Notice`], and
//! what they did is their result.

mod deploy;
mod executor;
pub mod health;
mod hold;
pub mod journal;
mod pin;
pub mod plan;
mod rollback;
mod status;
pub mod window;

pub use deploy::{deploy, prepare};
use executor::Live;
pub use hold::{Held, hold};
pub use pin::{Pinned, pin, prune};
pub use rollback::{Back, rollback};
pub use status::status;

use camino::{Utf8Path, Utf8PathBuf};

use crate::django::{self, Migrations};
use crate::error::Error;
use crate::model::{Health, Instance, Model, Window};
use crate::profile::{Lock, Profile, profiled};
use crate::progress::timed;
use journal::JournalFile;
pub use journal::Record;
use plan::{Code, Journal, OnKill, Outcome, Planned, Probe, Step, Undo};

/// What an operation has to say while it runs, before its result; the
/// front-end words it (the plan's step lines, which say how far it is,
/// aside).
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    /// Processes that a killed run's step left running were killed.
    LeftProcesses(usize),
    /// A killed run's journal is finished, or undone, now.
    Recovering { summary: &'a str, undoing: bool },
    /// The package a deploy goes to.
    Candidate {
        instance: &'a str,
        package: &'a Utf8Path,
    },
    /// The candidate's new migrations, and whether a window keeps requests
    /// from the old code while they run.
    Migrations {
        migrations: &'a Migrations,
        window: Window,
        /// A generation serves now (else older code runs nowhere).
        serving: bool,
    },
    /// The server unit does not run: no old code serves in the window.
    NotServing { unit: &'a str, state: &'a str },
    /// The window closed after `seconds` open: requests waited (`wait`)
    /// or got 503 that long at most.
    Held {
        operation: &'a str,
        wait: bool,
        seconds: f64,
    },
}

/// A plan that has not ended: a run under way, or a killed run's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The generation it makes, if it makes one.
    pub making: Option<u32>,
    /// A run holds the instance's lock now (else it was killed).
    pub running: bool,
}

/// What instance `name` has in flight, read without waiting: its journal,
/// and whether a run holds its lock (the lock is let go at once).
pub fn in_flight(model: &Model, name: &str) -> Result<Option<InFlight>, Error> {
    let (_, profile) = profiled(model, name)?;
    let Some(journal) = JournalFile::new(&profile).read()? else {
        return Ok(None);
    };
    let making = journal.plan.steps.iter().find_map(|p| match p.step {
        Step::Create { number, .. } => Some(number),
        _ => None,
    });
    Ok(Some(InFlight {
        making,
        running: Lock::try_take(&profile, &format!("history {name}")).is_err(),
    }))
}

/// How an operation passes on its [`Notice`]s.
pub type Say = fn(Notice<'_>);

/// The package a deploy goes to: where it comes from, and the content
/// hash it must have (`sha256:…`, see [`crate::content`]) when the caller
/// knows what was built.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub source: Source<'a>,
    pub hash: Option<&'a str>,
}

/// Where the candidate package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
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

/// Makes the instance's `state_dir` when it is missing, as the units'
/// `StateDirectory=` (or tmpfiles line) would: owned by the instance's
/// account, mode 0750. The first deploy or pin on a fresh server comes
/// before any unit has started. Not undone: an empty directory the units
/// would make anyway.
pub fn make_state_dir(instance: &Instance, operation: &str) -> Result<(), Error> {
    let Some(dir) = instance.state_dir.as_ref().filter(|d| !d.exists()) else {
        return Ok(());
    };
    timed(
        &format!("{operation}: make the state directory {dir}"),
        || {
            crate::accounts::make_owned_dir(
                dir,
                instance.user.as_deref(),
                instance.group.as_deref(),
            )
        },
    )
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
    say: Say,
) -> Result<(Live<'m>, bool), Error> {
    let (instance, profile) = profiled(model, name)?;
    let lock = Lock::take(&profile, &format!("{operation} {name}"))?;
    let mut world = Live::new(model, operation, instance, &profile, lock, say)?;
    // A process of a killed run's migration committing after the undo
    // would leave the old code on a schema it does not know.
    let step = crate::layout::step_processes(&profile.dir, &profile.name);
    let left = crate::process::stop_left(&step)?;
    if left > 0 {
        say(Notice::LeftProcesses(left));
    }
    let recovered = match journaled {
        Journaled::Recover => recover(&mut world)?,
        Journaled::Refuse => match JournalFile::new(&profile).read()? {
            Some(journal) => return Err(unfinished(&journal, &profile)),
            None => false,
        },
    };
    // After the recovery, which may still be in a killed run's window.
    window::forget_ended(&crate::layout::window(&profile.dir, &profile.name))?;
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
    Error::with_help(
        format!(
            "{} was interrupted and is not finished or undone (its journal is {}); the database may \
         be half migrated",
            journal.plan.summary,
            JournalFile::new(profile).path()
        ),
        format!(
            "`djshim rollback {name}` {how}, `djshim deploy {name}` {how} \
         and deploys again"
        ),
    )
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
        return Err(not_undone(Error::with_help(
            format!("{e}"),
            format!(
                "make the instance whole by hand (`djshim history`, `manage.py \
             showmigrations`), then remove {}",
                store.path()
            ),
        )));
    }
    (world.say)(Notice::Recovering {
        summary: &journal.plan.summary,
        undoing: matches!(
            (&journal.state, journal.plan.on_kill),
            (plan::State::Undoing { .. }, _) | (_, OnKill::Undo)
        ),
    });
    match plan::recover(journal, world, &mut store).map_err(not_undone)? {
        Outcome::Done | Outcome::Undone(_) => Ok(true),
    }
}

/// Runs `plan` on the instance: its outcome, where a failure it could not
/// undo (or whose undo was stopped) is [`Error::NotUndone`] (exit 4).
fn execute(plan: plan::Plan, world: &mut Live<'_>) -> Result<Outcome, Error> {
    let mut store = JournalFile::new(&world.profile);
    plan::run(plan, world, &mut store).map_err(not_undone)
}

fn not_undone(e: Error) -> Error {
    match e {
        e @ Error::NotUndone(_) => e,
        e => Error::NotUndone(Box::new(e)),
    }
}

fn manage(args: &[String]) -> Step {
    Step::Manage {
        args: args.to_vec(),
        code: Code::Profile,
    }
}

/// Whether this host runs the `[deploy] shared` commands (the database's
/// migrations, what else every host of a fleet shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Here: a single host, or the one host of a rollout that migrates.
    Here,
    /// Another host of the rollout runs them (`--skip-shared`).
    Elsewhere,
}

impl Shared {
    /// The instance as this host runs it: with its `[deploy] shared`
    /// commands left out when another host runs them.
    pub(crate) fn apply(self, instance: &Instance) -> std::borrow::Cow<'_, Instance> {
        if self == Shared::Here {
            return std::borrow::Cow::Borrowed(instance);
        }
        let mut trimmed = instance.clone();
        let deploy = &mut trimmed.deploy;
        let shared = deploy.shared.clone();
        for list in [&mut deploy.before, &mut deploy.steps, &mut deploy.after] {
            list.retain(|argv| !shared.contains(&argv[0]));
        }
        std::borrow::Cow::Owned(trimmed)
    }
}

/// The deploy steps, with the code the profile points at.
fn manage_steps(instance: &Instance) -> Vec<Step> {
    instance.deploy.steps.iter().map(|a| manage(a)).collect()
}

/// A step that runs one of the instance's own commands (`restart`,
/// `start`, `stop`).
fn command_step(what: &str, argv: &[String]) -> Step {
    Step::Run {
        what: what.into(),
        argv: argv.to_vec(),
    }
}

/// The `before` steps of generation `code`: with its code, before
/// anything changes for the site (its static files into its own
/// directory); nothing of their own to undo.
fn before_steps(instance: &Instance, code: &Code) -> Vec<Planned> {
    instance
        .deploy
        .before
        .iter()
        .map(|args| Planned {
            step: Step::Manage {
                args: args.clone(),
                code: code.clone(),
            },
            undo: Undo::nothing(),
        })
        .collect()
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
    Err(Error::problem(format!(
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
