"""TCP bulk throughput of our stack against the kernel, beside the raw TAP ceiling.

For each MTU: a fresh namespace with a TAP (netstack.harness), a kernel TCP peer in it
(tests/integration/tcp_peer.py), then

* ``recv``  — the peer sends N bytes (``BULK``: generated first; timed from its
  ``READY``), our stack receives them (sha256 checked);
* ``send``  — our stack sends N bytes, the peer hashes them (sha256 checked);
* ``tap rx/tx`` — bench/tap_ceiling.py's raw frame rates on the same kind of TAP, measured
  in the same run, and the ratio ours/ceiling.

Example: ``python bench/tcp_bulk.py --mtu 1500 --mtu 9000 --size-mib 256``. Needs root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import tap_ceiling  # noqa: E402
from netstack.harness import Topology, environment_problem, topology  # noqa: E402
from netstack.link.base import Link  # noqa: E402
from netstack.link.tap import TapLink  # noqa: E402
from netstack.loop import Loop  # noqa: E402
from netstack.stack import NetStack, StackConfig  # noqa: E402
from tests.integration.tcp_peer import READY, receive_all, stream  # noqa: E402

PEER = str(ROOT / "tests" / "integration" / "tcp_peer.py")
PORT = 5001


@dataclass
class Row:
    mtu: int
    offload: bool
    what: str
    mbytes_per_s: float
    ceiling_mbytes_per_s: float

    @property
    def ratio(self) -> float:
        return self.mbytes_per_s / self.ceiling_mbytes_per_s if self.ceiling_mbytes_per_s else 0


class CheckError(Exception):
    """A transfer's sha256 or byte count did not match."""


def expected_sha(seed: int, n: int) -> str:
    """sha256 of ``n`` bytes of ``stream(seed)`` (what the peer sends or should get)."""
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


def start_peer(topo: Topology, port: int = PORT) -> None:
    """Start the kernel peer (tcp_peer.py) in the namespace; wait until it listens."""
    proc = topo.start([sys.executable, PEER, "--port", str(port)])
    topo.wait_listening(port, proc=proc)


def ceilings(topo: Topology, seconds: float) -> tuple[float, float]:
    """The raw TAP ceiling on ``topo``'s (plain) TAP: (rx MB/s, tx MB/s)."""
    assert topo.tap is not None
    rx = tap_ceiling.measure_rx(topo, topo.tap, seconds, 2).mbytes_per_s
    tx = tap_ceiling.measure_tx(topo, topo.tap, seconds).mbytes_per_s
    return rx, tx


def offload_link(topo: Topology) -> TapLink:
    """Replace ``topo``'s plain TAP with one with checksum/GSO offloads on the same
    network (the plain one is closed first: one TAP holds the peer address at a time).
    The caller closes the returned link."""
    assert topo.tap is not None
    topo.tap.close()
    return TapLink(mtu=topo.mtu, netns=topo.netns, peer_ip=topo.peer_ip, offload=True)


def our_transfer(topo: Topology, link: Link, size: int,
                 port: int = PORT) -> tuple[float, float]:
    """Our stack on ``link`` against the peer on ``port``: (recv MB/s, send MB/s).

    ``recv``: the peer sends ``size`` bytes (``BULK``: generated before it answers
    ``READY``; timed from there); ``send``: we send ``size`` prebuilt bytes, timed until
    the peer's sha256 answer. Both sha256 are checked (:class:`CheckError`)."""
    want_recv = expected_sha(1, size)
    chunks = list(stream(2, size))
    want_send = expected_sha(2, size)
    loop = Loop()
    stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
    stack.start()
    try:
        s = stack.open_stream(topo.peer_addr, port)
        s.sendall(f"BULK {size} 1\n".encode())
        if s.recv_exact(len(READY), 60) != READY:
            raise CheckError(f"receive at MTU {topo.mtu}: the peer did not say READY")
        t0 = time.perf_counter()
        sha, got = receive_all(s, 60)
        t_recv = time.perf_counter() - t0
        if got != size or sha != want_recv:
            raise CheckError(f"receive check failed at MTU {topo.mtu}: {got} bytes")
        s.close()
        s = stack.open_stream(topo.peer_addr, port)
        s.sendall(b"SINK\n")
        t0 = time.perf_counter()
        for c in chunks:
            s.sendall(c)
        s.close(60)
        answer = s.recv_exact(64 + 2 + len(str(size)), 60).decode().split()
        t_send = time.perf_counter() - t0
        if answer != [want_send, str(size)]:
            raise CheckError(f"send check failed at MTU {topo.mtu}: {answer}")
    finally:
        stack.close()
        loop.close()
    mb = size / 1e6
    return mb / t_recv, mb / t_send


def measure(mtu: int, size: int, ceiling_s: float, offload: bool) -> list[Row]:
    """One MTU and offload mode in a fresh namespace: ceilings, then ours both ways."""
    with topology(mtu=mtu) as topo:
        assert topo.link is not None and topo.tap is not None
        rx_ceiling, tx_ceiling = ceilings(topo, ceiling_s)
        start_peer(topo)
        link = offload_link(topo) if offload else topo.link
        try:
            recv, send = our_transfer(topo, link, size)
        finally:
            if offload:
                link.close()
    return [Row(mtu, offload, "recv", recv, rx_ceiling),
            Row(mtu, offload, "send", send, tx_ceiling)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mtu", type=int, action="append")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--ceiling-seconds", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--offload", choices=("off", "on", "both"), default="both",
                    help="TAP checksum/GSO offloads (default: measure both)")
    args = ap.parse_args(argv)
    problem = environment_problem()
    if problem:
        print(f"tcp_bulk: cannot run: {problem}", file=sys.stderr)
        return 1
    rows: list[Row] = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.offload]
    try:
        for mtu in args.mtu or [1500, 9000]:
            for off in modes:
                rows += measure(mtu, args.size_mib << 20, args.ceiling_seconds, off)
    except CheckError as e:
        print(f"tcp_bulk: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=2))
    else:
        print(f"{'MTU':>6} {'offload':>7} {'dir':>5} {'ours MB/s':>10} {'TAP MB/s':>10} "
              f"{'ratio':>6}")
        for r in rows:
            print(f"{r.mtu:>6} {'on' if r.offload else 'off':>7} {r.what:>5} "
                  f"{r.mbytes_per_s:>10.1f} "
                  f"{r.ceiling_mbytes_per_s:>10.1f} {r.ratio:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
