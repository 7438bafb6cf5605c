"""iBFT writer: layout, length, checksum, heap; byte-exact rebuilds of the real tables;
round trips for 1..8 NICs and targets, IPv4 and IPv6, CHAP and mutual CHAP."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from firmware_tables.acpi import table_sum
from firmware_tables.errors import IbftError
from firmware_tables.ibft import (
    IPXE_LAYOUT,
    BuildOptions,
    IbftInitiator,
    IbftNic,
    IbftTarget,
    build_ibft,
    parse_ibft,
)
from firmware_tables.ibft import layout as L
from firmware_tables.lun import lun_to_sam

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"


def load(name: str) -> bytes:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"test table {path} is not available (shared testdata missing)")
    return path.read_bytes()


def nic(i: int, v6: bool = False) -> IbftNic:
    if v6:
        return IbftNic(
            index=i, ip_address=IPv6Address(f"2001:db8:{i}::10"), prefix_length=64,
            origin=L.ORIGIN_MANUAL, gateway=IPv6Address(f"2001:db8:{i}::1"),
            primary_dns=IPv6Address("2001:db8::53"), secondary_dns=IPv6Address("2001:db8::54"),
            vlan=100 + i, mac=bytes([2, 0, 0, 0, 0, i]), pci_bdf=(i << 3), hostname=f"host{i}",
        )
    return IbftNic(
        index=i, ip_address=IPv4Address(f"10.{i}.0.2"), prefix_length=24,
        origin=L.ORIGIN_DHCP, gateway=IPv4Address(f"10.{i}.0.1"),
        primary_dns=IPv4Address("10.0.0.53"), dhcp_server=IPv4Address(f"10.{i}.0.1"),
        vlan=i, mac=bytes([2, 0, 0, 0, 1, i]), pci_bdf=(1 << 8) | (i << 3) | 1,
        hostname=f"client-{i}",
    )


def target(i: int, n_nics: int, v6: bool = False) -> IbftTarget:
    ip = IPv6Address(f"2001:db8:{i}::1") if v6 else IPv4Address(f"10.{i}.0.1")
    kind = i % 3
    return IbftTarget(
        index=i, ip_address=ip, port=3260 + i, lun=lun_to_sam(i),
        chap_type=kind, nic_association=i % n_nics, name=f"iqn.2026-11.test:disk{i}",
        chap_name=f"user{i}" if kind else None, chap_secret=f"secret-{i}-xyzzy" if kind else None,
        reverse_chap_name=f"target{i}" if kind == 2 else None,
        reverse_chap_secret=f"rsecret-{i}-plugh" if kind == 2 else None,
    )


INITIATOR = IbftInitiator(name="iqn.2026-11.test:client", isns_server=IPv4Address("10.0.0.9"))


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("count", range(1, 9))
def test_round_trip_n_nics_and_targets(count: int, v6: bool) -> None:
    nics = [nic(i, v6) for i in range(count)]
    targets = [target(i, count, v6) for i in range(count)]
    data = build_ibft(INITIATOR, nics, targets)
    assert table_sum(data) == 0
    assert int.from_bytes(data[4:8], "little") == len(data)
    t = parse_ibft(data, exact_length=True)
    assert t.problems == ()
    assert t.initiator == INITIATOR
    assert list(t.nics) == nics and list(t.targets) == targets
    assert t.control is not None
    assert t.control.length == 18 + 4 * max(0, count - 2)
    sections: list[IbftNic | IbftTarget] = [*t.nics, *t.targets]
    for s in sections:
        assert s.offset % 8 == 0


def test_uneven_counts_leave_zero_expansion_offsets() -> None:
    nics = [nic(i) for i in range(4)]
    targets = [target(0, 4)]
    t = parse_ibft(build_ibft(INITIATOR, nics, targets))
    assert t.control is not None
    offs = t.control.structure_offsets
    # initiator, nic0, tgt0, nic1, tgt1(0), nic2, tgt2(0), nic3, tgt3(0)
    assert len(offs) == 9 and offs[4] == offs[6] == offs[8] == 0
    assert [n.index for n in t.nics] == [0, 1, 2, 3]


def test_no_targets_no_nics() -> None:
    t = parse_ibft(build_ibft(INITIATOR))
    assert t.nics == () and t.targets == () and t.initiator == INITIATOR
    t = parse_ibft(build_ibft(None))
    assert t.initiator is None and t.control is not None
    assert t.control.structure_offsets == (0, 0, 0, 0, 0)


def test_layout_heap_and_no_padding() -> None:
    data = build_ibft(INITIATOR, [nic(0)], [replace(target(1, 1), index=0)])
    # 48 header + 18 control -> initiator at 0x48 (8-aligned), NIC at 0x98, target 0x100
    t = parse_ibft(data)
    assert t.initiator is not None
    assert (t.initiator.offset, t.nics[0].offset, t.targets[0].offset) == (0x48, 0x98, 0x100)
    heap = 0x100 + 56  # 0x100 + 54 rounded up to 8
    strings = [b"iqn.2026-11.test:client", b"client-0", b"iqn.2026-11.test:disk1",
               b"user1", b"secret-1-xyzzy"]
    assert data[heap:] == b"".join(s + b"\0" for s in strings)
    assert data.endswith(b"\0") and len(data) == heap + sum(len(s) + 1 for s in strings)


def test_empty_string_is_kept_distinct_from_absent() -> None:
    nics = [IbftNic(index=0, hostname=""), IbftNic(index=1, hostname=None)]
    t = parse_ibft(build_ibft(INITIATOR, nics))
    assert t.nics[0].hostname == "" and t.nics[1].hostname is None


def test_ipxe_layout_offsets() -> None:
    data = build_ibft(IbftInitiator(name="iqn.2010-04.org.ipxe:client"),
                      [nic(0)], [target(0, 1)], IPXE_LAYOUT)
    t = parse_ibft(data, exact_length=True)
    assert (t.header.oem_id, t.header.oem_table_id) == ("FENSYS", "iPXE")
    assert t.control is not None and t.control.length == 18
    assert t.control.structure_offsets == (0x50, 0xA0, 0x180, 0, 0)
    assert data[0x110 : 0x110 + L.NIC_LENGTH] == bytes(L.NIC_LENGTH)
    assert data[0x1C0 : 0x1C0 + L.TARGET_LENGTH] == bytes(L.TARGET_LENGTH)
    assert data[0x200 : 0x200 + 28] == b"iqn.2010-04.org.ipxe:client\0"


@pytest.mark.parametrize(
    "name", ["dracut-ng_TEST-70-ISCSI_ibft.table", "lkml_rintel_3nic3tgt.bin"])
def test_real_tables_rebuild_byte_for_byte(name: str) -> None:
    data = load(name)
    t = parse_ibft(data)
    rebuilt = build_ibft(t.initiator, t.nics, t.targets, BuildOptions.from_header(t.header))
    assert rebuilt == data


def test_values_that_do_not_fit_raise_typed_errors() -> None:
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [IbftNic(vlan=70000)])
    assert (info.value.structure, info.value.field, info.value.value) == ("nic0", "vlan", 70000)
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [IbftNic(mac=b"\x01\x02")])
    assert info.value.field == "mac"
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [nic(0)], [IbftTarget(lun=b"\0" * 7, name="x",
                                                    ip_address=IPv4Address("1.2.3.4"))])
    assert info.value.field == "lun"
    with pytest.raises(IbftError) as info:
        build_ibft(IbftInitiator(name="bad\0name"))
    assert (info.value.structure, info.value.field) == ("initiator", "name")
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [nic(0)], [IbftTarget(name="x", ip_address=IPv4Address("1.2.3.4"),
                                                    chap_type=1, chap_name="u",
                                                    chap_secret="s\0s")])
    assert info.value.field == "chap_secret" and info.value.value == "***"


def test_inconsistent_structures_are_refused_by_the_final_check() -> None:
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [nic(0)], [IbftTarget(name="x", ip_address=IPv4Address("1.2.3.4"),
                                                    nic_association=3)])
    assert (info.value.structure, info.value.field) == ("target0", "nic_association")
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [IbftNic(ip_address=IPv4Address("1.2.3.4"), prefix_length=40)])
    assert info.value.field == "prefix_length"


def test_table_over_64k_is_refused() -> None:
    with pytest.raises(IbftError) as info:
        build_ibft(IbftInitiator(name="x" * 70000))
    assert info.value.field in ("name", "length")
    with pytest.raises(IbftError) as info:
        build_ibft(INITIATOR, [IbftNic(index=i, hostname="h" * 300) for i in range(250)])
    assert (info.value.structure, info.value.field) == ("header", "length")


def test_bad_options() -> None:
    with pytest.raises(IbftError):
        build_ibft(INITIATOR, options=BuildOptions(oem_id="TOOLONGID"))
    with pytest.raises(IbftError):
        build_ibft(INITIATOR, options=BuildOptions(alignment=12))
