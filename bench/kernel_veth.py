"""The kernel's own TCP between two namespaces over a veth pair (bulk, both ways).

The reference for our stack's TCP bulk numbers: two fresh namespaces made by
:func:`netstack.harness.topology` (no TAP), joined by a veth pair
(:func:`netstack.netns.add_veth`) of ``--mtu`` (default 65520, the veth's own offloads
as the kernel sets them), the kernel peer ``tests/integration/tcp_peer.py`` in one and a
Python socket client (this file, ``--client``) in the other. Same transfers as
bench/tcp_bulk.py, so the ratio ours/kernel compares like with like (a Python
application on each side, every byte hashed):

* ``recv`` — the client asks ``BULK N 1`` and hashes what arrives (timed from the
  peer's ``READY``, sent once its data is generated);
* ``send`` — ``SINK``, the client sends N prebuilt bytes of ``stream(2)``, half-closes
  and waits for the peer's sha256 (timed until the answer).

Both sha256 are checked. MB = 10**6 bytes. Example (root)::

    python bench/kernel_veth.py --size-mib 256
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from netstack import netns as nsh  # noqa: E402
from netstack.harness import Topology, environment_problem, topology  # noqa: E402
from tests.integration.tcp_peer import READY, stream  # noqa: E402

PEER = str(ROOT / "tests" / "integration" / "tcp_peer.py")
PORT = 5001
SERVER_IP = "10.79.0.1/24"
CLIENT_IP = "10.79.0.2/24"


class VethError(Exception):
    """The measurement failed (a check, or the client); the message says which."""


@dataclass
class KernelResult:
    """The kernel's TCP over veth at one MTU."""

    mtu: int
    size: int
    recv_mb_per_s: float
    send_mb_per_s: float
    recv_sha_ok: bool
    send_sha_ok: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _expected(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def veth_pair(mtu: int) -> Iterator[tuple[Topology, Topology]]:
    """(client side, server side): two namespaces joined by a veth pair of ``mtu``,
    ``CLIENT_IP`` and ``SERVER_IP`` on its ends; all removed on exit."""
    with topology(mtu=mtu, open_tap=False, peer_ip=SERVER_IP, our_ip=CLIENT_IP,
                  prefix="bvetc") as client, \
            topology(mtu=mtu, open_tap=False, peer_ip=SERVER_IP, our_ip=CLIENT_IP,
                     prefix="bvets") as server:
        nsh.add_veth(client.netns, "veth0", server.netns, "veth1")
        for ns, dev, addr in ((client.netns, "veth0", CLIENT_IP),
                              (server.netns, "veth1", SERVER_IP)):
            nsh.set_mtu(dev, mtu, ns)
            nsh.add_address(ns, dev, addr)
            nsh.link_up(dev, ns)
        yield client, server


def measure(mtu: int, size: int, timeout: float = 300.0) -> KernelResult:
    """Bulk both ways over a fresh veth pair (:class:`VethError` if a check fails)."""
    with veth_pair(mtu) as (client, server):
        proc = server.start([sys.executable, PEER, "--port", str(PORT)])
        server.wait_listening(PORT, proc=proc)
        try:
            cp = client.run([sys.executable, str(Path(__file__).resolve()), "--client",
                             str(server.peer_addr), "--size", str(size)], check=False,
                            timeout=timeout)
        except nsh.NetnsError as e:
            raise VethError(f"kernel veth client: {e}") from e
    try:
        doc = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        tail = " | ".join((cp.stderr or cp.stdout).strip().splitlines()[-3:])
        raise VethError(f"kernel veth client exit {cp.returncode}: {tail}") from e
    res = KernelResult(mtu=mtu, size=size, **doc)
    if not (res.recv_sha_ok and res.send_sha_ok):
        raise VethError(f"kernel veth MTU {mtu}: sha256 check failed "
                        f"(recv {res.recv_sha_ok}, send {res.send_sha_ok})")
    return res


def client(host: str, size: int) -> dict[str, Any]:
    """The client side (runs inside the client namespace)."""
    want_recv = _expected(1, size)
    chunks = list(stream(2, size))
    want_send = _expected(2, size)
    with socket.create_connection((host, PORT), 10) as s:
        s.settimeout(60)
        s.sendall(f"BULK {size} 1\n".encode())
        ready = s.recv(len(READY), socket.MSG_WAITALL)
        t0 = time.perf_counter()
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        got = 0
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            h.update(view[:n])
            got += n
        t_recv = time.perf_counter() - t0
    recv_ok = ready == READY and got == size and h.hexdigest() == want_recv
    with socket.create_connection((host, PORT), 10) as s:
        s.settimeout(60)
        s.sendall(b"SINK\n")
        t0 = time.perf_counter()
        for c in chunks:
            s.sendall(c)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while data := s.recv(256):
            answer += data
        t_send = time.perf_counter() - t0
    send_ok = answer.decode(errors="replace").split() == [want_send, str(size)]
    mb = size / 1e6
    return {"recv_mb_per_s": mb / t_recv if t_recv > 0 else 0.0,
            "send_mb_per_s": mb / t_send if t_send > 0 else 0.0,
            "recv_sha_ok": recv_ok, "send_sha_ok": send_ok}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mtu", type=int, default=65520, help="veth MTU (default 65520)")
    ap.add_argument("--size-mib", type=int, default=256, help="MiB each way")
    ap.add_argument("--size", type=int, help="bytes each way (overrides --size-mib)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--client", metavar="HOST", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size = args.size if args.size is not None else args.size_mib << 20
    if args.client is not None:
        print(json.dumps(client(args.client, size)))
        return 0
    problem = environment_problem()
    if problem is not None:
        print(f"kernel_veth: cannot run: {problem}", file=sys.stderr)
        return 2
    try:
        res = measure(args.mtu, size)
    except VethError as e:
        print(f"kernel_veth: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res.as_dict(), indent=1))
    else:
        print(f"kernel TCP over veth, MTU {res.mtu}, {size / 1e6:.1f} MB each way: "
              f"recv {res.recv_mb_per_s:.1f} MB/s, send {res.send_mb_per_s:.1f} MB/s "
              f"(sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
