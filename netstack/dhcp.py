"""DHCPv4 client (RFC 2131, options RFC 2132), a pure state machine, and its glue to an
:class:`~netstack.interface.Interface`.

:class:`DhcpClient` knows nothing of sockets or frames: DHCP message bytes come in
(:meth:`DhcpClient.receive`), messages to send come out (:meth:`DhcpClient.take_output`,
each with its IPv4 destination; the source is whatever the interface has: 0.0.0.0
before the first lease), time comes in as ``now`` (:meth:`next_deadline` /
:meth:`on_deadline`), and lease events come out (:meth:`take_events`). The states are
those of RFC 2131 §4.4 (figure 5), plus PROBING:

- INIT → SELECTING: DHCPDISCOVER, broadcast; the first valid DHCPOFFER is taken.
- REQUESTING: DHCPREQUEST, broadcast, with the offered address (option 50) and the
  server identifier (54); a DHCPACK from that server ends it, a DHCPNAK (or
  ``request_tries`` unanswered requests) goes back to INIT.
- PROBING (RFC 2131 §2.2 and §4.4.1 "the client SHOULD perform a final check on the
  parameters (e.g., ARP for allocated network address)"; done as an RFC 5227 probe):
  the glue probes the address; a conflict sends DHCPDECLINE (§3.1.5, §4.4.4) and
  restarts after ``decline_wait`` seconds (§3.1.5: at least ten).
- BOUND: the lease is in use; at T1 (option 58, default 0.5 x lease) RENEWING:
  DHCPREQUEST unicast to the server (ciaddr set, no options 50/54); at T2 (59, default
  0.875 x lease) REBINDING: the same, broadcast; at the end of the lease the address is
  given up ("lost") and discovery starts again. A DHCPNAK while renewing or rebinding
  also loses the lease. Lease times count from when the request was first sent
  (§4.4.1).

Retransmission (RFC 2131 §4.1): 4 s before the first retransmission, doubled each time
up to 64 s, each randomized by ±1 s (``rng``, seeded for tests). While renewing or
rebinding the client waits half the remaining time to T2 (to the end of the lease),
at least ``min_retransmit`` seconds (§4.4.5 says 60), never past the next state change.

Replies are checked (RFC 2131 §4.4.x): BOOTREPLY, Ethernet hardware type and length,
our xid and chaddr, the magic cookie, well formed options (overload, option 52,
honoured; repeated options concatenated as RFC 3396 says), a message type we expect in
the current state, the server identifier, a usable yiaddr, a contiguous subnet mask,
a lease time in OFFER and ACK. Anything else is counted (layer ``dhcp``, the reason as
the counter name, e.g. ``bad_cookie``, ``xid_mismatch``, ``unexpected_offer``) and
ignored; :func:`parse_message` raises :class:`DhcpFormatError` naming the field.

Options asked for (55): 1 subnet mask, 3 router, 6 DNS, 12 host name, 15 domain,
17 root path (iSCSI boot, RFC 4173), 26 interface MTU, 51 lease time, 54 server id,
58/59 T1/T2, and 203 (iPXE's ``DHCP_ISCSI_INITIATOR_IQN``: the initiator's IQN). Sent:
53, 55, 57 (maximum message size), 60 (vendor class, ``"bootinit"``), 61 (client
identifier: hardware type 1 + MAC), 12 (host name) when configured.

:class:`InterfaceDhcp` joins a client to an interface: it binds UDP port 68, sends the
client's messages with :meth:`Interface.send_udp`, runs the ARP probe with the
interface's ARP layer, and applies lease events to the interface (address, prefix,
gateway, MTU; cleared when the lease is lost).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from netstack.arp import ArpProbe, ProbeConfig
from netstack.counters import Counters
from netstack.interface import Interface
from netstack.udp import UdpDatagram

__all__ = [
    "CLIENT_PORT",
    "DEFAULT_PARAMETERS",
    "SERVER_PORT",
    "DhcpClient",
    "DhcpConfig",
    "DhcpEvent",
    "DhcpFormatError",
    "DhcpMessage",
    "DhcpState",
    "InterfaceDhcp",
    "Lease",
    "MessageType",
    "build_message",
    "parse_message",
]

CLIENT_PORT = 68
SERVER_PORT = 67
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
#: Fixed BOOTP part (RFC 2131 §2, figure 1) before the magic cookie.
FIXED_LEN = 236
#: RFC 1542 §3.2.1: some relays drop BOOTP messages shorter than 300 bytes.
MIN_MESSAGE = 300
BROADCAST_FLAG = 0x8000
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_ZERO = b"\0\0\0\0"
_BCAST = b"\xff\xff\xff\xff"
INFINITE = 0xFFFFFFFF

# Options (RFC 2132 unless noted).
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_ROOT_PATH = 17
OPT_MTU = 26
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETERS = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
#: iPXE's "iSCSI initiator IQN" (include/ipxe/dhcp.h, DHCP_ISCSI_INITIATOR_IQN).
OPT_INITIATOR_IQN = 203
OPT_END = 255

DEFAULT_PARAMETERS = (OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN,
                      OPT_ROOT_PATH, OPT_MTU, OPT_LEASE_TIME, OPT_SERVER_ID, OPT_T1, OPT_T2,
                      OPT_INITIATOR_IQN)


class MessageType(enum.IntEnum):
    """DHCP message types (option 53, RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class DhcpState(enum.Enum):
    """RFC 2131 §4.4 client states (INIT-REBOOT and REBOOTING are not used) + PROBING."""

    INIT = "init"
    SELECTING = "selecting"
    REQUESTING = "requesting"
    PROBING = "probing"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"


class DhcpFormatError(ValueError):
    """A received DHCP message is malformed; names the field and the value."""

    def __init__(self, field_name: str, value: object, problem: str, counter: str) -> None:
        super().__init__(f"DHCP {field_name} {value!r}: {problem}")
        self.field = field_name
        self.value = value
        self.problem = problem
        #: The ``dhcp`` counter this drop is counted under.
        self.counter = counter


# ---------------------------------------------------------------------- messages
@dataclass
class DhcpMessage:
    """One BOOTP/DHCP message (RFC 2131 §2, figure 1), options decoded to raw bytes."""

    op: int
    xid: int
    chaddr: bytes
    options: dict[int, bytes] = field(default_factory=dict)
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = _ZERO
    yiaddr: bytes = _ZERO
    siaddr: bytes = _ZERO
    giaddr: bytes = _ZERO
    htype: int = HTYPE_ETHERNET
    hlen: int = 6
    hops: int = 0
    sname: bytes = b""
    file: bytes = b""

    @property
    def message_type(self) -> int | None:
        """Option 53, or None."""
        v = self.options.get(OPT_MESSAGE_TYPE)
        return v[0] if v is not None and len(v) == 1 else None


def _parse_options(data: bytes, where: str, out: dict[int, bytes]) -> bool:
    """Parse options into ``out`` (RFC 2132 §2; RFC 3396 concatenation). True if an End
    option was seen."""
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return True
        if i + 1 >= n:
            raise DhcpFormatError(f"{where} option {code}", data[i:].hex(),
                                  "truncated (no length byte)", "bad_options")
        ln = data[i + 1]
        if i + 2 + ln > n:
            raise DhcpFormatError(f"{where} option {code}", ln,
                                  f"length runs past the end ({n - i - 2} bytes left)",
                                  "bad_options")
        out[code] = out.get(code, b"") + data[i + 2:i + 2 + ln]
        i += 2 + ln
    return False


def parse_message(data: bytes | bytearray | memoryview) -> DhcpMessage:
    """Decode a DHCP message; :class:`DhcpFormatError` when it is not one."""
    b = bytes(data)
    if len(b) < FIXED_LEN + 4:
        raise DhcpFormatError("length", len(b), f"shorter than {FIXED_LEN + 4} bytes",
                              "short")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, file_) = _FIXED.unpack_from(b, 0)
    if b[FIXED_LEN:FIXED_LEN + 4] != MAGIC_COOKIE:
        raise DhcpFormatError("magic cookie", b[FIXED_LEN:FIXED_LEN + 4].hex(),
                              "not 63825363 (RFC 2131 §3)", "bad_cookie")
    if hlen > 16:
        raise DhcpFormatError("hlen", hlen, "more than the 16 bytes of chaddr", "bad_hlen")
    options: dict[int, bytes] = {}
    _parse_options(b[FIXED_LEN + 4:], "options", options)
    overload = options.get(OPT_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpFormatError("option 52 (overload)", overload.hex(), "not 1, 2 or 3",
                                  "bad_options")
        if overload[0] & 1:
            _parse_options(file_, "file", options)
        if overload[0] & 2:
            _parse_options(sname, "sname", options)
    return DhcpMessage(op=op, xid=xid, chaddr=chaddr[:hlen], options=options, secs=secs,
                       flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr,
                       giaddr=giaddr, htype=htype, hlen=hlen, hops=hops,
                       sname=b"" if overload and overload[0] & 2 else sname.rstrip(b"\0"),
                       file=b"" if overload and overload[0] & 1 else file_.rstrip(b"\0"))


def _encode_options(options: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in options:
        for off in range(0, max(len(value), 1), 255):  # RFC 3396 split of long values
            chunk = value[off:off + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(OPT_END)
    return bytes(out)


def build_message(msg: DhcpMessage, option_order: list[tuple[int, bytes]] | None = None
                  ) -> bytes:
    """Encode ``msg`` (options in ``option_order`` if given, else in dict order),
    padded to the 300-byte BOOTP minimum."""
    chaddr = msg.chaddr + bytes(16 - len(msg.chaddr))
    head = _FIXED.pack(msg.op, msg.htype, len(msg.chaddr), msg.hops, msg.xid,
                       min(msg.secs, 0xFFFF), msg.flags, msg.ciaddr, msg.yiaddr,
                       msg.siaddr, msg.giaddr, chaddr, msg.sname.ljust(64, b"\0"),
                       msg.file.ljust(128, b"\0"))
    opts = option_order if option_order is not None else list(msg.options.items())
    b = head + MAGIC_COOKIE + _encode_options(opts)
    if len(b) < MIN_MESSAGE:
        b += bytes(MIN_MESSAGE - len(b))
    return b


# ------------------------------------------------------------------------- lease
@dataclass(frozen=True)
class Lease:
    """What a DHCPACK gave us. Times are on the client's monotonic clock."""

    address: ipaddress.IPv4Interface
    server_id: ipaddress.IPv4Address
    #: Seconds; None for an infinite lease (0xffffffff).
    lease_time: float | None
    t1: float | None
    t2: float | None
    #: When the lease (and T1/T2) started: the first transmission of the request.
    start: float
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    hostname: str | None = None
    domain: str | None = None
    #: Option 17 (RFC 2132 §3.19), e.g. an RFC 4173 ``iscsi:`` root path.
    root_path: str | None = None
    #: Option 203 (iPXE): the iSCSI initiator name.
    initiator_name: str | None = None
    mtu: int | None = None
    #: siaddr (next server), when set.
    next_server: ipaddress.IPv4Address | None = None
    #: Every option of the ACK, raw.
    options: dict[int, bytes] = field(default_factory=dict, compare=False)

    @property
    def t1_at(self) -> float:
        """Time of T1 (inf for an infinite lease)."""
        return math.inf if self.t1 is None else self.start + self.t1

    @property
    def t2_at(self) -> float:
        """Time of T2."""
        return math.inf if self.t2 is None else self.start + self.t2

    @property
    def expires_at(self) -> float:
        """End of the lease."""
        return math.inf if self.lease_time is None else self.start + self.lease_time


@dataclass(frozen=True)
class DhcpEvent:
    """A lease change. ``kind``: ``bound`` (a new lease or a new address), ``renewed``
    (same address, new times), ``lost`` (expired or refused: stop using the address)."""

    kind: str
    lease: Lease | None
    now: float
    reason: str = ""


@dataclass(frozen=True)
class DhcpConfig:
    """Client identity and timing (defaults follow RFC 2131)."""

    #: Client identifier (option 61); default hardware type 1 + the MAC.
    client_id: bytes | None = None
    #: Vendor class identifier (option 60, RFC 2132 §9.13).
    vendor_class: str | None = "bootinit"
    #: Host name to send (option 12).
    hostname: str | None = None
    #: Parameter request list (option 55).
    parameters: tuple[int, ...] = DEFAULT_PARAMETERS
    #: Maximum DHCP message size we accept (option 57; at least 576).
    max_message_size: int = 1472
    #: RFC 2131 §4.1 retransmission: first timeout, maximum, ± randomization.
    initial_timeout: float = 4.0
    max_timeout: float = 64.0
    jitter: float = 1.0
    #: DHCPREQUESTs sent in REQUESTING before starting over.
    request_tries: int = 4
    #: Shortest wait between renewal/rebinding requests (RFC 2131 §4.4.5: 60 s).
    min_retransmit: float = 60.0
    #: Wait after a DHCPDECLINE before starting over (RFC 2131 §3.1.5: at least 10 s).
    decline_wait: float = 10.0
    #: Wait after a DHCPNAK before starting over.
    nak_wait: float = 1.0
    #: Random delay before the first DISCOVER (RFC 2131 §4.4.1 suggests 1..10 s on a
    #: whole-network power-up; a boot loader starts at once).
    init_delay: float = 0.0
    #: RFC 5227 probe of the acknowledged address (None: no probe).
    probe: ProbeConfig | None = field(default_factory=ProbeConfig)
    #: Ask for broadcast replies (RFC 2131 §4.1); not needed: unicast is accepted.
    broadcast_flag: bool = False

    def __post_init__(self) -> None:
        if self.max_message_size < 576:
            raise ValueError(f"max_message_size {self.max_message_size}: at least 576 "
                             f"(RFC 2132 §9.10)")
        if self.initial_timeout <= 0 or self.max_timeout < self.initial_timeout:
            raise ValueError("need 0 < initial_timeout <= max_timeout")
        if not 0 <= self.jitter < self.initial_timeout:
            raise ValueError("jitter must be in [0, initial_timeout)")
        if self.request_tries < 1:
            raise ValueError("request_tries must be at least 1")


def _addr(b: bytes) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(b)


def _text(v: bytes | None) -> str | None:
    if v is None:
        return None
    return v.rstrip(b"\0").decode("utf-8", "replace") or None


def _u32(msg: DhcpMessage, code: int) -> int | None:
    v = msg.options.get(code)
    if v is None:
        return None
    if len(v) != 4:
        raise DhcpFormatError(f"option {code}", v.hex(), "not 4 bytes", "bad_options")
    return int.from_bytes(v, "big")


def _usable_host(b: bytes) -> bool:
    return b != _ZERO and b != _BCAST and 0 < b[0] < 224 and b[0] != 127


def lease_from_ack(msg: DhcpMessage, start: float) -> Lease:
    """The lease a DHCPACK describes (:class:`DhcpFormatError` when it cannot be used)."""
    if not _usable_host(msg.yiaddr):
        raise DhcpFormatError("yiaddr", str(_addr(msg.yiaddr)), "not a usable host address",
                              "bad_yiaddr")
    sid = msg.options.get(OPT_SERVER_ID)
    if sid is None or len(sid) != 4:
        raise DhcpFormatError("option 54 (server identifier)", sid, "missing or not 4 bytes",
                              "missing_server_id")
    mask = msg.options.get(OPT_SUBNET_MASK)
    if mask is not None:
        if len(mask) != 4:
            raise DhcpFormatError("option 1 (subnet mask)", mask.hex(), "not 4 bytes",
                                  "bad_subnet_mask")
        m = int.from_bytes(mask, "big")
        inv = ~m & 0xFFFFFFFF
        if inv & (inv + 1) or m == 0:
            raise DhcpFormatError("option 1 (subnet mask)", str(_addr(mask)),
                                  "not a contiguous mask", "bad_subnet_mask")
        prefix = 32 - inv.bit_length()
    else:
        # No mask: the classful default (RFC 2131 §4.3.1 leaves it to the client).
        first = msg.yiaddr[0]
        prefix = 8 if first < 128 else 16 if first < 192 else 24
    address = ipaddress.IPv4Interface((msg.yiaddr, prefix))
    lease_s = _u32(msg, OPT_LEASE_TIME)
    if lease_s is None:
        raise DhcpFormatError("option 51 (lease time)", None, "missing (RFC 2131 table 3)",
                              "missing_lease_time")
    t1 = _u32(msg, OPT_T1)
    t2 = _u32(msg, OPT_T2)
    lease_time: float | None = None
    t1f: float | None = None
    t2f: float | None = None
    if lease_s != INFINITE:
        lease_time = float(lease_s)
        # RFC 2131 §4.4.5 defaults; server values only when 0 < T1 < T2 < lease.
        t1f, t2f = 0.5 * lease_time, 0.875 * lease_time
        if t2 is not None and 0 < t2 < lease_s:
            t2f = float(t2)
        if t1 is not None and 0 < t1 < (t2f or lease_time):
            t1f = float(t1)
        if t1f >= t2f:
            t1f = 0.5 * t2f
    gateway = None
    routers = msg.options.get(OPT_ROUTER)
    if routers is not None and len(routers) >= 4 and len(routers) % 4 == 0:
        gw = _addr(routers[:4])
        if gw in address.network and gw != address.ip:
            gateway = gw
    dns_raw = msg.options.get(OPT_DNS, b"")
    dns = tuple(_addr(dns_raw[i:i + 4]) for i in range(0, len(dns_raw) - 3, 4))
    mtu = None
    mtu_raw = msg.options.get(OPT_MTU)
    if mtu_raw is not None and len(mtu_raw) == 2 and int.from_bytes(mtu_raw, "big") >= 68:
        mtu = int.from_bytes(mtu_raw, "big")  # RFC 2132 §5.1: at least 68
    return Lease(address=address, server_id=_addr(sid), lease_time=lease_time, t1=t1f,
                 t2=t2f, start=start, gateway=gateway, dns=dns,
                 hostname=_text(msg.options.get(OPT_HOSTNAME)),
                 domain=_text(msg.options.get(OPT_DOMAIN)),
                 root_path=_text(msg.options.get(OPT_ROOT_PATH)),
                 initiator_name=_text(msg.options.get(OPT_INITIATOR_IQN)),
                 mtu=mtu, next_server=_addr(msg.siaddr) if msg.siaddr != _ZERO else None,
                 options=dict(msg.options))


@dataclass(frozen=True)
class Transmit:
    """A message to send: UDP 68 → 67 to ``dst`` (4 bytes; broadcast or the server)."""

    dst: bytes
    payload: bytes
    kind: MessageType


# ------------------------------------------------------------------------ client
class DhcpClient:
    """The RFC 2131 client state machine (see the module docstring)."""

    def __init__(self, mac: bytes, config: DhcpConfig | None = None,
                 rng: random.Random | None = None,
                 counters: defaultdict[str, int] | None = None) -> None:
        if len(mac) != 6:
            raise ValueError("a DHCP client over Ethernet needs a 6-byte MAC")
        self.mac = mac
        self.config = cfg = config or DhcpConfig()
        self.rng = rng or random.Random()
        self._c = counters if counters is not None else Counters().layer("dhcp")
        self.client_id = cfg.client_id if cfg.client_id is not None else b"\x01" + mac
        self.state = DhcpState.INIT
        self.lease: Lease | None = None
        self.xid = 0
        self._offer: DhcpMessage | None = None
        self._pending: Lease | None = None  # acknowledged, being probed
        self._out: list[Transmit] = []
        self._events: list[DhcpEvent] = []
        self._probe_ip: bytes | None = None
        self._deadline = math.inf       # retransmission / restart timer
        self._tries = 0
        self._began = 0.0               # start of acquisition (secs field)
        self._request_at = 0.0          # first transmission of the current request
        self._started = False
        #: The last malformed reply's error (diagnostics).
        self.last_error: DhcpFormatError | None = None
        for name in ("in", "out", "offers", "acks", "naks", "declines", "retransmits",
                     "renewals", "rebinds", "expired"):
            self._c[name] += 0

    # ------------------------------------------------------------- interface
    def start(self, now: float) -> None:
        """Begin acquiring an address (INIT)."""
        self._started = True
        self._restart(now, self.config.init_delay * self.rng.random())

    def take_output(self) -> list[Transmit]:
        """Messages to send now, in order."""
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[DhcpEvent]:
        """Lease events since the last call."""
        ev, self._events = self._events, []
        return ev

    def take_probe(self) -> bytes | None:
        """The address to probe (RFC 5227) if a probe was asked for since the last call;
        answer with :meth:`probe_done`."""
        ip, self._probe_ip = self._probe_ip, None
        return ip

    def next_deadline(self) -> float | None:
        """Retransmission, restart, T1, T2 or lease end, whichever is first."""
        t = self._deadline
        if self.lease is not None and self.state in (DhcpState.BOUND, DhcpState.RENEWING,
                                                     DhcpState.REBINDING):
            t = min(t, self._next_lease_time())
        return None if t == math.inf else t

    def _next_lease_time(self) -> float:
        lease = self.lease
        assert lease is not None
        if self.state == DhcpState.BOUND:
            return min(lease.t1_at, lease.expires_at)
        if self.state == DhcpState.RENEWING:
            return min(lease.t2_at, lease.expires_at)
        return lease.expires_at

    def on_deadline(self, now: float) -> None:
        """Act on due timers (early calls are harmless)."""
        lease = self.lease
        if lease is not None and self.state in (DhcpState.BOUND, DhcpState.RENEWING,
                                                DhcpState.REBINDING):
            if now >= lease.expires_at:
                self._c["expired"] += 1
                self._lose(now, "lease expired")
                self._restart(now, 0.0)
                return
            if self.state == DhcpState.BOUND and now >= lease.t1_at:
                self.state = DhcpState.RENEWING
                self._c["renewals"] += 1
                self._new_xid(now)
                self._send_renew(now)
                return
            if self.state == DhcpState.RENEWING and now >= lease.t2_at:
                self.state = DhcpState.REBINDING
                self._c["rebinds"] += 1
                self._new_xid(now)
                self._send_renew(now)
                return
        if now < self._deadline:
            return
        self._deadline = math.inf
        st = self.state
        if st == DhcpState.INIT:
            self._discover(now)
        elif st == DhcpState.SELECTING:
            self._c["retransmits"] += 1
            self._send_discover(now)
        elif st == DhcpState.REQUESTING:
            if self._tries >= self.config.request_tries:
                self._c["request_timeouts"] += 1
                self._restart(now, 0.0)
                return
            self._c["retransmits"] += 1
            self._send_request(now)
        elif st in (DhcpState.RENEWING, DhcpState.REBINDING):
            self._c["retransmits"] += 1
            self._send_renew(now)

    def probe_done(self, conflict: bool, now: float) -> None:
        """Result of the RFC 5227 probe of the acknowledged address."""
        if self.state != DhcpState.PROBING or self._pending is None:
            return
        lease = self._pending
        self._pending = None
        if conflict:
            self._decline(lease, now)
            return
        self._bind(lease, now)

    def receive(self, payload: bytes | bytearray | memoryview, now: float) -> None:
        """One UDP payload from port 67; bad or unexpected messages are counted."""
        c = self._c
        c["in"] += 1
        try:
            msg = parse_message(payload)
            self._check(msg)
        except DhcpFormatError as e:
            c[e.counter] += 1
            self.last_error = e
            return
        mt = msg.message_type
        st = self.state
        if mt == MessageType.OFFER and st == DhcpState.SELECTING:
            self._on_offer(msg, now)
        elif mt == MessageType.ACK and st in (DhcpState.REQUESTING, DhcpState.RENEWING,
                                              DhcpState.REBINDING):
            self._on_ack(msg, now)
        elif mt == MessageType.NAK and st in (DhcpState.REQUESTING, DhcpState.RENEWING,
                                              DhcpState.REBINDING):
            self._on_nak(msg, now)
        else:
            assert mt is not None  # _check made sure
            c[f"unexpected_{MessageType(mt).name.lower()}"] += 1

    # --------------------------------------------------------------- checking
    def _check(self, msg: DhcpMessage) -> None:
        if msg.op != BOOTREPLY:
            raise DhcpFormatError("op", msg.op, "not BOOTREPLY (2)", "bad_op")
        if msg.htype != HTYPE_ETHERNET or msg.hlen != 6:
            raise DhcpFormatError("htype/hlen", (msg.htype, msg.hlen),
                                  "not Ethernet (1, 6)", "bad_htype")
        if msg.xid != self.xid or self.state in (DhcpState.INIT, DhcpState.BOUND,
                                                 DhcpState.PROBING):
            raise DhcpFormatError("xid", f"{msg.xid:#010x}",
                                  f"not ours ({self.xid:#010x}) or nothing outstanding",
                                  "xid_mismatch")
        if msg.chaddr != self.mac:
            raise DhcpFormatError("chaddr", msg.chaddr.hex(":"), "not our MAC",
                                  "chaddr_mismatch")
        mt = msg.message_type
        if mt is None:
            raise DhcpFormatError("option 53 (message type)", msg.options.get(53),
                                  "missing or not one byte", "no_message_type")
        if mt not in (MessageType.OFFER, MessageType.ACK, MessageType.NAK):
            raise DhcpFormatError("option 53 (message type)", mt,
                                  "not OFFER, ACK or NAK", "bad_message_type")
        sid = msg.options.get(OPT_SERVER_ID)
        if sid is None or len(sid) != 4 or not _usable_host(sid):
            raise DhcpFormatError("option 54 (server identifier)", sid,
                                  "missing or not a host address (RFC 2131 table 3)",
                                  "missing_server_id")
        if mt == MessageType.OFFER:
            # Parse the offer as an ACK would be: reject what we could not use.
            lease_from_ack(msg, 0.0)

    # ---------------------------------------------------------------- actions
    def _new_xid(self, now: float) -> None:
        self.xid = self.rng.getrandbits(32)
        self._began = now
        self._tries = 0

    def _restart(self, now: float, delay: float) -> None:
        self.state = DhcpState.INIT
        self._offer = None
        self._pending = None
        self._deadline = now + delay
        if delay <= 0:
            self._deadline = math.inf
            self._discover(now)

    def _discover(self, now: float) -> None:
        self.state = DhcpState.SELECTING
        self._new_xid(now)
        self._send_discover(now)

    def _timeout(self) -> float:
        cfg = self.config
        base = min(cfg.initial_timeout * float(2 ** self._tries), cfg.max_timeout)
        return max(0.1, base + self.rng.uniform(-cfg.jitter, cfg.jitter))

    def _common_options(self, mt: MessageType) -> list[tuple[int, bytes]]:
        cfg = self.config
        opts = [(OPT_MESSAGE_TYPE, bytes((mt,))), (OPT_CLIENT_ID, self.client_id)]
        if mt in (MessageType.DISCOVER, MessageType.REQUEST):
            opts.append((OPT_PARAMETERS, bytes(cfg.parameters)))
            opts.append((OPT_MAX_SIZE, cfg.max_message_size.to_bytes(2, "big")))
            if cfg.vendor_class:
                opts.append((OPT_VENDOR_CLASS, cfg.vendor_class.encode()))
            if cfg.hostname:
                opts.append((OPT_HOSTNAME, cfg.hostname.encode()))
        return opts

    def _emit(self, dst: bytes, mt: MessageType, opts: list[tuple[int, bytes]], now: float,
              ciaddr: bytes = _ZERO) -> None:
        msg = DhcpMessage(op=BOOTREQUEST, xid=self.xid, chaddr=self.mac,
                          secs=int(now - self._began),
                          flags=BROADCAST_FLAG if (self.config.broadcast_flag and
                                                   ciaddr == _ZERO) else 0,
                          ciaddr=ciaddr)
        self._c["out"] += 1
        self._c[f"{mt.name.lower()}_out"] += 1
        self._out.append(Transmit(dst, build_message(msg, opts), mt))

    def _send_discover(self, now: float) -> None:
        self._emit(_BCAST, MessageType.DISCOVER, self._common_options(MessageType.DISCOVER),
                   now)
        self._deadline = now + self._timeout()
        self._tries += 1

    def _on_offer(self, msg: DhcpMessage, now: float) -> None:
        self._c["offers"] += 1
        self._offer = msg
        self.state = DhcpState.REQUESTING
        self._tries = 0
        self._request_at = now
        self._send_request(now)

    def _send_request(self, now: float) -> None:
        offer = self._offer
        assert offer is not None
        opts = self._common_options(MessageType.REQUEST)
        opts.insert(2, (OPT_REQUESTED_IP, offer.yiaddr))
        opts.insert(3, (OPT_SERVER_ID, offer.options[OPT_SERVER_ID]))
        self._emit(_BCAST, MessageType.REQUEST, opts, now)
        self._deadline = now + self._timeout()
        self._tries += 1

    def _send_renew(self, now: float) -> None:
        lease = self.lease
        assert lease is not None
        if self._tries == 0:
            self._request_at = now
        renewing = self.state == DhcpState.RENEWING
        dst = lease.server_id.packed if renewing else _BCAST
        self._emit(dst, MessageType.REQUEST, self._common_options(MessageType.REQUEST), now,
                   ciaddr=lease.address.ip.packed)
        self._tries += 1
        # RFC 2131 §4.4.5: half the time to T2 (to the end of the lease), at least
        # min_retransmit; the state change itself is a separate timer.
        limit = lease.t2_at if renewing else lease.expires_at
        wait = max((limit - now) / 2, self.config.min_retransmit)
        self._deadline = now + wait if now + wait < limit else math.inf

    def _on_ack(self, msg: DhcpMessage, now: float) -> None:
        c = self._c
        if self.state == DhcpState.REQUESTING:
            assert self._offer is not None
            if msg.options[OPT_SERVER_ID] != self._offer.options[OPT_SERVER_ID]:
                c["wrong_server"] += 1
                return
        try:
            lease = lease_from_ack(msg, self._request_at)
        except DhcpFormatError as e:
            c[e.counter] += 1
            self.last_error = e
            return
        c["acks"] += 1
        self._deadline = math.inf
        if self.state == DhcpState.REQUESTING:
            if self.config.probe is not None:
                self.state = DhcpState.PROBING
                self._pending = lease
                self._probe_ip = lease.address.ip.packed
                return
            self._bind(lease, now)
            return
        old = self.lease
        self.lease = lease
        self.state = DhcpState.BOUND
        if old is not None and old.address == lease.address:
            self._events.append(DhcpEvent("renewed", lease, now))
        else:
            self._events.append(DhcpEvent("bound", lease, now, "address changed"))

    def _bind(self, lease: Lease, now: float) -> None:
        self.lease = lease
        self.state = DhcpState.BOUND
        self._deadline = math.inf
        self._events.append(DhcpEvent("bound", lease, now))

    def _decline(self, lease: Lease, now: float) -> None:
        """RFC 2131 §4.4.1: the address is in use: DHCPDECLINE, then start over."""
        self._c["declines"] += 1
        opts = [(OPT_MESSAGE_TYPE, bytes((MessageType.DECLINE,))),
                (OPT_CLIENT_ID, self.client_id),
                (OPT_REQUESTED_IP, lease.address.ip.packed),
                (OPT_SERVER_ID, lease.server_id.packed),
                (OPT_MESSAGE, b"address in use (ARP probe)")]
        self._emit(_BCAST, MessageType.DECLINE, opts, now)
        self._restart(now, self.config.decline_wait)

    def _on_nak(self, msg: DhcpMessage, now: float) -> None:
        if self.state == DhcpState.REQUESTING:
            assert self._offer is not None
            if msg.options[OPT_SERVER_ID] != self._offer.options[OPT_SERVER_ID]:
                self._c["wrong_server"] += 1
                return
        self._c["naks"] += 1
        text = _text(msg.options.get(OPT_MESSAGE)) or ""
        if self.lease is not None:
            self._lose(now, f"DHCPNAK {text}".strip())
        self._restart(now, self.config.nak_wait)

    def _lose(self, now: float, reason: str) -> None:
        lease = self.lease
        self.lease = None
        self._events.append(DhcpEvent("lost", lease, now, reason))


# -------------------------------------------------------------------------- glue
class InterfaceDhcp:
    """A :class:`DhcpClient` driving an :class:`Interface` (pure: no I/O either).

    Deadline source for the loop (``next_deadline``/``on_deadline``); frames it makes
    are queued in the interface and leave with :meth:`Interface.frames_to_send`.
    """

    def __init__(self, iface: Interface, client: DhcpClient,
                 on_event: Callable[[DhcpEvent], None] | None = None) -> None:
        self.iface = iface
        self.client = client
        self.on_event = on_event
        self.events: list[DhcpEvent] = []
        self._probe: ArpProbe | None = None
        self._c = iface.counters.layer("dhcp")

    @property
    def lease(self) -> Lease | None:
        """The lease in use, or None."""
        return self.client.lease

    def start(self, now: float) -> None:
        """Bind UDP 68 and send the first DHCPDISCOVER."""
        self.iface.udp.bind(CLIENT_PORT, self._on_udp)
        self.client.start(now)
        self._pump(now)

    def stop(self) -> None:
        """Stop receiving (the address stays as it is)."""
        self.iface.udp.unbind(CLIENT_PORT)
        self.iface.arp.cancel_probe()

    def _on_udp(self, d: UdpDatagram, now: float) -> None:
        if d.sport != SERVER_PORT:
            self._c["bad_sport"] += 1
            return
        self.client.receive(d.payload, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        iface = self.iface
        # Events first: a lost lease must be unconfigured before the DHCPDISCOVER that
        # follows it leaves (from 0.0.0.0).
        for ev in self.client.take_events():
            self._apply(ev, now)
        for tx in self.client.take_output():
            iface.send_udp(tx.dst, CLIENT_PORT, SERVER_PORT, tx.payload, now)
        ip = self.client.take_probe()
        if ip is not None:
            cfg = self.client.config.probe or ProbeConfig()
            self._probe = iface.arp.probe(ip, now, cfg, self.client.rng)

    def _apply(self, ev: DhcpEvent, now: float) -> None:
        iface = self.iface
        if ev.kind == "bound" and ev.lease is not None:
            lease = ev.lease
            iface.set_address(lease.address, lease.gateway, now, mtu=lease.mtu)
        elif ev.kind == "lost":
            iface.clear_address()
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def next_deadline(self) -> float | None:
        """The client's next timer; "now" while a finished probe waits to be read."""
        p = self._probe
        if p is not None and p.result is not None:
            return 0.0  # in the past: handled in this loop iteration
        return self.client.next_deadline()

    def on_deadline(self, now: float) -> None:
        """Hand a finished probe's result to the client, fire its timers, send."""
        p = self._probe
        if p is not None and p.result is not None:
            self._probe = None
            self.client.probe_done(p.result == "conflict", now)
        self.client.on_deadline(now)
        self._pump(now)
