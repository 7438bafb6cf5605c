"""Ethernet II framing and the receive filter, checked against scapy."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from netstack.counters import Counters
from netstack.ethernet import (
    BROADCAST,
    ETH_HLEN,
    ETH_ZLEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetLayer,
    build_frame,
    build_header,
    format_mac,
    is_multicast,
    parse_mac,
)

OUR = bytes.fromhex("020000000002")
PEER = bytes.fromhex("020000000001")


def layer(vlan: int | None = None) -> tuple[EthernetLayer, Counters]:
    c = Counters()
    return EthernetLayer(OUR, c.layer("eth"), vlan=vlan), c


def test_build_header_matches_scapy() -> None:
    hdr = build_header(PEER, OUR, ETHERTYPE_IPV4)
    assert len(hdr) == ETH_HLEN
    e = Ether(hdr)
    assert e.dst == "02:00:00:00:00:01"
    assert e.src == "02:00:00:00:00:02"
    assert e.type == 0x0800
    assert bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02", type=0x0800)) == hdr


def test_build_tagged_header_matches_scapy() -> None:
    hdr = build_header(PEER, OUR, ETHERTYPE_ARP, vlan=42)
    e = Ether(hdr + bytes(ARP()))
    assert e.type == 0x8100
    assert e[Dot1Q].vlan == 42
    assert e[Dot1Q].prio == 0
    assert e[Dot1Q].type == 0x0806


def test_build_frame_and_padding() -> None:
    f = build_frame(BROADCAST, OUR, ETHERTYPE_ARP, b"abc")
    assert f == BROADCAST + OUR + b"\x08\x06abc"
    padded = build_frame(BROADCAST, OUR, ETHERTYPE_ARP, b"abc", pad=True)
    assert len(padded) == ETH_ZLEN and padded.startswith(f) and padded[len(f):] == bytes(43)
    assert len(build_frame(BROADCAST, OUR, 1, bytes(100), pad=True)) == 114


def test_mac_helpers() -> None:
    assert parse_mac("02:00:00:00:00:01") == PEER
    assert parse_mac("02-00-00-00-00-01") == PEER
    assert parse_mac(PEER) == PEER
    assert format_mac(PEER) == "02:00:00:00:00:01"
    assert is_multicast(BROADCAST) and is_multicast(b"\x01\x00\x5e\0\0\1")
    assert not is_multicast(OUR)
    for bad in ("02:00", "zz:00:00:00:00:00"):
        with pytest.raises(ValueError):
            parse_mac(bad)
    with pytest.raises(ValueError):
        parse_mac(b"\0" * 5)


def test_accept_unicast_and_broadcast() -> None:
    eth, c = layer()
    f = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / ARP())
    assert eth.accept(memoryview(f)) == (ETHERTYPE_ARP, 14, False)
    f = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01", type=0x0800) / b"x")
    assert eth.accept(memoryview(f)) == (ETHERTYPE_IPV4, 14, True)
    f = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01", type=0x86DD) / b"x")
    assert eth.accept(memoryview(f)) == (ETHERTYPE_IPV6, 14, False)  # caller counts it
    assert c.get("eth", "frames_in") == 3


@pytest.mark.parametrize("n", [0, 1, 13])
def test_short(n: int) -> None:
    eth, c = layer()
    assert eth.accept(memoryview(OUR + PEER + b"\x08\x00")[:n])[0] == -1
    assert c.get("eth", "short") == 1


def test_not_for_us() -> None:
    eth, c = layer()
    other = bytes(Ether(dst="02:00:00:00:00:99", src="02:00:00:00:00:01") / ARP())
    mcast = bytes(Ether(dst="33:33:00:00:00:01", src="02:00:00:00:00:01",
                        type=0x86DD) / b"x")
    assert eth.accept(memoryview(other))[0] == -1
    assert eth.accept(memoryview(mcast))[0] == -1
    assert c.get("eth", "not_for_us") == 2
    eth.promiscuous = True
    assert eth.accept(memoryview(other))[0] == ETHERTYPE_ARP


def test_vlan_tags() -> None:
    eth, c = layer()
    base = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
    tagged = bytes(base / Dot1Q(vlan=5) / ARP())
    prio = bytes(base / Dot1Q(vlan=0, prio=5) / ARP())
    qinq = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01", type=0x88A8)
                 / Dot1Q(vlan=5) / ARP())
    assert eth.accept(memoryview(tagged))[0] == -1
    assert c.get("eth", "vlan") == 1
    assert eth.accept(memoryview(prio)) == (ETHERTYPE_ARP, 18, False)
    assert c.get("eth", "priority_tagged") == 1
    assert eth.accept(memoryview(qinq))[0] == -1
    assert eth.accept(memoryview(tagged[:16]))[0] == -1  # tag cut short
    assert c.get("eth", "short") == 1
    # An interface on VLAN 5 takes VID 5 and refuses untagged frames.
    eth5, c5 = layer(vlan=5)
    assert eth5.accept(memoryview(tagged)) == (ETHERTYPE_ARP, 18, False)
    assert eth5.accept(memoryview(bytes(base / ARP())))[0] == -1
    assert c5.get("eth", "vlan") == 1
    assert Ether(eth5.header(PEER, ETHERTYPE_IPV4) + b"\x45" + bytes(19))[Dot1Q].vlan == 5
