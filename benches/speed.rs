//! `cargo bench`: what a shim costs over starting manage.py directly, and
//! how long `generate` takes for many instances. Prints figures and ratios;
//! the targets are goals to watch, never asserted (no timed tests).

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use support::{CRON_PATH, World, venv};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd.stdout(Stdio::null()).status().unwrap();
    let elapsed = start.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    elapsed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn shim_overhead(runs: usize) {
    let world = World::new();
    world.write("pkg/manage.py", "pass\n");
    let python = venv().join("bin/python3");
    world.write(
        "djshim.toml",
        &format!(
            "project = \"bench\"\n[instances.noop]\npackage = \"{}\"\npython = \"{python}\"\nsettings = \"bench.settings\"\n",
            world.path("pkg")
        ),
    );
    assert!(world.djshim(&["generate"]).status.success());
    let shim = world.path("bin/bench-noop");
    let manage = world.path("pkg/manage.py");
    // The least any sh wrapper can cost: a script that only execs.
    let floor = world.path("floor");
    std::fs::write(
        &floor,
        format!("#!/bin/sh\nexec {python} {manage} \"$@\"\n"),
    )
    .unwrap();
    let (mut direct, mut via_shim, mut via_floor) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that drift of the machine hits all alike.
    for _ in 0..runs {
        direct.push(time(
            Command::new(&python)
                .arg(&manage)
                .env_clear()
                .env("PATH", CRON_PATH),
        ));
        via_shim.push(time(Command::new(&shim).env_clear().env("PATH", CRON_PATH)));
        via_floor.push(time(
            Command::new("/bin/sh")
                .arg(&floor)
                .env_clear()
                .env("PATH", CRON_PATH),
        ));
    }
    let (d, s, f) = (median(direct), median(via_shim), median(via_floor));
    println!(
        "shim start, no-op manage.py, median of {runs}: direct {:.2} ms, through the shim {:.2} ms, \
         ratio {:.3}x (target <= 1.05x); a wrapper that only execs: {:.2} ms, ratio {:.3}x; \
         the shim over that wrapper: {:.3}x (target <= 1.02x)",
        ms(d),
        ms(s),
        s.as_secs_f64() / d.as_secs_f64(),
        ms(f),
        f.as_secs_f64() / d.as_secs_f64(),
        s.as_secs_f64() / f.as_secs_f64(),
    );
}

/// An instance that runs as an account and reads one env file, started
/// by root, against the least that can do the same: `sh -c 'exec setpriv
/// … python manage.py'`. The account is `nobody` and the interpreter
/// Debian's, which `nobody` can reach.
fn account_overhead(runs: usize, env_file: bool) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("djshim-bench-")
        .tempdir_in("/run")
        .unwrap();
    let dir = camino::Utf8Path::from_path(dir.path()).unwrap().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manage.py"), "pass\n").unwrap();
    std::fs::write(
        dir.join("site.env"),
        "SECRET_KEY=\"s3cret value\"\nDEBUG=0\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.join("site.env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let python = "/usr/bin/python3";
    std::fs::write(
        dir.join("djshim.toml"),
        format!(
            "project = \"bench\"\n[instances.acct]\npackage = \"{dir}/pkg\"\npython = \"{python}\"\n\
             settings = \"bench.settings\"\nuser = \"nobody\"\n{}",
            if env_file {
                format!("env_file = [\"{dir}/site.env\"]\n")
            } else {
                String::new()
            }
        ),
    )
    .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_djshim"))
        .args(["-c", dir.join("djshim.toml").as_str(), "generate"])
        .status()
        .unwrap();
    assert!(status.success());
    let shim = dir.join("bin/bench-acct");
    let bare = format!(
        "exec setpriv --reuid=nobody --regid=nogroup --init-groups -- {python} {dir}/pkg/manage.py"
    );
    let (mut baseline, mut via_shim) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        baseline.push(time(
            Command::new("/bin/sh")
                .args(["-c", &bare])
                .env_clear()
                .env("PATH", CRON_PATH)
                .stdin(Stdio::null()),
        ));
        via_shim.push(time(
            Command::new(&shim)
                .env_clear()
                .env("PATH", CRON_PATH)
                .stdin(Stdio::null()),
        ));
    }
    let (b, s) = (median(baseline), median(via_shim));
    println!(
        "account instance{}, started by root, median of {runs}: \
         sh -c 'exec setpriv … python manage.py' {:.2} ms, through the shim {:.2} ms, ratio {:.3}x \
         (target <= 1.05x)",
        if env_file { " with one env file" } else { "" },
        ms(b),
        ms(s),
        s.as_secs_f64() / b.as_secs_f64(),
    );
}

/// The world of [`deploy_costs`]: releases A and B, an interpreter that
/// notes each start in the log, the config.
fn deploy_world() -> (
    World,
    camino::Utf8PathBuf,
    camino::Utf8PathBuf,
    camino::Utf8PathBuf,
) {
    let world = World::new();
    let a = world.path("a");
    support::copy_tree(&support::root().join("examples/mywebsite"), &a);
    let b = world.path("b");
    support::copy_tree(&a, &b);
    std::fs::copy(
        support::root().join("examples/migrations/0002_question_votes.py"),
        b.join("polls/migrations/0002_question_votes.py"),
    )
    .unwrap();
    let models = std::fs::read_to_string(b.join("polls/models.py")).unwrap();
    let models = models.replace(
        "    published = models.DateTimeField(auto_now_add=True)\n",
        "    published = models.DateTimeField(auto_now_add=True)\n    votes = models.IntegerField(default=0)\n",
    );
    std::fs::write(b.join("polls/models.py"), models).unwrap();
    let log = world.path("python.log");
    let python = world.write(
        "py/python3",
        &format!(
            "#!/bin/sh\n{{ printf start; for a; do case $a in *manage.py) printf ' manage.py';; esac; \
             done; echo; }} >> {log}\nexec {}/bin/python3 \"$@\"\n",
            venv()
        ),
    );
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(world.path("var")).unwrap();
    world.write(
        "djshim.toml",
        &format!(
            "project = \"mywebsite\"\nprofiles_dir = \"profiles\"\n\
             [instances.prod]\npython = \"{python}\"\nsettings = \"mywebsite.settings.production\"\n\
             state_dir = \"var\"\nenv = {{ MYWEBSITE_DB = \"{}\" }}\n\
             [instances.prod.deploy]\nsteps = [[\"migrate\", \"--noinput\"]]\nrestart = [\"true\"]\n",
            world.path("var/db.sqlite3")
        ),
    );
    (world, a, b, log)
}

/// What `djshim deploy` and `rollback` cost beyond the programs they
/// run: wall time minus the durations of the steps they print, and how
/// many times each starts Python (and Django: `manage.py`), counted by an
/// interpreter that notes each start. Releases are given with `--path`
/// (no build): A, the example project; B, A with a migration. Each round
/// deploys B over A and rolls back to A; one step (`migrate`) is the
/// user's.
fn deploy_costs(runs: usize) {
    let (world, a, b, log) = deploy_world();
    // The durations of the steps djshim runs children for (not its own
    // bookkeeping: new generation, switch, record).
    let children = |stderr: &str| -> f64 {
        stderr
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("djshim: ")?;
                let (step, time) = rest.rsplit_once(": done in ")?;
                let child = [
                    "manage.py",
                    "migrate ",
                    "check and record",
                    "check",
                    "restart",
                    "start",
                    "health",
                ]
                .iter()
                .any(|w| step.split(": ").any(|part| part.starts_with(w)));
                child.then_some(())?;
                time.strip_suffix(" s")?.parse::<f64>().ok()
            })
            .sum::<f64>()
    };
    let starts = || -> (usize, usize) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let python = text.lines().count();
        let django = text.lines().filter(|l| l.contains("manage.py")).count();
        (python, django)
    };
    let run = |args: &[&str]| -> (Duration, f64, (usize, usize)) {
        let start = Instant::now();
        let output = world.djshim(args);
        let total = start.elapsed();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        (total, children(&stderr), starts())
    };
    run(&["deploy", "prod", "--path", a.as_str()]);
    let (mut deploy_wall, mut deploy_own, mut back_wall, mut back_own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut deploy_starts, mut back_starts) = ((0, 0), (0, 0));
    for _ in 0..runs {
        let (total, kids, counted) = run(&["deploy", "prod", "--path", b.as_str()]);
        deploy_wall.push(total);
        deploy_own.push(total.saturating_sub(Duration::from_secs_f64(kids)));
        deploy_starts = counted;
        let (total, kids, counted) = run(&["rollback", "prod"]);
        back_wall.push(total);
        back_own.push(total.saturating_sub(Duration::from_secs_f64(kids)));
        back_starts = counted;
    }
    println!(
        "deploy of a release with one migration, median of {runs}: {:.0} ms wall, djshim's own \
         part {:.1} ms (target < 100 ms); Python started {} times, Django {} times, of which 1 \
         is the user's step (target: djshim's checks and record at most 1 Django start)",
        ms(median(deploy_wall)),
        ms(median(deploy_own)),
        deploy_starts.0,
        deploy_starts.1,
    );
    println!(
        "rollback of it, median of {runs}: {:.0} ms wall, djshim's own part {:.1} ms; Python \
         started {} times, Django {} times, of which 1 is the user's step and 1 the way back (a \
         target that ran healthy is not checked by Django again)",
        ms(median(back_wall)),
        ms(median(back_own)),
        back_starts.0,
        back_starts.1,
    );
}

/// `generate` of `instances` instances into an empty directory under
/// `base`, beside the floor of that file system: creating as many files
/// with std alone.
fn generate(base: &str, instances: usize, target_ms: f64) {
    let world = World::new();
    let mut config = String::from(
        "project = \"site\"\n[defaults]\npython = \"/venv/bin/python3\"\n\
         settings = \"site.settings.i{instance}\"\npackage = \"/srv/site/{instance}\"\n\
         static_root = \"/var/lib/{project}-{instance}/static\"\n",
    );
    for i in 0..instances {
        let _ = writeln!(config, "[instances.i{i:05}]");
    }
    world.write("djshim.toml", &config);
    let (mut fresh, mut unchanged, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let out = tempfile::Builder::new()
            .prefix("djshim-bench-")
            .tempdir_in(base)
            .unwrap();
        let out = out.path().to_str().unwrap();
        fresh.push(time(&mut world.djshim_cmd(&["generate", "--out", out])));
        unchanged.push(time(&mut world.djshim_cmd(&["generate", "--out", out])));
        let floor_dir = tempfile::Builder::new()
            .prefix("djshim-floor-")
            .tempdir_in(base)
            .unwrap();
        let start = Instant::now();
        for i in 0..instances {
            std::fs::write(floor_dir.path().join(format!("f{i}")), "#!/bin/sh\n").unwrap();
        }
        floor.push(start.elapsed());
    }
    let (g, f) = (median(fresh), median(floor));
    println!(
        "generate {instances} instances into {base}, median of 5: {:.1} ms ({:.2}x the {target_ms} ms \
         target); creating {instances} empty files there: {:.1} ms; rerun with nothing to change: {:.1} ms",
        ms(g),
        ms(g) / target_ms,
        ms(f),
        ms(median(unchanged)),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    shim_overhead(200);
    account_overhead(200, false);
    account_overhead(200, true);
    deploy_costs(5);
    let tmp = std::env::temp_dir();
    let mut bases = vec![tmp.to_str().unwrap().to_owned()];
    if std::path::Path::new("/dev/shm").is_dir() {
        bases.push("/dev/shm".to_owned());
    }
    for base in &bases {
        generate(base, 1_000, 100.0);
        generate(base, 10_000, 1000.0);
    }
}
