#!/usr/bin/python
# djshim.django.unpack: `djshim unpack` of a release archive on the host.

DOCUMENTATION = r"""
module: unpack
short_description: Put a release archive on the host as a frozen release, checked against its hash
description:
  - Runs C(djshim unpack ARCHIVE --hash HASH [--into DIR]) on an archive that
    C(djshim pack) wrote on the build host (copy it to the host first). The
    release is extracted into a private directory, its content hash checked,
    and only then frozen and renamed into place.
  - C(changed) when the release was not on the host; one that is there with
    that hash is kept as it is. Check mode says whether it would be added.
options:
  archive:
    description: The archive on this host.
    type: path
    required: true
  hash:
    description: The content hash C(djshim pack) said on the build host (C(sha256:...)).
    type: str
    required: true
  into:
    description: Where the host's releases are (default C([build] releases_dir) of the config).
    type: path
extends_documentation_fragment: djshim.django.common
"""

EXAMPLES = r"""
- ansible.builtin.copy:
    src: "{{ archive }}"
    dest: /var/tmp/mywebsite-release.tar
- djshim.django.unpack:
    archive: /var/tmp/mywebsite-release.tar
    hash: "{{ packed.stdout_lines[-1] }}"
    into: /srv/mywebsite/releases
  register: release
- djshim.django.deploy:
    instance: prod
    path: "{{ release.path }}"
    hash: "{{ packed.stdout_lines[-1] }}"
"""

RETURN = r"""
path:
  description: The release on this host, for C(djshim.django.deploy)'s C(path).
  returned: unless check mode finds it missing
  type: str
"""

import os
import tarfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.djshim.django.plugins.module_utils import djshim


def release_name(module, archive):
    """The one directory the archive holds (djshim pack writes one)."""
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                return member.name.split("/")[0]
    except (OSError, tarfile.TarError) as e:
        module.fail_json(msg="%s: %s" % (archive, e))
    module.fail_json(msg="%s holds nothing" % archive)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            hash=dict(type="str", required=True),
            into=dict(type="path"),
            **djshim.COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    archive, into = module.params["archive"], module.params["into"]
    if module.check_mode and not os.path.exists(archive):
        # The archive's copy, in check mode, was not made either.
        module.exit_json(changed=True, path=None)
    name = release_name(module, archive)
    there = into is not None and os.path.isdir(os.path.join(into, name))
    if module.check_mode:
        path = os.path.join(into, name) if into else None
        module.exit_json(changed=not there, path=path if there else None)
    args = ["unpack", archive, "--hash", module.params["hash"]]
    if into:
        args += ["--into", into]
    rc, out, err = djshim.run(module, *args)
    if rc != 0:
        djshim.fail(module, rc, out, err)
    module.exit_json(changed=not there, path=out.strip().splitlines()[-1], stderr=err)


if __name__ == "__main__":
    main()
