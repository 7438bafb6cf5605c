"""The crash-dump writer (bootinit/dump.py) against an in-memory block device.

The fake device completes requests only when asked (in FIFO, reverse or shuffled
order) and copies a write's data when it *completes*, as the iSCSI session sends from
the caller's buffer: a buffer reused before its write is done would corrupt the LUN.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from bootinit import dumpfmt
from bootinit.dump import (
    DumpArea,
    DumpError,
    DumpTooLarge,
    FdSource,
    StreamWriter,
    VerifyError,
    dump_area,
    dump_size_bound,
    extract,
    guest_argv,
    make_pipe,
    parse_bytes,
    parse_mbr,
    read_header,
)
from bootinit.dumpfmt import DumpFormat, DumpState
from netstack.loop import Loop

KiB = 1 << 10
MiB = 1 << 20


class Req:
    """What the fake hands to callbacks."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


OK = Req()


class FakeDevice:
    """An in-memory LUN whose requests complete when :meth:`complete_one` is called."""

    def __init__(self, blocks: int, block_size: int = 512, order: str = "fifo",
                 seed: int = 1, log: bool = True) -> None:
        self.block_size = block_size
        self.num_blocks = blocks
        self.data = bytearray(blocks * block_size)
        self.pending: list[tuple[str, int, memoryview | None, int, Callable[[Req], None]
                                 | None]] = []
        self.order = order
        self.rng = random.Random(seed)
        self.log: list[tuple[str, int, int]] | None = [] if log else None
        self.fail_writes_at: int | None = None
        self.flush_error: BaseException | None = None
        self.max_pending = 0

    @property
    def capacity(self) -> int:
        return self.num_blocks * self.block_size

    def _queue(self, kind: str, lba: int, view: memoryview | None, count: int,
               cb: Callable[[Req], None] | None) -> None:
        if self.log is not None:
            self.log.append((kind, lba, count))
        self.pending.append((kind, lba, view, count, cb))
        self.max_pending = max(self.max_pending, len(self.pending))

    def submit_write(self, lba: int, data: bytes | bytearray | memoryview,
                     callback: Callable[[Req], None] | None = None) -> object:
        view = memoryview(data)
        assert len(view) % self.block_size == 0
        count = len(view) // self.block_size
        assert lba >= 0 and lba + count <= self.num_blocks
        self._queue("write", lba, view, count, callback)
        return None

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: Callable[[Req], None] | None = None) -> object:
        assert buf is not None and len(buf) >= count * self.block_size
        assert lba >= 0 and lba + count <= self.num_blocks
        self._queue("read", lba, memoryview(buf), count, callback)
        return None

    def submit_flush(self, callback: Callable[[Req], None] | None = None) -> object:
        self._queue("flush", 0, None, 0, callback)
        return None

    def readinto(self, lba: int, buf: bytearray | memoryview) -> int:
        n = len(buf)
        buf[:] = self.data[lba * self.block_size:lba * self.block_size + n]
        return n

    def complete_one(self) -> None:
        if self.order == "fifo":
            i = 0
        elif self.order == "lifo":
            i = len(self.pending) - 1
        else:
            i = self.rng.randrange(len(self.pending))
        kind, lba, view, count, cb = self.pending.pop(i)
        off, n = lba * self.block_size, count * self.block_size
        req = OK
        if kind == "write":
            assert view is not None
            if self.fail_writes_at is not None and lba >= self.fail_writes_at:
                req = Req(OSError("medium error"))
            else:
                # through a memoryview: bytearray slice assignment from a view copies
                memoryview(self.data)[off:off + n] = view
        elif kind == "read":
            assert view is not None
            view[:n] = memoryview(self.data)[off:off + n]
        elif self.flush_error is not None:
            req = Req(self.flush_error)
        if cb is not None:
            cb(req)

    def wait(self, pred: Callable[[], bool], what: str) -> None:
        while not pred():
            if not self.pending:
                raise AssertionError(f"nothing pending while waiting for {what}")
            self.complete_one()

    def writes(self) -> list[tuple[int, int]]:
        assert self.log is not None
        return [(lba, n) for k, lba, n in self.log if k == "write"]


def stream(size: int, seed: int = 7) -> bytes:
    """Deterministic dump-like bytes."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(4, "little")).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def feed(w: StreamWriter, dev: FakeDevice, data: bytes | memoryview, piece: int) -> None:
    """Push ``data`` in ``piece``-byte reads (like a pipe), completing I/O when stalled."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        buf = w.buffer()
        if buf is None:
            dev.complete_one()
            continue
        n = min(len(buf), piece, len(view) - pos)
        buf[:n] = view[pos:pos + n]
        w.commit(n)
        pos += n


def make(blocks: int = 4096, bs: int = 512, order: str = "fifo", chunk: int = 16 * KiB,
         depth: int = 4, offset: int = 0) -> tuple[FakeDevice, DumpArea, StreamWriter]:
    dev = FakeDevice(blocks, bs, order)
    area = dump_area(blocks, bs, offset=offset)
    return dev, area, StreamWriter(dev, area, dev.wait, chunk_size=chunk, depth=depth)


# ------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("order", ["fifo", "lifo", "random"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 16 * KiB, 16 * KiB + 1, 100_003,
                                  300 * KiB])
def test_stream_lands_in_order_with_header(order: str, size: int) -> None:
    dev, area, w = make(order=order)
    data = stream(size)
    w.begin(DumpFormat.ELF, size, panic_time_ns=123, guest_memory=456, note="n")
    assert dumpfmt.decode(dev.data[:4096]).state is DumpState.WRITING
    feed(w, dev, data, piece=5000)
    h = w.finish()
    w.verify()
    assert w.state == "verified"
    # the data right after the 4096-byte header, the partial final block zero-padded
    assert dev.data[4096:4096 + size] == data
    padded = -(-size // 512) * 512
    assert dev.data[4096 + size:4096 + padded] == bytes(padded - size)
    assert dev.data[4096 + padded:] == bytes(len(dev.data) - 4096 - padded)
    got = dumpfmt.decode(dev.data[:4096])
    assert got == h
    assert got.state is DumpState.COMPLETE and got.data_size == size
    assert got.checksum == hashlib.sha256(data).digest()
    assert (got.panic_time_ns, got.guest_memory, got.note) == (123, 456, "n")
    assert got.area_size == area.size and got.block_size == 512
    # writes: consecutive, ascending, never overlapping, one per full buffer
    data_writes = [x for x in dev.writes() if x[0] != 0]
    lba = area.data_lba
    for wl, n in data_writes:
        assert wl == lba
        lba += n
    assert lba == area.data_lba + padded // 512
    assert w.writes == -(-size // (16 * KiB))
    assert w.bytes_written == w.bytes_in == size


def test_order_of_operations_header_data_sync_header_sync() -> None:
    dev, _area, w = make()
    w.begin(DumpFormat.ELF, 40 * KiB)
    feed(w, dev, stream(40 * KiB), piece=4096)
    w.finish()
    assert dev.log is not None
    kinds = [(k, lba) for k, lba, _n in dev.log]
    assert kinds[0] == ("write", 0)                      # 'writing' header first
    assert kinds[-3:] == [("flush", 0), ("write", 0), ("flush", 0)]   # sync, commit, sync
    assert all(k == "write" and lba >= 8 for k, lba in kinds[1:-3])


def test_buffers_are_not_reused_before_their_write_completes() -> None:
    dev, _area, w = make(chunk=4096, depth=2)
    w.begin(DumpFormat.ELF, 1 * MiB)
    data = stream(64 * KiB)
    feed(w, dev, data, piece=1000)
    assert dev.max_pending <= 2 + 1     # depth writes (+ nothing else)
    w.finish()
    assert dev.data[4096:4096 + len(data)] == data
    assert w.max_inflight == 2


def test_write_copies_and_stops_when_buffers_are_busy() -> None:
    dev, _area, w = make(chunk=4096, depth=2)
    w.begin(DumpFormat.ELF, 1 * MiB)
    data = stream(20000)
    taken = w.write(data)
    assert taken == 8192          # two buffers filled and submitted, none free
    assert w.buffer() is None
    dev.complete_one()
    taken += w.write(memoryview(data)[taken:])
    assert taken == 12288
    while taken < len(data):
        dev.complete_one()
        taken += w.write(memoryview(data)[taken:])
    w.finish()
    assert dev.data[4096:4096 + len(data)] == data


def test_on_space_is_called_when_a_buffer_frees() -> None:
    dev, _area, w = make(chunk=4096, depth=1)
    calls: list[int] = []
    w.on_space = lambda: calls.append(w.inflight)
    w.begin(DumpFormat.ELF, 1 * MiB)
    w.write(bytes(4096))
    assert w.buffer() is None and not calls
    dev.complete_one()
    assert calls == [0] and w.buffer() is not None


def test_offset_and_4k_blocks() -> None:
    dev, area, w = make(blocks=1024, bs=4096, chunk=64 * KiB, offset=64 * KiB)
    assert (area.start_lba, area.data_lba, area.header_blocks) == (16, 17, 1)
    data = stream(200_001)
    w.begin(DumpFormat.KDUMP_ZLIB, len(data))
    feed(w, dev, data, piece=65536)
    w.finish()
    w.verify()
    assert dev.data[:64 * KiB] == bytes(64 * KiB)          # before the area: untouched
    h = dumpfmt.decode(dev.data[64 * KiB:68 * KiB])
    assert h.format is DumpFormat.KDUMP_ZLIB and h.block_size == 4096
    assert dev.data[68 * KiB:68 * KiB + len(data)] == data


# ------------------------------------------------------------------------ failures


def test_too_large_is_refused_before_anything_is_written() -> None:
    dev, area, w = make(blocks=256)        # 128 KiB LUN: 124 KiB of room
    assert w.capacity == 128 * KiB - 4096
    with pytest.raises(DumpTooLarge, match=r"does not fit.*nothing was written"):
        w.begin(DumpFormat.ELF, w.capacity + 1)
    assert dev.log == [] and dev.data == bytes(len(dev.data))
    w.begin(DumpFormat.ELF, w.capacity)        # exactly fits
    feed(w, dev, stream(w.capacity), piece=7000)
    w.finish()
    w.verify()
    assert area.capacity == w.capacity


def test_growing_past_the_area_stops_with_the_header_left_writing() -> None:
    dev, _area, w = make(blocks=256)
    w.begin(DumpFormat.ELF, 1000)           # the bound was wrong
    with pytest.raises(DumpTooLarge, match="grew past"):
        feed(w, dev, stream(w.capacity + 1), piece=4096)
    dev.wait(lambda: not dev.pending, "drain")
    assert dumpfmt.decode(dev.data[:4096]).state is DumpState.WRITING


def test_write_error_fails_finish_and_the_header_stays_writing() -> None:
    dev, area, w = make()
    dev.fail_writes_at = area.data_lba + 40
    w.begin(DumpFormat.ELF, 1 * MiB)
    feed(w, dev, stream(100 * KiB), piece=4096)
    with pytest.raises(DumpError, match="medium error"):
        w.finish()
    assert dumpfmt.decode(dev.data[:4096]).state is DumpState.WRITING


def test_flush_illegal_request_is_fine_other_errors_are_not() -> None:
    class Sense:
        key = 0x05

    class NoCache(Exception):
        sense = Sense()

    dev, _area, w = make()
    dev.flush_error = NoCache()
    w.begin(DumpFormat.ELF, 10)
    w.write(b"0123456789")
    w.finish()
    dev2, _area2, w2 = make()
    dev2.flush_error = OSError("transport")
    w2.begin(DumpFormat.ELF, 10)
    w2.write(b"0123456789")
    with pytest.raises(DumpError, match="SYNCHRONIZE CACHE: transport"):
        w2.finish()


def test_verify_finds_a_changed_byte_and_a_changed_header() -> None:
    dev, _area, w = make()
    w.begin(DumpFormat.ELF, 50 * KiB)
    feed(w, dev, stream(50 * KiB), piece=4096)
    w.finish()
    dev.data[4096 + 30000] ^= 1
    with pytest.raises(VerifyError, match="SHA-256"):
        w.verify()
    dev, _area, w = make()
    w.begin(DumpFormat.ELF, 10)
    w.write(b"x" * 10)
    w.finish()
    dev.data[200] ^= 1
    with pytest.raises(VerifyError, match="header"):
        w.verify()


def test_misuse_is_reported() -> None:
    dev, area, w = make()
    with pytest.raises(DumpError, match="finish"):
        w.finish()
    with pytest.raises(DumpError, match="verify"):
        w.verify()
    w.begin(DumpFormat.ELF, 1)
    with pytest.raises(DumpError, match="begin"):
        w.begin(DumpFormat.ELF, 1)
    with pytest.raises(DumpError, match="cannot change"):
        w.rebind(dev)
    with pytest.raises(DumpError, match="chunk size"):
        StreamWriter(dev, area, dev.wait, chunk_size=1000)
    with pytest.raises(DumpError, match="depth"):
        StreamWriter(dev, area, dev.wait, depth=0)
    with pytest.raises(DumpError, match="block size"):
        StreamWriter(FakeDevice(4096, 4096), area, dev.wait)
    with pytest.raises(DumpError, match="beyond the LUN"):
        StreamWriter(FakeDevice(100), area, dev.wait)


def test_rebind_checks_geometry() -> None:
    _dev, _area, w = make()
    w.rebind(FakeDevice(4096))
    with pytest.raises(DumpError, match="geometry"):
        w.rebind(FakeDevice(100))


# ------------------------------------------------------------------------ allocation


def _streaming_allocations(total: int) -> tuple[int, int]:
    """(peak, net) bytes Python allocated while ``total`` bytes were streamed, after
    arming; the source is one preallocated buffer reused, as a pipe would be."""
    dev = FakeDevice(total // 512 + 64, 512, "fifo", log=False)
    area = dump_area(dev.num_blocks, 512)
    w = StreamWriter(dev, area, dev.wait, chunk_size=64 * KiB, depth=4)
    src = memoryview(stream(256 * KiB))
    w.begin(DumpFormat.ELF, total)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        pos = 0
        while pos < total:
            buf = w.buffer()
            if buf is None:
                dev.complete_one()
                continue
            n = min(len(buf), 10_000, total - pos)
            buf[:n] = src[:n]
            w.commit(n)
            pos += n
        while dev.pending:
            dev.complete_one()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    w.finish()
    return peak - base, current - base


def test_no_per_block_allocation_while_streaming() -> None:
    small_peak, small_net = _streaming_allocations(2 * MiB)
    big_peak, big_net = _streaming_allocations(32 * MiB)
    # a handful of small transient objects (views, ints, the fake's queue entries):
    # far below one 64 KiB buffer, and the same for 16x the data
    assert small_peak < 4 * KiB and big_peak < 4 * KiB, (small_peak, big_peak)
    assert abs(big_peak - small_peak) < 2 * KiB
    assert small_net < 2 * KiB and big_net < 2 * KiB, (small_net, big_net)


# ------------------------------------------------------------------------ pipe source


def test_fd_source_streams_a_pipe_through_the_loop() -> None:
    size = 3 * MiB + 12345
    data = stream(size, seed=3)
    loop = Loop()

    class LoopDevice(FakeDevice):
        """Completes each request from the loop, a moment after it was submitted."""

        def _queue(self, kind: str, lba: int, view: memoryview | None, count: int,
                   cb: Callable[[Req], None] | None) -> None:
            super()._queue(kind, lba, view, count, cb)
            loop.call_later(0.0005, self.complete_one)

    dev = LoopDevice(size // 512 + 64, 512, "random")
    area = dump_area(dev.num_blocks, 512)

    def wait(pred: Callable[[], bool], what: str) -> None:
        loop.run_until(pred, 30, what)

    w = StreamWriter(dev, area, wait, chunk_size=256 * KiB, depth=3)
    r, wfd = make_pipe()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys,os; d=sys.stdin.buffer.read(); "
         "fd=int(sys.argv[1]); [os.write(fd, d[i:i+65536]) for i in range(0, len(d), 65536)]",
         str(wfd)], stdin=subprocess.PIPE, pass_fds=(wfd,))
    try:
        os.close(wfd)
        assert writer.stdin is not None
        writer.stdin.write(data)
        writer.stdin.close()
        w.begin(DumpFormat.ELF, size)
        src = FdSource(loop, r, w)
        src.start()
        loop.run_until(lambda: src.eof, 60, "EOF")
        h = w.finish()
        w.verify()
    finally:
        writer.wait(30)
        os.close(r)
        loop.close()
    assert h.data_size == size and h.checksum == hashlib.sha256(data).digest()
    assert dev.data[4096:4096 + size] == data
    assert src.reads > 0


# ------------------------------------------------------------------------ extract


def test_extract_copies_and_checks() -> None:
    dev, area, w = make(order="random")
    data = stream(123_457)
    w.begin(DumpFormat.ELF, len(data))
    feed(w, dev, data, piece=3000)
    w.finish()
    out = io.BytesIO()
    h, secs = extract(dev, area, out, dev.wait, chunk_size=8 * KiB, depth=3)
    assert out.getvalue() == data and h.data_size == len(data) and secs > 0
    assert read_header(dev, area) == h
    dev.data[4096 + 100] ^= 0xFF
    with pytest.raises(VerifyError, match="SHA-256"):
        extract(dev, area, io.BytesIO(), dev.wait)


def test_extract_refuses_incomplete_and_missing_dumps() -> None:
    dev, area, w = make()
    with pytest.raises(dumpfmt.HeaderError, match="no dump here"):
        extract(dev, area, io.BytesIO(), dev.wait)
    w.begin(DumpFormat.ELF, 10)
    with pytest.raises(DumpError, match="incomplete"):
        extract(dev, area, io.BytesIO(), dev.wait)
    out = io.BytesIO()
    h, _ = extract(dev, area, out, dev.wait, allow_incomplete=True)
    assert h.state is DumpState.WRITING and len(out.getvalue()) == area.capacity


# ------------------------------------------------------------------------ area, sizes


def mbr(*parts: tuple[int, int, int]) -> bytes:
    b = bytearray(512)
    for i, (ptype, start, sectors) in enumerate(parts):
        b[446 + 16 * i + 4] = ptype
        b[446 + 16 * i + 8:446 + 16 * i + 16] = (start.to_bytes(4, "little")
                                                 + sectors.to_bytes(4, "little"))
    b[510:512] = b"\x55\xaa"
    return bytes(b)


def test_dump_area_whole_offset_partition() -> None:
    a = dump_area(1000, 512)
    assert (a.start_lba, a.blocks, a.offset, a.size, a.capacity) == (0, 1000, 0, 512000,
                                                                      512000 - 4096)
    a = dump_area(1000, 512, offset=8192)
    assert (a.start_lba, a.blocks, a.data_lba) == (16, 984, 24)
    sector0 = mbr((0x83, 2048, 100), (0x82, 4096, 2048))
    assert [p.number for p in parse_mbr(sector0)] == [1, 2]
    a = dump_area(8192, 512, partition=2, sector0=sector0)
    assert (a.start_lba, a.blocks) == (4096, 2048)
    with pytest.raises(DumpError, match="no partition 3"):
        dump_area(8192, 512, partition=3, sector0=sector0)
    with pytest.raises(DumpError, match="beyond"):
        dump_area(5000, 512, partition=2, sector0=sector0)
    with pytest.raises(DumpError, match="no MBR"):
        dump_area(8192, 512, partition=1, sector0=bytes(512))
    with pytest.raises(DumpError, match="aligned"):
        dump_area(1024, 4096, partition=1, sector0=mbr((0x83, 3, 800)))
    with pytest.raises(DumpError, match="not both"):
        dump_area(8192, 512, offset=512, partition=1, sector0=sector0)
    with pytest.raises(DumpError, match="multiple"):
        dump_area(1000, 512, offset=100)
    with pytest.raises(DumpError, match="beyond the LUN's end"):
        dump_area(1000, 512, offset=512000)
    with pytest.raises(DumpError, match="no room"):
        dump_area(8, 512)


def test_dump_size_bound() -> None:
    assert dump_size_bound(DumpFormat.ELF, 128 * MiB) == 129 * MiB
    assert dump_size_bound(DumpFormat.KDUMP_ZLIB, 128 * MiB) == 131 * MiB


def test_parse_bytes() -> None:
    assert [parse_bytes(x) for x in ("0", "4096", "1M", "64MiB", "2g", "512K")] == [
        0, 4096, MiB, 64 * MiB, 2 << 30, 512 * KiB]
    for bad in ("x", "-1", "1Q", ""):
        with pytest.raises(Exception, match="byte count"):
            parse_bytes(bad)


# ------------------------------------------------------------------------ QEMU command


def test_guest_argv_adds_what_the_dump_needs() -> None:
    argv, added = guest_argv(["-m", "128", "-drive", "file=d.img,if=virtio"], Path("/r/q"))
    assert argv[:5] == ["qemu-system-x86_64", "-m", "128", "-drive", "file=d.img,if=virtio"]
    tail = argv[5:]
    assert tail == ["-device", "pvpanic", "-action", "panic=pause", "-display", "none",
                    "-S", "-qmp", "unix:/r/q,server=on,wait=off"]
    assert added
    argv, added = guest_argv(["qemu-system-i386", "-S", "-device", "pvpanic-pci",
                              "-action", "panic=pause", "-nographic"], Path("/q"))
    assert argv == ["qemu-system-i386", "-S", "-device", "pvpanic-pci", "-action",
                    "panic=pause", "-nographic", "-qmp", "unix:/q,server=on,wait=off"]
    assert not added
    with pytest.raises(DumpError, match="panic=pause"):
        guest_argv(["-action", "panic=shutdown"], Path("/q"))


# ------------------------------------------------------------------------ CLI


def test_cli_parses_qemu_arguments_after_double_dash() -> None:
    from bootinit.cli import build_parser

    p = build_parser()
    a = p.parse_args(["dump", "iscsi://10.0.0.1/iqn.2024-01.x:y/1", "--ip", "10.0.0.2/24",
                      "--format", "kdump-zlib", "--offset", "1M", "--", "-m", "128",
                      "--", "-x"])
    assert a.url == "iscsi://10.0.0.1/iqn.2024-01.x:y/1" and a.format == "kdump-zlib"
    assert a.offset == MiB and a.qemu_args == ["-m", "128", "--", "-x"]
    a = p.parse_args(["--ip", "10.0.0.2/24", "dump", "--extract", "iscsi://h/iqn.x:y/1",
                      "-o", "f"])
    assert a.extract and a.output == "f" and a.qemu_args == []


@pytest.mark.parametrize(("argv", "message"), [
    (["dump", "--ip", "10.0.0.2/24", "--", "-m", "128"], "no target"),
    (["dump", "iscsi://10.0.0.1/iqn.2024-01.x:y/1", "--ip", "10.0.0.2/24"], "no guest"),
    (["dump", "iscsi://10.0.0.1/iqn.2024-01.x:y/1", "--ip", "10.0.0.2/24", "--qmp", "s",
      "--", "-m", "1"], "no QEMU arguments"),
    (["dump", "iscsi://10.0.0.1/iqn.2024-01.x:y/1", "--ip", "10.0.0.2/24",
      "--partition", "5", "--", "-m", "1"], "1..4"),
    (["dump", "--extract", "iscsi://10.0.0.1/iqn.2024-01.x:y/1", "--ip", "10.0.0.2/24"],
     "-o FILE"),
    (["dump", "notaurl", "--", "-m", "1"], "notaurl"),
])
def test_cli_usage_errors(argv: list[str], message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from bootinit.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------ QMP additions


def test_qmp_getfd_passes_the_descriptor_and_poll_keeps_replies() -> None:
    import json
    import socket

    from qemu.qmp import Qmp

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        q = Qmp(ours, pump=lambda t: None)
        ours.setblocking(False)
        r, w = os.pipe()
        try:
            # QEMU's side answers getfd once the command (and the descriptor) arrived
            theirs.sendall(b'{"event": "STOP", "timestamp": {}}\n')
            q.sock.setblocking(True)
            data = json.dumps({"execute": "getfd",
                               "arguments": {"fdname": "d"}}).encode() + b"\n"
            socket.send_fds(q.sock, [data], [w])
            q.sock.setblocking(False)
            msg, fds, _flags, _addr = socket.recv_fds(theirs, 4096, 4)
            assert json.loads(msg) == {"execute": "getfd", "arguments": {"fdname": "d"}}
            assert len(fds) == 1
            os.write(fds[0], b"hello")
            os.close(fds[0])
            assert os.read(r, 5) == b"hello"
            theirs.sendall(b'{"return": {}}\n{"event": "GUEST_PANICKED", "data": {}}\n')
            events = q.poll()
            assert [e["event"] for e in events] == ["STOP", "GUEST_PANICKED"]
            assert q.fileno() == ours.fileno()
            # the reply read by poll() is still there for the command waiting on it
            assert q._next(lambda m: "return" in m, 1, "reply") == {"return": {}}
            assert q.wait_event("GUEST_PANICKED", 0.1)["event"] == "GUEST_PANICKED"
        finally:
            os.close(r)
            os.close(w)
    finally:
        ours.close()
        theirs.close()


def test_qmp_execute_with_fds() -> None:
    import json
    import socket

    from qemu.qmp import Qmp

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    r, w = os.pipe()
    try:
        theirs.sendall(b'{"return": {}}\n')
        q = Qmp(ours, pump=lambda t: None)
        q.getfd(w, "dumpfd")
        msg, fds, _f, _a = socket.recv_fds(theirs, 4096, 4)
        assert json.loads(msg)["arguments"] == {"fdname": "dumpfd"} and len(fds) == 1
        os.close(fds[0])
    finally:
        os.close(r)
        os.close(w)
        ours.close()
        theirs.close()


def test_target_from_an_ibft_file_fills_address_and_name(tmp_path: Path) -> None:
    import argparse
    from ipaddress import IPv4Interface

    from bootinit.commands import fill_defaults
    from bootinit.dump import _fill, _target
    from firmware_tables import BootConfig, NicConfig, parse_iscsi_url

    cfg = BootConfig(initiator_name="iqn.2026-11.org.bootinit:dumper",
                     nics=(NicConfig(address=IPv4Interface("10.77.0.9/24"),
                                     mac=bytes.fromhex("525400000001")),),
                     targets=(parse_iscsi_url("iscsi://10.77.0.1/iqn.2024-01.x:dump/2"),))
    table = tmp_path / "ibft.bin"
    table.write_bytes(cfg.to_ibft())
    args = argparse.Namespace(ibft=str(table), json=False)
    fill_defaults(args)
    _fill(args)
    spec, origin = _target(args)
    assert (spec.host, spec.name, spec.lun) == ("10.77.0.1", "iqn.2024-01.x:dump", 2)
    assert args.ip == "10.77.0.9/24" and args.initiator_name == cfg.initiator_name
    assert origin == f"iBFT {table}"
    args = argparse.Namespace(ibft=str(tmp_path / "missing"), json=False)
    fill_defaults(args)
    _fill(args)
    from bootinit.commands import CliError

    with pytest.raises(CliError, match="missing"):
        _target(args)
