# The deploy window of a server (`[deploy] window`), run by the server's
# launcher while the window file exists: ARGV flag mode launcher-pid. Ends
# when the file is gone, its deadline (the file's content, seconds since the
# epoch) has passed, or the launcher has ended (a stop of the unit sends
# SIGTERM to the launcher alone: KillMode=mixed); the launcher then starts the server of the new generation on the
# same socket. `stop`: requests wait in the socket's queue. `503`: each gets
# 503 Service Unavailable with Retry-After, from the socket systemd passed
# (fd 3), which is left as it was found (blocking).
import os
import select
import signal
import socket
import sys
import threading
import time

flag, mode, launcher = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with open(flag) as f:
        deadline = float(f.read())
except (OSError, ValueError):
    sys.exit(0)


# SIGTERM (the unit stopped or restarted right after the window closed)
# ends the window the same way: answers in flight finish first, so no
# client sees its connection reset.
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())


def is_open():
    return (
        not stopping.is_set()
        and os.getppid() == launcher
        and os.path.exists(flag)
        and time.time() < deadline
    )


# The end skips the interpreter's finalization (os._exit): a stop of the
# unit must not wait on it (with threads still answering, it can hang
# until systemd's stop timeout kills it).
if mode == "stop":
    while is_open():
        time.sleep(0.2)
    os._exit(0)

listener = socket.socket(fileno=os.dup(3))
body = b"deploying: try again in a few seconds\n"
answer = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(body), body)
)


def answer_one(client):
    try:
        client.settimeout(2)
        client.recv(65536)
        client.sendall(answer)
    except OSError:
        pass
    finally:
        client.close()


# Each connection in a thread of its own: a client that sends nothing for
# its 2 s holds no other. Those still answering when the window closes
# finish first (an exit would reset them).
answering = []
while is_open():
    if not select.select([listener], [], [], 0.2)[0]:
        continue
    try:
        client, _ = listener.accept()
    except OSError:
        continue
    thread = threading.Thread(target=answer_one, args=(client,), daemon=True)
    thread.start()
    answering = [t for t in answering if t.is_alive()] + [thread]
for thread in answering:
    thread.join(3)
os._exit(0)
