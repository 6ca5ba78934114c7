"""A long-running management command, as a site's `sendalerts` would be:
one round a second until it is stopped (SIGTERM, as systemd stops it)."""

import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Send the alerts that are due, one round a second, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0: never)")

    def handle(self, *args, rounds=0, **options):
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        done = 0
        while not stopped:
            done += 1
            self.stdout.write(f"round {done}: instance={settings.INSTANCE}")
            self.stdout.flush()
            if rounds and done >= rounds:
                break
            time.sleep(1)
