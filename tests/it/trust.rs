//! The env-file rule under attack (issue 14, items 2 and 4): the account
//! controls a directory on the way to a root-only file; `check` must not
//! read what it refuses, nor block on a FIFO.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::accounts::{run_as, world};
use crate::envfiles::{chown, put, tempdir_path};
use crate::support::{assert_status, require, root_dir, text, toml_str};

/// Item 2: a link root made (in a directory only root can change) that
/// points into a directory of the account's is no safer than the
/// account's own link: the helper walks the whole way the open takes,
/// link by link, and refuses a root-owned file reached through the
/// account's directory — without a race, and while the account swaps its
/// directories with `RENAME_EXCHANGE` as fast as it can.
#[test]
fn a_root_made_link_into_the_accounts_directory_is_walked() {
    let secrets = root_dir();
    let secrets = tempdir_path(&secrets);
    let root_only = put(secrets, "other.env", b"SECRET=root-only\n", 0o600, "root");
    let own_dir = secrets.join("app");
    fs::create_dir_all(own_dir.join("a")).unwrap();
    fs::create_dir_all(own_dir.join("b")).unwrap();
    for dir in ["", "a", "b"] {
        chown(&own_dir.join(dir), "djshimt-app");
    }
    put(
        &own_dir.join("a"),
        "app.env",
        b"SECRET=mine\n",
        0o600,
        "djshimt-app",
    );
    // b/app.env: the account's link to root's file.
    std::os::unix::fs::symlink(&root_only, own_dir.join("b/app.env")).unwrap();
    chown(&own_dir.join("b/app.env"), "djshimt-app");
    // Root's own link, in root's directory, into the account's.
    let link = secrets.join("prod.env");
    std::os::unix::fs::symlink(own_dir.join("b/app.env"), &link).unwrap();
    let (world, shim) = world(&format!("env_file = [{}]\n", toml_str(link.as_str())));
    let output = run_as(None, &shim, &[]);
    assert_status(&output, 78);
    let stderr = text(&output).1;
    assert!(!text(&output).0.contains("root-only"));
    assert!(
        stderr.contains(&format!("belongs to root but lies under {own_dir}")),
        "{stderr}"
    );
    let check = world.djshim(&["check"]);
    assert_status(&check, 1);
    assert!(
        text(&check)
            .0
            .contains(&format!("belongs to root but lies under {own_dir}")),
        "{}",
        text(&check).0
    );

    // Root's link to `a`, which the account swaps with `b` in a loop.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(own_dir.join("a/app.env"), &link).unwrap();
    let swapper = world.write(
        "swap.py",
        "import ctypes, os, sys, time\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         a, b = sys.argv[1].encode(), sys.argv[2].encode()\nend = time.time() + float(sys.argv[3])\n\
         n = 0\nwhile time.time() < end:\n    libc.renameat2(-100, a, -100, b, 2)\n    n += 1\nprint(n)\n",
    );
    let mut swapping = Command::new(require("setpriv", "util-linux"))
        .args([
            "--reuid=djshimt-app",
            "--regid=djshimt-app",
            "--init-groups",
            "--",
        ])
        .arg(require("python3", "python3-minimal"))
        .arg(&swapper)
        .arg(own_dir.join("a"))
        .arg(own_dir.join("b"))
        .arg("20")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut read, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while read + refused < 150 && Instant::now() < deadline {
        let output = run_as(None, &shim, &[]);
        let (stdout, stderr) = text(&output);
        assert!(
            !stdout.contains("root-only") && !stderr.contains("root-only"),
            "the account got root's file:\n{stdout}{stderr}"
        );
        match output.status.code() {
            Some(0) => read += 1,
            Some(78) => refused += 1,
            other => panic!("unexpected exit {other:?}:\n{stderr}"),
        }
    }
    let _ = swapping.kill();
    let _ = swapping.wait();
    assert!(
        read > 0 && refused > 0,
        "the swap never showed: {read} read, {refused} refused"
    );
}

/// Item 4: `check`, run as root, refuses an account's link to a file
/// only root may read (`/etc/shadow`) and prints nothing of it; an env
/// file the account turned into a FIFO blocks neither `check` nor `pin`.
#[test]
fn check_reads_nothing_it_refuses_and_never_blocks() {
    let secrets = root_dir();
    let secrets = tempdir_path(&secrets);
    let own_dir = secrets.join("app");
    fs::create_dir(&own_dir).unwrap();
    chown(&own_dir, "djshimt-app");
    let link = own_dir.join("app.env");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let (world, _shim) = world(&format!("env_file = [{}]\n", toml_str(link.as_str())));
    let output = world.djshim(&["check"]);
    assert_status(&output, 1);
    let stdout = text(&output).0;
    assert!(
        stdout.contains(&format!("{link} belongs to root but lies under {own_dir}")),
        "{stdout}"
    );
    let shadow = fs::read_to_string("/etc/shadow").unwrap();
    let first = shadow.lines().next().unwrap().split(':').next().unwrap();
    assert!(
        !stdout.lines().any(|l| l.contains(&format!("{first}:"))),
        "check printed /etc/shadow:\n{stdout}"
    );

    let fifo = own_dir.join("fifo.env");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    chown(&fifo, "djshimt-app");
    let pkg = world.path("pkg");
    // A profile instance, so that `pin` applies.
    let config = world
        .read("djshim.toml")
        .replace(link.as_str(), fifo.as_str())
        .replace(&format!("package = \"{pkg}\"\n"), "")
        .replace(
            "project = \"t\"\n",
            "project = \"t\"\nprofiles_dir = \"profiles\"\n",
        );
    world.write("djshim.toml", &config);
    for args in [&["check"][..], &["pin", "app", pkg.as_str()]] {
        let mut child = world
            .djshim_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`djshim {}` blocked on a FIFO", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            text(&output).0.contains("is not a regular file")
                || text(&output).1.contains("is not a regular file"),
            "{args:?}: {}{}",
            text(&output).0,
            text(&output).1
        );
    }
}

/// Items 10 and 11: a file systemd refuses whole (a noncharacter in a
/// name or a value, bytes that are not UTF-8 in a name) and a file two
/// systemd versions read differently (a comment ending in `\`: 252 skips
/// the next line, 254 reads it) are refused by the shim (78) and reported
/// by `check` as problems; one of systemd's own test files reads the same
/// through the shim as systemd's test expects.
#[test]
fn the_shim_refuses_what_systemd_refuses_or_reads_two_ways() {
    let secrets = root_dir();
    let secrets = tempdir_path(&secrets);
    for (name, content, why) in [
        (
            "key.env",
            "fo\u{fffe}o=bar\n".as_bytes(),
            "the name `fo\\u{fffe}o` is not UTF-8 as systemd reads it",
        ),
        (
            "value.env",
            "foo=b\u{ffff}ar\n".as_bytes(),
            "the value of `foo` is not UTF-8 as systemd reads it",
        ),
        (
            "bytes.env",
            b"k\xffey=1\n",
            "is not UTF-8 as systemd reads it",
        ),
        (
            "comment.env",
            b"# a comment \\\nSECRET=x\n",
            "a comment ends in a backslash",
        ),
    ] {
        let env = put(secrets, name, content, 0o600, "root");
        let (world, shim) = world(&format!("env_file = [{}]\n", toml_str(env.as_str())));
        let output = run_as(None, &shim, &[]);
        assert_status(&output, 78);
        assert!(text(&output).1.contains(why), "{name}: {}", text(&output).1);
        assert!(!world.path("started").exists(), "{name}: manage.py ran");
        let check = world.djshim(&["check"]);
        assert_status(&check, 1);
        assert!(
            text(&check)
                .0
                .lines()
                .any(|l| l.starts_with("app: `env_file`: ")
                    && !l.contains("warning")
                    && l.contains(name)),
            "{name}: {}",
            text(&check).0
        );
    }
    let env = put(
        secrets,
        "systemd.env",
        b"one=BAR   \n# comment\n  two   =   bar    \ninvalid line\nthree = \"333\nxxxx\"\n\
          four = '44\\\"44'\nfive = \"55\\\"55\" \"FIVE\" cinco   \nsix = seis sechs\\\n sis\n\
          seven=\"sevenval\" #nocomment\neight=eightval #nocomment\nexport nine=nineval\n\
          ten=ignored\nten=\neleven=\\value\ntwelve=\"\\value\"\nthirteen='\\value'",
        0o600,
        "root",
    );
    let (_world, shim) = world(&format!("env_file = [{}]\n", toml_str(env.as_str())));
    let r = crate::accounts::report(&run_as(None, &shim, &[]));
    for (key, value) in [
        ("one", "BAR"),
        ("two", "bar"),
        ("three", "333\nxxxx"),
        ("four", "44\\\"44"),
        ("five", "55\"55FIVEcinco"),
        ("six", "seis sechs sis"),
        ("seven", "sevenval#nocomment"),
        ("eight", "eightval #nocomment"),
        ("ten", ""),
        ("eleven", "value"),
        ("twelve", "\\value"),
        ("thirteen", "\\value"),
    ] {
        assert_eq!(r.env.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(!r.env.keys().any(|k| k.contains("nine")));
}

/// Item 9: a settings package that hangs on import hangs neither `check`
/// nor `pin`: every child has a deadline (30 s for this import), and the
/// error shows the command.
#[test]
fn a_settings_import_that_hangs_ends_by_its_deadline() {
    let (world, _shim) = world("");
    world.write("pkg/t/__init__.py", "import time\ntime.sleep(10 ** 6)\n");
    let pkg = world.path("pkg");
    let profiled = world.write(
        "profiled.toml",
        &world
            .read("djshim.toml")
            .replace(&format!("package = \"{pkg}\"\n"), "")
            .replace(
                "project = \"t\"\n",
                "project = \"t\"\nprofiles_dir = \"profiles\"\n",
            ),
    );
    let spawn = |args: &[&str]| {
        world
            .djshim_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs = [
        spawn(&["check"]),
        spawn(&["-c", profiled.as_str(), "pin", "app", pkg.as_str()]),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    for child in &mut runs {
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a hanging import hung djshim");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for child in runs {
        let output = child.wait_with_output().unwrap();
        assert_status(&output, 1);
        let (stdout, stderr) = text(&output);
        assert!(
            stdout.contains("importing the parents of `t.settings` did not end")
                && stdout.contains("did not end within 30 s: killed"),
            "{stdout}{stderr}"
        );
    }
}
