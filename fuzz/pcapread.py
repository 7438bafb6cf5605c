"""Read what the fuzz corpora are made of out of a classic pcap (no scapy needed).

:func:`read_frames` yields the Ethernet frames of a file written by
:class:`netstack.link.pcap.PcapLink`; :func:`tcp_streams` reassembles the TCP payload
of every connection, one byte stream per direction, in sequence order (retransmitted
and duplicate bytes are taken once).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def read_frames(path: str | Path) -> Iterator[bytes]:
    """Every frame of a little-endian classic pcap file (linktype Ethernet)."""
    data = Path(path).read_bytes()
    if len(data) < _GLOBAL.size or _GLOBAL.unpack_from(data)[0] != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian classic pcap file")
    pos = _GLOBAL.size
    while pos + _RECORD.size <= len(data):
        _sec, _usec, incl, _orig = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        yield data[pos:pos + incl]
        pos += incl


@dataclass
class TcpSegmentInfo:
    """The parts of one IPv4/TCP frame the corpus builders use."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    flags: int
    header: bytes  # the TCP header with options
    payload: bytes


def tcp_of(frame: bytes) -> TcpSegmentInfo | None:
    """The TCP segment in an untagged Ethernet/IPv4 frame, or None."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = int.from_bytes(ip[2:4], "big")
    if ip[9] != 6 or len(ip) < total or total < ihl + 20:
        return None
    tcp = ip[ihl:total]
    off = (tcp[12] >> 4) * 4
    sport, dport, seq = struct.unpack_from("!HHI", tcp)
    return TcpSegmentInfo(bytes(ip[12:16]), bytes(ip[16:20]), sport, dport, seq, tcp[13],
                          bytes(tcp[:off]), bytes(tcp[off:]))


@dataclass
class _Stream:
    isn: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)

    def add(self, seg: TcpSegmentInfo) -> None:
        if seg.flags & 0x02:  # SYN: data starts at seq + 1
            self.isn = (seg.seq + 1) & 0xFFFFFFFF
            return
        if self.isn is None or not seg.payload:
            return
        off = (seg.seq - self.isn) & 0xFFFFFFFF
        if off < 1 << 31 and len(seg.payload) > len(self.parts.get(off, b"")):
            self.parts[off] = seg.payload

    def data(self) -> bytes:
        out = bytearray()
        for off in sorted(self.parts):
            chunk = self.parts[off]
            if off > len(out):
                break  # a hole: the capture lost bytes
            out += chunk[len(out) - off:]
        return bytes(out)


def tcp_streams(path: str | Path) -> dict[tuple[bytes, int, bytes, int], bytes]:
    """``(src ip, src port, dst ip, dst port) -> payload bytes`` for every direction of
    every TCP connection in the capture (in the order the connections appeared)."""
    streams: dict[tuple[bytes, int, bytes, int], _Stream] = {}
    for frame in read_frames(path):
        seg = tcp_of(frame)
        if seg is None:
            continue
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        streams.setdefault(key, _Stream()).add(seg)
    return {k: s.data() for k, s in streams.items()}


__all__ = ["TcpSegmentInfo", "read_frames", "tcp_of", "tcp_streams"]
