"""``bootinit ibft show|build|check``: the iBFT command line.

The product's CLI calls ``add_parser(subparsers)`` and then ``sys.exit(args.func(args))``;
``main(argv)`` (and ``python -m firmware_tables.cli``) runs the same commands standalone.
Handlers return the exit status: 0 success, 1 failure (one line on stderr, or the
problems found), 2 usage error.

    bootinit ibft show FILE | --sysfs [DIR] | --acpi [DIR] | --memory IMAGE [--base ADDR]
                       [--json] [--sysfs-format] [--show-secrets] [--lenient]
    bootinit ibft build (--config FILE | --initiator-name IQN --target URL... [NIC options])
                        -o TABLE.bin [--layout compact|ipxe]
    bootinit ibft check FILE | --memory IMAGE [--base ADDR] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from ipaddress import ip_address, ip_interface
from pathlib import Path

from firmware_tables.config import BootConfig, NicConfig, PciAddress, load_boot_config, parse_mac
from firmware_tables.errors import ConfigError, FirmwareTableError, IbftError, UriError
from firmware_tables.ibft.build import IPXE_LAYOUT, BuildOptions
from firmware_tables.ibft.find import (
    ACPI_TABLES_DIR,
    LEGACY_START,
    FoundTable,
    find_acpi_table,
    read_table_file,
    scan_memory,
)
from firmware_tables.ibft.parse import parse_ibft
from firmware_tables.ibft.report import format_table, problem_to_dict, table_to_dict
from firmware_tables.ibft.structures import IbftTable
from firmware_tables.ibft.sysfs import SYSFS_IBFT_DIR, read_sysfs, render_sysfs, sysfs_lines
from firmware_tables.target import ChapCredentials
from firmware_tables.uri import parse_target

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad combination of options: exit status 2."""


def _guarded(command: str, func: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as exc:
            print(f"bootinit ibft {command}: usage error: {exc}", file=sys.stderr)
            return 2
        except (FirmwareTableError, OSError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, IbftError) and command == "show":
                text += " [--lenient shows the table anyway]"
            print(f"bootinit ibft {command}: error: {text}", file=sys.stderr)
            return 1

    return run


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ibft`` with its ``show``, ``build`` and ``check`` subcommands."""
    ibft = subparsers.add_parser(
        "ibft", help="read, check and build iSCSI Boot Firmware Tables",
        description="Read, check and build iSCSI Boot Firmware Tables (iBFT spec 1.03).",
    )
    sub = ibft.add_subparsers(dest="ibft_command", required=True, metavar="{show,build,check}")

    show = sub.add_parser("show", help="print a table",
                          description="Print an iBFT from a file, ACPI, memory or sysfs.")
    show.add_argument("file", nargs="?", help="a table file")
    show.add_argument("--sysfs", nargs="?", const=str(SYSFS_IBFT_DIR), metavar="DIR",
                      help=f"read Linux's decoded view (default {SYSFS_IBFT_DIR})")
    show.add_argument("--acpi", nargs="?", const=str(ACPI_TABLES_DIR), metavar="DIR",
                      help=f"read the ACPI table (default {ACPI_TABLES_DIR})")
    show.add_argument("--memory", metavar="IMAGE",
                      help="scan a memory image like a BIOS (0x80000-0xFFFFF)")
    show.add_argument("--base", type=_int, default=LEGACY_START, metavar="ADDR",
                      help="physical address of the image's first byte (default 0x80000)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--sysfs-format", action="store_true",
                      help="print what Linux would show in /sys/firmware/ibft")
    show.add_argument("--show-secrets", action="store_true", help="do not mask CHAP secrets")
    show.add_argument("--lenient", action="store_true",
                      help="show what can be read and list the problems")
    show.set_defaults(func=_guarded("show", _show))

    build = sub.add_parser("build", help="build a table",
                           description="Build an iBFT from options or a JSON/TOML config.")
    build.add_argument("--config", metavar="FILE", help="a .json or .toml boot configuration")
    build.add_argument("--initiator-name", metavar="IQN")
    build.add_argument("--target", action="append", default=[], metavar="URL",
                       help="iscsi://[user%%secret@]host[:port]/iqn/lun or an RFC 4173 root "
                            "path iscsi:server:::lun:iqn (repeatable)")
    build.add_argument("--chap-user", help="CHAP name for the targets given with --target")
    build.add_argument("--chap-secret", help="CHAP secret (prefer a config file: argv is public)")
    build.add_argument("--reverse-chap-user", help="mutual CHAP: the target's name")
    build.add_argument("--reverse-chap-secret", help="mutual CHAP: the target's secret")
    build.add_argument("--ip", metavar="ADDR/PREFIX", help="the NIC's address")
    build.add_argument("--gateway", metavar="ADDR")
    build.add_argument("--dns", action="append", default=[], metavar="ADDR")
    build.add_argument("--dhcp", action="store_true", help="the address came from DHCP")
    build.add_argument("--dhcp-server", metavar="ADDR")
    build.add_argument("--mac", metavar="MAC")
    build.add_argument("--vlan", type=int, default=0)
    build.add_argument("--hostname")
    build.add_argument("--pci", metavar="BB:DD.F")
    build.add_argument("--layout", choices=("compact", "ipxe"), default="compact",
                       help="compact (8-byte aligned) or iPXE's (FENSYS/iPXE, fixed slots)")
    build.add_argument("-o", "--output", required=True, metavar="TABLE",
                       help="where to write the table ('-' for stdout)")
    build.set_defaults(func=_guarded("build", _build))

    check = sub.add_parser("check", help="validate a table",
                           description="Validate an iBFT; exit 1 and list the problems.")
    check.add_argument("file", nargs="?", help="a table file (exactly one table)")
    check.add_argument("--memory", metavar="IMAGE", help="scan a memory image instead")
    check.add_argument("--base", type=_int, default=LEGACY_START, metavar="ADDR")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=_guarded("check", _check))


# -- show / check ------------------------------------------------------------------------


def _found(args: argparse.Namespace, allow: Sequence[str]) -> FoundTable | None:
    chosen = [name for name in allow if getattr(args, name, None) is not None]
    if len(chosen) != 1:
        options = ", ".join("FILE" if n == "file" else f"--{n}" for n in allow)
        raise UsageError(f"give exactly one of {options}")
    if args.file is not None:
        return read_table_file(args.file)
    if getattr(args, "acpi", None) is not None:
        return find_acpi_table(args.acpi)
    if args.memory is not None:
        return scan_memory(read_table_file(args.memory).data, args.base)
    return None  # sysfs


def _show(args: argparse.Namespace) -> int:
    found = _found(args, ("file", "sysfs", "acpi", "memory"))
    if found is None:
        table = read_sysfs(args.sysfs, strict=not args.lenient)
        source = args.sysfs
    else:
        source = found.source
        table = parse_ibft(found.data, strict=not args.lenient,
                           exact_length=args.file is not None)
    if args.sysfs_format:
        rendered = render_sysfs(table, mask_secrets=not args.show_secrets)
        if args.json:
            print(json.dumps(rendered, indent=2))
        else:
            print("\n".join(sysfs_lines(rendered)))
    elif args.json:
        print(json.dumps({"source": source, **table_to_dict(table,
                                                            show_secrets=args.show_secrets)},
                         indent=2))
    else:
        print(f"Source: {source}")
        print("\n".join(format_table(table, show_secrets=args.show_secrets)))
    return 0


def _check(args: argparse.Namespace) -> int:
    found = _found(args, ("file", "memory"))
    if found is None:  # pragma: no cover - _found only returns None for --sysfs
        raise UsageError("check reads a table file or a memory image")
    table: IbftTable = parse_ibft(found.data, strict=False, exact_length=args.file is not None)
    if args.json:
        print(json.dumps({"source": found.source, "ok": not table.problems,
                          "problems": [problem_to_dict(p) for p in table.problems]}, indent=2))
    elif table.problems:
        print(f"{found.source}: {len(table.problems)} problem"
              f"{'s' if len(table.problems) > 1 else ''}")
        for p in table.problems:
            print(f"  {p}")
    else:
        print(f"{found.source}: OK ({table.header.length} bytes, {len(table.nics)} NIC"
              f"{'s' if len(table.nics) != 1 else ''}, {len(table.targets)} target"
              f"{'s' if len(table.targets) != 1 else ''})")
    return 1 if table.problems else 0


# -- build -------------------------------------------------------------------------------

_OPTION_FIELDS = ("initiator_name", "chap_user", "chap_secret", "reverse_chap_user",
                  "reverse_chap_secret", "ip", "gateway", "dhcp_server", "mac", "hostname",
                  "pci")


def _pair(user: str | None, secret: str | None, what: str) -> ChapCredentials | None:
    if user is None and secret is None:
        return None
    if user is None or secret is None:
        raise UsageError(f"give both --{what}-user and --{what}-secret")
    return ChapCredentials(user, secret)


def _config_from_options(args: argparse.Namespace) -> BootConfig:
    if not args.initiator_name:
        raise UsageError("give --initiator-name (or --config)")
    if not args.target:
        raise UsageError("give at least one --target (or --config)")
    try:
        nic = NicConfig(
            address=ip_interface(args.ip) if args.ip else None,
            gateway=ip_address(args.gateway) if args.gateway else None,
            dns=tuple(ip_address(d) for d in args.dns),
            mac=parse_mac(args.mac) if args.mac else None,
            vlan=args.vlan,
            dhcp=args.dhcp,
            dhcp_server=ip_address(args.dhcp_server) if args.dhcp_server else None,
            hostname=args.hostname,
            pci=PciAddress.parse(args.pci) if args.pci else None,
        )
    except ValueError as exc:
        if isinstance(exc, FirmwareTableError):
            raise
        raise ConfigError("nic", str(exc)) from None
    chap = _pair(args.chap_user, args.chap_secret, "chap")
    rev = _pair(args.reverse_chap_user, args.reverse_chap_secret, "reverse-chap")
    targets = []
    for i, text in enumerate(args.target):
        try:
            spec = parse_target(text)
        except UriError as exc:
            raise ConfigError(f"--target #{i + 1}", str(exc)) from None
        if chap is not None and spec.chap is not None:
            raise UsageError(f"--target #{i + 1} already holds CHAP credentials")
        if rev is not None and (chap or spec.chap) is None:
            raise UsageError("mutual CHAP needs CHAP credentials too")
        targets.append(dataclasses.replace(spec, chap=chap or spec.chap, reverse_chap=rev))
    return BootConfig(initiator_name=args.initiator_name, nics=(nic,), targets=tuple(targets))


def _build(args: argparse.Namespace) -> int:
    if args.config:
        given = [f"--{f.replace('_', '-')}" for f in _OPTION_FIELDS if getattr(args, f)]
        given += ["--target"] if args.target else []
        given += ["--dns"] if args.dns else []
        given += ["--dhcp"] if args.dhcp else []
        given += ["--vlan"] if args.vlan else []
        if given:
            raise UsageError(f"--config cannot be combined with {', '.join(given)}")
        config = load_boot_config(args.config)
    else:
        config = _config_from_options(args)
    options = IPXE_LAYOUT if args.layout == "ipxe" else BuildOptions()
    table = config.to_ibft(options)
    if args.output == "-":
        sys.stdout.buffer.write(table)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(table)
        print(f"wrote {args.output}: {len(table)} bytes, {len(config.nics)} NIC"
              f"{'s' if len(config.nics) != 1 else ''}, {len(config.targets)} target"
              f"{'s' if len(config.targets) != 1 else ''}", file=sys.stderr)
    return 0


# -- standalone ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ibft ...`` as the ``bootinit`` CLI would (for tests and ``python -m``)."""
    parser = argparse.ArgumentParser(prog="bootinit")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    func: Handler = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
