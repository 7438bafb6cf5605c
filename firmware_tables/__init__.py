"""firmware_tables: the iSCSI Boot Firmware Table (iBFT) and the boot configuration model.

Public API (everything below is importable from ``firmware_tables``)::

    # the boot configuration the whole product uses            (firmware_tables.config)
    BootConfig(initiator_name, nics=(NicConfig,...), targets=(TargetSpec,...),
               isns_server=None, slp_server=None, radius_servers=())
      .from_ibft(table) / .to_ibft(options=None) -> bytes / .to_ibft_structures()
      .from_dict(d) / .to_dict(show_secrets=False)    # the JSON/TOML file format
      .from_dhcp(root_path, initiator_name, nic=None, chap=None, reverse_chap=None)
    load_boot_config(path)                            # .json or .toml
    NicConfig(address=IPv4Interface|IPv6Interface|None, gateway, dns, mac: bytes|None,
              vlan=0, dhcp=False, dhcp_server, hostname, pci: PciAddress|None,
              boot_selected=True)

    # one target                                              (firmware_tables.target)
    TargetSpec(host, name, port=3260, lun=0, chap=None, reverse_chap=None, nic=0,
               boot_selected=True);  .address -> IP or None for a host name
    ChapCredentials(user, secret)                     # repr hides the secret

    # locators                                                (firmware_tables.uri)
    parse_iscsi_url("iscsi://[user[%secret]@]host[:port]/iqn/lun") -> TargetSpec
    parse_root_path("iscsi:server:proto:port:lun:iqn")  -> TargetSpec   (RFC 4173)
    parse_target(text)          # either form
    format_iscsi_url(spec, show_secret=False); format_root_path(spec); mask_url(url)

    # the table itself                                        (firmware_tables.ibft)
    parse_ibft(data, strict=True, exact_length=False) -> IbftTable
        IbftTable(header, control, initiator, nics, targets, problems)
    build_ibft(initiator, nics, targets, options=BuildOptions()) -> bytes
        BuildOptions(oem_id, oem_table_id, ..., alignment=8, fixed_slots=False); IPXE_LAYOUT
    read_table_file(path) / find_acpi_table(dir) / scan_memory(image, base=0x80000)
        -> FoundTable(data, source, address)
    read_sysfs(root="/sys/firmware/ibft", strict=True) -> IbftTable
    render_sysfs(table, mask_secrets=False) -> {dir: {attribute: content}}
    write_sysfs_tree(table, root); sysfs_lines(rendered)

    # LUNs                                                    (firmware_tables.lun)
    lun_to_sam(int) -> 8 bytes; lun_from_sam(bytes) -> int   # Linux scsilun_to_int order
    parse_lun_groups("1-7") -> 8 bytes; format_lun_groups(bytes) -> str

    # errors                                                  (firmware_tables.errors)
    FirmwareTableError  <- IbftError(problems: tuple[Problem]; .structure .field .offset
                           .value), UriError(.part, .text), ConfigError(.path, .message),
                           TableNotFoundError
    Problem(structure, field, offset, value, message)

    # command line                                            (firmware_tables.cli)
    add_parser(subparsers)  # adds "ibft show|build|check"; handlers return exit status

Conventions: LUNs are integers in the Linux/libiscsi convention (LUN 1 = SAM bytes
00 01 00 ..); IP addresses are ``ipaddress`` objects and ``None`` when unset; MACs are 6
bytes; secrets never appear in ``repr``, error messages or default output.
"""

from firmware_tables.config import (
    BootConfig,
    NicConfig,
    PciAddress,
    format_mac,
    load_boot_config,
    parse_mac,
)
from firmware_tables.errors import (
    ConfigError,
    FirmwareTableError,
    IbftError,
    Problem,
    TableNotFoundError,
    UriError,
)
from firmware_tables.ibft import (
    IPXE_LAYOUT,
    BuildOptions,
    FoundTable,
    IbftControl,
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    build_ibft,
    find_acpi_table,
    parse_ibft,
    read_sysfs,
    read_table_file,
    render_sysfs,
    scan_memory,
    sysfs_lines,
    write_sysfs_tree,
)
from firmware_tables.lun import format_lun_groups, lun_from_sam, lun_to_sam, parse_lun_groups
from firmware_tables.target import DEFAULT_PORT, ChapCredentials, TargetSpec
from firmware_tables.uri import (
    format_iscsi_url,
    format_root_path,
    mask_url,
    parse_iscsi_url,
    parse_root_path,
    parse_target,
)

__all__ = [
    "DEFAULT_PORT",
    "IPXE_LAYOUT",
    "BootConfig",
    "BuildOptions",
    "ChapCredentials",
    "ConfigError",
    "FirmwareTableError",
    "FoundTable",
    "IbftControl",
    "IbftError",
    "IbftHeader",
    "IbftInitiator",
    "IbftNic",
    "IbftTable",
    "IbftTarget",
    "NicConfig",
    "PciAddress",
    "Problem",
    "TableNotFoundError",
    "TargetSpec",
    "UriError",
    "build_ibft",
    "find_acpi_table",
    "format_iscsi_url",
    "format_lun_groups",
    "format_mac",
    "format_root_path",
    "load_boot_config",
    "lun_from_sam",
    "lun_to_sam",
    "mask_url",
    "parse_ibft",
    "parse_iscsi_url",
    "parse_lun_groups",
    "parse_mac",
    "parse_root_path",
    "parse_target",
    "read_sysfs",
    "read_table_file",
    "render_sysfs",
    "scan_memory",
    "sysfs_lines",
    "write_sysfs_tree",
]
