"""A client loop for the tests under a real systemd: GET http://127.0.0.1:PORT/PATH
(PATH default /) over and over until the file STOP exists (or SECONDS pass),
then print a JSON summary: how many requests, how many failed and why (a 503
with its Retry-After), each answer body in the order they changed, and the
slowest request."""
import http.client
import json
import os
import sys
import time

port, stop, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
path = sys.argv[4] if len(sys.argv) > 4 else "/"
ok = fail = 0
errors = {}
bodies = []
slowest = 0.0
start = time.monotonic()
while not os.path.exists(stop) and time.monotonic() - start < seconds:
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", path, headers={"Host": "localhost"})
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        if r.status == 503:
            raise RuntimeError("HTTP 503 Retry-After %s" % r.getheader("Retry-After"))
        if r.status != 200:
            raise RuntimeError("HTTP %d" % r.status)
        ok += 1
        if not bodies or bodies[-1] != body:
            bodies.append(body)
    except Exception as e:  # noqa: BLE001 - every failure is counted, by kind
        fail += 1
        kind = str(e) if isinstance(e, RuntimeError) else type(e).__name__
        errors[kind] = errors.get(kind, 0) + 1
    slowest = max(slowest, time.monotonic() - t0)
    time.sleep(0.01)
print(json.dumps({"requests": ok + fail, "failures": fail, "errors": errors,
                  "bodies": bodies, "slowest": round(slowest, 3)}))
