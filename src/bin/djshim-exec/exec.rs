//! `djshim-exec`: the last step of a shim that runs as an account or reads
//! env files, compiled because a shell cannot do it cheaply or safely.
//!
//! It opens each env file once, as the caller (root can read a 0600 file),
//! and checks the *open* file: regular, owned by root or the instance's
//! account, not group- or world-writable; a root-owned file read for an
//! account only from directories that root alone can change. Then it
//! switches to the account (supplementary groups from NSS, as setpriv's
//! `--init-groups`), and only then reads and parses the files (systemd's
//! rules, [`crate::envfile`]): nothing in them reaches a process of root,
//! nor any argv. Last, it execs the program with those variables added.
//!
//! On a terminal the account must not share root's terminal (TIOCSTI, or a
//! process it leaves reading what root types next): the helper starts
//! itself again on the descriptors it opened (`--opened FD:PATH`), in a
//! session of its own (`--session`) on a new pty, and relays between the
//! two terminals until the account's side ends ([`crate::relay`]). Only
//! fds 0–2 reach a process of the account.
//!
//! Usage (written by `djshim generate` into shims; not for people):
//!
//! ```text
//! djshim-exec --command NAME [--user USER [--group GROUP]] [--env-file PATH]...
//!             [--opened FD:PATH]... [--session] -- PROGRAM [ARG]...
//! ```
//!
//! Exit status: the program's; 77 for an account problem, 78 for an env
//! file problem, 126/127 when the program cannot be started, 2 for usage.

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::unistd::{Gid, Group, Uid, User};

use crate::envfile;
use crate::envrule::{self, Rule};
use crate::relay::{Pty, Terminals};

/// What the shim asks for.
#[derive(Debug, Default)]
struct Request {
    /// The shim's name, first on every message.
    command: String,
    user: Option<String>,
    group: Option<String>,
    files: Vec<PathBuf>,
    /// Files a first run of the helper opened and checked, on these descriptors.
    opened: Vec<(RawFd, PathBuf)>,
    /// This is the account's side under a relay: a session of its own
    /// first (`--session`).
    session: bool,
    program: Vec<OsString>,
}

/// Why nothing was run: an exit status and a message.
#[derive(Debug)]
struct Failure {
    status: u8,
    message: String,
}

fn fail<T>(status: u8, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        status,
        message: message.into(),
    })
}

/// The helper's `main`: never returns when the program starts.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = command_name(&args);
    let failure = match parse(args).and_then(|request| run(&request)) {
        Ok(status) => return status,
        Err(failure) => failure,
    };
    eprintln!("{command}: {}", failure.message);
    ExitCode::from(failure.status)
}

/// The value of `--command`, for messages about the arguments themselves.
fn command_name(args: &[OsString]) -> String {
    let options = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args[..options]
        .windows(2)
        .find(|pair| pair[0] == "--command")
        .map_or_else(
            || "djshim-exec".to_owned(),
            |pair| pair[1].to_string_lossy().into_owned(),
        )
}

fn parse(args: Vec<OsString>) -> Result<Request, Failure> {
    let usage = |what: &str| {
        fail(
            2,
            format!(
                "{what}\nusage: djshim-exec --command NAME [--user USER [--group GROUP]] \
                 [--env-file PATH]... -- PROGRAM [ARG]..."
            ),
        )
    };
    let mut request = Request::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            request.program = args.collect();
            break;
        }
        if arg == "--session" {
            request.session = true;
            continue;
        }
        let Some(value) = args.next() else {
            return usage(&format!("{} needs a value", arg.to_string_lossy()));
        };
        match arg.to_str() {
            Some("--command") => request.command = value.to_string_lossy().into_owned(),
            Some("--user") => request.user = Some(utf8(value)?),
            Some("--group") => request.group = Some(utf8(value)?),
            Some("--env-file") => request.files.push(value.into()),
            Some("--opened") => {
                let bytes = value.as_bytes();
                let colon = bytes.iter().position(|&b| b == b':');
                let fd = colon
                    .and_then(|at| std::str::from_utf8(&bytes[..at]).ok())
                    .and_then(|n| n.parse::<RawFd>().ok())
                    .filter(|&fd| fd > 2);
                match (fd, colon) {
                    (Some(fd), Some(at)) => request
                        .opened
                        .push((fd, OsStr::from_bytes(&bytes[at + 1..]).into())),
                    _ => return usage("--opened takes FD:PATH, FD above 2"),
                }
            }
            _ => return usage(&format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    if request.program.is_empty() {
        return usage("no program to run");
    }
    Ok(request)
}

fn utf8(value: OsString) -> Result<String, Failure> {
    value
        .into_string()
        .or_else(|v| fail(2, format!("{} is not UTF-8", v.to_string_lossy())))
}

/// The instance's account, as NSS knows it.
struct Account {
    user: User,
    /// The configured group's id, else the account's own group.
    gid: Gid,
    /// Whether a group was configured (root then switches even to root).
    group: Option<String>,
}

impl Account {
    /// The group its processes run with: the configured one, else the
    /// account's own (by name when it has one).
    fn group_name(&self) -> String {
        self.group.clone().unwrap_or_else(|| group_name(self.gid))
    }

    fn look_up(name: &str, group: Option<&str>) -> Result<Account, Failure> {
        let Ok(Some(user)) = User::from_name(name) else {
            return fail(77, format!("the account {name} does not exist"));
        };
        let gid = match group {
            None => user.gid,
            Some(group) => match Group::from_name(group) {
                Ok(Some(g)) => g.gid,
                _ => return fail(77, format!("the group {group} does not exist")),
            },
        };
        Ok(Account {
            user,
            gid,
            group: group.map(str::to_owned),
        })
    }

    fn c_name(&self) -> CString {
        // A name from NSS holds no NUL.
        CString::new(self.user.name.as_bytes()).unwrap_or_default()
    }

    /// Becomes the account: supplementary groups, group, user, in that
    /// order (each later step needs root). The groups are systemd's rule
    /// for `User=` and `Group=`: the account's groups from NSS
    /// (`getgrouplist`) with the instance's group as the base, so the
    /// shim, its terminal relay and the unit all get the same set.
    ///
    /// The kernel clears the parent-death signal when the credentials
    /// change: the one djshim set on its step (so that a killed deploy
    /// takes its `migrate` along) is set again once the switch is done,
    /// and if the parent died in between, nothing runs.
    fn become_it(&self) -> Result<(), Failure> {
        let name = &self.user.name;
        let death = rustix::process::parent_process_death_signal().unwrap_or(None);
        let parent = rustix::process::getppid();
        nix::unistd::initgroups(&self.c_name(), self.gid)
            .or_else(|e| fail(77, format!("cannot set the groups of {name}: {e}")))?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid)
            .or_else(|e| fail(77, format!("cannot switch to the group of {name}: {e}")))?;
        nix::unistd::setresuid(self.user.uid, self.user.uid, self.user.uid)
            .or_else(|e| fail(77, format!("cannot switch to {name}: {e}")))?;
        if death.is_some() {
            rustix::process::set_parent_process_death_signal(death)
                .or_else(|e| fail(77, format!("cannot keep the parent-death signal: {e}")))?;
            if rustix::process::getppid() != parent {
                return fail(77, "the process that started this command has ended");
            }
        }
        Ok(())
    }
}

/// What comes after the checks.
enum Next {
    /// Exec this.
    Exec(Command),
    /// The account's side ran under the relay and ended so: exit so.
    Exit(u8),
}

/// Runs the request; returns only when something stops it.
fn run(request: &Request) -> Result<ExitCode, Failure> {
    match prepare(request)? {
        Next::Exec(command) => {
            let program = request.program[0].to_string_lossy().into_owned();
            Err(start(command, &program))
        }
        Next::Exit(status) => Ok(ExitCode::from(status)),
    }
}

/// Everything up to the exec: the command to exec.
fn prepare(request: &Request) -> Result<Next, Failure> {
    let caller = nix::unistd::geteuid();
    let account = match &request.user {
        Some(name) => Some(Account::look_up(name, request.group.as_deref())?),
        None => None,
    };
    let switch = match &account {
        None => false,
        Some(a) if caller.is_root() && (!a.user.uid.is_root() || a.group.is_some()) => true,
        Some(a) if caller == a.user.uid => false,
        Some(a) => {
            return fail(
                77,
                format!(
                    "this runs as {name}: start it as root or as {name}, not as uid {caller}",
                    name = a.user.name
                ),
            );
        }
    };
    if switch {
        // Only fds 0–2 reach the account's process.
        let keep: Vec<RawFd> = request.opened.iter().map(|(fd, _)| *fd).collect();
        crate::relay::close_above_stderr_on_exec(&keep);
    }
    // The account a file may belong to besides root.
    let owner = account.as_ref().map_or(caller, |a| a.user.uid);
    // A root-owned file read for another account: its directories count too.
    let guard_dirs = switch && !owner.is_root();
    let rule = Rule {
        owner: owner.as_raw(),
        guard_dirs,
    };
    let mut files = Vec::new();
    for path in &request.files {
        let opened = envrule::open(path, rule);
        match (opened.refusals.first(), opened.file) {
            (None, Some(file)) => files.push((file, path.clone())),
            (refusal, _) => {
                let why = refusal.map_or_else(
                    || "cannot be opened".to_owned(),
                    |r| r.describe(&account_name(owner)),
                );
                let mut message = format!("env file {} {why}", path.display());
                // The account running its own shim, the file root's alone:
                // the fix the README gives.
                if let Some(envrule::Refusal::Denied(_)) = refusal
                    && !caller.is_root()
                {
                    // The account runs its shim itself: its own group.
                    let group = account
                        .as_ref()
                        .map_or_else(|| group_name(nix::unistd::getegid()), Account::group_name);
                    let _ = write!(
                        message,
                        "; it is root's alone, for root to run this command (cron, systemd, \
                         sudo); for {name} to run it too, make it root:{group} 0640 (`chown \
                         root:{group} {file}; chmod 0640 {file}`)",
                        name = account_name(caller),
                        file = path.display(),
                    );
                }
                return fail(78, message);
            }
        }
    }
    for (fd, path) in &request.opened {
        files.push((inherited(*fd, path)?, path.clone()));
    }

    // HOME and the names describe the account the program runs as.
    let mut env: Vec<(&str, OsString)> = Vec::new();
    if let Some(account) = account.as_ref().filter(|_| switch) {
        let name = &account.user.name;
        env.push(("HOME", account.user.dir.clone().into_os_string()));
        env.extend([("USER", name.into()), ("LOGNAME", name.into())]);
        if request.session {
            crate::relay::new_session()
                .or_else(|e| fail(77, format!("cannot start a session of its own: {e}")))?;
        } else if Terminals::now().any() || has_terminal() {
            return hand_over(request, account, files);
        }
        account.become_it()?;
    }

    // From here on this is the account's process (or the caller's, when
    // nothing switches): only now are the files read.
    let mut command = Command::new(&request.program[0]);
    command.args(&request.program[1..]).envs(env);
    for (file, path) in files {
        for (key, value) in read(file, &path)? {
            command.env(key, OsString::from_vec(value));
        }
    }
    Ok(Next::Exec(command))
}

/// The name of the account with `uid`, for messages.
/// The name of group `gid` (its number when it has none).
fn group_name(gid: Gid) -> String {
    nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

fn account_name(uid: Uid) -> String {
    User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// A descriptor a first run of the helper opened and checked, passed on
/// to the account's side of the relay.
#[allow(unsafe_code)]
fn inherited(fd: RawFd, path: &Path) -> Result<File, Failure> {
    // Only an open descriptor may be owned.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return fail(
            78,
            format!("env file {} was not handed over", path.display()),
        );
    }
    // SAFETY: `fd` came across exec from the helper that opened it for this
    // run (`--opened`); nothing else in this process owns or closes it.
    let file = unsafe { File::from_raw_fd(fd) };
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        _ => fail(
            78,
            format!("env file {} was not handed over", path.display()),
        ),
    }
}

/// Whether the process has a controlling terminal (`/dev/tty` opens).
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits().cast_signed())
        .open("/dev/tty")
        .is_ok()
}

/// With a terminal: the account's side starts again on the files opened
/// here (`--opened`), in a session of its own (`--session`), on a new pty
/// in place of each terminal among fds 0–2; this process stays root's
/// side of the relay and ends as the account's side ends.
fn hand_over(
    request: &Request,
    account: &Account,
    files: Vec<(File, PathBuf)>,
) -> Result<Next, Failure> {
    let me = std::env::current_exe()
        .or_else(|e| fail(127, format!("cannot find djshim-exec itself: {e}")))?;
    let mut again: Vec<OsString> = vec!["--command".into(), request.command.clone().into()];
    again.extend([
        "--session".into(),
        "--user".into(),
        account.user.name.clone().into(),
    ]);
    if let Some(group) = &account.group {
        again.extend(["--group".into(), group.into()]);
    }
    let mut passed = Vec::new();
    for (file, path) in files {
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty()).or_else(|e| {
            fail(
                78,
                format!("cannot pass on env file {}: {e}", path.display()),
            )
        })?;
        let mut spec = format!("{}:", file.as_raw_fd()).into_bytes();
        spec.extend_from_slice(path.as_os_str().as_bytes());
        again.extend(["--opened".into(), OsString::from_vec(spec)]);
        passed.push(file);
    }
    let terminals = Terminals::now();
    let pty = if terminals.any() {
        Some(Pty::like(terminals).or_else(|e| fail(77, format!("cannot open a pty: {e}")))?)
    } else {
        None
    };
    let mut command = Command::new(&me);
    command.args(again).arg("--").args(&request.program);
    // The account's side dies with this relay, as this relay dies with
    // whoever asked for a parent-death signal (djshim's steps).
    if let Ok(Some(signal)) = rustix::process::parent_process_death_signal() {
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one system call (prctl), which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                rustix::process::set_parent_process_death_signal(Some(signal))
                    .map_err(std::io::Error::from)
            });
        }
    }
    if let Some(pty) = &pty {
        pty.attach(&mut command, terminals)
            .or_else(|e| fail(77, format!("cannot open a pty: {e}")))?;
    }
    let signals = crate::relay::block_signals()
        .or_else(|e| fail(77, format!("cannot block signals: {e}")))?;
    let child = command
        .spawn()
        .or_else(|e| fail(126, format!("cannot start djshim-exec again: {e}")))?;
    // The account's side has its own copies now.
    drop(passed);
    Ok(Next::Exit(crate::relay::relay(
        child, pty, terminals, &signals,
    )))
}

/// Reads and parses one env file, as the account it runs for.
fn read(mut file: File, path: &Path) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let shown = path.display();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .or_else(|e| fail(78, format!("cannot read env file {shown}: {e}")))?;
    let reading = envfile::read(&bytes);
    if let Some((line, key)) = reading.refused.first() {
        return fail(
            78,
            format!(
                "{shown}:{line}: {key} may not be set from an env file: it would steer the \
                 loader, djshim or the shell"
            ),
        );
    }
    if let Some(line) = reading.nul {
        return fail(
            78,
            format!(
                "{shown}:{line}: a NUL byte: systemd refuses such a file (the unit does not \
                 start), and so does the shim"
            ),
        );
    }
    if let Some((line, what)) = reading.not_utf8.first() {
        return fail(
            78,
            format!(
                "{shown}:{line}: {what} is not UTF-8 as systemd reads it (systemd refuses such a \
                 file too)"
            ),
        );
    }
    if let Some((line, why)) = reading.versions_differ.first() {
        return fail(78, format!("{shown}:{line}: {why}"));
    }
    Ok(reading
        .assignments
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect())
}

/// Execs `command`; returns why it could not.
fn start(mut command: Command, program: &str) -> Failure {
    let error = command.exec();
    Failure {
        status: if error.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        message: format!("cannot run {program}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_the_shim_writes() {
        let r = parse(args(&[
            "--command",
            "t-app",
            "--user",
            "app",
            "--env-file",
            "/e",
            "--opened",
            "5:/a:b",
            "--",
            "/py",
            "manage.py",
            "--",
            "x",
        ]))
        .unwrap();
        assert_eq!(r.command, "t-app");
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.files, [PathBuf::from("/e")]);
        assert_eq!(r.opened, [(5, PathBuf::from("/a:b"))]);
        assert_eq!(r.program, args(&["/py", "manage.py", "--", "x"]));
        for bad in [
            &["--user"][..],
            &["--opened", "1:/x", "--", "p"],
            &["--opened", "x", "--", "p"],
            &["--what", "1", "--", "p"],
            &["--command", "c"],
        ] {
            assert_eq!(parse(args(bad)).unwrap_err().status, 2, "{bad:?}");
        }
    }
}
