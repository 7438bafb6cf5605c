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

__all__ = ["Placed"]


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
