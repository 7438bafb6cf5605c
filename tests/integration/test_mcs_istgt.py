"""MC/S (RFC 7143 §4.4) against istgt with MaxConnections 4, through our stack.

One session of four connections (same ISID and TSIH, CIDs 0-3); I/O is spread over
them (per-connection counters); one connection is killed mid-I/O with ``ss -K`` on its
4-tuple inside the namespace (istgt's socket is destroyed, we get a RST): at ERL 0
the session is reinstated and every unfinished command re-issued — the data is
intact and the caller sees no error.

Run: ``sudo python -m pytest tests/integration/test_mcs_istgt.py -s``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bootinit.blockdev import BlockDevice, IoRequest
from bootinit.initiator import default_initiator_name
from bootinit.iscsi.mcs import McsIscsiSession, open_mcs
from bootinit.iscsi.session import SessionConfig
from bootinit.iscsi.text import Portal
from bootinit.targets import Istgt
from netstack.harness import Topology, topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:istgt-mcs"
MiB = 1 << 20
SIZE = 64 * MiB
CHUNK = 1 * MiB
QD = 16


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Topology, Istgt, NetStack]]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with topology(prefix="bic") as topo, Istgt(
            topo.netns, listen=(str(topo.peer_addr), 3260), iqn=IQN, luns=("64M",),
            max_connections=4, lun_dir="/var/tmp") as tgt:
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            yield topo, tgt, stack
        finally:
            stack.close()
            loop.close()


def login(topo: Topology, stack: NetStack) -> McsIscsiSession:
    cfg = SessionConfig(initiator_name=default_initiator_name(),
                        portal=Portal(str(topo.peer_addr)), target_name=IQN,
                        nop_interval=2.0, nop_timeout=4.0)
    return open_mcs(stack, cfg, connections=4)


def stream(dev: BlockDevice, kind: str, data: memoryview, at: float | None = None,
           event: object = None) -> None:
    """Sequential I/O over ``data`` with QD requests in flight; ``event()`` once past
    fraction ``at``."""
    bs = dev.block_size
    inflight: list[IoRequest] = []
    nxt = done = 0
    fired = False
    while done < len(data):
        while nxt < len(data) and len(inflight) < QD:
            piece = data[nxt:nxt + CHUNK]
            inflight.append(dev.submit_read(nxt // bs, CHUNK // bs, piece) if kind == "read"
                            else dev.submit_write(nxt // bs, piece))
            nxt += CHUNK
        dev.session.wait(lambda: any(r.done for r in inflight), "I/O")
        for r in [r for r in inflight if r.done]:
            r.check()
            inflight.remove(r)
            done += CHUNK
        if at is not None and not fired and done >= at * len(data):
            fired = True
            assert callable(event)
            event()


@pytest.mark.parametrize("victim", [2, 0], ids=["secondary", "leading"])
def test_four_connections_spread_io_and_survive_a_killed_one(
        env: tuple[Topology, Istgt, NetStack], victim: int) -> None:
    topo, tgt, stack = env
    h = login(topo, stack)
    try:
        m = h.mcs
        assert h.params.max_connections == 4
        assert len(m.ready_connections()) == 4
        assert {c.tsih for c in m.conns.values()} == {m.tsih}
        dev = BlockDevice(h, 0)
        data = os.urandom(SIZE)
        stream(dev, "write", memoryview(data))
        dev.flush()
        c = h.counters()
        per_conn = [c[f"conn{i}"].get("commands_completed", 0) for i in range(4)]
        assert all(n > 4 for n in per_conn), per_conn  # spread over all four
        with open(tgt.luns[0].path, "rb") as f:
            assert f.read(SIZE) == data

        conn = m.glue[victim].conn
        assert conn is not None
        port = conn.local_port

        def kill() -> None:
            topo.run(["ss", "-K", "dst", str(topo.our_ip.ip), "dport", "=", f":{port}"])

        back = bytearray(SIZE)
        stream(dev, "read", memoryview(back), at=0.3, event=kill)
        assert back == data
        c = h.counters()
        assert c["mcs"]["reinstatements"] == 1, c
        assert c["mcs"]["replayed"] > 0
        h.wait_joined()
        assert len(m.ready_connections()) == 4
        print(f"\nMC/S counters: {c}")
    finally:
        h.logout()
    assert m.finished
