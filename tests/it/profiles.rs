//! Profiles (SPEC section 5): pin, rollback, history, switches under load,
//! and the Nix garbage collector, with real Nix (Debian's nix-bin).

use std::fs::{self, File};
use std::sync::atomic::{AtomicBool, Ordering};

use camino::{Utf8Path, Utf8PathBuf};

use crate::support::{World, assert_status, from_cron, nix, root, text, venv};

/// manage.py of a probe package: prints which interpreter and which
/// manage.py ran, so a run that mixed two generations shows it.
const PROBE: &str = "import sys\nprint(sys.executable)\nprint(__file__)\n";

/// A package that carries its own "env": `.venv` holding a link to the
/// shared venv's interpreter and its pyvenv.cfg.
fn package(world: &World, rel: &str) -> Utf8PathBuf {
    let dir = world.path(rel);
    world.write(&format!("{rel}/manage.py"), PROBE);
    world.write(&format!("{rel}/probe/__init__.py"), "");
    world.write(&format!("{rel}/probe/settings.py"), "");
    fs::create_dir_all(dir.join(".venv/bin")).unwrap();
    fs::copy(venv().join("pyvenv.cfg"), dir.join(".venv/pyvenv.cfg")).unwrap();
    std::os::unix::fs::symlink(venv().join("bin/python3"), dir.join(".venv/bin/python")).unwrap();
    dir
}

/// A world with one profiled instance `probe-main` and its shim.
fn world() -> (World, Utf8PathBuf) {
    let world = World::new();
    world.write(
        "djshim.toml",
        "project = \"probe\"\nprofiles_dir = \"profiles\"\n[instances.main]\n\
         python = \".venv/bin/python\"\nsettings = \"probe.settings\"\n",
    );
    assert_status(&world.djshim(&["generate"]), 0);
    let shim = world.path("bin/probe-main");
    (world, shim)
}

/// Runs the shim from cron's environment; returns (interpreter, manage.py).
fn run(shim: &Utf8Path) -> Result<(String, String), String> {
    let output = from_cron(shim, &[]);
    let (out, err) = text(&output);
    let mut lines = out.lines();
    match (output.status.success(), lines.next(), lines.next()) {
        (true, Some(python), Some(manage)) => Ok((python.to_owned(), manage.to_owned())),
        _ => Err(format!("{:?}: {out}{err}", output.status)),
    }
}

fn djshim_ok(world: &World, args: &[&str]) -> String {
    let output = world.djshim(args);
    assert_status(&output, 0);
    text(&output).0
}

#[test]
fn pin_rollback_and_history_move_the_shim_between_packages() {
    let (world, shim) = world();
    let a = package(&world, "a");
    let b = package(&world, "b");
    let output = world.djshim(&["list"]);
    assert!(text(&output).0.contains("(not pinned)"));
    let output = from_cron(&shim, &[]);
    assert_status(&output, 127);
    assert_eq!(
        text(&output).1,
        format!(
            "probe-main: the profile {} of instance main points at no package\n",
            world.path("profiles/probe-main")
        )
    );

    assert_eq!(
        djshim_ok(&world, &["pin", "main", a.as_str()]),
        format!("main: generation 1: {a}\n")
    );
    let shim_text = fs::read(&shim).unwrap();
    assert_eq!(
        run(&shim).unwrap(),
        (format!("{a}/.venv/bin/python"), format!("{a}/manage.py"))
    );
    assert_eq!(
        djshim_ok(&world, &["pin", "main", b.as_str()]),
        format!("main: generation 1 -> 2: {a} -> {b}\n")
    );
    assert_eq!(run(&shim).unwrap().1, format!("{b}/manage.py"));
    assert_eq!(
        fs::read(&shim).unwrap(),
        shim_text,
        "a pin rewrote the shim"
    );
    assert_eq!(
        djshim_ok(&world, &["pin", "main", b.as_str()]),
        format!("main: generation 2 already runs {b}\n")
    );

    // A link to a package (nix-build's `result`) pins what it points to.
    std::os::unix::fs::symlink(&a, world.path("result")).unwrap();
    assert_eq!(
        djshim_ok(&world, &["pin", "main", world.path("result").as_str()]),
        format!("main: generation 2 -> 3: {b} -> {a}\n")
    );

    let history = djshim_ok(&world, &["history", "main"]);
    let rows: Vec<(String, String)> = history
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split("   ").collect();
            (cells[0].to_owned(), cells[2..].join("   "))
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1".into(), a.to_string()),
            ("2".into(), b.to_string()),
            ("3".into(), format!("{a}   (current)"))
        ]
    );

    assert_eq!(
        djshim_ok(&world, &["rollback", "main"]),
        format!("main: generation 3 -> 2: {a} -> {b}\n")
    );
    assert_eq!(run(&shim).unwrap().1, format!("{b}/manage.py"));
    assert_eq!(
        djshim_ok(&world, &["rollback", "main", "--to", "1"]),
        format!("main: generation 2 -> 1: {b} -> {a}\n")
    );
    let output = world.djshim(&["rollback", "main"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        "djshim: error: generation 1 of instance `main` has no older generation with another package that ran healthy; there is nothing to roll back to\n"
    );
    let output = world.djshim(&["rollback", "main", "--to", "9"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        "djshim: error: instance `main` has no generation 9; it has 1, 2, 3\n"
    );

    assert_eq!(
        djshim_ok(&world, &["pin", "main", "--keep", "1"]),
        format!("main: deleted generation 2: {b}\n"),
        "the newest generation (3) and the current one (1) are kept, as Nix does"
    );
    assert!(
        djshim_ok(&world, &["list"])
            .contains(&format!("{} -> {a}", world.path("profiles/probe-main")))
    );
}

#[test]
fn a_package_the_instance_cannot_run_is_refused_and_nothing_moves() {
    let (world, _shim) = world();
    let good = package(&world, "good");
    djshim_ok(&world, &["pin", "main", good.as_str()]);
    let before: Vec<String> = world
        .files()
        .into_iter()
        .filter(|f| f.starts_with("profiles"))
        .collect();
    let link_before = fs::read_link(world.path("profiles/probe-main")).unwrap();

    world.write("empty/README", "no manage.py here");
    let broken = package(&world, "broken");
    fs::remove_file(broken.join(".venv/bin/python")).unwrap();
    let cases = [
        (
            world.path("empty"),
            1,
            format!(
                "main: `manage`: {}/manage.py: no such file\nmain: `python`: {}/.venv/bin/python: missing or not executable\n",
                world.path("empty"),
                world.path("empty")
            ),
        ),
        (
            broken.clone(),
            1,
            format!("main: `python`: {broken}/.venv/bin/python: missing or not executable\n"),
        ),
        (world.path("empty/README"), 1, String::new()),
        (world.path("nonexistent"), 1, String::new()),
    ];
    for (path, code, stdout) in cases {
        let output = world.djshim(&["pin", "main", path.as_str()]);
        assert_status(&output, code);
        assert_eq!(text(&output).0, stdout, "{path}");
    }
    let output = world.djshim(&["pin", "main", "relative/path"]);
    assert_status(&output, 2);
    assert!(
        text(&output)
            .1
            .starts_with("djshim: error: `relative/path` is not an absolute path\n")
    );
    let output = world.djshim(&["pin", "nope", good.as_str()]);
    assert_status(&output, 2);

    let after: Vec<String> = world
        .files()
        .into_iter()
        .filter(|f| f.starts_with("profiles"))
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        fs::read_link(world.path("profiles/probe-main")).unwrap(),
        link_before
    );
}

#[test]
fn an_instance_with_a_package_or_an_unwritable_profiles_dir_is_refused() {
    let world = World::new();
    world.write("pkg/manage.py", "");
    world.write(
        "djshim.toml",
        &format!(
            "project = \"p\"\nprofiles_dir = \"/proc/djshim-profiles\"\n[defaults]\npython = \"{}/bin/python3\"\n\
             settings = \"json.decoder\"\n[instances.fixed]\npackage = \"{}\"\n[instances.free]\n",
            venv(),
            world.path("pkg")
        ),
    );
    let output = world.djshim(&["pin", "fixed", world.path("pkg").as_str()]);
    assert_status(&output, 2);
    assert!(
        text(&output)
            .1
            .contains("instance `fixed` has `package` set"),
        "{}",
        text(&output).1
    );
    // /proc refuses new directories even to root: a profiles dir nobody can write.
    let output = world.djshim(&["pin", "free", world.path("pkg").as_str()]);
    assert_status(&output, 1);
    assert!(
        text(&output)
            .1
            .starts_with("djshim: error: cannot create directory /proc/djshim-profiles: "),
        "{}",
        text(&output).1
    );
}

/// While a thread runs the shim in a loop, 50 pins alternate between two
/// packages: no run fails, and no run mixes the interpreter of one
/// generation with the manage.py of another.
#[test]
fn switches_under_a_running_loop_never_fail_a_run() {
    let (world, shim) = world();
    let a = package(&world, "a");
    let b = package(&world, "b");
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    let done = AtomicBool::new(false);
    let runs = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut runs = Vec::new();
            while !done.load(Ordering::Relaxed) {
                runs.push(run(&shim));
            }
            runs
        });
        for i in 0..50 {
            let target = if i % 2 == 0 { &b } else { &a };
            djshim_ok(&world, &["pin", "main", target.as_str()]);
        }
        done.store(true, Ordering::Relaxed);
        runner.join().unwrap()
    });
    assert!(
        runs.len() >= 10,
        "only {} runs overlapped the pins",
        runs.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for run in &runs {
        let (python, manage) = run.as_ref().unwrap_or_else(|e| panic!("a run failed: {e}"));
        let package = manage.strip_suffix("/manage.py").unwrap();
        assert_eq!(
            python,
            &format!("{package}/.venv/bin/python"),
            "a run mixed two generations"
        );
        seen.insert(package.to_owned());
    }
    assert_eq!(seen.len(), 2, "the runs saw only {seen:?}");
    assert_eq!(djshim_ok(&world, &["history", "main"]).lines().count(), 51);
}

/// Serialises the tests that add to and collect from the one Nix store.
pub(crate) fn nix_lock() -> File {
    let lock = File::create(Utf8Path::new(env!("CARGO_TARGET_TMPDIR")).join("nix.lock")).unwrap();
    lock.lock().unwrap();
    lock
}

/// A package added to the real Nix store; `tag` makes its hash unique.
fn store_package(world: &World, name: &str, tag: &str) -> Utf8PathBuf {
    let dir = package(world, &format!("src/{name}"));
    fs::write(dir.join("tag"), tag).unwrap();
    let output = nix("nix-store").arg("--add").arg(&dir).output().unwrap();
    assert_status(&output, 0);
    Utf8PathBuf::from(text(&output).0.trim())
}

/// What a whole `nix-store --gc` would delete now (`--print-dead`: the
/// collector's full root search, nothing deleted).
pub(crate) fn dead() -> Vec<String> {
    let output = nix("nix-store")
        .args(["--gc", "--print-dead"])
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output).0.lines().map(str::to_owned).collect()
}

/// `nix-store --delete` runs the collector on the named path only: it
/// refuses a path that a root keeps alive. (A real `--gc` would also sweep
/// unrelated garbage of whoever runs the tests.)
pub(crate) fn collect(path: &Utf8Path) -> bool {
    nix("nix-store")
        .arg("--delete")
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn pinned_store_paths_survive_the_garbage_collector_until_pruned() {
    let _nix = nix_lock();
    let (world, shim) = world();
    let tag = world.path("").to_string();
    let a = store_package(&world, "mywebsite-a", &tag);
    let b = store_package(&world, "mywebsite-b", &tag);
    assert!(
        dead().contains(&a.to_string()),
        "an unpinned path must be garbage"
    );
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    djshim_ok(&world, &["pin", "main", b.as_str()]);
    let dead_now = dead();
    assert!(
        !dead_now.contains(&a.to_string()) && !dead_now.contains(&b.to_string()),
        "--gc would delete a pinned path"
    );
    assert!(
        !collect(&a) && !collect(&b),
        "a pinned store path was collected"
    );
    assert!(a.is_dir() && b.is_dir());
    assert_eq!(run(&shim).unwrap().1, format!("{b}/manage.py"));

    assert_eq!(
        djshim_ok(&world, &["pin", "main", "--keep", "1"]),
        format!("main: deleted generation 1: {a}\n")
    );
    assert!(
        dead().contains(&a.to_string()),
        "the pruned path is still kept alive"
    );
    assert!(
        collect(&a),
        "the pruned generation's path is still kept alive"
    );
    assert!(!a.exists() && b.is_dir());
    assert!(!collect(&b));
    // Leave the store as it was: drop the root, collect b too.
    djshim_ok(
        &world,
        &["pin", "main", world.path("src/mywebsite-a").as_str()],
    );
    djshim_ok(&world, &["pin", "main", "--keep", "1"]);
    assert!(collect(&b));
}

/// djshim as the builder of a Nix derivation (examples/nix/shims.nix): the
/// build succeeds without $HOME or a sandbox escape, and the output's
/// references are the packages its shims run.
#[test]
fn generate_builds_a_nix_derivation_that_references_its_packages() {
    let _nix = nix_lock();
    let world = World::new();
    let tag = world.path("").to_string();
    let staging = store_package(&world, "mywebsite-1.4", &tag);
    let prod = store_package(&world, "mywebsite-1.3", &tag);
    let output = nix("nix-build")
        .arg("--out-link")
        .arg(world.path("result"))
        .arg(root().join("examples/nix/shims.nix"))
        .args(["--arg", "djshim", env!("CARGO_BIN_EXE_djshim")])
        .args(["--arg", "staging", &format!("builtins.storePath {staging}")])
        .args(["--arg", "prod", &format!("builtins.storePath {prod}")])
        .args(["--argstr", "python", "/usr/bin/python3"])
        .output()
        .unwrap();
    assert_status(&output, 0);
    let out = Utf8PathBuf::from(text(&output).0.trim());
    let shim = fs::read_to_string(out.join("bin/mywebsite-prod")).unwrap();
    assert!(
        shim.contains(&format!("exec /usr/bin/python3 {prod}/manage.py \"$@\"")),
        "{shim}"
    );
    let refs = nix("nix-store")
        .args(["-q", "--references"])
        .arg(&out)
        .output()
        .unwrap();
    let mut refs: Vec<String> = text(&refs).0.lines().map(str::to_owned).collect();
    refs.sort();
    let mut expected = vec![staging.to_string(), prod.to_string()];
    expected.sort();
    assert_eq!(refs, expected);
    // Unroot and collect what the test made.
    fs::remove_file(world.path("result")).unwrap();
    assert!(collect(&out));
}

/// Points the profile link somewhere by hand, the way an operator might.
fn relink(profile: &Utf8Path, target: &str) {
    fs::remove_file(profile).unwrap();
    std::os::unix::fs::symlink(target, profile).unwrap();
}

#[test]
fn a_profile_edited_by_hand_never_loses_what_runs() {
    let (world, shim) = world();
    let a = package(&world, "a");
    let b = package(&world, "b");
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    djshim_ok(&world, &["pin", "main", b.as_str()]);
    let profile = world.path("profiles/probe-main");
    let first = world.path("profiles/probe-main-1-link");

    // Back to generation 1 by an absolute path: 1 is what runs, so
    // `--keep 1` keeps it.
    relink(&profile, first.as_str());
    assert_eq!(djshim_ok(&world, &["pin", "main", "--keep", "1"]), "");
    assert_eq!(run(&shim).unwrap().1, format!("{a}/manage.py"));
    let history = djshim_ok(&world, &["history", "main"]);
    assert!(
        history
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!("{a}   (current)")),
        "{history}"
    );
    // Straight at generation 1's package: still what runs.
    relink(&profile, a.as_str());
    assert_eq!(djshim_ok(&world, &["pin", "main", "--keep", "1"]), "");
    assert!(first.symlink_metadata().is_ok());
    assert_eq!(run(&shim).unwrap().1, format!("{a}/manage.py"));

    // At garbage: rollback says where the profile points; --to still works.
    relink(&profile, "/nonexistent/garbage");
    let output = world.djshim(&["rollback", "main"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        format!(
            "djshim: error: the profile {profile} points at /nonexistent/garbage, which is none \
             of its generations (1, 2), so there is no generation before it\n  = help: switch \
             to one with `djshim rollback main --to N`\n"
        )
    );
    let history = djshim_ok(&world, &["history", "main"]);
    assert_eq!(
        history.lines().last().unwrap(),
        format!("the profile {profile} points at /nonexistent/garbage, which is none of these")
    );
    assert_eq!(
        djshim_ok(&world, &["rollback", "main", "--to", "2"]),
        format!("main: generation 2: {b}\n")
    );
    assert_eq!(run(&shim).unwrap().1, format!("{b}/manage.py"));
}

#[test]
fn generation_numbers_are_read_strictly_and_never_wrap() {
    let (world, _shim) = world();
    let a = package(&world, "a");
    let b = package(&world, "b");
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    for name in [
        "probe-main-+7-link",
        "probe-main-07-link",
        "probe-main--link",
    ] {
        std::os::unix::fs::symlink(&b, world.path("profiles").join(name)).unwrap();
    }
    assert_eq!(djshim_ok(&world, &["history", "main"]).lines().count(), 1);
    let last = world.path("profiles/probe-main-4294967295-link");
    std::os::unix::fs::symlink(&b, &last).unwrap();
    let output = world.djshim(&["pin", "main", b.as_str()]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        format!(
            "djshim: error: {last} is generation 4294967295, the last number there is; rename \
             the generation links of probe-main to smaller numbers (or prune them with `--keep`)\n"
        )
    );
    assert!(
        world
            .path("profiles/probe-main-0-link")
            .symlink_metadata()
            .is_err()
    );
    assert_eq!(
        fs::read_link(world.path("profiles/probe-main")).unwrap(),
        Utf8Path::new("probe-main-1-link")
    );
}

/// A long `profiles_dir`: the GC root's name (the escaped path of the
/// generation link) would pass the 255-byte limit; it is shortened with a
/// hash, and the pin of a store path works and protects it.
#[test]
fn a_long_profiles_dir_still_roots_its_store_paths() {
    let _nix = nix_lock();
    let world = World::new();
    let long = "p".repeat(200);
    world.write(
        "djshim.toml",
        &format!(
            "project = \"probe\"\nprofiles_dir = \"{long}\"\n[instances.main]\n\
             python = \".venv/bin/python\"\nsettings = \"probe.settings\"\n"
        ),
    );
    let a = store_package(&world, "mywebsite-long", world.path("").as_str());
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    assert!(
        !dead().contains(&a.to_string()),
        "--gc would delete a pinned path"
    );
    assert!(!collect(&a));
    // Unroot: a second generation outside the store, then prune the first.
    djshim_ok(
        &world,
        &["pin", "main", world.path("src/mywebsite-long").as_str()],
    );
    djshim_ok(&world, &["pin", "main", "--keep", "1"]);
    assert!(collect(&a), "the pruned path is still kept alive");
}

/// What generated files name, Nix must not collect: a fixed `package` in
/// the store is a root while a shim (or unit) names it, and no longer once
/// nothing does.
#[test]
fn store_paths_named_by_generated_files_are_roots() {
    let _nix = nix_lock();
    let world = World::new();
    let a = store_package(&world, "mywebsite-fixed", world.path("").as_str());
    let config = |package: &Utf8Path| {
        format!(
            "project = \"fixed\"\n[instances.main]\npackage = \"{package}\"\n\
             python = \"{}/bin/python3\"\nsettings = \"probe.settings\"\n",
            venv()
        )
    };
    world.write("djshim.toml", &config(&a));
    djshim_ok(&world, &["generate"]);
    assert!(
        !dead().contains(&a.to_string()),
        "--gc would delete what a shim runs"
    );
    assert!(!collect(&a));
    assert_eq!(
        run(&world.path("bin/fixed-main")).unwrap().1,
        format!("{a}/manage.py")
    );
    // A dry run changes nothing; a real one that no longer names it lets go.
    world.write("djshim.toml", &config(&world.path("src/mywebsite-fixed")));
    djshim_ok(&world, &["generate", "--dry-run"]);
    assert!(!collect(&a));
    djshim_ok(&world, &["generate"]);
    assert!(!world.path("bin/.djshim-fixed.gcroots").exists());
    assert!(collect(&a), "a path nothing names is still kept alive");
}

/// Rollback goes to the newest older generation with another package:
/// after 1 (a), 2 (b), back to 1, then 3 (b), it goes to 1, not to 2, which
/// runs the same package as 3.
#[test]
fn rollback_skips_generations_of_the_same_package() {
    let (world, shim) = world();
    let a = package(&world, "a");
    let b = package(&world, "b");
    djshim_ok(&world, &["pin", "main", a.as_str()]);
    djshim_ok(&world, &["pin", "main", b.as_str()]);
    djshim_ok(&world, &["rollback", "main"]);
    djshim_ok(&world, &["pin", "main", b.as_str()]);
    assert_eq!(
        djshim_ok(&world, &["rollback", "main"]),
        format!("main: generation 3 -> 1: {b} -> {a}\n")
    );
    assert_eq!(run(&shim).unwrap().1, format!("{a}/manage.py"));
}
