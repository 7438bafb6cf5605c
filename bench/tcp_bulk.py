"""TCP bulk throughput of our stack against the kernel, beside the raw TAP ceiling.

For each MTU: a fresh namespace with a TAP (netstack.harness), a kernel TCP peer in it
(tests/integration/tcp_peer.py), then

* ``recv``  — the peer sends N bytes, our stack receives them (sha256 checked);
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
from netstack.harness import environment_problem, topology  # noqa: E402
from netstack.link.tap import TapLink  # noqa: E402
from netstack.loop import Loop  # noqa: E402
from netstack.stack import NetStack, StackConfig  # noqa: E402
from tests.integration.tcp_peer import stream  # noqa: E402

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


def _expected(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


def measure(mtu: int, size: int, ceiling_s: float, offload: bool) -> list[Row]:
    with topology(mtu=mtu) as topo:
        assert topo.link is not None and topo.tap is not None
        rx_ceiling = tap_ceiling.measure_rx(topo, topo.tap, ceiling_s, 2).mbytes_per_s
        tx_ceiling = tap_ceiling.measure_tx(topo, topo.tap, ceiling_s).mbytes_per_s
        proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
        topo.wait_listening(PORT, proc=proc)
        link = topo.link
        if offload:  # a second TAP with offloads, on the same peer address's network
            topo.tap.close()
            link = TapLink(mtu=mtu, netns=topo.netns, peer_ip=topo.peer_ip, offload=True)
        loop = Loop()
        stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            # receive
            s = stack.open_stream(topo.peer_addr, PORT)
            s.sendall(f"SOURCE {size} 1\n".encode())
            h = hashlib.sha256()
            got = 0
            t0 = time.perf_counter()
            while True:
                data = s.recv_some(60)
                if not data:
                    break
                h.update(data)
                got += len(data)
            t_recv = time.perf_counter() - t0
            if got != size or h.hexdigest() != _expected(1, size):
                raise SystemExit(f"receive check failed at MTU {mtu}: {got} bytes")
            s.close()
            # send
            chunks = list(stream(2, size))
            s = stack.open_stream(topo.peer_addr, PORT)
            s.sendall(b"SINK\n")
            t0 = time.perf_counter()
            for c in chunks:
                s.sendall(c)
            s.close(60)
            answer = s.recv_exact(64 + 2 + len(str(size)), 60).decode().split()
            t_send = time.perf_counter() - t0
            if answer != [_expected(2, size), str(size)]:
                raise SystemExit(f"send check failed at MTU {mtu}: {answer}")
        finally:
            stack.close()
            loop.close()
            if offload:
                link.close()
    mb = size / 1e6
    return [Row(mtu, offload, "recv", mb / t_recv, rx_ceiling),
            Row(mtu, offload, "send", mb / t_send, tx_ceiling)]


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
    for mtu in args.mtu or [1500, 9000]:
        for off in modes:
            rows += measure(mtu, args.size_mib << 20, args.ceiling_seconds, off)
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
