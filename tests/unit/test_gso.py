"""TSO below TCP, pure: super-datagrams from the Interface (IPv4 and IPv6), the
virtio_net_hdr the TAP writes for them, and the kernel's cut done in software; frames
dissected by scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from netstack.link.base import GsoFrame
from netstack.link.gso import (
    NO_OFFLOAD_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR,
    segment_frame,
    tcp_offsets,
    tx_header,
)
from netstack.tcp.segment import ACK, PSH, TcpOptions, TsoSegment, build, build_options
from tests.unit import test_interface as t4
from tests.unit import test_ipv6 as t6
from tests.unit.frame_util import plain_frames

OUR, PEER, FAR = t4.OUR, t4.PEER, t4.FAR
OPTS = build_options(TcpOptions(ts_val=1000, ts_ecr=2000))
MSS = 1448


def super_segment(src: bytes, dst: bytes, pieces: int, partial: bool = False,
                  tail: int = 0) -> TsoSegment:
    payload = bytes((i * 7) & 0xFF for i in range(pieces * MSS + tail))
    seg = build(src, dst, 40000, 3260, 0x1000, 0x2000, ACK | PSH, 512, OPTS, payload,
                partial)
    return TsoSegment(seg, MSS, partial)


def plain_pieces(src: bytes, dst: bytes, pieces: int, partial: bool = False) -> list[bytes]:
    """The same data as the segments TCP sends without TSO."""
    payload = bytes((i * 7) & 0xFF for i in range(pieces * MSS))
    return [build(src, dst, 40000, 3260, 0x1000 + i * MSS, 0x2000,
                  ACK | (PSH if i == pieces - 1 else 0), 512, OPTS,
                  payload[i * MSS:(i + 1) * MSS], partial) for i in range(pieces)]


def test_interface_sends_one_super_frame_and_reserves_the_ip_ids() -> None:
    iface, t = t4.make()
    t4.resolved(iface)
    seg = super_segment(OUR, PEER, 40)
    small = t4.tcp_segment(t4.OUR_IP, t4.PEER_IP, b"", sport=40000, dport=3260, flags="A")
    t.pending = [(PEER, small), (PEER, seg), (PEER, small)]
    before = iface.counters_dict()["eth"]["bytes_out"]
    f1, g, f3 = iface.frames_to_send(1.0)
    assert isinstance(f1, bytes) and isinstance(f3, bytes) and isinstance(g, GsoFrame)
    assert g.gso_size == MSS and not g.partial and len(g) == 14 + 20 + len(seg.data)
    e = Ether(g.data)
    assert (e.dst, e.src) == (t4.PEER_MAC, t4.OUR_MAC)
    ip = e[IP]
    assert ip.len == 20 + 32 + 40 * MSS > 1500 and ip.flags.DF and ip.ttl == 64
    assert bytes(ip.payload) == seg.data
    t4.checks_ok(g.data)  # IP header checksum (and the whole TCP checksum: not partial)
    id1, idg, id3 = (Ether(f)[IP].id for f in (f1, g.data, f3))
    assert idg == (id1 + 1) & 0xFFFF and id3 == (idg + 40) & 0xFFFF  # 40 IDs for 40
    c = iface.counters_dict()["ip"]
    assert c["out"] == 42 and c["gso_out"] == 1 and c.get("too_big", 0) == 0
    assert iface.counters_dict()["eth"]["bytes_out"] - before == len(f1) + len(g) + len(f3)


def test_the_cut_super_frame_equals_the_frames_sent_without_tso() -> None:
    """segment_frame (the kernel's GSO, here in software) turns our super-frame into
    exactly the frames the interface sends for the plain segments: IDs included."""
    for partial in (False, True):
        a, ta = t4.make()
        b, tb = t4.make()
        t4.resolved(a)
        t4.resolved(b)
        ta.pending = [(PEER, super_segment(OUR, PEER, 9, partial))]
        tb.pending = [(PEER, s) for s in plain_pieces(OUR, PEER, 9, partial)]
        (g,) = a.frames_to_send(2.0)
        plain = b.frames_to_send(2.0)
        assert isinstance(g, GsoFrame) and g.partial == partial
        assert segment_frame(g.data, g.gso_size, partial) == plain
        assert all(len(f) <= 1514 for f in plain)
        if not partial:
            for f in plain:
                t4.checks_ok(f)  # type: ignore[arg-type]


def test_a_super_segment_waiting_for_arp_is_cut_here() -> None:
    iface, t = t4.make()
    t.pending = [(FAR, super_segment(OUR, FAR, 5))]
    (req,) = plain_frames(iface, 0.0)
    assert Ether(req)[ARP].pdst == t4.GW_IP
    assert iface.counters_dict()["ip"]["gso_split"] == 1
    iface.receive_frame(t4.arp_reply(t4.GW_MAC, t4.GW_IP), 0.2)
    frames = iface.frames_to_send(0.2)
    assert len(frames) == 5 and all(isinstance(f, bytes) and len(f) <= 1514 for f in frames)
    tcps = [Ether(f)[TCP] for f in frames]  # type: ignore[arg-type]
    assert [x.seq for x in tcps] == [0x1000 + i * MSS for i in range(5)]
    assert [str(x.flags) for x in tcps] == ["A", "A", "A", "A", "PA"]
    for f in frames:
        t4.checks_ok(f)  # type: ignore[arg-type]
    ids = [Ether(f)[IP].id for f in frames]  # type: ignore[arg-type]
    assert ids == [(ids[0] + i) & 0xFFFF for i in range(5)]


def test_ipv6_super_frame_and_its_cut() -> None:
    iface = t6.make()
    t6._tcp_to(iface, t6.PEER6, 1.0)
    t6.frames6(iface, 1.0)  # the neighbour solicitation
    t6.feed(iface, t6.from_peer(ICMPv6ND_NA(tgt=t6.PEER6, S=1, O=1) /
                                ICMPv6NDOptDstLLAddr(lladdr=t6.PEER_MAC), hlim=255), 1.2)
    iface.frames_to_send(1.2)  # the queued SYN
    src, dst = t6.b6(t6.OUR6), t6.b6(t6.PEER6)
    seg = super_segment(src, dst, 30, partial=True)
    ip6 = iface.ip6
    assert ip6 is not None
    ip6.send_tcp_gso(dst, seg, 1.3, src)
    (g,) = iface.frames_to_send(1.3)
    assert isinstance(g, GsoFrame) and g.gso_size == MSS
    e = Ether(g.data)
    assert e[IPv6].plen == len(seg.data) == 32 + 30 * MSS and e[IPv6].nh == 6
    assert (e[IPv6].src, e[IPv6].dst, e.dst) == (t6.OUR6, t6.PEER6, t6.PEER_MAC)
    vh = VNET_HDR.unpack(tx_header(g.data, MSS))
    assert vh == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6, 14 + 40 + 32, MSS, 54, 16)
    pieces = segment_frame(g.data, MSS, False)
    assert len(pieces) == 30 and all(len(p) == 14 + 40 + 32 + MSS for p in pieces)
    for p in pieces:
        pkt = Ether(p)[IPv6]
        want = pkt[TCP].chksum
        del pkt[TCP].chksum
        assert IPv6(bytes(pkt))[TCP].chksum == want
    c = iface.counters_dict()["ip6"]
    assert c["gso_out"] == 1 and c["out"] >= 30


@pytest.mark.parametrize("vlan", [False, True])
def test_vnet_header_of_a_super_frame(vlan: bool) -> None:
    tag = 4 if vlan else 0
    ip = IP(src=t4.OUR_IP, dst=t4.PEER_IP, id=77, flags="DF")
    tcp = TCP(sport=1, dport=2, flags="A", options=[("NOP", None), ("NOP", None),
                                                    ("Timestamp", (1, 2))])
    eth = Ether(src=t4.OUR_MAC, dst=t4.PEER_MAC)
    pkt = (eth / Dot1Q(vlan=5) if vlan else eth) / ip / tcp / Raw(bytes(3 * MSS))
    frame = bytes(pkt)
    assert tcp_offsets(frame) == (4, 14 + tag, 34 + tag)
    hdr = tx_header(frame, MSS)
    assert VNET_HDR.unpack(hdr) == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 34 + tag + 32, MSS,
                                    34 + tag, 16)
    # without a GSO size: checksum offload only (what every plain TCP frame gets)
    assert VNET_HDR.unpack(tx_header(frame)) == (VNET_F_NEEDS_CSUM, 0, 0, 0, 34 + tag, 16)
    arp = bytes(Ether() / ARP())
    assert tx_header(arp, MSS) is NO_OFFLOAD_HDR and tcp_offsets(arp) is None
    pieces = segment_frame(frame, MSS, False)
    assert [Ether(p)[IP].id for p in pieces] == [77, 78, 79]
    assert all(Ether(p)[IP].len == 20 + 32 + MSS for p in pieces)
    if vlan:
        assert all(Ether(p)[Dot1Q].vlan == 5 for p in pieces)
    for p in pieces:
        t4.checks_ok(p)
    with pytest.raises(ValueError):
        segment_frame(arp, MSS, False)


def test_no_super_segment_without_tso_even_when_long() -> None:
    """Without TSO a datagram over the MTU with DF is still dropped (too_big)."""
    iface, t = t4.make()
    t4.resolved(iface)
    big = t4.tcp_segment(t4.OUR_IP, t4.PEER_IP, bytes(3000), sport=1, dport=2)
    t.pending = [(PEER, big)]
    assert iface.frames_to_send(0.0) == []
    assert iface.counters_dict()["ip"]["too_big"] == 1
