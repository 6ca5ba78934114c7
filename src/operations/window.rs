//! The deploy window (`[deploy] window = "stop" | "503"`): while a
//! deploy's steps change the schema, the server's launcher holds requests
//! on the systemd socket, or answers 503, instead of serving them with the
//! old code. A window djshim only *believes* open holds nothing, so it is
//! checked twice before the migration: systemd must run the unit files on
//! disk (`NeedDaemonReload=no`), and after the window's restart the
//! server's launcher must be seen holding (its `window.py` child, with
//! this window's file and mode).

use std::time::{Duration, Instant};

use camino::Utf8Path;

use super::plan::{Plan, Planned, Step, Undo};
use crate::error::Error;
use crate::model::{Instance, Window};
use crate::process::Process;
use crate::progress::timed;

/// How long the launcher may take from its restart to holding requests.
const HOLD_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one `systemctl show` may take.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The server unit whose launcher runs the window.
pub fn unit(instance: &Instance) -> String {
    format!("{}.service", instance.full_name)
}

/// The steps of a plan's window.
pub struct Steps {
    /// Write the window file, restart the server unit into it, check that
    /// its launcher holds; undone, the file goes.
    pub open: Vec<Planned>,
    /// Remove the window file; undone (a later step failed once the new
    /// code served), the window opens again: the way back changes the
    /// schema under the code that serves, as the way forward did.
    pub close: Planned,
    /// What opens the window afresh (a new deadline, the launcher
    /// restarted into it), for an undo that migrates back.
    pub reopen: Vec<Step>,
}

/// The window steps of `instance`; `None` when the old code serves. The
/// window's restart is always `systemctl try-restart` of the server unit,
/// whatever `restart` says: the window is the launcher's, and only a
/// restart of that unit runs it. It is preceded by `systemctl
/// reset-failed` of the unit, which zeroes systemd's start-rate counter: a
/// deliberate restart is not a crash loop, and a deploy soon after another
/// (or a window an engine opened, then a deploy, then a rollback) once hit
/// `StartLimitBurst` (5 starts in 10 s), which left the server and its
/// socket failed.
pub fn steps(instance: &Instance) -> Option<Steps> {
    let wait = match instance.deploy.window {
        Window::Serve => return None,
        Window::Stop => true,
        Window::Unavailable => false,
    };
    let unit = unit(instance);
    let close = Step::Window { seconds: 0, wait };
    let reopen = vec![
        Step::Window {
            seconds: instance.deploy.window_timeout.as_secs(),
            wait,
        },
        Step::Run {
            what: "window".into(),
            argv: vec!["systemctl".into(), "reset-failed".into(), unit.clone()],
        },
        Step::Run {
            what: "window".into(),
            argv: vec!["systemctl".into(), "try-restart".into(), unit.clone()],
        },
    ];
    let mut open: Vec<Planned> = reopen
        .iter()
        .map(|step| Planned {
            step: step.clone(),
            undo: Undo::nothing(),
        })
        .collect();
    open[0].undo = Undo::Steps(vec![close.clone()]);
    open.push(Planned {
        step: Step::Held { unit, wait },
        undo: Undo::nothing(),
    });
    Some(Steps {
        open,
        close: Planned {
            step: close,
            undo: Undo::Steps(reopen.clone()),
        },
        reopen,
    })
}

/// Before a plan with a window: systemd must have loaded the server unit
/// as it is on disk, else the window's restart would start the launcher
/// systemd remembers (written for another `window`, or none). Nothing to
/// ask for a plan without one.
pub fn ready_for(plan: &Plan, instance: &Instance) -> Result<(), Error> {
    if !plan
        .steps
        .iter()
        .any(|p| matches!(p.step, Step::Held { .. }))
    {
        return Ok(());
    }
    timed(
        &format!(
            "{}: check that systemd runs the units on disk",
            plan.operation
        ),
        || ready(instance),
    )
}

/// Opens the window file `flag` for `seconds` from now (its content: the
/// deadline, in seconds since the epoch, which window.py reads too), or
/// removes it (`seconds` 0).
pub fn write(flag: &Utf8Path, seconds: u64) -> Result<(), Error> {
    if seconds == 0 {
        return match std::fs::remove_file(flag) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", flag, e)),
            _ => Ok(()),
        };
    }
    let deadline = format!("{}\n", epoch_seconds() + seconds);
    let (dir, name) = (
        flag.parent().expect("a directory"),
        flag.file_name().expect("a file name"),
    );
    crate::write::write_atomic(dir, name, deadline.as_bytes(), 0o644)
}

/// The deadline of the window file `flag`, if there is one: now, when it
/// has passed, so that a step started after it is stopped at once (the
/// launcher serves again by then). Whether a window is open is
/// [`until`]'s.
pub fn deadline(flag: &Utf8Path) -> Option<Instant> {
    let at = stamped(flag)?;
    Some(Instant::now() + Duration::from_secs(at.saturating_sub(epoch_seconds())))
}

/// Removes the window file `flag` when its deadline has passed: that
/// window has ended (its launcher serves), and the file would bound the
/// steps of the next plan as if one were open, stopping each at once.
pub fn forget_ended(flag: &Utf8Path) -> Result<(), Error> {
    if flag.exists() && until(flag).is_none() {
        write(flag, 0)?;
    }
    Ok(())
}

/// The deadline of the window of `flag`, in seconds since the epoch, if
/// one is open: a file whose deadline has passed is a window that ended
/// (window.py let the launcher serve then), not one to renew.
pub fn until(flag: &Utf8Path) -> Option<u64> {
    stamped(flag).filter(|at| *at > epoch_seconds())
}

/// The deadline written in the window file `flag`, passed or not.
fn stamped(flag: &Utf8Path) -> Option<u64> {
    std::fs::read_to_string(flag).ok()?.trim().parse().ok()
}

fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn ready(instance: &Instance) -> Result<(), Error> {
    let unit = unit(instance);
    if show(&unit, "NeedDaemonReload")? == "yes" {
        return Err(Error::with_help(
            format!(
                "{unit} changed on disk since systemd loaded it, so the deploy window \
             (`window = \"{}\"`) could not be trusted to hold requests",
                instance.deploy.window.name()
            ),
            "run \
             `systemctl daemon-reload` (after `djshim systemd`), then deploy again",
        ));
    }
    Ok(())
}

/// After the window's restart: the launcher of `unit` runs window.py on
/// `flag` in the mode `wait` says, or the unit is not running at all (then
/// no old code serves, and a request that starts it finds the window).
/// Waits up to [`HOLD_TIMEOUT`] for it. The unit's state when it is not
/// running.
pub fn held(unit: &str, flag: &Utf8Path, wait: bool) -> Result<Option<String>, Error> {
    let mode = if wait { "stop" } else { "503" };
    let start = Instant::now();
    loop {
        let state = show(unit, "ActiveState")?;
        if !matches!(state.as_str(), "active" | "activating" | "reloading") {
            return Ok(Some(state));
        }
        let main: i32 = show(unit, "MainPID")?.parse().unwrap_or(0);
        let seen = if main == 0 {
            Seen::NotYet(format!("{unit} is {state}, with no main process yet"))
        } else {
            launcher(main, flag, mode)
        };
        let what = match seen {
            Seen::Held => return Ok(None),
            Seen::NotYet(_) if start.elapsed() < HOLD_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Seen::NotYet(what) | Seen::Never(what) => what,
        };
        return Err(Error::with_help(
            format!(
                "the deploy window did not open: {unit} does not run the `{mode}` window ({what}), \
             so the old code would serve while the schema changes"
            ),
            "the unit systemd \
             runs was written for another `window` (or none): run `djshim systemd` and \
             `systemctl daemon-reload`, then deploy again",
        ));
    }
}

/// What the server's main process shows of the window.
enum Seen {
    /// A child runs window.py on this window's file, in its mode.
    Held,
    /// The launcher (`sh -c`) runs, and has not started window.py yet.
    NotYet(String),
    /// The launcher is past the window, or runs another one.
    Never(String),
}

/// What `main`, the server's main process, shows of the window `flag` in
/// `mode`.
fn launcher(main: i32, flag: &Utf8Path, mode: &str) -> Seen {
    let argv = crate::procs::cmdline(main);
    if argv.is_empty() {
        // Gone between `systemctl show` and now: ask again.
        return Seen::NotYet(format!("its main process {main} is gone"));
    }
    let is_shell = argv.get(1).map(String::as_str) == Some("-c")
        && argv.first().is_some_and(|p| p.ends_with("sh"));
    let mut seen = vec![format!("its main process runs {}", shown(&argv))];
    if !is_shell {
        return Seen::Never(seen.join("; "));
    }
    for pid in children(main) {
        let argv = crate::procs::cmdline(pid);
        // `PYTHON -c CODE FLAG MODE LAUNCHER`, as the launcher starts it
        // (units an earlier djshim wrote leave out LAUNCHER: their
        // window would outlive a stop of the unit).
        if argv.len() >= 5 && argv[1] == "-c" && argv[2].contains("is_open") {
            if argv.len() == 6
                && argv[3] == flag.as_str()
                && argv[4] == mode
                && argv[5] == main.to_string()
            {
                return Seen::Held;
            }
            seen.push(format!("its window is {} on {}", argv[4], argv[3]));
            return Seen::Never(seen.join("; "));
        }
        seen.push(format!("a child runs {}", shown(&argv)));
    }
    Seen::NotYet(seen.join("; "))
}

/// `systemctl show -P PROPERTY UNIT`.
fn show(unit: &str, property: &str) -> Result<String, Error> {
    let out = Process::new("systemctl")
        .args(["show", "-P", property, unit])
        .timeout(SHOW_TIMEOUT)
        .output()?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// A command line for a message: the first words, each cut short.
fn shown(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .take(4)
        .map(|a| {
            let a = crate::error::clean(a);
            if a.chars().count() > 40 {
                format!("{}…", a.chars().take(40).collect::<String>())
            } else {
                a
            }
        })
        .collect();
    if words.is_empty() {
        "gone".into()
    } else {
        words.join(" ")
    }
}

/// The processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    crate::procs::all()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_whose_deadline_passed_is_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let flag = Utf8Path::from_path(dir.path()).unwrap().join("window");
        assert_eq!(until(&flag), None);
        let now = epoch_seconds();
        for (at, open) in [(now - 5, false), (now, false), (now + 30, true)] {
            std::fs::write(&flag, format!("{at}\n")).unwrap();
            assert_eq!(until(&flag), open.then_some(at), "deadline {at}, now {now}");
            // A step bounded by a window that ended is stopped at once.
            let left = deadline(&flag)
                .unwrap()
                .saturating_duration_since(Instant::now());
            assert_eq!(
                left > Duration::from_secs(20),
                open,
                "deadline {at}, now {now}"
            );
        }
    }
}
