"""The virtio_net_hdr of TAP offloads and TCP segmentation of whole frames, pure.

A TAP opened with ``IFF_VNET_HDR`` prefixes every frame with a ``struct virtio_net_hdr``
(legacy layout, little-endian on x86; Linux ``include/uapi/linux/virtio_net.h``)::

    flags u8        NEEDS_CSUM (1): the transport checksum holds the pseudo-header sum;
                    the receiver completes it from csum_start, storing at
                    csum_start + csum_offset. DATA_VALID (2): already checked.
    gso_type u8     NONE 0, TCPV4 1, UDP 3, TCPV6 4 (| ECN 0x80)
    hdr_len u16     length of the headers (Ethernet + IP + TCP) before the payload
    gso_size u16    payload bytes per segment
    csum_start u16  offset of the TCP header in the frame
    csum_offset u16 16: the TCP checksum field

A frame written with ``gso_type`` TCPV4/TCPV6 is a super-frame: Linux
(``virtio_net_hdr_to_skb``) turns it into a GSO skb, which the kernel delivers to its
own TCP as one large segment (as GRO would) or cuts into ``gso_size`` segments with
their own checksums and IPv4 identifications (``tcp_gso_segment``, ``inet_gso_segment``)
when it leaves through a device without TSO. :func:`tx_header` builds the header our
send side needs; :func:`segment_frame` does the kernel's cut in software (the fallback
when a super-frame cannot be handed over, and the reference the tests compare with).
"""

from __future__ import annotations

import struct

from netstack.checksum import internet_checksum
from netstack.link.base import BytesLike
from netstack.tcp.segment import split

__all__ = [
    "ETH_HLEN",
    "NO_OFFLOAD_HDR",
    "VNET_F_DATA_VALID",
    "VNET_F_NEEDS_CSUM",
    "VNET_GSO_NONE",
    "VNET_GSO_TCPV4",
    "VNET_GSO_TCPV6",
    "VNET_HDR",
    "VNET_HLEN",
    "segment_frame",
    "tcp_offsets",
    "tx_header",
]

#: struct virtio_net_hdr (legacy, little-endian on x86): flags, gso_type, hdr_len,
#: gso_size, csum_start, csum_offset.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HLEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_TCPV6 = 4
#: The header of a frame that needs nothing from the kernel.
NO_OFFLOAD_HDR = bytes(VNET_HLEN)
#: Ethernet II header length (no FCS, no VLAN tag).
ETH_HLEN = 14
_TCP_CSUM_OFFSET = 16


def tcp_offsets(frame: BytesLike) -> tuple[int, int, int] | None:
    """``(IP version, IP header offset, TCP header offset)`` of an Ethernet frame (one
    802.1Q tag allowed) carrying TCP directly over IPv4 or IPv6; None for anything else
    (IPv6 extension headers included: we never send them with TCP)."""
    n = len(frame)
    if n < ETH_HLEN:
        return None
    et = (frame[12] << 8) | frame[13]
    off = ETH_HLEN
    if et == 0x8100 and n >= 18:
        et = (frame[16] << 8) | frame[17]
        off += 4
    if et == 0x0800 and n >= off + 20 and frame[off + 9] == 6:
        return 4, off, off + ((frame[off] & 0x0F) << 2)
    if et == 0x86DD and n >= off + 40 and frame[off + 6] == 6:
        return 6, off, off + 40
    return None


def tx_header(frame: BytesLike, gso_size: int = 0) -> bytes:
    """The virtio_net_hdr for one frame we send whose TCP checksum is partial: NEEDS_CSUM
    at the TCP checksum; with ``gso_size`` also GSO TCPV4/TCPV6 and ``hdr_len`` up to the
    payload. Frames that are not TCP get the all-zero header."""
    where = tcp_offsets(frame)
    if where is None:
        return NO_OFFLOAD_HDR
    version, _l3, l4 = where
    if not gso_size:
        return VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, l4, _TCP_CSUM_OFFSET)
    hdr_len = l4 + ((frame[l4 + 12] >> 4) << 2)
    gso_type = VNET_GSO_TCPV4 if version == 4 else VNET_GSO_TCPV6
    return VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, l4,
                         _TCP_CSUM_OFFSET)


def segment_frame(frame: BytesLike, gso_size: int, partial: bool) -> list[bytes]:
    """Cut a TCP super-frame into frames of ``gso_size`` payload bytes, as the kernel
    does for a GSO skb (:func:`netstack.tcp.segment.split` for TCP; IPv4: total length,
    identification + i, header checksum; IPv6: payload length). ``partial``: the TCP
    checksums stay pseudo-header sums (for a link that completes them). Raises
    ValueError for a frame that is not TCP over IPv4/IPv6."""
    where = tcp_offsets(frame)
    if where is None:
        raise ValueError("not a TCP frame over IPv4 or IPv6")
    version, l3, l4 = where
    view = frame if isinstance(frame, memoryview) else memoryview(frame)
    lead = bytes(view[:l3])
    iph = bytearray(view[l3:l4])
    if version == 4:
        src, dst = bytes(iph[12:16]), bytes(iph[16:20])
        ident = (iph[4] << 8) | iph[5]
    else:
        src, dst = bytes(iph[8:24]), bytes(iph[24:40])
        ident = 0
    out: list[bytes] = []
    for i, seg in enumerate(split(view[l4:], src, dst, gso_size, partial)):
        h = bytearray(iph)
        if version == 4:
            h[2:4] = (len(h) + len(seg)).to_bytes(2, "big")
            h[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
            h[10:12] = b"\0\0"
            h[10:12] = internet_checksum(h).to_bytes(2, "big")
        else:
            h[4:6] = len(seg).to_bytes(2, "big")
        out.append(b"".join((lead, h, seg)))
    return out
