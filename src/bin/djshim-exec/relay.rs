//! The account's own terminal. A command that switches accounts while any
//! of fds 0–2 is a terminal must never hold a descriptor of the caller's
//! terminal (it could push keystrokes with `TIOCSTI`, or read what root
//! types at its prompt after the command ended). So, as `su --pty` and
//! sudo's `use_pty` do, the helper opens a new pseudo-terminal, starts the
//! account's side on it (a session of its own, the pty its controlling
//! terminal, the pty in place of each of fds 0–2 that was a terminal), and
//! stays behind on root's side to relay: root's typing to the pty, the
//! pty's output to root's terminal, INT, QUIT, TERM and HUP to the
//! account's process group, window-size changes to the pty. When the
//! account's process ends, the helper ends the way the shell reports it:
//! its exit status, or 128 + the signal that killed it.

use std::fs::File;
use std::io::{self, IsTerminal as _};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags};
use rustix::termios::{OptionalActions, Termios};

/// Which of fds 0–2 are terminals: those the account gets the pty on.
#[derive(Debug, Clone, Copy)]
pub struct Terminals {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Terminals {
    pub fn now() -> Terminals {
        Terminals {
            stdin: io::stdin().is_terminal(),
            stdout: io::stdout().is_terminal(),
            stderr: io::stderr().is_terminal(),
        }
    }

    pub fn any(self) -> bool {
        self.stdin || self.stdout || self.stderr
    }

    /// A descriptor of the caller's terminal (for its settings and size).
    fn one(self) -> RawFd {
        if self.stdin {
            0
        } else if self.stdout {
            1
        } else {
            2
        }
    }
}

/// A new pseudo-terminal: the master stays with the relay, the slave goes
/// to the account's side.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: File,
}

impl Pty {
    /// A pty set up like the caller's terminal (its modes and size).
    pub fn like(terminals: Terminals) -> io::Result<Pty> {
        use rustix::pty::OpenptFlags;
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits().cast_signed())
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        let theirs = borrow(terminals.one());
        if let Ok(modes) = rustix::termios::tcgetattr(theirs) {
            rustix::termios::tcsetattr(&slave, OptionalActions::Now, &modes)?;
        }
        if let Ok(size) = rustix::termios::tcgetwinsize(theirs) {
            rustix::termios::tcsetwinsize(&master, size)?;
        }
        Ok(Pty { master, slave })
    }

    /// Gives `command` the pty in place of each terminal among fds 0–2.
    pub fn attach(&self, command: &mut Command, terminals: Terminals) -> io::Result<()> {
        let slave = || self.slave.try_clone().map(Stdio::from);
        if terminals.stdin {
            command.stdin(slave()?);
        }
        if terminals.stdout {
            command.stdout(slave()?);
        }
        if terminals.stderr {
            command.stderr(slave()?);
        }
        Ok(())
    }
}

/// The account's side, first thing: a session of its own (no way back to
/// the caller's controlling terminal), with the pty, when it has one on
/// fds 0–2, as its controlling terminal.
pub fn new_session() -> io::Result<()> {
    // The relay's blocked signals came along through exec (std's
    // `Command` keeps the parent's mask): the account gets them all.
    SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
    rustix::process::setsid()?;
    if let Some(fd) = (0..=2).find(|&fd| rustix::termios::isatty(borrow(fd))) {
        rustix::process::ioctl_tiocsctty(borrow(fd))?;
    }
    Ok(())
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // fds 0–2 stay open for the whole life of the process.
    match fd {
        0 => rustix::stdio::stdin(),
        1 => rustix::stdio::stdout(),
        _ => rustix::stdio::stderr(),
    }
}

/// The signals the relay handles, blocked (and read from a signalfd)
/// before the account's side starts, so none is lost in between; the
/// account's side unblocks them first thing ([`new_session`]).
pub fn block_signals() -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(signal);
    }
    set.thread_block().map_err(io::Error::from)?;
    Ok(set)
}

/// Relays between the caller's terminal and `pty` (if the account's side
/// has one) until `child` ends; returns the shell's status of it.
pub fn relay(mut child: Child, pty: Option<Pty>, terminals: Terminals, signals: &SigSet) -> u8 {
    let Some(pty) = pty else {
        return forward(&mut child, signals);
    };
    drop(pty.slave);
    let master = pty.master;
    let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
    let Ok(signalfd) = SignalFd::with_flags(signals, flags) else {
        return wait(&mut child);
    };
    let _ = rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK);
    let raw = terminals.stdin.then(|| Raw::enter(borrow(0))).flatten();
    let output = if terminals.stdout { 1 } else { 2 };
    let group = rustix::process::Pid::from_child(&child);
    let mut pending: Vec<u8> = Vec::new();
    let mut reading_input = terminals.stdin;
    let mut buf = [0u8; 4096];
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        let mut wanted = PollFlags::IN;
        if !pending.is_empty() {
            wanted |= PollFlags::OUT;
        }
        let stdin = borrow(0);
        let mut fds = vec![
            PollFd::new(&signalfd, PollFlags::IN),
            PollFd::new(&master, wanted),
        ];
        if reading_input && pending.len() < buf.len() {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        if rustix::event::poll(&mut fds, None).is_err() {
            continue;
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        if ready[0].contains(PollFlags::IN) {
            while let Ok(Some(info)) = signalfd.read_signal() {
                if info.ssi_signo == Signal::SIGWINCH as u32 {
                    if let Ok(size) = rustix::termios::tcgetwinsize(borrow(terminals.one())) {
                        let _ = rustix::termios::tcsetwinsize(&master, size);
                    }
                } else {
                    pass_on(info.ssi_signo, group);
                }
            }
        }
        if ready[1].intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(&master, &mut buf) {
                Ok(n) if n > 0 => write_all(output, &buf[..n]),
                _ => {}
            }
        }
        if ready[1].contains(PollFlags::OUT)
            && !pending.is_empty()
            && let Ok(n) = rustix::io::write(&master, &pending)
        {
            pending.drain(..n);
        }
        if ready.get(2).is_some_and(|r| !r.is_empty()) {
            match rustix::io::read(borrow(0), &mut buf) {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                _ => reading_input = false,
            }
        }
    };
    // What the account's side wrote before it ended.
    while let Ok(n) = rustix::io::read(&master, &mut buf) {
        if n == 0 {
            break;
        }
        write_all(output, &buf[..n]);
    }
    drop(raw);
    shell_status(status)
}

/// Waits for `child` without a relay (no signalfd could be had).
fn wait(child: &mut Child) -> u8 {
    child.wait().map_or(1, shell_status)
}

/// No pty, only a session of its own: forwards the signals until `child`
/// ends.
fn forward(child: &mut Child, signals: &SigSet) -> u8 {
    let Ok(signalfd) = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC) else {
        return wait(child);
    };
    let group = rustix::process::Pid::from_child(child);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return shell_status(status);
        }
        if let Ok(Some(info)) = signalfd.read_signal() {
            pass_on(info.ssi_signo, group);
        }
    }
}

/// Passes INT, QUIT, TERM or HUP on to the account's process group.
fn pass_on(signo: u32, group: rustix::process::Pid) {
    let Ok(signal) = Signal::try_from(signo.cast_signed()) else {
        return;
    };
    if matches!(
        signal,
        Signal::SIGINT | Signal::SIGQUIT | Signal::SIGTERM | Signal::SIGHUP
    ) && let Some(signal) = rustix::process::Signal::from_named_raw(signal as i32)
    {
        let _ = rustix::process::kill_process_group(group, signal);
    }
}

/// How a shell reports a child's end: its status, or 128 + its signal.
fn shell_status(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(borrow(fd), bytes) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes = &bytes[n..],
        }
    }
}

/// The caller's terminal in raw mode while it lives (keys, Ctrl-C
/// included, go to the pty, whose own settings decide), restored after.
struct Raw {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl Raw {
    fn enter(fd: BorrowedFd<'static>) -> Option<Raw> {
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, OptionalActions::Flush, &raw).ok()?;
        Some(Raw { fd, saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd, OptionalActions::Drain, &self.saved);
    }
}

/// Every descriptor above 2 is closed at the next exec (the caller's key
/// files, logs, lock descriptors never reach the account), except `keep`.
pub fn close_above_stderr_on_exec(keep: &[RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: `fd` was listed open in /proc/self/fd just now and this
        // single-threaded helper closes nothing in between; it is borrowed
        // for one fcntl. Should it be the listing's own descriptor, closed
        // since, fcntl fails with EBADF and nothing happens.
        #[allow(unsafe_code)]
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
}
