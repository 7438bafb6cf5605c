"""Find an iBFT: in a file, among the ACPI tables in sysfs, or in a memory image.

- A file holds one table (e.g. what QEMU's ``-acpitable file=`` takes).
- Linux exports the ACPI tables it found as ``/sys/firmware/acpi/tables/<SIG>``; an iBFT
  may be named ``iBFT``, ``IBFT`` (the ACPI spelling) or ``BIFT`` (Broadcom).
- On a BIOS machine the table sits in low memory; the iBFT spec's BIOS requirements (and
  Linux's ``find_ibft_region``) scan 0x80000-0xFFFFF on 16-byte boundaries, skipping the
  VGA window 0xA0000-0xBFFFF, for the signature ``iBFT`` (or ``BIFT``), and accept the
  first whose length keeps it below 1 MiB. ``scan_memory`` does that on a memory image
  (e.g. QMP ``pmemsave 0x80000 0x80000``), where ``base`` is the physical address of the
  image's first byte.

Linux's own decoded view, ``/sys/firmware/ibft/``, is read by ``firmware_tables.ibft.sysfs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_tables.errors import TableNotFoundError
from firmware_tables.ibft import layout as L

ACPI_TABLES_DIR = Path("/sys/firmware/acpi/tables")
LEGACY_START = 0x80000
LEGACY_END = 0x100000
VGA_START = 0xA0000
VGA_END = 0xC0000
LEGACY_SIGNATURES = (b"iBFT", b"BIFT")
_READ_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class FoundTable:
    """Raw table bytes and where they came from (``address`` for a memory scan)."""

    data: bytes
    source: str
    address: int | None = None


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_READ_LIMIT + 1)
    except OSError as exc:
        raise TableNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _READ_LIMIT:
        raise TableNotFoundError(f"{path} is larger than {_READ_LIMIT} bytes: not a table")
    return data


def read_table_file(path: str | Path) -> FoundTable:
    """The bytes of a table file (raises ``TableNotFoundError`` if it cannot be read)."""
    p = Path(path)
    return FoundTable(_read(p), str(p))


def find_acpi_table(tables_dir: str | Path = ACPI_TABLES_DIR) -> FoundTable:
    """The iBFT among Linux's exported ACPI tables (``iBFT``, then ``IBFT``, then ``BIFT``)."""
    d = Path(tables_dir)
    for sig in L.SIGNATURES:
        for name in (sig, f"{sig}1"):
            candidate = d / name
            if candidate.is_file():
                return FoundTable(_read(candidate), str(candidate))
    raise TableNotFoundError(f"no iBFT, IBFT or BIFT table in {d}")


def scan_memory(image: bytes | bytearray | memoryview, base: int = LEGACY_START) -> FoundTable:
    """Find a table in a memory image by the legacy BIOS scan.

    ``base`` is the physical address of ``image[0]``: 0x80000 for a dump of
    0x80000-0xFFFFF, 0 for a dump of all low memory. The table returned has the length
    its header gives; it is not validated (parse it).
    """
    if base < 0:
        raise ValueError("base must be a physical address >= 0")
    mem = bytes(image)
    addr = max(LEGACY_START, (base + 15) // 16 * 16)
    while addr < LEGACY_END:
        if VGA_START <= addr < VGA_END:
            addr = VGA_END
            continue
        i = addr - base
        if i + 8 > len(mem):
            break
        if mem[i : i + 4] in LEGACY_SIGNATURES:
            length = int.from_bytes(mem[i + 4 : i + 8], "little")
            # Linux: "if the length of the table extends past 1M, the table cannot be valid"
            if addr + length <= LEGACY_END - 1 and length >= L.HEADER_LENGTH:
                if i + length > len(mem):
                    raise TableNotFoundError(
                        f"iBFT at 0x{addr:x} ({length} bytes) runs past the end of the image"
                    )
                return FoundTable(mem[i : i + length], f"memory at 0x{addr:x}", addr)
        addr += 16
    raise TableNotFoundError(
        f"no iBFT signature in 0x{LEGACY_START:x}-0x{LEGACY_END - 1:x} of the image "
        f"(0x{base:x}-0x{base + len(mem) - 1:x})"
    )
