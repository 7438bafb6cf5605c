"""An in-memory Ethernet wire: two :class:`WireEnd` links, for tests.

Frames sent on one end are queued (bounded) for the other end. Each end owns a
non-blocking pipe whose read side is its ``fileno()``: a byte is written to it when
its queue goes from empty to non-empty and drained when the queue empties, so a
selector sees the end readable exactly while frames are waiting (level-triggered,
like a TAP). Datagram sockets are avoided on purpose: their queue length is a
system setting, here the capacity is a parameter and overflow is counted.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque

from netstack.link.base import BytesLike, LinkError

ETH_HLEN = 14


class WireEnd:
    """One end of a :class:`WirePair`. Made by :func:`wire_pair`, not directly."""

    def __init__(self, name: str, mtu: int, capacity: int) -> None:
        self.name = name
        self.mtu = mtu
        self.capacity = capacity
        self.peer: WireEnd | None = None
        self._queue: deque[bytes] = deque()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        self._c: dict[str, int] = {
            "rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0,
            "tx_drop_full": 0, "tx_drop_peer_closed": 0,
        }

    def fileno(self) -> int:
        """Readable while frames are queued for this end."""
        if self._closed:
            raise LinkError(f"wire end {self.name}: closed")
        return self._rfd

    def _deliver(self, frame: bytes) -> bool:
        """Queue a frame arriving from the peer; False if the queue is full."""
        if len(self._queue) >= self.capacity:
            return False
        if not self._queue:
            os.write(self._wfd, b"\x01")
        self._queue.append(frame)
        return True

    def send(self, frame: BytesLike) -> None:
        """Queue ``frame`` for the peer (a full queue or a closed peer drops and counts)."""
        if self._closed:
            raise LinkError(f"wire end {self.name}: send on a closed end")
        n = len(frame)
        if not ETH_HLEN <= n <= self.mtu + ETH_HLEN:
            raise LinkError(f"wire end {self.name}: frame of {n} bytes outside "
                            f"{ETH_HLEN}..{self.mtu + ETH_HLEN} (MTU {self.mtu})")
        peer = self.peer
        c = self._c
        if peer is None or peer._closed:
            c["tx_drop_peer_closed"] += 1
            return
        if not peer._deliver(bytes(frame)):
            c["tx_drop_full"] += 1
            return
        c["tx_frames"] += 1
        c["tx_bytes"] += n

    def recv(self) -> bytes | None:
        """The next queued frame, or None."""
        q = self._queue
        if not q:
            return None
        frame = q.popleft()
        if not q:
            with contextlib.suppress(BlockingIOError):
                os.read(self._rfd, 4096)
        c = self._c
        c["rx_frames"] += 1
        c["rx_bytes"] += len(frame)
        return frame

    def pending(self) -> int:
        """Number of frames waiting to be received on this end."""
        return len(self._queue)

    def next_deadline(self) -> float | None:
        """A wire has no timers."""
        return None

    def poll(self, now: float) -> None:
        """Nothing to do on time."""

    def counters(self) -> dict[str, int]:
        """rx/tx frames and bytes, drops by reason."""
        return dict(self._c)

    def close(self) -> None:
        """Close the pipe and drop queued frames (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"WireEnd({self.name!r}, mtu={self.mtu}, pending={len(self._queue)})"


class WirePair:
    """Two connected :class:`WireEnd` links ``a`` and ``b``; a context manager."""

    def __init__(self, mtu: int = 1500, capacity: int = 4096) -> None:
        if not 68 <= mtu <= 65520:
            raise LinkError(f"wire MTU {mtu}: must be in 68..65520")
        if capacity < 1:
            raise LinkError(f"wire capacity {capacity}: must be at least 1")
        self.a = WireEnd("a", mtu, capacity)
        self.b = WireEnd("b", mtu, capacity)
        self.a.peer, self.b.peer = self.b, self.a

    def close(self) -> None:
        """Close both ends."""
        self.a.close()
        self.b.close()

    def __enter__(self) -> WirePair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wire_pair(mtu: int = 1500, capacity: int = 4096) -> tuple[WireEnd, WireEnd]:
    """Two connected wire ends (close each when done)."""
    p = WirePair(mtu, capacity)
    return p.a, p.b
