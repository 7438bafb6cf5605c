"""Capture every frame of a Link, both directions, to a classic pcap file.

Format: little-endian classic pcap (magic ``0xa1b2c3d4``, version 2.4, snaplen 262144,
linktype 1 = Ethernet), microsecond timestamps from :func:`time.time` — the wall clock
is used for the capture file only, never for protocol timing. Frames are written
whole. The file is buffered; it is flushed at least every ``flush_interval`` seconds
of frames, on :meth:`PcapLink.flush` and on close, so tshark can read it.

Sent frames are captured as handed to ``send()`` (before the inner link may drop
them); received frames as returned by ``recv()``.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import BinaryIO

from netstack.link.base import BytesLike, Link, LinkError

PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
PCAP_SNAPLEN = 262144
LINKTYPE_ETHERNET = 1

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def pcap_header() -> bytes:
    """The 24-byte pcap global header."""
    return _GLOBAL.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET)


def pcap_record(frame: BytesLike, ts: float) -> bytes:
    """One record header + frame, timestamp ``ts`` (seconds since the epoch)."""
    usec_total = round(ts * 1_000_000)
    sec, usec = divmod(usec_total, 1_000_000)
    n = len(frame)
    return _RECORD.pack(sec, usec, n, n) + bytes(frame)


class PcapWriter:
    """A classic pcap file being written; used by :class:`PcapLink`."""

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 0.5,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self._wallclock = wallclock
        try:
            self._f: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - owned
        except OSError as e:
            raise LinkError(f"pcap file {self.path}: cannot open for writing: {e}") from e
        self.frames = 0
        self.bytes = 0
        self._last_flush = wallclock()
        self._write(pcap_header())

    def _write(self, data: bytes) -> None:
        if self._f is None:
            raise LinkError(f"pcap file {self.path}: write after close")
        try:
            self._f.write(data)
        except OSError as e:
            raise LinkError(f"pcap file {self.path}: write failed: {e}") from e

    def write(self, frame: BytesLike) -> None:
        """Append one frame, stamped now."""
        now = self._wallclock()
        self._write(pcap_record(frame, now))
        self.frames += 1
        self.bytes += len(frame)
        if now - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Push buffered records to the file."""
        if self._f is not None:
            try:
                self._f.flush()
            except OSError as e:
                raise LinkError(f"pcap file {self.path}: flush failed: {e}") from e
            self._last_flush = self._wallclock()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                raise LinkError(f"pcap file {self.path}: close failed: {e}") from e


class PcapLink:
    """A Link that records all frames of ``inner`` to the pcap file ``path``."""

    def __init__(self, inner: Link, path: str | os.PathLike[str],
                 flush_interval: float = 0.5) -> None:
        self.inner = inner
        self.mtu = inner.mtu
        self.writer = PcapWriter(path, flush_interval)
        self.path = self.writer.path

    def fileno(self) -> int:
        """The inner link's descriptor."""
        return self.inner.fileno()

    def send(self, frame: BytesLike) -> None:
        """Capture, then send through the inner link."""
        self.writer.write(frame)
        self.inner.send(frame)

    def recv(self) -> bytes | None:
        """Receive from the inner link, capturing the frame."""
        frame = self.inner.recv()
        if frame is not None:
            self.writer.write(frame)
        return frame

    def next_deadline(self) -> float | None:
        """The inner link's."""
        return self.inner.next_deadline()

    def poll(self, now: float) -> None:
        """The inner link's."""
        self.inner.poll(now)

    def flush(self) -> None:
        """Flush the capture file (a loop idle callback may call this)."""
        self.writer.flush()

    def counters(self) -> dict[str, int]:
        """The inner link's counters plus ``pcap.frames`` and ``pcap.bytes``."""
        out = self.inner.counters()
        out["pcap.frames"] = self.writer.frames
        out["pcap.bytes"] = self.writer.bytes
        return out

    def close(self) -> None:
        """Close the capture file and the inner link (idempotent)."""
        try:
            self.writer.close()
        finally:
            self.inner.close()

    def __repr__(self) -> str:
        return f"PcapLink({self.inner!r}, {self.path!r})"
