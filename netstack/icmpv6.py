"""ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861) messages: build and parse, pure.

Every message carries a checksum over the IPv6 pseudo-header with Next Header 58
(RFC 4443 §2.3, RFC 8200 §8.1); :func:`build` fills it in and :func:`verify` checks it.
Parsing never trusts the wire: a message that is too short, has a bad code or an option
of length zero yields None (RFC 4861 §4.6: "Nodes MUST silently discard an ND packet that
contains an option with length zero"); the caller counts the reason.

ND message bodies (after type, code, checksum):

- Router Solicitation (§4.1): reserved(4), options (Source Link-Layer Address);
- Router Advertisement (§4.2): cur hop limit, M/O flags, router lifetime, reachable
  time, retrans timer, options (SLLA, MTU, Prefix Information);
- Neighbor Solicitation (§4.3): reserved(4), target(16), options (SLLA; the Nonce of
  RFC 7527/RFC 3971 §5.3.2 in our DAD probes);
- Neighbor Advertisement (§4.4): R/S/O flags, target(16), options (Target LLA).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from netstack.checksum import transport_checksum
from netstack.link.base import BytesLike

__all__ = [
    "DEST_UNREACHABLE",
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "NEIGHBOR_ADVERT",
    "NEIGHBOR_SOLICIT",
    "OPT_MTU",
    "OPT_NONCE",
    "OPT_PREFIX",
    "OPT_SLLA",
    "OPT_TLLA",
    "PACKET_TOO_BIG",
    "PARAM_PROBLEM",
    "PROTO_ICMPV6",
    "REDIRECT",
    "ROUTER_ADVERT",
    "ROUTER_SOLICIT",
    "TIME_EXCEEDED",
    "NdOptions",
    "NeighborAdvert",
    "PrefixInfo",
    "RouterAdvert",
    "build",
    "build_echo",
    "build_na",
    "build_ns",
    "build_ra",
    "build_rs",
    "parse_na",
    "parse_ns",
    "parse_options",
    "parse_ra",
    "verify",
]

PROTO_ICMPV6 = 58

DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137

OPT_SLLA = 1
OPT_TLLA = 2
OPT_PREFIX = 3
OPT_MTU = 5
OPT_NONCE = 14

#: NA flags (RFC 4861 §4.4), in the first byte of the body.
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20

#: A lifetime of all ones is infinity (RFC 4861 §4.6.2).
INFINITE = 0xFFFFFFFF

_HEAD = struct.Struct("!BBH")
_ECHO = struct.Struct("!BBHHH")
_RA = struct.Struct("!BBHII")  # cur hop limit, flags, router lifetime, reachable, retrans
_PREFIX = struct.Struct("!BBIII16s")  # prefix length, flags, valid, preferred, reserved, prefix

NAMES = {
    DEST_UNREACHABLE: "dest_unreachable",
    PACKET_TOO_BIG: "packet_too_big",
    TIME_EXCEEDED: "time_exceeded",
    PARAM_PROBLEM: "param_problem",
    ECHO_REQUEST: "echo_request",
    ECHO_REPLY: "echo_reply",
    130: "mld_query",
    131: "mld_report",
    132: "mld_done",
    ROUTER_SOLICIT: "router_solicit",
    ROUTER_ADVERT: "router_advert",
    NEIGHBOR_SOLICIT: "neighbor_solicit",
    NEIGHBOR_ADVERT: "neighbor_advert",
    REDIRECT: "redirect",
    143: "mldv2_report",
}


def build(src: bytes, dst: bytes, type_: int, code: int, body: BytesLike) -> bytes:
    """A whole ICMPv6 message with its checksum (RFC 4443 §2.3)."""
    msg = _HEAD.pack(type_, code, 0) + bytes(body)
    ck = transport_checksum(src, dst, PROTO_ICMPV6, msg)
    return msg[:2] + ck.to_bytes(2, "big") + msg[4:]


def verify(src: bytes, dst: bytes, msg: BytesLike) -> bool:
    """Whether a received message's checksum is right (RFC 4443 §2.3)."""
    return transport_checksum(src, dst, PROTO_ICMPV6, msg) == 0


def build_echo(src: bytes, dst: bytes, type_: int, ident: int, seq: int,
               data: BytesLike = b"") -> bytes:
    """Echo Request (128) or Echo Reply (129) (RFC 4443 §4.1, §4.2)."""
    return build(src, dst, type_, 0, struct.pack("!HH", ident, seq) + bytes(data))


def _lla_option(kind: int, mac: bytes) -> bytes:
    # Type, length in units of 8 octets, the 6-byte MAC (RFC 4861 §4.6.1, RFC 2464 §8).
    return bytes((kind, 1)) + mac


def build_ns(target: bytes, slla: bytes | None = None, nonce: bytes | None = None) -> bytes:
    """Neighbor Solicitation body (RFC 4861 §4.3); ``nonce`` (6 bytes) as in RFC 7527."""
    body = bytes(4) + target
    if slla is not None:
        body += _lla_option(OPT_SLLA, slla)
    if nonce is not None:
        body += bytes((OPT_NONCE, 1)) + nonce
    return body


def build_na(target: bytes, tlla: bytes | None, *, router: bool = False,
             solicited: bool = False, override: bool = True) -> bytes:
    """Neighbor Advertisement body (RFC 4861 §4.4)."""
    flags = ((NA_ROUTER if router else 0) | (NA_SOLICITED if solicited else 0)
             | (NA_OVERRIDE if override else 0))
    body = bytes((flags, 0, 0, 0)) + target
    if tlla is not None:
        body += _lla_option(OPT_TLLA, tlla)
    return body


def build_rs(slla: bytes | None) -> bytes:
    """Router Solicitation body (RFC 4861 §4.1); no SLLA from the unspecified address."""
    return bytes(4) + (b"" if slla is None else _lla_option(OPT_SLLA, slla))


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """A Prefix Information option (RFC 4861 §4.6.2)."""

    prefix: bytes  # 16 bytes
    length: int
    on_link: bool  # L
    autonomous: bool  # A (RFC 4862 §5.5.3)
    valid: int  # seconds, INFINITE = forever
    preferred: int


@dataclass(slots=True)
class NdOptions:
    """The ND options of one message that we use; others are skipped (§4.6)."""

    slla: bytes | None = None
    tlla: bytes | None = None
    mtu: int | None = None
    nonce: bytes | None = None
    prefixes: list[PrefixInfo] = field(default_factory=list)


def build_ra(*, cur_hop_limit: int = 64, router_lifetime: int = 1800,
             reachable_time: int = 0, retrans_timer: int = 0,
             slla: bytes | None = None, mtu: int | None = None,
             prefixes: tuple[PrefixInfo, ...] = ()) -> bytes:
    """Router Advertisement body (RFC 4861 §4.2) — for tests and fake routers."""
    body = _RA.pack(cur_hop_limit, 0, router_lifetime, reachable_time, retrans_timer)
    if slla is not None:
        body += _lla_option(OPT_SLLA, slla)
    if mtu is not None:
        body += struct.pack("!BBHI", OPT_MTU, 1, 0, mtu)
    for p in prefixes:
        flags = (0x80 if p.on_link else 0) | (0x40 if p.autonomous else 0)
        body += bytes((OPT_PREFIX, 4)) + _PREFIX.pack(p.length, flags, p.valid,
                                                      p.preferred, 0, p.prefix)
    return body


def parse_options(buf: memoryview) -> NdOptions | None:
    """Parse ND options (RFC 4861 §4.6); None when one has length zero or runs past the
    end. Options we do not know are skipped; malformed known ones are ignored."""
    opts = NdOptions()
    i, n = 0, len(buf)
    while i < n:
        if i + 2 > n:
            return None
        kind, units = buf[i], buf[i + 1]
        olen = units * 8
        if olen == 0 or i + olen > n:
            return None
        if kind in (OPT_SLLA, OPT_TLLA) and olen == 8:
            mac = bytes(buf[i + 2:i + 8])
            if kind == OPT_SLLA:
                opts.slla = mac
            else:
                opts.tlla = mac
        elif kind == OPT_MTU and olen == 8:
            opts.mtu = int.from_bytes(buf[i + 4:i + 8], "big")
        elif kind == OPT_NONCE:
            opts.nonce = bytes(buf[i + 2:i + olen])
        elif kind == OPT_PREFIX and olen == 32:
            plen, flags, valid, preferred, _r, prefix = _PREFIX.unpack_from(buf, i + 2)
            opts.prefixes.append(PrefixInfo(prefix, plen, bool(flags & 0x80),
                                            bool(flags & 0x40), valid, preferred))
        i += olen
    return opts


def parse_ns(msg: memoryview) -> tuple[bytes, NdOptions] | None:
    """``(target, options)`` of a Neighbor Solicitation, or None (§7.1.1: code 0, at
    least 24 bytes, well-formed options)."""
    if len(msg) < 24 or msg[1] != 0:
        return None
    opts = parse_options(msg[24:])
    if opts is None:
        return None
    return bytes(msg[8:24]), opts


@dataclass(frozen=True, slots=True)
class NeighborAdvert:
    """A parsed Neighbor Advertisement (RFC 4861 §4.4)."""

    target: bytes
    router: bool
    solicited: bool
    override: bool
    opts: NdOptions


def parse_na(msg: memoryview) -> NeighborAdvert | None:
    """A Neighbor Advertisement, or None (§7.1.2: code 0, at least 24 bytes, options)."""
    if len(msg) < 24 or msg[1] != 0:
        return None
    opts = parse_options(msg[24:])
    if opts is None:
        return None
    f = msg[4]
    return NeighborAdvert(bytes(msg[8:24]), bool(f & NA_ROUTER), bool(f & NA_SOLICITED),
                          bool(f & NA_OVERRIDE), opts)


@dataclass(frozen=True, slots=True)
class RouterAdvert:
    """A parsed Router Advertisement (RFC 4861 §4.2)."""

    cur_hop_limit: int
    managed: bool
    other: bool
    router_lifetime: int
    reachable_time: int  # milliseconds, 0 = unspecified
    retrans_timer: int  # milliseconds, 0 = unspecified
    opts: NdOptions


def parse_ra(msg: memoryview) -> RouterAdvert | None:
    """A Router Advertisement, or None (§6.1.2: code 0, at least 16 bytes, options)."""
    if len(msg) < 16 or msg[1] != 0:
        return None
    opts = parse_options(msg[16:])
    if opts is None:
        return None
    hop, flags, lifetime, reachable, retrans = _RA.unpack_from(msg, 4)
    return RouterAdvert(hop, bool(flags & 0x80), bool(flags & 0x40), lifetime, reachable,
                        retrans, opts)
