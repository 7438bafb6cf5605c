"""Text keys and operational parameter negotiation (RFC 7143 §6, §13).

Three layers:

* :func:`decode_text` / :func:`encode_text`: the ``key=value\\0`` data segment of
  Login and Text PDUs (§6.1), with the size limits of §6.1 (key name at most 63
  bytes, value at most 255 bytes, or 8192 for keys allowed longer values).
  :class:`TextAssembler` joins data segments split with the C bit (§11.10.2,
  §11.12.2); the split may fall inside a pair.
* :data:`KEYS`: one declarative table of every RFC 7143 key: type, default,
  scope, phase, who sends it, result function and limits.
* :class:`Negotiator`: builds our offer from :class:`OperationalConfig`, applies
  the target's answers (and answers the keys the target offers itself), and
  produces :class:`NegotiatedParams`.

Security keys (AuthMethod, CHAP_*) are driven by :mod:`bootinit.iscsi.login`
and :mod:`bootinit.iscsi.chap`; the negotiator only knows their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from bootinit.iscsi.errors import KeyFormatError, NegotiationError
from netstack.link.base import BytesLike

MAX_KEY_NAME = 63
MAX_VALUE = 255
MAX_LONG_VALUE = 8192

_KEY_NAME_RE = re.compile(r"[A-Za-z0-9.\-+@_]+\Z")
_DECIMAL_RE = re.compile(r"(?:0|[1-9][0-9]{0,19})\Z")
_HEX_RE = re.compile(r"0[xX][0-9A-Fa-f]{1,16}\Z")

NOT_UNDERSTOOD = "NotUnderstood"
REJECT = "Reject"
IRRELEVANT = "Irrelevant"
SPECIAL_ANSWERS = frozenset((NOT_UNDERSTOOD, REJECT, IRRELEVANT))

Pairs = list[tuple[str, str]]


# ---------------------------------------------------------------------------
# key=value text
# ---------------------------------------------------------------------------


def _value_limit(key: str) -> int:
    spec = KEYS.get(key)
    if spec is not None:
        return spec.max_len
    if key.startswith(("CHAP_", "SRP_", "KRB_", "SPKM", "X-", "X#")):
        return MAX_LONG_VALUE
    return MAX_LONG_VALUE  # unknown key: we only answer NotUnderstood


def decode_text(data: BytesLike, *, allow_unterminated: bool = False) -> Pairs:
    """Split a text data segment into ``(key, value)`` pairs (RFC 7143 §6.1).

    Every pair must end with NUL (``allow_unterminated`` accepts a missing last
    NUL, for lenient tools); empty items between NULs are skipped.  Raises
    :class:`KeyFormatError` for a missing ``=``, an empty or over-long key, a
    key with characters outside ``[A-Za-z0-9.-+@_]``, an over-long value or a
    value that is not UTF-8.  Order and repeats are kept (SendTargets repeats
    TargetAddress).
    """
    raw = bytes(data)
    if not raw:
        return []
    if raw[-1] != 0 and not allow_unterminated:
        raise KeyFormatError(_safe_key(raw.rsplit(b"\0", 1)[-1]), "",
                             "last key=value pair is not NUL-terminated (§6.1)")
    out: Pairs = []
    for item in raw.split(b"\0"):
        if not item:
            continue
        eq = item.find(b"=")
        if eq < 0:
            raise KeyFormatError(_safe_key(item), "", "missing '=' (§6.1)")
        kb = item[:eq]
        if not kb:
            raise KeyFormatError("", "", "empty key name (§6.1)")
        if len(kb) > MAX_KEY_NAME:
            raise KeyFormatError(_safe_key(kb), "", f"key name longer than {MAX_KEY_NAME} bytes")
        try:
            key = kb.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(_safe_key(kb), "", "key name is not ASCII") from None
        if not _KEY_NAME_RE.match(key):
            raise KeyFormatError(_safe_key(kb), "", "invalid character in key name (§6.1)")
        vb = item[eq + 1:]
        limit = _value_limit(key)
        if len(vb) > limit:
            raise KeyFormatError(key, f"<{len(vb)} bytes>", f"value longer than {limit} bytes")
        try:
            value = vb.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFormatError(key, "<binary>", "value is not UTF-8 (§6.1)") from None
        out.append((key, value))
    return out


def _safe_key(b: bytes) -> str:
    """A printable, bounded rendering of a (possibly garbage) key name."""
    text = b[:40].decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode pairs as ``key=value\\0...`` (RFC 7143 §6.1), checking the limits."""
    parts: list[bytes] = []
    for key, value in pairs:
        if not _KEY_NAME_RE.match(key) or len(key) > MAX_KEY_NAME:
            raise KeyFormatError(key[:40], "", "invalid key name (§6.1)")
        vb = value.encode("utf-8")
        if b"\0" in vb:
            raise KeyFormatError(key, "<NUL>", "value contains NUL")
        if len(vb) > _value_limit(key):
            raise KeyFormatError(key, f"<{len(vb)} bytes>", "value too long")
        parts.append(key.encode("ascii") + b"=" + vb + b"\0")
    return b"".join(parts)


def split_text(data: bytes, limit: int) -> list[bytes]:
    """Cut an encoded text into data segments of at most ``limit`` bytes (C bit, §6.3)."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if not data:
        return [b""]
    return [data[i:i + limit] for i in range(0, len(data), limit)]


class TextAssembler:
    """Collect text data segments until one arrives with C=0 (RFC 7143 §11.10.2, §11.13.3).

    ``limit`` bounds the total size (a target sending an endless stream of
    continued PDUs gets a :class:`KeyFormatError`).
    """

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._buf = bytearray()

    def add(self, data: BytesLike, cont: bool) -> Pairs | None:
        """Add one segment; return the decoded pairs once the text is complete."""
        self._buf += data
        if len(self._buf) > self.limit:
            size = len(self._buf)
            self._buf = bytearray()
            raise KeyFormatError("<text>", f"<{size} bytes>",
                                 f"continued text exceeds {self.limit} bytes")
        if cont:
            return None
        raw, self._buf = bytes(self._buf), bytearray()
        return decode_text(raw)

    @property
    def in_progress(self) -> bool:
        """True while a continued text is being collected."""
        return bool(self._buf)


# ---------------------------------------------------------------------------
# The key table (RFC 7143 §13)
# ---------------------------------------------------------------------------


class KeyType(Enum):
    """Value type of a key (RFC 7143 §6.1 / §13)."""

    BOOLEAN = "boolean"
    NUMBER = "numerical"
    LIST = "list"
    STRING = "string"


class Rule(Enum):
    """Result function of a negotiation (RFC 7143 §6.2)."""

    MIN = "min"
    MAX = "max"
    AND = "and"
    OR = "or"
    CHOICE = "list"  # the first value of the offerer's list the responder supports
    DECLARATIVE = "declarative"


class Scope(Enum):
    """Where a negotiated value applies (RFC 7143 §13 'SW'/'CO' markers)."""

    SESSION = "session"
    CONNECTION = "connection"


class Phase(Enum):
    """When a key may be used (RFC 7143 §13 'Use:' lines)."""

    SECURITY = "security"  # SecurityNegotiation stage only
    OPERATIONAL = "operational"  # LoginOperationalNegotiation (IO: initialize only)
    ANY = "any"  # login and full feature phase ('ALL')
    FFP = "ffp"  # full feature phase only (SendTargets)


class Sender(Enum):
    """Who may send the key first."""

    INITIATOR = "initiator"
    TARGET = "target"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One row of :data:`KEYS`."""

    name: str
    type: KeyType
    rule: Rule
    default: str | None
    scope: Scope
    phase: Phase
    sender: Sender = Sender.BOTH
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    max_len: int = MAX_VALUE
    leading_only: bool = False
    discovery_irrelevant: bool = False
    section: str = ""


_N24 = (1 << 24) - 1
_SPECS = (
    KeySpec("HeaderDigest", KeyType.LIST, Rule.CHOICE, "None", Scope.CONNECTION,
            Phase.OPERATIONAL, choices=("CRC32C", "None"), section="§13.1"),
    KeySpec("DataDigest", KeyType.LIST, Rule.CHOICE, "None", Scope.CONNECTION,
            Phase.OPERATIONAL, choices=("CRC32C", "None"), section="§13.1"),
    KeySpec("MaxConnections", KeyType.NUMBER, Rule.MIN, "1", Scope.SESSION, Phase.OPERATIONAL,
            low=1, high=65535, leading_only=True, discovery_irrelevant=True, section="§13.2"),
    KeySpec("SendTargets", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION, Phase.FFP,
            Sender.INITIATOR, section="§13.3"),
    KeySpec("TargetName", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION, Phase.ANY,
            Sender.BOTH, max_len=223, leading_only=True, section="§13.4"),
    KeySpec("InitiatorName", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION,
            Phase.ANY, Sender.INITIATOR, max_len=223, leading_only=True, section="§13.5"),
    KeySpec("TargetAlias", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION, Phase.ANY,
            Sender.TARGET, section="§13.6"),
    KeySpec("InitiatorAlias", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION,
            Phase.ANY, Sender.INITIATOR, section="§13.7"),
    KeySpec("TargetAddress", KeyType.STRING, Rule.DECLARATIVE, None, Scope.SESSION, Phase.ANY,
            Sender.TARGET, section="§13.8"),
    KeySpec("TargetPortalGroupTag", KeyType.NUMBER, Rule.DECLARATIVE, None, Scope.SESSION,
            Phase.ANY, Sender.TARGET, low=0, high=65535, section="§13.9"),
    KeySpec("InitialR2T", KeyType.BOOLEAN, Rule.OR, "Yes", Scope.SESSION, Phase.OPERATIONAL,
            leading_only=True, discovery_irrelevant=True, section="§13.10"),
    KeySpec("ImmediateData", KeyType.BOOLEAN, Rule.AND, "Yes", Scope.SESSION,
            Phase.OPERATIONAL, leading_only=True, discovery_irrelevant=True, section="§13.11"),
    KeySpec("MaxRecvDataSegmentLength", KeyType.NUMBER, Rule.DECLARATIVE, "8192",
            Scope.CONNECTION, Phase.ANY, low=512, high=_N24, section="§13.12"),
    KeySpec("MaxBurstLength", KeyType.NUMBER, Rule.MIN, "262144", Scope.SESSION,
            Phase.OPERATIONAL, low=512, high=_N24, leading_only=True,
            discovery_irrelevant=True, section="§13.13"),
    KeySpec("FirstBurstLength", KeyType.NUMBER, Rule.MIN, "65536", Scope.SESSION,
            Phase.OPERATIONAL, low=512, high=_N24, leading_only=True,
            discovery_irrelevant=True, section="§13.14"),
    KeySpec("DefaultTime2Wait", KeyType.NUMBER, Rule.MAX, "2", Scope.SESSION,
            Phase.OPERATIONAL, low=0, high=3600, leading_only=True, section="§13.15"),
    KeySpec("DefaultTime2Retain", KeyType.NUMBER, Rule.MIN, "20", Scope.SESSION,
            Phase.OPERATIONAL, low=0, high=3600, leading_only=True, section="§13.16"),
    KeySpec("MaxOutstandingR2T", KeyType.NUMBER, Rule.MIN, "1", Scope.SESSION,
            Phase.OPERATIONAL, low=1, high=65535, leading_only=True,
            discovery_irrelevant=True, section="§13.17"),
    KeySpec("DataPDUInOrder", KeyType.BOOLEAN, Rule.OR, "Yes", Scope.SESSION,
            Phase.OPERATIONAL, leading_only=True, discovery_irrelevant=True, section="§13.18"),
    KeySpec("DataSequenceInOrder", KeyType.BOOLEAN, Rule.OR, "Yes", Scope.SESSION,
            Phase.OPERATIONAL, leading_only=True, discovery_irrelevant=True, section="§13.19"),
    KeySpec("ErrorRecoveryLevel", KeyType.NUMBER, Rule.MIN, "0", Scope.SESSION,
            Phase.OPERATIONAL, low=0, high=2, leading_only=True, section="§13.20"),
    KeySpec("SessionType", KeyType.STRING, Rule.DECLARATIVE, "Normal", Scope.SESSION,
            Phase.ANY, Sender.INITIATOR, choices=("Discovery", "Normal"), leading_only=True,
            section="§13.21"),
    KeySpec("AuthMethod", KeyType.LIST, Rule.CHOICE, "None", Scope.CONNECTION,
            Phase.SECURITY, choices=("KRB5", "SRP", "CHAP", "None"), section="§12.1"),
    KeySpec("TaskReporting", KeyType.LIST, Rule.CHOICE, "RFC3720", Scope.SESSION,
            Phase.OPERATIONAL, choices=("RFC3720", "ResponseFence", "FastAbort"),
            leading_only=True, discovery_irrelevant=True, section="§13.23"),
    KeySpec("iSCSIProtocolLevel", KeyType.NUMBER, Rule.MIN, "1", Scope.SESSION,
            Phase.OPERATIONAL, low=0, high=31, leading_only=True, section="§13.24"),
    # Obsolete marker keys of RFC 3720 (§13.25 of RFC 7143 lists them as obsolete):
    # answered so that old targets that still offer them are satisfied.
    KeySpec("OFMarker", KeyType.BOOLEAN, Rule.AND, "No", Scope.CONNECTION, Phase.OPERATIONAL,
            section="RFC 3720 §A.3.1"),
    KeySpec("IFMarker", KeyType.BOOLEAN, Rule.AND, "No", Scope.CONNECTION, Phase.OPERATIONAL,
            section="RFC 3720 §A.3.1"),
    KeySpec("OFMarkInt", KeyType.STRING, Rule.DECLARATIVE, "2048~2048", Scope.CONNECTION,
            Phase.OPERATIONAL, section="RFC 3720 §A.3.2"),
    KeySpec("IFMarkInt", KeyType.STRING, Rule.DECLARATIVE, "2048~2048", Scope.CONNECTION,
            Phase.OPERATIONAL, section="RFC 3720 §A.3.2"),
    KeySpec("RDMAExtensions", KeyType.BOOLEAN, Rule.AND, "No", Scope.SESSION,
            Phase.OPERATIONAL, leading_only=True, section="RFC 7145 §6.1"),
    # CHAP keys (§12.1.3): values bounded at 8192 bytes of encoding (binary values).
    KeySpec("CHAP_A", KeyType.LIST, Rule.CHOICE, None, Scope.CONNECTION, Phase.SECURITY,
            section="§12.1.3"),
    KeySpec("CHAP_I", KeyType.NUMBER, Rule.DECLARATIVE, None, Scope.CONNECTION,
            Phase.SECURITY, low=0, high=255, section="§12.1.3"),
    KeySpec("CHAP_C", KeyType.STRING, Rule.DECLARATIVE, None, Scope.CONNECTION,
            Phase.SECURITY, max_len=MAX_LONG_VALUE, section="§12.1.3"),
    KeySpec("CHAP_N", KeyType.STRING, Rule.DECLARATIVE, None, Scope.CONNECTION,
            Phase.SECURITY, max_len=MAX_VALUE, section="§12.1.3"),
    KeySpec("CHAP_R", KeyType.STRING, Rule.DECLARATIVE, None, Scope.CONNECTION,
            Phase.SECURITY, max_len=MAX_LONG_VALUE, section="§12.1.3"),
)
KEYS: dict[str, KeySpec] = {s.name: s for s in _SPECS}
"""Every key this initiator knows, by name (RFC 7143 §13)."""

SECURITY_KEYS = frozenset(("AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"))


def parse_number(key: str, value: str, low: int | None = None, high: int | None = None) -> int:
    """Parse a numerical value (decimal or 0x hex, RFC 7143 §6.1), with bounds."""
    if _DECIMAL_RE.match(value):
        n = int(value)
    elif _HEX_RE.match(value):
        n = int(value, 16)
    else:
        raise NegotiationError(key, value, "not a number")
    spec = KEYS.get(key)
    lo = low if low is not None else (spec.low if spec else 0)
    hi = high if high is not None else (spec.high if spec and spec.high else (1 << 64) - 1)
    if not lo <= n <= hi:
        raise NegotiationError(key, value, f"outside {lo}..{hi}")
    return n


def parse_bool(key: str, value: str) -> bool:
    """Parse ``Yes``/``No`` (RFC 7143 §6.1 boolean-value)."""
    if value == "Yes":
        return True
    if value == "No":
        return False
    raise NegotiationError(key, value, "not Yes or No")


def _bool_str(b: bool) -> str:
    return "Yes" if b else "No"


# ---------------------------------------------------------------------------
# Negotiation
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class OperationalConfig:
    """What we offer in LoginOperationalNegotiation (RFC 7143 §13).

    Digest lists are in preference order: ``("CRC32C", "None")`` prefers digests
    but accepts none; ``("CRC32C",)`` requires them.  The defaults suit a boot
    initiator: large receive segments, immediate data, no R2T for the first burst,
    error recovery level 0 (recovery by reconnect).
    """

    header_digest: tuple[str, ...] = ("None",)
    data_digest: tuple[str, ...] = ("None",)
    max_connections: int = 1
    initial_r2t: bool = False
    immediate_data: bool = True
    #: 256 KiB. 1 MiB was tried: tgtd then answers a 1 MiB read with one Data-In and
    #: more of it is placed directly (netstack.tcp.placement), but in the multipath test
    #: (path link down mid-read, tests/integration/test_multipath_tgtd.py) tgtd then
    #: stopped answering logins on every path in about 1 run of 3. strace shows why:
    #: its main thread spins on the dead path's socket, write() of the rest of a Data-In
    #: segment -> EAGAIN, setsockopt(TCP_CORK), again, at 100% CPU, without going back
    #: to its event loop, until the kernel gives the connection up. A large PDU makes a
    #: full send buffer mid-segment likely; with 256 KiB it was not seen (7 of 7).
    #: Resending the RST of an abandoned connection when its path returns
    #: (TcpLayer.bury) does not help here: the spin starts while the path is still
    #: down, and no login anywhere succeeds before the kernel gives up (1 MiB again
    #: with it: 2 of 8 runs failed so).
    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 16776192
    first_burst_length: int = 262144
    default_time2wait: int = 2
    default_time2retain: int = 0
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    task_reporting: tuple[str, ...] = ()
    protocol_level: int | None = None
    """Offer iSCSIProtocolLevel (§13.24) when set; off by default (old targets)."""

    def __post_init__(self) -> None:
        for key, lst in (("HeaderDigest", self.header_digest), ("DataDigest", self.data_digest)):
            if not lst or any(v not in ("CRC32C", "None") for v in lst):
                raise NegotiationError(key, ",".join(lst), "offer must list CRC32C and/or None")
        checks = (
            ("MaxConnections", self.max_connections),
            ("MaxRecvDataSegmentLength", self.max_recv_data_segment_length),
            ("MaxBurstLength", self.max_burst_length),
            ("FirstBurstLength", self.first_burst_length),
            ("DefaultTime2Wait", self.default_time2wait),
            ("DefaultTime2Retain", self.default_time2retain),
            ("MaxOutstandingR2T", self.max_outstanding_r2t),
            ("ErrorRecoveryLevel", self.error_recovery_level),
        )
        for key, n in checks:
            spec = KEYS[key]
            if not spec.low <= n <= spec.high:
                raise NegotiationError(key, n, f"configured value outside {spec.low}..{spec.high}")
        if self.first_burst_length > self.max_burst_length:
            raise NegotiationError("FirstBurstLength", self.first_burst_length,
                                   "exceeds MaxBurstLength (§13.14)")

    def value(self, key: str) -> str | None:
        """Our offer/preferred value of ``key`` in wire form (None: we do not offer it)."""
        v: object
        match key:
            case "HeaderDigest":
                return ",".join(self.header_digest)
            case "DataDigest":
                return ",".join(self.data_digest)
            case "TaskReporting":
                return ",".join(self.task_reporting) if self.task_reporting else None
            case "iSCSIProtocolLevel":
                return None if self.protocol_level is None else str(self.protocol_level)
            case "OFMarker" | "IFMarker" | "RDMAExtensions":
                return "No"
        attr = _ATTR.get(key)
        if attr is None:
            return None
        v = getattr(self, attr)
        return _bool_str(v) if isinstance(v, bool) else str(v)


_ATTR = {
    "MaxConnections": "max_connections",
    "InitialR2T": "initial_r2t",
    "ImmediateData": "immediate_data",
    "MaxRecvDataSegmentLength": "max_recv_data_segment_length",
    "MaxBurstLength": "max_burst_length",
    "FirstBurstLength": "first_burst_length",
    "DefaultTime2Wait": "default_time2wait",
    "DefaultTime2Retain": "default_time2retain",
    "MaxOutstandingR2T": "max_outstanding_r2t",
    "DataPDUInOrder": "data_pdu_in_order",
    "DataSequenceInOrder": "data_sequence_in_order",
    "ErrorRecoveryLevel": "error_recovery_level",
}

_OFFER_ORDER = (
    "HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData",
    "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
    "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
    "ErrorRecoveryLevel", "TaskReporting", "iSCSIProtocolLevel",
)


@dataclass(frozen=True, slots=True)
class NegotiatedParams:
    """Operational parameters in force after login (RFC 7143 §13).

    ``max_recv_data_segment_length`` is ours (what the target may send in one
    PDU: set it on the parser); ``max_xmit_data_segment_length`` is the
    target's declared MaxRecvDataSegmentLength (the most we may put in one
    Data-Out / immediate data / Text PDU), 8192 when it declared none (§13.12).
    """

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length: int = 8192
    max_xmit_data_segment_length: int = 8192
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    task_reporting: str = "RFC3720"
    protocol_level: int | None = None
    session_type: str = "Normal"
    target_name: str | None = None
    target_alias: str | None = None
    target_portal_group_tag: int | None = None
    target_addresses: tuple[str, ...] = ()
    unanswered: tuple[str, ...] = ()
    """Keys we offered that the target never answered (defaults were applied)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Other keys the target declared (vendor X- keys etc.), last value wins."""

    @property
    def first_burst_applies(self) -> bool:
        """FirstBurstLength is irrelevant when InitialR2T=Yes and ImmediateData=No (§13.14)."""
        return not (self.initial_r2t and not self.immediate_data)


class Negotiator:
    """Operational negotiation for one login (RFC 7143 §6.2, §6.3, §13).

    Use: ``offer()`` gives our keys for the operational stage; feed every
    decoded text of the target with ``receive(pairs)``, which returns the
    answers we owe to keys the target offered; ``result()`` once login is done.
    Security keys are refused here (the login machine routes them).
    """

    def __init__(self, config: OperationalConfig, *, discovery: bool = False) -> None:
        self.config = config
        self.discovery = discovery
        self._offered: dict[str, str] = {}
        self._results: dict[str, str] = {}
        self._declared: dict[str, str] = {}
        self._addresses: list[str] = []
        self._extra: dict[str, str] = {}

    # -- our side -------------------------------------------------------------

    def offer(self) -> Pairs:
        """Our operational offer (every key, so defaults never differ between peers)."""
        out: Pairs = []
        for key in _OFFER_ORDER:
            spec = KEYS[key]
            if self.discovery and spec.discovery_irrelevant:
                continue
            if key in self._offered or key in self._results:
                continue
            value = self.config.value(key)
            if value is None:
                continue
            if spec.rule is not Rule.DECLARATIVE:
                self._offered[key] = value
            else:
                self._declared[key] = value
            out.append((key, value))
        return out

    @property
    def awaiting(self) -> frozenset[str]:
        """Keys we offered and the target has not answered yet."""
        return frozenset(k for k in self._offered if k not in self._results)

    # -- their side -------------------------------------------------------------

    def receive(self, pairs: Iterable[tuple[str, str]]) -> Pairs:
        """Apply the target's keys; return our answers to keys the target offered."""
        answers: Pairs = []
        for key, value in pairs:
            if key in SECURITY_KEYS:
                raise NegotiationError(key, value, "security key outside the security stage")
            if key == "TargetAddress":
                self._addresses.append(value)
                continue
            spec = KEYS.get(key)
            if spec is None:
                # Unknown key (including X- and X# vendor keys): §6.2 NotUnderstood.
                if value not in SPECIAL_ANSWERS:
                    self._extra[key] = value
                    answers.append((key, NOT_UNDERSTOOD))
                continue
            if key in self._offered:
                self._apply_answer(spec, self._offered[key], value)
            elif spec.rule is Rule.DECLARATIVE:
                self._apply_declaration(spec, value)
            else:
                answer = self._answer_offer(spec, value)
                if answer is not None:
                    answers.append((key, answer))
        return answers

    def _apply_declaration(self, spec: KeySpec, value: str) -> None:
        key = spec.name
        if value in SPECIAL_ANSWERS:
            # The target refusing one of our declarations (e.g. InitiatorAlias=NotUnderstood).
            return
        if spec.sender is Sender.INITIATOR:
            return  # an echo of one of our declarations (SessionType etc.): nothing to do
        if spec.type is KeyType.NUMBER:
            value = str(parse_number(key, value))  # normalise 0x forms
        self._results[key] = value

    def _apply_answer(self, spec: KeySpec, ours: str, theirs: str) -> None:
        """The target answered our offer ``ours`` with ``theirs`` (§6.2)."""
        key = spec.name
        if theirs in SPECIAL_ANSWERS:
            # The key keeps its default (§6.2.1); it must be acceptable to us.
            default = spec.default
            if spec.type is KeyType.LIST and default not in ours.split(","):
                raise NegotiationError(key, theirs, f"target refused our required {ours}")
            if default is not None:
                self._results[key] = default
            return
        if spec.type is KeyType.LIST:
            choices = ours.split(",")
            if theirs not in choices:
                raise NegotiationError(key, theirs, f"answer is not one of our offer {ours}")
            self._results[key] = theirs
        elif spec.type is KeyType.BOOLEAN:
            mine, other = parse_bool(key, ours), parse_bool(key, theirs)
            if spec.rule is Rule.AND:
                if not mine and other:
                    raise NegotiationError(key, theirs, "we offered No; AND result must be No")
                self._results[key] = _bool_str(mine and other)
            else:
                if mine and not other:
                    raise NegotiationError(key, theirs, "we offered Yes; OR result must be Yes")
                self._results[key] = _bool_str(mine or other)
        elif spec.type is KeyType.NUMBER:
            mine_n, other_n = parse_number(key, ours), parse_number(key, theirs)
            if spec.rule is Rule.MIN and other_n > mine_n:
                raise NegotiationError(key, theirs, f"above our offer {ours} (result is minimum)")
            if spec.rule is Rule.MAX and other_n < mine_n:
                raise NegotiationError(key, theirs, f"below our offer {ours} (result is maximum)")
            self._results[key] = str(other_n)
        else:
            self._results[key] = theirs

    def _answer_offer(self, spec: KeySpec, theirs: str) -> str | None:
        """The target offered ``theirs`` for a key we did not offer: our answer (§6.2)."""
        key = spec.name
        if theirs in SPECIAL_ANSWERS:
            return None
        if self.discovery and spec.discovery_irrelevant:
            return IRRELEVANT
        if spec.sender is Sender.INITIATOR or spec.phase is Phase.SECURITY:
            return REJECT
        mine = self.config.value(key) or spec.default
        try:
            if spec.type is KeyType.LIST:
                offered = theirs.split(",")
                ours = mine.split(",") if mine else []
                pick = next((v for v in offered if v in ours), None)
                if pick is None:
                    return REJECT
                self._results[key] = pick
                return pick
            if spec.type is KeyType.BOOLEAN:
                other = parse_bool(key, theirs)
                own = parse_bool(key, mine) if mine else other
                res = (own and other) if spec.rule is Rule.AND else (own or other)
                self._results[key] = _bool_str(res)
                return _bool_str(res)
            if spec.type is KeyType.NUMBER:
                other_n = parse_number(key, theirs)
                own_n = parse_number(key, mine) if mine else other_n
                res_n = min(own_n, other_n) if spec.rule is Rule.MIN else max(own_n, other_n)
                self._results[key] = str(res_n)
                return str(res_n)
        except NegotiationError:
            return REJECT
        return NOT_UNDERSTOOD

    # -- result -------------------------------------------------------------

    def _get(self, key: str) -> str:
        v = self._results.get(key)
        if v is None:
            spec = KEYS[key]
            assert spec.default is not None
            return spec.default
        return v

    def result(self) -> NegotiatedParams:
        """The negotiated parameters; keys never answered keep their defaults (§6.2)."""
        g = self._get
        for key in self.awaiting:
            # The optional-answer cases of §6.2.1: AND offered No, OR offered Yes.
            spec = KEYS[key]
            ours = self._offered[key]
            if (spec.rule is Rule.AND and ours == "No") or (spec.rule is Rule.OR and ours == "Yes"):
                self._results[key] = ours
        unanswered = tuple(sorted(self.awaiting))
        for key in ("HeaderDigest", "DataDigest"):
            if key in unanswered and "None" not in self._offered[key].split(","):
                raise NegotiationError(key, "<no answer>", "target did not accept digests")
        first = int(g("FirstBurstLength"))
        burst = int(g("MaxBurstLength"))
        if first > burst:
            raise NegotiationError("FirstBurstLength", first,
                                   f"exceeds MaxBurstLength {burst} (§13.14)")
        tpgt = self._results.get("TargetPortalGroupTag")
        level = self._results.get("iSCSIProtocolLevel")
        return NegotiatedParams(
            header_digest=g("HeaderDigest") == "CRC32C",
            data_digest=g("DataDigest") == "CRC32C",
            max_connections=int(g("MaxConnections")),
            initial_r2t=g("InitialR2T") == "Yes",
            immediate_data=g("ImmediateData") == "Yes",
            max_recv_data_segment_length=int(
                self._declared.get("MaxRecvDataSegmentLength", "8192")),
            max_xmit_data_segment_length=int(g("MaxRecvDataSegmentLength")),
            max_burst_length=burst,
            first_burst_length=first,
            default_time2wait=int(g("DefaultTime2Wait")),
            default_time2retain=int(g("DefaultTime2Retain")),
            max_outstanding_r2t=int(g("MaxOutstandingR2T")),
            data_pdu_in_order=g("DataPDUInOrder") == "Yes",
            data_sequence_in_order=g("DataSequenceInOrder") == "Yes",
            error_recovery_level=int(g("ErrorRecoveryLevel")),
            task_reporting=g("TaskReporting"),
            protocol_level=int(level) if level is not None else None,
            session_type="Discovery" if self.discovery else "Normal",
            target_name=self._results.get("TargetName"),
            target_alias=self._results.get("TargetAlias"),
            target_portal_group_tag=int(tpgt) if tpgt is not None else None,
            target_addresses=tuple(self._addresses),
            unanswered=unanswered,
            extra=dict(self._extra),
        )


#: The operational keys a user may set (``with_params``; the CLI's ``--iscsi-param``):
#: the throughput and timing ones. Digests have their own option; MaxConnections,
#: MaxOutstandingR2T, the in-order keys and ErrorRecoveryLevel stay what the session
#: implements.
USER_KEYS = ("InitialR2T", "ImmediateData", "MaxRecvDataSegmentLength", "MaxBurstLength",
             "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain")


def with_params(base: OperationalConfig, params: Iterable[str]) -> OperationalConfig:
    """``base`` with ``KEY=VALUE`` settings applied, as iscsiadm's node parameters are:
    ``MaxRecvDataSegmentLength=1048576``, ``ImmediateData=No`` (RFC 7143 §6.1 value
    forms: decimal or 0x hex numbers, Yes/No). Only :data:`USER_KEYS`; a bad key, value
    or combination raises :class:`NegotiationError` naming it."""
    changes: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise NegotiationError(item, "", "expected KEY=VALUE")
        if key not in USER_KEYS:
            raise NegotiationError(key, value, "not a key that can be set here (one of "
                                   + ", ".join(USER_KEYS) + ")")
        spec = KEYS[key]
        changes[_ATTR[key]] = (parse_bool(key, value) if spec.type is KeyType.BOOLEAN
                               else parse_number(key, value))
    if not changes:
        return base
    return replace(base, **changes)  # __post_init__ checks ranges and FirstBurst <= MaxBurst


__all__ = [
    "IRRELEVANT",
    "KEYS",
    "MAX_KEY_NAME",
    "MAX_LONG_VALUE",
    "MAX_VALUE",
    "NOT_UNDERSTOOD",
    "REJECT",
    "SECURITY_KEYS",
    "USER_KEYS",
    "KeySpec",
    "KeyType",
    "NegotiatedParams",
    "Negotiator",
    "OperationalConfig",
    "Pairs",
    "Phase",
    "Rule",
    "Scope",
    "Sender",
    "TextAssembler",
    "decode_text",
    "encode_text",
    "parse_bool",
    "parse_number",
    "split_text",
    "with_params",
]
