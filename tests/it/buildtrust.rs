//! A commit's code against the machine that builds it (issue 14, items 3
//! and 12; issue 17, item 3): the build runs as the build account with a
//! clean environment, in the release's final path; what it leaves is
//! frozen; the export is the commit's tracked files byte for byte,
//! whatever git's attributes say; Nix evaluates in restricted mode.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::accounts::accounts;
use crate::support::{NIX_CONFIG, World, assert_status, git, require, root_dir, text};

/// A repository with `build.sh` (and `files`), committed on `main`; the
/// commit id.
fn repository(world: &World, build: &str, files: &[(&str, &str)]) -> String {
    let repo = world.path("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("manage.py"), "print('manage')\n").unwrap();
    fs::write(repo.join("build.sh"), build).unwrap();
    for (path, content) in files {
        fs::write(repo.join(path), content).unwrap();
    }
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    git(&repo, &["rev-parse", "HEAD"])
}

fn config(world: &World, build: &str) {
    accounts();
    fs::set_permissions(world.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    world.write(
        "djshim.toml",
        &format!(
            "project = \"site\"\n[build]\nrepo = \"repo\"\nreleases_dir = \"releases\"\n{build}\n\
             [instances.prod]\npython = \"/usr/bin/python3\"\nsettings = \"site.settings\"\n"
        ),
    );
}

const RECORDER: &str = "set -e\nid -u > uid\nenv | sort > env\npwd > pwd\n\
    ls -A \"$HOME\" > home\ntouch \"$HOME/left-by-the-build\"\n\
    cp /bin/true suid && chmod 4755 suid\ntouch open && chmod 666 open\n\
    printf '#!%s/venv/bin/python\\n' \"$DJSHIM_RELEASE\" > script\n";

#[test]
fn a_build_runs_as_the_build_account_and_leaves_a_frozen_release() {
    let a = accounts();
    let world = World::new();
    let commit = repository(&world, RECORDER, &[]);
    // As root with no build account: refused, nothing made.
    config(&world, "command = [\"sh\", \"build.sh\"]");
    let output = world
        .djshim_cmd(&["build"])
        .env("OPERATOR_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_status(&output, 1);
    assert!(
        text(&output)
            .1
            .contains("`[build] user` is not set, and djshim runs as root: the build command never runs as root"),
        "{}",
        text(&output).1
    );
    assert!(
        !world
            .path("releases")
            .join(format!("site-{}", &commit[..12]))
            .exists()
    );

    config(
        &world,
        "command = [\"sh\", \"build.sh\"]\nuser = \"djshimt-build\"",
    );
    let output = world
        .djshim_cmd(&["build"])
        .env("OPERATOR_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_status(&output, 0);
    let release = world.path(&format!("releases/site-{}", &commit[..12]));
    assert_eq!(text(&output).0, format!("{release}\n"));
    let read = |name: &str| fs::read_to_string(release.join(name)).unwrap();
    assert_eq!(read("uid").trim(), a.build_uid.to_string());
    let env = read("env");
    assert!(!env.contains("OPERATOR_TOKEN"), "{env}");
    let epoch = git(
        &world.path("repo"),
        &["show", "-s", "--format=%ct", &commit],
    );
    for line in [
        format!("DJSHIM_COMMIT={commit}"),
        format!("SOURCE_DATE_EPOCH={epoch}"),
        "LANG=C.UTF-8".to_owned(),
        "PYTHONNOUSERSITE=1".to_owned(),
        "USER=djshimt-build".to_owned(),
        format!("DJSHIM_RELEASE={release}"),
    ] {
        assert!(env.lines().any(|l| l == line), "no {line} in:\n{env}");
    }
    assert!(
        env.lines()
            .any(|l| l.starts_with("PATH=") && !l.contains("/root"))
    );
    // A home of its own for this build, empty, and gone after it: the
    // account's own home (here /nonexistent) is never the build's, so
    // nothing one build leaves there (a `.pth` in the user site) reaches
    // the next.
    let home = env
        .lines()
        .find_map(|l| l.strip_prefix("HOME="))
        .unwrap()
        .to_owned();
    assert!(
        home.starts_with("/tmp/djshim-build-home-djshimt-build-"),
        "{home}"
    );
    assert_eq!(read("home").trim(), "");
    assert!(!std::path::Path::new(&home).exists(), "{home} was left");
    // Built where it stays: what names its own path keeps working.
    assert_eq!(read("pwd").trim(), release.as_str());
    assert!(read("script").starts_with(&format!("#!{release}/venv/bin/python")));
    // Frozen: root's, read-only, no setuid bit.
    for name in ["", "suid", "open", "uid", "manage.py"] {
        let meta = fs::symlink_metadata(release.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name}");
        assert_eq!(meta.mode() & 0o7222, 0, "{name}: mode {:o}", meta.mode());
    }
    // Built once.
    let output = world.djshim(&["build"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains("already built"),
        "{}",
        text(&output).1
    );
}

/// Item 12: the commit's tracked files, byte for byte: committed
/// `export-ignore`/`export-subst` attributes, an uncommitted
/// `.git/info/attributes` and a local `core.autocrlf` change nothing.
#[test]
fn the_export_is_the_commits_files_whatever_git_attributes_say() {
    let world = World::new();
    let commit = repository(
        &world,
        "true\n",
        &[
            (
                ".gitattributes",
                "secret.txt export-ignore\nsubst.txt export-subst\n",
            ),
            ("secret.txt", "tracked\n"),
            ("subst.txt", "$Format:%H$\n"),
            ("crlf.txt", "a\r\nb\n"),
        ],
    );
    let repo = world.path("repo");
    fs::write(
        repo.join(".git/info/attributes"),
        "manage.py export-ignore\n* text eol=crlf\n",
    )
    .unwrap();
    git(&repo, &["config", "core.autocrlf", "true"]);
    config(
        &world,
        "command = [\"sh\", \"build.sh\"]\nuser = \"djshimt-build\"",
    );
    let output = world.djshim(&["build"]);
    assert_status(&output, 0);
    let release = world.path(&format!("releases/site-{}", &commit[..12]));
    for (name, content) in [
        ("secret.txt", "tracked\n"),
        ("subst.txt", "$Format:%H$\n"),
        ("manage.py", "print('manage')\n"),
        ("crlf.txt", "a\r\nb\n"),
    ] {
        assert_eq!(
            fs::read_to_string(release.join(name)).ok().as_deref(),
            Some(content),
            "{name}"
        );
    }
}

/// Item 3, Nix: the commit's Nix file is evaluated in restricted mode, so
/// a file only root may read does not reach the world-readable store.
#[test]
fn a_commits_nix_code_reads_nothing_outside_its_source() {
    let _nix = crate::profiles::nix_lock();
    require("nix-build", "nix-bin");
    let secrets = root_dir();
    let token = crate::envfiles::put(
        crate::envfiles::tempdir_path(&secrets),
        "token",
        b"root-only-token\n",
        0o600,
        "root",
    );
    let world = World::new();
    let nix = format!(
        "derivation {{\n  name = \"site\";\n  system = builtins.currentSystem;\n  builder = \"/bin/sh\";\n  \
         args = [ \"-c\" \"echo ${{builtins.readFile {token}}} > $out\" ];\n}}\n"
    );
    repository(&world, "true\n", &[("default.nix", &nix)]);
    config(&world, "nix = \"default.nix\"\nuser = \"djshimt-build\"");
    let output = world.nix_build();
    assert_status(&output, 1);
    let stderr = text(&output).1;
    assert!(stderr.contains("restricted mode"), "{stderr}");
    assert!(!stderr.contains("root-only-token"), "{stderr}");
}

/// A Nix daemon this test starts (multi-user Nix, as on a server), on the
/// default socket; stopped, and its socket removed, when dropped (the
/// other Nix tests, under the same lock, drive the store directly).
struct Daemon(std::process::Child, camino::Utf8PathBuf);

impl Daemon {
    /// The daemon, its log in `log`.
    fn start(log: camino::Utf8PathBuf) -> Daemon {
        let socket = std::path::Path::new("/nix/var/nix/daemon-socket/socket");
        let _ = fs::remove_file(socket);
        let child = std::process::Command::new(require("nix-daemon", "nix-bin"))
            .env("NIX_CONFIG", NIX_CONFIG)
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "nix-daemon did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Daemon(child, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = fs::remove_file("/nix/var/nix/daemon-socket/socket");
    }
}

/// Item 3, with a Nix daemon: nix-build (the evaluation of the commit's
/// Nix file) runs as the build account through the daemon, and djshim
/// adds the out-link the account could not write.
#[test]
fn through_a_nix_daemon_the_build_account_evaluates() {
    let _nix = crate::profiles::nix_lock();
    let world = World::new();
    let daemon = Daemon::start(world.path("daemon.log"));
    let nix = "derivation {\n  name = \"site\";\n  \
               system = builtins.currentSystem;\n  builder = \"/bin/sh\";\n  \
               args = [ \"-c\" \"echo built > $out\" ];\n}\n";
    let commit = repository(&world, "true\n", &[("default.nix", nix)]);
    config(&world, "nix = \"default.nix\"\nuser = \"djshimt-build\"");
    let output = world.nix_build();
    assert_status(&output, 0);
    let package = text(&output).0.trim().to_owned();
    assert!(package.ends_with("-site"), "{package}");
    // The daemon says who its client was.
    let log = fs::read_to_string(&daemon.1).unwrap();
    assert!(log.contains("user djshimt-build"), "{log}");
    let link = world.path(&format!("releases/site-{}", &commit[..12]));
    assert_eq!(
        fs::read_link(&link).unwrap().to_str(),
        Some(package.as_str())
    );
    let _ = crate::support::nix("nix-store")
        .arg("--delete")
        .arg(&package)
        .output();
}

/// A tree that names `a` as a link to a directory outside and then `a/x`
/// (`git mktree` makes it; fetch accepts it): written as listed, root's
/// export would follow the link and write outside the release. It is
/// refused before anything is written, and the directory it points at
/// stays untouched.
#[test]
fn a_tree_that_names_a_path_twice_is_refused_before_anything_is_written() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let world = World::new();
    repository(&world, RECORDER, &[]);
    config(
        &world,
        "command = [\"sh\", \"build.sh\"]\nuser = \"djshimt-build\"",
    );
    let repo = world.path("repo");
    let victim = world.path("victim");
    fs::create_dir_all(&victim).unwrap();
    let with_input = |args: &[&str], input: &str| {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert_status(&output, 0);
        text(&output).0.trim().to_owned()
    };
    let link = with_input(&["hash-object", "-w", "--stdin"], victim.as_str());
    let owned = with_input(&["hash-object", "-w", "--stdin"], "written by root\n");
    let inner = with_input(&["mktree"], &format!("100644 blob {owned}\tx\n"));
    let manage = git(&repo, &["rev-parse", "HEAD:manage.py"]);
    let build = git(&repo, &["rev-parse", "HEAD:build.sh"]);
    let top = with_input(
        &["mktree"],
        &format!(
            "100644 blob {manage}\tmanage.py\n100644 blob {build}\tbuild.sh\n\
             120000 blob {link}\ta\n040000 tree {inner}\ta\n"
        ),
    );
    let listing = git(&repo, &["ls-tree", "-r", &top]);
    assert!(
        listing.contains("\ta\n") && listing.contains("\ta/x"),
        "git made another tree:\n{listing}"
    );
    let commit = git(&repo, &["commit-tree", &top, "-p", "HEAD", "-m", "evil"]);
    git(&repo, &["update-ref", "refs/heads/main", &commit]);

    let output = world.djshim(&["build"]);
    assert_status(&output, 1);
    assert!(
        text(&output).1.contains(&format!(
            "commit {commit}'s tree names `a` as a file, link or submodule, and a/x inside it: no \
             checkout can hold it"
        )),
        "{}",
        text(&output).1
    );
    assert!(!victim.join("x").exists(), "root wrote through the link");
    let left: Vec<_> = fs::read_dir(world.path("releases"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
