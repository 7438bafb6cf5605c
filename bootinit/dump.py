"""``bootinit dump``: the crash-dump writer (what a NIC's boot/dump driver does at a panic).

A dump driver must work when the system around it is broken, so everything is made
ready while it is healthy (*arming*), and the dump itself only moves bytes::

    bootinit dump iscsi://10.77.0.1/iqn.2024-01.org.bootinit:lab/1 \\
        --netns bilab --bridge br0 --ip 10.77.0.2/24 \\
        -- -m 128 -drive file=disk.img,format=raw,if=virtio -serial file:serial.log
    bootinit dump --extract iscsi://10.77.0.1/iqn.2024-01.org.bootinit:lab/1 \\
        --netns bilab --bridge br0 --ip 10.77.0.2/24 -o vmcore.elf
    bootinit dump --info URL ...                       # the header, as text or --json

Arming (before the guest runs a single instruction):

1. the target comes from the URL, an RFC 4173 root path, or ``--ibft FILE`` (the
   boot-selected target and, without ``--ip``, the NIC's address);
2. bootinit's stack comes up on its TAP, logs in, opens the LUN and picks the dump area:
   the whole LUN, the part after ``--offset``, or MBR partition ``--partition N``;
3. every buffer is allocated: ``--depth`` I/O buffers of ``--chunk-size`` bytes, the
   header block, the hash states, the pipe QEMU will write the dump into (``F_SETPIPE_SZ``
   1 MiB), the callbacks of every buffer;
4. QEMU starts paused (``-S``) with the arguments after ``--`` plus ``-device pvpanic``,
   ``-action panic=pause`` (without it QEMU 7.2 powers off on a panic and nothing can be
   dumped), ``-display none`` unless a display is given, and a QMP socket; or, with
   ``--qmp SOCKET``, bootinit attaches to a QEMU that runs already (started with
   ``-device pvpanic -action panic=pause``; one already ``guest-panicked`` is dumped
   at once);
5. over QMP: the dump format must be supported (``query-dump-guest-memory-capability``),
   the dump of the guest's RAM (``query-memory-size-summary``) must fit in the area —
   otherwise a clear error, before the guest runs and before anything is written — and
   the pipe's write end is handed to QEMU (``getfd`` over SCM_RIGHTS); then ``cont``.

While armed, one loop watches the QMP socket, QEMU's pidfd and the iSCSI session (NOPs
keep it alive; a dropped connection is recovered by the session layer; a session that
failed for good is logged in again from the configuration alone at the panic).

On ``GUEST_PANICKED``: ``dump-guest-memory`` (``paging=false``, ``protocol:
"fd:bootinit-dump"``, ``detach=true``, ``--format elf`` (default) or ``kdump-zlib``,
``kdump-lzo``, ``kdump-snappy``); the exact size QEMU will dump (``query-dump``) is
checked against the area before the first write; then a ``writing`` header, the dump
stream read from the pipe's non-blocking read end straight into the preallocated
buffers, each full buffer written to the LUN as it fills (``--depth`` writes in flight),
the final partial block zero-padded, SYNCHRONIZE CACHE, the ``complete`` header (size,
SHA-256, times; :mod:`bootinit.dumpfmt`), SYNCHRONIZE CACHE again, and a read-back of
header and data whose SHA-256 must match. Progress and MB/s go to stderr. With
``--also-file FILE`` QEMU then writes the same paused state to a local file, which must
be byte-identical to what went to the LUN. A guest bootinit started is then quit.

The guest's own disk is whatever the QEMU arguments say (a local file in the tests);
bootinit only provides the dump target.

The streaming path (:class:`StreamWriter`) allocates nothing per block: buffers, views,
callbacks and hash states exist before the panic, and the hash is updated over whole
buffers. ``kdump-*`` formats come out of QEMU 7.2 in makedumpfile's *flattened*
format (it is written through a pipe); ``makedumpfile -R`` turns an extracted one into
a regular kdump file for ``crash``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from types import FrameType
from typing import IO, Any

from bootinit import dumpfmt
from bootinit.dumpfmt import DumpFormat, DumpHeader, DumpState
from bootinit.iscsi.session import SessionState
from bootinit.nbd_server import AsyncBlockDevice, IoResult
from firmware_tables.target import TargetSpec
from netstack.netns import stop_process

MiB = 1 << 20
DEFAULT_CHUNK = 1 * MiB
DEFAULT_DEPTH = 8
FD_NAME = "bootinit-dump"
PIPE_SIZE = 1 * MiB
#: room for ELF headers and notes beyond the memory QEMU reports (1187 bytes for a
#: 1-vCPU 128 MiB guest; generous for many vCPUs)
ELF_SLACK = 1 * MiB
#: ROMs and other non-RAM blocks QEMU dumps beyond ``base-memory`` (256 KiB on pc)
ROM_SLACK = 4 * MiB
QMP_TIMEOUT = 30.0

Wait = Callable[[Callable[[], bool], str], None]
Report = Callable[[str], None]


class DumpError(Exception):
    """The dump could not be armed, taken, written or verified; the message says why."""


class DumpTooLarge(DumpError):
    """The dump does not fit in the dump area (raised before anything is written)."""


class VerifyError(DumpError):
    """What was read back differs from what was written."""


# --------------------------------------------------------------------------- the area


@dataclass(frozen=True)
class DumpArea:
    """Where on the LUN the header and the dump go (in blocks of ``block_size``)."""

    start_lba: int
    blocks: int
    block_size: int

    @property
    def offset(self) -> int:
        """Byte offset of the header on the LUN."""
        return self.start_lba * self.block_size

    @property
    def size(self) -> int:
        """Bytes of header + dump room."""
        return self.blocks * self.block_size

    @property
    def data_offset(self) -> int:
        """Bytes from the area's start to the dump's first byte."""
        return dumpfmt.data_offset_for(self.block_size)

    @property
    def header_blocks(self) -> int:
        """Blocks the header takes (the dump starts after them)."""
        return self.data_offset // self.block_size

    @property
    def data_lba(self) -> int:
        """LBA of the dump's first byte."""
        return self.start_lba + self.header_blocks

    @property
    def capacity(self) -> int:
        """The largest dump the area holds."""
        return max(0, self.size - self.data_offset)


@dataclass(frozen=True)
class MbrPartition:
    """One primary entry of an MBR partition table (in 512-byte sectors)."""

    number: int
    type: int
    start: int
    sectors: int


def parse_mbr(sector0: bytes | bytearray | memoryview) -> list[MbrPartition]:
    """The used primary partitions of an MBR (DumpError when there is no MBR)."""
    data = bytes(sector0[:512])
    if len(data) < 512 or data[510:512] != b"\x55\xaa":
        raise DumpError("no MBR partition table on the LUN (no 55 aa signature)")
    parts = []
    for i in range(4):
        ptype, start, sectors = struct.unpack_from("<4xB3xII", data, 446 + 16 * i)
        if ptype != 0 and sectors != 0:
            parts.append(MbrPartition(i + 1, ptype, start, sectors))
    return parts


def dump_area(num_blocks: int, block_size: int, *, offset: int = 0,
              partition: int | None = None,
              sector0: bytes | bytearray | memoryview | None = None) -> DumpArea:
    """The area: the whole LUN from ``offset`` (bytes), or MBR partition ``partition``
    (1-4; ``sector0`` is the LUN's first 512 bytes)."""
    if partition is not None:
        if offset:
            raise DumpError("give --offset or --partition, not both")
        if sector0 is None:
            raise DumpError("--partition needs the LUN's first sector")
        found = {p.number: p for p in parse_mbr(sector0)}
        if partition not in found:
            raise DumpError(f"no partition {partition} on the LUN (MBR has "
                            f"{', '.join(str(n) for n in sorted(found)) or 'none'})")
        p = found[partition]
        start, size = p.start * 512, p.sectors * 512
        if start % block_size or size % block_size:
            raise DumpError(f"partition {partition} at {start} + {size} bytes is not "
                            f"aligned to the LUN's {block_size}-byte blocks")
        if start + size > num_blocks * block_size:
            raise DumpError(f"partition {partition} ends at byte {start + size}, beyond "
                            f"the LUN's {num_blocks * block_size}")
        area = DumpArea(start // block_size, size // block_size, block_size)
    else:
        if offset < 0 or offset % block_size:
            raise DumpError(f"--offset {offset}: not a multiple of the LUN's "
                            f"{block_size}-byte blocks")
        if offset >= num_blocks * block_size:
            raise DumpError(f"--offset {offset}: at or beyond the LUN's end "
                            f"({num_blocks * block_size} bytes)")
        area = DumpArea(offset // block_size, num_blocks - offset // block_size, block_size)
    if area.size <= area.data_offset:
        raise DumpError(f"the dump area ({area.size} bytes) has no room after the "
                        f"{area.data_offset}-byte header")
    return area


def dump_size_bound(fmt: DumpFormat, memory: int) -> int:
    """The most bytes QEMU writes for ``memory`` bytes of guest memory blocks."""
    if fmt is DumpFormat.ELF:
        return memory + ELF_SLACK
    # kdump (flattened): compressed pages (never larger than 4 KiB) + a 24-byte page
    # descriptor and 16-byte flat header each, two bitmaps, headers
    return memory + memory // 64 + ELF_SLACK


# --------------------------------------------------------------------------- the writer


def _flush_ok(exc: BaseException | None) -> bool:
    """SYNCHRONIZE CACHE worked, or was refused as ILLEGAL REQUEST (no cache)."""
    if exc is None:
        return True
    sense = getattr(exc, "sense", None)
    return getattr(sense, "key", None) == 0x05


def _now_ns() -> int:
    return time.time_ns()


class StreamWriter:
    """Streams one dump into a :class:`DumpArea` through an asynchronous block device.

    All memory is taken in ``__init__`` (arming): ``depth`` buffers of ``chunk_size``
    bytes, their views and completion callbacks, the header block, two SHA-256 states.
    Then::

        w.begin(fmt, expected_size)          # fit check, 'writing' header
        view = w.buffer()                    # free space of the current buffer, or None
        n = source.readinto(view); w.commit(n)   # a full buffer is written at once
        w.finish()                           # tail, SYNCHRONIZE CACHE, 'complete' header
        w.verify()                           # read back header and data, compare SHA-256

    Buffers are used in ring order and written to consecutive LBAs; completions may
    come in any order, a buffer is reused once its write is done. ``wait(pred, what)``
    runs the caller's loop until ``pred()``; ``on_space`` is called when a buffer frees.
    """

    def __init__(self, device: AsyncBlockDevice, area: DumpArea, wait: Wait, *,
                 chunk_size: int = DEFAULT_CHUNK, depth: int = DEFAULT_DEPTH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        bs = area.block_size
        if device.block_size != bs:
            raise DumpError(f"device block size {device.block_size} != area's {bs}")
        if chunk_size < bs or chunk_size % bs:
            raise DumpError(f"chunk size {chunk_size}: a positive multiple of the "
                            f"{bs}-byte block")
        if depth < 1:
            raise DumpError(f"depth {depth}: at least 1")
        if (area.start_lba + area.blocks) * bs > device.capacity:
            raise DumpError("the dump area reaches beyond the LUN")
        self.device = device
        self.area = area
        self.wait = wait
        self.clock = clock
        self.chunk_size = chunk_size
        self.depth = depth
        self.on_space: Callable[[], None] | None = None
        self._pool = bytearray(chunk_size * depth)
        pool = memoryview(self._pool)
        self._slots = [pool[i * chunk_size:(i + 1) * chunk_size] for i in range(depth)]
        self._busy = [False] * depth
        self._lens = [0] * depth
        self._write_cbs = [functools.partial(self._written, i) for i in range(depth)]
        self._read_cbs = [functools.partial(self._read_done, i) for i in range(depth)]
        self._read_ok = [False] * depth
        self._header = bytearray(area.data_offset)
        self._check = bytearray(area.data_offset)
        self._zeros = memoryview(bytes(bs))
        self._hash = hashlib.sha256()
        self._vhash = hashlib.sha256()
        self._cur = 0
        self._fill = 0
        self._next_lba = area.data_lba
        self._inflight = 0
        self._aux_done = False
        self._aux_error: BaseException | None = None
        self.error: BaseException | None = None
        self.format = DumpFormat.ELF
        self.meta: dict[str, Any] = {}
        self.state = "armed"
        self.bytes_in = 0
        self.bytes_written = 0
        self.writes = 0
        self.max_inflight = 0
        self.started = 0.0
        self.ended = 0.0
        self.header: DumpHeader | None = None
        self.verify_seconds = 0.0

    # ---------------------------------------------------------------- geometry

    @property
    def capacity(self) -> int:
        """The largest dump the area holds."""
        return self.area.capacity

    @property
    def inflight(self) -> int:
        """Writes submitted and not yet completed."""
        return self._inflight

    @property
    def seconds(self) -> float:
        """From :meth:`begin` to the last data write's completion."""
        end = self.ended or self.clock()
        return max(end - self.started, 1e-9) if self.started else 0.0

    @property
    def mb_per_s(self) -> float:
        """Dump bytes per second (10**6) of the streaming phase."""
        s = self.seconds
        return self.bytes_in / s / 1e6 if s else 0.0

    def check_fits(self, size: int) -> None:
        """:class:`DumpTooLarge` unless ``size`` bytes fit after the header."""
        if size > self.capacity:
            a = self.area
            raise DumpTooLarge(
                f"the dump ({size} bytes, {size / MiB:.1f} MiB) does not fit in the dump "
                f"area ({a.size} bytes at byte {a.offset}: {self.capacity} after the "
                f"{a.data_offset}-byte header); nothing was written")

    def rebind(self, device: AsyncBlockDevice) -> None:
        """Use another device for the same LUN (after logging in again)."""
        if self.state != "armed":
            raise DumpError("cannot change the device while a dump is being written")
        if device.block_size != self.area.block_size or device.capacity < \
                (self.area.start_lba + self.area.blocks) * self.area.block_size:
            raise DumpError("the LUN changed geometry since arming")
        self.device = device

    # ------------------------------------------------------------------ start

    def _header_fields(self, state: DumpState) -> DumpHeader:
        m = self.meta
        return DumpHeader(
            state=state, format=self.format, data_offset=self.area.data_offset,
            data_size=self.bytes_in if state is DumpState.COMPLETE else 0,
            area_size=self.area.size, block_size=self.area.block_size,
            checksum=self._hash.digest() if state is DumpState.COMPLETE
            else bytes(dumpfmt.CHECKSUM_SIZE),
            panic_time_ns=int(m.get("panic_time_ns", 0)),
            written_time_ns=_now_ns() if state is DumpState.COMPLETE else 0,
            guest_memory=int(m.get("guest_memory", 0)),
            write_ms=int(self.seconds * 1000) if state is DumpState.COMPLETE else 0,
            note=str(m.get("note", "")))

    def _aux(self, req: IoResult) -> None:
        self._aux_error = req.error
        self._aux_done = True

    def _run_aux(self, submit: Callable[[], object], what: str) -> BaseException | None:
        self._aux_done = False
        self._aux_error = None
        submit()
        self.wait(lambda: self._aux_done, what)
        return self._aux_error

    def _write_header(self, state: DumpState) -> DumpHeader:
        h = self._header_fields(state)
        dumpfmt.encode_into(self._header, h)
        err = self._run_aux(lambda: self.device.submit_write(
            self.area.start_lba, self._header, self._aux), f"dump header ({state.name})")
        if err is not None:
            raise DumpError(f"writing the dump header: {err}") from err
        return h

    def begin(self, fmt: DumpFormat, expected_size: int, **meta: Any) -> None:
        """Check that ``expected_size`` fits (nothing written otherwise), write the
        ``writing`` header, start the clock. ``meta``: ``panic_time_ns``,
        ``guest_memory``, ``note`` for the header."""
        if self.state != "armed":
            raise DumpError(f"begin: the writer is {self.state}")
        self.check_fits(expected_size)
        self.format = fmt
        self.meta = meta
        self._write_header(DumpState.WRITING)
        self.state = "streaming"
        self.started = self.clock()

    # -------------------------------------------------------------- streaming

    def buffer(self) -> memoryview | None:
        """Free space in the current buffer, or None while it is still being written."""
        if self._busy[self._cur]:
            return None
        return self._slots[self._cur][self._fill:]

    def commit(self, n: int) -> None:
        """``n`` bytes were put into :meth:`buffer`; a full buffer is written now."""
        if n <= 0:
            return
        self.bytes_in += n
        if self.bytes_in > self.capacity:
            self.error = DumpTooLarge(
                f"the dump grew past the area's {self.capacity} bytes; the header "
                f"stays 'writing'")
            raise self.error
        self._fill += n
        if self._fill == self.chunk_size:
            self._submit(self._slots[self._cur], self._slots[self._cur])

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Copy as much of ``data`` as the free buffers take; returns the byte count."""
        view = memoryview(data)
        taken = 0
        while taken < len(view):
            buf = self.buffer()
            if buf is None:
                break
            n = min(len(buf), len(view) - taken)
            buf[:n] = view[taken:taken + n]
            taken += n
            self.commit(n)
        return taken

    def _submit(self, data: memoryview, payload: memoryview) -> None:
        i = self._cur
        self._hash.update(data)
        self._busy[i] = True
        self._lens[i] = len(data)
        self._inflight += 1
        if self._inflight > self.max_inflight:
            self.max_inflight = self._inflight
        self.writes += 1
        lba = self._next_lba
        self._next_lba += len(payload) // self.area.block_size
        self._cur = (i + 1) % self.depth
        self._fill = 0
        self.device.submit_write(lba, payload, self._write_cbs[i])

    def _written(self, i: int, req: IoResult) -> None:
        self._busy[i] = False
        self._inflight -= 1
        if req.error is not None and self.error is None:
            self.error = req.error
        self.bytes_written += self._lens[i]
        cb = self.on_space
        if cb is not None:
            cb()

    def idle(self) -> bool:
        """No write in flight."""
        return self._inflight == 0

    # ----------------------------------------------------------------- finish

    def finish(self) -> DumpHeader:
        """The stream ended: write the tail (zero-padded to a block), wait for every
        write, SYNCHRONIZE CACHE, write the ``complete`` header, SYNCHRONIZE CACHE."""
        if self.state != "streaming":
            raise DumpError(f"finish: the writer is {self.state}")
        if self._fill:
            i, fill, bs = self._cur, self._fill, self.area.block_size
            self.wait(lambda: not self._busy[i] or self.error is not None, "a dump buffer")
            padded = -(-fill // bs) * bs
            slot = self._slots[i]
            slot[fill:padded] = self._zeros[:padded - fill]
            self._submit(slot[:fill], slot[:padded])
        self.wait(lambda: self._inflight == 0, "the dump writes")
        self.ended = self.clock()
        if self.error is not None:
            raise DumpError(f"writing the dump: {self.error}") from self.error
        self.flush()
        self.header = self._write_header(DumpState.COMPLETE)
        self.flush()
        self.state = "complete"
        return self.header

    def flush(self) -> None:
        """SYNCHRONIZE CACHE (a LUN without a cache may refuse it: fine)."""
        err = self._run_aux(lambda: self.device.submit_flush(self._aux), "SYNCHRONIZE CACHE")
        if not _flush_ok(err):
            raise DumpError(f"SYNCHRONIZE CACHE: {err}") from err

    # ----------------------------------------------------------------- verify

    def _read_done(self, i: int, req: IoResult) -> None:
        self._read_ok[i] = True
        if req.error is not None and self.error is None:
            self.error = req.error

    def read_back(self, lba: int, nbytes: int, consume: Callable[[memoryview], None]) -> None:
        """Read ``nbytes`` from ``lba`` through the buffers (``depth`` reads in flight)
        and hand them to ``consume`` in order (the views are reused afterwards)."""
        bs = self.area.block_size
        chunk_blocks = self.chunk_size // bs
        total = -(-nbytes // bs)
        issued = 0
        blocks = [0] * self.depth
        self.error = None

        def issue(i: int) -> None:
            nonlocal issued
            n = min(chunk_blocks, total - issued)
            blocks[i] = n
            if n <= 0:
                return
            self._read_ok[i] = False
            self.device.submit_read(lba + issued, n, self._slots[i], self._read_cbs[i])
            issued += n

        for i in range(self.depth):
            issue(i)
        left = nbytes
        cur = 0
        while left > 0:
            i = cur
            self.wait(functools.partial(self._read_ok.__getitem__, i),
                      "reading the dump back")
            if self.error is not None:
                raise DumpError(f"reading the dump back: {self.error}") from self.error
            n = min(blocks[i] * bs, left)
            consume(self._slots[i] if n == self.chunk_size else self._slots[i][:n])
            left -= n
            issue(i)
            cur = (cur + 1) % self.depth
        self.wait(lambda: all(self._read_ok[j] or blocks[j] == 0 for j in range(self.depth)),
                  "the last reads")

    def verify(self) -> None:
        """Read the header and the dump back; :class:`VerifyError` on any difference."""
        if self.state != "complete" or self.header is None:
            raise DumpError("verify: no complete dump written")
        t0 = self.clock()
        err = self._run_aux(lambda: self.device.submit_read(
            self.area.start_lba, self.area.header_blocks, self._check, self._aux),
            "reading the header back")
        if err is not None:
            raise DumpError(f"reading the header back: {err}") from err
        if self._check != self._header:
            raise VerifyError("the dump header read back differs from the one written")
        self.read_back(self.area.data_lba, self.header.data_size, self._vhash.update)
        got = self._vhash.digest()
        if got != self.header.checksum:
            raise VerifyError(f"the dump read back has SHA-256 {got.hex()}, written "
                              f"{self.header.checksum.hex()}")
        self.verify_seconds = max(self.clock() - t0, 1e-9)
        self.state = "verified"


# --------------------------------------------------------------------------- the source


class FdSource:
    """Reads a non-blocking descriptor (the dump pipe) into a :class:`StreamWriter` from
    inside the loop; stops reading while no buffer is free, resumes when one frees."""

    def __init__(self, loop: Any, fd: int, writer: StreamWriter) -> None:
        self.loop = loop
        self.fd = fd
        self.writer = writer
        self._file = io.FileIO(fd, "rb", closefd=False)
        self.eof = False
        self.reading = False
        self.reads = 0
        self.stalls = 0

    def start(self) -> None:
        """Watch the descriptor."""
        self.writer.on_space = self._resume
        self._watch()

    def _watch(self) -> None:
        if not self.reading and not self.eof:
            self.reading = True
            self.loop.add_reader(self.fd, self._on_readable)

    def stop(self) -> None:
        """Stop watching."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        self.writer.on_space = None

    def _resume(self) -> None:
        if not self.reading and not self.eof:
            self._watch()

    def _on_readable(self) -> None:
        w = self.writer
        while True:
            buf = w.buffer()
            if buf is None:
                self.stalls += 1
                self.reading = False
                self.loop.remove_reader(self.fd)
                return
            n = self._file.readinto(buf)
            if n is None:
                return
            if n == 0:
                self.eof = True
                self.stop()
                return
            self.reads += 1
            w.commit(n)


def make_pipe() -> tuple[int, int]:
    """A pipe (read end non-blocking) sized ``PIPE_SIZE`` where the kernel allows."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(r, False)
    return r, w


# --------------------------------------------------------------------------- QEMU


def guest_argv(user: Sequence[str], qmp_path: Path) -> tuple[list[str], bool]:
    """The QEMU command line: ``user`` (an optional binary first, then arguments) plus
    pvpanic, ``-action panic=pause``, ``-display none``, ``-S`` and the QMP socket.
    Returns (argv, whether bootinit added ``-S`` and so must ``cont``)."""
    args = list(user)
    binary = "qemu-system-x86_64"
    if args and not args[0].startswith("-"):
        binary = args.pop(0)
    pairs = list(zip(args, [*args[1:], ""], strict=True))
    for a, b in pairs:
        if a == "-action" and b.startswith("panic=") and b != "panic=pause":
            raise DumpError(f"QEMU argument '-action {b}': the dump needs panic=pause")
    extra: list[str] = []
    if not any("pvpanic" in a for a in args):
        extra += ["-device", "pvpanic"]
    if ("-action", "panic=pause") not in pairs:
        extra += ["-action", "panic=pause"]
    if not any(a in ("-display", "-nographic") for a in args):
        extra += ["-display", "none"]
    added_s = "-S" not in args
    if added_s:
        extra.append("-S")
    extra += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
    return [binary, *args, *extra], added_s


class Guest:
    """A QEMU process bootinit started (stopped by its PID only)."""

    def __init__(self, argv: Sequence[str], workdir: Path) -> None:
        self.argv = list(argv)
        self.log_path = workdir / "qemu.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None

    def start(self) -> None:
        """Start QEMU (stdin closed, output to ``qemu.log``)."""
        if shutil.which(self.argv[0]) is None:
            raise DumpError(f"{self.argv[0]} not found (apt-get install qemu-system-x86)")
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            except OSError as e:
                raise DumpError(f"cannot start {self.argv[0]}: {e}") from e
        with contextlib.suppress(OSError, AttributeError):
            self.pidfd = os.pidfd_open(self.proc.pid)

    @property
    def pid(self) -> int | None:
        """QEMU's PID."""
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> int | None:
        """Exit status, or None while it runs."""
        return self.proc.poll() if self.proc is not None else None

    def log_tail(self, lines: int = 8) -> str:
        """The end of QEMU's own output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``grace`` seconds; the exit status."""
        p = self.proc
        if p is None:
            return None
        stop_process(p, grace)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return p.returncode


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DumpSettings:
    """What ``bootinit dump`` was asked to do (see :func:`add_parser`)."""

    format: DumpFormat = DumpFormat.ELF
    offset: int = 0
    partition: int | None = None
    chunk_size: int = DEFAULT_CHUNK
    depth: int = DEFAULT_DEPTH
    verify: bool = True
    qemu_args: tuple[str, ...] = ()
    attach_qmp: str | None = None
    quit_guest: bool = True
    also_file: str | None = None
    wait_timeout: float | None = None
    dump_timeout: float = 3600.0
    progress_interval: float = 1.0
    trace_alloc: bool = False


@dataclass
class DumpResult:
    """What happened (the CLI prints it; ``--json`` as JSON)."""

    panicked: bool = False
    guest_status: int | None = None
    header: DumpHeader | None = None
    area: DumpArea | None = None
    seconds: float = 0.0
    mb_per_s: float = 0.0
    memory_mb_per_s: float = 0.0
    also_file_mb_per_s: float | None = None
    verify_mb_per_s: float | None = None
    verified: bool = False
    writes: int = 0
    max_inflight: int = 0
    stalls: int = 0
    relogin: bool = False
    also_file_identical: bool | None = None
    panic_to_done: float = 0.0
    alloc_peak: int | None = None
    alloc_blocks: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"panicked": self.panicked, "guest_status": self.guest_status,
                "header": self.header.as_dict() if self.header else None,
                "area": {"offset": self.area.offset, "size": self.area.size,
                         "block_size": self.area.block_size} if self.area else None,
                "seconds": round(self.seconds, 4), "mb_per_s": round(self.mb_per_s, 2),
                "memory_mb_per_s": round(self.memory_mb_per_s, 2),
                "also_file_mb_per_s": (round(self.also_file_mb_per_s, 2)
                                       if self.also_file_mb_per_s is not None else None),
                "verify_mb_per_s": (round(self.verify_mb_per_s, 2)
                                    if self.verify_mb_per_s is not None else None),
                "verified": self.verified, "writes": self.writes,
                "max_inflight": self.max_inflight, "stalls": self.stalls,
                "relogin": self.relogin, "also_file_identical": self.also_file_identical,
                "panic_to_done_seconds": round(self.panic_to_done, 3),
                "alloc_peak_bytes": self.alloc_peak, "alloc_blocks": self.alloc_blocks}


# --------------------------------------------------------------------------- the run


class _Terminated(Exception):
    pass


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (so the guest and the session are cleaned up)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Dumper:
    """Arm, wait for the panic, dump, verify (see the module doc).

    ``ctx`` is a :class:`bootinit.commands.Context` (loop, stack, initiator);
    ``login()`` logs in from the configuration and returns (session, device) — called
    at arming and again at the panic if the session failed for good.
    """

    def __init__(self, ctx: Any, login: Callable[[], tuple[Any, Any]],
                 settings: DumpSettings, report: Report) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.login = login
        self.s = settings
        self.report = report
        self.session: Any = None
        self.device: Any = None
        self.writer: StreamWriter | None = None
        self.area: DumpArea | None = None
        self.qmp: Any = None
        self.guest: Guest | None = None
        self.result = DumpResult()
        self._pipe_r: int | None = None
        self._pipe_w: int | None = None
        self._workdir: Path | None = None
        self._panic: dict[str, Any] | None = None
        self._dump_done: dict[str, Any] | None = None
        self._exited = False
        self._guest_memory = 0
        self._qemu_version = ""

    # ------------------------------------------------------------------ helpers

    def _pump(self, t: float) -> None:
        if self.guest is not None and self.guest.poll() is not None:
            raise DumpError(self._exited_text())
        self.loop.run_once(min(t, 0.05))

    def _exited_text(self) -> str:
        assert self.guest is not None
        tail = self.guest.log_tail()
        return f"QEMU exited with status {self.guest.poll()}" + (f": {tail}" if tail else "")

    def _wait(self, pred: Callable[[], bool], what: str) -> None:
        self.session.wait(pred, what)

    def _run_until(self, pred: Callable[[], bool], timeout: float | None, what: str) -> None:
        end = None if timeout is None else self.loop.time() + timeout
        while not pred():
            left = None if end is None else end - self.loop.time()
            if left is not None and left <= 0:
                raise DumpError(f"timed out after {timeout:g} s waiting for {what}")
            self.loop.run_once(1.0 if left is None else min(left, 1.0))

    def _on_qmp(self) -> None:
        from qemu.qmp import QmpError

        try:
            events = self.qmp.poll()
        except QmpError:
            self.loop.remove_reader(self.qmp.fileno())
            self._exited = True
            return
        for ev in events:
            if ev.get("event") == "GUEST_PANICKED" and self._panic is None:
                self._panic = ev
            elif ev.get("event") == "DUMP_COMPLETED":
                self._dump_done = ev
            elif ev.get("event") == "SHUTDOWN" and self._panic is None:
                self._exited = True

    def _on_guest_exit(self) -> None:
        assert self.guest is not None and self.guest.pidfd is not None
        self.loop.remove_reader(self.guest.pidfd)
        self._exited = True

    # ------------------------------------------------------------------ arming

    def arm(self) -> None:
        """Log in, pick the area, allocate, start or attach to QEMU, check, hand over
        the pipe, let the guest run."""
        from qemu.qmp import Qmp, QmpError

        s = self.s
        self.session, self.device = self.login()
        dev = self.device
        sector0 = None
        if s.partition is not None:
            sector0 = bytearray(max(512, dev.block_size))
            dev.readinto(0, memoryview(sector0)[:dev.block_size])
        self.area = dump_area(dev.num_blocks, dev.block_size, offset=s.offset,
                              partition=s.partition, sector0=sector0)
        self.result.area = self.area
        self.writer = StreamWriter(dev, self.area, self._wait, chunk_size=s.chunk_size,
                                   depth=s.depth, clock=self.loop.time)
        self._pipe_r, self._pipe_w = make_pipe()
        added_s = False
        try:
            if s.attach_qmp is not None:
                qmp_path = s.attach_qmp
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="bootinit-dump-"))
                qmp_path = str(self._workdir / "qmp.sock")
                argv, added_s = guest_argv(s.qemu_args, Path(qmp_path))
                self.guest = Guest(argv, self._workdir)
                self.guest.start()
            self.qmp = Qmp.connect(qmp_path, timeout=QMP_TIMEOUT, pump=self._pump)
            self._qemu_version = "{major}.{minor}.{micro}".format(
                **self.qmp.greeting.get("QMP", {}).get("version", {}).get(
                    "qemu", {"major": 0, "minor": 0, "micro": 0}))
            caps = self.qmp.execute("query-dump-guest-memory-capability")
            if s.format.qmp_name not in caps.get("formats", []):
                raise DumpError(f"this QEMU cannot dump in {s.format.qmp_name} format "
                                f"(it offers {', '.join(caps.get('formats', []))})")
            mem = self.qmp.execute("query-memory-size-summary")
            self._guest_memory = int(mem.get("base-memory", 0)) + \
                int(mem.get("plugged-memory", 0) or 0)
            bound = dump_size_bound(s.format, self._guest_memory + ROM_SLACK)
            if bound > self.writer.capacity:
                raise DumpTooLarge(
                    f"a {s.format.qmp_name} dump of this guest ({self._guest_memory >> 20} "
                    f"MiB of RAM) needs up to {bound} bytes; the dump area has room for "
                    f"{self.writer.capacity} (area {self.area.size} bytes at byte "
                    f"{self.area.offset}): give a larger LUN or partition; nothing was "
                    f"written")
            self.qmp.getfd(self._pipe_w, FD_NAME)
        except QmpError as e:
            if self.guest is not None and self.guest.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.guest.proc.wait(1)
                if self.guest.poll() is not None:
                    raise DumpError(self._exited_text()) from e
            raise DumpError(f"QEMU: {e}") from e
        os.close(self._pipe_w)
        self._pipe_w = None
        self.loop.add_reader(self.qmp.fileno(), self._on_qmp)
        if self.guest is not None and self.guest.pidfd is not None:
            self.loop.add_reader(self.guest.pidfd, self._on_guest_exit)
        status = self.qmp.execute("query-status")
        if status.get("status") == "guest-panicked":
            self._panic = {"event": "GUEST_PANICKED", "data": {"action": "pause"},
                           "timestamp": None}
        a = self.area
        self.report(f"armed: dump area {a.size} bytes at byte {a.offset} of the LUN "
                    f"({a.block_size}-byte blocks), room for {self.writer.capacity} bytes; "
                    f"guest RAM {self._guest_memory >> 20} MiB ({s.format.qmp_name}; the "
                    f"exact size is checked at the panic); {s.depth} buffers of "
                    f"{s.chunk_size >> 10} KiB; QEMU {self._qemu_version}"
                    + (f" pid {self.guest.pid}" if self.guest is not None else ""))
        if self.guest is not None and added_s:
            self.qmp.execute("cont")

    # ------------------------------------------------------------------ waiting

    def wait_for_panic(self) -> bool:
        """Run the loop until the guest panics (True) or QEMU goes away (False)."""
        t0 = self.loop.time()
        self._run_until(lambda: self._panic is not None or self._exited, self.s.wait_timeout,
                        "the guest to panic")
        if self._panic is None:
            # a panic event may be in the socket still
            with contextlib.suppress(Exception):
                self._on_qmp()
        if self._panic is None:
            if self.guest is not None and self.guest.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.guest.proc.wait(5)
                self.result.guest_status = self.guest.poll()
            return False
        data = self._panic.get("data", {})
        self.report(f"guest panicked ({json.dumps(data, sort_keys=True)}) after "
                    f"{self.loop.time() - t0:.1f} s armed; dumping")
        return True

    def _session_alive(self) -> bool:
        st = self.session.session.state
        return st not in (SessionState.FAILED, SessionState.CLOSED)

    # ------------------------------------------------------------------ dumping

    def dump(self) -> DumpResult:
        """Take the dump into the area and verify it."""
        assert self.writer is not None and self.qmp is not None and self._panic is not None
        assert self._pipe_r is not None
        s, w, res = self.s, self.writer, self.result
        res.panicked = True
        t_panic = self.loop.time()
        if not self._session_alive():
            self.report("the iSCSI session has failed: logging in again")
            old = self.session
            with contextlib.suppress(Exception):
                old.close()
            sessions = getattr(getattr(self.ctx, "initiator", None), "sessions", None)
            if isinstance(sessions, list) and old in sessions:
                sessions.remove(old)
            self.session, self.device = self.login()
            w.rebind(self.device)
            res.relogin = True
        ts = self._panic.get("timestamp") or {}
        panic_ns = (int(ts.get("seconds", 0)) * 10**9 + int(ts.get("microseconds", 0)) * 1000
                    if ts else _now_ns())
        self._dump_done = None
        self.qmp.execute("dump-guest-memory", {
            "paging": False, "protocol": f"fd:{FD_NAME}", "detach": True,
            "format": s.format.qmp_name}, timeout=QMP_TIMEOUT)
        q = self.qmp.execute("query-dump")
        total = int(q.get("total", 0)) or self._guest_memory + ROM_SLACK
        bound = dump_size_bound(s.format, total)
        try:
            w.check_fits(bound)
        except DumpTooLarge:
            os.close(self._pipe_r)   # QEMU's dump fails with EPIPE
            self._pipe_r = None
            raise
        note = (f"qemu {self._qemu_version} GUEST_PANICKED "
                f"{json.dumps(self._panic.get('data', {}), sort_keys=True)}")
        w.begin(s.format, bound, panic_time_ns=panic_ns, guest_memory=self._guest_memory,
                note=note)
        src = FdSource(self.loop, self._pipe_r, w)
        expect = total if s.format is DumpFormat.ELF else None
        timer = self._progress(w, expect)
        tracer = _AllocTrace() if s.trace_alloc else None
        try:
            if tracer is not None:
                tracer.start()
            src.start()
            self._run_until(lambda: src.eof or w.error is not None, s.dump_timeout,
                            "the dump stream from QEMU")
            if tracer is not None:
                res.alloc_peak, res.alloc_blocks = tracer.stop()
        finally:
            src.stop()
            if timer is not None:
                timer.cancel()
        if w.error is not None:
            raise DumpError(f"writing the dump: {w.error}") from w.error
        self._run_until(lambda: self._dump_done is not None, 30.0, "QMP DUMP_COMPLETED")
        assert self._dump_done is not None
        result = self._dump_done.get("data", {})
        status = result.get("result", {}).get("status")
        if status != "completed" or "error" in result:
            raise DumpError(f"QEMU's dump failed: {result.get('error', status)}; the "
                            f"header on the LUN stays 'writing'")
        header = w.finish()
        res.header = header
        res.seconds, res.mb_per_s = w.seconds, w.mb_per_s
        res.writes, res.max_inflight, res.stalls = w.writes, w.max_inflight, src.stalls
        res.memory_mb_per_s = total / w.seconds / 1e6
        rate = (f"{w.mb_per_s:.1f} MB/s" if s.format is DumpFormat.ELF else
                f"{w.mb_per_s:.1f} MB/s ({res.memory_mb_per_s:.1f} MB/s of guest memory)")
        self.report(f"wrote {header.data_size} bytes ({s.format.qmp_name}) in "
                    f"{w.seconds:.2f} s: {rate}; {w.writes} writes, up to "
                    f"{w.max_inflight} in flight; SHA-256 {header.checksum.hex()}; "
                    f"cache synchronized, header committed")
        if s.verify:
            w.verify()
            res.verified = True
            res.verify_mb_per_s = header.data_size / w.verify_seconds / 1e6
            self.report(f"verified: header and {header.data_size} bytes read back, "
                        f"SHA-256 matches ({res.verify_mb_per_s:.1f} MB/s)")
        res.panic_to_done = self.loop.time() - t_panic
        if s.also_file is not None:
            self._also_file(header)
        return res

    def _progress(self, w: StreamWriter, expect: int | None) -> _Progress | None:
        if self.s.progress_interval <= 0:
            return None
        return _Progress(self.loop, self.s.progress_interval, w, expect, self.report)

    def _also_file(self, header: DumpHeader) -> None:
        """QEMU writes the same paused state to a local file; it must match."""
        assert self.s.also_file is not None
        path = Path(self.s.also_file).absolute()
        t0 = self.loop.time()
        self.qmp.execute("dump-guest-memory", {
            "paging": False, "protocol": f"file:{path}", "format": self.s.format.qmp_name},
            timeout=self.s.dump_timeout)
        secs = max(self.loop.time() - t0, 1e-9)
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(4 * MiB), b""):
                h.update(block)
                size += len(block)
        same = size == header.data_size and h.digest() == header.checksum
        self.result.also_file_identical = same
        self.result.also_file_mb_per_s = size / secs / 1e6
        if not same:
            raise VerifyError(f"QEMU's own dump to {path} ({size} bytes, SHA-256 "
                              f"{h.hexdigest()}) differs from the dump on the LUN "
                              f"({header.data_size} bytes, {header.checksum.hex()})")
        self.report(f"QEMU's dump of the same paused state to {path} is identical "
                    f"({size} bytes; QEMU wrote it at {size / secs / 1e6:.1f} MB/s)")

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """Quit or leave the guest, close descriptors, remove the work directory."""
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.qmp.fileno())
            if self.guest is not None and self.guest.poll() is None and self.s.quit_guest:
                with contextlib.suppress(Exception):
                    self.qmp.execute("quit", timeout=5)
                if self.guest.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.guest.proc.wait(5)
            elif self.guest is None and self.s.quit_guest:
                with contextlib.suppress(Exception):
                    self.qmp.execute("quit", timeout=5)
            self.qmp.close()
        if self.guest is not None:
            if self.guest.pidfd is not None:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(self.guest.pidfd)
            status = self.guest.stop()
            if self.result.guest_status is None:
                self.result.guest_status = status
        for fd in (self._pipe_r, self._pipe_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pipe_r = self._pipe_w = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)


class _Progress:
    """A progress line every ``interval`` seconds while the dump streams."""

    def __init__(self, loop: Any, interval: float, w: StreamWriter, expect: int | None,
                 report: Report) -> None:
        self.loop, self.interval, self.w, self.expect = loop, interval, w, expect
        self.report = report
        self.timer = loop.call_later(interval, self.tick)

    def tick(self) -> None:
        w = self.w
        pct = f"{min(100, 100 * w.bytes_in // self.expect):3d}% " if self.expect else ""
        self.report(f"{pct}{_mb(w.bytes_in)} read from QEMU, {_mb(w.bytes_written)} on "
                    f"the LUN, {w.mb_per_s:.1f} MB/s")
        self.timer = self.loop.call_later(self.interval, self.tick)

    def cancel(self) -> None:
        """Stop."""
        self.timer.cancel()


class _AllocTrace:
    """tracemalloc around the streaming phase (``--trace-alloc``): peak bytes and the
    number of blocks still allocated at its end, beyond what existed at its start."""

    def __init__(self) -> None:
        self._was = False
        self._base = 0
        self._blocks = 0

    def start(self) -> None:
        import tracemalloc

        self._was = tracemalloc.is_tracing()
        if not self._was:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        self._blocks = len(tracemalloc.take_snapshot().traces)

    def stop(self) -> tuple[int, int]:
        import tracemalloc

        _current, peak = tracemalloc.get_traced_memory()
        blocks = len(tracemalloc.take_snapshot().traces) - self._blocks
        if not self._was:
            tracemalloc.stop()
        return peak - self._base, blocks


# --------------------------------------------------------------------------- extract


def read_header(device: Any, area: DumpArea) -> DumpHeader:
    """The header at the area's start (:class:`dumpfmt.HeaderError` if there is none)."""
    buf = bytearray(area.data_offset)
    device.readinto(area.start_lba, buf)
    return dumpfmt.decode(buf)


def extract(device: Any, area: DumpArea, out: IO[bytes], wait: Wait, *,
            chunk_size: int = 4 * MiB, depth: int = 4,
            allow_incomplete: bool = False) -> tuple[DumpHeader, float]:
    """Copy the dump behind the header to ``out``; (header, seconds). Checks state,
    size and SHA-256 (:class:`VerifyError` on a mismatch, after writing ``out``)."""
    header = read_header(device, area)
    if not header.complete and not allow_incomplete:
        raise DumpError("the dump on the LUN is incomplete (header state 'writing': the "
                        "writer stopped before committing it)")
    if header.block_size != area.block_size:
        raise DumpError(f"the dump was written with {header.block_size}-byte blocks, the "
                        f"LUN has {area.block_size}")
    if header.area_size > area.size:
        raise DumpError(f"the header's area ({header.area_size} bytes) is larger than the "
                        f"area here ({area.size}): wrong --offset or --partition?")
    w = StreamWriter(device, area, wait, chunk_size=chunk_size, depth=depth)
    h = hashlib.sha256()

    def consume(view: memoryview) -> None:
        h.update(view)
        out.write(view)

    t0 = time.monotonic()
    size = header.data_size if header.complete else area.capacity
    w.read_back(area.start_lba + header.data_offset // area.block_size, size, consume)
    out.flush()
    secs = max(time.monotonic() - t0, 1e-9)
    if header.complete and h.digest() != header.checksum:
        raise VerifyError(f"the extracted dump has SHA-256 {h.hexdigest()}, the header "
                          f"records {header.checksum.hex()}")
    return header, secs


# --------------------------------------------------------------------------- CLI


def parse_bytes(text: str) -> int:
    """``0``, ``4096``, ``64M``, ``1G``, ``512K`` (powers of 1024)."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "kmgt" else (t, "")
    try:
        value = int(num) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"not a byte count: {text!r} (e.g. 0, 1M, 4096)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative byte count: {text!r}")
    return value


_DEFAULTS: dict[str, Any] = {
    "url": None, "ibft": None, "format": "elf", "offset": 0, "partition": None,
    "chunk_size": DEFAULT_CHUNK, "depth": DEFAULT_DEPTH, "no_verify": False, "qmp": None,
    "also_file": None, "wait_timeout": None, "dump_timeout": 3600.0, "progress": 1.0,
    "extract": False, "info": False, "output": None, "force": False, "quit_guest": False,
    "trace_alloc": False,
}


def _dump_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dump")
    g.add_argument("--ibft", metavar="FILE", help="take the target (and, without --ip, our "
                   "address) from an iBFT file instead of a URL")
    g.add_argument("--format", choices=[f.qmp_name for f in DumpFormat if
                                        f is not DumpFormat.WIN_DMP],
                   help="dump format (elf)")
    g.add_argument("--offset", type=parse_bytes, metavar="BYTES",
                   help="the dump area starts here (default 0: the whole LUN)")
    g.add_argument("--partition", type=int, metavar="N",
                   help="the dump area is MBR partition N (1-4) of the LUN")
    g.add_argument("--chunk-size", type=parse_bytes, metavar="BYTES",
                   help=f"size of each I/O buffer ({DEFAULT_CHUNK >> 20}M)")
    g.add_argument("--depth", type=int, metavar="N",
                   help=f"I/O buffers, i.e. writes in flight ({DEFAULT_DEPTH})")
    g.add_argument("--no-verify", action="store_true", help="do not read the dump back")
    g.add_argument("--qmp", metavar="SOCKET", help="attach to a running QEMU's QMP UNIX "
                   "socket (started with -device pvpanic -action panic=pause) instead of "
                   "starting one")
    g.add_argument("--quit-guest", action="store_true",
                   help="with --qmp: quit the guest after the dump (default: leave it "
                        "paused; a guest bootinit started is always quit)")
    g.add_argument("--also-file", metavar="FILE", help="after the dump, have QEMU write "
                   "the same paused state to FILE and check it is byte-identical")
    g.add_argument("--wait-timeout", type=float, metavar="S",
                   help="give up if the guest has not panicked after S seconds (never)")
    g.add_argument("--dump-timeout", type=float, metavar="S",
                   help="give up if the dump stream has not ended after S seconds (3600)")
    g.add_argument("--progress", type=float, metavar="S",
                   help="progress line every S seconds on stderr (1; 0: none)")
    g.add_argument("--trace-alloc", action="store_true",
                   help="measure Python allocations during the streaming phase (slower)")
    g.add_argument("--extract", action="store_true",
                   help="read the dump on the LUN into -o FILE (checks header and SHA-256)")
    g.add_argument("--info", action="store_true", help="print the dump header on the LUN")
    g.add_argument("-o", "--output", metavar="FILE", help="with --extract: where to")
    g.add_argument("--force", action="store_true",
                   help="with --extract: also copy an incomplete dump (the whole area)")
    for action in p._actions:
        action.default = argparse.SUPPRESS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bootinit dump``."""
    from bootinit.commands import DashDashParser, net_options

    text = "arm a crash-dump writer for a QEMU guest; extract a dump from a LUN"
    old = sub._parser_class
    sub._parser_class = DashDashParser
    try:
        p = sub.add_parser(
            "dump", parents=[net_options()], help=text, description=text,
            usage="bootinit dump [options] [URL|ROOT_PATH] [-- [QEMU] QEMU_ARGS...]\n"
                  "       bootinit dump --extract [options] URL -o FILE",
            epilog="Arguments after -- go to QEMU (a binary may come first; default "
                   "qemu-system-x86_64). Exit status: 0 dumped (and verified), 1 failed, "
                   "2 usage, 3 the guest ended without a panic, 143 SIGTERM.")
    finally:
        sub._parser_class = old
    _dump_options(p)
    p.add_argument("url", nargs="?", metavar="URL", default=argparse.SUPPRESS,
                   help="iscsi:// URL or RFC 4173 root path (or --ibft FILE)")
    p.set_defaults(func=cmd_dump)


def _fill(args: argparse.Namespace) -> None:
    for k, v in _DEFAULTS.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    if not hasattr(args, "qemu_args"):
        args.qemu_args = []


def _target(args: argparse.Namespace) -> tuple[TargetSpec, str]:
    from bootinit.commands import CliError, target_of

    if args.url and args.ibft:
        raise CliError("give a target URL or --ibft FILE, not both")
    if args.url:
        return target_of(args.url), args.url
    if not args.ibft:
        raise CliError("no target: give an iscsi:// URL, a root path or --ibft FILE")
    from firmware_tables import BootConfig, parse_ibft
    from firmware_tables.errors import FirmwareTableError
    from firmware_tables.ibft.find import read_table_file

    try:
        cfg = BootConfig.from_ibft(parse_ibft(read_table_file(args.ibft).data))
    except FirmwareTableError as e:
        raise CliError(f"--ibft {args.ibft}: {e}") from None
    targets = [t for t in cfg.targets if t.boot_selected] or list(cfg.targets)
    if not targets:
        raise CliError(f"--ibft {args.ibft}: no target in the table")
    spec = targets[0]
    if args.ip is None:
        nic = cfg.nics[spec.nic] if spec.nic < len(cfg.nics) else None
        if nic is not None and isinstance(nic.address, IPv4Interface):
            args.ip = str(nic.address)
            if args.gateway is None and nic.gateway is not None:
                args.gateway = str(nic.gateway)
    if args.initiator_name is None:
        args.initiator_name = cfg.initiator_name
    return spec, f"iBFT {args.ibft}"


def _settings(args: argparse.Namespace) -> DumpSettings:
    from bootinit.commands import CliError

    if args.qmp and args.qemu_args:
        raise CliError("--qmp attaches to a running QEMU: no QEMU arguments after '--'")
    if not args.qmp and not args.qemu_args:
        raise CliError("no guest: give QEMU's arguments after '--' or --qmp SOCKET")
    if args.partition is not None and not 1 <= args.partition <= 4:
        raise CliError(f"--partition {args.partition}: 1..4 (MBR primary partitions)")
    if args.depth < 1:
        raise CliError(f"--depth {args.depth}: at least 1")
    return DumpSettings(
        format=DumpFormat.from_name(args.format), offset=args.offset,
        partition=args.partition, chunk_size=args.chunk_size, depth=args.depth,
        verify=not args.no_verify, qemu_args=tuple(args.qemu_args), attach_qmp=args.qmp,
        quit_guest=args.quit_guest,
        also_file=args.also_file, wait_timeout=args.wait_timeout,
        dump_timeout=args.dump_timeout, progress_interval=args.progress,
        trace_alloc=args.trace_alloc)


def _stderr_report(line: str) -> None:
    print(f"bootinit dump: {line}", file=sys.stderr, flush=True)


def cmd_dump(args: argparse.Namespace) -> int:
    """The ``dump`` command."""
    from bootinit.commands import CliError, context, fill_defaults
    from qemu.qmp import QmpError

    fill_defaults(args)
    try:
        _fill(args)
        spec, origin = _target(args)
        if args.extract or args.info:
            return _cmd_extract(args, spec)
        settings = _settings(args)
        with _sigterm_raises(), context(args) as ctx:
            def login() -> tuple[Any, Any]:
                sess = ctx.login(spec)
                return sess, sess.block_device()

            report = _stderr_report
            d = Dumper(ctx, login, settings, report)
            try:
                d.arm()
                if not d.wait_for_panic():
                    st = d.result.guest_status
                    print(f"bootinit dump: the guest ended (status {st}) without a panic; "
                          f"nothing was dumped", file=sys.stderr)
                    return 3
                res = d.dump()
            finally:
                d.close()
            if args.json:
                print(json.dumps({"target": origin, **res.as_dict()}, indent=2))
            else:
                h = res.header
                assert h is not None
                print(f"dump: {h.data_size} bytes {h.format.qmp_name} at byte "
                      f"{res.area.offset + h.data_offset if res.area else h.data_offset} "
                      f"of the LUN, sha256 {h.checksum.hex()}, {res.mb_per_s:.1f} MB/s"
                      + (", verified" if res.verified else ""))
            ctx.stats([d.session] if d.session is not None else [])
        return 0
    except _Terminated:
        print("bootinit dump: terminated", file=sys.stderr)
        return 143
    except (CliError, DumpError, dumpfmt.HeaderError, QmpError) as e:
        print(f"bootinit dump: {e}", file=sys.stderr)
        return 2 if isinstance(e, CliError) else 1


def _cmd_extract(args: argparse.Namespace, spec: TargetSpec) -> int:
    from bootinit.commands import CliError, context

    if args.extract and not args.output:
        raise CliError("--extract needs -o FILE")
    with context(args) as ctx:
        sess = ctx.login(spec)
        dev = sess.block_device()
        sector0 = None
        if args.partition is not None:
            sector0 = dev.read(0, max(1, 512 // dev.block_size))
        area = dump_area(dev.num_blocks, dev.block_size, offset=args.offset,
                         partition=args.partition, sector0=sector0)
        if args.info:
            h = read_header(dev, area)
            if args.json:
                print(json.dumps(h.as_dict(), indent=2))
            else:
                for k, v in h.as_dict().items():
                    print(f"{k}: {v}")
            sess.logout()
            return 0
        tmp = Path(f"{args.output}.part")
        try:
            with open(tmp, "wb") as out:
                header, secs = extract(dev, area, out, lambda p, w: sess.wait(p, w),
                                       allow_incomplete=args.force)
            os.replace(tmp, args.output)
        finally:
            tmp.unlink(missing_ok=True)
        size = header.data_size if header.complete else area.capacity
        line = (f"extracted {size} bytes ({header.format.qmp_name}, "
                f"{header.state.name.lower()}) to {args.output} in {secs:.2f} s "
                f"({size / secs / 1e6:.1f} MB/s); sha256 {header.checksum.hex()} "
                + ("matches the header" if header.complete else "(not checked)"))
        if args.json:
            print(json.dumps({"output": args.output, "seconds": round(secs, 3),
                              "header": header.as_dict()}, indent=2))
        else:
            print(line)
        sess.logout()
    return 0


__all__ = [
    "DEFAULT_CHUNK", "DEFAULT_DEPTH", "DumpArea", "DumpError", "DumpResult", "DumpSettings",
    "DumpTooLarge", "Dumper", "FdSource", "Guest", "MbrPartition", "StreamWriter",
    "VerifyError", "add_parser", "cmd_dump", "dump_area", "dump_size_bound", "extract",
    "guest_argv", "make_pipe", "parse_bytes", "parse_mbr", "read_header",
]
