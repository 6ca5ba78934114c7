//! The machine's accounts and groups, looked up one way: `getent` in a
//! child with a deadline (NSS may ask the network, and a lookup that hangs
//! must not hang djshim), and the one way djshim starts a program as an
//! account (`setpriv`, with the account's groups). The helper binary keeps
//! its own `getpwnam`: it runs no child before the program it execs.

use std::time::Duration;

use camino::Utf8Path;

use crate::error::Error;
use crate::process::{Process, tool};

/// How long a lookup of an account may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An account of this machine, as `getent passwd` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    pub home: String,
}

/// The account `name`, if it exists.
pub fn account(name: &str) -> Option<Account> {
    let fields = getent("passwd", name)?;
    Some(Account {
        name: fields[0].clone(),
        uid: fields[2].parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
        home: fields.get(5).cloned().unwrap_or_else(|| "/".into()),
    })
}

/// The id of group `name`, if it exists.
pub fn group(name: &str) -> Option<u32> {
    getent("group", name)?[2].parse().ok()
}

/// The group ids of account `name` (`id -G`), supplementary ones included.
pub fn groups_of(name: &str) -> Vec<u32> {
    let Some(id) = tool("id") else {
        return Vec::new();
    };
    Process::new(id)
        .args(["-G", name])
        .timeout(LOOKUP_TIMEOUT)
        .outcome()
        .ok()
        .map(|(_, out, _)| {
            String::from_utf8_lossy(&out)
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `program` started as `account`, with group `gid` and the account's
/// supplementary groups (`setpriv`, looked up where the shims look; where
/// util-linux is missing the start fails, naming the whole command).
pub fn as_account(account: &Account, gid: u32, program: impl AsRef<std::ffi::OsStr>) -> Process {
    Process::new(tool("setpriv").unwrap_or_else(|| "/usr/bin/setpriv".into()))
        .arg(format!("--reuid={}", account.uid))
        .arg(format!("--regid={gid}"))
        .args(["--init-groups", "--"])
        .arg(program)
}

/// Makes `dir` (mode 0750), owned by account `user` and group `group` (the
/// account's own when `None`) when one is named.
pub fn make_owned_dir(
    dir: &Utf8Path,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let account = match user {
        Some(user) => Some(account(user).ok_or_else(|| {
            Error::with_help(
                format!("the account `{user}` does not exist"),
                format!(
                    "create it first (`useradd \
                 --system {user}`)"
                ),
            )
        })?),
        None => None,
    };
    let gid = match (group, &account) {
        (Some(name), _) => Some(group_id(name)?),
        (None, Some(account)) => Some(account.gid),
        (None, None) => None,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| Error::io("chmod", dir, e))?;
    if let Some(account) = &account {
        std::os::unix::fs::chown(dir, Some(account.uid), gid)
            .map_err(|e| Error::io("chown", dir, e))?;
    }
    Ok(())
}

fn group_id(name: &str) -> Result<u32, Error> {
    group(name).ok_or_else(|| Error::problem(format!("the group `{name}` does not exist")))
}

/// The fields of `getent DATABASE KEY`, if the entry exists.
fn getent(database: &str, key: &str) -> Option<Vec<String>> {
    let (code, out, _) = Process::new(tool("getent")?)
        .args([database, key])
        .timeout(LOOKUP_TIMEOUT)
        .outcome()
        .ok()?;
    let line = String::from_utf8(out).ok()?;
    let fields: Vec<String> = line.trim_end().split(':').map(str::to_owned).collect();
    (code == Some(0) && fields.len() >= 3).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_nobody_is_not_made_up() {
        let root = account("root").expect("getent finds root");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(group("root"), Some(0));
        assert!(groups_of("root").contains(&0));
        assert_eq!(account("djshim-no-such-account"), None);
        assert_eq!(group("djshim-no-such-group"), None);
    }
}
