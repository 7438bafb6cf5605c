"""IPv6 of one interface, pure: receive, send, ICMPv6, Neighbor Discovery, addresses
(RFC 8200, RFC 4443, RFC 4861, RFC 4862, RFC 2464).

:class:`Ipv6Layer` is what :class:`netstack.interface.Interface` runs for EtherType
0x86DD. It owns the neighbour cache (:mod:`netstack.nd`) and the address configuration
(:mod:`netstack.addrconf`), and

- validates received packets (RFC 8200 §3: version, payload length against the frame —
  Ethernet padding is ignored —, a source that is not multicast nor ours), keeps those
  for us: our usable unicast addresses (never a tentative one, RFC 4862 §5.4), all-nodes
  ff02::1 and the solicited-node groups of all our addresses (RFC 4861 §7.2.1); walks
  extension headers and reassembles fragments (:mod:`netstack.ipv6`, the IPv4
  :class:`~netstack.ipv4.Reassembler` with the 32-bit identification);
- hands TCP (6) and UDP (17) to the interface, answers Echo Requests (RFC 4443 §4.2:
  same identifier, sequence and data; to a multicast request from a unicast address of
  ours), remembers Echo Replies, and handles ND: Neighbor Solicitations for our addresses
  are answered (solicited, override, with our link-layer address; to all-nodes when the
  solicitation came from the unspecified address, §7.2.4), advertisements update the
  cache, Router Advertisements go to address configuration. ND messages are accepted
  only with hop limit 255 (§7.1: from the link itself), a valid checksum and code,
  well-formed options, not fragmented (RFC 6980 §5), and the per-type checks of §7.1.1,
  §7.1.2, §6.1.2 (RA from a link-local source); hosts ignore Router Solicitations
  (§6.2.6) and — a simplification — Redirects (counted);
- joins its groups with MLDv2 (RFC 3810; RFC 4861 §7.2.1 asks for MLD so that
  snooping switches forward the solicited-node groups to us): a State Change Report
  (CHANGE_TO_EXCLUDE / CHANGE_TO_INCLUDE records) when the set changes, sent twice
  (Robustness Variable 2, the second after ``mld_interval``), and a Current State
  Report (MODE_IS_EXCLUDE for every group) answering each Query; all-nodes is never
  reported (§6). Reports go to ff02::16 with hop limit 1 and a Router Alert option,
  from the link-local address (or ``::`` before it passed DAD, §5.2.13);
- sends: source address selection (RFC 6724, simplified), next hop (§5.2: link-local
  and on-link prefixes are direct, the rest goes to the default router), multicast
  to 33:33 + the group's low 32 bits (RFC 2464 §7), address resolution through the
  neighbour cache (packets wait while it resolves), fragmentation of echo replies that
  exceed the MTU (RFC 8200 §4.5; everything else larger than the MTU is counted
  ``too_big`` and dropped).

Counters: layer ``ip6`` (``in``, ``out``, ``delivered``, ``truncated``, ``bad_version``,
``padded``, ``bad_src``, ``not_for_us``, ``tentative_dst``, extension-header drops by
reason, fragment counters as IPv4's, ``no_route``, ``no_source``, ``too_big``, ``gso_out``
and ``gso_split`` (TCP super-packets, :meth:`Ipv6Layer.send_tcp_gso`),
``unknown_protocol``, ``multicast_tcp``), ``icmp6`` (``in``, ``bad_checksum``, ``short``,
``echo_in``, ``echo_out``, ``echo_reply_in``, ``echo_request_out``, ``ns_in``, ``na_in``,
``ra_in``, ``na_out``, ``ns_out``, ``rs_out``, ``bad_hop_limit``, ``bad_ns``, ``bad_na``,
``bad_ra``, ``nd_fragmented``, ``ns_not_ours``, ``rs_ignored``, ``redirect_in``,
``mld_query_in``, ``mld_reports_out``, ``bad_mld``, one
``<type>_in`` per other type) and ``nd`` (:mod:`netstack.nd`, :mod:`netstack.addrconf`).
"""

from __future__ import annotations

import ipaddress
import math
import random
import struct
from collections import deque
from collections.abc import Callable

from netstack import icmpv6
from netstack.addrconf import AddrConf, AddrState, Ip6Addr, Ipv6Config
from netstack.counters import Counters
from netstack.ethernet import ETHERTYPE_IPV6, EthernetLayer
from netstack.icmp import EchoReply
from netstack.icmpv6 import (
    ECHO_REPLY,
    ECHO_REQUEST,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    PROTO_ICMPV6,
    REDIRECT,
    ROUTER_ADVERT,
    ROUTER_SOLICIT,
)
from netstack.ipv4 import Reassembler, ReassemblyConfig
from netstack.ipv6 import (
    ALL_NODES,
    ALL_ROUTERS,
    IPV6_HLEN,
    UNSPECIFIED,
    ExtError,
    build_header,
    fragment,
    is_link_local,
    multicast_mac,
    solicited_node,
    walk_extensions,
)
from netstack.link.base import BytesLike, GsoFrame, OutFrame
from netstack.nd import NdState, NeighborCache
from netstack.tcp.segment import TsoSegment, split

__all__ = ["MIN_MTU", "Ipv6Config", "Ipv6Layer"]

#: RFC 8200 §5: every link carries at least 1280-byte packets.
MIN_MTU = 1280
PROTO_TCP = 6
PROTO_UDP = 17
_HDR = struct.Struct("!IHBB16s16s")
_ND_TYPES = (ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, REDIRECT)
MLD_QUERY = 130
MLDV2_REPORT = 143
#: ff02::16, all MLDv2-capable routers (RFC 3810 §5.2.14).
ALL_MLDV2_ROUTERS = ipaddress.IPv6Address("ff02::16").packed
#: Hop-by-Hop header: next header ICMPv6, Router Alert "MLD" (RFC 2711), PadN.
_HBH_ROUTER_ALERT = bytes((PROTO_ICMPV6, 0, 5, 2, 0, 0, 1, 0))
#: MLDv2 record types (RFC 3810 §5.2.12).
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4

#: ``(proto, src, dst, payload, multicast)`` of a packet for the transports.
Delivery = tuple[int, bytes, bytes, memoryview, bool]


class Ipv6Layer:
    """IPv6, ICMPv6 and ND of one Ethernet interface (see the module docstring)."""

    def __init__(self, config: Ipv6Config, eth: EthernetLayer, mtu: int,
                 output: list[OutFrame], counters: Counters,
                 reassembly: ReassemblyConfig | None = None,
                 rng: random.Random | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        if mtu < MIN_MTU:
            raise ValueError(f"an IPv6 link MTU is at least {MIN_MTU} bytes (RFC 8200 §5); "
                             f"this one is {mtu}")
        self.config = config
        self.eth = eth
        self.mac = eth.mac
        self.link_mtu = mtu
        self.mtu = mtu
        self._out = output
        self._c = counters.layer("ip6")
        self._ci = counters.layer("icmp6")
        self._cn = counters.layer("nd")
        self._rng = rng if rng is not None else random.Random()
        self._on_change = on_change
        self.nc = NeighborCache(eth, output, self._cn, self._solicit, config.nd, self._rng)
        self.addrconf = AddrConf(config, eth.mac, self._cn, self._rng,
                                 send_dad=self._send_dad, send_rs=self._send_rs,
                                 changed=self._changed,
                                 retrans_timer=lambda: self.nc.retrans_timer)
        self.reassembler = Reassembler(self._c, reassembly)
        self.echo_replies: deque[EchoReply] = deque(maxlen=16)
        self._ident = self._rng.getrandbits(32)
        self._ours: frozenset[bytes] = frozenset()
        self._tentative: frozenset[bytes] = frozenset()
        self._groups: frozenset[bytes] = frozenset({ALL_NODES})
        self._base_reachable: float | None = None
        self._route_dst = b""
        self._route_nh: bytes | None = None
        self._route_ok = False
        self._now = 0.0
        #: Seconds between the two copies of a State Change Report (RFC 3810 §9.11).
        self.mld_interval = 1.0
        self._reported: frozenset[bytes] = frozenset()
        self._mld_repeat: list[tuple[int, bytes]] = []
        self._mld_repeat_at = math.inf
        for name in ("in", "out", "delivered", "not_for_us", "no_route", "too_big"):
            self._c[name] += 0
        for name in ("in", "echo_in", "echo_out", "bad_checksum", "ns_in", "na_in",
                     "na_out", "ns_out"):
            self._ci[name] += 0
        eth.groups.add(multicast_mac(ALL_NODES))

    # ----------------------------------------------------------------- state
    def start(self, now: float) -> None:
        """Form the link-local address, start DAD of every address, schedule RS."""
        self._now = now
        self.addrconf.start(now)

    @property
    def addresses(self) -> list[Ip6Addr]:
        """Every address with its state (tentative, preferred, deprecated, duplicate)."""
        return list(self.addrconf.addrs)

    def usable_addresses(self) -> list[ipaddress.IPv6Interface]:
        """Addresses we own (preferred or deprecated), link-local first."""
        return [a.interface for a in self.addrconf.usable()]

    @property
    def primary(self) -> bytes | None:
        """Our address for global destinations (static, else SLAAC), once preferred."""
        return self.addrconf.primary()

    @property
    def default_router(self) -> bytes | None:
        """The router used for off-link destinations now."""
        return self.addrconf.default_router(self._known)

    @property
    def hop_limit(self) -> int:
        """Hop limit of our packets (RA Cur Hop Limit, else the configured one)."""
        return self.addrconf.hop_limit

    def select_source(self, dst: bytes) -> bytes | None:
        """Our source address for ``dst`` (RFC 6724, simplified), or None."""
        return self.addrconf.select_source(dst)

    def is_ours(self, addr: bytes) -> bool:
        """Whether ``addr`` is one of our usable addresses."""
        return addr in self._ours

    def _known(self, ip: bytes) -> bool:
        e = self.nc.entries().get(ip)
        return e is not None and e.state is not NdState.INCOMPLETE

    def _changed(self) -> None:
        ac = self.addrconf
        self._ours = frozenset(a.ip for a in ac.addrs if a.usable)
        self._tentative = frozenset(a.ip for a in ac.addrs
                                    if a.state is AddrState.TENTATIVE)
        groups = {ALL_NODES}
        groups.update(solicited_node(a.ip) for a in ac.addrs
                      if a.state is not AddrState.DUPLICATE)
        self._groups = frozenset(groups)
        self._mld_change(self._groups - {ALL_NODES})
        eth_groups = self.eth.groups
        for g in list(eth_groups):
            if g[:2] == b"\x33\x33":
                eth_groups.discard(g)
        eth_groups.update(multicast_mac(g) for g in groups)
        self.nc.retrans_timer = ac.retrans or self.config.nd.retrans_timer
        if ac.base_reachable is not None and ac.base_reachable != self._base_reachable:
            self._base_reachable = ac.base_reachable
            self.nc.set_base_reachable_time(ac.base_reachable)
        self.mtu = ac.mtu or self.link_mtu
        self._route_ok = False
        if self._on_change is not None:
            self._on_change()

    # ------------------------------------------------------------------- MLD
    def _mld_change(self, groups: frozenset[bytes]) -> None:
        """Report joined and left groups (RFC 3810 §6.1), again after ``mld_interval``."""
        joined, left = groups - self._reported, self._reported - groups
        if not joined and not left:
            return
        self._reported = groups
        records = [(CHANGE_TO_EXCLUDE, g) for g in sorted(joined)]
        records += [(CHANGE_TO_INCLUDE, g) for g in sorted(left)]
        self._send_mld_report(records)
        self._mld_repeat = records
        self._mld_repeat_at = self._now + self.mld_interval

    def _send_mld_report(self, records: list[tuple[int, bytes]]) -> None:
        if not records:
            return
        ll = self.addrconf.link_local()
        src = UNSPECIFIED if ll is None else ll.ip
        body = struct.pack("!HH", 0, len(records)) + b"".join(
            struct.pack("!BBH", kind, 0, 0) + group for kind, group in records)
        msg = icmpv6.build(src, ALL_MLDV2_ROUTERS, MLDV2_REPORT, 0, body)
        payload = _HBH_ROUTER_ALERT + msg
        self._ci["mld_reports_out"] += 1
        self._c["out"] += 1
        self._out.append(self.eth.header(multicast_mac(ALL_MLDV2_ROUTERS), ETHERTYPE_IPV6)
                         + build_header(src, ALL_MLDV2_ROUTERS, 0, len(payload), 1)
                         + payload)

    def _mld_query(self, src: bytes, msg: memoryview) -> None:
        """A Multicast Listener Query (RFC 3810 §5.1): answer with the current state of
        our groups (general query) or of the one asked about (if it is ours)."""
        if len(msg) < 24 or not is_link_local(src):
            self._ci["bad_mld"] += 1  # §5.1.14: queries come from link-local addresses
            return
        self._ci["mld_query_in"] += 1
        group = bytes(msg[8:24])
        groups = self._reported if group == UNSPECIFIED else self._reported & {group}
        self._send_mld_report([(MODE_IS_EXCLUDE, g) for g in sorted(groups)])

    # --------------------------------------------------------------- receive
    def receive(self, pkt: memoryview, link_group: bool, now: float) -> Delivery | None:
        """Validate one packet; ICMPv6 is handled here, TCP/UDP returned as
        ``(proto, src, dst, payload, multicast)``; everything else counted, None."""
        c = self._c
        self._now = now
        c["in"] += 1
        n = len(pkt)
        if n < IPV6_HLEN:
            c["truncated"] += 1
            return None
        vtf, plen, nh, hop, src, dst = _HDR.unpack_from(pkt, 0)
        if vtf >> 28 != 6:
            c["bad_version"] += 1
            return None
        total = IPV6_HLEN + plen
        if plen == 0 and nh == 0:
            c["jumbogram"] += 1  # RFC 2675: not on Ethernet
            return None
        if total > n:
            c["truncated"] += 1
            return None
        if total < n:
            c["padded"] += 1
            pkt = pkt[:total]
        if src[0] == 0xFF or src in self._ours:
            c["bad_src"] += 1  # RFC 4291 §2.7; ours: looped back or spoofed
            return None
        mcast = dst[0] == 0xFF
        if mcast:
            if dst not in self._groups:
                c["not_for_us"] += 1
                return None
        elif dst not in self._ours:
            c["tentative_dst" if dst in self._tentative else "not_for_us"] += 1
            return None
        try:
            proto, off, frag = walk_extensions(pkt, nh)
            payload = pkt[off:]
            fragmented = False
            if frag is not None:
                fnh, foff, more, ident = frag
                if foff == 0 and not more:
                    c["atomic_fragments"] += 1  # RFC 6946: processed on its own
                    proto, off, frag = walk_extensions(pkt, fnh, off)
                    payload = pkt[off:]
                else:
                    whole = self.reassembler.add((src, dst, fnh, ident), foff, more,
                                                 payload, now)
                    if whole is None:
                        return None
                    data = memoryview(whole)
                    proto, off, frag = walk_extensions(data, fnh, 0)
                    payload = data[off:]
                    fragmented = True
                if frag is not None:
                    c["bad_fragment"] += 1  # a Fragment header inside a fragment
                    return None
        except ExtError as e:
            c["ext_" + e.reason] += 1
            return None
        c["delivered"] += 1
        if proto == PROTO_ICMPV6:
            self._icmp(src, dst, hop, payload, mcast, fragmented, now)
            return None
        if proto in (PROTO_TCP, PROTO_UDP):
            if proto == PROTO_TCP and mcast:
                c["multicast_tcp"] += 1
                return None
            return proto, src, dst, payload, mcast
        c["unknown_protocol"] += 1
        return None

    def _icmp(self, src: bytes, dst: bytes, hop: int, msg: memoryview, mcast: bool,
              fragmented: bool, now: float) -> None:
        ci = self._ci
        ci["in"] += 1
        if len(msg) < 4:
            ci["short"] += 1
            return
        if not icmpv6.verify(src, dst, msg):
            ci["bad_checksum"] += 1
            return
        t = msg[0]
        if t == ECHO_REQUEST:
            self._echo_request(src, dst, msg, mcast, now)
        elif t == ECHO_REPLY:
            ci["echo_reply_in"] += 1
            if len(msg) >= 8:
                ident, seq = struct.unpack_from("!HH", msg, 4)
                self.echo_replies.append(EchoReply(src, ident, seq, bytes(msg[8:]), now))
        elif t in _ND_TYPES:
            if hop != 255:
                ci["bad_hop_limit"] += 1  # RFC 4861 §6.1, §7.1: not from this link
                return
            if fragmented:
                ci["nd_fragmented"] += 1  # RFC 6980 §5
                return
            if t == NEIGHBOR_SOLICIT:
                self._ns_in(src, dst, msg, now)
            elif t == NEIGHBOR_ADVERT:
                self._na_in(dst, msg, mcast, now)
            elif t == ROUTER_ADVERT:
                self._ra_in(src, msg, now)
            elif t == ROUTER_SOLICIT:
                ci["rs_ignored"] += 1  # hosts do (RFC 4861 §6.2.6 is for routers)
            else:
                ci["redirect_in"] += 1  # not followed: the default router stays
        elif t == MLD_QUERY:
            self._mld_query(src, msg)
        else:
            ci[icmpv6.NAMES.get(t, f"type{t}") + "_in"] += 1

    def _echo_request(self, src: bytes, dst: bytes, msg: memoryview, mcast: bool,
                      now: float) -> None:
        ci = self._ci
        ci["echo_in"] += 1
        if len(msg) < 8 or msg[1] != 0:
            ci["short" if len(msg) < 8 else "bad_code"] += 1
            return
        if src == UNSPECIFIED:
            ci["bad_src"] += 1
            return
        # RFC 4443 §4.2: from the address the request went to, or (multicast) ours.
        rsrc = self.addrconf.select_source(src) if mcast else dst
        if rsrc is None:
            self._c["no_source"] += 1
            return
        ci["echo_out"] += 1
        reply = icmpv6.build(rsrc, src, ECHO_REPLY, 0, msg[4:])
        self.send(src, PROTO_ICMPV6, reply, now, src=rsrc, allow_fragments=True)

    def _ns_in(self, src: bytes, dst: bytes, msg: memoryview, now: float) -> None:
        ci = self._ci
        r = icmpv6.parse_ns(msg)
        if r is None or r[0][0] == 0xFF:
            ci["bad_ns"] += 1
            return
        target, opts = r
        unspec = src == UNSPECIFIED
        if unspec and (dst != solicited_node(target) or opts.slla is not None):
            ci["bad_ns"] += 1  # RFC 4861 §7.1.1: DAD probes go to the solicited group
            return
        ci["ns_in"] += 1
        if self.addrconf.dad_ns(target, unspec, opts.nonce, now):
            return  # tentative: never answered (RFC 4862 §5.4.3)
        if target not in self._ours:
            ci["ns_not_ours"] += 1
            return
        if not unspec and opts.slla is not None:
            self.nc.learn(src, opts.slla, now)
        # RFC 4861 §7.2.4: solicited NA with our link-layer address and Override; a DAD
        # probe (unspecified source) is answered to all-nodes with S clear.
        # The soliciting node is on this link (hop limit 255): answered directly, not
        # through a router, whatever our prefixes say (§7.2.4).
        to = ALL_NODES if unspec else src
        body = icmpv6.build_na(target, self.mac, solicited=not unspec, override=True)
        ci["na_out"] += 1
        self.send(to, PROTO_ICMPV6, icmpv6.build(target, to, NEIGHBOR_ADVERT, 0, body),
                  now, src=target, hop_limit=255, on_link=True)

    def _na_in(self, dst: bytes, msg: memoryview, mcast: bool, now: float) -> None:
        ci = self._ci
        na = icmpv6.parse_na(msg)
        if na is None or na.target[0] == 0xFF or (mcast and na.solicited):
            ci["bad_na"] += 1  # RFC 4861 §7.1.2
            return
        ci["na_in"] += 1
        if self.addrconf.dad_na(na.target, now):
            return
        if self.nc.advert(na.target, na.opts.tlla, na.solicited, na.override, na.router,
                          now):
            self.addrconf.router_gone(na.target)

    def _ra_in(self, src: bytes, msg: memoryview, now: float) -> None:
        ci = self._ci
        ra = icmpv6.parse_ra(msg)
        if ra is None or not is_link_local(src):
            ci["bad_ra"] += 1  # RFC 4861 §6.1.2
            return
        ci["ra_in"] += 1
        if ra.opts.slla is not None:
            self.nc.learn(src, ra.opts.slla, now, router=True)
        self.addrconf.ra(src, ra, self.link_mtu, now)

    # ------------------------------------------------------------------ send
    def next_hop(self, dst: bytes) -> bytes | None:
        """The neighbour to send ``dst`` to (RFC 4861 §5.2), or None (no route)."""
        if self._route_ok and dst == self._route_dst:
            return self._route_nh
        if dst in self._ours or dst == UNSPECIFIED:
            nh = None
        elif self.addrconf.on_link(dst):
            nh = dst
        else:
            nh = self.addrconf.default_router(self._known)
        self._route_dst, self._route_nh, self._route_ok = dst, nh, True
        return nh

    def send(self, dst: bytes, proto: int, payload: BytesLike, now: float, *,
             src: bytes | None = None, hop_limit: int | None = None,
             allow_fragments: bool = False, on_link: bool = False) -> None:
        """Send one packet (``src``: default by source selection; ``on_link``: ``dst``
        is a neighbour whatever the prefixes say). Failures are counted."""
        c = self._c
        if src is None:
            src = self.addrconf.select_source(dst)
            if src is None:
                c["no_source"] += 1
                return
        hop = self.addrconf.hop_limit if hop_limit is None else hop_limit
        n = len(payload)
        if n + IPV6_HLEN > self.mtu:
            if not allow_fragments or n > 65535 - 8:
                c["too_big"] += 1
                return
            self._ident = ident = (self._ident + 1) & 0xFFFFFFFF
            packets = fragment(src, dst, proto, payload, self.mtu, ident, hop)
            c["fragmented"] += 1
            c["fragments_out"] += len(packets)
        else:
            packets = [b"".join((build_header(src, dst, proto, n, hop), payload))]
        if dst[0] == 0xFF:
            eh: bytes | None = self.eth.header(multicast_mac(dst), ETHERTYPE_IPV6)
            nh = dst
        else:
            nh_ = dst if on_link else self.next_hop(dst)
            if nh_ is None:
                c["no_route"] += 1
                return
            nh = nh_
            eh = self.nc.header_for(nh, now)
        c["out"] += len(packets)
        if eh is not None:
            self._out.extend(eh + p for p in packets)
        else:
            for p in packets:
                self.nc.enqueue(nh, p, now)

    def send_tcp_gso(self, dst: bytes, segment: TsoSegment, now: float,
                     src: bytes | None) -> None:
        """Send a TCP super-segment (TSO) as one super-packet for the link to cut into
        ``segment.segments`` packets; counted as that many in ``out``. While the next hop
        is being resolved it is split here instead (``gso_split``) and queued as packets
        (``src``: the connection's address, which its checksum covers)."""
        c = self._c
        if src is None:
            src = self.addrconf.select_source(dst)
            if src is None:
                c["no_source"] += 1
                return
        data = segment.data
        n = len(data)
        nh = self.next_hop(dst) if dst[0] != 0xFF else None
        eh = None if nh is None or n > 0xFFFF else self.nc.header_for(nh, now)
        if eh is None:
            if nh is None:
                c["no_route"] += 1
                return
            c["gso_split"] += 1
            for piece in split(data, src, dst, segment.gso_size, segment.partial):
                self.send(dst, PROTO_TCP, piece, now, src=src)
            return
        c["out"] += segment.segments
        c["gso_out"] += 1
        self._out.append(GsoFrame(b"".join((eh, build_header(
            src, dst, PROTO_TCP, n, self.addrconf.hop_limit), data)), segment.gso_size,
            segment.partial))

    def _solicit(self, target: bytes, mac: bytes | None, now: float) -> None:
        """Address resolution / unreachability probe (RFC 4861 §7.2.2, §7.3.3)."""
        src = self.addrconf.select_source(target)
        if src is None:
            self._c["no_source"] += 1
            return
        dst = solicited_node(target) if mac is None else target
        msg = icmpv6.build(src, dst, NEIGHBOR_SOLICIT, 0, icmpv6.build_ns(target, self.mac))
        self._ci["ns_out"] += 1
        dmac = multicast_mac(dst) if mac is None else mac
        self._out.append(self.eth.header(dmac, ETHERTYPE_IPV6)
                         + build_header(src, dst, PROTO_ICMPV6, len(msg), 255) + msg)
        self._c["out"] += 1

    def _send_dad(self, target: bytes, nonce: bytes, now: float) -> None:
        """DAD probe (RFC 4862 §5.4.2): from ::, to the solicited-node group, no SLLA."""
        dst = solicited_node(target)
        msg = icmpv6.build(UNSPECIFIED, dst, NEIGHBOR_SOLICIT, 0,
                           icmpv6.build_ns(target, None, nonce))
        self._ci["ns_out"] += 1
        self._out.append(self.eth.header(multicast_mac(dst), ETHERTYPE_IPV6)
                         + build_header(UNSPECIFIED, dst, PROTO_ICMPV6, len(msg), 255) + msg)
        self._c["out"] += 1

    def _send_rs(self, now: float) -> None:
        """Router Solicitation (RFC 4861 §6.3.7) to all-routers."""
        ll = self.addrconf.link_local()
        src = UNSPECIFIED if ll is None else ll.ip
        msg = icmpv6.build(src, ALL_ROUTERS, ROUTER_SOLICIT, 0,
                           icmpv6.build_rs(None if ll is None else self.mac))
        self._ci["rs_out"] += 1
        self._out.append(self.eth.header(multicast_mac(ALL_ROUTERS), ETHERTYPE_IPV6)
                         + build_header(src, ALL_ROUTERS, PROTO_ICMPV6, len(msg), 255) + msg)
        self._c["out"] += 1

    def ping(self, dst: ipaddress.IPv6Address | bytes, ident: int, seq: int, data: bytes,
             now: float) -> None:
        """Send an Echo Request (replies land in ``echo_replies``)."""
        dst_b = dst if isinstance(dst, bytes) else dst.packed
        src = self.addrconf.select_source(dst_b)
        if src is None:
            self._c["no_source"] += 1
            return
        self._ci["echo_request_out"] += 1
        self.send(dst_b, PROTO_ICMPV6,
                  icmpv6.build_echo(src, dst_b, ECHO_REQUEST, ident, seq, data), now,
                  src=src, allow_fragments=True)

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest of neighbour cache, address configuration and reassembly."""
        best: float | None = None
        for t in (self.nc.next_deadline(), self.addrconf.next_deadline(),
                  self.reassembler.next_deadline(),
                  None if self._mld_repeat_at == math.inf else self._mld_repeat_at):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_deadline(self, now: float) -> None:
        """Fire due timers."""
        self._now = now
        if self._mld_repeat_at <= now:
            self._mld_repeat_at = math.inf
            self._send_mld_report(self._mld_repeat)
        self.nc.on_deadline(now)
        self.addrconf.on_deadline(now)
        self.reassembler.on_deadline(now)
