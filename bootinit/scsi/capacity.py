"""READ CAPACITY(10)/(16) response decoders (SBC-3 §5.15, §5.16)."""

from __future__ import annotations

from dataclasses import dataclass

from netstack.link.base import BytesLike


class CapacityFormatError(ValueError):
    """READ CAPACITY data too short or with an invalid block length."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"READ CAPACITY {field}={value}: {reason}")


@dataclass(frozen=True, slots=True)
class Capacity:
    """Size of a block device.  ``blocks`` = last LBA + 1."""

    last_lba: int
    block_size: int
    physical_exponent: int = 0
    lowest_aligned_lba: int = 0
    thin_provisioned: bool = False
    unmapped_reads_zero: bool = False
    protection: bool = False

    @property
    def blocks(self) -> int:
        """Number of logical blocks."""
        return self.last_lba + 1

    @property
    def size_bytes(self) -> int:
        """Capacity in bytes."""
        return self.blocks * self.block_size

    @property
    def physical_block_size(self) -> int:
        """Physical block size (logical size << LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT)."""
        return self.block_size << self.physical_exponent


def _check_block(n: int) -> None:
    if n == 0 or n > 1 << 24:
        raise CapacityFormatError("LOGICAL BLOCK LENGTH", n, "not a usable block size")


def decode_read_capacity_10(data: BytesLike) -> Capacity | None:
    """READ CAPACITY(10) data; None when the device needs READ CAPACITY(16)
    (RETURNED LOGICAL BLOCK ADDRESS 0xFFFFFFFF, SBC-3 §5.15.2)."""
    b = bytes(data)
    if len(b) < 8:
        raise CapacityFormatError("length", len(b), "needs 8 bytes")
    last = int.from_bytes(b[0:4], "big")
    size = int.from_bytes(b[4:8], "big")
    if last == 0xFFFFFFFF:
        return None
    _check_block(size)
    return Capacity(last, size)


def decode_read_capacity_16(data: BytesLike) -> Capacity:
    """READ CAPACITY(16) parameter data (SBC-3 §5.16.2); at least 12 bytes."""
    b = bytes(data)
    if len(b) < 12:
        raise CapacityFormatError("length", len(b), "needs at least 12 bytes")
    last = int.from_bytes(b[0:8], "big")
    size = int.from_bytes(b[8:12], "big")
    _check_block(size)
    b = b + bytes(max(0, 16 - len(b)))
    return Capacity(
        last, size, physical_exponent=b[13] & 0x0F,
        lowest_aligned_lba=int.from_bytes(b[14:16], "big") & 0x3FFF,
        thin_provisioned=bool(b[14] & 0x80), unmapped_reads_zero=bool(b[14] & 0x40),
        protection=bool(b[12] & 0x01),
    )


__all__ = ["Capacity", "CapacityFormatError", "decode_read_capacity_10",
           "decode_read_capacity_16"]
