"""Write an iBFT (iBFT spec 1.03 §3 "iBFT Layout") from Initiator, NIC and Target structures.

Layout (the one dracut's test table and Linux's three-NIC test table use): the 48-byte
header, Control at 0x30, then the Initiator, every NIC, every Target, each aligned to
``alignment`` (8 by default: §2.2 "Alignment" and §3.4.4), then the
heap of NUL-terminated strings, with no padding after the last NUL. The table length
and checksum are filled in last. Control holds initiator, NIC 0, target 0, NIC 1,
target 1 and, for more than two NICs or targets, expansion offsets (§3.4.3 "Optional
Structure Expansion") in pairs (NIC 2,
target 2, NIC 3, ...), 0 for a missing one -- the form Linux reads since it lifted its
two-NIC limit.

``IPXE_LAYOUT`` reproduces iPXE's table: OEM ``FENSYS``/``iPXE``, 16-byte alignment and
two NIC and two Target slots always reserved (unused ones zero, their Control offsets 0),
so with one NIC and one target: Initiator 0x50, NICs 0xA0/0x110, Targets 0x180/0x1C0,
heap 0x200.

The result is parsed back strictly before it is returned, so a structure the parser
would reject (a prefix too long for its address, a CHAP type without its secrets, a
target associated with a NIC that does not exist) raises ``IbftError`` here instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from firmware_tables.acpi import AcpiHeader, fill_checksum
from firmware_tables.errors import IbftError, Problem
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.parse import parse_ibft
from firmware_tables.ibft.structures import (
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTarget,
    IPAddress,
)


@dataclass(frozen=True)
class BuildOptions:
    """Header fields and layout choices for ``build_ibft``."""

    oem_id: str = "BOOTIN"
    oem_table_id: str = "BOOTINIT"
    oem_revision: int = 1
    creator_id: str = "BTIN"
    creator_revision: int = 1
    signature: str = L.SIGNATURE
    alignment: int = L.ALIGNMENT
    fixed_slots: bool = False

    @classmethod
    def from_header(
        cls, header: IbftHeader, *, alignment: int = L.ALIGNMENT, fixed_slots: bool = False
    ) -> BuildOptions:
        """Options that reproduce ``header``'s identification fields."""
        return cls(
            oem_id=header.oem_id,
            oem_table_id=header.oem_table_id,
            oem_revision=header.oem_revision,
            creator_id=header.creator_id,
            creator_revision=header.creator_revision,
            signature=header.signature,
            alignment=alignment,
            fixed_slots=fixed_slots,
        )


IPXE_LAYOUT = BuildOptions(
    oem_id="FENSYS", oem_table_id="iPXE", oem_revision=0, creator_id="", creator_revision=0,
    alignment=16, fixed_slots=True,
)


def _fail(structure: str, field: str, offset: int | None, value: object, message: str) -> IbftError:
    return IbftError([Problem(structure, field, offset, value, message)])


class _Writer:
    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)

    def uint(self, at: int, size: int, value: int, structure: str, field: str) -> None:
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * size)):
            raise _fail(structure, field, at, value, f"does not fit in {8 * size} bits")
        self.buf[at : at + size] = value.to_bytes(size, "little")

    def raw(self, at: int, value: bytes, size: int, structure: str, field: str) -> None:
        if len(value) != size:
            raise _fail(structure, field, at, value, f"must be exactly {size} bytes")
        self.buf[at : at + size] = value

    def ip(self, at: int, value: IPAddress | None) -> None:
        if value is None:
            return
        if isinstance(value, IPv4Address):
            self.buf[at : at + L.IP_LENGTH] = L.IPV4_MAPPED_PREFIX + value.packed
        else:
            self.buf[at : at + L.IP_LENGTH] = value.packed

    def header(self, at: int, sid: int, length: int, index: int, flags: int, version: int,
               structure: str) -> None:
        self.buf[at + L.HDR_ID] = sid
        self.uint(at + L.HDR_VERSION, 1, version, structure, "version")
        self.buf[at + L.HDR_LENGTH : at + L.HDR_LENGTH + 2] = length.to_bytes(2, "little")
        self.uint(at + L.HDR_INDEX, 1, index, structure, "index")
        self.uint(at + L.HDR_FLAGS, 1, flags, structure, "flags")


class _Heap:
    """The string heap: each string once per field, NUL-terminated, in field order."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.data = bytearray()
        self.refs: list[tuple[int, int, int]] = []  # (descriptor offset, length, offset)

    def add(self, descriptor_at: int, text: str | None, structure: str, field: str) -> None:
        if text is None:
            return
        shown = "***" if "secret" in field else text
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(structure, field, descriptor_at, shown, "not encodable as UTF-8") from None
        if b"\0" in raw:
            raise _fail(structure, field, descriptor_at, shown,
                        "a heap string cannot hold a NUL byte")
        if len(raw) > L.MAX_TABLE_LENGTH:
            raise _fail(structure, field, descriptor_at, len(raw), "string longer than 65535 bytes")
        self.refs.append((descriptor_at, len(raw), self.start + len(self.data)))
        self.data += raw + b"\0"


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def build_ibft(
    initiator: IbftInitiator | None,
    nics: Sequence[IbftNic] = (),
    targets: Sequence[IbftTarget] = (),
    options: BuildOptions = BuildOptions(),
) -> bytes:
    """Build a complete table (ready for QEMU's ``-acpitable file=``).

    Structures are written with the field values they carry (index, flags, version
    included); ``offset`` is ignored. Raises ``IbftError`` for a value that does not fit
    its field, a table over 64 KiB, or a table the strict parser would reject.
    """
    if options.alignment < L.ALIGNMENT or options.alignment % L.ALIGNMENT:
        raise _fail("table", "alignment", None, options.alignment, "must be a multiple of 8")
    align = options.alignment
    slots = 2 if options.fixed_slots else 0
    nic_slots = max(len(nics), slots)
    target_slots = max(len(targets), slots)
    pairs = max(nic_slots, target_slots, 2)
    control_length = L.CONTROL_MIN_LENGTH + 4 * (pairs - 2)

    pos = _align(L.CONTROL_OFFSET + control_length, align)
    initiator_at = 0
    if initiator is not None:
        initiator_at = pos
        pos = _align(pos + L.INITIATOR_LENGTH, align)
    nic_at: list[int] = []
    for _ in range(nic_slots):
        nic_at.append(pos)
        pos = _align(pos + L.NIC_LENGTH, align)
    target_at: list[int] = []
    for _ in range(target_slots):
        target_at.append(pos)
        pos = _align(pos + L.TARGET_LENGTH, align)

    heap = _Heap(pos)
    # Heap strings in field order: initiator, NICs, targets.
    if initiator is not None:
        heap.add(initiator_at + L.INI_NAME, initiator.name, "initiator", "name")
    for i, nic in enumerate(nics):
        heap.add(nic_at[i] + L.NIC_HOSTNAME, nic.hostname, f"nic{i}", "hostname")
    for i, tgt in enumerate(targets):
        at = target_at[i]
        for rel, text, field in (
            (L.TGT_NAME, tgt.name, "name"),
            (L.TGT_CHAP_NAME, tgt.chap_name, "chap_name"),
            (L.TGT_CHAP_SECRET, tgt.chap_secret, "chap_secret"),
            (L.TGT_REV_CHAP_NAME, tgt.reverse_chap_name, "reverse_chap_name"),
            (L.TGT_REV_CHAP_SECRET, tgt.reverse_chap_secret, "reverse_chap_secret"),
        ):
            heap.add(at + rel, text, f"target{i}", field)
    total = pos + len(heap.data)
    if total > L.MAX_TABLE_LENGTH:
        raise _fail("header", "length", 4, total,
                    "the table would exceed 65535 bytes (its offsets are 16-bit)")

    w = _Writer(total)
    try:
        header = AcpiHeader(
            signature=options.signature, length=total, revision=L.REVISION, checksum=0,
            oem_id=options.oem_id, oem_table_id=options.oem_table_id,
            oem_revision=options.oem_revision, creator_id=options.creator_id,
            creator_revision=options.creator_revision,
        ).pack()
    except (ValueError, OverflowError) as exc:  # struct.error is a ValueError
        raise _fail("header", "identification", 0, options, str(exc)) from None
    w.buf[0 : len(header)] = header

    c = L.CONTROL_OFFSET
    w.header(c, L.ID_CONTROL, control_length, 0, 0, L.STRUCTURE_VERSION, "control")
    offsets = [initiator_at]
    for i in range(pairs):
        offsets.append(nic_at[i] if i < len(nics) else 0)
        offsets.append(target_at[i] if i < len(targets) else 0)
    for i, off in enumerate(offsets):
        w.uint(c + L.CTL_FIRST_OFFSET + 2 * i, 2, off, "control", "offsets")

    if initiator is not None:
        _write_initiator(w, initiator_at, initiator)
    for i, nic in enumerate(nics):
        _write_nic(w, nic_at[i], nic, f"nic{i}")
    for i, tgt in enumerate(targets):
        _write_target(w, target_at[i], tgt, f"target{i}")
    for at, length, off in heap.refs:
        w.buf[at : at + 4] = length.to_bytes(2, "little") + off.to_bytes(2, "little")
    w.buf[pos:total] = heap.data
    fill_checksum(w.buf)
    table = bytes(w.buf)
    parse_ibft(table, strict=True, exact_length=True)
    return table


def _write_initiator(w: _Writer, at: int, ini: IbftInitiator) -> None:
    w.header(at, L.ID_INITIATOR, L.INITIATOR_LENGTH, ini.index, ini.flags, ini.version,
             "initiator")
    w.ip(at + L.INI_ISNS, ini.isns_server)
    w.ip(at + L.INI_SLP, ini.slp_server)
    w.ip(at + L.INI_PRI_RADIUS, ini.primary_radius_server)
    w.ip(at + L.INI_SEC_RADIUS, ini.secondary_radius_server)


def _write_nic(w: _Writer, at: int, nic: IbftNic, name: str) -> None:
    w.header(at, L.ID_NIC, L.NIC_LENGTH, nic.index, nic.flags, nic.version, name)
    w.ip(at + L.NIC_IP, nic.ip_address)
    w.uint(at + L.NIC_PREFIX, 1, nic.prefix_length, name, "prefix_length")
    w.uint(at + L.NIC_ORIGIN, 1, nic.origin, name, "origin")
    w.ip(at + L.NIC_GATEWAY, nic.gateway)
    w.ip(at + L.NIC_PRIMARY_DNS, nic.primary_dns)
    w.ip(at + L.NIC_SECONDARY_DNS, nic.secondary_dns)
    w.ip(at + L.NIC_DHCP, nic.dhcp_server)
    w.uint(at + L.NIC_VLAN, 2, nic.vlan, name, "vlan")
    w.raw(at + L.NIC_MAC, nic.mac, 6, name, "mac")
    w.uint(at + L.NIC_PCI_BDF, 2, nic.pci_bdf, name, "pci_bdf")


def _write_target(w: _Writer, at: int, tgt: IbftTarget, name: str) -> None:
    w.header(at, L.ID_TARGET, L.TARGET_LENGTH, tgt.index, tgt.flags, tgt.version, name)
    w.ip(at + L.TGT_IP, tgt.ip_address)
    w.uint(at + L.TGT_PORT, 2, tgt.port, name, "port")
    w.raw(at + L.TGT_LUN, tgt.lun, 8, name, "lun")
    w.uint(at + L.TGT_CHAP_TYPE, 1, tgt.chap_type, name, "chap_type")
    w.uint(at + L.TGT_NIC_ASSOC, 1, tgt.nic_association, name, "nic_association")
