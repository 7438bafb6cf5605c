"""One iSCSI boot target: portal, target name, LUN and CHAP credentials.

The product's single description of "what to log in to", produced from iBFT Target
structures, ``iscsi://`` URLs, RFC 4173 root paths and configuration files. Secrets are
kept out of ``repr`` so a logged object never shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from firmware_tables.errors import ConfigError
from firmware_tables.lun import MAX_LUN

DEFAULT_PORT = 3260  # the well-known iSCSI port (RFC 7143, IANA)
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")


def canonical_host(host: str) -> str | None:
    """``host`` in canonical form (IP literals normalized, IPv4-mapped IPv6 as IPv4,
    brackets removed), or ``None`` if it is neither an IP literal nor a host name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ip_address(text)
    except ValueError:
        return text if _HOSTNAME.fullmatch(text) and not text.startswith(".") else None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True)
class ChapCredentials:
    """A CHAP name and secret (RFC 7143 section 12.1.3). ``repr`` hides the secret."""

    user: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user:
            raise ConfigError("chap.user", "a CHAP name must be a non-empty string")
        if not isinstance(self.secret, str):
            raise ConfigError("chap.secret", "a CHAP secret must be a string")


@dataclass(frozen=True)
class TargetSpec:
    """Where and how to log in.

    ``host`` is an IP literal (stored canonical, without brackets) or a DNS name; ``lun``
    uses the Linux/libiscsi integer convention of ``firmware_tables.lun``; ``chap`` is
    the initiator's credentials, ``reverse_chap`` the target's (mutual CHAP, which needs
    ``chap``); ``nic`` is the index of the NIC in the boot configuration to use.
    """

    host: str
    name: str
    port: int = DEFAULT_PORT
    lun: int = 0
    chap: ChapCredentials | None = None
    reverse_chap: ChapCredentials | None = None
    nic: int = 0
    boot_selected: bool = True

    def __post_init__(self) -> None:
        host = canonical_host(self.host) if isinstance(self.host, str) else None
        if host is None:
            raise ConfigError("host", f"not an IP address or host name: {self.host!r}")
        object.__setattr__(self, "host", host)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", "the target name must be a non-empty string")
        if type(self.port) is not int or not 1 <= self.port <= 0xFFFF:
            raise ConfigError("port", f"not a TCP port 1..65535: {self.port!r}")
        if type(self.lun) is not int or not 0 <= self.lun <= MAX_LUN:
            raise ConfigError("lun", f"not a LUN 0..2**64-1: {self.lun!r}")
        if self.reverse_chap is not None and self.chap is None:
            raise ConfigError("reverse_chap", "mutual CHAP needs the initiator's CHAP too")
        if type(self.nic) is not int or not 0 <= self.nic <= 255:
            raise ConfigError("nic", f"not a NIC index 0..255: {self.nic!r}")

    @property
    def address(self) -> IPv4Address | IPv6Address | None:
        """``host`` as an IP address, or ``None`` when it is a host name."""
        try:
            return ip_address(self.host)
        except ValueError:
            return None
