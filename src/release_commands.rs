//! The front-end of the release operations: `djshim deploy`, `pin`,
//! `rollback`, `history` and `status` parse nothing and decide nothing here; they
//! call [`crate::operations`] and [`crate::profile`] with plain values, and
//! word what those say while they run ([`Notice`]) and what they return.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{
    DeployArgs, HistoryArgs, PinArgs, RollbackArgs, StatusArgs, WindowAction, WindowArgs,
};
use crate::django::Migrations;
use crate::error::Error;
use crate::model::Model;
use crate::model::Window;
use crate::operations::{self, Back, Candidate, Moved, Notice, Pinned, Record, Source};
use crate::profile::{Current, profiled};
use crate::progress::say;

/// Says on stderr what an operation has to say while it runs.
fn notice(notice: Notice<'_>) {
    match notice {
        Notice::LeftProcesses(n) => eprintln!(
            "djshim: a step of an interrupted run left {n} process{} running: killed",
            if n == 1 { "" } else { "es" }
        ),
        Notice::Recovering { summary, undoing } => eprintln!(
            "djshim: {summary} was interrupted; {}",
            if undoing {
                "undoing it"
            } else {
                "finishing it"
            }
        ),
        Notice::Candidate { instance, package } => {
            eprintln!("djshim: candidate for {instance}: {package}");
        }
        Notice::Migrations {
            migrations,
            window,
            serving,
        } => report_migrations(migrations, window, serving),
        Notice::NotServing { unit, state } => {
            eprintln!("djshim: {unit} is {state}: no old code serves during the window");
        }
        Notice::Held {
            operation,
            wait,
            seconds,
        } => eprintln!(
            "djshim: {operation}: requests {} for {seconds:.1} s in the window, then until the \
             new code's server started",
            if wait { "waited" } else { "got 503" }
        ),
    }
}

/// The new migrations, summarised: their number, and each that cannot be
/// reversed by name (a first deploy of a large application brings
/// hundreds); what would break the code that serves now. Where nothing
/// serves (a first deploy), neither matters one by one: a first deploy is
/// never migrated back, and no older code runs; each is a count.
fn report_migrations(migrations: &Migrations, window: Window, serving: bool) {
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
            if serving {
                for m in irreversible {
                    eprintln!("djshim: new migration {m}: IRREVERSIBLE");
                }
            }
        }
    }
    if !serving {
        if !migrations.breaking.is_empty() {
            eprintln!(
                "djshim: {} of the new migrations would break older code; nothing serves yet",
                migrations.breaking.len()
            );
        }
        return;
    }
    // Said before the switch: the old code keeps serving while the steps
    // migrate, until the restart — unless a window keeps it from requests.
    for (migration, why) in &migrations.breaking {
        if window == Window::Serve {
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

/// Says what an operation did.
fn report(name: &str, moved: &Moved, out: &mut dyn Write) -> Result<(), Error> {
    match moved {
        Moved::Already { number, package } => say(
            out,
            format_args!("{name}: generation {number} already runs {package}"),
        ),
        Moved::To {
            number,
            package,
            from: Some((old, was)),
        } => say(
            out,
            format_args!("{name}: generation {old} -> {number}: {was} -> {package}"),
        ),
        Moved::To {
            number,
            package,
            from: None,
        } => say(out, format_args!("{name}: generation {number}: {package}")),
        Moved::Recovered {
            now: Some((n, package)),
        } => say(
            out,
            format_args!("{name}: back on generation {n}: {package}"),
        ),
        Moved::Recovered { now: None } => say(out, format_args!("{name}: runs no generation")),
    }
}

pub fn pin(model: &Model, args: &PinArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    if let Some(path) = &args.path {
        match operations::pin(model, &args.instance, path, notice)? {
            Pinned::Moved(moved) => report(&args.instance, &moved, out)?,
            Pinned::CannotRun { package, problems } => {
                for problem in &problems {
                    say(out, format_args!("{problem}"))?;
                }
                return Err(Error::problem(format!(
                    "not pinning {package}: the instance could not run it ({} problem{})",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                )));
            }
        }
    }
    if let Some(keep) = args.keep {
        for (number, target) in operations::prune(model, &args.instance, keep as usize)? {
            say(
                out,
                format_args!("{}: deleted generation {number}: {target}", args.instance),
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
    let back = match (args.to, &args.to_package) {
        (Some(n), _) => Back::To(n),
        (None, Some(path)) => Back::Package(path),
        (None, None) => Back::Previous,
    };
    let moved = operations::rollback(
        model,
        &args.instance,
        back,
        shared(args.skip_shared),
        notice,
    )?;
    if let Moved::Already { number, .. } = moved {
        say(
            out,
            format_args!("{}: generation {number} is already current", args.instance),
        )?;
    } else {
        report(&args.instance, &moved, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `djshim deploy`: what it did.
pub fn deploy(model: &Model, args: &DeployArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let source = match (&args.path, &args.from) {
        (Some(path), _) => Source::Path(path),
        (None, Some(other)) => Source::From(other),
        (None, None) => Source::Build(args.reference.as_deref()),
    };
    let candidate = Candidate {
        source,
        hash: args.hash.as_deref(),
    };
    let name = &args.instance;
    if args.prepare {
        let prepared =
            operations::prepare(model, name, candidate, args.allow_irreversible, notice)?;
        if args.json {
            let object = serde_json::to_value(&prepared).expect("plain data");
            say(out, format_args!("{object:#}"))?;
        } else if prepared.already {
            say(
                out,
                format_args!("{name}: already runs {}; nothing to do", prepared.package),
            )?;
        } else {
            say(
                out,
                format_args!(
                    "{name}: ready for {} ({}, {} new migration{})",
                    prepared.package,
                    prepared.content_hash,
                    prepared.new_migrations.len(),
                    if prepared.new_migrations.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                ),
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match operations::deploy(
        model,
        name,
        candidate,
        args.allow_irreversible,
        shared(args.skip_shared),
        notice,
    )? {
        Moved::Already { package, .. } => {
            say(
                out,
                format_args!("{name}: already runs {package}; nothing to do"),
            )?;
        }
        Moved::To {
            number,
            package,
            from,
        } => say(
            out,
            format_args!(
                "{name}: generation {number}: {package}{}",
                from.map(|(n, p)| format!(" (was generation {n}: {p})"))
                    .unwrap_or_default()
            ),
        )?,
        moved @ Moved::Recovered { .. } => report(name, &moved, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether this host runs the `[deploy] shared` commands.
fn shared(skip: bool) -> operations::Shared {
    if skip {
        operations::Shared::Elsewhere
    } else {
        operations::Shared::Here
    }
}

pub fn history(model: &Model, args: &HistoryArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let (_, profile) = profiled(model, &args.instance)?;
    let generations = profile.generations()?;
    let current = profile.current(&generations)?;
    let width = generations.last().map_or(1, |g| g.number.to_string().len());
    let commits = crate::release::commits(model);
    let in_flight = operations::in_flight(model, &args.instance)?;
    for g in &generations {
        let mut mark = String::new();
        let made_by = in_flight.as_ref().filter(|f| f.making == Some(g.number));
        match Record::of(&profile, g.number)? {
            Some(r) if !r.healthy && made_by.is_some_and(|f| f.running) => {
                mark.push_str("   (deploy in progress)");
            }
            Some(r) if !r.healthy && made_by.is_some() => {
                mark.push_str("   (interrupted deploy: the next `deploy` or `rollback` undoes it)");
            }
            Some(r) if !r.healthy => mark.push_str("   (failed deploy: rollback skips it)"),
            Some(r) if r.reversed => mark.push_str("   (rolled back: rollback skips it)"),
            _ => {}
        }
        if current == Current::Generation(g.number) {
            mark.push_str("   (current)");
        }
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

/// `djshim status`: a table for a person, or (`--json`) one object for an
/// engine.
pub fn status(model: &Model, args: &StatusArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let all = operations::status(model, &args.instances)?;
    if args.json {
        let instances: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|s| {
                let value = serde_json::to_value(s).expect("a status is plain data");
                (s.instance.clone(), value)
            })
            .collect();
        let object = serde_json::json!({ "project": model.project, "instances": instances });
        say(out, format_args!("{object:#}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "INSTANCE",
            "GENERATION",
            "PACKAGE",
            "HASH",
            "HEALTHY",
            "UNITS",
        ]
        .map(String::from),
    ];
    for s in &all {
        let package = match (&s.package, &s.commit) {
            (None, _) => "(none)".to_owned(),
            (Some(p), None) => p.to_string(),
            (Some(p), Some(commit)) => format!("{p} (commit {commit})"),
        };
        let healthy = match (&s.unfinished, s.healthy) {
            (Some(u), _) if u.running => "(run in progress)".to_owned(),
            (Some(_), _) => "(interrupted run)".to_owned(),
            (None, Some(true)) => "yes".to_owned(),
            (None, Some(false)) => "no".to_owned(),
            (None, None) => "-".to_owned(),
        };
        let units: Vec<String> = s
            .units
            .iter()
            .map(|(u, state)| format!("{u} {state}"))
            .collect();
        rows.push([
            s.instance.clone(),
            s.generation
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            package,
            s.content_hash
                .as_deref()
                .map_or_else(|| "-".to_owned(), |h| h.chars().take(19).collect()),
            healthy,
            if units.is_empty() {
                "-".to_owned()
            } else {
                units.join(", ")
            },
        ]);
    }
    crate::progress::table(out, &rows)?;
    Ok(ExitCode::SUCCESS)
}

/// `djshim window INSTANCE open|close`.
pub fn window(model: &Model, args: &WindowArgs, out: &mut dyn Write) -> Result<ExitCode, Error> {
    let name = &args.instance;
    let open = matches!(args.action, WindowAction::Open);
    let held = operations::hold(model, name, open, notice)?;
    let mode = model.select(std::slice::from_ref(name))?[0]
        .deploy
        .window
        .name();
    let line = match held {
        operations::Held::Opened => format!("window open (`{mode}`): no old code serves"),
        operations::Held::Renewed => {
            format!("window open already (`{mode}`): its deadline renewed")
        }
        operations::Held::Closed => {
            "window closed: the server starts what the profile points at".into()
        }
        operations::Held::NoneOpen => "no window open; nothing to do".into(),
    };
    say(out, format_args!("{name}: {line}"))?;
    Ok(ExitCode::SUCCESS)
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
