"""A block device over one LUN of an iSCSI session (SBC-3).

Synchronous calls (``read``, ``readinto``, ``write``, ``flush``) run the loop until the
I/O is done, as libiscsi's sync API does over its async one.  ``submit_read`` /
``submit_write`` / ``submit_flush`` return an :class:`IoRequest` at once and call its
callback from inside the loop, so a caller (a benchmark, the NBD server) can keep many
commands in flight (the session's ``queue_depth`` and CmdSN window bound what is on
the wire; the rest waits in its queue).

Requests larger than ``max_transfer`` are split (default 2 MiB, lowered to the LUN's
MAXIMUM TRANSFER LENGTH when its Block Limits VPD page reports one, SBC-4 §6.6.4; not
MaxBurstLength, which bounds one Data-In or R2T sequence, RFC 7143 §13.13, not a
command: the target sends a longer read as several sequences and solicits a longer
write with several R2Ts, as Linux's and libiscsi's initiators expect). READ/WRITE(10)
or (16) are chosen per piece by LBA and length (LUNs over 2 TiB work). On open the
device runs TEST UNIT READY, READ CAPACITY(10) (falling back to 16), standard INQUIRY,
reads Block Limits (VPD 0xB0) when listed and records the LUN's VPD 0x80/0x83
identity, which the session checks again after every reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bootinit.iscsi.errors import IscsiError
from bootinit.iscsi.recovery import LunIdentity
from bootinit.iscsi.task import ScsiRequest, Task
from bootinit.scsi import cdb as scsi_cdb
from bootinit.scsi.capacity import Capacity
from bootinit.scsi.inquiry import BlockLimits, StandardInquiry
from bootinit.scsi.sense import ScsiError
from netstack.link.base import BytesLike

if TYPE_CHECKING:
    from bootinit.initiator import IscsiSession

DEFAULT_MAX_TRANSFER = 2 << 20


def transfer_blocks(max_transfer: int | None, block_size: int,
                    limits: BlockLimits | None) -> int:
    """Blocks per command: ``max_transfer`` bytes (None: :data:`DEFAULT_MAX_TRANSFER`),
    never more than the LUN's MAXIMUM TRANSFER LENGTH (Block Limits VPD)."""
    mt = DEFAULT_MAX_TRANSFER if max_transfer is None else max_transfer
    n = max(1, mt // block_size)
    if limits is not None and limits.max_transfer_blocks is not None:
        n = min(n, limits.max_transfer_blocks)
    return n


class ShortTransfer(IscsiError):
    """The target moved fewer bytes than asked although the status was GOOD."""


IoCallback = Callable[["IoRequest"], None]


class IoRequest:
    """One block I/O, possibly split into several SCSI commands.

    ``done`` once every part finished; ``error`` is the first failure (the other
    parts still complete).  ``buffer`` holds read data.
    """

    __slots__ = ("_left", "buffer", "callback", "done", "error", "kind", "lba", "tasks")

    def __init__(self, kind: str, lba: int, buffer: memoryview | None,
                 callback: IoCallback | None) -> None:
        self.kind = kind
        self.lba = lba
        self.buffer = buffer
        self.callback = callback
        self.tasks: list[Task] = []
        self._left = 0
        self.done = False
        self.error: BaseException | None = None

    def check(self) -> None:
        """Raise the error of a failed request."""
        if not self.done:
            raise RuntimeError("I/O request not done")
        if self.error is not None:
            raise self.error

    def _part_done(self, task: Task) -> None:
        if self.error is None:
            if task.error is not None:
                self.error = task.error
            elif task.result is not None and task.result.transferred != \
                    task.request.expected_length and task.request.direction.value != "none":
                self.error = ShortTransfer(
                    f"{self.kind} at LBA {self.lba}: {task.result.transferred} of "
                    f"{task.request.expected_length} bytes transferred")
        self._left -= 1
        if self._left == 0:
            self.done = True
            if self.callback is not None:
                self.callback(self)


class SyncBlockIO:
    """The synchronous block API over the asynchronous one, like libiscsi's sync calls over
    its async ones: each call submits, then runs the loop until its requests are done.
    Shared by :class:`BlockDevice` and :class:`bootinit.multipath.MultipathDevice`."""

    @property
    def block_size(self) -> int:
        raise NotImplementedError

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: IoCallback | None = None) -> IoRequest:
        raise NotImplementedError

    def submit_write(self, lba: int, data: BytesLike,
                     callback: IoCallback | None = None) -> IoRequest:
        raise NotImplementedError

    def submit_flush(self, callback: IoCallback | None = None) -> IoRequest:
        raise NotImplementedError

    def run_until(self, pred: Callable[[], bool], what: str) -> None:
        raise NotImplementedError

    def _check(self, lba: int, count: int) -> None:
        raise NotImplementedError

    def _read_view(self, lba: int, count: int,
                   buf: bytearray | memoryview | None) -> memoryview:
        """The byte view a read of ``count`` blocks at ``lba`` lands in (allocated when
        ``buf`` is None); refuses a range outside the LUN or a buffer too small."""
        self._check(lba, count)
        n = count * self.block_size
        view = memoryview(bytearray(n) if buf is None else buf).cast("B")
        if len(view) < n:
            raise ValueError(f"buffer of {len(view)} bytes for {count} blocks of "
                             f"{self.block_size}")
        return view

    def _blocks_of(self, nbytes: int) -> int:
        if nbytes % self.block_size:
            raise ValueError(f"{nbytes} bytes is not a multiple of the block size "
                             f"{self.block_size}")
        return nbytes // self.block_size

    def wait(self, *reqs: IoRequest) -> None:
        """Run the loop until every request is done; raise the first error."""
        self.run_until(lambda: all(r.done for r in reqs), "block I/O")
        for r in reqs:
            r.check()

    def read(self, lba: int, count: int) -> bytes:
        """Read ``count`` blocks at ``lba``."""
        buf = bytearray(count * self.block_size)
        self.wait(self.submit_read(lba, count, buf))
        return bytes(buf)

    def readinto(self, lba: int, buf: bytearray | memoryview) -> int:
        """Fill ``buf`` (a multiple of the block size) from ``lba``; returns its length."""
        n = self._blocks_of(memoryview(buf).nbytes)
        self.wait(self.submit_read(lba, n, buf))
        return n * self.block_size

    def write(self, lba: int, data: BytesLike) -> None:
        """Write ``data`` at ``lba``."""
        self.wait(self.submit_write(lba, data))

    def flush(self) -> None:
        """SYNCHRONIZE CACHE (ILLEGAL REQUEST — no cache to synchronize — is no error)."""
        req = self.submit_flush()
        self.run_until(lambda: req.done, "SYNCHRONIZE CACHE")
        if isinstance(req.error, ScsiError) and req.error.sense is not None and \
                req.error.sense.key == 0x05:
            return
        req.check()


class BlockDevice(SyncBlockIO):
    """A LUN as a block device (see module doc)."""

    def __init__(self, session: IscsiSession, lun: int = 0, *,
                 max_transfer: int | None = None, check_identity: bool = True) -> None:
        self.session = session
        self.lun = lun
        self._open_ready()
        self.inquiry: StandardInquiry = session.inquiry(lun)
        if not self.inquiry.connected:
            raise IscsiError(f"LUN {lun}: no logical unit connected "
                             f"(peripheral qualifier {self.inquiry.qualifier})")
        self.capacity_info: Capacity = session.read_capacity(lun)
        self.identity: LunIdentity = LunIdentity()
        if check_identity:
            self.identity = session.lun_identity(lun)
            session.session.register_lun_identity(lun, self.identity)
        bs = self.block_size
        self.block_limits: BlockLimits | None = session.block_limits(lun)
        self.max_transfer_blocks = transfer_blocks(max_transfer, bs, self.block_limits)

    def _open_ready(self) -> None:
        """TEST UNIT READY until GOOD (UNIT ATTENTION etc. are retried by the session)."""
        res = self.session.test_unit_ready(self.lun)
        if not res.good:
            raise res.scsi_error(0x00)

    # -------------------------------------------------------------- geometry

    @property
    def block_size(self) -> int:
        """Logical block size in bytes."""
        return self.capacity_info.block_size

    @property
    def num_blocks(self) -> int:
        """Number of logical blocks."""
        return self.capacity_info.blocks

    @property
    def capacity(self) -> int:
        """Size in bytes."""
        return self.capacity_info.size_bytes

    def _check(self, lba: int, blocks: int) -> None:
        if lba < 0 or blocks < 0 or lba + blocks > self.num_blocks:
            raise ValueError(f"blocks {lba}..{lba + blocks - 1} outside the LUN "
                             f"(0..{self.num_blocks - 1})")

    # ----------------------------------------------------------------- async

    def _start(self, req: IoRequest, parts: list[ScsiRequest]) -> IoRequest:
        req._left = len(parts)
        if not parts:
            req.done = True
            if req.callback is not None:
                req.callback(req)
            return req
        for p in parts:
            req.tasks.append(self.session.submit(p, req._part_done))
        return req

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: IoCallback | None = None) -> IoRequest:
        """Read ``count`` blocks at ``lba`` into ``buf`` (allocated when None)."""
        bs = self.block_size
        view = self._read_view(lba, count, buf)
        req = IoRequest("read", lba, view, callback)
        parts = []
        step = self.max_transfer_blocks
        for off in range(0, count, step):
            n = min(step, count - off)
            parts.append(ScsiRequest(scsi_cdb.read_cdb(lba + off, n), lun=self.lun,
                                     read_into=view[off * bs:(off + n) * bs]))
        return self._start(req, parts)

    def submit_write(self, lba: int, data: BytesLike,
                     callback: IoCallback | None = None) -> IoRequest:
        """Write ``data`` (a multiple of the block size) at ``lba``; keep it unchanged
        until the request is done (it is sent from this buffer, not copied)."""
        view = memoryview(data).cast("B")
        bs = self.block_size
        count = self._blocks_of(len(view))
        self._check(lba, count)
        req = IoRequest("write", lba, None, callback)
        parts = []
        step = self.max_transfer_blocks
        for off in range(0, count, step):
            n = min(step, count - off)
            parts.append(ScsiRequest(scsi_cdb.write_cdb(lba + off, n), lun=self.lun,
                                     write_data=view[off * bs:(off + n) * bs]))
        return self._start(req, parts)

    def submit_flush(self, callback: IoCallback | None = None) -> IoRequest:
        """SYNCHRONIZE CACHE of the whole LUN (SBC-3 §5.22)."""
        req = IoRequest("flush", 0, None, callback)
        force16 = self.num_blocks > 0xFFFFFFFF
        return self._start(req, [ScsiRequest(scsi_cdb.synchronize_cache(force16=force16),
                                             lun=self.lun)])

    def run_until(self, pred: Callable[[], bool], what: str) -> None:
        """Run the loop until ``pred()`` (the session bounds every wait)."""
        self.session.wait(pred, what)


__all__ = ["BlockDevice", "IoCallback", "IoRequest", "ShortTransfer"]
