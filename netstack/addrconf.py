"""IPv6 address configuration of one interface, pure: link-local and static addresses,
Duplicate Address Detection, router solicitation, SLAAC, default routers and on-link
prefixes (RFC 4862, RFC 4861 §6.3).

- Addresses (:class:`Ip6Addr`) start ``TENTATIVE`` and run DAD (RFC 4862 §5.4): after a
  random delay in [0, ``dad_delay``) (§5.4.2: MAX_RTR_SOLICITATION_DELAY) ``dad_transmits``
  Neighbor Solicitations leave from the unspecified address to the address's
  solicited-node group, one RetransTimer apart; one RetransTimer after the last, the
  address is ``PREFERRED``. An NA for it, or an NS for it from the unspecified address
  (another node's DAD) without our nonce (RFC 7527 §4.1: our own probe looped back
  carries our nonce) makes it ``DUPLICATE`` (§5.4.5): never used. A stable IID (RFC 7217
  §6) then tries the next DAD_Counter, up to ``idgen_retries`` times. ``dad=False``
  skips DAD: addresses are preferred at once (DupAddrDetectTransmits = 0, §5.4).
- The link-local address fe80::/64 + IID is formed at start (§5.3).
- Router solicitation (RFC 4861 §6.3.7): after a random delay in [0, ``rs_delay``),
  ``rs_count`` RS to ff02::2 every ``rs_interval``, stopped by the first RA with a
  non-zero router lifetime. The source is our link-local address once it is preferred,
  else the unspecified address (then without SLLA, §4.1).
- Router Advertisements (RFC 4861 §6.3.4): Cur Hop Limit, Reachable Time and Retrans
  Timer when non-zero, the router as default router for its lifetime (0 removes it),
  the MTU option when in [1280, link MTU], Prefix Information with L as on-link prefix
  (valid lifetime; 0 removes it) and with A (when ``slaac``) as an address prefix
  (RFC 4862 §5.5.3): only /64 prefixes (the IID is 64 bits), never link-local ones,
  preferred lifetime not above valid; a known prefix's lifetimes are updated with the
  "two hours" rule of §5.5.3 e). Addresses become ``DEPRECATED`` when their preferred
  lifetime ends (still accepted, not chosen as source for new traffic) and are removed
  when their valid lifetime ends.
- Static addresses (``addresses``) make their prefix on-link (they are configured with
  a prefix length); a static ``gateway`` is the default router and is preferred to
  routers learnt from RAs.
- Interface identifiers (``iid``): ``"eui64"`` modified EUI-64 from the MAC (RFC 4291
  App. A), ``"stable"`` RFC 7217 (``secret``; one per prefix), ``"random"`` (RFC 8981
  style, one per prefix).
- Source address selection (RFC 6724 §5, simplified to what a single-interface host
  needs): never a tentative or duplicate address; same scope as the destination (rule
  2: link-local for link-local destinations); preferred over deprecated (rule 3); then
  the longest matching prefix (rule 8); the link-local address as a last resort.

Counters (layer ``nd``): ``dad_ns_out``, ``dad_ok``, ``dad_duplicates``,
``dad_own_looped``, ``conflicts``, ``rs_out``, ``ra_in``, ``ra_ignored``,
``slaac_addresses``, ``prefix_ignored``, ``addresses_expired``, ``routers_expired``.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from netstack.icmpv6 import INFINITE, RouterAdvert
from netstack.ipv6 import (
    eui64_iid,
    is_link_local,
    is_multicast,
    link_local,
    random_iid,
    stable_iid,
)
from netstack.nd import NdConfig

__all__ = ["IID_MODES", "AddrConf", "AddrState", "Ip6Addr", "Ipv6Config"]

IID_MODES = ("eui64", "stable", "random")
#: RFC 4862 §5.5.3 e): the two hours a known prefix's valid lifetime may be cut to.
TWO_HOURS = 7200.0


@dataclass(frozen=True)
class Ipv6Config:
    """IPv6 of one interface (all optional: the link-local address is always formed)."""

    #: Static addresses with their prefix (on-link).
    addresses: tuple[ipaddress.IPv6Interface, ...] = ()
    #: Static default router (on-link; a link-local or an on-link global address).
    gateway: ipaddress.IPv6Address | None = None
    #: Stateless autoconfiguration from RA prefixes with the A flag (RFC 4862 §5.5).
    slaac: bool = False
    #: Learn routers, on-link prefixes, MTU and timers from RAs (RFC 4861 §6.3.4).
    accept_ra: bool = True
    #: Send router solicitations (None: when ``slaac``).
    router_solicit: bool | None = None
    #: Interface identifier: "eui64", "stable" (RFC 7217) or "random".
    iid: str = "eui64"
    #: RFC 7217 secret_key for "stable" IIDs (empty: a random one, stable for this run).
    secret: bytes = b""
    #: Duplicate Address Detection (RFC 4862 §5.4); False skips it.
    dad: bool = True
    dad_transmits: int = 1
    #: Random delay before the first DAD probe, at most (RFC 4862 §5.4.2).
    dad_delay: float = 1.0
    #: RFC 7217 §6 IDGEN_RETRIES.
    idgen_retries: int = 3
    #: RFC 4861 §10 MAX_RTR_SOLICITATION_DELAY, RTR_SOLICITATION_INTERVAL,
    #: MAX_RTR_SOLICITATIONS.
    rs_delay: float = 1.0
    rs_interval: float = 4.0
    rs_count: int = 3
    #: Hop limit of our packets until an RA sets Cur Hop Limit.
    hop_limit: int = 64
    nd: NdConfig = field(default_factory=NdConfig)

    def __post_init__(self) -> None:
        """Reject impossible values early."""
        if self.iid not in IID_MODES:
            raise ValueError(f"IPv6 interface identifier {self.iid!r}: not one of "
                             f"{', '.join(IID_MODES)}")
        for a in self.addresses:
            if is_multicast(a.ip.packed) or a.ip.is_unspecified or a.ip.is_loopback:
                raise ValueError(f"{a}: not a unicast IPv6 address")
        if self.gateway is not None and (self.gateway.is_multicast
                                         or self.gateway.is_unspecified):
            raise ValueError(f"IPv6 gateway {self.gateway}: not a unicast address")


class AddrState(enum.Enum):
    """Address states (RFC 4862 §2)."""

    TENTATIVE = "tentative"
    PREFERRED = "preferred"
    DEPRECATED = "deprecated"
    DUPLICATE = "duplicate"


class Ip6Addr:
    """One address of the interface with its state, lifetimes and DAD progress."""

    __slots__ = ("dad_at", "dad_counter", "dad_left", "ip", "nonce", "origin",
                 "preferred_until", "prefixlen", "state", "valid_until")

    def __init__(self, ip: bytes, prefixlen: int, origin: str) -> None:
        self.ip = ip
        self.prefixlen = prefixlen
        #: "link-local", "static" or "slaac".
        self.origin = origin
        self.state = AddrState.TENTATIVE
        self.valid_until = math.inf
        self.preferred_until = math.inf
        self.dad_left = 0
        self.dad_at = math.inf
        self.nonce = b""
        self.dad_counter = 0

    @property
    def usable(self) -> bool:
        """Preferred or deprecated: ours to receive on (RFC 4862 §5.5.4)."""
        return self.state is AddrState.PREFERRED or self.state is AddrState.DEPRECATED

    @property
    def interface(self) -> ipaddress.IPv6Interface:
        """Address and prefix."""
        return ipaddress.IPv6Interface((ipaddress.IPv6Address(self.ip), self.prefixlen))

    def __repr__(self) -> str:
        return f"<Ip6Addr {self.interface} {self.origin} {self.state.value}>"


def _in_prefix(addr: bytes, prefix: bytes, plen: int) -> bool:
    full, rest = divmod(plen, 8)
    if addr[:full] != prefix[:full]:
        return False
    if rest:
        mask = (0xFF << (8 - rest)) & 0xFF
        return (addr[full] & mask) == (prefix[full] & mask)
    return True


def _common_prefix(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return 128 - x.bit_length()


class AddrConf:
    """Addresses, DAD, RS/RA and SLAAC of one interface; actions go out by callbacks."""

    def __init__(self, config: Ipv6Config, mac: bytes, counters: defaultdict[str, int],
                 rng: random.Random, *, send_dad: Callable[[bytes, bytes, float], None],
                 send_rs: Callable[[float], None], changed: Callable[[], None],
                 retrans_timer: Callable[[], float]) -> None:
        self.config = config
        self.mac = mac
        self._c = counters
        self._rng = rng
        self._send_dad = send_dad
        self._send_rs = send_rs
        self._changed = changed
        self._retrans = retrans_timer
        self.secret = config.secret or rng.getrandbits(256).to_bytes(32, "big")
        self.addrs: list[Ip6Addr] = []
        #: Default routers learnt from RAs: address -> expiry.
        self.routers: dict[bytes, float] = {}
        #: On-link prefixes: (prefix, length) -> expiry (static ones never expire).
        self.prefixes: dict[tuple[bytes, int], float] = {}
        self.gateway = config.gateway.packed if config.gateway is not None else None
        self.hop_limit = config.hop_limit
        #: MTU from an RA (None: the link's).
        self.mtu: int | None = None
        #: Base reachable time (s) / retrans timer (s) from the last RA that set them.
        self.base_reachable: float | None = None
        self.retrans: float | None = None
        self.ra_count = 0
        self._rs_left = 0
        self._rs_at = math.inf
        self._started = False
        for name in ("dad_ns_out", "dad_ok", "dad_duplicates", "rs_out", "ra_in"):
            counters[name] += 0

    # ------------------------------------------------------------------ start
    def start(self, now: float) -> None:
        """Form the link-local address, add the static ones (DAD), schedule RS."""
        if self._started:
            return
        self._started = True
        cfg = self.config
        ll_prefix = link_local(bytes(8))[:8]
        self._add(ll_prefix + self._iid(ll_prefix, 0), 64, "link-local", now)
        for a in cfg.addresses:
            self.prefixes[(a.network.network_address.packed, a.network.prefixlen)] = \
                math.inf
            self._add(a.ip.packed, a.network.prefixlen, "static", now)
        rs = cfg.router_solicit if cfg.router_solicit is not None else cfg.slaac
        if rs and cfg.rs_count > 0:
            self._rs_left = cfg.rs_count
            self._rs_at = now + self._rng.uniform(0.0, cfg.rs_delay)
        self._changed()

    def _iid(self, prefix: bytes, counter: int) -> bytes:
        mode = self.config.iid
        if mode == "eui64":
            return eui64_iid(self.mac)
        if mode == "stable":
            return stable_iid(prefix, self.mac, counter, self.secret)
        return random_iid(self._rng)

    def _add(self, ip: bytes, plen: int, origin: str, now: float,
             valid: float = math.inf, preferred: float = math.inf,
             counter: int = 0) -> Ip6Addr | None:
        if any(a.ip == ip for a in self.addrs):
            return None
        a = Ip6Addr(ip, plen, origin)
        a.valid_until = valid
        a.preferred_until = preferred
        a.dad_counter = counter
        self.addrs.append(a)
        cfg = self.config
        if cfg.dad and cfg.dad_transmits > 0:
            a.dad_left = cfg.dad_transmits
            a.dad_at = now + self._rng.uniform(0.0, cfg.dad_delay)
            a.nonce = self._rng.getrandbits(48).to_bytes(6, "big")
        else:
            self._dad_done(a, now)
        return a

    def _dad_done(self, a: Ip6Addr, now: float) -> None:
        a.dad_at = math.inf
        a.state = (AddrState.PREFERRED if now < a.preferred_until
                   else AddrState.DEPRECATED)
        if self.config.dad:
            self._c["dad_ok"] += 1

    # ----------------------------------------------------------------- queries
    def find(self, ip: bytes) -> Ip6Addr | None:
        """Our address record for ``ip`` (any state)."""
        for a in self.addrs:
            if a.ip == ip:
                return a
        return None

    def usable(self) -> list[Ip6Addr]:
        """Addresses we own (preferred or deprecated)."""
        return [a for a in self.addrs if a.usable]

    def link_local(self) -> Ip6Addr | None:
        """The usable link-local address."""
        for a in self.addrs:
            if a.origin == "link-local" and a.usable:
                return a
        return None

    def select_source(self, dst: bytes) -> bytes | None:
        """Source for ``dst`` (RFC 6724 §5, simplified; see the module docstring)."""
        best: Ip6Addr | None = None
        best_key: tuple[int, int, int] | None = None
        want_ll = is_link_local(dst) or (is_multicast(dst) and dst[1] & 0x0F <= 2)
        for a in self.addrs:
            if not a.usable:
                continue
            ll = a.origin == "link-local"
            key = (1 if ll == want_ll else 0,
                   1 if a.state is AddrState.PREFERRED else 0,
                   _common_prefix(a.ip, dst))
            if best_key is None or key > best_key:
                best, best_key = a, key
        return None if best is None else best.ip

    def primary(self) -> bytes | None:
        """The address for global destinations when no destination is known yet: a
        preferred static address, else a preferred SLAAC one (None: none yet)."""
        for origin in ("static", "slaac"):
            for a in self.addrs:
                if a.origin == origin and a.state is AddrState.PREFERRED:
                    return a.ip
        return None

    def on_link(self, dst: bytes) -> bool:
        """Whether ``dst`` is on-link (RFC 4861 §5.2: link-local, or in an on-link prefix)."""
        if is_link_local(dst):
            return True
        return any(_in_prefix(dst, p, n) for (p, n) in self.prefixes)

    def default_router(self, reachable: Callable[[bytes], bool]) -> bytes | None:
        """The static gateway, else a router from RAs (one that ``reachable`` says is
        known reachable first, RFC 4861 §6.3.6), else None."""
        if self.gateway is not None:
            return self.gateway
        first = None
        for r in self.routers:
            if reachable(r):
                return r
            if first is None:
                first = r
        return first

    # ----------------------------------------------------------------- DAD in
    def dad_ns(self, target: bytes, from_unspecified: bool, nonce: bytes | None,
               now: float) -> bool:
        """An NS whose target is ours: True when it was for a tentative address (then it
        must not be answered). From the unspecified address it is another node's DAD —
        a duplicate — unless it carries our nonce (our own probe looped back)."""
        a = self.find(target)
        if a is None or a.state is not AddrState.TENTATIVE:
            return False
        if from_unspecified:
            if nonce is not None and nonce == a.nonce:
                self._c["dad_own_looped"] += 1
            else:
                self._duplicate(a, now)
        return True  # §5.4.3: a unicast-sourced NS for a tentative address is ignored

    def dad_na(self, target: bytes, now: float) -> bool:
        """An NA for ``target``: True when the target is ours (tentative: a duplicate,
        §5.4.4; assigned: a conflict that DAD did not see, counted)."""
        a = self.find(target)
        if a is None or a.state is AddrState.DUPLICATE:
            return a is not None
        if a.state is AddrState.TENTATIVE:
            self._duplicate(a, now)
        else:
            self._c["conflicts"] += 1
        return True

    def _duplicate(self, a: Ip6Addr, now: float) -> None:
        self._c["dad_duplicates"] += 1
        a.state = AddrState.DUPLICATE
        a.dad_at = math.inf
        cfg = self.config
        if cfg.iid == "stable" and a.origin != "static" and \
                a.dad_counter < cfg.idgen_retries:
            # RFC 7217 §6: the next DAD_Counter gives another IID for the same prefix.
            prefix = a.ip[:8]
            iid = self._iid(prefix, a.dad_counter + 1)
            self.addrs.remove(a)
            self._add(prefix + iid, a.prefixlen, a.origin, now, a.valid_until,
                      a.preferred_until, a.dad_counter + 1)
        self._changed()

    # ------------------------------------------------------------------ RA in
    def router_gone(self, ip: bytes) -> None:
        """An NA with R clear from a router (RFC 4861 §7.2.5): no longer a default router."""
        if self.routers.pop(ip, None) is not None:
            self._changed()

    def ra(self, src: bytes, ra: RouterAdvert, link_mtu: int, now: float) -> None:
        """A valid Router Advertisement (RFC 4861 §6.3.4; RFC 4862 §5.5.3)."""
        c = self._c
        c["ra_in"] += 1
        if not self.config.accept_ra:
            c["ra_ignored"] += 1
            return
        self.ra_count += 1
        if ra.router_lifetime:
            self._rs_left = 0
            self._rs_at = math.inf
        if ra.cur_hop_limit:
            self.hop_limit = ra.cur_hop_limit
        if ra.reachable_time:
            self.base_reachable = ra.reachable_time / 1000.0
        if ra.retrans_timer:
            self.retrans = ra.retrans_timer / 1000.0
        if ra.router_lifetime:
            self.routers[src] = now + ra.router_lifetime
        else:
            self.routers.pop(src, None)
        mtu = ra.opts.mtu
        if mtu is not None and 1280 <= mtu <= link_mtu:
            self.mtu = mtu
        for p in ra.opts.prefixes:
            if is_link_local(p.prefix) or p.length > 128:
                c["prefix_ignored"] += 1
                continue
            if p.on_link:
                key = (_masked(p.prefix, p.length), p.length)
                if p.valid == 0:
                    self.prefixes.pop(key, None)
                elif self.prefixes.get(key) != math.inf:
                    self.prefixes[key] = _until(now, p.valid)
            if p.autonomous and self.config.slaac:
                self._slaac(p.prefix, p.length, p.valid, p.preferred, now)
        self._changed()

    def _slaac(self, prefix: bytes, plen: int, valid: int, preferred: int,
               now: float) -> None:
        c = self._c
        if preferred > valid:
            c["prefix_ignored"] += 1  # RFC 4862 §5.5.3 c)
            return
        if plen != 64:
            c["prefix_ignored"] += 1  # prefix + 64-bit IID must be 128 bits (§5.5.3 d)
            return
        p8 = prefix[:8]
        mine = [a for a in self.addrs if a.origin == "slaac" and a.ip[:8] == p8]
        if not mine:
            if valid == 0:
                return
            a = self._add(p8 + self._iid(p8, 0), 64, "slaac", now, _until(now, valid),
                          _until(now, preferred))
            if a is not None:
                c["slaac_addresses"] += 1
            return
        for a in mine:
            a.preferred_until = _until(now, preferred)
            if a.usable:
                a.state = (AddrState.PREFERRED if now < a.preferred_until
                           else AddrState.DEPRECATED)
            remaining = a.valid_until - now
            if valid > TWO_HOURS or _until(now, valid) > a.valid_until:
                a.valid_until = _until(now, valid)
            elif remaining <= TWO_HOURS:
                pass  # §5.5.3 e) 2: ignore
            else:
                a.valid_until = now + TWO_HOURS

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest DAD step, RS, or lifetime end."""
        best = self._rs_at
        for a in self.addrs:
            if a.dad_at < best:
                best = a.dad_at
            if a.usable:
                if a.state is AddrState.PREFERRED and a.preferred_until < best:
                    best = a.preferred_until
                if a.valid_until < best:
                    best = a.valid_until
        for t in self.routers.values():
            best = min(best, t)
        for t in self.prefixes.values():
            best = min(best, t)
        return None if best == math.inf else best

    def on_deadline(self, now: float) -> None:
        """DAD probes and completions, RS, lifetimes."""
        changed = False
        for a in list(self.addrs):
            if a.state is AddrState.TENTATIVE and a.dad_at <= now:
                if a.dad_left > 0:
                    a.dad_left -= 1
                    a.dad_at = now + self._retrans()
                    self._c["dad_ns_out"] += 1
                    self._send_dad(a.ip, a.nonce, now)
                else:
                    self._dad_done(a, now)
                    changed = True
            if a.usable and a.valid_until <= now:
                self.addrs.remove(a)
                self._c["addresses_expired"] += 1
                changed = True
            elif a.state is AddrState.PREFERRED and a.preferred_until <= now:
                a.state = AddrState.DEPRECATED
                changed = True
        for r, t in list(self.routers.items()):
            if t <= now:
                del self.routers[r]
                self._c["routers_expired"] += 1
                changed = True
        for k, t in list(self.prefixes.items()):
            if t <= now:
                del self.prefixes[k]
                changed = True
        if self._rs_at <= now:
            if self._rs_left > 0:
                self._rs_left -= 1
                self._c["rs_out"] += 1
                self._send_rs(now)
            self._rs_at = (now + self.config.rs_interval if self._rs_left > 0
                           else math.inf)
        if changed:
            self._changed()


def _until(now: float, seconds: int) -> float:
    return math.inf if seconds == INFINITE else now + seconds


def _masked(prefix: bytes, plen: int) -> bytes:
    n = int.from_bytes(prefix, "big")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1) if plen else 0
    return (n & mask).to_bytes(16, "big")
