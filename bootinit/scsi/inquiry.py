"""INQUIRY data decoders (SPC-4 §6.6, §7.8).

* :func:`decode_standard_inquiry`: peripheral qualifier/type, vendor, product,
  revision and a few capability bits (SPC-4 §6.6.2).
* :func:`decode_supported_pages` (VPD 0x00, §7.8.15),
  :func:`decode_unit_serial` (VPD 0x80, §7.8.16) and
  :func:`decode_device_identification` (VPD 0x83, §7.8.6).
* :func:`decode_block_limits` (VPD 0xB0, SBC-4 §6.6.4): the largest and the preferred
  transfer length of one command.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from netstack.link.base import BytesLike


class InquiryFormatError(ValueError):
    """INQUIRY data shorter than its header or inconsistent."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"INQUIRY data {field}={value}: {reason}")


class PeripheralType(IntEnum):
    """PERIPHERAL DEVICE TYPE (SPC-4 table 141), the common ones."""

    DISK = 0x00
    TAPE = 0x01
    PRINTER = 0x02
    PROCESSOR = 0x03
    WORM = 0x04
    CDROM = 0x05
    OPTICAL = 0x07
    CHANGER = 0x08
    ENCLOSURE = 0x0D
    RBC = 0x0E
    WELL_KNOWN_LU = 0x1E
    UNKNOWN = 0x1F


def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace").strip(" \0")


@dataclass(frozen=True, slots=True)
class StandardInquiry:
    """Standard INQUIRY data (SPC-4 §6.6.2)."""

    qualifier: int
    device_type: int
    removable: bool
    version: int
    response_format: int
    tpgs: int
    protect: bool
    cmdque: bool
    vendor: str
    product: str
    revision: str

    @property
    def connected(self) -> bool:
        """Qualifier 000b: a logical unit is connected (SPC-4 §6.6.2)."""
        return self.qualifier == 0

    @property
    def is_disk(self) -> bool:
        """A connected direct-access block device."""
        return self.connected and self.device_type == PeripheralType.DISK


def decode_standard_inquiry(data: BytesLike) -> StandardInquiry:
    """Decode standard INQUIRY data; fields past a short response come back empty."""
    b = bytes(data)
    if len(b) < 5:
        raise InquiryFormatError("length", len(b), "standard INQUIRY data needs 5 bytes")
    end = min(len(b), 5 + b[4])
    b = b[:end]
    return StandardInquiry(
        qualifier=b[0] >> 5, device_type=b[0] & 0x1F, removable=bool(b[1] & 0x80),
        version=b[2], response_format=b[3] & 0x0F,
        tpgs=(b[5] >> 4) & 3 if len(b) > 5 else 0,
        protect=bool(b[5] & 1) if len(b) > 5 else False,
        cmdque=bool(b[7] & 0x02) if len(b) > 7 else False,
        vendor=_ascii(b[8:16]), product=_ascii(b[16:32]), revision=_ascii(b[32:36]),
    )


def _vpd(data: BytesLike, page: int) -> bytes:
    b = bytes(data)
    if len(b) < 4:
        raise InquiryFormatError("length", len(b), "VPD page needs a 4-byte header")
    if b[1] != page:
        raise InquiryFormatError("PAGE CODE", b[1], f"expected VPD page 0x{page:02x}")
    n = int.from_bytes(b[2:4], "big")
    if 4 + n > len(b):
        raise InquiryFormatError("PAGE LENGTH", n, f"exceeds the {len(b) - 4} bytes received")
    return b[4:4 + n]


def decode_supported_pages(data: BytesLike) -> list[int]:
    """VPD 0x00: the supported page codes."""
    return list(_vpd(data, 0x00))


@dataclass(frozen=True)
class BlockLimits:
    """What VPD 0xB0 says about transfer sizes, in logical blocks (None: no limit or
    no preference reported, i.e. the field was 0)."""

    max_transfer_blocks: int | None
    optimal_transfer_blocks: int | None


def decode_block_limits(data: BytesLike) -> BlockLimits:
    """VPD 0xB0, Block Limits (SBC-4 §6.6.4): MAXIMUM TRANSFER LENGTH (bytes 8-11) and
    OPTIMAL TRANSFER LENGTH (bytes 12-15), counted in logical blocks, 0 = not reported."""
    body = _vpd(data, 0xB0)
    if len(body) < 12:
        raise InquiryFormatError("PAGE LENGTH", len(body),
                                 "Block Limits needs at least 12 bytes (SBC-4 §6.6.4)")
    mx = int.from_bytes(body[4:8], "big")
    opt = int.from_bytes(body[8:12], "big")
    return BlockLimits(mx or None, opt or None)


def decode_unit_serial(data: BytesLike) -> str:
    """VPD 0x80: the product serial number (spaces and NULs stripped)."""
    return _ascii(_vpd(data, 0x80))


class CodeSet(IntEnum):
    """Designator CODE SET (SPC-4 §7.8.6.1)."""

    BINARY = 1
    ASCII = 2
    UTF8 = 3


class DesignatorType(IntEnum):
    """DESIGNATOR TYPE (SPC-4 table 459)."""

    VENDOR_SPECIFIC = 0
    T10_VENDOR_ID = 1
    EUI64 = 2
    NAA = 3
    RELATIVE_TARGET_PORT = 4
    TARGET_PORT_GROUP = 5
    LOGICAL_UNIT_GROUP = 6
    MD5_LOGICAL_UNIT = 7
    SCSI_NAME_STRING = 8
    PROTOCOL_SPECIFIC_PORT = 9
    UUID = 10


class Association(IntEnum):
    """ASSOCIATION of a designator (SPC-4 §7.8.6.1)."""

    LOGICAL_UNIT = 0
    TARGET_PORT = 1
    TARGET_DEVICE = 2


@dataclass(frozen=True, slots=True)
class Designator:
    """One designation descriptor of VPD 0x83."""

    protocol: int
    code_set: int
    piv: bool
    association: int
    type: int
    value: bytes

    @property
    def text(self) -> str:
        """Printable form: the string for ASCII/UTF-8, hex otherwise."""
        if self.code_set in (CodeSet.ASCII, CodeSet.UTF8):
            return self.value.decode("utf-8", "replace").rstrip("\0 ")
        if self.type == DesignatorType.NAA:
            return "naa." + self.value.hex()
        if self.type == DesignatorType.EUI64:
            return "eui." + self.value.hex()
        return self.value.hex()


def decode_device_identification(data: BytesLike) -> list[Designator]:
    """VPD 0x83: the designation descriptors (SPC-4 §7.8.6)."""
    body = _vpd(data, 0x83)
    out: list[Designator] = []
    pos = 0
    while pos + 4 <= len(body):
        n = body[pos + 3]
        if pos + 4 + n > len(body):
            raise InquiryFormatError("DESIGNATOR LENGTH", n, "runs past the page")
        b0, b1 = body[pos], body[pos + 1]
        out.append(Designator(protocol=b0 >> 4, code_set=b0 & 0x0F, piv=bool(b1 & 0x80),
                              association=(b1 >> 4) & 3, type=b1 & 0x0F,
                              value=body[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def lu_identifier(designators: list[Designator]) -> Designator | None:
    """The best logical-unit designator for recognising a LUN again (NAA > EUI-64 > ...)."""
    rank = {DesignatorType.NAA: 0, DesignatorType.EUI64: 1, DesignatorType.UUID: 2,
            DesignatorType.SCSI_NAME_STRING: 3, DesignatorType.T10_VENDOR_ID: 4}
    lu = [d for d in designators if d.association == Association.LOGICAL_UNIT and d.type in rank]
    return min(lu, key=lambda d: rank[DesignatorType(d.type)], default=None)


__all__ = [
    "Association", "BlockLimits", "CodeSet", "Designator", "DesignatorType", "InquiryFormatError",
    "PeripheralType", "StandardInquiry", "decode_block_limits", "decode_device_identification",
    "decode_standard_inquiry", "decode_supported_pages", "decode_unit_serial",
    "lu_identifier",
]
