# The one way the modules of djshim.django run djshim: its command line,
# its exit status read as djshim documents it (0 done, 1 failed before any
# change, 2 bad usage or config, 3 failed and undone, 4 failed and not
# undone), its JSON status.
import json

# The options every module takes (documented in doc_fragments/common.py).
COMMON_ARGS = dict(
    config=dict(type="path"),
    executable=dict(type="str", default="djshim"),
)

EXIT = {
    1: "failed before changing anything",
    2: "bad usage or an invalid config",
    3: "failed, and undone: the instance runs what it ran before",
    4: "failed, and not undone: djshim's journal says what is left",
}


def command(module, *args):
    """djshim's command line: the executable, the config, then ARGS."""
    argv = [module.params["executable"]]
    if module.params.get("config"):
        argv += ["--config", module.params["config"]]
    return argv + list(args)


def run(module, *args):
    """(rc, stdout, stderr) of djshim ARGS; never raises."""
    return module.run_command(command(module, *args))


def status(module, instances=()):
    """djshim status --json, parsed; fails the task when djshim does."""
    rc, out, err = run(module, "status", "--json", *instances)
    if rc != 0:
        module.fail_json(msg=message(out, err), rc=rc)
    return json.loads(out)


def message(out, err):
    """djshim's error (from its `djshim: error:` line on: the progress
    lines before it stay in `stderr`), else all it said."""
    text = err.strip() or out.strip()
    at = text.find("djshim: error:")
    return text[at:] if at >= 0 else text


def fail(module, rc, out, err, **extra):
    """Fails the task with djshim's own message and what its exit says."""
    said = message(out, err)
    module.fail_json(
        msg=said,
        rc=rc,
        outcome=EXIT.get(rc, "failed"),
        undone=True if rc == 3 else (False if rc == 4 else None),
        stdout=out,
        stderr=err,
        **extra
    )


def run_and_exit(module, name, args, changed):
    """Runs djshim ARGS for instance NAME, then ends the task with the
    instance's status after it: failed with djshim's message when djshim
    failed, else changed as CHANGED(after) says."""
    rc, out, err = run(module, *args)
    after = status(module, [name])["instances"][name]
    if rc != 0:
        fail(module, rc, out, err, djshim=after)
    module.exit_json(changed=changed(after), msg=out.strip(), stderr=err, djshim=after)


def moved(before):
    """Whether an instance runs another generation than BEFORE (a status)."""
    return lambda after: (after["generation"], after["package"]) != (
        before["generation"],
        before["package"],
    )
