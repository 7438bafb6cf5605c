"""The ACPI System Description Table header that starts every iBFT.

ACPI 6.5 section 5.2.6 ("System Description Table Header"): signature (4), length (4),
revision (1), checksum (1), OEM ID (6), OEM table ID (8), OEM revision (4), creator ID
(4), creator revision (4): 36 bytes, little-endian. The checksum byte makes the sum of
all ``length`` bytes of the table 0 modulo 256.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ACPI_HEADER_LENGTH = 36
_HEADER = struct.Struct("<4sIBB6s8sI4sI")
CHECKSUM_OFFSET = 9
LENGTH_OFFSET = 4


def table_sum(data: bytes | bytearray | memoryview) -> int:
    """The byte sum of ``data`` modulo 256 (0 for a table with a correct checksum)."""
    return sum(data) & 0xFF


def fill_checksum(table: bytearray) -> None:
    """Set the checksum byte of a complete table so that its byte sum is 0."""
    table[CHECKSUM_OFFSET] = 0
    table[CHECKSUM_OFFSET] = (-table_sum(table)) & 0xFF


def c_string(raw: bytes) -> str:
    """An OEM/signature field as Linux prints it (``%.*s``: up to the first NUL)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")


def pad_field(text: str, size: int, name: str) -> bytes:
    """Encode an ASCII header field, NUL-padded to ``size`` bytes."""
    if not text.isascii() or len(text) > size or "\0" in text:
        raise ValueError(f"{name} must be at most {size} ASCII characters, got {text!r}")
    return text.encode("ascii").ljust(size, b"\0")


@dataclass(frozen=True)
class AcpiHeader:
    """The 36-byte ACPI header fields (text fields as Linux shows them)."""

    signature: str
    length: int
    revision: int
    checksum: int
    oem_id: str
    oem_table_id: str
    oem_revision: int
    creator_id: str
    creator_revision: int

    @classmethod
    def unpack(cls, data: bytes) -> AcpiHeader:
        """Decode the first 36 bytes of ``data`` (the caller checks the length)."""
        sig, length, rev, csum, oem, oem_table, oem_rev, creator, creator_rev = (
            _HEADER.unpack_from(data, 0)
        )
        return cls(
            signature=c_string(sig),
            length=length,
            revision=rev,
            checksum=csum,
            oem_id=c_string(oem),
            oem_table_id=c_string(oem_table),
            oem_revision=oem_rev,
            creator_id=c_string(creator),
            creator_revision=creator_rev,
        )

    def pack(self) -> bytes:
        """Encode the header (checksum as given; see ``fill_checksum``)."""
        return _HEADER.pack(
            pad_field(self.signature, 4, "signature"),
            self.length,
            self.revision,
            self.checksum,
            pad_field(self.oem_id, 6, "OEM ID"),
            pad_field(self.oem_table_id, 8, "OEM table ID"),
            self.oem_revision,
            pad_field(self.creator_id, 4, "creator ID"),
            self.creator_revision,
        )
