"""Checked block I/O workloads for the fault and soak tests (against a real target).

:class:`Model` is what the caller was told: a write that completed OK makes its blocks
hold the new data; a write that failed makes its blocks *unknown* (old or new, block by
block) and is reported. :func:`random_io` keeps up to ``qd`` mixed reads and writes in
flight (never two overlapping requests at once: their order would be undefined) and
checks every read against the model as it completes. :func:`sequential_write` streams a
large region in chunks whose data is regenerated from a seed instead of being held.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bootinit.blockdev import BlockDevice, IoRequest
from bootinit.iscsi.errors import IscsiError
from bootinit.scsi.sense import ScsiError

BS = 512


def chunk_data(seed: int, index: int, size: int) -> bytes:
    """The data of chunk ``index`` of a seeded stream (regenerated, never stored)."""
    return random.Random(seed * 1_000_003 + index).randbytes(size)


def _any_done(reqs: list[IoRequest]) -> bool:
    return any(r.done for r in reqs)


@dataclass
class Model:
    """Expected LUN content, block by block, as the caller was told."""

    data: bytearray
    unknown: set[int] = field(default_factory=set)
    failed_writes: list[tuple[int, int, BaseException]] = field(default_factory=list)

    def written(self, lba: int, data: bytes) -> None:
        self.data[lba * BS:lba * BS + len(data)] = data
        self.unknown.difference_update(range(lba, lba + len(data) // BS))

    def write_failed(self, lba: int, blocks: int, old: bytes, new: bytes,
                     err: BaseException) -> None:
        """The blocks may now hold the old or the new data."""
        self.failed_writes.append((lba, blocks, err))
        for i in range(blocks):
            self.unknown.add(lba + i)
        self.data[lba * BS:(lba + blocks) * BS] = old
        self._alt[(lba, blocks)] = new

    _alt: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def check(self, lba: int, got: bytes, what: str) -> None:
        """``got`` read at ``lba`` matches (unknown blocks: old or new data)."""
        for i in range(len(got) // BS):
            b = lba + i
            blk = got[i * BS:(i + 1) * BS]
            exp = bytes(self.data[b * BS:(b + 1) * BS])
            if blk == exp:
                continue
            if b in self.unknown and any(
                    a <= b < a + n and blk == new[(b - a) * BS:(b - a + 1) * BS]
                    for (a, n), new in self._alt.items()):
                continue
            raise AssertionError(f"{what}: block {b} differs from what the caller was told")


@dataclass
class IoStats:
    reads: int = 0
    writes: int = 0
    bytes: int = 0
    failed: list[BaseException] = field(default_factory=list)


def random_io(dev: BlockDevice, model: Model, *, qd: int, seed: int,
              commands: int | None = None, seconds: float | None = None,
              sizes: tuple[int, ...] = (1, 8, 8, 64, 128), region: int | None = None,
              allow_errors: bool = False,
              on_progress: Callable[[int], None] | None = None) -> IoStats:
    """Mixed random reads and writes, ``qd`` in flight, until ``commands`` were issued
    or ``seconds`` passed; reads checked against ``model`` as they complete."""
    rng = random.Random(seed)
    blocks = (region if region is not None else dev.capacity) // BS
    stats = IoStats()
    inflight: list[IoRequest] = []
    busy: dict[int, tuple[int, int]] = {}
    info: dict[int, tuple[str, int, int, bytes, bytes]] = {}
    end = time.monotonic() + seconds if seconds is not None else None
    issued = 0

    def more() -> bool:
        if commands is not None and issued >= commands:
            return False
        return end is None or time.monotonic() < end

    while more() or inflight:
        tries = 0
        while more() and len(inflight) < qd and tries < 50:
            tries += 1
            n = rng.choice(sizes)
            lba = rng.randrange(0, blocks - n + 1)
            if any(lba < b and a < lba + n for a, b in busy.values()):
                continue  # overlapping requests in flight have no defined order
            if rng.random() < 0.5:
                old = bytes(model.data[lba * BS:(lba + n) * BS])
                data = rng.randbytes(n * BS)
                req = dev.submit_write(lba, data)
                info[id(req)] = ("write", lba, n, old, data)
                stats.writes += 1
            else:
                req = dev.submit_read(lba, n)
                info[id(req)] = ("read", lba, n, b"", b"")
                stats.reads += 1
            busy[id(req)] = (lba, lba + n)
            inflight.append(req)
            issued += 1
            stats.bytes += n * BS
            if on_progress is not None:
                on_progress(issued)
        if not inflight:
            break
        dev.session.wait(functools.partial(_any_done, inflight), "random I/O")
        still = []
        for r in inflight:
            if not r.done:
                still.append(r)
                continue
            kind, lba, n, old, new = info.pop(id(r))
            busy.pop(id(r))
            if r.error is not None:
                assert isinstance(r.error, IscsiError | ScsiError), repr(r.error)
                assert allow_errors, f"{kind} at LBA {lba} failed: {r.error!r}"
                stats.failed.append(r.error)
                if kind == "write":
                    model.write_failed(lba, n, old, new, r.error)
                continue
            if kind == "write":
                model.written(lba, new)
            else:
                assert r.buffer is not None
                model.check(lba, r.buffer.tobytes(), f"read at LBA {lba}")
        inflight = still
    return stats


@dataclass
class StreamResult:
    ok: list[int] = field(default_factory=list)
    failed: dict[int, BaseException] = field(default_factory=dict)


def sequential_write(dev: BlockDevice, *, seed: int, total: int, chunk: int, qd: int,
                     on_progress: Callable[[int], None] | None = None,
                     allow_errors: bool = False) -> StreamResult:
    """Write ``total`` bytes from LBA 0 in ``chunk``-byte requests (``qd`` in flight);
    ``on_progress(chunks_done)`` runs after each completion (fault injection)."""
    res = StreamResult()
    count = total // chunk
    inflight: dict[int, IoRequest] = {}
    nxt = 0
    done = 0
    while nxt < count or inflight:
        while nxt < count and len(inflight) < qd:
            inflight[nxt] = dev.submit_write(nxt * chunk // BS, chunk_data(seed, nxt, chunk))
            nxt += 1
        reqs = list(inflight.values())
        dev.session.wait(functools.partial(_any_done, reqs), "sequential write")
        for i, r in list(inflight.items()):
            if not r.done:
                continue
            del inflight[i]
            done += 1
            if r.error is None:
                res.ok.append(i)
            else:
                assert isinstance(r.error, IscsiError | ScsiError), repr(r.error)
                assert allow_errors, f"chunk {i} failed: {r.error!r}"
                res.failed[i] = r.error
            if on_progress is not None:
                on_progress(done)
    return res


def check_stream(read_chunk: Callable[[int], bytes], *, seed: int, total: int, chunk: int,
                 result: StreamResult, old: Callable[[int], bytes]) -> None:
    """Every chunk that completed OK holds its data; a failed one holds, block by block,
    the old or the new data."""
    for i in range(total // chunk):
        got = read_chunk(i)
        new = chunk_data(seed, i, chunk)
        if i not in result.failed:
            assert got == new, f"chunk {i} (completed OK) does not hold the data written"
            continue
        prev = old(i)
        for b in range(chunk // BS):
            blk = got[b * BS:(b + 1) * BS]
            assert blk in (new[b * BS:(b + 1) * BS], prev[b * BS:(b + 1) * BS]), \
                f"chunk {i} block {b}: neither the old nor the new data"
