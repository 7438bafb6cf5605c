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
- static entries never expire and are never changed by received packets;
- the address can change at runtime (:meth:`ArpLayer.set_ip`, DHCP): while it is
  0.0.0.0 (unconfigured, RFC 2131 before BOUND) nothing is answered, announced or
  claimed, and existing entries are only refreshed;
- :class:`ArpProbe` (RFC 5227 §2.1.1) checks that an address is free before it is used:
  :meth:`ArpLayer.probe` sends probes (sender IP 0.0.0.0) and watches every received
  ARP packet for the address; :attr:`ArpProbe.result` says ``"clear"`` or
  ``"conflict"`` when done.

Counters (layer ``arp``): ``requests_in``, ``replies_in``, ``requests_out``,
``replies_out``, ``announcements_out``, ``resolved``, ``timeouts``, ``queued``,
``queue_overflow``, ``queue_dropped``, ``pending_overflow``, ``cache_changes`` (a packet
changed an entry's MAC), ``static_conflicts``, ``conflicts``, ``defended``, ``probes_in``,
``learned``, ``refreshes``, ``expired``, ``evicted``, ``own``, ``other_target``,
``probes_out``, ``probe_conflicts``, ``unconfigured`` (packets seen without an address)
and the drops ``short``, ``bad_header``, ``bad_op``, ``bad_sender``.
"""

from __future__ import annotations

import math
import random
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netstack.ethernet import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetLayer
from netstack.link.base import OutFrame

__all__ = [
    "ARP_LEN",
    "OP_REPLY",
    "OP_REQUEST",
    "ArpConfig",
    "ArpEntry",
    "ArpLayer",
    "ArpProbe",
    "ProbeConfig",
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


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """RFC 5227 §1.1 timing of an address probe (defaults are the RFC's constants).

    A probe takes ``wait`` + about ``num`` * ``interval`` + ``announce_wait`` seconds:
    about 7 s with the RFC values, which a boot loader may shorten (:meth:`fast`).
    """

    #: PROBE_WAIT: a random delay in [0, wait) before the first probe.
    wait: float = 1.0
    #: PROBE_NUM probes, PROBE_MIN..PROBE_MAX seconds apart.
    num: int = 3
    min_interval: float = 1.0
    max_interval: float = 2.0
    #: ANNOUNCE_WAIT: listening time after the last probe.
    announce_wait: float = 2.0

    @classmethod
    def fast(cls) -> ProbeConfig:
        """A shortened probe (~1 s) for interactive commands and tests."""
        return cls(wait=0.1, num=2, min_interval=0.2, max_interval=0.3, announce_wait=0.4)


class ArpProbe:
    """One RFC 5227 §2.1.1 probe of ``ip``: probes out, watch for a conflict.

    A conflict is any ARP packet (request or reply) whose sender IP is ``ip``, or a probe
    for ``ip`` from another host (§2.1.1 "if the host receives any ARP packet ... where
    the packet's 'sender IP address' is the address being probed ... [or] any ARP Probe
    where the packet's 'target IP address' is the address being probed for, and the
    packet's 'sender hardware address' is not the hardware address of any of the host's
    interfaces").
    """

    __slots__ = ("config", "conflict_mac", "ip", "next_at", "result", "sent")

    def __init__(self, ip: bytes, now: float, config: ProbeConfig,
                 rng: random.Random) -> None:
        self.ip = ip
        self.config = config
        self.sent = 0
        self.result: str | None = None  # None while running, "clear" or "conflict"
        self.conflict_mac: bytes | None = None
        self.next_at = now + rng.uniform(0.0, config.wait)

    def observe(self, sha: bytes, spa: bytes, tpa: bytes, my_mac: bytes) -> bool:
        """Check one received ARP packet; True when it is a conflict."""
        if self.result is not None or sha == my_mac:
            return False
        if spa == self.ip or (spa == _ZERO_IP and tpa == self.ip):
            self.result = "conflict"
            self.conflict_mac = sha
            self.next_at = math.inf
            return True
        return False


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
                 output: list[OutFrame], config: ArpConfig | None = None,
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
        self._probe: ArpProbe | None = None
        self._rng = random.Random()
        for name in ("requests_in", "replies_in", "requests_out", "replies_out",
                     "resolved", "timeouts", "cache_changes", "queue_dropped"):
            counters[name] += 0
        for ip_b, mac in (static or {}).items():
            self.add_static(ip_b, mac)

    # -------------------------------------------------------------- address
    def set_ip(self, ip: bytes) -> None:
        """Our address changed (DHCP); 0.0.0.0 means unconfigured. Announcements still
        pending for the old address are cancelled (call :meth:`start` to announce)."""
        if len(ip) != 4:
            raise ValueError("an IPv4 address is 4 bytes")
        self.ip = ip
        self._announce_left = 0
        self._announce_at = math.inf

    def probe(self, ip: bytes, now: float, config: ProbeConfig | None = None,
              rng: random.Random | None = None) -> ArpProbe:
        """Start probing ``ip`` (RFC 5227 §2.1.1); replaces a probe in progress."""
        self._probe = ArpProbe(ip, now, config or ProbeConfig(), rng or self._rng)
        return self._probe

    def cancel_probe(self) -> None:
        """Forget the probe in progress (if any)."""
        self._probe = None

    def _send_probe(self, p: ArpProbe) -> None:
        # RFC 5227 §2.1.1: sender hardware ours, sender IP zero, target hardware zero.
        self._c["probes_out"] += 1
        self._out.append(self.eth.header(BROADCAST, ETHERTYPE_ARP) + build_arp(
            OP_REQUEST, self.mac, _ZERO_IP, _ZERO_MAC, p.ip))

    def _probe_tick(self, p: ArpProbe, now: float) -> None:
        if p.result is not None or now < p.next_at:
            return
        cfg = p.config
        if p.sent < cfg.num:
            self._send_probe(p)
            p.sent += 1
            if p.sent < cfg.num:
                p.next_at = now + self._rng.uniform(cfg.min_interval, cfg.max_interval)
            else:
                p.next_at = now + cfg.announce_wait
            return
        p.result = "clear"
        p.next_at = math.inf
        self._probe = None

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
        p = self._probe
        if p is not None and p.observe(sha, spa, tpa, self.mac):
            c["probe_conflicts"] += 1
            self._probe = None
        my_ip = self.ip
        if my_ip == _ZERO_IP:
            # Unconfigured: claim nothing, answer nothing; refresh what we know.
            c["unconfigured"] += 1
            e0 = self._cache.get(spa)
            if e0 is not None:
                self._confirm(spa, e0, sha, now)
                self._resolved(spa, e0)
            return
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
        if n <= 0 or self.ip == _ZERO_IP:
            return
        self._announce()
        self._announce_left = n - 1
        self._announce_at = now + self.config.announce_interval if n > 1 else math.inf

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest retry, refresh, expiry, give-up or announcement time."""
        t = self._announce_at
        if self._probe is not None and self._probe.next_at < t:
            t = self._probe.next_at
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
        if self._probe is not None:
            self._probe_tick(self._probe, now)
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
