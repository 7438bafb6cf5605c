"""SCSI Command Descriptor Block builders (SPC-4, SBC-3).

Each function returns the CDB as ``bytes``; invalid arguments raise
:class:`CdbError` naming the field.  :func:`read_cdb` / :func:`write_cdb`
pick the 10-byte form when LBA and length fit (LBA + blocks <= 2**32, at most
65535 blocks) and the 16-byte form otherwise (devices over 2 TiB with 512-byte
blocks, SBC-3 §5.11/§5.13).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum


class CdbError(ValueError):
    """A CDB field value is outside what the command allows."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"CDB field {field}={value}: {reason}")


class Op(IntEnum):
    """Operation codes used here (SPC-4 / SBC-3)."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    INQUIRY = 0x12
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    SYNCHRONIZE_CACHE_10 = 0x35
    UNMAP = 0x42
    READ_16 = 0x88
    WRITE_16 = 0x8A
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0


SA_READ_CAPACITY_16 = 0x10
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


def _check(field: str, value: int, high: int, low: int = 0) -> None:
    if not low <= value <= high:
        raise CdbError(field, value, f"outside {low}..{high}")


def test_unit_ready() -> bytes:
    """TEST UNIT READY (SPC-4 §6.37)."""
    return bytes(6)


def request_sense(allocation_length: int = 252, descriptor: bool = False) -> bytes:
    """REQUEST SENSE (SPC-4 §6.29); ``descriptor`` asks for descriptor format."""
    _check("ALLOCATION LENGTH", allocation_length, 255)
    return bytes((Op.REQUEST_SENSE, int(descriptor), 0, 0, allocation_length, 0))


def inquiry(page: int | None = None, allocation_length: int = 255) -> bytes:
    """INQUIRY (SPC-4 §6.6): standard data, or the VPD ``page`` (EVPD=1)."""
    _check("ALLOCATION LENGTH", allocation_length, 0xFFFF)
    if page is None:
        return struct.pack(">BBBHB", Op.INQUIRY, 0, 0, allocation_length, 0)
    _check("PAGE CODE", page, 0xFF)
    return struct.pack(">BBBHB", Op.INQUIRY, 1, page, allocation_length, 0)


def report_luns(allocation_length: int = 4096, select_report: int = 0) -> bytes:
    """REPORT LUNS (SPC-4 §6.33); allocation length must be at least 16."""
    _check("ALLOCATION LENGTH", allocation_length, _U32, 16)
    _check("SELECT REPORT", select_report, 0xFF)
    return struct.pack(">BBBBBBIBB", Op.REPORT_LUNS, 0, select_report, 0, 0, 0,
                       allocation_length, 0, 0)


def read_capacity_10() -> bytes:
    """READ CAPACITY(10) (SBC-3 §5.15)."""
    return bytes((Op.READ_CAPACITY_10,)) + bytes(9)


def read_capacity_16(allocation_length: int = 32) -> bytes:
    """READ CAPACITY(16) (SBC-3 §5.16): SERVICE ACTION IN(16), action 0x10."""
    _check("ALLOCATION LENGTH", allocation_length, _U32)
    return struct.pack(">BBQIBB", Op.SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16, 0,
                       allocation_length, 0, 0)


def _rw(op10: int, op16: int, lba: int, blocks: int, fua: bool, force16: bool) -> bytes:
    _check("LOGICAL BLOCK ADDRESS", lba, _U64)
    _check("TRANSFER LENGTH", blocks, _U32, 1)
    if lba + blocks > _U64 + 1:
        raise CdbError("TRANSFER LENGTH", blocks, "runs past the last addressable LBA")
    flags = 0x08 if fua else 0
    if not force16 and lba + blocks <= _U32 + 1 and blocks <= 0xFFFF:
        return struct.pack(">BBIBHB", op10, flags, lba, 0, blocks, 0)
    return struct.pack(">BBQIBB", op16, flags, lba, blocks, 0, 0)


def read_cdb(lba: int, blocks: int, *, fua: bool = False, force16: bool = False) -> bytes:
    """READ(10) or READ(16) (SBC-3 §5.11, §5.13) for ``blocks`` >= 1 blocks at ``lba``."""
    return _rw(Op.READ_10, Op.READ_16, lba, blocks, fua, force16)


def write_cdb(lba: int, blocks: int, *, fua: bool = False, force16: bool = False) -> bytes:
    """WRITE(10) or WRITE(16) (SBC-3 §5.32, §5.34)."""
    return _rw(Op.WRITE_10, Op.WRITE_16, lba, blocks, fua, force16)


def synchronize_cache(lba: int = 0, blocks: int = 0, *, immed: bool = False,
                      force16: bool = False) -> bytes:
    """SYNCHRONIZE CACHE(10)/(16) (SBC-3 §5.22/§5.23); blocks=0 means to the end."""
    _check("LOGICAL BLOCK ADDRESS", lba, _U64)
    _check("NUMBER OF LOGICAL BLOCKS", blocks, _U32)
    flags = 0x02 if immed else 0
    if not force16 and lba <= _U32 and blocks <= 0xFFFF:
        return struct.pack(">BBIBHB", Op.SYNCHRONIZE_CACHE_10, flags, lba, 0, blocks, 0)
    return struct.pack(">BBQIBB", Op.SYNCHRONIZE_CACHE_16, flags, lba, blocks, 0, 0)


def write_same_16(lba: int, blocks: int, *, unmap: bool = False) -> bytes:
    """WRITE SAME(16) (SBC-3 §5.42); one block of data-out follows."""
    _check("LOGICAL BLOCK ADDRESS", lba, _U64)
    _check("NUMBER OF LOGICAL BLOCKS", blocks, _U32)
    return struct.pack(">BBQIBB", Op.WRITE_SAME_16, 0x08 if unmap else 0, lba, blocks, 0, 0)


def unmap(extents: Sequence[tuple[int, int]]) -> tuple[bytes, bytes]:
    """UNMAP (SBC-3 §5.28): (CDB, parameter list) for ``(lba, blocks)`` extents."""
    if not extents:
        raise CdbError("UNMAP BLOCK DESCRIPTOR", 0, "at least one extent needed")
    descs = b""
    for lba, blocks in extents:
        _check("UNMAP LOGICAL BLOCK ADDRESS", lba, _U64)
        _check("NUMBER OF LOGICAL BLOCKS", blocks, _U32)
        descs += struct.pack(">QII", lba, blocks, 0)
    params = struct.pack(">HHI", len(descs) + 6, len(descs), 0) + descs
    _check("PARAMETER LIST LENGTH", len(params), 0xFFFF)
    cdb = struct.pack(">BBIBHB", Op.UNMAP, 0, 0, 0, len(params), 0)
    return cdb, params


__all__ = [
    "CdbError", "Op", "inquiry", "read_capacity_10", "read_capacity_16", "read_cdb",
    "report_luns", "request_sense", "synchronize_cache", "test_unit_ready", "unmap",
    "write_cdb", "write_same_16",
]
