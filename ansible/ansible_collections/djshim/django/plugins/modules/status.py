#!/usr/bin/python
# djshim.django.status: `djshim status --json` as facts.

DOCUMENTATION = r"""
module: status
short_description: What each djshim instance on the host runs
description:
  - Runs C(djshim status --json) and returns it as the fact C(djshim),
    per instance the generation its profile runs, the package, its commit and
    content hash (equal on two hosts when they run the same bytes), whether
    that generation's deploy ended healthy, a run that did not end, and
    systemd's state of each of its units.
  - Changes nothing; supports check mode.
options:
  instances:
    description: The instances to report; all when empty.
    type: list
    elements: str
    default: []
extends_documentation_fragment: djshim.django.common
"""

EXAMPLES = r"""
- djshim.django.status:
    config: /etc/mywebsite/djshim.toml
- ansible.builtin.assert:
    that: ansible_facts.djshim.instances.prod.healthy
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="str", default=[]),
            **djshim.COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    facts = djshim.status(module, module.params["instances"])
    module.exit_json(changed=False, ansible_facts={"djshim": facts})


if __name__ == "__main__":
    main()
