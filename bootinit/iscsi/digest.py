"""iSCSI header and data digests: CRC32C (RFC 7143 §13.1, RFC 3720 Appendix B.4).

The digest is the Castagnoli CRC (polynomial 0x1EDC6F41, reflected, initial value
and final XOR 0xFFFFFFFF) of the covered bytes, sent least significant byte first:
32 zero bytes give the value 0x8A9136AA, transmitted as ``aa 36 91 8a`` (RFC 3720
B.4).  The header digest covers the BHS and all AHS; the data digest covers the
data segment including its padding (RFC 7143 §11.1, §11.2).
"""

from __future__ import annotations

import crc32c as _crc32c

from netstack.link.base import BytesLike

DIGEST_LEN = 4


def crc32c(data: BytesLike, crc: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``crc`` (0 to start), as an integer."""
    return int(_crc32c.crc32c(data, crc))


def digest_bytes(value: int) -> bytes:
    """The 4 wire bytes of a digest value (least significant byte first)."""
    return value.to_bytes(4, "little")


def digest_of(*parts: BytesLike) -> bytes:
    """Wire digest of the concatenation of ``parts`` (no concatenation is made)."""
    crc = 0
    for p in parts:
        crc = _crc32c.crc32c(p, crc)
    return int(crc).to_bytes(4, "little")


def digest_value(wire: BytesLike) -> int:
    """Integer value of 4 received digest bytes."""
    return int.from_bytes(wire, "little")
