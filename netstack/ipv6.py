"""IPv6 packets and addresses, pure (RFC 8200, RFC 4291, RFC 2464).

- Addresses: the solicited-node multicast group of an address (RFC 4291 §2.7.1), the
  Ethernet multicast MAC of an IPv6 group (``33:33`` + the low 32 bits, RFC 2464 §7),
  interface identifiers — modified EUI-64 from the MAC (RFC 4291 §2.5.1 and Appendix A,
  RFC 2464 §4), stable opaque (RFC 7217 §5, SHA-256 as its PRF) or random (in the spirit
  of RFC 8981) — avoiding the reserved IIDs (RFC 5453).
- The fixed header (RFC 8200 §3): build and validate.
- Extension headers on receive (RFC 8200 §4): Hop-by-Hop (only first, §4.1) and
  Destination Options are walked, options skipped or, per the two high bits of their type
  (§4.2), the packet discarded; a Routing header with Segments Left 0 is ignored
  (§4.4), any other is discarded (we are a host and forward nothing); a Fragment header
  (§4.5) hands the packet to reassembly; No Next Header (59) ends the packet.
- Fragmentation on output (§4.5), used for echo replies larger than the MTU (IPv6
  routers never fragment; the source does).

No ICMPv6 errors are generated (Parameter Problem, Destination Unreachable): like the
IPv4 side the host drops and counts (RFC 4443 §2.4 lets error generation be rate-limited
to nothing; we are a boot initiator that listens on no port).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import struct
from collections.abc import Iterable

from netstack.link.base import BytesLike

__all__ = [
    "ALL_NODES",
    "ALL_ROUTERS",
    "IPV6_HLEN",
    "NH_DSTOPTS",
    "NH_FRAGMENT",
    "NH_HOPOPTS",
    "NH_NONE",
    "NH_ROUTING",
    "UNSPECIFIED",
    "ExtError",
    "build_header",
    "eui64_iid",
    "fragment",
    "is_link_local",
    "is_multicast",
    "is_reserved_iid",
    "link_local",
    "multicast_mac",
    "random_iid",
    "solicited_node",
    "stable_iid",
    "walk_extensions",
]

IPV6_HLEN = 40
NH_HOPOPTS = 0
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_NONE = 59
NH_DSTOPTS = 60
ALL_NODES = ipaddress.IPv6Address("ff02::1").packed
ALL_ROUTERS = ipaddress.IPv6Address("ff02::2").packed
UNSPECIFIED = bytes(16)
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")
_SOLICITED_PREFIX = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]

_HDR = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BBHI")


def is_multicast(addr: BytesLike) -> bool:
    """ff00::/8 (RFC 4291 §2.7)."""
    return addr[0] == 0xFF


def is_link_local(addr: BytesLike) -> bool:
    """fe80::/10 (RFC 4291 §2.5.6)."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address ff02::1:ffXX:XXXX (RFC 4291 §2.7.1)."""
    return _SOLICITED_PREFIX + addr[13:16]


def multicast_mac(group: bytes) -> bytes:
    """The Ethernet destination of an IPv6 multicast packet: 33:33 and the group's last
    four bytes (RFC 2464 §7)."""
    return b"\x33\x33" + group[12:16]


def eui64_iid(mac: bytes) -> bytes:
    """Modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291 Appendix A, RFC
    2464 §4): FF-FE inserted in the middle, universal/local bit inverted."""
    return bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def is_reserved_iid(iid: bytes) -> bool:
    """Reserved interface identifiers (RFC 5453 §3, RFC 7217 §5): the Subnet-Router
    anycast (all zero) and the reserved subnet anycast range fdff:ffff:ffff:ff80-ffff."""
    if iid == bytes(8):
        return True
    return iid[:7] == b"\xfd\xff\xff\xff\xff\xff\xff" and iid[7] >= 0x80


def stable_iid(prefix: bytes, net_iface: bytes, dad_counter: int, secret: bytes,
               network_id: bytes = b"") -> bytes:
    """Stable opaque IID (RFC 7217 §5): RID = F(Prefix, Net_Iface, Network_ID,
    DAD_Counter, secret_key), F = SHA-256, its first 64 bits. A reserved result moves on
    to the next DAD_Counter (§5: "the IID ... MUST NOT be a reserved IID")."""
    while True:
        h = hashlib.sha256(prefix[:8] + net_iface + network_id
                           + dad_counter.to_bytes(4, "big") + secret).digest()[:8]
        if not is_reserved_iid(h):
            return h
        dad_counter += 1


def random_iid(rng: random.Random) -> bytes:
    """A random IID (as temporary addresses, RFC 8981 §3.3.1), never a reserved one."""
    while True:
        iid = rng.getrandbits(64).to_bytes(8, "big")
        if not is_reserved_iid(iid):
            return iid


def link_local(iid: bytes) -> bytes:
    """fe80::/64 with ``iid`` (RFC 4862 §5.3)."""
    return _LINK_LOCAL_PREFIX + iid


def build_header(src: bytes, dst: bytes, nh: int, payload_len: int, hop_limit: int = 64,
                 tclass: int = 0, flow: int = 0) -> bytes:
    """The 40-byte fixed header (RFC 8200 §3)."""
    return _HDR.pack(0x60000000 | (tclass << 20) | (flow & 0xFFFFF), payload_len, nh,
                     hop_limit, src, dst)


class ExtError(ValueError):
    """A packet discarded while walking its extension headers; ``reason`` is the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _options_ok(buf: memoryview) -> bool:
    """Hop-by-Hop / Destination options (RFC 8200 §4.2): Pad1, PadN and unknown options
    whose action bits are 00 are skipped; 01/10/11 discard the packet (no ICMP error
    is sent, see the module docstring). Router Alert (5, RFC 2711) is skipped."""
    i, n = 0, len(buf)
    while i < n:
        t = buf[i]
        if t == 0:
            i += 1
            continue
        if i + 1 >= n:
            return False
        ln = buf[i + 1]
        if i + 2 + ln > n:
            return False
        if t not in (1, 5) and t >> 6:
            return False
        i += 2 + ln
    return True


def walk_extensions(pkt: memoryview, nh: int, off: int = IPV6_HLEN
                    ) -> tuple[int, int, tuple[int, int, bool, int] | None]:
    """Walk extension headers from ``off`` (RFC 8200 §4): ``(upper-layer protocol,
    offset of its header, fragment)`` with ``fragment = (next header, offset in bytes,
    more, identification)`` when a Fragment header was met (the walk stops after it).
    Raises :class:`ExtError` naming the reason to discard."""
    n = len(pkt)
    first = off == IPV6_HLEN
    while True:
        if nh == NH_HOPOPTS and not first:
            raise ExtError("bad_hop_by_hop")  # only right after the header (§4.1)
        first = False
        if nh in (NH_HOPOPTS, NH_DSTOPTS, NH_ROUTING):
            if off + 8 > n:
                raise ExtError("truncated")
            hlen = (pkt[off + 1] + 1) * 8
            if off + hlen > n:
                raise ExtError("truncated")
            if nh == NH_ROUTING:
                if pkt[off + 3] != 0:
                    raise ExtError("routing_header")  # segments left: we do not forward
            elif not _options_ok(pkt[off + 2:off + hlen]):
                raise ExtError("bad_option")
            nh = pkt[off]
            off += hlen
            continue
        if nh == NH_FRAGMENT:
            if off + 8 > n:
                raise ExtError("truncated")
            fnh, _r, offflags, ident = _FRAG.unpack_from(pkt, off)
            return fnh, off + 8, (fnh, offflags & 0xFFF8, bool(offflags & 1), ident)
        if nh == NH_NONE:
            raise ExtError("no_next_header")
        return nh, off, None


def fragment(src: bytes, dst: bytes, nh: int, payload: BytesLike, mtu: int, ident: int,
             hop_limit: int = 64) -> list[bytes]:
    """Split one packet's payload into fragments that fit ``mtu`` (RFC 8200 §4.5): every
    fragment but the last carries a multiple of 8 bytes and M; all share ``ident``.
    Returns whole IPv6 packets."""
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    step = (mtu - IPV6_HLEN - 8) & ~7
    if step <= 0:
        raise ValueError(f"MTU {mtu} leaves no room for a fragment")
    out: list[bytes] = []
    n = len(view)
    for off in range(0, n, step):
        chunk = view[off:off + step]
        more = off + step < n
        fh = _FRAG.pack(nh, 0, off | (1 if more else 0), ident)
        out.append(build_header(src, dst, NH_FRAGMENT, 8 + len(chunk), hop_limit)
                   + fh + bytes(chunk))
    return out


def format_addrs(addrs: Iterable[bytes]) -> list[str]:
    """Addresses as text (for messages and counters)."""
    return [str(ipaddress.IPv6Address(a)) for a in addrs]
