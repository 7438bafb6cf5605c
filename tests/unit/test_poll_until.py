"""``netstack.netns.poll_until``: the one deadline-bounded poll of another process's
state (a port that listens, a control channel, a daemon's database)."""

from __future__ import annotations

import time

from netstack.netns import poll_until


def test_ready_after_some_looks() -> None:
    looks = []

    def ready() -> bool:
        looks.append(time.monotonic())
        return len(looks) == 3

    assert poll_until(ready, timeout=5.0, interval=0.001) == "ready"
    assert len(looks) == 3


def test_exited_before_ready() -> None:
    alive = iter([True, False])
    assert poll_until(lambda: False, 5.0, 0.001, lambda: next(alive)) == "exited"


def test_timeout_after_a_last_look() -> None:
    looks = 0

    def never() -> bool:
        nonlocal looks
        looks += 1
        return False

    t0 = time.monotonic()
    assert poll_until(never, timeout=0.05, interval=0.01) == "timeout"
    assert time.monotonic() - t0 >= 0.05 and looks >= 2
    # ready at the first look wins even with no time left
    assert poll_until(lambda: True, timeout=0.0, alive=lambda: False) == "ready"
