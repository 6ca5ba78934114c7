//! `djshim build` (SPEC section 8): a real git repository with commits made
//! here, the export by real `git ls-tree` and `git cat-file`, real Nix (`nix-store --add`, `nix-build`) and a
//! real build command; the package built is pinned and run.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use camino::Utf8PathBuf;

use crate::profiles::{collect, nix_lock};
use crate::support::{
    Expect, World, assert_status, copy_tree, from_cron, git, nix, root, text, venv,
};

/// A repository holding the example project, committed on `main`, with a
/// build script and a Nix file; the commit id.
pub(crate) fn repository(world: &World) -> (Utf8PathBuf, String) {
    let repo = world.path("repo");
    copy_tree(&root().join("examples/mywebsite"), &repo);
    fs::write(
        repo.join("build.sh"),
        "set -e\necho \"$DJSHIM_COMMIT\" > BUILT\necho building >&2\n",
    )
    .unwrap();
    fs::write(
        repo.join("default.nix"),
        "derivation {\n  name = \"mywebsite\";\n  system = builtins.currentSystem;\n  \
         builder = \"/bin/sh\";\n  args = [ \"-c\" \"/bin/cp -r ${builtins.path { path = ./.; name = \"source\"; }} $out\" ];\n}\n",
    )
    .unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

pub(crate) fn config(world: &World, how: &str) {
    // The build account, and a world it can walk into.
    crate::accounts::accounts();
    fs::set_permissions(world.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    world.write(
        "djshim.toml",
        &format!(
            "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\n\
             [build]\nrepo = \"repo\"\nref = \"main\"\nreleases_dir = \"releases\"\nuser = \"djshimt-build\"\n{how}\n\
             [instances.prod]\npython = \"{}/bin/python3\"\nsettings = \"mywebsite.settings.production\"\n\
             env = {{ MYWEBSITE_DB = \"{}\" }}\n",
            venv(),
            world.path("db.sqlite3")
        ),
    );
}

#[test]
fn a_command_build_is_exactly_the_commit_read_only() {
    let world = World::new();
    let (repo, commit) = repository(&world);
    config(&world, "command = [\"sh\", \"build.sh\"]");
    // What must not reach the package: an uncommitted change, an untracked file.
    fs::write(
        repo.join("manage.py"),
        "raise SystemExit('the working tree')\n",
    )
    .unwrap();
    fs::write(repo.join("untracked.txt"), "not committed\n").unwrap();

    let output = world.djshim(&["build"]);
    assert_status(&output, 0);
    let (stdout, stderr) = text(&output);
    let release = world.path(&format!("releases/mywebsite-{}", &commit[..12]));
    assert_eq!(stdout, format!("{release}\n"));
    assert!(
        stderr.contains(&format!("djshim: building commit {commit}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("djshim: build: sh build.sh: done in "),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(release.join("BUILT")).unwrap(),
        format!("{commit}\n")
    );
    assert_eq!(
        fs::read_to_string(release.join("manage.py")).unwrap(),
        fs::read_to_string(root().join("examples/mywebsite/manage.py")).unwrap()
    );
    assert!(!release.join("untracked.txt").exists());
    for path in [
        release.clone(),
        release.join("manage.py"),
        release.join("mywebsite"),
    ] {
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "{path} is writable");
    }
    // The same commit again: not built again.
    let output = world.djshim(&["build"]);
    assert_status(&output, 0);
    assert_eq!(text(&output).0, format!("{release}\n"));
    assert!(!text(&output).1.contains("build.sh"), "{}", text(&output).1);

    // It composes with pin, and history and list show the commit.
    assert_status(&world.djshim(&["pin", "prod", release.as_str()]), 0);
    assert_status(&world.djshim(&["generate"]), 0);
    assert_status(&from_cron(world.path("bin/mywebsite-prod"), &["check"]), 0);
    let history = text(&world.djshim(&["history", "prod"])).0;
    assert!(
        history.contains(&format!("{release} (commit {})", &commit[..12])),
        "{history}"
    );
    let list = text(&world.djshim(&["list"])).0;
    assert!(
        list.contains(&format!("(commit {})", &commit[..12])),
        "{list}"
    );
}

#[test]
fn a_branch_means_its_newest_commit_and_a_failed_build_leaves_nothing() {
    let world = World::new();
    let (repo, first) = repository(&world);
    config(&world, "command = [\"sh\", \"build.sh\"]");
    fs::write(repo.join("build.sh"), "echo broken >&2\nexit 3\n").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "a broken build"]);
    let broken = git(&repo, &["rev-parse", "HEAD"]);
    Expect::new()
        .status(1)
        .stderr_has(&format!(
            "djshim: error: build: sh build.sh: `(cd {} && /usr/bin/setpriv --reuid={} --regid={} \
             --init-groups -- sh build.sh)` failed: exit status: 3",
            world.path(&format!("releases/mywebsite-{}", &broken[..12])),
            crate::accounts::accounts().build_uid,
            crate::accounts::accounts().build_gid,
        ))
        .check(&world.djshim(&["build"]));
    let left: Vec<String> = fs::read_dir(world.path("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(left.is_empty(), "a failed build left {left:?}");
    // An older commit by id, a ref that names nothing.
    let output = world.djshim(&["build", "--ref", &first]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .0
            .ends_with(&format!("mywebsite-{}\n", &first[..12]))
    );
    let output = world.djshim(&["build", "--ref", "no-such-branch"]);
    assert_status(&output, 1);
    assert!(
        text(&output).1.contains(&format!(
            "djshim: error: build: resolve `no-such-branch`: `no-such-branch` names no commit in {repo}"
        )),
        "{}",
        text(&output).1
    );
}

#[test]
fn a_nix_build_adds_the_commit_and_builds_it_once() {
    let _nix = nix_lock();
    let world = World::new();
    let (repo, commit) = repository(&world);
    config(&world, "nix = \"default.nix\"");
    fs::write(repo.join("untracked.txt"), "not committed\n").unwrap();
    let run = || {
        let output = world.nix_build();
        assert_status(&output, 0);
        text(&output)
    };
    let (stdout, stderr) = run();
    let package = Utf8PathBuf::from(stdout.trim());
    assert!(package.starts_with("/nix/store") && package.as_str().ends_with("-mywebsite"));
    assert!(
        stderr.contains("djshim: build: nix-build: done in "),
        "{stderr}"
    );
    // nix-build's progress reaches the user: here it built the derivation.
    assert!(stderr.contains("building '/nix/store/"), "{stderr}");
    assert!(package.join("manage.py").is_file() && !package.join("untracked.txt").exists());
    let link = world.path(&format!("releases/mywebsite-{}", &commit[..12]));
    assert_eq!(fs::read_link(&link).unwrap(), package.as_std_path());
    // Again: the same store path, nothing built.
    let (again, stderr) = run();
    assert_eq!(again, stdout);
    assert!(!stderr.contains("building '/nix/store/"), "{stderr}");
    // The source went into the store under the commit's name.
    let source = fs::read_dir("/nix/store")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_str()
                .is_some_and(|s| s.ends_with(&format!("-mywebsite-src-{}", &commit[..12])))
        })
        .expect("the exported source in the store");
    // Leave the store as it was.
    fs::remove_file(&link).unwrap();
    assert!(collect(&package));
    let drvs: Vec<_> = fs::read_dir("/nix/store")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with("-mywebsite.drv")))
        .collect();
    for drv in drvs {
        let _ = nix("nix-store").arg("--delete").arg(&drv).output();
    }
    let source = Utf8PathBuf::from_path_buf(source).unwrap();
    assert!(collect(&source));
}

/// Submodules are not part of `git archive`: the build says so, and their
/// directories are empty in the package.
#[test]
fn submodules_are_not_exported_and_the_build_says_so() {
    let world = World::new();
    let (repo, _) = repository(&world);
    config(&world, "command = [\"sh\", \"build.sh\"]");
    let sub = world.path("sub");
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("vendored.py"), "X = 1\n").unwrap();
    git(&sub, &["init", "--quiet", "--initial-branch=main"]);
    git(&sub, &["add", "."]);
    git(&sub, &["commit", "--quiet", "-m", "sub"]);
    git(
        &repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "--quiet",
            sub.as_str(),
            "vendor",
        ],
    );
    git(&repo, &["commit", "--quiet", "-m", "a submodule"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let output = world.djshim(&["build"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains(&format!(
            "djshim: warning: commit {} has submodules; they are not exported",
            &commit[..12]
        )),
        "{}",
        text(&output).1
    );
    let release = Utf8PathBuf::from(text(&output).0.trim());
    assert!(!release.join("vendor/vendored.py").exists());
}
