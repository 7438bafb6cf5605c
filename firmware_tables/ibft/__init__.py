"""The iSCSI Boot Firmware Table (iBFT spec 1.03): parse, validate, build, find.

- ``parse_ibft(data, strict=True)`` -> ``IbftTable`` (``parse``)
- ``build_ibft(initiator, nics, targets, options)`` -> bytes (``build``)
- ``read_table_file``, ``find_acpi_table``, ``scan_memory`` -> ``FoundTable`` (``find``)
- ``read_sysfs``, ``render_sysfs``, ``write_sysfs_tree`` (``sysfs``: Linux's view)
"""

from firmware_tables.ibft.build import IPXE_LAYOUT, BuildOptions, build_ibft
from firmware_tables.ibft.find import (
    ACPI_TABLES_DIR,
    FoundTable,
    find_acpi_table,
    read_table_file,
    scan_memory,
)
from firmware_tables.ibft.parse import decode_ip, parse_ibft
from firmware_tables.ibft.structures import (
    IbftControl,
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    IPAddress,
)
from firmware_tables.ibft.sysfs import (
    SYSFS_IBFT_DIR,
    read_sysfs,
    render_sysfs,
    sysfs_lines,
    write_sysfs_tree,
)

__all__ = [
    "ACPI_TABLES_DIR",
    "IPXE_LAYOUT",
    "SYSFS_IBFT_DIR",
    "BuildOptions",
    "FoundTable",
    "IPAddress",
    "IbftControl",
    "IbftHeader",
    "IbftInitiator",
    "IbftNic",
    "IbftTable",
    "IbftTarget",
    "build_ibft",
    "decode_ip",
    "find_acpi_table",
    "parse_ibft",
    "read_sysfs",
    "read_table_file",
    "render_sysfs",
    "scan_memory",
    "sysfs_lines",
    "write_sysfs_tree",
]
