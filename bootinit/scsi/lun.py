"""SAM LUN encoding and REPORT LUNS data (SAM-5 §4.7, SPC-4 §6.33).

A LUN on the wire (the 8-byte LUN field of iSCSI PDUs, RFC 7143 §11.2.1.6) is
a SAM-encoded structure, not a plain number. The project has one integer convention,
:mod:`firmware_tables.lun` (Linux ``int_to_scsilun``/``scsilun_to_int`` and libiscsi):
the integer's low 16 bits are the first level as sent, so ``iscsi://h/iqn/N`` means the
same LUN here as in QEMU and libiscsi, and a LUN that REPORT LUNS returns round-trips.
"""

from __future__ import annotations

from firmware_tables.lun import lun_from_sam, lun_to_sam
from netstack.link.base import BytesLike


class LunFormatError(ValueError):
    """A LUN or a REPORT LUNS response cannot be decoded/encoded."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={value}: {reason}")


def encode_lun(lun: int) -> bytes:
    """8-byte SAM LUN of an integer LUN (the project's one convention, see above)."""
    try:
        return lun_to_sam(lun)
    except ValueError as e:
        raise LunFormatError("LUN", lun, str(e)) from None


def lun_field(lun: int) -> int:
    """The LUN as the 64-bit integer of an iSCSI BHS LUN field."""
    return int.from_bytes(encode_lun(lun), "big")


def decode_lun(raw: BytesLike | int) -> int:
    """Integer LUN of an 8-byte SAM LUN (or of a BHS LUN field given as an int)."""
    b = raw.to_bytes(8, "big") if isinstance(raw, int) else bytes(raw)
    if len(b) != 8:
        raise LunFormatError("LUN length", len(b), "must be 8 bytes")
    return lun_from_sam(b)


def decode_report_luns(data: BytesLike) -> list[bytes]:
    """The raw 8-byte LUNs of a REPORT LUNS response (SPC-4 §6.33.2).

    When the LUN LIST LENGTH exceeds what was received (allocation too small)
    only the complete entries received are returned; the caller may retry with
    :func:`report_luns_length` + 8 bytes.
    """
    b = bytes(data)
    if len(b) < 8:
        raise LunFormatError("REPORT LUNS length", len(b), "shorter than the 8-byte header")
    n = int.from_bytes(b[0:4], "big")
    if n % 8:
        raise LunFormatError("LUN LIST LENGTH", n, "not a multiple of 8")
    body = b[8:8 + n]
    return [body[i:i + 8] for i in range(0, len(body) - len(body) % 8, 8)]


def report_luns_length(data: BytesLike) -> int:
    """Total response size the target wants to return (header + list)."""
    return 8 + int.from_bytes(bytes(data[0:4]), "big")


def decode_report_luns_numbers(data: BytesLike) -> list[int]:
    """REPORT LUNS as integer LUNs."""
    return [decode_lun(raw) for raw in decode_report_luns(data)]


__all__ = [
    "LunFormatError", "decode_lun", "decode_report_luns", "decode_report_luns_numbers",
    "encode_lun", "lun_field", "report_luns_length",
]
