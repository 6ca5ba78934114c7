#!/usr/bin/python
# djshim.django.rollback: `djshim rollback` of one instance on the host.

DOCUMENTATION = r"""
module: rollback
short_description: Take a djshim instance back to an older generation
description:
  - Runs C(djshim rollback INSTANCE [--to N | --to-package PATH]), in which every generation after the
    target has its migrations reversed with its own code, newest first, then
    the switch, the steps, the restart and the health probe.
  - With C(to) or C(package), idempotent (an instance that runs it already
    is not changed); without either, each run goes one healthy generation
    further back. A run that first finishes or undoes an interrupted run
    (a killed deploy) goes on to C(to) or C(package) afterwards.
  - C(changed) when the instance runs another generation afterwards; check
    mode changes nothing. A failure carries djshim's message, its exit status
    and C(undone).
options:
  instance:
    description: The instance to roll back.
    type: str
    required: true
  to:
    description: The generation to go back to (C(djshim history)).
    type: int
  package:
    description:
      - The package to go back to (the newest generation that runs it), for
        a release that has another generation number on each host of a
        fleet.
    type: path
  skip_shared:
    description:
      - Leave the config's C([deploy] shared) commands (C(migrate), by
        default) to the rollout's first host, whose own rollback takes the
        database back (C(djshim rollback --skip-shared)).
    type: bool
    default: false
extends_documentation_fragment: djshim.django.common
"""

EXAMPLES = r"""
- djshim.django.rollback:
    instance: prod
    to: "{{ before.ansible_facts.djshim.instances.prod.generation }}"
- djshim.django.rollback:
    instance: prod
    package: "{{ before.ansible_facts.djshim.instances.prod.package }}"
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type="str", required=True),
            to=dict(type="int"),
            package=dict(type="path"),
            skip_shared=dict(type="bool", default=False),
            **djshim.COMMON_ARGS
        ),
        mutually_exclusive=[("to", "package")],
        supports_check_mode=True,
    )
    name, to, package = module.params["instance"], module.params["to"], module.params["package"]
    now = djshim.status(module, [name])["instances"][name]

    def there(status):
        if status["unfinished"] is not None:
            return False
        if to is not None:
            return status["generation"] == to
        if package is not None:
            return status["package"] == os.path.realpath(package)
        return False

    if module.check_mode:
        module.exit_json(changed=not there(now), djshim=now)
    args = ["rollback", name]
    if to is not None:
        args += ["--to", str(to)]
    elif package is not None:
        args += ["--to-package", package]
    if module.params["skip_shared"]:
        args.append("--skip-shared")
    if now["unfinished"] is not None and (to is not None or package is not None):
        # A rollback that finds an interrupted run finishes or undoes it,
        # and that is all it does: then it goes on to the target.
        rc, out, err = djshim.run(module, *args)
        if rc != 0:
            djshim.fail(module, rc, out, err, djshim=djshim.status(module, [name])["instances"][name])
    djshim.run_and_exit(module, name, args, djshim.moved(now))


if __name__ == "__main__":
    main()
