"""Linux's /sys/firmware/ibft view: the attribute formats of iscsi_ibft.c, written and
read back, and read from a hand-made tree as open-iscsi would find it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from firmware_tables.errors import IbftError, TableNotFoundError
from firmware_tables.ibft import (
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    parse_ibft,
    read_sysfs,
    render_sysfs,
    sysfs_lines,
    write_sysfs_tree,
)
from firmware_tables.ibft.sysfs import decode_sysfs_lun

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"


def load(name: str) -> bytes:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"test table {path} is not available (shared testdata missing)")
    return path.read_bytes()


# What a Linux guest shows for dracut's table (attribute formats of iscsi_ibft.c).
DRACUT_SYSFS = {
    "acpi_header": {"signature": "iBFT\n", "oem_id": "DRACUT\n", "oem_table_id": "TEST\n"},
    "initiator": {
        "index": "0\n", "flags": "3\n",
        "initiator-name": "iqn.1994-05.com.redhat:633114aacf2\n",
    },
    "ethernet0": {
        "index": "0\n", "flags": "3\n", "ip-addr": "192.168.50.101\n", "prefix-len": "24\n",
        "subnet-mask": "255.255.255.0", "origin": "3\n", "gateway": "192.168.50.1\n",
        "primary-dns": "192.168.50.1\n", "dhcp": "192.168.50.1\n", "vlan": "0\n",
        "mac": "52:54:00:12:34:00\n", "hostname": "client\n",
    },
    "target0": {
        "index": "0\n", "flags": "3\n", "ip-addr": "192.168.50.1\n", "port": "3260\n",
        "lun": "01000000\n", "chap-type": "0\n", "nic-assoc": "0\n",
        "target-name": "iqn.2009-06.dracut:target0\n",
    },
}


def test_render_dracut_table_like_linux() -> None:
    rendered = render_sysfs(parse_ibft(load("dracut-ng_TEST-70-ISCSI_ibft.table")))
    assert rendered == DRACUT_SYSFS
    lines = sysfs_lines(rendered)
    assert "ethernet0/subnet-mask:255.255.255.0" in lines
    assert "target0/lun:01000000" in lines
    assert lines[0] == "acpi_header/signature:iBFT"


def chap_table() -> IbftTable:
    return IbftTable(
        header=IbftHeader(oem_id="BOOTIN", oem_table_id="BOOTINIT"),
        control=None,
        initiator=IbftInitiator(name="iqn.x:client", isns_server=IPv4Address("10.0.0.9")),
        nics=(
            IbftNic(index=0, ip_address=IPv6Address("2001:db8::10"), prefix_length=64,
                    origin=1, vlan=7, mac=bytes.fromhex("02aabbccddee"), pci_bdf=0x0118,
                    hostname=None),
            IbftNic(index=1, ip_address=None, prefix_length=0, origin=3,
                    mac=bytes(6), hostname=""),
        ),
        targets=(
            IbftTarget(index=0, ip_address=IPv6Address("2001:db8::1"), port=3261,
                       lun=bytes.fromhex("001a000000000000"), chap_type=2, nic_association=0,
                       name="iqn.x:disk", chap_name="joe", chap_secret="s3cret-s3cret",
                       reverse_chap_name="tgt", reverse_chap_secret="r3verse-r3verse"),
            IbftTarget(index=1, ip_address=None, port=3260, name=None, nic_association=1,
                       flags=0),
        ),
    )


def test_render_quirks() -> None:
    r = render_sysfs(chap_table())
    eth0, eth1 = r["ethernet0"], r["ethernet1"]
    assert eth0["ip-addr"] == "2001:0db8:0000:0000:0000:0000:0000:0010\n"  # %pI6, uncompressed
    assert eth0["prefix-len"] == "64\n"
    assert eth0["subnet-mask"] == "255.255.255.255"  # 1 << (32-64) on x86, no newline
    assert eth0["vlan"] == "7\n" and eth0["mac"] == "02:aa:bb:cc:dd:ee\n"
    assert "hostname" not in eth0  # hostname offset 0: hidden
    assert eth1["hostname"] == "\n"  # empty but present: shown
    for hidden in ("ip-addr", "prefix-len", "subnet-mask", "gateway", "dhcp"):
        assert hidden not in eth1
    t0, t1 = r["target0"], r["target1"]
    assert t0["lun"] == "01a000000\n"
    assert t0["chap-secret"] == "s3cret-s3cret\n"
    assert t0["rev-chap-name-secret"] == "r3verse-r3verse\n"
    assert t1["ip-addr"] == "0000:0000:0000:0000:0000:0000:0000:0000\n"
    assert "target-name" not in t1 and "chap-name" not in t1 and "rev-chap-name" not in t1
    assert r["initiator"]["isns-server"] == "10.0.0.9\n"
    masked = render_sysfs(chap_table(), mask_secrets=True)
    assert masked["target0"]["chap-secret"] == "***\n"
    assert masked["target0"]["rev-chap-name-secret"] == "***\n"


@pytest.mark.parametrize(("prefix", "mask"), [
    (0, "255.255.255.255"), (1, "128.0.0.0"), (8, "255.0.0.0"), (31, "255.255.255.254"),
    (32, "255.255.255.255"), (24, "255.255.255.0"),
])
def test_subnet_mask_arithmetic(prefix: int, mask: str) -> None:
    nic = IbftNic(ip_address=IPv4Address("10.0.0.1"), prefix_length=prefix)
    table = IbftTable(header=IbftHeader(), control=None, initiator=None, nics=(nic,))
    r = render_sysfs(table)["ethernet0"]
    if prefix == 0:
        assert "subnet-mask" not in r  # Linux hides it when the prefix is 0
    else:
        assert r["subnet-mask"] == mask


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    table = chap_table()
    write_sysfs_tree(table, tmp_path)
    assert (tmp_path / "ethernet0" / "device").is_symlink()
    back = read_sysfs(tmp_path)
    assert back.problems == ()
    assert back.initiator == table.initiator
    assert back.nics == table.nics  # pci_bdf recovered from the device link
    assert back.targets == table.targets
    assert (back.header.oem_id, back.header.oem_table_id) == ("BOOTIN", "BOOTINIT")


def test_real_tables_round_trip_through_sysfs(tmp_path: Path) -> None:
    for i, name in enumerate(["dracut-ng_TEST-70-ISCSI_ibft.table", "lkml_rintel_3nic3tgt.bin"]):
        t = parse_ibft(load(name))
        root = tmp_path / str(i)
        write_sysfs_tree(t, root)
        back = read_sysfs(root)
        assert (back.initiator, back.nics, back.targets) == (t.initiator, t.nics, t.targets)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_read_hand_made_tree_like_open_iscsi(tmp_path: Path) -> None:
    """A tree as an older kernel shows it: no prefix-len, only subnet-mask."""
    write_tree(tmp_path, {
        "acpi_header/signature": "iBFT\n",
        "acpi_header/oem_id": "FENSYS\n",
        "acpi_header/oem_table_id": "iPXE\n",
        "initiator/index": "0\n",
        "initiator/flags": "3\n",
        "initiator/initiator-name": "iqn.2010-04.org.ipxe:0\n",
        "ethernet0/index": "0\n",
        "ethernet0/flags": "3\n",
        "ethernet0/ip-addr": "10.77.5.2\n",
        "ethernet0/subnet-mask": "255.255.255.0",
        "ethernet0/origin": "1\n",
        "ethernet0/gateway": "10.77.5.1\n",
        "ethernet0/vlan": "0\n",
        "ethernet0/mac": "52:54:00:12:34:56\n",
        "target0/index": "0\n",
        "target0/flags": "3\n",
        "target0/ip-addr": "10.77.5.1\n",
        "target0/port": "3260\n",
        "target0/lun": "0ff000000\n",
        "target0/chap-type": "1\n",
        "target0/nic-assoc": "0\n",
        "target0/target-name": "iqn.2026-11.test:disk\n",
        "target0/chap-name": "joe\n",
        "target0/chap-secret": "sesame-sesame\n",
    })
    (tmp_path / "ethernet0" / "device").symlink_to("../../devices/pci0000:00/0000:00:03.0")
    t = read_sysfs(tmp_path)
    assert t.header.oem_id == "FENSYS"
    assert t.initiator is not None and t.initiator.name == "iqn.2010-04.org.ipxe:0"
    nic = t.nics[0]
    assert nic.ip_address == IPv4Address("10.77.5.2") and nic.prefix_length == 24
    assert nic.gateway == IPv4Address("10.77.5.1") and nic.primary_dns is None
    assert nic.mac == bytes.fromhex("525400123456") and nic.pci_location == "00:03.0"
    assert nic.hostname is None
    tgt = t.targets[0]
    assert tgt.lun == bytes.fromhex("00ff000000000000")
    assert (tgt.chap_type, tgt.chap_name, tgt.chap_secret) == (1, "joe", "sesame-sesame")
    assert tgt.reverse_chap_name is None and tgt.reverse_chap_secret is None


def test_malformed_attributes_are_problems(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "ethernet0/index": "0\n",
        "ethernet0/ip-addr": "10.77.5.300\n",
        "ethernet0/mac": "52:54:00\n",
        "target3/port": "http\n",
        "target3/lun": "xyz\n",
    })
    with pytest.raises(IbftError) as info:
        read_sysfs(tmp_path)
    keys = {(p.structure, p.field) for p in info.value.problems}
    assert keys == {("ethernet0", "ip-addr"), ("ethernet0", "mac"), ("target3", "port"),
                    ("target3", "lun")}
    assert all(p.offset is None for p in info.value.problems)
    t = read_sysfs(tmp_path, strict=False)
    assert t.targets[0].index == 3 and t.nics[0].ip_address is None


def test_missing_tree(tmp_path: Path) -> None:
    with pytest.raises(TableNotFoundError):
        read_sysfs(tmp_path / "ibft")


@pytest.mark.parametrize(("text", "lun"), [
    ("00000000", "0000000000000000"),
    ("01000000", "0001000000000000"),
    ("0ff000000", "00ff000000000000"),
    ("412c000000", "412c000000000000"),  # flat-space LUN 300
    ("ffffffffffffffff", "ffffffffffffffff"),
])
def test_decode_sysfs_lun(text: str, lun: str) -> None:
    decoded = decode_sysfs_lun(text)
    assert decoded is not None and decoded.hex() == lun
    assert "".join(f"{b:x}" for b in decoded) == text  # a reading that re-renders


@pytest.mark.parametrize("text", ["", "0100000", "0" * 17, "0100000g", "00000000000000001"])
def test_decode_sysfs_lun_rejects(text: str) -> None:
    assert decode_sysfs_lun(text) is None
