"""``netstack.netns.listens_on``: which listening sockets take connections to an address
(the match the harness's and the target drivers' waits share)."""

from __future__ import annotations

from netstack.netns import WILDCARD_ADDRESSES, listens_on


def test_bound_address_and_wildcards() -> None:
    found = {("10.77.0.1", 3260), ("127.0.0.1", 3261)}
    assert listens_on(found, 3260, "10.77.0.1")
    assert not listens_on(found, 3260, "10.77.0.2")  # bound elsewhere
    assert not listens_on(found, 3261, "10.77.0.1")
    assert listens_on(found, 3261, "127.0.0.1")
    assert not listens_on(found, 3262)
    for wildcard in WILDCARD_ADDRESSES:  # as ss shows "every address"
        assert listens_on({(wildcard, 860)}, 860, "10.77.0.1")
        assert not listens_on({(wildcard, 860)}, 861, "10.77.0.1")


def test_any_address_when_none_is_asked() -> None:
    assert listens_on({("10.77.0.1", 3260)}, 3260)
    assert listens_on({("fd00::1", 3260)}, 3260)
    assert not listens_on(set(), 3260)
    assert listens_on({("fd00::1", 3260)}, 3260, "fd00::1")
