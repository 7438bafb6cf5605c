"""Human and JSON renderings of a parsed iBFT (for ``bootinit ibft show``).

Secrets (CHAP and reverse-CHAP secrets) are shown as ``***`` unless asked for.
"""

from __future__ import annotations

from typing import Any

from firmware_tables.errors import Problem, format_value
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.structures import IbftTable, IPAddress
from firmware_tables.lun import format_lun_groups, lun_from_sam

MASK = "***"

_FLAG_NAMES = {
    "control": {L.CONTROL_FLAG_BOOT_FAILOVER: "boot-failover"},
    "initiator": {L.INITIATOR_FLAG_VALID: "valid",
                  L.INITIATOR_FLAG_BOOT_SELECTED: "boot-selected"},
    "nic": {L.NIC_FLAG_VALID: "valid", L.NIC_FLAG_BOOT_SELECTED: "boot-selected",
            L.NIC_FLAG_GLOBAL: "global"},
    "target": {L.TARGET_FLAG_VALID: "valid", L.TARGET_FLAG_BOOT_SELECTED: "boot-selected",
               L.TARGET_FLAG_RADIUS_CHAP: "radius-chap",
               L.TARGET_FLAG_RADIUS_RCHAP: "radius-rchap"},
}
_CHAP_TYPES = {L.CHAP_NONE: "none", L.CHAP_ONE_WAY: "chap", L.CHAP_MUTUAL: "mutual"}


def flag_names(kind: str, flags: int) -> list[str]:
    """The names of the set bits (``reserved-0xNN`` for undefined ones)."""
    names = [name for bit, name in _FLAG_NAMES[kind].items() if flags & bit]
    rest = flags & ~sum(_FLAG_NAMES[kind])
    if rest:
        names.append(f"reserved-0x{rest:02x}")
    return names


def _ip(value: IPAddress | None) -> str | None:
    return None if value is None else str(value)


def _secret(value: str | None, show: bool) -> str | None:
    return value if value is None or show else MASK


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """A JSON-ready problem."""
    return {
        "structure": problem.structure,
        "field": problem.field,
        "offset": problem.offset,
        "value": format_value(problem.value),
        "message": problem.message,
        "text": str(problem),
    }


def table_to_dict(table: IbftTable, *, show_secrets: bool = False) -> dict[str, Any]:
    """Every field of the table as JSON-ready data, plus its problems."""
    h = table.header
    out: dict[str, Any] = {
        "header": {
            "signature": h.signature, "length": h.length, "revision": h.revision,
            "checksum": h.checksum, "oem_id": h.oem_id, "oem_table_id": h.oem_table_id,
            "oem_revision": h.oem_revision, "creator_id": h.creator_id,
            "creator_revision": h.creator_revision,
        },
        "control": None,
        "initiator": None,
        "nics": [],
        "targets": [],
        "problems": [problem_to_dict(p) for p in table.problems],
    }
    c = table.control
    if c is not None:
        out["control"] = {
            "version": c.version, "length": c.length, "index": c.index, "flags": c.flags,
            "flag_names": flag_names("control", c.flags), "extensions": c.extensions,
            "structure_offsets": list(c.structure_offsets),
        }
    ini = table.initiator
    if ini is not None:
        out["initiator"] = {
            "offset": ini.offset, "version": ini.version, "index": ini.index,
            "flags": ini.flags, "flag_names": flag_names("initiator", ini.flags),
            "name": ini.name, "isns_server": _ip(ini.isns_server),
            "slp_server": _ip(ini.slp_server),
            "primary_radius_server": _ip(ini.primary_radius_server),
            "secondary_radius_server": _ip(ini.secondary_radius_server),
        }
    for nic in table.nics:
        out["nics"].append({
            "offset": nic.offset, "version": nic.version, "index": nic.index,
            "flags": nic.flags, "flag_names": flag_names("nic", nic.flags),
            "ip_address": _ip(nic.ip_address), "prefix_length": nic.prefix_length,
            "origin": nic.origin, "origin_name": L.ORIGINS.get(nic.origin),
            "gateway": _ip(nic.gateway), "primary_dns": _ip(nic.primary_dns),
            "secondary_dns": _ip(nic.secondary_dns), "dhcp_server": _ip(nic.dhcp_server),
            "vlan": nic.vlan, "mac": nic.mac_text, "pci_bdf": nic.pci_bdf,
            "pci_location": nic.pci_location, "hostname": nic.hostname,
        })
    for tgt in table.targets:
        out["targets"].append({
            "offset": tgt.offset, "version": tgt.version, "index": tgt.index,
            "flags": tgt.flags, "flag_names": flag_names("target", tgt.flags),
            "ip_address": _ip(tgt.ip_address), "port": tgt.port,
            "lun": lun_from_sam(tgt.lun), "lun_bytes": tgt.lun.hex(),
            "chap_type": tgt.chap_type, "chap_type_name": _CHAP_TYPES.get(tgt.chap_type),
            "nic_association": tgt.nic_association, "name": tgt.name,
            "chap_name": tgt.chap_name, "chap_secret": _secret(tgt.chap_secret, show_secrets),
            "reverse_chap_name": tgt.reverse_chap_name,
            "reverse_chap_secret": _secret(tgt.reverse_chap_secret, show_secrets),
        })
    return out


def _flags(kind: str, flags: int) -> str:
    names = flag_names(kind, flags)
    return f"flags 0x{flags:02x}" + (f" ({', '.join(names)})" if names else "")


def _at(offset: int) -> str:
    return f" at 0x{offset:x}" if offset else ""


def format_table(table: IbftTable, *, show_secrets: bool = False) -> list[str]:
    """A human-readable description, one line per item."""
    h = table.header
    lines = [
        f"iBFT {h.signature!r}: {h.length} bytes, revision {h.revision}, "
        f"checksum 0x{h.checksum:02x}, OEM {h.oem_id!r} table {h.oem_table_id!r} "
        f"rev {h.oem_revision}, creator {h.creator_id!r} rev {h.creator_revision}"
    ]
    c = table.control
    if c is not None:
        offs = ", ".join(f"0x{o:x}" for o in c.structure_offsets)
        lines.append(f"Control: length {c.length}, {_flags('control', c.flags)}, "
                     f"offsets [{offs}]")
    ini = table.initiator
    if ini is not None:
        lines.append(f"Initiator{_at(ini.offset)}: {_flags('initiator', ini.flags)}")
        lines.append(f"  name {ini.name if ini.name is not None else '(none)'}")
        for label, value in (("iSNS server", ini.isns_server), ("SLP server", ini.slp_server),
                             ("primary RADIUS", ini.primary_radius_server),
                             ("secondary RADIUS", ini.secondary_radius_server)):
            if value is not None:
                lines.append(f"  {label} {value}")
    for nic in table.nics:
        lines.append(f"NIC {nic.index}{_at(nic.offset)}: {_flags('nic', nic.flags)}")
        origin = L.ORIGINS.get(nic.origin, "unknown")
        lines.append(f"  address {nic.ip_address or '(none)'}/{nic.prefix_length} "
                     f"(origin {nic.origin} {origin})")
        for label, value in (("gateway", nic.gateway), ("primary DNS", nic.primary_dns),
                             ("secondary DNS", nic.secondary_dns),
                             ("DHCP server", nic.dhcp_server)):
            if value is not None:
                lines.append(f"  {label} {value}")
        lines.append(f"  MAC {nic.mac_text}, VLAN {nic.vlan}, PCI {nic.pci_location}")
        if nic.hostname is not None:
            lines.append(f"  hostname {nic.hostname}")
    for tgt in table.targets:
        lines.append(f"Target {tgt.index}{_at(tgt.offset)}: {_flags('target', tgt.flags)}")
        addr = tgt.ip_address
        portal = f"[{addr}]" if addr is not None and addr.version == 6 else str(addr or "(none)")
        lines.append(f"  portal {portal}:{tgt.port}, LUN {lun_from_sam(tgt.lun)} "
                     f"({format_lun_groups(tgt.lun)}), NIC {tgt.nic_association}")
        lines.append(f"  name {tgt.name if tgt.name is not None else '(none)'}")
        chap = _CHAP_TYPES.get(tgt.chap_type, f"unknown ({tgt.chap_type})")
        line = f"  CHAP {chap}"
        if tgt.chap_name is not None or tgt.chap_secret is not None:
            line += f": user {tgt.chap_name!r} secret {_secret(tgt.chap_secret, show_secrets)!r}"
        lines.append(line)
        if tgt.reverse_chap_name is not None or tgt.reverse_chap_secret is not None:
            lines.append(f"  reverse CHAP: user {tgt.reverse_chap_name!r} secret "
                         f"{_secret(tgt.reverse_chap_secret, show_secrets)!r}")
    if table.problems:
        lines.append(f"Problems ({len(table.problems)}):")
        lines.extend(f"  {p}" for p in table.problems)
    return lines
