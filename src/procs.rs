//! The processes of this machine, as `/proc` shows them: the one place
//! that reads it (the window's launcher and its child, the build account's
//! leftovers, the process group a killed run's step left behind).

use std::os::unix::fs::MetadataExt as _;

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// `R`, `S`, …; `Z` for a zombie (ended, not yet waited for).
    pub state: char,
    pub ppid: i32,
    /// Its process group.
    pub group: i32,
    /// When it started, in clock ticks since boot: with the pid, a name
    /// no later process has.
    pub start: u64,
}

/// Process `pid`, if it exists.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold anything,
    // parentheses and spaces included: the fields after it start after
    // its last `)`, with field 3 (the state).
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        group: rest.get(2)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

/// The processes of this PID namespace. A container's processes show in
/// /proc too, with numbers of their own, and are never djshim's.
pub fn all() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let ours = std::fs::read_link("/proc/self/ns/pid").ok();
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            if std::fs::read_link(e.path().join("ns/pid")).ok() != ours {
                return None;
            }
            stat(pid)
        })
        .collect()
}

/// The real and effective uid of process `pid`.
pub fn uids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut ids = line[4..].split_whitespace().map(|n| n.parse().ok());
    Some((ids.next()??, ids.next()??))
}

/// The arguments of process `pid` (empty when it is gone).
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The effective uid of this process, as the owner of /proc/self.
pub fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_back() {
        let me = stat(std::process::id().cast_signed()).unwrap();
        // The main thread's state: it waits for the test threads.
        assert!(matches!(me.state, 'R' | 'S'), "{me:?}");
        assert_eq!(
            Some(me.ppid),
            rustix::process::getppid().map(|p| p.as_raw_nonzero().get())
        );
        assert_eq!(me.group, rustix::process::getpgrp().as_raw_nonzero().get());
        assert!(me.start > 0);
        assert!(all().iter().any(|p| p == &me || p.pid == me.pid));
        assert_eq!(
            cmdline(me.pid).first().map(String::as_str),
            std::env::args().next().as_deref()
        );
    }
}
