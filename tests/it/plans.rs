//! The release engine end to end (issue 16's defects, each on the real
//! example project through real builds, migrations and a real gunicorn
//! held as systemd would hold it): a failed first deploy, a killed
//! rollback, `--from` and `pin` under the instance's lock, `--to N`
//! across several deployed generations, a damaged record, an undo that
//! cannot be done, one lock per instance, children that die with djshim.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

use crate::site::{Site, VOTES_MODEL, commit_votes, gate_taken, killed, killed_deploy};
use crate::support::{Expect, assert_status, has_all, text};

/// A migration after 0002 that adds a second column.
const SCORE_MODEL: &str = "from django.db import models\n\n\nclass Question(models.Model):\n    \
     text = models.CharField(max_length=200)\n    published = models.DateTimeField(auto_now_add=True)\n    \
     votes = models.IntegerField(default=0)\n    score = models.IntegerField(default=0)\n\n    \
     def __str__(self):\n        return self.text\n";
const SCORE_MIGRATION: &str = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
     dependencies = [(\"polls\", \"0002_question_votes\")]\n    operations = [\n        \
     migrations.AddField(\"question\", \"score\", models.IntegerField(default=0)),\n    ]\n";

/// A data migration with no reverse.
const IRREVERSIBLE: &str = "from django.db import migrations\n\n\ndef fill(apps, schema_editor):\n    pass\n\n\n\
     class Migration(migrations.Migration):\n    dependencies = [(\"polls\", \"0001_initial\")]\n    \
     operations = [migrations.RunPython(fill)]\n";

/// The health view of the example project, answering 500.
fn broken_views(site: &Site) -> String {
    fs::read_to_string(site.repo.join("polls/views.py"))
        .unwrap()
        .replace(
            "return HttpResponse(\"ok\\n\", content_type=\"text/plain\")",
            "return HttpResponse(\"broken\\n\", status=500)",
        )
}

/// A djshim run started in the background, once it has printed a line
/// starting with `marker`; its stderr so far.
struct Running {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStderr>>,
    seen: String,
}

impl Running {
    fn start(site: &Site, args: &[&str], marker: &str) -> Running {
        let mut child = site.spawn(args);
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut running = Running {
            child,
            lines,
            seen: String::new(),
        };
        running.until(marker);
        running
    }

    /// Reads stderr up to a line starting with `marker`.
    fn until(&mut self, marker: &str) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.starts_with(marker) {
                return;
            }
        }
        panic!("no line `{marker}` in:\n{}", self.seen);
    }

    /// Its exit status and the rest of its stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        for line in self.lines.by_ref() {
            self.seen.push_str(&line.unwrap());
            self.seen.push('\n');
        }
        (self.child.wait().unwrap().code(), self.seen)
    }
}

/// A staging deploy step that holds the deploy for `seconds`.
fn slow_staging(site: &Site, seconds: u32) {
    staging_deploy(
        site,
        &format!(
            "steps = [[\"migrate\", \"--noinput\"], \
             [\"shell\", \"-c\", \"import time; time.sleep({seconds})\"]]"
        ),
    );
}

/// Issue 16, item 1: a failed *first* deploy leaves no half state behind:
/// the instance runs nothing (the profile link is gone), `history` marks
/// the generation, and the next deploy of the same commit deploys it
/// again instead of finding it "already running".
#[test]
fn a_failed_first_deploy_is_tried_again_by_the_next() {
    let mut site = Site::new();
    // No server yet: the first deploy's start fails.
    let output = site.deploy(&["prod"]);
    assert_status(&output, 3);
    let stderr = text(&output).1;
    assert!(
        stderr.contains("djshim: deploy: start: ") && stderr.contains("failed after"),
        "{stderr}"
    );
    assert!(
        stderr.contains("djshim: deploy: undo: remove the profile link: done in "),
        "{stderr}"
    );
    assert!(
        stderr.contains("prod had no generation before, and runs none now"),
        "{stderr}"
    );
    assert!(!site.world.path("profiles/mywebsite-prod").exists());
    let history = text(&site.world.djshim(&["history", "prod"])).0;
    assert!(
        history.contains("(failed deploy: rollback skips it)"),
        "{history}"
    );
    site.hold_server();
    let output = site.deploy(&["prod"]);
    assert_status(&output, 0);
    assert!(
        text(&output).0.starts_with("prod: generation 2: "),
        "{}",
        text(&output).0
    );
    assert!(site.get("/health").ends_with("\r\n\r\nok\n"));
    assert!(site.migrations("prod").contains("[X] 0001_initial"));
}

/// Issue 16, item 2: a rollback keeps a journal; killed during its
/// collectstatic, the next rollback finishes it (steps, restart, health)
/// instead of refusing.
#[test]
fn a_killed_rollback_is_finished_by_the_next() {
    let (site, first) = Site::voted();
    let stderr = killed(&site, &["rollback", "prod"], "restart");
    assert!(
        stderr
            .lines()
            .rfind(|l| l.starts_with("djshim: "))
            .is_some_and(|l| l.starts_with("djshim: rollback: restart: ")),
        "{stderr}"
    );
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    has_all(
        &stderr,
        &[
            "was interrupted; finishing it",
            "djshim: rollback: restart: ",
            "djshim: rollback: health: done in ",
        ],
    );
    site.assert_back_on(&first);
}

/// Issue 16, items 3, 4 and 14: one lock per instance, taken first.
/// `--from staging` while staging deploys is refused (what staging runs
/// may yet be undone); a pin of staging waits for the deploy, saying so,
/// and a pin of prod does not wait at all.
#[test]
fn operations_of_an_instance_wait_for_its_lock_and_only_its() {
    let (site, first) = Site::staged();
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    slow_staging(&site, 6);
    let running = Running::start(
        &site,
        &["deploy", "staging"],
        "djshim: deploy: manage.py shell",
    );
    // prod is not staging: its pin does not wait for staging's deploy.
    let pin = site.world.djshim(&["pin", "prod", first.as_str()]);
    assert_status(&pin, 0);
    assert!(!text(&pin).1.contains("waiting"), "{}", text(&pin).1);
    let mut deploy = running;
    assert!(
        deploy.child.try_wait().unwrap().is_none(),
        "staging's deploy ended before prod's pin did"
    );
    // --from staging while staging's deploy runs: refused, nothing moves.
    let promote = site.deploy(&["prod", "--from", "staging"]);
    assert_status(&promote, 1);
    assert!(
        text(&promote)
            .1
            .contains("instance `staging` is busy: `djshim deploy staging"),
        "{}",
        text(&promote).1
    );
    assert!(deploy.child.try_wait().unwrap().is_none());
    // A pin of staging waits for the deploy, then moves on from it.
    let pin = site.world.djshim(&["pin", "staging", first.as_str()]);
    let (code, seen) = {
        deploy.until("djshim: deploy: record generation");
        deploy.finish()
    };
    assert_eq!(code, Some(0), "{seen}");
    assert_status(&pin, 0);
    assert!(
        text(&pin)
            .1
            .contains("djshim: waiting for `djshim deploy staging (pid "),
        "{}",
        text(&pin).1
    );
    assert!(
        text(&pin).0.starts_with("staging: generation 2 -> 3: "),
        "{}",
        text(&pin).0
    );
    assert_eq!(site.generation_target("staging"), first);
}

/// Issue 16, item 4: a pin waiting behind a deploy that is then killed
/// does not go ahead over it: it finds the journal and says how to go on.
#[test]
fn a_pin_behind_a_killed_deploy_does_not_build_on_it() {
    let (site, first) = Site::staged();
    commit_votes(&site);
    slow_staging(&site, 20);
    let mut deploy = Running::start(
        &site,
        &["deploy", "staging"],
        "djshim: deploy: manage.py shell",
    );
    let mut pin = site
        .world
        .djshim_cmd(&["pin", "staging", first.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pin is waiting once the lock file names the deploy and the pin
    // has said so; then the deploy dies.
    let mut pin_err = BufReader::new(pin.stderr.take().unwrap());
    let mut line = String::new();
    pin_err.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("djshim: waiting for `djshim deploy staging"),
        "{line}"
    );
    deploy.child.kill().unwrap();
    deploy.child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut pin_err, &mut rest).unwrap();
    assert_eq!(pin.wait().unwrap().code(), Some(1));
    assert!(
        rest.contains("was interrupted and is not finished or undone"),
        "{rest}"
    );
    assert!(
        site.migrations("staging")
            .contains("[X] 0002_question_votes")
    );
}

/// Issue 16, item 5: `rollback --to 1` from generation 3 reverses the
/// migrations of generation 3, then of generation 2, each with its own
/// code.
#[test]
fn rollback_to_an_older_generation_reverses_every_one_between() {
    let (site, first) = Site::voted();
    site.commit(
        &[
            ("polls/models.py", SCORE_MODEL),
            ("polls/migrations/0003_question_score.py", SCORE_MIGRATION),
        ],
        "score",
    );
    assert_status(&site.deploy(&["prod"]), 0);
    assert!(site.migrations("prod").contains("[X] 0003_question_score"));
    let output = site.world.djshim(&["rollback", "prod", "--to", "1"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    let three = stderr
        .find("djshim: rollback: migrate polls 0002_question_votes (generation 3's code): done")
        .unwrap_or_else(|| panic!("{stderr}"));
    let two = stderr
        .find("djshim: rollback: migrate polls 0001_initial (generation 2's code): done")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(three < two, "{stderr}");
    site.assert_back_on(&first);
    // The old code works on the schema it knows.
    site.python(
        "from polls.models import Question; Question.objects.create(text='q'); print(Question.objects.count())",
    );
}

/// Issue 16, item 6: a damaged deploy record is never taken for a pin:
/// `rollback` refuses, names the file, and changes nothing.
#[test]
fn a_damaged_record_stops_the_rollback() {
    let (site, _) = Site::staged();
    commit_votes(&site);
    assert_status(&site.deploy(&["staging"]), 0);
    let second = site.generation_target("staging");
    let record = site.world.path("profiles/.mywebsite-staging-2.deploy.json");
    fs::write(&record, "{\"targets\": {\"polls\": ").unwrap();
    let output = site.world.djshim(&["rollback", "staging"]);
    assert_status(&output, 1);
    assert!(
        text(&output)
            .1
            .contains(&format!("{record}: not a deploy record djshim wrote")),
        "{}",
        text(&output).1
    );
    assert!(
        site.migrations("staging")
            .contains("[X] 0002_question_votes")
    );
    assert_eq!(site.generation_target("staging"), second);
}

/// Issue 16, item 13: a failed deploy that was allowed irreversible
/// migrations does not try to migrate back through them: it stops, says
/// what it left and how to go on, and every later run says so too until
/// the journal is removed.
#[test]
fn an_undo_known_impossible_is_never_attempted() {
    let (site, _) = Site::serving();
    let views = broken_views(&site);
    site.commit(
        &[
            ("polls/migrations/0002_fill.py", IRREVERSIBLE),
            ("polls/views.py", &views),
        ],
        "irreversible and broken",
    );
    let output = site.deploy(&["prod", "--allow-irreversible"]);
    // Exit 4: failed, and not undone (the journal is kept).
    assert_status(&output, 4);
    let stderr = text(&output).1;
    assert!(!stderr.contains("undo: migrate polls"), "{stderr}");
    has_all(
        &stderr,
        &[
            "djshim: deploy: health: failed after ",
            "failed and could not be undone",
            "the undo stopped: the migrations polls.0002_fill cannot be reversed",
            "= help: deploy a fix forward",
        ],
    );
    assert!(site.migrations("prod").contains("[X] 0002_fill"));
    let journal = site
        .world
        .path("profiles/.mywebsite-prod.deploy-journal.json");
    for args in [&["deploy", "prod"][..], &["rollback", "prod"]] {
        let output = site.world.djshim(args);
        assert_status(&output, 4);
        let stderr = text(&output).1;
        assert!(
            stderr.contains("could not be undone")
                && stderr.contains(&format!("then remove {journal}")),
            "{stderr}"
        );
    }
    // The way out, as the message says.
    fs::remove_file(&journal).unwrap();
    let fixed = fs::read_to_string(site.repo.join("polls/views.py"))
        .unwrap()
        .replace(
            "return HttpResponse(\"broken\\n\", status=500)",
            "return HttpResponse(\"ok\\n\", content_type=\"text/plain\")",
        );
    site.commit(&[("polls/views.py", &fixed)], "fixed");
    assert_status(&site.deploy(&["prod"]), 0);
    // A rollback over the irreversible migration is refused with help.
    let output = site.world.djshim(&["rollback", "prod"]);
    assert_status(&output, 1);
    assert!(
        text(&output).1.contains("cannot be reversed"),
        "{}",
        text(&output).1
    );
}

/// Issue 16, item 12: `kill -9` of djshim alone (not its process group)
/// takes its `manage.py migrate` child along: a migration that would
/// have committed a moment later never does, and the next deploy finds
/// the database where the journal says.
#[test]
fn a_child_dies_with_djshim() {
    use std::os::unix::process::CommandExt;
    let (site, _) = Site::staged();
    let slow = "from django.db import migrations\nimport time\n\n\ndef wait(apps, schema_editor):\n    \
                time.sleep(4)\n\n\nclass Migration(migrations.Migration):\n    atomic = False\n    \
                dependencies = [(\"polls\", \"0001_initial\")]\n    \
                operations = [migrations.RunPython(wait, migrations.RunPython.noop)]\n";
    site.commit(&[("polls/migrations/0002_slow.py", slow)], "slow");
    let mut child = site
        .world
        .djshim_cmd(&["deploy", "staging"])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = child.id();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        if line.unwrap() == "Running migrations:" {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Wait until nothing of the group is left (the old djshim's child
    // ran on and committed), at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the group is still alive");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        site.migrations("staging").contains("[ ] 0002_slow"),
        "{}",
        site.migrations("staging")
    );
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(text(&output).1.contains("was interrupted; undoing it"));
    assert!(site.migrations("staging").contains("[X] 0002_slow"));
}

/// Issue 16, item 11: from nothing to a running instance with the
/// documented commands: the state directory does not exist yet (the
/// deploy makes it, as the unit's `StateDirectory=` would), the initial
/// migrations may be irreversible (a first deploy is never migrated
/// back), and it starts what is not running.
#[test]
fn a_first_deploy_starts_from_nothing() {
    let site = Site::new();
    fs::remove_dir_all(site.world.path("var/staging")).unwrap();
    site.commit(&[("polls/migrations/0002_fill.py", IRREVERSIBLE)], "fill");
    Expect::new()
        .stdout_has("staging: generation 1: ")
        .stderr_has("djshim: deploy: start: true: done in ")
        .check(&site.deploy(&["staging"]));
    assert!(site.world.path("var/staging").is_dir());
    assert!(site.migrations("staging").contains("[X] 0002_fill"));
}

/// Issue 17, item 11: the shims a deploy runs its steps through live
/// beside the profile, and a killed deploy's copy goes with the next run
/// (no `/tmp/djshim-deploy-*` left behind each time).
#[test]
fn a_killed_deploy_leaves_no_shims_behind_the_next() {
    let mut site = Site::new();
    site.hold_server();
    killed_deploy(&site, "manage-shell");
    let shims = site.world.path("profiles/.mywebsite-prod.shims");
    assert!(
        shims.is_dir(),
        "the killed deploy made no shims where expected"
    );
    assert!(
        !site
            .world
            .path("profiles/.mywebsite-prod.deploy-journal.json")
            .exists()
    );
    let output = site.deploy(&["prod"]);
    assert_status(&output, 0);
    assert!(!text(&output).1.contains("interrupted"));
    assert!(!shims.exists());
}

/// Sets `[instances.staging.deploy]` to these lines (the config's last
/// table: what a previous call wrote is replaced).
fn staging_deploy(site: &Site, lines: &str) {
    let config = site.world.read("djshim.toml");
    let head = config.split("[instances.staging.deploy]").next().unwrap();
    site.world.write(
        "djshim.toml",
        &format!("{head}[instances.staging.deploy]\n{lines}\n"),
    );
}

/// Runs `djshim deploy staging`, which must end within `bound` (a deadline
/// of the test, far above the probe's own, not a speed goal).
fn bounded_deploy(site: &Site, bound: Duration) -> (Option<i32>, String) {
    bounded(site.world.djshim_cmd(&["deploy", "staging"]), bound)
}

/// Runs `command`, which must end within `bound`.
fn bounded(mut command: std::process::Command, bound: Duration) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the deploy did not end within {bound:?}: its health probe is unbounded");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (output.status.code(), text(&output).1)
}

/// A server on `address` that runs `behaviour` for each connection: it
/// notes the request's `Host:` line in `host` and answers 200, or sends
/// one byte of an answer every half second for ever.
fn server(site: &Site, family: &str, behaviour: &str) -> (Child, u16) {
    let script = site.world.write(
        "server.py",
        "import socket, sys, threading, time\n\
         family = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET\n\
         host = '::1' if sys.argv[1] == '6' else '127.0.0.1'\n\
         s = socket.socket(family, socket.SOCK_STREAM)\n\
         s.bind((host, 0)); s.listen(16)\n\
         print(s.getsockname()[1], flush=True)\n\
         def serve(c):\n\
         \x20   data = b''\n\
         \x20   while b'\\r\\n\\r\\n' not in data:\n\
         \x20       chunk = c.recv(4096)\n\
         \x20       if not chunk: break\n\
         \x20       data += chunk\n\
         \x20   data = data.decode()\n\
         \x20   if sys.argv[2] == 'trickle':\n\
         \x20       for b in b'HTTP/1.0 200 OK\\r\\n\\r\\n' * 1000:\n\
         \x20           c.send(bytes([b])); time.sleep(0.5)\n\
         \x20   host = [l for l in data.split('\\r\\n') if l.lower().startswith('host:')]\n\
         \x20   open(sys.argv[3], 'w').write(host[0] if host else '')\n\
         \x20   c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n'); c.close()\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   threading.Thread(target=serve, args=(c,), daemon=True).start()\n",
    );
    let mut child =
        std::process::Command::new(crate::support::require("python3", "python3-minimal"))
            .arg(&script)
            .args([family, behaviour])
            .arg(site.world.path("host"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

/// Issue 14, item 8: the whole probe ends by `health_timeout`: a healthy
/// command that leaves a process holding its stdout, a command that never
/// ends, a server that trickles its answer one byte at a time.
#[test]
fn health_probes_end_by_their_deadline() {
    let (site, _) = Site::staged();
    let pid = site.world.path("leftover.pid");
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    staging_deploy(
        &site,
        &format!(
            "health = [\"sh\", \"-c\", \"sleep 600 & echo $! > {pid}; echo ok\"]\nhealth_timeout = 2"
        ),
    );
    let (code, stderr) = bounded_deploy(&site, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let leftover = fs::read_to_string(&pid).unwrap();
    // Gone, or a zombie that its new parent has not reaped yet.
    let status =
        fs::read_to_string(format!("/proc/{}/status", leftover.trim())).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "the probe's leftover process lives on:\n{status}"
    );

    site.commit(&[("polls/extra.py", "X = 2\n")], "third");
    staging_deploy(&site, "health = [\"sleep\", \"600\"]\nhealth_timeout = 2");
    let (code, stderr) = bounded_deploy(&site, Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("not healthy within 2 s"), "{stderr}");

    let (mut trickle, port) = server(&site, "4", "trickle");
    staging_deploy(
        &site,
        &format!("health = \"http://127.0.0.1:{port}/health\"\nhealth_timeout = 2"),
    );
    let (code, stderr) = bounded_deploy(&site, Duration::from_secs(60));
    let _ = trickle.kill();
    let _ = trickle.wait();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("not healthy within 2 s"), "{stderr}");
}

/// The health URL's name lookup is bounded by the probe's deadline too:
/// with a name server that never answers (and a resolver told to wait 30 s
/// five times), a 2 s probe ends by its deadline. djshim runs in a mount
/// namespace of its own whose `/etc/resolv.conf` names that server; the
/// machine's is untouched.
#[test]
fn a_silent_name_server_does_not_outlast_the_probe() {
    let (site, _) = Site::staged();
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    let silent = site.world.write(
        "silent.py",
        "import socket, sys, time\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.77.0.1', 53))\n\
         t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(('127.77.0.1', 53)); t.listen(8)\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   u.recv(4096)\n",
    );
    let mut server =
        std::process::Command::new(crate::support::require("python3", "python3-minimal"))
            .arg(&silent)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Gone however the test ends: it holds the test's output open.
    let server = Killed(server);
    assert_eq!(line, "ready\n");
    let resolv = site.world.write(
        "resolv.conf",
        "nameserver 127.77.0.1\noptions timeout:30 attempts:5\n",
    );
    staging_deploy(
        &site,
        "health = \"http://health.djshim-test:8/health\"\nhealth_timeout = 2",
    );
    let plain = site.world.djshim_cmd(&["deploy", "staging"]);
    let mut command = std::process::Command::new(crate::support::require("unshare", "util-linux"));
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
        .arg(&resolv)
        .arg(plain.get_program())
        .args(plain.get_args())
        .current_dir(site.world.path(""))
        .env_clear()
        .env("PATH", crate::support::CRON_PATH);
    let (code, stderr) = bounded(command, Duration::from_secs(60));
    drop(server);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "not healthy within 2 s: http://health.djshim-test:8/health: the name lookup of \
             health.djshim-test: no answer in time"
        ),
        "{stderr}"
    );
}

/// A child killed and reaped when this goes, however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 14, item 8: an IPv6 health URL is accepted and sends a valid
/// `Host: [::1]:PORT`.
#[test]
fn an_ipv6_health_url_sends_a_valid_host() {
    let site = Site::new();
    let (mut server, port) = server(&site, "6", "answer");
    staging_deploy(
        &site,
        &format!("health = \"http://[::1]:{port}/health\"\nhealth_timeout = 5"),
    );
    let (code, stderr) = bounded_deploy(&site, Duration::from_secs(60));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        fs::read_to_string(site.world.path("host")).unwrap(),
        format!("Host: [::1]:{port}")
    );
}

/// A migration that squashes 0001 and 0002, the replaced files gone.
const SQUASHED: &str = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
     initial = True\n    replaces = [(\"polls\", \"0001_initial\"), (\"polls\", \"0002_question_votes\")]\n    \
     dependencies = []\n    operations = [\n        migrations.CreateModel(\n            name=\"Question\",\n            \
     fields=[\n                (\"id\", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name=\"ID\")),\n                \
     (\"text\", models.CharField(max_length=200)),\n                (\"published\", models.DateTimeField(auto_now_add=True)),\n                \
     (\"votes\", models.IntegerField(default=0)),\n            ],\n        ),\n    ]\n";

/// Issue 16, item 8: a database that applied migrations a later release
/// squashed (and whose files it removed) holds names that are no nodes of
/// the graph; the migration record still works, as Django's own `migrate`
/// does, and the rollback goes back to the squashed migration.
#[test]
fn squashed_migrations_are_recorded_and_reversed() {
    let site = Site::new();
    commit_votes(&site);
    assert_status(&site.deploy(&["staging"]), 0);
    for old in ["0001_initial.py", "0002_question_votes.py"] {
        fs::remove_file(site.repo.join("polls/migrations").join(old)).unwrap();
    }
    let score = SCORE_MIGRATION.replace("0002_question_votes", "0001_squashed_0002");
    site.commit(
        &[
            ("polls/migrations/0001_squashed_0002.py", SQUASHED),
            ("polls/models.py", SCORE_MODEL),
            ("polls/migrations/0003_question_score.py", &score),
        ],
        "squashed",
    );
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("djshim: new migration polls.0003_question_score: reversible"),
        "{}",
        text(&output).1
    );
    assert!(
        site.migrations("staging")
            .contains("[X] 0003_question_score")
    );
    let output = site.world.djshim(&["rollback", "staging"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains(
            "djshim: rollback: migrate polls 0001_squashed_0002 (generation 2's code): done"
        ),
        "{}",
        text(&output).1
    );
    assert!(!site.migrations("staging").contains("[X] 0003"));
}

/// Issue 17, item 8: steps once the new code serves (`after`), after the
/// restart and the health probe; a failing one rolls the deploy back.
#[test]
fn after_steps_run_once_the_new_code_serves() {
    let (site, first) = Site::staged();
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    staging_deploy(
        &site,
        "health = [\"true\"]\nafter = [[\"shell\", \"-c\", \"import sys; sys.exit(3)\"]]",
    );
    let output = site.deploy(&["staging"]);
    assert_status(&output, 3);
    let stderr = text(&output).1;
    let health = stderr
        .find("djshim: deploy: health: done")
        .unwrap_or_else(|| panic!("{stderr}"));
    let after = stderr
        .find("djshim: deploy: manage.py shell -c import sys; sys.exit(3): failed")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(health < after, "{stderr}");
    assert!(
        stderr.contains("djshim: deploy: undo: switch to generation 1: done"),
        "{stderr}"
    );
    assert_eq!(site.generation_target("staging"), first);
    staging_deploy(&site, "after = [[\"shell\", \"-c\", \"print('after')\"]]");
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("djshim: deploy: manage.py shell -c print('after'): done"),
        "{}",
        text(&output).1
    );
}

/// Issue 16, item 9 (the part built): before the switch, a deploy says
/// which new migrations the code running now may fail against until the
/// restart — a NOT NULL column without a database default, a dropped
/// column — and says nothing of one that keeps it working.
#[test]
fn a_deploy_says_which_migrations_break_the_running_code() {
    let (site, _) = Site::staged();
    commit_votes(&site);
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains(
            "djshim: warning: the code running now may fail against polls.0002_question_votes \
             until the restart: Add field votes to question (NOT NULL, no database default)"
        ),
        "{}",
        text(&output).1
    );
    let drop = "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
                dependencies = [(\"polls\", \"0002_question_votes\")]\n    \
                operations = [migrations.RemoveField(\"question\", \"votes\")]\n";
    let model = VOTES_MODEL.replace("    votes = models.IntegerField(default=0)\n", "");
    site.commit(
        &[
            ("polls/models.py", &model),
            ("polls/migrations/0003_remove_votes.py", drop),
        ],
        "drop",
    );
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(
        text(&output).1.contains(
            "against polls.0003_remove_votes until the restart: Remove field votes from question"
        ),
        "{}",
        text(&output).1
    );
    site.commit(&[("polls/extra.py", "X = 1\n")], "no migration");
    let output = site.deploy(&["staging"]);
    assert_status(&output, 0);
    assert!(
        !text(&output).1.contains("may fail against"),
        "{}",
        text(&output).1
    );
}

/// Issue 23, item 4: a first deploy says once, as a count, what would
/// break older code (none runs) instead of a warning a migration.
#[test]
fn a_first_deploy_counts_what_would_break_older_code() {
    let site = Site::new();
    site.commit(
        &[
            (
                "polls/models.py",
                "from django.db import models\n\n\nclass Question(models.Model):\n    \
                 text = models.CharField(max_length=200)\n",
            ),
            (
                "polls/migrations/0002_drop_published.py",
                "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
                 dependencies = [(\"polls\", \"0001_initial\")]\n    operations = \
                 [migrations.RemoveField(\"question\", \"published\")]\n",
            ),
        ],
        "drop published",
    );
    let (_, stderr) = Expect::new()
        .stdout_has("staging: generation 1: ")
        .stderr_has("djshim: new migration polls.0002_drop_published: reversible")
        // polls.0002 and contenttypes.0002 (it removes a field too).
        .stderr_has("djshim: 2 of the new migrations would break older code; nothing serves yet")
        .check(&site.deploy(&["staging"]));
    assert!(!stderr.contains("the code running now"), "{stderr}");
}

/// Issue 23, item 5: `history` while a deploy runs shows its generation as
/// in progress, not as a failed deploy; once the deploy is killed, as
/// interrupted (the next run undoes it).
#[test]
fn history_shows_a_deploy_in_progress() {
    let (site, _) = Site::staged();
    commit_votes(&site);
    site.arm("migrate-0002", "");
    let mut deploy = site
        .world
        .djshim_cmd(&["deploy", "staging"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        gate_taken(&site, &mut deploy, "migrate-0002"),
        "the deploy never reached its gate"
    );
    let inside = site.world.path("gates/migrate-0002.inside");
    let (history, _) = Expect::new()
        .stdout_has("(deploy in progress)   (current)")
        .check(&site.world.djshim(&["history", "staging"]));
    assert!(!history.contains("failed deploy"), "{history}");
    deploy.kill().unwrap();
    deploy.wait().unwrap();
    Expect::new()
        .stdout_has("(interrupted deploy: the next `deploy` or `rollback` undoes it)")
        .check(&site.world.djshim(&["history", "staging"]));
    std::fs::remove_file(&inside).unwrap();
}
