"""Link options: parsing, validation and the error messages."""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from netstack.link import FaultSpec
from netstack.linkopts import (
    LinkOptionError,
    LinkOptions,
    add_link_options,
    format_mac,
    open_link,
    parse_mac,
    random_mac,
)


def parse(*argv: str) -> LinkOptions:
    p = argparse.ArgumentParser()
    add_link_options(p)
    return LinkOptions.from_args(p.parse_args(list(argv)))


def test_all_options(tmp_path: Path) -> None:
    cap = tmp_path / "x.pcap"
    o = parse("--netns", "ns1", "--peer-ip", "10.0.0.1/24", "--ip", "10.0.0.2/24",
              "--gateway", "10.0.0.254", "--mac", "02:00:5E:10:00:01", "--mtu", "9000",
              "--fault", "loss=0.01,seed=3", "--pcap", str(cap), "--tap", "tap7")
    assert o.netns == "ns1" and o.tap == "tap7" and o.bridge is None
    assert o.peer_ip == IPv4Interface("10.0.0.1/24")
    assert o.ip == IPv4Interface("10.0.0.2/24")
    assert o.network is not None and str(o.network) == "10.0.0.0/24"
    assert o.gateway == IPv4Address("10.0.0.254")
    assert o.mac == bytes.fromhex("02005e100001")
    assert o.mtu == 9000
    assert o.fault == FaultSpec(loss=0.01, seed=3)
    assert o.pcap == cap


def test_defaults() -> None:
    o = parse("--netns", "ns1")
    assert o.mtu == 1500 and o.ip is None and o.gateway is None and o.fault is None
    assert o.pcap is None and o.peer_ip is None
    assert len(o.mac) == 6 and o.mac[0] & 0x03 == 0x02  # unicast, locally administered
    assert parse("--netns", "ns1").mac != o.mac


def test_random_mac_bits() -> None:
    for _ in range(200):
        m = random_mac()
        assert len(m) == 6 and m[0] & 1 == 0 and m[0] & 2 == 2


def test_mac_formats() -> None:
    assert parse_mac("02-00-00-00-00-0a") == bytes.fromhex("02000000000a")
    assert format_mac(bytes.fromhex("02000000000a")) == "02:00:00:00:00:0a"


def test_to_argv_round_trip(tmp_path: Path) -> None:
    o = parse("--netns", "ns1", "--bridge", "br0", "--ip", "10.1.2.3/16", "--gateway",
              "10.1.0.1", "--mtu", "1400", "--fault", "dup=0.5,delay_ms=3",
              "--pcap", str(tmp_path / "c.pcap"))
    assert parse(*o.to_argv()) == o


def test_bridge_layout() -> None:
    o = parse("--netns", "ns1", "--bridge", "br0")
    assert o.bridge == "br0" and o.peer_ip is None


@pytest.mark.parametrize(("argv", "message"), [
    ([], "--netns: required"),
    (["--netns", "a/b"], "--netns a/b: not a valid namespace name"),
    (["--netns", "n", "--mtu", "67"], "--mtu 67: must be in 68..65520"),
    (["--netns", "n", "--mtu", "65521"], "--mtu 65521: must be in 68..65520"),
    (["--netns", "n", "--mtu", "9k"], "--mtu 9k: not an integer"),
    (["--netns", "n", "--mac", "01:00:5e:00:00:01"], "--mac 01:00:5e:00:00:01: is a multicast"),
    (["--netns", "n", "--mac", "00:00:00:00:00:00"], "--mac 00:00:00:00:00:00: the all-zero"),
    (["--netns", "n", "--mac", "02:00:00:00:00"], "--mac 02:00:00:00:00: expected six hex"),
    (["--netns", "n", "--mac", "02:00:00-00:00:01"], "--mac 02:00:00-00:00:01: expected six"),
    (["--netns", "n", "--ip", "10.0.0.2"], "--ip 10.0.0.2: expected ADDR/PREFIX"),
    (["--netns", "n", "--ip", "10.0.0.300/24"], "--ip 10.0.0.300/24: not an IPv4"),
    (["--netns", "n", "--ip", "10.0.0.0/24"], "--ip 10.0.0.0/24: is the network or broadcast"),
    (["--netns", "n", "--ip", "10.0.0.255/24"], "--ip 10.0.0.255/24: is the network or"),
    (["--netns", "n", "--ip", "224.0.0.5/24"], "--ip 224.0.0.5/24: is not a usable"),
    (["--netns", "n", "--peer-ip", "fe80::1/64"], "--peer-ip fe80::1/64: not an IPv4"),
    (["--netns", "n", "--gateway", "10.0.0.1"], "--gateway 10.0.0.1: needs --ip"),
    (["--netns", "n", "--ip", "10.0.0.2/24", "--gateway", "10.0.1.1"],
     "--gateway 10.0.1.1: is not inside our network 10.0.0.0/24"),
    (["--netns", "n", "--ip", "10.0.0.2/24", "--gateway", "10.0.0.2"],
     "--gateway 10.0.0.2: is our own address"),
    (["--netns", "n", "--ip", "10.0.0.2/24", "--gateway", "nope"],
     "--gateway nope: not an IPv4 address"),
    (["--netns", "n", "--ip", "10.0.0.2/24", "--peer-ip", "10.0.0.2/24"],
     "--peer-ip 10.0.0.2/24: is the same address as --ip"),
    (["--tap", "tap0", "--bridge", "br0"], "--bridge br0: needs --netns"),
    (["--tap", "tap0", "--peer-ip", "10.0.0.1/24"], "--peer-ip 10.0.0.1/24: needs --netns"),
    (["--netns", "n", "--bridge", "br0", "--peer-ip", "10.0.0.1/24"],
     "--peer-ip 10.0.0.1/24: cannot be combined with --bridge br0"),
    (["--netns", "n", "--bridge", "a-very-long-bridge-name"], "--bridge a-very-long-bridge"),
    (["--tap", "tap 0"], "--tap tap 0: not a valid interface name"),
    (["--netns", "n", "--fault", "loss=2"],
     "--fault loss=2: fault loss=2.0: must be a probability"),
    (["--netns", "n", "--fault", "wobble=1"], "--fault wobble=1: fault spec key 'wobble'"),
    (["--netns", "n", "--pcap", "/no/such/dir/x.pcap"],
     "--pcap /no/such/dir/x.pcap: directory /no/such/dir does not exist"),
    (["--netns", "n", "--pcap", "/tmp"], "--pcap /tmp: is a directory"),
])
def test_errors_name_option_and_value(argv: list[str], message: str) -> None:
    with pytest.raises(LinkOptionError) as ei:
        parse(*argv)
    assert str(ei.value).startswith(message), str(ei.value)
    assert ei.value.option == message.split()[0].rstrip(":")


def test_tap_alone_is_enough() -> None:
    assert parse("--tap", "tap0").netns is None


def test_open_link_checks_the_namespace_exists() -> None:
    o = parse("--netns", "bi-no-such-namespace")
    with pytest.raises(LinkOptionError, match="--netns bi-no-such-namespace: no such namespace"):
        open_link(o)


def test_help_lists_the_options() -> None:
    p = argparse.ArgumentParser()
    add_link_options(p)
    text = p.format_help()
    for opt in ("--netns", "--bridge", "--peer-ip", "--ip", "--gateway", "--mac", "--mtu",
                "--fault", "--pcap", "--tap"):
        assert opt in text
