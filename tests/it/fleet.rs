//! Several hosts (SPEC section 10): each host's part of a rollout, on one
//! host (two instances on one database stand for two hosts), then the
//! rollout itself through the real `ansible-playbook` over ssh to three
//! hosts (see `hosts`).

use std::fmt::Write as _;

use crate::hosts::{Fleet, SITE, rollout_vars, shown};
use crate::site::{Site, commit_votes};
use crate::support::{Expect, assert_status, text};

/// A host that leaves the shared commands to another host of its rollout
/// (`--skip-shared`) refuses a candidate whose migrations the shared
/// database lacks, and runs no `migrate` once another host applied them;
/// `rollback --to-package` finds the generation of a package whatever its
/// number, and reverses nothing that host did not migrate.
#[test]
fn a_host_that_skips_the_shared_steps_waits_for_the_migrations_and_goes_back_by_package() {
    let mut site = Site::new();
    // prod and staging on one database: two hosts of one site.
    let config = site
        .world
        .read("djshim.toml")
        .replace("{instance}.sqlite3", "shared.sqlite3");
    site.world.write("djshim.toml", &config);
    assert_status(&site.world.djshim(&["generate"]), 0);
    site.hold_server();
    assert_status(&site.deploy(&["prod"]), 0);
    let first = site.generation_target("prod");
    // The initial migrations are applied: a host that skips them follows.
    assert_status(&site.deploy(&["staging", "--skip-shared"]), 0);
    assert_eq!(site.generation_target("staging"), first);

    commit_votes(&site);
    let history = |site: &Site| text(&site.world.djshim(&["history", "staging"])).0;
    let before = history(&site);
    Expect::new()
        .status(1)
        .stderr_has(
            "its database lacks the package's migrations (polls.0002_question_votes), and \
             --skip-shared leaves `migrate` to another host",
        )
        .stderr_has("= help: deploy the rollout's first host (without --skip-shared) first")
        .check(&site.deploy(&["staging", "--skip-shared"]));
    assert_eq!(history(&site), before, "a refused deploy changed nothing");

    // The first host migrates; the other switches without a `migrate`.
    assert_status(&site.deploy(&["prod"]), 0);
    let second = site.generation_target("prod");
    let output = site.deploy(&["staging", "--skip-shared"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    assert!(
        stderr.contains("deploy: switch to generation 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("deploy: migrate"), "{stderr}");
    assert_eq!(site.generation_target("staging"), second);

    // Back by package: the follower reverses nothing, the first host does.
    let output = site.world.djshim(&[
        "rollback",
        "staging",
        "--to-package",
        first.as_str(),
        "--skip-shared",
    ]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    assert!(!stderr.contains("rollback: migrate polls"), "{stderr}");
    // Nor a `migrate` with the old code: the shared database is the first
    // host's to take back.
    assert!(!stderr.contains("manage.py migrate"), "{stderr}");
    assert!(
        stderr.contains("rollback: switch to generation 1"),
        "{stderr}"
    );
    assert_eq!(site.generation_target("staging"), first);
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
    let output = site
        .world
        .djshim(&["rollback", "prod", "--to-package", first.as_str()]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("rollback: migrate polls 0001_initial")
    );
    site.assert_back_on(&first);
    let again = site
        .world
        .djshim(&["rollback", "staging", "--to-package", first.as_str()]);
    assert_status(&again, 0);
    assert_eq!(text(&again).0, "staging: generation 1 is already current\n");
    Expect::new()
        .status(1)
        .stderr_has("no generation of instance `staging` up to the current one runs")
        .check(
            &site
                .world
                .djshim(&["rollback", "staging", "--to-package", second.as_str()]),
        );
}

/// Release 2's migration: the votes column, and a row in `rollout_log`
/// each time it runs forward or back (the test counts them).
const COUNTED_VOTES: &str = "from django.db import migrations, models\n\n\n\
class Migration(migrations.Migration):\n    dependencies = [(\"polls\", \"0001_initial\")]\n    \
operations = [\n        \
migrations.AddField(\"question\", \"votes\", models.IntegerField(default=0)),\n        \
migrations.RunSQL(\"INSERT INTO rollout_log VALUES ('forward')\", \
reverse_sql=\"INSERT INTO rollout_log VALUES ('reverse')\"),\n    ]\n";

/// The files of a release with the counted votes migration; with
/// `unhealthy_where`, its health view answers 500 on a host that has that
/// file.
fn votes_release(unhealthy_where: Option<&str>) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("polls/models.py", crate::site::VOTES_MODEL.to_owned()),
        ("polls/migrations/0002_votes.py", COUNTED_VOTES.to_owned()),
    ];
    if let Some(file) = unhealthy_where {
        let views = std::fs::read_to_string(crate::support::root().join("examples/mywebsite/polls/views.py"))
            .unwrap()
            .replace(
                "    list(Question.objects.all()[:1])\n",
                &format!(
                    "    list(Question.objects.all()[:1])\n    import os\n    if os.path.exists({file:?}):\n        \
                     return HttpResponse(\"unhealthy here\\n\", status=500)\n"
                ),
            );
        files.push(("polls/views.py", views));
    }
    files
}

fn files<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(p, c)| (*p, c.as_str())).collect()
}

/// Each host's `changed` and `failed` counts in a run's PLAY RECAP, which
/// must be there and name every host of `fleet`.
fn recap(
    fleet: &Fleet,
    output: &std::process::Output,
) -> std::collections::BTreeMap<String, (u32, u32)> {
    let out = text(output).0;
    let (_, recap) = out
        .split_once("PLAY RECAP")
        .unwrap_or_else(|| panic!("no PLAY RECAP:\n{}", shown(output)));
    let counts: std::collections::BTreeMap<String, (u32, u32)> = recap
        .lines()
        .filter_map(|line| {
            let (host, counts) = line.split_once(" : ")?;
            let count = |key: &str| -> u32 {
                counts
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {key}= in the recap line {line:?}"))
            };
            Some((host.trim().to_owned(), (count("changed"), count("failed"))))
        })
        .collect();
    let hosts: Vec<&String> = fleet.hosts.iter().map(|h| &h.name).collect();
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        hosts,
        "{}",
        shown(output)
    );
    counts
}

/// A `--check` rollout of mywebsite-v2 said each host would move, and
/// moved none.
fn checked_changes_nothing(fleet: &Fleet, check: &std::process::Output) {
    let out = text(check).0;
    assert!(
        out.contains("would unpack and deploy mywebsite-v2"),
        "{}",
        shown(check)
    );
    for host in &fleet.hosts {
        assert_eq!(host.status()["generation"], 1, "{}", host.name);
        host.machine
            .ok(&["test", "!", "-e", &format!("{SITE}/releases/mywebsite-v2")]);
        assert!(recap(fleet, check)[&host.name].0 > 0, "{}", shown(check));
    }
}

/// The release's content hash, as `djshim pack` says it on the controller.
fn packed_hash(fleet: &Fleet, release: &camino::Utf8Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_djshim"))
        .args(["pack", release.as_str(), "--out"])
        .arg(fleet.dir.join("hash.tar"))
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output).0.trim().to_owned()
}

/// The rollout through the real `ansible-playbook` over ssh to three
/// hosts on one PostgreSQL: djshim installed on each as its Debian
/// package by the role; a first release; `--check` of the second, which
/// changes nothing and says what it would do; the second release, whose
/// migration runs once for the fleet (hosts 2 and 3 in one batch after
/// the first), on every host the same bytes; a second run that changes
/// nothing.
#[test]
fn a_release_rolls_out_to_three_hosts_and_its_migration_runs_once() {
    let fleet = Fleet::boot("ro", 3, "");
    let v1 = fleet.release("mywebsite-v1", &[]);
    let v2_files = votes_release(None);
    let v2 = fleet.release("mywebsite-v2", &files(&v2_files));
    let deb = &fleet.deb;
    let vars = |release: &camino::Utf8Path| rollout_vars(release, deb);
    let run = |release: &camino::Utf8Path, args: &[&str]| {
        let output = fleet
            .playbook("djshim.django.rollout", &vars(release), args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", shown(&output));
        output
    };

    run(&v1, &[]);
    for host in &fleet.hosts {
        let status = host.status();
        assert_eq!(status["generation"], 1, "{}: {status}", host.name);
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
        // The package's man page and completions are in place.
        host.machine.ok(&[
            "test",
            "-f",
            "/usr/share/man/man1/djshim-deploy.1.gz",
            "-a",
            "-f",
            "/usr/share/bash-completion/completions/djshim",
        ]);
    }

    checked_changes_nothing(&fleet, &run(&v2, &["--check"]));

    let start = std::time::Instant::now();
    // Hosts 2 and 3 in one batch, side by side.
    let rollout = run(&v2, &["-v", "-e", "djshim_batch=2"]);
    eprintln!(
        "a rollout of 3 hosts: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Each host's deploy result (-v shows it): the first host migrates,
    // the others skip `migrate`.
    let out = text(&rollout).0;
    assert_eq!(
        out.matches("PLAY [Deploy, the first host alone").count(),
        2,
        "two batches"
    );
    for host in &fleet.hosts {
        let deployed = out
            .lines()
            .find(|l| {
                l.starts_with(&format!("changed: [{}] => ", host.name))
                    && l.contains("deploy: switch")
            })
            .unwrap_or_else(|| panic!("no deploy result of {}:\n{}", host.name, shown(&rollout)));
        assert_eq!(
            deployed.contains("deploy: manage.py migrate --noinput"),
            host.name == "h1",
            "{deployed}"
        );
    }
    let hash = packed_hash(&fleet, &v2);
    for host in &fleet.hosts {
        let status = host.status();
        assert_eq!(status["generation"], 2, "{}: {status}", host.name);
        assert_eq!(
            status["package"].as_str(),
            Some(format!("{SITE}/releases/mywebsite-v2").as_str())
        );
        assert_eq!(
            status["content_hash"].as_str(),
            Some(hash.as_str()),
            "{}",
            host.name
        );
        assert_eq!(status["healthy"], true);
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
    }
    assert_eq!(
        fleet.sql("SELECT count(*) FROM rollout_log WHERE what = 'forward'"),
        "1"
    );
    assert!(
        recap(&fleet, &rollout)
            .values()
            .all(|(changed, _)| *changed > 0),
        "{}",
        shown(&rollout)
    );

    let again = run(&v2, &[]);
    for (host, (changed, _)) in recap(&fleet, &again) {
        assert_eq!(
            changed,
            0,
            "{host} changed on a second run:\n{}",
            shown(&again)
        );
    }
}

/// A release whose health probe fails on host 2: host 2 undoes itself,
/// host 1 (which migrated) goes back and takes the database back once,
/// host 3 is never touched, and the run fails naming host 2 and the
/// health step. Then the same release failing on host 1.
#[test]
fn a_host_that_fails_its_health_probe_takes_the_hosts_it_reached_back() {
    let fleet = Fleet::boot("wb", 3, "health_timeout = 5");
    let deb = &fleet.deb;
    let v1 = fleet.release("mywebsite-v1", &[]);
    let unhealthy = "/etc/djshim-test-unhealthy";
    let v3_files = votes_release(Some(unhealthy));
    let v3 = fleet.release("mywebsite-v3", &files(&v3_files));
    let first = fleet
        .playbook("djshim.django.rollout", &rollout_vars(&v1, deb), &[])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", shown(&first));
    fleet.hosts[1].machine.ok(&["touch", unhealthy]);

    let start = std::time::Instant::now();
    let failed = fleet
        .playbook("djshim.django.rollout", &rollout_vars(&v3, deb), &[])
        .output()
        .unwrap();
    eprintln!(
        "a rollout that fails on host 2, and its way back: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(failed.status.code(), Some(2), "{}", shown(&failed));
    let message = failure(&failed);
    eprintln!("{message}");
    assert!(message.contains("failed on h2"), "{message}");
    assert!(message.contains("health"), "{message}");
    assert_eq!(recap(&fleet, &failed)["h2"].1, 1, "{}", shown(&failed));

    fleet.assert_all_on(&format!("{SITE}/releases/mywebsite-v1"));
    // Host 3: generation 1 alone, as before the rollout.
    let history = fleet.hosts[2].machine.ok(&[
        "djshim",
        "--config",
        &format!("{SITE}/djshim.toml"),
        "history",
        "prod",
    ]);
    assert_eq!(history.lines().count(), 1, "{history}");
    // The database: migrated once, back once.
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ' ORDER BY what) FROM rollout_log"),
        "forward reverse"
    );
    assert_eq!(
        fleet.sql("SELECT count(*) FROM django_migrations WHERE name = '0002_votes'"),
        "0"
    );

    the_first_host_failing_goes_back_alone(&fleet, &v3, deb, unhealthy);
}

/// The same release failing on host 1, the one that migrates: its own
/// undo takes the database back, and the run stops there, the other hosts
/// not reached.
fn the_first_host_failing_goes_back_alone(
    fleet: &Fleet,
    release: &camino::Utf8Path,
    deb: &camino::Utf8Path,
    unhealthy: &str,
) {
    fleet.hosts[1].machine.ok(&["rm", unhealthy]);
    fleet.hosts[0].machine.ok(&["touch", unhealthy]);
    let histories = |fleet: &Fleet| -> Vec<String> {
        fleet.hosts[1..]
            .iter()
            .map(|h| {
                h.machine.ok(&[
                    "djshim",
                    "--config",
                    &format!("{SITE}/djshim.toml"),
                    "history",
                    "prod",
                ])
            })
            .collect()
    };
    let before = histories(fleet);
    let failed = fleet
        .playbook("djshim.django.rollout", &rollout_vars(release, deb), &[])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(2), "{}", shown(&failed));
    let message = failure(&failed);
    assert!(message.contains("failed on h1"), "{message}");
    assert!(message.contains("not reached: h2, h3"), "{message}");
    fleet.assert_all_on(&format!("{SITE}/releases/mywebsite-v1"));
    assert_eq!(histories(fleet), before, "hosts 2 and 3 were touched");
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ' ORDER BY what) FROM rollout_log"),
        "forward forward reverse reverse"
    );
}

/// The failed rollout's message: the line that names the host.
fn failure(failed: &std::process::Output) -> String {
    text(failed)
        .0
        .lines()
        .find(|l| l.contains("djshim rollout of"))
        .unwrap_or_else(|| panic!("no failure message:\n{}", shown(failed)))
        .to_owned()
}

/// A client loop on every host (`tests/nspawn/client.py` on the host's own
/// loopback, `/health`, which reads every column), started.
fn clients(fleet: &Fleet) -> Vec<std::process::Child> {
    fleet
        .hosts
        .iter()
        .map(|host| {
            let share = host.machine.share();
            let _ = std::fs::remove_file(share.join("client.stop"));
            std::fs::write(share.join("client.py"), include_str!("../nspawn/client.py")).unwrap();
            host.machine
                .command(
                    "/",
                    &[
                        &crate::machine::python(),
                        &format!("{SITE}/client.py"),
                        &crate::hosts::PORT.to_string(),
                        &format!("{SITE}/client.stop"),
                        "180",
                        "/health",
                    ],
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Stops the client loops; each host's summary.
fn finish(fleet: &Fleet, clients: Vec<std::process::Child>) -> Vec<serde_json::Value> {
    for host in &fleet.hosts {
        std::fs::write(host.machine.share().join("client.stop"), "").unwrap();
    }
    clients
        .into_iter()
        .map(|client| {
            let output = client.wait_with_output().unwrap();
            assert_status(&output, 0);
            serde_json::from_str(&text(&output).0).unwrap()
        })
        .collect()
}

/// A release that drops a column the running code reads, rolled out under
/// `window = "stop"` with a client loop on every host: the first host
/// holds the others before it migrates, and no request anywhere gets a
/// 500. The rollback playbook brings every host and the database back;
/// the same rollout with `window = "serve"` then gives the 500s it must
/// (the old code on hosts 2 and 3 reads the dropped column), so the test
/// can fail.
#[test]
fn a_window_on_every_host_keeps_a_dropped_column_from_the_old_code() {
    let fleet = Fleet::boot("wi", 3, "window = \"stop\"");
    let deb = &fleet.deb;
    let v1_files = votes_release(None);
    let v1 = fleet.release("mywebsite-v1", &files(&v1_files));
    let dropped = "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
                   dependencies = [(\"polls\", \"0002_votes\")]\n    \
                   operations = [migrations.RemoveField(\"question\", \"votes\")]\n";
    let mut v2_files: Vec<(&str, String)> = v1_files
        .iter()
        .filter(|(path, _)| *path != "polls/models.py")
        .cloned()
        .collect();
    v2_files.push(("polls/migrations/0003_no_votes.py", dropped.to_owned()));
    let v2 = fleet.release("mywebsite-v2", &files(&v2_files));
    let run = |playbook: &str, vars: &serde_json::Value| {
        let output = fleet.playbook(playbook, vars, &[]).output().unwrap();
        assert!(output.status.success(), "{}", shown(&output));
    };
    run("djshim.django.rollout", &rollout_vars(&v1, deb));

    let loops = clients(&fleet);
    let output = fleet
        .playbook("djshim.django.rollout", &rollout_vars(&v2, deb), &[])
        .output()
        .unwrap();
    let seen = finish(&fleet, loops);
    assert!(output.status.success(), "{}", shown(&output));
    // The first batch opens the windows of hosts 2 and 3; the second
    // renews host 3's before host 2 deploys; the third holds nothing.
    let [h1, h2, h3] = [0, 1, 2].map(|i| &fleet.hosts[i].name);
    let stdout = text(&output).0;
    let holds: Vec<&str> = stdout
        .split("TASK [")
        .filter(|task| task.contains("Hold every host not switched yet"))
        .collect();
    assert_eq!(holds.len(), 3, "{stdout}");
    for (hold, held) in holds.iter().zip([
        vec![
            format!("changed: [{h1} -> {h2}] => (item={h2})"),
            format!("changed: [{h1} -> {h3}] => (item={h3})"),
        ],
        vec![format!("ok: [{h2} -> {h3}] => (item={h3})")],
        vec![],
    ]) {
        for line in &held {
            assert!(hold.contains(line.as_str()), "no `{line}` in:\n{hold}");
        }
        assert_eq!(hold.matches(" -> ").count(), held.len(), "{hold}");
    }
    for (host, seen) in fleet.hosts.iter().zip(&seen) {
        assert_eq!(seen["failures"], 0, "{}: {seen}", host.name);
        assert!(
            seen["requests"].as_u64() > Some(10),
            "{}: {seen}",
            host.name
        );
        assert_eq!(host.status()["generation"], 2, "{}", host.name);
    }
    eprintln!("window = stop, each host's client: {seen:?}");

    let mut back = rollout_vars(&v1, deb);
    back["djshim_back_to"] = format!("{SITE}/releases/mywebsite-v1").into();
    run("djshim.django.rollback", &back);
    for host in &fleet.hosts {
        let status = host.status();
        assert_eq!(status["generation"], 1, "{}: {status}", host.name);
        assert_eq!(
            status["window_until"],
            serde_json::Value::Null,
            "{}",
            host.name
        );
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
    }
    assert_eq!(
        fleet.sql("SELECT count(*) FROM django_migrations WHERE name = '0003_no_votes'"),
        "0"
    );

    fleet.configure("window = \"serve\"");
    let loops = clients(&fleet);
    run("djshim.django.rollout", &rollout_vars(&v2, deb));
    let seen = finish(&fleet, loops);
    eprintln!("window = serve, each host's client: {seen:?}");
    let later: u64 = seen[1..]
        .iter()
        .map(|s| s["errors"]["HTTP 500"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        later > 0,
        "no 500 on hosts 2 and 3 without a window: {seen:?}"
    );
}

/// A management command that waits while `/srv/djshim-it/pause` exists on
/// its host (at most 60 s): a test's hold on one host's deploy.
const PAUSE: &str = "import os\nimport time\n\nfrom django.core.management.base import BaseCommand\n\n\n\
class Command(BaseCommand):\n    def handle(self, *args, **options):\n        \
deadline = time.monotonic() + 60\n        \
while os.path.exists(\"/srv/djshim-it/pause\") and time.monotonic() < deadline:\n            \
time.sleep(0.1)\n";

/// Polls `done` every 0.1 s until it holds, for 120 s at most.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not in 120 s: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts the rollout with `vars`, and kills the controller (`kill -9`
/// of ansible-playbook and every process it started) once host 2 runs its
/// `pause`; then lets host 2 go on and waits until no host runs djshim.
fn kill_while_host_2_pauses(fleet: &Fleet, vars: &serde_json::Value) {
    use std::os::unix::process::CommandExt;
    let h2 = &fleet.hosts[1];
    std::fs::write(h2.machine.share().join("pause"), "").unwrap();
    let mut controller = fleet
        .playbook("djshim.django.rollout", vars, &[])
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until("host 2 reaches its pause", || {
        assert!(
            controller.try_wait().unwrap().is_none(),
            "the rollout ended first"
        );
        h2.machine
            .run(&["pgrep", "-f", "manage.py pause"])
            .status
            .success()
    });
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", controller.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = controller.wait();
    std::fs::remove_file(h2.machine.share().join("pause")).unwrap();
    // Whatever the hosts were doing ends (djshim's own deadlines bound it).
    for host in &fleet.hosts {
        wait_until(&format!("djshim ends on {}", host.name), || {
            !host
                .machine
                .run(&["pgrep", "-x", "djshim"])
                .status
                .success()
        });
    }
}

/// The controller killed (`kill -9` of ansible-playbook and every process
/// it started) while host 2 deploys: every host is on one generation or
/// the other, none half way; the rollout run again holds host 3 again
/// (the first run's window on it ran out: host 3 runs code older than the
/// schema) and converges every host on the new release, and the rollback
/// playbook then every host (and the database) on the old one.
#[test]
fn a_killed_controller_leaves_no_host_half_way_and_a_second_run_converges() {
    let fleet = Fleet::boot(
        "ki",
        3,
        "after = [[\"pause\"]]\nwindow = \"stop\"\nwindow_timeout = 10",
    );
    let deb = &fleet.deb;
    let pause = ("polls/management/commands/pause.py", PAUSE.to_owned());
    let v1 = fleet.release("mywebsite-v1", &files(std::slice::from_ref(&pause)));
    let mut v2_files = votes_release(None);
    v2_files.push(pause);
    let v2 = fleet.release("mywebsite-v2", &files(&v2_files));
    let run = |playbook: &str, vars: &serde_json::Value| {
        let output = fleet.playbook(playbook, vars, &[]).output().unwrap();
        assert!(output.status.success(), "{}", shown(&output));
    };
    run("djshim.django.rollout", &rollout_vars(&v1, deb));

    kill_while_host_2_pauses(&fleet, &rollout_vars(&v2, deb));
    let v1_at = format!("{SITE}/releases/mywebsite-v1");
    let v2_at = format!("{SITE}/releases/mywebsite-v2");
    for host in &fleet.hosts {
        let status = host.status();
        eprintln!("after the kill, {}: {status}", host.name);
        let package = status["package"].as_str().unwrap_or_default();
        assert!(
            package == v1_at || package == v2_at,
            "{}: {status}",
            host.name
        );
        // A run cut short is journaled: the next deploy or rollback ends it.
        assert!(
            status["unfinished"].is_null() || status["unfinished"]["running"] == false,
            "{}: {status}",
            host.name
        );
    }

    let [h1, h2, h3] = [0, 1, 2].map(|i| &fleet.hosts[i].name);
    assert_eq!(fleet.hosts[2].status()["package"], v1_at.as_str());
    wait_until("the first run's window on host 3 runs out", || {
        fleet.hosts[2].status()["window_until"].is_null()
    });

    let output = fleet
        .playbook("djshim.django.rollout", &rollout_vars(&v2, deb), &[])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", shown(&output));
    let stdout = text(&output).0;
    let hold = stdout
        .split("TASK [")
        .find(|task| task.contains("Hold every host not switched yet"))
        .unwrap_or_else(|| panic!("no hold task:\n{stdout}"));
    assert!(
        hold.contains(&format!("changed: [{h1} -> {h3}] => (item={h3})")),
        "host 3 not held again:\n{hold}"
    );
    assert!(
        !hold.contains(&format!("-> {h2}]")),
        "host 2, on the release already, held:\n{hold}"
    );
    fleet.assert_all_on(&v2_at);
    assert!(fleet.hosts[2].status()["window_until"].is_null());
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ') FROM rollout_log"),
        "forward"
    );

    let mut back = rollout_vars(&v1, deb);
    back["djshim_back_to"] = v1_at.clone().into();
    run("djshim.django.rollback", &back);
    fleet.assert_all_on(&v1_at);
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ' ORDER BY what) FROM rollout_log"),
        "forward reverse"
    );
}

/// The deploy-rs file of two Nix nodes, each a profile whose activation is
/// djshim (packaging/deploy-rs): the site's package is the release named
/// by `$DJSHIM_APP`, djshim and its helper the binaries under test.
fn deploy_rs_file(fleet: &Fleet) -> camino::Utf8PathBuf {
    let bin = camino::Utf8Path::new(env!("CARGO_BIN_EXE_djshim"))
        .parent()
        .unwrap();
    let mut nodes = String::new();
    for h in &fleet.hosts {
        writeln!(
            nodes,
            "    {0} = {{ hostname = \"{0}\"; profiles.mywebsite = {{ path = profile; \
             profilePath = \"/nix/var/nix/profiles/mywebsite\"; }}; }};",
            h.name
        )
        .unwrap();
    }
    let file = fleet.dir.join("deploy/default.nix");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!(
            "let\n  profile = import {root}/packaging/deploy-rs/profile.nix {{\n    \
             app = /. + builtins.getEnv \"DJSHIM_APP\";\n    djshim = {bin}/djshim;\n    \
             djshim-exec = {bin}/djshim-exec;\n    activate-rs = {drs}/activate;\n    \
             config = \"{SITE}/djshim.toml\";\n    instance = \"prod\";\n    \
             system = \"x86_64-linux\";\n  }};\nin {{\n  deploy = {{\n    sshUser = \"root\";\n    \
             user = \"root\";\n    sshOpts = [ \"-F\" \"{dir}/ssh_config\" ];\n    \
             autoRollback = true;\n    magicRollback = true;\n    confirmTimeout = 30;\n    \
             nodes = {{\n{nodes}    }};\n  }};\n}}\n",
            root = crate::support::root(),
            drs = crate::hosts::deploy_rs_bin(),
            dir = fleet.dir,
        ),
    )
    .unwrap();
    file.parent().unwrap().to_owned()
}

/// deploy-rs (crates.io 1.0, in its non-flake mode: Debian's Nix is 2.8)
/// to two Nix hosts, each with its own `/nix`, the profile's activation
/// being djshim: a good release deployed to both; a release whose health
/// probe fails on host 2 put back on both nodes by deploy-rs (its auto
/// rollback of the failing node, its rollback of the node that had
/// succeeded), the database back once; then, fixed, the same release
/// deployed again. The activation script is `shellcheck --enable=all`
/// clean.
#[test]
fn deploy_rs_rolls_a_release_out_and_back_on_two_nix_hosts() {
    let lint = std::process::Command::new(crate::support::require("shellcheck", "shellcheck"))
        .args(["--enable=all", "--shell=sh"])
        .arg(crate::support::root().join("packaging/deploy-rs/activate"))
        .output()
        .unwrap();
    assert_eq!(text(&lint), (String::new(), String::new()), "shellcheck");
    let fleet = Fleet::boot_nix("dr", 2, "health_timeout = 5");
    let v1 = fleet.release("mywebsite-v1", &[]);
    let unhealthy = "/etc/djshim-test-unhealthy";
    let v2_files = votes_release(Some(unhealthy));
    let v2 = fleet.release("mywebsite-v2", &files(&v2_files));
    let file = deploy_rs_file(&fleet);
    let deploy = |release: &camino::Utf8Path| {
        fleet
            .deploy_rs(&file, &[("DJSHIM_APP", release.as_str())], &[])
            .output()
            .unwrap()
    };
    let served = |host: &crate::hosts::Host| {
        host.status()["package"]
            .as_str()
            .unwrap_or_default()
            .rsplit('-')
            .next()
            .unwrap_or_default()
            .to_owned()
    };

    let start = std::time::Instant::now();
    let first = deploy(&v1);
    eprintln!(
        "deploy-rs, v1 to 2 nodes: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(first.status.success(), "{}", shown(&first));
    for host in &fleet.hosts {
        assert_eq!(served(host), "v1", "{}: {}", host.name, host.status());
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
    }

    fleet.hosts[1].machine.ok(&["touch", unhealthy]);
    let start = std::time::Instant::now();
    let failed = deploy(&v2);
    assert!(!failed.status.success(), "{}", shown(&failed));
    // deploy-rs may exit while a node's activate-rs still puts it back:
    // every node converges on v1 by itself (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for host in &fleet.hosts {
        while served(host) != "v1" || !host.status()["unfinished"].is_null() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} is not back on v1: {}\n{}",
                host.name,
                host.status(),
                shown(&failed)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
        let profile = host
            .machine
            .ok(&["readlink", "-f", "/nix/var/nix/profiles/mywebsite/app"]);
        assert!(
            profile.trim().ends_with("-mywebsite-v1"),
            "{}: {profile}",
            host.name
        );
    }
    eprintln!(
        "deploy-rs, v2 failing on node 2, both nodes back: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ' ORDER BY what) FROM rollout_log"),
        "forward reverse"
    );

    // Fixed, the same release deployed again: a generation after the one
    // it rolled back to runs it, so the activation deploys it anew.
    fleet.hosts[1].machine.ok(&["rm", unhealthy]);
    let again = deploy(&v2);
    assert!(again.status.success(), "{}", shown(&again));
    for host in &fleet.hosts {
        assert_eq!(served(host), "v2", "{}: {}", host.name, host.status());
        assert_eq!(host.get("/health"), "ok\n", "{}", host.name);
    }
    assert_eq!(
        fleet.sql("SELECT string_agg(what, ' ' ORDER BY what) FROM rollout_log"),
        "forward forward reverse"
    );
}
