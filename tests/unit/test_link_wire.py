"""The in-memory wire."""

from __future__ import annotations

import select

import pytest

from netstack.link import Link, LinkError, WirePair, wire_pair


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_is_a_link() -> None:
    with WirePair() as w:
        assert isinstance(w.a, Link) and isinstance(w.b, Link)
        assert w.a.mtu == 1500 and w.a.next_deadline() is None
        w.a.poll(0.0)


def test_frames_cross_in_order_both_ways_and_fd_signals() -> None:
    a, b = wire_pair(mtu=9000)
    try:
        assert not readable(b.fileno())
        assert b.recv() is None
        frames = [bytes([i]) * (60 + i) for i in range(5)]
        for frame in frames:
            a.send(frame)
        a.send(bytearray(b"\xaa" * 9014))  # max size, bytes-like
        assert readable(b.fileno()) and not readable(a.fileno())
        got = []
        while (f := b.recv()) is not None:
            assert isinstance(f, bytes)
            got.append(f)
        assert got == [*frames, b"\xaa" * 9014]
        assert not readable(b.fileno())  # drained
        b.send(memoryview(b"\x01" * 64))
        assert a.recv() == b"\x01" * 64
        ca, cb = a.counters(), b.counters()
        assert ca["tx_frames"] == 6 and ca["rx_frames"] == 1
        assert cb["rx_frames"] == 6 and cb["rx_bytes"] == sum(map(len, frames)) + 9014
        assert cb["tx_bytes"] == 64
    finally:
        a.close()
        b.close()


def test_sent_frame_is_a_copy() -> None:
    with WirePair() as w:
        buf = bytearray(b"\x00" * 60)
        w.a.send(buf)
        buf[0] = 0xFF
        assert w.b.recv() == b"\x00" * 60


def test_bounded_queue_drops_and_counts() -> None:
    with WirePair(capacity=3) as w:
        for _ in range(5):
            w.a.send(b"\x00" * 60)
        assert w.b.pending() == 3
        assert w.a.counters()["tx_drop_full"] == 2
        assert w.a.counters()["tx_frames"] == 3


def test_closed_peer_drops_and_closed_end_refuses() -> None:
    w = WirePair()
    w.b.close()
    w.a.send(b"\x00" * 60)
    assert w.a.counters()["tx_drop_peer_closed"] == 1
    w.a.close()
    w.a.close()  # idempotent
    with pytest.raises(LinkError, match="closed"):
        w.a.send(b"\x00" * 60)
    with pytest.raises(LinkError, match="closed"):
        w.a.fileno()


@pytest.mark.parametrize("size", [0, 13, 1515])
def test_bad_frame_sizes(size: int) -> None:
    with WirePair() as w, pytest.raises(LinkError, match=f"frame of {size} bytes"):
        w.a.send(b"\x00" * size)


def test_bad_parameters() -> None:
    with pytest.raises(LinkError, match="MTU 67"):
        WirePair(mtu=67)
    with pytest.raises(LinkError, match="capacity 0"):
        WirePair(capacity=0)
