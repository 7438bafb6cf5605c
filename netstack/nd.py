"""The IPv6 neighbour cache of one interface (RFC 4861 §7.2, §7.3), pure.

States (RFC 4861 §7.3.2), kept to what a host needs:

- ``INCOMPLETE``: address resolution in progress. Packets to the neighbour wait in a
  bounded queue; a multicast Neighbor Solicitation goes to its solicited-node group every
  ``retrans_timer`` (RETRANS_TIMER, 1 s), ``max_multicast_solicit`` (3) times; when the
  last one's interval passes unanswered the entry and its packets are dropped
  (``timeouts``, ``queue_dropped``) — the deadline of §7.2.2.
- ``REACHABLE``: confirmed by a solicited advertisement, usable for ``reachable_time``
  (ReachableTime: BaseReachableTime 30 s times a random factor in [0.5, 1.5], §6.3.2);
  then it is ``STALE`` (checked when it is next used, §7.3.3).
- ``STALE``: a link-layer address learnt without confirmation (an unsolicited NA, the
  source of an NS or RA, or an expired REACHABLE). Sending to it uses the address and
  moves it to ``DELAY``.
- ``DELAY``: after ``delay_first_probe`` (DELAY_FIRST_PROBE_TIME, 5 s) without a
  confirmation the entry goes to ``PROBE``: unicast solicitations to the cached address
  every ``retrans_timer``, ``max_unicast_solicit`` (3) times, then the entry is deleted
  (``unreachable``) and the next packet resolves afresh. A solicited NA confirms it.
  (We take no upper-layer hints (§7.3.1): TCP progress does not confirm reachability, so
  a busy neighbour is probed by unicast about every ReachableTime — a few frames.)

Received advertisements follow §7.2.5 (INCOMPLETE: record and flush the queue; otherwise
the Override and Solicited flags decide), and solicitations or router messages carrying a
source link-layer address follow §7.2.3/§6.3.4 (create or update as STALE). The cache is
bounded (``max_entries``; the oldest entry not being resolved is evicted).

Counters (layer ``nd``): ``resolved``, ``timeouts``, ``queued``, ``queue_overflow``,
``queue_dropped``, ``pending_overflow``, ``solicits_out`` (by the cache), ``learned``,
``updated`` (a link-layer address changed), ``unreachable``, ``evicted``,
``advert_ignored`` (no entry, or an INCOMPLETE one without a target address).
"""

from __future__ import annotations

import enum
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from netstack.ethernet import ETHERTYPE_IPV6, EthernetLayer
from netstack.link.base import OutFrame

__all__ = ["NdConfig", "NdState", "NeighborCache", "NeighborEntry"]


class NdState(enum.Enum):
    """Neighbour cache entry states (RFC 4861 §7.3.2)."""

    INCOMPLETE = "INCOMPLETE"
    REACHABLE = "REACHABLE"
    STALE = "STALE"
    DELAY = "DELAY"
    PROBE = "PROBE"


@dataclass(frozen=True, slots=True)
class NdConfig:
    """Timers and bounds (defaults: RFC 4861 §10 constants)."""

    retrans_timer: float = 1.0
    base_reachable_time: float = 30.0
    delay_first_probe: float = 5.0
    max_multicast_solicit: int = 3
    max_unicast_solicit: int = 3
    #: Packets queued per unresolved neighbour, and bytes for all together.
    queue_limit: int = 64
    queue_bytes_limit: int = 1 << 20
    #: Neighbours being resolved at once, and entries in all.
    max_pending: int = 32
    max_entries: int = 256


class NeighborEntry:
    """One neighbour: state, link-layer address and the Ethernet header towards it."""

    __slots__ = ("deadline", "hdr", "is_router", "mac", "nbytes", "probes", "queue",
                 "reachable_until", "state")

    def __init__(self, state: NdState) -> None:
        self.state = state
        self.mac: bytes | None = None
        self.hdr = b""
        self.is_router = False
        self.reachable_until = 0.0
        self.deadline = math.inf  # next retransmission / state change
        self.probes = 0
        self.queue: list[bytes] = []
        self.nbytes = 0


#: ``solicit(target, unicast_mac_or_None, now)``: send a Neighbor Solicitation.
Solicit = Callable[[bytes, "bytes | None", float], None]


class NeighborCache:
    """Neighbour cache and address resolution for IPv6 over Ethernet (RFC 4861 §7)."""

    def __init__(self, eth: EthernetLayer, output: list[OutFrame],
                 counters: defaultdict[str, int], solicit: Solicit,
                 config: NdConfig | None = None, rng: random.Random | None = None) -> None:
        self.eth = eth
        self.config = cfg = config if config is not None else NdConfig()
        self._out = output
        self._c = counters
        self._solicit = solicit
        self._rng = rng if rng is not None else random.Random()
        self._cache: dict[bytes, NeighborEntry] = {}
        self._queued_bytes = 0
        self.retrans_timer = cfg.retrans_timer
        self.reachable_time = 0.0
        self.set_base_reachable_time(cfg.base_reachable_time)
        for name in ("resolved", "timeouts", "queue_dropped", "learned", "unreachable"):
            counters[name] += 0

    def set_base_reachable_time(self, base: float) -> None:
        """BaseReachableTime (from an RA, §6.3.4): ReachableTime is re-drawn from
        [0.5, 1.5] times it (§6.3.2 MIN_RANDOM_FACTOR, MAX_RANDOM_FACTOR)."""
        self.reachable_time = base * self._rng.uniform(0.5, 1.5)

    # ----------------------------------------------------------------- lookup
    def entries(self) -> dict[bytes, NeighborEntry]:
        """The cache (read-only use: tests, diagnostics)."""
        return self._cache

    def header_for(self, ip: bytes, now: float) -> bytes | None:
        """The Ethernet header towards neighbour ``ip``, or None when it must be resolved
        (the caller then passes the packet to :meth:`enqueue`)."""
        e = self._cache.get(ip)
        if e is None:
            return None
        st = e.state
        if st is NdState.REACHABLE:
            if now < e.reachable_until:
                return e.hdr
            st = NdState.STALE  # ReachableTime passed (§7.3.3)
        if st is NdState.STALE:
            e.state = NdState.DELAY  # first use of a STALE entry (§7.3.3)
            e.deadline = now + self.config.delay_first_probe
            return e.hdr
        if st is NdState.INCOMPLETE:
            return None
        return e.hdr

    def enqueue(self, ip: bytes, packet: bytes, now: float) -> None:
        """Hold a packet for ``ip`` while it is resolved; start resolving it (§7.2.2)."""
        c = self._c
        cfg = self.config
        e = self._cache.get(ip)
        if e is None:
            if sum(1 for x in self._cache.values()
                   if x.state is NdState.INCOMPLETE) >= cfg.max_pending:
                c["pending_overflow"] += 1
                return
            e = self._new(ip, NdState.INCOMPLETE)
            e.probes = 1
            e.deadline = now + self.retrans_timer
            c["solicits_out"] += 1
            self._solicit(ip, None, now)
        elif e.state is not NdState.INCOMPLETE:
            self._out.append(e.hdr + packet)
            return
        if len(e.queue) >= cfg.queue_limit or \
                self._queued_bytes + len(packet) > cfg.queue_bytes_limit:
            c["queue_overflow"] += 1
            return
        e.queue.append(packet)
        e.nbytes += len(packet)
        self._queued_bytes += len(packet)
        c["queued"] += 1

    def _new(self, ip: bytes, state: NdState) -> NeighborEntry:
        if len(self._cache) >= self.config.max_entries:
            for k, v in self._cache.items():
                if v.state is not NdState.INCOMPLETE:
                    del self._cache[k]
                    self._c["evicted"] += 1
                    break
        e = self._cache[ip] = NeighborEntry(state)
        return e

    def _set_mac(self, e: NeighborEntry, mac: bytes) -> None:
        if e.mac is not None and e.mac != mac:
            self._c["updated"] += 1
        e.mac = mac
        e.hdr = self.eth.header(mac, ETHERTYPE_IPV6)

    def _flush(self, e: NeighborEntry) -> None:
        if e.queue:
            hdr = e.hdr
            self._out.extend(hdr + p for p in e.queue)
            self._queued_bytes -= e.nbytes
            e.queue = []
            e.nbytes = 0

    def _drop(self, ip: bytes) -> None:
        e = self._cache.pop(ip)
        if e.queue:
            self._c["queue_dropped"] += len(e.queue)
            self._queued_bytes -= e.nbytes

    def remove(self, ip: bytes) -> None:
        """Forget ``ip`` (and drop what waits for it)."""
        if ip in self._cache:
            self._drop(ip)

    # ---------------------------------------------------------------- learning
    def learn(self, ip: bytes, mac: bytes, now: float, router: bool = False) -> None:
        """A source link-layer address from an NS (§7.2.3), RS or RA (§6.3.4): create
        the entry as STALE, or update it (STALE when the address changed); an INCOMPLETE
        entry gets its address and sends what waits."""
        e = self._cache.get(ip)
        if e is None:
            e = self._new(ip, NdState.STALE)
            self._set_mac(e, mac)
            e.deadline = math.inf
            self._c["learned"] += 1
        elif e.state is NdState.INCOMPLETE:
            self._set_mac(e, mac)
            e.state = NdState.STALE
            e.deadline = math.inf
            self._c["resolved"] += 1
            self._flush(e)
        elif e.mac != mac:
            self._set_mac(e, mac)
            e.state = NdState.STALE
            e.deadline = math.inf
        if router:
            e.is_router = True

    def advert(self, target: bytes, tlla: bytes | None, solicited: bool, override: bool,
               router: bool, now: float) -> bool:
        """A received Neighbor Advertisement (§7.2.5). Returns True when the neighbour
        stopped being a router (R clear after it was set: drop it as default router)."""
        e = self._cache.get(target)
        if e is None:
            self._c["advert_ignored"] += 1  # no entry: nothing asked (§7.2.5)
            return False
        if e.state is NdState.INCOMPLETE:
            if tlla is None:
                self._c["advert_ignored"] += 1
                return False
            self._set_mac(e, tlla)
            self._c["resolved"] += 1
            if solicited:
                e.state = NdState.REACHABLE
                e.reachable_until = now + self.reachable_time
            else:
                e.state = NdState.STALE
            e.deadline = math.inf
            e.is_router = router
            self._flush(e)
            return False
        same = tlla is None or tlla == e.mac
        if not override and not same:
            if e.state is NdState.REACHABLE:
                e.state = NdState.STALE  # keep the address, but doubt it
            return False
        if not same and tlla is not None:
            self._set_mac(e, tlla)
        if solicited:
            e.state = NdState.REACHABLE
            e.reachable_until = now + self.reachable_time
            e.deadline = math.inf
        elif not same:
            e.state = NdState.STALE
            e.deadline = math.inf
        was = e.is_router
        e.is_router = router
        return was and not router

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest retransmission or state change."""
        best = math.inf
        for e in self._cache.values():
            if e.deadline < best:
                best = e.deadline
        return None if best == math.inf else best

    def on_deadline(self, now: float) -> None:
        """Retransmit solicitations, move DELAY to PROBE, give up on silent neighbours."""
        cfg = self.config
        c = self._c
        for ip, e in list(self._cache.items()):
            if e.deadline > now:
                continue
            if e.state is NdState.INCOMPLETE:
                if e.probes >= cfg.max_multicast_solicit:
                    c["timeouts"] += 1
                    self._drop(ip)
                    continue
                e.probes += 1
                e.deadline = now + self.retrans_timer
                c["solicits_out"] += 1
                self._solicit(ip, None, now)
            elif e.state is NdState.DELAY:
                e.state = NdState.PROBE
                e.probes = 1
                e.deadline = now + self.retrans_timer
                c["solicits_out"] += 1
                self._solicit(ip, e.mac, now)
            elif e.state is NdState.PROBE:
                if e.probes >= cfg.max_unicast_solicit:
                    c["unreachable"] += 1
                    self._drop(ip)
                    continue
                e.probes += 1
                e.deadline = now + self.retrans_timer
                c["solicits_out"] += 1
                self._solicit(ip, e.mac, now)
            else:
                e.deadline = math.inf
