"""``python -m bootinit``."""

from bootinit.cli import run

run()
