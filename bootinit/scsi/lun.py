"""SAM LUN encoding and REPORT LUNS data (SAM-5 §4.7, SPC-4 §6.33).

A LUN on the wire (the 8-byte LUN field of iSCSI PDUs, RFC 7143 §11.2.1.6) is
a SAM-encoded structure, not a plain number.  Single level LUNs 0..255 use
peripheral device addressing (method 00b), 256..16383 flat space addressing
(method 01b), as Linux ``int_to_scsilun`` and most targets do.
"""

from __future__ import annotations

from netstack.link.base import BytesLike


class LunFormatError(ValueError):
    """A LUN or a REPORT LUNS response cannot be decoded/encoded."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={value}: {reason}")


def encode_lun(lun: int) -> bytes:
    """8-byte SAM LUN for a single-level LUN number 0..16383 (SAM-5 §4.7.2)."""
    if 0 <= lun < 256:
        return bytes((0, lun)) + bytes(6)
    if 256 <= lun < 16384:
        return bytes((0x40 | (lun >> 8), lun & 0xFF)) + bytes(6)
    raise LunFormatError("LUN", lun, "single-level LUNs are 0..16383")


def lun_field(lun: int) -> int:
    """The LUN as the 64-bit integer of an iSCSI BHS LUN field."""
    return int.from_bytes(encode_lun(lun), "big")


def decode_lun(raw: BytesLike | int) -> int:
    """LUN number of an 8-byte SAM LUN (peripheral or flat addressing, first level).

    Raises :class:`LunFormatError` for multi-level or other addressing methods;
    use the raw 64-bit value for those.
    """
    b = raw.to_bytes(8, "big") if isinstance(raw, int) else bytes(raw)
    if len(b) != 8:
        raise LunFormatError("LUN length", len(b), "must be 8 bytes")
    if any(b[2:]):
        raise LunFormatError("LUN", int.from_bytes(b, "big"), "multi-level LUN")
    method = b[0] >> 6
    if method == 0:
        if b[0] & 0x3F:
            raise LunFormatError("LUN", int.from_bytes(b, "big"), "peripheral bus id not 0")
        return b[1]
    if method == 1:
        return ((b[0] & 0x3F) << 8) | b[1]
    raise LunFormatError("LUN", int.from_bytes(b, "big"), f"addressing method {method}")


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
    """REPORT LUNS as LUN numbers (single-level LUNs only; others raise)."""
    return [decode_lun(raw) for raw in decode_report_luns(data)]


__all__ = [
    "LunFormatError", "decode_lun", "decode_report_luns", "decode_report_luns_numbers",
    "encode_lun", "lun_field", "report_luns_length",
]
