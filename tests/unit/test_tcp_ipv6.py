"""TCP over IPv6 addresses: the RFC 8200 §8.1 pseudo-header, MSS = MTU - 60, both
families on one layer."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from netstack.checksum import (
    fold,
    ones_sum,
    pseudo_header_sum,
    transport_checksum,
    transport_checksum_parts,
)
from netstack.tcp.connection import TcpError, TcpState
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import SYN, build, parse, verify_checksum
from tests.unit.tcp_sim import A_IP, SimNet

A6 = ipaddress.IPv6Address("fd00::2").packed
B6 = ipaddress.IPv6Address("fd00::1").packed


def _reference(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@pytest.mark.parametrize("size", [0, 1, 20, 1440, 4097, 70000])
def test_ipv6_pseudo_header_literally(size: int) -> None:
    # RFC 8200 §8.1: src(16) dst(16) length(32) zero(24) next header(8).
    rng = random.Random(size)
    src, dst, seg = rng.randbytes(16), rng.randbytes(16), rng.randbytes(size)
    pseudo = src + dst + struct.pack("!I3xB", size, 6)
    want = _reference(pseudo + seg)
    assert transport_checksum(src, dst, 6, seg) == want
    assert transport_checksum_parts(src, dst, 6, [seg[:3], seg[3:]], size) == want
    assert fold(pseudo_header_sum(src, dst, 6, size)) == fold(ones_sum(pseudo))


def test_tcp_over_ipv6_checksum_matches_scapy() -> None:
    raw = bytes(IPv6(src="fd00::2", dst="fd00::1") / TCP(sport=40000, dport=3260, flags="S"))
    assert verify_checksum(A6, B6, memoryview(raw[40:]))  # scapy's checksum verifies
    ours = build(A6, B6, 40000, 3260, 0, 0, SYN, 8192, payload=b"hello")
    assert verify_checksum(A6, B6, memoryview(ours))
    p = IPv6(src="fd00::2", dst="fd00::1") / TCP(ours)
    del p[TCP].chksum
    assert IPv6(bytes(p))[TCP].chksum == struct.unpack_from("!H", ours, 16)[0]
    # The IPv4 pseudo-header over the same bytes does not verify.
    assert not verify_checksum(A6[:4], B6[:4], memoryview(ours))


def _pair6() -> tuple[SimNet, TcpLayer, TcpLayer]:
    a = TcpLayer(A6, mss=1460, rng=random.Random(1))
    b = TcpLayer(B6, mss=1460, rng=random.Random(2))
    a.local_ip6, b.local_ip6 = A6, B6
    return SimNet([a, b]), a, b


def test_connect_transfer_close_over_ipv6() -> None:
    sim, a, b = _pair6()
    lst = b.listen(3260)
    ca = a.connect(B6, 3260, sim.now)
    sim.run_until(lambda: ca.connected and bool(lst.queue))
    syn = sim.sent[0][2]
    assert parse(memoryview(syn)).opts.mss == 1440  # MTU 1500 - 60 (RFC 8200 §8.3)
    cb = lst.accept()
    assert cb is not None
    assert cb.local_ip == B6 and cb.remote_ip == A6 and ca.local_ip == A6
    assert ca.mss_local == cb.mss_local == 1440
    assert ca.mss == 1440 - 12  # timestamps take 12 bytes of it
    data = random.Random(3).randbytes(300_000)
    got = bytearray()
    pos = 0

    def pump() -> bool:
        nonlocal pos
        if pos < len(data):
            pos += ca.send(memoryview(data)[pos:])
        got.extend(cb.recv())
        return len(got) >= len(data)

    sim.run_until(pump)
    assert bytes(got) == data
    assert all(verify_checksum(s, d, memoryview(seg)) for s, d, seg in sim.sent)
    assert all(len(d) == 16 for _, d, _ in sim.sent)
    ca.close(sim.now)
    sim.run_until(lambda: cb.eof)
    assert "[fd00::1]:3260" in repr(ca)


def test_both_families_on_one_layer() -> None:
    layer = TcpLayer(A_IP, mss=1460, rng=random.Random(5))
    with pytest.raises(TcpError, match="no IPv6 address"):
        layer.connect(B6, 3260, 0.0)
    layer.local_ip6 = A6
    c4 = layer.connect(bytes([10, 0, 0, 9]), 3260, 0.0)
    c6 = layer.connect(B6, 3260, 0.0)
    assert (c4.local_ip, c4.mss_local) == (A_IP, 1460)
    assert (c6.local_ip, c6.mss_local) == (A6, 1440)
    out = layer.output(0.0)
    assert sorted(len(dst) for dst, _ in out) == [4, 16]
    for dst, seg in out:
        src = A_IP if len(dst) == 4 else A6
        assert isinstance(seg, bytes)  # no TSO, no runs: plain segments
        assert verify_checksum(src, dst, memoryview(seg))
    with pytest.raises(TcpError, match="neither"):
        layer.connect(b"\0" * 8, 3260, 0.0)
    with pytest.raises(TcpError, match="different families"):
        layer.connect(B6, 3260, 0.0, local_ip=A_IP)
    assert c6.state == TcpState.SYN_SENT


def test_reset_for_unknown_ipv6_connection() -> None:
    layer = TcpLayer(A_IP, mss=1460, rng=random.Random(5))
    layer.local_ip6 = A6
    syn = build(B6, A6, 5555, 80, 1000, 0, SYN, 8192)
    layer.receive(B6, A6, memoryview(syn), 1.0)
    (dst, rst), = layer.output(1.0)
    assert dst == B6 and isinstance(rst, bytes)
    assert verify_checksum(A6, B6, memoryview(rst))
    # A bad checksum (IPv4 pseudo-header over IPv6 addresses) is counted and dropped.
    layer.receive(B6[:4], A6[:4], memoryview(syn), 1.0)
    assert layer.counters.as_dict()["tcp"]["bad_checksum"] == 1
