#!/usr/bin/python
# djshim.django.rollback: `djshim rollback` of one instance on the host.

DOCUMENTATION = r"""
module: rollback
short_description: Take a djshim instance back to an older generation
description:
  - Runs C(djshim rollback INSTANCE [--to N]), in which every generation after the
    target has its migrations reversed with its own code, newest first, then
    the switch, the steps, the restart and the health probe.
  - With C(to), idempotent (an instance on generation C(to) already is not
    changed); without it, each run goes one healthy generation further back.
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
extends_documentation_fragment: djshim.django.common
"""

EXAMPLES = r"""
- djshim.django.rollback:
    instance: prod
    to: "{{ before.ansible_facts.djshim.instances.prod.generation }}"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type="str", required=True),
            to=dict(type="int"),
            **djshim.COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    name, to = module.params["instance"], module.params["to"]
    now = djshim.status(module, [name])["instances"][name]
    if module.check_mode:
        moves = to is None or now["generation"] != to or now["unfinished"] is not None
        module.exit_json(changed=moves, djshim=now)
    args = ["rollback", name] + (["--to", str(to)] if to is not None else [])
    djshim.run_and_exit(module, name, args, djshim.moved(now))

if __name__ == "__main__":
    main()
