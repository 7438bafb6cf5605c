"""The on-LUN crash-dump header (pure: bytes in, bytes out).

A dump area (a whole LUN, the part after ``--offset``, or one MBR partition) starts with
one 4096-byte header; the dump stream follows at ``data_offset`` (the header size, or
the LUN's block size when that is larger). All integers are little-endian::

    off  size  field
      0     8  magic            b"BOOTDUMP"
      8     2  version          1
     10     2  header_size      4096
     12     4  state            1 = writing (the data is incomplete), 2 = complete
     16     4  format           1 elf, 2 kdump-zlib, 3 kdump-lzo, 4 kdump-snappy, 5 win-dmp
     20     4  checksum_type    1 = SHA-256
     24     8  data_offset      bytes from the header's start to the dump's first byte
     32     8  data_size        bytes of the dump (0 while writing)
     40     8  area_size        bytes reserved for header + dump
     48     8  panic_time_ns    UNIX time of the guest's panic (QMP event timestamp)
     56     8  written_time_ns  UNIX time the dump was complete on the LUN
     64     8  guest_memory     guest RAM in bytes (QMP query-memory-size-summary)
     72     4  block_size       the LUN's logical block size when written
     76     4  write_ms         milliseconds from the first dump byte to the last write
     80    32  checksum         SHA-256 of the ``data_size`` bytes at ``data_offset``
    112   128  note             UTF-8 text, NUL-padded (e.g. the panic event's data)
    240  3852  reserved         zero
   4092     4  header_crc       CRC-32C (Castagnoli) of bytes 0..4091

The header is written twice: ``writing`` before the first dump byte (so an old dump
is never mistaken for the new one), ``complete`` after the dump and a SYNCHRONIZE
CACHE. :func:`encode_into` packs into a caller's preallocated buffer (no allocation on
the dump path); :func:`decode` checks magic, version, CRC, sizes and the enumerations.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c

MAGIC = b"BOOTDUMP"
VERSION = 1
HEADER_SIZE = 4096
CHECKSUM_SIZE = 32
NOTE_SIZE = 128

_FIXED = struct.Struct("<8sHHIII6QII32s128s")
CRC_OFFSET = HEADER_SIZE - 4
_CRC = struct.Struct("<I")
_RESERVED = bytes(CRC_OFFSET - _FIXED.size)
assert _FIXED.size == 240


class HeaderError(ValueError):
    """The bytes are not a valid dump header; the message says what is wrong."""


class DumpState(enum.IntEnum):
    """Whether the dump behind a header is whole."""

    WRITING = 1
    COMPLETE = 2


class DumpFormat(enum.IntEnum):
    """The dump stream's format (QMP ``DumpGuestMemoryFormat``)."""

    ELF = 1
    KDUMP_ZLIB = 2
    KDUMP_LZO = 3
    KDUMP_SNAPPY = 4
    WIN_DMP = 5

    @property
    def qmp_name(self) -> str:
        """The name QMP ``dump-guest-memory`` takes (``elf``, ``kdump-zlib`` ...)."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_name(cls, name: str) -> DumpFormat:
        """``elf`` / ``kdump-zlib`` ... -> the member (ValueError for others)."""
        for f in cls:
            if f.qmp_name == name:
                return f
        raise ValueError(f"unknown dump format {name!r}: one of "
                         f"{', '.join(f.qmp_name for f in cls)}")


class ChecksumType(enum.IntEnum):
    """How the dump's bytes are summed."""

    SHA256 = 1


@dataclass(frozen=True)
class DumpHeader:
    """The decoded header (see the module doc for each field)."""

    state: DumpState
    format: DumpFormat
    data_offset: int
    data_size: int
    area_size: int
    block_size: int
    checksum: bytes = bytes(CHECKSUM_SIZE)
    checksum_type: ChecksumType = ChecksumType.SHA256
    panic_time_ns: int = 0
    written_time_ns: int = 0
    guest_memory: int = 0
    write_ms: int = 0
    note: str = ""
    version: int = VERSION
    header_size: int = HEADER_SIZE

    @property
    def complete(self) -> bool:
        """The dump was written whole and its header committed."""
        return self.state is DumpState.COMPLETE

    @property
    def capacity(self) -> int:
        """The largest dump the area holds."""
        return self.area_size - self.data_offset

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"version": self.version, "state": self.state.name.lower(),
                "format": self.format.qmp_name, "checksum_type": self.checksum_type.name.lower(),
                "checksum": self.checksum.hex(), "data_offset": self.data_offset,
                "data_size": self.data_size, "area_size": self.area_size,
                "block_size": self.block_size, "panic_time_ns": self.panic_time_ns,
                "written_time_ns": self.written_time_ns, "guest_memory": self.guest_memory,
                "write_ms": self.write_ms, "note": self.note}


def data_offset_for(block_size: int) -> int:
    """Where the dump starts: after the header, on a block boundary."""
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size}: not a power of two")
    return max(HEADER_SIZE, block_size)


def encode_into(buf: bytearray | memoryview, h: DumpHeader) -> None:
    """Pack ``h`` into the first :data:`HEADER_SIZE` bytes of ``buf`` (reserved bytes
    zeroed, CRC last). ``buf`` may be longer (a whole block); the rest is left alone."""
    view = memoryview(buf)
    if len(view) < HEADER_SIZE:
        raise ValueError(f"header buffer of {len(view)} bytes, need {HEADER_SIZE}")
    note = h.note.encode()[:NOTE_SIZE]
    if len(h.checksum) != CHECKSUM_SIZE:
        raise ValueError(f"checksum of {len(h.checksum)} bytes, need {CHECKSUM_SIZE}")
    for name in ("data_offset", "data_size", "area_size", "panic_time_ns",
                 "written_time_ns", "guest_memory"):
        v = getattr(h, name)
        if not 0 <= v < 1 << 64:
            raise ValueError(f"{name} {v}: outside 0..2**64-1")
    _FIXED.pack_into(view, 0, MAGIC, h.version, h.header_size, int(h.state), int(h.format),
                     int(h.checksum_type), h.data_offset, h.data_size, h.area_size,
                     h.panic_time_ns, h.written_time_ns, h.guest_memory,
                     h.block_size, min(h.write_ms, 0xFFFFFFFF), h.checksum, note)
    view[_FIXED.size:CRC_OFFSET] = _RESERVED
    _CRC.pack_into(view, CRC_OFFSET, crc32c.crc32c(view[:CRC_OFFSET]))


def encode(h: DumpHeader) -> bytes:
    """The header as :data:`HEADER_SIZE` bytes."""
    buf = bytearray(HEADER_SIZE)
    encode_into(buf, h)
    return bytes(buf)


def decode(data: bytes | bytearray | memoryview) -> DumpHeader:
    """Parse and check a header (:class:`HeaderError` says what is wrong)."""
    view = memoryview(data)
    if len(view) < HEADER_SIZE:
        raise HeaderError(f"{len(view)} bytes: a dump header is {HEADER_SIZE}")
    (magic, version, header_size, state, fmt, ctype, data_offset, data_size, area_size,
     panic_ns, written_ns, guest_memory, block_size, write_ms, checksum,
     note) = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise HeaderError(f"no dump here: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise HeaderError(f"dump header version {version}: this bootinit reads {VERSION}")
    (crc,) = _CRC.unpack_from(view, CRC_OFFSET)
    want = crc32c.crc32c(view[:CRC_OFFSET])
    if crc != want:
        raise HeaderError(f"dump header CRC-32C 0x{crc:08x} != computed 0x{want:08x}: "
                          f"the header is damaged")
    if header_size != HEADER_SIZE:
        raise HeaderError(f"header_size {header_size}, expected {HEADER_SIZE}")
    try:
        st, fm, ct = DumpState(state), DumpFormat(fmt), ChecksumType(ctype)
    except ValueError as e:
        raise HeaderError(f"dump header: {e}") from None
    if data_offset < HEADER_SIZE or data_offset + data_size > area_size:
        raise HeaderError(f"dump header: data at {data_offset} + {data_size} bytes is "
                          f"outside the {area_size}-byte area")
    return DumpHeader(state=st, format=fm, data_offset=data_offset, data_size=data_size,
                      area_size=area_size, block_size=block_size, checksum=bytes(checksum),
                      checksum_type=ct, panic_time_ns=panic_ns, written_time_ns=written_ns,
                      guest_memory=guest_memory, write_ms=write_ms,
                      note=bytes(note).rstrip(b"\0").decode(errors="replace"),
                      version=version, header_size=header_size)


__all__ = ["CHECKSUM_SIZE", "HEADER_SIZE", "MAGIC", "NOTE_SIZE", "VERSION", "ChecksumType",
           "DumpFormat", "DumpHeader", "DumpState", "HeaderError", "data_offset_for",
           "decode", "encode", "encode_into"]
