"""TCP segment header and options: parse and build (RFC 9293 §3.1, RFC 7323, RFC 2018).

Parsing never trusts the wire: a truncated header, a data offset outside the segment
or an option whose length runs past the header raises :class:`SegmentError` naming
the field and value; the TCP layer counts it and drops the segment.

Segmentation offload (TSO): a :class:`TsoSegment` is one header followed by ``k`` whole
pieces of ``gso_size`` payload bytes, for a link that cuts it into ``k`` segments itself
(a TAP with ``VIRTIO_NET_HDR_GSO_TCPV4/6``: the kernel does). :func:`split` does the
same cut in software, as Linux's ``tcp_gso_segment`` does: every piece gets the header
with its sequence number advanced, FIN and PSH only on the last piece, CWR only on the
first, and its own checksum (full, or the pseudo-header sum when ``partial``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from netstack.checksum import (
    fold,
    ones_residue,
    ones_sum,
    pseudo_header_sum,
    transport_checksum,
    transport_checksum_parts,
)

if TYPE_CHECKING:  # (a runtime import would cycle: netstack.link -> tap -> gso -> here)
    from netstack.link.base import BytesLike

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TS = 8

_HDR = struct.Struct("!HHIIBBHHH")
_TS_FAST = b"\x01\x01\x08\x0a"
_TS_VALS = struct.Struct("!II")


class SegmentError(ValueError):
    """A malformed TCP segment; ``reason`` is the counter name, the message the detail."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class TcpOptions:
    """Options of one segment (None / empty when absent)."""

    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    ts_val: int | None = None
    ts_ecr: int = 0
    sack: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Segment:
    """A parsed TCP segment; ``payload`` is a view into the received frame."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    opts: TcpOptions
    payload: memoryview

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload length plus one for SYN and one for FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


def verify_checksum(src: bytes, dst: bytes, segment: memoryview) -> bool:
    """Whether the segment's checksum is right under the pseudo-header of the addresses'
    family: IPv4 for 4-byte addresses (RFC 9293 §3.1), IPv6 for 16-byte (RFC 8200 §8.1)."""
    return transport_checksum(src, dst, 6, segment) == 0


def _parse_options(buf: memoryview, opts: TcpOptions) -> None:
    i = 0
    n = len(buf)
    while i < n:
        kind = buf[i]
        if kind == OPT_EOL:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise SegmentError("bad_option", f"TCP option kind {kind} at {i}: no length byte")
        olen = buf[i + 1]
        if olen < 2 or i + olen > n:
            raise SegmentError("bad_option", f"TCP option kind {kind} at {i}: length {olen}")
        if kind == OPT_MSS:
            if olen != 4:
                raise SegmentError("bad_option", f"TCP option MSS: length {olen}, expected 4")
            opts.mss = (buf[i + 2] << 8) | buf[i + 3]
        elif kind == OPT_WSCALE:
            if olen != 3:
                raise SegmentError("bad_option", f"TCP option WSCALE: length {olen}, expected 3")
            opts.wscale = min(buf[i + 2], 14)  # RFC 7323 §2.3: values above 14 are taken as 14
        elif kind == OPT_SACK_PERM:
            if olen != 2:
                raise SegmentError("bad_option", f"TCP option SACK-permitted: length {olen}")
            opts.sack_perm = True
        elif kind == OPT_TS:
            if olen != 10:
                raise SegmentError("bad_option", f"TCP option timestamps: length {olen}")
            opts.ts_val, opts.ts_ecr = _TS_VALS.unpack_from(buf, i + 2)
        elif kind == OPT_SACK:
            if (olen - 2) % 8 or olen == 2:
                raise SegmentError("bad_option", f"TCP option SACK: length {olen}")
            for j in range(i + 2, i + olen, 8):
                opts.sack.append(_TS_VALS.unpack_from(buf, j))
        i += olen


def parse(segment: memoryview) -> Segment:
    """Parse a TCP segment (header, options, payload view). Raises :class:`SegmentError`."""
    n = len(segment)
    if n < 20:
        raise SegmentError("truncated", f"TCP segment of {n} bytes is shorter than 20")
    sport, dport, seq, ack, off, flags, window, _csum, _urg = _HDR.unpack_from(segment)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > n:
        raise SegmentError("bad_offset", f"TCP data offset {hlen} (segment {n} bytes)")
    opts = TcpOptions()
    if hlen > 20:
        if hlen == 32 and segment[20:24] == _TS_FAST:
            opts.ts_val, opts.ts_ecr = _TS_VALS.unpack_from(segment, 24)
        else:
            _parse_options(segment[20:hlen], opts)
    return Segment(sport, dport, seq, ack, flags, window, opts, segment[hlen:])


def build_options(opts: TcpOptions) -> bytes:
    """Encode options, NOP-padded to a multiple of 4 bytes (RFC 9293 §3.2)."""
    out = bytearray()
    if opts.mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, opts.mss)
    if opts.sack_perm:
        out += b"\x01\x01\x04\x02"
    if opts.ts_val is not None:
        out += _TS_FAST + _TS_VALS.pack(opts.ts_val, opts.ts_ecr)
    if opts.wscale is not None:
        out += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, opts.wscale)
    if opts.sack:
        out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(opts.sack))
        for left, right in opts.sack:
            out += _TS_VALS.pack(left, right)
    while len(out) % 4:
        out.append(OPT_NOP)
    return bytes(out)


def build(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
          window: int, options: bytes = b"", payload: bytes | memoryview = b"",
          partial: bool = False) -> bytes:
    """Build a whole segment with its checksum (RFC 9293 §3.1); ``src``/``dst`` are 4-byte
    (IPv4) or 16-byte (IPv6, RFC 8200 §8.1 pseudo-header) addresses.

    ``partial``: leave the checksum to the NIC (a TAP with offloads): the field holds the
    folded pseudo-header sum, as Linux's CHECKSUM_PARTIAL does, and the payload is not
    summed here at all."""
    hlen = 20 + len(options)
    header = _HDR.pack(sport, dport, seq, ack, (hlen // 4) << 4, flags, window, 0, 0) + options
    if partial:
        csum = fold(pseudo_header_sum(src, dst, 6, hlen + len(payload)))
    else:
        csum = transport_checksum_parts(src, dst, 6, (header, payload), hlen + len(payload))
    return b"".join((header[:16], csum.to_bytes(2, "big"), header[18:], payload))


_HDR_TS = struct.Struct("!HHIIBBHHHIII")  # fixed header + NOP NOP TS (RFC 7323 App. A)
_TS_WORD = 0x0101080A  # NOP, NOP, kind 8, length 10


def build_ts(pseudo_base: int, sport: int, dport: int, seq: int, ack: int, flags: int,
             window: int, ts_val: int, ts_ecr: int, payload: bytes | memoryview,
             partial: bool = False) -> bytes:
    """:func:`build` for the common segment of a connection with timestamps: a 32-byte
    header whose only option is the aligned NOP NOP TS layout (RFC 7323 Appendix A),
    packed at once; byte-identical to ``build(src, dst, ..., build_options(TcpOptions(
    ts_val=ts_val, ts_ecr=ts_ecr)), payload, partial)``. ``pseudo_base`` is the
    connection's pseudo-header sum without the length (:func:`pseudo_header_base`): the
    length is added here (congruent modulo 0xFFFF for IPv6's 32-bit length too)."""
    total = 32 + len(payload)
    header = _HDR_TS.pack(sport, dport, seq, ack, 0x80, flags, window, 0, 0, _TS_WORD,
                          ts_val, ts_ecr)
    if partial:
        csum = fold(pseudo_base + total)
    else:
        csum = 0xFFFF - fold(pseudo_base + total + int.from_bytes(header, "big")
                             + ones_sum(payload))
    return b"".join((header[:16], csum.to_bytes(2, "big"), header[18:], payload))


#: The Ethernet (``{n}s``, 14 bytes untagged or 18 with an 802.1Q tag), IPv4 (20 bytes,
#: RFC 791 §3.1) and TCP (32 bytes: NOP NOP TS, RFC 7323 Appendix A) headers of one
#: frame of a :class:`SegmentRun`, by Ethernet header length.
_RUN_HDR: dict[int, struct.Struct] = {}


def _run_header(eth_len: int) -> struct.Struct:
    st = _RUN_HDR.get(eth_len)
    if st is None:
        st = _RUN_HDR[eth_len] = struct.Struct(f"!{eth_len}sBBHHHBBH4s4sHHIIBBHHHIII")
    return st


class SegmentRun:
    """``count`` consecutive full-sized segments of new data of one connection, sent in
    one pass: the same header (timestamps in the aligned NOP NOP TS layout of RFC 7323
    Appendix A, no SACK blocks) but for SEQ, which advances by ``mss`` from ``seq``, and
    PSH, set on the last segment only when ``psh``. ``payload`` holds ``count * mss``
    bytes (a copy: the send buffer may change before the run is framed).

    A run is exactly the segments :func:`build_ts` would make one by one
    (:meth:`segments`, the general path); :meth:`frames` makes the whole Ethernet +
    IPv4 + TCP frames of the run in one loop for an interface that has the Ethernet
    header of the next hop (RFC 9293 §3.1, RFC 791 §3.1, checksums per RFC 1071)."""

    __slots__ = ("ack", "count", "dport", "mss", "partial", "payload", "pseudo_base",
                 "psh", "seq", "sport", "ts_ecr", "ts_val", "window")

    def __init__(self, pseudo_base: int, sport: int, dport: int, seq: int, ack: int,
                 window: int, ts_val: int, ts_ecr: int, payload: bytes, mss: int,
                 psh: bool, partial: bool) -> None:
        if mss <= 0 or not payload or len(payload) % mss:
            raise ValueError(f"a run is whole segments: {len(payload)} bytes, mss {mss}")
        self.pseudo_base = pseudo_base
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.window = window
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.payload = payload
        self.mss = mss
        self.psh = psh
        self.partial = partial
        self.count = len(payload) // mss

    def __repr__(self) -> str:
        return f"SegmentRun({self.count} x {self.mss} bytes, seq={self.seq})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmentRun):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def segments(self) -> list[bytes]:
        """The run as TCP segments, each made by :func:`build_ts`."""
        mss = self.mss
        view = memoryview(self.payload)
        last = self.count - 1
        out = []
        for i in range(self.count):
            flags = ACK | PSH if self.psh and i == last else ACK
            out.append(build_ts(self.pseudo_base, self.sport, self.dport,
                                (self.seq + i * mss) & 0xFFFFFFFF, self.ack, flags,
                                self.window, self.ts_val, self.ts_ecr,
                                view[i * mss:(i + 1) * mss], self.partial))
        return out

    def frames(self, eth: bytes, src: bytes, dst: bytes, ident: int) -> list[bytes]:
        """The run as whole frames: Ethernet header ``eth`` (the next hop's, possibly
        802.1Q-tagged), then the IPv4 header :meth:`netstack.ipv4.Ipv4Layer.header`
        makes (version 4, IHL 5, TOS 0, DF, TTL 64, protocol 6) from ``src`` to ``dst``
        with identifications ``ident``, ``ident + 1``, ... (modulo 2**16), then the TCP
        segment; byte-identical to those headers joined to :meth:`segments`.

        Both checksums are computed from cached partial sums (RFC 1071 §2: a 32-bit
        field is congruent to the sum of its two 16-bit words modulo 0xFFFF, so fields
        are added as integers, never serialised to be summed): the IPv4 header sum is
        constant but for the identification, the TCP sum but for SEQ, the payload and
        PSH. For a sum ``s > 0`` the checksum ``~fold(s)`` (RFC 1071 §4.1, as
        :func:`netstack.checksum.fold` and the end-around carry compute it) equals
        ``(-s) % 0xFFFF``, and the payload enters as its residue
        (:func:`netstack.checksum.ones_residue`).
        """
        mss = self.mss
        pack = _run_header(len(eth)).pack
        tcp_len = 32 + mss
        ip_total = 20 + tcp_len
        s = int.from_bytes(src, "big")
        d = int.from_bytes(dst, "big")
        # IPv4: 0x4500, total length, DF, TTL/protocol, addresses (RFC 791 §3.1).
        ip_neg = -(0x4500 + ip_total + 0x4000 + (64 << 8 | 6) + s + d)
        sport, dport, ack, window = self.sport, self.dport, self.ack, self.window
        ts_val, ts_ecr = self.ts_val, self.ts_ecr
        # TCP: pseudo-header with the length, ports, ACK, data offset 8 with ACK, window,
        # the NOP NOP TS word and both timestamps (RFC 9293 §3.1, RFC 7323 App. A).
        tcp_neg = -(self.pseudo_base + tcp_len + sport + dport + ack + (0x80 << 8 | ACK)
                    + window + 0x0101080A + ts_val + ts_ecr)
        partial = self.partial
        if partial:
            csum = fold(self.pseudo_base + tcp_len)
        residue = ones_residue
        payload = self.payload
        seq = self.seq
        out: list[bytes] = []
        append = out.append
        last = len(payload) - mss
        flags = ACK
        for off in range(0, len(payload), mss):
            chunk = payload[off:off + mss]
            seqno = (seq + off) & 0xFFFFFFFF
            if off == last and self.psh:
                flags = ACK | PSH
                tcp_neg -= PSH
            if not partial:
                csum = (tcp_neg - seqno - residue(chunk)) % 0xFFFF
            append(pack(eth, 0x45, 0, ip_total, ident, 0x4000, 64, 6,
                        (ip_neg - ident) % 0xFFFF, src, dst, sport, dport, seqno, ack, 0x80,
                        flags, window, csum, 0, 0x0101080A, ts_val, ts_ecr) + chunk)
            ident = (ident + 1) & 0xFFFF
        return out


def pseudo_header_base(src: bytes, dst: bytes) -> int:
    """The TCP pseudo-header sum of ``src``/``dst`` without the length (RFC 9293 §3.1,
    RFC 8200 §8.1), for :func:`build_ts`."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 6


class TsoSegment:
    """A TCP super-segment for a link that segments (TSO): ``data`` is one whole segment
    (header, options, ``k * gso_size`` payload bytes) whose checksum is partial when
    ``partial`` (the pseudo-header sum, as :func:`build` leaves it), else complete over
    the whole super-segment. The link cuts it into ``k`` segments (see :func:`split`)."""

    __slots__ = ("data", "gso_size", "partial")

    def __init__(self, data: bytes, gso_size: int, partial: bool) -> None:
        self.data = data
        self.gso_size = gso_size
        self.partial = partial

    def __len__(self) -> int:
        return len(self.data)

    @property
    def segments(self) -> int:
        """How many segments the link makes of it."""
        hlen = (self.data[12] >> 4) * 4
        return max(1, -(-(len(self.data) - hlen) // self.gso_size))

    def __repr__(self) -> str:
        return f"TsoSegment({len(self.data)} bytes, gso_size={self.gso_size})"


def split(segment: BytesLike, src: bytes, dst: bytes, gso_size: int,
          partial: bool = False) -> list[bytes]:
    """Cut a TCP super-segment into segments of ``gso_size`` payload bytes (the last may
    be shorter), the way a TSO link does (Linux ``tcp_gso_segment``): the header is
    copied with SEQ advanced by the payload before it, FIN and PSH are kept on the last
    segment only, CWR on the first only; each checksum is computed anew under the
    pseudo-header of ``src``/``dst`` (4 or 16 bytes), or left as the pseudo-header sum
    when ``partial``. A segment that fits stays one segment (its checksum redone)."""
    if gso_size <= 0:
        raise ValueError(f"gso_size {gso_size}: must be positive")
    view = segment if isinstance(segment, memoryview) else memoryview(segment)
    hlen = (view[12] >> 4) * 4
    header = bytearray(view[:hlen])
    header[16:18] = b"\0\0"
    seq0 = int.from_bytes(header[4:8], "big")
    flags = header[13]
    payload = view[hlen:]
    n = len(payload)
    out: list[bytes] = []
    off = 0
    while True:
        chunk = payload[off:off + gso_size]
        last = off + gso_size >= n
        h = bytearray(header)
        h[4:8] = ((seq0 + off) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags if last else flags & ~(FIN | PSH)
        h[13] = f if off == 0 else f & ~CWR
        length = hlen + len(chunk)
        if partial:
            csum = fold(pseudo_header_sum(src, dst, 6, length))
        else:
            csum = transport_checksum_parts(src, dst, 6, (h, chunk), length)
        h[16:18] = csum.to_bytes(2, "big")
        out.append(b"".join((h, chunk)))
        if last:
            return out
        off += gso_size


#: What a connection outputs: a segment, a TSO super-segment or a run of segments.
OutSegment: TypeAlias = bytes | TsoSegment | SegmentRun
