"""Multiple Connections per Session (MC/S, RFC 7143 §4.4, §6.3, §7.1.5).

When the target negotiates ``MaxConnections`` above 1 on the leading connection
(§13.2), more connections join the session: the same ISID and the session's TSIH, a
new CID each (§6.3.1, §11.12.5), a login that carries only the keys a non-leading
connection may send (no ``SessionType`` and no Leading-Only operational keys: §6.3,
§13 "LO"; ``InitiatorName``/``TargetName``, the security keys and the connection
keys — digests, MaxRecvDataSegmentLength — are negotiated per connection).

Pieces:

* :class:`McsConnection` — a :class:`~bootinit.iscsi.session.Session` (pure, sans-IO)
  that is one connection of the session: its CmdSN/ExpCmdSN/MaxCmdSN are the
  session's, shared with the other connections (§4.2.2.1: command numbering is
  session-wide); StatSN/ExpStatSN stay per connection (§4.2.2.2); its ITTs carry its
  CID in the top byte so they are unique session-wide (§11.1.5 "Initiator Task Tag
  ... unique within the session"); session-wide parameters come from the leading
  login, connection parameters from its own;
* :class:`McsSession` — the glue that owns the connections in the loop: commands are
  spread over the connections in the full feature phase (the one with the fewest
  outstanding tasks), and each task keeps *connection allegiance* (§4.2.3): its
  command, R2Ts, Data-Out, Data-In and status all stay on the connection (the
  connection's own Session) that carried the command;
* :class:`McsIscsiSession` — :class:`~bootinit.initiator.IscsiSession`'s synchronous
  API over an :class:`McsSession`, so a :class:`~bootinit.blockdev.BlockDevice` and
  the multipath layer run unchanged on top.

Connection loss at ErrorRecoveryLevel 0.  The only recovery class of ERL 0 is
session recovery (§7.1.5, §7.14: "within-connection" needs ERL 1, "connection
recovery" — Logout "remove the connection for recovery" followed by task
reassignment to another connection of the session, §11.14.1, §7.2.2 — needs ERL 2).
So when one connection of an ERL 0 MC/S session fails, the whole session is
reinstated: every connection is closed, the leading connection logs in again with
the same ISID and TSIH 0 (§6.3.5: the target drops the old session and all its
tasks), the other connections join again, and every command that had not completed
— whichever connection it was on — is re-issued with a new ITT and CmdSN.  Nothing
reaches the caller as an error.  With ERL 2 negotiated the same reinstatement is
used (task reassignment is not implemented).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from bootinit.initiator import IscsiSession
from bootinit.iscsi.connection import IscsiConnection
from bootinit.iscsi.counters import SessionCounters
from bootinit.iscsi.errors import IscsiError
from bootinit.iscsi.keys import KEYS, NegotiatedParams, OperationalConfig
from bootinit.iscsi.login import (
    LOGIN_MAX_DATA,
    LoginConfig,
    LoginMachine,
    LoginSuccess,
    random_isid,
)
from bootinit.iscsi.parser import ParsedItem, PduParser
from bootinit.iscsi.pdu import RESERVED_TAG, TARGET_OPCODES, LoginRequest
from bootinit.iscsi.serial import update_cmd_window
from bootinit.iscsi.session import (
    _T_OPENING,
    _T_UP,
    Session,
    SessionConfig,
    SessionState,
)
from bootinit.iscsi.task import (
    ScsiRequest,
    SessionClosed,
    SessionFailed,
    Task,
    TaskCallback,
    TaskState,
)
from netstack.link.base import BytesLike
from netstack.loop import LoopTimeout
from netstack.tcp.placement import Placed

if TYPE_CHECKING:
    from netstack.stack import NetStack

log = logging.getLogger("bootinit.iscsi.mcs")

MAX_CID = 254
_ITT_BITS = 24
_INF = float("inf")


@dataclass(slots=True)
class CmdWindow:
    """The session-wide command numbering shared by every connection (§4.2.2.1)."""

    cmdsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0


class _NonLeadingOffer(OperationalConfig):
    """Our operational offer without the Leading-Only keys (RFC 7143 §6.3, §13)."""

    def value(self, key: str) -> str | None:
        spec = KEYS.get(key)
        if spec is not None and spec.leading_only:
            return None
        return OperationalConfig.value(self, key)


def _non_leading(op: OperationalConfig) -> OperationalConfig:
    return _NonLeadingOffer(**{f.name: getattr(op, f.name) for f in fields(op)})


class _NonLeadingLogin(LoginMachine):
    """Login of a connection joining a session: TSIH set, no SessionType (LO, §13.21)."""

    def start(self) -> LoginRequest:
        req = super().start()
        pairs = [kv for kv in _decode(req.data) if kv[0] != "SessionType"]
        from bootinit.iscsi.keys import encode_text

        return replace(req, data=encode_text(pairs))


def _decode(data: BytesLike) -> list[tuple[str, str]]:
    from bootinit.iscsi.keys import decode_text

    return list(decode_text(bytes(data)))


class McsConnection(Session):
    """One connection of an MC/S session (see module doc).

    ``cid`` 0 is the leading connection.  ``window`` is shared by all connections of
    the session; ``owner`` is told about failures after the session is established.
    """

    def __init__(self, config: SessionConfig, *, now: float, cid: int, window: CmdWindow,
                 owner: McsSession, tsih: int = 0,
                 counters: SessionCounters | None = None) -> None:
        if not 0 <= cid <= MAX_CID:
            raise ValueError(f"CID {cid} outside 0..{MAX_CID}")
        self._win = window
        self._win_ready = False
        self.cid = cid
        self.owner = owner
        self.join_tsih = tsih
        self.lost = False
        self.established = False
        self.joined = False
        super().__init__(config, now=now, counters=counters)
        self._win_ready = True

    @property
    def leading(self) -> bool:
        """True for the leading connection (CID 0, logs in with TSIH 0)."""
        return self.join_tsih == 0

    # -- the shared window (Session assigns these attributes; they live in CmdWindow)
    @property
    def cmdsn(self) -> int:
        return self._win.cmdsn

    @cmdsn.setter
    def cmdsn(self, v: int) -> None:
        if self._win_ready:
            self._win.cmdsn = v

    @property
    def exp_cmdsn(self) -> int:
        return self._win.exp_cmdsn

    @exp_cmdsn.setter
    def exp_cmdsn(self, v: int) -> None:
        if self._win_ready:
            self._win.exp_cmdsn = v

    @property
    def max_cmdsn(self) -> int:
        return self._win.max_cmdsn

    @max_cmdsn.setter
    def max_cmdsn(self, v: int) -> None:
        if self._win_ready:
            self._win.max_cmdsn = v

    # -- login ----------------------------------------------------------------
    def connection_made(self, now: float) -> None:
        """Start the login; a joining connection sends TSIH, CID and no LO keys."""
        if self.leading:
            super().connection_made(now)
            return
        if self._transport != _T_OPENING or self.state is not SessionState.CONNECTING:
            return
        self._transport = _T_UP
        self.state = SessionState.LOGIN
        c = self.config
        self._parser = PduParser(max_recv_data_segment_length=LOGIN_MAX_DATA,
                                 accept_opcodes=TARGET_OPCODES)
        self._hd = self._dd = False
        lc = LoginConfig(initiator_name=c.initiator_name, target_name=c.target_name,
                         initiator_alias=c.initiator_alias, chap=c.chap,
                         require_auth=c.require_auth,
                         operational=_non_leading(c.operational), isid=self.isid,
                         tsih=self.join_tsih, cid=self.cid, itt=0, cmdsn=self._win.cmdsn)
        self._login = _NonLeadingLogin(lc)
        self.counters.inc("login", "attempts")
        self._send(self._login.start())

    def _on_login_success(self, ok: LoginSuccess, now: float) -> list[ParsedItem]:
        self.established = True
        if self.leading:
            return super()._on_login_success(ok, now)
        w = self._win
        cmdsn, exp, mx = w.cmdsn, w.exp_cmdsn, w.max_cmdsn
        items = super()._on_login_success(ok, now)
        # The session's numbering goes on: the login response's ExpCmdSN may lag the
        # commands in flight on other connections.
        w.cmdsn = cmdsn
        w.exp_cmdsn, w.max_cmdsn = update_cmd_window(exp, mx, ok.exp_cmdsn, ok.max_cmdsn)
        lead = self.owner.params
        if lead is not None and self.params is not None:
            p = self.params
            self.params = replace(lead, header_digest=p.header_digest,
                                  data_digest=p.data_digest,
                                  max_recv_data_segment_length=p.max_recv_data_segment_length,
                                  max_xmit_data_segment_length=p.max_xmit_data_segment_length)
        return items

    # -- tags -------------------------------------------------------------------
    def _new_itt(self) -> int:
        """ITTs unique in the session: the CID in the top byte (§11.1.5)."""
        mask = (1 << _ITT_BITS) - 1
        while True:
            self._itt = (self._itt + 1) & mask
            itt = (self.cid << _ITT_BITS) | self._itt
            if self._itt == 0 or itt == RESERVED_TAG or itt in self._active or \
                    itt in self._tmfs:
                continue
            return itt

    # -- input: a response on one connection may open the window for all --------
    def receive(self, data: BytesLike | Placed, now: float) -> None:
        super().receive(data, now)
        self.owner._kick(self, now)

    def pump(self, now: float) -> None:
        """Send what the (shared) window allows now."""
        self._pump(now)
        self._run_callbacks()

    def fail(self, err: SessionFailed, now: float) -> None:
        """End this connection for a session reinstatement (tasks fail back to the owner)."""
        self.lost = True
        self._fail_session(err, now)
        self._run_callbacks()

    # -- failures -----------------------------------------------------------------
    def _fail_connection(self, err: BaseException, now: float, *, drop: str | None = "abort",
                         time2wait: float | None = None) -> None:
        if self.finished:
            return
        owner = self.owner
        if owner.closing:
            self._close(now, "session logged out", drop=drop)
            return
        if not self.established:
            if self.leading:
                super()._fail_connection(err, now, drop=drop, time2wait=time2wait)
            else:  # the target does not take another connection: go on without it
                self.lost = True
                if drop is not None and self._transport in (_T_OPENING, _T_UP):
                    self._drop = drop
                self._fail_session(SessionFailed("connection could not join", err), now)
            return
        if drop is not None and self._transport in (_T_OPENING, _T_UP):
            self._drop = drop
        owner._connection_failed(self, err, now)


class _Cmd:
    __slots__ = ("callback", "conn", "outer", "request")

    def __init__(self, request: ScsiRequest, outer: Task) -> None:
        self.request = request
        self.outer = outer
        self.conn: McsConnection | None = None
        self.callback: TaskCallback | None = outer.callback


class McsSession:
    """An MC/S session in the loop (see module doc).

    ``connections`` is how many we want (offered as MaxConnections); the session has
    ``min(connections, negotiated MaxConnections)`` once every connection joined.
    """

    def __init__(self, stack: NetStack, config: SessionConfig, *, connections: int = 4,
                 join_timeout: float = 10.0) -> None:
        if not 1 <= connections <= MAX_CID + 1:
            raise ValueError(f"connections must be 1..{MAX_CID + 1}")
        self.stack = stack
        self.loop = stack.loop
        self.wanted = connections
        self.config = replace(config, operational=replace(config.operational,
                                                          max_connections=connections))
        if self.config.isid is None:
            self.config = replace(self.config, isid=random_isid())
        self.isid = self.config.isid
        self.join_timeout = join_timeout
        self.window = CmdWindow()
        self.conns: dict[int, McsConnection] = {}
        self.glue: dict[int, IscsiConnection] = {}
        self._queue: deque[_Cmd] = deque()
        self.closing = False
        self.error: SessionFailed | None = None
        self.params: NegotiatedParams | None = None
        self.tsih = 0
        self._reinstating = False
        self._old_leader: McsConnection | None = None
        self._restart_at = _INF
        self._joined_for = -1  # TSIH for which secondaries were started
        self._rr = 0
        self.stats: dict[str, int] = {"reinstatements": 0, "replayed": 0,
                                      "joins": 0, "join_failures": 0, "submitted": 0}
        self.counters_by_cid: dict[int, SessionCounters] = {}
        self._retired: list[SessionCounters] = []
        self._start_leader(self.loop.time(), config.recovery.initial_deadline)
        self.loop.add_idle(self._watch)
        self.loop.add_deadline_source(self)

    # ------------------------------------------------------------ connections
    def _counters(self, cid: int) -> SessionCounters:
        c = self.counters_by_cid.get(cid)
        if c is None:
            c = self.counters_by_cid[cid] = SessionCounters()
        return c

    def _start_leader(self, now: float, initial_deadline: float,
                      previous: McsConnection | None = None) -> None:
        self.window = CmdWindow()
        cfg = replace(self.config, recovery=replace(self.config.recovery,
                                                    initial_deadline=initial_deadline))
        conn = McsConnection(cfg, now=now, cid=0, window=self.window, owner=self,
                             counters=self._counters(0))
        if previous is not None and previous._identities:
            # Check the LUNs again after the reinstatement login (VPD 0x80/0x83), as a
            # single-connection session does after its recovery.
            for lun, ident in previous._identities.items():
                conn.register_lun_identity(lun, ident)
            conn.logged_in_once = True
        self._add(conn)

    def _add(self, conn: McsConnection) -> None:
        self.conns[conn.cid] = conn
        self.glue[conn.cid] = IscsiConnection(self.stack, conn)

    @property
    def leader(self) -> McsConnection:
        """The leading connection (CID 0)."""
        return self.conns[0]

    @property
    def ready(self) -> bool:
        """The leading connection is in the full feature phase."""
        c = self.conns.get(0)
        return c is not None and c.ready and not self._reinstating

    @property
    def finished(self) -> bool:
        """Failed or logged out."""
        return self.error is not None or (self.closing and not self.conns)

    def ready_connections(self) -> list[McsConnection]:
        """Connections that carry commands now."""
        if self._reinstating:
            return []
        return [c for c in self.conns.values() if c.ready and not c.lost]

    def _join(self, now: float) -> None:
        lead = self.leader
        self.params = lead.params
        self.tsih = lead.tsih
        if self._joined_for == lead.tsih:
            return
        self._joined_for = lead.tsih
        assert self.params is not None
        n = min(self.wanted, self.params.max_connections)
        log.info("MC/S session TSIH %d: MaxConnections %d, opening %d more connection(s)",
                 lead.tsih, self.params.max_connections, n - 1)
        for cid in range(1, n):
            cfg = replace(self.config, recovery=replace(
                self.config.recovery, initial_deadline=self.join_timeout))
            conn = McsConnection(cfg, now=now, cid=cid, window=self.window, owner=self,
                                 tsih=lead.tsih, counters=self._counters(cid))
            self._add(conn)

    # ------------------------------------------------------------------ watcher
    def _watch(self) -> None:
        now = self.loop.time()
        for cid, conn in list(self.conns.items()):
            g = self.glue[cid]
            if conn.finished and conn.transport_action() is None:
                g.close()
                del self.glue[cid]
                del self.conns[cid]
                if cid != 0 and not conn.established and not self._reinstating:
                    self.stats["join_failures"] += 1
                    log.warning("connection %d could not join the session: %s", cid,
                                conn.error)
                elif cid == 0 and not conn.established and not self.closing:
                    self._fail(conn.error or SessionFailed("leading connection failed"))
                continue
            if conn.ready and cid != 0 and not conn.joined:
                conn.joined = True
                self.stats["joins"] += 1
        if self._reinstating and now >= self._restart_at and 0 not in self.conns:
            self._restart_at = _INF
            log.info("MC/S session reinstatement: logging in again (ISID %s, TSIH 0)",
                     self.isid.hex() if self.isid else "?")
            self._start_leader(now, self.config.recovery.deadline, self._old_leader)
            self._old_leader = None
        lead = self.conns.get(0)
        if lead is not None and lead.ready and not self.closing:
            if self._reinstating:
                self._reinstating = False
                log.info("MC/S session reinstated (TSIH %d)", lead.tsih)
            self._join(now)
        if self._queue and self.ready_connections():
            self._dispatch_all()

    def _fail(self, err: SessionFailed) -> None:
        if self.error is not None:
            return
        self.error = err
        log.error("MC/S session failed: %s", err)
        q, self._queue = self._queue, deque()
        for cmd in q:
            self._deliver(cmd, None, err)

    def next_deadline(self) -> float | None:
        """The reinstatement login time."""
        return None if self._restart_at == _INF else self._restart_at

    def on_deadline(self, now: float) -> None:
        """Run the watcher (it starts the reinstatement login when due)."""
        self._watch()

    # ---------------------------------------------------------------- commands
    def submit(self, request: ScsiRequest, callback: TaskCallback | None, *,
               now: float) -> Task:
        """Queue a command; it goes to the connection with the fewest outstanding tasks
        and stays there (allegiance) unless the session is reinstated."""
        outer = Task(request, callback, now)
        self.stats["submitted"] += 1
        cmd = _Cmd(request, outer)
        if self.error is not None:
            self._deliver(cmd, None, self.error)
        elif self.closing:
            self._deliver(cmd, None, SessionClosed("session logged out"))
        else:
            self._queue.append(cmd)
            self._dispatch_all()
        return outer

    def _dispatch_all(self) -> None:
        ready = self.ready_connections()
        if not ready:
            return
        now = self.loop.time()
        changed = ready[0]._changed if ready[0].leading else {}
        while self._queue:
            cmd = self._queue.popleft()
            if cmd.request.lun in changed:
                self._deliver(cmd, None, changed[cmd.request.lun])
                continue
            self._rr = (self._rr + 1) % len(ready)
            conn = min(ready[self._rr:] + ready[:self._rr], key=lambda c: c.outstanding())
            cmd.conn = conn

            def done(task: Task, cmd: _Cmd = cmd, conn: McsConnection = conn) -> None:
                self._inner_done(cmd, conn, task)

            conn.submit(cmd.request, done, now=now)
            self.glue[conn.cid].service(now)

    def _inner_done(self, cmd: _Cmd, conn: McsConnection, task: Task) -> None:
        err = task.error
        if err is not None and conn.lost and not self.closing and self.error is None and \
                isinstance(err, SessionFailed | SessionClosed):
            self.stats["replayed"] += 1
            self._queue.append(cmd)  # re-issued after the reinstatement
            return
        self._deliver(cmd, task, err)

    def _deliver(self, cmd: _Cmd, task: Task | None, err: BaseException | None) -> None:
        o = cmd.outer
        if o.done:
            return
        o.state = TaskState.DONE
        o.error = err
        if task is not None:
            o.result = task.result
            o.itt, o.cmdsn = task.itt, task.cmdsn
        if cmd.callback is not None:
            cmd.callback(o)

    def _kick(self, origin: McsConnection, now: float) -> None:
        """A response arrived on ``origin``: the shared window may have opened."""
        for c in self.conns.values():
            if c is not origin and c.ready:
                c.pump(now)

    # ---------------------------------------------------------------- failures
    def _connection_failed(self, conn: McsConnection, err: BaseException, now: float) -> None:
        """ERL 0: a connection of the established session failed -> reinstate the
        whole session (RFC 7143 §7.1.5, §6.3.5)."""
        if self._reinstating:
            conn.fail(SessionFailed("session reinstatement", err), now)
            return
        self._reinstating = True
        self.stats["reinstatements"] += 1
        log.warning("connection %d failed (%s): ERL 0 -> session reinstatement", conn.cid,
                    err)
        self._old_leader = self.conns.get(0)
        for c in list(self.conns.values()):
            c.fail(SessionFailed("session reinstatement (ERL 0)", err), now)
        p = self.params
        wait = self.config.recovery.wait_before_login(
            p.default_time2wait if p is not None else None)
        self._restart_at = now + min(wait, self.config.recovery.max_time2wait)
        self._joined_for = -1

    # ---------------------------------------------------------------- the end
    def logout(self, timeout: float = 10.0) -> None:
        """Finish queued work, Logout "close the session" on the leading connection
        (RFC 7143 §11.14.1: the target closes every connection), then close the others."""
        if self.finished:
            return
        with contextlib.suppress(LoopTimeout):
            self.loop.run_until(lambda: (not self._queue and not self._reinstating and all(
                c.outstanding() == 0 for c in self.conns.values())) or self.error is not None,
                timeout, "MC/S work to finish")
        self.closing = True
        now = self.loop.time()
        lead = self.conns.get(0)
        if lead is not None and lead.ready:
            lead.logout(now, timeout)
            self.glue[0].service(now)
            try:
                self.loop.run_until(lambda: lead.finished, timeout * 2 + 5, "MC/S logout")
            except LoopTimeout:
                lead.close(self.loop.time())
        self.close()

    def close(self) -> None:
        """Abort every connection and leave the loop."""
        self.closing = True
        now = self.loop.time()
        for cid, conn in list(self.conns.items()):
            conn.close(now)
            g = self.glue.pop(cid)
            g.service(now)
            g.close()
        self.conns.clear()
        q, self._queue = self._queue, deque()
        for cmd in q:
            self._deliver(cmd, None, SessionClosed("session closed"))
        self.loop.remove_idle(self._watch)
        self.loop.remove_deadline_source(self)

    # ----------------------------------------------------------------- counters
    def counters(self) -> dict[str, dict[str, int]]:
        """``mcs`` totals and, per CID, ``conn<cid>`` with the connection's command,
        PDU and byte counts (over every reinstatement)."""
        out: dict[str, dict[str, int]] = {"mcs": dict(self.stats)}
        out["mcs"]["connections"] = len(self.ready_connections())
        for cid, c in sorted(self.counters_by_cid.items()):
            d = c.as_dict()
            row: dict[str, int] = {}
            for k, v in d.get("commands", {}).items():
                row[f"commands_{k}"] = v
            row["pdus_in"] = sum(d.get("pdus_in", {}).values())
            row["pdus_out"] = sum(d.get("pdus_out", {}).values())
            row["bytes_in"] = sum(d.get("bytes_in", {}).values())
            row["bytes_out"] = sum(d.get("bytes_out", {}).values())
            out[f"conn{cid}"] = row
        return out


class McsIscsiSession(IscsiSession):
    """:class:`IscsiSession`'s synchronous API over an :class:`McsSession`."""

    def __init__(self, stack: NetStack, mcs: McsSession, lun: int = 0,
                 wait_slack: float = 30.0) -> None:
        self.stack = stack
        self.loop = stack.loop
        self.mcs = mcs
        self.lun = lun
        self._wait_slack = wait_slack

    @property
    def session(self) -> Session:
        return self.mcs.conns.get(0) or next(iter(self.mcs.conns.values()))

    @session.setter
    def session(self, value: Session) -> None:
        raise AttributeError("the MC/S session's leading connection is managed by McsSession")

    def wait(self, pred: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Run the loop until ``pred()``."""
        try:
            self.loop.run_until(pred, self._limit() if timeout is None else timeout, what)
        except LoopTimeout as e:
            raise IscsiError(f"gave up waiting: {e}") from None

    def _limit(self) -> float:
        c = self.mcs.config
        return (c.recovery.deadline + c.login_timeout + c.command_timeout + 2 * c.tmf_timeout
                + self._wait_slack)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the leading login; raise its error if it failed."""
        m = self.mcs
        c = m.config
        limit = timeout if timeout is not None else (
            c.recovery.initial_deadline + c.login_timeout + 5)
        self.wait(lambda: m.ready or m.error is not None or 0 not in m.conns, "login", limit)
        if not m.ready:
            lead = m.conns.get(0)
            raise m.error or (lead.error if lead is not None and lead.error else
                              SessionFailed("MC/S login failed"))

    def wait_joined(self, timeout: float = 15.0) -> int:
        """Wait until every connection that will join has joined; their number."""
        m = self.mcs

        def settled() -> bool:
            return m.ready and all(c.ready or c.finished for c in m.conns.values()) and \
                m._joined_for == m.tsih

        self.wait(settled, "connections joining the session", timeout)
        return len(m.ready_connections())

    @property
    def params(self) -> NegotiatedParams:
        """The session's negotiated parameters (leading connection)."""
        p = self.mcs.params
        if p is None:
            raise SessionFailed("not logged in")
        return p

    def submit(self, request: ScsiRequest, callback: TaskCallback | None = None) -> Task:
        """Queue a command on the connection with the fewest outstanding tasks."""
        return self.mcs.submit(request, callback, now=self.loop.time())

    def ping(self, timeout: float = 10.0) -> float:
        """One NOP-Out/NOP-In round trip on the leading connection."""
        got: list[float] = []
        self.mcs.leader.ping(self.loop.time(), got.append)
        self.mcs.glue[0].service()
        self.wait(lambda: bool(got), "NOP-In answer to our ping", timeout)
        return got[0]

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-connection and session counters (see :meth:`McsSession.counters`)."""
        return self.mcs.counters()

    def logout(self, timeout: float | None = None) -> None:
        """Log the whole session out."""
        self.mcs.logout(10.0 if timeout is None else timeout)

    def close(self) -> None:
        """Drop the session without logout."""
        self.mcs.close()


def open_mcs(stack: NetStack, config: SessionConfig, *, connections: int = 4,
             lun: int = 0) -> McsIscsiSession:
    """Log in (leading connection), let the others join, return the synchronous handle."""
    mcs = McsSession(stack, config, connections=connections)
    handle = McsIscsiSession(stack, mcs, lun)
    try:
        handle.wait_ready()
        handle.wait_joined()
    except BaseException:
        mcs.close()
        raise
    return handle


__all__ = ["CmdWindow", "McsConnection", "McsIscsiSession", "McsSession", "open_mcs"]
