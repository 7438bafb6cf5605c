"""From a DHCP lease to the boot configuration (what iPXE does with a DHCP reply).

A lease (:class:`netstack.dhcp.Lease`) carries the address, gateway and DNS of the NIC,
the root path (option 17, RFC 2132 §3.19, in RFC 4173 ``iscsi:`` form or as an
``iscsi://`` URL) and iPXE's initiator IQN (option 203). :func:`nic_from_lease` makes
the :class:`~firmware_tables.config.NicConfig` with ``dhcp=True`` and the DHCP
server, so an iBFT built from it says origin DHCP (iBFT 1.03 §3.5, "Origin" = 3) and
names the DHCP server; :func:`boot_config_from_lease` makes the whole
:class:`~firmware_tables.config.BootConfig` through ``BootConfig.from_dhcp``.
"""

from __future__ import annotations

from firmware_tables.config import BootConfig, NicConfig
from firmware_tables.target import ChapCredentials
from netstack.dhcp import Lease

__all__ = ["boot_config_from_lease", "nic_from_lease"]


def nic_from_lease(lease: Lease, mac: bytes, vlan: int | None = None) -> NicConfig:
    """The NIC as configured by ``lease`` (origin DHCP, the DHCP server recorded)."""
    return NicConfig(address=lease.address, gateway=lease.gateway, dns=lease.dns, mac=mac,
                     vlan=vlan or 0, dhcp=True, dhcp_server=lease.server_id,
                     hostname=lease.hostname)


def boot_config_from_lease(lease: Lease, mac: bytes, *, vlan: int | None = None,
                           initiator_name: str | None = None,
                           chap: ChapCredentials | None = None,
                           reverse_chap: ChapCredentials | None = None) -> BootConfig:
    """The boot configuration of a lease: its NIC and the root-path target.

    ``initiator_name`` overrides option 203. Raises
    :class:`~firmware_tables.errors.ConfigError` naming ``dhcp.option17`` or
    ``dhcp.option203`` when the lease lacks them or they do not parse.
    """
    return BootConfig.from_dhcp(lease.root_path or "",
                                initiator_name or lease.initiator_name,
                                nic=nic_from_lease(lease, mac, vlan), chap=chap,
                                reverse_chap=reverse_chap)
