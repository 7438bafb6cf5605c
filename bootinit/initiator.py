"""The high-level initiator: discovery, login (with redirects, CHAP, digests), SCSI helpers.

::

    stack = NetStack(loop, link, StackConfig(mac=..., ip=IPv4Interface("10.77.0.2/24")))
    stack.start()
    ini = Initiator(stack)                       # iqn.2026-11.org.bootinit:<hostname>
    targets = ini.discover("10.77.0.1")          # SendTargets (RFC 7143 §13.3)
    sess = ini.login("iscsi://10.77.0.1/iqn.2024-01.org.bootinit:lab/1", digests=True)
    dev = sess.block_device()                    # or ini.open_block_device(url)
    data = dev.read(0, 8)
    ini.logout()

Everything runs in the one loop of the stack: each synchronous call submits work to the
pure session and runs the loop until it is done (the way libiscsi's sync API polls its
async one).  :class:`IscsiSession` also offers ``submit`` with a callback for callers
that keep many commands in flight.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from bootinit.iscsi.chap import ChapCredentials, Secret
from bootinit.iscsi.connection import IscsiConnection
from bootinit.iscsi.errors import IscsiError
from bootinit.iscsi.keys import NegotiatedParams, OperationalConfig
from bootinit.iscsi.recovery import LunIdentity, RecoveryPolicy, identity_from_vpd
from bootinit.iscsi.session import Session, SessionConfig, SessionState, TextOp
from bootinit.iscsi.task import ScsiRequest, ScsiResult, SessionFailed, Task, TaskCallback
from bootinit.iscsi.text import DEFAULT_PORT, DiscoveredTarget, Portal
from bootinit.scsi import cdb as scsi_cdb
from bootinit.scsi.capacity import Capacity, decode_read_capacity_10, decode_read_capacity_16
from bootinit.scsi.inquiry import (
    BlockLimits,
    StandardInquiry,
    decode_block_limits,
    decode_standard_inquiry,
    decode_supported_pages,
)
from bootinit.scsi.lun import decode_report_luns_numbers, report_luns_length
from bootinit.scsi.sense import ScsiError, Sense, Status, decode_sense
from firmware_tables.target import TargetSpec
from firmware_tables.uri import parse_target
from netstack.loop import LoopTimeout
from netstack.stack import NetStack

if TYPE_CHECKING:
    from bootinit.blockdev import BlockDevice

DEFAULT_IQN_PREFIX = "iqn.2026-11.org.bootinit"


def default_initiator_name(hostname: str | None = None) -> str:
    """``iqn.2026-11.org.bootinit:<hostname>`` (iPXE style), hostname made IQN-safe."""
    host = (hostname if hostname is not None else socket.gethostname()).lower()
    host = re.sub(r"[^a-z0-9.\-]", "-", host).strip(".-") or "unknown"
    return f"{DEFAULT_IQN_PREFIX}:{host}"


def chap_from_spec(spec: TargetSpec) -> ChapCredentials | None:
    """CHAP credentials of a :class:`TargetSpec` (``reverse_chap`` -> mutual CHAP)."""
    if spec.chap is None:
        return None
    rev = spec.reverse_chap
    return ChapCredentials(
        username=spec.chap.user, secret=Secret(spec.chap.secret),
        target_username=rev.user if rev is not None else None,
        target_secret=Secret(rev.secret) if rev is not None else None)


def _digest_offer(digests: bool | str) -> tuple[str, ...]:
    if digests is True or digests == "required":
        return ("CRC32C",)
    if digests == "preferred":
        return ("CRC32C", "None")
    if digests is False or digests == "none":
        return ("None",)
    raise ValueError(f"digests must be True, False, 'required', 'preferred' or 'none', "
                     f"not {digests!r}")


class IscsiSession:
    """A logged-in session in the loop: synchronous and asynchronous SCSI commands.

    ``lun`` is the default LUN of the helpers.  Commands that fail raise
    :class:`~bootinit.scsi.sense.ScsiError` (with decoded sense) or an
    :class:`~bootinit.iscsi.errors.IscsiError` subclass.
    """

    def __init__(self, stack: NetStack, session: Session, lun: int = 0,
                 wait_slack: float = 30.0) -> None:
        self.stack = stack
        self.loop = stack.loop
        self.session = session
        self.lun = lun
        self.conn = IscsiConnection(stack, session)
        self._wait_slack = wait_slack

    # ---------------------------------------------------------------- waiting

    def _limit(self) -> float:
        c = self.session.config
        return (c.recovery.deadline + c.login_timeout + c.command_timeout + 2 * c.tmf_timeout
                + self._wait_slack)

    def wait(self, pred: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Run the loop until ``pred()``; the session itself bounds every wait, this
        timeout (default: above the recovery deadline) only guards against bugs."""
        self.conn.service()
        try:
            self.loop.run_until(pred, self._limit() if timeout is None else timeout, what)
        except LoopTimeout as e:
            raise IscsiError(f"gave up waiting: {e}") from None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the full feature phase; raise the login error if it failed."""
        s = self.session
        limit = timeout if timeout is not None else (
            s.config.recovery.initial_deadline + s.config.login_timeout + 5)
        self.wait(lambda: s.ready or s.finished, "login", limit)
        if s.state is SessionState.FAILED:
            assert s.error is not None
            raise s.error
        if not s.ready:
            raise SessionFailed(f"session is {s.state.value}")

    # ---------------------------------------------------------------- commands

    @property
    def params(self) -> NegotiatedParams:
        """The negotiated operational parameters."""
        p = self.session.params
        if p is None:
            raise SessionFailed("not logged in")
        return p

    def submit(self, request: ScsiRequest, callback: TaskCallback | None = None) -> Task:
        """Queue a command; ``callback(task)`` runs inside the loop when it is done."""
        task = self.session.submit(request, callback, now=self.loop.time())
        self.conn.submitted()
        return task

    def execute(self, request: ScsiRequest) -> Task:
        """Run one command to completion; returns the task (see :meth:`Task.check`)."""
        task = self.submit(request)
        self.wait(lambda: task.done, f"SCSI command 0x{request.opcode:02x}")
        return task

    def run(self, request: ScsiRequest) -> ScsiResult:
        """Run one command; return its result or raise its error."""
        return self.execute(request).check()

    def _data_in(self, cdb: bytes, size: int, lun: int | None) -> bytes:
        buf = bytearray(size)
        res = self.run(ScsiRequest(cdb, lun=self.lun if lun is None else lun, read_into=buf))
        return bytes(buf[:res.transferred])

    def inquiry(self, lun: int | None = None) -> StandardInquiry:
        """Standard INQUIRY data (SPC-4 §6.6.2)."""
        return decode_standard_inquiry(self._data_in(scsi_cdb.inquiry(None, 255), 255, lun))

    def vpd(self, page: int, lun: int | None = None, size: int = 1024) -> bytes:
        """Raw VPD page (SPC-4 §7.8)."""
        return self._data_in(scsi_cdb.inquiry(page, size), size, lun)

    def supported_vpd_pages(self, lun: int | None = None) -> list[int]:
        """VPD 0x00 (SPC-4 §7.8.15)."""
        return decode_supported_pages(self.vpd(0x00, lun))

    def block_limits(self, lun: int | None = None) -> BlockLimits | None:
        """VPD 0xB0 (SBC-4 §6.6.4) when the LUN lists it in VPD 0x00, else None."""
        try:
            pages = self.supported_vpd_pages(lun)
        except (ScsiError, ValueError):
            return None
        if 0xB0 not in pages:
            return None
        return decode_block_limits(self.vpd(0xB0, lun))

    def lun_identity(self, lun: int | None = None) -> LunIdentity:
        """VPD 0x80 serial and 0x83 designator of the LUN (what recovery re-checks)."""
        try:
            pages = self.supported_vpd_pages(lun)
        except (ScsiError, ValueError):
            pages = []
        v80 = self.vpd(0x80, lun) if 0x80 in pages else None
        v83 = self.vpd(0x83, lun) if 0x83 in pages else None
        return identity_from_vpd(v80, v83)

    def report_luns(self) -> list[int]:
        """REPORT LUNS (SPC-4 §6.33), retried with a bigger allocation when needed."""
        size = 4096
        for _ in range(3):
            data = self._data_in(scsi_cdb.report_luns(size), size, 0)
            want = report_luns_length(data)
            if want <= size:
                return decode_report_luns_numbers(data)
            size = want
        return decode_report_luns_numbers(data)

    def test_unit_ready(self, lun: int | None = None) -> ScsiResult:
        """TEST UNIT READY (SPC-4 §6.37); returns the result (status not GOOD included)."""
        task = self.execute(ScsiRequest(scsi_cdb.test_unit_ready(),
                                        lun=self.lun if lun is None else lun))
        if task.result is None:
            assert task.error is not None
            raise task.error
        return task.result

    def request_sense(self, lun: int | None = None) -> Sense | None:
        """REQUEST SENSE (SPC-4 §6.29): the LUN's current sense data (None: no sense)."""
        data = self._data_in(scsi_cdb.request_sense(252), 252, lun)
        return decode_sense(data) if len(data) >= 8 else None

    def read_capacity(self, lun: int | None = None) -> Capacity:
        """READ CAPACITY(10), falling back to (16) beyond 2**32 blocks (SBC-3 §5.15/16)."""
        cap: Capacity | None = None
        try:
            cap = decode_read_capacity_10(self._data_in(scsi_cdb.read_capacity_10(), 8, lun))
        except ScsiError as e:
            if e.status != Status.CHECK_CONDITION:
                raise
        if cap is None:
            cap = decode_read_capacity_16(self._data_in(scsi_cdb.read_capacity_16(32), 32, lun))
        return cap

    def block_device(self, lun: int | None = None, **kw: object) -> BlockDevice:
        """A :class:`~bootinit.blockdev.BlockDevice` on ``lun`` of this session."""
        from bootinit.blockdev import BlockDevice

        return BlockDevice(self, self.lun if lun is None else lun, **kw)  # type: ignore[arg-type]

    def send_targets(self, value: str = "All") -> list[DiscoveredTarget]:
        """SendTargets in this (discovery) session."""
        op: TextOp = self.session.send_targets(value, now=self.loop.time())
        self.conn.service()
        self.wait(lambda: op.done, "SendTargets")
        return op.check()

    def ping(self, timeout: float = 10.0) -> float:
        """One NOP-Out/NOP-In round trip; returns its time in seconds."""
        got: list[float] = []
        self.session.ping(self.loop.time(), got.append)
        self.wait(lambda: bool(got), "NOP-In answer to our ping", timeout)
        return got[0]

    def counters(self) -> dict[str, dict[str, int]]:
        """The session's counters (PDUs, bytes, commands, latency, errors, recoveries)."""
        return self.session.counters.as_dict()

    # -------------------------------------------------------------------- end

    def logout(self, timeout: float | None = None) -> None:
        """Finish outstanding work, log out (RFC 7143 §11.14) and leave the loop."""
        s = self.session
        if not s.finished:
            s.logout(self.loop.time(), timeout)
            wait = (timeout if timeout is not None else s.config.tmf_timeout) * 2 + 5
            try:
                self.wait(lambda: s.finished, "logout", wait)
            except IscsiError:
                s.close(self.loop.time())
        self.conn.service()
        self.loop.run_once(0)  # flush the FIN
        self.conn.close()

    def close(self) -> None:
        """Drop the session without logout."""
        self.session.close(self.loop.time())
        self.conn.service()
        self.conn.close()


class Initiator:
    """Opens sessions over a :class:`NetStack` (see module doc).

    Keyword defaults given here (``queue_depth``, ``command_timeout``,
    ``nop_interval``, ``recovery`` ...) apply to every session; ``login`` may override.
    """

    def __init__(self, stack: NetStack, initiator_name: str | None = None, *,
                 alias: str | None = None, **session_defaults: object) -> None:
        self.stack = stack
        self.initiator_name = initiator_name or default_initiator_name()
        self.alias = alias
        self.defaults = session_defaults
        self.sessions: list[IscsiSession] = []

    def _config(self, portal: Portal, target_name: str | None, *, discovery: bool,
                chap: ChapCredentials | None, digests: bool | str, queue_depth: int | None,
                operational: OperationalConfig | None, kw: dict[str, object]) -> SessionConfig:
        op = operational or OperationalConfig()
        offer = _digest_offer(digests)
        op = replace(op, header_digest=offer, data_digest=offer)
        opts: dict[str, object] = dict(self.defaults)
        opts.update(kw)
        if queue_depth is not None:
            opts["queue_depth"] = queue_depth
        return SessionConfig(initiator_name=self.initiator_name, portal=portal,
                             target_name=target_name, discovery=discovery,
                             initiator_alias=self.alias, chap=chap, operational=op,
                             **opts)  # type: ignore[arg-type]

    def _open(self, config: SessionConfig, lun: int) -> IscsiSession:
        session = Session(config, now=self.stack.loop.time())
        handle = IscsiSession(self.stack, session, lun)
        try:
            handle.wait_ready()
        except BaseException:
            handle.close()
            raise
        self.sessions.append(handle)
        return handle

    def discover(self, host: str, port: int = DEFAULT_PORT, *,
                 chap: ChapCredentials | None = None, digests: bool | str = False,
                 **kw: object) -> list[DiscoveredTarget]:
        """SendTargets=All in a discovery session, then logout (RFC 7143 §13.3)."""
        kw.setdefault("recovery", RecoveryPolicy(initial_deadline=10.0, deadline=10.0))
        cfg = self._config(Portal(host, port), None, discovery=True, chap=chap,
                           digests=digests, queue_depth=None, operational=None, kw=kw)
        handle = self._open(cfg, 0)
        try:
            return handle.send_targets()
        finally:
            handle.logout()
            self.sessions.remove(handle)

    def login(self, target: TargetSpec | str, lun: int | None = None, *,
              chap: ChapCredentials | None = None, digests: bool | str = False,
              queue_depth: int | None = None, operational: OperationalConfig | None = None,
              **kw: object) -> IscsiSession:
        """Log in to ``target`` (a :class:`TargetSpec`, ``iscsi://`` URL or RFC 4173
        root path); redirections are followed.  ``lun`` defaults to the spec's LUN."""
        spec = parse_target(target) if isinstance(target, str) else target
        if chap is None:
            chap = chap_from_spec(spec)
        cfg = self._config(Portal(spec.host, spec.port), spec.name, discovery=False, chap=chap,
                           digests=digests, queue_depth=queue_depth, operational=operational,
                           kw=kw)
        return self._open(cfg, spec.lun if lun is None else lun)

    def open_block_device(self, target: TargetSpec | str, lun: int | None = None,
                          **kw: object) -> BlockDevice:
        """Log in and open the LUN as a block device (its identity is recorded for
        recovery)."""
        max_transfer = kw.pop("max_transfer", None)
        handle = self.login(target, lun, **kw)  # type: ignore[arg-type]
        try:
            return handle.block_device(max_transfer=max_transfer)
        except BaseException:
            handle.logout()
            self.sessions.remove(handle)
            raise

    def report_luns(self, target: TargetSpec | str, **kw: object) -> list[int]:
        """Log in, REPORT LUNS, log out."""
        handle = self.login(target, 0, **kw)  # type: ignore[arg-type]
        try:
            return handle.report_luns()
        finally:
            handle.logout()
            self.sessions.remove(handle)

    def logout(self) -> None:
        """Log out of every open session."""
        while self.sessions:
            self.sessions.pop().logout()


__all__ = [
    "DEFAULT_IQN_PREFIX", "Initiator", "IscsiSession", "chap_from_spec",
    "default_initiator_name",
]
