"""Faults in the middle of I/O against the real tgtd, through our stack on a TAP.

* tgtd SIGKILLed and restarted during a 256 MiB write;
* the target drops our connection (``tgtadm --op delete --mode conn``) mid-I/O;
* the TAP's kernel side goes down and up again (``ip link set TAP down/up``) mid-I/O;
* 20 % frame loss in both directions (``FaultLink``) under mixed random I/O for a
  bounded time (``FAULT_LOSS_SECONDS``, default 15; 60 for the full minute).

Afterwards the LUN (its backing file, and reads through the initiator) holds what the
caller was told: every write that completed OK holds its new data; a write that failed
was reported with a typed error and its blocks hold the old or the new data.

Run: ``sudo python -m pytest tests/integration/test_faults_tgtd.py -s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bootinit.blockdev import BlockDevice
from bootinit.initiator import Initiator
from bootinit.iscsi.recovery import RecoveryPolicy
from bootinit.targets import Tgtd
from netstack.harness import Topology, topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem
from tests.integration.workload import (
    BS,
    Model,
    check_stream,
    random_io,
    sequential_write,
)

PREFIX = "iqn.2024-01.org.bootinit:faults"
MiB = 1 << 20


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    loop: Loop
    stack: NetStack

    @property
    def host(self) -> str:
        return str(self.topo.peer_addr)

    def new_lun(self, name: str, size: str) -> tuple[int, str]:
        iqn = f"{PREFIX}-{name}"
        tid = self.tgtd.add_target(iqn, [size])
        return tid, f"iscsi://{self.host}/{iqn}/1"

    def file_chunk(self, tid: int, offset: int, size: int) -> bytes:
        with open(self.tgtd.lun_path(tid, 1), "rb") as f:
            f.seek(offset)
            return f.read(size)


@contextlib.contextmanager
def lab(prefix: str, fault: str | None = None) -> Iterator[Env]:
    """A namespace with tgtd and our stack on a TAP (optionally through FaultLink)."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with topology(prefix=prefix, fault=fault) as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260), lun_dir="/var/tmp") as tgtd:
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            yield Env(topo, tgtd, loop, stack)
        finally:
            stack.close()
            loop.close()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with lab("bft") as e:
        yield e


@pytest.fixture(autouse=True)
def _quieter() -> Iterator[None]:
    logging.getLogger("bootinit").setLevel(logging.ERROR)
    yield
    logging.getLogger("bootinit").setLevel(logging.NOTSET)


def open_dev(env: Env, url: str, **kw: object) -> tuple[Initiator, BlockDevice]:
    kw.setdefault("nop_interval", 1.0)
    kw.setdefault("nop_timeout", 3.0)
    ini = Initiator(env.stack, **kw)  # type: ignore[arg-type]
    return ini, ini.open_block_device(url, queue_depth=16)


def read_back(dev: BlockDevice, total: int, chunk: int) -> Callable[[int], bytes]:
    def rd(i: int) -> bytes:
        return dev.read(i * chunk // BS, chunk // BS)

    return rd


def fault_once(at: int, action: Callable[[], None]) -> Callable[[int], None]:
    fired = [False]

    def progress(done: int) -> None:
        if done >= at and not fired[0]:
            fired[0] = True
            action()

    return progress


def _stream_with_fault(env: Env, name: str, total: int, action: Callable[[], None],
                       seed: int) -> tuple[BlockDevice, Initiator, int]:
    tid, url = env.new_lun(name, f"{total // MiB}M")
    ini, dev = open_dev(env, url)
    chunk = MiB
    res = sequential_write(dev, seed=seed, total=total, chunk=chunk, qd=16,
                           on_progress=fault_once(total // chunk // 3, action),
                           allow_errors=True)
    assert len(res.ok) + len(res.failed) == total // chunk
    for i, err in res.failed.items():
        print(f"chunk {i}: write reported failed: {err}")

    def zeros(i: int) -> bytes:
        return bytes(chunk)

    check_stream(lambda i: env.file_chunk(tid, i * chunk, chunk), seed=seed, total=total,
                 chunk=chunk, result=res, old=zeros)
    check_stream(read_back(dev, total, chunk), seed=seed, total=total, chunk=chunk,
                 result=res, old=zeros)
    c = dev.session.counters()
    assert c["recovery"]["started"] >= 1 and c["recovery"]["succeeded"] >= 1, c["recovery"]
    # the session survived: nothing left behind in its task tables
    s = dev.session.session
    assert s.outstanding() == 0 and not s._active and not s._jobs
    return dev, ini, tid


def test_tgtd_killed_and_restarted_during_a_256mib_write(env: Env) -> None:
    total = int(os.environ.get("FAULT_WRITE_MIB", "256")) * MiB

    def kill_restart() -> None:
        env.tgtd.kill()
        env.loop.run_for(0.5)
        env.tgtd.start()

    dev, ini, _tid = _stream_with_fault(env, "kill", total, kill_restart, seed=11)
    print(f"\nreplayed {dev.session.counters()['commands'].get('replayed', 0)} commands")
    ini.logout()


def test_target_drops_our_connection_mid_io(env: Env) -> None:
    total = 64 * MiB
    box: dict[str, int] = {}

    def drop() -> None:
        conns = env.tgtd.connections(box["tid"])
        assert conns, "tgtd lists no connection of ours"
        for c in conns:
            env.tgtd.delete_connection(box["tid"], c.sid, c.cid)

    tid, url = env.new_lun("drop", "64M")
    box["tid"] = tid
    ini, dev = open_dev(env, url)
    chunk = MiB
    res = sequential_write(dev, seed=12, total=total, chunk=chunk, qd=16,
                           on_progress=fault_once(20, drop), allow_errors=True)
    check_stream(lambda i: env.file_chunk(tid, i * chunk, chunk), seed=12, total=total,
                 chunk=chunk, result=res, old=lambda i: bytes(chunk))
    check_stream(read_back(dev, total, chunk), seed=12, total=total, chunk=chunk,
                 result=res, old=lambda i: bytes(chunk))
    assert dev.session.counters()["recovery"]["succeeded"] >= 1
    ini.logout()


def test_tap_link_down_and_up_mid_io(env: Env) -> None:
    tid, url = env.new_lun("linkflap", "32M")
    ini, dev = open_dev(env, url)
    size = dev.capacity
    model = Model(bytearray(size))
    assert env.topo.peer_dev is not None
    dev_name = env.topo.peer_dev

    def flap() -> None:
        env.topo.run(["ip", "link", "set", dev_name, "down"])
        env.loop.run_for(2.0)  # our frames are dropped (EIO, counted) meanwhile
        env.topo.run(["ip", "link", "set", dev_name, "up"])

    stats = random_io(dev, model, qd=16, seed=13, commands=1500, allow_errors=True,
                      on_progress=fault_once(500, flap))
    link = env.stack.counters_dict()["link"]
    assert link.get("tx_drop_link_down", 0) > 0, link
    image = dev.read(0, size // BS)
    model.check(0, image, "LUN through the initiator after the flap")
    model.check(0, env.file_chunk(tid, 0, size), "backing file after the flap")
    print(f"\nlink flap: {stats.reads} reads, {stats.writes} writes, "
          f"{len(stats.failed)} failed (reported)")
    ini.logout()


def test_twenty_percent_loss_under_mixed_io() -> None:
    seconds = float(os.environ.get("FAULT_LOSS_SECONDS", "15"))
    with lab("bfl", fault="loss=0.2,seed=5") as env:
        tid, url = env.new_lun("loss", "16M")
        policy = RecoveryPolicy(deadline=300.0, initial_deadline=120.0)
        ini, dev = open_dev(env, url, nop_interval=5.0, nop_timeout=30.0,
                            command_timeout=60.0, login_timeout=60.0, recovery=policy)
        size = dev.capacity
        model = Model(bytearray(size))
        stats = random_io(dev, model, qd=8, seed=14, seconds=seconds, sizes=(1, 8, 32),
                          allow_errors=True)
        assert stats.reads and stats.writes
        model.check(0, env.file_chunk(tid, 0, size), "backing file after the lossy run")
        sample = dev.read(0, 2048)
        model.check(0, sample, "first MiB read back under loss")
        link = env.stack.counters_dict()["link"]
        assert link["fault.tx_lost"] > 0 and link["fault.rx_lost"] > 0
        tcp = env.stack.counters_dict()["tcp"]
        print(f"\n20% loss for {seconds:g} s: {stats.reads} reads, {stats.writes} writes, "
              f"{stats.bytes // 1024} KiB, {len(stats.failed)} failed (reported); "
              f"retransmits {tcp.get('retransmits', 0)}, RTOs {tcp.get('rto_expired', 0)}")
        ini.logout()
