"""The on-LUN dump header (bootinit/dumpfmt.py): exact layout, round trip, checks."""

from __future__ import annotations

import hashlib
import struct

import crc32c
import pytest

from bootinit import dumpfmt
from bootinit.dumpfmt import (
    HEADER_SIZE,
    MAGIC,
    ChecksumType,
    DumpFormat,
    DumpHeader,
    DumpState,
    HeaderError,
)


def sample(**kw: object) -> DumpHeader:
    fields: dict[str, object] = dict(
        state=DumpState.COMPLETE, format=DumpFormat.ELF, data_offset=4096,
        data_size=151127315, area_size=256 << 20, block_size=512,
        checksum=hashlib.sha256(b"dump").digest(), panic_time_ns=1_795_273_375_877_805_000,
        written_time_ns=1_795_273_380_068_497_747, guest_memory=128 << 20, write_ms=4187,
        note='qemu 7.2.22 GUEST_PANICKED {"action": "pause"}')
    fields.update(kw)
    return DumpHeader(**fields)  # type: ignore[arg-type]


def test_layout_is_the_documented_one() -> None:
    h = sample()
    raw = dumpfmt.encode(h)
    assert len(raw) == HEADER_SIZE == 4096
    assert raw[0:8] == MAGIC == b"BOOTDUMP"
    assert struct.unpack_from("<HHIII", raw, 8) == (1, 4096, 2, 1, 1)
    assert struct.unpack_from("<6Q", raw, 24) == (
        4096, 151127315, 256 << 20, h.panic_time_ns, h.written_time_ns, 128 << 20)
    assert struct.unpack_from("<II", raw, 72) == (512, 4187)
    assert raw[80:112] == hashlib.sha256(b"dump").digest()
    assert raw[112:240].rstrip(b"\0") == h.note.encode()
    assert raw[240:4092] == bytes(4092 - 240)
    assert struct.unpack_from("<I", raw, 4092)[0] == crc32c.crc32c(raw[:4092])


def test_round_trip_and_dict() -> None:
    h = sample()
    assert dumpfmt.decode(dumpfmt.encode(h)) == h
    d = h.as_dict()
    assert d["state"] == "complete" and d["format"] == "elf"
    assert d["checksum"] == hashlib.sha256(b"dump").hexdigest()
    assert h.complete and h.capacity == (256 << 20) - 4096
    w = sample(state=DumpState.WRITING, data_size=0, checksum=bytes(32))
    assert not dumpfmt.decode(dumpfmt.encode(w)).complete


def test_encode_into_a_larger_block_leaves_the_rest() -> None:
    buf = bytearray(b"\xee" * 8192)
    dumpfmt.encode_into(buf, sample())
    assert dumpfmt.decode(buf) == sample()
    assert buf[4096:] == b"\xee" * 4096
    with pytest.raises(ValueError, match="4096"):
        dumpfmt.encode_into(bytearray(100), sample())


def test_note_is_truncated_to_its_field() -> None:
    h = sample(note="x" * 500)
    assert dumpfmt.decode(dumpfmt.encode(h)).note == "x" * 128


@pytest.mark.parametrize("fmt", list(DumpFormat))
def test_formats_and_their_qmp_names(fmt: DumpFormat) -> None:
    assert DumpFormat.from_name(fmt.qmp_name) is fmt
    assert dumpfmt.decode(dumpfmt.encode(sample(format=fmt))).format is fmt
    assert DumpFormat.KDUMP_ZLIB.qmp_name == "kdump-zlib"
    with pytest.raises(ValueError, match="unknown dump format"):
        DumpFormat.from_name("vmcore")


def _patched(raw: bytes, offset: int, value: bytes, fix_crc: bool = True) -> bytes:
    b = bytearray(raw)
    b[offset:offset + len(value)] = value
    if fix_crc:
        struct.pack_into("<I", b, 4092, crc32c.crc32c(bytes(b[:4092])))
    return bytes(b)


@pytest.mark.parametrize(("offset", "value", "fix_crc", "message"), [
    (0, b"NOTADUMP", True, "no dump here"),
    (8, struct.pack("<H", 2), True, "version 2"),
    (100, b"\x01", False, "CRC-32C"),
    (4000, b"\x01", False, "CRC-32C"),
    (10, struct.pack("<H", 512), True, "header_size"),
    (12, struct.pack("<I", 9), True, "DumpState"),
    (16, struct.pack("<I", 9), True, "DumpFormat"),
    (20, struct.pack("<I", 2), True, "ChecksumType"),
    (32, struct.pack("<Q", 1 << 40), True, "outside"),
    (24, struct.pack("<Q", 0), True, "outside"),
])
def test_decode_rejects(offset: int, value: bytes, fix_crc: bool, message: str) -> None:
    raw = _patched(dumpfmt.encode(sample()), offset, value, fix_crc)
    with pytest.raises(HeaderError, match=message):
        dumpfmt.decode(raw)


def test_decode_rejects_short_and_zero_input() -> None:
    with pytest.raises(HeaderError, match="4096"):
        dumpfmt.decode(b"BOOTDUMP")
    with pytest.raises(HeaderError, match="no dump here"):
        dumpfmt.decode(bytes(4096))


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="checksum of 3 bytes"):
        dumpfmt.encode(sample(checksum=b"abc"))
    with pytest.raises(ValueError, match="data_size"):
        dumpfmt.encode(sample(data_size=-1))


def test_data_offset_for_block_sizes() -> None:
    assert dumpfmt.data_offset_for(512) == 4096
    assert dumpfmt.data_offset_for(4096) == 4096
    assert dumpfmt.data_offset_for(8192) == 8192
    with pytest.raises(ValueError):
        dumpfmt.data_offset_for(1000)
    assert int(ChecksumType.SHA256) == 1
