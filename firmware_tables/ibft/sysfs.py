"""Linux's sysfs view of an iBFT, ``/sys/firmware/ibft/``: render it, write it, read it.

Linux (drivers/firmware/iscsi_ibft.c with drivers/scsi/iscsi_boot_sysfs.c) exports
``acpi_header/``, ``initiator/``, ``ethernet<index>/`` and ``target<index>/``, one file per
attribute; open-iscsi (``iscsiadm -m fw``) and dracut read that tree. The formats below
are those of the driver, quirks included:

- numbers ``%d\\n``; MAC ``%pM`` (``52:54:00:12:34:56``); strings ``%.*s\\n``;
- IP addresses: IPv4-mapped ones as dotted quads, others as ``%pI6`` (eight 4-digit
  groups, uncompressed); a target's unset address thus reads
  ``0000:0000:0000:0000:0000:0000:0000:0000``;
- ``subnet-mask`` is the prefix as an IPv4 mask with *no* trailing newline, computed as a
  32-bit C shift would on x86 (prefix 0 reads ``255.255.255.255``);
- ``lun`` is the eight LUN bytes each printed ``%x`` (no padding): LUN 1 is
  ``01000000``. That is ambiguous when a byte is >= 16; ``read_sysfs`` picks the reading
  with the most zero bytes at the end (right for single-level LUNs);
- the reverse CHAP secret is ``rev-chap-name-secret``;
- an attribute is absent when Linux hides it: NIC addresses when unset, ``prefix-len``
  and ``subnet-mask`` when the prefix is 0, ``hostname`` when it has no offset, CHAP
  name and secret when the CHAP name is empty, the target name when empty.

``render_sysfs`` is exact for a table that parses strictly (Linux skips structures
whose id or length is wrong; a lenient parse keeps them).
"""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from firmware_tables.errors import IbftError, Problem, TableNotFoundError
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.structures import (
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    IPAddress,
)

SYSFS_IBFT_DIR = Path("/sys/firmware/ibft")
SECRET_ATTRIBUTES = frozenset({"chap-secret", "rev-chap-name-secret"})
_MASK = "***"

Rendered = dict[str, dict[str, str]]


def _ip(value: IPAddress | None) -> str:
    if value is None:
        return "0000:0000:0000:0000:0000:0000:0000:0000\n"
    if isinstance(value, IPv4Address):
        return f"{value}\n"
    return f"{value.exploded}\n"


def _subnet_mask(prefix: int) -> str:
    shift = (32 - prefix) & 31  # x86 masks 32-bit shift counts to 5 bits
    low = (1 << shift) - 1
    mask = ~low & 0xFFFFFFFF
    return str(IPv4Address(mask))


def _s(text: str | None) -> str:
    return f"{text or ''}\n"


def render_sysfs(table: IbftTable, *, mask_secrets: bool = False) -> Rendered:
    """The files Linux would show under ``/sys/firmware/ibft`` for ``table``.

    Returns ``{directory: {attribute: exact file content}}`` in Linux's order.
    """
    out: Rendered = {}
    h = table.header
    out["acpi_header"] = {
        "signature": _s(h.signature[:4]),
        "oem_id": _s(h.oem_id[:6]),
        "oem_table_id": _s(h.oem_table_id[:8]),
    }
    ini = table.initiator
    if ini is not None:
        d = {"index": f"{ini.index}\n", "flags": f"{ini.flags}\n"}
        for attr, value in (
            ("isns-server", ini.isns_server),
            ("slp-server", ini.slp_server),
            ("pri-radius-server", ini.primary_radius_server),
            ("sec-radius-server", ini.secondary_radius_server),
        ):
            if value is not None:
                d[attr] = _ip(value)
        if ini.name:
            d["initiator-name"] = _s(ini.name)
        out["initiator"] = d
    for nic in table.nics:
        d = {"index": f"{nic.index}\n", "flags": f"{nic.flags}\n"}
        if nic.ip_address is not None:
            d["ip-addr"] = _ip(nic.ip_address)
        if nic.prefix_length:
            d["prefix-len"] = f"{nic.prefix_length}\n"
            d["subnet-mask"] = _subnet_mask(nic.prefix_length)
        d["origin"] = f"{nic.origin}\n"
        for attr, value in (
            ("gateway", nic.gateway),
            ("primary-dns", nic.primary_dns),
            ("secondary-dns", nic.secondary_dns),
            ("dhcp", nic.dhcp_server),
        ):
            if value is not None:
                d[attr] = _ip(value)
        d["vlan"] = f"{nic.vlan}\n"
        d["mac"] = f"{nic.mac_text}\n"
        if nic.hostname is not None:
            d["hostname"] = _s(nic.hostname)
        out.setdefault(f"ethernet{nic.index}", d)
    for tgt in table.targets:
        d = {
            "index": f"{tgt.index}\n",
            "flags": f"{tgt.flags}\n",
            "ip-addr": _ip(tgt.ip_address),
            "port": f"{tgt.port}\n",
            "lun": "".join(f"{b:x}" for b in tgt.lun) + "\n",
            "chap-type": f"{tgt.chap_type}\n",
            "nic-assoc": f"{tgt.nic_association}\n",
        }
        if tgt.name:
            d["target-name"] = _s(tgt.name)
        if tgt.chap_name:
            d["chap-name"] = _s(tgt.chap_name)
            d["chap-secret"] = _MASK + "\n" if mask_secrets else _s(tgt.chap_secret)
        if tgt.reverse_chap_name:
            d["rev-chap-name"] = _s(tgt.reverse_chap_name)
            d["rev-chap-name-secret"] = (
                _MASK + "\n" if mask_secrets else _s(tgt.reverse_chap_secret)
            )
        out.setdefault(f"target{tgt.index}", d)
    return out


def sysfs_lines(rendered: Rendered) -> list[str]:
    """``directory/attribute:value`` lines (as ``grep -r .`` in the directory prints them)."""
    lines = []
    for directory, attrs in rendered.items():
        for attr, content in attrs.items():
            value = content[:-1] if content.endswith("\n") else content
            lines.append(f"{directory}/{attr}:{value}")
    return lines


def write_sysfs_tree(table: IbftTable, root: str | Path, *, device_links: bool = True) -> None:
    """Write the tree ``render_sysfs`` describes under ``root`` (a fake /sys/firmware/ibft).

    With ``device_links`` each ``ethernetN`` gets the ``device`` symlink Linux makes to
    its PCI device (dangling here: ``../devices/pci0000:00/0000:BB:DD.F``).
    """
    base = Path(root)
    for directory, attrs in render_sysfs(table).items():
        d = base / directory
        d.mkdir(parents=True, exist_ok=True)
        for attr, content in attrs.items():
            (d / attr).write_text(content, encoding="utf-8")
    if device_links:
        for nic in table.nics:
            link = base / f"ethernet{nic.index}" / "device"
            if not link.is_symlink():
                bus, dev, fn = nic.pci_bdf >> 8, (nic.pci_bdf >> 3) & 0x1F, nic.pci_bdf & 7
                link.symlink_to(f"../devices/pci0000:{bus:02x}/0000:{bus:02x}:{dev:02x}.{fn:x}")


# -- reading --------------------------------------------------------------------------

_PCI_NAME = re.compile(r"^(?:[0-9a-fA-F]{4,}:)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


class _Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def text(self, d: Path, attr: str) -> str | None:
        path = d / attr
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.append(Problem(d.name, attr, None, str(path),
                                         f"cannot read: {exc.strerror or exc}"))
            return None
        text = raw.decode("utf-8", "backslashreplace")
        return text[:-1] if text.endswith("\n") else text

    def number(self, d: Path, attr: str, default: int, limit: int) -> int:
        text = self.text(d, attr)
        if text is None:
            return default
        if re.fullmatch(r"[0-9]{1,10}", text) and int(text) <= limit:
            return int(text)
        self.problems.append(Problem(d.name, attr, None, text, f"not a number 0..{limit}"))
        return default

    def ip(self, d: Path, attr: str) -> IPAddress | None:
        text = self.text(d, attr)
        if text is None:
            return None
        try:
            value = ip_address(text)
        except ValueError:
            self.problems.append(Problem(d.name, attr, None, text, "not an IP address"))
            return None
        if isinstance(value, IPv6Address) and value.ipv4_mapped is not None:
            value = value.ipv4_mapped
        return None if int(value) == 0 else value

    def mac(self, d: Path) -> bytes:
        text = self.text(d, "mac")
        if text is None:
            return bytes(6)
        parts = text.split(":")
        if len(parts) == 6 and all(re.fullmatch(r"[0-9a-fA-F]{2}", p) for p in parts):
            return bytes(int(p, 16) for p in parts)
        self.problems.append(Problem(d.name, "mac", None, text, "not a MAC address"))
        return bytes(6)

    def prefix(self, d: Path) -> int:
        if (d / "prefix-len").exists():
            return self.number(d, "prefix-len", 0, 255)
        text = self.text(d, "subnet-mask")
        if text is None:
            return 0
        try:
            mask = int(IPv4Address(text))
        except ValueError:
            self.problems.append(Problem(d.name, "subnet-mask", None, text, "not a netmask"))
            return 0
        return bin(mask).count("1")

    def lun(self, d: Path) -> bytes:
        text = self.text(d, "lun")
        if text is None:
            return bytes(8)
        choice = decode_sysfs_lun(text)
        if choice is None:
            self.problems.append(Problem(d.name, "lun", None, text,
                                         "not eight %x-printed bytes"))
            return bytes(8)
        return choice

    def pci(self, d: Path) -> int:
        link = d / "device"
        if not link.is_symlink():
            return 0
        m = _PCI_NAME.match(os.path.basename(os.readlink(link)))
        if m is None:
            return 0
        return int(m[1], 16) << 8 | int(m[2], 16) << 3 | int(m[3])


def decode_sysfs_lun(text: str) -> bytes | None:
    """Undo Linux's ``%x``-per-byte LUN format; ``None`` if no reading exists.

    Among the readings (a two-digit byte never starts with 0), prefer the one whose
    later bytes are smallest (zeros at the end), as boot LUNs are single-level.
    """
    if not 8 <= len(text) <= 16 or any(c not in "0123456789abcdefABCDEF" for c in text):
        return None
    best: tuple[int, ...] | None = None

    def walk(i: int, acc: tuple[int, ...]) -> None:
        nonlocal best
        if len(acc) == 8:
            if i == len(text) and (best is None or acc[::-1] < best[::-1]):
                best = acc
            return
        left = 8 - len(acc)
        if not left <= len(text) - i <= 2 * left:
            return
        walk(i + 1, (*acc, int(text[i], 16)))
        if i + 1 < len(text) and text[i] != "0":
            walk(i + 2, (*acc, int(text[i : i + 2], 16)))

    walk(0, ())
    return None if best is None else bytes(best)


def _indexed(root: Path, prefix: str) -> list[tuple[int, Path]]:
    found = []
    for entry in root.iterdir():
        m = re.fullmatch(prefix + r"(\d+)", entry.name)
        if m and entry.is_dir():
            found.append((int(m[1]), entry))
    return sorted(found)


def read_sysfs(root: str | Path = SYSFS_IBFT_DIR, *, strict: bool = True) -> IbftTable:
    """Read Linux's ``/sys/firmware/ibft`` tree (or a copy) into an ``IbftTable``.

    Offsets are unknown (0) and ``header`` holds only the signature and OEM ids. Reading
    the attributes needs root on a real system (Linux checks CAP_SYS_ADMIN). Unreadable
    or malformed attributes are problems: raised as ``IbftError`` when ``strict``.
    Raises ``TableNotFoundError`` when ``root`` is not a directory.
    """
    base = Path(root)
    if not base.is_dir():
        raise TableNotFoundError(f"no iBFT sysfs directory at {base}")
    r = _Reader()
    acpi = base / "acpi_header"
    header = IbftHeader(
        signature=r.text(acpi, "signature") or "",
        oem_id=r.text(acpi, "oem_id") or "",
        oem_table_id=r.text(acpi, "oem_table_id") or "",
    )
    initiator = None
    ini = base / "initiator"
    if ini.is_dir():
        initiator = IbftInitiator(
            name=r.text(ini, "initiator-name"),
            flags=r.number(ini, "flags", 0, 255),
            isns_server=r.ip(ini, "isns-server"),
            slp_server=r.ip(ini, "slp-server"),
            primary_radius_server=r.ip(ini, "pri-radius-server"),
            secondary_radius_server=r.ip(ini, "sec-radius-server"),
            index=r.number(ini, "index", 0, 255),
        )
    nics = []
    for number, d in _indexed(base, "ethernet"):
        nics.append(IbftNic(
            index=r.number(d, "index", number, 255),
            flags=r.number(d, "flags", 0, 255),
            ip_address=r.ip(d, "ip-addr"),
            prefix_length=r.prefix(d),
            origin=r.number(d, "origin", 0, 255),
            gateway=r.ip(d, "gateway"),
            primary_dns=r.ip(d, "primary-dns"),
            secondary_dns=r.ip(d, "secondary-dns"),
            dhcp_server=r.ip(d, "dhcp"),
            vlan=r.number(d, "vlan", 0, 0xFFFF),
            mac=r.mac(d),
            pci_bdf=r.pci(d),
            hostname=r.text(d, "hostname"),
        ))
    targets = []
    for number, d in _indexed(base, "target"):
        chap_name = r.text(d, "chap-name")
        rev_name = r.text(d, "rev-chap-name")
        targets.append(IbftTarget(
            index=r.number(d, "index", number, 255),
            flags=r.number(d, "flags", 0, 255),
            ip_address=r.ip(d, "ip-addr"),
            port=r.number(d, "port", 0, 0xFFFF),
            lun=r.lun(d),
            chap_type=r.number(d, "chap-type", L.CHAP_NONE, 255),
            nic_association=r.number(d, "nic-assoc", 0, 255),
            name=r.text(d, "target-name"),
            chap_name=chap_name,
            chap_secret=r.text(d, "chap-secret") if chap_name is not None else None,
            reverse_chap_name=rev_name,
            reverse_chap_secret=r.text(d, "rev-chap-name-secret") if rev_name is not None else None,
        ))
    if strict and r.problems:
        raise IbftError(r.problems)
    return IbftTable(header=header, control=None, initiator=initiator, nics=tuple(nics),
                     targets=tuple(targets), problems=tuple(r.problems))
