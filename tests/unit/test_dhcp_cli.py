"""--dhcp / --vlan / --passt options, and a DHCP lease turned into a boot configuration
and an iBFT that says origin DHCP and names the DHCP server."""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address, IPv4Interface

import pytest

from bootinit import cli, commands
from bootinit.dhcpboot import boot_config_from_lease, nic_from_lease
from firmware_tables import parse_ibft
from firmware_tables.errors import ConfigError
from firmware_tables.ibft import layout
from netstack.dhcp import Lease
from netstack.linkopts import LinkOptionError, LinkOptions

MAC = bytes.fromhex("020000000002")


def parse(argv: list[str]) -> argparse.Namespace:
    args = cli.build_parser().parse_args(argv)
    commands.fill_defaults(args)
    return args


def lease(**kw: object) -> Lease:
    base: dict[str, object] = dict(
        address=IPv4Interface("10.0.0.57/24"), server_id=IPv4Address("10.0.0.1"),
        lease_time=120.0, t1=60.0, t2=105.0, start=0.0, gateway=IPv4Address("10.0.0.1"),
        dns=(IPv4Address("10.0.0.53"),), hostname="client1",
        root_path="iscsi:10.0.0.1::3260:1:iqn.2026-11.test:disk",
        initiator_name="iqn.2026-11.test:client")
    base.update(kw)
    return Lease(**base)  # type: ignore[arg-type]


def test_ls_without_target_and_dhcp_option_parse() -> None:
    a = parse(["ls", "--dhcp", "--netns", "ns1", "--bridge", "br0", "--vlan", "100"])
    assert a.target is None and a.dhcp is True
    opts = LinkOptions.from_args(a)
    assert opts.dhcp and opts.vlan == 100 and opts.ip is None
    assert "--dhcp" in opts.to_argv() and "--vlan" in opts.to_argv()
    b = parse(["--dhcp", "discover", "--passt", "/tmp/p.sock"])
    ob = LinkOptions.from_args(b)
    assert ob.stream == ("--passt", ob.passt) and ob.netns is None
    c = parse(["readcap", "--qemu-stream", "/tmp/q.sock", "--ip", "10.0.0.2/24"])
    assert LinkOptions.from_args(c).stream is not None


@pytest.mark.parametrize("argv,option", [
    (["--dhcp", "--ip", "10.0.0.2/24", "--netns", "n"], "--dhcp"),
    (["--vlan", "0", "--netns", "n"], "--vlan"),
    (["--vlan", "4095", "--netns", "n"], "--vlan"),
    (["--vlan", "x", "--netns", "n"], "--vlan"),
    (["--passt", "/p", "--netns", "n"], "--netns"),
    (["--passt", "/p", "--qemu-stream", "/q"], "--qemu-stream"),
    (["--passt", "/p", "--tap", "tap0"], "--tap"),
    (["--dhcp"], "--netns"),
])
def test_bad_combinations_name_the_option(argv: list[str], option: str) -> None:
    args = parse(["ls", *argv])
    with pytest.raises(LinkOptionError) as ei:
        LinkOptions.from_args(args)
    assert ei.value.option == option


def test_no_address_is_a_clear_error() -> None:
    args = parse(["ls", "10.0.0.1", "--netns", "n"])
    args.verbose = 0
    with pytest.raises(commands.CliError, match="--ip ADDR/PREFIX or --dhcp"):
        commands.Context(args)


def test_lease_to_boot_config_and_ibft_origin_dhcp() -> None:
    nic = nic_from_lease(lease(), MAC, vlan=100)
    assert nic.dhcp and nic.dhcp_server == IPv4Address("10.0.0.1") and nic.vlan == 100
    cfg = boot_config_from_lease(lease(), MAC, vlan=100)
    assert cfg.initiator_name == "iqn.2026-11.test:client"
    (t,) = cfg.targets
    assert (t.host, t.port, t.lun, t.name) == ("10.0.0.1", 3260, 1, "iqn.2026-11.test:disk")
    table = parse_ibft(cfg.to_ibft())
    (n,) = table.nics
    assert n.origin == layout.ORIGIN_DHCP
    assert n.dhcp_server == IPv4Address("10.0.0.1")
    assert n.ip_address == IPv4Address("10.0.0.57") and n.prefix_length == 24
    assert n.gateway == IPv4Address("10.0.0.1") and n.vlan == 100 and n.mac == MAC
    # --initiator-name wins over option 203; a lease without 17/203 is a named error
    assert boot_config_from_lease(lease(), MAC, initiator_name="iqn.x:y").initiator_name \
        == "iqn.x:y"
    with pytest.raises(ConfigError, match="option203"):
        boot_config_from_lease(lease(initiator_name=None), MAC)
    with pytest.raises(ConfigError, match="option17"):
        boot_config_from_lease(lease(root_path="nfs:/x"), MAC)
