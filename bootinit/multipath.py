"""Multipath: one block device over several iSCSI sessions to the same LUN.

Like MPIO / MPxIO / dm-multipath: every path is its own session (its own portal,
possibly its own stack and TAP, its own ISID), all opened on the same logical unit.
The LUN is proven to be the same on every path by its VPD 0x83 logical-unit
designator (SPC-4 §7.8.6, NAA/EUI-64/...; the 0x80 serial must agree too when given)
and its capacity; paths that differ are refused with :class:`MultipathError` naming
both identities.

Policies:

* ``failover``: one active path (the first live one in the order given); the others
  stay logged in and are kept alive by NOP-Out pings (RFC 7143 §11.18) after
  ``nop_interval`` seconds of silence; when the active path fails, I/O moves to the
  next live one (a *failover*); when a preferred path comes back, I/O returns to it;
* ``round-robin``: each SCSI command goes to the next live path in turn.

Path failure (no NOP-In within ``nop_timeout``, TCP reset or refused, link down, the
session leaving the full feature phase for any reason) is seen at once by a watcher
that runs at the end of every loop iteration.  If another path is live, the failed
path's session is closed right away: its unfinished commands complete inside the
session with :class:`~bootinit.iscsi.task.SessionClosed` and are re-issued on a
live path, so the caller never sees the error and never waits for the session's own
ERL 0 recovery (RFC 7143 §7.1.5).  Only when no path is live is that recovery left
to run (its tasks stay queued inside it); commands that find no live path wait up to
``no_path_timeout`` seconds (like dm-multipath's ``queue_if_no_path`` with a timeout).

A failed path is retried in the background (a new session with the same ISID, so the
target reinstates the old one, §6.3.5 — tasks left on the dead connection are
cleared there), first after ``retry_interval`` seconds and then with doubling delays
up to ``retry_max``.  Its LUN identity is checked again (asynchronous INQUIRY VPD
0x80/0x83) before it carries I/O again: a *failback*.  A path that came back with a
different LUN is disabled for good.

Counters (:meth:`MultipathDevice.counters`): ``failovers``, ``failbacks``,
``path_failures``, ``redirected`` (commands re-issued on another path), and per path
``commands`` (submitted), ``completed``, ``redirected_away``, ``state``.

The API is :class:`~bootinit.blockdev.BlockDevice`'s (``submit_read/write/flush``
with :class:`~bootinit.blockdev.IoRequest`, ``read/readinto/write/flush/wait``,
``block_size/num_blocks/capacity``), so the NBD server and the dump writer take
either.  :func:`open_device` opens one or the other from CLI target specs.

Caveat (as with every multipath initiator): a write in flight on a path whose link
died may still be executed by the target later; the re-issued copy on the new path
wins only if it arrives last.  Logging in again with the path's ISID makes the target
drop the old session's tasks (session reinstatement), which bounds that window.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from bootinit.blockdev import IoCallback, IoRequest, SyncBlockIO, transfer_blocks
from bootinit.initiator import (
    IscsiSession,
    _digest_offer,
    chap_from_spec,
    default_initiator_name,
)
from bootinit.iscsi.chap import ChapCredentials
from bootinit.iscsi.errors import IscsiError
from bootinit.iscsi.keys import OperationalConfig
from bootinit.iscsi.recovery import LunIdentity, RecoveryPolicy, identity_from_vpd
from bootinit.iscsi.session import Session, SessionConfig
from bootinit.iscsi.task import (
    CommandTimeout,
    LunChangedError,
    ScsiRequest,
    SessionClosed,
    SessionFailed,
    Task,
)
from bootinit.iscsi.text import Portal
from bootinit.scsi import cdb as scsi_cdb
from bootinit.scsi.capacity import Capacity
from bootinit.scsi.inquiry import StandardInquiry
from bootinit.scsi.sense import ScsiError
from firmware_tables.target import TargetSpec
from netstack.link.base import BytesLike
from netstack.loop import Loop, LoopTimeout
from netstack.stack import NetStack

if TYPE_CHECKING:
    from bootinit.blockdev import BlockDevice
    from bootinit.commands import Context

log = logging.getLogger("bootinit.multipath")

POLICIES = ("failover", "round-robin")
_INF = float("inf")


class MultipathError(IscsiError):
    """The paths cannot form one device (different LUNs, none reachable, bad policy)."""


class PathState(Enum):
    """Life cycle of one path."""

    UP = "up"                    # carries I/O (or stands by, under failover)
    RECOVERING = "recovering"    # the only path left: its session's own ERL 0 recovery
    FAILED = "failed"            # down; a reconnect is scheduled
    CONNECTING = "connecting"    # a background session is logging in / being checked
    DISABLED = "disabled"        # a different LUN answered here: never used again


@dataclass(frozen=True)
class PathSpec:
    """One path: a target (portal, name, LUN, CHAP) and the stack that reaches it
    (None: the device's default stack).  ``label`` names it in counters and logs."""

    target: TargetSpec
    stack: NetStack | None = None
    label: str | None = None


class _Path:
    """State of one path (see :class:`PathState`)."""

    def __init__(self, index: int, spec: PathSpec, stack: NetStack, lun: int) -> None:
        self.index = index
        self.spec = spec
        self.stack = stack
        self.lun = lun
        t = spec.target
        self.label = spec.label or f"{t.host}:{t.port}"
        self.isid = b"\x40" + os.urandom(5)  # random ISID (RFC 7143 §11.12.5), kept
        self.handle: IscsiSession | None = None
        self.state = PathState.CONNECTING
        self.retry_at = _INF
        self.attempts = 0
        self.error: BaseException | None = None
        self.probe: list[Task] = []
        self.stats: dict[str, int] = {"commands": 0, "completed": 0, "redirected_away": 0,
                                      "failures": 0, "failbacks": 0, "connects": 0}

    @property
    def session(self) -> Session | None:
        return self.handle.session if self.handle is not None else None

    def live(self) -> bool:
        s = self.session
        return self.state is PathState.UP and s is not None and s.ready


class _Command:
    """One SCSI command of an :class:`IoRequest`, re-issued until it completes."""

    __slots__ = ("attempts", "io", "request", "since")

    def __init__(self, request: ScsiRequest, io: IoRequest, now: float) -> None:
        self.request = request
        self.io = io
        self.attempts = 0
        self.since = now


class MultipathDevice(SyncBlockIO):
    """A LUN reached over several paths (see module doc); BlockDevice's API."""

    def __init__(self, loop: Loop, paths: Sequence[PathSpec], *,
                 policy: str = "failover", default_stack: NetStack | None = None,
                 initiator_name: str | None = None, lun: int | None = None,
                 chap: ChapCredentials | None = None,
                 operational: OperationalConfig | None = None,
                 queue_depth: int = 32, command_timeout: float = 30.0,
                 nop_interval: float = 1.0, nop_timeout: float = 2.0,
                 login_timeout: float = 5.0, open_timeout: float = 15.0,
                 retry_interval: float = 1.0, retry_max: float = 8.0,
                 no_path_timeout: float = 60.0, max_transfer: int | None = None,
                 max_attempts: int = 16) -> None:
        if policy not in POLICIES:
            raise MultipathError(f"unknown multipath policy {policy!r} "
                                 f"(choose {' or '.join(POLICIES)})")
        if not paths:
            raise MultipathError("multipath needs at least one path")
        self.loop = loop
        self.policy = policy
        self.initiator_name = initiator_name or default_initiator_name()
        self.lun = paths[0].target.lun if lun is None else lun
        self._chap = chap
        self._operational = operational or OperationalConfig()
        self.queue_depth = queue_depth
        self.command_timeout = command_timeout
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        self.login_timeout = login_timeout
        self.retry_interval = retry_interval
        self.retry_max = retry_max
        self.no_path_timeout = no_path_timeout
        self.max_attempts = max_attempts
        self.paths: list[_Path] = []
        for i, spec in enumerate(paths):
            stack = spec.stack or default_stack
            if stack is None:
                raise MultipathError(f"path {i} ({spec.target.host}): no stack to reach it")
            if spec.target.name != paths[0].target.name:
                log.info("path %d names target %s (path 0: %s); the LUN identity decides",
                         i, spec.target.name, paths[0].target.name)
            self.paths.append(_Path(i, spec, stack, spec.target.lun if lun is None else lun))
        self.stats: dict[str, int] = {"failovers": 0, "failbacks": 0, "path_failures": 0,
                                      "redirected": 0, "waited_for_path": 0,
                                      "identity_mismatch": 0}
        self._waiting: deque[_Command] = deque()
        self._rr = 0
        self._active: _Path | None = None
        self._closed = False
        self.identity = LunIdentity()
        self.inquiry: StandardInquiry | None = None
        self.capacity_info: Capacity | None = None
        try:
            self._open(open_timeout, max_transfer)
        except BaseException:
            self._close_all(logout=False)
            raise
        loop.add_idle(self._watch)
        loop.add_deadline_source(self)

    # ================================================================ opening

    def _session_config(self, path: _Path, initial_deadline: float) -> SessionConfig:
        t = path.spec.target
        chap = self._chap or chap_from_spec(t)
        return SessionConfig(
            initiator_name=self.initiator_name, portal=Portal(t.host, t.port),
            target_name=t.name, chap=chap, operational=self._operational, isid=path.isid,
            queue_depth=self.queue_depth, command_timeout=self.command_timeout,
            login_timeout=self.login_timeout, nop_interval=self.nop_interval,
            nop_timeout=self.nop_timeout,
            recovery=RecoveryPolicy(initial_deadline=initial_deadline,
                                    deadline=self.no_path_timeout, time2wait=0.5,
                                    backoff_initial=0.5, backoff_max=self.retry_max))

    def _start_session(self, path: _Path, initial_deadline: float) -> None:
        now = self.loop.time()
        session = Session(self._session_config(path, initial_deadline), now=now)
        path.handle = IscsiSession(path.stack, session, path.lun)
        path.stats["connects"] += 1
        path.state = PathState.CONNECTING
        path.retry_at = _INF

    def _open(self, timeout: float, max_transfer: int | None) -> None:
        for p in self.paths:
            self._start_session(p, timeout)

        def settled() -> bool:
            return all(p.session is not None and (p.session.ready or p.session.finished)
                       for p in self.paths)

        with contextlib.suppress(LoopTimeout):
            self.loop.run_until(settled, timeout + self.login_timeout + 5,
                                "login on every path")
        up = [p for p in self.paths if p.session is not None and p.session.ready]
        if not up:
            errors = "; ".join(f"{p.label}: {self._why(p)}" for p in self.paths)
            raise MultipathError(f"no path to {self.paths[0].spec.target.name} could log "
                                 f"in ({errors})")
        first: _Path | None = None
        for p in self.paths:
            if p not in up:
                p.error = p.session.error if p.session is not None else None
                log.warning("path %s did not log in (%s); retrying in the background",
                            p.label, self._why(p))
                self._drop_session(p)
                self._schedule_retry(p, self.loop.time())
                continue
            assert p.handle is not None
            self._check_open_path(p)
            if first is None:
                first = p
        assert first is not None and first.handle is not None
        for p in up:
            assert p.session is not None
            p.session.register_lun_identity(p.lun, self.identity)
            p.state = PathState.UP
        # One LUN behind every path: its Block Limits, asked once (SBC-4 §6.6.4).
        self.block_limits = first.handle.block_limits(first.lun)
        self.max_transfer_blocks = transfer_blocks(max_transfer, self.block_size,
                                                   self.block_limits)
        self._active = self._pick_active()
        log.info("multipath %s LUN %d: %d of %d paths up, policy %s", first.spec.target.name,
                 first.lun, len(up), len(self.paths), self.policy)

    @staticmethod
    def _why(p: _Path) -> str:
        s = p.session
        if s is None:
            return str(p.error) if p.error else "not started"
        if s.error is not None:
            return str(s.error)
        if s.last_connection_error is not None:
            return str(s.last_connection_error)
        return f"session {s.state.value}"

    def _check_open_path(self, p: _Path) -> None:
        """TEST UNIT READY, INQUIRY, READ CAPACITY and VPD identity on one path."""
        h = p.handle
        assert h is not None
        res = h.test_unit_ready(p.lun)
        if not res.good:
            raise res.scsi_error(0x00)
        inq = h.inquiry(p.lun)
        if not inq.connected:
            raise MultipathError(f"path {p.label}: LUN {p.lun}: no logical unit connected")
        ident = h.lun_identity(p.lun)
        if ident.designator is None:
            raise MultipathError(
                f"path {p.label}: LUN {p.lun} of {p.spec.target.name} has no VPD 0x83 "
                "logical-unit designator: cannot prove that the paths reach one LUN")
        if self.identity.known:
            why = self.identity.mismatch(ident)
            if why is not None:
                raise MultipathError(
                    f"path {p.label} reaches a different LUN than path "
                    f"{self.paths[0].label}: {why}; refusing to merge them into one device")
        cap = h.read_capacity(p.lun)
        if self.capacity_info is None:
            self.capacity_info, self.inquiry, self.identity = cap, inq, ident
            return
        if cap != self.capacity_info:
            raise MultipathError(
                f"path {p.label}: LUN {p.lun} has {cap.blocks} blocks of {cap.block_size} "
                f"bytes, path {self.paths[0].label} {self.capacity_info.blocks} of "
                f"{self.capacity_info.block_size}: refusing to merge different LUNs")

    # ============================================================== geometry

    @property
    def block_size(self) -> int:
        """Logical block size in bytes."""
        assert self.capacity_info is not None
        return self.capacity_info.block_size

    @property
    def num_blocks(self) -> int:
        """Number of logical blocks."""
        assert self.capacity_info is not None
        return self.capacity_info.blocks

    @property
    def capacity(self) -> int:
        """Size in bytes."""
        assert self.capacity_info is not None
        return self.capacity_info.size_bytes

    def _check(self, lba: int, blocks: int) -> None:
        if lba < 0 or blocks < 0 or lba + blocks > self.num_blocks:
            raise ValueError(f"blocks {lba}..{lba + blocks - 1} outside the LUN "
                             f"(0..{self.num_blocks - 1})")

    # ================================================================ paths

    def _live(self) -> list[_Path]:
        return [p for p in self.paths if p.live()]

    def _pick_active(self) -> _Path | None:
        for p in self.paths:
            if p.live():
                return p
        return None

    def _choose(self) -> _Path | None:
        if self.policy == "failover":
            a = self._active
            if a is None or not a.live():
                a = self._active = self._pick_active()
            return a
        live = self._live()
        if not live:
            return None
        self._rr = (self._rr + 1) % len(live)
        return live[self._rr]

    @property
    def active_path(self) -> str | None:
        """The label of the path carrying I/O under ``failover`` (None: none live)."""
        a = self._choose() if self.policy == "failover" else None
        return a.label if a is not None else None

    def path_states(self) -> dict[str, str]:
        """Label -> state of every path."""
        return {p.label: p.state.value for p in self.paths}

    def counters(self) -> dict[str, dict[str, int]]:
        """``multipath`` totals and ``path<i>`` per path (with the session's counters'
        ``commands`` group folded in as ``session_*``)."""
        out: dict[str, dict[str, int]] = {"multipath": dict(self.stats)}
        for p in self.paths:
            d = dict(p.stats)
            d["up"] = int(p.live())
            s = p.session
            if s is not None:
                for k, v in s.counters.as_dict().get("recovery", {}).items():
                    d[f"recovery_{k}"] = v
            out[f"path{p.index}"] = d
        return out

    # ============================================================== dispatch

    def _dispatch(self, cmd: _Command) -> None:
        if self._closed:
            cmd.io._part_done(self._dead_task(cmd, SessionClosed("multipath device closed")))
            return
        path = self._choose()
        if path is None:
            if not self._waiting or self._waiting[-1] is not cmd:
                cmd.since = self.loop.time()
                self.stats["waited_for_path"] += 1
                self._waiting.append(cmd)
            return
        cmd.attempts += 1
        cmd.request.lun = path.lun  # the LU may have another number behind this path
        path.stats["commands"] += 1
        h = path.handle
        assert h is not None

        def done(task: Task, path: _Path = path, cmd: _Command = cmd) -> None:
            self._done(cmd, path, task)

        h.submit(cmd.request, done)

    def _dead_task(self, cmd: _Command, err: BaseException) -> Task:
        t = Task(cmd.request, None, self.loop.time())
        t.error = err
        return t

    def _is_path_error(self, path: _Path, err: BaseException) -> bool:
        if isinstance(err, SessionClosed | SessionFailed | LunChangedError):
            return True
        s = path.session
        lost = s is None or not s.ready
        return lost and isinstance(err, CommandTimeout | IscsiError)

    def _done(self, cmd: _Command, path: _Path, task: Task) -> None:
        err = task.error
        if err is None or self._closed or not self._is_path_error(path, err):
            path.stats["completed"] += 1
            cmd.io._part_done(task)
            return
        if isinstance(err, LunChangedError):
            self._disable(path, err)
        if cmd.attempts >= self.max_attempts:
            cmd.io._part_done(task)
            return
        path.stats["redirected_away"] += 1
        self.stats["redirected"] += 1
        log.info("re-issuing %r (path %s: %s)", cmd.request, path.label, err)
        if path.state is PathState.UP and not path.live():
            self._path_failed(path, err)
        self._dispatch(cmd)

    # ================================================================ watcher

    def _watch(self) -> None:
        """End of every loop iteration: notice path failures and recoveries."""
        if self._closed:
            return
        now = self.loop.time()
        for p in self.paths:
            s = p.session
            if p.state is PathState.UP:
                if s is None or not s.ready:
                    self._path_failed(p, s.last_connection_error if s is not None else None)
            elif p.state is PathState.RECOVERING:
                assert s is not None
                if s.ready:
                    log.info("path %s recovered by itself", p.label)
                    p.state = PathState.UP
                    self._after_path_up()
                elif s.finished or any(q.live() for q in self.paths if q is not p):
                    self._take_down(p, now)
            elif p.state is PathState.CONNECTING:
                if s is None:
                    self._schedule_retry(p, now)
                elif s.finished:
                    p.error = s.error
                    self._drop_session(p)
                    self._schedule_retry(p, now)
                elif s.ready and not p.probe:
                    self._start_probe(p)
                elif not s.ready and s.logged_in_once:
                    p.error = s.last_connection_error
                    self._take_down(p, now)  # lost again while being checked
            elif p.state is PathState.FAILED and now >= p.retry_at:
                p.attempts += 1
                self._start_session(p, self.login_timeout)
        if self._waiting and self._live():
            waiting, self._waiting = self._waiting, deque()
            for cmd in waiting:
                self._dispatch(cmd)

    def _path_failed(self, p: _Path, err: BaseException | None) -> None:
        if p.state is not PathState.UP:
            return
        now = self.loop.time()
        p.stats["failures"] += 1
        p.error = err
        self.stats["path_failures"] += 1
        was_active = self.policy == "round-robin" or self._active is p
        others = [q for q in self.paths if q is not p and q.live()]
        log.warning("path %s failed (%s); %d other path(s) live", p.label, err, len(others))
        if others:
            if was_active:
                self.stats["failovers"] += 1
            if self._active is p:
                self._active = self._pick_active()
            self._take_down(p, now)
        else:
            p.state = PathState.RECOVERING  # the session's own ERL 0 recovery goes on

    def _take_down(self, p: _Path, now: float) -> None:
        """Close the path's session (its unfinished commands come back to be re-issued
        on a live path) and schedule a reconnect."""
        p.state = PathState.FAILED
        p.attempts = 0
        if self._active is p:
            self._active = None
        self._drop_session(p)
        self._schedule_retry(p, now)

    def _drop_session(self, p: _Path) -> None:
        h, p.handle = p.handle, None
        p.probe = []
        if h is not None:
            h.close()  # commands still inside fail with SessionClosed -> _done re-issues

    def _schedule_retry(self, p: _Path, now: float) -> None:
        if p.state is PathState.DISABLED:
            return
        p.state = PathState.FAILED
        delay = min(self.retry_interval * (2 ** min(p.attempts, 10)), self.retry_max)
        p.retry_at = now + delay

    def _disable(self, p: _Path, err: BaseException) -> None:
        log.error("path %s disabled: %s", p.label, err)
        p.error = err
        self.stats["identity_mismatch"] += 1
        self._drop_session(p)
        p.state = PathState.DISABLED
        if self._active is p:
            self._active = None

    def _start_probe(self, p: _Path) -> None:
        """Asynchronous identity check of a reconnected path (VPD 0x80 and 0x83)."""
        h = p.handle
        assert h is not None
        bufs = {0x80: bytearray(255), 0x83: bytearray(1024)}
        results: dict[int, Task] = {}

        def one_done(task: Task, page: int, buf: bytearray) -> None:
            if h is not p.handle:
                return
            results[page] = task
            if len(results) == len(bufs):
                self._probe_done(p, results, bufs)

        for page, buf in bufs.items():
            req = ScsiRequest(scsi_cdb.inquiry(page, len(buf)), lun=p.lun, read_into=buf)

            def cb(t: Task, pg: int = page, b: bytearray = buf) -> None:
                one_done(t, pg, b)

            p.probe.append(h.submit(req, cb))

    def _probe_done(self, p: _Path, results: dict[int, Task],
                    bufs: dict[int, bytearray]) -> None:
        pages: dict[int, bytes | None] = {}
        for page, t in results.items():
            if t.error is not None and not isinstance(t.error, ScsiError):
                p.error = t.error
                self._take_down(p, self.loop.time())
                return
            pages[page] = (bytes(bufs[page][:t.result.transferred])
                           if t.error is None and t.result is not None else None)
        seen = identity_from_vpd(pages.get(0x80), pages.get(0x83))
        why = self.identity.mismatch(seen)
        if why is not None:
            self._disable(p, MultipathError(
                f"path {p.label} came back with a different LUN: {why}"))
            return
        assert p.session is not None
        p.session.register_lun_identity(p.lun, self.identity)
        p.probe = []
        p.state = PathState.UP
        p.attempts = 0
        p.stats["failbacks"] += 1
        self.stats["failbacks"] += 1
        log.info("path %s is back (failback)", p.label)
        self._after_path_up()

    def _after_path_up(self) -> None:
        if self.policy == "failover":
            self._active = self._pick_active()  # the preferred path takes over again
        # a path that was left to its own recovery: move its queued work here
        for q in self.paths:
            if q.state is PathState.RECOVERING:
                self._take_down(q, self.loop.time())

    # ------------------------------------------------------- deadline source

    def next_deadline(self) -> float | None:
        """Reconnect times and the no-path deadline of waiting commands."""
        if self._closed:
            return None
        d = min((p.retry_at for p in self.paths if p.state is PathState.FAILED),
                default=_INF)
        if self._waiting:
            d = min(d, self._waiting[0].since + self.no_path_timeout)
        return None if d == _INF else d

    def on_deadline(self, now: float) -> None:
        """Fail commands that waited too long for a path; reconnects run in the watcher."""
        while self._waiting and now >= self._waiting[0].since + self.no_path_timeout:
            cmd = self._waiting.popleft()
            errs = "; ".join(f"{p.label}: {p.error}" for p in self.paths)
            cmd.io._part_done(self._dead_task(cmd, SessionFailed(
                f"no path to the LUN for {self.no_path_timeout:g} s ({errs})")))
        self._watch()

    # ================================================================= I/O

    def _start(self, req: IoRequest, parts: list[ScsiRequest]) -> IoRequest:
        req._left = len(parts)
        if not parts:
            req.done = True
            if req.callback is not None:
                req.callback(req)
            return req
        now = self.loop.time()
        for part in parts:
            self._dispatch(_Command(part, req, now))
        return req

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: IoCallback | None = None) -> IoRequest:
        """Read ``count`` blocks at ``lba`` into ``buf`` (allocated when None)."""
        bs = self.block_size
        view = self._read_view(lba, count, buf)
        req = IoRequest("read", lba, view, callback)
        step = self.max_transfer_blocks
        parts = [ScsiRequest(scsi_cdb.read_cdb(lba + off, min(step, count - off)),
                             lun=self.lun,
                             read_into=view[off * bs:(off + min(step, count - off)) * bs])
                 for off in range(0, count, step)]
        return self._start(req, parts)

    def submit_write(self, lba: int, data: BytesLike,
                     callback: IoCallback | None = None) -> IoRequest:
        """Write ``data`` at ``lba``; keep it unchanged until the request is done."""
        view = memoryview(data).cast("B")
        bs = self.block_size
        count = self._blocks_of(len(view))
        self._check(lba, count)
        req = IoRequest("write", lba, None, callback)
        step = self.max_transfer_blocks
        parts = [ScsiRequest(scsi_cdb.write_cdb(lba + off, min(step, count - off)),
                             lun=self.lun,
                             write_data=view[off * bs:(off + min(step, count - off)) * bs])
                 for off in range(0, count, step)]
        return self._start(req, parts)

    def submit_flush(self, callback: IoCallback | None = None) -> IoRequest:
        """SYNCHRONIZE CACHE (SBC-3 §5.22) on one live path."""
        req = IoRequest("flush", 0, None, callback)
        force16 = self.num_blocks > 0xFFFFFFFF
        return self._start(req, [ScsiRequest(scsi_cdb.synchronize_cache(force16=force16),
                                             lun=self.lun)])

    def _limit(self) -> float:
        return (self.no_path_timeout + self.command_timeout + self.login_timeout
                + self.retry_max + 60.0) * 2

    def run_until(self, pred: Callable[[], bool], what: str) -> None:
        """Run the loop until ``pred()`` (bounded far above every path timeout)."""
        try:
            self.loop.run_until(pred, self._limit(), what)
        except LoopTimeout as e:
            raise IscsiError(f"gave up waiting: {e}") from None

    # ================================================================== end

    def _close_all(self, logout: bool) -> None:
        for p in self.paths:
            h, p.handle = p.handle, None
            if h is None:
                continue
            if logout and h.session.ready:
                try:
                    h.logout()
                except Exception as e:  # a path dying at the end is not the caller's problem
                    log.info("logout on path %s: %s", p.label, e)
                    h.close()
            else:
                h.close()

    def close(self) -> None:
        """Log out of every path and leave the loop."""
        if self._closed:
            return
        self._closed = True
        self.loop.remove_idle(self._watch)
        self.loop.remove_deadline_source(self)
        for cmd in list(self._waiting):
            cmd.io._part_done(self._dead_task(cmd, SessionClosed("multipath device closed")))
        self._waiting.clear()
        self._close_all(logout=True)

    logout = close

    def __enter__(self) -> MultipathDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ===================================================================== helpers

def open_device(ctx: Context, specs: Sequence[TargetSpec | str], policy: str | None = None,
                *, connections: int = 1, **kw: Any) -> BlockDevice | MultipathDevice:
    """Open the LUN of ``specs`` for a CLI command (``bootinit read/write/boot/dump``).

    * one spec, no policy: a :class:`~bootinit.blockdev.BlockDevice` over one session
      of ``ctx.initiator`` — with ``connections`` > 1 an MC/S session
      (:mod:`bootinit.iscsi.mcs`) of up to that many connections;
    * several specs (or a policy): a :class:`MultipathDevice` over ``ctx.stack``.

    The command's CHAP, digest, queue depth and timeout options apply.  Release it
    with :func:`close_device` before ``ctx`` closes (single sessions are also logged
    out by ``ctx.close()``)."""
    from bootinit.commands import _digests, chap_for, target_of

    targets = [target_of(s) if isinstance(s, str) else s for s in specs]
    if not targets:
        raise MultipathError("no target given")
    args = ctx.args
    digests = _digests(args)
    offer = _digest_offer(digests)
    op = replace(ctx.operational, header_digest=offer, data_digest=offer)  # --iscsi-param
    if len(targets) == 1 and policy is None:
        if connections <= 1:
            return ctx.login(targets[0]).block_device()
        from bootinit.blockdev import BlockDevice
        from bootinit.iscsi.mcs import open_mcs

        t = targets[0]
        cfg_kw: dict[str, Any] = {}
        if args.timeout is not None:
            cfg_kw["command_timeout"] = float(args.timeout)
        cfg = SessionConfig(initiator_name=ctx.initiator.initiator_name,
                            portal=Portal(t.host, t.port), target_name=t.name,
                            chap=chap_for(args, t), operational=op,
                            queue_depth=args.queue_depth or 32, **cfg_kw)
        handle = open_mcs(ctx.stack, cfg, connections=connections, lun=t.lun)
        ctx.initiator.sessions.append(handle)  # logged out by ctx.close()
        return BlockDevice(handle, t.lun)
    opts: dict[str, Any] = {"queue_depth": args.queue_depth or 32,
                            "initiator_name": ctx.initiator.initiator_name,
                            "operational": op}
    if args.timeout is not None:
        opts["command_timeout"] = float(args.timeout)
    opts.update(kw)
    paths = [PathSpec(t, ctx.stack, label=f"{t.host}:{t.port}") for t in targets]
    chap = chap_for(args, targets[0])
    return MultipathDevice(ctx.loop, paths, policy=policy or "failover",
                           default_stack=ctx.stack, chap=chap, **opts)


def close_device(dev: BlockDevice | MultipathDevice) -> None:
    """Log out of what :func:`open_device` opened (every path, or the one session)."""
    if isinstance(dev, MultipathDevice):
        dev.close()
    else:
        dev.session.logout()


def device_counters(dev: BlockDevice | MultipathDevice) -> dict[str, dict[str, int]]:
    """Counters of a device: per path (multipath), per connection (MC/S) or the session's."""
    return dev.counters() if isinstance(dev, MultipathDevice) else dev.session.counters()


__all__ = ["POLICIES", "MultipathDevice", "MultipathError", "PathSpec", "PathState",
           "close_device", "device_counters", "open_device"]
