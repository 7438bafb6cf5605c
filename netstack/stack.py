"""The glue: one link, one interface (Ethernet/ARP/IPv4/ICMP), TCP, driven by the loop.

This is the only place where the pure cores meet the loop. Per loop iteration:

1. the link's fd is readable: every waiting frame is read (until the link says none)
   and handed to :meth:`Interface.receive_frame` — one batch;
2. deadlines of the interface (ARP, reassembly, TCP timers) fire when due;
3. at the end of the iteration (an idle callback) the connections that have news are
   called back, then every frame the batch produced is written out — so a batch of
   received segments is acknowledged once, and sends made by callbacks are coalesced.

:class:`Stream` is a small synchronous API over a connection (``sendall``,
``recv_exact``), which just runs the loop until the work is done, the way libiscsi's
synchronous calls wrap its asynchronous ones.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from netstack.addrconf import Ipv6Config
from netstack.counters import Counters
from netstack.dhcp import DhcpClient, DhcpConfig, DhcpEvent, InterfaceDhcp, Lease
from netstack.ethernet import ETH_HLEN
from netstack.interface import UNCONFIGURED, Interface, InterfaceConfig
from netstack.link.base import GsoFrame, Link, OutFrame
from netstack.link.gso import VNET_HLEN
from netstack.link.tap import GSO_FRAME_MAX, TapLink
from netstack.loop import Loop, LoopTimeout
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpError
from netstack.tcp.layer import TcpLayer
from netstack.tcp.placement import Continuation

#: Most frames (and bytes) handled per wake-up before output is flushed: one ACK per
#: batch, and a batch small enough that the sender never waits for it (ACK clocking):
#: the byte budget is also at most half the receive window (``TcpConfig.rcvbuf``), so
#: the peer can always send the other half while we work. With GSO frames (64 KiB) a
#: larger budget means fewer wake-ups and ACKs per MiB, for us and for the sender
#: (measured on a loaded 2-CPU machine: 512 KiB -> 2 MiB took ~15% off our CPU per
#: MiB of iSCSI read, and off the target's).
MAX_BATCH = 64
MAX_BATCH_BYTES = 2 * 1024 * 1024
#: Smallest placement target worth a scattered read: below it the frame is read whole
#: (the copy saved would be small, and the payload past the target is copied out of the
#: spill buffer).
PLACE_MIN = 8192


@dataclass(slots=True)
class StackConfig:
    """What the stack needs besides the link."""

    mac: bytes
    #: Our address; ``UNCONFIGURED`` (0.0.0.0) until DHCP gives one (``dhcp``).
    ip: ipaddress.IPv4Interface = UNCONFIGURED
    gateway: ipaddress.IPv4Address | None = None
    tcp: TcpConfig | None = None
    #: Get the address by DHCP (RFC 2131): True for the defaults, or a DhcpConfig.
    dhcp: DhcpConfig | bool = False
    #: 802.1Q VLAN ID to tag with and accept (the IP MTU shrinks by the 4-byte tag).
    vlan: int | None = None
    #: Seed of the DHCP client's randomness (xid, jitter); None: from the OS.
    seed: int | None = None
    #: Static neighbours (IPv4 address -> MAC): never expire, never changed by received
    #: ARP (a spoofed reply is counted as ``arp.static_conflicts`` and ignored).
    neighbors: dict[ipaddress.IPv4Address, bytes] = field(default_factory=dict)
    #: IPv6 (static addresses, SLAAC, default router; ND and DAD): None = IPv4 only.
    ipv6: Ipv6Config | None = None


class NetStack:
    """A running TCP/IP stack on one link inside one loop."""

    def __init__(self, loop: Loop, link: Link, config: StackConfig,
                 counters: Counters | None = None) -> None:
        self.loop = loop
        self.link = link
        self.config = config
        self.counters = counters if counters is not None else Counters()
        if config.vlan is not None and not 1 <= config.vlan <= 4094:
            raise ValueError(f"VLAN ID {config.vlan}: must be 1..4094 (802.1Q)")
        mtu = link.mtu - (4 if config.vlan is not None else 0)
        self.iface = Interface(InterfaceConfig(mac=config.mac, ip=config.ip,
                                               gateway=config.gateway, mtu=mtu,
                                               vlan=config.vlan,
                                               static_neighbours=dict(config.neighbors),
                                               ipv6=config.ipv6),
                               counters=self.counters,
                               rng=None if config.seed is None else random.Random(config.seed))
        self.tcp = TcpLayer(config.ip.ip.packed, mss=mtu - 40,
                            counters=self.counters)
        self.iface.attach_tcp(self.tcp)
        self.dhcp: InterfaceDhcp | None = None
        if config.dhcp is not False:
            dcfg = config.dhcp if isinstance(config.dhcp, DhcpConfig) else DhcpConfig()
            client = DhcpClient(config.mac, dcfg, random.Random(config.seed),
                                self.counters.layer("dhcp"))
            self.dhcp = InterfaceDhcp(self.iface, client)
        self.tcp_config = config.tcp or TcpConfig()
        self._batch_bytes = max(1, min(MAX_BATCH_BYTES, self.tcp_config.rcvbuf // 2))
        self._started = False
        self._closed = False
        # header buffers of _recv_placed by size, with a view of each past the vnet header
        self._heads: dict[int, tuple[bytearray, memoryview]] = {}
        self._gap = memoryview(bytearray(64))  # a continuation's header (_recv_placed)
        self._c_tcp = self.counters.layer("tcp")

    # ----------------------------------------------------------------- life
    def start(self) -> None:
        """Register with the loop and announce ourselves (gratuitous ARP)."""
        if self._started:
            return
        self._started = True
        # A bare TAP with offloads: checksums the kernel vouches for are not verified
        # again, and TCP leaves the checksums of what it sends to the kernel; when the
        # kernel took TSO too, TCP sends super-segments the kernel cuts (never through a
        # fault or pcap wrapper: they must see every frame as it is on the wire; not
        # with an 802.1Q tag: untested, no kernel here has 8021q or VLAN filtering).
        self._offload: TapLink | None = None
        self._tso: TapLink | None = None
        # A bare TAP without offloads reads and delivers a batch in one call.
        self._tap: TapLink | None = None
        if isinstance(self.link, TapLink) and not self.link.offload:
            self._tap = self.link
        #: A link that writes a list of frames at once (TapLink.send_frames).
        self._send_frames: Callable[[list[bytes]], None] | None = getattr(
            self.link, "send_frames", None)
        if isinstance(self.link, TapLink) and self.link.offload:
            self._offload = self.link
            self.link.tx_csum_partial = True
            self.tcp.tx_csum_partial = True
            if self.link.gso_max_size and self.config.vlan is None:
                self._tso = self.link
                self.tcp.tso_max = self.link.gso_max_size
        self.loop.add_link(self.link, self._on_readable)
        self.loop.add_deadline_source(self)
        self.loop.add_idle(self._flush)
        self.iface.start(self.loop.time())
        if self.dhcp is not None:
            self.loop.add_deadline_source(self.dhcp)
            self.dhcp.start(self.loop.time())
        self._flush()

    def close(self, grace: float = 1.0) -> None:
        """Give closing connections up to ``grace`` seconds to finish their FIN exchange,
        abort the rest (RST), leave the loop (the link stays open)."""
        if self._closed or not self._started:
            return
        closing = ("FIN_WAIT_1", "CLOSING", "LAST_ACK")
        with contextlib.suppress(LoopTimeout):
            self.loop.run_until(
                lambda: not any(c.state.name in closing for c in self.tcp.connections()),
                grace, "closing connections")
        now = self.loop.time()
        for conn in self.tcp.connections():
            if not conn.closed:
                conn.abort(now)
        self._flush()
        self.loop.remove_idle(self._flush)
        self.loop.remove_deadline_source(self)
        if self.dhcp is not None:
            self.dhcp.stop()
            self.loop.remove_deadline_source(self.dhcp)
        self.loop.remove_link(self.link)
        self._closed = True

    def __enter__(self) -> NetStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- driving
    def _on_readable(self) -> None:
        link = self.link
        iface = self.iface
        now = self.loop.time()
        budget = self._batch_bytes
        if self._offload is not None:
            recv_offload = self._offload.recv_offload
            tcp = self.tcp
            placing = self.config.vlan is None  # the scattered read expects no tag
            for _ in range(MAX_BATCH):
                conn = tcp.placing
                if conn is not None and placing:
                    # Direct placement (netstack.tcp.placement): let the consumer parse
                    # what came so far and name where the next payload goes, then read
                    # the frame straight there.
                    dest = conn.placement_target()
                    then = conn.place_then
                    if then is None and (dest is None or len(dest) < GSO_FRAME_MAX) and \
                            conn.placement_refill is not None and conn.available():
                        # the frame may run past the window (or there is none): the
                        # consumer's parse of what came tells where, and what follows
                        conn.placement_refill()
                        dest = conn.placement_target()
                        then = conn.place_then
                    if dest is not None and (then is not None or len(dest) >= PLACE_MIN):
                        n = self._recv_placed(self._offload, conn, dest, then, now)
                        if n is None:
                            break
                        budget -= n
                        if budget <= 0:
                            break
                        continue
                got = recv_offload()
                if got is None:
                    break
                iface.receive_frame(got[0], now, got[1])
                budget -= len(got[0])
                if budget <= 0:
                    break
            return
        if self._tap is not None:
            self._tap.recv_batch(iface.receive_frame, now, MAX_BATCH, budget)
            return
        for _ in range(MAX_BATCH):
            frame = link.recv()
            if frame is None:
                break
            iface.receive_frame(frame, now)
            budget -= len(frame)
            if budget <= 0:
                break

    def _head_buffers(self, conn: TcpConnection) -> tuple[bytearray, memoryview]:
        """The buffer a placed frame's headers are read into (virtio_net_hdr, Ethernet,
        IPv4, TCP with ``conn``'s options), and a view of it past the virtio_net_hdr."""
        hlen = VNET_HLEN + ETH_HLEN + 20 + (32 if conn.ts_ok else 20)
        bufs = self._heads.get(hlen)
        if bufs is None:
            head = bytearray(hlen)
            bufs = self._heads[hlen] = (head, memoryview(head)[VNET_HLEN:])
        return bufs

    def _recv_placed(self, link: TapLink, conn: TcpConnection, dest: memoryview,
                     then: Continuation | None, now: float) -> int | None:
        """Read one frame for direct placement into ``dest`` (the frame's length, or
        None when none was waiting): the predicted segment of ``conn`` is taken with its
        payload where it belongs; anything else is joined and takes the ordinary path
        (counted as ``tcp.placement_missed`` when payload had gone to ``dest``). With
        the connection's continuation ``then``, a frame that runs past the window has
        its next ``then.gap`` bytes (the predicted header) read apart and what follows
        into ``then.buf``, taken only when the connection (and ``then.accept``) agree."""
        head, hdr = self._head_buffers(conn)
        gap: memoryview | None = None
        then_n = 0
        if then is None:
            got = link.recv_placed(head, dest)
            if got is None:
                return None
            n, trusted, placed, tail = got
        else:
            if then.gap > len(self._gap):
                self._gap = memoryview(bytearray(then.gap))
            split = link.recv_split(head, dest, self._gap[:then.gap], then.buf)
            if split is None:
                return None
            n, trusted, placed, g, then_n, tail = split
            if len(g):
                gap = g
        if (placed or gap is not None) and trusted and self.iface.receive_placed(
                hdr, n, placed, tail, now, gap, then_n):
            return n
        if placed or gap is not None:
            self._c_tcp["placement_missed"] += 1
        frame = b"".join((hdr[:n], dest[:placed], gap or b"",
                          then.buf[:then_n] if then is not None else b"", tail))
        self.iface.receive_frame(frame, now, trusted)
        return n

    def next_deadline(self) -> float | None:
        """For the loop: the interface's earliest deadline (ARP, IP, TCP)."""
        return self.iface.next_deadline()

    def on_deadline(self, now: float) -> None:
        """For the loop: fire due timers."""
        self.iface.on_deadline(now)

    def _flush(self) -> None:
        tcp = self.tcp
        for _ in range(64):
            notified = tcp.take_notified()
            for conn in notified:
                cb = conn.callback
                if cb is not None:
                    cb(conn)
            frames = self.iface.frames_to_send(self.loop.time())
            tso = self._tso
            if tso is None:
                if self._send_frames is not None:
                    self._send_frames(frames)  # type: ignore[arg-type]  # no TSO: no GsoFrame
                else:
                    send = self.link.send
                    for f in frames:
                        send(f)  # type: ignore[arg-type]  # no TSO: no GsoFrame
            else:
                self._send_tso(tso, frames)
            if not tcp.pending():
                # (sending made no news and queued nothing: no pass more to find none)
                break

    def _send_tso(self, tso: TapLink, frames: list[OutFrame]) -> None:
        """Frames for a TAP that takes super-frames; if the kernel refused one (the link
        turned TSO off and segmented it), TCP stops making them."""
        send, send_gso = tso.send, tso.send_gso
        for f in frames:
            if isinstance(f, GsoFrame):
                send_gso(f.data, f.gso_size, f.partial)
            else:
                send(f)
        if not tso.gso_max_size:
            self.tcp.tso_max = 0
            self._tso = None

    # ------------------------------------------------------------------ API
    @property
    def lease(self) -> Lease | None:
        """The DHCP lease in use (None without DHCP or before the first)."""
        return self.dhcp.lease if self.dhcp is not None else None

    def wait_configured(self, timeout: float = 30.0) -> Lease | None:
        """Run the loop until the interface has its addresses: the DHCP lease (returned;
        None when IPv4 was configured statically) and, with IPv6 static addresses or
        SLAAC, a preferred IPv6 address (DAD done, :meth:`wait_ipv6`). Raises
        :class:`LoopTimeout` naming what did not come."""
        deadline = self.loop.time() + timeout
        cfg6 = self.config.ipv6
        if cfg6 is not None and (cfg6.addresses or cfg6.slaac):
            self.wait_ipv6(timeout)
        if self.dhcp is None:
            return None
        dhcp = self.dhcp
        self.loop.run_until(lambda: dhcp.lease is not None and self.iface.configured,
                            max(0.0, deadline - self.loop.time()),
                            "a DHCP lease (DISCOVER/OFFER/REQUEST/ACK)")
        return dhcp.lease

    def wait_ipv6(self, timeout: float = 30.0) -> ipaddress.IPv6Address:
        """Run the loop until a static or SLAAC IPv6 address is preferred (DAD passed,
        RFC 4862 §5.4; with SLAAC a Router Advertisement came first); returns it."""
        ip6 = self.iface.ip6
        if ip6 is None:
            raise ValueError("IPv6 is not enabled on this stack")
        cfg6 = ip6.config
        what = ("an IPv6 address by SLAAC (Router Advertisement, then DAD)"
                if cfg6.slaac and not cfg6.addresses else
                "duplicate address detection of our IPv6 address")
        self.loop.run_until(lambda: ip6.primary is not None, timeout, what)
        primary = ip6.primary
        assert primary is not None
        return ipaddress.IPv6Address(primary)

    def dhcp_events(self) -> list[DhcpEvent]:
        """Every lease event so far (bound, renewed, lost)."""
        return list(self.dhcp.events) if self.dhcp is not None else []

    def connect(self, host: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int,
                config: TcpConfig | None = None) -> TcpConnection:
        """Start an active open to an IPv4 or IPv6 literal (brackets allowed, a zone
        ``%...`` ignored: there is one link); returns at once (see :meth:`open_stream`)."""
        addr = parse_host(host)
        if addr.version == 4:
            return self.tcp.connect(addr.packed, port, self.loop.time(),
                                    config=config or self.tcp_config)
        ip6 = self.iface.ip6
        if ip6 is None:
            raise TcpError("invalid", f"cannot reach [{addr}]: IPv6 is not enabled "
                           "(--ip6 ADDR/PREFIX or --slaac)")
        src = ip6.select_source(addr.packed)
        if src is None:
            raise TcpError("no_address", f"cannot reach [{addr}]: no usable IPv6 address "
                           "yet (duplicate address detection or SLAAC still running)")
        return self.tcp.connect(addr.packed, port, self.loop.time(),
                                config=config or self.tcp_config, local_ip=src)

    def open_stream(self, host: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
                    port: int,
                    timeout: float = 20.0, config: TcpConfig | None = None) -> Stream:
        """Connect and wait until established; raises :class:`TcpError` on failure."""
        conn = self.connect(host, port, config)
        stream = Stream(self, conn)
        stream.wait_connected(timeout)
        return stream

    def counters_dict(self) -> dict[str, dict[str, int]]:
        """Every layer's counters, the link's included."""
        out = self.counters.as_dict()
        out["link"] = dict(self.link.counters())
        return out


class Stream:
    """Blocking helpers over one connection: each runs the loop until done or timeout."""

    def __init__(self, stack: NetStack, conn: TcpConnection) -> None:
        self.stack = stack
        self.conn = conn
        self.loop = stack.loop
        self._user_cb: Callable[[TcpConnection], None] | None = None

    def _check(self) -> None:
        if self.conn.error is not None:
            raise self.conn.error

    def _run(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            self.loop.run_until(lambda: pred() or self.conn.error is not None, timeout, what)
        except LoopTimeout as e:
            raise TcpError("timeout", str(e)) from None
        self._check()

    def wait_connected(self, timeout: float) -> None:
        """Wait for the handshake."""
        self._run(lambda: self.conn.connected or self.conn.closed, timeout,
                  f"connection to {self._peer()}")
        if not self.conn.connected:
            raise TcpError("closed", f"connection to {self._peer()} closed during handshake")

    def sendall(self, data: bytes | bytearray | memoryview, timeout: float = 60.0) -> None:
        """Queue all of ``data``, running the loop while the send buffer is full."""
        view = memoryview(data)
        pos = 0
        conn = self.conn

        def push() -> bool:
            nonlocal pos
            if pos < len(view):
                pos += conn.send(view[pos:])
            return pos >= len(view)

        if not push():
            self._run(push, timeout, f"sending {len(view)} bytes to {self._peer()}")

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until everything sent is acknowledged."""
        conn = self.conn
        self._run(lambda: (conn.snd_una == conn.snd_max and conn.send_space() > 0) or
                  conn.closed, timeout, f"acknowledgement from {self._peer()}")

    def recv_exact(self, n: int, timeout: float = 60.0) -> bytes:
        """Exactly ``n`` bytes; raises :class:`TcpError` on EOF first or timeout."""
        conn = self.conn
        self._run(lambda: conn.available() >= n or conn.eof, timeout,
                  f"{n} bytes from {self._peer()}")
        if conn.available() < n:
            raise TcpError("eof", f"{self._peer()} closed after {conn.available()} of {n} bytes")
        return conn.recv(n)

    def recv_some(self, timeout: float = 60.0) -> bytes:
        """Whatever is available (at least one byte), or b"" at EOF."""
        conn = self.conn
        self._run(lambda: conn.available() > 0 or conn.eof, timeout,
                  f"data from {self._peer()}")
        return conn.recv()

    def close(self, timeout: float = 10.0) -> None:
        """Send FIN and wait until the peer acknowledged it (or the connection ended)."""
        conn = self.conn
        conn.close(self.loop.time())
        self.stack._flush()
        self._run(lambda: conn.closed or conn.state.name in ("FIN_WAIT_2", "TIME_WAIT")
                  or (conn.state.name == "LAST_ACK" and conn.snd_una == conn.snd_max),
                  timeout, f"close of {self._peer()}")

    def _peer(self) -> str:
        ip = ipaddress.ip_address(self.conn.remote_ip)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{host}:{self.conn.remote_port}"


def parse_host(host: str | ipaddress.IPv4Address | ipaddress.IPv6Address
               ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address from a literal: ``10.0.0.1``, ``fd00::1``, ``[fd00::1]``,
    ``fe80::1%eth0`` (the zone is dropped). Raises ValueError for anything else."""
    if not isinstance(host, str):
        return host
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 or IPv6 address") from None
