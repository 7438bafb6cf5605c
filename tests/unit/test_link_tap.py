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
