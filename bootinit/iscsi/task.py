"""SCSI tasks of the full feature phase and the errors that end them (RFC 7143 §3.2, §4.2).

A :class:`ScsiRequest` is what a caller asks for: a CDB, a LUN and at most one data
buffer (read: a writable buffer the Data-In payload is placed into at its
BufferOffset; write: the caller's data, sent as memoryview slices).  The session
turns it into a :class:`Task`, which lives across retries (UNIT ATTENTION, BUSY) and
replays (after a connection recovery, with a new ITT and CmdSN each time) until it
is done, with a :class:`ScsiResult` or an error.

Errors (all :class:`~bootinit.iscsi.errors.IscsiError`, except SCSI status which is
:class:`bootinit.scsi.sense.ScsiError`):

* :class:`TargetProtocolError`: the target broke a rule for this task (Data-In
  offset or DataSN, an R2T outside the transfer, missing data); names field and value.
* :class:`CommandTimeout`: no status within the command timeout; the task was
  aborted (ABORT TASK, then LOGICAL UNIT RESET, RFC 7143 §11.5).
* :class:`TaskRejected`: the target rejected the command (Reject PDU, §11.17).
* :class:`TargetFailure`: SCSI Response with Response != Command Completed (§11.4.3).
* :class:`LunChangedError`: after a reconnect the LUN is not the one first opened.
* :class:`SessionFailed`: recovery gave up (overall deadline, fatal login error).
* :class:`SessionClosed`: the session was logged out before the task could run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bootinit.iscsi.errors import IscsiError, ProtocolError
from bootinit.iscsi.pdu import TaskAttr
from bootinit.scsi.sense import ScsiError, Sense, Status, decode_sense
from netstack.link.base import BytesLike


class TargetProtocolError(ProtocolError):
    """A target PDU broke a protocol rule for a task (RFC 7143 §7, §11).

    ``field`` and ``value`` name what was wrong; ``itt`` the task (or None).
    """

    def __init__(self, field: str, value: object, reason: str, itt: int | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.itt = itt
        where = f" (ITT 0x{itt:08x})" if itt is not None else ""
        super().__init__(f"target PDU field {field}={value!r}: {reason}{where}")


class CommandTimeout(IscsiError):
    """The command got no status within its timeout and was aborted (RFC 7143 §11.5)."""

    def __init__(self, opcode: int, timeout: float, how: str) -> None:
        self.opcode = opcode
        self.timeout = timeout
        self.how = how
        super().__init__(f"SCSI command 0x{opcode:02x} timed out after {timeout:g} s ({how})")


class TaskRejected(IscsiError):
    """The target answered a PDU of the task with a Reject (RFC 7143 §11.17)."""

    def __init__(self, reason: int, text: str) -> None:
        self.reason = reason
        super().__init__(f"target rejected the command: {text} (reason 0x{reason:02x})")


class TargetFailure(IscsiError):
    """SCSI Response with Response = Target Failure or another non-zero code (§11.4.3)."""

    def __init__(self, response: int, opcode: int) -> None:
        self.response = response
        super().__init__(f"SCSI command 0x{opcode:02x}: iSCSI response 0x{response:02x} "
                         "(target failure)")


class LunChangedError(IscsiError):
    """After recovery the logical unit answers with another identity (VPD 0x80/0x83)."""

    def __init__(self, lun: int, detail: str) -> None:
        self.lun = lun
        super().__init__(f"LUN {lun} is not the logical unit opened before the reconnect: "
                         f"{detail}; refusing I/O to it")


class SessionFailed(IscsiError):
    """The session is gone: recovery gave up or the login failed for good."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        self.reason = reason
        self.cause = cause
        super().__init__(reason if cause is None else f"{reason}: {cause}")


class SessionClosed(IscsiError):
    """The session was logged out (or is logging out) before the task completed."""


class Direction(Enum):
    """Data direction of a SCSI command (RFC 7143 §11.3.1 R/W bits)."""

    NONE = "none"
    READ = "read"
    WRITE = "write"


def _byte_view(buf: BytesLike | bytearray, writable: bool) -> memoryview:
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    if writable and mv.readonly:
        raise ValueError("read buffer must be writable (bytearray, memoryview of one)")
    return mv


class ScsiRequest:
    """One SCSI command to run: CDB, LUN and at most one data buffer.

    ``read_into`` receives the Data-In payload (its length is the Expected Data
    Transfer Length); ``write_data`` is sent (not copied: keep it unchanged until
    the task is done).  ``timeout``/``retries`` override the session defaults.
    ``internal`` marks the session's own commands (LUN checks during recovery).
    """

    __slots__ = ("attr", "cdb", "internal", "lun", "read_into", "retries", "timeout",
                 "write_data")

    def __init__(self, cdb: bytes, *, lun: int = 0,
                 read_into: bytearray | memoryview | None = None,
                 write_data: BytesLike | None = None, timeout: float | None = None,
                 retries: int | None = None, attr: int = TaskAttr.SIMPLE,
                 internal: bool = False) -> None:
        if not cdb:
            raise ValueError("empty CDB")
        if read_into is not None and write_data is not None:
            raise ValueError("bidirectional commands are not supported")
        self.cdb = bytes(cdb)
        self.lun = lun
        self.read_into = None if read_into is None else _byte_view(read_into, True)
        self.write_data = None if write_data is None else _byte_view(write_data, False)
        self.timeout = timeout
        self.retries = retries
        self.attr = attr
        self.internal = internal

    @property
    def direction(self) -> Direction:
        """READ, WRITE or NONE."""
        if self.read_into is not None:
            return Direction.READ
        if self.write_data is not None:
            return Direction.WRITE
        return Direction.NONE

    @property
    def expected_length(self) -> int:
        """Expected Data Transfer Length (RFC 7143 §11.3.6)."""
        if self.read_into is not None:
            return len(self.read_into)
        if self.write_data is not None:
            return len(self.write_data)
        return 0

    @property
    def opcode(self) -> int:
        """The SCSI operation code (first CDB byte)."""
        return self.cdb[0]

    def __repr__(self) -> str:
        return (f"ScsiRequest(op=0x{self.opcode:02x}, lun={self.lun}, "
                f"{self.direction.value} {self.expected_length})")


@dataclass(frozen=True, slots=True)
class ScsiResult:
    """Outcome of a completed SCSI command.

    ``transferred`` is the number of data bytes moved (Data-In received or the
    expected length for a write); ``residual`` with ``underflow``/``overflow``
    as the target reported them (RFC 7143 §11.4.5).
    """

    status: int
    sense: Sense | None = None
    raw_sense: bytes = b""
    transferred: int = 0
    residual: int = 0
    underflow: bool = False
    overflow: bool = False
    latency: float = 0.0

    @property
    def good(self) -> bool:
        """Status GOOD (or CONDITION MET)."""
        return self.status in (Status.GOOD, Status.CONDITION_MET)

    def scsi_error(self, opcode: int | None = None) -> ScsiError:
        """The :class:`ScsiError` describing a non-GOOD status."""
        return ScsiError(self.status, self.sense, opcode=opcode, raw_sense=self.raw_sense)


def make_result(status: int, raw_sense: bytes, *, transferred: int, residual: int,
                underflow: bool, overflow: bool, latency: float) -> ScsiResult:
    """Build a :class:`ScsiResult`, decoding sense data when present (SPC-4 §4.5)."""
    sense: Sense | None = None
    if raw_sense:
        try:
            sense = decode_sense(raw_sense)
        except ValueError:
            sense = None
    return ScsiResult(status, sense, raw_sense, transferred, residual, underflow, overflow,
                      latency)


class TaskState(Enum):
    """Where a task is."""

    QUEUED = "queued"  # waiting for the CmdSN window, queue depth or a connection
    ACTIVE = "active"  # sent; waiting for data/status
    ABORTING = "aborting"  # timed out; a task management function is in progress
    DONE = "done"


TaskCallback = Callable[["Task"], None]


class Task:
    """A submitted :class:`ScsiRequest` and its progress (see module doc).

    ``done`` becomes True exactly once, then ``result`` (status may be non-GOOD
    only when retries are exhausted: ``error`` is then the :class:`ScsiError`)
    or ``error`` is set and ``callback(task)`` is called.
    """

    __slots__ = (
        "_datain_ranges", "aborts", "callback", "cmdsn", "data_corrupt", "deadline",
        "error", "itt", "next_datasn", "next_r2tsn", "not_before", "r2t_outstanding",
        "received", "replays", "request", "result", "retries", "sent_at", "state",
        "submitted_at", "tag",
    )

    def __init__(self, request: ScsiRequest, callback: TaskCallback | None, now: float) -> None:
        self.request = request
        self.callback = callback
        self.state = TaskState.QUEUED
        self.itt = -1
        self.cmdsn = 0
        self.submitted_at = now
        self.sent_at = now
        self.deadline = float("inf")
        self.not_before = 0.0
        self.retries = 0
        self.replays = 0
        self.aborts = 0
        self.result: ScsiResult | None = None
        self.error: BaseException | None = None
        self.tag: object = None
        """Free for the caller (e.g. the block layer's request)."""
        self.reset_transfer()

    def reset_transfer(self) -> None:
        """Forget per-attempt transfer state (before a retry or replay)."""
        self.next_datasn = 0
        self.next_r2tsn = 0
        self.r2t_outstanding = 0
        self.received = 0
        self.data_corrupt = False
        self._datain_ranges: list[tuple[int, int]] | None = None

    @property
    def done(self) -> bool:
        """Completed (successfully or not)."""
        return self.state is TaskState.DONE

    def add_range(self, offset: int, length: int) -> bool:
        """Record Data-In ``[offset, offset+length)`` received out of order; False on overlap."""
        if self._datain_ranges is None:
            self._datain_ranges = []
        ranges = self._datain_ranges
        end = offset + length
        for a, b in ranges:
            if offset < b and a < end:
                return False
        ranges.append((offset, end))
        return True

    def check(self) -> ScsiResult:
        """The result; raises ``error`` (or the ScsiError of a non-GOOD status)."""
        if not self.done:
            raise RuntimeError("task not done")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        if not self.result.good:
            raise self.result.scsi_error(self.request.opcode)
        return self.result

    def __repr__(self) -> str:
        return f"<Task itt=0x{self.itt & 0xFFFFFFFF:08x} {self.request!r} {self.state.value}>"


__all__ = [
    "CommandTimeout", "Direction", "LunChangedError", "ScsiRequest", "ScsiResult",
    "SessionClosed", "SessionFailed", "TargetFailure", "TargetProtocolError", "Task",
    "TaskCallback", "TaskRejected", "TaskState", "make_result",
]
