"""How often does a stop soon after a start make gunicorn wait its graceful
timeout? (issue 21: the window's restarts held requests 30 s on a loaded
machine.) Starts gunicorn (`--workers 2`) with a trivial app, sends SIGTERM
0.15-0.6 s later to its whole process group (systemd's
KillMode=control-group) or, with `--master`, to the master alone
(KillMode=mixed), and counts the stops that take over 5 s.

    python3 tests/diagnostics/gunicorn_stop_race.py [--master] [TRIALS]

Run it with the test venv's Python (target/tmp/venv/bin/python3), on a
loaded machine (a `cargo build --release` beside it). Not part of the
suite: a rate, which belongs to no test.

What it found, with the server's journal of a failing window test: under
KillMode=control-group every worker gets systemd's SIGTERM and then the
master's, dies of the second while exiting, and the master's SIGCHLD
handler logs "Worker (pid:N) was sent SIGTERM!"; one handler nested in
another's write to stderr fails ("RuntimeError: reentrant call"), the
master never forgets the worker it reaped, and waits its graceful timeout.
The server unit now has KillMode=mixed (gunicorn's own unit does too), and
the window test asserts that no worker dies of a signal.
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

APP = 'def app(environ, start_response):\n    start_response("200 OK", [])\n    return [b"ok"]\n'


def main():
    master = "--master" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--master"]
    trials = int(args[0]) if args else 60
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(APP)
    slow = 0
    for trial in range(trials):
        port = 18100 + trial % 50
        p = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "app:app", "--workers", "2", "-b", f"127.0.0.1:{port}"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        time.sleep(random.uniform(0.15, 0.6))
        if master:
            os.kill(p.pid, signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGTERM)
        start = time.time()
        try:
            p.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        took = time.time() - start
        if took > 5:
            slow += 1
            print(f"trial {trial}: the stop took {took:.1f} s", flush=True)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(f"{slow} of {trials} stops took over 5 s")


if __name__ == "__main__":
    main()
