//! The command line, as clap derive definitions and nothing else.
//!
//! Help text, the man pages under `man/` and the shell completions are all
//! rendered from these definitions, so they cannot disagree.

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};

const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    the command ran and found a problem (check failed, refused to overwrite)
  2    bad usage or an invalid config
  3    deploy, rollback or pin: failed once it had begun, and undone (the
       instance runs what it ran before)
  4    deploy, rollback or pin: failed, and not undone (its journal says what
       is left; the next deploy or rollback goes on from there)";

/// Per-instance manage.py commands for Nix-packaged Django sites.
///
/// djshim reads djshim.toml, which describes a Django project and its
/// instances (staging, prod, ...), and generates one command per instance,
/// <project>-<instance>, that runs manage.py of the package the instance is
/// pinned to, with the instance's settings module, Python environment and
/// static paths, whatever the caller's environment (a login shell or cron).
#[derive(Debug, Parser)]
#[command(name = "djshim", version, after_help = EXIT_STATUS, max_term_width = 100)]
pub struct Cli {
    /// The config file [default: ./djshim.toml]
    #[arg(short, long, global = true, env = "DJSHIM_CONFIG", value_name = "PATH")]
    pub config: Option<Utf8PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter djshim.toml (never overwrites)
    Init(InitArgs),
    /// Validate the config and this machine: packages, interpreters, settings modules
    ///
    /// Every problem is listed, not just the first. Exits 1 when any is found.
    Check(CheckArgs),
    /// Write the shims, one per instance, into the config's bin directory (or --out DIR)
    ///
    /// Everything is validated before the first byte is written; each file is
    /// written beside its target and renamed into place. The manifest
    /// .djshim-PROJECT.manifest in the output directory lists the files the
    /// project owns: a shim whose instance left the config is removed, a file
    /// of another project is never touched, and a file djshim did not write
    /// is never overwritten unless --force is given. When an instance has a
    /// user or env files, the helper its shim execs, djshim-exec, is copied
    /// from beside djshim into the directory as .djshim-PROJECT-exec.
    Generate(GenerateArgs),
    /// One row per instance: shim, package, settings, and whether the shim is up to date
    List,
    /// Print the shim of one instance exactly as generate would write it
    Show(ShowArgs),
    /// Switch an instance's profile to a package, as a new generation
    ///
    /// PATH is checked like `djshim check` checks an instance (manage.py,
    /// interpreter, settings module) before anything changes; then a new
    /// generation link is made and the profile link is switched to it with one
    /// atomic rename. A Nix store path becomes a garbage-collector root for as
    /// long as a generation points at it. No shim is rewritten: shims follow
    /// the profile each time they run.
    ///
    /// With --keep N (alone, or after a pin) the oldest generations are
    /// deleted until N are left; the generation the profile runs is never
    /// deleted, whatever N says.
    #[command(
        override_usage = "djshim pin [OPTIONS] INSTANCE PATH [--keep N]\n       \
                                djshim pin [OPTIONS] INSTANCE --keep N"
    )]
    Pin(PinArgs),
    /// Switch an instance's profile back to the previous generation, or to --to N
    Rollback(RollbackArgs),
    /// List the generations of an instance's profile, the current one marked
    History(HistoryArgs),
    /// What each instance runs: generation, package, commit, content hash, health, units
    ///
    /// Per instance (all, or those named): the generation its profile runs,
    /// the package (symlinks resolved) with the commit it was built from and
    /// its content hash (sha256 of its Nix archive serialization, the hash
    /// Nix keeps for a store path: equal on two hosts when they run the same
    /// bytes), whether that generation's deploy ended healthy, a run that
    /// has not ended, and systemd's state of each of its units. Changes
    /// nothing. With --json, one JSON object for an engine to read.
    Status(StatusArgs),
    /// Write systemd units: the server, services, jobs and target of each instance
    ///
    /// Per instance with a `server`, `services` or `jobs`, into the config's
    /// units directory (or --out DIR): <project>-<instance>.service for the
    /// server (and .socket when it has a `socket`), one .service per service,
    /// a .service and .timer per job, and <project>-<instance>.target that
    /// they are all part of; <project>-<instance>.tmpfiles.conf for state,
    /// static and media directories outside /var/lib. Every unit runs the same
    /// interpreter, package, account, environment and env files as the
    /// instance's shim. Written like `generate` writes shims:
    /// deterministic, atomic, owned through a manifest. A unit of an instance
    /// that runs its profile follows the profile once, when it starts: a pin
    /// takes effect at the next restart, never under a running server.
    Systemd(SystemdArgs),
    /// Print /etc/cron.d lines for the jobs, each calling its shim under `flock -n`
    Cron(CronArgs),
    /// Write the instances as one NixOS module (to stdout, or --out FILE)
    ///
    /// The module declares every unit `djshim systemd` would write, with
    /// exactly its lines (systemd.services, .sockets, .timers, .targets),
    /// the tmpfiles rules, the accounts when `djshim.<project>.accounts` is
    /// set, and the shims as a package built by `djshim generate` in a
    /// derivation. Import it with `imports = [ ./<project>.nix ];` and set
    /// `djshim.<project>.package`. A profile instance keeps following its
    /// profile (`djshim deploy` needs no rebuild of the system); an
    /// instance with a fixed package moves with the system.
    Nixos(NixosArgs),
    /// Build a package from a commit of the repository, never from a working tree
    ///
    /// REF (else `[build]`'s `ref`, else the repository's HEAD) is resolved by
    /// git to a full commit id; the commit's tracked files are exported with
    /// `git archive` (no uncommitted change, no untracked file, no submodule).
    /// With `nix`, the export is added to the store as PROJECT-src-ID and
    /// the Nix file in it is built with nix-build (out-link
    /// RELEASES_DIR/PROJECT-ID): the same commit is never built twice.
    /// With `command`, the command runs in the export, which becomes the
    /// read-only release RELEASES_DIR/PROJECT-ID; a failed build leaves
    /// nothing behind. The package's path is the last line of stdout, so
    /// `djshim pin staging "$(djshim build)"` composes; the build's own
    /// output goes to stderr.
    Build(BuildArgs),
    /// Move an instance to a new package: check, switch, migrate, restart, probe; undo on failure
    ///
    /// The candidate is a fresh build of --ref (default: `[build]`'s ref), a
    /// package --path, or exactly the package instance --from runs now. It is
    /// checked as the instance's account (settings load, manage.py check,
    /// the static and media roots as configured, the server's and services'
    /// modules and the jobs' commands exist); the database's migration state
    /// is recorded and the candidate's new migrations said reversible or not
    /// (irreversible ones stop the deploy unless --allow-irreversible). Then
    /// the profile switches to a new generation, the deploy `steps` run
    /// through the shim, `restart` runs and `health` is probed. If any of
    /// these fails, the database is migrated back with the candidate's code,
    /// the profile switched back, the steps and the restart run again, and
    /// the exit status is 1.
    Deploy(DeployArgs),
    /// Open or close an instance's deploy window, for a rollout across hosts
    ///
    /// `open` restarts the server unit into its launcher's window (requests
    /// wait, or get 503, as `[deploy] window` says) and checks that it
    /// holds; open already, only its deadline is renewed. An engine opens it
    /// on every host before one host migrates the shared database; each
    /// host's deploy closes it with its restart, and `close` ends it on a host
    /// the rollout did not switch. `window_timeout` ends it regardless.
    Window(WindowArgs),
    /// Write a release directory as one tar archive, to carry it to another host
    ///
    /// The archive holds one directory named as the release, with no owner,
    /// time or mode but the executable bit. The release's content hash
    /// (sha256 of its Nix archive serialization, as `djshim status` says it)
    /// is the last line of stdout: the host that unpacks it checks it. A
    /// Nix store path travels with `nix copy` instead.
    Pack(PackArgs),
    /// Unpack a release archive, checked against the content hash the build host said
    ///
    /// The archive is extracted into a private directory beside the
    /// releases (--into, else `[build] releases_dir`); its one directory's
    /// content hash must be --hash, or nothing is kept. Only then is the
    /// release frozen (root's, read-only) and renamed into place; its path is
    /// the last line of stdout, for `djshim deploy --path`. A release of that
    /// name already there with that hash is kept as it is.
    Unpack(UnpackArgs),
}

#[derive(Debug, Args)]
pub struct WindowArgs {
    /// The instance whose window to open or close
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// `open` or `close`
    #[arg(value_enum)]
    pub action: WindowAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WindowAction {
    Open,
    Close,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The release directory to carry
    #[arg(value_name = "PACKAGE")]
    pub package: Utf8PathBuf,
    /// The archive to write (replaced atomically)
    #[arg(long, value_name = "FILE")]
    pub out: Utf8PathBuf,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The archive `djshim pack` wrote
    #[arg(value_name = "ARCHIVE")]
    pub archive: Utf8PathBuf,
    /// The content hash `djshim pack` said on the build host
    #[arg(long, value_name = "sha256:HEX")]
    pub hash: String,
    /// Where the releases of this host are [default: `[build] releases_dir`]
    #[arg(long, value_name = "DIR")]
    pub into: Option<Utf8PathBuf>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("candidate").multiple(false))]
// Each flag is a switch of its own on the command line.
#[allow(clippy::struct_excessive_bools)]
pub struct DeployArgs {
    /// The instance to deploy (one without `package` in the config)
    #[arg(value_name = "INSTANCE")]
    pub instance: String,

    /// Build this branch, tag or commit and deploy it [default: `[build]`'s ref]
    #[arg(long = "ref", value_name = "REF", group = "candidate")]
    pub reference: Option<String>,

    /// Deploy this package (a store path, a release directory)
    #[arg(long, value_name = "PATH", group = "candidate")]
    pub path: Option<Utf8PathBuf>,

    /// Deploy exactly the package that instance OTHER runs now (promote)
    #[arg(long, value_name = "OTHER", group = "candidate")]
    pub from: Option<String>,

    /// Switch even to a candidate whose new migrations cannot be reversed
    #[arg(long)]
    pub allow_irreversible: bool,

    /// Leave the `[deploy] shared` commands (`migrate`, by default) to
    /// another host of a rollout across hosts, which deploys first and
    /// migrates the database they share; refused while the database lacks
    /// the candidate's migrations
    #[arg(long)]
    pub skip_shared: bool,

    /// Refuse a candidate whose content hash (`djshim status`) is not this:
    /// the bytes that were built, brought to this host
    #[arg(long, value_name = "sha256:HEX")]
    pub hash: Option<String>,

    /// Ask everything a deploy asks (the candidate, its hash, the deep check
    /// as the instance's account, the migrations and the refusals) and stop
    /// there: nothing of the instance changes but its state directory, made
    /// when missing (a --ref candidate is built, as a deploy builds it)
    #[arg(long)]
    pub prepare: bool,

    /// With --prepare: what was found, as one JSON object
    #[arg(long, requires = "prepare")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The branch, tag or commit to build [default: `[build]`'s ref, else HEAD]
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project name [default: the settings package that a manage.py here,
    /// beside or one level below names; else a placeholder]
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check only these instances [default: all]
    #[arg(value_name = "INSTANCE")]
    pub instances: Vec<String>,
}

/// How `generate` and `systemd` write their files.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Write into DIR instead of the directory the config names
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<Utf8PathBuf>,

    /// Print a unified diff of what would change; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Overwrite files that djshim did not write, and own them from now on
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub write: WriteArgs,

    /// Generate only these instances [default: all]
    #[arg(value_name = "INSTANCE")]
    pub instances: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The instance whose shim to print
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The instance to pin (one without `package` in the config)
    #[arg(value_name = "INSTANCE")]
    pub instance: String,

    /// The package to run: an absolute path (a /nix/store path, a release
    /// directory); links are followed, so a nix-build `result` pins its
    /// target. Required unless --keep is given
    #[arg(value_name = "PATH", required_unless_present = "keep")]
    pub path: Option<Utf8PathBuf>,

    /// Afterwards, delete all but the newest N generations (never the current one)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The instance to roll back
    #[arg(value_name = "INSTANCE")]
    pub instance: String,

    /// Switch to generation N instead of the one before the current
    #[arg(long, value_name = "N", conflicts_with = "to_package")]
    pub to: Option<u32>,

    /// Switch to the newest generation (up to the current one) that runs
    /// this package: a release that has another generation number on each
    /// host of a fleet
    #[arg(long, value_name = "PATH")]
    pub to_package: Option<Utf8PathBuf>,

    /// Leave the `[deploy] shared` commands (`migrate`, by default) to the
    /// rollout's first host, whose own rollback takes the database back
    #[arg(long)]
    pub skip_shared: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The instance whose generations to list
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instances to report (all when none is named)
    #[arg(value_name = "INSTANCE")]
    pub instances: Vec<String>,
    /// One JSON object: `{"project": …, "instances": {NAME: {…}}}`
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SystemdArgs {
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, Args)]
pub struct NixosArgs {
    /// Write the module to FILE (atomically) instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<Utf8PathBuf>,
}

#[derive(Debug, Args)]
pub struct CronArgs {
    /// Where the shims are installed [default: the config's bin directory]
    #[arg(long, value_name = "DIR")]
    pub bin: Option<Utf8PathBuf>,

    /// Where the lock files of `flock -n` live: a directory only root can
    /// write (the cron lines make it, mode 0700, when it is missing)
    #[arg(long, value_name = "DIR", default_value = "/run/djshim-cron")]
    pub lock_dir: Utf8PathBuf,
}
