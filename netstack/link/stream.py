"""A link over a stream socket: passt's and QEMU's ``-netdev stream`` framing.

passt (``passt -s SOCKET``) and QEMU's ``-netdev stream``/``-netdev socket`` carry
Ethernet frames over an ``AF_UNIX`` stream as records: a 4-byte big-endian length,
then that many bytes of frame (no FCS). This backend connects to such a socket —
no TAP, no privileges: it is how bootinit runs rootless.

- The socket is non-blocking. Received bytes go into a reassembly buffer, so a frame
  split over several reads (or several frames in one read) come out whole, one per
  :meth:`StreamLink.recv`. A record longer than ``mtu + 18`` (an MTU-sized frame with
  an 802.1Q tag) or shorter than an Ethernet header is skipped by its length (the
  stream stays in step; an oversize one is discarded as it arrives, never buffered)
  and counted (``rx_drop_oversize``, ``rx_drop_runt``).
- Sending appends records to a bounded buffer that is written as far as the socket
  takes it (EAGAIN leaves the rest pending). A frame that does not fit in the buffer
  is dropped and counted (``tx_drop_full``), like a full TAP queue. Pending bytes are
  written on the next send or :meth:`poll`; :meth:`next_deadline` asks for a poll
  ``flush_interval`` seconds ahead while bytes are pending, and for one at once while
  complete frames wait in the receive buffer (the descriptor is no longer readable
  then), so the loop never sleeps on work.
- End of stream (the peer closed) or a socket error raises :class:`LinkError`.

Counters: ``rx_frames``, ``rx_bytes``, ``tx_frames``, ``tx_bytes``, ``tx_drop_full``,
``tx_partial`` (writes the socket took only in part), ``rx_drop_oversize``,
``rx_drop_runt``, ``reads``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from netstack.link.base import BytesLike, LinkError

__all__ = ["StreamLink"]

ETH_HLEN = 14
#: Bytes of an MTU-sized frame beyond the MTU: Ethernet header + an 802.1Q tag.
_FRAME_OVERHEAD = ETH_HLEN + 4
_READ_SIZE = 256 * 1024


class StreamLink:
    """Ethernet frames as length-prefixed records over a UNIX stream socket."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, mtu: int = 1500,
                 sock: socket.socket | None = None, send_buffer: int = 1 << 20,
                 connect_timeout: float = 5.0, flush_interval: float = 0.001,
                 label: str = "stream",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if (path is None) == (sock is None):
            raise ValueError("give either a socket path or a connected socket")
        if not 68 <= mtu <= 65535 - _FRAME_OVERHEAD:
            raise LinkError(f"MTU {mtu}: must be 68..{65535 - _FRAME_OVERHEAD}")
        self.mtu = mtu
        self.label = label
        self.path = Path(path) if path is not None else None
        self._frame_max = mtu + _FRAME_OVERHEAD
        self._send_limit = max(send_buffer, self._frame_max + 4)
        self._flush_interval = flush_interval
        self._clock = clock
        self._rx = bytearray()
        self._rx_off = 0
        self._skip = 0  # bytes of an oversize record still to discard
        self._tx = bytearray()
        self._closed = False
        self._c: dict[str, int] = dict.fromkeys(
            ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "tx_drop_full", "tx_partial",
             "rx_drop_oversize", "rx_drop_runt", "reads"), 0)
        if sock is None:
            assert self.path is not None
            sock = self._connect(self.path, connect_timeout)
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()

    def _connect(self, path: Path, timeout: float) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
        except OSError as e:
            s.close()
            why = e.strerror or str(e)
            if isinstance(e, TimeoutError):
                why = f"no answer in {timeout:g} s"
            raise LinkError(f"{self.label} socket {path}: cannot connect: {why}") from e
        return s

    # -- Link protocol -------------------------------------------------------------------
    def fileno(self) -> int:
        """The socket's descriptor (readable when bytes arrived)."""
        if self._closed:
            raise LinkError(f"{self.label} link: closed")
        return self._fd

    def send(self, frame: BytesLike) -> None:
        """Queue one frame as a record and write what the socket takes now."""
        n = len(frame)
        if not ETH_HLEN <= n <= self._frame_max:
            raise LinkError(f"{self.label} link: frame of {n} bytes outside "
                            f"{ETH_HLEN}..{self._frame_max} (MTU {self.mtu})")
        if self._closed:
            raise LinkError(f"{self.label} link: closed")
        c = self._c
        if len(self._tx) + 4 + n > self._send_limit:
            self._flush()
            if len(self._tx) + 4 + n > self._send_limit:
                c["tx_drop_full"] += 1
                return
        self._tx += n.to_bytes(4, "big")
        self._tx += frame
        c["tx_frames"] += 1
        c["tx_bytes"] += n
        self._flush()

    def _flush(self) -> None:
        tx = self._tx
        while tx:
            try:
                sent = self._sock.send(tx)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                raise LinkError(f"{self.label} link: write failed: {e}") from e
            if sent < len(tx):
                self._c["tx_partial"] += 1
            del tx[:sent]

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the socket and not written yet."""
        return len(self._tx)

    def _next_record(self) -> bytes | None:
        """A whole frame from the receive buffer, or None (skipping bad records).

        An oversize record is discarded as its bytes arrive (``_skip``), never buffered,
        so a hostile length prefix cannot make us hold more than one read.
        """
        rx = self._rx
        c = self._c
        while True:
            avail = len(rx) - self._rx_off
            if self._skip:
                k = min(self._skip, avail)
                self._skip -= k
                self._rx_off += k
                if self._skip:
                    return None
                continue
            if avail < 4:
                return None
            off = self._rx_off
            n = int.from_bytes(rx[off:off + 4], "big")
            if n > self._frame_max:
                c["rx_drop_oversize"] += 1
                self._rx_off = off + 4
                self._skip = n
                continue
            if avail - 4 < n:
                return None
            self._rx_off = off + 4 + n
            if n < ETH_HLEN:
                c["rx_drop_runt"] += 1
                continue
            c["rx_frames"] += 1
            c["rx_bytes"] += n
            return bytes(rx[off + 4:off + 4 + n])

    def _compact(self) -> None:
        if self._rx_off:
            del self._rx[:self._rx_off]
            self._rx_off = 0

    def recv(self) -> bytes | None:
        """One whole received frame, or None when none is complete yet."""
        frame = self._next_record()
        if frame is not None:
            return frame
        if self._closed:
            return None
        self._compact()
        while True:
            try:
                data = self._sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise LinkError(f"{self.label} link: read failed: {e}") from e
            if not data:
                raise LinkError(f"{self.label} link: the peer closed the stream"
                                + (f" ({len(self._rx)} bytes of a partial frame left)"
                                   if self._rx else ""))
            self._c["reads"] += 1
            self._rx += data
            frame = self._next_record()
            if frame is not None:
                return frame

    def next_deadline(self) -> float | None:
        """Now while whole frames wait in the buffer; soon while bytes wait to be sent."""
        if self._closed:
            return None
        if self._rx_complete():
            return 0.0
        if self._tx:
            return self._clock() + self._flush_interval
        return None

    def _rx_complete(self) -> bool:
        avail = len(self._rx) - self._rx_off
        if self._skip:
            return avail > 0
        if avail < 4:
            return False
        n = int.from_bytes(self._rx[self._rx_off:self._rx_off + 4], "big")
        return avail - 4 >= n

    def poll(self, now: float) -> None:
        """Write pending bytes."""
        if not self._closed and self._tx:
            self._flush()

    def counters(self) -> dict[str, int]:
        """Counters of this link."""
        out = dict(self._c)
        out["tx_pending_bytes"] = len(self._tx)
        return out

    def close(self) -> None:
        """Try once more to write what is pending, then close the socket (idempotent)."""
        if self._closed:
            return
        with contextlib.suppress(LinkError):
            self._flush()
        self._closed = True
        try:
            self._sock.close()
        except OSError as e:  # pragma: no cover - close of a socket rarely fails
            if e.errno != errno.EBADF:
                raise

    def __repr__(self) -> str:
        return f"StreamLink({self.label}, {self.path}, mtu={self.mtu})"
