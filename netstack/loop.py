"""The one polling loop: a selector for readable descriptors plus a timer heap.

No threads, no asyncio, and no sleeping anywhere but inside ``selector.select`` with a
timeout computed from the earliest timer / deadline. One iteration (:meth:`Loop.run_once`):

1. wait in ``select`` until a reader is ready, the earliest timer or deadline source is
   due, or the caller's timeout expires;
2. call the callbacks of the ready readers;
3. call the timers that are due (each once, in time order);
4. ask every deadline source for ``next_deadline()`` and call ``on_deadline(now)`` on
   those that are due (sources are re-asked every iteration, so they never register
   their deadlines explicitly);
5. call the idle callbacks (e.g. to flush output produced by the batch).

Exceptions raised by callbacks propagate out of ``run_once`` (the loop stays usable).
Time is :func:`time.monotonic` unless a clock is injected (tests inject a fake clock
and a fake selector to run deterministically).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from typing import Protocol

from netstack.link.base import Link

Callback = Callable[[], None]


class LoopError(Exception):
    """The loop was misused (nothing to wait for, closed, bad descriptor...)."""


class LoopTimeout(TimeoutError):
    """:meth:`Loop.run_until` ran out of time; ``what`` names what was awaited."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"timed out after {timeout:g} s waiting for {what}")
        self.what = what
        self.timeout = timeout


class HasFileno(Protocol):
    """Anything with a ``fileno()``."""

    def fileno(self) -> int:
        """The descriptor."""
        ...


class DeadlineSource(Protocol):
    """An object the loop asks for its next deadline after every iteration."""

    def next_deadline(self) -> float | None:
        """Monotonic time at which ``on_deadline`` should be called, or None."""
        ...

    def on_deadline(self, now: float) -> None:
        """Act on time (calling it early is harmless)."""
        ...


class Timer:
    """A scheduled callback; :meth:`cancel` prevents it from running."""

    __slots__ = ("_loop", "callback", "cancelled", "when")

    def __init__(self, loop: Loop, when: float, callback: Callback) -> None:
        self._loop = loop
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run this timer (idempotent; harmless after it ran)."""
        if not self.cancelled:
            self.cancelled = True
            self._loop._timer_cancelled()

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<Timer at {self.when:.6f}{state} {self.callback!r}>"


def _fd_of(fd: int | HasFileno) -> int:
    n = fd if isinstance(fd, int) else fd.fileno()
    if n < 0:
        raise LoopError(f"invalid file descriptor {n}")
    return n


class _LinkSource:
    """Deadline source for a link: ``poll(now)`` then let the reader drain it."""

    __slots__ = ("fd", "link", "on_readable")

    def __init__(self, link: Link, on_readable: Callback) -> None:
        self.link = link
        self.on_readable = on_readable
        self.fd = link.fileno()

    def next_deadline(self) -> float | None:
        return self.link.next_deadline()

    def on_deadline(self, now: float) -> None:
        self.link.poll(now)
        self.on_readable()


class Loop:
    """Selector + timer heap + deadline sources + idle callbacks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 selector: selectors.BaseSelector | None = None) -> None:
        self._clock = clock
        self._sel = selector if selector is not None else selectors.DefaultSelector()
        self._readers: dict[int, Callback] = {}
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._sources: list[DeadlineSource] = []
        self._links: dict[int, _LinkSource] = {}
        self._idle: list[Callback] = []
        self._closed = False
        #: Iterations run so far.
        self.iterations = 0

    # -- time ------------------------------------------------------------------------

    def time(self) -> float:
        """Monotonic seconds (the loop's clock)."""
        return self._clock()

    # -- readers ---------------------------------------------------------------------

    def add_reader(self, fd: int | HasFileno, cb: Callback) -> None:
        """Call ``cb()`` whenever ``fd`` is readable (replaces an earlier callback)."""
        self._check_open()
        n = _fd_of(fd)
        if n in self._readers:
            self._sel.modify(n, selectors.EVENT_READ, n)
        else:
            try:
                self._sel.register(n, selectors.EVENT_READ, n)
            except (ValueError, OSError) as e:
                raise LoopError(f"cannot watch file descriptor {n}: {e}") from e
        self._readers[n] = cb

    def remove_reader(self, fd: int | HasFileno) -> bool:
        """Stop watching ``fd``; returns whether it was watched."""
        n = fd if isinstance(fd, int) else fd.fileno()
        if self._readers.pop(n, None) is None:
            return False
        self._sel.unregister(n)
        return True

    # -- timers ----------------------------------------------------------------------

    def call_at(self, when: float, cb: Callback) -> Timer:
        """Call ``cb()`` once when the clock reaches ``when`` (monotonic seconds)."""
        self._check_open()
        t = Timer(self, float(when), cb)
        heapq.heappush(self._heap, (t.when, next(self._seq), t))
        return t

    def call_later(self, delay: float, cb: Callback) -> Timer:
        """Call ``cb()`` once, ``delay`` seconds from now."""
        return self.call_at(self.time() + delay, cb)

    def _timer_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def timers_pending(self) -> int:
        """Number of scheduled, not cancelled timers."""
        return sum(1 for e in self._heap if not e[2].cancelled)

    # -- deadline sources, links, idle callbacks -------------------------------------

    def add_deadline_source(self, obj: DeadlineSource) -> None:
        """Ask ``obj.next_deadline()`` after every iteration; call ``on_deadline`` when due."""
        self._check_open()
        if not any(s is obj for s in self._sources):
            self._sources.append(obj)

    def remove_deadline_source(self, obj: DeadlineSource) -> bool:
        """Forget ``obj``; returns whether it was registered."""
        for i, s in enumerate(self._sources):
            if s is obj:
                del self._sources[i]
                return True
        return False

    def add_link(self, link: Link, on_readable: Callback) -> None:
        """Watch a link: ``on_readable()`` when its fd is readable, and after ``poll(now)``
        at the link's deadlines (delayed frames are released without the fd
        becoming readable). ``on_readable`` should ``recv()`` until None.
        """
        src = _LinkSource(link, on_readable)
        self.add_reader(src.fd, on_readable)
        self._links[id(link)] = src
        self.add_deadline_source(src)

    def remove_link(self, link: Link) -> bool:
        """Stop watching ``link``; returns whether it was watched."""
        src = self._links.pop(id(link), None)
        if src is None:
            return False
        self.remove_deadline_source(src)
        self.remove_reader(src.fd)
        return True

    def add_idle(self, cb: Callback) -> None:
        """Call ``cb()`` at the end of every iteration."""
        self._check_open()
        self._idle.append(cb)

    def remove_idle(self, cb: Callback) -> bool:
        """Remove an idle callback; returns whether it was registered."""
        try:
            self._idle.remove(cb)
        except ValueError:
            return False
        return True

    # -- running ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Earliest pending timer or deadline-source deadline, or None."""
        return self._next_deadline(None)

    def _next_deadline(self, timed: list[tuple[float, DeadlineSource]] | None
                       ) -> float | None:
        """:meth:`next_deadline`; with ``timed``, also collect there each source that
        has a deadline, with it (for :meth:`run_once` to look at after its wait)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled = max(0, self._cancelled - 1)
        best = heap[0][0] if heap else None
        for s in self._sources:
            d = s.next_deadline()
            if d is not None:
                if timed is not None:
                    timed.append((d, s))
                if best is None or d < best:
                    best = d
        return best

    def run_once(self, timeout: float | None = None) -> int:
        """One iteration; waits at most ``timeout`` seconds (None: until something is due).

        Returns the number of reader, timer and deadline callbacks run.
        """
        self._check_open()
        if timeout is not None and timeout < 0:
            timeout = 0.0
        timed: list[tuple[float, DeadlineSource]] = []
        deadline = self._next_deadline(timed)
        now = self._clock()
        wait: float | None = timeout
        if deadline is not None:
            until = max(0.0, deadline - now)
            wait = until if wait is None else min(wait, until)
        if wait is None and not self._readers:
            raise LoopError("run_once without timeout: no readers, timers or deadlines "
                            "to wait for")
        ran = 0
        for key, _ in self._sel.select(wait):
            cb = self._readers.get(key.data)
            if cb is not None:  # an earlier callback of this batch may have removed it
                cb()
                ran += 1
        now = self._clock()
        heap = self._heap
        if heap and heap[0][0] <= now:
            due: list[Timer] = []
            while heap and heap[0][0] <= now:
                t = heapq.heappop(heap)[2]
                if t.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                else:
                    due.append(t)
            for t in due:
                if not t.cancelled:
                    t.cancelled = True  # ran: a late cancel() is a no-op
                    t.callback()
                    ran += 1
        # Deadline sources whose deadline, as asked before the wait, has come: asked
        # again (a callback may have moved it) and run if it still has. A deadline
        # that a callback of this iteration brought forward is seen by the next
        # iteration, whose wait it makes 0: no source is asked twice in an iteration
        # where none was due (the common case of a busy loop).
        for d, s in timed:
            if d <= now and any(x is s for x in self._sources):  # (not removed meanwhile)
                again = s.next_deadline()
                if again is not None and again <= now:
                    s.on_deadline(now)
                    ran += 1
        for cb in list(self._idle):
            cb()
        self.iterations += 1
        return ran

    def run_until(self, predicate: Callable[[], bool], timeout: float,
                  what: str = "the condition") -> None:
        """Iterate until ``predicate()`` is true; raise :class:`LoopTimeout` naming
        ``what`` if it is still false after ``timeout`` seconds."""
        end = self._clock() + timeout
        while not predicate():
            remaining = end - self._clock()
            if remaining <= 0:
                raise LoopTimeout(what, timeout)
            self.run_once(remaining)

    def run_for(self, duration: float) -> None:
        """Iterate for ``duration`` seconds."""
        end = self._clock() + duration
        while (remaining := end - self._clock()) > 0:
            self.run_once(remaining)

    def _check_open(self) -> None:
        if self._closed:
            raise LoopError("the loop is closed")

    def close(self) -> None:
        """Close the selector; the loop cannot be used afterwards (idempotent)."""
        if not self._closed:
            self._closed = True
            self._sel.close()
            self._readers.clear()
            self._heap.clear()
            self._sources.clear()
            self._links.clear()
            self._idle.clear()

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
