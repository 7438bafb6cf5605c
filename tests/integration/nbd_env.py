"""A LUN of a real tgtd, reached by bootinit over our stack, served by NbdServer.

::

    with nbd_env(Lun(path)) as env:                 # namespace + TAP + tgtd + session
        r = env.run(["qemu-img", "info", env.qemu_uri], timeout=30)

Client processes run while the loop keeps serving (``run`` polls the process from
inside ``loop.run_until``); their output goes to files, never to pipes that could fill.
Everything (namespace, tgtd, session, socket) is removed on exit, also on errors.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootinit.blockdev import BlockDevice
from bootinit.initiator import Initiator
from bootinit.nbd_server import NbdServer
from bootinit.targets import LunSpec, Tgtd
from netstack.harness import Topology, topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:nbd"


@dataclass
class Ran:
    """A finished client process."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Ran:
        assert self.returncode == 0, (f"{' '.join(self.argv)} exited {self.returncode}\n"
                                      f"stdout: {self.stdout}\nstderr: {self.stderr}")
        return self


@dataclass
class NbdEnv:
    topo: Topology
    tgtd: Tgtd
    tid: int
    loop: Loop
    stack: NetStack
    initiator: Initiator
    device: BlockDevice
    server: NbdServer
    workdir: Path

    @property
    def lun_path(self) -> Path:
        return self.tgtd.lun_path(self.tid, 1)

    @property
    def qemu_uri(self) -> str:
        return f"nbd:unix:{self.server.path}"

    @property
    def nbd_uri(self) -> str:
        return self.server.url

    def file_bytes(self, offset: int, size: int) -> bytes:
        with open(self.lun_path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> Ran:
        """Run a client process to completion while the loop serves it."""
        with tempfile.TemporaryFile(dir=self.workdir) as out, \
                tempfile.TemporaryFile(dir=self.workdir) as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err)
            try:
                self.loop.run_until(lambda: proc.poll() is not None, timeout,
                                    f"{argv[0]} to finish")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            secs = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            return Ran(list(argv), proc.returncode, out.read().decode(errors="replace"),
                       err.read().decode(errors="replace"), secs)


@contextlib.contextmanager
def nbd_env(lun: LunSpec, *, queue_depth: int = 32, prefix: str = "bin",
            **server_kw: object) -> Iterator[NbdEnv]:
    """tgtd serving ``lun`` as LUN 1, bootinit logged in, NbdServer on a socket."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bootinit-nbd-")))
        topo = stack.enter_context(topology(prefix=prefix))
        tgtd = stack.enter_context(Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260),
                                        lun_dir="/var/tmp"))
        tid = tgtd.add_target(IQN, [lun])
        assert topo.link is not None
        loop = Loop()
        stack.callback(loop.close)
        net = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        net.start()
        stack.callback(net.close)
        ini = Initiator(net, nop_interval=5.0)
        dev = ini.open_block_device(f"iscsi://{topo.peer_addr}/{IQN}/1",
                                    queue_depth=queue_depth)
        stack.callback(ini.logout)
        srv = NbdServer(loop, workdir / "nbd.sock", dev, **server_kw)  # type: ignore[arg-type]
        stack.callback(srv.close)
        yield NbdEnv(topo, tgtd, tid, loop, net, ini, dev, srv, workdir)
