"""Raw TAP ceiling: how fast Python moves prebuilt frames through a TAP (needs root).

Three measurements per MTU, each bounded by ``--duration`` seconds, in a fresh
namespace built by :mod:`netstack.harness` (torn down afterwards):

* ``tx``   — we write prebuilt UDP frames (frame = MTU + 14 bytes) to a UDP socket
             bound in the namespace (nobody reads it: the kernel does the full
             IP/UDP receive and then drops at the socket queue);
* ``rx``   — ``--senders`` processes in the namespace blast MTU-sized UDP datagrams at
             our address; we read frames as fast as we can (``tap_tx_dropped`` is what
             the TAP queue dropped because we did not keep up: if it is > 0, the reader
             was the bottleneck);
* ``echo`` — ICMP echo requests of MTU size with ``--window`` in flight: every reply
             read releases the next request (both directions at once).

Prints one line per measurement (MB/s = 10**6 bytes of whole frames per second), or
JSON with ``--json``. Example: ``python bench/tap_ceiling.py --mtu 1500 --mtu 9000``.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass

from netstack.harness import Topology, environment_problem, topology
from netstack.link.tap import TapLink
from netstack.linkopts import format_mac

UDP_PORT = 9999
SENDER = """
import socket, sys, time
dst, port, size, dur = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
payload = b"x" * size
end = time.monotonic() + dur
while time.monotonic() < end:
    for _ in range(64):
        try:
            s.sendto(payload, (dst, port))
        except OSError:
            pass
"""
SINK = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", %d))
time.sleep(3600)
"""


@dataclass
class Result:
    """One measurement."""

    test: str
    mtu: int
    seconds: float
    frames: int
    bytes: int
    dropped: int

    @property
    def mbps(self) -> float:
        """Megabytes (10**6) per second."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def mbytes_per_s(self) -> float:
        """Same as :attr:`mbps` (the name bench/tcp_bulk.py uses)."""
        return self.mbps

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """Human-readable line."""
        return (f"{self.test:5s} mtu {self.mtu:5d}: {self.mbps:8.1f} MB/s "
                f"{self.fps:9.0f} frames/s  ({self.frames} frames in {self.seconds:.2f} s, "
                f"dropped {self.dropped})")


def _udp_frame(topo: Topology, size: int, dport: int) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=format_mac(topo.our_mac), dst=format_mac(topo.peer_mac()))
                 / IP(src=str(topo.our_ip.ip), dst=str(topo.peer_addr), flags="DF")
                 / UDP(sport=40000, dport=dport) / (b"\x00" * (size - 28)))


def _echo_frame(topo: Topology, size: int) -> bytes:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=format_mac(topo.our_mac), dst=format_mac(topo.peer_mac()))
                 / IP(src=str(topo.our_ip.ip), dst=str(topo.peer_addr), flags="DF")
                 / ICMP(type=8, id=7, seq=1) / (b"\x00" * (size - 28)))


def _tap_tx_dropped(topo: Topology, tap: TapLink) -> int:
    out = topo.run(["ip", "-j", "-s", "link", "show", "dev", tap.name]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["dropped"])


def _drain(tap: TapLink, quiet: float = 0.05) -> int:
    """Read and discard frames until none arrived for ``quiet`` seconds (bounded: 2 s)."""
    n = 0
    end = time.monotonic() + 2.0
    fd = tap.fileno()
    while time.monotonic() < end and select.select([fd], [], [], quiet)[0]:
        while tap.recv() is not None:
            n += 1
    return n


def measure_tx(topo: Topology, tap: TapLink, duration: float) -> Result:
    """Write prebuilt frames for ``duration`` seconds."""
    topo.start([sys.executable, "-c", SINK % UDP_PORT])
    frame = _udp_frame(topo, tap.mtu, UDP_PORT)
    send = tap.send
    before = tap.counters()
    n = 0
    start = time.monotonic()
    end = start + duration
    while time.monotonic() < end:
        for _ in range(64):
            send(frame)
        n += 64
    elapsed = time.monotonic() - start
    after = tap.counters()
    sent = after["tx_frames"] - before["tx_frames"]
    dropped = sum(after[k] - before[k] for k in ("tx_drop_full", "tx_drop_link_down"))
    return Result("tx", tap.mtu, elapsed, sent, sent * len(frame), dropped)


def measure_rx(topo: Topology, tap: TapLink, duration: float, senders: int) -> Result:
    """Read what ``senders`` UDP blasters in the namespace send us."""
    topo.add_neighbor()
    size = tap.mtu - 28
    procs = [topo.start([sys.executable, "-c", SENDER, str(topo.our_ip.ip), str(UDP_PORT),
                         str(size), str(duration + 0.5)]) for _ in range(senders)]
    fd, recv = tap.fileno(), tap.recv
    drops0 = _tap_tx_dropped(topo, tap)
    frames = nbytes = 0
    start = None
    end = time.monotonic() + duration + 5.0  # wait for the senders to start, bounded
    while time.monotonic() < end:
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        for _ in range(256):  # bounded batch, so the deadline is checked
            f = recv()
            if f is None:
                break
            if start is None:
                start = time.monotonic()
                end = start + duration
            frames += 1
            nbytes += len(f)
    elapsed = time.monotonic() - start if start is not None else 0.0
    for p in procs:
        p.stop()
    dropped = _tap_tx_dropped(topo, tap) - drops0
    _drain(tap)  # leave the TAP empty for whoever uses this topology next
    return Result("rx", tap.mtu, elapsed, frames, nbytes, dropped)


def measure_echo(topo: Topology, tap: TapLink, duration: float, window: int) -> Result:
    """ICMP echo with ``window`` requests in flight; counts frames both ways."""
    topo.add_neighbor()
    req = _echo_frame(topo, tap.mtu)
    fd, send, recv = tap.fileno(), tap.send, tap.recv
    replies = 0
    start = time.monotonic()
    end = start + duration
    for _ in range(window):
        send(req)
    while time.monotonic() < end:
        if not select.select([fd], [], [], 0.5)[0]:
            break  # lost everything in flight
        for _ in range(256):  # bounded batch: replies keep coming as we send
            f = recv()
            if f is None:
                break
            if len(f) == len(req) and f[23] == 1 and f[34] == 0:  # ICMP echo reply
                replies += 1
                send(req)
    elapsed = time.monotonic() - start
    _drain(tap)  # the replies still in flight
    frames = replies * 2
    return Result("echo", tap.mtu, elapsed, frames, frames * len(req), 0)


def run(mtus: list[int], duration: float, senders: int, window: int) -> list[Result]:
    """All measurements, each in its own fresh topology."""
    results = []
    for mtu in mtus:
        for test in ("tx", "rx", "echo"):
            with topology(mtu=mtu, prefix="bbench") as topo:
                tap = topo.tap
                assert tap is not None
                if test == "tx":
                    results.append(measure_tx(topo, tap, duration))
                elif test == "rx":
                    results.append(measure_rx(topo, tap, duration, senders))
                else:
                    results.append(measure_echo(topo, tap, duration, window))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mtu", type=int, action="append", help="MTU to test (repeatable; "
                   "default 1500 and 9000)")
    p.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    p.add_argument("--senders", type=int, default=2, help="UDP sender processes for rx")
    p.add_argument("--window", type=int, default=32, help="echo requests in flight")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    if not 0.1 <= args.duration <= 30:
        p.error(f"--duration {args.duration}: must be 0.1..30 seconds")
    # SIGTERM unwinds like Ctrl-C, so the namespace and processes are torn down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    problem = environment_problem()
    if problem is not None:
        print(f"tap_ceiling: cannot run: {problem}", file=sys.stderr)
        return 2
    results = run(args.mtu or [1500, 9000], args.duration, args.senders, args.window)
    if args.json:
        print(json.dumps([{**asdict(r), "mb_per_s": round(r.mbps, 2),
                           "frames_per_s": round(r.fps)} for r in results], indent=1))
    else:
        for r in results:
            print(r.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
