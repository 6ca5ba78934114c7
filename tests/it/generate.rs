//! `djshim generate`: deterministic, all or nothing, owns only what it
//! wrote, never leaves a torn file, never interleaves with itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{World, assert_status, text};

/// A config with `n` instances whose settings module ends in `variant`.
pub fn config(n: usize, variant: &str) -> String {
    let mut text = format!(
        "project = \"site\"\nbin_dir = \"bin\"\n[defaults]\npython = \"/venv/bin/python3\"\n\
         settings = \"site.settings.{variant}\"\npackage = \"/srv/site/{{instance}}\"\n"
    );
    for i in 0..n {
        let _ = writeln!(text, "[instances.i{i:05}]");
    }
    text
}

/// The files of a directory and their contents.
fn snapshot(dir: &camino::Utf8Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = dir.read_dir_utf8() else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_owned(), fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn the_same_config_gives_byte_identical_files() {
    let a = World::new();
    let b = World::new();
    for w in [&a, &b] {
        w.write("djshim.toml", &config(3, "x"));
        assert_status(&w.djshim(&["generate"]), 0);
    }
    let first = snapshot(&a.path("bin"));
    assert_eq!(
        first.len(),
        4,
        "three shims and the manifest: {:?}",
        first.keys()
    );
    assert_eq!(first, snapshot(&b.path("bin")), "two worlds differ");
    assert_status(&a.djshim(&["generate"]), 0);
    assert_eq!(
        first,
        snapshot(&a.path("bin")),
        "a second run changed files"
    );
    for name in ["site-i00000", "site-i00001", "site-i00002"] {
        let mode = fs::metadata(a.path("bin").join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{name}");
    }
    let manifest = a.read("bin/.djshim-site.manifest");
    assert!(
        manifest.ends_with("site-i00000\nsite-i00001\nsite-i00002\n"),
        "{manifest}"
    );
    let (stdout, _) = text(&a.djshim(&["generate"]));
    assert_eq!(stdout, "", "an unchanged run reports nothing");
}

#[test]
fn an_invalid_instance_means_no_file_changes() {
    let w = World::new();
    w.write("djshim.toml", &config(3, "x"));
    assert_status(&w.djshim(&["generate"]), 0);
    let before = snapshot(&w.path("bin"));
    let broken = config(3, "y") + "[instances.bad]\nsettings = \"not a module\"\n";
    w.write("djshim.toml", &broken);
    assert_status(&w.djshim(&["generate"]), 2);
    assert_eq!(snapshot(&w.path("bin")), before);
}

#[test]
fn a_removed_instance_loses_its_shim_and_others_are_kept() {
    let w = World::new();
    w.write("djshim.toml", &config(3, "x"));
    assert_status(&w.djshim(&["generate"]), 0);
    w.write("bin/README", "mine");
    w.write("djshim.toml", &config(2, "x"));
    let output = w.djshim(&["generate"]);
    assert_status(&output, 0);
    assert_eq!(
        text(&output).0,
        format!("removed {}\n", w.path("bin/site-i00002"))
    );
    let files: Vec<String> = snapshot(&w.path("bin")).into_keys().collect();
    assert_eq!(
        files,
        [
            ".djshim-site.manifest",
            "README",
            "site-i00000",
            "site-i00001"
        ]
    );
    assert!(!w.read("bin/.djshim-site.manifest").contains("site-i00002"));
}

#[test]
fn a_foreign_file_is_refused_then_taken_over_with_force() {
    let w = World::new();
    w.write("djshim.toml", &config(2, "x"));
    w.write("bin/site-i00001", "#!/bin/sh\necho hand-written\n");
    let output = w.djshim(&["generate"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        format!(
            "djshim: error: refusing to overwrite files that djshim did not write:\n  {}\n  \
             = help: move them away, or pass `--force` to take them over\n",
            w.path("bin/site-i00001")
        )
    );
    assert_eq!(w.read("bin/site-i00001"), "#!/bin/sh\necho hand-written\n");
    assert!(
        !w.path("bin/site-i00000").exists(),
        "nothing is written when one file is refused"
    );
    assert_status(&w.djshim(&["generate", "--force"]), 0);
    assert!(w.read("bin/site-i00001").contains("exec "));
    assert!(w.read("bin/.djshim-site.manifest").contains("site-i00001"));
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let w = World::new();
    w.write("djshim.toml", &config(1, "x"));
    let output = w.djshim(&["generate", "--dry-run"]);
    assert_status(&output, 0);
    let diff = text(&output).0;
    assert!(
        diff.starts_with(&format!(
            "--- /dev/null\n+++ {}\n",
            w.path("bin/site-i00000")
        )),
        "{diff}"
    );
    assert!(
        diff.contains("+export DJANGO_SETTINGS_MODULE=site.settings.x\n"),
        "{diff}"
    );
    assert!(!w.path("bin").exists());

    assert_status(&w.djshim(&["generate"]), 0);
    w.write("djshim.toml", &config(1, "y"));
    let before = snapshot(&w.path("bin"));
    let diff = text(&w.djshim(&["generate", "-n"])).0;
    assert!(diff.contains("-export DJANGO_SETTINGS_MODULE=site.settings.x\n+export DJANGO_SETTINGS_MODULE=site.settings.y\n"), "{diff}");
    assert_eq!(snapshot(&w.path("bin")), before);
}

#[test]
fn out_and_instance_selection() {
    let w = World::new();
    w.write("djshim.toml", &config(3, "x"));
    assert_status(&w.djshim(&["generate", "--out", "elsewhere", "i00001"]), 0);
    let files: Vec<String> = snapshot(&w.path("elsewhere")).into_keys().collect();
    assert_eq!(files, [".djshim-site.manifest", "site-i00001"]);
    // Generating one instance keeps (does not prune) the others.
    assert_status(&w.djshim(&["generate", "--out", "elsewhere"]), 0);
    assert_status(&w.djshim(&["generate", "--out", "elsewhere", "i00000"]), 0);
    assert_eq!(snapshot(&w.path("elsewhere")).len(), 4);
    let output = w.djshim(&["generate", "nope"]);
    assert_status(&output, 2);
    assert_eq!(
        text(&output).1,
        "djshim: error: no instance `nope` in the config\n  = help: instances are: `i00000`, `i00001`, `i00002`\n"
    );
}

#[test]
fn an_edited_manifest_cannot_point_outside_its_directory() {
    let w = World::new();
    w.write("djshim.toml", &config(1, "x"));
    w.write("victim", "keep me");
    w.write("bin/.djshim-site.manifest", "../victim\n");
    let output = w.djshim(&["generate"]);
    assert_status(&output, 1);
    assert!(
        text(&output)
            .1
            .contains("`../victim` is not a file name djshim writes")
    );
    assert_eq!(w.read("victim"), "keep me");
}

/// Many runs killed with SIGKILL at pseudo-random moments: every shim on
/// disk is always either a complete old one or a complete new one.
#[test]
fn kill_9_never_leaves_a_torn_file() {
    const N: usize = 400;
    let w = World::new();
    let configs = [config(N, "old"), config(N, "new")];
    w.write("a.toml", &configs[0]);
    w.write("b.toml", &configs[1]);
    // The complete shims of both configs, to compare against.
    let mut complete = BTreeMap::new();
    for (cfg, out) in [("a.toml", "full-a"), ("b.toml", "full-b")] {
        assert_status(&w.djshim(&["-c", cfg, "generate", "--out", out]), 0);
        for (name, bytes) in snapshot(&w.path(out)) {
            complete.entry(name).or_insert_with(Vec::new).push(bytes);
        }
    }
    // Each round is killed once its writing has begun (a temporary file
    // in `bin`), and counts only when the kill left `bin` mid-way: a mix
    // of the two configs' shims, or a temporary file. Enough such rounds
    // prove the case the test names.
    let mut mid_way = 0;
    for round in 0..60 {
        if mid_way >= 5 {
            break;
        }
        let cfg = if round % 2 == 0 { "a.toml" } else { "b.toml" };
        let mut child = w
            .djshim_cmd(&["-c", cfg, "generate", "--out", "bin"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_writing(&w.path("bin"), &mut child);
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let now = snapshot(&w.path("bin"));
        let mut versions = std::collections::BTreeSet::new();
        let mut leftovers = false;
        for (name, bytes) in &now {
            if name.starts_with(".djshim-tmp-") {
                leftovers = true;
                continue;
            }
            if name.ends_with(".manifest") {
                continue;
            }
            let whole = complete
                .get(name)
                .and_then(|v| v.iter().position(|b| b == bytes));
            assert!(
                whole.is_some(),
                "round {round}: {name} is torn ({} bytes)",
                bytes.len()
            );
            versions.extend(whole);
        }
        if status.code().is_none() && (leftovers || versions.len() > 1) {
            mid_way += 1;
        }
    }
    assert!(
        mid_way >= 5,
        "only {mid_way} runs were killed mid-way: the test proved too little"
    );
    // The next complete run finishes the job and clears the leftovers.
    assert_status(&w.djshim(&["-c", "b.toml", "generate", "--out", "bin"]), 0);
    let after = snapshot(&w.path("bin"));
    assert!(after.keys().all(|n| !n.starts_with(".djshim-tmp-")));
    assert_eq!(after.len(), N + 1);
}

/// Two runs at once with different configs: the lock makes one wait, so
/// the directory ends wholly as one of them, never a mix.
#[test]
fn concurrent_runs_do_not_interleave() {
    const N: usize = 300;
    let w = World::new();
    w.write("a.toml", &config(N, "aaa"));
    w.write("b.toml", &config(N, "bbb"));
    // Each round starts `b.toml`'s run while `a.toml`'s writes (a
    // temporary file in `bin`), and counts when the first was still
    // running then: the second then waited for the lock, and the directory
    // ends wholly as the second's.
    let mut overlapped = 0;
    for round in 0..20 {
        if overlapped >= 3 {
            break;
        }
        let _ = fs::remove_dir_all(w.path("bin"));
        let mut first = w
            .djshim_cmd(&["-c", "a.toml", "generate", "--out", "bin"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_writing(&w.path("bin"), &mut first);
        let mut second = w
            .djshim_cmd(&["-c", "b.toml", "generate", "--out", "bin"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let both = first.try_wait().unwrap().is_none();
        assert!(first.wait().unwrap().success());
        assert!(second.wait().unwrap().success());
        let shims: Vec<String> = snapshot(&w.path("bin"))
            .into_iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .map(|(_, b)| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(shims.len(), N);
        let b = shims
            .iter()
            .filter(|s| s.contains("site.settings.bbb"))
            .count();
        assert!(
            b == 0 || b == N,
            "round {round}: {b} of {N} shims from one run, the rest from the other"
        );
        if both {
            assert_eq!(b, N, "round {round}: the later run did not write last");
            overlapped += 1;
        }
    }
    assert!(
        overlapped >= 3,
        "only {overlapped} rounds ran both at once: the test proved too little"
    );
}

/// Waits until `child` writes into `dir` (a temporary file of djshim's
/// appears), or ends.
fn wait_for_writing(dir: &camino::Utf8Path, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let writing = fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".djshim-tmp-"))
        });
        if writing || child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "djshim never wrote into {dir}"
        );
        std::thread::yield_now();
    }
}

/// Two projects in one directory (the README's `/usr/local/bin`): each
/// keeps its own manifest, prunes only its own files, and a file name both
/// would make is refused rather than taken.
#[test]
fn projects_sharing_a_directory_never_touch_each_others_files() {
    let w = World::new();
    let project = |name: &str, instances: &[&str]| {
        let mut text = format!(
            "project = \"{name}\"\nbin_dir = \"shared\"\n[defaults]\npython = \"/venv/bin/python3\"\n\
             settings = \"shop.settings\"\npackage = \"/srv/{name}\"\n"
        );
        for i in instances {
            let _ = writeln!(text, "[instances.{i}]");
        }
        text
    };
    w.write("a.toml", &project("shop-a", &["prod", "staging"]));
    w.write("b.toml", &project("shop-b", &["prod"]));
    assert_status(&w.djshim(&["-c", "a.toml", "generate"]), 0);
    let output = w.djshim(&["-c", "b.toml", "generate"]);
    assert_status(&output, 0);
    assert_eq!(
        text(&output).0,
        format!("created {}\n", w.path("shared/shop-b-prod"))
    );
    let files: Vec<String> = snapshot(&w.path("shared")).into_keys().collect();
    assert_eq!(
        files,
        [
            ".djshim-shop-a.manifest",
            ".djshim-shop-b.manifest",
            "shop-a-prod",
            "shop-a-staging",
            "shop-b-prod"
        ]
    );
    // A's instance leaves its config: only A's shim goes.
    w.write("a.toml", &project("shop-a", &["prod"]));
    let output = w.djshim(&["-c", "a.toml", "generate"]);
    assert_eq!(
        text(&output).0,
        format!("removed {}\n", w.path("shared/shop-a-staging"))
    );
    assert!(w.path("shared/shop-b-prod").is_file());
    // Project `shop`'s instance `b-prod` would make B's `shop-b-prod`:
    // refused, --force or not.
    w.write("d.toml", &project("shop", &["b-prod"]));
    let before = snapshot(&w.path("shared"));
    for args in [
        &["-c", "d.toml", "generate"][..],
        &["-c", "d.toml", "generate", "--force"],
    ] {
        let output = w.djshim(args);
        assert_status(&output, 1);
        assert_eq!(
            text(&output).1,
            format!(
                "djshim: error: refusing to touch files of another project:\n  {} (project \
                 `shop-b`)\n  = help: two projects make the same file name here; rename an \
                 instance or a project, or write one of them elsewhere (`--out`)\n",
                w.path("shared/shop-b-prod")
            )
        );
    }
    assert_eq!(snapshot(&w.path("shared")), before);
}

/// The manifest of djshim 0.1 (`.djshim-manifest`, one per directory) is
/// taken over file by file and goes once empty.
#[test]
fn the_old_manifest_is_taken_over() {
    let w = World::new();
    w.write("djshim.toml", &config(2, "x"));
    w.write("bin/site-i00000", "old\n");
    w.write("bin/site-i00001", "old\n");
    w.write(
        "bin/.djshim-manifest",
        "# old\nsite-i00000\nsite-i00001\nother-prod\n",
    );
    assert_status(&w.djshim(&["generate"]), 0);
    assert_eq!(
        w.read("bin/.djshim-manifest").lines().last(),
        Some("other-prod")
    );
    assert!(w.read("bin/.djshim-site.manifest").contains("site-i00001"));
    w.write("bin/.djshim-manifest", "site-i00000\n");
    assert_status(&w.djshim(&["generate"]), 0);
    assert!(!w.path("bin/.djshim-manifest").exists());
}

/// A rename that fails half way (an immutable shim: `chattr +i`) leaves
/// every shim as it was.
#[test]
fn a_failed_rename_leaves_every_shim_as_it_was() {
    let w = World::new();
    w.write("djshim.toml", &config(3, "old"));
    assert_status(&w.djshim(&["generate"]), 0);
    let before = snapshot(&w.path("bin"));
    let chattr = |flag: &str| {
        let status = Command::new(crate::support::require("chattr", "e2fsprogs"))
            .arg(flag)
            .arg(w.path("bin/site-i00001"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chattr {flag} (needs a file system with attributes)"
        );
    };
    chattr("+i");
    w.write("djshim.toml", &config(3, "new"));
    let output = w.djshim(&["generate"]);
    chattr("-i");
    assert_status(&output, 1);
    assert!(
        text(&output).1.contains(&format!(
            "{}: Operation not permitted",
            w.path("bin/site-i00001")
        )),
        "{}",
        text(&output).1
    );
    let after: BTreeMap<String, Vec<u8>> = snapshot(&w.path("bin"))
        .into_iter()
        .filter(|(name, _)| !name.starts_with(".djshim-tmp-"))
        .collect();
    assert_eq!(after, before, "some shims changed");
    assert_status(&w.djshim(&["generate"]), 0);
}

/// The same for units: `systemd` of one project leaves another's alone.
#[test]
fn projects_sharing_a_units_directory_keep_their_own_units() {
    let w = World::new();
    let project = |name: &str, jobs: &[&str]| {
        let mut text = format!(
            "project = \"{name}\"\nunits_dir = \"units\"\n[instances.prod]\npython = \"/venv/bin/python3\"\n\
             settings = \"shop.settings\"\npackage = \"/srv/{name}\"\nuser = \"{name}\"\n"
        );
        for job in jobs {
            let _ = write!(
                text,
                "[instances.prod.jobs.{job}]\ncommand = [\"{job}\"]\nschedule = \"@daily\"\n"
            );
        }
        text
    };
    w.write("a.toml", &project("shopa", &["clearsessions", "digest"]));
    w.write("b.toml", &project("shopb", &["clearsessions"]));
    assert_status(&w.djshim(&["-c", "a.toml", "systemd"]), 0);
    assert_status(&w.djshim(&["-c", "b.toml", "systemd"]), 0);
    w.write("a.toml", &project("shopa", &["clearsessions"]));
    let output = w.djshim(&["-c", "a.toml", "systemd"]);
    assert_status(&output, 0);
    let stdout = text(&output).0;
    assert_eq!(
        stdout,
        format!(
            "removed {units}/shopa-prod-digest.service\nremoved {units}/shopa-prod-digest.timer\n\
             updated {units}/shopa-prod.target\n",
            units = w.path("units")
        )
    );
    let files: Vec<String> = snapshot(&w.path("units")).into_keys().collect();
    assert!(
        files.contains(&"shopb-prod-clearsessions.timer".to_owned()),
        "{files:?}"
    );
    assert!(
        files.contains(&"shopa-prod-clearsessions.timer".to_owned()),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("digest")), "{files:?}");
}
