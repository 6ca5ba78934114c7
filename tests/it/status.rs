//! `djshim status`: what an engine and a person read of each instance
//! (SPEC section 10): generation, package, commit, content hash, health, a
//! run that has not ended, the units' state. The units' `active` under a
//! real systemd is asserted in `realunits`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use camino::Utf8PathBuf;

use crate::site::{Site, commit_votes, killed_deploy};
use crate::support::{Expect, World, assert_status, nix, text};

fn status(world: &World, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let output = world.djshim(&all);
    assert_status(&output, 0);
    serde_json::from_str(&text(&output).0).unwrap()
}

/// The content hash is Nix's own hash of a store path (`nix-store --query
/// --hash`, the SHA-256 of its NAR serialization), and the same for the
/// same tree outside the store: two hosts compare what they run, whatever
/// kind of package it is. The tree has what NAR distinguishes: an
/// executable, a symlink, an empty file, lengths on and off the 8-byte
/// padding, a nested directory.
#[test]
fn the_content_hash_is_nixs_own_and_the_same_outside_the_store() {
    let _nix = crate::profiles::nix_lock();
    let world = World::new();
    let tree = world.path("tree");
    fs::create_dir_all(tree.join("lib/deep")).unwrap();
    world.write("tree/manage.py", "print('thirteen')");
    world.write("tree/empty", "");
    world.write("tree/eight", "12345678");
    world.write("tree/lib/deep/x.py", "X = 1\n");
    world.write("tree/run", "#!/bin/sh\nexit 0\n");
    fs::set_permissions(tree.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("lib/deep", tree.join("link")).unwrap();
    let output = nix("nix-store").arg("--add").arg(&tree).output().unwrap();
    assert_status(&output, 0);
    let stored = Utf8PathBuf::from(text(&output).0.trim());
    world.write(
        "djshim.toml",
        &format!(
            "project = \"p\"\n[defaults]\npython = \"/usr/bin/python3\"\nsettings = \"p.settings\"\n\
             [instances.store]\npackage = \"{stored}\"\n[instances.here]\npackage = \"{tree}\"\n"
        ),
    );
    let seen = status(&world, &[]);
    let nars = nix("nix-store")
        .args(["--query", "--hash"])
        .arg(&stored)
        .output()
        .unwrap();
    assert_status(&nars, 0);
    let base32 = text(&nars)
        .0
        .trim()
        .trim_start_matches("sha256:")
        .to_owned();
    let hex = nix("nix-hash")
        .args(["--type", "sha256", "--to-base16", &base32])
        .output()
        .unwrap();
    assert_status(&hex, 0);
    let expected = format!("sha256:{}", text(&hex).0.trim());
    assert_eq!(
        seen["instances"]["store"]["content_hash"],
        expected.as_str()
    );
    assert_eq!(seen["instances"]["here"]["content_hash"], expected.as_str());
    // One byte changes it.
    world.write("tree/empty", "x");
    let changed = status(&world, &["here"]);
    assert_ne!(
        changed["instances"]["here"]["content_hash"],
        expected.as_str()
    );
    let _ = nix("nix-store").arg("--delete").arg(&stored).output();
}

/// A deployed instance: its generation, package and commit, healthy; an
/// instance never deployed: none. A deploy killed mid-migration: the new
/// generation runs, not healthy, and the interrupted run is named. The
/// table says the same to a person.
#[test]
fn status_says_what_each_instance_runs_and_what_did_not_end() {
    let (site, first) = Site::serving();
    let seen = status(&site.world, &[]);
    let prod = &seen["instances"]["prod"];
    assert_eq!(seen["project"], "mywebsite");
    assert_eq!(prod["generation"], 1);
    assert_eq!(prod["package"], first.as_str());
    assert_eq!(prod["healthy"], true);
    assert!(prod["unfinished"].is_null(), "{prod:#}");
    let commit = prod["commit"].as_str().unwrap();
    assert!(first.as_str().ends_with(commit), "{prod:#}");
    assert!(
        prod["content_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // No systemd runs the tests' units here: asked, it answers nothing.
    assert_eq!(
        prod["units"]["mywebsite-prod.service"], "unknown",
        "{prod:#}"
    );
    let staging = &seen["instances"]["staging"];
    assert!(staging["generation"].is_null(), "{staging:#}");
    assert!(staging["package"].is_null(), "{staging:#}");
    assert!(staging["units"].as_object().unwrap().is_empty());

    commit_votes(&site);
    killed_deploy(&site, "migrate-0002");
    let prod = status(&site.world, &["prod"])["instances"]["prod"].clone();
    assert_eq!(prod["generation"], 2, "{prod:#}");
    assert_eq!(prod["healthy"], false, "{prod:#}");
    assert_eq!(prod["unfinished"]["running"], false, "{prod:#}");
    assert!(
        prod["unfinished"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("a deploy of "),
        "{prod:#}"
    );
    Expect::new()
        .stdout_has("INSTANCE  GENERATION  PACKAGE")
        .stdout_has("(interrupted run)")
        .stdout_has("staging   -           (none)")
        .check(&site.world.djshim(&["status"]));
}
