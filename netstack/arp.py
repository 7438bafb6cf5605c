"""ARP for IPv4 over Ethernet (RFC 826), with RFC 5227 announcements and conflict defence.

:class:`ArpLayer` keeps the neighbour cache of one interface and resolves next hops for
IPv4 output:

- lookup (:meth:`ArpLayer.header_for`) returns the ready-made Ethernet header towards a
  neighbour, so the hot path is one dict lookup and one time comparison;
- a miss queues the IPv4 packet (:meth:`ArpLayer.enqueue`, bounded per destination and in
  total bytes) and broadcasts a request, retried every ``retry_interval`` up to
  ``max_tries`` times; when the last try's interval passes without an answer the waiting
  packets are dropped and counted (``timeouts``, ``queue_dropped``);
- entries are reachable for ``reachable_time`` seconds; an entry used in its last
  ``retry_interval * max_tries`` seconds is re-confirmed with unicast requests (RFC 1122
  §2.3.2.1) so busy traffic never stalls on a fresh broadcast resolution;
- received packets follow RFC 826 "Packet Reception": the sender of any ARP packet updates
  an existing entry (the merge), a packet targeting our address adds the sender, and a
  request for our address is answered;
- RFC 5227: :meth:`ArpLayer.start` queues announcements (§2.3); a packet claiming our
  address is a conflict (§2.4), counted and defended with one announcement per
  ``defend_interval`` (§2.4 (b)); probes for our address (sender 0.0.0.0, §2.1.1) are
  answered;
- static entries never expire and are never changed by received packets.

Counters (layer ``arp``): ``requests_in``, ``replies_in``, ``requests_out``,
``replies_out``, ``announcements_out``, ``resolved``, ``timeouts``, ``queued``,
``queue_overflow``, ``queue_dropped``, ``pending_overflow``, ``cache_changes`` (a packet
changed an entry's MAC), ``static_conflicts``, ``conflicts``, ``defended``, ``probes_in``,
``learned``, ``refreshes``, ``expired``, ``evicted``, ``own``, ``other_target`` and the
drops ``short``, ``bad_header``, ``bad_op``, ``bad_sender``.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netstack.ethernet import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetLayer

__all__ = [
    "ARP_LEN",
    "OP_REPLY",
    "OP_REQUEST",
    "ArpConfig",
    "ArpEntry",
    "ArpLayer",
    "build_arp",
]

OP_REQUEST = 1
OP_REPLY = 2
#: Length of an ARP packet for IPv4 over Ethernet (RFC 826 "Packet format").
ARP_LEN = 28
_HTYPE_ETHERNET = 1
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ARP_FIXED = struct.Struct("!HHBBH")  # hrd, pro, hln, pln, op
_EXPECT_FIXED = (_HTYPE_ETHERNET, ETHERTYPE_IPV4, 6, 4)
_ZERO_MAC = bytes(6)
_ZERO_IP = bytes(4)


def build_arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """An ARP packet for IPv4 over Ethernet (RFC 826), without Ethernet header."""
    return _ARP.pack(_HTYPE_ETHERNET, ETHERTYPE_IPV4, 6, 4, op, sha, spa, tha, tpa)


@dataclass(frozen=True, slots=True)
class ArpConfig:
    """Timers and bounds of the neighbour cache."""

    #: Seconds an entry is usable after it was last confirmed.
    reachable_time: float = 300.0
    #: Seconds between requests for one address.
    retry_interval: float = 1.0
    #: Requests sent before giving up (the deadline is ``max_tries * retry_interval``).
    max_tries: int = 3
    #: IPv4 packets queued per unresolved destination; more are dropped and counted.
    queue_limit: int = 64
    #: Bytes queued for all unresolved destinations together.
    queue_bytes_limit: int = 1 << 20
    #: Destinations being resolved at once.
    max_pending: int = 32
    #: Dynamic cache entries; the one expiring first is evicted to make room.
    max_entries: int = 256
    #: RFC 5227 §2.3 ANNOUNCE_NUM and ANNOUNCE_INTERVAL.
    announce_count: int = 2
    announce_interval: float = 2.0
    #: RFC 5227 §2.4 DEFEND_INTERVAL.
    defend_interval: float = 10.0


class ArpEntry:
    """One neighbour: its MAC, the Ethernet header towards it, and its timers."""

    __slots__ = ("expires", "hdr", "mac", "next_try", "refresh_at", "static", "tries")

    def __init__(self, mac: bytes, hdr: bytes, expires: float, refresh_at: float,
                 static: bool = False) -> None:
        self.mac = mac
        self.hdr = hdr
        self.expires = expires
        self.refresh_at = refresh_at
        self.static = static
        self.tries = 0  # unicast refresh requests sent for the current confirmation
        self.next_try = math.inf


class _Pending:
    """A destination being resolved: requests sent, next retry, packets waiting."""

    __slots__ = ("nbytes", "next_try", "queue", "tries")

    def __init__(self, next_try: float) -> None:
        self.tries = 1
        self.next_try = next_try
        self.queue: list[bytes] = []
        self.nbytes = 0


class ArpLayer:
    """The neighbour cache and ARP protocol engine of one interface (RFC 826)."""

    def __init__(self, eth: EthernetLayer, ip: bytes, counters: defaultdict[str, int],
                 output: list[bytes], config: ArpConfig | None = None,
                 static: Mapping[bytes, bytes] | None = None) -> None:
        self.eth = eth
        self.mac = eth.mac
        self.ip = ip
        self.config = cfg = config if config is not None else ArpConfig()
        self._c = counters
        self._out = output
        self._cache: dict[bytes, ArpEntry] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._refreshing: set[bytes] = set()
        self._queued_bytes = 0
        self._announce_left = 0
        self._announce_at = math.inf
        self._last_defend = -math.inf
        self._refresh_window = cfg.retry_interval * cfg.max_tries
        for name in ("requests_in", "replies_in", "requests_out", "replies_out",
                     "resolved", "timeouts", "cache_changes", "queue_dropped"):
            counters[name] += 0
        for ip_b, mac in (static or {}).items():
            self.add_static(ip_b, mac)

    # ------------------------------------------------------------------ cache
    def add_static(self, ip: bytes, mac: bytes) -> None:
        """A permanent entry (never expires, never changed by received packets)."""
        if len(ip) != 4 or len(mac) != 6:
            raise ValueError("static neighbour needs a 4-byte IPv4 and a 6-byte MAC address")
        self._cache[ip] = ArpEntry(mac, self.eth.header(mac, ETHERTYPE_IPV4), math.inf,
                                   math.inf, static=True)
        self._refreshing.discard(ip)
        self._resolved(ip, self._cache[ip])

    def lookup(self, ip: bytes, now: float) -> bytes | None:
        """The MAC of a usable entry for ``ip`` (no side effects), or None."""
        e = self._cache.get(ip)
        if e is None or now >= e.expires:
            return None
        return e.mac

    def entries(self) -> dict[bytes, ArpEntry]:
        """The cache (read-only use: tests, diagnostics)."""
        return self._cache

    def pending(self) -> Iterable[bytes]:
        """Addresses being resolved."""
        return self._pending.keys()

    def header_for(self, ip: bytes, now: float) -> bytes | None:
        """The Ethernet header for an IPv4 packet to neighbour ``ip``, or None on a miss.

        On a miss the caller passes the packet to :meth:`enqueue`.
        """
        e = self._cache.get(ip)
        if e is not None and now < e.refresh_at:
            return e.hdr
        return self._header_slow(ip, e, now)

    def _header_slow(self, ip: bytes, e: ArpEntry | None, now: float) -> bytes | None:
        if e is None:
            return None
        if now >= e.expires:
            self._expire(ip)
            return None
        if e.tries == 0:
            # Re-confirm while still using the entry (RFC 1122 §2.3.2.1 unicast poll).
            self._c["refreshes"] += 1
            self._send_request(ip, e.mac)
            e.tries = 1
            e.next_try = now + self.config.retry_interval
            self._refreshing.add(ip)
        return e.hdr

    def _expire(self, ip: bytes) -> None:
        self._c["expired"] += 1
        del self._cache[ip]
        self._refreshing.discard(ip)

    def enqueue(self, ip: bytes, packet: bytes, now: float) -> None:
        """Hold an IPv4 packet for ``ip`` until it is resolved; start resolving it."""
        c = self._c
        cfg = self.config
        p = self._pending.get(ip)
        if p is None:
            if len(self._pending) >= cfg.max_pending:
                c["pending_overflow"] += 1
                return
            p = self._pending[ip] = _Pending(now + cfg.retry_interval)
            self._send_request(ip, BROADCAST)
        if len(p.queue) >= cfg.queue_limit or \
                self._queued_bytes + len(packet) > cfg.queue_bytes_limit:
            c["queue_overflow"] += 1
            return
        p.queue.append(packet)
        p.nbytes += len(packet)
        self._queued_bytes += len(packet)
        c["queued"] += 1

    def _learn(self, ip: bytes, mac: bytes, now: float) -> ArpEntry:
        cfg = self.config
        if len(self._cache) >= cfg.max_entries:
            victim = min((k for k, v in self._cache.items() if not v.static),
                         key=lambda k: self._cache[k].expires, default=None)
            if victim is not None:
                self._c["evicted"] += 1
                del self._cache[victim]
                self._refreshing.discard(victim)
        expires = now + cfg.reachable_time
        e = ArpEntry(mac, self.eth.header(mac, ETHERTYPE_IPV4), expires,
                     expires - self._refresh_window)
        self._cache[ip] = e
        self._c["learned"] += 1
        return e

    def _confirm(self, ip: bytes, e: ArpEntry, mac: bytes, now: float) -> None:
        """RFC 826 merge: the sender of a packet updates its existing entry."""
        if e.static:
            if mac != e.mac:
                self._c["static_conflicts"] += 1
            return
        if mac != e.mac:
            self._c["cache_changes"] += 1
            e.mac = mac
            e.hdr = self.eth.header(mac, ETHERTYPE_IPV4)
        e.expires = now + self.config.reachable_time
        e.refresh_at = e.expires - self._refresh_window
        e.tries = 0
        e.next_try = math.inf
        self._refreshing.discard(ip)

    def _resolved(self, ip: bytes, e: ArpEntry) -> None:
        p = self._pending.pop(ip, None)
        if p is None:
            return
        self._c["resolved"] += 1
        self._queued_bytes -= p.nbytes
        hdr = e.hdr
        self._out.extend([hdr + pkt for pkt in p.queue])

    # ---------------------------------------------------------------- receive
    def receive(self, pkt: memoryview, now: float) -> None:
        """Handle one ARP packet (the Ethernet payload; trailing padding is ignored)."""
        c = self._c
        if len(pkt) < ARP_LEN:
            c["short"] += 1
            return
        hrd, pro, hln, pln, op, sha, spa, _tha, tpa = _ARP.unpack_from(pkt, 0)
        if (hrd, pro, hln, pln) != _EXPECT_FIXED:
            c["bad_header"] += 1
            return
        if op == OP_REQUEST:
            c["requests_in"] += 1
        elif op == OP_REPLY:
            c["replies_in"] += 1
        else:
            c["bad_op"] += 1
            return
        if sha == self.mac:
            c["own"] += 1  # our own packet looped back
            return
        if sha[0] & 1 or sha == _ZERO_MAC:
            c["bad_sender"] += 1  # never learn a group or null hardware address
            return
        my_ip = self.ip
        if spa == my_ip:
            self._conflict(now)
            return
        if spa == _ZERO_IP:
            # RFC 5227 §2.1.1 probe: learn nothing; answer if it asks for our address.
            c["probes_in"] += 1
            if op == OP_REQUEST and tpa == my_ip:
                self._send_reply(sha, _ZERO_IP)
            return
        if spa[0] >= 224 or spa == b"\xff\xff\xff\xff":
            c["bad_sender"] += 1
            return
        e = self._cache.get(spa)
        if e is not None:
            self._confirm(spa, e, sha, now)
            self._resolved(spa, e)
        elif tpa == my_ip or spa in self._pending:
            self._resolved(spa, self._learn(spa, sha, now))
        if tpa != my_ip:
            c["other_target"] += 1
            return
        if op == OP_REQUEST:
            self._send_reply(sha, spa)

    def _conflict(self, now: float) -> None:
        """Someone else claims our address (RFC 5227 §2.4): count, defend at most once per
        DEFEND_INTERVAL by broadcasting an announcement (option (b))."""
        self._c["conflicts"] += 1
        if now - self._last_defend >= self.config.defend_interval:
            self._last_defend = now
            self._c["defended"] += 1
            self._announce()

    # ----------------------------------------------------------------- output
    def _send_request(self, target_ip: bytes, dst_mac: bytes) -> None:
        self._c["requests_out"] += 1
        self._out.append(self.eth.header(dst_mac, ETHERTYPE_ARP) + build_arp(
            OP_REQUEST, self.mac, self.ip, _ZERO_MAC, target_ip))

    def _send_reply(self, tha: bytes, tpa: bytes) -> None:
        self._c["replies_out"] += 1
        self._out.append(self.eth.header(tha, ETHERTYPE_ARP) + build_arp(
            OP_REPLY, self.mac, self.ip, tha, tpa))

    def _announce(self) -> None:
        # RFC 5227 §2.3: a request with sender and target IP both ours, target MAC zero.
        self._c["announcements_out"] += 1
        self._out.append(self.eth.header(BROADCAST, ETHERTYPE_ARP) + build_arp(
            OP_REQUEST, self.mac, self.ip, _ZERO_MAC, self.ip))

    def start(self, now: float) -> None:
        """Announce our address (RFC 5227 §2.3): one now, the rest at the interval."""
        n = self.config.announce_count
        if n <= 0:
            return
        self._announce()
        self._announce_left = n - 1
        self._announce_at = now + self.config.announce_interval if n > 1 else math.inf

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest retry, refresh, expiry, give-up or announcement time."""
        t = self._announce_at
        for p in self._pending.values():
            if p.next_try < t:
                t = p.next_try
        cache = self._cache
        for ip in self._refreshing:
            e = cache[ip]
            d = e.next_try if e.tries < self.config.max_tries else e.expires
            if d < t:
                t = d
        return None if t == math.inf else t

    def on_deadline(self, now: float) -> None:
        """Retry requests, give up on silent destinations, expire unconfirmed entries."""
        cfg = self.config
        c = self._c
        if now >= self._announce_at:
            self._announce()
            self._announce_left -= 1
            self._announce_at = (now + cfg.announce_interval if self._announce_left > 0
                                 else math.inf)
        for ip, p in list(self._pending.items()):
            if now < p.next_try:
                continue
            if p.tries < cfg.max_tries:
                p.tries += 1
                p.next_try = now + cfg.retry_interval
                self._send_request(ip, BROADCAST)
                continue
            del self._pending[ip]
            c["timeouts"] += 1
            c["queue_dropped"] += len(p.queue)
            self._queued_bytes -= p.nbytes
        for ip in list(self._refreshing):
            e = self._cache[ip]
            if now >= e.expires:
                self._expire(ip)
            elif now >= e.next_try and e.tries < cfg.max_tries:
                e.tries += 1
                e.next_try = now + cfg.retry_interval
                self._send_request(ip, e.mac)
