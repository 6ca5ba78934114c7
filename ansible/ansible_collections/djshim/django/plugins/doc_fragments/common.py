# The options every module of djshim.django takes: which djshim, which config.


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  config:
    description: The djshim.toml to read (djshim's C(--config)).
    type: path
  executable:
    description: The djshim binary.
    type: str
    default: djshim
"""
