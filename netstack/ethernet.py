"""Ethernet II framing (IEEE 802.3 §3.2.6 type interpretation, RFC 894) and 802.1Q tags.

A frame here is what a TAP device carries: destination MAC (6), source MAC (6),
EtherType (2), payload; no preamble, no FCS. An IEEE 802.1Q tag (TPID 0x8100, or the
802.1ad S-tag 0x88A8) inserts four bytes (TPID, TCI) before the real EtherType.

:class:`EthernetLayer` is the receive-side filter of one interface. VLANs: a frame
tagged with VID 0 (an 802.1Q "priority tag") is treated as untagged; other tags are
accepted only when the interface is configured for that VID (``vlan``), otherwise
they are dropped and counted as ``vlan``. Frames are built untagged unless ``vlan`` is
set, so VLAN support is a matter of configuring it.
"""

from __future__ import annotations

import struct
from collections import defaultdict

from netstack.link.base import BytesLike

__all__ = [
    "BROADCAST",
    "ETHERTYPE_ARP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETHERTYPE_QINQ",
    "ETHERTYPE_VLAN",
    "ETH_HLEN",
    "ETH_ZLEN",
    "EthernetLayer",
    "build_frame",
    "build_header",
    "format_mac",
    "is_multicast",
    "parse_mac",
]

#: Length of an untagged Ethernet II header.
ETH_HLEN = 14
#: Minimum frame length without FCS (802.3 §4.4.2: 64 bytes with the 4-byte FCS).
ETH_ZLEN = 60
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6

_HDR = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")  # TCI, inner EtherType, at offset 14


def build_header(dst: bytes, src: bytes, ethertype: int, vlan: int | None = None) -> bytes:
    """An Ethernet II header, 802.1Q-tagged with VID ``vlan`` (priority 0) when given."""
    if vlan is None:
        return _HDR.pack(dst, src, ethertype)
    return _HDR.pack(dst, src, ETHERTYPE_VLAN) + _TAG.pack(vlan & 0x0FFF, ethertype)


def build_frame(dst: bytes, src: bytes, ethertype: int, payload: BytesLike,
                pad: bool = False) -> bytes:
    """A whole frame; with ``pad`` it is zero-padded to the 60-byte minimum (802.3 §4.2.3.3).

    TAP devices do not need padding, so the interface does not pad by default.
    """
    frame = b"".join((_HDR.pack(dst, src, ethertype), payload))
    if pad and len(frame) < ETH_ZLEN:
        frame += bytes(ETH_ZLEN - len(frame))
    return frame


def is_multicast(mac: BytesLike) -> bool:
    """The I/G bit (802-2014 §8.2): set for group (multicast and broadcast) addresses."""
    return bool(mac[0] & 1)


def format_mac(mac: BytesLike) -> str:
    """``02:00:00:00:00:01`` form."""
    return ":".join(f"{b:02x}" for b in bytes(mac))


def parse_mac(text: str | bytes) -> bytes:
    """Accept six raw bytes or ``aa:bb:cc:dd:ee:ff`` / ``aa-bb-...`` text."""
    if isinstance(text, bytes):
        if len(text) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(text)}")
        return text
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


class EthernetLayer:
    """Receive filter of one interface: address match, EtherType, 802.1Q handling.

    Counters (layer ``eth``): ``frames_in``, ``bytes_in``, ``frames_out``, ``bytes_out``
    and drops by reason: ``short``, ``not_for_us``, ``unknown_ethertype``, ``vlan``;
    ``priority_tagged`` counts VID-0 frames accepted as untagged.
    """

    __slots__ = ("_c", "groups", "mac", "promiscuous", "vlan")

    def __init__(self, mac: bytes, counters: defaultdict[str, int],
                 vlan: int | None = None, promiscuous: bool = False) -> None:
        self.mac = mac
        self.vlan = vlan
        self.promiscuous = promiscuous
        #: Multicast MACs accepted besides broadcast (IPv6: 33:33:..., RFC 2464 §7).
        self.groups: set[bytes] = set()
        self._c = counters
        for name in ("frames_in", "bytes_in", "frames_out", "bytes_out", "short",
                     "not_for_us", "unknown_ethertype", "vlan"):
            counters[name] += 0

    def accept(self, frame: memoryview) -> tuple[int, int, bool]:
        """Classify a received frame: ``(ethertype, payload_offset, link_broadcast)``.

        ``ethertype`` is -1 when the frame was dropped (and counted). Unknown EtherTypes
        are returned as they are; the caller counts them (it knows which it handles).
        ``link_broadcast`` is true for group destinations (RFC 1122 §3.3.6 needs it).
        """
        c = self._c
        n = len(frame)
        c["frames_in"] += 1
        c["bytes_in"] += n
        if n < ETH_HLEN:
            c["short"] += 1
            return -1, 0, False
        dst, _src, ethertype = _HDR.unpack_from(frame, 0)
        group = bool(dst[0] & 1)
        if group:
            if dst != BROADCAST and dst not in self.groups and not self.promiscuous:
                # Only joined groups (IPv6 all-nodes and solicited-node; IPv4 multicast
                # is not used).
                c["not_for_us"] += 1
                return -1, 0, True
        elif dst != self.mac and not self.promiscuous:
            c["not_for_us"] += 1
            return -1, 0, False
        if ethertype != ETHERTYPE_VLAN and ethertype != ETHERTYPE_QINQ:
            if self.vlan is not None:
                c["vlan"] += 1  # untagged frame on a VLAN interface
                return -1, 0, group
            return ethertype, ETH_HLEN, group
        if n < ETH_HLEN + 4:
            c["short"] += 1
            return -1, 0, group
        tci, inner = _TAG.unpack_from(frame, ETH_HLEN)
        vid = tci & 0x0FFF
        if ethertype == ETHERTYPE_VLAN and inner != ETHERTYPE_VLAN and inner != ETHERTYPE_QINQ:
            if vid == 0 and self.vlan is None:
                c["priority_tagged"] += 1
                return inner, ETH_HLEN + 4, group
            if vid == self.vlan:
                return inner, ETH_HLEN + 4, group
        c["vlan"] += 1
        return -1, 0, group

    def header(self, dst: bytes, ethertype: int) -> bytes:
        """Our header towards ``dst`` (tagged when the interface is on a VLAN)."""
        return build_header(dst, self.mac, ethertype, self.vlan)
