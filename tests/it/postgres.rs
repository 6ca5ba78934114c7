//! A real PostgreSQL server for one test, started here and stopped when
//! dropped: `initdb` and `pg_ctl` of Debian's postgresql as the `postgres`
//! account, in a temporary directory, listening on a unix socket there
//! only; one database, `mywebsite`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{assert_status, require};

pub struct Postgres {
    _dir: tempfile::TempDir,
    /// The socket directory: `HOST` for Django.
    pub socket_dir: Utf8PathBuf,
    data: Utf8PathBuf,
    bin: PathBuf,
}

/// Runs a PostgreSQL program as the `postgres` account.
fn as_postgres(bin: &std::path::Path, program: &str, args: &[&str]) {
    let output = Command::new(require("runuser", "util-linux"))
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_status(&output, 0);
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_in(Utf8Path::from_path(&std::env::temp_dir()).unwrap())
    }

    /// The server with its directory (and socket) in `parent`: a directory
    /// the systemd container sees, say.
    pub fn start_in(parent: &Utf8Path) -> Postgres {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").is_file())
                    .max()
            })
            .unwrap_or_else(|| {
                panic!(
                    "this test needs PostgreSQL's server programs, which are not installed: run \
                     `apt-get install postgresql` (or `.ci/run`)"
                )
            });
        let dir = tempfile::Builder::new()
            .prefix("djshim-pg-")
            .tempdir_in(parent)
            .unwrap();
        let base = Utf8Path::from_path(dir.path()).unwrap().to_owned();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres", base.as_str()])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chown postgres (is the postgres account there?)"
        );
        let data = base.join("data");
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.as_str(),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!("-k {base} -c listen_addresses= -c fsync=off");
        as_postgres(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data.as_str(),
                "-o",
                &options,
                "-l",
                base.join("log").as_str(),
                "-w",
                "start",
            ],
        );
        as_postgres(
            &bin,
            "createdb",
            &["-h", base.as_str(), "-U", "postgres", "mywebsite"],
        );
        Postgres {
            _dir: dir,
            socket_dir: base,
            data,
            bin,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data.as_str(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
