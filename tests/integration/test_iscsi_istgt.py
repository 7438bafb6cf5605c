"""The initiator through OUR TCP/IP stack against istgt (a second, independent target).

istgt has no controller LUN: the disk is LUN 0.  It grants MaxOutstandingR2T 16 and
MaxBurstLength 1 MiB, so the write test exercises several R2Ts in flight per command.

Run: ``sudo python -m pytest tests/integration/test_iscsi_istgt.py -s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from bootinit.initiator import Initiator
from bootinit.iscsi.keys import OperationalConfig
from bootinit.targets import Istgt
from netstack.harness import Topology, topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:istgt-it"
MiB = 1 << 20


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Topology, Istgt, NetStack]]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with topology(prefix="bii") as topo, Istgt(
            topo.netns, listen=(str(topo.peer_addr), 3260), iqn=IQN, luns=("32M",),
            lun_dir="/var/tmp") as tgt:
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            yield topo, tgt, stack
        finally:
            stack.close()
            loop.close()


def test_login_inquiry_capacity(env: tuple[Topology, Istgt, NetStack]) -> None:
    topo, _tgt, stack = env
    ini = Initiator(stack)
    s = ini.login(f"iscsi://{topo.peer_addr}/{IQN}/0")
    try:
        inq = s.inquiry(0)
        assert inq.is_disk and inq.vendor
        assert s.test_unit_ready(0).good
        assert s.read_capacity(0).size_bytes == 32 * MiB
        assert 0 in s.report_luns()
        assert s.lun_identity(0).known
    finally:
        ini.logout()
    assert s.session.error is None


def test_read_write_16mib(env: tuple[Topology, Istgt, NetStack]) -> None:
    topo, tgt, stack = env
    ini = Initiator(stack)
    dev = ini.open_block_device(f"iscsi://{topo.peer_addr}/{IQN}/0", queue_depth=32,
                                operational=OperationalConfig(max_outstanding_r2t=8))
    p = dev.session.params
    data = os.urandom(16 * MiB)
    t0 = time.monotonic()
    dev.write(4096, data)
    tw = time.monotonic() - t0
    t0 = time.monotonic()
    back = dev.read(4096, len(data) // 512)
    tr = time.monotonic() - t0
    assert back == data
    dev.flush()
    with open(tgt.luns[0].path, "rb") as f:
        f.seek(4096 * 512)
        assert f.read(len(data)) == data
    print(f"\nistgt 16 MiB (MaxOutstandingR2T {p.max_outstanding_r2t}, MaxBurstLength "
          f"{p.max_burst_length}): write {16 / tw:.1f} MB/s, read {16 / tr:.1f} MB/s")
    ini.logout()
