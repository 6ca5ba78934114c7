//! Who a build runs as, and what it leaves. The commit's code — a build
//! command, a Nix file — never runs as root and never sees the operator's
//! environment: a build account (`[build] user`) runs it with a fixed
//! environment, in an export it owns while it builds; then whatever the
//! account left running is stopped and the release is frozen: root's,
//! read-only, without setuid or setgid bits. The freeze walks the release
//! by descriptors, each directory made root's before its entries are
//! touched, so nothing can be swapped under it.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use camino::Utf8Path;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::process::{Gid, Uid};

use crate::accounts::Account;
use crate::error::Error;
use crate::model::Build;
use crate::process::Process;

/// Where the Nix daemon listens on a multi-user install.
const NIX_DAEMON: &str = "/nix/var/nix/daemon-socket/socket";

/// The PATH of every build: fixed directories, nothing of the caller's.
const PATH: &str =
    "/nix/var/nix/profiles/default/bin:/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin";

/// Nix's own settings, passed on to nix-build (they say where the store
/// is and how to reach it; keep secrets out of them).
const NIX_VARIABLES: [&str; 6] = [
    "NIX_CONFIG",
    "NIX_REMOTE",
    "NIX_STORE_DIR",
    "NIX_STATE_DIR",
    "NIX_CONF_DIR",
    "NIX_LOG_DIR",
];

/// The account a build runs as.
#[derive(Debug)]
pub struct BuildAccount {
    /// Its home is the build's own (see `fresh_home`).
    account: Account,
    /// Root builds as another account (else djshim's own account builds).
    switch: bool,
    /// The account's home for this build: made empty for it, removed
    /// after (the account's own home would carry a `.pth` or a config from
    /// one branch's build into the next).
    #[allow(dead_code)]
    fresh_home: Option<tempfile::TempDir>,
    /// Held while a command build runs as the account: builds as one
    /// account never overlap, since each stops all of its processes.
    #[allow(dead_code)]
    held: Option<crate::lock::Held>,
}

impl BuildAccount {
    /// The account of a command build: `[build] user`, required when
    /// djshim runs as root.
    pub fn for_build(build: &Build) -> Result<BuildAccount, Error> {
        let mut account = BuildAccount::resolve(build, "the build command")?;
        if account.switch {
            account.held = Some(lock(&account.account.name)?);
        }
        Ok(account)
    }

    /// The account nix-build runs as: through the Nix daemon, the build
    /// account; single-user Nix (no daemon) is driven by whoever owns the
    /// store, root here, with the evaluation restricted (see the README).
    pub fn for_nix(build: &Build) -> Result<BuildAccount, Error> {
        let root = rustix::process::geteuid().is_root();
        if root && !std::path::Path::new(NIX_DAEMON).exists() {
            return Ok(BuildAccount::me());
        }
        BuildAccount::resolve(build, "the commit's Nix code")
    }

    fn resolve(build: &Build, what: &str) -> Result<BuildAccount, Error> {
        let me = rustix::process::geteuid();
        let Some(name) = &build.user else {
            if me.is_root() {
                return Err(Error::with_help(
                    format!(
                        "`[build] user` is not set, and djshim runs as root: {what} never runs as \
                     root"
                    ),
                    "add `user = \"NAME\"` to `[build]`, an account made for \
                     building alone (`useradd --system --create-home NAME`): djshim stops every \
                     process of it after a build",
                ));
            }
            return Ok(BuildAccount::me());
        };
        let user = crate::accounts::account(name).ok_or_else(|| {
            Error::with_help(
                format!("the build account `{name}` does not exist"),
                format!(
                    "`useradd --system \
                     --create-home {name}`"
                ),
            )
        })?;
        if user.uid == 0 {
            return Err(Error::with_help(
                format!(
                    "`[build] user = \"{name}\"` is root: the commit's code never runs as root"
                ),
                "name an account made for building alone",
            ));
        }
        if !me.is_root() && user.uid != me.as_raw() {
            return Err(Error::problem(format!(
                "only root can build as `{name}`: run djshim as root, or as `{name}`"
            )));
        }
        let (uid, gid) = (user.uid, user.gid);
        let mut account = BuildAccount {
            account: user,
            switch: me.is_root(),
            held: None,
            fresh_home: None,
        };
        if account.switch {
            let home = tempfile::Builder::new()
                .prefix(&format!("djshim-build-home-{name}-"))
                .tempdir_in("/tmp")
                .map_err(|e| Error::io("make a home for the build in", Utf8Path::new("/tmp"), e))?;
            std::os::unix::fs::chown(home.path(), Some(uid), Some(gid))
                .map_err(|e| Error::io("give the build's home to", Utf8Path::new(name), e))?;
            account.account.home = home.path().to_string_lossy().into_owned();
            account.fresh_home = Some(home);
        }
        Ok(account)
    }

    /// djshim's own account, with a clean environment all the same.
    fn me() -> BuildAccount {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let account = crate::accounts::account(&uid.to_string()).unwrap_or(Account {
            name: uid.to_string(),
            uid,
            gid,
            home: "/".into(),
        });
        BuildAccount {
            account: Account { gid, ..account },
            switch: false,
            held: None,
            fresh_home: None,
        }
    }

    /// Whether the build runs as another account than djshim's.
    pub fn is_other(&self) -> bool {
        self.switch
    }

    /// Gives the export to the account for the build.
    pub fn hand(&self, dir: &Utf8Path) -> Result<(), Error> {
        if !self.switch {
            return Ok(());
        }
        chown_tree(dir.as_std_path(), self.account.uid, self.account.gid)
            .map_err(|e| Error::io("give to the build account", dir, e))
    }

    /// `program` as the account, in `dir`, with the build's environment.
    pub fn command(&self, program: &str, dir: &Utf8Path, commit: &str, epoch: &str) -> Process {
        self.process(program)
            .cwd(dir.to_owned())
            .env("DJSHIM_RELEASE", dir)
            .env("DJSHIM_COMMIT", commit)
            .env("SOURCE_DATE_EPOCH", epoch)
    }

    /// `nix-build` as the account (through the daemon when it is not
    /// djshim's own), with Nix's settings and nothing else of djshim's
    /// environment.
    pub fn nix_build(&self, source: &Utf8Path, commit: &str, epoch: &str) -> Process {
        let mut process = self
            .process("nix-build")
            .env("DJSHIM_COMMIT", commit)
            .env("SOURCE_DATE_EPOCH", epoch)
            .env("DJSHIM_SOURCE", source);
        for key in NIX_VARIABLES {
            if let Some(value) = std::env::var_os(key) {
                process = process.env(key, value);
            }
        }
        if self.switch {
            process = process.env("NIX_REMOTE", "daemon");
        }
        process
    }

    fn process(&self, program: &str) -> Process {
        let account = &self.account;
        let process = if self.switch {
            crate::accounts::as_account(account, account.gid, program)
        } else {
            Process::new(program)
        };
        process
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &account.home)
            .env("USER", &account.name)
            .env("LOGNAME", &account.name)
            .env("LANG", "C.UTF-8")
            .env("PYTHONNOUSERSITE", "1")
    }

    /// Stops every process of the build account (one made for building
    /// alone): nothing it started may change the release once frozen.
    pub fn stop_leftovers(&self) {
        if !self.switch {
            return;
        }
        for _ in 0..100 {
            let found = processes_of(self.account.uid);
            if found.is_empty() {
                return;
            }
            for pid in found {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The lock of builds as account `name`, in `/run` (root's alone), waited
/// for with a line saying so.
fn lock(name: &str) -> Result<crate::lock::Held, Error> {
    crate::lock::file(
        &crate::layout::build_lock(name),
        &format!("build as `{name}`"),
    )
}

/// The processes of this PID namespace whose real or effective uid is
/// `uid` (a container's process with the build account's number is not
/// the build account's: on a fresh test machine, killing them stopped a
/// container's server and deploy steps).
fn processes_of(uid: u32) -> Vec<i32> {
    crate::procs::all()
        .into_iter()
        .filter(|p| {
            crate::procs::uids(p.pid)
                .is_some_and(|(real, effective)| real == uid || effective == uid)
        })
        .map(|p| p.pid)
        .collect()
}

/// `chown -R` without following links (only root has written the tree).
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (uid, gid) = (Some(uid), Some(gid));
    std::os::unix::fs::lchown(dir, uid, gid)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid.unwrap_or(0), gid.unwrap_or(0))?;
        } else {
            std::os::unix::fs::lchown(entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Freezes the release at `dir`: everything root's, no write bit, no
/// setuid, setgid or sticky bit; what is neither file, directory nor link
/// (a FIFO, a socket) is removed.
pub fn freeze(dir: &Utf8Path) -> Result<(), Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir.as_std_path(), flags, Mode::empty())
        .map_err(|e| Error::io("open", dir, e.into()))?;
    let root = rustix::process::geteuid().is_root();
    freeze_dir(&fd, root).map_err(|e| Error::io("freeze", dir, e))
}

/// The mode a frozen entry keeps.
fn frozen(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o555)
}

fn freeze_dir(dir: &OwnedFd, root: bool) -> std::io::Result<()> {
    let stat = rustix::fs::fstat(dir)?;
    // The directory first: from here on only root can change its entries.
    if root {
        rustix::fs::fchown(dir, Some(Uid::ROOT), Some(Gid::ROOT))?;
    }
    rustix::fs::fchmod(dir, frozen(stat.st_mode))?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    for name in names {
        use std::os::unix::ffi::OsStrExt as _;
        let name = OsStr::from_bytes(&name);
        let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                freeze_dir(&rustix::fs::openat(dir, name, flags, Mode::empty())?, root)?;
            }
            FileType::RegularFile => {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let file = rustix::fs::openat(dir, name, flags, Mode::empty())?;
                let stat = rustix::fs::fstat(&file)?;
                if root {
                    rustix::fs::fchown(&file, Some(Uid::ROOT), Some(Gid::ROOT))?;
                }
                rustix::fs::fchmod(&file, frozen(stat.st_mode))?;
            }
            FileType::Symlink if root => {
                rustix::fs::chownat(
                    dir,
                    name,
                    Some(Uid::ROOT),
                    Some(Gid::ROOT),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            FileType::Symlink => {}
            _ => rustix::fs::unlinkat(dir, name, AtFlags::empty())?,
        }
    }
    Ok(())
}
