"""``netstack.netns.poll_until``: the one deadline-bounded poll of another process's
state (a port that listens, a control channel, a daemon's database)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from netstack.netns import poll_until, wait_exit


@pytest.fixture
def running() -> Iterator[int]:
    """The PID of a child that keeps running (the process a wait is on)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_ready_after_some_looks(running: int) -> None:
    looks = []

    def ready() -> bool:
        looks.append(time.monotonic())
        return len(looks) == 3

    assert poll_until(ready, running, timeout=5.0, interval=0.001) == "ready"
    assert len(looks) == 3


def test_exited_before_ready() -> None:
    """The process expected to make it ready exits: "exited", as soon as it has (the
    wait between looks is on its exit, not a sleep of the interval)."""
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        t0 = time.monotonic()
        assert poll_until(lambda: False, child.pid, 30.0, 10.0) == "exited"
        assert time.monotonic() - t0 < 9.0  # well before one interval: woken by the exit
    finally:
        child.kill()
        child.wait()


def test_wait_exit() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not wait_exit(child.pid, 0.05)  # running: the timeout
        child.kill()
        assert wait_exit(child.pid, 10.0)  # exited, not yet reaped: counts
    finally:
        child.kill()
        child.wait()
    assert wait_exit(child.pid, 0.0)  # reaped: gone (ESRCH), True at once


def test_timeout_after_a_last_look(running: int) -> None:
    looks = 0

    def never() -> bool:
        nonlocal looks
        looks += 1
        return False

    t0 = time.monotonic()
    assert poll_until(never, running, timeout=0.05, interval=0.01) == "timeout"
    assert time.monotonic() - t0 >= 0.05 and looks >= 2
    # ready at the first look wins even with no time left
    done = subprocess.Popen(["true"])
    done.wait()
    assert poll_until(lambda: True, done.pid, timeout=0.0) == "ready"
    # a process that exited before the first wait: exited, not a timeout
    zombie = subprocess.Popen(["true"])
    try:
        assert wait_exit(zombie.pid, 10.0)
        assert poll_until(lambda: False, zombie.pid, timeout=0.01,
                          interval=0.001) == "exited"
    finally:
        zombie.wait()
