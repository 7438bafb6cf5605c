"""The decoded iBFT: one frozen dataclass per structure of iBFT spec 1.03 §3.

These hold the table's values as they are (flags as integers, the LUN as 8 SAM bytes,
strings decoded as UTF-8); ``firmware_tables.config`` turns them into the product's
boot configuration. An unset IP address (all zeros, or ``::ffff:0.0.0.0``) is ``None``;
an absent heap string (length 0 and offset 0) is ``None``, an empty one ``""``.

``offset`` records where a structure was found and takes no part in equality, so a
table built from these objects and parsed back compares equal to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from firmware_tables.errors import Problem
from firmware_tables.ibft import layout

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class IbftHeader:
    """The ACPI header fields of the table (§3.3 Table Header)."""

    signature: str = layout.SIGNATURE
    length: int = 0
    revision: int = layout.REVISION
    checksum: int = 0
    oem_id: str = ""
    oem_table_id: str = ""
    oem_revision: int = 0
    creator_id: str = ""
    creator_revision: int = 0


@dataclass(frozen=True)
class IbftControl:
    """The Control structure (§3.4).

    ``structure_offsets`` are all the u16 offsets after ``extensions``, in table order:
    initiator, NIC 0, target 0, NIC 1, target 1, then any expansion offsets (which
    this package writes as NIC 2, target 2, NIC 3, ...). 0 means "no structure".
    """

    version: int = layout.STRUCTURE_VERSION
    length: int = layout.CONTROL_MIN_LENGTH
    index: int = 0
    flags: int = 0
    extensions: int = 0
    structure_offsets: tuple[int, ...] = ()


@dataclass(frozen=True)
class IbftInitiator:
    """The Initiator structure (§3.5)."""

    name: str | None = None
    flags: int = layout.INITIATOR_FLAG_VALID | layout.INITIATOR_FLAG_BOOT_SELECTED
    isns_server: IPAddress | None = None
    slp_server: IPAddress | None = None
    primary_radius_server: IPAddress | None = None
    secondary_radius_server: IPAddress | None = None
    index: int = 0
    version: int = layout.STRUCTURE_VERSION
    offset: int = field(default=0, compare=False)

    @property
    def valid(self) -> bool:
        """Flag bit 0: the block is valid."""
        return bool(self.flags & layout.INITIATOR_FLAG_VALID)

    @property
    def boot_selected(self) -> bool:
        """Flag bit 1: the firmware booted through this initiator."""
        return bool(self.flags & layout.INITIATOR_FLAG_BOOT_SELECTED)


@dataclass(frozen=True)
class IbftNic:
    """A NIC structure (§3.6). ``pci_bdf`` is bus << 8 | device << 3 | function."""

    index: int = 0
    flags: int = layout.NIC_FLAG_VALID | layout.NIC_FLAG_BOOT_SELECTED
    ip_address: IPAddress | None = None
    prefix_length: int = 0
    origin: int = layout.ORIGIN_MANUAL
    gateway: IPAddress | None = None
    primary_dns: IPAddress | None = None
    secondary_dns: IPAddress | None = None
    dhcp_server: IPAddress | None = None
    vlan: int = 0
    mac: bytes = bytes(6)
    pci_bdf: int = 0
    hostname: str | None = None
    version: int = layout.STRUCTURE_VERSION
    offset: int = field(default=0, compare=False)

    @property
    def valid(self) -> bool:
        """Flag bit 0: the block is valid."""
        return bool(self.flags & layout.NIC_FLAG_VALID)

    @property
    def boot_selected(self) -> bool:
        """Flag bit 1: the firmware booted through this NIC."""
        return bool(self.flags & layout.NIC_FLAG_BOOT_SELECTED)

    @property
    def pci_location(self) -> str:
        """The PCI location as ``bus:device.function`` (``00:03.0``)."""
        return f"{self.pci_bdf >> 8:02x}:{(self.pci_bdf >> 3) & 0x1F:02x}.{self.pci_bdf & 7:x}"

    @property
    def mac_text(self) -> str:
        """The MAC address as ``52:54:00:12:34:56``."""
        return ":".join(f"{b:02x}" for b in self.mac)


@dataclass(frozen=True)
class IbftTarget:
    """A Target structure (§3.7). ``lun`` is the 8-byte SAM LUN."""

    index: int = 0
    flags: int = layout.TARGET_FLAG_VALID | layout.TARGET_FLAG_BOOT_SELECTED
    ip_address: IPAddress | None = None
    port: int = 3260
    lun: bytes = bytes(8)
    chap_type: int = layout.CHAP_NONE
    nic_association: int = 0
    name: str | None = None
    chap_name: str | None = None
    chap_secret: str | None = None
    reverse_chap_name: str | None = None
    reverse_chap_secret: str | None = None
    version: int = layout.STRUCTURE_VERSION
    offset: int = field(default=0, compare=False)

    @property
    def valid(self) -> bool:
        """Flag bit 0: the block is valid."""
        return bool(self.flags & layout.TARGET_FLAG_VALID)

    @property
    def boot_selected(self) -> bool:
        """Flag bit 1: the firmware booted from this target."""
        return bool(self.flags & layout.TARGET_FLAG_BOOT_SELECTED)


@dataclass(frozen=True)
class IbftTable:
    """A whole table. ``problems`` is empty for a table that parsed strictly."""

    header: IbftHeader
    control: IbftControl | None
    initiator: IbftInitiator | None
    nics: tuple[IbftNic, ...] = ()
    targets: tuple[IbftTarget, ...] = ()
    problems: tuple[Problem, ...] = ()
