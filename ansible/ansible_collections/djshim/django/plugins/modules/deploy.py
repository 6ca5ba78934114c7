#!/usr/bin/python
# djshim.django.deploy: `djshim deploy` of one instance on the host.

DOCUMENTATION = r"""
module: deploy
short_description: Move a djshim instance to a new package, or leave it
description:
  - Runs C(djshim deploy INSTANCE) with C(path), C(from) or C(ref), the
    candidate checked as the instance's account, its migrations recorded,
    the switch, the deploy steps, the restart, the health probe, and an undo
    of all of it when a step fails.
  - C(changed) only when the instance runs another generation afterwards; a
    second run with the same package changes nothing and says so.
  - Check mode changes nothing and says whether a deploy would move the
    instance (for C(path) and C(from), by comparing packages; for C(ref),
    which needs a build to know, it says it would).
  - A failure carries djshim's message, its exit status, and C(undone)
    (true, the instance runs what it ran before; false, djshim's journal says
    what is left, and the next deploy or rollback goes on from there).
options:
  instance:
    description: The instance to deploy.
    type: str
    required: true
  path:
    description: A package on this host (a store path C(nix copy) brought, a release directory).
    type: path
  from:
    description: Promote exactly the package that this other instance runs.
    type: str
    aliases: [from_instance]
  ref:
    description: Build this ref of C([build]) here and deploy it.
    type: str
  allow_irreversible:
    description: Deploy even when a new migration cannot be reversed.
    type: bool
    default: false
  hash:
    description:
      - The content hash the package must have (C(sha256:...), as
        C(djshim status) and a prepare report it), the bytes that were built.
    type: str
  skip_shared:
    description:
      - Leave the config's C([deploy] shared) commands (C(migrate), by
        default) to another host of the rollout, which deploys first and
        migrates the database the hosts share (C(djshim deploy
        --skip-shared)); refused while the database lacks the candidate's
        migrations.
    type: bool
    default: false
  prepare:
    description:
      - Only ask what a deploy asks (the candidate, its hash, the deep check,
        the migrations, the refusals) and change nothing; the findings are
        returned as C(prepared). The first part of a rollout, on every host.
    type: bool
    default: false
extends_documentation_fragment: djshim.django.common
"""

EXAMPLES = r"""
- djshim.django.deploy:
    instance: prod
    path: "{{ release }}"
    config: /etc/mywebsite/djshim.toml
"""

RETURN = r"""
djshim:
  description: The instance's status after the run (see djshim.django.status).
  returned: unless prepare
  type: dict
prepared:
  description: What C(djshim deploy --prepare --json) found.
  returned: with prepare
  type: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance=dict(type="str", required=True),
            path=dict(type="path"),
            ref=dict(type="str"),
            allow_irreversible=dict(type="bool", default=False),
            hash=dict(type="str"),
            skip_shared=dict(type="bool", default=False),
            prepare=dict(type="bool", default=False),
            **dict(djshim.COMMON_ARGS, **{"from": dict(type="str", aliases=["from_instance"])})
        ),
        mutually_exclusive=[("path", "from", "ref")],
        supports_check_mode=True,
    )
    name = module.params["instance"]
    other = module.params["from"]
    args = ["deploy", name]
    if module.params["path"]:
        args += ["--path", module.params["path"]]
    elif other:
        args += ["--from", other]
    elif module.params["ref"]:
        args += ["--ref", module.params["ref"]]
    if module.params["allow_irreversible"]:
        args.append("--allow-irreversible")
    if module.params["hash"]:
        args += ["--hash", module.params["hash"]]
    if module.params["prepare"]:
        rc, out, err = djshim.run(module, *(args + ["--prepare", "--json"]))
        if rc != 0:
            djshim.fail(module, rc, out, err)
        module.exit_json(changed=False, prepared=json.loads(out), stderr=err)
    if module.params["skip_shared"]:
        args.append("--skip-shared")
    before = djshim.status(module, [name] + ([other] if other else []))
    now = before["instances"][name]
    if module.check_mode:
        if module.params["path"]:
            path = module.params["path"]
            if not os.path.exists(path):
                module.fail_json(msg="%s is not on this host" % path)
            wanted = os.path.realpath(path)
        elif other:
            wanted = before["instances"][other]["package"]
        else:
            module.exit_json(
                changed=True,
                msg="would build %s and deploy it (check mode cannot know "
                "whether the build is new without building)"
                % (module.params["ref"] or "[build]'s ref"),
                djshim=now,
            )
        moves = wanted != now["package"] or now["unfinished"] is not None
        module.exit_json(
            changed=moves,
            msg=("would deploy %s" % wanted) if moves else "%s runs %s already" % (name, wanted),
            djshim=now,
        )
    djshim.run_and_exit(module, name, args, djshim.moved(now))

if __name__ == "__main__":
    main()
