"""The staging instance."""
from .base import *  # noqa: F403

INSTANCE = "staging"
DEBUG = True
