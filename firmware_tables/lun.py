"""SCSI logical unit numbers: the 8-byte SAM form and its integer and text forms.

The iBFT Target structure holds the boot LUN as 8 bytes in SAM format (iBFT spec 1.03
§3.7 "Target Structure"; SAM-5 logical unit numbers: four 2-byte levels, big-endian
within a level).

As an integer this package uses the convention of Linux (``scsilun_to_int``) and
libiscsi: the first level is the low 16 bits, the second level the next 16, and so on.
So LUN 1 is bytes ``00 01 00 00 00 00 00 00`` and the integer keeps the addressing
method bits (a flat-space LUN 300 is ``0x412C``; plain ``300`` encodes ``01 2C``, as
libiscsi would put it on the wire).

RFC 4173 writes a LUN in a root path as up to four dash-separated groups of
up to four hex digits, most significant level first: ``4752-3A4F-6b7e-2F99``, ``1``.
"""

from __future__ import annotations

LUN_BYTES = 8
MAX_LUN = (1 << 64) - 1


def lun_to_sam(lun: int) -> bytes:
    """The 8 SAM bytes of an integer LUN (inverse of ``lun_from_sam``)."""
    if not 0 <= lun <= MAX_LUN:
        raise ValueError(f"LUN {lun} is outside 0..2**64-1")
    out = bytearray(LUN_BYTES)
    for level in range(4):
        group = (lun >> (16 * level)) & 0xFFFF
        out[2 * level] = group >> 8
        out[2 * level + 1] = group & 0xFF
    return bytes(out)


def lun_from_sam(raw: bytes) -> int:
    """The integer form of 8 SAM LUN bytes."""
    if len(raw) != LUN_BYTES:
        raise ValueError(f"a SAM LUN is 8 bytes, got {len(raw)}")
    lun = 0
    for level in range(4):
        lun |= ((raw[2 * level] << 8) | raw[2 * level + 1]) << (16 * level)
    return lun


def parse_lun_groups(text: str) -> bytes:
    """Parse RFC 4173 hex groups (``"1"``, ``"4752-3A4F"``; empty means LUN 0).

    Raises ``ValueError`` naming what is wrong.
    """
    if text == "":
        return bytes(LUN_BYTES)
    groups = text.split("-")
    if len(groups) > 4:
        raise ValueError(f"at most four dash-separated groups, got {len(groups)}")
    out = bytearray(LUN_BYTES)
    for i, group in enumerate(groups):
        if not 1 <= len(group) <= 4 or any(c not in "0123456789abcdefABCDEF" for c in group):
            raise ValueError(f"group {i + 1} {group!r} is not 1 to 4 hex digits")
        value = int(group, 16)
        out[2 * i] = value >> 8
        out[2 * i + 1] = value & 0xFF
    return bytes(out)


def format_lun_groups(raw: bytes) -> str:
    """Format SAM bytes as RFC 4173 hex groups, dropping trailing zero groups."""
    if len(raw) != LUN_BYTES:
        raise ValueError(f"a SAM LUN is 8 bytes, got {len(raw)}")
    groups = [(raw[i] << 8) | raw[i + 1] for i in range(0, LUN_BYTES, 2)]
    while len(groups) > 1 and groups[-1] == 0:
        groups.pop()
    return "-".join(f"{g:x}" for g in groups)
