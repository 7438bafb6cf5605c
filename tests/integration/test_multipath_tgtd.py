"""Multipath over two portals of one tgtd, each path its own TAP and stack.

Layout (one namespace): TAP ``A`` with 10.77.0.1/24 on its kernel side, TAP ``B`` with
10.78.0.1/24; tgtd listens on both (one portal group); our two stacks (10.77.0.2 on
A, 10.78.0.2 on B) share one loop.  A path's link is cut with ``ip link set <kernel
side of its TAP> down`` inside the namespace and restored with ``up``.

Run: ``sudo python -m pytest tests/integration/test_multipath_tgtd.py -s``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from bootinit.blockdev import IoRequest
from bootinit.multipath import MultipathDevice, MultipathError, PathSpec
from bootinit.targets import Tgtd
from firmware_tables.target import TargetSpec
from netstack.harness import Topology, topology
from netstack.link.tap import TapLink
from netstack.linkopts import random_mac
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:mp"
OTHER = "iqn.2024-01.org.bootinit:mp-other"
MiB = 1 << 20
SIZE = 256 * MiB
CHUNK = 4 * MiB
QD = 8


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    loop: Loop
    stacks: list[NetStack]
    devs: list[str]          # kernel-side device of each path's TAP
    hosts: list[str]
    lun_file: Path
    tid: int

    def paths(self, iqn: str = IQN, lun: int = 1) -> list[PathSpec]:
        return [PathSpec(TargetSpec(host=h, name=iqn, lun=lun), stack=s, label=f"path{i}")
                for i, (h, s) in enumerate(zip(self.hosts, self.stacks, strict=True))]

    def link(self, path: int, up: bool) -> None:
        self.topo.run(["ip", "link", "set", "dev", self.devs[path], "up" if up else "down"])


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    lun_file = Path("/var/tmp") / f"bootinit-mp-{os.getpid()}.img"
    with open(lun_file, "wb") as f:
        for _ in range(SIZE // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
    try:
        with topology(prefix="bim") as topo:
            assert topo.link is not None and topo.tap is not None
            tap_b = TapLink(mtu=1500, netns=topo.netns, peer_ip=IPv4Interface("10.78.0.1/24"))
            loop = Loop()
            try:
                with Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260),
                          lun_dir="/var/tmp") as tgtd:
                    tgtd.add_portal("10.78.0.1")
                    tid = tgtd.add_target(IQN, [str(lun_file)])
                    tgtd.add_target(OTHER, ["8M"])
                    sa = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac,
                                                               ip=topo.our_ip))
                    sb = NetStack(loop, tap_b, StackConfig(
                        mac=random_mac(), ip=IPv4Interface("10.78.0.2/24")))
                    sa.start()
                    sb.start()
                    try:
                        yield Env(topo, tgtd, loop, [sa, sb], [topo.tap.name, tap_b.name],
                                  [str(topo.peer_addr), "10.78.0.1"], lun_file, tid)
                    finally:
                        sa.close()
                        sb.close()
            finally:
                loop.close()
                tap_b.close()
    finally:
        lun_file.unlink(missing_ok=True)


def stream_io(dev: MultipathDevice, kind: str, total: int, data: bytes | None,
              out: bytearray | None, events: dict[float, Callable[[], None]]) -> float:
    """Sequential I/O of ``total`` bytes in CHUNK pieces, QD in flight; ``events``
    run (once) when the fraction done passes their key.  Returns the seconds taken."""
    bs = dev.block_size
    view_out = memoryview(out) if out is not None else None
    view_in = memoryview(data) if data is not None else None
    inflight: list[IoRequest] = []
    nxt = 0
    done = 0
    pending = sorted(events.items())
    t0 = time.monotonic()
    while done < total:
        while nxt < total and len(inflight) < QD:
            if kind == "read":
                assert view_out is not None
                inflight.append(dev.submit_read(nxt // bs, CHUNK // bs,
                                                view_out[nxt:nxt + CHUNK]))
            else:
                assert view_in is not None
                inflight.append(dev.submit_write(nxt // bs, view_in[nxt:nxt + CHUNK]))
            nxt += CHUNK
        dev.run_until(lambda: any(r.done for r in inflight), "multipath I/O")
        for r in [r for r in inflight if r.done]:
            r.check()  # no error may reach the caller
            inflight.remove(r)
            done += CHUNK
        while pending and done / total >= pending[0][0]:
            pending.pop(0)[1]()
    return time.monotonic() - t0


def wait_for(dev: MultipathDevice, pred: Callable[[], bool], what: str,
             timeout: float = 30.0) -> None:
    dev.loop.run_until(pred, timeout, what)


def outage_events(env: Env, dev: MultipathDevice, path: int) -> dict[float, Callable[[], None]]:
    """Cut ``path`` at 20 %, restore it at 45 %, and at 60 % wait for its failback."""
    return {
        0.20: lambda: env.link(path, False),
        0.45: lambda: env.link(path, True),
        0.60: lambda: wait_for(dev, lambda: dev.stats["failbacks"] >= 1, "failback"),
    }


def test_failover_read_256mib_link_down_and_up(env: Env) -> None:
    dev = MultipathDevice(env.loop, env.paths(), policy="failover")
    try:
        assert dev.active_path == "path0"
        before = dev.counters()
        buf = bytearray(SIZE)
        secs = stream_io(dev, "read", SIZE, None, buf, outage_events(env, dev, 0))
        c = dev.counters()
        assert hashlib.sha256(buf).digest() == hashlib.sha256(env.lun_file.read_bytes()).digest()
        assert c["multipath"]["failovers"] >= 1 and c["multipath"]["failbacks"] >= 1
        assert c["path1"]["commands"] > before["path1"]["commands"]  # the standby took over
        assert dev.active_path == "path0"                          # and handed back
        print(f"\nmultipath failover read {SIZE // MiB} MiB in {secs:.1f} s "
              f"({SIZE / MiB / secs:.0f} MB/s): {c}")
    finally:
        env.link(0, True)
        dev.close()


def test_round_robin_write_link_down_and_up(env: Env) -> None:
    dev = MultipathDevice(env.loop, env.paths(), policy="round-robin")
    try:
        size = SIZE
        data = os.urandom(size)
        secs = stream_io(dev, "write", size, data, None, outage_events(env, dev, 1))
        dev.flush()
        c = dev.counters()
        with open(env.lun_file, "rb") as f:
            assert f.read(size) == data
        assert c["multipath"]["failovers"] >= 1 and c["multipath"]["failbacks"] >= 1
        assert c["path0"]["commands"] > 0 and c["path1"]["commands"] > 0
        print(f"\nmultipath round-robin write {size // MiB} MiB in {secs:.1f} s: {c}")
    finally:
        env.link(1, True)
        dev.close()


def test_refuses_to_merge_different_luns(env: Env) -> None:
    paths = env.paths()
    paths[1] = PathSpec(TargetSpec(host=env.hosts[1], name=OTHER, lun=1), stack=env.stacks[1])
    with pytest.raises(MultipathError, match="different LUN"):
        MultipathDevice(env.loop, paths)


def test_a_dead_path_at_open_joins_later(env: Env) -> None:
    env.link(1, False)
    try:
        dev = MultipathDevice(env.loop, env.paths(), policy="round-robin", open_timeout=3.0)
    finally:
        env.link(1, True)
    try:
        assert dev.path_states()["path1"] in ("failed", "connecting")
        wait_for(dev, lambda: dev.stats["failbacks"] >= 1, "path1 joining")
        dev.read(0, 2048)
        assert dev.counters()["path1"]["commands"] > 0
    finally:
        dev.close()
