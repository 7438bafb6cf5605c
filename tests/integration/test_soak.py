"""A compressed soak against the real tgtd: thousands of mixed commands at queue depth 32.

Random reads and writes of random sizes at random LBAs (never two overlapping requests in
flight), every read checked against a model of what was written. Afterwards nothing
leaks: Python allocations (tracemalloc, before/after, after a warm-up) grow by a bounded
amount, the open descriptors are the same, the session's task tables, the parser's
placements and the TCP connection's queues are empty, and every command completed.

``SOAK_COMMANDS`` (default 3000) sets the length.
"""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from bootinit.initiator import Initiator
from bootinit.targets import Tgtd
from netstack.harness import topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem
from tests.integration.workload import BS, Model, random_io

IQN = "iqn.2024-01.org.bootinit:soak"
MiB = 1 << 20
#: Python memory the measured phase may keep (caches settle during the warm-up).
GROWTH_LIMIT = 1 * MiB


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def quiet() -> Iterator[None]:
    logging.getLogger("bootinit").setLevel(logging.ERROR)
    yield
    logging.getLogger("bootinit").setLevel(logging.NOTSET)


def test_soak_mixed_io_qd32_without_leaks(quiet: None) -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    commands = int(os.environ.get("SOAK_COMMANDS", "3000"))
    with topology(prefix="bsk") as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260), lun_dir="/var/tmp") as tgtd:
        tid = tgtd.add_target(IQN, ["32M"])
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            ini = Initiator(stack, nop_interval=2.0)
            dev = ini.open_block_device(f"iscsi://{topo.peer_addr}/{IQN}/1", queue_depth=32)
            model = Model(bytearray(dev.read(0, dev.num_blocks)))
            sizes = (1, 2, 8, 16, 64, 128)
            # warm-up: every code path once, caches and free lists settle
            random_io(dev, model, qd=32, seed=1, commands=500, sizes=sizes)
            gc.collect()
            fds_before = open_fds()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            stats = random_io(dev, model, qd=32, seed=2, commands=commands, sizes=sizes)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            fds_after = open_fds()

            assert stats.reads + stats.writes == commands and not stats.failed
            growth = sum(d.size_diff for d in after.compare_to(before, "filename"))
            top = "\n".join(str(d) for d in after.compare_to(before, "lineno")[:8])
            print(f"\nsoak: {stats.reads} reads, {stats.writes} writes, "
                  f"{stats.bytes // MiB} MiB; Python memory {growth / 1024:+.1f} KiB\n{top}")
            assert growth < GROWTH_LIMIT, f"memory grew by {growth} bytes:\n{top}"
            assert fds_after == fds_before, (fds_before, fds_after)

            s = dev.session.session
            assert s.outstanding() == 0
            assert not s._active and not s._pending and not s._delayed and not s._jobs
            assert not s._tmfs and not s._user_pings and not s._out
            assert s._parser is not None and not s._parser._placements
            assert s._parser.pending() == 0
            c = s.counters.as_dict()["commands"]
            assert c["submitted"] == c["completed"] and c.get("failed", 0) == 0
            conn = dev.session.conn.conn
            assert conn is not None and conn.connected
            assert not conn._sndbuf and not conn._ooo and conn.available() == 0
            assert len(stack.tcp.connections()) == 1

            image = dev.read(0, dev.num_blocks)
            model.check(0, image, "LUN after the soak")
            dev.flush()
            with open(tgtd.lun_path(tid, 1), "rb") as f:
                model.check(0, f.read(dev.num_blocks * BS), "backing file after the soak")
            ini.logout()
        finally:
            stack.close()
            loop.close()
