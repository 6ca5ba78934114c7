//! Every lock djshim takes, written once: `flock(2)` on a directory (the
//! writers of a directory of shims or units, the releases) or on a lock
//! file that names its holder (an instance's deploy, rollback and pin; the
//! builds as one account). Two kinds: take it, waiting for the holder and
//! saying once who that is; or try it, and say who holds it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};

use camino::Utf8Path;

use crate::error::Error;

/// A lock held until this is dropped.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Waits for the exclusive lock of directory `dir` itself (its descriptor),
/// so no lock file is left behind.
pub fn directory(dir: &Utf8Path) -> Result<Held, Error> {
    let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    file.lock().map_err(|e| Error::io("lock", dir, e))?;
    Ok(Held { _file: file })
}

/// Waits for the lock file `path` (made when missing), saying once on
/// stderr who holds it; then writes `what` and this process's id into it,
/// for the next one who waits.
pub fn file(path: &Utf8Path, what: &str) -> Result<Held, Error> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!(
                "djshim: waiting for {} to end (it holds {path}) …",
                holder(&mut file)
            );
            file.lock().map_err(|e| Error::io("lock", path, e))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
    }
    mark(&mut file, what).map_err(|e| Error::io("write", path, e))?;
    Ok(Held { _file: file })
}

/// The lock file `path` if no one holds it; else who does.
pub fn try_file(path: &Utf8Path, what: &str) -> Result<Held, String> {
    let mut file = open(path).map_err(|e| e.to_string())?;
    match file.try_lock() {
        Ok(()) => {
            mark(&mut file, what).map_err(|e| e.to_string())?;
            Ok(Held { _file: file })
        }
        Err(fs::TryLockError::WouldBlock) => Err(holder(&mut file)),
        Err(fs::TryLockError::Error(e)) => Err(e.to_string()),
    }
}

fn open(path: &Utf8Path) -> Result<File, Error> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

fn mark(file: &mut File, what: &str) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{what} (pid {})", std::process::id())
}

/// What the lock file says its holder is.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let text = crate::error::clean(text.trim());
    if text.is_empty() {
        "another djshim run".into()
    } else {
        format!("`djshim {text}`")
    }
}
