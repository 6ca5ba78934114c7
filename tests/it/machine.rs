//! A real systemd as PID 1 for the tests: one throwaway `systemd-nspawn`
//! container per run of the test binary, booted by tests/nspawn/machine
//! over a copy-on-write view of this machine's root, so that the units
//! djshim writes run under the systemd they are written for (systemd is not
//! PID 1 on the machines themselves).
//!
//! Each test gets a [`Guest`]: a world in a directory the container sees
//! at `/srv/djshim-it/…`, where djshim runs *inside* the container
//! (accounts, units in `/etc/systemd/system`, `systemctl`): all of it lands
//! in the container's throwaway upper layer, never on the machine. Tests
//! share the container, so each uses a project name of its own.
//!
//! The container ends with the test process, however that ends: the boot
//! script waits on a pipe whose other end only this process holds, and
//! powers off and removes its mounts, cgroups and files at end of file.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{World, assert_status, require, root, text, venv};

/// The directories of the machine the container sees, and where.
pub const SHARE: &str = "/srv/djshim-it";
pub const VENV: &str = "/srv/djshim-venv";
pub const BIN: &str = "/srv/djshim-bin";

/// The booted container.
#[derive(Debug)]
pub struct Machine {
    /// The host PID of the container's PID 1, for `nsenter`.
    leader: u32,
    /// The host directory seen as [`SHARE`].
    share: Utf8PathBuf,
    /// Held until the process ends: its closing powers the container off.
    _keepalive: Mutex<ChildStdin>,
}

/// The ids of the accounts and groups the tests make in the container:
/// far from the host's system ids (below 1000) and its users'.
const GUEST_ID_MIN: u32 = 40000;
const GUEST_ID_MAX: u32 = 49999;
const GUEST_IDS: [&str; 8] = [
    "-K",
    "SYS_UID_MIN=40000",
    "-K",
    "SYS_UID_MAX=49999",
    "-K",
    "SYS_GID_MIN=40000",
    "-K",
    "SYS_GID_MAX=49999",
];

/// The container of this test run, booted on first use (about a second).
pub fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Result<Machine, String>> = OnceLock::new();
    match MACHINE.get_or_init(|| boot(&format!("djshim-it-{}", std::process::id()), None)) {
        Ok(machine) => machine,
        Err(why) => panic!("the systemd container did not boot: {why}"),
    }
}

impl Machine {
    /// A container of its own, named `id`, that also sees the directory
    /// `fleet` at its own path: one host of several (`crate::hosts`),
    /// powered off when dropped.
    pub fn host(id: &str, fleet: &Utf8Path) -> Machine {
        boot(id, Some((fleet, None))).unwrap_or_else(|why| panic!("host {id} did not boot: {why}"))
    }

    /// [`Machine::host`], with the directory `nix` as its `/nix`: a Nix
    /// host's own store.
    pub fn nix_host(id: &str, fleet: &Utf8Path, nix: &Utf8Path) -> Machine {
        boot(id, Some((fleet, Some(nix))))
            .unwrap_or_else(|why| panic!("host {id} did not boot: {why}"))
    }

    /// The host directory the container sees as [`SHARE`].
    pub fn share(&self) -> &Utf8Path {
        &self.share
    }

    /// The host PID of the container's PID 1.
    pub fn leader(&self) -> u32 {
        self.leader
    }
}

fn boot(id: &str, fleet: Option<(&Utf8Path, Option<&Utf8Path>)>) -> Result<Machine, String> {
    use std::os::unix::fs::MetadataExt;
    if fs::metadata("/proc/self").map_err(|e| e.to_string())?.uid() != 0 {
        return Err("these tests boot a container: run them as root, as CI does".into());
    }
    require("systemd-nspawn", "systemd-container");
    require("unshare", "util-linux");
    require("nsenter", "util-linux");
    // The container runs this machine's programs: the tests ask the
    // servers in it with curl.
    require("curl", "curl");
    let venv = venv();
    let bin = Utf8Path::new(env!("CARGO_BIN_EXE_djshim"))
        .parent()
        .unwrap()
        .to_owned();
    let tmp = Utf8Path::new(env!("CARGO_TARGET_TMPDIR"));
    let share = tmp.join(format!("{id}.share"));
    fs::create_dir_all(&share).map_err(|e| format!("{share}: {e}"))?;
    // World-readable: the instances' accounts run from it.
    chmod(&share, 0o755);
    // tests/nspawn/machine removes it when it has booted and torn down.
    let log = tmp.join(format!("{id}.log"));
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(root().join("tests/nspawn/machine"))
        .arg(tmp.join(id))
        .arg(id)
        .args([share.as_str(), venv.as_str(), bin.as_str()])
        .args(fleet.map(|(fleet, _)| fleet.as_str()))
        .args(fleet.and_then(|(_, nix)| nix).map(Utf8Path::as_str))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).map_err(|e| format!("{log}: {e}"))?)
        .spawn()
        .map_err(|e| format!("cannot start tests/nspawn/machine: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let Some(leader) = line.trim().strip_prefix("ready ") else {
        let _ = child.wait();
        return Err(fs::read_to_string(&log).unwrap_or_default());
    };
    let machine = Machine {
        leader: leader
            .parse()
            .map_err(|_| format!("ready line: {line:?}"))?,
        share,
        _keepalive: Mutex::new(child.stdin.take().unwrap()),
    };
    // The child is not waited for: it outlives this process by the second
    // it takes to tear the container down.
    std::mem::forget(child);
    Ok(machine)
}

fn chmod(path: &Utf8Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The environment of every command run in the container: what a root
/// shell of a fresh Debian server has, and nothing of the test process.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Machine {
    /// `argv` in the container, in `dir`, as root, with a clean environment.
    pub fn command(&self, dir: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.leader.to_string())
            .arg("-a")
            // (nsenter's own --wd=DIR opens DIR before it enters the
            // container, so the shell changes directory once inside.)
            .args(["--", "/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", dir])
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.command("/", argv).output().unwrap()
    }

    /// Runs `argv`, asserts it succeeds, returns its stdout.
    #[track_caller]
    pub fn ok(&self, argv: &[&str]) -> String {
        let output = self.run(argv);
        assert_status(&output, 0);
        text(&output).0
    }

    /// `sh -c SCRIPT` in the container; its output.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// A new world the container sees.
    pub fn guest(&'static self) -> Guest {
        let world = World::new_in(&self.share);
        chmod(&world.path(""), 0o755);
        let name = world.path("").file_name().unwrap().to_owned();
        Guest {
            world,
            at: Utf8Path::new(SHARE).join(name),
            machine: self,
        }
    }

    /// Makes a system account `name` in the container (its group too),
    /// one `useradd` at a time (they lock `/etc/passwd`), with an id from
    /// [`GUEST_IDS`].
    ///
    /// The container's `/etc/passwd` is a copy-on-write view of this
    /// machine's, taken when the container starts: accounts that the tests
    /// running here make afterwards (`djshimt-build`…) are unknown in it, so
    /// `useradd --system` in both would hand out the same numbers. The host
    /// sees every process of the container, and a build here stops every
    /// process of its build account's uid: on a fresh machine, where the
    /// host's test accounts were made during the run, that killed the
    /// container's launchers and steps of the same number (the deploy
    /// window "held nothing"). Ids apart from the host's, checked here.
    pub fn account(&self, name: &str, extra: &[&str]) {
        static USERADD: Mutex<()> = Mutex::new(());
        let _one = USERADD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut argv = vec!["useradd", "--system", "--user-group"];
        argv.extend(GUEST_IDS);
        if !extra.contains(&"--create-home") {
            argv.push("--no-create-home");
        }
        argv.extend_from_slice(extra);
        argv.push(name);
        self.ok(&argv);
        let uid: u32 = self.ok(&["id", "-u", name]).trim().parse().unwrap();
        assert!(
            (GUEST_ID_MIN..=GUEST_ID_MAX).contains(&uid),
            "{name} got uid {uid}, outside the container's range"
        );
    }

    /// Makes a system group `name` in the container, with an id from
    /// [`GUEST_IDS`] (see [`Machine::account`]).
    pub fn group(&self, name: &str) {
        let mut argv = vec!["groupadd", "--system"];
        argv.extend(GUEST_IDS);
        argv.push(name);
        self.ok(&argv);
    }

    /// `systemctl ARGS`, asserted to succeed.
    #[track_caller]
    pub fn systemctl(&self, args: &[&str]) {
        let mut words = vec!["systemctl"];
        words.extend_from_slice(args);
        let output = self.run(&words);
        let (out, err) = text(&output);
        assert!(
            output.status.success(),
            "systemctl {args:?}: {}\n{out}{err}\n{}",
            output.status,
            args.iter()
                .filter(|a| a.contains('.'))
                .map(|unit| self.journal(unit))
                .collect::<String>()
        );
    }

    /// A unit's property (`systemctl show -P`).
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.ok(&["systemctl", "show", "-P", property, unit])
            .trim()
            .to_owned()
    }

    /// Waits up to `timeout` for `unit`'s `ActiveState` to be `state`.
    #[track_caller]
    pub fn wait_state(&self, unit: &str, state: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let now = self.property(unit, "ActiveState");
            if now == state {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{unit} is {now}, not {state}, after {timeout:?}:\n{}",
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The unit's journal, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let output = self.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-n",
            "60",
            "-u",
            unit,
        ]);
        text(&output).0
    }

    /// What `http://127.0.0.1:PORT/PATH` answers in the container (curl,
    /// `Host: localhost`, 20 s at most): its body, empty on a failure.
    pub fn get(&self, port: u16, path: &str) -> String {
        let output = self.run(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-H",
            "Host: localhost",
            &format!("http://127.0.0.1:{port}{path}"),
        ]);
        text(&output).0
    }

    /// `/proc/PID/environ` of a process in the container, by name.
    pub fn environ(&self, pid: &str) -> std::collections::BTreeMap<String, String> {
        let output = self.run(&["cat", &format!("/proc/{pid}/environ")]);
        assert_status(&output, 0);
        output
            .stdout
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| {
                let v = String::from_utf8_lossy(v);
                let (k, v) = v.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

/// A world in the container: written from the test (the host side of the
/// share), used by djshim inside.
#[derive(Debug)]
pub struct Guest {
    pub world: World,
    /// The world's directory as the container sees it.
    pub at: Utf8PathBuf,
    pub machine: &'static Machine,
}

impl Guest {
    /// `rel` as the container sees it.
    pub fn path(&self, rel: &str) -> Utf8PathBuf {
        if rel.is_empty() {
            self.at.clone()
        } else {
            self.at.join(rel)
        }
    }

    /// Writes a file of the world.
    pub fn write(&self, rel: &str, text: &str) -> Utf8PathBuf {
        self.world.write(rel, text);
        self.path(rel)
    }

    /// Copies the example project to `rel`; its path in the container.
    pub fn release(&self, rel: &str) -> Utf8PathBuf {
        self.world.release(rel);
        self.path(rel)
    }

    /// `djshim ARGS` in the container, in the world's directory.
    pub fn djshim(&self, args: &[&str]) -> Output {
        let program = format!("{BIN}/djshim");
        let mut words = vec![program.as_str()];
        words.extend_from_slice(args);
        self.machine
            .command(self.at.as_str(), &words)
            .output()
            .unwrap()
    }

    /// `djshim ARGS`, asserted to succeed.
    #[track_caller]
    pub fn djshim_ok(&self, args: &[&str]) -> String {
        let output = self.djshim(args);
        assert_status(&output, 0);
        text(&output).0
    }
}

/// The venv's interpreter as the container sees it.
pub fn python() -> String {
    format!("{VENV}/bin/python3")
}
