"""Profile one transfer through bootinit (or our bare TCP) and print where the time goes.

Modes (each in a fresh namespace, torn down afterwards; needs root):

* ``read`` / ``write`` — ``--size`` bytes sequentially through bootinit over a TAP of
  ``--mtu`` to tgtd (LUN on tmpfs), ``--request-kib`` requests, ``--qd`` in flight
  (``--digests`` turns CRC32C header and data digests on);
* ``rand-read`` — ``--count`` 4 KiB random reads at queue depth ``--qd``;
* ``tcp-recv`` / ``tcp-send`` — a raw TCP bulk transfer between our stack and a kernel
  peer (tests/integration/tcp_peer.py) in the namespace (``tcp-recv``: the peer's
  ``BULK``, its data generated before the clock starts, so its Python does not pace us);
  these also print TCP segments in and out per MiB (out: mostly our ACKs).

Only the transfer runs under the profiler (setup, login and checks do not). Prints the
throughput under the profiler, our process's CPU time per MiB (``getrusage``: user and
system) and Python function calls per MiB, then the top ``--top`` functions by cumulative
time and by own time, and own time summed per source file. ``--no-profile`` runs the
transfer without a profiler and prints only the throughput and the CPU time per MiB (the
number to compare before/after a change: the profiler's own overhead is out of it).
``--pin`` (iSCSI modes) runs tgtd and this process on disjoint CPUs, as
``bench/run_all.py --pin`` does. ``--offload on|off`` chooses the TAP's checksum/GSO
offloads (64 KiB frames from the kernel): by default on for the iSCSI modes (the
product's default) and off for the ``tcp-*`` modes, as ``bench/run_all.py``'s rows
have both. ``--output FILE`` keeps the cProfile data (``python -m pstats FILE``, snakeviz
...); ``--pyinstrument`` uses pyinstrument's sampling profiler instead when it is
installed (less overhead, call-tree output).

Example: ``sudo python bench/profile.py read --size 256M --top 30``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as ``python bench/profile.py``, this file's directory is sys.path[0], where it
# would shadow the standard library's ``profile`` module that cProfile imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from bench.iscsi_io import (  # noqa: E402
    MB,
    PIN_HELP,
    BenchError,
    BenchTarget,
    KiB,
    Settings,
    bench_target,
    bootinit_device,
    fill_pattern,
    first_difference,
    random_reads,
    sequential,
    warm_up,
)
from bootinit.blockdev import BlockDevice  # noqa: E402
from bootinit.targets import parse_size  # noqa: E402
from netstack.harness import environment_problem, topology  # noqa: E402
from netstack.link.tap import TapLink  # noqa: E402
from netstack.loop import Loop  # noqa: E402
from netstack.stack import NetStack, StackConfig  # noqa: E402
from tests.integration.tcp_peer import READY, stream  # noqa: E402

MODES = ("read", "write", "rand-read", "tcp-recv", "tcp-send")
PEER = str(ROOT / "tests" / "integration" / "tcp_peer.py")
PEER_PORT = 5001


@dataclass
class Outcome:
    """What the profiled transfer moved."""

    nbytes: int
    seconds: float
    requests: int = 0
    #: Our process's CPU seconds during the transfer (getrusage: user, system).
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    #: TCP segments received and sent during the transfer (tcp-* modes).
    segments: tuple[int, int] | None = None
    #: ``--pin``: where the initiator and tgtd ran (iSCSI modes; None: not pinned).
    pinned: str | None = None
    #: Whether the TAP carried checksum/GSO offloads (the link's own flag).
    offload: bool = False

    @property
    def mb_per_s(self) -> float:
        """10**6 bytes per second (under the profiler)."""
        return self.nbytes / MB / self.seconds if self.seconds > 0 else 0.0


class Profiled:
    """Runs a callable under cProfile (or pyinstrument) and keeps the result."""

    def __init__(self, use_pyinstrument: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.profile: cProfile.Profile | None = None
        self.pyinstrument_text: str | None = None
        self._pyi: Any = None
        if use_pyinstrument:
            try:
                self._pyi = importlib.import_module("pyinstrument")
            except ImportError:
                raise SystemExit("profile: --pyinstrument: pyinstrument is not installed "
                                 "(pip install pyinstrument)") from None

    def __call__(self, fn: Callable[[], Outcome]) -> Outcome:
        """Run ``fn`` under the profiler (if enabled); note our CPU time during it."""
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        out = self._run(fn)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out.cpu_user = r1.ru_utime - r0.ru_utime
        out.cpu_sys = r1.ru_stime - r0.ru_stime
        return out

    def _run(self, fn: Callable[[], Outcome]) -> Outcome:
        if not self.enabled:
            return fn()
        if self._pyi is not None:
            prof = self._pyi.Profiler(interval=0.0005)
            prof.start()
            try:
                out = fn()
            finally:
                prof.stop()
            self.pyinstrument_text = str(prof.output_text(unicode=False, color=False))
            return out
        self.profile = cProfile.Profile()
        self.profile.enable()
        try:
            return fn()
        finally:
            self.profile.disable()


# --------------------------------------------------------------------------- transfers


def iscsi_transfer(args: argparse.Namespace, run: Profiled) -> Outcome:
    """read / write / rand-read through bootinit to tgtd."""
    size = parse_size(args.size)
    request = args.request_kib * KiB
    if size % request:
        raise SystemExit(f"profile: --size must be a multiple of --request-kib {args.request_kib}")
    with bench_target(size, mtu=args.mtu, prefix="bprof", pin=args.pin) as target:
        # The state run_all.py measures tgtd in (its malloc threshold raised, see
        # warm_up): a cold tgtd maps, faults and unmaps every command's buffer.
        warm_up(target, Settings(size=size, mtus=[args.mtu]))
        out = _iscsi_measure(args, run, target, size, request)
        out.pinned = target.pin.text() if target.pin is not None else None
        return out


def _iscsi_measure(args: argparse.Namespace, run: Profiled, target: BenchTarget,
                   size: int, request: int) -> Outcome:
    """The measured part of :func:`iscsi_transfer`, on a warmed-up target."""
    with bootinit_device(target, args.mtu, queue_depth=max(args.qd, 1),
                         digests=args.digests, offload=args.offload != "off") as b:
        out = _iscsi_mode(args, run, target, b.dev, size, request)
        out.offload = b.tap.offload
        return out


def _iscsi_mode(args: argparse.Namespace, run: Profiled, target: BenchTarget,
                dev: BlockDevice, size: int, request: int) -> Outcome:
    """``args.mode``'s transfer through ``dev``, checked against the LUN file."""
    data = bytearray(size)
    if args.mode == "write":
        fill_pattern(memoryview(data), 5)

        def write() -> Outcome:
            n, t = sequential(dev, "write", data, request, args.qd)
            return Outcome(size, t, n)

        out = run(write)
        if first_difference(target.lun_path, data) is not None:
            raise BenchError("written data not found in the LUN file")
        return out
    with open(target.lun_path, "rb") as f:
        expect = f.read()
    if args.mode == "read":

        def read() -> Outcome:
            n, t = sequential(dev, "read", data, request, args.qd)
            return Outcome(size, t, n)

        out = run(read)
        if data != expect:
            raise BenchError("data read differs from the LUN file")
        return out

    def rand() -> Outcome:
        n, t = random_reads(dev, expect, args.qd, args.count, 600.0, seed=1)
        return Outcome(n * 4 * KiB, t, n)

    return run(rand)


def tcp_transfer(args: argparse.Namespace, run: Profiled) -> Outcome:
    """tcp-recv / tcp-send between our stack and the kernel peer."""
    size = parse_size(args.size)
    with topology(mtu=args.mtu, prefix="bprof") as topo:
        assert topo.link is not None and topo.tap is not None
        link = topo.link
        if args.offload == "on":
            topo.tap.close()  # one TAP holds the peer address at a time
            link = TapLink(mtu=topo.mtu, netns=topo.netns, peer_ip=topo.peer_ip,
                           offload=True)
        proc = topo.start([sys.executable, PEER, "--port", str(PEER_PORT)])
        topo.wait_listening(PEER_PORT, proc=proc)
        loop = Loop()
        stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            s = stack.open_stream(topo.peer_addr, PEER_PORT)
            tcp_c = stack.counters.layer("tcp")

            def counted(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
                def wrapped() -> Outcome:
                    before = (tcp_c["segments_in"], tcp_c["segments_out"])
                    out = fn()
                    out.segments = (tcp_c["segments_in"] - before[0],
                                    tcp_c["segments_out"] - before[1])
                    out.offload = isinstance(link, TapLink) and link.offload
                    return out
                return wrapped

            if args.mode == "tcp-recv":
                s.sendall(f"BULK {size} 1\n".encode())
                if s.recv_exact(len(READY), 120) != READY:
                    raise BenchError("tcp-recv: the peer did not say READY")
                h = hashlib.sha256()

                def recv() -> Outcome:
                    got = 0
                    t0 = time.perf_counter()
                    while True:
                        data = s.recv_some(60)
                        if not data:
                            break
                        h.update(data)
                        got += len(data)
                    return Outcome(got, time.perf_counter() - t0)

                out = run(counted(recv))
                want = hashlib.sha256()
                for chunk in stream(1, size):
                    want.update(chunk)
                if out.nbytes != size or h.hexdigest() != want.hexdigest():
                    raise BenchError(f"tcp-recv: {out.nbytes} bytes, hash mismatch")
                return out
            chunks = list(stream(2, size))
            s.sendall(b"SINK\n")

            def send() -> Outcome:
                t0 = time.perf_counter()
                for c in chunks:
                    s.sendall(c)
                s.close(60)
                answer = s.recv_exact(64 + 2 + len(str(size)), 60).decode().split()
                if answer[1:] != [str(size)]:
                    raise BenchError(f"tcp-send: peer got {answer}")
                return Outcome(size, time.perf_counter() - t0)

            return run(counted(send))
        finally:
            stack.close()
            loop.close()
            if link is not topo.link:
                link.close()


# --------------------------------------------------------------------------- output


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func  # a builtin, e.g. <method 'recv' of ...>
    try:
        file = str(Path(file).resolve().relative_to(ROOT))
    except ValueError:
        file = Path(file).name
    return f"{file}:{line}({func})"


def top_functions(prof: cProfile.Profile, n: int, by: str) -> str:
    """The ``n`` functions with the most cumulative (``by="cum"``) or own time."""
    st: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max([sum(v[2] for v in st.values()), *(v[3] for v in st.values())]) or 1e-9
    col = 3 if by == "cum" else 2
    rows = sorted(st.items(), key=lambda kv: kv[1][col], reverse=True)[:n]
    lines = [f"{'ncalls':>10} {'own s':>8} {'own %':>6} {'cum s':>8} {'cum %':>6}  function"]
    for key, (_cc, nc, tt, ct, _callers) in rows:
        lines.append(f"{nc:>10} {tt:8.3f} {100 * tt / total:6.1f} {ct:8.3f} "
                     f"{100 * ct / total:6.1f}  {_where(key)}")
    return "\n".join(lines)


def own_time_by_file(prof: cProfile.Profile, n: int) -> str:
    """Own time summed per source file (builtins counted as one)."""
    st: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in st.values()) or 1e-9
    per: dict[str, float] = {}
    for (file, _line, func), v in st.items():
        if file == "~":
            name = "(builtins) " + func.split(" of ")[0].strip("<>'").split("'")[-1]
        else:
            try:
                name = str(Path(file).resolve().relative_to(ROOT))
            except ValueError:
                name = "(stdlib/other) " + Path(file).name
        per[name] = per.get(name, 0.0) + v[2]
    rows = sorted(per.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return "\n".join(f"{t:8.3f} s {100 * t / total:5.1f} %  {name}" for name, t in rows)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=MODES, nargs="?", default="read")
    ap.add_argument("--size", default="256M", help="bytes to move (default 256M)")
    ap.add_argument("--mtu", type=int, default=9000, help="TAP MTU (default 9000)")
    ap.add_argument("--qd", type=int, default=32, help="requests in flight (iSCSI modes)")
    ap.add_argument("--request-kib", type=int, default=256, help="sequential request KiB")
    ap.add_argument("--count", type=int, default=20000, help="random reads (rand-read)")
    ap.add_argument("--digests", action="store_true", help="CRC32C header+data digests")
    ap.add_argument("--top", type=int, default=25, help="functions listed per sort")
    ap.add_argument("--offload", choices=("on", "off"),
                    help="the TAP's checksum/GSO offloads (default: on for the iSCSI "
                         "modes, off for tcp-*)")
    ap.add_argument("--pin", action="store_true", help="iSCSI modes: " + PIN_HELP)
    ap.add_argument("--no-profile", action="store_true",
                    help="no profiler: throughput and CPU time per MiB only")
    ap.add_argument("--output", type=Path, help="write the cProfile data to this file")
    ap.add_argument("--pyinstrument", action="store_true",
                    help="use pyinstrument (if installed) instead of cProfile")
    args = ap.parse_args(argv)
    if args.pin and args.mode.startswith("tcp-"):
        ap.error("--pin is for the iSCSI modes (read, write, rand-read): it splits the "
                 "CPUs between us and tgtd")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    problem = environment_problem()
    if problem is not None:
        print(f"profile: cannot run: {problem}", file=sys.stderr)
        return 2
    run = Profiled(args.pyinstrument, enabled=not args.no_profile)
    transfer = tcp_transfer if args.mode.startswith("tcp-") else iscsi_transfer
    try:
        out = transfer(args, run)
    except BenchError as e:
        print(f"profile: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("profile: interrupted (everything started was stopped and removed)",
              file=sys.stderr)
        return 130
    what = (f"{args.mode} {out.nbytes} bytes at MTU {args.mtu}, offloads "
            f"{'on' if out.offload else 'off'}")
    if out.requests:
        what += f" in {out.requests} requests"
    if out.pinned is not None:
        what += f" ({out.pinned})"
    mib = out.nbytes / (1 << 20) or 1e-9
    cpu = (f"CPU {1000 * (out.cpu_user + out.cpu_sys) / mib:.3f} ms/MiB (user "
           f"{1000 * out.cpu_user / mib:.3f}, sys {1000 * out.cpu_sys / mib:.3f})")
    if out.segments is not None:
        cpu += (f", TCP segments in {out.segments[0] / mib:.1f}/MiB, "
                f"out {out.segments[1] / mib:.1f}/MiB")
    if not run.enabled:
        print(f"{what}: {out.seconds:.2f} s, {out.mb_per_s:.1f} MB/s, {cpu} "
              "(MB = 10^6 B, MiB = 2^20 B; no profiler)")
        return 0
    tool = "pyinstrument" if run.pyinstrument_text is not None else "cProfile"
    print(f"{what}: {out.seconds:.2f} s, {out.mb_per_s:.1f} MB/s under {tool} "
          f"(MB = 10^6 B; profiling slows it down); {cpu} under the profiler")
    if run.pyinstrument_text is not None:
        print(run.pyinstrument_text)
        return 0
    assert run.profile is not None
    calls = sum(v[1] for v in pstats.Stats(run.profile).stats.values())  # type: ignore[attr-defined]
    print(f"{calls / mib:.0f} function calls per MiB ({calls} in all)")
    if args.output is not None:
        run.profile.dump_stats(str(args.output))
        print(f"cProfile data: {args.output}")
    print(f"\n== top {args.top} by cumulative time")
    print(top_functions(run.profile, args.top, "cum"))
    print(f"\n== top {args.top} by own time")
    print(top_functions(run.profile, args.top, "own"))
    print("\n== own time per file")
    print(own_time_by_file(run.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
