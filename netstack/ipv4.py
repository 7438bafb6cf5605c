"""IPv4 for a host (RFC 791, RFC 1122 §3): validation, address filter, routing, header
building, fragmentation on output and reassembly (RFC 815) on input.

- :class:`Ipv4Layer` validates a received datagram (version, IHL, total length against
  the frame — Ethernet padding beyond the total length is ignored —, header checksum,
  option format, source address), keeps those for us (our address, the limited and the
  subnet-directed broadcast), reassembles fragments and returns
  ``(protocol, src, dst, payload, broadcast)``; it builds headers (TTL 64, DF for TCP,
  incrementing identification) and fragments datagrams larger than the MTU when DF is
  clear; :meth:`Ipv4Layer.route` chooses between on-link delivery and the default gateway.
- :class:`Reassembler` keeps fragments of datagrams in progress as sorted,
  non-overlapping byte ranges. That is simpler than RFC 815's hole descriptor list and
  just as correct for the question RFC 815 answers ("is the datagram complete?"): with no
  overlaps the datagram is complete when the bytes held equal the length known from the
  last fragment. Any overlap other than an exact duplicate drops the whole datagram
  (counted ``reassembly_overlap``) and later fragments of it are ignored until its timer
  runs out (the policy RFC 5722 made mandatory for IPv6, and safe against overlap
  attacks). Memory is bounded by datagrams in progress and bytes held (each fragment's
  payload plus a fixed overhead); the oldest datagram is evicted to make room
  (``reassembly_overflow``). A datagram not completed within ``timeout`` seconds of its
  first fragment is dropped (``reassembly_timeouts``; RFC 1122 §3.3.2 recommends 60-120 s
  and RFC 791 a 15 s initial value; 30 s by default).

Counters (layer ``ip``): ``in``, ``out`` (datagrams handed to the link layer, including
those that then wait for ARP), ``delivered``, ``truncated``, ``bad_version``,
``bad_header``, ``bad_length``, ``bad_checksum``, ``bad_options``, ``options``,
``bad_src``, ``not_for_us``, ``link_broadcast_unicast``, ``padded``, ``fragments``,
``bad_fragment``, ``duplicate_fragments``, ``reassembled``, ``reassembly_timeouts``,
``reassembly_overflow``, ``reassembly_overlap``, ``fragments_out``, ``fragmented``,
``no_route``, ``too_big``; with TSO (counted by the interface) ``gso_out`` (super-datagrams;
``out`` counts the datagrams the link makes of them) and ``gso_split``.
"""

from __future__ import annotations

import ipaddress
import struct
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

from netstack.link.base import BytesLike

__all__ = [
    "DF",
    "IPV4_HLEN",
    "LIMITED_BROADCAST",
    "MAX_PAYLOAD",
    "MF",
    "PROTO_ICMP",
    "PROTO_TCP",
    "PROTO_UDP",
    "Ipv4Layer",
    "Reassembler",
    "ReassemblyConfig",
    "build_header",
    "header_checksum_sum",
    "options_valid",
]

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
IPV4_HLEN = 20
#: Flags in the flags/fragment-offset word (RFC 791 §3.1).
DF = 0x4000
MF = 0x2000
_OFFSET_MASK = 0x1FFF
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
#: Largest datagram payload with the smallest header (total length is 16 bits).
MAX_PAYLOAD = 65535 - IPV4_HLEN
#: Bytes charged per stored fragment besides its payload (object overhead).
_FRAG_OVERHEAD = 96

_HDR = struct.Struct("!BBHHHBBH4s4s")


def header_checksum_sum(src: bytes, dst: bytes) -> int:
    """The address words' part of the header sum (RFC 1071: each 32-bit address is
    congruent to the sum of its two 16-bit words modulo 0xFFFF)."""
    s = int.from_bytes(src, "big")
    d = int.from_bytes(dst, "big")
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF)


def build_header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int, *,
                 df: bool = True, mf: bool = False, frag_offset: int = 0, ttl: int = 64,
                 tos: int = 0) -> bytes:
    """A 20-byte IPv4 header with its checksum (RFC 791 §3.1; checksum per RFC 1071,
    computed from the field values without serialising twice).

    ``frag_offset`` is in bytes and must be a multiple of 8.
    """
    total = IPV4_HLEN + payload_len
    ff = (DF if df else 0) | (MF if mf else 0) | (frag_offset >> 3)
    s = (0x4500 | tos) + total + ident + ff + ((ttl << 8) | proto) + \
        header_checksum_sum(src, dst)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return _HDR.pack(0x45, tos, total, ident, ff, ttl, proto, ~s & 0xFFFF, src, dst)


def options_valid(hdr: memoryview, hl: int) -> bool:
    """Whether the options in ``hdr[20:hl]`` are well formed (RFC 791 §3.1 "Options":
    End of Option List, No Operation, or type-length-value with 2 <= length <= room)."""
    i = IPV4_HLEN
    while i < hl:
        t = hdr[i]
        if t == 0:
            return True
        if t == 1:
            i += 1
            continue
        if i + 1 >= hl:
            return False
        ln = hdr[i + 1]
        if ln < 2 or i + ln > hl:
            return False
        i += ln
    return True


@dataclass(frozen=True, slots=True)
class ReassemblyConfig:
    """Bounds of fragment reassembly."""

    #: Seconds from the first fragment of a datagram until it is given up.
    timeout: float = 30.0
    #: Datagrams in progress at once.
    max_datagrams: int = 16
    #: Bytes held for all datagrams in progress (payload plus per-fragment overhead).
    max_bytes: int = 1 << 20


class _Datagram:
    __slots__ = ("datas", "deadline", "ends", "held", "poisoned", "starts", "total")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.datas: list[bytes] = []
        self.held = 0           # payload bytes held
        self.total = -1         # payload length, known from the last fragment
        self.poisoned = False   # overlap seen: ignore the rest until the deadline


_Key = tuple[bytes, bytes, int, int]


class Reassembler:
    """Fragment reassembly with bounded memory and a timeout (RFC 791 §3.2, RFC 815)."""

    def __init__(self, counters: defaultdict[str, int],
                 config: ReassemblyConfig | None = None) -> None:
        self.config = config if config is not None else ReassemblyConfig()
        self._c = counters
        self._dgrams: dict[_Key, _Datagram] = {}  # insertion order == deadline order
        self._bytes = 0
        for name in ("fragments", "reassembled", "reassembly_timeouts",
                     "reassembly_overflow", "reassembly_overlap"):
            counters[name] += 0

    @property
    def bytes_held(self) -> int:
        """Memory charged to datagrams in progress."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._dgrams)

    def _cost(self, d: _Datagram) -> int:
        return d.held + _FRAG_OVERHEAD * len(d.datas)

    def _drop(self, key: _Key) -> None:
        d = self._dgrams.pop(key)
        self._bytes -= self._cost(d)

    def _poison(self, d: _Datagram) -> None:
        self._c["reassembly_overlap"] += 1
        self._bytes -= self._cost(d)
        d.poisoned = True
        d.starts, d.ends, d.datas = [], [], []
        d.held = 0

    def add(self, key: _Key, offset: int, more: bool, data: memoryview,
            now: float) -> bytes | None:
        """Add one fragment (``offset`` in bytes); the whole payload when complete."""
        c = self._c
        cfg = self.config
        c["fragments"] += 1
        n = len(data)
        end = offset + n
        if end > MAX_PAYLOAD or (more and (n == 0 or n & 7)):
            # Beyond 65535 bytes ("ping of death"), or a non-last fragment that is empty
            # or not a multiple of 8 bytes long (RFC 791 §3.2 "Fragmentation").
            c["bad_fragment"] += 1
            return None
        d = self._dgrams.get(key)
        if d is None:
            if len(self._dgrams) >= cfg.max_datagrams:
                c["reassembly_overflow"] += 1
                self._drop(next(iter(self._dgrams)))
            d = self._dgrams[key] = _Datagram(now + cfg.timeout)
        if d.poisoned:
            return None
        if not more:
            if (d.total >= 0 and d.total != end) or (d.ends and d.ends[-1] > end):
                self._poison(d)  # two different ends, or data beyond the end
                return None
            d.total = end
        elif d.total >= 0 and end > d.total:
            self._poison(d)
            return None
        starts = d.starts
        i = bisect_right(starts, offset)
        if i and d.ends[i - 1] > offset:
            j = i - 1
            if starts[j] == offset and d.ends[j] == end and d.datas[j] == data:
                c["duplicate_fragments"] += 1
                return None
            self._poison(d)
            return None
        if i < len(starts) and starts[i] < end:
            self._poison(d)
            return None
        cost = n + _FRAG_OVERHEAD
        if self._bytes + cost > cfg.max_bytes:
            for k in list(self._dgrams):
                if self._bytes + cost <= cfg.max_bytes:
                    break
                if k != key:
                    c["reassembly_overflow"] += 1
                    self._drop(k)
            if self._bytes + cost > cfg.max_bytes:
                c["reassembly_overflow"] += 1
                self._drop(key)
                return None
        starts.insert(i, offset)
        d.ends.insert(i, end)
        d.datas.insert(i, bytes(data))
        d.held += n
        self._bytes += cost
        if d.held != d.total:
            return None
        self._drop(key)
        c["reassembled"] += 1
        return b"".join(d.datas)

    def next_deadline(self) -> float | None:
        """When the oldest datagram in progress times out."""
        for d in self._dgrams.values():
            return d.deadline
        return None

    def on_deadline(self, now: float) -> None:
        """Drop datagrams whose timer ran out (RFC 791 §3.2 "reassembly timer")."""
        dgrams = self._dgrams
        while dgrams:
            key, d = next(iter(dgrams.items()))
            if d.deadline > now:
                break
            if not d.poisoned:
                self._c["reassembly_timeouts"] += 1
            self._drop(key)


_ReceiveResult = tuple[int, bytes, bytes, memoryview, bool]


class Ipv4Layer:
    """IPv4 of one interface: receive validation and filter, routing, header building."""

    def __init__(self, address: ipaddress.IPv4Interface,
                 gateway: ipaddress.IPv4Address | None, mtu: int,
                 counters: defaultdict[str, int],
                 reassembly: ReassemblyConfig | None = None, ident: int = 0) -> None:
        self._c = counters
        self.set_address(address, gateway, mtu)
        self._ident = ident & 0xFFFF
        self.reassembler = Reassembler(counters, reassembly)
        for name in ("in", "out", "delivered", "bad_checksum", "bad_header", "truncated",
                     "not_for_us", "no_route"):
            counters[name] += 0

    def set_address(self, address: ipaddress.IPv4Interface,
                    gateway: ipaddress.IPv4Address | None, mtu: int) -> None:
        """(Re)configure address, gateway and MTU. Address 0.0.0.0 is *unconfigured*
        (RFC 2131 before BOUND): unicast datagrams to any address are accepted then, as
        a DHCP reply may be unicast to the address being offered (RFC 2131 §4.1)."""
        if mtu < 68:
            raise ValueError("an IPv4 MTU is at least 68 bytes (RFC 791 §3.2)")
        self.address = address
        self.ip = address.ip.packed
        self.unconfigured = self.ip == b"\0\0\0\0"
        self.mtu = mtu
        net = address.network
        self._net = int(net.network_address)
        self._mask = int(net.netmask)
        # /31 (RFC 3021) and /32 have no directed broadcast address.
        self.broadcast = (net.broadcast_address.packed if net.prefixlen < 31
                          else LIMITED_BROADCAST)
        self.gateway = gateway.packed if gateway is not None else None
        self._hsum = header_checksum_sum(self.ip, b"\0\0\0\0") + 0x4500

    # ---------------------------------------------------------------- receive
    def receive(self, pkt: memoryview, link_broadcast: bool,
                now: float) -> _ReceiveResult | None:
        """Validate and filter one datagram (RFC 791 §3.1, RFC 1122 §3.2.1 and §3.3.6);
        reassemble fragments (RFC 815). Returns ``(proto, src, dst, payload, broadcast)``
        for a complete datagram addressed to us, otherwise None (counted)."""
        c = self._c
        c["in"] += 1
        n = len(pkt)
        if n < IPV4_HLEN:
            c["truncated"] += 1
            return None
        vihl, _tos, total, ident, ff, _ttl, proto, _ck, src, dst = _HDR.unpack_from(pkt, 0)
        if vihl >> 4 != 4:
            c["bad_version"] += 1
            return None
        hl = (vihl & 0x0F) << 2
        if hl < IPV4_HLEN:
            c["bad_header"] += 1
            return None
        if total < hl:
            c["bad_length"] += 1
            return None
        if total > n:
            c["truncated"] += 1  # also covers an IHL beyond the frame
            return None
        if total < n:
            c["padded"] += 1  # Ethernet minimum-size padding, or junk: ignored
            pkt = pkt[:total]
        # RFC 1071: the header, checksum included, sums to 0xFFFF, i.e. to 0 modulo 0xFFFF
        # (it cannot be all zero: the version is 4).
        if int.from_bytes(pkt[:hl], "big") % 0xFFFF:
            c["bad_checksum"] += 1
            return None
        if hl > IPV4_HLEN:
            c["options"] += 1  # accepted and ignored (RFC 1122 §3.2.1.8)
            if not options_valid(pkt, hl):
                c["bad_options"] += 1
                return None
        if src[0] >= 224 or src == self.broadcast or src == self.ip:
            # RFC 1122 §3.2.1.3: a source that is multicast or broadcast (or ourselves,
            # i.e. our own datagram looped back or a spoof) is discarded.
            c["bad_src"] += 1
            return None
        if dst == self.ip:
            bcast = False
            if link_broadcast:
                # RFC 1122 §3.3.6: a unicast datagram sent to a link-layer broadcast.
                c["link_broadcast_unicast"] += 1
                return None
        elif dst == LIMITED_BROADCAST or dst == self.broadcast:
            bcast = True
        elif self.unconfigured and 0 < dst[0] < 224:
            bcast = False  # possibly the address being offered to us
            c["unconfigured_unicast"] += 1
        else:
            c["not_for_us"] += 1
            return None
        if ff & (MF | _OFFSET_MASK):
            whole = self.reassembler.add((src, dst, proto, ident), (ff & _OFFSET_MASK) << 3,
                                         bool(ff & MF), pkt[hl:], now)
            if whole is None:
                return None
            c["delivered"] += 1
            return proto, src, dst, memoryview(whole), bcast
        c["delivered"] += 1
        return proto, src, dst, pkt[hl:], bcast

    # ----------------------------------------------------------------- output
    def route(self, dst: bytes) -> bytes | None:
        """The next hop for ``dst``: itself when on-link (or a broadcast, returned as the
        limited broadcast), else the default gateway, else None (RFC 1122 §3.3.1.1)."""
        if dst == LIMITED_BROADCAST or dst == self.broadcast:
            return LIMITED_BROADCAST
        if dst[0] >= 224 or dst == self.ip or dst[0] == 0:
            return None  # multicast, ourselves (no loopback) and "this network"
        if (int.from_bytes(dst, "big") & self._mask) == self._net:
            return dst
        return self.gateway

    def header(self, dst: bytes, proto: int, payload_len: int, df: bool = True) -> bytes:
        """Header of an unfragmented datagram from us (TTL 64, next identification)."""
        self._ident = ident = (self._ident + 1) & 0xFFFF
        total = IPV4_HLEN + payload_len
        ff = DF if df else 0
        d = int.from_bytes(dst, "big")
        s = self._hsum + (64 << 8 | proto) + total + ident + ff + (d >> 16) + (d & 0xFFFF)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return _HDR.pack(0x45, 0, total, ident, ff, 64, proto, ~s & 0xFFFF, self.ip, dst)

    def next_idents(self, count: int) -> int:
        """Reserve the next ``count`` identifications (``count`` datagrams, each as
        :meth:`header` would number it); returns the first (the rest follow modulo
        2**16, RFC 791 §3.1 "Identification")."""
        ident = (self._ident + 1) & 0xFFFF
        self._ident = (self._ident + count) & 0xFFFF
        return ident

    def header_gso(self, dst: bytes, proto: int, payload_len: int, segments: int) -> bytes:
        """Header of a TCP super-datagram that the link cuts into ``segments`` datagrams
        (TSO): DF set, a total length beyond the MTU (at most 65535), and the next
        ``segments`` identifications reserved, since Linux's GSO gives segment ``i`` the
        identification ``id + i`` (``inet_gso_segment``; RFC 6864 §4.1 lets atomic
        datagrams use any ID, this keeps them unique anyway)."""
        total = IPV4_HLEN + payload_len
        if total > 0xFFFF or segments < 1:
            raise ValueError(f"super-datagram of {total} bytes in {segments} segments")
        ident = (self._ident + 1) & 0xFFFF
        self._ident = (self._ident + segments) & 0xFFFF
        d = int.from_bytes(dst, "big")
        s = self._hsum + (64 << 8 | proto) + total + ident + DF + (d >> 16) + (d & 0xFFFF)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return _HDR.pack(0x45, 0, total, ident, DF, 64, proto, ~s & 0xFFFF, self.ip, dst)

    def fragment(self, dst: bytes, proto: int, payload: BytesLike) -> list[bytes]:
        """Split a datagram too large for the MTU (RFC 791 §3.2 "Fragmentation"): every
        fragment but the last carries a multiple of 8 payload bytes and MF; all share one
        identification. Returns whole IPv4 packets (header + data)."""
        self._ident = ident = (self._ident + 1) & 0xFFFF
        view = payload if isinstance(payload, memoryview) else memoryview(payload)
        n = len(view)
        step = (self.mtu - IPV4_HLEN) & ~7
        out = []
        for off in range(0, n, step):
            chunk = view[off:off + step]
            last = off + step >= n
            out.append(build_header(self.ip, dst, proto, len(chunk), ident, df=False,
                                    mf=not last, frag_offset=off) + chunk)
        self._c["fragmented"] += 1
        self._c["fragments_out"] += len(out)
        return out
