//! `djshim deploy` (SPEC section 8) on SQLite: a real git repository whose
//! later commits bring a migration, break the health view, break the
//! settings or bring an irreversible migration; real builds, real
//! migrate/collectstatic through the shim, a real gunicorn started as its
//! unit says. systemd is not PID 1 here: the server is held by a stand-in
//! (a listening socket held as `sd_listen_fds(3)` describes, the server
//! restarted on request), and `restart` asks it to restart.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::site::{
    Site, VOTES_MIGRATION, VOTES_MODEL, commit_votes, killed, killed_deploy, stopped_at,
};
use crate::support::{
    Expect, World, assert_status, from_cron, git, has_all, line_of, require, root, text,
};

#[test]
fn deploy_builds_migrates_and_serves_the_newest_commit() {
    let mut site = Site::new();
    site.hold_server();
    let output = site.deploy(&["prod"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    has_all(
        &stderr,
        &[
            "djshim: deploy: check and record migrations: done in ",
            "djshim: deploy: manage.py migrate --noinput: done in ",
            "djshim: deploy: manage.py collectstatic --noinput --clear (generation 1's code): done in ",
            "djshim: deploy: health: done in ",
        ],
    );
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));

    let second = site.commit(
        &[
            ("polls/models.py", VOTES_MODEL),
            ("polls/migrations/0002_question_votes.py", VOTES_MIGRATION),
        ],
        "votes",
    );
    let output = site.deploy(&["prod"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("djshim: new migration polls.0002_question_votes: reversible"),
        "{}",
        text(&output).1
    );
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
    let history = text(&site.world.djshim(&["history", "prod"])).0;
    assert!(
        history
            .lines()
            .last()
            .unwrap()
            .contains(&format!("(commit {})", &second[..12])),
        "{history}"
    );
    // The commit that runs, again: nothing to do.
    let output = site.deploy(&["prod"]);
    assert_status(&output, 0);
    assert!(
        text(&output).0.ends_with("nothing to do\n"),
        "{}",
        text(&output).0
    );
    // Promote: staging gets exactly the package prod runs.
    assert_status(&site.deploy(&["staging", "--from", "prod"]), 0);
    assert_eq!(
        site.generation_target("staging"),
        site.generation_target("prod")
    );
    assert!(
        site.migrations("staging")
            .contains("[X] 0002_question_votes")
    );
}

#[test]
fn a_failed_health_check_takes_code_and_database_back() {
    let (site, first) = Site::serving();
    // Commit 2 migrates, and its health view fails.
    let views = fs::read_to_string(site.repo.join("polls/views.py"))
        .unwrap()
        .replace(
            "return HttpResponse(\"ok\\n\", content_type=\"text/plain\")",
            "return HttpResponse(\"broken\\n\", status=500)",
        );
    site.commit(
        &[
            ("polls/models.py", VOTES_MODEL),
            ("polls/migrations/0002_question_votes.py", VOTES_MIGRATION),
            ("polls/views.py", &views),
        ],
        "broken health",
    );
    let output = site.deploy(&["prod"]);
    // Exit 3: the deploy failed once it had begun, and was undone.
    assert_status(&output, 3);
    let stderr = text(&output).1;
    has_all(
        &stderr,
        &[
            "djshim: deploy: health: failed after ",
            "djshim: deploy: undo: migrate polls 0001_initial (generation 2's code): done in ",
            "djshim: deploy: undo: switch to generation 1: done in ",
            "djshim: deploy: undo: restart: ",
            &format!("  = prod is back on generation 1: {first}"),
        ],
    );
    assert!(stderr.contains("500 Internal Server Error`"), "{stderr}");
    assert_eq!(site.generation_target("prod"), first);
    // The database forgot 0002, and its column is gone.
    let seen = site.python(
        "from django.db import connection; from django.db.migrations.recorder import MigrationRecorder; \
         print(sorted(MigrationRecorder.Migration.objects.filter(app='polls').values_list('name', flat=True)), \
         [c.name for c in connection.introspection.get_table_description(connection.cursor(), 'polls_question')])",
    );
    assert_eq!(seen, "['0001_initial'] ['id', 'text', 'published']");
    assert!(
        site.get("/health").ends_with("\r\n\r\nok\n"),
        "the old code is not serving"
    );
}

#[test]
fn a_candidate_that_cannot_run_changes_nothing() {
    let (site, _) = Site::staged();
    let before = text(&site.world.djshim(&["history", "staging"])).0;
    // Settings that do not import.
    site.commit(
        &[(
            "mywebsite/settings/production.py",
            "from .base import *  # noqa\nimport no_such_module\n",
        )],
        "broken settings",
    );
    Expect::new()
        .status(1)
        .stderr_has("djshim: deploy: check and record migrations: failed after ")
        .stderr_has("No module named 'no_such_module'")
        .check(&site.deploy(&["staging"]));
    assert_eq!(text(&site.world.djshim(&["history", "staging"])).0, before);
    // A STATIC_ROOT of its own, not the configured one (collectstatic
    // would write into the package).
    site.commit(
        &[(
            "mywebsite/settings/production.py",
            "from .base import *  # noqa\nSTATIC_ROOT = BASE_DIR / 'static'\nINSTANCE = 'prod'\n",
        )],
        "hard-coded STATIC_ROOT",
    );
    let output = site.deploy(&["staging"]);
    assert_status(&output, 1);
    assert!(
        text(&output).1.contains("Django's STATIC_ROOT is "),
        "{}",
        text(&output).1
    );
    assert_eq!(text(&site.world.djshim(&["history", "staging"])).0, before);
}

#[test]
fn irreversible_migrations_stop_the_deploy_unless_allowed() {
    let (site, _) = Site::staged();
    site.commit(
        &[(
            "polls/migrations/0002_fill.py",
            "from django.db import migrations\n\n\ndef fill(apps, schema_editor):\n    pass\n\n\n\
             class Migration(migrations.Migration):\n    dependencies = [(\"polls\", \"0001_initial\")]\n    \
             operations = [migrations.RunPython(fill)]\n",
        )],
        "irreversible",
    );
    let before = text(&site.world.djshim(&["history", "staging"])).0;
    Expect::new()
        .status(1)
        .stderr_has("djshim: new migration polls.0002_fill: IRREVERSIBLE")
        .stderr_has("these migrations cannot be reversed")
        .check(&site.deploy(&["staging"]));
    assert_eq!(text(&site.world.djshim(&["history", "staging"])).0, before);
    assert_status(&site.deploy(&["staging", "--allow-irreversible"]), 0);
    assert!(site.migrations("staging").contains("[X] 0002_fill"));
}

/// `djshim rollback` of a deployed generation takes the same way
/// backwards: its migrations reversed with its own code, then the switch,
/// the steps, the restart and the health probe.
#[test]
fn rollback_reverses_the_current_release_first() {
    let (site, first) = Site::voted();
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    has_all(
        &stderr,
        &[
            // Generation 1 ran healthy: no Django start to check it again
            // (issue 23, item 3).
            "djshim: rollback: check the machine (the target ran healthy): done in ",
            "djshim: rollback: migrate polls 0001_initial (generation 2's code): done in ",
            "djshim: rollback: switch to generation 1: done in ",
            "djshim: rollback: health: done in ",
        ],
    );
    site.assert_back_on(&first);
}

/// The same ways forward and back on PostgreSQL, whose DDL is
/// transactional and whose columns really go when a migration is reversed.
#[test]
fn on_postgresql_deploys_and_rollbacks_take_the_database_along() {
    let postgres = crate::postgres::Postgres::start();
    let mut site = Site::with(Some(&postgres.socket_dir));
    site.hold_server();
    let columns = |site: &Site| {
        site.python(
            "from django.db import connection; print(connection.vendor, [c.name for c in \
             connection.introspection.get_table_description(connection.cursor(), 'polls_question')])",
        )
    };
    assert_status(&site.deploy(&["prod"]), 0);
    assert_eq!(columns(&site), "postgresql ['id', 'text', 'published']");
    commit_votes(&site);
    assert_status(&site.deploy(&["prod"]), 0);
    assert_eq!(
        columns(&site),
        "postgresql ['id', 'text', 'published', 'votes']"
    );
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
    // Back: the column goes before the old code runs.
    assert_status(&site.world.djshim(&["rollback", "prod"]), 0);
    assert_eq!(columns(&site), "postgresql ['id', 'text', 'published']");
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
    // Forward again with a broken health view: undone on its own.
    let views = fs::read_to_string(site.repo.join("polls/views.py"))
        .unwrap()
        .replace(
            "return HttpResponse(\"ok\\n\", content_type=\"text/plain\")",
            "return HttpResponse(\"broken\\n\", status=500)",
        );
    site.commit(&[("polls/views.py", &views)], "broken health");
    let output = site.deploy(&["prod"]);
    assert_status(&output, 3);
    assert!(text(&output).1.contains(
        "djshim: deploy: undo: migrate polls 0001_initial (generation 3's code): done in "
    ));
    assert_eq!(columns(&site), "postgresql ['id', 'text', 'published']");
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
}

/// `kill -9` of a deploy at any step leaves the instance on one complete
/// generation, and the next deploy (or rollback) undoes what was left.
/// Each kill lands where it says: a process of the step waits at a gate
/// until djshim is dead (the build; the check; collectstatic, before the
/// switch; mid-migration, its column added in its transaction; the restart; the health probe,
/// answered by the server; an `after` step, the last before the healthy
/// record; the migration's reversal in an undo). The instants between
/// (the new generation, the switch, the healthy record itself) are each
/// killed before and after their effect by
/// `plans::a_kill_anywhere_is_finished_or_undone_by_the_next_run`.
#[test]
fn a_deploy_killed_at_any_step_is_undone_by_the_next() {
    let (site, first) = Site::serving();
    // An `after` step: a kill there lands after the health probe passed,
    // before the record of a healthy generation.
    site.prod_deploy("after = [[\"check\"]]");
    commit_votes(&site);
    for (gate, step, journaled) in [
        ("build", "djshim: build: ", false),
        (
            "manage-shell",
            "djshim: deploy: check and record migrations …",
            false,
        ),
        (
            "manage-collectstatic",
            "djshim: deploy: manage.py collectstatic",
            true,
        ),
        ("migrate-0002", "djshim: deploy: manage.py migrate", true),
        ("restart", "djshim: deploy: restart: ", true),
        ("health", "djshim: deploy: health …", true),
        ("manage-check", "djshim: deploy: manage.py check", true),
    ] {
        let stderr = killed_deploy(&site, gate);
        let last = stderr
            .lines()
            .rfind(|l| l.starts_with("djshim: "))
            .unwrap_or_default();
        assert!(
            last.starts_with(step) && last.ends_with('…'),
            "{gate}: killed after {last:?}, not in {step:?}:\n{stderr}"
        );
        // One complete generation runs, whichever it is.
        assert_status(
            &from_cron(site.world.path("bin/mywebsite-prod"), &["check"]),
            0,
        );
        // A pin would build on a half-done deploy: refused.
        if journaled {
            Expect::new()
                .status(1)
                .stderr_has("was interrupted and is not finished or undone")
                .check(&site.world.djshim(&["pin", "prod", first.as_str()]));
        }
        let output = site.deploy(&["prod"]);
        assert_status(&output, 0);
        assert_eq!(
            text(&output).1.contains("was interrupted; undoing it"),
            journaled,
            "{gate}:\n{}",
            text(&output).1
        );
        assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
        assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
        // Back to the first release for the next round.
        assert_status(&site.world.djshim(&["rollback", "prod"]), 0);
        assert_eq!(site.generation_target("prod"), first);
    }
    // A rollback undoes an interrupted deploy, and stops there; killed in
    // that undo, halfway through the migration's reversal, the next
    // rollback finishes the undo.
    killed_deploy(&site, "restart");
    let stderr = killed(&site, &["rollback", "prod"], "unmigrate-0002");
    assert!(stderr.contains("was interrupted; undoing it"), "{stderr}");
    assert!(
        stderr
            .lines()
            .rfind(|l| l.starts_with("djshim: "))
            .is_some_and(|l| l.starts_with("djshim: deploy: undo: migrate polls 0001_initial")),
        "{stderr}"
    );
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 0);
    assert!(text(&output).1.contains("was interrupted; undoing it"));
    assert!(
        text(&output).0.starts_with("prod: back on generation "),
        "{}",
        text(&output).0
    );
    site.assert_back_on(&first);
}

/// A step's process that the step started (here, by the migration) is
/// left running when `kill -9` ends djshim: the step's own process dies
/// with djshim, what it started does not. The next command stops it
/// before anything else, so it cannot write to the database after the
/// undo (here, it would create a table 3 s after the kill). On
/// PostgreSQL, where the orphans of the `NetBox` trial committed.
#[test]
fn what_a_killed_step_left_running_is_stopped_before_the_undo() {
    let postgres = crate::postgres::Postgres::start();
    let (site, first) = Site::serving_on(Some(&postgres.socket_dir));
    commit_votes(&site);
    let orphan = "import time, django\n\
         time.sleep(3)\n\
         django.setup()\n\
         from django.db import connection\n\
         connection.cursor().execute('CREATE TABLE orphan_was_here (id int)')\n";
    site.arm("migrate-0002", orphan);
    let (stderr, status) = stopped_at(&site, &["deploy", "prod"], &["migrate-0002"], "KILL");
    assert!(status.code().is_none(), "{stderr}");
    let killed_at = Instant::now();
    let (_, stderr) = Expect::new()
        .stdout(&format!("prod: back on generation 1: {first}\n"))
        .stderr_has("djshim: a step of an interrupted run left 1 process running: killed")
        .stderr_has("was interrupted; undoing it")
        .check(&site.world.djshim(&["rollback", "prod"]));
    assert!(
        stderr.starts_with("djshim: a step of an interrupted run left"),
        "{stderr}"
    );
    assert_eq!(site.generation_target("prod"), first);
    // Past the time the orphan would have written.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(killed_at.elapsed()));
    let tables = site.python(
        "from django.db import connection; print(sorted(connection.introspection.table_names()))",
    );
    assert!(tables.contains("polls_question"), "{tables}");
    assert!(!tables.contains("orphan_was_here"), "{tables}");
    assert!(!site.migrations("prod").contains("[X] 0002"));
}

/// The Nix way: each commit built by nix-build, deployed from the store.
/// Files in the store carry a 1970 mtime, so without `--clear` collectstatic
/// would keep the older release's CSS; the default steps clear.
#[test]
fn a_nix_built_release_is_deployed_with_its_own_static_files() {
    let _nix = crate::profiles::nix_lock();
    let site = Site::built_with(None, "nix = \"default.nix\"");
    let nix_file = "derivation {\n  name = \"mywebsite\";\n  system = builtins.currentSystem;\n  \
        builder = \"/bin/sh\";\n  args = [ \"-c\" \"/bin/cp -r ${builtins.path { path = ./.; name = \"source\"; }} $out\" ];\n}\n";
    site.commit(
        &[
            ("default.nix", nix_file),
            ("assets/css/site.css", "body { color: red; }\n"),
        ],
        "nix, red",
    );
    let deploy = || {
        site.world
            .djshim_cmd(&["deploy", "staging"])
            .env("NIX_CONFIG", crate::support::NIX_CONFIG)
            .output()
            .unwrap()
    };
    assert_status(&deploy(), 0);
    let first = site.generation_target("staging");
    assert!(first.starts_with("/nix/store"), "{first}");
    let css = site.world.path("var/staging/static/css/site.css");
    assert_eq!(fs::read_to_string(&css).unwrap(), "body { color: red; }\n");
    site.commit(
        &[("assets/css/site.css", "body { color: blue; }\n")],
        "blue",
    );
    assert_status(&deploy(), 0);
    let second = site.generation_target("staging");
    assert_ne!(first, second);
    assert_eq!(fs::read_to_string(&css).unwrap(), "body { color: blue; }\n");
    // Leave the store as it was: unroot, collect what this test built.
    fs::remove_dir_all(site.world.path("profiles")).unwrap();
    fs::remove_dir_all(site.world.path("releases")).unwrap();
    for path in [first, second] {
        let _ = crate::support::nix("nix-store")
            .arg("--delete")
            .arg(&path)
            .output();
    }
}

/// The README's deploy walkthrough, examples/deploy, runs as written.
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let world = World::new();
    // The walkthrough's build account must reach the demo.
    fs::set_permissions(
        world.path(""),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    crate::support::venv();
    let output = Command::new(require("sh", "dash"))
        .arg(root().join("examples/deploy"))
        .env("DJSHIM", env!("CARGO_BIN_EXE_djshim"))
        .env("DEMO", world.path("demo"))
        .output()
        .unwrap();
    assert_status(&output, 0);
    let stdout = text(&output).0;
    assert!(
        stdout.ends_with("polls\n [X] 0001_initial\n"),
        "prod did not end on the first release:\n{stdout}"
    );
    assert!(stdout.contains(" [X] 0002_question_votes\n"), "{stdout}");
}

/// One deploy of an instance at a time: a second one started meanwhile
/// waits for the first, then finds the commit already running.
#[test]
fn two_deploys_at_once_do_not_interleave() {
    let site = Site::new();
    let spawn = || {
        site.world
            .djshim_cmd(&["deploy", "staging"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    for output in &outputs {
        assert_status(output, 0);
    }
    let stdout: Vec<String> = outputs.iter().map(|o| text(o).0).collect();
    assert_eq!(
        stdout
            .iter()
            .filter(|s| s.ends_with("nothing to do\n"))
            .count(),
        1,
        "{stdout:?}"
    );
    let history = text(&site.world.djshim(&["history", "staging"])).0;
    assert_eq!(history.lines().count(), 1, "{history}");
}

/// The schema a generation runs on, through the ways a deploy or a
/// rollback could miss it: an older package over newer migrations is
/// refused (which command reverses them is named); `rollback --to` a newer
/// generation is refused (only `deploy` goes forward, with every step);
/// `rollback` never goes to a generation a rollback undid (on a `NetBox`: 1, 2,
/// back to 1, then 3 — `rollback` went to 2 and applied its migrations),
/// and `history` marks it.
#[test]
fn every_generation_runs_on_the_schema_it_knows() {
    let (site, first) = Site::voted();
    let second = site.generation_target("prod");

    // An older package over the newer schema.
    let output = site.deploy(&["prod", "--path", first.as_str()]);
    assert_status(&output, 1);
    let stderr = text(&output).1;
    assert!(
        stderr.contains(&format!(
            "djshim: error: not switching prod to {first}: its database has migrations this \
             package does not know (polls.0002_question_votes), applied by a newer release"
        )) && stderr
            .contains("= help: roll back to a generation without them (`djshim rollback prod`"),
        "{stderr}"
    );
    assert_eq!(site.generation_target("prod"), second);
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));

    assert_status(&site.world.djshim(&["rollback", "prod"]), 0);
    assert_eq!(site.generation_target("prod"), first);
    let history = text(&site.world.djshim(&["history", "prod"])).0;
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].ends_with("(current)"), "{history}");
    assert!(
        lines[1].ends_with("(rolled back: rollback skips it)"),
        "{history}"
    );

    // Forward through `rollback --to`: refused.
    let output = site.world.djshim(&["rollback", "prod", "--to", "2"]);
    assert_status(&output, 1);
    assert_eq!(
        text(&output).1,
        format!(
            "djshim: error: generation 2 of instance `prod` is newer than the one it runs (1): a \
             rollback only goes back, and moving the profile forward would skip the migrations, \
             the steps, the restart and the health probe\n  = help: go forward with `djshim \
             deploy prod --path {second}`\n"
        )
    );
    assert_eq!(site.generation_target("prod"), first);
    assert!(!site.migrations("prod").contains("[X] 0002"));

    // Generation 3: the first release and a migration of its own.
    let note = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"polls\", \"0001_initial\")]\n    operations = [\n        \
         migrations.AddField(\"question\", \"note\", models.TextField(default=\"\")),\n    ]\n";
    git(
        &site.repo,
        &["rm", "--quiet", "polls/migrations/0002_question_votes.py"],
    );
    let model = std::fs::read_to_string(root().join("examples/mywebsite/polls/models.py")).unwrap();
    site.commit(
        &[
            ("polls/models.py", &model.replace(
                "    published = models.DateTimeField(auto_now_add=True)\n",
                "    published = models.DateTimeField(auto_now_add=True)\n    note = models.TextField(default=\"\")\n",
            )),
            ("polls/migrations/0002_question_note.py", note),
        ],
        "a note",
    );
    assert_status(&site.deploy(&["prod"]), 0);
    assert!(site.migrations("prod").contains("[X] 0002_question_note"));
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("djshim: rollback: switch to generation 1: done in "),
        "{}",
        text(&output).1
    );
    assert_eq!(site.generation_target("prod"), first);
    let migrations = site.migrations("prod");
    assert!(!migrations.contains("[X] 0002"), "{migrations}");
}

/// Ctrl-C (SIGINT), SIGTERM or a hang-up during a deploy is a failed step:
/// the running step's process is stopped, the plan undone (migration
/// reversed, profile back), and djshim says so. A second one during the
/// undo stops it there and leaves the journal, which the next command
/// finishes. Before, the signal killed djshim on the spot: profile on the
/// candidate, migration applied, nothing said.
#[test]
fn a_signal_during_a_deploy_undoes_it() {
    let (site, first) = Site::serving();
    site.prod_deploy(
        "steps = [[\"migrate\", \"--noinput\"], [\"shell\", \"-c\", \"from polls.gates import gate; gate('step')\"]]",
    );
    commit_votes(&site);
    for signal in ["INT", "TERM", "HUP"] {
        site.arm("step", "");
        let (stderr, status) = stopped_at(&site, &["deploy", "prod"], &["step"], signal);
        assert_eq!(status.code(), Some(3), "{signal}:\n{stderr}");
        for line in [
            "djshim: deploy: undo: migrate polls 0001_initial",
            "djshim: deploy: undo: switch to generation 1: done in ",
        ] {
            assert!(stderr.contains(line), "{signal}: no {line:?} in:\n{stderr}");
        }
        assert!(
            stderr.contains("stopped: djshim was interrupted by SIG"),
            "{stderr}"
        );
        assert_eq!(site.generation_target("prod"), first, "{signal}");
        assert!(!site.migrations("prod").contains("[X] 0002"), "{signal}");
    }

    // Twice: the second comes while the undo reverses the migration.
    site.arm("step", "");
    site.arm("unmigrate-0002", "");
    let (stderr, status) = stopped_at(
        &site,
        &["deploy", "prod"],
        &["step", "unmigrate-0002"],
        "INT",
    );
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "and its undo was interrupted by SIGINT (Ctrl-C) at `migrate polls 0001_initial"
        ) && stderr.contains(
            "the journal is kept, and the next `djshim deploy prod` or `djshim rollback prod` \
                 finishes the undo"
        ),
        "{stderr}"
    );
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains("was interrupted; undoing it"),
        "{}",
        text(&output).1
    );
    assert_eq!(site.generation_target("prod"), first);
    assert!(!site.migrations("prod").contains("[X] 0002"));
}

/// Each generation collects its static files into a directory of its own
/// before the switch, so the old code's files stay as they were while the
/// new ones are collected; `static_root` is a link that each switch moves,
/// so a rollback moves the files back with no collect; a `static_root` an
/// earlier djshim collected into becomes the running generation's at the
/// first switch; `pin --keep` deletes a deleted generation's.
#[test]
fn each_generation_has_its_own_static_files() {
    let (site, _) = Site::serving();
    let root = site.world.path("var/prod/static");
    let link = || fs::read_link(&root).unwrap().display().to_string();
    let css = |n: u32| {
        fs::read_to_string(
            site.world
                .path(&format!("var/prod/static-{n}/css/site.css")),
        )
        .unwrap()
    };
    assert_eq!(link(), "static-1");
    let first = css(1);
    site.commit(&[("assets/css/site.css", "body { color: red }\n")], "red");
    let out = site.deploy(&["prod"]);
    assert_status(&out, 0);
    let stderr = text(&out).1;
    let at = |what: &str| line_of(&stderr, &format!("djshim: deploy: {what}"));
    assert!(
        at("manage.py collectstatic") < at("switch to generation 2"),
        "{stderr}"
    );
    assert_eq!(link(), "static-2");
    assert_eq!(css(2), "body { color: red }\n");
    assert_eq!(css(1), first);

    let out = site.world.djshim(&["rollback", "prod"]);
    assert_status(&out, 0);
    assert!(!text(&out).1.contains("collectstatic"), "{}", text(&out).1);
    assert_eq!(link(), "static-1");

    // What an earlier djshim left: static_root a directory of the files.
    fs::remove_file(&root).unwrap();
    fs::rename(site.world.path("var/prod/static-1"), &root).unwrap();
    assert_status(&site.deploy(&["prod"]), 0);
    assert_eq!(link(), "static-3");
    assert_eq!(css(1), first);
    assert_eq!(css(3), "body { color: red }\n");

    // Generation 1 goes, its files with it; 2 stays (its package runs).
    assert_status(&site.world.djshim(&["pin", "prod", "--keep", "1"]), 0);
    assert!(!site.world.path("var/prod/static-1").exists());
    assert_eq!(css(2), "body { color: red }\n");
    assert_eq!(css(3), "body { color: red }\n");
}

/// Static files a Nix build collected into its package
/// (`static_in_package`): each generation's static directory is its store
/// path's, `static_root` links into the store, and neither a deploy nor a
/// rollback collects anything (the default `before` is empty).
#[test]
fn static_files_a_nix_build_collected_are_served_from_its_store_path() {
    let _nix = crate::profiles::nix_lock();
    let site = Site::built_with(None, "nix = \"default.nix\"");
    site.reconfigure(
        "static_root = \"var/{instance}/static\"\n",
        "static_root = \"var/{instance}/static\"\nstatic_in_package = \"static\"\n",
    );
    // A build that collects: here a copy of the one file, where a real
    // derivation runs `manage.py collectstatic` into $out/static.
    let nix_file = "derivation {\n  name = \"mywebsite\";\n  system = builtins.currentSystem;\n  \
        builder = \"/bin/sh\";\n  args = [ \"-c\" \"src=${builtins.path { path = ./.; name = \"source\"; }}; \
        /bin/cp -r $src $out && /bin/chmod u+w $out && /bin/mkdir -p $out/static/css && \
        /bin/cp $src/assets/css/site.css $out/static/css/site.css\" ];\n}\n";
    let deploy = |args: &[&str]| {
        site.world
            .djshim_cmd(args)
            .env("NIX_CONFIG", crate::support::NIX_CONFIG)
            .output()
            .unwrap()
    };
    let root = site.world.path("var/staging/static");
    let mut built = Vec::new();
    for color in ["red", "blue"] {
        let css = format!("body {{ color: {color}; }}\n");
        site.commit(
            &[("default.nix", nix_file), ("assets/css/site.css", &css)],
            color,
        );
        let output = deploy(&["deploy", "staging"]);
        assert_status(&output, 0);
        assert!(
            !text(&output).1.contains("collectstatic"),
            "{}",
            text(&output).1
        );
        let package = site.generation_target("staging");
        assert!(package.starts_with("/nix/store"), "{package}");
        assert_eq!(fs::read_link(&root).unwrap(), package.join("static"));
        assert_eq!(fs::read_to_string(root.join("css/site.css")).unwrap(), css);
        built.push(package);
    }
    let output = deploy(&["rollback", "staging"]);
    assert_status(&output, 0);
    assert!(
        !text(&output).1.contains("collectstatic"),
        "{}",
        text(&output).1
    );
    assert_eq!(fs::read_link(&root).unwrap(), built[0].join("static"));
    // Leave the store as it was: unroot, collect what this test built.
    fs::remove_dir_all(site.world.path("profiles")).unwrap();
    fs::remove_dir_all(site.world.path("releases")).unwrap();
    for path in built {
        let _ = crate::support::nix("nix-store")
            .arg("--delete")
            .arg(&path)
            .output();
    }
}

/// `deploy --prepare` (SPEC section 10, the rollout's first part, run on
/// every host before anything changes anywhere): everything a deploy asks
/// (the candidate, the deep check, the migrations, the refusals) and
/// nothing changed; `--hash` refuses bytes other than the ones built, in a
/// prepare and in a deploy alike.
#[test]
fn a_prepare_asks_what_a_deploy_asks_and_changes_nothing() {
    let (site, first) = Site::serving();
    commit_votes(&site);
    let history = text(&site.world.djshim(&["history", "prod"])).0;
    let output = site.deploy(&["prod", "--prepare", "--json"]);
    assert_status(&output, 0);
    let prepared: serde_json::Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(prepared["already"], false, "{prepared:#}");
    assert_eq!(
        prepared["new_migrations"],
        serde_json::json!(["polls.0002_question_votes"]),
        "{prepared:#}"
    );
    let package = prepared["package"].as_str().unwrap().to_owned();
    let hash = prepared["content_hash"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("sha256:"), "{prepared:#}");
    assert_eq!(text(&site.world.djshim(&["history", "prod"])).0, history);
    assert!(!site.migrations("prod").contains("[X] 0002"));
    assert!(
        !site
            .world
            .path("profiles/.mywebsite-prod.deploy-journal.json")
            .exists()
    );

    let wrong = format!("sha256:{}", "0".repeat(64));
    for args in [
        &["prod", "--path", &package, "--prepare", "--hash", &wrong][..],
        &["prod", "--path", &package, "--hash", &wrong],
    ] {
        Expect::new()
            .status(1)
            .stderr_has(&format!(
                "is not the package that was built: its content hash is {hash}, not {wrong}"
            ))
            .check(&site.deploy(args));
    }
    assert_eq!(text(&site.world.djshim(&["history", "prod"])).0, history);

    assert_status(
        &site.deploy(&["prod", "--path", &package, "--hash", &hash]),
        0,
    );
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
    let output = site.deploy(&["prod", "--path", &package, "--prepare"]);
    assert_status(&output, 0);
    assert_eq!(
        text(&output).0,
        format!("prod: already runs {package}; nothing to do\n")
    );
    assert_ne!(package, first.as_str());
    // Run again after a rollout was cut short, the first host says that
    // the deploy that put the release there migrated (the hosts not
    // switched yet are held again); a deploy without migrations did not.
    let prepared = |path: &str| -> serde_json::Value {
        let output = site.deploy(&["prod", "--path", path, "--prepare", "--json"]);
        assert_status(&output, 0);
        serde_json::from_str(&text(&output).0).unwrap()
    };
    let again = prepared(&package);
    assert_eq!(
        (&again["already"], &again["migrated"]),
        (&true.into(), &true.into()),
        "{again:#}"
    );
    site.commit(&[("polls/extra.py", "X = 1\n")], "no migration");
    assert_status(&site.deploy(&["prod"]), 0);
    let third = site.generation_target("prod");
    let again = prepared(third.as_str());
    assert_eq!(
        (&again["already"], &again["migrated"]),
        (&true.into(), &false.into()),
        "{again:#}"
    );
}
