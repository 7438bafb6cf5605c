"""TapLink argument checks that need no root (the device itself: tests/integration)."""

from __future__ import annotations

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
