"""Direct data placement on receive: payload read by the link straight into the
consumer's buffer.

A consumer that parses the byte stream (the iSCSI session) often knows where the next
bytes go before they arrive: the rest of a Data-In data segment belongs at its
BufferOffset in the task's buffer (RFC 7143 §11.7.5). It says so with
:meth:`~netstack.tcp.connection.TcpConnection.set_placement`: "the stream bytes from my
current position on belong in this buffer". The TAP backend then reads the next frame
with ``readv`` into three pieces — a header buffer of exactly the expected Ethernet,
IPv4 and TCP header length, the rest of that buffer, and a spill buffer — and when the
frame proves to be the predicted in-order segment of that connection (the header
prediction of RFC 9293 §3.10.7.4 done by ``receive_predicted``), the payload is already
where it belongs: the kernel's copy was the only one. The connection queues a
:class:`Placed` marker in its receive queue in place of those bytes, so the consumer
sees the stream in order (it advances past them without copying).

A frame that is anything else (another flow, out of order, options changed, a checksum
the kernel did not vouch for) is put back together and takes the ordinary path; what
the ``readv`` wrote into the buffer then lies beyond the stream position and is
overwritten when the right bytes come, because every byte of the destination range is
written by the consumer either way (placed, or copied out of an ordinary chunk).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Continuation", "Placed"]


class Placed:
    """``n`` bytes of the stream that were placed at the consumer's destination (an item
    of :meth:`~netstack.tcp.connection.TcpConnection.recv_chunks`)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Placed({self.n})"


class Continuation:
    """Where the stream goes on after the current placement window (a prediction of the
    consumer's): the next ``gap`` bytes are ordinary stream bytes (the next PDU's header,
    which the consumer parses), and the bytes after them belong in ``buf``.

    The link scatters a frame that runs past the window over the window, a ``gap``-byte
    buffer and ``buf``. Once the gap is complete, ``accept(gap_bytes, n)`` (the gap as
    received, ``n`` bytes written to ``buf``) must confirm the prediction by returning
    how much of ``buf`` the header's payload spans (at least ``n``; 0 refuses): only
    then are the ``n`` bytes passed on as :class:`Placed` (they must be exactly where
    the consumer will want them once it has parsed the gap), and that span of ``buf``
    becomes the placement window. When it refuses bytes placed, the frame is put back
    together and takes the ordinary path, as any frame that misses placement; what was
    written into ``buf`` then lies beyond the consumer's stream position in a range it
    expects to be written (see the module doc).
    """

    __slots__ = ("accept", "buf", "gap")

    def __init__(self, gap: int, buf: memoryview,
                 accept: Callable[[memoryview, int], int]) -> None:
        if gap <= 0 or not len(buf) or buf.readonly:
            raise ValueError("a continuation needs a gap and a writable, non-empty buffer")
        self.gap = gap
        self.buf = buf
        self.accept = accept

    def __repr__(self) -> str:
        return f"Continuation(gap={self.gap}, buf={len(self.buf)} bytes)"
