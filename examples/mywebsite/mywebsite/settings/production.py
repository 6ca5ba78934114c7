"""The production instance."""
from .base import *  # noqa: F403

INSTANCE = "prod"
