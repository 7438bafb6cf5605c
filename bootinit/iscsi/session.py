"""The iSCSI session as a pure state machine: login, full feature phase, recovery.

Sans-IO (see ``docs/interfaces.md``): bytes and events go in, bytes and events come
out, time is passed in as ``now``; there are no sockets, no clock, no threads.  The
glue (:mod:`bootinit.iscsi.connection`) drives it::

    s = Session(SessionConfig(...), now=t)        # wants a transport at once
    s.transport_action()   -> ("connect", Portal) | ("abort" | "close", None) | None
    s.connection_started(now); s.connection_made(now); s.connection_lost(reason, now)
    s.transport_closed()                          # after acting on abort/close
    s.receive(data, now)                          # bytes from TCP, any chunking
    s.flush_to(conn.send)                         # our PDUs, as far as send() takes them
    s.next_deadline() / s.on_deadline(now)
    task = s.submit(ScsiRequest(...), callback, now)

States (:class:`SessionState`)::

    CONNECTING -> LOGIN -> [VERIFYING] -> FULL_FEATURE -> LOGGING_OUT -> CLOSED
         ^                                     |
         +---- WAIT (Time2Wait, backoff) <-----+  connection failure  (-> FAILED)

Full feature phase (RFC 7143 §3.2, §4.2, §11):

* commands are sent while CmdSN is inside the window ExpCmdSN..MaxCmdSN (RFC 1982
  arithmetic, §4.2.2.1) and fewer than ``queue_depth`` are outstanding; the rest wait;
* write data: immediate data and unsolicited Data-Out up to FirstBurstLength as
  ImmediateData/InitialR2T allow (§13.10-§13.14), the rest per R2T (§11.8) in Data-Out
  sequences of at most MaxRecvDataSegmentLength of the target, DataSN from 0 per
  sequence, up to MaxOutstandingR2T R2Ts at once (§13.17).  Data-Out PDUs are built
  lazily as the transport takes bytes, each payload a memoryview of the caller's buffer;
* read data: the parser places each Data-In payload at its BufferOffset straight into
  the caller's buffer; DataSN and offsets are checked (§11.7), status may come with the
  last Data-In (S bit, §11.7.4) or in a SCSI Response (§11.4) with residuals;
* CHECK CONDITION sense data is decoded; retryable conditions (UNIT ATTENTION, BUSY,
  TASK SET FULL, becoming ready) are retried a bounded number of times;
* NOP-Out pings after ``nop_interval`` s of silence; no answer within ``nop_timeout``
  s means the connection is dead (§11.18); target NOP-Ins with a TTT are answered;
* a command without status after its timeout is aborted with ABORT TASK, then
  LOGICAL UNIT RESET, then the connection is dropped (§11.5, §7.12);
* Async Messages (§11.9): logout request -> logout and log in again; connection or
  session drop -> recovery; renegotiation request -> logout and log in again;
* Reject (§11.17) fails the referenced task; Logout (§11.14) closes cleanly.

Recovery (ERL 0, §7.1.5, §6.3.5): see :mod:`bootinit.iscsi.recovery`.  Tasks that did
not complete are replayed after a new login, with new ITT/CmdSN: writes from the
caller's buffer, reads placed from offset 0 again.  When LUN identities were
registered (:meth:`Session.register_lun_identity`) they are checked first (VPD 0x80 /
0x83); a LUN that changed fails all its I/O with :class:`LunChangedError`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from bootinit.iscsi.chap import ChapCredentials
from bootinit.iscsi.counters import SessionCounters
from bootinit.iscsi.errors import (
    AuthenticationError,
    DataDigestError,
    HeaderDigestError,
    IscsiError,
    KeyFormatError,
    LoginError,
    NegotiationError,
    PlacementError,
    ProtocolError,
)
from bootinit.iscsi.keys import NegotiatedParams, OperationalConfig
from bootinit.iscsi.login import LoginConfig, LoginMachine, LoginRedirect, LoginSuccess
from bootinit.iscsi.parser import ParsedItem, PduParser
from bootinit.iscsi.pdu import (
    R2T,
    RESERVED_TAG,
    TARGET_OPCODES,
    AsyncEvent,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutReason,
    LogoutRequest,
    LogoutResponse,
    LogoutResponseCode,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfResponse,
    encode,
)
from bootinit.iscsi.recovery import Backoff, LunIdentity, RecoveryPolicy, identity_from_vpd
from bootinit.iscsi.serial import MASK, cmdsn_allowed, sn_ge, sn_inc, update_cmd_window
from bootinit.iscsi.task import (
    CommandTimeout,
    LunChangedError,
    ScsiRequest,
    ScsiResult,
    SessionClosed,
    SessionFailed,
    TargetFailure,
    TargetProtocolError,
    Task,
    TaskCallback,
    TaskRejected,
    TaskState,
    make_result,
)
from bootinit.iscsi.text import DiscoveredTarget, Portal, SendTargets
from bootinit.scsi import cdb as scsi_cdb
from bootinit.scsi.lun import lun_field
from bootinit.scsi.sense import ScsiError, SenseKey, Status
from netstack.link.base import BytesLike
from netstack.tcp.placement import Continuation, Placed

log = logging.getLogger("bootinit.iscsi.session")

_INF = float("inf")
_STALE_KEEP = 512



class SessionState(Enum):
    """Life cycle of a session (see module doc)."""

    WAIT = "wait"  # no transport; next login attempt at a deadline
    CONNECTING = "connecting"  # a transport was asked for
    LOGIN = "login"
    VERIFYING = "verifying"  # re-login done; checking LUN identities
    FULL_FEATURE = "full-feature"
    LOGGING_OUT = "logging-out"
    CLOSED = "closed"
    FAILED = "failed"


class ConnectionLost(IscsiError):
    """The transport failed or the connection was declared dead."""


@dataclass(slots=True)
class SessionConfig:
    """Everything a session needs; times in seconds.

    ``queue_depth`` bounds outstanding commands (besides the CmdSN window);
    ``command_timeout`` is the default per-command timeout, ``tmf_timeout`` the
    wait for a task management or logout response; ``nop_interval`` None disables
    pings; ``retries`` bounds retries of retryable SCSI conditions per command.
    """

    initiator_name: str
    portal: Portal
    target_name: str | None = None
    discovery: bool = False
    initiator_alias: str | None = None
    chap: ChapCredentials | None = field(default=None, repr=False)
    require_auth: bool | None = None
    operational: OperationalConfig = field(default_factory=OperationalConfig)
    isid: bytes | None = None
    queue_depth: int = 32
    command_timeout: float = 30.0
    tmf_timeout: float = 10.0
    login_timeout: float = 15.0
    nop_interval: float | None = 5.0
    nop_timeout: float = 10.0
    retries: int = 5
    max_redirects: int = 5
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)

    def __post_init__(self) -> None:
        if self.queue_depth < 1:
            raise ValueError("queue_depth must be at least 1")
        if not self.discovery and not self.target_name:
            raise ValueError("a normal session needs a target name")


@dataclass(slots=True)
class _DataOutJob:
    """A Data-Out sequence still to send: ``[offset, end)`` of the task's buffer."""

    task: Task
    itt: int
    ttt: int
    offset: int
    end: int
    solicited: bool
    datasn: int = 0


@dataclass(slots=True)
class _Tmf:
    function: int
    task: Task
    deadline: float


@dataclass(slots=True)
class _LogoutPlan:
    relogin: bool  # target asked (or renegotiation): log in again afterwards
    deadline: float
    sent: bool = False
    itt: int = -1


class TextOp:
    """A SendTargets text exchange (RFC 7143 §11.10, §13.3); done like a task."""

    def __init__(self, value: str, callback: Callable[[TextOp], None] | None,
                 now: float) -> None:
        self.value = value
        self.callback = callback
        self.submitted_at = now
        self.deadline = _INF
        self.itt = -1
        self.exchange: SendTargets | None = None
        self.done = False
        self.targets: list[DiscoveredTarget] | None = None
        self.error: BaseException | None = None

    def check(self) -> list[DiscoveredTarget]:
        """The discovered targets, or raise the error."""
        if self.error is not None:
            raise self.error
        if self.targets is None:
            raise RuntimeError("text exchange not done")
        return self.targets


@dataclass(slots=True)
class _Verify:
    """LUN identity checks after a re-login."""

    tasks: dict[int, list[tuple[int, Task, bytearray]]]
    left: int


_T_NONE, _T_WANTED, _T_OPENING, _T_UP = range(4)


def _parse(parser: PduParser, chunks: Sequence[BytesLike | Placed],
           items: list[ParsedItem]) -> IscsiError | None:
    """Feed ``chunks`` to ``parser`` in order, appending what it completes to ``items``;
    the fatal error that stopped it (after the items parsed before the bad bytes), or
    None."""
    try:
        for c in chunks:
            items += parser.feed(c)
    except IscsiError as e:
        return e
    return None

class Session:
    """One iSCSI session over one connection at a time (see module doc)."""

    def __init__(self, config: SessionConfig, *, now: float,
                 counters: SessionCounters | None = None,
                 random_bytes: Callable[[int], bytes] | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else SessionCounters()
        self._random_bytes = random_bytes
        from bootinit.iscsi.login import random_isid

        self.isid = config.isid if config.isid is not None else (
            random_isid(random_bytes) if random_bytes else random_isid())
        self.portal = config.portal
        self._attempt_portal = config.portal
        self.state = SessionState.CONNECTING
        self.params: NegotiatedParams | None = None
        self.tsih = 0
        self.error: SessionFailed | None = None
        self.logged_in_once = False
        self.last_connection_error: BaseException | None = None
        # transport
        self._transport = _T_NONE
        self._drop: str | None = None
        self._wake_at = _INF
        self._attempt_deadline = _INF
        self._backoff = Backoff(config.recovery, now, now + config.recovery.initial_deadline)
        self._in_recovery = False
        self._unproven = False
        self._redirects = 0
        # one connection
        self._parser: PduParser | None = None
        # PDUs of the current parser parsed ahead (parse_ahead) and not yet processed,
        # and the fatal error that stopped it, if any (both cleared with the parser).
        self._ahead: list[ParsedItem] = []
        self._ahead_error: IscsiError | None = None
        #: Called when a task's buffer stops being a placement destination (the
        #: transport drops any placement window it was given, :meth:`placement_window`).
        self.placement_revoked: Callable[[], None] | None = None
        self._login: LoginMachine | None = None
        self._hd = False
        self._dd = False
        self._out: deque[BytesLike] = deque()
        self._out_off = 0
        self._jobs: deque[_DataOutJob] = deque()
        self.cmdsn = 0
        self.exp_cmdsn = 0
        self.max_cmdsn = 0
        self.exp_statsn = 0
        self._itt = 0
        # tasks
        self._pending: deque[Task] = deque()
        self._delayed: list[Task] = []
        self._active: dict[int, Task] = {}
        # A lower bound of the deadlines of the ACTIVE tasks (so next_deadline is O(1)):
        # lowered when a task is sent, made exact again by _timers; a task finishing
        # leaves it early, which costs one early (harmless) on_deadline.
        self._task_deadline = _INF
        self._internal: deque[Task] = deque()
        self._tmfs: dict[int, _Tmf] = {}
        self._texts: deque[TextOp] = deque()
        self._text_active: TextOp | None = None
        self._stale: set[int] = set()
        self._stale_order: deque[int] = deque()
        self._completed: deque[Task | TextOp] = deque()
        # liveness
        self._last_rx = now
        self._ping_itt: int | None = None
        self._ping_sent = 0.0
        self._user_pings: dict[int, tuple[float, Callable[[float], None]]] = {}
        self._stall_since: float | None = None
        self._stall_pinged = False
        # LUN identity
        self._identities: dict[int, LunIdentity] = {}
        self._changed: dict[int, LunChangedError] = {}
        self._verify: _Verify | None = None
        # logout
        self._logout: _LogoutPlan | None = None
        self._user_logout = False
        self._now_hint = now
        self._start_attempt(now)

    # ================================================================ public API

    @property
    def ready(self) -> bool:
        """In the full feature phase (commands flow)."""
        return self.state is SessionState.FULL_FEATURE

    @property
    def finished(self) -> bool:
        """CLOSED or FAILED: nothing more will happen."""
        return self.state in (SessionState.CLOSED, SessionState.FAILED)

    def outstanding(self) -> int:
        """Tasks and text exchanges submitted and not yet done."""
        return (len(self._pending) + len(self._delayed) + len(self._active)
                + len(self._texts) + (self._text_active is not None))

    def submit(self, request: ScsiRequest, callback: TaskCallback | None = None, *,
               now: float) -> Task:
        """Queue a SCSI command; ``callback(task)`` runs when it is done.

        A session that is closed or failed, or a LUN that changed identity, completes
        the task at once with the error (the callback still runs).
        """
        self._now_hint = now
        task = Task(request, callback, now)
        self.counters.inc("commands", "submitted")
        if request.expected_length > 0xFFFFFFFF:
            raise ValueError("Expected Data Transfer Length exceeds 2**32-1 (§11.3.6)")
        if self.state is SessionState.FAILED:
            assert self.error is not None
            self._finish(task, now, error=self.error)
        elif self.state is SessionState.CLOSED or self._user_logout:
            self._finish(task, now, error=SessionClosed("session logged out"))
        elif request.lun in self._changed:
            self._finish(task, now, error=self._changed[request.lun])
        else:
            self._pending.append(task)
            self._pump(now)
        self._run_callbacks()
        return task

    def send_targets(self, value: str = "All", callback: Callable[[TextOp], None] | None = None,
                     *, now: float) -> TextOp:
        """Start a SendTargets exchange (RFC 7143 §13.3); result in ``op.targets``."""
        self._now_hint = now
        op = TextOp(value, callback, now)
        if self.finished:
            op.error = self.error or SessionClosed("session logged out")
            op.done = True
            self._completed.append(op)
        else:
            self._texts.append(op)
            self._pump(now)
        self._run_callbacks()
        return op

    def register_lun_identity(self, lun: int, identity: LunIdentity) -> None:
        """Remember what LUN ``lun`` is, to check it after every re-login."""
        if identity.known:
            self._identities[lun] = identity

    def lun_identity(self, lun: int) -> LunIdentity | None:
        """The registered identity of ``lun``."""
        return self._identities.get(lun)

    def logout(self, now: float, timeout: float | None = None) -> None:
        """Log out cleanly (RFC 7143 §11.14): finish submitted work, then Logout.

        Tasks not done by ``timeout`` (default: ``tmf_timeout``) fail with
        :class:`SessionClosed`.  Without a connection the session closes at once.
        """
        self._now_hint = now
        if self.finished:
            return
        self._user_logout = True
        wait = self.config.tmf_timeout if timeout is None else timeout
        if self.state in (SessionState.FULL_FEATURE, SessionState.VERIFYING):
            self._logout = _LogoutPlan(relogin=False, deadline=now + wait)
            self._pump(now)
        elif self.state is SessionState.LOGGING_OUT and self._logout is not None:
            self._logout.relogin = False
        else:
            self._close(now, "session logged out")
        self._run_callbacks()

    def close(self, now: float) -> None:
        """Close at once without logout (abort the transport; fail what is left)."""
        if not self.finished:
            self._user_logout = True
            self._close(now, "session closed", drop="abort")
            self._run_callbacks()

    # -------------------------------------------------------------- transport

    def transport_action(self) -> tuple[str, Portal | None] | None:
        """What the glue must do now: ``("connect", portal)``, ``("abort"|"close", None)``."""
        if self._drop is not None:
            return (self._drop, None)
        if self._transport == _T_WANTED:
            return ("connect", self._attempt_portal)
        return None

    def connection_started(self, now: float) -> None:
        """The glue began opening the transport asked for."""
        if self._transport == _T_WANTED:
            self._transport = _T_OPENING

    def transport_closed(self) -> None:
        """The glue aborted/closed the transport as asked."""
        self._drop = None

    def connection_made(self, now: float) -> None:
        """The transport is established: start the login (RFC 7143 §6.3)."""
        if self._transport != _T_OPENING or self.state is not SessionState.CONNECTING:
            return
        self._transport = _T_UP
        self.state = SessionState.LOGIN
        c = self.config
        from bootinit.iscsi.login import LOGIN_MAX_DATA

        self._parser = PduParser(max_recv_data_segment_length=LOGIN_MAX_DATA,
                                 accept_opcodes=TARGET_OPCODES)
        self._hd = self._dd = False
        lc = LoginConfig(initiator_name=c.initiator_name, target_name=c.target_name,
                         discovery=c.discovery, initiator_alias=c.initiator_alias,
                         chap=c.chap, require_auth=c.require_auth, operational=c.operational,
                         isid=self.isid, tsih=0, itt=0)
        self._login = (LoginMachine(lc, random_bytes=self._random_bytes)
                       if self._random_bytes else LoginMachine(lc))
        self.counters.inc("login", "attempts")
        self._send(self._login.start())

    def connection_lost(self, reason: str, now: float) -> None:
        """The transport failed or the peer closed it."""
        self._now_hint = now
        if self._transport == _T_NONE:
            return
        self._transport = _T_NONE  # nothing to abort any more
        plan = self._logout
        if (self.state is SessionState.LOGGING_OUT and plan is not None and plan.sent
                and not plan.relogin):
            self._close(now, "session logged out", drop=None)
            self._run_callbacks()
            return
        self._fail_connection(ConnectionLost(f"connection lost: {reason}"), now, drop=None)
        self._run_callbacks()

    # ----------------------------------------------------------------- output

    def has_output(self) -> bool:
        """Bytes are waiting for the transport."""
        return bool(self._out) or bool(self._jobs)

    def flush_to(self, send: Callable[[BytesLike], int]) -> int:
        """Hand queued bytes to ``send`` (which returns how many it took) until it
        takes less than offered; returns the byte count.  Data-Out PDUs are built here."""
        total = 0
        out = self._out
        while True:
            if not out and not self._generate():
                break
            buf = out[0]
            view: BytesLike = buf if self._out_off == 0 else memoryview(buf)[self._out_off:]
            size = len(view)
            n = send(view)
            total += n
            if n < size:
                self._out_off += n
                break
            out.popleft()
            self._out_off = 0
        return total

    def data_to_send(self) -> bytes:
        """All queued output as one ``bytes`` (tests and tools)."""
        parts: list[bytes] = []

        def take(b: BytesLike) -> int:
            parts.append(bytes(b))
            return len(b)

        self.flush_to(take)
        return b"".join(parts)

    # ------------------------------------------------------------------ input

    def parse_ahead(self, chunks: Sequence[BytesLike | Placed]) -> memoryview | None:
        """Parse received pieces now and keep their PDUs for the next :meth:`receive` /
        :meth:`receive_chunks` (which processes them first, as if they had come with it):
        in the middle of a TCP batch the parser learns where the next Data-In bytes go
        without the per-batch work being done per PDU. Returns that place
        (:meth:`placement_window` after the parse, which changes no session state). Only
        in the full feature phase (at login the parser pauses for digests); anything
        else is an error of the caller."""
        parser = self._parser
        if parser is None or not self.can_parse_ahead():
            raise ProtocolError("parse_ahead outside the full feature phase")
        if self._ahead_error is None:  # else the parser stopped: reported by the next receive
            self._ahead_error = _parse(parser, chunks, self._ahead)
        return parser.placement_window()

    def can_parse_ahead(self) -> bool:
        """Whether :meth:`parse_ahead` may be called now (full feature phase, transport
        up)."""
        return self._parser is not None and self.state is SessionState.FULL_FEATURE and \
            self._transport == _T_UP

    def has_parsed_ahead(self) -> bool:
        """Whether PDUs (or an error) from :meth:`parse_ahead` wait to be processed."""
        return bool(self._ahead) or self._ahead_error is not None

    def placement_next(self) -> Continuation | None:
        """What likely follows :meth:`placement_window`: the next Data-In of the same
        task (:meth:`PduParser.placement_next`); None when not predicted, and always
        outside the full feature phase."""
        parser = self._parser
        if parser is None or not self.can_parse_ahead():
            return None
        return parser.placement_next()

    def placement_window(self) -> memoryview | None:
        """Where the next received bytes belong, when the parser knows (the rest of a
        placed Data-In's data, :meth:`PduParser.placement_window`); None otherwise, and
        always outside the full feature phase."""
        parser = self._parser
        if parser is None or not self.can_parse_ahead():
            return None
        return parser.placement_window()

    def receive_chunks(self, chunks: Sequence[BytesLike | Placed], now: float) -> None:
        """Several received pieces at once (one TCP batch): the same as :meth:`receive`
        on each in turn, but in the full feature phase the PDUs of all of them are
        parsed first and then processed together (one pump and one round of callbacks
        per batch instead of per piece). Placement stays exact because the parser drops
        a task's buffer as soon as it parses the task's status (RFC 7143 §11.7.4)."""
        parser = self._parser
        if parser is None or (not self.has_parsed_ahead() and (
                len(chunks) == 1 or self.state is not SessionState.FULL_FEATURE)):
            for c in chunks:
                self.receive(c, now)
                if self._parser is None or self._transport != _T_UP:
                    return
            return
        self._now_hint = now
        if self._transport == _T_UP:
            self._consume(parser, chunks, now)

    def receiving(self, now: float) -> None:
        """Bytes came that this session will parse later (placed payload its parser
        expects, see :meth:`IscsiConnection._on_tcp`): the connection is alive now, as
        for the NOP-Out timers (RFC 7143 §11.18) any received bytes say."""
        self._last_rx = now
        self.counters.inc("data", "placed_deferred")

    def receive(self, data: BytesLike | Placed, now: float) -> None:
        """Bytes received on the transport (any chunking)."""
        self._now_hint = now
        parser = self._parser
        if parser is not None and self._transport == _T_UP:
            self._consume(parser, [data], now)

    def _consume(self, parser: PduParser, chunks: Sequence[BytesLike | Placed],
                 now: float) -> None:
        """Parse ``chunks`` in order, then process their PDUs, pump and run callbacks once.
        PDUs parsed ahead by this parser come first. A fatal parse error comes after the
        PDUs parsed before the bad bytes, as if the chunks had been fed one by one."""
        self._last_rx = now
        items, error = self._ahead, self._ahead_error
        self._ahead, self._ahead_error = [], None
        if error is None:
            error = _parse(parser, chunks, items)
        if error is not None:
            self._process(items, now)
            if self._parser is parser and self._transport == _T_UP:
                self._fatal_input(error, now)
            self._run_callbacks()
            return
        self._process(items, now)
        self._pump(now)
        self._run_callbacks()

    # ---------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`on_deadline` has work, or None."""
        st = self.state
        if st is SessionState.WAIT:
            return self._wake_at
        if st in (SessionState.CONNECTING, SessionState.LOGIN):
            return self._attempt_deadline
        if st not in (SessionState.FULL_FEATURE, SessionState.VERIFYING,
                      SessionState.LOGGING_OUT):
            return None
        c = self.config
        d = _INF
        if self._ping_itt is not None:
            d = max(self._ping_sent, self._last_rx) + c.nop_timeout
        elif c.nop_interval is not None and st is SessionState.FULL_FEATURE:
            d = self._last_rx + c.nop_interval
        if self._task_deadline < d:
            d = self._task_deadline
        for tmf in self._tmfs.values():
            d = min(d, tmf.deadline)
        for t in self._delayed:
            d = min(d, t.not_before)
        if self._text_active is not None:
            d = min(d, self._text_active.deadline)
        if self._stall_since is not None:
            half = self._stall_limit() / 2
            d = min(d, self._stall_since + (2 * half if self._stall_pinged else half))
        if self._logout is not None:
            d = min(d, self._logout.deadline)
        return None if d == _INF else d

    def on_deadline(self, now: float) -> None:
        """Act on time: attempts, pings, command timeouts, retries (early calls are harmless)."""
        self._now_hint = now
        st = self.state
        if st is SessionState.WAIT:
            if now >= self._wake_at:
                self._start_attempt(now)
        elif st in (SessionState.CONNECTING, SessionState.LOGIN):
            if now >= self._attempt_deadline:
                self.counters.inc("login", "failures_timeout")
                self._fail_connection(ConnectionLost(
                    f"no login within {self.config.login_timeout:g} s"), now)
        elif st in (SessionState.FULL_FEATURE, SessionState.VERIFYING,
                    SessionState.LOGGING_OUT):
            self._timers(now)
        self._run_callbacks()

    # ============================================================== internals

    # -------------------------------------------------------- connection life

    def _start_attempt(self, now: float) -> None:
        self.state = SessionState.CONNECTING
        self._transport = _T_WANTED
        self._wake_at = _INF
        self._attempt_deadline = now + self.config.login_timeout

    def _reset_connection(self) -> None:
        self._parser = None
        self._ahead, self._ahead_error = [], None
        self._login = None
        self._out.clear()
        self._out_off = 0
        self._jobs.clear()
        self._tmfs.clear()
        self._ping_itt = None
        self._stall_since = None
        self._hd = self._dd = False

    def _requeue_all(self, replay: bool = True) -> None:
        """Put every unfinished task back in the queue for a new connection (§7.1.5);
        ``replay`` False when they are about to be failed instead."""
        active = sorted(self._active.values(), key=lambda t: t.cmdsn - self.cmdsn & MASK)
        self._active.clear()
        again: list[Task] = []
        limit = self.config.recovery.max_replays
        for t in active:
            self._mark_stale(t.itt)
            if t.request.internal:
                continue
            t.state = TaskState.QUEUED
            t.reset_transfer()
            if replay:
                t.replays += 1
                self.counters.inc("commands", "replayed")
            if t.replays > limit:
                self._finish(t, self._now_hint, error=SessionFailed(
                    f"command replayed {t.replays - 1} times after connection failures",
                    self.last_connection_error))
            else:
                again.append(t)
        self._pending.extendleft(reversed(again))
        self._internal.clear()
        self._verify = None
        if self._text_active is not None:
            self._texts.appendleft(self._text_active)
            self._text_active = None

    def _fail_connection(self, err: BaseException, now: float, *, drop: str | None = "abort",
                         time2wait: float | None = None) -> None:
        """The connection is unusable: tear it down and plan the next attempt."""
        if self.finished:
            return
        self._now_hint = now
        self.last_connection_error = err
        if drop is not None and self._transport in (_T_OPENING, _T_UP):
            self._drop = drop
        self._transport = _T_NONE
        prev = self.state
        self._reset_connection()
        self._requeue_all()
        if self._user_logout:
            self._close(now, "session logged out", drop=None)
            return
        plan = self._logout
        self._logout = None
        if prev in (SessionState.CONNECTING, SessionState.LOGIN):
            log.info("login attempt to %s failed: %s", self._attempt_portal, err)
            self._attempt_portal = self.portal
            when = self._backoff.next_attempt(now)
            if when is None:
                what = "recovery" if self.logged_in_once else "login"
                self._fail_session(SessionFailed(f"{what} gave up at its deadline", err), now)
                return
            self.state = SessionState.WAIT
            self._wake_at = when
            return
        # A working connection failed: session recovery (ERL 0).
        if plan is None or not plan.relogin:
            self.counters.inc("recovery", "started")
            log.warning("connection to %s failed (%s); recovering", self._attempt_portal, err)
        self._attempt_portal = self.portal
        policy = self.config.recovery
        if not self._unproven:
            self._backoff = Backoff(policy, now, now + policy.deadline)
        elif now >= self._backoff.deadline:
            self._fail_session(SessionFailed("recovery gave up at its deadline", err), now)
            return
        self._in_recovery = True
        if time2wait is None:
            time2wait = policy.wait_before_login(
                self.params.default_time2wait if self.params is not None else None)
        self.state = SessionState.WAIT
        self._wake_at = now + min(time2wait, policy.max_time2wait)

    def _fail_session(self, err: SessionFailed, now: float) -> None:
        if self.finished:
            return
        self.error = err
        if self._in_recovery:
            self.counters.inc("recovery", "failed")
        log.error("iSCSI session failed: %s", err)
        if self._transport in (_T_OPENING, _T_UP):
            self._drop = "abort"
        self._transport = _T_NONE
        self._reset_connection()
        self._requeue_all(replay=False)
        self.state = SessionState.FAILED
        self._fail_everything(err, now)

    def _close(self, now: float, why: str, drop: str | None = "close") -> None:
        if drop is not None and self._transport in (_T_OPENING, _T_UP):
            self._drop = drop
        self._transport = _T_NONE
        self._reset_connection()
        self._requeue_all(replay=False)
        self.state = SessionState.CLOSED
        self._logout = None
        self._fail_everything(SessionClosed(why), now)

    def _fail_everything(self, err: BaseException, now: float) -> None:
        for t in list(self._pending) + self._delayed + list(self._active.values()):
            self._finish(t, now, error=err)
        self._pending.clear()
        self._delayed.clear()
        self._active.clear()
        self._internal.clear()
        for op in list(self._texts) + ([self._text_active] if self._text_active else []):
            self._text_done(op, error=err)
        self._texts.clear()
        self._text_active = None

    # ------------------------------------------------------------- sending

    def _send(self, pdu: Pdu) -> None:
        bufs = encode(pdu, header_digest=self._hd, data_digest=self._dd)
        n = 0
        for b in bufs:
            n += len(b)
        self.counters.pdu_out(pdu.OPCODE, n)
        self._out.extend(bufs)

    def _new_itt(self) -> int:
        while True:
            self._itt = (self._itt + 1) & MASK
            itt = self._itt
            if itt in (0, RESERVED_TAG) or itt in self._active or itt in self._tmfs:
                continue
            return itt

    def _mark_stale(self, itt: int) -> None:
        if itt < 0 or itt in self._stale:
            return
        self._stale.add(itt)
        self._stale_order.append(itt)
        if len(self._stale_order) > _STALE_KEEP:
            self._stale.discard(self._stale_order.popleft())

    def _window_open(self) -> bool:
        return cmdsn_allowed(self.cmdsn, self.exp_cmdsn, self.max_cmdsn)

    def _pump(self, now: float) -> None:
        """Send queued commands while the window and the queue depth allow."""
        st = self.state
        if self._transport != _T_UP or st not in (SessionState.FULL_FEATURE,
                                                  SessionState.VERIFYING):
            return
        plan = self._logout
        queue = self._internal if st is SessionState.VERIFYING else self._pending
        blocked = plan is not None and plan.relogin
        depth = self.config.queue_depth
        while queue and not blocked:
            if len(self._active) >= depth:
                break
            if not self._window_open():
                if self._stall_since is None:
                    self._stall_since = now
                    self._stall_pinged = False
                break
            self._send_task(queue.popleft(), now)
            self._stall_since = None  # progress: the stall clock restarts
        if not queue or len(self._active) >= depth:
            self._stall_since = None
        if (st is SessionState.FULL_FEATURE and self._texts and self._text_active is None
                and not blocked):
            if self._window_open():
                self._send_text(self._texts.popleft(), now)
            elif self._stall_since is None:
                self._stall_since = now
                self._stall_pinged = False
        if plan is not None and not plan.sent:
            self._maybe_send_logout(now)

    def _send_task(self, task: Task, now: float) -> None:
        req = task.request
        p = self.params
        assert p is not None and self._parser is not None
        itt = self._new_itt()
        task.itt = itt
        task.cmdsn = self.cmdsn
        self.cmdsn = sn_inc(self.cmdsn)
        task.state = TaskState.ACTIVE
        task.sent_at = now
        task.deadline = now + (req.timeout if req.timeout is not None
                               else self.config.command_timeout)
        task.reset_transfer()
        self._active[itt] = task
        if task.deadline < self._task_deadline:
            self._task_deadline = task.deadline
        exp = req.expected_length
        data: BytesLike = b""
        final = True
        wd = req.write_data
        if wd is not None and exp:
            first = min(exp, p.first_burst_length)
            imm = min(first, p.max_xmit_data_segment_length) if p.immediate_data else 0
            unsol_end = imm if p.initial_r2t else first
            if imm:
                data = wd[:imm]
            if unsol_end > imm:
                final = False
                self._jobs.append(_DataOutJob(task, itt, RESERVED_TAG, imm, unsol_end, False))
        elif req.read_into is not None and exp:
            self._parser.place(itt, req.read_into)
        self._send(ScsiCommand(
            final=final, read=req.read_into is not None and exp > 0,
            write=wd is not None and exp > 0, attr=req.attr, lun=lun_field(req.lun), itt=itt,
            expected_length=exp, cmdsn=task.cmdsn, exp_statsn=self.exp_statsn, cdb=req.cdb,
            data=data))

    def _generate(self) -> bool:
        """Build the next Data-Out PDU (RFC 7143 §11.7); False when there is none."""
        jobs = self._jobs
        p = self.params
        while jobs:
            job = jobs[0]
            task = job.task
            if task.itt != job.itt or task.state not in (TaskState.ACTIVE, TaskState.ABORTING):
                jobs.popleft()
                continue
            assert p is not None and task.request.write_data is not None
            n = min(p.max_xmit_data_segment_length, job.end - job.offset)
            final = job.offset + n == job.end
            self._send(DataOut(
                final=final, lun=lun_field(task.request.lun), itt=job.itt, ttt=job.ttt,
                exp_statsn=self.exp_statsn, datasn=job.datasn, buffer_offset=job.offset,
                data=task.request.write_data[job.offset:job.offset + n]))
            job.offset += n
            job.datasn += 1
            if final:
                jobs.popleft()
                if job.solicited:
                    task.r2t_outstanding -= 1
            return True
        return False

    def _send_text(self, op: TextOp, now: float) -> None:
        assert self.params is not None
        op.itt = self._new_itt()
        op.deadline = now + self.config.command_timeout
        op.exchange = SendTargets(itt=op.itt, value=op.value,
                                  max_data=self.params.max_xmit_data_segment_length)
        self._text_active = op
        self._send_text_pdu(op.exchange.first_request())

    def _send_text_pdu(self, req: TextRequest) -> None:
        req.cmdsn = self.cmdsn
        self.cmdsn = sn_inc(self.cmdsn)
        req.exp_statsn = self.exp_statsn
        self._send(req)

    def _send_ping(self, now: float) -> None:
        itt = self._new_itt()
        self._ping_itt = itt
        self._ping_sent = now
        self.counters.inc("nop", "pings_sent")
        self._send(NopOut(immediate=True, itt=itt, ttt=RESERVED_TAG, cmdsn=self.cmdsn,
                          exp_statsn=self.exp_statsn))

    def ping(self, now: float, callback: Callable[[float], None]) -> None:
        """Send a NOP-Out ping now (RFC 7143 §11.18); ``callback(rtt_seconds)`` on the
        NOP-In answer. Only in the full feature phase."""
        if self.state is not SessionState.FULL_FEATURE:
            raise SessionClosed(f"cannot ping: session is {self.state.name}")
        itt = self._new_itt()
        self._user_pings[itt] = (now, callback)
        self.counters.inc("nop", "pings_sent")
        self._send(NopOut(immediate=True, itt=itt, ttt=RESERVED_TAG, cmdsn=self.cmdsn,
                          exp_statsn=self.exp_statsn))

    def _maybe_send_logout(self, now: float) -> None:
        plan = self._logout
        if plan is None or plan.sent:
            return
        drained = not self._active and not self._jobs and self._text_active is None
        if not plan.relogin:
            drained = drained and not self._pending and not self._delayed and not self._texts
        if not drained and now < plan.deadline:
            return
        plan.sent = True
        plan.itt = self._new_itt()
        plan.deadline = now + self.config.tmf_timeout
        self.state = SessionState.LOGGING_OUT
        self.counters.inc("logout", "sent")
        self._send(LogoutRequest(immediate=True, reason=LogoutReason.CLOSE_SESSION,
                                 itt=plan.itt, cid=0, cmdsn=self.cmdsn,
                                 exp_statsn=self.exp_statsn))

    # ------------------------------------------------------------ receiving

    def _fatal_input(self, e: IscsiError, now: float) -> None:
        """The parser stopped: the stream cannot be trusted (§7.8)."""
        if isinstance(e, HeaderDigestError):
            self.counters.inc("errors", "header_digest")
        else:
            self.counters.inc("errors", "protocol")
        if isinstance(e, PlacementError):
            task = self._active.get(e.itt)
            if task is not None:
                self._finish(task, now, error=TargetProtocolError(
                    "BufferOffset", e.offset,
                    f"Data-In of {e.length} bytes beyond the expected length {e.size}", e.itt))
        self._drop_for(e, now)

    def _drop_for(self, e: BaseException, now: float) -> None:
        if self.state in (SessionState.CONNECTING, SessionState.LOGIN):
            self._fail_connection(e, now)
        else:
            self._fail_connection(ConnectionLost(f"connection dropped: {e}"), now)

    def _process(self, items: list[ParsedItem], now: float) -> None:
        q: deque[ParsedItem] = deque(items)
        while q:
            if self._parser is None:
                return  # the connection failed during this batch
            item = q.popleft()
            try:
                if isinstance(item, DataDigestError):
                    self.counters.inc("errors", "data_digest")
                    assert item.pdu is not None
                    self._on_pdu(item.pdu, now, corrupt=True)
                elif self.state is SessionState.LOGIN:
                    q.extend(self._on_login_pdu(item, now))
                else:
                    self._on_pdu(item, now, corrupt=False)
            except TargetProtocolError as e:
                self.counters.inc("errors", "protocol")
                log.warning("%s", e)
                if e.itt is not None and e.itt in self._active:
                    self._finish(self._active[e.itt], now, error=e)
                self._drop_for(e, now)
                return
            except IscsiError as e:
                self.counters.inc("errors", "protocol")
                log.warning("protocol error: %s", e)
                self._drop_for(e, now)
                return

    # ---- login

    def _on_login_pdu(self, pdu: Pdu, now: float) -> list[ParsedItem]:
        c = self.counters
        if not isinstance(pdu, LoginResponse):
            raise ProtocolError(f"{type(pdu).__name__} during login")
        c.pdu_in(pdu.OPCODE, 48 + pdu.data_length)
        assert self._login is not None and self._parser is not None
        try:
            step = self._login.receive(pdu)
        except LoginError as e:
            c.inc("login", f"failures_status_{e.status:04x}")
            if e.retryable:
                self._fail_connection(e, now)
            else:
                self._fail_session(SessionFailed("login refused", e), now)
            return []
        except (AuthenticationError, NegotiationError, KeyFormatError) as e:
            c.inc("login", "failures_" + type(e).__name__)
            self._fail_session(SessionFailed("login failed", e), now)
            return []
        except ProtocolError as e:
            c.inc("login", "failures_protocol")
            self._fail_session(SessionFailed("login failed", e), now)
            return []
        if isinstance(step, LoginRequest):
            self._send(step)
            return []
        if isinstance(step, LoginRedirect):
            return self._on_redirect(step, now)
        return self._on_login_success(step, now)

    def _on_redirect(self, step: LoginRedirect, now: float) -> list[ParsedItem]:
        self.counters.inc("login", "redirects")
        self._redirects += 1
        if self._redirects > self.config.max_redirects:
            self._fail_session(SessionFailed(
                f"more than {self.config.max_redirects} login redirections"), now)
            return []
        log.info("login redirected: %s", step)
        if step.permanent:
            self.portal = step.portal
        if self._transport in (_T_OPENING, _T_UP):
            self._drop = "close"
        self._transport = _T_NONE
        self._reset_connection()
        self._start_attempt(now)
        self._attempt_portal = step.portal
        return []

    def _on_login_success(self, ok: LoginSuccess, now: float) -> list[ParsedItem]:
        assert self._parser is not None
        p = ok.params
        self.params = p
        self.tsih = ok.tsih
        self.cmdsn = ok.cmdsn
        self.exp_cmdsn = ok.exp_cmdsn
        self.max_cmdsn = ok.max_cmdsn
        self.exp_statsn = ok.exp_statsn
        self._hd, self._dd = p.header_digest, p.data_digest
        self._parser.set_digests(p.header_digest, p.data_digest)
        self._parser.max_recv_data_segment_length = p.max_recv_data_segment_length
        self._parser.data_in_order = p.data_pdu_in_order and p.data_sequence_in_order
        self._login = None
        self._redirects = 0
        self._last_rx = now
        self._attempt_deadline = _INF
        self.counters.inc("login", "successes")
        recovered = self.logged_in_once
        self.logged_in_once = True
        if self._in_recovery:
            self.counters.inc("recovery", "succeeded")
            self._in_recovery = False
            log.info("session recovered (TSIH %d)", ok.tsih)
        # The recovery deadline runs on until the new connection shows progress (a
        # command completes, or a ping is answered with nothing queued): a target that
        # accepts logins but never serves commands still ends in FAILED.
        self._unproven = True
        if recovered and self._identities:
            self._start_verify(now)
        else:
            self.state = SessionState.FULL_FEATURE
        return list(self._parser.feed(b""))

    # ---- full feature phase

    def _window(self, exp: int, mx: int) -> None:
        self.exp_cmdsn, self.max_cmdsn = update_cmd_window(self.exp_cmdsn, self.max_cmdsn,
                                                           exp, mx)

    def _statsn(self, sn: int) -> None:
        if sn_ge(sn, self.exp_statsn):
            if sn != self.exp_statsn:
                self.counters.inc("errors", "statsn_gap")
            self.exp_statsn = sn_inc(sn)

    def _on_pdu(self, pdu: Pdu, now: float, *, corrupt: bool) -> None:
        if isinstance(pdu, DataIn):
            self.counters.pdu_in(pdu.OPCODE, 48 + pdu.segment_length)
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            if pdu.status_present:
                self._statsn(pdu.statsn)
            self._on_data_in(pdu, now, corrupt)
            return
        self.counters.pdu_in(pdu.OPCODE, 48 + pdu.data_length)
        if isinstance(pdu, ScsiResponse):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_response(pdu, now, corrupt)
        elif isinstance(pdu, R2T):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._on_r2t(pdu)
        elif isinstance(pdu, NopIn):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            if pdu.itt != RESERVED_TAG:
                self._statsn(pdu.statsn)
            self._on_nop_in(pdu, now)
        elif corrupt:
            raise ProtocolError(f"data digest error in a {type(pdu).__name__}")
        elif isinstance(pdu, TaskMgmtResponse):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_tmf_response(pdu, now)
        elif isinstance(pdu, TextResponse):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_text_response(pdu, now)
        elif isinstance(pdu, LogoutResponse):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_logout_response(pdu, now)
        elif isinstance(pdu, AsyncMessage):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_async(pdu, now)
        elif isinstance(pdu, Reject):
            self._window(pdu.exp_cmdsn, pdu.max_cmdsn)
            self._statsn(pdu.statsn)
            self._on_reject(pdu, now)
        else:
            raise TargetProtocolError("Opcode", f"0x{pdu.OPCODE:02x}",
                                      "not allowed in the full feature phase")

    def _task_for(self, itt: int, what: str) -> Task | None:
        task = self._active.get(itt)
        if task is None:
            if itt in self._stale:
                self.counters.inc("errors", "stale_pdus")
                return None
            raise TargetProtocolError("InitiatorTaskTag", f"0x{itt:08x}",
                                      f"{what} for no active task")
        return task

    def _on_data_in(self, pdu: DataIn, now: float, corrupt: bool) -> None:
        task = self._task_for(pdu.itt, "Data-In")
        if task is None:
            return
        req = task.request
        itt = pdu.itt
        if req.read_into is None and pdu.segment_length:
            raise TargetProtocolError("InitiatorTaskTag", f"0x{itt:08x}",
                                      "Data-In for a command without read data", itt)
        if pdu.datasn != task.next_datasn:
            raise TargetProtocolError("DataSN", pdu.datasn,
                                      f"expected {task.next_datasn} (§11.7.3)", itt)
        task.next_datasn = (task.next_datasn + 1) & MASK
        n = pdu.segment_length
        if n:
            if not pdu.placed:
                raise TargetProtocolError("DataSegmentLength", n, "Data-In was not placed", itt)
            off = pdu.buffer_offset
            p = self.params
            assert p is not None
            if p.data_pdu_in_order and p.data_sequence_in_order:
                if off != task.received:
                    raise TargetProtocolError(
                        "BufferOffset", off,
                        f"expected {task.received} (DataPDUInOrder=Yes, §13.19)", itt)
            elif not task.add_range(off, n):
                raise TargetProtocolError("BufferOffset", off,
                                          "Data-In overlaps data already received", itt)
            task.received += n
        if corrupt:
            task.data_corrupt = True
        if pdu.status_present:
            self._complete(task, now, status=pdu.status, response=0, sense=b"",
                           residual=pdu.residual, underflow=pdu.underflow,
                           overflow=pdu.overflow)

    def _on_response(self, pdu: ScsiResponse, now: float, corrupt: bool) -> None:
        task = self._task_for(pdu.itt, "SCSI Response")
        if task is None:
            return
        if corrupt:
            sense = b""
            if pdu.status != Status.GOOD:
                task.data_corrupt = True
        else:
            try:
                sense = pdu.sense
            except IscsiError as e:
                raise TargetProtocolError("SenseLength", pdu.data_length, str(e),
                                          pdu.itt) from None
        self._complete(task, now, status=pdu.status, response=pdu.response, sense=sense,
                       residual=pdu.residual, underflow=pdu.underflow, overflow=pdu.overflow)

    def _complete(self, task: Task, now: float, *, status: int, response: int, sense: bytes,
                  residual: int, underflow: bool, overflow: bool) -> None:
        req = task.request
        if response != 0:
            self._finish(task, now, error=TargetFailure(response, req.opcode))
            return
        retries = req.retries if req.retries is not None else self.config.retries
        if task.data_corrupt:
            if task.retries < retries:
                task.retries += 1
                self.counters.inc("commands", "retried_digest")
                self._requeue(task, now, 0.0)
                return
            self._finish(task, now, error=IscsiError(
                "data digest errors persisted over retries"))
            return
        exp = req.expected_length
        if (underflow or overflow) and residual > 0xFFFFFFFF:
            raise TargetProtocolError("ResidualCount", residual, "invalid", task.itt)
        if req.read_into is not None:
            transferred = task.received
            if status in (Status.GOOD, Status.CONDITION_MET):
                if underflow and residual > exp:
                    raise TargetProtocolError("ResidualCount", residual,
                                              f"exceeds the expected length {exp}", task.itt)
                want = exp - residual if underflow else exp
                if transferred < want:
                    raise TargetProtocolError(
                        "DataSegmentLength", transferred,
                        f"status GOOD but only {transferred} of {want} bytes of Data-In "
                        "arrived", task.itt)
        else:
            transferred = exp - residual if underflow and residual <= exp else exp
        result = make_result(status, sense, transferred=transferred, residual=residual,
                             underflow=underflow, overflow=overflow,
                             latency=now - task.submitted_at)
        if not result.good:
            err = result.scsi_error(req.opcode)
            if err.retryable and task.retries < retries:
                task.retries += 1
                self.counters.inc("commands", "retried")
                ua = err.sense is not None and err.sense.key == SenseKey.UNIT_ATTENTION
                delay = 0.0 if ua else min(0.02 * (2 ** task.retries), 1.0)
                log.info("retrying %r after %s", req, err)
                self._requeue(task, now, delay)
                return
            self._finish(task, now, result=result, error=err)
            return
        self._finish(task, now, result=result)

    def _requeue(self, task: Task, now: float, delay: float) -> None:
        self._detach(task)
        task.state = TaskState.QUEUED
        task.reset_transfer()
        if delay > 0:
            task.not_before = now + delay
            self._delayed.append(task)
        elif task.request.internal and self.state is SessionState.VERIFYING:
            self._internal.appendleft(task)
        else:
            self._pending.appendleft(task)

    def _detach(self, task: Task) -> None:
        if self._active.get(task.itt) is task:
            del self._active[task.itt]
            if self._parser is not None:
                self._parser.unplace(task.itt)
                if self.placement_revoked is not None:
                    # the transport may hold a window into the task's buffer
                    self.placement_revoked()
            self._mark_stale(task.itt)
        if self._tmfs:
            # A task that is done or queued again has no business with its task
            # management any more: a late answer must not finish (or reset) it.
            for itt in [i for i, tmf in self._tmfs.items() if tmf.task is task]:
                del self._tmfs[itt]

    def _finish(self, task: Task, now: float, *, result: ScsiResult | None = None,
                error: BaseException | None = None) -> None:
        if task.done:
            return
        self._detach(task)
        task.state = TaskState.DONE
        if result is not None:
            task.result = result
        task.error = error
        c = self.counters
        if error is None:
            self._unproven = False
            c.inc("commands", "completed")
        else:
            c.inc("commands", "failed")
        c.latency(now - task.submitted_at)
        self._completed.append(task)

    def _text_done(self, op: TextOp, *, targets: list[DiscoveredTarget] | None = None,
                   error: BaseException | None = None) -> None:
        if op.done:
            return
        op.done = True
        op.targets = targets
        op.error = error
        self._completed.append(op)

    def _run_callbacks(self) -> None:
        done = self._completed
        while done:
            item = done.popleft()
            cb = item.callback
            if cb is not None:
                cb(item)  # type: ignore[arg-type]

    def _on_r2t(self, pdu: R2T) -> None:
        self.counters.inc("data", "r2t")
        task = self._task_for(pdu.itt, "R2T")
        if task is None:
            return
        itt = pdu.itt
        req = task.request
        p = self.params
        assert p is not None
        if req.write_data is None:
            raise TargetProtocolError("InitiatorTaskTag", f"0x{itt:08x}",
                                      "R2T for a command without write data", itt)
        if pdu.r2tsn != task.next_r2tsn:
            raise TargetProtocolError("R2TSN", pdu.r2tsn, f"expected {task.next_r2tsn}", itt)
        task.next_r2tsn = (task.next_r2tsn + 1) & MASK
        length = pdu.desired_length
        if length == 0:
            raise TargetProtocolError("DesiredDataTransferLength", 0, "must not be 0 (§11.8.4)",
                                      itt)
        if length > p.max_burst_length:
            raise TargetProtocolError("DesiredDataTransferLength", length,
                                      f"exceeds MaxBurstLength {p.max_burst_length}", itt)
        if pdu.buffer_offset + length > req.expected_length:
            raise TargetProtocolError(
                "BufferOffset", pdu.buffer_offset,
                f"R2T for {length} bytes beyond the expected length {req.expected_length}", itt)
        if task.r2t_outstanding >= p.max_outstanding_r2t:
            raise TargetProtocolError(
                "R2TSN", pdu.r2tsn,
                f"more than MaxOutstandingR2T={p.max_outstanding_r2t} R2Ts outstanding", itt)
        task.r2t_outstanding += 1
        self._jobs.append(_DataOutJob(task, itt, pdu.ttt, pdu.buffer_offset,
                                      pdu.buffer_offset + length, True))

    def _on_nop_in(self, pdu: NopIn, now: float) -> None:
        if pdu.ttt != RESERVED_TAG:
            self.counters.inc("nop", "target_pings_answered")
            self._send(NopOut(immediate=True, lun=pdu.lun, itt=RESERVED_TAG, ttt=pdu.ttt,
                              cmdsn=self.cmdsn, exp_statsn=self.exp_statsn))
        if pdu.itt != RESERVED_TAG:
            if pdu.itt == self._ping_itt:
                self._ping_itt = None
                if not self._pending and not self._active:
                    self._unproven = False
                self.counters.inc("nop", "pings_answered")
            elif pdu.itt in self._user_pings:
                sent, cb = self._user_pings.pop(pdu.itt)
                self.counters.inc("nop", "pings_answered")
                cb(now - sent)
            else:
                self.counters.inc("errors", "stale_pdus")

    def _on_tmf_response(self, pdu: TaskMgmtResponse, now: float) -> None:
        tmf = self._tmfs.pop(pdu.itt, None)
        if tmf is None:
            self.counters.inc("errors", "stale_pdus")
            return
        task = tmf.task
        resp = pdu.response
        self.counters.inc("tmf", f"response_{resp}")
        timeout = task.deadline - task.sent_at
        if tmf.function == TmfFunction.ABORT_TASK:
            if resp in (TmfResponse.COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST):
                self.counters.inc("commands", "aborted")
                self._finish(task, now, error=CommandTimeout(
                    task.request.opcode, timeout, "aborted with ABORT TASK"))
            else:
                self._lun_reset(task, now)
            return
        # LOGICAL UNIT RESET
        if resp == TmfResponse.COMPLETE:
            self._finish(task, now, error=CommandTimeout(
                task.request.opcode, timeout, "aborted with LOGICAL UNIT RESET"))
            lun = task.request.lun
            for other in list(self._active.values()):
                if other.request.lun != lun or other.done:
                    continue
                if other.state is TaskState.ABORTING:
                    # It timed out itself and waits for its own TMF: the reset aborted it.
                    self._finish(other, now, error=CommandTimeout(
                        other.request.opcode, other.deadline - other.sent_at,
                        "aborted with LOGICAL UNIT RESET"))
                else:
                    self._requeue(other, now, 0.0)  # cleared by the reset (SAM-5 §7.7)
            return
        self._finish(task, now, error=CommandTimeout(
            task.request.opcode, timeout,
            f"LOGICAL UNIT RESET answered {resp}; connection dropped"))
        self._fail_connection(ConnectionLost("task management failed"), now)

    def _start_abort(self, task: Task, now: float) -> None:
        self.counters.inc("commands", "timed_out")
        task.state = TaskState.ABORTING
        task.aborts += 1
        itt = self._new_itt()
        self._tmfs[itt] = _Tmf(TmfFunction.ABORT_TASK, task, now + self.config.tmf_timeout)
        log.warning("%r timed out; sending ABORT TASK", task)
        self._send(TaskMgmtRequest(
            immediate=True, function=TmfFunction.ABORT_TASK, lun=lun_field(task.request.lun),
            itt=itt, referenced_task_tag=task.itt, cmdsn=self.cmdsn, exp_statsn=self.exp_statsn,
            ref_cmdsn=task.cmdsn, exp_datasn=task.next_datasn))

    def _lun_reset(self, task: Task, now: float) -> None:
        self.counters.inc("commands", "lun_reset")
        itt = self._new_itt()
        self._tmfs[itt] = _Tmf(TmfFunction.LOGICAL_UNIT_RESET, task,
                               now + self.config.tmf_timeout)
        log.warning("ABORT TASK failed for %r; sending LOGICAL UNIT RESET", task)
        self._send(TaskMgmtRequest(
            immediate=True, function=TmfFunction.LOGICAL_UNIT_RESET,
            lun=lun_field(task.request.lun), itt=itt, referenced_task_tag=RESERVED_TAG,
            cmdsn=self.cmdsn, exp_statsn=self.exp_statsn))

    def _on_text_response(self, pdu: TextResponse, now: float) -> None:
        op = self._text_active
        if op is None or op.exchange is None or pdu.itt != op.itt:
            if pdu.itt in self._stale:
                return
            raise TargetProtocolError("InitiatorTaskTag", f"0x{pdu.itt:08x}",
                                      "Text Response for no text exchange")
        try:
            step = op.exchange.receive_targets(pdu)
        except IscsiError as e:
            # The PDU was well formed, so the stream is in sync: only this exchange is
            # broken (endless continuation, bad text). Fail it; a reconnect would replay
            # it and the target would answer the same way.
            self.counters.inc("errors", "text")
            self._text_active = None
            self._mark_stale(op.itt)
            self._text_done(op, error=e)
            return
        if isinstance(step, TextRequest):
            self._send_text_pdu(step)
            return
        self._text_active = None
        self._mark_stale(op.itt)
        self._text_done(op, targets=step)

    def _on_logout_response(self, pdu: LogoutResponse, now: float) -> None:
        plan = self._logout
        if plan is None or not plan.sent or pdu.itt != plan.itt:
            raise TargetProtocolError("InitiatorTaskTag", f"0x{pdu.itt:08x}",
                                      "Logout Response without a Logout Request")
        ok = pdu.response == LogoutResponseCode.SUCCESS
        self.counters.inc("logout", "success" if ok else f"response_{pdu.response}")
        if plan.relogin and not self._user_logout:
            self._logout = None
            # A clean reconnect: the target asked for the logout (RFC 7143 §11.9.1).
            self._fail_connection(ConnectionLost("logged out at the target's request"), now,
                                  drop="close", time2wait=float(pdu.time2wait))
            return
        self._close(now, "session logged out", drop="close" if ok else "abort")

    def _on_async(self, pdu: AsyncMessage, now: float) -> None:
        ev = pdu.event
        try:
            name = AsyncEvent(ev).name.lower()
        except ValueError:
            name = f"event_{ev}"
        self.counters.inc("async", name)
        log.info("async message %s (parameters %d %d %d)", name, pdu.parameter1,
                 pdu.parameter2, pdu.parameter3)
        if ev == AsyncEvent.LOGOUT_REQUEST or ev == AsyncEvent.NEGOTIATION_REQUEST:
            if self._logout is None and not self._user_logout:
                wait = max(1.0, float(pdu.parameter3))
                self._logout = _LogoutPlan(relogin=True, deadline=now + wait)
                self._maybe_send_logout(now)
        elif ev in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP,
                    AsyncEvent.TASK_TERMINATION):
            self._fail_connection(ConnectionLost(f"target announced {name}"), now,
                                  time2wait=float(pdu.parameter2) if ev != 5 else None)

    def _on_reject(self, pdu: Reject, now: float) -> None:
        reason = pdu.reason
        try:
            text = RejectReason(reason).name.lower().replace("_", " ")
        except ValueError:
            text = f"reason 0x{reason:02x}"
        self.counters.inc("rejects", text.replace(" ", "_"))
        itt = pdu.rejected_itt
        log.warning("target rejected a PDU (ITT %s): %s",
                    "?" if itt is None else f"0x{itt:08x}", text)
        if itt is None:
            return
        task = self._active.get(itt)
        if task is not None:
            retries = (task.request.retries if task.request.retries is not None
                       else self.config.retries)
            if (reason in (RejectReason.WAITING_FOR_LOGOUT, RejectReason.IMMEDIATE_COMMAND_REJECT)
                    and task.retries < retries):
                task.retries += 1
                self._requeue(task, now, 0.1)
                return
            self._finish(task, now, error=TaskRejected(reason, text))
            return
        tmf = self._tmfs.pop(itt, None)
        if tmf is not None:
            if tmf.function == TmfFunction.ABORT_TASK:
                self._lun_reset(tmf.task, now)
            else:
                self._finish(tmf.task, now, error=CommandTimeout(
                    tmf.task.request.opcode, tmf.task.deadline - tmf.task.sent_at,
                    "LOGICAL UNIT RESET rejected; connection dropped"))
                self._fail_connection(ConnectionLost("task management rejected"), now)
            return
        if itt == self._ping_itt:
            self._ping_itt = None
            return
        op = self._text_active
        if op is not None and op.itt == itt:
            self._text_active = None
            self._text_done(op, error=TaskRejected(reason, text))

    # ----------------------------------------------------------------- timers

    def _stall_limit(self) -> float:
        return max(self.config.command_timeout, 2 * self.config.nop_timeout)

    def _timers(self, now: float) -> None:
        c = self.config
        if self._delayed:
            due = [t for t in self._delayed if t.not_before <= now]
            if due:
                self._delayed = [t for t in self._delayed if t.not_before > now]
                for t in due:
                    if t.request.internal:
                        if self.state is SessionState.VERIFYING:
                            self._internal.append(t)
                    else:
                        self._pending.appendleft(t)
        if self._ping_itt is not None:
            if now >= max(self._ping_sent, self._last_rx) + c.nop_timeout:
                self.counters.inc("nop", "timeouts")
                self._fail_connection(ConnectionLost(
                    f"no NOP-In answer within {c.nop_timeout:g} s"), now)
                return
        elif (c.nop_interval is not None and self.state is SessionState.FULL_FEATURE
              and now >= self._last_rx + c.nop_interval and self._transport == _T_UP):
            self._send_ping(now)
        self._task_deadline = _INF  # exact again below (tasks sent meanwhile lower it)
        for task in list(self._active.values()):
            if task.state is TaskState.ACTIVE:
                if now >= task.deadline:
                    self._start_abort(task, now)
                elif task.deadline < self._task_deadline:
                    self._task_deadline = task.deadline
        for itt, tmf in list(self._tmfs.items()):
            if now >= tmf.deadline:
                del self._tmfs[itt]
                if tmf.function == TmfFunction.ABORT_TASK:
                    self._lun_reset(tmf.task, now)
                else:
                    task = tmf.task
                    self._finish(task, now, error=CommandTimeout(
                        task.request.opcode, task.deadline - task.sent_at,
                        "LOGICAL UNIT RESET unanswered; connection dropped"))
                    self._fail_connection(ConnectionLost("task management timed out"), now)
                    return
        op = self._text_active
        if op is not None and now >= op.deadline:
            self._text_active = None
            self._mark_stale(op.itt)
            self._text_done(op, error=CommandTimeout(0, c.command_timeout, "text exchange"))
        if self._stall_since is not None:
            limit = self._stall_limit()
            if now >= self._stall_since + limit:
                self._fail_connection(TargetProtocolError(
                    "MaxCmdSN", self.max_cmdsn,
                    f"command window closed for {limit:g} s (ExpCmdSN {self.exp_cmdsn})"), now)
                return
            if now >= self._stall_since + limit / 2 and not self._stall_pinged:
                self._stall_pinged = True
                if self._ping_itt is None:
                    self._send_ping(now)  # the NOP-In carries a fresh MaxCmdSN
        plan = self._logout
        if plan is not None and now >= plan.deadline:
            if plan.sent:
                if plan.relogin:
                    self._logout = None
                    self._fail_connection(ConnectionLost("no Logout Response"), now)
                else:
                    self._close(now, "session logged out (no Logout Response)", drop="abort")
                return
            self._maybe_send_logout(now)
        self._pump(now)

    # ------------------------------------------------------ LUN verification

    def _start_verify(self, now: float) -> None:
        """Check every registered LUN's identity before replaying (libiscsi-style)."""
        self.state = SessionState.VERIFYING
        tasks: dict[int, list[tuple[int, Task, bytearray]]] = {}
        left = 0
        for lun, ident in self._identities.items():
            if lun in self._changed:
                continue
            pages = []
            if ident.serial is not None:
                pages.append(0x80)
            if ident.designator is not None:
                pages.append(0x83)
            for page in pages:
                buf = bytearray(1024)
                req = ScsiRequest(scsi_cdb.inquiry(page, len(buf)), lun=lun, read_into=buf,
                                  internal=True)
                t = Task(req, self._verify_done, now)
                tasks.setdefault(lun, []).append((page, t, buf))
                self._internal.append(t)
                left += 1
        self._verify = _Verify(tasks, left)
        if left == 0:
            self._verify = None
            self.state = SessionState.FULL_FEATURE

    def _verify_done(self, task: Task) -> None:
        v = self._verify
        if v is None or self.state is not SessionState.VERIFYING:
            return
        if not any(t is task for lst in v.tasks.values() for _, t, _ in lst):
            return
        v.left -= 1
        if v.left > 0:
            return
        now = self._now_hint
        for lst in v.tasks.values():
            for _page, t, _buf in lst:
                if t.error is not None and not isinstance(t.error, ScsiError):
                    # No answer (timeout, reject): we cannot tell; try another connection.
                    self._verify = None
                    self._fail_connection(ConnectionLost(
                        f"LUN identity check failed: {t.error}"), now)
                    return
        for lun, lst in v.tasks.items():
            pages: dict[int, bytes | None] = {0x80: None, 0x83: None}
            failure: str | None = None
            for page, t, buf in lst:
                if t.error is not None or t.result is None:
                    failure = f"INQUIRY VPD 0x{page:02x} failed: {t.error}"
                else:
                    pages[page] = bytes(buf[:t.result.transferred])
            ident = self._identities[lun]
            if failure is None:
                seen = identity_from_vpd(pages[0x80], pages[0x83])
                failure = ident.mismatch(seen)
            if failure is not None:
                err = LunChangedError(lun, failure)
                log.error("%s", err)
                self.counters.inc("recovery", "lun_changed")
                self._changed[lun] = err
                for t in [t for t in self._pending if t.request.lun == lun]:
                    self._pending.remove(t)
                    self._finish(t, now, error=err)
                for t in [t for t in self._delayed if t.request.lun == lun]:
                    self._delayed.remove(t)
                    self._finish(t, now, error=err)
        self._verify = None
        self.state = SessionState.FULL_FEATURE
        self._pump(now)


__all__ = [
    "ConnectionLost", "Session", "SessionConfig", "SessionState", "TextOp",
]
