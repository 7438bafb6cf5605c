"""The boot configuration model the whole product uses, and its conversions.

``BootConfig`` = initiator name + NICs (``NicConfig``) + targets (``TargetSpec``), plus the
rarely used iSNS/SLP/RADIUS servers the iBFT Initiator structure can carry.

Conversions:

- ``BootConfig.from_ibft(table)`` / ``config.to_ibft(options)`` -> table bytes, and
  ``config.to_ibft_structures()`` (iBFT spec 1.03, Initiator/NIC/Target structures);
- ``BootConfig.from_dict`` / ``to_dict`` (the JSON/TOML file format) and
  ``load_boot_config(path)``;
- ``BootConfig.from_dhcp(root_path, initiator_name)``: DHCP option 17 (root path, RFC
  2132 section 3.19, in RFC 4173 form) and option 203 (iPXE's initiator IQN).

From an iBFT only structures with the *valid* flag become NICs and targets; iBFT NIC
indices become list positions (a target's ``nic`` is a position in ``nics``); origin 3
becomes ``dhcp=True`` and anything else ``False`` (written back as origin 1, "manual",
as iPXE does for a static address); an all-zero MAC and PCI location 00:00.0 read as
``None``; the VLAN keeps its low 12 bits (the VLAN ID); the RADIUS CHAP flag bits are
ignored. To an iBFT at most two DNS servers are written (the structure has two slots).
A configuration converted to an iBFT and back compares equal to itself.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from pathlib import Path
from typing import Any, NamedTuple

from firmware_tables.errors import ConfigError, UriError
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.build import BuildOptions, build_ibft
from firmware_tables.ibft.structures import (
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    IPAddress,
)
from firmware_tables.lun import lun_from_sam, lun_to_sam
from firmware_tables.target import DEFAULT_PORT, ChapCredentials, TargetSpec
from firmware_tables.uri import parse_iscsi_url, parse_root_path, parse_target

IPInterface = IPv4Interface | IPv6Interface
MASK = "***"


class PciAddress(NamedTuple):
    """A PCI location in PCI segment 0 (the iBFT has no segment field)."""

    bus: int
    device: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """Parse ``BB:DD.F`` or ``SSSS:BB:DD.F`` (hex, as lspci prints it)."""
        parts = text.split(":")
        if len(parts) == 3:
            if not _hex(parts[0]) or int(parts[0], 16) != 0:
                raise ConfigError("pci", f"only PCI segment 0 can be described: {text!r}")
            parts = parts[1:]
        if len(parts) != 2 or "." not in parts[1]:
            raise ConfigError("pci", f"not a PCI location BB:DD.F: {text!r}")
        dev, _, fn = parts[1].partition(".")
        if not (_hex(parts[0]) and _hex(dev) and fn.isdigit()):
            raise ConfigError("pci", f"not a PCI location BB:DD.F: {text!r}")
        return cls.from_parts(int(parts[0], 16), int(dev, 16), int(fn))

    @classmethod
    def from_parts(cls, bus: int, device: int, function: int) -> PciAddress:
        """Validated constructor."""
        if not (0 <= bus <= 255 and 0 <= device <= 31 and 0 <= function <= 7):
            raise ConfigError("pci", f"bus/device/function out of range: {bus}/{device}/{function}")
        return cls(bus, device, function)

    @classmethod
    def from_bdf(cls, bdf: int) -> PciAddress:
        """From the iBFT's u16 ``bus << 8 | device << 3 | function``."""
        return cls(bdf >> 8 & 0xFF, bdf >> 3 & 0x1F, bdf & 7)

    @property
    def bdf(self) -> int:
        """The iBFT's u16 form."""
        return self.bus << 8 | self.device << 3 | self.function

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.device:02x}.{self.function:x}"


def _hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


def parse_mac(text: str) -> bytes:
    """``52:54:00:12:34:56`` (or with ``-``) to 6 bytes; ``ConfigError`` otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and _hex(p) for p in parts):
        raise ConfigError("mac", f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(mac: bytes) -> str:
    """6 bytes as ``52:54:00:12:34:56``."""
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True)
class NicConfig:
    """One network interface to boot through.

    ``address`` carries address and prefix (``10.0.0.2/24``); with ``dhcp`` it is the
    lease obtained (or ``None`` before there is one). ``vlan`` 0 means untagged.
    """

    address: IPInterface | None = None
    gateway: IPAddress | None = None
    dns: tuple[IPAddress, ...] = ()
    mac: bytes | None = None
    vlan: int = 0
    dhcp: bool = False
    dhcp_server: IPAddress | None = None
    hostname: str | None = None
    pci: PciAddress | None = None
    boot_selected: bool = True

    def __post_init__(self) -> None:
        if self.mac is not None and (not isinstance(self.mac, bytes) or len(self.mac) != 6):
            raise ConfigError("mac", f"a MAC address is 6 bytes: {self.mac!r}")
        if type(self.vlan) is not int or not 0 <= self.vlan <= 4095:
            raise ConfigError("vlan", f"not a VLAN ID 0..4095: {self.vlan!r}")
        if self.hostname is not None and "\0" in self.hostname:
            raise ConfigError("hostname", "a host name cannot hold a NUL")


@dataclass(frozen=True)
class BootConfig:
    """Everything a boot needs: who we are, which NICs, which targets."""

    initiator_name: str
    nics: tuple[NicConfig, ...] = ()
    targets: tuple[TargetSpec, ...] = ()
    isns_server: IPAddress | None = None
    slp_server: IPAddress | None = None
    radius_servers: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.initiator_name, str) or not self.initiator_name:
            raise ConfigError("initiator_name", "must be a non-empty string")
        if "\0" in self.initiator_name:
            raise ConfigError("initiator_name", "cannot hold a NUL")
        if len(self.radius_servers) > 2:
            raise ConfigError("radius_servers", "at most two (primary, secondary)")
        if self.nics:
            for i, tgt in enumerate(self.targets):
                if tgt.nic >= len(self.nics):
                    raise ConfigError(f"targets[{i}].nic",
                                      f"NIC {tgt.nic} does not exist ({len(self.nics)} NICs)")

    # -- iBFT -------------------------------------------------------------------------

    def to_ibft_structures(self) -> tuple[IbftInitiator, list[IbftNic], list[IbftTarget]]:
        """The Initiator, NIC and Target structures describing this configuration."""
        if self.targets and not self.nics:
            raise ConfigError("nics", "an iBFT target must be associated with a NIC")
        radius = (*self.radius_servers, None, None)
        initiator = IbftInitiator(
            name=self.initiator_name,
            isns_server=self.isns_server,
            slp_server=self.slp_server,
            primary_radius_server=radius[0],
            secondary_radius_server=radius[1],
        )
        nics = []
        for i, nic in enumerate(self.nics):
            dns = (*nic.dns, None, None)
            nics.append(IbftNic(
                index=i,
                flags=L.NIC_FLAG_VALID | (L.NIC_FLAG_BOOT_SELECTED if nic.boot_selected else 0),
                ip_address=nic.address.ip if nic.address is not None else None,
                prefix_length=nic.address.network.prefixlen if nic.address is not None else 0,
                origin=L.ORIGIN_DHCP if nic.dhcp else L.ORIGIN_MANUAL,
                gateway=nic.gateway,
                primary_dns=dns[0],
                secondary_dns=dns[1],
                dhcp_server=nic.dhcp_server,
                vlan=nic.vlan,
                mac=nic.mac if nic.mac is not None else bytes(6),
                pci_bdf=nic.pci.bdf if nic.pci is not None else 0,
                hostname=nic.hostname,
            ))
        targets = []
        for i, tgt in enumerate(self.targets):
            addr = tgt.address
            if addr is None:
                raise ConfigError(f"targets[{i}].host",
                                  f"an iBFT needs an IP address, not the host name {tgt.host!r}")
            chap, rev = tgt.chap, tgt.reverse_chap
            targets.append(IbftTarget(
                index=i,
                flags=L.TARGET_FLAG_VALID
                | (L.TARGET_FLAG_BOOT_SELECTED if tgt.boot_selected else 0),
                ip_address=addr,
                port=tgt.port,
                lun=lun_to_sam(tgt.lun),
                chap_type=L.CHAP_MUTUAL if rev else L.CHAP_ONE_WAY if chap else L.CHAP_NONE,
                nic_association=tgt.nic,
                name=tgt.name,
                chap_name=chap.user if chap else None,
                chap_secret=chap.secret if chap else None,
                reverse_chap_name=rev.user if rev else None,
                reverse_chap_secret=rev.secret if rev else None,
            ))
        return initiator, nics, targets

    def to_ibft(self, options: BuildOptions | None = None) -> bytes:
        """A complete iBFT for this configuration (``IbftError``/``ConfigError`` if not)."""
        initiator, nics, targets = self.to_ibft_structures()
        return build_ibft(initiator, nics, targets, options or BuildOptions())

    @classmethod
    def from_ibft(cls, table: IbftTable) -> BootConfig:
        """The configuration an iBFT describes (see the module notes on what is kept)."""
        ini = table.initiator
        if ini is None or not ini.name:
            raise ConfigError("initiator_name", "the iBFT has no initiator name")
        valid_nics = [n for n in table.nics if n.valid]
        position = {n.index: i for i, n in enumerate(valid_nics)}
        nics = []
        for i, n in enumerate(valid_nics):
            address = None
            if n.ip_address is not None:
                try:
                    address = ip_interface((n.ip_address, n.prefix_length))
                except ValueError:
                    raise ConfigError(f"nics[{i}].address",
                                      f"prefix /{n.prefix_length} does not fit "
                                      f"{n.ip_address}") from None
            nics.append(NicConfig(
                address=address,
                gateway=n.gateway,
                dns=tuple(d for d in (n.primary_dns, n.secondary_dns) if d is not None),
                mac=n.mac if any(n.mac) else None,
                vlan=n.vlan & 0x0FFF,
                dhcp=n.origin == L.ORIGIN_DHCP,
                dhcp_server=n.dhcp_server,
                hostname=n.hostname,
                pci=PciAddress.from_bdf(n.pci_bdf) if n.pci_bdf else None,
                boot_selected=n.boot_selected,
            ))
        targets = []
        for i, t in enumerate(x for x in table.targets if x.valid):
            if t.ip_address is None:
                raise ConfigError(f"targets[{i}].host", "the iBFT target has no IP address")
            if t.nic_association not in position:
                raise ConfigError(f"targets[{i}].nic",
                                  f"the iBFT target is associated with NIC index "
                                  f"{t.nic_association}, which is not a valid NIC")
            chap = rev = None
            if t.chap_type >= L.CHAP_ONE_WAY and t.chap_name:
                chap = ChapCredentials(t.chap_name, t.chap_secret or "")
                if t.chap_type >= L.CHAP_MUTUAL and t.reverse_chap_name:
                    rev = ChapCredentials(t.reverse_chap_name, t.reverse_chap_secret or "")
            try:
                targets.append(TargetSpec(
                    host=str(t.ip_address),
                    name=t.name or "",
                    port=t.port,
                    lun=lun_from_sam(t.lun),
                    chap=chap,
                    reverse_chap=rev,
                    nic=position[t.nic_association],
                    boot_selected=t.boot_selected,
                ))
            except ConfigError as exc:
                raise ConfigError(f"targets[{i}].{exc.path}", exc.message) from None
        radius = tuple(
            r for r in (ini.primary_radius_server, ini.secondary_radius_server) if r is not None
        )
        return cls(
            initiator_name=ini.name,
            nics=tuple(nics),
            targets=tuple(targets),
            isns_server=ini.isns_server,
            slp_server=ini.slp_server,
            radius_servers=radius,
        )

    # -- DHCP -------------------------------------------------------------------------

    @classmethod
    def from_dhcp(
        cls,
        root_path: str | bytes,
        initiator_name: str | bytes | None,
        *,
        nic: NicConfig | None = None,
        chap: ChapCredentials | None = None,
        reverse_chap: ChapCredentials | None = None,
    ) -> BootConfig:
        """A configuration from DHCP option 17 (root path) and 203 (initiator name).

        Option values may be given raw (bytes; a trailing NUL is dropped). The root path
        may be RFC 4173 ``iscsi:...`` or an ``iscsi://`` URL. ``nic`` is the interface
        the lease came on; CHAP credentials are not part of a root path and come from
        the arguments.
        """
        path = _dhcp_text(root_path, "dhcp.option17")
        name = _dhcp_text(initiator_name, "dhcp.option203") if initiator_name is not None else ""
        if not name:
            raise ConfigError("dhcp.option203", "no initiator name (DHCP option 203)")
        try:
            spec = parse_target(path)
        except UriError as exc:
            raise ConfigError("dhcp.option17", str(exc)) from None
        if chap is not None and spec.chap is not None:
            raise ConfigError("dhcp.option17", "CHAP credentials given twice")
        spec = _with(spec, chap=chap or spec.chap, reverse_chap=reverse_chap)
        return cls(initiator_name=name, nics=(nic,) if nic else (), targets=(spec,))

    # -- dict / JSON / TOML -------------------------------------------------------------------

    def to_dict(self, *, show_secrets: bool = False) -> dict[str, Any]:
        """A JSON/TOML-ready dict (``from_dict`` reads it back); secrets ``***`` unless asked."""
        out: dict[str, Any] = {"initiator_name": self.initiator_name}
        if self.isns_server is not None:
            out["isns_server"] = str(self.isns_server)
        if self.slp_server is not None:
            out["slp_server"] = str(self.slp_server)
        if self.radius_servers:
            out["radius_servers"] = [str(r) for r in self.radius_servers]
        nics = []
        for nic in self.nics:
            d: dict[str, Any] = {}
            if nic.address is not None:
                d["address"] = str(nic.address)
            if nic.gateway is not None:
                d["gateway"] = str(nic.gateway)
            if nic.dns:
                d["dns"] = [str(x) for x in nic.dns]
            if nic.mac is not None:
                d["mac"] = format_mac(nic.mac)
            d["vlan"] = nic.vlan
            d["dhcp"] = nic.dhcp
            if nic.dhcp_server is not None:
                d["dhcp_server"] = str(nic.dhcp_server)
            if nic.hostname is not None:
                d["hostname"] = nic.hostname
            if nic.pci is not None:
                d["pci"] = str(nic.pci)
            d["boot_selected"] = nic.boot_selected
            nics.append(d)
        out["nics"] = nics
        targets = []
        for tgt in self.targets:
            t: dict[str, Any] = {"host": tgt.host, "port": tgt.port, "name": tgt.name,
                                 "lun": tgt.lun, "nic": tgt.nic,
                                 "boot_selected": tgt.boot_selected}
            for prefix, cred in (("chap", tgt.chap), ("reverse_chap", tgt.reverse_chap)):
                if cred is not None:
                    t[f"{prefix}_user"] = cred.user
                    t[f"{prefix}_secret"] = cred.secret if show_secrets else MASK
            targets.append(t)
        out["targets"] = targets
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BootConfig:
        """Read the file format (TOML shown; JSON has the same keys)::

            initiator_name = "iqn.2026-11.test:client"
            # optional: isns_server, slp_server, radius_servers = [..]
            [[nics]]                      # all keys optional
            address = "10.77.5.2/24"      # or "2001:db8::2/64"
            gateway = "10.77.5.1"
            dns = ["10.77.5.53"]
            mac = "52:54:00:12:34:56"
            vlan = 0
            dhcp = false
            dhcp_server = "10.77.5.1"
            hostname = "client"
            pci = "00:03.0"
            boot_selected = true
            [[targets]]                   # host+name (+port, lun), or url, or root_path
            url = "iscsi://joe%secret@10.77.5.1/iqn.2026-11.test:disk/1"
            reverse_chap_user = "target"  # chap_user/chap_secret likewise
            reverse_chap_secret = "..."
            nic = 0                       # position in nics
            boot_selected = true

        Unknown keys and wrong types raise ``ConfigError`` naming the setting.
        """
        if not isinstance(data, Mapping):
            raise ConfigError("", "the configuration must be a table/object")
        _keys(data, "", {"initiator_name", "isns_server", "slp_server", "radius_servers",
                         "nics", "targets"})
        nics = tuple(_nic_from_dict(d, f"nics[{i}]")
                     for i, d in enumerate(_list(data, "nics", "")))
        targets = tuple(_target_from_dict(d, f"targets[{i}]")
                        for i, d in enumerate(_list(data, "targets", "")))
        return cls(
            initiator_name=_str(data, "initiator_name", "", required=True) or "",
            nics=nics,
            targets=targets,
            isns_server=_ip(data, "isns_server", ""),
            slp_server=_ip(data, "slp_server", ""),
            radius_servers=tuple(_ip_text(x, f"radius_servers[{i}]")
                                 for i, x in enumerate(_list(data, "radius_servers", ""))),
        )


def load_boot_config(path: str | Path) -> BootConfig:
    """Read a ``.json`` or ``.toml`` boot configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(str(p), "the file name must end in .json or .toml")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(p), f"syntax error: {exc}") from None
    return BootConfig.from_dict(data)


# -- helpers ------------------------------------------------------------------------------


def _with(spec: TargetSpec, **changes: Any) -> TargetSpec:
    return dataclasses.replace(spec, **changes)


def _dhcp_text(value: str | bytes, path: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path, "the option value is not UTF-8") from None
    return value.rstrip("\0").strip()


def _keys(data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, f"unknown setting (known: {', '.join(sorted(allowed))})")


def _list(data: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{path}.{key}" if path else key, "expected a list")
    return value


def _str(data: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    where = f"{path}.{key}" if path else key
    if key not in data:
        if required:
            raise ConfigError(where, "missing")
        return None
    value = data[key]
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {type(value).__name__}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, default: int) -> int:
    value = data.get(key, default)
    if type(value) is not int:
        raise ConfigError(f"{path}.{key}", f"expected an integer, got {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}.{key}", f"expected true or false, got {value!r}")
    return value


def _ip_text(value: Any, where: str) -> IPAddress:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected an IP address string, got {value!r}")
    try:
        return ip_address(value)
    except ValueError:
        raise ConfigError(where, f"not an IP address: {value!r}") from None


def _ip(data: Mapping[str, Any], key: str, path: str) -> IPAddress | None:
    if key not in data:
        return None
    return _ip_text(data[key], f"{path}.{key}" if path else key)


def _nic_from_dict(d: Any, path: str) -> NicConfig:
    if not isinstance(d, Mapping):
        raise ConfigError(path, "expected a table/object")
    _keys(d, path, {"address", "gateway", "dns", "mac", "vlan", "dhcp", "dhcp_server",
                    "hostname", "pci", "boot_selected"})
    address = None
    text = _str(d, "address", path)
    if text is not None:
        try:
            address = ip_interface(text)
        except ValueError:
            raise ConfigError(f"{path}.address", f"not an address/prefix: {text!r}") from None
    mac_text = _str(d, "mac", path)
    pci_text = _str(d, "pci", path)
    try:
        return NicConfig(
            address=address,
            gateway=_ip(d, "gateway", path),
            dns=tuple(_ip_text(x, f"{path}.dns[{i}]") for i, x in enumerate(_list(d, "dns", path))),
            mac=parse_mac(mac_text) if mac_text is not None else None,
            vlan=_int(d, "vlan", path, 0),
            dhcp=_bool(d, "dhcp", path, False),
            dhcp_server=_ip(d, "dhcp_server", path),
            hostname=_str(d, "hostname", path),
            pci=PciAddress.parse(pci_text) if pci_text is not None else None,
            boot_selected=_bool(d, "boot_selected", path, True),
        )
    except ConfigError as exc:
        if exc.path.startswith(path):
            raise
        raise ConfigError(f"{path}.{exc.path}", exc.message) from None


def _cred(d: Mapping[str, Any], prefix: str, path: str) -> ChapCredentials | None:
    user = _str(d, f"{prefix}_user", path)
    secret = _str(d, f"{prefix}_secret", path)
    if user is None and secret is None:
        return None
    if user is None or secret is None:
        raise ConfigError(f"{path}.{prefix}_user", f"give both {prefix}_user and {prefix}_secret")
    try:
        return ChapCredentials(user, secret)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{prefix}_user", exc.message) from None


def _target_from_dict(d: Any, path: str) -> TargetSpec:
    if not isinstance(d, Mapping):
        raise ConfigError(path, "expected a table/object")
    _keys(d, path, {"url", "root_path", "host", "port", "name", "lun", "chap_user",
                    "chap_secret", "reverse_chap_user", "reverse_chap_secret", "nic",
                    "boot_selected"})
    chap = _cred(d, "chap", path)
    rev = _cred(d, "reverse_chap", path)
    url, root = _str(d, "url", path), _str(d, "root_path", path)
    try:
        if url is not None or root is not None:
            clash = [k for k in ("host", "port", "name", "lun") if k in d]
            if url is not None and root is not None:
                clash.append("root_path")
            if clash:
                raise ConfigError(f"{path}.{clash[0]}",
                                  "conflicts with url/root_path, which already give it")
            try:
                spec = parse_iscsi_url(url) if url is not None else parse_root_path(root or "")
            except UriError as exc:
                raise ConfigError(f"{path}.{'url' if url is not None else 'root_path'}",
                                  str(exc)) from None
            if chap is not None and spec.chap is not None:
                raise ConfigError(f"{path}.chap_user", "the URL already holds CHAP credentials")
            return _with(spec, chap=chap or spec.chap, reverse_chap=rev,
                         nic=_int(d, "nic", path, 0),
                         boot_selected=_bool(d, "boot_selected", path, True))
        host = _str(d, "host", path, required=True) or ""
        name = _str(d, "name", path, required=True) or ""
        return TargetSpec(
            host=host, name=name, port=_int(d, "port", path, DEFAULT_PORT),
            lun=_int(d, "lun", path, 0), chap=chap, reverse_chap=rev,
            nic=_int(d, "nic", path, 0), boot_selected=_bool(d, "boot_selected", path, True),
        )
    except ConfigError as exc:
        if exc.path.startswith(path):
            raise
        raise ConfigError(f"{path}.{exc.path}", exc.message) from None
