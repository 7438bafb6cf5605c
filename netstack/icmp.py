"""ICMP for a host (RFC 792, RFC 1122 §3.2.2): echo answered, everything else counted.

:class:`IcmpLayer` verifies the checksum of every message (RFC 792 "Checksum"), answers an
Echo Request with an Echo Reply carrying the same identifier, sequence number and data
(RFC 792 "Echo or Echo Reply Message", RFC 1122 §3.2.2.6), and ignores echo requests sent
to a broadcast address (RFC 1122 §3.2.2.6 allows that; it avoids reply storms). Echo
replies to our own requests are remembered in a small ring (``echo_replies``) so a
``ping`` can be checked; other types are counted by name and ignored (no redirects are
followed: the interface has one gateway).

Counters (layer ``icmp``): ``in``, ``echo_in``, ``echo_out``, ``echo_reply_in``,
``echo_request_out``, ``echo_broadcast_ignored``, ``short``, ``bad_checksum`` and one
``<type>_in`` per other type (``dest_unreachable_in``, ``time_exceeded_in``, ...,
``type<N>_in`` for unnamed ones).
"""

from __future__ import annotations

import struct
from collections import defaultdict, deque
from typing import NamedTuple

from netstack.checksum import checksum_parts, verify
from netstack.link.base import BytesLike

__all__ = [
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "EchoReply",
    "IcmpLayer",
    "build_echo",
]

ECHO_REPLY = 0
ECHO_REQUEST = 8
_NAMES = {
    3: "dest_unreachable",
    4: "source_quench",
    5: "redirect",
    9: "router_advertisement",
    10: "router_solicitation",
    11: "time_exceeded",
    12: "parameter_problem",
    13: "timestamp",
    14: "timestamp_reply",
    17: "address_mask_request",
    18: "address_mask_reply",
}
_ECHO = struct.Struct("!BBHHH")


def build_echo(type_: int, ident: int, seq: int, data: BytesLike = b"", code: int = 0) -> bytes:
    """An Echo (8) or Echo Reply (0) message with its checksum (RFC 792)."""
    head = _ECHO.pack(type_, code, 0, ident, seq)
    ck = checksum_parts((head, data))
    return b"".join((_ECHO.pack(type_, code, ck, ident, seq), data))


class EchoReply(NamedTuple):
    """An echo reply we received."""

    src: bytes
    ident: int
    seq: int
    data: bytes
    time: float


class IcmpLayer:
    """ICMP receive side of one interface."""

    def __init__(self, counters: defaultdict[str, int], remember: int = 16) -> None:
        self._c = counters
        self.echo_replies: deque[EchoReply] = deque(maxlen=remember)
        for name in ("in", "echo_in", "echo_out", "bad_checksum"):
            counters[name] += 0

    def count_request(self) -> None:
        """Count an Echo Request we send (``echo_request_out``)."""
        self._c["echo_request_out"] += 1

    def receive(self, src: bytes, msg: memoryview, broadcast: bool,
                now: float) -> bytes | None:
        """Handle one ICMP message; returns the reply message to send back to ``src``
        (an Echo Reply), or None."""
        c = self._c
        c["in"] += 1
        if len(msg) < 8:
            c["short"] += 1
            return None
        if not verify(msg):
            c["bad_checksum"] += 1
            return None
        t = msg[0]
        if t == ECHO_REQUEST:
            c["echo_in"] += 1
            if broadcast:
                c["echo_broadcast_ignored"] += 1
                return None
            c["echo_out"] += 1
            # Same code, identifier, sequence number and data; type 0; fresh checksum.
            rest = msg[4:]
            head = b"\x00" + bytes(msg[1:2])
            ck = checksum_parts((head, rest))
            return b"".join((head, ck.to_bytes(2, "big"), rest))
        if t == ECHO_REPLY:
            c["echo_reply_in"] += 1
            _t, _code, _ck, ident, seq = _ECHO.unpack_from(msg, 0)
            self.echo_replies.append(EchoReply(src, ident, seq, bytes(msg[8:]), now))
            return None
        name = _NAMES.get(t)
        c[f"{name}_in" if name is not None else f"type{t}_in"] += 1
        return None
