"""iSCSI block I/O: bootinit (our stack over TAP) beside libiscsi's iscsi-perf and qemu-img.

One run, one namespace, one tgtd, one target whose LUN lives on tmpfs (``/dev/shm``) so
the disk is not what is measured. Every row of the table is measured in that run on
that LUN:

* ``seq-write`` / ``seq-read-1st`` — ``--size`` bytes (default 1G; 256M is quicker)
  in ``--request-kib`` requests (default 1 MiB, one command each) with ``--seq-qd``
  (default 16) in flight: the LUN written, then read once (the first pass after the
  write, right after login);
* ``seq-read`` — then the LUN read round and round for ``--perf-seconds`` (at least one
  pass), the same requests: what iscsi-perf's sequential mode does and is timed on,
  so the two are measured alike (its ratio is the goal's);
* ``rand-read-qd1`` / ``rand-read-qd32`` — 4 KiB reads at random 4 KiB-aligned offsets,
  bounded by ``--random-count`` requests or ``--random-seconds``, whichever comes first.

Initiators:

* ``bootinit`` — our TCP/IP stack on a TAP enslaved to the namespace's bridge, once per
  ``--mtu`` (default 9000; ``--mtu 1500 --mtu 9000`` for both). Every transfer is
  checked: data read is compared with the LUN file, data written is found in it.
* ``iscsi-perf`` (libiscsi; reads only) — inside the namespace over the kernel's TCP
  to the bridge address (local, so the loopback path, MTU 65536; its rows have no MTU),
  time-bounded (``-t``): sequential ``-b <request> -m <seq-qd>``, random
  ``-r -b 8 -m 1|32``; its IOPS average is used. Then, per ``--mtu``, its sequential
  read once more from a client namespace of its own joined to the bridge by a veth pair
  of that MTU (:func:`veth_client`; client address 10.77.0.200, .201, ... in the order
  of the ``--mtu`` options): a row with that MTU, the kernel's TCP over a link like
  bootinit's TAP. Loopback is the faster path for it (e.g. 2.6-2.8 GB/s against ~2.0 at
  MTU 1500 and ~2.5 at 65520), so the loopback row stays the reference of
  ``/iscsi-perf`` (and of run_all's loopback goals; its ``seq-read@mtu`` goal is
  against the veth row of the row's MTU).
* ``qemu-img convert`` (libiscsi inside qemu's block layer; defaults: 8 coroutines) —
  inside the namespace: ``iscsi://`` to a ``null-co`` sink (qemu-img refuses
  ``/dev/null`` as a convert target) for the read, and a tmpfs file to ``iscsi://`` for
  the write (checked against the LUN file). Its times include process start and login.

Before anything is timed tgtd is warmed up (:func:`warm_up`), so no initiator meets a
colder target than the others.

MB = 10**6 bytes. The ratio columns are bootinit ÷ iscsi-perf (over loopback),
bootinit ÷ qemu-img for the same test, and, for ``seq-read`` and ``seq-read-1st``,
bootinit ÷ iscsi-perf over a veth of the row's MTU (``/perf@MTU``). Example::

    sudo python bench/iscsi_io.py                     # ~1 min: 1 GiB, MTU 9000
    sudo python bench/iscsi_io.py --size 256M --mtu 1500 --mtu 9000 --json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bootinit.blockdev import BlockDevice, IoCallback, IoRequest  # noqa: E402
from bootinit.initiator import Initiator  # noqa: E402
from bootinit.targets import Tgtd, parse_size  # noqa: E402
from netstack import netns as nsh  # noqa: E402
from netstack.harness import BRIDGE_NAME, Topology, environment_problem, topology  # noqa: E402
from netstack.link.tap import TapLink  # noqa: E402
from netstack.loop import Loop  # noqa: E402
from netstack.stack import NetStack, StackConfig  # noqa: E402

IQN = "iqn.2024-01.org.bootinit:bench"
KiB = 1 << 10
MiB = 1 << 20
MB = 1e6
RANDOM_BYTES = 4 * KiB
STAMP = struct.Struct("<QQ")
TESTS = ("seq-read", "seq-read-1st", "seq-write", "rand-read-qd1", "rand-read-qd32")
INITIATORS = ("bootinit", "iscsi-perf", "qemu-img")


class BenchError(Exception):
    """A measurement could not be made (tool failed, data mismatch); says which and why."""


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def _pattern_base(salt: int) -> bytes:
    return random.Random(salt).randbytes(16 * MiB)


def fill_pattern(buf: memoryview, salt: int, offset: int = 0) -> None:
    """Fill ``buf`` (the bytes at ``offset`` of some image) with data that differs per
    ``salt`` and per 4 KiB block: seeded random bytes, each 4 KiB block stamped with
    ``(salt, absolute block number)``, so a read from the wrong place never matches."""
    base = _pattern_base(salt)
    n = len(buf)
    slab = 8 * MiB
    pos = 0
    while pos < n:
        absolute = offset + pos
        within = absolute % slab
        k = min(slab - within, n - pos)
        start = (absolute // slab * 4099 * 512) % slab + within
        buf[pos:pos + k] = base[start:start + k]
        pos += k
    first = (-offset) % RANDOM_BYTES
    for off in range(first, n - STAMP.size + 1, RANDOM_BYTES):
        STAMP.pack_into(buf, off, salt, (offset + off) // RANDOM_BYTES)


def fill_file(path: Path, size: int, salt: int, chunk: int = 64 * MiB) -> None:
    """Write ``size`` bytes of :func:`fill_pattern` data to ``path`` (from its start)."""
    buf = bytearray(min(chunk, size))
    with open(path, "r+b" if path.exists() else "wb") as f:
        for off in range(0, size, chunk):
            k = min(chunk, size - off)
            view = memoryview(buf)[:k]
            fill_pattern(view, salt, off)
            f.write(view)


def first_difference(path: Path, data: bytes | bytearray | memoryview,
                     chunk: int = 64 * MiB) -> int | None:
    """Offset of the first 4 KiB block where the file at ``path`` differs from ``data``
    (None: the file starts with exactly ``data``)."""
    view = memoryview(data).cast("B")
    with open(path, "rb") as f:
        for off in range(0, len(view), chunk):
            want = view[off:off + chunk].tobytes()
            got = f.read(len(want))
            if got != want:
                for b in range(0, len(want), RANDOM_BYTES):
                    if got[b:b + RANDOM_BYTES] != want[b:b + RANDOM_BYTES]:
                        return off + b
                return off + len(got)
    return None


# --------------------------------------------------------------------------- target


@dataclass
class BenchTarget:
    """The namespace (bridge ``br0`` with ``topo.peer_ip``) and tgtd serving one LUN."""

    topo: Topology
    tgtd: Tgtd
    tid: int
    size: int
    #: The TCP congestion control tgtd's connections use (the namespace's default).
    cc: str = "?"
    #: ``--pin``: the CPUs the initiators run on and tgtd's (None: not pinned).
    pin: CpuSplit | None = None

    @property
    def host(self) -> str:
        """The portal address (on the namespace's bridge)."""
        return str(self.topo.peer_addr)

    @property
    def url(self) -> str:
        """``iscsi://host/iqn/1``."""
        return f"iscsi://{self.host}/{IQN}/1"

    @property
    def lun_path(self) -> Path:
        """The LUN's backing file."""
        return self.tgtd.lun_path(self.tid, 1)


@dataclass(frozen=True)
class CpuSplit:
    """``--pin``: disjoint CPU sets for the initiator (bootinit's process, iscsi-perf,
    qemu-img: each in turn) and for tgtd (every thread), as if they were two machines.
    Unpinned, the scheduler shares every CPU among tgtd's threads, the initiator and
    the kernel's network work, so the result depends on how much CPU the initiator
    leaves tgtd, and on where the scheduler happens to put the two (the bimodal rounds
    of an unpinned run)."""

    initiator: frozenset[int]
    target: frozenset[int]

    def text(self) -> str:
        """E.g. ``initiator on CPU 0, tgtd on CPU 1``."""
        def cpus(s: frozenset[int]) -> str:
            return ("CPU " if len(s) == 1 else "CPUs ") + ",".join(map(str, sorted(s)))
        return f"initiator on {cpus(self.initiator)}, tgtd on {cpus(self.target)}"

    def as_json(self) -> dict[str, list[int]]:
        """The two sets as sorted lists."""
        return {"initiator": sorted(self.initiator), "target": sorted(self.target)}


def cpu_split(cpus: Iterable[int] | None = None) -> CpuSplit:
    """Split ``cpus`` (default: those this process may use) into two halves, the lower
    for the initiator, the upper for tgtd; :class:`BenchError` with fewer than two."""
    avail = sorted(os.sched_getaffinity(0) if cpus is None else set(cpus))
    if len(avail) < 2:
        raise BenchError(f"--pin needs two CPUs, this process may use {len(avail)} "
                         f"({','.join(map(str, avail)) or 'none'})")
    half = len(avail) // 2
    return CpuSplit(frozenset(avail[:half]), frozenset(avail[half:]))


def pin_threads(pid: int, cpus: frozenset[int]) -> int:
    """Restrict every thread of process ``pid`` to ``cpus`` (threads it starts later
    inherit it); returns how many were pinned. A thread that ends meanwhile is skipped;
    :class:`BenchError` when the process is gone."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as e:
        raise BenchError(f"cannot pin process {pid}: {e}") from e
    done = 0
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)
            done += 1
    if not done:
        raise BenchError(f"cannot pin process {pid}: no thread left")
    return done


#: ``--pin``'s help, shared by the bench scripts (each says which of its parts it affects).
PIN_HELP = ("tgtd on the upper half of the CPUs, every initiator (ours and the tools, each "
            "in turn) on the lower half, as if on two machines (default: not pinned, the "
            "scheduler shares them)")

_CC_SYSCTL = "net.ipv4.tcp_congestion_control"


def namespace_cc(netns: str, set_to: str | None = None) -> str:
    """The default TCP congestion control of ``netns`` (a new namespace inherits the
    machine's), first set to ``set_to`` if given; :class:`BenchError` naming the
    algorithm when the kernel refuses it (a namespace may only choose those in
    ``net.ipv4.tcp_allowed_congestion_control``)."""
    def sysctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", netns, "sysctl", *args],
                              capture_output=True, text=True, check=False)

    if set_to is not None:
        done = sysctl("-qw", f"{_CC_SYSCTL}={set_to}")
        if done.returncode:
            allowed = sysctl("-n", "net.ipv4.tcp_allowed_congestion_control")
            raise BenchError(f"target congestion control {set_to!r} refused in namespace "
                             f"{netns}: {done.stderr.strip()} (allowed there: "
                             f"{allowed.stdout.strip() or '?'})")
    got = sysctl("-n", _CC_SYSCTL)
    return got.stdout.strip() if got.returncode == 0 else "?"


@contextlib.contextmanager
def bench_target(size: int, *, mtu: int = 9000, lun_dir: str = "/dev/shm",
                 params: dict[str, str] | None = None, salt: int = 1,
                 prefix: str = "bio", cc: str | None = None,
                 pin: bool = False) -> Iterator[BenchTarget]:
    """A fresh namespace + bridge (MTU ``mtu``) + tgtd with one LUN of ``size`` bytes in
    ``lun_dir``, filled with :func:`fill_pattern` data; all removed on exit. ``cc``: the
    TCP congestion control for the namespace (so for tgtd's connections, ours and the
    tools' alike) instead of the machine's default. ``pin``: split this process's CPUs
    (:func:`cpu_split`), tgtd's threads on the upper half and, until the exit, this
    process (so bootinit's stack and every tool it starts) on the lower half."""
    split = cpu_split() if pin else None
    with topology(mtu=mtu, bridge=True, open_tap=False, prefix=prefix) as topo:
        in_use = namespace_cc(topo.netns, cc)
        with Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260),
                  lun_dir=lun_dir) as tgtd, _initiator_cpus(split):
            tid = tgtd.add_target(IQN, [size])
            for name, value in (params or {}).items():
                tgtd.set_param(tid, name, value)
            if split is not None:
                pid = tgtd.pid
                if pid is None:
                    raise BenchError("tgtd is not running: nothing to pin")
                pin_threads(pid, split.target)
            target = BenchTarget(topo, tgtd, tid, size, in_use, split)
            fill_file(target.lun_path, size, salt)
            yield target


@contextlib.contextmanager
def _initiator_cpus(split: CpuSplit | None) -> Iterator[None]:
    """This process (and what it starts meanwhile) on ``split.initiator``, then back."""
    if split is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, split.initiator)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Bootinit:
    """Our side: a TAP on the bridge, the stack, an initiator and the LUN's device."""

    tap: TapLink
    loop: Loop
    stack: NetStack
    initiator: Initiator
    dev: BlockDevice


@contextlib.contextmanager
def bootinit_device(target: BenchTarget, mtu: int, *, queue_depth: int = 32,
                    digests: bool = False, offload: bool = True) -> Iterator[Bootinit]:
    """Attach a TAP of ``mtu`` to the bridge (with checksum/GSO offloads, the product's
    default, unless ``offload`` is False), start our stack, log in, open LUN 1."""
    topo = target.topo
    tap = TapLink(mtu=mtu, netns=topo.netns, bridge=BRIDGE_NAME, offload=offload)
    try:
        loop = Loop()
        stack = NetStack(loop, tap, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            ini = Initiator(stack)
            dev = ini.open_block_device(target.url, queue_depth=queue_depth, digests=digests)
            try:
                yield Bootinit(tap, loop, stack, ini, dev)
            finally:
                ini.logout()
        finally:
            stack.close()
            loop.close()
    finally:
        tap.close()


# --------------------------------------------------------------------------- bootinit I/O


Issue = Callable[[IoCallback], IoRequest | None]


def run_pipeline(dev: BlockDevice, qd: int, issue: Issue, *, seconds: float | None = None,
                 check: Callable[[IoRequest], None] | None = None,
                 timeout: float = 600.0) -> tuple[int, float]:
    """Keep ``qd`` requests in flight: ``issue(callback)`` makes the next one (None: no
    more); new ones are issued from the completion callbacks. Stops issuing after
    ``seconds``. Returns (requests completed, seconds from first issue to last done)."""
    inflight = 0
    done = 0
    stop = False
    errors: list[BaseException] = []
    end = None if seconds is None else time.perf_counter() + seconds

    def on_done(req: IoRequest) -> None:
        nonlocal inflight, done, stop
        inflight -= 1
        done += 1
        if req.error is not None:
            errors.append(req.error)
            stop = True
        elif check is not None:
            try:
                check(req)
            except BenchError as e:
                errors.append(e)
                stop = True
        fill()

    def fill() -> None:
        nonlocal inflight, stop
        while not stop and inflight < qd:
            if end is not None and time.perf_counter() >= end:
                stop = True
                break
            inflight += 1
            if issue(on_done) is None:
                inflight -= 1
                stop = True

    t0 = time.perf_counter()
    fill()
    dev.session.wait(lambda: stop and inflight == 0, "benchmark I/O", timeout)
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return done, elapsed


class SequentialCursor:
    """Issues sequential requests over ``data`` (from LBA 0) in ``request``-byte
    pieces, reads into it or writes from it, for :func:`run_pipeline`; with ``until``
    (a ``time.perf_counter`` value) it wraps round at the end and goes on until then,
    after at least one whole pass. ``moved``: the bytes of the requests issued."""

    def __init__(self, dev: BlockDevice, kind: str, data: bytearray, request: int,
                 until: float | None = None) -> None:
        self.dev = dev
        self.read = kind == "read"
        self.view = memoryview(data)
        self.request = request
        self.until = until
        self.pos = 0
        self.moved = 0

    def __call__(self, cb: IoCallback) -> IoRequest | None:
        view = self.view
        if self.pos >= len(view):
            if self.until is None:
                return None
            self.pos = 0
        if self.until is not None and self.moved >= len(view) and \
                time.perf_counter() >= self.until:
            return None
        pos = self.pos
        k = min(self.request, len(view) - pos)
        piece = view[pos:pos + k]
        lba = pos // self.dev.block_size
        self.pos = pos + k
        self.moved += k
        if self.read:
            return self.dev.submit_read(lba, k // self.dev.block_size, piece, cb)
        return self.dev.submit_write(lba, piece, cb)


def sequential(dev: BlockDevice, kind: str, data: bytearray, request: int,
               qd: int) -> tuple[int, float]:
    """Read into / write from ``data`` (from LBA 0) in ``request``-byte requests."""
    n, elapsed = run_pipeline(dev, qd, SequentialCursor(dev, kind, data, request))
    if kind == "write":
        t0 = time.perf_counter()
        dev.flush()
        elapsed += time.perf_counter() - t0
    return n, elapsed


def cyclic_reads(dev: BlockDevice, data: bytearray, request: int, qd: int,
                 seconds: float) -> tuple[int, float, int]:
    """Sequential reads into ``data`` (from LBA 0, wrapping round at its end) for
    ``seconds``: iscsi-perf's sequential mode (``-t``), which reads the LUN cyclically
    for its time. At least one whole pass, so every byte of ``data`` is read again
    (the caller compares it with the LUN). Returns (requests, seconds, bytes)."""
    cursor = SequentialCursor(dev, "read", data, request,
                              until=time.perf_counter() + seconds)
    n, elapsed = run_pipeline(dev, qd, cursor)
    return n, elapsed, cursor.moved


def random_reads(dev: BlockDevice, expect: bytes | bytearray, qd: int, count: int,
                 seconds: float, seed: int) -> tuple[int, float]:
    """4 KiB reads at random 4 KiB-aligned offsets within ``len(expect)``, each checked
    against ``expect``; bounded by ``count`` and ``seconds``."""
    bs = dev.block_size
    per = RANDOM_BYTES // bs
    slots = len(expect) // RANDOM_BYTES
    rng = random.Random(seed)
    issued = 0

    def issue(cb: IoCallback) -> IoRequest | None:
        nonlocal issued
        if issued >= count:
            return None
        issued += 1
        return dev.submit_read(rng.randrange(slots) * per, per, None, cb)

    def check(req: IoRequest) -> None:
        off = req.lba * bs
        assert req.buffer is not None
        if req.buffer.tobytes() != expect[off:off + RANDOM_BYTES]:
            raise BenchError(f"random read at LBA {req.lba}: data differs from the LUN file")

    return run_pipeline(dev, qd, issue, seconds=seconds, check=check)


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One measurement."""

    test: str
    initiator: str
    mtu: int | None
    bytes: int
    seconds: float
    requests: int
    request_bytes: int
    qd: int
    note: str = ""
    #: bootinit ÷ iscsi-perf over the target namespace's loopback (its ``mtu`` None).
    ratio_iscsi_perf: float | None = None
    ratio_qemu_img: float | None = None
    #: bootinit ÷ iscsi-perf over a veth of this row's MTU (``seq-read``, ``-1st``).
    ratio_iscsi_perf_mtu: float | None = None
    #: CPU (user + system) of the initiator's process per MiB moved, in ms: bootinit's
    #: own process; a tool's whole run (start and login included) from its rusage.
    cpu_ms_per_mib: float | None = None
    #: tgtd's CPU (every thread) per MiB moved during that initiator's run, in ms.
    target_ms_per_mib: float | None = None

    @property
    def mb_per_s(self) -> float:
        """10**6 bytes per second."""
        return self.bytes / MB / self.seconds if self.seconds > 0 else 0.0

    @property
    def iops(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (with MB/s and IOPS)."""
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 3),
                "iops": round(self.iops, 1)}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far, from
    ``/proc/PID/stat`` (clock ticks: 10 ms steps)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSpan:
    """CPU used between :meth:`start` and :meth:`stop` by this process (bootinit), by
    the children reaped meanwhile (a tool run by :func:`run_tool`) and by tgtd.

    On two CPUs shared with tgtd, an initiator's CPU per byte is what it takes from the
    target: these columns say whose cost a throughput difference is."""

    def __init__(self, target: BenchTarget) -> None:
        popen = target.tgtd.popen
        self._tgtd = popen.pid if popen is not None else None
        self._t0 = self._self0 = self._kids0 = 0.0
        self.own = self.children = 0.0
        self.tgtd: float | None = None

    @staticmethod
    def _usage(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    def _tgtd_now(self) -> float | None:
        if self._tgtd is None:
            return None
        try:
            return process_cpu(self._tgtd)
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> CpuSpan:
        self._self0 = self._usage(resource.RUSAGE_SELF)
        self._kids0 = self._usage(resource.RUSAGE_CHILDREN)
        t = self._tgtd_now()
        self._t0 = -1.0 if t is None else t
        return self

    def stop(self) -> CpuSpan:
        self.own = self._usage(resource.RUSAGE_SELF) - self._self0
        self.children = self._usage(resource.RUSAGE_CHILDREN) - self._kids0
        t = self._tgtd_now()
        self.tgtd = None if t is None or self._t0 < 0 else t - self._t0
        return self

    def stamp(self, row: Row, tool: bool = False) -> Row:
        """Set ``row``'s CPU columns from this span (``tool``: the initiator is the
        reaped child, not this process)."""
        mib = row.bytes / MiB
        if mib > 0:
            row.cpu_ms_per_mib = (self.children if tool else self.own) * 1000 / mib
            if self.tgtd is not None:
                row.target_ms_per_mib = self.tgtd * 1000 / mib
        return row


@dataclass
class Settings:
    """What the run measures (see ``--help``)."""

    size: int
    mtus: list[int]
    request: int = 1 * MiB
    seq_qd: int = 16
    random_count: int = 20000
    random_seconds: float = 5.0
    perf_seconds: int = 3
    tools: list[str] = field(default_factory=lambda: ["iscsi-perf", "qemu-img"])
    params: dict[str, str] = field(default_factory=dict)
    lun_dir: str = "/dev/shm"
    tool_timeout: float = 300.0
    offload: bool = True
    #: The target namespace's TCP congestion control (None: the machine's default).
    target_cc: str | None = None
    #: Initiators and tgtd on disjoint CPUs (:class:`CpuSplit`).
    pin: bool = False


def measure_bootinit(target: BenchTarget, s: Settings, mtu: int, salt: int,
                     info: dict[str, Any]) -> list[Row]:
    """bootinit rows for one MTU; checks every byte moved."""
    rows: list[Row] = []
    size = target.size
    with bootinit_device(target, mtu, queue_depth=32, offload=s.offload) as b:
        dev = b.dev
        p = dev.session.params
        info["negotiated"] = {
            "MaxRecvDataSegmentLength(target)": p.max_xmit_data_segment_length,
            "MaxRecvDataSegmentLength(ours)": p.max_recv_data_segment_length,
            "MaxBurstLength": p.max_burst_length, "FirstBurstLength": p.first_burst_length,
            "InitialR2T": p.initial_r2t, "ImmediateData": p.immediate_data,
            "block_size": dev.block_size}
        data = bytearray(size)
        fill_pattern(memoryview(data), salt)
        span = CpuSpan(target).start()
        n, t = sequential(dev, "write", data, s.request, s.seq_qd)
        span.stop()
        bad = first_difference(target.lun_path, data)
        if bad is not None:
            raise BenchError(f"bootinit MTU {mtu}: written data not in the LUN file at "
                             f"offset {bad}")
        rows.append(span.stamp(Row("seq-write", "bootinit", mtu, size, t, n, s.request,
                                   s.seq_qd)))
        got = bytearray(size)
        span = CpuSpan(target).start()
        n, t = sequential(dev, "read", got, s.request, s.seq_qd)
        span.stop()
        if got != data:
            raise BenchError(f"bootinit MTU {mtu}: data read differs from data written")
        rows.append(span.stamp(Row("seq-read-1st", "bootinit", mtu, size, t, n, s.request,
                                   s.seq_qd)))
        # as iscsi-perf measures: the LUN read round and round for its time
        span = CpuSpan(target).start()
        n, t, moved = cyclic_reads(dev, got, s.request, s.seq_qd, s.perf_seconds)
        span.stop()
        if got != data:
            raise BenchError(f"bootinit MTU {mtu}: data read again differs from data "
                             f"written")
        rows.append(span.stamp(Row("seq-read", "bootinit", mtu, moved, t, n,
                                   s.request, s.seq_qd)))
        del got
        for qd in (1, 32):
            span = CpuSpan(target).start()
            n, t = random_reads(dev, data, qd, s.random_count, s.random_seconds, seed=qd)
            span.stop()
            rows.append(span.stamp(Row(f"rand-read-qd{qd}", "bootinit", mtu,
                                       n * RANDOM_BYTES, t, n, RANDOM_BYTES, qd)))
        counters = dev.session.counters()
        info.setdefault("bootinit_counters", {})[str(mtu)] = {
            k: counters.get(k, {}) for k in ("commands", "errors", "recovery")}
    return rows


# --------------------------------------------------------------------------- tools


def run_tool(target: BenchTarget, argv: list[str], timeout: float,
             graceful: bool = False, netns: str | None = None) -> tuple[str, float]:
    """Run ``argv`` inside the target's namespace (or ``netns``: e.g. a
    :func:`veth_client`'s); (stdout, wall seconds). On timeout it is sent SIGTERM (its
    output is kept when ``graceful``), then SIGKILL — by its PID only; interrupted
    (Ctrl-C), it is killed and reaped before this returns."""
    full = ["ip", "netns", "exec", target.topo.netns if netns is None else netns, *argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    elapsed = time.perf_counter() - t0
    if (timed_out and not graceful) or (proc.returncode != 0 and not timed_out):
        why = f"no end after {timeout:.0f} s" if timed_out else f"exit {proc.returncode}"
        tail = "\n".join((err or out).strip().splitlines()[-5:])
        raise BenchError(f"{' '.join(argv)}: {why}: {tail}")
    return out, elapsed


_PERF_CAPACITY = re.compile(r"capacity is (\d+) blocks or (\d+) byte")
_PERF_IOPS = re.compile(r"iops average (\d+)")


def parse_iscsi_perf(out: str) -> tuple[int, float]:
    """(block size, average IOPS) from iscsi-perf's output."""
    cap = _PERF_CAPACITY.search(out)
    iops = _PERF_IOPS.findall(out)
    if cap is None or not iops:
        raise BenchError(f"iscsi-perf: cannot parse its output: {out.strip()[-300:]!r}")
    blocks, nbytes = int(cap.group(1)), int(cap.group(2))
    return nbytes // blocks, float(iops[-1])


def iscsi_perf_row(target: BenchTarget, s: Settings, test: str, request: int, qd: int,
                   seconds: int, rand: bool, client: VethClient | None = None) -> Row:
    """One time-bounded iscsi-perf run (it reads the LUN cyclically, or at random):
    inside the target's namespace over loopback (``mtu`` None), or from ``client``'s
    namespace over its veth (``mtu`` the veth's)."""
    blocks = max(1, request // 512)
    argv = ["iscsi-perf", "-t", str(seconds), "-b", str(blocks), "-m", str(qd)]
    if rand:
        argv.append("-r")
    span = CpuSpan(target).start()
    out, _ = run_tool(target, [*argv, target.url], seconds + 30, graceful=True,
                      netns=None if client is None else client.netns)
    span.stop()
    bs, iops = parse_iscsi_perf(out)
    if bs * blocks != request:
        raise BenchError(f"iscsi-perf: block size {bs}, so -b {blocks} is not {request} bytes")
    requests = round(iops * seconds)
    note = "unaligned 512 B offsets" if rand else "cycles over the LUN"
    if client is not None:
        note += f", over a veth of MTU {client.mtu} from its own namespace"
    return span.stamp(Row(test, "iscsi-perf", None if client is None else client.mtu,
                          requests * request, float(seconds), requests, request, qd, note),
                      tool=True)


#: Host number, in the bridge's subnet, of the first veth client (10.77.0.200 in the
#: harness's 10.77.0.0/24, where the bridge is .1 and bootinit's TAP .2); the client of
#: the ``index``-th MTU is host ``VETH_CLIENT_HOST + index``.
VETH_CLIENT_HOST = 200


@dataclass(frozen=True)
class VethClient:
    """A namespace of its own joined to the target's bridge by a veth pair (see
    :func:`veth_client`): ``dev`` in ``netns`` holds ``address``, its peer
    ``bridge_port`` is a port of ``br0`` in the target's namespace; both of MTU ``mtu``."""

    netns: str
    dev: str
    bridge_port: str
    address: IPv4Interface
    mtu: int


def veth_client_address(topo: Topology, index: int) -> IPv4Interface:
    """The address of the ``index``-th veth client: host ``VETH_CLIENT_HOST + index`` of
    the bridge's subnet, which is neither the bridge's nor bootinit's address (else
    :class:`BenchError`)."""
    net = topo.peer_ip.network
    host = VETH_CLIENT_HOST + index
    if index < 0 or host >= net.num_addresses - 1:
        raise BenchError(f"no veth client address {index} in {net} (host {host})")
    addr = net.network_address + host
    if addr in (topo.peer_addr, topo.our_ip.ip):
        raise BenchError(f"veth client address {addr} is taken in {net}")
    return IPv4Interface((addr, net.prefixlen))


@contextlib.contextmanager
def veth_client(target: BenchTarget, mtu: int, index: int = 0) -> Iterator[VethClient]:
    """A client namespace of its own, joined to the target namespace's bridge by a veth
    pair of ``mtu``: the target-side end a port of ``br0``, the client end with
    :func:`veth_client_address` (``index``). For an initiator that the kernel's TCP
    carries over a link of the same MTU as bootinit's TAP, rather than over the target
    namespace's loopback. Everything is removed on exit, also on errors and Ctrl-C:
    the bridge port (which deletes the pair), the target's ARP entry for the client,
    the namespace."""
    topo = target.topo
    bridge = topo.bridge or BRIDGE_NAME
    address = veth_client_address(topo, index)

    def remove(client: VethClient) -> None:
        # Deleting one end deletes both, at once (a deleted namespace's devices go
        # later, from the kernel's cleanup work).
        nsh.delete_link(client.bridge_port, topo.netns)
        nsh.run(["ip", "neigh", "flush", "to", str(address.ip)], netns=topo.netns,
                check=False)

    # Unwound in reverse: the pair and the ARP entry, then the namespace.
    with contextlib.ExitStack() as stack:
        try:
            ns = stack.enter_context(nsh.namespace("bvc"))
            client = VethClient(ns, nsh.unique_name("bvc"), nsh.unique_name("bvt"),
                                address, mtu)
            stack.callback(remove, client)
            # IPv6 off, as in the harness's namespaces: no router solicitations.
            nsh.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1"], netns=ns)
            nsh.add_veth(topo.netns, client.bridge_port, ns, client.dev)
            nsh.set_mtu(client.bridge_port, mtu, topo.netns)
            nsh.set_mtu(client.dev, mtu, ns)
            nsh.enslave(topo.netns, client.bridge_port, bridge)
            nsh.link_up(client.bridge_port, topo.netns)
            nsh.add_address(ns, client.dev, str(address))
            nsh.link_up(client.dev, ns)
        except nsh.NetnsError as e:
            raise BenchError(f"veth client of MTU {mtu}: {e}") from e
        yield client


def iscsi_perf_veth_row(target: BenchTarget, s: Settings, mtu: int, index: int = 0) -> Row:
    """iscsi-perf's ``seq-read`` (the loopback row's ``-t``/``-b``/``-m``) from a
    :func:`veth_client` of ``mtu``: the reference at bootinit's own MTU (row ``mtu``
    set; the loopback row's is None). All it made is gone when it returns or raises."""
    with veth_client(target, mtu, index) as client:
        return iscsi_perf_row(target, s, "seq-read", s.request, s.seq_qd, s.perf_seconds,
                              False, client)


def qemu_img_rows(target: BenchTarget, s: Settings) -> list[Row]:
    """qemu-img convert iscsi:// -> null-co (read) and tmpfs file -> iscsi:// (write)."""
    size = target.size
    rows = []
    sink = f"driver=null-co,size={size}"
    span = CpuSpan(target).start()
    _, t = run_tool(target, ["qemu-img", "convert", "-n", "-f", "raw", target.url,
                             "--target-image-opts", sink], s.tool_timeout)
    span.stop()
    rows.append(span.stamp(Row("seq-read", "qemu-img", None, size, t, 0, 0, 8,
                               "convert to null-co; wall time incl. start+login"), tool=True))
    fd, name = tempfile.mkstemp(prefix="bootinit-bench-", suffix=".img", dir=s.lun_dir)
    os.close(fd)
    src = Path(name)
    try:
        fill_file(src, size, salt=777)
        span = CpuSpan(target).start()
        _, t = run_tool(target, ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
                                 str(src), target.url], s.tool_timeout)
        span.stop()
        with open(src, "rb") as f:
            bad = first_difference(target.lun_path, f.read())
        if bad is not None:
            raise BenchError(f"qemu-img write: LUN file differs from the source at {bad}")
    finally:
        src.unlink(missing_ok=True)
    rows.append(span.stamp(Row("seq-write", "qemu-img", None, size, t, 0, 0, 8,
                               "convert from tmpfs file; wall time incl. start+login"),
                           tool=True))
    return rows


def tool_rows(target: BenchTarget, s: Settings, veth: bool = True) -> list[Row]:
    """iscsi-perf and qemu-img rows as ``s.tools`` asks: iscsi-perf's ``seq-read`` over
    the target namespace's loopback (``mtu`` None), then (``veth``) from a veth client
    per MTU of ``s.mtus`` (:func:`iscsi_perf_veth_row`; run_all measures those apart, so
    that one failing leaves the goals' loopback references standing), then its random
    reads (loopback only)."""
    rows: list[Row] = []
    if "iscsi-perf" in s.tools:
        rows.append(iscsi_perf_row(target, s, "seq-read", s.request, s.seq_qd,
                                   s.perf_seconds, False))
        if veth:
            for i, mtu in enumerate(s.mtus):
                rows.append(iscsi_perf_veth_row(target, s, mtu, i))
        rsec = max(1, math.ceil(s.random_seconds))
        for qd in (1, 32):
            rows.append(iscsi_perf_row(target, s, f"rand-read-qd{qd}", RANDOM_BYTES, qd,
                                       rsec, True))
    if "qemu-img" in s.tools:
        rows += qemu_img_rows(target, s)
    return rows


def reference_test(test: str) -> str:
    """The tools' test a bootinit test is compared with: ``seq-read-1st`` (our first
    pass after the write) with their ``seq-read``, every other test with itself."""
    return "seq-read" if test == "seq-read-1st" else test


#: bootinit's tests that also get a ratio against iscsi-perf over a veth of their MTU.
SAME_MTU_TESTS = ("seq-read", "seq-read-1st")

#: The name of that ratio (run_all's column; this table's ``/perf@MTU``).
SAME_MTU_RATIO = "iscsi-perf@mtu"

#: The references of the goals: the tools' loopback rows.
LOOPBACK_RATIOS = ("iscsi-perf", "qemu-img")


def references(test: str, mtu: int | None) -> dict[str, tuple[str, str, int | None]]:
    """The tools' rows a bootinit row of ``test`` at ``mtu`` is compared with, by ratio
    name, each as (test, initiator, MTU): ``iscsi-perf`` and ``qemu-img`` over the
    target namespace's loopback (MTU None) of :func:`reference_test`, and, for
    :data:`SAME_MTU_TESTS`, :data:`SAME_MTU_RATIO`: iscsi-perf over a veth of ``mtu``.
    Used by this table and by run_all's, so both compare with the same rows."""
    ref = reference_test(test)
    out: dict[str, tuple[str, str, int | None]] = {
        w: (ref, w, None) for w in LOOPBACK_RATIOS}
    if test in SAME_MTU_TESTS:
        out[SAME_MTU_RATIO] = (ref, "iscsi-perf", mtu)
    return out


def add_ratios(rows: list[Row]) -> None:
    """Fill the ratio columns of bootinit rows from the tools' rows (:func:`references`):
    ``ratio_iscsi_perf`` and ``ratio_qemu_img`` against their loopback rows,
    ``ratio_iscsi_perf_mtu`` against iscsi-perf over a veth of the row's MTU."""
    tools = {(r.test, r.initiator, r.mtu): r.mb_per_s for r in rows
             if r.initiator != "bootinit"}
    for r in rows:
        if r.initiator != "bootinit":
            continue
        got = {name: tools.get(key) for name, key in references(r.test, r.mtu).items()}
        ratio = {name: r.mb_per_s / v if v else None for name, v in got.items()}
        r.ratio_iscsi_perf = ratio["iscsi-perf"]
        r.ratio_qemu_img = ratio["qemu-img"]
        r.ratio_iscsi_perf_mtu = ratio.get(SAME_MTU_RATIO)


WARM_UP_REQUEST = 2 * MiB


def warm_up(target: BenchTarget, s: Settings) -> str:
    """Bring tgtd to the state every later measurement finds, before any is timed.

    tgtd allocates each command's buffer with malloc; glibc serves requests of 128 KiB
    and more with a fresh mmap (page-faulted, zeroed and unmapped per command) until it
    frees one such buffer of size N, after which it raises its mmap threshold to N and
    keeps buffers up to N on its heap. So whichever initiator ran first met a slower
    target: measured here, our 256 KiB reads went from 0.5-0.7 GB/s to 1.1-1.2 GB/s
    after tgtd had served one 2 MiB command, iscsi-perf's from 0.7-1.0 GB/s to 2.0-2.6.
    One untimed second of 2 MiB reads (iscsi-perf when measured, else our stack) does it
    for everybody."""
    blocks = WARM_UP_REQUEST // 512
    if "iscsi-perf" in s.tools:
        run_tool(target, ["iscsi-perf", "-t", "1", "-b", str(blocks), "-m", "4", target.url],
                 30, graceful=True)
        return "iscsi-perf, 1 s of 2 MiB reads"
    if target.size < WARM_UP_REQUEST:
        return "none (LUN smaller than 2 MiB)"
    with bootinit_device(target, max(s.mtus), queue_depth=4, offload=s.offload) as b:
        if b.dev.max_transfer_blocks * b.dev.block_size < WARM_UP_REQUEST:
            return "none (the LUN limits commands below 2 MiB)"
        n = min(target.size, 64 * MiB)
        sequential(b.dev, "read", bytearray(n - n % WARM_UP_REQUEST), WARM_UP_REQUEST, 4)
    return "bootinit, 2 MiB reads"


def run(s: Settings) -> tuple[list[Row], dict[str, Any]]:
    """Every measurement of the table, in one namespace on one tgtd LUN."""
    info: dict[str, Any] = {"size": s.size, "request": s.request, "seq_qd": s.seq_qd,
                            "offload": s.offload,
                            "random_count": s.random_count,
                            "random_seconds": s.random_seconds,
                            "perf_seconds": s.perf_seconds, "lun_dir": s.lun_dir,
                            "mtus": s.mtus, "tools": s.tools, "target_params": s.params,
                            "python": platform.python_version(),
                            "kernel": platform.release()}
    rows: list[Row] = []
    with bench_target(s.size, mtu=max(s.mtus), lun_dir=s.lun_dir, params=s.params,
                      cc=s.target_cc, pin=s.pin) as target:
        info["netns"] = target.topo.netns
        info["target_cc"] = target.cc
        info["pin"] = pin_json(target.pin)
        info["warm_up"] = warm_up(target, s)
        for i, mtu in enumerate(s.mtus):
            rows += measure_bootinit(target, s, mtu, 100 + i, info)
        rows += tool_rows(target, s)
    sort_rows(rows)
    add_ratios(rows)
    return rows, info


def row_order(test: str, initiator: str, mtu: int | None) -> tuple[int, int, int]:
    """Sort key of a row as the tables show them (this one and run_all's): by test
    (:data:`TESTS`), initiator (:data:`INITIATORS`), then MTU, a tool's loopback row
    (MTU None) before its veth rows."""
    return (TESTS.index(test), INITIATORS.index(initiator), -1 if mtu is None else mtu)


def sort_rows(rows: list[Row]) -> None:
    """Order ``rows`` as the table shows them, in place (:func:`row_order`)."""
    rows.sort(key=lambda r: row_order(r.test, r.initiator, r.mtu))


# --------------------------------------------------------------------------- output


def _size_text(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def pin_json(split: CpuSplit | None) -> dict[str, list[int]] | None:
    """The JSON form of a target's CPU split (None: not pinned)."""
    return None if split is None else split.as_json()


def pin_text(pin: dict[str, list[int]] | None) -> str:
    """The table header's words for :func:`pin_json`'s value."""
    if not pin:
        return "CPUs not pinned (the scheduler shares them all)"
    return CpuSplit(frozenset(pin["initiator"]), frozenset(pin["target"])).text()


def table(rows: list[Row], info: dict[str, Any]) -> str:
    """The human-readable table."""
    neg = info.get("negotiated", {})
    head = [f"iSCSI I/O against tgtd (TCP congestion control "
            f"{info.get('target_cc', '?')}; {pin_text(info.get('pin'))}), LUN "
            f"{_size_text(info['size'])} on tmpfs "
            f"({info['lun_dir']}), seq requests {_size_text(info['request'])} "
            f"qd {info['seq_qd']}; bootinit's TAP offloads "
            f"{'on' if info.get('offload', True) else 'off'}; MB = 10^6 B",
            "negotiated: " + ", ".join(f"{k}={v}" for k, v in neg.items()),
            "",
            f"{'test':<15} {'initiator':<10} {'MTU':>5} {'MB/s':>9} {'IOPS':>9} "
            f"{'requests':>9} {'seconds':>8} {'/iscsi-perf':>11} {'/perf@MTU':>9} "
            f"{'/qemu-img':>9} {'cpu':>6} {'tgtd':>6}  note   (cpu, tgtd: CPU ms per MiB "
            f"moved; /iscsi-perf: over loopback, /perf@MTU: over a veth of the row's MTU)"]
    lines = head
    for r in rows:
        iops = f"{r.iops:9.0f}" if r.request_bytes == RANDOM_BYTES else f"{'-':>9}"
        reqs = f"{r.requests:9d}" if r.requests else f"{'-':>9}"
        rp = f"{r.ratio_iscsi_perf:11.2f}" if r.ratio_iscsi_perf is not None else f"{'-':>11}"
        rq = f"{r.ratio_qemu_img:9.2f}" if r.ratio_qemu_img is not None else f"{'-':>9}"
        rm = (f"{r.ratio_iscsi_perf_mtu:9.2f}" if r.ratio_iscsi_perf_mtu is not None
              else f"{'-':>9}")
        mtu = str(r.mtu) if r.mtu is not None else "-"
        secs = f"{r.seconds:8.2f}" if r.seconds >= 0.1 else f"{r.seconds:8.4f}"  # (tiny LUNs)
        cpu = f"{r.cpu_ms_per_mib:6.2f}" if r.cpu_ms_per_mib is not None else f"{'-':>6}"
        tgt = (f"{r.target_ms_per_mib:6.2f}" if r.target_ms_per_mib is not None
               else f"{'-':>6}")
        lines.append(f"{r.test:<15} {r.initiator:<10} {mtu:>5} {r.mb_per_s:9.1f} {iops} "
                     f"{reqs} {secs} {rp} {rm} {rq} {cpu} {tgt}  {r.note}".rstrip())
    return "\n".join(lines)


def parse_param(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` for ``--target-param``."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G",
                    help="LUN size = sequential transfer size (default 1G; 256M is quicker)")
    ap.add_argument("--mtu", type=int, action="append",
                    help="MTU of our TAP (repeatable; default 9000)")
    ap.add_argument("--request-kib", type=int, default=1024,
                    help="sequential request size in KiB, iscsi-perf's too (default "
                         "1024: one READ/WRITE per request)")
    ap.add_argument("--seq-qd", type=int, default=16, help="sequential queue depth")
    ap.add_argument("--random-count", type=int, default=20000,
                    help="most random 4 KiB reads per queue depth (bootinit)")
    ap.add_argument("--random-seconds", type=float, default=5.0,
                    help="most seconds per random test (bootinit; iscsi-perf runs this "
                         "long, rounded up)")
    ap.add_argument("--perf-seconds", type=int, default=3,
                    help="seconds of iscsi-perf's sequential read")
    ap.add_argument("--no-iscsi-perf", action="store_true", help="skip iscsi-perf")
    ap.add_argument("--no-qemu-img", action="store_true", help="skip qemu-img")
    ap.add_argument("--target-param", type=parse_param, action="append", default=[],
                    metavar="NAME=VALUE", help="tgtd target parameter (repeatable), e.g. "
                    "MaxRecvDataSegmentLength=262144")
    ap.add_argument("--lun-dir", default="/dev/shm", help="where the LUN file lives")
    ap.add_argument("--target-cc", metavar="NAME",
                    help="TCP congestion control of the target's namespace (default: "
                         "the machine's, e.g. bbr or cubic)")
    ap.add_argument("--pin", action="store_true", help=PIN_HELP)
    ap.add_argument("--offload", choices=("on", "off"), default="on",
                    help="bootinit's TAP checksum/GSO offloads (default on, as the CLI)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-file", type=Path, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    request = args.request_kib * KiB
    if size % request or size < request:
        ap.error(f"--size {args.size} must be a multiple of --request-kib {args.request_kib}")
    if not (1 <= args.seq_qd <= 128 and args.random_count >= 1
            and 0.1 <= args.random_seconds <= 120 and 1 <= args.perf_seconds <= 120):
        ap.error("--seq-qd 1..128, --random-count >= 1, --random-seconds 0.1..120, "
                 "--perf-seconds 1..120")
    tools = [t for t, off in (("iscsi-perf", args.no_iscsi_perf),
                              ("qemu-img", args.no_qemu_img)) if not off]
    s = Settings(size=size, mtus=args.mtu or [9000], request=request, seq_qd=args.seq_qd,
                 random_count=args.random_count, random_seconds=args.random_seconds,
                 perf_seconds=args.perf_seconds, tools=tools,
                 params=dict(args.target_param), lun_dir=args.lun_dir,
                 offload=args.offload == "on", target_cc=args.target_cc, pin=args.pin)
    # SIGTERM unwinds like Ctrl-C: processes stopped, namespace and LUN files removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    problem = environment_problem()
    if problem is not None:
        print(f"iscsi_io: cannot run: {problem}", file=sys.stderr)
        return 2
    try:
        rows, info = run(s)
    except BenchError as e:
        print(f"iscsi_io: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("iscsi_io: interrupted (everything started was stopped and removed)",
              file=sys.stderr)
        return 130
    doc = {"info": info, "rows": [r.as_dict() for r in rows]}
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1) if args.json else table(rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
