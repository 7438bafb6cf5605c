"""The link options every ``bootinit`` command takes, and opening the link they describe.

::

    parser = argparse.ArgumentParser()
    add_link_options(parser)
    args = parser.parse_args()
    try:
        opts = LinkOptions.from_args(args)
    except LinkOptionError as e:
        parser.error(str(e))
    link = open_link(opts, clock=time.monotonic)   # TAP (or stream) -> fault -> pcap

The link is a TAP whose kernel side lives in ``--netns`` (or an existing ``--tap``), or,
rootless, a passt / QEMU ``-netdev stream`` socket (``--passt`` / ``--qemu-stream``,
:mod:`netstack.link.stream`). ``--dhcp`` gets the address by DHCP instead of ``--ip``;
``--vlan ID`` tags frames with an 802.1Q VLAN ID and accepts only that VLAN.
IPv6 (off unless asked for): ``--ip6 ADDR/PREFIX`` (static, repeatable), ``--slaac``
(addresses from Router Advertisements, RFC 4862), ``--gateway6 ADDR`` (static default
router), ``--no-dad`` (skip Duplicate Address Detection), ``--ip6-iid`` (interface
identifier: eui64, stable per RFC 7217, random); see :meth:`LinkOptions.ipv6_config`.

Options are taken as plain strings by argparse and validated here, so every problem
is a :class:`LinkOptionError` naming the option and the value.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface
from pathlib import Path

from netstack import netns as nsh
from netstack.addrconf import IID_MODES, Ipv6Config
from netstack.link.base import Link, LinkError
from netstack.link.fault import FaultLink, FaultSpec, FaultSpecError
from netstack.link.pcap import PcapLink
from netstack.link.stream import StreamLink
from netstack.link.tap import MAX_MTU, MIN_MTU, TapLink

DEFAULT_MTU = 1500


class LinkOptionError(ValueError):
    """A link option has a bad value (or clashes with another); names option and value."""

    def __init__(self, option: str, value: object, problem: str) -> None:
        shown = "" if value is None else f" {value}"
        super().__init__(f"{option}{shown}: {problem}")
        self.option = option
        self.value = value
        self.problem = problem


def random_mac() -> bytes:
    """A random locally administered unicast MAC address."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


def format_mac(mac: bytes) -> str:
    """``02:00:5e:10:00:01`` form."""
    return ":".join(f"{x:02x}" for x in mac)


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}$")


def parse_mac(text: str, option: str = "--mac") -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or with ``-``) into 6 bytes; must be unicast, not zero."""
    if not _MAC_RE.match(text):
        raise LinkOptionError(option, text, "expected six hex octets like 02:00:00:00:00:01")
    mac = bytes(int(x, 16) for x in re.split(r"[:-]", text))
    if mac[0] & 1:
        raise LinkOptionError(option, text, "is a multicast address (lowest bit of the "
                              "first octet set); a unicast MAC is needed")
    if mac == bytes(6):
        raise LinkOptionError(option, text, "the all-zero address is not a valid MAC")
    return mac


def _parse_cidr(option: str, text: str) -> IPv4Interface:
    if "/" not in text:
        raise LinkOptionError(option, text, "expected ADDR/PREFIX, e.g. 10.0.0.2/24")
    try:
        iface = IPv4Interface(text)
    except ValueError as e:
        raise LinkOptionError(option, text, f"not an IPv4 ADDR/PREFIX ({e})") from None
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise LinkOptionError(option, text, f"is the network or broadcast address of {net}")
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise LinkOptionError(option, text, "is not a usable unicast host address")
    return iface


def _parse_cidr6(option: str, text: str) -> IPv6Interface:
    if "/" not in text:
        raise LinkOptionError(option, text, "expected ADDR/PREFIX, e.g. fd00::2/64")
    try:
        iface = IPv6Interface(text.replace("[", "").replace("]", ""))
    except ValueError as e:
        raise LinkOptionError(option, text, f"not an IPv6 ADDR/PREFIX ({e})") from None
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.ipv4_mapped:
        raise LinkOptionError(option, text, "is not a usable unicast IPv6 address")
    return IPv6Interface((IPv6Address(ip.packed), iface.network.prefixlen))


def _parse_addr6(option: str, text: str) -> IPv6Address:
    try:
        ip = IPv6Address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        raise LinkOptionError(option, text, "not an IPv6 address") from None
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise LinkOptionError(option, text, "is not a unicast IPv6 address")
    return ip


def _stable_secret() -> bytes:
    """RFC 7217 secret_key: derived from /etc/machine-id when there is one (stable across
    runs on this machine), else random (stable for this run only)."""
    try:
        mid = Path("/etc/machine-id").read_bytes().strip()
    except OSError:
        mid = b""
    if not mid:
        return os.urandom(32)
    return hashlib.sha256(b"bootinit RFC 7217 secret\0" + mid).digest()


def _parse_neighbor(text: str) -> tuple[IPv4Address, bytes]:
    ip_text, sep, mac_text = text.partition("=")
    if not sep:
        raise LinkOptionError("--neighbor", text, "expected IP=MAC, e.g. "
                              "10.77.0.1=02:00:00:00:00:01")
    try:
        ip = IPv4Address(ip_text.strip())
    except ValueError:
        raise LinkOptionError("--neighbor", text, "not an IPv4 address before =") from None
    if ip.is_multicast or ip.is_unspecified or ip == IPv4Address("255.255.255.255"):
        raise LinkOptionError("--neighbor", text, "is not a unicast IPv4 address")
    mac = parse_mac(mac_text.strip(), "--neighbor")
    if mac[0] & 1 or mac == bytes(6):
        raise LinkOptionError("--neighbor", text, "not a unicast MAC address")
    return ip, mac


def _check_ns_name(text: str) -> str:
    if (not text or len(text) > 64 or text in (".", "..")
            or not re.fullmatch(r"[A-Za-z0-9_.\-]+", text)):
        raise LinkOptionError("--netns", text, "not a valid namespace name "
                              "(letters, digits, '_', '-', '.'; at most 64)")
    return text


def _check_ifname(option: str, text: str) -> str:
    if not 1 <= len(text) <= 15 or text in (".", "..") or not re.fullmatch(
            r"[A-Za-z0-9_.\-]+", text):
        raise LinkOptionError(option, text, "not a valid interface name "
                              "(1..15 of letters, digits, '_', '-', '.')")
    return text


def _parse_vlan(text: str | int) -> int:
    try:
        vid = int(text)
    except (TypeError, ValueError):
        raise LinkOptionError("--vlan", text, "not an integer") from None
    if not 1 <= vid <= 4094:
        raise LinkOptionError("--vlan", text, "an 802.1Q VLAN ID is 1..4094 "
                              "(0 and 4095 are reserved)")
    return vid


def _parse_mtu(text: str | int) -> int:
    try:
        mtu = int(text)
    except (TypeError, ValueError):
        raise LinkOptionError("--mtu", text, "not an integer") from None
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise LinkOptionError("--mtu", text, f"must be in {MIN_MTU}..{MAX_MTU}")
    return mtu


@dataclass(frozen=True)
class LinkOptions:
    """Validated link options (see :func:`add_link_options` for their meaning)."""

    netns: str | None = None
    bridge: str | None = None
    peer_ip: IPv4Interface | None = None
    ip: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    mac: bytes = field(default_factory=random_mac)
    mtu: int = DEFAULT_MTU
    fault: FaultSpec | None = None
    pcap: Path | None = None
    tap: str | None = None
    #: Get our address (and, for ls/discover, the target) by DHCP.
    dhcp: bool = False
    #: 802.1Q VLAN ID (None: untagged).
    vlan: int | None = None
    #: passt socket (rootless link), or QEMU ``-netdev stream`` socket.
    passt: Path | None = None
    qemu_stream: Path | None = None
    #: Static neighbours (``--neighbor IP=MAC``, repeatable): never expire, never
    #: changed by received ARP (spoofed replies are counted, not believed).
    neighbors: tuple[tuple[IPv4Address, bytes], ...] = ()
    #: IPv6: static addresses, SLAAC, static default router, DAD, interface identifier.
    ip6: tuple[IPv6Interface, ...] = ()
    slaac: bool = False
    gateway6: IPv6Address | None = None
    dad: bool = True
    ip6_iid: str = "eui64"
    #: TAP offloads (checksum, GSO): "auto" (on when no --fault/--pcap wrapper needs to
    #: see every frame as it is on the wire, and the kernel agrees), "on", "off".
    offload: str = "auto"

    @property
    def stream(self) -> tuple[str, Path] | None:
        """``("--passt"|"--qemu-stream", path)`` when the link is a stream socket."""
        if self.passt is not None:
            return "--passt", self.passt
        if self.qemu_stream is not None:
            return "--qemu-stream", self.qemu_stream
        return None

    def __post_init__(self) -> None:
        """Cross-option checks (single values are checked while parsing)."""
        if self.passt is not None and self.qemu_stream is not None:
            raise LinkOptionError("--qemu-stream", self.qemu_stream,
                                  "cannot be combined with --passt (one link)")
        stream = self.stream
        if stream is not None:
            for opt, val in (("--netns", self.netns), ("--tap", self.tap),
                             ("--bridge", self.bridge), ("--peer-ip", self.peer_ip)):
                if val is not None:
                    raise LinkOptionError(opt, val, f"is for a TAP link; {stream[0]} "
                                          f"{stream[1]} is a socket link")
        if self.dhcp and self.ip is not None:
            raise LinkOptionError("--dhcp", None, f"cannot be combined with --ip {self.ip} "
                                  "(the address comes from DHCP)")
        if self.dhcp and self.gateway is not None:
            raise LinkOptionError("--gateway", self.gateway, "comes from DHCP with --dhcp")
        if self.vlan is not None:
            _parse_vlan(self.vlan)
        if self.offload not in ("auto", "on", "off"):
            raise LinkOptionError("--offload", self.offload, "must be auto, on or off")
        if self.offload == "on" and (self.fault is not None or self.pcap is not None):
            raise LinkOptionError("--offload", "on", "cannot be combined with --fault or "
                                  "--pcap (they must see every frame as it is on the wire)")
        if self.offload == "on" and (self.tap is not None or self.stream is not None):
            raise LinkOptionError("--offload", "on", "needs a TAP that bootinit creates")
        if stream is None and self.netns is None and self.tap is None:
            raise LinkOptionError("--netns", None, "required: the TAP's kernel side must "
                                  "live in a namespace (or give --tap NAME to attach to an "
                                  "existing TAP, or --passt SOCKET for a rootless link)")
        if self.bridge is not None and self.netns is None:
            raise LinkOptionError("--bridge", self.bridge, "needs --netns (the namespace "
                                  "the bridge lives in)")
        if self.peer_ip is not None and self.netns is None:
            raise LinkOptionError("--peer-ip", self.peer_ip, "needs --netns (addresses are "
                                  "only added inside a namespace)")
        if self.bridge is not None and self.peer_ip is not None:
            raise LinkOptionError("--peer-ip", self.peer_ip, f"cannot be combined with "
                                  f"--bridge {self.bridge} (the peer address belongs on "
                                  f"the bridge)")
        if self.gateway is not None:
            if self.ip is None:
                raise LinkOptionError("--gateway", self.gateway, "needs --ip")
            if self.gateway not in self.ip.network:
                raise LinkOptionError("--gateway", self.gateway,
                                      f"is not inside our network {self.ip.network}")
            if self.gateway == self.ip.ip:
                raise LinkOptionError("--gateway", self.gateway, "is our own address (--ip)")
        if self.gateway6 is not None:
            if not self.ip6 and not self.slaac:
                raise LinkOptionError("--gateway6", self.gateway6, "needs --ip6 or --slaac")
            if not self.gateway6.is_link_local and self.ip6 and not any(
                    self.gateway6 in a.network for a in self.ip6):
                raise LinkOptionError("--gateway6", self.gateway6, "is neither link-local "
                                      "nor inside an --ip6 network ("
                                      + ", ".join(str(a.network) for a in self.ip6) + ")")
            if any(self.gateway6 == a.ip for a in self.ip6):
                raise LinkOptionError("--gateway6", self.gateway6, "is our own address "
                                      "(--ip6)")
        if self.ip6_iid not in IID_MODES:
            raise LinkOptionError("--ip6-iid", self.ip6_iid,
                                  f"must be one of {', '.join(IID_MODES)}")
        if (not self.dad or self.ip6_iid != "eui64") and not self.ip6 and not self.slaac:
            raise LinkOptionError("--no-dad" if not self.dad else "--ip6-iid", None,
                                  "is for IPv6: give --ip6 ADDR/PREFIX or --slaac")
        if self.ip is not None and self.peer_ip is not None and self.ip.ip == self.peer_ip.ip:
            raise LinkOptionError("--peer-ip", self.peer_ip, "is the same address as --ip")
        if len(self.mac) != 6 or self.mac[0] & 1 or self.mac == bytes(6):
            raise LinkOptionError("--mac", format_mac(self.mac), "not a unicast MAC address")
        _parse_mtu(self.mtu)

    @property
    def network(self) -> IPv4Network | None:
        """Our network (from ``--ip``)."""
        return None if self.ip is None else self.ip.network

    @property
    def ipv6(self) -> bool:
        """Whether IPv6 was asked for (``--ip6`` or ``--slaac``)."""
        return bool(self.ip6) or self.slaac

    def ipv6_config(self, *, dad_delay: float = 0.2, rs_delay: float = 0.2
                    ) -> Ipv6Config | None:
        """The stack's IPv6 configuration, or None without ``--ip6``/``--slaac``.

        An interactive command shortens the random delays before the first DAD probe
        and router solicitation (RFC 4862 §5.4.2 and RFC 4861 §6.3.7 say up to 1 s, to
        spread many hosts that start together) to ``dad_delay``/``rs_delay``.
        """
        if not self.ipv6:
            return None
        return Ipv6Config(addresses=self.ip6, gateway=self.gateway6, slaac=self.slaac,
                          iid=self.ip6_iid, dad=self.dad, dad_delay=dad_delay,
                          rs_delay=rs_delay,
                          secret=_stable_secret() if self.ip6_iid == "stable" else b"")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LinkOptions:
        """Validate the raw strings that :func:`add_link_options` put into ``args``."""
        netns = None if args.netns is None else _check_ns_name(args.netns)
        bridge = None if args.bridge is None else _check_ifname("--bridge", args.bridge)
        tap = None if args.tap is None else _check_ifname("--tap", args.tap)
        peer_ip = None if args.peer_ip is None else _parse_cidr("--peer-ip", args.peer_ip)
        ip = None if args.ip is None else _parse_cidr("--ip", args.ip)
        gateway = None
        if args.gateway is not None:
            try:
                gateway = IPv4Address(args.gateway)
            except ValueError:
                raise LinkOptionError("--gateway", args.gateway,
                                      "not an IPv4 address") from None
        mac = random_mac() if args.mac is None else parse_mac(args.mac)
        mtu = DEFAULT_MTU if args.mtu is None else _parse_mtu(args.mtu)
        fault = None
        if args.fault is not None:
            try:
                fault = FaultSpec.parse(args.fault)
            except FaultSpecError as e:
                raise LinkOptionError("--fault", args.fault, str(e)) from None
        pcap = None
        if args.pcap is not None:
            pcap = Path(args.pcap)
            if pcap.is_dir() or not str(args.pcap):
                raise LinkOptionError("--pcap", args.pcap, "is a directory, not a file name")
            if not pcap.parent.is_dir():
                raise LinkOptionError("--pcap", args.pcap,
                                      f"directory {pcap.parent} does not exist")
        vlan = None if getattr(args, "vlan", None) is None else _parse_vlan(args.vlan)
        streams: dict[str, Path | None] = {}
        for opt, attr in (("--passt", "passt"), ("--qemu-stream", "qemu_stream")):
            val = getattr(args, attr, None)
            streams[attr] = None
            if val is not None:
                if not str(val):
                    raise LinkOptionError(opt, val, "empty socket path")
                streams[attr] = Path(val)
        ip6 = tuple(_parse_cidr6("--ip6", t) for t in (getattr(args, "ip6", None) or ()))
        gw6 = getattr(args, "gateway6", None)
        gateway6 = None if gw6 is None else _parse_addr6("--gateway6", gw6)
        iid = getattr(args, "ip6_iid", None) or "eui64"
        neighbors = tuple(_parse_neighbor(t) for t in (getattr(args, "neighbor", None) or ()))
        offload = getattr(args, "offload", None) or "auto"
        return cls(netns=netns, bridge=bridge, peer_ip=peer_ip, ip=ip, gateway=gateway,
                   mac=mac, mtu=mtu, fault=fault, pcap=pcap, tap=tap,
                   dhcp=bool(getattr(args, "dhcp", False)), vlan=vlan,
                   passt=streams["passt"], qemu_stream=streams["qemu_stream"],
                   neighbors=neighbors,
                   offload=offload, ip6=ip6, slaac=bool(getattr(args, "slaac", False)),
                   gateway6=gateway6, dad=not getattr(args, "no_dad", False),
                   ip6_iid=iid)

    def to_argv(self) -> list[str]:
        """The command-line arguments that give these options back."""
        argv: list[str] = []
        for opt, val in (("--netns", self.netns), ("--bridge", self.bridge),
                         ("--peer-ip", self.peer_ip), ("--ip", self.ip),
                         ("--gateway", self.gateway), ("--tap", self.tap),
                         ("--pcap", self.pcap), ("--vlan", self.vlan),
                         ("--passt", self.passt), ("--qemu-stream", self.qemu_stream)):
            if val is not None:
                argv += [opt, str(val)]
        if self.dhcp:
            argv.append("--dhcp")
        for a in self.ip6:
            argv += ["--ip6", str(a)]
        if self.slaac:
            argv.append("--slaac")
        if self.gateway6 is not None:
            argv += ["--gateway6", str(self.gateway6)]
        if not self.dad:
            argv.append("--no-dad")
        if self.ip6_iid != "eui64":
            argv += ["--ip6-iid", self.ip6_iid]
        if self.offload != "auto":
            argv += ["--offload", self.offload]
        argv += ["--mac", format_mac(self.mac), "--mtu", str(self.mtu)]
        if self.fault is not None:
            argv += ["--fault", str(self.fault)]
        for nip, nmac in self.neighbors:
            argv += ["--neighbor", f"{nip}={format_mac(nmac)}"]
        return argv


def add_link_options(parser: argparse.ArgumentParser) -> None:
    """Add the link options (as an argument group named "link") to ``parser``."""
    g = parser.add_argument_group("link", "where frames go: a TAP device and its wrappers")
    g.add_argument("--netns", metavar="NS",
                   help="existing network namespace to put the TAP's kernel side in")
    g.add_argument("--bridge", metavar="BR",
                   help="bridge inside NS to enslave the TAP's kernel side to")
    g.add_argument("--peer-ip", metavar="ADDR/PREFIX",
                   help="address for the TAP's kernel side (inside NS)")
    g.add_argument("--ip", metavar="ADDR/PREFIX", help="our own address")
    g.add_argument("--gateway", metavar="ADDR", help="our default gateway")
    g.add_argument("--mac", metavar="MAC",
                   help="our MAC (default: random locally administered unicast)")
    g.add_argument("--mtu", metavar="N", help=f"link MTU, {MIN_MTU}..{MAX_MTU} "
                   f"(default {DEFAULT_MTU})")
    g.add_argument("--fault", metavar="SPEC", help="inject faults, e.g. "
                   "loss=0.05,reorder=0.02,dup=0.01,corrupt=0.001,delay_ms=5,seed=7")
    g.add_argument("--pcap", metavar="FILE", help="capture all frames to this pcap file")
    g.add_argument("--tap", metavar="NAME",
                   help="attach to this existing TAP device instead of creating one")
    g.add_argument("--neighbor", metavar="IP=MAC", action="append",
                   help="static ARP entry (repeatable): never expires, never changed by "
                        "received ARP, so spoofed replies cannot redirect traffic")
    g.add_argument("--offload", metavar="auto|on|off",
                   help="TAP checksum/GSO offloads (default auto: on unless --fault or "
                        "--pcap must see every frame as sent)")
    g.add_argument("--dhcp", action="store_true",
                   help="get our address by DHCP (and, for ls/discover without a target, "
                        "the target from the root path, option 17, and the initiator "
                        "name from option 203)")
    g.add_argument("--ip6", metavar="ADDR/PREFIX", action="append",
                   help="our own IPv6 address (repeatable; its prefix is on-link)")
    g.add_argument("--slaac", action="store_true",
                   help="IPv6 addresses from Router Advertisements (RFC 4862 SLAAC; "
                        "the advertising router becomes the default router)")
    g.add_argument("--gateway6", metavar="ADDR",
                   help="our IPv6 default router (link-local or inside an --ip6 network)")
    g.add_argument("--no-dad", action="store_true",
                   help="skip IPv6 Duplicate Address Detection (RFC 4862 §5.4)")
    g.add_argument("--ip6-iid", metavar="|".join(IID_MODES),
                   help="IPv6 interface identifier: eui64 (from the MAC, default), "
                        "stable (RFC 7217), random")
    g.add_argument("--vlan", metavar="ID", help="802.1Q VLAN ID to tag frames with and "
                   "accept (1..4094)")
    g.add_argument("--passt", metavar="SOCKET", help="rootless link: connect to passt's "
                   "UNIX socket (passt -s SOCKET) instead of a TAP")
    g.add_argument("--qemu-stream", metavar="SOCKET", help="rootless link: a QEMU "
                   "-netdev stream UNIX socket (same framing as passt)")


def open_link(opts: LinkOptions,
              clock: Callable[[], float] = time.monotonic) -> Link:
    """Open the TAP described by ``opts`` and wrap it: TAP -> fault -> pcap.

    Raises :class:`LinkOptionError` for options that name missing things (namespace,
    bridge) and :class:`~netstack.link.base.LinkError` when the TAP cannot be set up.
    """
    stream = opts.stream
    if stream is not None:
        opt, path = stream
        if not path.exists():
            raise LinkOptionError(opt, path, "no such socket")
        link: Link = StreamLink(path, mtu=opts.mtu, label=opt.lstrip("-"), clock=clock)
        return _wrap(link, opts, clock)
    if opts.netns is not None and not nsh.exists(opts.netns):
        raise LinkOptionError("--netns", opts.netns, "no such namespace")
    if opts.bridge is not None:
        assert opts.netns is not None
        if not nsh.link_exists(opts.bridge, opts.netns):
            raise LinkOptionError("--bridge", opts.bridge,
                                  f"no such interface in namespace {opts.netns}")
    want = opts.offload == "on" or (
        opts.offload == "auto" and opts.tap is None and opts.fault is None
        and opts.pcap is None)  # wrappers must see frames as they are on the wire
    if want:
        try:
            link = TapLink(mtu=opts.mtu, netns=opts.netns, peer_ip=opts.peer_ip,
                           bridge=opts.bridge, tap=opts.tap, offload=True)
            return link
        except LinkError:
            if opts.offload == "on":
                raise
    link = TapLink(mtu=opts.mtu, netns=opts.netns, peer_ip=opts.peer_ip,
                   bridge=opts.bridge, tap=opts.tap)
    return _wrap(link, opts, clock)


def _wrap(link: Link, opts: LinkOptions, clock: Callable[[], float]) -> Link:
    """The fault and pcap wrappers the options ask for (the link is closed on errors)."""
    try:
        if opts.fault is not None:
            link = FaultLink(link, spec=opts.fault, clock=clock)
        if opts.pcap is not None:
            link = PcapLink(link, opts.pcap)
    except BaseException:
        link.close()
        raise
    return link


__all__ = [
    "DEFAULT_MTU", "LinkError", "LinkOptionError", "LinkOptions", "add_link_options",
    "format_mac", "open_link", "parse_mac", "random_mac",
]
