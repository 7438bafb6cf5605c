"""PyTCP (``pmd-pytcp``) as a comparison peer: its TCP bulk receive and send over a TAP.

PyTCP is a pure-Python TCP/IP stack on a TAP, like ours. Its stack is a set of
module-level singletons driven by asyncio, so it runs in a child process of its own,
one per measurement, on a TAP our harness made (:func:`netstack.harness.topology`):
the parent passes the TAP's descriptor (``pass_fds``), the TAP's kernel side is in the
topology's namespace with the kernel peer (``tests/integration/tcp_peer.py``) behind
it, so PyTCP's frames go nowhere else. The child

1. starts PyTCP on the descriptor with our address and MAC (IPv6, DHCP and
   link-local autoconfiguration off) and ``tcp.rcv_wnd_max`` = 4 MiB (its default
   64 KiB window stalls on a zero window at large MTUs; 4 MiB is a fair match for the
   kernel's and ours);
2. waits until its address-conflict probe is over (about 3 s: the address shows in
   ``stack.local_ip4_unicast()``);
3. ``recv``: asks the peer for ``BULK N 1`` and hashes what arrives (timed from the
   peer's ``READY``, sent once its data is generated);
4. ``send``: ``SINK``, sends N bytes of ``stream(2)``, half-closes, reads the peer's
   sha256 and count;

and prints one JSON object (MB/s per direction, whether each sha256 matched, or the
error). Both sha256 are checked; a direction that fails is reported with its reason.

Run by :func:`measure` (``bench/run_all.py``). The child's command line is internal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from netstack import netns as nsh  # noqa: E402
from netstack.harness import Topology  # noqa: E402
from netstack.linkopts import format_mac  # noqa: E402
from tests.integration.tcp_peer import READY, stream  # noqa: E402

#: PyTCP's receive window ceiling for the comparison (``tcp.rcv_wnd_max``).
RCV_WND_MAX = 4 << 20
#: Seconds to wait for PyTCP's address to become usable (its ACD probe takes ~3 s).
ADDRESS_WAIT = 20.0
INSTALL_HINT = "pmd-pytcp not installed (pip install '.[bench]')"


def unavailable() -> str | None:
    """Why PyTCP cannot be measured here (None: ``pmd_pytcp`` is importable)."""
    if importlib.util.find_spec("pmd_pytcp") is None:
        return INSTALL_HINT
    return None


@dataclass
class PytcpResult:
    """One PyTCP measurement at one MTU (MB = 10**6 bytes)."""

    mtu: int
    size: int
    recv_mb_per_s: float | None = None
    send_mb_per_s: float | None = None
    recv_sha_ok: bool = False
    send_sha_ok: bool = False
    #: Why a direction has no number (None: both measured).
    recv_error: str | None = None
    send_error: str | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def measure(topo: Topology, port: int, size: int, timeout: float = 300.0) -> PytcpResult:
    """Run PyTCP on ``topo``'s TAP (its descriptor is lent to a child process) against
    the kernel peer listening on ``port`` in the namespace. Never raises for PyTCP's
    own failures: they come back as ``recv_error``/``send_error``."""
    result = PytcpResult(topo.mtu, size)
    why = unavailable()
    if why is not None:
        result.recv_error = result.send_error = why
        return result
    assert topo.tap is not None
    fd = topo.tap.fileno()
    argv = [sys.executable, str(Path(__file__).resolve()), "--fd", str(fd),
            "--mtu", str(topo.mtu), "--ip", str(topo.our_ip),
            "--mac", format_mac(topo.our_mac), "--peer", str(topo.peer_addr),
            "--port", str(port), "--size", str(size), "--timeout", str(timeout)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=(fd,), env=env, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + ADDRESS_WAIT + 30)
    except subprocess.TimeoutExpired:
        nsh.stop_process(proc)
        out, err = proc.communicate()
        result.recv_error = result.send_error = "PyTCP child did not finish in time"
        return result
    finally:
        if proc.poll() is None:
            nsh.stop_process(proc)
    try:
        doc = json.loads(out.strip().splitlines()[-1])
        return PytcpResult(**doc)
    except (ValueError, IndexError, TypeError):
        tail = " | ".join((err or out).strip().splitlines()[-3:])
        result.recv_error = result.send_error = (
            f"PyTCP child exit {proc.returncode}: {tail or 'no output'}")
        return result


# --------------------------------------------------------------------------- the child


def _expected(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


async def _child(args: argparse.Namespace) -> PytcpResult:
    # Imported here: the parent only needs to know whether the package exists.
    import pmd_pytcp
    from pmd_net_addr import Ip4Address, Ip4IfAddr, MacAddress
    from pmd_pytcp import socket as psocket
    from pmd_pytcp import stack
    from pmd_pytcp.lib.interface_layer import InterfaceLayer
    from pmd_pytcp.socket.tcp__socket import TcpSocket

    res = PytcpResult(args.mtu, args.size, version=pmd_pytcp.__version__)
    ip = args.ip.split("/")[0]
    want_recv = _expected(1, args.size)
    want_send = _expected(2, args.size)
    chunks = list(stream(2, args.size))
    stack.init(sysctls={"tcp.rcv_wnd_max": RCV_WND_MAX})
    stack.add_interface(fd=args.fd, layer=InterfaceLayer.L2, mtu=args.mtu,
                        mac_address=MacAddress(args.mac), interface_name="pytcp0",
                        ip4_host=Ip4IfAddr(args.ip), ip4_dhcp=False, ip6_support=False,
                        ip6_gua_autoconfig=False, ip6_lla_autoconfig=False)
    await stack.start()
    try:
        deadline = time.monotonic() + ADDRESS_WAIT
        while Ip4Address(ip) not in stack.local_ip4_unicast():
            if time.monotonic() > deadline:
                raise TimeoutError(f"address {ip} not usable after {ADDRESS_WAIT:g} s")
            await asyncio.sleep(0.1)
        peer = (args.peer, args.port)
        # receive
        try:
            s = psocket.socket(psocket.AF_INET4, psocket.SOCK_STREAM)
            await asyncio.wait_for(s.connect(peer), 10)
            await s.send(f"BULK {args.size} 1\n".encode())
            end = time.monotonic() + args.timeout
            head = b""
            while len(head) < len(READY):
                data = await s.recv(None, max(0.1, end - time.monotonic()))
                if not data:
                    raise OSError("the peer closed before READY")
                head += data
            t0 = time.perf_counter()
            if head[:len(READY)] != READY:
                raise OSError(f"the peer said {head[:16]!r}, not READY")
            h = hashlib.sha256(head[len(READY):])
            got = len(head) - len(READY)
            while True:
                data = await s.recv(None, max(0.1, end - time.monotonic()))
                if not data:
                    break
                h.update(data)
                got += len(data)
            elapsed = time.perf_counter() - t0
            s.close()
            res.recv_sha_ok = got == args.size and h.hexdigest() == want_recv
            if res.recv_sha_ok:
                res.recv_mb_per_s = args.size / 1e6 / elapsed
            else:
                res.recv_error = f"sha256 mismatch ({got} of {args.size} bytes)"
        except (OSError, TimeoutError) as e:
            res.recv_error = f"{type(e).__name__}: {e}"
        # send
        try:
            s = psocket.socket(psocket.AF_INET4, psocket.SOCK_STREAM)
            assert isinstance(s, TcpSocket)
            await asyncio.wait_for(s.connect(peer), 10)
            await s.send(b"SINK\n")
            t0 = time.perf_counter()
            for c in chunks:
                await s.send(c)
            s.shutdown(psocket.SHUT_WR)
            answer = b""
            end = time.monotonic() + args.timeout
            while True:
                data = await s.recv(None, max(0.1, end - time.monotonic()))
                if not data:
                    break
                answer += data
            elapsed = time.perf_counter() - t0
            s.close()
            words = answer.decode(errors="replace").split()
            res.send_sha_ok = words == [want_send, str(args.size)]
            if res.send_sha_ok:
                res.send_mb_per_s = args.size / 1e6 / elapsed
            else:
                res.send_error = f"peer's sha256/count differ: {' '.join(words)[:80]!r}"
        except (OSError, TimeoutError) as e:
            res.send_error = f"{type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stack.stop(), 10)
    return res


def main(argv: list[str] | None = None) -> int:
    """The child process (internal command line, see :func:`measure`)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--fd", type=int, required=True, help="TAP descriptor (inherited)")
    ap.add_argument("--mtu", type=int, required=True)
    ap.add_argument("--ip", required=True, help="our address/prefix")
    ap.add_argument("--mac", required=True)
    ap.add_argument("--peer", required=True, help="the kernel peer's address")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    try:
        res = asyncio.run(_child(args))
    except Exception as e:  # reported to the parent as the reason, not a traceback
        res = PytcpResult(args.mtu, args.size)
        res.recv_error = res.send_error = f"{type(e).__name__}: {e}"
    print(json.dumps(res.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
