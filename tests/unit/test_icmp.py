"""ICMP (RFC 792): echo answered, checksum verified, other types counted; scapy checks."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP
from scapy.packet import Raw

from netstack.checksum import verify
from netstack.counters import Counters
from netstack.icmp import ECHO_REPLY, ECHO_REQUEST, IcmpLayer, build_echo

PEER = bytes([10, 0, 0, 1])


def make() -> tuple[IcmpLayer, Counters]:
    c = Counters()
    return IcmpLayer(c.layer("icmp")), c


def test_build_echo_matches_scapy() -> None:
    for data in (b"", b"x", b"ping data 123", random.Random(1).randbytes(1001)):
        ours = build_echo(ECHO_REQUEST, 0x1234, 7, data)
        assert ours == bytes(ICMP(type=8, id=0x1234, seq=7) / Raw(data))
        assert verify(ours)


def test_echo_request_answered() -> None:
    icmp, c = make()
    for size in (0, 1, 56, 1472, 9000):
        data = random.Random(size).randbytes(size)
        req = bytes(ICMP(type=8, id=0xABCD, seq=size) / Raw(data))
        reply = icmp.receive(PEER, memoryview(req), False, 0.0)
        assert reply is not None
        r = ICMP(reply)
        assert (r.type, r.code, r.id, r.seq) == (0, 0, 0xABCD, size)
        assert bytes(r.payload) == data
        # scapy recomputes the same checksum.
        fresh = ICMP(reply)
        del fresh.chksum
        assert ICMP(bytes(fresh)).chksum == r.chksum
        assert verify(reply)
    assert c.get("icmp", "echo_in") == 5 and c.get("icmp", "echo_out") == 5


def test_bad_checksum_and_short() -> None:
    icmp, c = make()
    req = bytearray(bytes(ICMP(type=8, id=1, seq=1) / Raw(b"abc")))
    req[-1] ^= 1
    assert icmp.receive(PEER, memoryview(bytes(req)), False, 0.0) is None
    assert c.get("icmp", "bad_checksum") == 1
    assert icmp.receive(PEER, memoryview(bytes(ICMP(type=8))[:7]), False, 0.0) is None
    assert c.get("icmp", "short") == 1
    assert c.get("icmp", "echo_out") == 0


def test_broadcast_echo_ignored() -> None:
    icmp, c = make()
    req = bytes(ICMP(type=8, id=1, seq=1))
    assert icmp.receive(PEER, memoryview(req), True, 0.0) is None
    assert c.get("icmp", "echo_broadcast_ignored") == 1


def test_other_types_counted() -> None:
    icmp, c = make()
    for t, code in ((3, 3), (11, 0), (5, 1), (13, 0), (42, 0)):
        msg = bytes(ICMP(type=t, code=code) / Raw(b"\x45" + bytes(27)))
        assert icmp.receive(PEER, memoryview(msg), False, 0.0) is None
    assert c.get("icmp", "dest_unreachable_in") == 1
    assert c.get("icmp", "time_exceeded_in") == 1
    assert c.get("icmp", "redirect_in") == 1
    assert c.get("icmp", "timestamp_in") == 1
    assert c.get("icmp", "type42_in") == 1
    assert c.get("icmp", "in") == 5


def test_echo_reply_remembered() -> None:
    icmp, c = make()
    msg = build_echo(ECHO_REPLY, 5, 6, b"pong")
    assert icmp.receive(PEER, memoryview(msg), False, 3.0) is None
    (r,) = icmp.echo_replies
    assert (r.src, r.ident, r.seq, r.data, r.time) == (PEER, 5, 6, b"pong", 3.0)
    assert c.get("icmp", "echo_reply_in") == 1
