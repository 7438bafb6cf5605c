"""The test topology: a fresh namespace holding the kernel side of our TAP, and peers.

::

    with topology(mtu=9000) as topo:            # namespace + TAP (+ bridge) + addresses
        srv = topo.start(["tgtd", "-f"])        # a peer process inside the namespace
        topo.wait_listening(3260, proc=srv)     # polls `ss -ltn` inside it
        link = topo.link                        # our side (TapLink, maybe fault/pcap)
        ...
    # processes stopped (by PID), link closed, namespace deleted -- also on errors

Layout: namespace ``NS`` (unique name, loopback up, IPv6 off unless ``ipv6=True`` so
the kernel does not chatter router solicitations), the TAP's kernel side in it with
``peer_ip``, or enslaved to bridge ``br0`` that has ``peer_ip``. ``peer_ip6`` (implies
``ipv6=True``) adds an IPv6 address there too, without DAD (``nodad``: usable at once,
e.g. for tgtd to bind). Our address
``our_ip`` is only a convention for the code on our side of the TAP; nothing is ever
configured in the root namespace.

With ``open_tap=False`` no TAP is made: another process (e.g. ``bootinit``) creates its
own with :meth:`Topology.link_options` / :meth:`Topology.link_argv`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path

from netstack import netns as nsh
from netstack.link.base import Link
from netstack.link.fault import FaultLink, FaultSpec
from netstack.link.pcap import PcapLink
from netstack.link.tap import TapLink, check_mtu
from netstack.linkopts import LinkOptions, format_mac, random_mac

BRIDGE_NAME = "br0"


class HarnessError(Exception):
    """The topology could not be built, or a wait in it failed; the message says why."""


def environment_problem() -> str | None:
    """Why namespaces + TAPs cannot be used here, or None when they can.

    Checks root, ``/dev/net/tun``, the ``ip`` and ``ss`` tools, and that a namespace can
    really be created and deleted.
    """
    if os.geteuid() != 0:
        return "needs root (network namespaces and TAP devices)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} tool (iproute2)"
    try:
        with nsh.namespace("bichk"):
            pass
    except nsh.NetnsError as e:
        return f"cannot create a network namespace: {e}"
    return None


@dataclass
class Topology:
    """A built topology; see :func:`topology`."""

    netns: str
    peer_ip: IPv4Interface
    our_ip: IPv4Interface
    our_mac: bytes
    mtu: int
    bridge: str | None
    #: The kernel-side interface that holds ``peer_ip`` (the TAP, or the bridge).
    peer_dev: str | None
    #: The kernel side's IPv6 address (``topology(peer_ip6=...)``), or None.
    peer_ip6: IPv6Interface | None = None
    #: Our side: the TAP wrapped in FaultLink / PcapLink as asked (None: open_tap=False).
    link: Link | None = None
    #: The bare TAP under the wrappers.
    tap: TapLink | None = None
    procs: list[nsh.NetnsProcess] = field(default_factory=list)

    @property
    def peer_addr(self) -> IPv4Address:
        """The peer's address without prefix."""
        return self.peer_ip.ip

    def run(self, cmd: Sequence[str], check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return nsh.run(cmd, netns=self.netns, check=check, timeout=timeout)

    def start(self, argv: Sequence[str], *, stdout: int | None = subprocess.DEVNULL,
              stderr: int | None = subprocess.DEVNULL, stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None) -> nsh.NetnsProcess:
        """Start a peer process inside the namespace; it is stopped (by PID) on exit."""
        proc = nsh.NetnsProcess(self.netns, argv, stdout=stdout, stderr=stderr, stdin=stdin,
                                env=env)
        self.procs.append(proc)
        return proc

    def wait_listening(self, port: int, timeout: float = 10.0, *,
                       proc: nsh.NetnsProcess, addr: str | None = None,
                       interval: float = 0.05) -> None:
        """Wait until a TCP socket listens on ``port`` (and ``addr`` if given) inside the
        namespace, opened by ``proc`` (:meth:`start`): the wait between looks is on its
        exit. Raises :class:`HarnessError` at the deadline, or at once if ``proc``
        exited."""
        found: set[tuple[str, int]] = set()

        def listens() -> bool:
            nonlocal found
            found = nsh.listening_ports(self.netns)
            return nsh.listens_on(found, port, addr)

        got = nsh.poll_until(listens, proc.pid, timeout, interval)
        if got == "exited":
            raise HarnessError(f"{' '.join(proc.argv)} exited with status "
                               f"{proc.proc.poll()} before listening on port {port}")
        if got == "timeout":
            where = f"{addr}:{port}" if addr else f"port {port}"
            raise HarnessError(f"nothing listens on {where} in namespace {self.netns} "
                               f"after {timeout:g} s (listening: {sorted(found)})")

    def peer_mac(self) -> bytes:
        """MAC address of the kernel-side interface that holds ``peer_ip``."""
        if self.peer_dev is None:
            raise HarnessError("no peer interface yet (open_tap=False and no bridge)")
        cp = self.run(["ip", "-j", "link", "show", "dev", self.peer_dev])
        try:
            text = json.loads(cp.stdout)[0]["address"]
        except (ValueError, LookupError, TypeError) as e:
            raise HarnessError(f"cannot read the MAC of {self.peer_dev}: {e}") from e
        return bytes(int(x, 16) for x in str(text).split(":"))

    def add_neighbor(self, ip: IPv4Address | str | None = None,
                     mac: bytes | None = None) -> None:
        """Add a permanent ARP entry in the namespace (default: our address and MAC)."""
        if self.peer_dev is None:
            raise HarnessError("no peer interface to add a neighbour on")
        self.run(["ip", "neigh", "replace", str(ip or self.our_ip.ip), "lladdr",
                  format_mac(mac or self.our_mac), "dev", self.peer_dev, "nud", "permanent"])

    def link_options(self, **overrides: object) -> LinkOptions:
        """LinkOptions for a process that makes its own TAP in this topology."""
        kw: dict[str, object] = {
            "netns": self.netns, "ip": self.our_ip, "mac": self.our_mac, "mtu": self.mtu,
        }
        if self.bridge is not None:
            kw["bridge"] = self.bridge
        else:
            kw["peer_ip"] = self.peer_ip
        kw.update(overrides)
        return LinkOptions(**kw)  # type: ignore[arg-type]

    def link_argv(self, **overrides: object) -> list[str]:
        """:meth:`link_options` as command-line arguments."""
        return self.link_options(**overrides).to_argv()


@contextlib.contextmanager
def topology(*, mtu: int = 1500, peer_ip: str = "10.77.0.1/24",
             our_ip: str = "10.77.0.2/24", bridge: bool = False, open_tap: bool = True,
             ipv6: bool = False, peer_ip6: str | None = None,
             fault: FaultSpec | str | None = None,
             pcap: str | os.PathLike[str] | None = None, our_mac: bytes | None = None,
             clock: Callable[[], float] = time.monotonic,
             prefix: str = "bi") -> Iterator[Topology]:
    """Build a fresh topology; tear everything down on exit, also on exceptions.

    ``bridge=True`` puts ``peer_ip`` on a bridge ``br0`` in the namespace and enslaves
    the TAP to it; otherwise ``peer_ip`` goes directly on the TAP's kernel side.
    ``bridge=True, open_tap=False`` is the layout for a separate process that
    attaches its own TAP with ``--netns NS --bridge br0``. ``fault``/``pcap`` wrap
    the link like ``--fault``/``--pcap`` do.
    """
    check_mtu(mtu)
    peer, ours = IPv4Interface(peer_ip), IPv4Interface(our_ip)
    if peer.network != ours.network or peer.ip == ours.ip:
        raise HarnessError(f"peer {peer} and our address {ours} must be two different "
                           "addresses of one network")
    with contextlib.ExitStack() as stack:
        try:
            ns = stack.enter_context(nsh.namespace(prefix))
        except nsh.NetnsError as e:
            raise HarnessError(f"cannot create the namespace: {e}") from e
        topo = Topology(netns=ns, peer_ip=peer, our_ip=ours, our_mac=our_mac or random_mac(),
                        mtu=mtu, bridge=BRIDGE_NAME if bridge else None, peer_dev=None,
                        peer_ip6=None if peer_ip6 is None else IPv6Interface(peer_ip6))

        def stop_procs() -> None:
            for p in reversed(topo.procs):
                with contextlib.suppress(Exception):
                    p.stop()

        def close_link() -> None:
            if topo.link is not None:
                topo.link.close()
            elif topo.tap is not None:
                topo.tap.close()

        # ExitStack unwinds in reverse: processes stop, link closes, namespace goes.
        stack.callback(close_link)
        stack.callback(stop_procs)
        try:
            if not ipv6 and peer_ip6 is None:
                topo.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                          "net.ipv6.conf.default.disable_ipv6=1"])
            if bridge:
                nsh.add_bridge(ns, BRIDGE_NAME)
                nsh.set_mtu(BRIDGE_NAME, mtu, ns)
                nsh.add_address(ns, BRIDGE_NAME, str(peer))
                topo.peer_dev = BRIDGE_NAME
            if open_tap:
                tap = TapLink(mtu=mtu, netns=ns, peer_ip=None if bridge else peer,
                              bridge=BRIDGE_NAME if bridge else None)
                topo.tap = tap
                link: Link = tap
                if fault is not None:
                    link = FaultLink(link, spec=fault, clock=clock)
                if pcap is not None:
                    link = PcapLink(link, Path(pcap))
                topo.link = link
                if not bridge:
                    topo.peer_dev = tap.name
            if topo.peer_ip6 is not None and topo.peer_dev is not None:
                topo.run(["ip", "-6", "addr", "add", str(topo.peer_ip6), "dev",
                          topo.peer_dev, "nodad"])
        except nsh.NetnsError as e:
            raise HarnessError(f"cannot build the topology in {ns}: {e}") from e
        yield topo
