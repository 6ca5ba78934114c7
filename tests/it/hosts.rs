//! Several hosts on this one machine, for the rollouts of SPEC section 10:
//! each host a throwaway systemd-nspawn container of its own
//! (tests/nspawn/machine: its own systemd as PID 1, its own copy-on-write
//! root, a network of its own with only loopback, so every host serves on
//! its own 127.0.0.1:8001 as real hosts do), reached by real ssh through
//! `ProxyCommand nsenter -t <its PID 1> -a /usr/sbin/sshd -i` (no
//! listening port, no address but loopback), and one PostgreSQL server
//! here whose socket every host sees in the fleet's directory, bound into
//! each at its own path. The controller is this test process running the
//! real `ansible-playbook` (ansible-core, from the tests' venv).
//!
//! What a host needs from its provisioning (the account, djshim's config)
//! the test writes into it directly; everything a rollout does goes
//! through the engine.

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Output, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::machine::{Machine, python};
use crate::postgres::Postgres;
use crate::support::{CRON_PATH, assert_status, copy_tree, require, root, text};

/// The port every host serves its instance on, on its own loopback.
pub const PORT: u16 = 8001;

/// Where each host keeps djshim's config, its releases and profiles.
pub const SITE: &str = "/srv/djshim-it";

pub struct Fleet {
    /// The fleet's directory: ssh's files, the database's socket, the
    /// controller's releases and archives; every host sees it here too.
    pub dir: Utf8PathBuf,
    /// Dropped first: each host powers off (in the second after).
    pub hosts: Vec<Host>,
    pub postgres: Postgres,
    /// djshim's Debian package, built from the binaries under test
    /// (uncompressed: `packaging::` tests the default, xz).
    pub deb: Utf8PathBuf,
    /// Removes [`Fleet::dir`], last.
    _dir: tempfile::TempDir,
}

pub struct Host {
    /// Its name in the inventory (`h1`…).
    pub name: String,
    pub machine: Machine,
    /// djshim on the host: its Debian package's, or (a Nix host) the
    /// deploy-rs profile's.
    pub djshim: &'static str,
}

impl Fleet {
    /// `n` hosts, booted side by side, each with the account `mywebsite-prod`
    /// and djshim's config for instance `prod` (`deploy` goes into its
    /// `[defaults.deploy]`); the database is empty.
    pub fn boot(tag: &str, n: usize, deploy: &str) -> Fleet {
        Fleet::boot_with(tag, n, deploy, false)
    }

    /// [`Fleet::boot`], each host with a Nix store of its own at `/nix`
    /// (the fleet's `nix-hN`, empty at first), as deploy-rs's nodes.
    pub fn boot_nix(tag: &str, n: usize, deploy: &str) -> Fleet {
        Fleet::boot_with(tag, n, deploy, true)
    }

    fn boot_with(tag: &str, n: usize, deploy: &str, nix: bool) -> Fleet {
        require("sshd", "openssh-server");
        require("ssh", "openssh-client");
        require("ssh-keygen", "openssh-client");
        let id = format!("djf{}{tag}", std::process::id());
        let temp = tempfile::Builder::new()
            .prefix(&id)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dir = Utf8Path::from_path(temp.path()).unwrap().to_owned();
        chmod(&dir, 0o755);
        let postgres = Postgres::start_in(&dir);
        keygen(&dir.join("id"));
        fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        fs::write(
            dir.join("sshd_config"),
            format!(
                "AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
            ),
        )
        .unwrap();
        let booting = boot_hosts(&dir, &id, n, nix);
        let hosts: Vec<Host> = booting
            .into_iter()
            .enumerate()
            .map(|(i, boot)| Host {
                name: format!("h{}", i + 1),
                machine: boot.join().unwrap(),
                djshim: if nix {
                    "/nix/var/nix/profiles/mywebsite/bin/djshim"
                } else {
                    "djshim"
                },
            })
            .collect();
        let mut ssh = format!(
            "Host {}\n  User root\n  IdentityFile {dir}/id\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking accept-new\n  \
             BatchMode yes\n  LogLevel ERROR\n",
            hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut inventory = String::from("[djshim]\n");
        for host in &hosts {
            keygen(&dir.join(format!("{}-host_key", host.name)));
            host.machine.ok(&["mkdir", "-p", "/run/sshd"]);
            writeln!(
                ssh,
                "Host {name}\n  ProxyCommand nsenter -t {leader} -a /usr/sbin/sshd -i -f \
                 {dir}/sshd_config -o HostKey={dir}/{name}-host_key -E {dir}/{name}-sshd.log",
                name = host.name,
                leader = host.machine.leader(),
            )
            .unwrap();
            writeln!(inventory, "{}", host.name).unwrap();
            host.machine.account("mywebsite-prod", &[]);
        }
        write!(
            inventory,
            "\n[djshim:vars]\nansible_python_interpreter=/usr/bin/python3\n\
             ansible_ssh_common_args=-F {dir}/ssh_config\n"
        )
        .unwrap();
        fs::write(dir.join("ssh_config"), ssh).unwrap();
        fs::write(dir.join("inventory"), inventory).unwrap();
        let deb = deb(&dir);
        let fleet = Fleet {
            dir,
            hosts,
            postgres,
            deb,
            _dir: temp,
        };
        fleet.configure(deploy);
        // A row each time a test's migration runs forward or back.
        fleet.sql("CREATE TABLE rollout_log (what text)");
        fleet
    }

    /// Writes djshim's config on every host, `deploy` in its
    /// `[defaults.deploy]`.
    pub fn configure(&self, deploy: &str) {
        let config = format!(
            "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\n\
             units_dir = \"/etc/systemd/system\"\n\
             [defaults]\npython = \"{python}\"\nsettings = \"mywebsite.settings.production\"\n\
             user = \"mywebsite-prod\"\nstate_dir = \"/var/lib/mywebsite-prod\"\n\
             static_root = \"/var/lib/mywebsite-prod/static\"\n\
             env = {{ MYWEBSITE_PG_HOST = \"{pg}\", DJANGO_ALLOWED_HOSTS = \"localhost,127.0.0.1\" }}\n\
             [defaults.deploy]\nhealth = \"http://127.0.0.1:{PORT}/health\"\n\
             {deploy}\n\
             [instances.prod]\n\
             [instances.prod.server]\ncommand = [\"-m\", \"gunicorn\", \"mywebsite.wsgi\", \"--workers\", \"2\"]\n\
             socket = \"127.0.0.1:{PORT}\"\n",
            python = python(),
            pg = self.postgres.socket_dir,
        );
        for host in &self.hosts {
            fs::write(host.machine.share().join("djshim.toml"), &config).unwrap();
        }
    }

    /// A release directory on the controller: the example project, named
    /// `name`, with `files` (path, content) written over it.
    pub fn release(&self, name: &str, files: &[(&str, &str)]) -> Utf8PathBuf {
        let release = self.dir.join("releases").join(name);
        copy_tree(&root().join("examples/mywebsite"), &release);
        for (path, content) in files {
            let file = release.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, content).unwrap();
        }
        release
    }

    /// The real `ansible-playbook` on one of the collection's playbooks
    /// (`djshim.django.rollout`…) against every host, with `vars` (JSON)
    /// and `args`, nothing of the caller's environment: its command, for
    /// the test to start or run.
    pub fn playbook(&self, playbook: &str, vars: &serde_json::Value, args: &[&str]) -> Command {
        let file = self.dir.join(format!("vars-{}.json", vars_count()));
        fs::write(&file, vars.to_string()).unwrap();
        let mut cmd = crate::ansible::ansible("ansible-playbook", &self.dir.join("ansible-home"));
        cmd.args(["-i", self.dir.join("inventory").as_str(), playbook])
            .arg("-e")
            .arg(format!("@{file}"))
            .args(args)
            .env("ANSIBLE_PIPELINING", "1")
            // One connection per host for the run (its sshd -i started
            // once), ended with the host's container.
            .env(
                "ANSIBLE_SSH_ARGS",
                format!(
                    "-o ControlMaster=auto -o ControlPersist=60s -o ControlPath={}/cm-%h",
                    self.dir
                ),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Every host runs `package` (its path on the hosts), no run of it
    /// unfinished, and its instance answers `/health`.
    #[track_caller]
    pub fn assert_all_on(&self, package: &str) {
        for host in &self.hosts {
            let status = host.status();
            let name = &host.name;
            assert_eq!(
                status["package"].as_str(),
                Some(package),
                "{name}: {status}"
            );
            assert!(status["unfinished"].is_null(), "{name}: {status}");
            assert_eq!(host.get("/health"), "ok\n", "{name}");
        }
    }

    /// What `sql` (one value) answers in the shared database.
    pub fn sql(&self, sql: &str) -> String {
        let output = Command::new(require("psql", "postgresql-client"))
            .args(["-h", self.postgres.socket_dir.as_str(), "-U", "postgres"])
            .args(["-d", "mywebsite", "-tAc", sql])
            .output()
            .unwrap();
        assert_status(&output, 0);
        text(&output).0.trim().to_owned()
    }
}

impl Host {
    /// The status of `prod` on the host, as djshim says it there.
    pub fn status(&self) -> serde_json::Value {
        let out = self.machine.ok(&[
            self.djshim,
            "--config",
            &format!("{SITE}/djshim.toml"),
            "status",
            "--json",
            "prod",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["instances"]["prod"].clone()
    }

    /// What the host's instance answers on `path`, on the host's own loopback.
    pub fn get(&self, path: &str) -> String {
        self.machine.get(PORT, path)
    }
}

/// The vars every rollout of `release` (on the controller) gives, djshim
/// installed from `deb` ([`Fleet::deb`]).
pub fn rollout_vars(release: &Utf8Path, deb: &Utf8Path) -> serde_json::Value {
    serde_json::json!({
        "djshim_instance": "prod",
        "djshim_config": format!("{SITE}/djshim.toml"),
        "djshim_controller_executable": env!("CARGO_BIN_EXE_djshim"),
        "djshim_release": release,
        "djshim_releases_dir": format!("{SITE}/releases"),
        "djshim_deb": deb,
    })
}

impl Drop for Fleet {
    /// Ends the ssh masters the playbooks left (`ControlPersist`), before
    /// the hosts power off.
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ssh")
                .args(["-F", self.dir.join("ssh_config").as_str(), "-o"])
                .arg(format!("ControlPath={}/cm-{}", self.dir, host.name))
                .args(["-O", "exit", &host.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// deploy-rs's `deploy` (crates.io deploy-rs 1.0), which `.ci/run`
/// installs once per machine (`$DJSHIM_DEPLOY_RS`, else
/// `~/.cache/djshim-tests/deploy-rs-1.0.0`, holds its `bin/`).
pub fn deploy_rs_bin() -> Utf8PathBuf {
    let dir = std::env::var("DJSHIM_DEPLOY_RS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/djshim-tests/deploy-rs-1.0.0",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let bin = Utf8PathBuf::from(dir).join("bin");
    assert!(
        bin.join("deploy").is_file() && bin.join("activate").is_file(),
        "this test needs deploy-rs in {bin}: run `cargo install deploy-rs --version 1.0.0 \
         --locked --debug --root {}` (or `.ci/run`, which does)",
        bin.parent().unwrap()
    );
    bin
}

impl Fleet {
    /// deploy-rs's `deploy --file DIR ARGS` on the controller, which has a
    /// Nix store of its own too (the fleet's `nix-controller`, bound on
    /// `/nix` in a mount namespace of the command's): its command.
    pub fn deploy_rs(&self, file: &Utf8Path, env: &[(&str, &str)], args: &[&str]) -> Command {
        let store = self.dir.join("nix-controller");
        fs::create_dir_all(&store).unwrap();
        let mut cmd = Command::new(require("unshare", "util-linux"));
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /nix && d=$1 f=$2 && shift 2 && \
                 exec \"$d\" --skip-checks --file \"$f\" \"$@\"",
            )
            .args([
                store.as_str(),
                deploy_rs_bin().join("deploy").as_str(),
                file.as_str(),
            ])
            .args(args)
            .env_clear()
            .env("PATH", CRON_PATH)
            .env("LANG", "C.UTF-8")
            .env("HOME", self.dir.join("deploy-home"))
            .env(
                "NIX_CONFIG",
                format!(
                    "{}experimental-features = nix-command\n",
                    crate::support::NIX_CONFIG
                ),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }
}

/// A playbook run's output, for messages: the recap and what failed.
pub fn shown(output: &Output) -> String {
    let (out, err) = text(output);
    format!("{}\nstdout:\n{out}\nstderr:\n{err}", output.status)
}

fn vars_count() -> usize {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Boots hosts `{id}h1`… side by side (a second or two each), each with
/// its own Nix store when `nix`.
fn boot_hosts(
    dir: &Utf8Path,
    id: &str,
    n: usize,
    nix: bool,
) -> Vec<std::thread::JoinHandle<Machine>> {
    (1..=n)
        .map(|i| {
            let (dir, id) = (dir.to_owned(), format!("{id}h{i}"));
            std::thread::spawn(move || {
                if nix {
                    let store = dir.join(format!("nix-h{i}"));
                    fs::create_dir(&store).unwrap();
                    let host = Machine::nix_host(&id, &dir, &store);
                    host.ok(&["mkdir", "-p", "/etc/nix"]);
                    host.ok(&[
                        "sh",
                        "-c",
                        &format!(
                            "printf '%s' '{}' >/etc/nix/nix.conf",
                            crate::support::NIX_CONFIG
                        ),
                    ]);
                    host
                } else {
                    Machine::host(&id, &dir)
                }
            })
        })
        .collect()
}

/// djshim's Debian package in `dir`/dist.
fn deb(dir: &Utf8Path) -> Utf8PathBuf {
    let bin = Utf8Path::new(env!("CARGO_BIN_EXE_djshim"))
        .parent()
        .unwrap();
    let build = Command::new(root().join("packaging/deb/build"))
        .args([bin.as_str(), dir.join("dist").as_str()])
        .env("DJSHIM_DEB_COMPRESSOR", "none")
        .output()
        .unwrap();
    assert_status(&build, 0);
    Utf8PathBuf::from(text(&build).0.trim())
}

fn keygen(path: &Utf8Path) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", path.as_str()])
        .output()
        .unwrap();
    assert_status(&output, 0);
}

fn chmod(path: &Utf8Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
