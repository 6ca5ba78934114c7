//! The step executor: what each step of a plan does to the real instance
//! (its profile, its shims, its database, its processes), for the one loop
//! of [`super::plan`].

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use super::journal::Record;
use super::plan::{self, Code, Step};
use super::{Notice, Say, health, window};
use crate::django::{self, Shims};
use crate::error::Error;
use crate::model::{Instance, Model};
use crate::process::Process;
use crate::profile::{Lock, Profile};

/// How long one of the instance's own commands (restart, start, stop) may
/// take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The world a plan changes: the instance's profile, its shims, its
/// database and its processes.
pub(super) struct Live<'m> {
    /// The operation (`deploy`, `rollback`, `pin`), for its notices.
    operation: String,
    pub(super) instance: &'m Instance,
    pub(super) profile: Profile,
    /// The shims the steps run through (and the deploy's questions).
    pub(super) shims: Shims,
    /// The plan is being undone.
    undoing: bool,
    /// Where its notices go.
    pub(super) say: Say,
    /// The instance's lock, let go last (after the shims are removed, so
    /// that the next run's are never removed by this one).
    _lock: Lock,
}

impl<'m> Live<'m> {
    pub(super) fn new(
        model: &Model,
        operation: &str,
        instance: &'m Instance,
        profile: &Profile,
        lock: Lock,
        say: Say,
    ) -> Result<Live<'m>, Error> {
        Ok(Live {
            operation: operation.to_owned(),
            say,
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

    /// The shim that runs `code`; a generation's writes its static files
    /// to the generation's own directory, made when missing.
    fn shim(&mut self, code: &Code) -> Result<Utf8PathBuf, Error> {
        match code {
            Code::Profile => self.shims.shim(None),
            Code::Generation { number, package } => {
                self.make_static(*number, package)?;
                self.shims.generation(*number, package)
            }
        }
    }

    /// Makes the static directory of generation `number` on `package`, if
    /// the instance gives each generation one outside its package and it
    /// is missing.
    fn make_static(&self, number: u32, package: &Utf8Path) -> Result<(), Error> {
        let instance = self.instance;
        match instance.generation_static(number, package) {
            Some(dir) if instance.static_in_package.is_none() => {
                crate::collected::make(&dir, instance.user.as_deref(), instance.group.as_deref())
            }
            _ => Ok(()),
        }
    }

    /// Switches the profile to generation `number`, and the static files
    /// with it (to its directory, made empty when it has none yet: the
    /// steps that collect through `static_root` then fill its own).
    fn switch(&mut self, number: u32) -> Result<(), Error> {
        let generations = self.profile.generations()?;
        let instance = self.instance;
        let to = generations.iter().find(|g| g.number == number);
        let statics = match (instance.static_root.as_deref(), to) {
            (Some(root), Some(to)) => instance
                .generation_static(number, &to.target)
                .map(|dir| (root, dir, to)),
            _ => None,
        };
        if let Some((root, _, to)) = &statics {
            // What an earlier djshim collected is the running generation's,
            // kept before the profile moves (a kill after it, and the
            // switch run again, finds the link already).
            let from = crate::profile::current(&self.profile, &generations)?;
            let own = from.and_then(|g| instance.generation_static(g.number, &g.target));
            crate::collected::adopt(root, own.as_deref())?;
            self.make_static(number, &to.target)?;
        }
        self.profile.switch(number)?;
        match statics {
            Some((root, dir, _)) => crate::collected::point(root, &dir),
            None => Ok(()),
        }
    }

    /// Closes the window, saying how long it was open.
    fn close_window(&mut self, wait: bool) -> Result<(), Error> {
        let flag = self.window_file();
        let opened = std::fs::metadata(&flag).and_then(|m| m.modified()).ok();
        window::write(&flag, 0)?;
        if let Some(seconds) = opened.and_then(|t| t.elapsed().ok()) {
            (self.say)(Notice::Held {
                operation: &self.operation,
                wait,
                seconds: seconds.as_secs_f64(),
            });
        }
        Ok(())
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
                self.make_static(*number, package)?;
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
            Step::Switch { to: Some(n) } => self.switch(*n),
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
                self.bounded(Process::new(&shim))
                    .args(["shell", "-c", &django::migrate_back_code(targets)?])
                    .env("DJSHIM_CONFIRM", &self.instance.name)
                    .run()
            }
            Step::Run { argv, .. } => self
                .tracked(Process::new(&argv[0]))
                .args(&argv[1..])
                .timeout(COMMAND_TIMEOUT)
                .run(),
            Step::Health { probe } => health::probe(probe),
            Step::Window { seconds: 0, wait } => self.close_window(*wait),
            Step::Window { seconds, .. } => window::write(&self.window_file(), *seconds),
            Step::Held { unit, wait } => {
                if let Some(state) = window::held(unit, &self.window_file(), *wait)? {
                    (self.say)(Notice::NotServing {
                        unit,
                        state: &state,
                    });
                }
                Ok(())
            }
            Step::Healthy { number } => {
                let mut record = Record::of(&self.profile, *number)?.ok_or_else(|| {
                    Error::problem(format!(
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
