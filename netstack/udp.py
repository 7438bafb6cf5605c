"""UDP (RFC 768), just enough for DHCP: build, validate, and hand datagrams to a port.

:func:`build_udp` makes a datagram with its checksum over the pseudo-header of the
addresses' family — IPv4, or IPv6 for 16-byte addresses (RFC 8200 §8.1) — (a computed
checksum of zero is sent as 0xFFFF, RFC 768 "Fields"); over IPv6 a received zero
checksum is not "none" but an error (RFC 8200 §8.1, counted ``zero_checksum_v6``).
:class:`UdpLayer` validates received datagrams (length against the IP payload —
trailing bytes beyond the UDP length are ignored —, checksum unless it is zero, which
means "none" over IPv4) and delivers the payload to the handler bound to the
destination port; everything else is counted and dropped. No ICMP port unreachable
is sent: we are a client that listens on one port at most (RFC 1122 §4.1.3.1 makes it
a SHOULD).

Counters (layer ``udp``): ``in``, ``out``, ``delivered``, ``short``, ``bad_length``,
``bad_checksum``, ``no_checksum``, ``no_port``, ``handler_errors`` (a handler raised:
the exception is kept on :attr:`UdpLayer.last_error`, and re-raised when ``strict``).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable

from netstack.checksum import transport_checksum
from netstack.ipv4 import PROTO_UDP
from netstack.link.base import BytesLike

__all__ = ["UDP_HLEN", "UdpDatagram", "UdpHandler", "UdpLayer", "build_udp", "parse_udp"]

UDP_HLEN = 8
_HDR = struct.Struct("!HHHH")

#: ``handler(datagram, now)``.
UdpHandler = Callable[["UdpDatagram", float], None]


class UdpDatagram:
    """One received datagram: addresses (4 bytes each), ports, payload, broadcast flag."""

    __slots__ = ("broadcast", "dport", "dst", "payload", "sport", "src")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, payload: memoryview,
                 broadcast: bool) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.payload = payload
        self.broadcast = broadcast


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: BytesLike) -> bytes:
    """A UDP datagram with header and checksum (RFC 768)."""
    n = UDP_HLEN + len(payload)
    if n > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit a datagram")
    seg = _HDR.pack(sport, dport, n, 0) + bytes(payload)
    ck = transport_checksum(src, dst, PROTO_UDP, seg) or 0xFFFF
    return seg[:6] + ck.to_bytes(2, "big") + seg[8:]


def parse_udp(src: bytes, dst: bytes, segment: memoryview,
              counters: defaultdict[str, int],
              csum_ok: bool = False) -> tuple[int, int, memoryview] | None:
    """Validate one datagram: ``(sport, dport, payload)`` or None (counted). ``csum_ok``:
    the link vouches for the checksum (a TAP offload: the kernel's own datagrams carry a
    partial checksum then, which must not be checked here)."""
    n = len(segment)
    if n < UDP_HLEN:
        counters["short"] += 1
        return None
    sport, dport, length, ck = _HDR.unpack_from(segment, 0)
    if length < UDP_HLEN or length > n:
        counters["bad_length"] += 1
        return None
    seg = segment[:length]
    if ck == 0:
        if len(src) == 16:
            counters["zero_checksum_v6"] += 1  # RFC 8200 §8.1: mandatory over IPv6
            return None
        counters["no_checksum"] += 1  # RFC 768: the sender computed none
    elif not csum_ok and transport_checksum(src, dst, PROTO_UDP, seg) != 0:
        counters["bad_checksum"] += 1
        return None
    return sport, dport, seg[UDP_HLEN:]


class UdpLayer:
    """Port demultiplexing of received datagrams; building of datagrams to send."""

    def __init__(self, counters: defaultdict[str, int], strict: bool = False) -> None:
        self._c = counters
        self.strict = strict
        self._ports: dict[int, UdpHandler] = {}
        self.last_error: BaseException | None = None
        for name in ("in", "out", "delivered", "bad_checksum", "no_port"):
            counters[name] += 0

    def bind(self, port: int, handler: UdpHandler) -> None:
        """Deliver datagrams to ``port`` to ``handler`` (replaces an earlier one)."""
        if not 0 < port < 65536:
            raise ValueError(f"UDP port {port} is not 1..65535")
        self._ports[port] = handler

    def unbind(self, port: int) -> None:
        """Stop delivering to ``port`` (no error if it was not bound)."""
        self._ports.pop(port, None)

    def receive(self, src: bytes, dst: bytes, segment: memoryview, broadcast: bool,
                now: float, csum_ok: bool = False) -> None:
        """One datagram from IP: validate and deliver, or count and drop."""
        c = self._c
        c["in"] += 1
        r = parse_udp(src, dst, segment, c, csum_ok)
        if r is None:
            return
        sport, dport, payload = r
        handler = self._ports.get(dport)
        if handler is None:
            c["no_port"] += 1
            return
        c["delivered"] += 1
        try:
            handler(UdpDatagram(src, dst, sport, dport, payload, broadcast), now)
        except Exception as exc:  # a handler bug must not take the interface down
            c["handler_errors"] += 1
            self.last_error = exc
            if self.strict:
                raise

    def build(self, src: bytes, dst: bytes, sport: int, dport: int,
              payload: BytesLike) -> bytes:
        """A datagram to hand to IPv4 (counted as ``out``)."""
        self._c["out"] += 1
        return build_udp(src, dst, sport, dport, payload)
