"""Deterministic tests of netstack.loop (fake clock + fake selector), plus a few real ones."""

from __future__ import annotations

import selectors
import time
from collections.abc import Mapping
from typing import Any

import pytest

from netstack.link.fault import FaultLink
from netstack.link.wire import WirePair
from netstack.loop import Loop, LoopError, LoopTimeout


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeSelector(selectors.BaseSelector):
    """Ready set controlled by the test; select() 'waits' by advancing the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.keys: dict[int, selectors.SelectorKey] = {}
        self.ready: set[int] = set()
        self.timeouts: list[float | None] = []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd in self.keys:
            raise KeyError(fd)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self.keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        self.ready.discard(fd)
        return self.keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        ready = [(self.keys[fd], selectors.EVENT_READ) for fd in sorted(self.ready)
                 if fd in self.keys]
        if not ready:
            assert timeout is not None, "fake select would block forever"
            self.clock.t += timeout
        return ready

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self.keys


@pytest.fixture
def fake() -> tuple[Loop, FakeClock, FakeSelector]:
    clock = FakeClock()
    sel = FakeSelector(clock)
    return Loop(clock=clock, selector=sel), clock, sel


def test_time_is_the_clock(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, clock, _ = fake
    assert loop.time() == 100.0
    clock.t = 123.5
    assert loop.time() == 123.5
    assert Loop().time() == pytest.approx(time.monotonic(), abs=0.5)


def test_timers_fire_in_time_order_and_wait_is_computed(
        fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, clock, sel = fake
    fired: list[tuple[str, float]] = []
    loop.call_later(0.3, lambda: fired.append(("c", clock.t)))
    loop.call_at(100.1, lambda: fired.append(("a", clock.t)))
    loop.call_later(0.2, lambda: fired.append(("b", clock.t)))
    assert loop.timers_pending() == 3
    assert loop.run_once() == 1
    assert sel.timeouts[-1] == pytest.approx(0.1)
    expected: list[tuple[str, object]] = [("a", pytest.approx(100.1))]
    assert fired == expected
    loop.run_once(timeout=0.05)  # caller timeout shorter than the next timer
    assert sel.timeouts[-1] == pytest.approx(0.05)
    assert len(fired) == 1
    loop.run_once()
    loop.run_once()
    assert [f[0] for f in fired] == ["a", "b", "c"]
    assert fired[2][1] == pytest.approx(100.3)
    assert loop.timers_pending() == 0


def test_same_deadline_timers_run_in_scheduling_order(
        fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake
    order: list[int] = []
    for i in range(5):
        loop.call_at(101.0, lambda i=i: order.append(i))  # type: ignore[misc]
    assert loop.run_once() == 5
    assert order == [0, 1, 2, 3, 4]


def test_cancel(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, sel = fake
    fired: list[str] = []
    t1 = loop.call_later(0.1, lambda: fired.append("t1"))
    loop.call_later(0.2, lambda: fired.append("t2"))
    t1.cancel()
    t1.cancel()  # idempotent
    assert loop.timers_pending() == 1
    assert loop.next_deadline() == pytest.approx(100.2)  # cancelled head skipped
    loop.run_once()
    assert sel.timeouts[-1] == pytest.approx(0.2)
    assert fired == ["t2"]


def test_cancel_from_an_earlier_due_timer(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake
    fired: list[str] = []
    t2 = loop.call_at(100.5, lambda: fired.append("t2"))
    loop.call_at(100.4, lambda: t2.cancel())
    loop.run_once(timeout=1.0)
    assert fired == []


def test_many_cancels_compact_the_heap(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake
    timers = [loop.call_later(1 + i, lambda: None) for i in range(200)]
    for t in timers[:150]:
        t.cancel()
    assert len(loop._heap) < 200  # compacted
    assert loop.timers_pending() == 50


def test_timer_added_by_a_timer_runs_next_iteration(
        fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, sel = fake
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        loop.call_later(0, lambda: fired.append("second"))

    loop.call_later(0.1, first)
    loop.run_once()
    assert fired == ["first"]
    loop.run_once()
    assert fired == ["first", "second"]
    assert sel.timeouts[-1] == 0.0


def test_readers_and_removal_during_a_batch(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, sel = fake
    calls: list[int] = []

    def on3() -> None:
        calls.append(3)
        loop.remove_reader(4)

    loop.add_reader(3, on3)
    loop.add_reader(4, lambda: calls.append(4))
    sel.ready = {3, 4}
    assert loop.run_once(timeout=0) == 1
    assert calls == [3]
    assert loop.remove_reader(4) is False
    loop.add_reader(3, lambda: calls.append(33))  # replaces the callback
    assert len(sel.keys) == 1
    sel.ready = {3}
    loop.run_once(timeout=0)
    assert calls == [3, 33]
    assert loop.remove_reader(3) is True


def test_add_reader_rejects_bad_fd() -> None:
    with Loop() as loop, pytest.raises(LoopError, match="-1"):
        loop.add_reader(-1, lambda: None)


class Source:
    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.calls: list[float] = []
        self.asked = 0

    def next_deadline(self) -> float | None:
        self.asked += 1
        return self.deadline

    def on_deadline(self, now: float) -> None:
        self.calls.append(now)
        self.deadline = None


def test_deadline_sources(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, sel = fake
    s = Source(100.25)
    loop.add_deadline_source(s)
    loop.add_deadline_source(s)  # once only
    loop.run_once(timeout=0.1)
    assert s.calls == []
    loop.run_once()
    assert sel.timeouts[-1] == pytest.approx(0.15)
    assert s.calls == [pytest.approx(100.25)]
    asked = s.asked
    loop.run_once(timeout=1)
    assert s.asked > asked  # re-asked every iteration
    s.deadline = 105.0
    assert loop.next_deadline() == 105.0
    assert loop.remove_deadline_source(s) is True
    assert loop.remove_deadline_source(s) is False
    assert loop.next_deadline() is None


def test_deadline_sources_asked_once_unless_due(
        fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    """A source is asked once per iteration when its deadline has not come (a busy loop
    pays for no second pass); a deadline that has come is asked again after the wait
    and not run when a callback moved it meanwhile; one that a reader callback brought
    forward runs in the next iteration, which does not wait."""
    loop, clock, sel = fake
    s = Source(200.0)
    loop.add_deadline_source(s)
    loop.add_reader(5, lambda: None)
    sel.ready = {5}
    loop.run_once(timeout=1)
    assert s.asked == 1 and s.calls == []
    # due before the wait, moved by a reader: asked again, not run
    s.deadline = 100.0

    def move() -> None:
        s.deadline = 300.0

    loop.remove_reader(5)
    loop.add_reader(5, move)
    sel.ready = {5}
    loop.run_once(timeout=1)
    assert s.asked == 3 and s.calls == []
    # brought forward by a reader: run by the next iteration, without waiting

    def forward() -> None:
        s.deadline = clock.t

    loop.remove_reader(5)
    loop.add_reader(5, forward)
    sel.ready = {5}
    loop.run_once(timeout=1)
    assert s.calls == []
    loop.remove_reader(5)
    sel.ready = set()
    loop.run_once(timeout=1)
    assert sel.timeouts[-1] == 0 and s.calls == [pytest.approx(100.0)]


def test_idle_runs_at_end_of_every_iteration(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, sel = fake
    order: list[str] = []
    loop.add_reader(5, lambda: order.append("reader"))
    loop.call_later(0, lambda: order.append("timer"))
    src = Source(0.0)
    src.on_deadline = lambda now: order.append("deadline")  # type: ignore[method-assign]
    loop.add_deadline_source(src)

    def idle() -> None:
        order.append("idle")

    loop.add_idle(idle)
    sel.ready = {5}
    loop.run_once(timeout=0)
    assert order == ["reader", "timer", "deadline", "idle"]
    loop.remove_deadline_source(src)
    sel.ready = set()
    loop.run_once(timeout=0)
    assert order[-1] == "idle" and order.count("idle") == 2
    assert loop.remove_idle(idle) is True
    assert loop.remove_idle(idle) is False
    loop.run_once(timeout=0)
    assert order.count("idle") == 2


def test_run_until(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, clock, _ = fake
    box: list[int] = []
    loop.call_later(0.5, lambda: box.append(1))
    loop.run_until(lambda: bool(box), timeout=1.0, what="the box")
    assert clock.t == pytest.approx(100.5)
    with pytest.raises(LoopTimeout, match="timed out after 2 s waiting for the iSCSI login") as ei:
        loop.run_until(lambda: False, timeout=2.0, what="the iSCSI login")
    assert isinstance(ei.value, TimeoutError)
    assert ei.value.what == "the iSCSI login"
    assert clock.t == pytest.approx(102.5)
    loop.run_until(lambda: True, timeout=0)  # already true: no iteration needed


def test_run_for(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, clock, _ = fake
    n: list[int] = []
    for i in range(4):
        loop.call_later(0.25 * i, lambda: n.append(1))
    loop.run_for(1.0)
    assert clock.t == pytest.approx(101.0)
    assert len(n) == 4


def test_nothing_to_wait_for_is_an_error(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake
    with pytest.raises(LoopError, match="no readers, timers or deadlines"):
        loop.run_once()


def test_callback_errors_propagate_and_loop_stays_usable(
        fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake

    def boom() -> None:
        raise RuntimeError("boom")

    fired: list[int] = []
    loop.call_later(0.1, boom)
    with pytest.raises(RuntimeError, match="boom"):
        loop.run_once()
    loop.call_later(0.1, lambda: fired.append(1))
    loop.run_once()
    assert fired == [1]


def test_closed_loop_refuses(fake: tuple[Loop, FakeClock, FakeSelector]) -> None:
    loop, _, _ = fake
    loop.close()
    loop.close()
    with pytest.raises(LoopError, match="closed"):
        loop.call_later(1, lambda: None)
    with pytest.raises(LoopError, match="closed"):
        loop.run_once(0)


# --- with a real selector --------------------------------------------------------------


def test_real_timer_waits_in_select() -> None:
    with Loop() as loop:
        fired: list[float] = []
        start = time.monotonic()
        loop.call_later(0.05, lambda: fired.append(time.monotonic()))
        loop.run_until(lambda: bool(fired), timeout=2.0, what="timer")
        assert fired[0] - start >= 0.049
        assert loop.iterations <= 3  # slept in select, did not spin


def test_real_wire_frames_through_the_loop() -> None:
    with Loop() as loop, WirePair() as w:
        got: list[bytes] = []

        def drain() -> None:
            while (f := w.b.recv()) is not None:
                got.append(f)

        loop.add_link(w.b, drain)
        frames = [bytes([i]) * 60 for i in range(10)]
        for f in frames:
            w.a.send(f)
        loop.run_until(lambda: len(got) == 10, timeout=2.0, what="10 frames")
        assert got == frames
        assert loop.remove_link(w.b) is True
        assert loop.remove_link(w.b) is False


def test_real_fault_delay_released_by_deadline() -> None:
    """Delayed rx frames do not make the fd readable: add_link polls at the deadline."""
    with Loop() as loop, WirePair() as w:
        fl = FaultLink(w.b, delay_ms=30, clock=loop.time)
        got: list[tuple[float, bytes]] = []

        def drain() -> None:
            while (f := fl.recv()) is not None:
                got.append((loop.time(), f))

        loop.add_link(fl, drain)
        t0 = loop.time()
        w.a.send(b"\x01" * 60)
        loop.run_until(lambda: bool(got), timeout=2.0, what="the delayed frame")
        assert got[0][1] == b"\x01" * 60
        assert got[0][0] - t0 >= 0.029
        assert fl.fault_counters()["rx_delayed"] == 1


def test_bounded_reader_on_a_fault_link_is_called_again() -> None:
    """A reader that takes one frame per call still gets every released frame."""
    with Loop() as loop, WirePair() as w:
        fl = FaultLink(w.b, delay_ms=5, clock=loop.time)
        got: list[bytes] = []

        def one() -> None:
            f = fl.recv()
            if f is not None:
                got.append(f)

        loop.add_link(fl, one)
        for i in range(5):
            w.a.send(bytes([i]) * 60)
        loop.run_until(lambda: len(got) == 5, timeout=2.0, what="5 frames, one per call")
        assert got == [bytes([i]) * 60 for i in range(5)]
