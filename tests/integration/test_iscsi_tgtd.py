"""The initiator through OUR TCP/IP stack (TAP in a namespace) against the real tgtd.

One namespace and one tgtd serve the whole module (tgtd listens on the peer address of
the TAP inside the namespace); targets:

* ``disk``: LUN 1 64 MiB, LUN 2 16 MiB, LUN 3 a sparse 3 TiB file (READ/WRITE(16));
* ``chap``: CHAP required; ``mutual``: CHAP both ways; ``digest``: CRC32C digests on.

Run: ``sudo python -m pytest tests/integration/test_iscsi_tgtd.py -s`` (``-s`` shows
the MB/s measured).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bootinit.blockdev import BlockDevice, IoRequest
from bootinit.initiator import Initiator
from bootinit.iscsi.chap import ChapCredentials, Secret
from bootinit.iscsi.errors import AuthenticationError, LoginError
from bootinit.iscsi.task import SessionFailed
from bootinit.targets import Tgtd
from netstack.harness import Topology, topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

PREFIX = "iqn.2024-01.org.bootinit:it"
DISK, CHAP, MUTUAL, DIGEST = (f"{PREFIX}-{n}" for n in ("disk", "chap", "mutual", "digest"))
MiB = 1 << 20
TiB = 1 << 40


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    loop: Loop
    stack: NetStack
    tids: dict[str, int]

    @property
    def host(self) -> str:
        return str(self.topo.peer_addr)

    def url(self, iqn: str, lun: int) -> str:
        return f"iscsi://{self.host}/{iqn}/{lun}"

    def initiator(self, **kw: Any) -> Initiator:
        kw.setdefault("nop_interval", 5.0)
        return Initiator(self.stack, **kw)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with topology(prefix="bit") as topo:
        tgtd = Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260), lun_dir="/var/tmp")
        with tgtd:
            tids = {
                "disk": tgtd.add_target(DISK, ["64M", "16M", "3T"]),
                "chap": tgtd.add_target(CHAP, ["8M"]),
                "mutual": tgtd.add_target(MUTUAL, ["8M"]),
                "digest": tgtd.add_target(DIGEST, ["16M"]),
            }
            tgtd.set_chap(tids["chap"], "alice", "alice-secret-1")
            tgtd.set_chap(tids["mutual"], "bob", "bob-secret-123")
            tgtd.set_mutual_chap(tids["mutual"], "tgt", "target-secret-9")
            tgtd.set_param(tids["digest"], "HeaderDigest", "CRC32C,None")
            tgtd.set_param(tids["digest"], "DataDigest", "CRC32C,None")
            assert topo.link is not None
            loop = Loop()
            stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
            stack.start()
            try:
                yield Env(topo, tgtd, loop, stack, tids)
            finally:
                stack.close()
                loop.close()


def file_bytes(env: Env, target: str, lun: int, offset: int, size: int) -> bytes:
    with open(env.tgtd.lun_path(env.tids[target], lun), "rb") as f:
        f.seek(offset)
        return f.read(size)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / max(seconds, 1e-9)


# ---------------------------------------------------------------- discovery, login


def test_discovery_lists_every_target(env: Env) -> None:
    found = env.initiator().discover(env.host)
    names = {t.name for t in found}
    assert {DISK, CHAP, MUTUAL, DIGEST} <= names
    disk = next(t for t in found if t.name == DISK)
    assert disk.portals[0].host == env.host and disk.portals[0].port == 3260


def test_login_inquiry_report_luns(env: Env) -> None:
    ini = env.initiator()
    s = ini.login(env.url(DISK, 1))
    try:
        assert s.session.tsih != 0
        assert s.report_luns() == [0, 1, 2, 3]
        inq = s.inquiry(1)
        assert inq.is_disk and inq.vendor
        assert s.test_unit_ready(1).good
        ident = s.lun_identity(1)
        assert ident.known
        assert s.read_capacity(1).size_bytes == 64 * MiB
    finally:
        ini.logout()
    assert s.session.finished and s.session.error is None


def test_chap_login(env: Env) -> None:
    ini = env.initiator()
    chap = ChapCredentials("alice", Secret("alice-secret-1"))
    s = ini.login(env.url(CHAP, 1), chap=chap)
    assert s.session.ready
    assert s.read_capacity().size_bytes == 8 * MiB
    ini.logout()


def test_chap_in_url(env: Env) -> None:
    ini = env.initiator()
    s = ini.login(f"iscsi://alice:alice-secret-1@{env.host}/{CHAP}/1")
    assert s.session.ready
    ini.logout()


def test_chap_wrong_secret_is_a_clear_error(env: Env) -> None:
    ini = env.initiator()
    chap = ChapCredentials("alice", Secret("not-the-secret"))
    start = time.monotonic()
    with pytest.raises(SessionFailed) as ei:
        ini.login(env.url(CHAP, 1), chap=chap)
    assert isinstance(ei.value.cause, LoginError)
    assert "authentication failure" in str(ei.value)
    assert "not-the-secret" not in str(ei.value)
    assert time.monotonic() - start < 5  # not retried
    with pytest.raises(SessionFailed, match="authentication"):
        ini.login(env.url(CHAP, 1))  # no credentials at all


def test_mutual_chap(env: Env) -> None:
    ini = env.initiator()
    good = ChapCredentials("bob", Secret("bob-secret-123"), target_username="tgt",
                           target_secret=Secret("target-secret-9"))
    s = ini.login(env.url(MUTUAL, 1), chap=good)
    assert s.session.ready
    ini.logout()
    bad = ChapCredentials("bob", Secret("bob-secret-123"), target_username="tgt",
                          target_secret=Secret("wrong-target-sec"))
    with pytest.raises(SessionFailed) as ei:
        ini.login(env.url(MUTUAL, 1), chap=bad)
    assert isinstance(ei.value.cause, AuthenticationError)


def test_header_and_data_digests(env: Env) -> None:
    ini = env.initiator()
    dev = ini.open_block_device(env.url(DIGEST, 1), digests=True)
    p = dev.session.params
    assert p.header_digest and p.data_digest
    data = os.urandom(8 * MiB)
    dev.write(0, data)
    assert dev.read(0, len(data) // 512) == data
    assert file_bytes(env, "digest", 1, 0, len(data)) == data
    assert dev.session.counters().get("errors", {}).get("data_digest", 0) == 0
    ini.logout()


# ------------------------------------------------------------------------- I/O


def any_done(reqs: list[IoRequest]) -> bool:
    return any(r.done for r in reqs)


def run_random_io(dev: BlockDevice, total: int, qd: int, seed: int) -> tuple[float, float]:
    """Random-offset reads and writes (``total`` bytes each way), ``qd`` in flight,
    checked against a model; returns (write MB/s, read MB/s)."""
    rng = random.Random(seed)
    bs = dev.block_size
    size = dev.capacity
    model = bytearray(dev.read(0, dev.num_blocks))
    results: dict[str, float] = {}
    where: dict[int, tuple[int, int]] = {}
    writing: dict[int, tuple[int, int]] = {}
    for kind in ("write", "read"):
        done_bytes = 0
        inflight: list[IoRequest] = []
        t0 = time.monotonic()
        while done_bytes < total or inflight:
            while done_bytes < total and len(inflight) < qd:
                n = rng.choice((1, 8, 8, 64, 256, 2048)) * bs
                lba = rng.randrange(0, (size - n) // bs + 1)
                if kind == "write" and any(
                        lba * bs < b and a < lba * bs + n for a, b in writing.values()):
                    continue  # concurrent overlapping writes have no defined order (SAM)
                if kind == "write":
                    data = rng.randbytes(n)
                    model[lba * bs:lba * bs + n] = data
                    req = dev.submit_write(lba, data)
                    writing[id(req)] = (lba * bs, lba * bs + n)
                    inflight.append(req)
                else:
                    req = dev.submit_read(lba, n // bs)
                    where[id(req)] = (lba, n)
                    inflight.append(req)
                done_bytes += n
            dev.session.wait(functools.partial(any_done, inflight), "I/O")
            still = []
            for r in inflight:
                if not r.done:
                    still.append(r)
                    continue
                r.check()
                writing.pop(id(r), None)
                if kind == "read":
                    lba, n = where.pop(id(r))
                    assert r.buffer is not None
                    assert r.buffer.tobytes() == model[lba * bs:lba * bs + n], f"LBA {lba}"
            inflight = still
        results[kind] = mbps(done_bytes, time.monotonic() - t0)
    assert dev.read(0, dev.num_blocks) == model
    return results["write"], results["read"]


def test_random_io_64mib_against_backing_file(env: Env) -> None:
    ini = env.initiator()
    dev = ini.open_block_device(env.url(DISK, 1), queue_depth=32)
    w, r = run_random_io(dev, 32 * MiB, 32, seed=1)
    image = dev.read(0, dev.num_blocks)
    dev.flush()
    assert file_bytes(env, "disk", 1, 0, 64 * MiB) == image
    print(f"\nrandom I/O qd32: write {w:.1f} MB/s, read {r:.1f} MB/s")
    c = dev.session.counters()
    assert c["commands"].get("failed", 0) == 0
    ini.logout()


def test_queue_depth_1_and_32(env: Env) -> None:
    ini = env.initiator()
    out = {}
    for qd in (1, 32):
        dev = ini.open_block_device(env.url(DISK, 2), queue_depth=qd)
        data = os.urandom(16 * MiB)
        t0 = time.monotonic()
        reqs = [dev.submit_write(i * 512, data[i * 512 * 512:(i + 1) * 512 * 512])
                for i in range(len(data) // (512 * 512))]
        dev.wait(*reqs)
        tw = time.monotonic() - t0
        buf = bytearray(len(data))
        t0 = time.monotonic()
        view = memoryview(buf)
        reqs = [dev.submit_read(i * 512, 512, view[i * 512 * 512:(i + 1) * 512 * 512])
                for i in range(len(data) // (512 * 512))]
        dev.wait(*reqs)
        tr = time.monotonic() - t0
        assert bytes(buf) == data
        out[qd] = (mbps(len(data), tw), mbps(len(data), tr))
        dev.session.logout()
        ini.sessions.remove(dev.session)
    print(f"\nsequential 256 KiB I/O: qd1 write {out[1][0]:.1f} read {out[1][1]:.1f} MB/s; "
          f"qd32 write {out[32][0]:.1f} read {out[32][1]:.1f} MB/s")


def test_commands_longer_than_max_burst(env: Env) -> None:
    """2 MiB READ and WRITE commands against tgtd's 256 KiB MaxBurstLength: the target
    answers the read with several Data-In sequences and solicits the write with several
    R2Ts (RFC 7143 §13.13 bounds a sequence, not a command); tgtd's Block Limits page
    (VPD 0xB0) reports no maximum, so the device's default of 2 MiB per command holds."""
    ini = env.initiator()
    dev = ini.open_block_device(env.url(DISK, 2), queue_depth=8)
    burst = dev.session.params.max_burst_length
    assert dev.block_limits is not None and dev.block_limits.max_transfer_blocks is None
    assert dev.max_transfer_blocks * dev.block_size == 2 * MiB > burst
    data = os.urandom(8 * MiB)
    before = dev.session.counters()["commands"].get("submitted", 0)
    dev.write(0, data)
    assert dev.read(0, len(data) // 512) == data
    dev.flush()
    # 4 writes + 4 reads + 1 flush: no command was split at MaxBurstLength.
    assert dev.session.counters()["commands"]["submitted"] - before == 9
    assert file_bytes(env, "disk", 2, 0, len(data)) == data
    ini.logout()


def test_several_luns_are_distinct(env: Env) -> None:
    ini = env.initiator()
    s = ini.login(env.url(DISK, 1))
    d1 = s.block_device(1)
    d2 = s.block_device(2)
    assert d1.capacity == 64 * MiB and d2.capacity == 16 * MiB
    assert d1.identity != d2.identity
    a, b = os.urandom(1 * MiB), os.urandom(1 * MiB)
    r1 = d1.submit_write(100, a)
    r2 = d2.submit_write(100, b)
    d1.wait(r1, r2)
    assert d1.read(100, 2048) == a and d2.read(100, 2048) == b
    assert file_bytes(env, "disk", 1, 100 * 512, MiB) == a
    assert file_bytes(env, "disk", 2, 100 * 512, MiB) == b
    ini.logout()


def test_sparse_lun_over_2tib(env: Env) -> None:
    ini = env.initiator()
    dev = ini.open_block_device(env.url(DISK, 3))
    assert dev.capacity == 3 * TiB and dev.num_blocks > 1 << 32
    for offset in (2 * TiB - 4096, 2 * TiB + 12345 * 512, 3 * TiB - MiB):
        data = os.urandom(MiB)
        lba = offset // 512
        dev.write(lba, data)
        assert dev.read(lba, len(data) // 512) == data
        assert file_bytes(env, "disk", 3, offset, len(data)) == data
    ini.logout()


# -------------------------------------------------------------------- recovery


def _kill_restart_during(env: Env, kind: str) -> None:
    ini = env.initiator(nop_interval=2.0, nop_timeout=4.0)
    dev = ini.open_block_device(env.url(DISK, 2), queue_depth=16)
    size = 16 * MiB
    chunk = 256 * 1024
    data = os.urandom(size)
    if kind == "read":
        dev.write(0, data)
    reqs: list[IoRequest] = []
    buf = bytearray(size)
    view = memoryview(buf)
    for off in range(0, size, chunk):
        if kind == "write":
            reqs.append(dev.submit_write(off // 512, data[off:off + chunk]))
        else:
            reqs.append(dev.submit_read(off // 512, chunk // 512, view[off:off + chunk]))
    dev.session.wait(lambda: sum(r.done for r in reqs) >= 8, "some progress")
    assert not all(r.done for r in reqs)
    env.tgtd.kill()
    env.loop.run_for(0.5)  # the session notices (FIN/RST) and waits DefaultTime2Wait
    env.tgtd.start()
    t0 = time.monotonic()
    dev.wait(*reqs)
    took = time.monotonic() - t0
    c = dev.session.counters()
    assert c["recovery"]["started"] >= 1 and c["recovery"]["succeeded"] >= 1
    if kind == "read":
        assert bytes(buf) == data
    else:
        assert dev.read(0, size // 512) == data
        assert file_bytes(env, "disk", 2, 0, size) == data
    print(f"\n{kind} survived a tgtd kill+restart; recovery took {took:.1f} s; "
          f"replayed {c['commands'].get('replayed', 0)} commands")
    ini.logout()


def test_tgtd_killed_and_restarted_during_read(env: Env) -> None:
    _kill_restart_during(env, "read")


def test_tgtd_killed_and_restarted_during_write(env: Env) -> None:
    _kill_restart_during(env, "write")


def test_hung_target_is_noticed_by_nop_timeout(env: Env) -> None:
    ini = env.initiator(nop_interval=1.0, nop_timeout=2.0, login_timeout=3.0)
    dev = ini.open_block_device(env.url(DISK, 2), queue_depth=4)
    data = os.urandom(4 * MiB)
    dev.write(0, data)
    pid = env.tgtd.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive at TCP level, silent at iSCSI level
    try:
        reqs = [dev.submit_read(i * 2048, 2048) for i in range(4)]
        env.loop.run_for(4.0)
        c = dev.session.counters()
        assert c["nop"]["timeouts"] >= 1 and c["recovery"]["started"] >= 1
        assert not any(r.done for r in reqs)
    finally:
        os.kill(pid, signal.SIGCONT)
    dev.wait(*reqs)
    got = b"".join(r.buffer.tobytes() for r in reqs if r.buffer is not None)
    assert got == data
    assert dev.session.counters()["recovery"]["succeeded"] >= 1
    ini.logout()
