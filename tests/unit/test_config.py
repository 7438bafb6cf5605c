"""The BootConfig model: iBFT both ways, JSON/TOML files, DHCP options 17 and 203."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path

import pytest

from firmware_tables.config import BootConfig, NicConfig, PciAddress, load_boot_config
from firmware_tables.errors import ConfigError, IbftError
from firmware_tables.ibft import IbftNic, IbftTable, IbftTarget, parse_ibft
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.build import IPXE_LAYOUT
from firmware_tables.target import ChapCredentials, TargetSpec

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"


def load(name: str) -> bytes:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"test table {path} is not available (shared testdata missing)")
    return path.read_bytes()


def sample() -> BootConfig:
    return BootConfig(
        initiator_name="iqn.2026-11.test:client",
        nics=(
            NicConfig(address=IPv4Interface("10.77.5.2/24"), gateway=IPv4Address("10.77.5.1"),
                      dns=(IPv4Address("10.77.5.53"), IPv4Address("10.77.5.54")),
                      mac=bytes.fromhex("525400aabbcc"), vlan=42, hostname="client",
                      pci=PciAddress(0, 3, 0)),
            NicConfig(address=IPv6Interface("2001:db8::2/64"), dhcp=True,
                      dhcp_server=IPv6Address("2001:db8::1")),
        ),
        targets=(
            TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", lun=1,
                       chap=ChapCredentials("joe", "sesame-sesame")),
            TargetSpec(host="2001:db8::1", name="iqn.2026-11.test:disk2", port=3261, lun=2,
                       chap=ChapCredentials("joe", "sesame-sesame"),
                       reverse_chap=ChapCredentials("tgt", "reverse-secret"), nic=1,
                       boot_selected=False),
        ),
        isns_server=IPv4Address("10.77.5.9"),
        radius_servers=(IPv4Address("10.77.5.10"),),
    )


def test_dracut_table_as_boot_config() -> None:
    c = BootConfig.from_ibft(parse_ibft(load("dracut-ng_TEST-70-ISCSI_ibft.table")))
    assert c.initiator_name == "iqn.1994-05.com.redhat:633114aacf2"
    (nic,) = c.nics
    assert nic.address == IPv4Interface("192.168.50.101/24") and nic.dhcp
    assert nic.gateway == IPv4Address("192.168.50.1") and nic.dns == (IPv4Address("192.168.50.1"),)
    assert nic.dhcp_server == IPv4Address("192.168.50.1")
    assert nic.mac == bytes.fromhex("525400123400") and str(nic.pci) == "00:03.0"
    assert nic.hostname == "client" and nic.vlan == 0
    (tgt,) = c.targets
    assert tgt == TargetSpec(host="192.168.50.1", name="iqn.2009-06.dracut:target0", lun=1)


def test_to_ibft_and_back() -> None:
    c = sample()
    data = c.to_ibft()
    t = parse_ibft(data)
    assert t.nics[0].origin == L.ORIGIN_MANUAL and t.nics[1].origin == L.ORIGIN_DHCP
    assert t.nics[0].flags == 3 and t.targets[1].flags == L.TARGET_FLAG_VALID
    assert t.targets[0].chap_type == L.CHAP_ONE_WAY and t.targets[1].chap_type == L.CHAP_MUTUAL
    assert t.targets[1].nic_association == 1 and t.nics[0].pci_bdf == 0x18
    assert BootConfig.from_ibft(t) == c
    assert BootConfig.from_ibft(parse_ibft(c.to_ibft(IPXE_LAYOUT))) == c


def test_to_ibft_requirements() -> None:
    with pytest.raises(ConfigError) as info:
        BootConfig("iqn.x", targets=(TargetSpec(host="san.example", name="iqn.y"),),
                   nics=(NicConfig(),)).to_ibft()
    assert info.value.path == "targets[0].host" and "host name" in str(info.value)
    with pytest.raises(ConfigError) as info:
        BootConfig("iqn.x", targets=(TargetSpec(host="10.0.0.1", name="iqn.y"),)).to_ibft()
    assert info.value.path == "nics"
    with pytest.raises(ConfigError) as info:
        BootConfig("iqn.x", nics=(NicConfig(),),
                   targets=(TargetSpec(host="10.0.0.1", name="iqn.y", nic=1),))
    assert info.value.path == "targets[0].nic"


def test_from_ibft_keeps_only_valid_structures_and_renumbers_nics() -> None:
    t = IbftTable(
        header=parse_ibft(sample().to_ibft()).header, control=None,
        initiator=parse_ibft(sample().to_ibft()).initiator,
        nics=(IbftNic(index=0, flags=0), IbftNic(index=5, mac=bytes(6))),
        targets=(IbftTarget(ip_address=IPv4Address("10.0.0.1"), name="iqn.t", nic_association=5),
                 IbftTarget(flags=0, name="ignored")),
    )
    c = BootConfig.from_ibft(t)
    assert len(c.nics) == 1 and c.nics[0].mac is None and c.nics[0].address is None
    assert len(c.targets) == 1 and c.targets[0].nic == 0


def test_from_ibft_errors() -> None:
    base = parse_ibft(sample().to_ibft())
    no_name = IbftTable(header=base.header, control=None, initiator=None)
    with pytest.raises(ConfigError) as info:
        BootConfig.from_ibft(no_name)
    assert info.value.path == "initiator_name"
    bad_assoc = IbftTable(header=base.header, control=None, initiator=base.initiator,
                          nics=base.nics, targets=(IbftTarget(
                              ip_address=IPv4Address("10.0.0.1"), name="iqn.t",
                              nic_association=9),))
    with pytest.raises(ConfigError) as info:
        BootConfig.from_ibft(bad_assoc)
    assert info.value.path == "targets[0].nic"
    no_port = IbftTable(header=base.header, control=None, initiator=base.initiator,
                        nics=base.nics, targets=(IbftTarget(
                            ip_address=IPv4Address("10.0.0.1"), name="iqn.t", port=0),))
    with pytest.raises(ConfigError) as info:
        BootConfig.from_ibft(no_port)
    assert info.value.path == "targets[0].port"


def test_more_than_two_dns_servers_keep_the_first_two() -> None:
    c = BootConfig("iqn.x", nics=(NicConfig(dns=tuple(IPv4Address(f"10.0.0.{i}")
                                                      for i in (1, 2, 3))),))
    t = parse_ibft(c.to_ibft())
    assert (t.nics[0].primary_dns, t.nics[0].secondary_dns) == (
        IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))


def test_dict_round_trip_and_masking() -> None:
    c = sample()
    d = c.to_dict()
    assert d["targets"][0]["chap_secret"] == "***"
    assert "sesame" not in json.dumps(d)
    assert BootConfig.from_dict(json.loads(json.dumps(c.to_dict(show_secrets=True)))) == c
    assert d["nics"][0] == {"address": "10.77.5.2/24", "gateway": "10.77.5.1",
                            "dns": ["10.77.5.53", "10.77.5.54"], "mac": "52:54:00:aa:bb:cc",
                            "vlan": 42, "dhcp": False, "hostname": "client", "pci": "00:03.0",
                            "boot_selected": True}


TOML = """
initiator_name = "iqn.2026-11.test:client"

[[nics]]
address = "10.77.5.2/24"
gateway = "10.77.5.1"
mac = "52-54-00-aa-bb-cc"

[[targets]]
url = "iscsi://joe%sesame-sesame@10.77.5.1/iqn.2026-11.test:disk/1"
reverse_chap_user = "tgt"
reverse_chap_secret = "reverse-secret"

[[targets]]
root_path = "iscsi:10.77.5.1:::2:iqn.2026-11.test:disk2"
chap_user = "joe"
chap_secret = "sesame-sesame"
"""


def test_load_toml_and_json(tmp_path: Path) -> None:
    path = tmp_path / "boot.toml"
    path.write_text(TOML)
    c = load_boot_config(path)
    assert c.nics[0].mac == bytes.fromhex("525400aabbcc")
    t0, t1 = c.targets
    assert t0.chap == ChapCredentials("joe", "sesame-sesame")
    assert t0.reverse_chap == ChapCredentials("tgt", "reverse-secret")
    assert (t1.lun, t1.chap) == (2, ChapCredentials("joe", "sesame-sesame"))
    jpath = tmp_path / "boot.json"
    jpath.write_text(json.dumps(c.to_dict(show_secrets=True)))
    assert load_boot_config(jpath) == c


@pytest.mark.parametrize(("data", "path"), [
    ({}, "initiator_name"),
    ({"initiator_name": 5}, "initiator_name"),
    ({"initiator_name": "iqn.x", "colour": "red"}, "colour"),
    ({"initiator_name": "iqn.x", "nics": {}}, "nics"),
    ({"initiator_name": "iqn.x", "nics": [{"vlan": 5000}]}, "nics[0].vlan"),
    ({"initiator_name": "iqn.x", "nics": [{"vlan": "5"}]}, "nics[0].vlan"),
    ({"initiator_name": "iqn.x", "nics": [{"mac": "zz"}]}, "nics[0].mac"),
    ({"initiator_name": "iqn.x", "nics": [{"address": "10.0.0.300/24"}]}, "nics[0].address"),
    ({"initiator_name": "iqn.x", "nics": [{"dns": ["x"]}]}, "nics[0].dns[0]"),
    ({"initiator_name": "iqn.x", "nics": [{"pci": "1:2"}]}, "nics[0].pci"),
    ({"initiator_name": "iqn.x", "nics": [{"dhcp": "yes"}]}, "nics[0].dhcp"),
    ({"initiator_name": "iqn.x", "targets": [{"host": "h"}]}, "targets[0].name"),
    ({"initiator_name": "iqn.x", "targets": [{"host": "h", "name": "n", "port": 0}]},
     "targets[0].port"),
    ({"initiator_name": "iqn.x", "targets": [{"url": "iscsi://h/n"}]}, "targets[0].url"),
    ({"initiator_name": "iqn.x", "targets": [{"url": "iscsi://h/n/1", "lun": 2}]},
     "targets[0].lun"),
    ({"initiator_name": "iqn.x", "targets": [{"url": "iscsi://u%p@h/n/1", "chap_user": "a",
                                              "chap_secret": "b"}]}, "targets[0].chap_user"),
    ({"initiator_name": "iqn.x", "targets": [{"host": "h", "name": "n", "chap_user": "a"}]},
     "targets[0].chap_user"),
    ({"initiator_name": "iqn.x", "targets": [{"host": "h", "name": "n",
                                              "reverse_chap_user": "a",
                                              "reverse_chap_secret": "b"}]},
     "targets[0].reverse_chap"),
    ({"initiator_name": "iqn.x", "nics": [{}], "targets": [{"host": "h", "name": "n",
                                                            "nic": 3}]}, "targets[0].nic"),
])
def test_from_dict_errors_name_the_setting(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        BootConfig.from_dict(data)
    assert info.value.path == path


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_boot_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("initiator_name = ")
    with pytest.raises(ConfigError) as info:
        load_boot_config(bad)
    assert "syntax error" in str(info.value)
    other = tmp_path / "boot.yaml"
    other.write_text("x: 1")
    with pytest.raises(ConfigError):
        load_boot_config(other)
    top = tmp_path / "list.json"
    top.write_text("[1, 2]")
    with pytest.raises(ConfigError):
        load_boot_config(top)


def test_from_dhcp_options() -> None:
    nic = NicConfig(address=IPv4Interface("10.77.5.2/24"), dhcp=True)
    c = BootConfig.from_dhcp(b"iscsi:10.77.5.1:::1:iqn.2026-11.test:disk\0",
                             b"iqn.2026-11.test:client\0", nic=nic,
                             chap=ChapCredentials("joe", "sesame-sesame"))
    assert c.initiator_name == "iqn.2026-11.test:client" and c.nics == (nic,)
    assert c.targets == (TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", lun=1,
                                    chap=ChapCredentials("joe", "sesame-sesame")),)
    c = BootConfig.from_dhcp("iscsi://10.77.5.1/iqn.2026-11.test:disk/3", "iqn.x")
    assert c.targets[0].lun == 3 and c.nics == ()
    with pytest.raises(ConfigError) as info:
        BootConfig.from_dhcp("iscsi:10.77.5.1:::1:iqn.x", None)
    assert info.value.path == "dhcp.option203"
    with pytest.raises(ConfigError) as info:
        BootConfig.from_dhcp("nfs:10.0.0.1:/root", "iqn.x")
    assert info.value.path == "dhcp.option17"
    with pytest.raises(ConfigError):
        BootConfig.from_dhcp(b"\xff\xfe", "iqn.x")


def test_pci_address_forms() -> None:
    assert PciAddress.parse("00:03.0") == PciAddress(0, 3, 0)
    assert PciAddress.parse("0000:1a:1f.7").bdf == 0x1A << 8 | 0x1F << 3 | 7
    assert str(PciAddress.from_bdf(0x1AFF)) == "1a:1f.7"
    for bad in ("0001:00:03.0", "00:03", "00:20.0", "00:03.8", "xx:03.0"):
        with pytest.raises(ConfigError):
            PciAddress.parse(bad)


def test_nic_validation() -> None:
    with pytest.raises(ConfigError):
        NicConfig(vlan=4096)
    with pytest.raises(ConfigError):
        NicConfig(mac=b"\x01")
    with pytest.raises(ConfigError):
        BootConfig("")
    with pytest.raises(IbftError):  # a table over 64 KiB
        BootConfig("iqn.x", nics=(NicConfig(hostname="h" * 70000),)).to_ibft()
