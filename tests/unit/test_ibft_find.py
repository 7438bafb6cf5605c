"""Finding a table: file, ACPI tables directory, legacy BIOS scan of a memory image."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from firmware_tables.errors import TableNotFoundError
from firmware_tables.ibft import (
    IbftInitiator,
    IbftNic,
    IbftTarget,
    build_ibft,
    find_acpi_table,
    parse_ibft,
    read_table_file,
    scan_memory,
)

TABLE = build_ibft(
    IbftInitiator(name="iqn.2026-11.test:client"),
    [IbftNic(ip_address=IPv4Address("10.77.5.2"), prefix_length=24)],
    [IbftTarget(ip_address=IPv4Address("10.77.5.1"), name="iqn.2026-11.test:disk")],
)
LOW = 0x80000  # pmemsave 0x80000 0x80000


def image_with(tables: dict[int, bytes], base: int = LOW, size: int = 0x80000) -> bytes:
    mem = bytearray(size)
    for addr, data in tables.items():
        mem[addr - base : addr - base + len(data)] = data
    return bytes(mem)


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(TABLE)
    found = read_table_file(path)
    assert found.data == TABLE and found.source == str(path) and found.address is None


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableNotFoundError) as info:
        read_table_file(tmp_path / "nope.bin")
    assert "nope.bin" in str(info.value)


@pytest.mark.parametrize("name", ["iBFT", "IBFT", "BIFT"])
def test_acpi_directory_names(tmp_path: Path, name: str) -> None:
    (tmp_path / "DSDT").write_bytes(b"DSDT....")
    (tmp_path / name).write_bytes(TABLE)
    found = find_acpi_table(tmp_path)
    assert found.data == TABLE and found.source.endswith(name)


def test_acpi_directory_without_ibft(tmp_path: Path) -> None:
    (tmp_path / "APIC").write_bytes(b"APIC")
    with pytest.raises(TableNotFoundError):
        find_acpi_table(tmp_path)


def test_scan_finds_ipxe_copy_in_low_memory() -> None:
    # iPXE's BIOS build copies its table to 0x9e620 (16-byte aligned)
    found = scan_memory(image_with({0x9E620: TABLE}))
    assert found.address == 0x9E620 and found.data == TABLE
    assert parse_ibft(found.data).initiator == parse_ibft(TABLE).initiator
    assert "0x9e620" in found.source


def test_scan_full_low_memory_image_with_base_zero() -> None:
    found = scan_memory(image_with({0x9E620: TABLE}, base=0, size=0x100000), base=0)
    assert found.address == 0x9E620 and found.data == TABLE


def test_scan_only_on_16_byte_boundaries() -> None:
    with pytest.raises(TableNotFoundError):
        scan_memory(image_with({0x9E628: TABLE}))


def test_scan_skips_vga_window_and_takes_first_match() -> None:
    mem = image_with({0xA0000: TABLE, 0xB8000: TABLE, 0xC0010: TABLE, 0xD0000: TABLE})
    found = scan_memory(mem)
    assert found.address == 0xC0010


def test_scan_rejects_candidate_running_past_1mib() -> None:
    bogus = bytearray(TABLE)
    bogus[4:8] = (0x100).to_bytes(4, "little")  # length 0x100 at 0xFFF00 reaches 1 MiB
    mem = image_with({0xFFF00: bytes(bogus[:0x100]), 0x90000: TABLE})
    found = scan_memory(mem)
    assert found.address == 0x90000
    mem = image_with({0xFFF00: bytes(bogus[:0x100])})
    with pytest.raises(TableNotFoundError):
        scan_memory(mem)


def test_scan_nothing_and_short_images() -> None:
    with pytest.raises(TableNotFoundError):
        scan_memory(bytes(0x80000))
    with pytest.raises(TableNotFoundError):
        scan_memory(b"")
    with pytest.raises(TableNotFoundError):
        scan_memory(b"iBFT\xff\xff")  # signature, then no room for the length
    with pytest.raises(TableNotFoundError):
        # a table whose length runs past the end of a cut-short image
        scan_memory(TABLE[:60])


def test_scan_bift_signature() -> None:
    table = b"BIFT" + TABLE[4:]
    assert scan_memory(image_with({0x9E620: table})).data[:4] == b"BIFT"
