"""One network interface: Ethernet + ARP + IPv4 + ICMP, pure (docs/interfaces.md).

The :class:`Interface` is a sans-IO state machine, in the manner of lwIP's ``netif`` in
NO_SYS mode: frames come in through :meth:`Interface.receive_frame`, frames to write are
drained with :meth:`Interface.frames_to_send`, time comes in as ``now`` and timers are
driven by :meth:`Interface.next_deadline` / :meth:`Interface.on_deadline` (they cover
ARP, reassembly and the attached transport's timers, so the glue asks only the
interface).

Receive: Ethernet filter (:mod:`netstack.ethernet`) → ARP (:mod:`netstack.arp`) or IPv4
(:mod:`netstack.ipv4`, with reassembly) → protocol 6 to the transport's ``receive``,
protocol 1 to ICMP (:mod:`netstack.icmp`, echo answered here), protocol 17 to
:attr:`Interface.udp` (:mod:`netstack.udp`, ports bound by e.g. the DHCP client),
others counted as ``ip.unknown_protocol``.

Address at runtime (DHCP, RFC 2131): the interface may start *unconfigured*
(``ip=UNCONFIGURED``, 0.0.0.0/32). Then it sends from 0.0.0.0 (to the limited broadcast),
accepts UDP to any unicast address (the offer may be unicast to the offered address
before we own it, RFC 2131 §4.1) but nothing else, answers no ARP and no ping.
:meth:`Interface.set_address` configures (or changes, on renewal) address, gateway and
MTU; :meth:`Interface.clear_address` returns to unconfigured (lease expired).

Bad input never raises: each layer counts the reason and drops
the frame; an unexpected exception (a bug, possibly in the transport) is counted as
``eth.internal_errors`` and kept in :attr:`Interface.last_error`, and re-raised only when
the configuration says ``strict`` (tests do).

Send: :meth:`Interface.frames_to_send` first runs the transport's ``output(now)``; each
segment is wrapped in IPv4 (DF, TTL 64, next identification) and Ethernet towards the
next hop (on-link destination or the gateway, RFC 1122 §3.3.1.1); a next hop not in the
ARP cache gets its packets queued (bounded) while ARP resolves it. Datagrams larger than
the MTU are fragmented when DF is clear (ICMP echo replies), dropped and counted
(``ip.too_big``) when it is set — except TCP super-segments (TSO, only when the transport
was told the link segments them): one :class:`~netstack.link.base.GsoFrame` each, with DF
and one identification reserved per wire segment (``ip.gso_out``; cut here and sent as
ordinary datagrams while the next hop is unresolved, ``ip.gso_split``). A run of TCP
segments (:class:`~netstack.tcp.segment.SegmentRun`, the bulk path without TSO) is framed
in one loop — Ethernet, IPv4 and TCP headers packed at once, checksums from cached
partial sums (RFC 1071, RFC 1624 §3) — byte-identical to its segments sent one by one,
which is what happens while the next hop is unresolved. Everything queued
— ARP requests and replies, echo replies, released and new data — is returned in order.

Fused receive path: a frame of the common kind — untagged IPv4 to our MAC and address,
no options (IHL 5), not a fragment, total length equal to the frame's, header checksum
correct (RFC 791 §3.1, RFC 1122 §3.2.1.2), a unicast source that is not ours, TCP — is
recognised with one ``struct`` unpack and a handful of comparisons and handed straight to
the transport, counted exactly as the layered path counts it (``eth.frames_in``,
``eth.bytes_in``, ``ip.in``, ``ip.delivered``). Anything else, good or bad, takes the
layered path from the start (the fused checks change nothing), so the fused path is a
strict subset of it; ``InterfaceConfig.fast_path=False`` turns it off (tests compare).

The received ``segment`` handed to the transport is a memoryview into the frame passed
to :meth:`receive_frame` (or into a reassembled datagram); a transport that keeps data
beyond the call must copy it if the caller may reuse the frame buffer.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field
from typing import Protocol

from netstack.arp import ArpConfig, ArpLayer
from netstack.counters import Counters
from netstack.ethernet import (
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetLayer,
    parse_mac,
)
from netstack.icmp import ECHO_REQUEST, IcmpLayer, build_echo
from netstack.ipv4 import (
    IPV4_HLEN,
    LIMITED_BROADCAST,
    MAX_PAYLOAD,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4Layer,
    ReassemblyConfig,
)
from netstack.ipv6layer import MIN_MTU as IPV6_MIN_MTU
from netstack.ipv6layer import Ipv6Config, Ipv6Layer
from netstack.link.base import BytesLike, GsoFrame, OutFrame
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import OutSegment, SegmentRun, TsoSegment, split
from netstack.udp import UdpLayer

__all__ = ["UNCONFIGURED", "Interface", "InterfaceConfig", "TransportLayer"]

#: The address of an interface that has none yet (DHCP in progress).
UNCONFIGURED = ipaddress.IPv4Interface("0.0.0.0/32")

#: The fused receive path's one look at a frame: Ethernet destination; EtherType and the
#: IPv4 version/IHL byte as three bytes; total length; flags and fragment offset;
#: protocol; source and destination addresses (RFC 894, RFC 791 §3.1).
_FUSED = struct.Struct("!6s6x3sxH2xHxB2x4s4s")
#: EtherType IPv4, version 4 and IHL 5 (no options).
_FUSED_TAG = b"\x08\x00\x45"
#: Untagged Ethernet header + IPv4 header without options.
_FUSED_HLEN = 34
#: Smallest frame taken: the two headers and a TCP header without options.
_FUSED_MIN = _FUSED_HLEN + 20
#: MF and the fragment offset (RFC 791 §3.1): zero for a datagram that is not a fragment.
_FRAGMENT_BITS = 0x3FFF
#: Interface.receive_placed's one look at a placed frame's headers: _FUSED's fields, then
#: the TCP header as TcpLayer.receive_placed reads it (ports, SEG.SEQ, SEG.ACK, data
#: offset and flags, window; with timestamps the 12 option bytes as three words).
_PLACED_TS = struct.Struct(_FUSED.format + "HHIIHH4xIII")
_PLACED_PLAIN = struct.Struct(_FUSED.format + "HHIIHH4x")
_PLACED_TS_HLEN = _PLACED_TS.size  # 66: Ethernet, IPv4, TCP with the timestamp option
_PLACED_PLAIN_HLEN = _PLACED_PLAIN.size  # 54


class TransportLayer(Protocol):
    """What the interface calls on its transport (``netstack.tcp.layer.TcpLayer``)."""

    def receive(self, src: bytes, dst: bytes, segment: memoryview, now: float,
                csum_ok: bool = False) -> None:
        """One segment for us: source and destination addresses; ``csum_ok`` when the
        link (TAP offload) vouches for the checksum."""
        ...

    def output(self, now: float) -> list[tuple[bytes, OutSegment]]:
        """Segments to send: ``(dst ip (4 or 16 bytes), whole segment with its checksum)``;
        a :class:`~netstack.tcp.segment.TsoSegment` only when the link segments (TSO), a
        :class:`~netstack.tcp.segment.SegmentRun` only when told the interface frames
        them (``tx_runs``, set by :meth:`Interface.attach_tcp`)."""
        ...

    def next_deadline(self) -> float | None:
        """The transport's earliest timer."""
        ...

    def on_deadline(self, now: float) -> None:
        """Fire the transport's due timers."""
        ...


@dataclass(frozen=True)
class InterfaceConfig:
    """Addresses and tunables of one interface."""

    mac: bytes
    ip: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    #: IP MTU: the largest Ethernet payload (frames are at most mtu + 14 bytes).
    mtu: int = 1500
    #: Permanent neighbours: IPv4 address -> MAC (never expire, never overwritten).
    static_neighbours: dict[ipaddress.IPv4Address, bytes] = field(default_factory=dict)
    arp: ArpConfig = field(default_factory=ArpConfig)
    reassembly: ReassemblyConfig = field(default_factory=ReassemblyConfig)
    #: 802.1Q VID to send and accept (None: untagged; VID-0 priority tags are accepted).
    vlan: int | None = None
    #: First IPv4 identification is ``ip_ident + 1``.
    ip_ident: int = 0
    #: Re-raise unexpected exceptions from receive_frame (for tests) instead of counting.
    strict: bool = False
    #: IPv6 (RFC 8200; ND, SLAAC, ICMPv6): None leaves IPv6 frames unhandled (counted).
    ipv6: Ipv6Config | None = None
    #: The fused receive path for plain IPv4 TCP frames (see the module docstring);
    #: False sends every frame through the layers one by one (the same results).
    fast_path: bool = True


class Interface:
    """Ethernet/ARP/IPv4/ICMP of one link, with a pluggable transport (TCP)."""

    def __init__(self, config: InterfaceConfig, counters: Counters | None = None,
                 tcp: TransportLayer | None = None,
                 rng: random.Random | None = None) -> None:
        mac = parse_mac(config.mac)
        if mac[0] & 1:
            raise ValueError("the interface MAC must be a unicast address")
        if config.mtu < 68:
            raise ValueError("an IPv4 MTU is at least 68 bytes (RFC 791 §3.2)")
        self.config = config
        self.counters = counters if counters is not None else Counters()
        self.mac = mac
        self.ip = config.ip.ip.packed
        self.mtu = config.mtu
        self.tcp: TransportLayer | None = tcp
        if tcp is not None and hasattr(tcp, "tx_runs"):
            tcp.tx_runs = True  # runs are framed here (_send_run)
        self.last_error: BaseException | None = None
        self._out: list[OutFrame] = []
        self._c_eth = self.counters.layer("eth")
        self._c_ip = self.counters.layer("ip")
        self.eth = EthernetLayer(mac, self._c_eth, vlan=config.vlan)
        self.ipv4 = Ipv4Layer(config.ip, config.gateway, config.mtu, self._c_ip,
                              config.reassembly, ident=config.ip_ident)
        static = {ipaddress.IPv4Address(k).packed: parse_mac(v)
                  for k, v in config.static_neighbours.items()}
        self.arp = ArpLayer(self.eth, self.ip, self.counters.layer("arp"), self._out,
                            config.arp, static)
        self.icmp = IcmpLayer(self.counters.layer("icmp"))
        self.udp = UdpLayer(self.counters.layer("udp"), strict=config.strict)
        self._link_mtu = config.mtu
        self._bcast_hdr = self.eth.header(BROADCAST, ETHERTYPE_IPV4)
        self._route_dst = b""
        self._route_nh: bytes | None = None
        # The fused checks read an untagged header: on a VLAN interface every frame takes
        # the layered path (decided once here, not per frame).
        self._untagged = config.vlan is None
        self._fast = config.fast_path and self._untagged
        self._fused_addresses()
        self.ip6: Ipv6Layer | None = None
        if config.ipv6 is not None:
            if config.mtu < IPV6_MIN_MTU:
                raise ValueError(f"IPv6 needs an MTU of at least {IPV6_MIN_MTU} (RFC 8200 "
                                 f"§5), the interface has {config.mtu}")
            self.ip6 = Ipv6Layer(config.ipv6, self.eth, config.mtu, self._out, self.counters,
                                 config.reassembly, rng, on_change=self._ip6_changed)

    @property
    def mss(self) -> int:
        """The TCP MSS this MTU allows (RFC 9293 §3.7.1: MTU - 40)."""
        return self.mtu - 40

    @property
    def configured(self) -> bool:
        """Whether the interface has an address (not 0.0.0.0)."""
        return self.ip != b"\0\0\0\0"

    @property
    def address(self) -> ipaddress.IPv4Interface:
        """Our address and prefix (``UNCONFIGURED`` when there is none)."""
        return self.ipv4.address

    @property
    def gateway(self) -> ipaddress.IPv4Address | None:
        """The default gateway in use."""
        gw = self.ipv4.gateway
        return None if gw is None else ipaddress.IPv4Address(gw)

    def set_address(self, ip: ipaddress.IPv4Interface,
                    gateway: ipaddress.IPv4Address | None, now: float,
                    mtu: int | None = None) -> None:
        """Configure (or change) address, gateway and MTU at runtime (a DHCP lease).

        ``mtu`` (DHCP option 26) may lower the MTU below the link's, never raise it. A new
        address is announced (RFC 5227 §2.3); connections on an old address are left to
        fail on their own (their segments no longer match).
        """
        new_mtu = self._link_mtu if mtu is None else max(68, min(mtu, self._link_mtu))
        changed = ip != self.ipv4.address
        self.ipv4.set_address(ip, gateway, new_mtu)
        self.ip = ip.ip.packed
        self.mtu = new_mtu
        self._route_dst = b""
        self._route_nh = None
        self.arp.set_ip(self.ip)
        self._fused_addresses()
        tcp = self.tcp
        if tcp is not None:
            if hasattr(tcp, "local_ip"):
                tcp.local_ip = self.ip
            if hasattr(tcp, "mss"):
                tcp.mss = new_mtu - 40
        if changed and self.configured:
            self.arp.start(now)

    def _fused_addresses(self) -> None:
        """The addresses the fused receive path compares with: ours (None while
        unconfigured: then only UDP is taken, by the layered path) and the subnet
        broadcast, which is no valid source (RFC 1122 §3.2.1.3)."""
        self._fast_ip: bytes | None = self.ip if self.configured else None
        self._fast_bcast = self.ipv4.broadcast

    def clear_address(self) -> None:
        """Back to unconfigured (lease expired or refused): 0.0.0.0, no gateway."""
        self.set_address(UNCONFIGURED, None, 0.0, self._link_mtu)

    def attach_tcp(self, tcp: TransportLayer) -> None:
        """Bind the transport that receives protocol 6 and whose output is sent; tell it
        (``tx_runs``) that runs of full-sized segments are framed here
        (:meth:`_send_run`)."""
        self.tcp = tcp
        if hasattr(tcp, "tx_runs"):
            tcp.tx_runs = True
        self._ip6_changed()

    def _ip6_changed(self) -> None:
        """IPv6 addresses or MTU changed: the transport's IPv6 source and MSS follow
        (MSS = MTU - 60, RFC 8200 §8.3 with the 20-byte TCP header)."""
        tcp, ip6 = self.tcp, self.ip6
        if tcp is None or ip6 is None:
            return
        if hasattr(tcp, "local_ip6"):
            tcp.local_ip6 = ip6.primary
        if hasattr(tcp, "mss6"):
            tcp.mss6 = ip6.mtu - 60

    def start(self, now: float) -> None:
        """Queue the gratuitous ARP announcements (RFC 5227 §2.3); IPv6: form the
        link-local address, start DAD and router solicitation (RFC 4862)."""
        self.arp.start(now)
        if self.ip6 is not None:
            self.ip6.start(now)

    # ---------------------------------------------------------------- receive
    def receive_frame(self, frame: BytesLike, now: float, csum_ok: bool = False) -> None:
        """Handle one received Ethernet frame; never raises on bad input. ``csum_ok``: the
        link vouches for the transport checksum (TAP offload: NEEDS_CSUM/DATA_VALID)."""
        try:
            mv = frame if isinstance(frame, memoryview) else memoryview(frame)
            n = len(mv)
            if self._fast and n >= _FUSED_MIN:
                # The fused path (module docstring): every test the layered path makes of
                # such a frame, in a few comparisons; anything else falls through.
                tcp = self.tcp
                src = self._fused_source(mv, n)
                if src is not None and tcp is not None:
                    self._count_fused(n)
                    tcp.receive(src, self.ip, mv[_FUSED_HLEN:], now, csum_ok)
                    return
            ethertype, off, group = self.eth.accept(mv)
            if ethertype == ETHERTYPE_IPV4:
                r = self.ipv4.receive(mv[off:], group, now)
                if r is None:
                    return
                proto, src, dst, payload, bcast = r
                tcp = self.tcp
                if not self.configured and proto != PROTO_UDP:
                    self._c_ip["unconfigured"] += 1  # only DHCP until we have an address
                elif proto == PROTO_TCP and tcp is not None and not bcast:
                    tcp.receive(src, dst, payload, now, csum_ok)
                elif proto == PROTO_UDP:
                    self.udp.receive(src, dst, payload, bcast, now, csum_ok)
                else:
                    self._deliver_other(proto, src, payload, bcast, now)
            elif ethertype == ETHERTYPE_IPV6 and self.ip6 is not None:
                r6 = self.ip6.receive(mv[off:], group, now)
                if r6 is not None:
                    proto, src, dst, payload, mcast = r6
                    if proto == PROTO_TCP:
                        if self.tcp is not None:
                            self.tcp.receive(src, dst, payload, now, csum_ok)
                        else:
                            self._c_ip["no_transport"] += 1
                    else:
                        self.udp.receive(src, dst, payload, mcast, now, csum_ok)
            elif ethertype == ETHERTYPE_ARP:
                self.arp.receive(mv[off:], now)
            elif ethertype >= 0:
                self._c_eth["unknown_ethertype"] += 1
        except Exception as exc:
            self._c_eth["internal_errors"] += 1
            self.last_error = exc
            if self.config.strict:
                raise

    def _fused_source(self, mv: memoryview, n: int) -> bytes | None:
        """The source address when the ``n``-byte frame ``mv`` (at least ``_FUSED_MIN``
        bytes there; the caller knows the interface is untagged) is an IPv4 datagram
        without options to our MAC and address,
        protocol TCP, not a fragment, of a total length that matches the frame, from a
        valid source, with a good header checksum: every test the layered path makes of
        it (RFC 894; RFC 791 §3.1; RFC 1122 §3.2.1.3). None otherwise."""
        src: bytes
        edst, tag, total, ff, proto, src, dst = _FUSED.unpack_from(mv)
        if (edst == self.mac and tag == _FUSED_TAG and proto == PROTO_TCP
                and dst == self._fast_ip and total == n - 14
                and not ff & _FRAGMENT_BITS
                # RFC 1122 §3.2.1.3: no multicast, broadcast or own source (dst is ours,
                # so src == dst is src == ours).
                and src[0] < 224 and src != self._fast_bcast and src != dst
                # RFC 791 §3.1, RFC 1071: the header sums to -0 (never +0).
                and not int.from_bytes(mv[14:_FUSED_HLEN], "big") % 0xFFFF):
            return src
        return None

    def _count_fused(self, n: int) -> None:
        """What Ethernet and IPv4 count for a frame they deliver to TCP."""
        c = self._c_eth
        c["frames_in"] += 1
        c["bytes_in"] += n
        c = self._c_ip
        c["in"] += 1
        c["delivered"] += 1

    def receive_placed(self, hdr: memoryview, frame_len: int, placed: int,
                       tail: memoryview, now: float, gap: memoryview | None = None,
                       then_n: int = 0) -> bool:
        """A frame the link read scattered for direct placement
        (:mod:`netstack.tcp.placement`): ``hdr`` holds its Ethernet, IPv4 and TCP
        headers, ``placed`` payload bytes went to the placing connection's buffer and
        ``tail`` holds the rest (``gap``, ``then_n``: a continuation's, see
        :meth:`TcpLayer.receive_placed`); the link vouched for the TCP checksum. True when the
        frame passes the fused path's tests (:meth:`_fused_source`) and carries the
        predicted segment of that connection (:meth:`TcpLayer.receive_placed`): taken
        and counted exactly as :meth:`receive_frame` would. False, nothing changed,
        otherwise: the caller joins the frame and calls :meth:`receive_frame`.

        The hot path of a bulk read (~14 frames per MiB at MTU 65520): the tests of
        :meth:`_fused_source` and :meth:`TcpLayer.receive_placed` are made here with one
        unpack of all three headers; the TCP side is
        :meth:`TcpLayer.receive_placed_fields`, which :meth:`TcpLayer.receive_placed`
        shares, and the counting :meth:`_count_fused`. Kept equal to them by
        ``tests/unit/test_placement.py`` (``IfaceTwins``: every field tested here
        mutated must send the frame the ordinary way)."""
        tcp = self.tcp
        if not self._untagged or not isinstance(tcp, TcpLayer):
            return False
        conn = tcp.placing
        if conn is None:
            return False
        src: bytes
        dst: bytes
        if len(hdr) == _PLACED_TS_HLEN:
            (edst, tag, total, ff, proto, src, dst, sport, dport, seqno, ack, offflags,
             window, tsopt, ts_val, ts_ecr) = _PLACED_TS.unpack_from(hdr)
        elif len(hdr) == _PLACED_PLAIN_HLEN:
            (edst, tag, total, ff, proto, src, dst, sport, dport, seqno, ack, offflags,
             window) = _PLACED_PLAIN.unpack_from(hdr)
            tsopt = ts_val = ts_ecr = 0
        else:
            return False
        # _fused_source's tests (RFC 894; RFC 791 §3.1; RFC 1122 §3.2.1.3); the TCP
        # layer's (the placing connection's segment, predicted) follow.
        if not (edst == self.mac and tag == _FUSED_TAG and proto == PROTO_TCP
                and dst == self._fast_ip and total == frame_len - 14
                and not ff & _FRAGMENT_BITS
                and src[0] < 224 and src != self._fast_bcast and src != dst
                and not int.from_bytes(hdr[14:_FUSED_HLEN], "big") % 0xFFFF):
            return False
        if not tcp.receive_placed_fields(conn, src, sport, dport, seqno, ack, offflags,
                                         window, tsopt, ts_val, ts_ecr, hdr[_FUSED_HLEN:],
                                         now, placed, tail, gap, then_n):
            return False
        self._count_fused(frame_len)
        return True

    def _deliver_other(self, proto: int, src: bytes, payload: memoryview, bcast: bool,
                       now: float) -> None:
        """Everything but TCP to us: ICMP, TCP that cannot be delivered, the rest."""
        if proto == PROTO_TCP:
            if bcast:
                self._c_ip["broadcast_tcp"] += 1  # RFC 1122 §4.2.3.10
            else:
                self._c_ip["no_transport"] += 1
        elif proto == PROTO_ICMP:
            reply = self.icmp.receive(src, payload, bcast, now)
            if reply is not None:
                self.send_ip(src, PROTO_ICMP, reply, now, df=False)
        else:
            self._c_ip["unknown_protocol"] += 1

    # ------------------------------------------------------------------- send
    def _next_hop(self, dst: bytes) -> bytes | None:
        """The IPv4 next hop for ``dst`` (one-entry cache: bulk traffic has one peer), or
        None, counted as ``no_route``."""
        nh = self._route(dst)
        if nh is None:
            self._c_ip["no_route"] += 1
        return nh

    def _route(self, dst: bytes) -> bytes | None:
        """:meth:`_next_hop` without counting a missing route."""
        if dst != self._route_dst:
            self._route_nh = self.ipv4.route(dst)
            self._route_dst = dst
        return self._route_nh

    def send_ip(self, dst: bytes, proto: int, payload: BytesLike, now: float,
                df: bool = True) -> None:
        """Send one datagram from our address: route, header, fragment if needed and
        allowed, resolve the next hop (queueing while ARP works). Failures are counted."""
        c = self._c_ip
        nh = self._next_hop(dst)
        if nh is None:
            return
        n = len(payload)
        packets: list[bytes] | None = None
        hdr = b""
        if n + IPV4_HLEN > self.mtu:
            if df or n > MAX_PAYLOAD:
                c["too_big"] += 1
                return
            packets = self.ipv4.fragment(dst, proto, payload)
        else:
            hdr = self.ipv4.header(dst, proto, n, df)
        if nh == LIMITED_BROADCAST:
            eh: bytes | None = self._bcast_hdr
        else:
            eh = self.arp.header_for(nh, now)
        if packets is None:
            c["out"] += 1
            if eh is not None:
                self._out.append(b"".join((eh, hdr, payload)))
            else:
                self.arp.enqueue(nh, b"".join((hdr, payload)), now)
            return
        c["out"] += len(packets)
        if eh is not None:
            self._out.extend([eh + p for p in packets])
        else:
            for p in packets:
                self.arp.enqueue(nh, p, now)

    def send_udp(self, dst: bytes, sport: int, dport: int, payload: BytesLike,
                 now: float) -> None:
        """Send one UDP datagram from our address (0.0.0.0 while unconfigured); to a
        16-byte destination over IPv6 from the selected source (RFC 6724)."""
        if len(dst) == 16:
            ip6 = self.ip6
            src = None if ip6 is None else ip6.select_source(dst)
            if ip6 is None or src is None:
                self._c_ip["no_route"] += 1
                return
            ip6.send(dst, PROTO_UDP, self.udp.build(src, dst, sport, dport, payload), now,
                     src=src, allow_fragments=True)
            return
        self.send_ip(dst, PROTO_UDP, self.udp.build(self.ip, dst, sport, dport, payload),
                     now, df=False)

    def ping(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address | bytes, ident: int,
             seq: int, data: bytes, now: float) -> None:
        """Send an ICMP Echo Request (replies land in ``icmp.echo_replies``, or in
        ``ip6.echo_replies`` for an IPv6 destination)."""
        dst_b = dst if isinstance(dst, bytes) else dst.packed
        if len(dst_b) == 16:
            if self.ip6 is None:
                raise ValueError("IPv6 is not enabled on this interface")
            self.ip6.ping(dst_b, ident, seq, data, now)
            return
        self.icmp.count_request()
        self.send_ip(dst_b, PROTO_ICMP, build_echo(ECHO_REQUEST, ident, seq, data), now,
                     df=False)

    def frames_to_send(self, now: float) -> list[OutFrame]:
        """Run the transport's output, then drain every frame ready to be written: bytes,
        and :class:`~netstack.link.base.GsoFrame` super-frames when the transport makes
        TSO super-segments (only for a link that segments them, see NetStack)."""
        tcp = self.tcp
        if tcp is not None:
            send = self.send_ip
            for dst, seg in tcp.output(now):
                if isinstance(seg, SegmentRun):
                    self._send_run(dst, seg, now)
                elif isinstance(seg, TsoSegment):
                    self._send_tso(tcp, dst, seg, now)
                elif len(dst) == 4:
                    send(dst, PROTO_TCP, seg, now)
                else:
                    self._send_tcp6(tcp, dst, seg, now)
        out = self._out
        if not out:
            return []
        frames = out.copy()
        out.clear()
        c = self._c_eth
        c["frames_out"] += len(frames)
        c["bytes_out"] += sum(map(len, frames))
        return frames

    def _send_run(self, dst: bytes, run: SegmentRun, now: float) -> None:
        """A run of TCP segments to an IPv4 destination, framed in one loop
        (:meth:`SegmentRun.frames`) when the next hop is resolved and the datagrams fit
        the MTU: IPv4 headers as :meth:`send_ip` makes them (DF, TTL 64, the next
        identifications, RFC 791 §3.1), counted the same (``out`` per datagram).
        Otherwise (no route, a broadcast, ARP pending, too big) each segment takes
        :meth:`send_ip`, exactly as if it had come alone."""
        nh = self._route(dst)
        eh = None
        if nh is not None and nh != LIMITED_BROADCAST and \
                IPV4_HLEN + 32 + run.mss <= self.mtu:
            eh = self.arp.header_for(nh, now)
        if eh is None:
            for seg in run.segments():
                self.send_ip(dst, PROTO_TCP, seg, now)
            return
        k = run.count
        self._out += run.frames(eh, self.ip, dst, self.ipv4.next_idents(k))
        self._c_ip["out"] += k

    def _send_tcp6(self, tcp: TransportLayer, dst: bytes, seg: bytes, now: float) -> None:
        """A TCP segment over IPv6 from its connection's own address (the checksum's)."""
        ip6 = self.ip6
        if ip6 is None:
            self._c_ip["no_route"] += 1
            return
        source_of = getattr(tcp, "source_of", None)
        src = source_of(dst, seg) if source_of is not None else None
        ip6.send(dst, PROTO_TCP, seg, now, src=src)

    def _send_tso(self, tcp: TransportLayer, dst: bytes, seg: TsoSegment,
                  now: float) -> None:
        """A TCP super-segment (TSO) as one super-frame: IPv4 with DF and the next
        ``seg.segments`` identifications (:meth:`Ipv4Layer.header_gso`), or IPv6; ``out``
        counts the datagrams the link makes of it, ``gso_out`` the super-frames. While the
        next hop is unresolved it is split here (``gso_split``) and the segments take the
        ordinary path (queued behind ARP)."""
        if len(dst) == 16:
            ip6 = self.ip6
            if ip6 is None:
                self._c_ip["no_route"] += 1
                return
            source_of = getattr(tcp, "source_of", None)
            src = source_of(dst, seg.data) if source_of is not None else None
            ip6.send_tcp_gso(dst, seg, now, src)
            return
        c = self._c_ip
        nh = self._next_hop(dst)
        if nh is None:
            return
        data = seg.data
        n = len(data)
        eh = None
        if nh != LIMITED_BROADCAST and n + IPV4_HLEN <= 0xFFFF:
            eh = self.arp.header_for(nh, now)
        if eh is None:
            c["gso_split"] += 1
            for piece in split(data, self.ip, dst, seg.gso_size, seg.partial):
                self.send_ip(dst, PROTO_TCP, piece, now)
            return
        segments = seg.segments
        hdr = self.ipv4.header_gso(dst, PROTO_TCP, n, segments)
        c["out"] += segments
        c["gso_out"] += 1
        self._out.append(GsoFrame(b"".join((eh, hdr, data)), seg.gso_size, seg.partial))

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest of ARP, reassembly, IPv6 and transport timers."""
        best = self.arp.next_deadline()
        t = self.ipv4.reassembler.next_deadline()
        if t is not None and (best is None or t < best):
            best = t
        if self.ip6 is not None:
            t = self.ip6.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        if self.tcp is not None:
            t = self.tcp.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_deadline(self, now: float) -> None:
        """Fire due timers (ARP retries and give-ups, reassembly timeouts, transport)."""
        self.arp.on_deadline(now)
        self.ipv4.reassembler.on_deadline(now)
        if self.ip6 is not None:
            self.ip6.on_deadline(now)
        if self.tcp is not None:
            self.tcp.on_deadline(now)

    def counters_dict(self) -> dict[str, dict[str, int]]:
        """Every layer's counters (the transport's too when it shares the Counters)."""
        return self.counters.as_dict()
