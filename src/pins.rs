//! `djshim pin`, `rollback` and `history`: moving an instance's profile
//! between packages, checked first, one atomic switch each.

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use camino::Utf8Path;

use crate::check;
use crate::cli::{HistoryArgs, PinArgs, RollbackArgs};
use crate::commands::say;
use crate::deploy::Record;
use crate::error::Error;
use crate::model::{Instance, Model};
use crate::profile::{Current, Generation, Profile, current, profiled, resolve};

/// Refuses a package the instance could not run, printing why.
fn verify(
    model: &Model,
    instance: &Instance,
    package: &Utf8Path,
    out: &mut dyn Write,
    what: &str,
) -> Result<(), Error> {
    let candidate = instance.rebased(package);
    let mut problems = check::instance(&candidate);
    problems.retain(|p| !p.warning);
    if problems.is_empty() {
        problems.extend(crate::deploy::deep_problems(model, &candidate)?);
    }
    for problem in &problems {
        say(out, format_args!("{problem}"))?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Problem(format!(
            "not {what} {package}: the instance could not run it ({} problem{})",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        )))
    }
}

pub fn pin(model: &Model, args: &PinArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let (instance, profile) = profiled(model, &args.instance)?;
    if crate::deploy::interrupted(&profile)? {
        return Err(Error::Problem(format!(
            "a deploy of instance `{0}` was interrupted and is not undone; its database may be \
             half migrated\n  = help: `djshim rollback {0}` undoes it, `djshim deploy {0}` undoes \
             it and deploys again",
            instance.name
        )));
    }
    if let Some(path) = &args.path {
        let package = resolve(path)?;
        verify(model, instance, &package, out, "pinning")?;
        let _lock = profile.lock()?;
        let generations = profile.generations()?;
        let current = current(&profile, &generations)?;
        if let Some(g) = current.filter(|g| g.target == package) {
            say(
                out,
                format_args!(
                    "{}: generation {} already runs {package}",
                    instance.name, g.number
                ),
            )?;
        } else {
            let number = profile.next_number(&generations)?;
            profile.create(number, &package)?;
            profile.switch(number)?;
            match current {
                Some(old) => say(
                    out,
                    format_args!(
                        "{}: generation {} -> {number}: {} -> {package}",
                        instance.name, old.number, old.target
                    ),
                )?,
                None => say(
                    out,
                    format_args!("{}: generation {number}: {package}", instance.name),
                )?,
            }
        }
    }
    if let Some(keep) = args.keep {
        let _lock = profile.lock()?;
        let generations = profile.generations()?;
        let running = profile.running(&generations)?;
        let cut = generations.len().saturating_sub(keep as usize);
        for g in generations[..cut]
            .iter()
            .filter(|g| !running.contains(&g.number))
        {
            profile.delete(g)?;
            say(
                out,
                format_args!(
                    "{}: deleted generation {}: {}",
                    instance.name, g.number, g.target
                ),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(
    model: &Model,
    args: &RollbackArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, Error> {
    let (instance, profile) = profiled(model, &args.instance)?;
    let _lock = profile.lock()?;
    // An interrupted deploy is undone first; that is the rollback asked for.
    if crate::deploy::recover(model, instance, &profile)? {
        return back_on(instance, &profile, out);
    }
    let generations = profile.generations()?;
    let current = match profile.current(&generations)? {
        Current::Generation(n) => generations.iter().find(|g| g.number == n),
        Current::Elsewhere(target) if args.to.is_none() => {
            return Err(elsewhere(instance, &profile, &generations, &target));
        }
        Current::None | Current::Elsewhere(_) => None,
    };
    if generations.is_empty() {
        return Err(Error::Problem(format!(
            "instance `{0}` has no generation yet\n  = help: pin one with `djshim pin {0} PATH`",
            instance.name
        )));
    }
    let target = if let Some(n) = args.to {
        generations.iter().find(|g| g.number == n).ok_or_else(|| {
            let known: Vec<String> = generations.iter().map(|g| g.number.to_string()).collect();
            Error::Problem(format!(
                "instance `{}` has no generation {n}; it has {}",
                instance.name,
                known.join(", ")
            ))
        })?
    } else {
        let Some(current) = current else {
            return Err(Error::Problem(format!(
                "the profile {} is missing, so there is no generation before it\n  = help: \
                 switch to one with `djshim rollback {} --to N`",
                profile.link(),
                instance.name
            )));
        };
        // The newest older generation that runs another package and was not
        // a failed deploy: going to the same package would change nothing.
        generations
            .iter()
            .rev()
            .filter(|g| g.number < current.number && g.target != current.target)
            .find(|g| Record::of(&profile, g.number).is_none_or(|r| r.healthy))
            .ok_or_else(|| {
                Error::Problem(format!(
                    "generation {} of instance `{}` has no older generation with another \
                     package that ran healthy; there is nothing to roll back to",
                    current.number, instance.name
                ))
            })?
    };
    if current.is_some_and(|c| c.number == target.number) {
        say(
            out,
            format_args!(
                "{}: generation {} is already current",
                instance.name, target.number
            ),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    verify(model, instance, &target.target, out, "rolling back to")?;
    // A generation that a deploy made is left the way it came: its
    // migrations reversed first, then the steps, restart and health probe.
    match current.and_then(|c| Record::of(&profile, c.number)) {
        Some(record) => {
            crate::deploy::backwards(model, instance, &profile, &record, target.number)?;
        }
        None => profile.switch(target.number)?,
    }
    match current {
        Some(current) => say(
            out,
            format_args!(
                "{}: generation {} -> {}: {} -> {}",
                instance.name, current.number, target.number, current.target, target.target
            ),
        )?,
        None => say(
            out,
            format_args!(
                "{}: generation {}: {}",
                instance.name, target.number, target.target
            ),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Says which generation the profile runs after an interrupted deploy was
/// undone.
fn back_on(instance: &Instance, profile: &Profile, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let generations = profile.generations()?;
    if let Some(g) = current(profile, &generations)? {
        say(
            out,
            format_args!(
                "{}: back on generation {}: {}",
                instance.name, g.number, g.target
            ),
        )?;
    }
    Ok(ExitCode::SUCCESS)
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

pub fn history(model: &Model, args: &HistoryArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let (_, profile) = profiled(model, &args.instance)?;
    let generations = profile.generations()?;
    let current = profile.current(&generations)?;
    let width = generations.last().map_or(1, |g| g.number.to_string().len());
    let commits = crate::release::commits(model);
    for g in &generations {
        let mark = if current == Current::Generation(g.number) {
            "   (current)"
        } else {
            ""
        };
        let commit = crate::release::commit_of(&commits, &g.target)
            .map(|c| format!(" (commit {c})"))
            .unwrap_or_default();
        say(
            out,
            format_args!(
                "{:>width$}   {}   {}{commit}{mark}",
                g.number,
                utc(g.made),
                g.target
            ),
        )?;
    }
    if let Current::Elsewhere(target) = current {
        say(
            out,
            format_args!(
                "the profile {} points at {target}, which is none of these",
                profile.link()
            ),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, H. Hinnant).
fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days.cast_signed() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_795_602_163)),
            "2026-11-25 10:22:43"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00"
        );
    }
}
