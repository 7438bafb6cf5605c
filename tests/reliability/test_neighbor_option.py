"""``--neighbor IP=MAC``: static ARP entries from the command line (issue 7: a spoofed
ARP reply for the target must not redirect the session)."""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address

import pytest

from netstack.linkopts import LinkOptionError, LinkOptions, add_link_options

PEER_MAC = bytes.fromhex("020000000001")


def parse(*extra: str) -> LinkOptions:
    p = argparse.ArgumentParser()
    add_link_options(p)
    return LinkOptions.from_args(p.parse_args(["--netns", "ns1", "--ip", "10.77.0.2/24",
                                               *extra]))


def test_neighbors_parse_and_round_trip() -> None:
    opts = parse("--neighbor", "10.77.0.1=02:00:00:00:00:01",
                 "--neighbor", "10.77.0.254=02-00-00-00-00-fe")
    assert opts.neighbors == ((IPv4Address("10.77.0.1"), PEER_MAC),
                              (IPv4Address("10.77.0.254"), bytes.fromhex("0200000000fe")))
    again = parse(*opts.to_argv()[4:])  # without --netns/--ip, given by parse()
    assert again.neighbors == opts.neighbors
    assert parse().neighbors == ()


@pytest.mark.parametrize("bad", ["10.77.0.1", "10.77.0.1=", "nope=02:00:00:00:00:01",
                                 "10.77.0.1=01:00:5e:00:00:01", "224.0.0.1=02:00:00:00:00:01",
                                 "10.77.0.1=00:00:00:00:00:00", "10.77.0.1=zz"])
def test_bad_neighbors_are_named(bad: str) -> None:
    with pytest.raises(LinkOptionError) as ei:
        parse("--neighbor", bad)
    assert "--neighbor" in str(ei.value)
