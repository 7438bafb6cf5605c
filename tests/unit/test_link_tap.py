"""TapLink argument checks that need no root (the device itself: tests/integration), and
send_frames against send on a socket standing in for the TAP descriptor."""

from __future__ import annotations

import socket

import pytest

from netstack.link import LinkError, TapLink
from netstack.link.tap import check_ifname, check_mtu


@pytest.mark.parametrize("mtu", [68, 1500, 9000, 65520])
def test_mtu_ok(mtu: int) -> None:
    assert check_mtu(mtu) == mtu


@pytest.mark.parametrize("mtu", [67, 65521, 0, -1, True, 1500.0])
def test_mtu_bad(mtu: int) -> None:
    with pytest.raises(LinkError, match="MTU"):
        check_mtu(mtu)


@pytest.mark.parametrize("name", ["tap0", "a", "x" * 15, "br-lan_1.2"])
def test_ifname_ok(name: str) -> None:
    assert check_ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a b", "..", "tap%d", "a:b"])
def test_ifname_bad(name: str) -> None:
    with pytest.raises(LinkError, match="TAP name"):
        check_ifname(name, "TAP name")


def test_creating_needs_a_namespace() -> None:
    with pytest.raises(LinkError, match="needs a namespace"):
        TapLink()


def test_peer_ip_needs_a_namespace() -> None:
    with pytest.raises(LinkError, match=r"peer address 10\.0\.0\.1/24: needs a namespace"):
        TapLink(tap="tap0", peer_ip="10.0.0.1/24")


def test_bridge_needs_a_namespace() -> None:
    with pytest.raises(LinkError, match="bridge 'br0': needs the namespace"):
        TapLink(tap="tap0", bridge="br0")


def test_bridge_and_peer_exclusive() -> None:
    with pytest.raises(LinkError, match="choose one"):
        TapLink(netns="x", bridge="br0", peer_ip="10.0.0.1/24")


def test_missing_namespace() -> None:
    with pytest.raises(LinkError, match="namespace 'no-such-ns-here' does not exist"):
        TapLink(netns="no-such-ns-here")


def test_bad_mtu_before_anything() -> None:
    with pytest.raises(LinkError, match="MTU 70000"):
        TapLink(netns="x", mtu=70000)


class _DatagramTap:
    """A TapLink whose descriptor is one end of a datagram socketpair: like a TAP, one
    read returns one frame (truncated to the buffer) and EAGAIN when none is waiting."""

    def __init__(self, mtu: int = 1500) -> None:
        self.peer, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self._ours = ours
        link = TapLink.__new__(TapLink)
        link.mtu = mtu
        link.name = "dgram"
        link.offload = False
        link._fd = ours.fileno()
        link._frame_max = mtu + 14
        link._c = {"rx_frames": 0, "rx_bytes": 0, "rx_drop_oversize": 0}
        self.link = link

    def close(self) -> None:
        self.peer.close()
        self._ours.close()


@pytest.mark.parametrize(("sizes", "max_frames", "max_bytes", "want"), [
    ([60, 1514, 100], 64, 1 << 20, [60, 1514, 100]),
    ([1514] * 10, 4, 1 << 20, [1514] * 4),
    ([1514] * 10, 64, 3000, [1514] * 2),        # stops once the budget is reached
    ([100, 1515, 200, 9000, 300], 3, 1 << 20, [100, 200, 300]),  # oversize: dropped
    ([], 64, 1 << 20, []),
])
def test_recv_batch_matches_recv(sizes: list[int], max_frames: int, max_bytes: int,
                                 want: list[int]) -> None:
    got: list[tuple[bytes, float]] = []
    expected: list[bytes] = []
    counters = []
    for batch in (True, False):
        tap = _DatagramTap()
        try:
            frames = [bytes([i]) * n for i, n in enumerate(sizes)]
            for frame in frames:
                tap.peer.send(frame)
            if batch:
                n = tap.link.recv_batch(lambda f, now: got.append((f, now)), 7.0,
                                        max_frames, max_bytes)
                assert n == len(want)
            else:  # what the stack did per frame before
                budget = max_bytes
                for _ in range(max_frames):
                    f = tap.link.recv()
                    if f is None:
                        break
                    expected.append(f)
                    budget -= len(f)
                    if budget <= 0:
                        break
            counters.append(tap.link.counters())
        finally:
            tap.close()
    assert [f for f, _ in got] == expected
    assert [len(f) for f, _ in got] == want
    assert all(now == 7.0 for _, now in got)
    assert counters[0] == counters[1]


def test_recv_batch_counts_what_was_delivered_when_deliver_raises() -> None:
    tap = _DatagramTap()
    try:
        for _ in range(3):
            tap.peer.send(b"x" * 100)
        seen = []

        def deliver(frame: bytes, now: float) -> None:
            seen.append(frame)
            if len(seen) == 2:
                raise RuntimeError("bug")

        with pytest.raises(RuntimeError):
            tap.link.recv_batch(deliver, 0.0, 64, 1 << 20)
        assert tap.link.counters()["rx_frames"] == 2
        assert tap.link.counters()["rx_bytes"] == 200
        assert tap.link.recv() == b"x" * 100  # the third is still waiting
    finally:
        tap.close()


def test_recv_batch_refuses_an_offload_tap() -> None:
    tap = _DatagramTap()
    try:
        tap.link.offload = True
        with pytest.raises(LinkError):
            tap.link.recv_batch(lambda f, now: None, 0.0, 1, 1)
    finally:
        tap.close()


def _fake_tap(fd: int) -> TapLink:
    """A TapLink writing to ``fd`` (a datagram socket keeps frame boundaries)."""
    link = TapLink.__new__(TapLink)
    link.mtu = 1500
    link.name = "fake"
    link.offload = False
    link.tx_csum_partial = False
    link._fd = fd
    link._frame_max = 1514
    link._c = {"tx_frames": 0, "tx_bytes": 0, "tx_drop_full": 0, "tx_drop_link_down": 0}
    return link


def test_send_frames_writes_and_counts_like_send() -> None:
    frames = [bytes([i]) * n for i, n in enumerate((60, 1514, 14, 700))]
    got = []
    for batch in (True, False):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            link = _fake_tap(a.fileno())
            if batch:
                link.send_frames(frames)
            else:
                for f in frames:
                    link.send(f)
            got.append(([b.recv(2000) for _ in frames], link.counters()))
    assert got[0] == got[1]
    assert got[0][0] == frames and got[0][1]["tx_frames"] == 4
    assert got[0][1]["tx_bytes"] == sum(map(len, frames))


def test_send_frames_counts_what_went_before_a_bad_frame() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        link = _fake_tap(a.fileno())
        with pytest.raises(LinkError):
            link.send_frames([bytes(100), bytes(1515), bytes(100)])
        assert link.counters()["tx_frames"] == 1 and link.counters()["tx_bytes"] == 100
