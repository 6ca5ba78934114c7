//! Root's terminal and a command that switches accounts (issue 14, items
//! 1, 5 and 7), on a real pseudo-terminal: root's "shell" is a Python
//! process with job control on a pty that the test drives as a terminal
//! emulator would. The account's side must never hold a descriptor of
//! root's terminal, must get the signals root sends, and must end the way
//! a shell reports it.

use std::fs;
use std::process::Command;

use camino::Utf8Path;

use crate::accounts::{accounts, world};
use crate::support::{CRON_PATH, assert_status, from_cron, require, text};

/// Root's shell and its terminal. The shell runs the command in a
/// foreground process group of its own (as an interactive shell does),
/// prints `status=N` when it ends (negative: killed by signal N), then
/// `PROMPT`, and reads what root types next for up to 3 s. The terminal
/// is 101×33; on `READY` from the command it types Ctrl-C (mode
/// `ctrl-c…`); on `PROMPT` it types `root-typed`.
const SHELL: &str = r#"import fcntl, os, pty, select, signal, struct, subprocess, sys, termios, time
mode, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    stdin = None if mode.endswith("terminal") else subprocess.DEVNULL
    p = subprocess.Popen(argv, stdin=stdin, process_group=0)
    os.tcsetpgrp(0, p.pid)
    status = p.wait()
    os.tcsetpgrp(0, os.getpgrp())
    print(f"\r\nstatus={status}\r\nPROMPT", flush=True)
    ready, _, _ = select.select([0], [], [], 3)
    line = os.read(0, 100) if ready else b""
    print(f"root read {line!r}", flush=True)
    os._exit(0)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
seen, interrupted, typed = b"", False, False
deadline = time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.1)
    if ready:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    if mode.startswith("ctrl-c") and b"READY" in seen and not interrupted:
        os.write(fd, b"\x03")
        interrupted = True
    if b"PROMPT" in seen and not typed:
        os.write(fd, b"root-typed\n")
        typed = True
os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
"#;

/// The account's manage.py: `reader` leaves a process behind that reads
/// whatever terminal it holds and notes what it got; `wait` says READY
/// and sleeps (its pid in `pid`); `term` kills itself with SIGTERM;
/// `size` prints its terminal's size; `fds` lists its descriptors.
const ACCOUNT: &str = r#"import os, select, signal, sys, time
here = os.path.dirname(os.path.abspath(__file__))
what = sys.argv[1]
if what == "reader":
    if os.fork() == 0:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        got, why = b"", b"time"
        end = time.time() + 4
        while time.time() < end:
            try:
                ready, _, _ = select.select([1], [], [], 0.2)
                if ready:
                    chunk = os.read(1, 100)
                    if not chunk:
                        why = b"eof"
                        break
                    got += chunk
            except OSError as e:
                why = f"<{e.strerror}>".encode()
                break
        with open(os.path.join(here, "..", "reader.out"), "wb") as f:
            f.write(got + b"|end:" + why)
        os._exit(0)
    print("READY", flush=True)
elif what == "wait":
    with open(os.path.join(here, "..", "pid"), "w") as f:
        f.write(str(os.getpid()))
    print("READY", flush=True)
    time.sleep(30)
elif what == "term":
    os.kill(os.getpid(), signal.SIGTERM)
elif what == "size":
    size = os.get_terminal_size(1)
    print(f"size={size.columns}x{size.lines} tty={os.isatty(0)}{os.isatty(1)}{os.isatty(2)}")
elif what == "fds":
    print("fds=" + ",".join(sorted(os.listdir("/proc/self/fd"), key=int)))
    print("groups=" + ",".join(str(g) for g in sorted(os.getgroups())) + f" gid={os.getgid()}")
"#;

/// Runs `shim ARGS` from root's shell on a terminal; what the terminal
/// showed.
fn on_terminal(dir: &Utf8Path, mode: &str, shim: &Utf8Path, args: &[&str]) -> String {
    let shell = dir.join("shell.py");
    fs::write(&shell, SHELL).unwrap();
    let mut words = vec![shell.as_str(), mode, shim.as_str()];
    words.extend(args);
    let output = from_cron(require("python3", "python3-minimal"), &words);
    assert_status(&output, 0);
    text(&output).0
}

fn status(screen: &str) -> i32 {
    screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("status="))
        .unwrap_or_else(|| panic!("no status on the terminal:\n{screen}"))
        .parse()
        .unwrap()
}

/// Item 1: a process the account leaves behind reads nothing of what
/// root types at its prompt afterwards (it held root's terminal on fds 1
/// and 2 before), whether stdin is the terminal or not.
#[test]
fn a_process_the_account_leaves_behind_never_reads_roots_typing() {
    let (world, shim) = world("");
    world.write("pkg/manage.py", ACCOUNT);
    for mode in ["detached-input", "terminal"] {
        let _ = fs::remove_file(world.path("reader.out"));
        let screen = on_terminal(&world.path(""), mode, &shim, &["reader"]);
        assert_eq!(status(&screen), 0, "{mode}:\n{screen}");
        assert!(
            screen.contains("root read b'root-typed"),
            "{mode}: root did not get its own typing:\n{screen}"
        );
        // The reader had 4 s; wait for its note.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !world.path("reader.out").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // It must have lived through root's typing and noted what it got:
        // a reader that never wrote proves nothing.
        let got = fs::read_to_string(world.path("reader.out")).unwrap_or_else(|_| {
            panic!("{mode}: the reader never noted what it read: the test proved nothing")
        });
        assert!(
            !got.contains("root-typed") && got.contains("|end:"),
            "{mode}: the account's process read root's typing: {got:?}"
        );
    }
}

/// Item 1: Ctrl-C reaches the account's command (it does not run on,
/// detached, while root gets its prompt back), a command killed by a
/// signal ends with 128 + the signal, and the window size is root's.
#[test]
fn signals_reach_the_account_and_the_status_is_the_shells() {
    let (world, shim) = world("");
    world.write("pkg/manage.py", ACCOUNT);
    for mode in ["ctrl-c-detached-input", "ctrl-c-terminal"] {
        let _ = fs::remove_file(world.path("pid"));
        let screen = on_terminal(&world.path(""), mode, &shim, &["wait"]);
        let pid = fs::read_to_string(world.path("pid")).unwrap();
        let alive = Utf8Path::new("/proc").join(pid.trim()).exists();
        if alive {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        assert!(!alive, "{mode}: manage.py ran on after Ctrl-C:\n{screen}");
        assert_eq!(status(&screen), 130, "{mode}:\n{screen}");
    }
    let screen = on_terminal(&world.path(""), "detached-input", &shim, &["term"]);
    assert_eq!(status(&screen), 143, "{screen}");
    assert!(!screen.contains("did not exit normally"), "{screen}");
    let screen = on_terminal(&world.path(""), "terminal", &shim, &["size"]);
    assert!(screen.contains("size=101x33 tty=TrueTrueTrue"), "{screen}");
    let screen = on_terminal(&world.path(""), "detached-input", &shim, &["size"]);
    assert!(screen.contains("size=101x33 tty=FalseTrueTrue"), "{screen}");
}

/// Items 5 and 7: only fds 0–2 reach the account (not a key file or a
/// lock descriptor root's caller holds), and its groups are one set on
/// every path — systemd's rule for `User=`/`Group=`: the account's groups
/// from NSS with the instance's group as the base (`initgroups(user,
/// group)`).
#[test]
fn the_account_gets_fds_0_to_2_and_one_set_of_groups() {
    let a = accounts();
    let (world, shim) = world("group = \"djshimt-extra\"\n");
    world.write("pkg/manage.py", ACCOUNT);
    let expected = Command::new(require("python3", "python3-minimal"))
        .args([
            "-c",
            &format!(
                "import os; print(','.join(str(g) for g in sorted(os.getgrouplist('djshimt-app', {}))))",
                a.extra_gid
            ),
        ])
        .output()
        .unwrap();
    let expected = format!("groups={} gid={}", text(&expected).0.trim(), a.extra_gid);
    // Without a terminal, root's caller holding fds 5 and 7 open.
    let key = world.write("key", "secret\n");
    let output = Command::new(require("bash", "bash"))
        .args([
            "-c",
            "exec 5<\"$1\" 7>>\"$1\"; exec \"$2\" fds </dev/null",
            "bash",
            key.as_str(),
            shim.as_str(),
        ])
        .env_clear()
        .env("PATH", CRON_PATH)
        .output()
        .unwrap();
    assert_status(&output, 0);
    let plain = text(&output).0;
    // The listing's own descriptor is the only one above 2.
    assert!(plain.contains("fds=0,1,2,3\n"), "{plain}");
    assert!(plain.contains(&expected), "want {expected}, got:\n{plain}");
    for mode in ["terminal", "detached-input"] {
        let screen = on_terminal(&world.path(""), mode, &shim, &["fds"]);
        assert!(screen.contains("fds=0,1,2,3"), "{mode}:\n{screen}");
        assert!(
            screen.contains(&expected),
            "{mode}: want {expected}, got:\n{screen}"
        );
    }
}
