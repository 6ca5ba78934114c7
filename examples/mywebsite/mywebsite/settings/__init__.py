"""Settings of mywebsite: `base` plus one module per instance.

Everything that differs between machines comes from the environment that the
djshim shim (or the systemd unit) sets: paths, the database, secrets.
"""
