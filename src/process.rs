//! Every child process djshim starts goes through [`Process`]: program,
//! arguments, environment and working directory are data (never a string
//! for `sh -c` to split), and a failure quotes the whole command line, how it
//! ended, and the end of what it wrote to stderr.
//!
//! No child outlives djshim unnoticed: each starts in a process group of
//! its own with `SIGKILL` as its parent-death signal (a `kill -9` of djshim
//! takes its child along), and when a child ends — or its deadline passes —
//! whatever is left of its group is killed, so a process it left behind
//! can neither hold djshim's pipes open nor work on unseen.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Error;
use crate::quote::sh_quote;

/// How a child ended: its exit code (`None`: killed by a signal), its
/// stdout, its stderr.
pub type Outcome = (Option<i32>, Vec<u8>, Vec<u8>);

/// How a child ended (`None`: killed at its deadline), its stdout, its
/// stderr.
type Collected = (Option<std::process::ExitStatus>, Vec<u8>, Vec<u8>);

/// A command to run.
#[derive(Debug, Clone)]
pub struct Process {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<Utf8PathBuf>,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    clear_env: bool,
    input: Option<Vec<u8>>,
    record: Option<Utf8PathBuf>,
}

impl Process {
    pub fn new(program: impl AsRef<OsStr>) -> Process {
        Process {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            timeout: None,
            deadline: None,
            clear_env: false,
            input: None,
            record: None,
        }
    }

    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Process {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Process {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    #[must_use]
    pub fn cwd(mut self, dir: impl Into<Utf8PathBuf>) -> Process {
        self.cwd = Some(dir.into());
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Process {
        self.timeout = Some(timeout);
        self
    }

    /// Ends it at `deadline` (and at its timeout, whichever comes first).
    #[must_use]
    pub fn deadline(mut self, deadline: Instant) -> Process {
        self.deadline = Some(deadline);
        self
    }

    /// Removes a variable from its environment.
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Process {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts it with no variable but those given with [`Process::env`].
    #[must_use]
    pub fn env_clear(mut self) -> Process {
        self.clear_env = true;
        self
    }

    /// Feeds `bytes` to its stdin (else stdin is /dev/null).
    #[must_use]
    pub fn input(mut self, bytes: Vec<u8>) -> Process {
        self.input = Some(bytes);
        self
    }

    /// Keeps its process group in `file` while it runs: the group's
    /// number and its leader's start time, written once it started and
    /// removed once it ended and its group was killed. A `kill -9` of
    /// djshim leaves the file, and the next run stops with
    /// [`stop_left`] whatever the child left in its group (the leader
    /// dies with djshim; a process it started would live on).
    #[must_use]
    pub fn recorded(mut self, file: impl Into<Utf8PathBuf>) -> Process {
        self.record = Some(file.into());
        self
    }

    /// When it must have ended, from now.
    fn ends_at(&self) -> Option<Instant> {
        let by_timeout = self.timeout.map(|t| Instant::now() + t);
        match (by_timeout, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one system call (prctl), which is async-signal-safe; it
        // touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        if self.clear_env {
            cmd.env_clear();
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Runs it, its output captured; stdout on success.
    pub fn output(&self) -> Result<Vec<u8>, Error> {
        self.capture(false)
    }

    /// Runs it, its output captured, and tells how it ended whatever its
    /// status: (exit code, `None` when killed by a signal; stdout;
    /// stderr). An error only when it could not start or did not end by
    /// its deadline.
    pub fn outcome(&self) -> Result<Outcome, Error> {
        let (status, out, err) = self.collect(false)?;
        match status {
            Some(status) => Ok((status.code(), out, err)),
            None => Err(self
                .ended(None, &err)
                .err()
                .unwrap_or_else(|| self.failed("did not end".into(), ""))),
        }
    }

    /// Runs it, stdout captured, stderr shown as it comes (nix-build's
    /// progress, so a long build shows that it is alive); stdout on success.
    pub fn output_showing_progress(&self) -> Result<Vec<u8>, Error> {
        self.capture(true)
    }

    fn capture(&self, show_stderr: bool) -> Result<Vec<u8>, Error> {
        let (status, out, err) = self.collect(show_stderr)?;
        self.ended(status, &err).map(|()| out)
    }

    /// Runs it with its input fed and its stdout (and, unless
    /// `show_stderr`, its stderr) read to the end: how it ended (`None`:
    /// killed at its deadline), its stdout, its stderr.
    fn collect(&self, show_stderr: bool) -> Result<Collected, Error> {
        let mut child = self
            .command()
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(if show_stderr {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .spawn()
            .map_err(|e| self.failed(format!("could not start: {e}"), ""))?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), self.input.clone()) {
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut stdin, &input);
            });
        }
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let status = self.wait(&mut child)?;
        Ok((
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        ))
    }

    /// Runs it with its output going to djshim's stderr (a build's log must
    /// not mix into the path printed on stdout).
    pub fn run(&self) -> Result<(), Error> {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| self.failed(format!("could not start: {e}"), ""))?;
        let status = self.wait(&mut child)?;
        self.ended(status, &[])
    }

    /// Ok when the child succeeded; else how it ended (`None`: the
    /// timeout), with the end of its stderr.
    fn ended(&self, status: Option<std::process::ExitStatus>, stderr: &[u8]) -> Result<(), Error> {
        let stderr = String::from_utf8_lossy(stderr);
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(self.failed(format!("{status}"), &stderr)),
            None => Err(self.failed(
                match self.timeout {
                    Some(t) => format!("did not end within {} s: killed", t.as_secs()),
                    None => "did not end by its deadline: killed".into(),
                },
                &stderr,
            )),
        }
    }

    /// Waits for the child, killing it at its deadline (`None` then); then
    /// kills what is left of its process group.
    fn wait(
        &self,
        child: &mut std::process::Child,
    ) -> Result<Option<std::process::ExitStatus>, Error> {
        let group = rustix::process::Pid::from_child(child);
        if let Some(file) = &self.record
            && let Err(e) = record(file, group.as_raw_nonzero().get())
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            return Err(e);
        }
        let status = self.wait_leader(child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        if let Some(file) = &self.record {
            let _ = std::fs::remove_file(file);
        }
        status
    }

    fn wait_leader(
        &self,
        child: &mut std::process::Child,
    ) -> Result<Option<std::process::ExitStatus>, Error> {
        let deadline = self.ends_at();
        let interruptible = crate::interrupt::armed();
        if deadline.is_none() && !interruptible {
            return child
                .wait()
                .map(Some)
                .map_err(|e| self.failed(format!("could not wait: {e}"), ""));
        }
        // A Ctrl-C, SIGTERM or hang-up from now on stops it (djshim counts
        // them instead of dying: the plan undoes the step).
        let signals = crate::interrupt::count();
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| self.failed(format!("could not wait: {e}"), ""))?
            {
                return Ok(Some(status));
            }
            if interruptible && crate::interrupt::count() > signals {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.failed(
                    format!("stopped: djshim was {}", crate::interrupt::interrupted()),
                    "",
                ));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(nap.min(left.unwrap_or(nap)));
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    fn failed(&self, how: String, stderr: &str) -> Error {
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(5)
            .collect();
        Error::Command {
            command: self.to_string(),
            how,
            stderr: tail.into_iter().rev().map(crate::error::clean).collect(),
        }
    }
}

/// Writes `group` and its leader's start time to `file`, whole or not at
/// all (a temporary file renamed over it).
fn record(file: &Utf8Path, group: i32) -> Result<(), Error> {
    // The leader may have ended already: then no process of that number
    // is the group's (see `stop_left`).
    let start = crate::procs::stat(group)
        .filter(|p| p.group == group)
        .map_or_else(|| "-".to_owned(), |p| p.start.to_string());
    let partial = Utf8PathBuf::from(format!("{file}.partial"));
    std::fs::write(&partial, format!("{group} {start}\n"))
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| Error::io("write", &partial, e))
}

/// Stops what a child recorded in `file` (see [`Process::recorded`]) left
/// behind when djshim was killed: SIGKILL to the processes of its group,
/// until none is left, then removes the file. How many there were; none
/// when there is no file, the group is empty, or its number now names
/// another process's group (the leader's start time tells).
pub fn stop_left(file: &Utf8Path) -> Result<usize, Error> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read", file, e)),
    };
    let mut words = text.split_whitespace();
    let group: Option<i32> = words.next().and_then(|w| w.parse().ok());
    let start: Option<u64> = words.next().and_then(|w| w.parse().ok());
    let mut most = 0;
    let deadline = Instant::now() + LEFT_TIMEOUT;
    while let Some(group) = group.filter(|&g| g > 1) {
        let all = crate::procs::all();
        // While any process is in the group its number is not given to
        // another process; a process of that number is the group's
        // leader, ours only if it started when ours did.
        if all.iter().any(|p| p.pid == group && Some(p.start) != start) {
            break;
        }
        let left = all
            .iter()
            .filter(|p| p.group == group && p.state != 'Z')
            .count();
        if left == 0 {
            break;
        }
        most = most.max(left);
        if Instant::now() > deadline {
            return Err(Error::with_help(
                format!(
                    "{left} processes of group {group}, left by a killed run's step (as {file} \
                 says), did not end within {} s of SIGKILL",
                    LEFT_TIMEOUT.as_secs()
                ),
                format!(
                    "see `ps -o pid,stat,cmd \
                 -g {group}`; once they are gone, run the command again"
                ),
            ));
        }
        if let Some(pid) = rustix::process::Pid::from_raw(group) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(file).map_err(|e| Error::io("remove", file, e))?;
    Ok(most)
}

/// How long the processes a killed run left get to end after SIGKILL (an
/// uninterruptible sleep on a slow disk can hold one for a while).
const LEFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where system programs are looked up (`check` and the shims use the
/// same list), never on the caller's `PATH`.
pub const TOOL_DIRS: [&str; 5] = [
    "/run/current-system/sw/bin",
    "/usr/bin",
    "/bin",
    "/usr/sbin",
    "/sbin",
];

/// A system program in [`TOOL_DIRS`] (an executable file), found the way
/// the shims find theirs.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    TOOL_DIRS
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Reads a child's pipe to its end in a thread of its own (two pipes read
/// one after the other could block the child on the other); nothing when
/// the stream is not piped.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The command line as a user would type it: each word sh-quoted.
impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.cwd {
            write!(f, "(cd {} && ", sh_quote(dir.as_str()))?;
        }
        write!(f, "{}", sh_quote(&self.program.to_string_lossy()))?;
        for arg in &self.args {
            write!(f, " {}", sh_quote(&arg.to_string_lossy()))?;
        }
        if self.cwd.is_some() {
            write!(f, ")")?;
        }
        Ok(())
    }
}
