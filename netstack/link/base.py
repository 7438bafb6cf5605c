"""The link interface: one Ethernet frame in, one Ethernet frame out.

A link carries whole Ethernet II frames (destination MAC first, no FCS, no
preamble). Backends: :mod:`netstack.link.tap` (a kernel TAP device),
:mod:`netstack.link.wire` (an in-memory pair for tests), and the wrappers
:mod:`netstack.link.fault` (seeded loss/dup/reorder/delay/corruption) and
:mod:`netstack.link.pcap` (capture to a classic pcap file).

Links are I/O backends, owned by the loop: they may touch file descriptors.
Protocol code never sees a link, only frames and time.

TCP segmentation offload: a link that can cut TCP super-segments itself (a TAP with
offloads, :attr:`netstack.link.tap.TapLink.gso_max_size`) takes :class:`GsoFrame` objects
through ``send_gso``; :meth:`netstack.interface.Interface.frames_to_send` yields them
only when the stack enabled TSO for such a link (never for the wrappers, which must see
every frame as it is on the wire).
"""

from __future__ import annotations

from typing import Protocol, TypeAlias, runtime_checkable

#: Anything frame-like: bytes, bytearray or memoryview (Python 3.11 has no Buffer ABC).
BytesLike: TypeAlias = bytes | bytearray | memoryview


class GsoFrame:
    """One Ethernet frame holding a TCP super-segment (IPv4 or IPv6, no extension
    headers) larger than the MTU, for a link that segments it: ``gso_size`` payload bytes
    per wire segment; the TCP checksum holds the pseudo-header sum when ``partial``."""

    __slots__ = ("data", "gso_size", "partial")

    def __init__(self, data: bytes, gso_size: int, partial: bool) -> None:
        self.data = data
        self.gso_size = gso_size
        self.partial = partial

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"GsoFrame({len(self.data)} bytes, gso_size={self.gso_size})"


#: What the interface hands to the link: a plain frame, or a super-frame (TSO).
OutFrame: TypeAlias = bytes | GsoFrame


class LinkError(Exception):
    """A link could not be opened, configured or used."""


@runtime_checkable
class Link(Protocol):
    """What every link backend and wrapper provides."""

    #: The link MTU: largest Ethernet payload (the frame is at most mtu + 14 bytes).
    mtu: int

    def fileno(self) -> int:
        """A file descriptor that becomes readable when frames may be waiting."""
        ...

    def send(self, frame: BytesLike) -> None:
        """Send one Ethernet frame (never blocks; a full queue drops and counts)."""
        ...

    def recv(self) -> bytes | None:
        """Return one received frame, or None when none is ready now (never blocks)."""
        ...

    def next_deadline(self) -> float | None:
        """Monotonic time at which the link needs ``poll(now)`` (delay queues), or None."""
        ...

    def poll(self, now: float) -> None:
        """Let the link act on time (release delayed frames). ``now`` is monotonic seconds."""
        ...

    def counters(self) -> dict[str, int]:
        """Counters of this link (frames/bytes in/out, drops by reason, ...)."""
        ...

    def close(self) -> None:
        """Release the link's resources (idempotent)."""
        ...
