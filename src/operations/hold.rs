//! `djshim window INSTANCE open|close`: one host's deploy window, held by
//! the engine of a rollout across hosts (SPEC section 10). The engine opens
//! it on every host before one host migrates the shared database, so no
//! old code serves the new schema anywhere; each host's own deploy closes
//! it with its restart (the new code serves); `close` ends it on a host the
//! rollout never switched. The deadline (`window_timeout`) ends it
//! regardless.

use super::plan::{OnKill, Outcome, Plan, Step};
use super::{Journaled, Say, execute, open, window};
use crate::error::Error;
use crate::model::Model;

/// What `window` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The window opened: the server's launcher holds (or answers 503).
    Opened,
    /// It was open and held already: only its deadline was renewed.
    Renewed,
    /// It closed.
    Closed,
    /// No window was open.
    NoneOpen,
}

/// Opens (`open`) or closes the deploy window of instance `name`, under
/// its lock, as a journaled plan: an open whose launcher does not hold is
/// undone.
pub fn hold(model: &Model, name: &str, open_it: bool, say: Say) -> Result<Held, Error> {
    let operation = if open_it {
        "window open"
    } else {
        "window close"
    };
    let (mut world, _) = open(model, name, operation, Journaled::Recover, say)?;
    let instance = world.instance;
    let Some(steps) = window::steps(instance) else {
        return Err(Error::usage_help(
            format!("instance `{name}` has no deploy window (`window = \"serve\"`)"),
            "set `[deploy] window = \"stop\"` (or `\"503\"`), run `djshim systemd` and \
             `systemctl daemon-reload`",
        ));
    };
    let flag = crate::layout::window(&world.profile.dir, &world.profile.name);
    let is_open = window::until(&flag).is_some();
    let (steps, result) = match (open_it, is_open) {
        // Open already: a new deadline, and the launcher checked to hold.
        (true, true) => (
            steps
                .open
                .into_iter()
                .filter(|p| matches!(p.step, Step::Window { .. } | Step::Held { .. }))
                .collect(),
            Held::Renewed,
        ),
        (true, false) => (steps.open, Held::Opened),
        (false, true) => (vec![steps.close], Held::Closed),
        (false, false) => return Ok(Held::NoneOpen),
    };
    let plan = Plan {
        operation: operation.into(),
        instance: name.to_owned(),
        summary: format!("the {operation} of {name}"),
        on_kill: OnKill::Undo,
        steps,
    };
    window::ready_for(&plan, instance)?;
    match execute(plan, &mut world)? {
        Outcome::Done => Ok(result),
        Outcome::Undone(failure) => Err(Error::Undone(Box::new(Error::problem(format!(
            "the {operation} of {name} failed: {failure}\n  = no window is open on {name}"
        ))))),
    }
}
