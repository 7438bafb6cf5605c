"""iBFT reader: the real tables parse to the values SOURCES.md lists; bad ones are
rejected naming structure, field, offset and value; lenient mode lists every problem."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from firmware_tables.acpi import fill_checksum, table_sum
from firmware_tables.errors import IbftError, Problem
from firmware_tables.ibft import (
    IPXE_LAYOUT,
    IbftInitiator,
    IbftNic,
    IbftTarget,
    build_ibft,
    parse_ibft,
)
from firmware_tables.ibft import layout as L

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"


def load(name: str) -> bytes:
    path = TESTDATA / name
    if not path.is_file():
        pytest.skip(f"test table {path} is not available (shared testdata missing)")
    return path.read_bytes()


DRACUT = "dracut-ng_TEST-70-ISCSI_ibft.table"
LKML = "lkml_rintel_3nic3tgt.bin"
FWTS1 = "fwts_ibft_0001.bin"
FWTS2 = "fwts_ibft_0002.bin"


def problem_keys(problems: tuple[Problem, ...]) -> set[tuple[str, str]]:
    return {(p.structure, p.field) for p in problems}


# -- the real tables ------------------------------------------------------------------------


def test_dracut_table_values() -> None:
    data = load(DRACUT)
    assert len(data) == 381 and table_sum(data) == 0
    t = parse_ibft(data, exact_length=True)
    assert t.problems == ()
    assert t.header.signature == "iBFT" and t.header.length == 381 and t.header.revision == 1
    assert (t.header.oem_id, t.header.oem_table_id) == ("DRACUT", "TEST")
    assert t.control is not None
    assert t.control.length == 18 and t.control.structure_offsets == (0x48, 0x98, 0x100, 0, 0)
    assert t.initiator is not None
    assert t.initiator.name == "iqn.1994-05.com.redhat:633114aacf2"
    assert t.initiator.offset == 0x48 and t.initiator.flags == 3
    assert len(t.nics) == 1 and len(t.targets) == 1
    nic = t.nics[0]
    assert nic.ip_address == IPv4Address("192.168.50.101") and nic.prefix_length == 24
    assert nic.origin == L.ORIGIN_DHCP
    gw = IPv4Address("192.168.50.1")
    assert nic.gateway == gw and nic.primary_dns == gw and nic.dhcp_server == gw
    assert nic.secondary_dns is None
    assert nic.mac == bytes.fromhex("525400123400") and nic.mac_text == "52:54:00:12:34:00"
    assert nic.pci_location == "00:03.0" and nic.pci_bdf == 0x18
    assert nic.hostname == "client" and nic.vlan == 0 and nic.index == 0
    tgt = t.targets[0]
    assert tgt.ip_address == gw and tgt.port == 3260
    assert tgt.lun == bytes.fromhex("0001000000000000")
    assert tgt.chap_type == 0 and tgt.chap_name is None and tgt.chap_secret is None
    assert tgt.name == "iqn.2009-06.dracut:target0" and tgt.nic_association == 0
    assert tgt.offset == 0x100 and tgt.valid and tgt.boot_selected


def test_lkml_three_nics_three_targets() -> None:
    t = parse_ibft(load(LKML), exact_length=True)
    assert t.problems == ()
    assert t.header.length == 763
    assert t.control is not None and t.control.length == 22
    assert t.control.structure_offsets == (0x48, 0x98, 0x1D0, 0x100, 0x208, 0x168, 0x240)
    assert [n.index for n in t.nics] == [0, 1, 2]
    assert [n.offset for n in t.nics] == [0x98, 0x100, 0x168]
    assert [str(n.ip_address) for n in t.nics] == [
        "192.168.50.101", "192.168.51.101", "192.168.52.101"]
    assert [n.pci_location for n in t.nics] == ["00:03.0", "00:04.0", "00:05.0"]
    assert [t.index for t in t.targets] == [0, 1, 2]
    assert [str(x.ip_address) for x in t.targets] == [
        "192.168.50.1", "192.168.51.1", "192.168.52.1"]
    assert [x.lun[1] for x in t.targets] == [1, 2, 3]
    assert [x.name for x in t.targets] == [f"iqn.2009-06.test:target{i}" for i in range(3)]


def test_fwts_0001_rejected_with_reasons() -> None:
    data = load(FWTS1)
    with pytest.raises(IbftError) as info:
        parse_ibft(data)
    err = info.value
    assert (err.structure, err.field, err.offset) == ("header", "checksum", 9)
    assert err.value == 0x6C
    assert "byte sum" in str(err) and "0x9" in str(err)
    keys = problem_keys(err.problems)
    # Strings are not NUL-terminated: the initiator name "AAAAAAAA" runs into "BBBB".
    assert ("initiator", "name") in keys
    name_problem = next(p for p in err.problems if (p.structure, p.field) == ("initiator", "name"))
    assert name_problem.offset == 0x1D8 + 8 and name_problem.value == ord("B")
    assert "not NUL-terminated" in name_problem.message
    assert {("nic0", "hostname"), ("nic1", "hostname"), ("target1", "reverse_chap_secret")} <= keys


def test_fwts_0001_lenient_reads_what_it_can() -> None:
    t = parse_ibft(load(FWTS1), strict=False)
    assert t.initiator is not None and t.initiator.name == "AAAAAAAA"
    assert t.initiator.isns_server == IPv6Address("1122:3344:5566:7788:99aa:bbcc:ddee:ff00")
    assert [n.index for n in t.nics] == [0, 1] and [x.index for x in t.targets] == [0, 1]
    assert t.nics[0].prefix_length == 24
    # every problem names a structure, a field and an offset inside the table
    assert t.problems
    assert all(p.offset is not None and 0 <= p.offset <= t.header.length for p in t.problems)


def test_fwts_0002_rejected_reserved_bits_and_offsets_past_end() -> None:
    t = parse_ibft(load(FWTS2), strict=False)
    by_key = {(p.structure, p.field): p for p in t.problems}
    assert by_key[("header", "checksum")].value == 0x6C
    assert by_key[("control", "flags")].value == 2
    assert by_key[("control", "flags")].offset == 0x35
    assert by_key[("initiator", "flags")].value == 4
    assert by_key[("nic0", "flags")].value == 8
    assert by_key[("target0", "flags")].value == 0x10
    assert "reserved bits" in by_key[("nic0", "flags")].message
    past = by_key[("control", "target1_offset")]
    assert past.value == 0x1A0 and past.offset == 0x40 and "outside the table" in past.message
    assert by_key[("initiator", "name")].value == 0x1D8
    assert "past the end" in by_key[("initiator", "name")].message
    # lenient still returns the structures that are inside the table
    assert t.initiator is not None and len(t.nics) == 1 and len(t.targets) == 1
    with pytest.raises(IbftError):
        parse_ibft(load(FWTS2))


# -- crafted tables -------------------------------------------------------------------------


def sample() -> bytearray:
    nic = IbftNic(ip_address=IPv4Address("10.0.0.2"), prefix_length=24,
                  mac=bytes.fromhex("020000000001"))
    tgt = IbftTarget(ip_address=IPv4Address("10.0.0.1"), name="iqn.2026-11.test:disk",
                     lun=bytes.fromhex("0001000000000000"), chap_type=L.CHAP_ONE_WAY,
                     chap_name="joe", chap_secret="sesame-sesame")
    return bytearray(build_ibft(IbftInitiator(name="iqn.2026-11.test:client"), [nic], [tgt]))


def offsets(data: bytes) -> tuple[int, int, int]:
    t = parse_ibft(data)
    return t.initiator.offset if t.initiator else 0, t.nics[0].offset, t.targets[0].offset


def patched(data: bytearray, at: int, value: bytes, *, fix: bool = True) -> bytes:
    data[at : at + len(value)] = value
    if fix:
        fill_checksum(data)
    return bytes(data)


def only_problem(data: bytes) -> Problem:
    t = parse_ibft(data, strict=False)
    assert len(t.problems) == 1, t.problems
    return t.problems[0]


def test_sample_is_clean() -> None:
    assert parse_ibft(bytes(sample())).problems == ()


def test_bad_checksum_names_expected_value() -> None:
    data = sample()
    data[9] ^= 0x01
    p = only_problem(bytes(data))
    assert (p.structure, p.field, p.offset) == ("header", "checksum", 9)
    assert "0x01" in p.message or "0xff" in p.message


def test_revision_must_be_1() -> None:
    p = only_problem(patched(sample(), 8, b"\x02"))
    assert (p.structure, p.field, p.offset, p.value) == ("header", "revision", 8, 2)


def test_signature_checked_but_linux_spellings_accepted() -> None:
    assert parse_ibft(patched(sample(), 0, b"IBFT")).header.signature == "IBFT"
    assert parse_ibft(patched(sample(), 0, b"BIFT")).problems == ()
    p = only_problem(patched(sample(), 0, b"XBFT"))
    assert (p.structure, p.field, p.value) == ("header", "signature", b"XBFT")


def test_control_id_index_length() -> None:
    assert only_problem(patched(sample(), 0x30, b"\x07")).field == "id"
    p = only_problem(patched(sample(), 0x34, b"\x01"))
    assert (p.structure, p.field, p.offset, p.value) == ("control", "index", 0x34, 1)
    p = only_problem(patched(sample(), 0x32, (16).to_bytes(2, "little")))
    assert (p.structure, p.field, p.value) == ("control", "length", 16)


def test_structure_length_must_be_exact() -> None:
    _, nic_at, _ = offsets(bytes(sample()))
    p = only_problem(patched(sample(), nic_at + 2, (100).to_bytes(2, "little")))
    assert (p.structure, p.field, p.offset, p.value) == ("nic0", "length", nic_at + 2, 100)
    assert "expected 102" in p.message


def test_wrong_structure_in_slot() -> None:
    _, nic_at, _ = offsets(bytes(sample()))
    t = parse_ibft(patched(sample(), nic_at, bytes([L.ID_TARGET])), strict=False)
    p = next(p for p in t.problems if p.field == "id")
    assert (p.structure, p.offset, p.value) == ("nic0", nic_at, L.ID_TARGET)


def test_offset_outside_table() -> None:
    data = sample()
    t = parse_ibft(patched(data, 0x3A, (len(data) + 8).to_bytes(2, "little")), strict=False)
    p = t.problems[0]
    assert (p.structure, p.field, p.offset) == ("control", "nic0_offset", 0x3A)
    assert p.value == len(data) + 8 and "outside the table" in p.message
    assert t.nics == ()
    # the target now names a NIC that is not in the table
    assert [(x.structure, x.field) for x in t.problems[1:]] == [("target0", "nic_association")]


def test_nic_association_must_name_existing_nic() -> None:
    _, _, tgt_at = offsets(bytes(sample()))
    p = only_problem(patched(sample(), tgt_at + L.TGT_NIC_ASSOC, b"\x05"))
    assert (p.structure, p.field, p.offset, p.value) == (
        "target0", "nic_association", tgt_at + 33, 5)


def test_unaligned_structure() -> None:
    data = sample()
    _, nic_at, _ = offsets(bytes(data))
    # Move the NIC by 2 bytes into its own padding-free spot: copy and repoint.
    moved = bytearray(data)
    moved[nic_at + 2 : nic_at + 2 + L.NIC_LENGTH] = data[nic_at : nic_at + L.NIC_LENGTH]
    moved[nic_at : nic_at + 2] = b"\0\0"
    t = parse_ibft(patched(moved, 0x3A, (nic_at + 2).to_bytes(2, "little")), strict=False)
    assert any(p.field == "nic0_offset" and "aligned" in p.message for p in t.problems)


def test_overlapping_structures() -> None:
    _, nic_at, _ = offsets(bytes(sample()))
    # point target0 at the NIC: same offset referenced twice
    t = parse_ibft(patched(sample(), 0x3C, nic_at.to_bytes(2, "little")), strict=False)
    assert any(p.field == "target0_offset" for p in t.problems)
    # a second NIC written over the second half of the first one
    data = sample()
    second = bytearray(data[nic_at : nic_at + L.NIC_LENGTH])
    second[L.HDR_INDEX] = 1
    data[nic_at + 48 : nic_at + 48 + L.NIC_LENGTH] = second
    t = parse_ibft(patched(data, 0x3E, (nic_at + 48).to_bytes(2, "little")), strict=False)
    overlaps = [p for p in t.problems if "overlaps" in p.message]
    assert overlaps and overlaps[0].structure == "nic1" and overlaps[0].offset == nic_at + 48
    assert "nic0" in overlaps[0].message


def test_string_not_terminated_and_outside_structures() -> None:
    data = sample()
    t0 = parse_ibft(bytes(data))
    assert t0.initiator is not None
    name_len = len("iqn.2026-11.test:client")
    desc = t0.initiator.offset + L.INI_NAME
    p = only_problem(patched(sample(), desc, (name_len - 1).to_bytes(2, "little")))
    assert (p.structure, p.field) == ("initiator", "name")
    assert "not NUL-terminated" in p.message
    # a string pointing into the NIC structure
    nic_at = t0.nics[0].offset
    t = parse_ibft(patched(sample(), desc + 2, (nic_at + 8).to_bytes(2, "little")), strict=False)
    assert any(p.field == "name" and "overlaps a table structure" in p.message
               for p in t.problems)


def test_secret_values_are_masked_in_problems() -> None:
    t0 = parse_ibft(bytes(sample()))
    tgt = t0.targets[0]
    data = sample()
    secret_desc = tgt.offset + L.TGT_CHAP_SECRET
    secret_at = int.from_bytes(data[secret_desc + 2 : secret_desc + 4], "little")
    t = parse_ibft(patched(data, secret_at + 2, b"\0"), strict=False)
    p = next(p for p in t.problems if p.field == "chap_secret")
    assert p.value == "***" and "sesame" not in str(p)


def test_chap_type_consistency() -> None:
    _, _, tgt_at = offsets(bytes(sample()))
    t = parse_ibft(patched(sample(), tgt_at + L.TGT_CHAP_TYPE, b"\x02"), strict=False)
    assert problem_keys(t.problems) == {("target0", "reverse_chap_name"),
                                        ("target0", "reverse_chap_secret")}
    assert all("needs" in p.message for p in t.problems)
    t = parse_ibft(patched(sample(), tgt_at + L.TGT_CHAP_TYPE, b"\x00"), strict=False)
    assert problem_keys(t.problems) == {("target0", "chap_name"), ("target0", "chap_secret")}
    assert all("CHAP type is 0" in p.message for p in t.problems)
    t = parse_ibft(patched(sample(), tgt_at + L.TGT_CHAP_TYPE, b"\x07"), strict=False)
    assert any(p.field == "chap_type" and p.value == 7 for p in t.problems)


def test_prefix_and_origin_ranges() -> None:
    _, nic_at, _ = offsets(bytes(sample()))
    p = only_problem(patched(sample(), nic_at + L.NIC_PREFIX, b"\x21"))
    assert (p.structure, p.field, p.value) == ("nic0", "prefix_length", 33)
    p = only_problem(patched(sample(), nic_at + L.NIC_ORIGIN, b"\x09"))
    assert (p.structure, p.field, p.value) == ("nic0", "origin", 9)


def test_duplicate_nic_index() -> None:
    nics = [IbftNic(index=0), IbftNic(index=1), IbftNic(index=2)]
    data = bytearray(build_ibft(IbftInitiator(name="iqn.x"), nics, []))
    t = parse_ibft(data)
    p = only_problem(patched(data, t.nics[2].offset + L.HDR_INDEX, b"\x00"))
    assert (p.structure, p.field, p.value) == ("nic2", "index", 0)
    assert "already used by nic0" in p.message
    # in a fixed slot the index must match the slot
    p = parse_ibft(patched(data, t.nics[1].offset + L.HDR_INDEX, b"\x07"), strict=False).problems[0]
    assert (p.structure, p.field, p.value) == ("nic1", "index", 7)


def test_zero_filled_slot_is_ignored_like_linux() -> None:
    nic = IbftNic(ip_address=IPv4Address("10.0.0.2"), prefix_length=24)
    tgt = IbftTarget(ip_address=IPv4Address("10.0.0.1"), name="iqn.x:disk")
    data = bytearray(build_ibft(IbftInitiator(name="iqn.x"), [nic], [tgt], IPXE_LAYOUT))
    assert data[0x110 : 0x110 + L.NIC_LENGTH] == bytes(L.NIC_LENGTH)  # unused slot
    t = parse_ibft(patched(data, 0x3E, (0x110).to_bytes(2, "little")))
    assert len(t.nics) == 1 and t.control is not None
    assert t.control.structure_offsets[3] == 0x110
    # pointing at something that is neither zero nor a structure is reported
    t = parse_ibft(patched(data, 0x3E, (0x200).to_bytes(2, "little")), strict=False)
    assert [(p.structure, p.field) for p in t.problems] == [("nic1", "id")]


def test_truncated_and_tiny_inputs() -> None:
    with pytest.raises(IbftError) as info:
        parse_ibft(b"iBFT")
    assert (info.value.structure, info.value.field, info.value.value) == ("header", "length", 4)
    with pytest.raises(IbftError):
        parse_ibft(b"", strict=False)
    data = bytes(sample())
    t = parse_ibft(data[:100], strict=False)
    p = t.problems[0]
    assert (p.structure, p.field, p.value) == ("header", "length", len(data))
    assert "only 100" in p.message


def test_trailing_bytes_ignored_unless_exact() -> None:
    data = bytes(sample())
    assert parse_ibft(data + b"\xff" * 40) == parse_ibft(data)
    t = parse_ibft(data + b"\0", strict=False, exact_length=True)
    assert [(x.structure, x.field) for x in t.problems] == [("header", "length")]


def test_ibft_error_fields_and_message() -> None:
    data = sample()
    data[9] ^= 0x55
    with pytest.raises(IbftError) as info:
        parse_ibft(bytes(data))
    text = str(info.value)
    assert text.startswith("invalid iBFT: header.checksum at offset 0x9")
    assert isinstance(info.value, ValueError)
