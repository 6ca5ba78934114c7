//! The release engine: a plan is a list of steps that change the instance,
//! each with its undo, and [`run`] is the one loop that runs any plan —
//! a deploy, a rollback, a pin, or the recovery of one of them that was
//! killed. What a step *does* is one `match` in [`Step`]'s executor (the
//! [`World`] the caller gives); what a plan *undoes* is written in the plan
//! itself, so the journal holds everything a later run needs: nothing is
//! re-derived from the state a killed run left behind.
//!
//! The loop writes the journal (fsync'd) before and after every step. When
//! a step fails, the completed steps are undone newest first; a step whose
//! undo is known to be impossible stops the undo there, says what state is
//! left, and keeps the journal. The questions asked before a plan (the
//! candidate, the deep check, the migration record) change nothing and are
//! not part of it.

use std::collections::BTreeMap;
use std::fmt;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::progress::timed;

/// The version of the journal's format; a journal of another version is
/// refused, never guessed at.
pub const JOURNAL_VERSION: u32 = 1;

/// Whose code a manage.py command runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Code {
    /// Whatever the profile points at when the step runs.
    Profile,
    /// Generation `number`'s package (a shim on it).
    Generation { number: u32, package: Utf8PathBuf },
}

/// How a deploy decides that the instance serves: a URL that answers 2xx,
/// or a command that succeeds, within `timeout` seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Probe {
    Url {
        host: String,
        port: u16,
        path: String,
        timeout: u64,
    },
    Command {
        argv: Vec<String>,
        timeout: u64,
    },
}

/// One change to an instance. Every step is idempotent, so a step that
/// was killed half-way can be run (or undone) again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Makes generation `number` point at `package`, with a deploy record
    /// that says it is not (yet) healthy when `targets` is given (the
    /// migration state before it, and its migrations that cannot be
    /// reversed).
    Create {
        number: u32,
        package: Utf8PathBuf,
        targets: Option<BTreeMap<String, Option<String>>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        irreversible: Vec<String>,
    },
    /// Points the profile at generation `to`; `None` removes the profile
    /// link (the undo of a first deploy: the instance runs nothing).
    Switch { to: Option<u32> },
    /// `manage.py ARGS` through a shim of the instance.
    Manage { args: Vec<String>, code: Code },
    /// Every app of `targets` migrated back to its migration (`None`:
    /// `zero`), in that order, with `code`: one `migrate` per app, all in
    /// one process (one Django start for the whole way back).
    MigrateBack {
        targets: Vec<(String, Option<String>)>,
        code: Code,
    },
    /// One of the instance's commands (`restart`, `start`, `stop`).
    Run { what: String, argv: Vec<String> },
    /// Probes until healthy or the probe's deadline.
    Health { probe: Probe },
    /// Marks generation `number`'s deploy record healthy.
    Healthy { number: u32 },
    /// Marks the deploy records of `numbers` as reversed (set `false`:
    /// applied again).
    Reversed { numbers: Vec<u32>, reversed: bool },
    /// Opens the server's deploy window for at most `seconds` (`wait`:
    /// requests wait; else they get 503), or closes it (`seconds` 0).
    Window { seconds: u64, wait: bool },
    /// Proves that the server's launcher (of `unit`) holds requests the way
    /// `wait` says, after the window's restart: never trusted, checked.
    Held { unit: String, wait: bool },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create {
                number, package, ..
            } => write!(f, "new generation {number}: {package}"),
            Step::Switch { to: Some(n) } => write!(f, "switch to generation {n}"),
            Step::Switch { to: None } => write!(f, "remove the profile link"),
            Step::Manage { args, code } => write!(f, "manage.py {}{code}", args.join(" ")),
            Step::MigrateBack { targets, code } => {
                let each: Vec<String> = targets
                    .iter()
                    .map(|(app, target)| format!("{app} {}", target.as_deref().unwrap_or("zero")))
                    .collect();
                write!(f, "migrate {}{code}", each.join(", "))
            }
            Step::Run { what, argv } => write!(f, "{what}: {}", argv.join(" ")),
            Step::Health { .. } => write!(f, "health"),
            Step::Healthy { number } => write!(f, "record generation {number} as healthy"),
            Step::Window { seconds: 0, .. } => write!(f, "close the window"),
            Step::Window { seconds, wait } => {
                let how = if *wait {
                    "requests wait"
                } else {
                    "requests get 503"
                };
                write!(f, "open the window: {how} (at most {seconds} s)")
            }
            Step::Held { unit, wait } => {
                let how = if *wait {
                    "holds requests"
                } else {
                    "answers 503"
                };
                write!(f, "check that {unit} {how}")
            }
            Step::Reversed { numbers, reversed } => {
                let numbers: Vec<String> = numbers.iter().map(u32::to_string).collect();
                let how = if *reversed { "reversed" } else { "applied" };
                write!(
                    f,
                    "record the migrations of generation {} as {how}",
                    numbers.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Profile => Ok(()),
            Code::Generation { number, .. } => write!(f, " (generation {number}'s code)"),
        }
    }
}

/// What undoes a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Undo {
    /// These steps, in order.
    Steps(Vec<Step>),
    /// Nothing can: the plan stops undoing here and says why.
    Impossible(String),
}

impl Undo {
    pub fn nothing() -> Undo {
        Undo::Steps(Vec::new())
    }
}

/// A step and its undo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Planned {
    pub step: Step,
    pub undo: Undo,
}

/// What a run that was killed is to be followed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnKill {
    /// Undo what was done (a deploy: the instance goes back).
    Undo,
    /// Go on from the step that was running (a rollback: the instance
    /// was on its way back, and goes on there).
    Finish,
}

/// A plan: its operation's name (`deploy`, `rollback`, `pin`), the
/// instance, the steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub operation: String,
    pub instance: String,
    /// One line on what the plan does, for the message of a later run.
    pub summary: String,
    pub on_kill: OnKill,
    pub steps: Vec<Planned>,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case", deny_unknown_fields)]
pub enum State {
    /// Going forward: steps before `next` are done; `started` when step
    /// `next` has begun.
    Forward { next: usize, started: bool },
    /// Undoing after step `failed` failed (`error`): the undo of step
    /// `step` is at its sub-step `sub`; steps above `step` are undone.
    Undoing {
        failed: usize,
        error: String,
        step: usize,
        sub: usize,
    },
    /// Stopped: an undo failed or could not be done. Nothing runs again
    /// until the operator has seen to it.
    Stuck {
        error: String,
        undo_error: String,
        step: usize,
    },
}

/// The journal of a plan in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The format's version, under the key a reader checks first.
    #[allow(clippy::struct_field_names)]
    pub djshim_journal: u32,
    pub plan: Plan,
    pub state: State,
}

/// What runs a step: the world of the instance (or a fake one in tests).
pub trait World {
    fn run(&mut self, step: &Step) -> Result<(), Error>;
    /// Told whether the loop goes forward or undoes, before it runs a
    /// step of either (a step of the way back is not bounded by the deploy
    /// window's deadline).
    fn undoing(&mut self, _undoing: bool) {}
}

/// Where the journal is kept: saved before and after every step, cleared
/// when the plan has ended.
pub trait Store {
    fn save(&mut self, journal: &Journal) -> Result<(), Error>;
    fn clear(&mut self) -> Result<(), Error>;
}

/// How a plan ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every step ran.
    Done,
    /// A step failed; everything done was undone.
    Undone(Error),
}

/// Runs `plan` from its start.
pub fn run(plan: Plan, world: &mut dyn World, store: &mut dyn Store) -> Result<Outcome, Error> {
    let journal = Journal {
        djshim_journal: JOURNAL_VERSION,
        plan,
        state: State::Forward {
            next: 0,
            started: false,
        },
    };
    resume(journal, world, store)
}

/// Goes on with a journal a killed run left: forward or backward as its
/// plan says, from where it was. A stuck journal is not touched.
pub fn recover(
    mut journal: Journal,
    world: &mut dyn World,
    store: &mut dyn Store,
) -> Result<Outcome, Error> {
    if let State::Forward { next, .. } = journal.state
        && next == journal.plan.steps.len()
    {
        // Killed after its last step, before the journal went.
        store.clear()?;
        return Ok(Outcome::Done);
    }
    if let State::Forward { next, started } = journal.state
        && journal.plan.on_kill == OnKill::Undo
    {
        // The step that had begun may have done its work: undo it too.
        let last = if started {
            Some(next)
        } else {
            next.checked_sub(1)
        };
        let Some(last) = last else {
            store.clear()?;
            return Ok(Outcome::Undone(Error::problem(
                "it was killed before its first step",
            )));
        };
        journal.state = State::Undoing {
            failed: last,
            error: "killed".into(),
            step: last,
            sub: 0,
        };
    }
    resume(journal, world, store)
}

fn resume(
    mut journal: Journal,
    world: &mut dyn World,
    store: &mut dyn Store,
) -> Result<Outcome, Error> {
    crate::interrupt::catch()?;
    let operation = journal.plan.operation.clone();
    go_forward(&mut journal, world, store)?;
    let State::Undoing {
        failed,
        error,
        step: from,
        sub: first_sub,
    } = journal.state.clone()
    else {
        if let State::Stuck { .. } = journal.state {
            return Err(stuck(&journal));
        }
        store.clear()?;
        return Ok(Outcome::Done);
    };
    let undoing = crate::interrupt::count();
    world.undoing(true);
    for i in (0..=from).rev() {
        let undo = journal.plan.steps[i].undo.clone();
        let subs = match undo {
            Undo::Impossible(why) => {
                journal.state = State::Stuck {
                    error: error.clone(),
                    undo_error: why,
                    step: i,
                };
                store.save(&journal)?;
                return Err(stuck(&journal));
            }
            Undo::Steps(subs) => subs,
        };
        let start = if i == from { first_sub } else { 0 };
        for (s, sub) in subs.iter().enumerate().skip(start) {
            journal.state = State::Undoing {
                failed,
                error: error.clone(),
                step: i,
                sub: s,
            };
            store.save(&journal)?;
            let undone = timed(&format!("{operation}: undo: {sub}"), || world.run(sub));
            if crate::interrupt::count() > undoing {
                // A second signal: stop here, the journal says where.
                return Err(Error::problem(format!(
                    "{summary} failed ({error}), and its undo was {what} at `{sub}`: the journal \
                     is kept, and the next `djshim deploy {instance}` or `djshim rollback \
                     {instance}` finishes the undo",
                    summary = journal.plan.summary,
                    what = crate::interrupt::interrupted(),
                    instance = journal.plan.instance,
                )));
            }
            if let Err(e) = undone {
                journal.state = State::Stuck {
                    error: error.clone(),
                    undo_error: e.to_string(),
                    step: i,
                };
                store.save(&journal)?;
                return Err(stuck(&journal));
            }
        }
    }
    store.clear()?;
    Ok(Outcome::Undone(Error::problem(error)))
}

/// The plan's steps from where the journal says, until one fails (the
/// journal then says what to undo) or all are done.
fn go_forward(
    journal: &mut Journal,
    world: &mut dyn World,
    store: &mut dyn Store,
) -> Result<(), Error> {
    let operation = journal.plan.operation.clone();
    // A Ctrl-C, SIGTERM or hang-up during a step is that step's failure
    // (its process, if any, was stopped), and the plan is undone.
    let signals = crate::interrupt::count();
    world.undoing(!matches!(journal.state, State::Forward { .. }));
    if let State::Forward { next, .. } = journal.state {
        for i in next..journal.plan.steps.len() {
            journal.state = State::Forward {
                next: i,
                started: true,
            };
            store.save(journal)?;
            let planned = journal.plan.steps[i].step.clone();
            let result = timed(&format!("{operation}: {planned}"), || {
                world.run(&planned)?;
                if crate::interrupt::count() > signals {
                    return Err(crate::interrupt::interrupted());
                }
                Ok(())
            });
            match result {
                Ok(()) => {
                    journal.state = State::Forward {
                        next: i + 1,
                        started: false,
                    };
                    store.save(journal)?;
                }
                Err(e) => {
                    journal.state = State::Undoing {
                        failed: i,
                        error: e.to_string(),
                        step: i,
                        sub: 0,
                    };
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The error of a journal that cannot go on by itself: what failed, why
/// it could not be undone, what is left and how to go on.
pub fn stuck(journal: &Journal) -> Error {
    let State::Stuck {
        error,
        undo_error,
        step,
    } = &journal.state
    else {
        return Error::problem(format!("{} is not stuck", journal.plan.summary));
    };
    let plan = &journal.plan;
    let left: Vec<String> = plan.steps[..=*step]
        .iter()
        .map(|p| format!("    {}", p.step))
        .collect();
    Error::problem(format!(
        "{summary} failed and could not be undone\n  = it failed: {error}\n  = the undo \
         stopped: {undo_error}\n  = these steps were done and are not undone, newest last:\n\
         {left}",
        summary = plan.summary,
        left = left.join("\n"),
    ))
}

/// Reads a journal's text: its version first, then its shape; the reason
/// when it is none djshim can go on from.
pub fn parse(text: &str) -> Result<Journal, String> {
    #[derive(Deserialize)]
    struct Version {
        djshim_journal: Option<u32>,
    }
    let version: Version =
        serde_json::from_str(text).map_err(|e| format!("not a journal djshim wrote ({e})"))?;
    match version.djshim_journal {
        Some(JOURNAL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "a journal of version {v}, written by another djshim (this one reads version \
                 {JOURNAL_VERSION})"
            ));
        }
        None => return Err("not a journal djshim wrote (no `djshim_journal` version)".into()),
    }
    serde_json::from_str(text).map_err(|e| format!("a damaged journal ({e})"))
}

#[cfg(test)]
mod tests {
    //! The loop alone, on a fake world: a profile, a schema version, a
    //! serving flag, and the journal in memory. A kill is a panic in the
    //! store or the world (nothing after it runs, as with `kill -9`).

    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Fake {
        profile: Option<u32>,
        schema: u32,
        serving: Option<u32>,
        log: Vec<String>,
        fail: Vec<String>,
        kill_at: Option<String>,
        /// Killed once the `.1`-th run of the step named `.0` has had its
        /// effect, before it returns (the journal does not say so yet).
        kill_after_effect: Option<(String, usize)>,
        /// How many times each step name ran.
        runs: BTreeMap<String, usize>,
    }

    impl World for Fake {
        fn run(&mut self, step: &Step) -> Result<(), Error> {
            let name = step.to_string();
            assert!(self.kill_at.as_deref() != Some(name.as_str()), "killed");
            self.log.push(name.clone());
            if self.fail.contains(&name) {
                return Err(Error::problem(format!("{name} failed")));
            }
            match step {
                Step::Switch { to } => self.profile = *to,
                Step::Manage { args, .. } if args[0] == "migrate" => {
                    self.schema = self.profile.unwrap_or(0);
                }
                Step::MigrateBack { targets, .. } => {
                    self.schema = targets[0].1.as_deref().map_or(0, |t| t.parse().unwrap());
                }
                Step::Run { .. } => self.serving = self.profile,
                _ => {}
            }
            let runs = self.runs.entry(name.clone()).or_default();
            *runs += 1;
            assert!(
                self.kill_after_effect != Some((name, *runs)),
                "killed after the effect"
            );
            Ok(())
        }
    }

    #[derive(Debug, Default)]
    struct Memory {
        journal: Option<Journal>,
        saves: usize,
        kill_after: Option<usize>,
    }

    impl Store for Memory {
        fn save(&mut self, journal: &Journal) -> Result<(), Error> {
            // Round-trips through the JSON the file holds.
            let text = serde_json::to_string(journal).unwrap();
            self.journal = Some(serde_json::from_str(&text).unwrap());
            self.saves += 1;
            assert!(self.kill_after != Some(self.saves), "killed");
            Ok(())
        }
        fn clear(&mut self) -> Result<(), Error> {
            self.journal = None;
            Ok(())
        }
    }

    fn migrate(code: Code) -> Step {
        Step::Manage {
            args: vec!["migrate".into()],
            code,
        }
    }

    fn restart() -> Step {
        Step::Run {
            what: "restart".into(),
            argv: vec!["restart".into()],
        }
    }

    /// A deploy from generation 1 (schema 1) to 2, as `deploy` plans it.
    fn deploy() -> Plan {
        let code = Code::Generation {
            number: 2,
            package: "/p2".into(),
        };
        Plan {
            operation: "deploy".into(),
            instance: "prod".into(),
            summary: "the deploy of /p2 to prod".into(),
            on_kill: OnKill::Undo,
            steps: vec![
                Planned {
                    step: Step::Switch { to: Some(2) },
                    undo: Undo::Steps(vec![
                        Step::Switch { to: Some(1) },
                        migrate(Code::Profile),
                        restart(),
                    ]),
                },
                Planned {
                    step: migrate(Code::Profile),
                    undo: Undo::Steps(vec![Step::MigrateBack {
                        targets: vec![("polls".into(), Some("1".into()))],
                        code,
                    }]),
                },
                Planned {
                    step: restart(),
                    undo: Undo::nothing(),
                },
                Planned {
                    step: Step::Health {
                        probe: Probe::Command {
                            argv: vec!["true".into()],
                            timeout: 1,
                        },
                    },
                    undo: Undo::nothing(),
                },
            ],
        }
    }

    fn start() -> Fake {
        Fake {
            profile: Some(1),
            schema: 1,
            serving: Some(1),
            ..Fake::default()
        }
    }

    #[test]
    fn a_plan_runs_every_step_and_clears_its_journal() {
        let (mut world, mut store) = (start(), Memory::default());
        let outcome = run(deploy(), &mut world, &mut store).unwrap();
        assert!(matches!(outcome, Outcome::Done));
        assert_eq!(
            (world.profile, world.schema, world.serving),
            (Some(2), 2, Some(2))
        );
        assert_eq!(store.journal, None);
        // Before and after each of the four steps.
        assert_eq!(store.saves, 8);
    }

    #[test]
    fn a_failed_step_undoes_the_done_ones_newest_first() {
        let mut world = Fake {
            fail: vec!["health".into()],
            ..start()
        };
        let mut store = Memory::default();
        let outcome = run(deploy(), &mut world, &mut store).unwrap();
        let Outcome::Undone(e) = outcome else {
            panic!("not undone")
        };
        assert_eq!(e.to_string(), "deploy: health: health failed");
        assert_eq!(
            world.log,
            [
                "switch to generation 2",
                "manage.py migrate",
                "restart: restart",
                "health",
                // The migrations go back with the candidate's code, then
                // the profile, then the old code's steps and restart.
                "migrate polls 1 (generation 2's code)",
                "switch to generation 1",
                "manage.py migrate",
                "restart: restart",
            ]
        );
        assert_eq!(
            (world.profile, world.schema, world.serving),
            (Some(1), 1, Some(1))
        );
        assert_eq!(store.journal, None);
    }

    #[test]
    fn a_failed_undo_keeps_the_journal_and_reports_both_errors() {
        let mut world = Fake {
            fail: vec![
                "health".into(),
                "migrate polls 1 (generation 2's code)".into(),
            ],
            ..start()
        };
        let mut store = Memory::default();
        let e = run(deploy(), &mut world, &mut store)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("it failed: deploy: health: health failed"),
            "{e}"
        );
        assert!(
            e.contains("the undo stopped: deploy: undo: migrate polls 1 (generation 2's code): migrate polls 1 (generation 2's code) failed"),
            "{e}"
        );
        let journal = store.journal.clone().expect("kept");
        assert!(matches!(journal.state, State::Stuck { step: 1, .. }));
        // Every later run refuses, and changes nothing.
        let before = world.clone();
        assert!(recover(journal, &mut world, &mut store).is_err());
        assert_eq!(world, before);
    }

    #[test]
    fn an_impossible_undo_is_never_attempted() {
        let mut plan = deploy();
        plan.steps[1].undo = Undo::Impossible("0002 is irreversible".into());
        let mut world = Fake {
            fail: vec!["health".into()],
            ..start()
        };
        let mut store = Memory::default();
        let e = run(plan, &mut world, &mut store).unwrap_err().to_string();
        assert!(e.contains("the undo stopped: 0002 is irreversible"), "{e}");
        assert!(
            e.ends_with("    switch to generation 2\n    manage.py migrate"),
            "{e}"
        );
        assert!(!world.log.iter().any(|l| l.starts_with("migrate polls")));
        assert_eq!(world.profile, Some(2));
        assert!(store.journal.is_some());
    }

    /// `kill -9` at every boundary of the journal (a save that never
    /// returns), and inside every step; the next run then leaves the fake
    /// instance whole: on generation 1 with schema 1, or on 2 with 2.
    #[test]
    fn a_kill_anywhere_is_finished_or_undone_by_the_next_run() {
        for failing in [false, true] {
            let fail = || {
                if failing {
                    vec!["health".to_owned()]
                } else {
                    vec![]
                }
            };
            // The points, from a run that is not killed: every save, and
            // every run of every step (forward and undo), before its effect
            // and after it.
            let mut world = Fake {
                fail: fail(),
                ..start()
            };
            let mut store = Memory::default();
            let _ = run(deploy(), &mut world, &mut store);
            let saves = store.saves;
            assert!(saves > 4, "{saves} saves");
            let mut kills: Vec<Kill> = (1..=saves).map(Kill::AfterSave).collect();
            for (name, runs) in &world.runs {
                kills.push(Kill::Before(name.clone()));
                for n in 1..=*runs {
                    kills.push(Kill::AfterEffect(name.clone(), n));
                }
            }
            assert!(kills.len() > saves + 2 * deploy().steps.len() - 1);
            for kill in kills {
                let mut world = Fake {
                    fail: fail(),
                    ..start()
                };
                let mut store = Memory::default();
                match &kill {
                    Kill::AfterSave(n) => store.kill_after = Some(*n),
                    Kill::Before(name) => world.kill_at = Some(name.clone()),
                    Kill::AfterEffect(name, n) => {
                        world.kill_after_effect = Some((name.clone(), *n));
                    }
                }
                let what = format!("failing {failing}, killed {kill:?}");
                let killed =
                    catch_unwind(AssertUnwindSafe(|| run(deploy(), &mut world, &mut store)));
                assert!(killed.is_err(), "{what}: the kill never came");
                world.kill_at = None;
                world.kill_after_effect = None;
                world.fail.clear();
                store.kill_after = None;
                if let Some(journal) = store.journal.clone() {
                    recover(journal, &mut world, &mut store).unwrap();
                }
                assert_eq!(store.journal, None, "{what}");
                let whole = (world.profile, world.schema, world.serving);
                assert!(
                    whole == (Some(1), 1, Some(1)) || whole == (Some(2), 2, Some(2)),
                    "{what}: left {whole:?}\n{:#?}",
                    world.log
                );
            }
        }
    }

    /// Where a kill lands.
    #[derive(Debug)]
    enum Kill {
        /// The `n`-th save of the journal never returns.
        AfterSave(usize),
        /// The first run of the step named so, before it does anything.
        Before(String),
        /// The `n`-th run of the step named so, after its effect.
        AfterEffect(String, usize),
    }

    /// A rollback killed half-way goes on where it was.
    #[test]
    fn a_killed_plan_that_finishes_goes_on_from_the_step_it_was_in() {
        let mut plan = deploy();
        plan.on_kill = OnKill::Finish;
        let mut world = Fake {
            kill_at: Some("restart: restart".into()),
            ..start()
        };
        let mut store = Memory::default();
        assert!(catch_unwind(AssertUnwindSafe(|| run(plan, &mut world, &mut store))).is_err());
        world.kill_at = None;
        let journal = store.journal.clone().unwrap();
        world.log.clear();
        recover(journal, &mut world, &mut store).unwrap();
        assert_eq!(world.log, ["restart: restart", "health"]);
        assert_eq!(
            (world.profile, world.schema, world.serving),
            (Some(2), 2, Some(2))
        );
    }

    #[test]
    fn journals_of_another_version_or_shape_are_refused() {
        let journal = Journal {
            djshim_journal: JOURNAL_VERSION,
            plan: deploy(),
            state: State::Forward {
                next: 1,
                started: true,
            },
        };
        let text = serde_json::to_string(&journal).unwrap();
        assert_eq!(parse(&text).unwrap(), journal);
        let other = text.replace("\"djshim_journal\":1", "\"djshim_journal\":2");
        let e = parse(&other).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = parse(&text.replace("\"next\":1", "\"nest\":1")).unwrap_err();
        assert!(e.contains("nest"), "{e}");
        assert!(parse("{\"djshim_journal\": 1, \"pl").is_err());
        assert!(parse("not json").is_err());
    }
}
