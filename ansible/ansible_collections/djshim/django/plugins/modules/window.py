#!/usr/bin/python
# djshim.django.window: one host's deploy window, for a rollout across hosts.

DOCUMENTATION = r"""
module: window
short_description: Hold a djshim instance's deploy window open, or close it
description:
  - C(state=open) runs C(djshim window INSTANCE open) (the server restarted
    into its launcher's window, checked to hold; open already, its deadline
    renewed); C(state=closed) runs C(djshim window INSTANCE close).
  - Open it on every host before one host migrates the shared database; each
    host's deploy closes its own; close it on the hosts a failed rollout
    never switched.
  - C(changed) when the window opened or closed; check mode changes nothing.
options:
  instance:
    description: The instance.
    type: str
    required: true
  state:
    description: Whether the window is to be open.
    type: str
    choices: [open, closed]
    default: open
extends_documentation_fragment: djshim.django.common
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def is_open(status):
    until = status["window_until"]
    return until is not None and until > time.time()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type="str", required=True),
            state=dict(type="str", choices=["open", "closed"], default="open"),
            **djshim.COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    name, want_open = module.params["instance"], module.params["state"] == "open"
    now = djshim.status(module, [name])["instances"][name]
    changed = is_open(now) != want_open
    if module.check_mode:
        module.exit_json(changed=changed, djshim=now)
    if not changed and not want_open:
        module.exit_json(changed=False, djshim=now)
    action = "open" if want_open else "close"
    djshim.run_and_exit(module, name, ["window", name, action], lambda after: changed)

if __name__ == "__main__":
    main()
