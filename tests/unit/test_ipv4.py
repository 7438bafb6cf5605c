"""IPv4 (RFC 791): validation, filter, routing, header building, fragmentation and
reassembly (RFC 815); frames built and dissected with scapy."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.packet import Raw

from netstack.checksum import verify
from netstack.counters import Counters
from netstack.ipv4 import (
    LIMITED_BROADCAST,
    PROTO_ICMP,
    PROTO_TCP,
    Ipv4Layer,
    Reassembler,
    ReassemblyConfig,
    build_header,
)
from tests.unit.scapy_frag import fragment

OUR = bytes([10, 0, 0, 2])
PEER = bytes([10, 0, 0, 1])
FAR = bytes([192, 168, 5, 5])
GW = IPv4Address("10.0.0.1")


def make(prefix: str = "10.0.0.2/24", gateway: IPv4Address | None = GW, mtu: int = 1500,
         reassembly: ReassemblyConfig | None = None) -> tuple[Ipv4Layer, Counters]:
    c = Counters()
    return Ipv4Layer(IPv4Interface(prefix), gateway, mtu, c.layer("ip"), reassembly), c


def rx(layer: Ipv4Layer, pkt: bytes, now: float = 0.0, link_broadcast: bool = False
       ) -> tuple[int, bytes, bytes, bytes, bool] | None:
    r = layer.receive(memoryview(pkt), link_broadcast, now)
    if r is None:
        return None
    proto, src, dst, payload, bcast = r
    return proto, src, dst, bytes(payload), bcast


def peer_pkt(payload: bytes = b"hello", **kw: Any) -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2", **kw) / Raw(payload))


# ------------------------------------------------------------------ building
def test_build_header_matches_scapy() -> None:
    for df, mf, off in ((True, False, 0), (False, True, 1480), (False, False, 8)):
        hdr = build_header(OUR, FAR, 17, 100, 0xBEEF, df=df, mf=mf, frag_offset=off, ttl=33,
                           tos=0x10)
        ip = IP(hdr + bytes(100))
        assert (ip.version, ip.ihl, ip.tos, ip.len, ip.id, ip.ttl, ip.proto) == (
            4, 5, 0x10, 120, 0xBEEF, 33, 17)
        assert ip.frag == off // 8
        assert bool(ip.flags.DF) == df and bool(ip.flags.MF) == mf
        assert (ip.src, ip.dst) == ("10.0.0.2", "192.168.5.5")
        recomputed = IP(bytes(ip))
        del recomputed.chksum
        assert IP(bytes(recomputed)).chksum == ip.chksum
        assert verify(hdr)


def test_layer_header_df_ttl_and_ident() -> None:
    ipl, _ = make()
    idents = []
    for n in (0, 1, 1480):
        hdr = ipl.header(PEER, PROTO_TCP, n)
        ip = IP(hdr + bytes(n))
        assert ip.flags.DF and not ip.flags.MF and ip.frag == 0
        assert ip.ttl == 64 and ip.proto == 6 and ip.len == 20 + n
        assert hdr == build_header(OUR, PEER, PROTO_TCP, n, ip.id)
        idents.append(ip.id)
    assert idents == [1, 2, 3]
    assert IP(ipl.header(PEER, PROTO_ICMP, 8, df=False) + bytes(8)).flags == 0
    wrap, _ = make()
    wrap._ident = 0xFFFF
    assert IP(wrap.header(PEER, 6, 0)).id == 0


# ----------------------------------------------------------------- receiving
def test_receive_valid() -> None:
    ipl, c = make()
    assert rx(ipl, peer_pkt(proto=6)) == (6, PEER, OUR, b"hello", False)
    assert c.get("ip", "delivered") == 1


def test_receive_ignores_ethernet_padding() -> None:
    ipl, c = make()
    pkt = peer_pkt(b"x", proto=6) + bytes(25)  # a 60-byte minimum frame's padding
    assert rx(ipl, pkt) == (6, PEER, OUR, b"x", False)
    assert c.get("ip", "padded") == 1


def test_bad_checksum() -> None:
    ipl, c = make()
    pkt = bytearray(peer_pkt())
    pkt[10] ^= 0x40
    assert rx(ipl, bytes(pkt)) is None
    assert c.get("ip", "bad_checksum") == 1
    pkt = bytearray(peer_pkt())
    pkt[8] = 1  # TTL changed without fixing the checksum
    assert rx(ipl, bytes(pkt)) is None
    assert c.get("ip", "bad_checksum") == 2


@pytest.mark.parametrize("cut", [0, 1, 19, 20, 24])
def test_truncated(cut: int) -> None:
    ipl, c = make()
    assert rx(ipl, peer_pkt()[:cut]) is None
    assert c.get("ip", "truncated") == 1


def test_bad_version_ihl_and_total_length() -> None:
    ipl, c = make()
    good = peer_pkt()
    v6 = bytearray(good)
    v6[0] = 0x65
    assert rx(ipl, bytes(v6)) is None
    assert c.get("ip", "bad_version") == 1
    short_ihl = bytes(IP(src="10.0.0.1", dst="10.0.0.2", ihl=4) / Raw(b"hello"))
    assert rx(ipl, short_ihl) is None
    assert c.get("ip", "bad_header") == 1
    tiny_total = bytes(IP(src="10.0.0.1", dst="10.0.0.2", len=19) / Raw(b"hello"))
    assert rx(ipl, tiny_total) is None
    assert c.get("ip", "bad_length") == 1
    long_total = bytes(IP(src="10.0.0.1", dst="10.0.0.2", len=100) / Raw(b"hello"))
    assert rx(ipl, long_total) is None
    big_ihl = bytes(IP(src="10.0.0.1", dst="10.0.0.2", ihl=15, len=25) / Raw(b"hello"))
    assert rx(ipl, big_ihl) is None  # IHL beyond the total length
    assert c.get("ip", "bad_length") == 2
    assert c.get("ip", "truncated") == 1


def test_options_accepted_and_bad_options_dropped() -> None:
    ipl, c = make()
    with_opts = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=6,
                         options=[IPOption_NOP(), IPOption_RR(routers=["1.2.3.4"])])
                      / Raw(b"data"))
    assert IP(with_opts).ihl > 5
    assert rx(ipl, with_opts) == (6, PEER, OUR, b"data", False)
    assert c.get("ip", "options") == 1

    def with_raw_options(opts: bytes) -> bytes:
        hl = 20 + len(opts)
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + 4, 1, 0, 64,
                                    6, 0, PEER, OUR) + opts)
        hdr[10:12] = struct.pack("!H", 0xFFFF - (int.from_bytes(hdr, "big") % 0xFFFF))
        assert verify(hdr)
        return bytes(hdr) + b"data"

    assert rx(ipl, with_raw_options(b"\x01\x01\x01\x00")) is not None  # NOPs, EOL
    for bad in (b"\x07\x00\x00\x00",       # length 0
                b"\x07\x01\x00\x00",       # length 1
                b"\x07\x09\x00\x00",       # longer than the header
                b"\x01\x01\x01\x07"):      # type without a length byte
        assert rx(ipl, with_raw_options(bad)) is None
    assert c.get("ip", "bad_options") == 4


def test_address_filter() -> None:
    ipl, c = make()
    other = bytes(IP(src="10.0.0.1", dst="10.0.0.3") / Raw(b"x"))
    assert rx(ipl, other) is None
    assert c.get("ip", "not_for_us") == 1
    mcast = bytes(IP(src="10.0.0.1", dst="224.0.0.1") / Raw(b"x"))
    assert rx(ipl, mcast) is None
    limited = bytes(IP(src="10.0.0.1", dst="255.255.255.255", proto=17) / Raw(b"x"))
    assert rx(ipl, limited, link_broadcast=True) == (17, PEER, LIMITED_BROADCAST, b"x", True)
    directed = bytes(IP(src="10.0.0.1", dst="10.0.0.255", proto=17) / Raw(b"x"))
    assert rx(ipl, directed, link_broadcast=True)[4] is True  # type: ignore[index]
    # RFC 1122 §3.3.6: unicast IP in a link-layer broadcast is discarded.
    assert rx(ipl, peer_pkt(), link_broadcast=True) is None
    assert c.get("ip", "link_broadcast_unicast") == 1
    for src in ("224.0.0.5", "255.255.255.255", "10.0.0.255", "10.0.0.2"):
        assert rx(ipl, bytes(IP(src=src, dst="10.0.0.2") / Raw(b"x"))) is None
    assert c.get("ip", "bad_src") == 4


# ------------------------------------------------------------------- routing
def test_routing() -> None:
    ipl, _ = make()
    assert ipl.route(PEER) == PEER
    assert ipl.route(bytes([10, 0, 0, 200])) == bytes([10, 0, 0, 200])
    assert ipl.route(FAR) == GW.packed
    assert ipl.route(LIMITED_BROADCAST) == LIMITED_BROADCAST
    assert ipl.route(bytes([10, 0, 0, 255])) == LIMITED_BROADCAST
    assert ipl.route(OUR) is None
    assert ipl.route(bytes([224, 0, 0, 1])) is None
    nogw, _ = make(gateway=None)
    assert nogw.route(FAR) is None
    assert nogw.route(PEER) == PEER
    host, _ = make("10.0.0.2/32", gateway=GW)  # everything via the gateway
    assert host.route(PEER) == GW.packed
    assert host.route(FAR) == GW.packed
    p2p, _ = make("10.0.0.0/31", gateway=None)  # RFC 3021: no directed broadcast
    assert p2p.route(bytes([10, 0, 0, 1])) == bytes([10, 0, 0, 1])


# ------------------------------------------------------------- fragmentation
def test_fragment_output_matches_scapy_reassembly() -> None:
    ipl, c = make(mtu=1500)
    payload = random.Random(1).randbytes(4000)
    pkts = ipl.fragment(PEER, PROTO_ICMP, payload)
    assert len(pkts) == 3
    ips = [IP(p) for p in pkts]
    assert [len(p) for p in pkts] == [1500, 1500, 20 + 4000 - 2 * 1480]
    assert [ip.frag * 8 for ip in ips] == [0, 1480, 2960]
    assert [bool(ip.flags.MF) for ip in ips] == [True, True, False]
    assert all(not ip.flags.DF for ip in ips)
    assert len({ip.id for ip in ips}) == 1
    assert all(verify(p[:20]) for p in pkts)
    assert b"".join(p[20:] for p in pkts) == payload
    # Our own reassembler takes them back in any order.
    other, _ = make("10.0.0.1/24")
    for order in (pkts, pkts[::-1], [pkts[1], pkts[2], pkts[0]]):
        results = [other.receive(memoryview(p), False, 0.0) for p in order]
        done = [r for r in results if r is not None]
        assert len(done) == 1 and bytes(done[0][3]) == payload
    assert c.get("ip", "fragments_out") == 3 and c.get("ip", "fragmented") == 1


def test_fragment_small_mtu_multiple_of_8() -> None:
    ipl, _ = make(mtu=68)
    pkts = ipl.fragment(PEER, 17, bytes(range(200)))
    assert all(len(p) - 20 == 48 for p in pkts[:-1])
    assert b"".join(p[20:] for p in pkts) == bytes(range(200))


def scapy_fragments(size: int, fragsize: int = 1480, seed: int = 0) -> tuple[bytes, list[bytes]]:
    data = random.Random(seed).randbytes(size)
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=77) / ICMP(id=1, seq=2) / Raw(data)
    whole = bytes(pkt)
    return whole[20:], [bytes(f) for f in fragment(pkt, fragsize=fragsize)]


@pytest.mark.parametrize("order", ["in", "reversed", "shuffled"])
def test_reassembly_of_scapy_fragments(order: str) -> None:
    ipl, c = make()
    payload, frags = scapy_fragments(5000, 1000)
    assert len(frags) == 6
    if order == "reversed":
        frags = frags[::-1]
    elif order == "shuffled":
        random.Random(3).shuffle(frags)
    results = [rx(ipl, f, 1.0) for f in frags]
    assert results[:-1] == [None] * (len(frags) - 1)
    assert results[-1] == (PROTO_ICMP, PEER, OUR, payload, False)
    assert c.get("ip", "fragments") == 6 and c.get("ip", "reassembled") == 1
    assert len(ipl.reassembler) == 0 and ipl.reassembler.bytes_held == 0


def test_reassembly_duplicates_are_ignored() -> None:
    ipl, c = make()
    payload, frags = scapy_fragments(3000)
    assert rx(ipl, frags[0]) is None
    assert rx(ipl, frags[0]) is None
    assert c.get("ip", "duplicate_fragments") == 1
    assert rx(ipl, frags[1]) is None
    assert rx(ipl, frags[2]) == (PROTO_ICMP, PEER, OUR, payload, False)


def _frag(offset: int, data: bytes, more: bool, ident: int = 9, proto: int = 17) -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=ident, proto=proto, frag=offset // 8,
                    flags="MF" if more else 0) / Raw(data))


def test_overlap_drops_datagram_and_ignores_the_rest() -> None:
    ipl, c = make()
    assert rx(ipl, _frag(0, b"A" * 16, True)) is None
    assert rx(ipl, _frag(8, b"B" * 16, True)) is None  # overlaps 8..16
    assert c.get("ip", "reassembly_overlap") == 1
    assert ipl.reassembler.bytes_held == 0
    # The rest of it cannot complete a mixture: ignored until its timer runs out.
    assert rx(ipl, _frag(16, b"C" * 8, False)) is None
    assert rx(ipl, _frag(0, b"A" * 16, True)) is None
    assert ipl.reassembler.next_deadline() == 30.0
    ipl.reassembler.on_deadline(30.0)
    assert len(ipl.reassembler) == 0
    assert c.get("ip", "reassembly_timeouts") == 0  # an overlap is not also a timeout
    # Same range with different bytes is an overlap too; so is data after the end.
    assert rx(ipl, _frag(0, b"A" * 8, True, ident=10)) is None
    assert rx(ipl, _frag(0, b"Z" * 8, True, ident=10)) is None
    assert rx(ipl, _frag(16, b"A" * 8, True, ident=11)) is None
    assert rx(ipl, _frag(8, b"A" * 8, False, ident=11)) is None  # ends before 24
    assert rx(ipl, _frag(8, b"A" * 8, False, ident=12)) is None
    assert rx(ipl, _frag(8, b"A" * 16, False, ident=12)) is None  # two different ends
    assert rx(ipl, _frag(16, b"A" * 8, False, ident=13)) is None
    assert rx(ipl, _frag(24, b"A" * 8, True, ident=13)) is None  # beyond the end
    assert c.get("ip", "reassembly_overlap") == 5
    # Offset 0 without MF is a whole datagram even while a reassembly of its ident runs.
    assert rx(ipl, _frag(0, b"W" * 8, False, ident=13)) == (17, PEER, OUR, b"W" * 8, False)


def test_reassembly_timeout() -> None:
    ipl, c = make(reassembly=ReassemblyConfig(timeout=30.0))
    _payload, frags = scapy_fragments(3000)
    assert rx(ipl, frags[0], 100.0) is None
    assert rx(ipl, frags[1], 110.0) is None
    assert ipl.reassembler.next_deadline() == 130.0
    ipl.reassembler.on_deadline(129.9)
    assert len(ipl.reassembler) == 1
    ipl.reassembler.on_deadline(130.0)
    assert len(ipl.reassembler) == 0 and ipl.reassembler.bytes_held == 0
    assert c.get("ip", "reassembly_timeouts") == 1
    assert ipl.reassembler.next_deadline() is None
    # The last fragment alone starts a new, incomplete datagram.
    assert rx(ipl, frags[2], 131.0) is None
    assert len(ipl.reassembler) == 1


def test_reassembly_datagram_count_bound() -> None:
    ipl, c = make(reassembly=ReassemblyConfig(max_datagrams=2))
    for ident in (1, 2, 3):
        assert rx(ipl, _frag(0, b"x" * 8, True, ident=ident), float(ident)) is None
    assert len(ipl.reassembler) == 2
    assert c.get("ip", "reassembly_overflow") == 1
    # The oldest (ident 1) was evicted; 2 and 3 can still complete.
    assert rx(ipl, _frag(8, b"y", False, ident=3)) == (17, PEER, OUR, b"x" * 8 + b"y", False)
    assert rx(ipl, _frag(8, b"y", False, ident=1)) is None


def test_reassembly_byte_bound() -> None:
    ipl, c = make(reassembly=ReassemblyConfig(max_bytes=3000))
    assert rx(ipl, _frag(0, b"a" * 1000, True, ident=1)) is None
    assert rx(ipl, _frag(0, b"b" * 1000, True, ident=2)) is None
    assert ipl.reassembler.bytes_held <= 3000
    # Needs room: the oldest other datagram goes.
    assert rx(ipl, _frag(1000, b"b" * 1000, True, ident=2)) is None
    assert c.get("ip", "reassembly_overflow") == 1
    assert len(ipl.reassembler) == 1
    # A datagram that alone exceeds the bound is dropped.
    assert rx(ipl, _frag(2000, b"b" * 1000, True, ident=2)) is None
    assert c.get("ip", "reassembly_overflow") == 2
    assert len(ipl.reassembler) == 0 and ipl.reassembler.bytes_held == 0


def test_bad_fragments() -> None:
    ipl, c = make()
    assert rx(ipl, _frag(0, b"x" * 7, True)) is None  # not a multiple of 8
    assert rx(ipl, _frag(0, b"", True)) is None       # empty, more coming
    assert rx(ipl, _frag(65528, b"x" * 16, False)) is None  # beyond 65535 bytes
    assert c.get("ip", "bad_fragment") == 3
    assert len(ipl.reassembler) == 0


def test_reassembly_key_separates_datagrams() -> None:
    ipl, _ = make()
    assert rx(ipl, _frag(0, b"a" * 8, True, ident=5, proto=17)) is None
    assert rx(ipl, _frag(0, b"b" * 8, True, ident=5, proto=6)) is None  # other protocol
    assert rx(ipl, _frag(8, b"!", False, ident=5, proto=6)) == (6, PEER, OUR, b"b" * 8 + b"!",
                                                                 False)
    assert rx(ipl, _frag(8, b"?", False, ident=5, proto=17)) == (17, PEER, OUR,
                                                                  b"a" * 8 + b"?", False)


def test_largest_datagram_reassembles() -> None:
    ipl, _ = make()
    payload = random.Random(9).randbytes(65535 - 20)
    sender, _ = make("10.0.0.1/24")
    pkts = sender.fragment(OUR, 17, payload)
    results = [rx(ipl, p) for p in pkts]
    assert results[-1] == (17, PEER, OUR, payload, False)


def test_tcp_and_udp_pass_through() -> None:
    ipl, _ = make()
    t = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=3260, dport=5000))
    assert rx(ipl, t) == (6, PEER, OUR, t[20:], False)
    u = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    assert rx(ipl, u)[0] == 17  # type: ignore[index]


def test_mtu_validation() -> None:
    with pytest.raises(ValueError):
        make(mtu=67)


def test_reassembler_api_directly() -> None:
    c = Counters()
    r = Reassembler(c.layer("ip"), ReassemblyConfig(timeout=5.0))
    key = (PEER, OUR, 17, 1)
    assert r.add(key, 16, False, memoryview(b"end"), 0.0) is None
    assert r.add(key, 0, True, memoryview(b"01234567"), 1.0) is None
    assert r.bytes_held > 11
    assert r.add(key, 8, True, memoryview(b"89abcdef"), 2.0) == b"0123456789abcdefend"
    assert len(r) == 0 and r.bytes_held == 0 and r.next_deadline() is None
