"""CDB builders (SPC-4, SBC-3), byte-exact."""

from __future__ import annotations

import pytest

from bootinit.scsi import cdb as C


def hx(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def test_simple_cdbs() -> None:
    assert C.test_unit_ready() == bytes(6)
    assert C.inquiry() == hx("12 00 00 00 ff 00")
    assert C.inquiry(0x80, allocation_length=0x200) == hx("12 01 80 02 00 00")
    assert C.inquiry(0x00) == hx("12 01 00 00 ff 00")
    assert C.inquiry(0x83) == hx("12 01 83 00 ff 00")
    assert C.report_luns() == hx("a0 00 00 00 00 00 00 00 10 00 00 00")
    assert C.read_capacity_10() == hx("25 00 00 00 00 00 00 00 00 00")
    assert C.read_capacity_16() == hx("9e 10 0000000000000000 00000020 00 00")
    assert C.request_sense() == hx("03 00 00 00 fc 00")
    assert C.request_sense(descriptor=True)[1] == 1


def test_read_write_10() -> None:
    assert C.read_cdb(0x12345678, 8) == hx("28 00 12 34 56 78 00 00 08 00")
    assert C.write_cdb(1, 0xFFFF, fua=True) == hx("2a 08 00 00 00 01 00 ff ff 00")


def test_read_16_when_needed() -> None:
    # last block at 2**32 - 1 still fits READ(10)
    assert C.read_cdb(0xFFFFFFFF, 1)[0] == 0x28
    # beyond 2 TiB of 512-byte blocks -> READ(16)
    assert C.read_cdb(0xFFFFFFFF, 2) == hx("88 00 00000000ffffffff 00000002 00 00")
    assert C.read_cdb(0x100000000, 1)[0] == 0x88
    assert C.read_cdb(0, 0x10000)[0] == 0x88  # more than 65535 blocks
    assert C.write_cdb(0, 1, force16=True) == hx("8a 00 0000000000000000 00000001 00 00")


@pytest.mark.parametrize(("lba", "blocks"), [(-1, 1), (0, 0), (0, 2**32), (2**64 - 1, 2)])
def test_read_bad_args(lba: int, blocks: int) -> None:
    with pytest.raises(C.CdbError):
        C.read_cdb(lba, blocks)


def test_sync_cache() -> None:
    assert C.synchronize_cache() == hx("35 00 00 00 00 00 00 00 00 00")
    assert C.synchronize_cache(immed=True)[1] == 0x02
    assert C.synchronize_cache(2**33, 1) == hx("91 00 0000000200000000 00000001 00 00")


def test_write_same_and_unmap() -> None:
    assert C.write_same_16(10, 20, unmap=True) == hx("93 08 000000000000000a 00000014 00 00")
    cdb, params = C.unmap([(0x100, 8), (0x200, 16)])
    assert cdb == hx("42 00 00 00 00 00 00 00 28 00")
    assert params[:8] == hx("0026 0020 00000000")
    assert params[8:24] == hx("0000000000000100 00000008 00000000")
    with pytest.raises(C.CdbError):
        C.unmap([])


def test_error_names_field() -> None:
    with pytest.raises(C.CdbError, match="ALLOCATION LENGTH"):
        C.report_luns(8)
