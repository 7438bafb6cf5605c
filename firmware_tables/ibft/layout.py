"""Byte layout of the iBFT: structure ids, lengths, flags and field offsets.

iBFT spec 1.03 ("iSCSI Boot Firmware Table (iBFT) as Defined in ACPI 3.0b
Specification", IBM/Microsoft), §2 "Conventions" and §3 "iBFT Layout". All multi-byte
values are little-endian (§2.3);
every offset is relative to the start of the table; each structure starts with the
6-byte Standard Structure Header (id, version, length u16, index, flags) of §3.2.
"""

from __future__ import annotations

from typing import Final

# §3.3 Table Header: 36-byte ACPI header + 12 reserved bytes; Control follows at 48.
HEADER_LENGTH: Final = 48
HEADER_RESERVED_OFFSET: Final = 36
SIGNATURE: Final = "iBFT"
# Linux (iscsi_ibft.c) also accepts the ACPI "IBFT" spelling and Broadcom's "BIFT".
SIGNATURES: Final = ("iBFT", "IBFT", "BIFT")
REVISION: Final = 1
STRUCTURE_VERSION: Final = 1
STRUCTURE_HEADER_LENGTH: Final = 6

# §3.4.1 Structure Type / ID.
ID_RESERVED: Final = 0
ID_CONTROL: Final = 1
ID_INITIATOR: Final = 2
ID_NIC: Final = 3
ID_TARGET: Final = 4
ID_EXTENSIONS: Final = 5

# §3.4-3.7: structure lengths.
CONTROL_OFFSET: Final = HEADER_LENGTH
CONTROL_MIN_LENGTH: Final = 18
INITIATOR_LENGTH: Final = 74
NIC_LENGTH: Final = 102
TARGET_LENGTH: Final = 54
ALIGNMENT: Final = 8
MAX_TABLE_LENGTH: Final = 0xFFFF  # offsets in the table are u16

# §3.2 Standard Structure Header fields.
HDR_ID: Final = 0
HDR_VERSION: Final = 1
HDR_LENGTH: Final = 2
HDR_INDEX: Final = 4
HDR_FLAGS: Final = 5

# §3.4 Control Structure.
CTL_EXTENSIONS: Final = 6
CTL_FIRST_OFFSET: Final = 8  # initiator, nic0, target0, nic1, target1, expansion...
CONTROL_SLOTS: Final = ("initiator", "nic0", "target0", "nic1", "target1")
CONTROL_FLAG_BOOT_FAILOVER: Final = 0x01
CONTROL_FLAGS_DEFINED: Final = 0x01

# §3.5 Initiator Structure.
INI_ISNS: Final = 6
INI_SLP: Final = 22
INI_PRI_RADIUS: Final = 38
INI_SEC_RADIUS: Final = 54
INI_NAME: Final = 70  # u16 length, u16 offset
INITIATOR_FLAG_VALID: Final = 0x01
INITIATOR_FLAG_BOOT_SELECTED: Final = 0x02
INITIATOR_FLAGS_DEFINED: Final = 0x03

# §3.6 NIC Structure.
NIC_IP: Final = 6
NIC_PREFIX: Final = 22
NIC_ORIGIN: Final = 23
NIC_GATEWAY: Final = 24
NIC_PRIMARY_DNS: Final = 40
NIC_SECONDARY_DNS: Final = 56
NIC_DHCP: Final = 72
NIC_VLAN: Final = 88
NIC_MAC: Final = 90
NIC_PCI_BDF: Final = 96
NIC_HOSTNAME: Final = 98  # u16 length, u16 offset
NIC_FLAG_VALID: Final = 0x01
NIC_FLAG_BOOT_SELECTED: Final = 0x02
NIC_FLAG_GLOBAL: Final = 0x04  # 1 = global address, 0 = link local
NIC_FLAGS_DEFINED: Final = 0x07

# §2.6 Parameter Origins (Windows' NL_PREFIX_ORIGIN values).
ORIGIN_OTHER: Final = 0
ORIGIN_MANUAL: Final = 1
ORIGIN_WELL_KNOWN: Final = 2
ORIGIN_DHCP: Final = 3
ORIGIN_ROUTER_ADVERTISEMENT: Final = 4
ORIGIN_UNCHANGED: Final = 15
ORIGINS: Final = {
    ORIGIN_OTHER: "other",
    ORIGIN_MANUAL: "manual",
    ORIGIN_WELL_KNOWN: "well-known",
    ORIGIN_DHCP: "dhcp",
    ORIGIN_ROUTER_ADVERTISEMENT: "router-advertisement",
    ORIGIN_UNCHANGED: "unchanged",
}

# §3.7 Target Structure.
TGT_IP: Final = 6
TGT_PORT: Final = 22
TGT_LUN: Final = 24
TGT_CHAP_TYPE: Final = 32
TGT_NIC_ASSOC: Final = 33
TGT_NAME: Final = 34
TGT_CHAP_NAME: Final = 38
TGT_CHAP_SECRET: Final = 42
TGT_REV_CHAP_NAME: Final = 46
TGT_REV_CHAP_SECRET: Final = 50
TARGET_FLAG_VALID: Final = 0x01
TARGET_FLAG_BOOT_SELECTED: Final = 0x02
TARGET_FLAG_RADIUS_CHAP: Final = 0x04
TARGET_FLAG_RADIUS_RCHAP: Final = 0x08
TARGET_FLAGS_DEFINED: Final = 0x0F
CHAP_NONE: Final = 0
CHAP_ONE_WAY: Final = 1
CHAP_MUTUAL: Final = 2

# §2.1 IP Address: 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
IP_LENGTH: Final = 16
IPV4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"
