"""UDP (RFC 768) in the interface, the unconfigured interface (RFC 2131 before BOUND),
runtime address changes, and the RFC 5227 ARP probe; packets checked with scapy."""

from __future__ import annotations

import itertools
import random
from ipaddress import IPv4Address, IPv4Interface

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from netstack.arp import ProbeConfig
from netstack.counters import Counters
from netstack.interface import UNCONFIGURED, Interface, InterfaceConfig
from netstack.udp import UdpDatagram, build_udp
from tests.unit.frame_util import plain_frames

OUR_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:01"
BCAST = "ff:ff:ff:ff:ff:ff"


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def make(ip: IPv4Interface = UNCONFIGURED, mtu: int = 1500) -> Interface:
    return Interface(InterfaceConfig(mac=mac(OUR_MAC), ip=ip, mtu=mtu, strict=True),
                     counters=Counters())


def frame(pkt: object, dst: str = OUR_MAC, src: str = PEER_MAC) -> bytes:
    return bytes(Ether(dst=dst, src=src) / pkt)


def test_build_udp_matches_scapy_checksum() -> None:
    src, dst = IPv4Address("10.0.0.2").packed, IPv4Address("10.0.0.1").packed
    for payload in (b"", b"x", b"hello world" * 7):
        seg = build_udp(src, dst, 68, 67, payload)
        ref = bytes(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=68, dport=67)
                    / Raw(payload))[20:]
        assert seg == ref
    # a checksum that computes to zero is sent as all ones (RFC 768)
    for i in range(70000):
        seg = build_udp(src, dst, 1, 2, i.to_bytes(4, "big"))
        if seg[6:8] == b"\xff\xff":
            break
    else:
        pytest.fail("no payload with checksum 0 found")
    assert UDP(seg).chksum == 0xFFFF


def test_receive_validates_and_demultiplexes() -> None:
    iface = make(IPv4Interface("10.0.0.2/24"))
    got: list[tuple[bytes, int, bytes, bool, float]] = []

    def h(d: UdpDatagram, now: float) -> None:
        got.append((d.src, d.sport, bytes(d.payload), d.broadcast, now))

    iface.udp.bind(68, h)
    good = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=67, dport=68) / Raw(b"abc")
    iface.receive_frame(frame(good), 1.0)
    bad = bytearray(frame(good))
    bad[-1] ^= 1
    iface.receive_frame(bytes(bad), 1.0)
    nocheck = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=67, dport=68, chksum=0) / Raw(b"z")
    iface.receive_frame(frame(nocheck), 2.0)
    bcast = IP(src="10.0.0.1", dst="255.255.255.255") / UDP(sport=67, dport=68) / Raw(b"b")
    iface.receive_frame(frame(bcast, dst=BCAST), 3.0)
    iface.receive_frame(frame(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=69)), 3.0)
    longer = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=67, dport=68, len=100) / Raw(b"q")
    iface.receive_frame(frame(longer), 3.0)
    short = IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / Raw(b"1234")
    iface.receive_frame(frame(short), 3.0)
    peer = IPv4Address("10.0.0.1").packed
    assert got == [(peer, 67, b"abc", False, 1.0), (peer, 67, b"z", False, 2.0),
                   (peer, 67, b"b", True, 3.0)]
    c = iface.counters_dict()["udp"]
    assert (c["bad_checksum"], c["no_checksum"], c["no_port"], c["bad_length"],
            c["short"]) == (1, 1, 1, 1, 1)


def test_unconfigured_sends_from_zero_and_accepts_only_udp() -> None:
    iface = make()
    assert not iface.configured
    iface.start(0.0)
    assert iface.frames_to_send(0.0) == []  # no announcement of 0.0.0.0
    got: list[bytes] = []
    iface.udp.bind(68, lambda d, now: got.append(bytes(d.payload)))
    iface.send_udp(b"\xff" * 4, 68, 67, b"discover", 0.0)
    (out,) = plain_frames(iface, 0.0)
    e = Ether(out)
    assert e.dst == BCAST and e[IP].src == "0.0.0.0" and e[IP].dst == "255.255.255.255"
    assert e[UDP].sport == 68 and e[UDP].dport == 67 and bytes(e[UDP].payload) == b"discover"
    assert UDP(bytes(e[UDP])).chksum == e[UDP].chksum
    # unicast to the address being offered is accepted before we own it (RFC 2131 §4.1)
    offer = IP(src="10.0.0.1", dst="10.0.0.57") / UDP(sport=67, dport=68) / Raw(b"offer")
    iface.receive_frame(frame(offer), 0.1)
    assert got == [b"offer"]
    # ...but not ping (the server pings the address before offering it), nor TCP, nor ARP
    iface.receive_frame(frame(IP(src="10.0.0.1", dst="10.0.0.57") / ICMP()), 0.1)
    iface.receive_frame(frame(IP(src="10.0.0.1", dst="10.0.0.57") / TCP()), 0.1)
    iface.receive_frame(frame(ARP(op=1, hwsrc=PEER_MAC, psrc="10.0.0.1", pdst="0.0.0.0"),
                              dst=BCAST), 0.1)
    assert iface.frames_to_send(0.1) == []
    c = iface.counters_dict()
    assert c["ip"]["unconfigured"] == 2 and c["arp"]["unconfigured"] == 1


def test_set_address_configures_and_changes_at_runtime() -> None:
    iface = make(mtu=1500)
    iface.set_address(IPv4Interface("10.0.0.57/24"), IPv4Address("10.0.0.1"), 5.0, mtu=1400)
    assert iface.configured and iface.mtu == 1400 and iface.mss == 1360
    assert iface.gateway == IPv4Address("10.0.0.1")
    (ann,) = plain_frames(iface, 5.0)  # RFC 5227 §2.3 announcement of the new address
    a = Ether(ann)[ARP]
    assert a.psrc == a.pdst == "10.0.0.57" and a.op == 1
    who = ARP(op=1, hwsrc=PEER_MAC, psrc="10.0.0.1", pdst="10.0.0.57")
    iface.receive_frame(frame(who, dst=BCAST), 5.1)
    (is_at,) = plain_frames(iface, 5.1)  # ARP is answered for the new address
    assert Ether(is_at)[ARP].op == 2 and Ether(is_at)[ARP].psrc == "10.0.0.57"
    iface.receive_frame(frame(IP(src="10.0.0.1", dst="10.0.0.57") / ICMP(id=1, seq=1)), 5.1)
    (reply,) = plain_frames(iface, 5.1)
    assert Ether(reply)[IP].src == "10.0.0.57" and Ether(reply)[ICMP].type == 0
    # not accepted any more for other addresses once configured
    iface.receive_frame(frame(IP(src="10.0.0.1", dst="10.0.0.99") / UDP(dport=68)), 5.2)
    assert iface.counters_dict()["ip"]["not_for_us"] == 1
    # a lease MTU never exceeds the link's
    iface.set_address(IPv4Interface("10.0.0.58/24"), None, 6.0, mtu=9000)
    assert iface.mtu == 1500 and iface.ip == IPv4Address("10.0.0.58").packed
    iface.clear_address()
    assert not iface.configured and iface.address == UNCONFIGURED


def test_arp_probe_clear_after_probes_and_wait() -> None:
    iface = make()
    cfg = ProbeConfig(wait=1.0, num=3, min_interval=1.0, max_interval=2.0, announce_wait=2.0)
    target = IPv4Address("10.0.0.57").packed
    probe = iface.arp.probe(target, 0.0, cfg, random.Random(1))
    now = 0.0
    sent = []
    for _ in range(50):
        t = iface.next_deadline()
        if t is None:
            break
        now = t
        iface.on_deadline(now)
        for f in plain_frames(iface, now):
            sent.append((now, Ether(f)))
    assert probe.result == "clear"
    assert len(sent) == 3
    times = [t for t, _ in sent]
    assert 0.0 <= times[0] < 1.0
    assert all(1.0 <= b - a <= 2.0 for a, b in itertools.pairwise(times))
    assert now == pytest.approx(times[-1] + 2.0)
    for _, e in sent:  # RFC 5227 §2.1.1 probe format
        assert e.dst == BCAST and e[ARP].op == 1 and e[ARP].psrc == "0.0.0.0"
        assert e[ARP].hwdst == "00:00:00:00:00:00" and e[ARP].pdst == "10.0.0.57"
        assert e[ARP].hwsrc == OUR_MAC


@pytest.mark.parametrize("kind", ["reply", "announce", "probe"])
def test_arp_probe_conflict(kind: str) -> None:
    iface = make()
    target = IPv4Address("10.0.0.57").packed
    probe = iface.arp.probe(target, 0.0, ProbeConfig.fast(), random.Random(2))
    iface.on_deadline(0.2)
    if kind == "reply":
        pkt = ARP(op=2, hwsrc="02:aa:00:00:00:01", psrc="10.0.0.57", hwdst=OUR_MAC,
                  pdst="0.0.0.0")
    elif kind == "announce":
        pkt = ARP(op=1, hwsrc="02:aa:00:00:00:01", psrc="10.0.0.57", pdst="10.0.0.57")
    else:  # someone else probing for the same address at the same time
        pkt = ARP(op=1, hwsrc="02:aa:00:00:00:01", psrc="0.0.0.0", pdst="10.0.0.57")
    iface.receive_frame(frame(pkt, dst=BCAST, src="02:aa:00:00:00:01"), 0.3)
    assert probe.result == "conflict" and probe.conflict_mac == mac("02:aa:00:00:00:01")
    assert iface.counters_dict()["arp"]["probe_conflicts"] == 1


def test_arp_probe_ignores_our_own_and_unrelated_packets() -> None:
    iface = make()
    probe = iface.arp.probe(IPv4Address("10.0.0.57").packed, 0.0, ProbeConfig.fast(),
                            random.Random(3))
    own = ARP(op=1, hwsrc=OUR_MAC, psrc="0.0.0.0", pdst="10.0.0.57")
    other = ARP(op=1, hwsrc=PEER_MAC, psrc="10.0.0.1", pdst="10.0.0.9")
    iface.receive_frame(frame(own, dst=BCAST, src=OUR_MAC), 0.05)
    iface.receive_frame(frame(other, dst=BCAST), 0.05)
    assert probe.result is None


def test_partial_checksum_accepted_only_when_the_link_vouches() -> None:
    """A TAP with offloads hands over the kernel's own datagrams with a partial checksum
    (NEEDS_CSUM): checked, they look corrupt; the interface must take csum_ok from the
    link, and without it a wrong checksum is still dropped."""
    from collections import defaultdict

    from netstack.udp import parse_udp

    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    good = bytearray(build_udp(src, dst, 67, 68, b"offer"))
    good[6:8] = b"\x12\x34"  # what a partial (pseudo-header only) sum looks like to us
    c: defaultdict[str, int] = defaultdict(int)
    assert parse_udp(src, dst, memoryview(bytes(good)), c) is None
    assert c["bad_checksum"] == 1
    r = parse_udp(src, dst, memoryview(bytes(good)), c, csum_ok=True)
    assert r is not None and bytes(r[2]) == b"offer" and r[:2] == (67, 68)
