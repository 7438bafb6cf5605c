"""bootinit.targets.wait_pid_gone: waits on the process's exit (a pidfd), bounded."""

from __future__ import annotations

import subprocess
import sys
import time

from bootinit.targets import pid_alive, wait_pid_gone


def test_child_exit_is_seen_and_reaped() -> None:
    """A child that exits within the timeout: True, reaped (returncode set), and the
    wait ends with the exit, not at the timeout."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    t0 = time.monotonic()
    assert wait_pid_gone(proc.pid, 20.0, proc) is True
    assert time.monotonic() - t0 < 10.0
    assert proc.returncode == 0
    assert wait_pid_gone(proc.pid, 0, proc) is True  # already gone: at once


def test_timeout_and_a_pid_that_is_gone() -> None:
    """A process that outlives the timeout: False after about the timeout; once it is
    killed and reaped, its PID (no process any more) is gone at once."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        t0 = time.monotonic()
        assert wait_pid_gone(proc.pid, 0.2, proc) is False
        assert 0.15 <= time.monotonic() - t0 < 10.0
        assert wait_pid_gone(proc.pid, 0) is False  # not a child's view: still there
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert wait_pid_gone(proc.pid, 5.0) is True
