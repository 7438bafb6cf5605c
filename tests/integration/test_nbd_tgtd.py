"""NbdServer serving a tgtd LUN through bootinit (our TCP/IP stack, iSCSI), checked with
real NBD clients: qemu-img, qemu-io, nbdinfo, nbdcopy. Data is compared with tgtd's
backing file.

Run: ``sudo python -m pytest tests/integration/test_nbd_tgtd.py -s`` (``-s`` shows MB/s).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nbd_env import NbdEnv, nbd_env

MiB = 1 << 20
SIZE = 64 * MiB


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install qemu-utils libnbd-bin)")


@pytest.fixture(scope="module")
def env() -> Iterator[NbdEnv]:
    with nbd_env("64M", prefix="bnt") as e:
        yield e


def test_qemu_img_info_sees_the_lun(env: NbdEnv) -> None:
    need("qemu-img")
    r = env.run(["qemu-img", "info", "--output=json", env.qemu_uri], 30).check()
    info = json.loads(r.stdout)
    assert info["virtual-size"] == SIZE and info["format"] == "raw"


def test_nbdinfo_reports_size_flags_and_block_sizes(env: NbdEnv) -> None:
    need("nbdinfo")
    r = env.run(["nbdinfo", "--json", env.nbd_uri], 30).check()
    info = json.loads(r.stdout)
    assert info["protocol"] == "newstyle-fixed"
    ex = info["exports"][0]
    assert ex["export-size"] == SIZE
    assert ex["block_size_minimum"] == 512
    assert ex["block_size_preferred"] == 4096
    assert ex["block_size_maximum"] == 32 * MiB
    assert ex["is_read_only"] is False and ex["can_flush"] is True
    assert ex["can_fua"] is True and ex["can_multi_conn"] is True
    assert ex["can_trim"] is False
    r = env.run(["nbdinfo", "--list", "--json", env.nbd_uri], 30).check()
    assert [e["export-name"] for e in json.loads(r.stdout)["exports"]] == [""]


def test_qemu_img_convert_writes_and_reads_back_through_the_export(env: NbdEnv,
                                                                   tmp_path: Path) -> None:
    need("qemu-img")
    src = tmp_path / "src.raw"
    data = os.urandom(16 * MiB)
    src.write_bytes(data)
    # -n: the target exists; -W: out-of-order writes; -m 16: coroutines in flight
    r = env.run(["qemu-img", "convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw",
                 str(src), env.qemu_uri], 120).check()
    print(f"\nqemu-img convert 16 MiB -> NBD: {16 / r.seconds:.1f} MB/s")
    assert env.file_bytes(0, len(data)) == data
    out = tmp_path / "out.raw"
    r = env.run(["qemu-img", "convert", "-m", "16", "-f", "raw", "-O", "raw",
                 env.qemu_uri, str(out)], 120).check()
    print(f"qemu-img convert NBD -> 64 MiB file: {64 / r.seconds:.1f} MB/s")
    got = out.read_bytes()
    assert len(got) == SIZE and got[:len(data)] == data
    assert got == env.file_bytes(0, SIZE)
    assert env.server.counters["max_outstanding"] > 1


def test_qemu_io_patterns_aligned_and_unaligned(env: NbdEnv) -> None:
    need("qemu-io")
    r = env.run(["qemu-io", "-f", "raw",
                 "-c", "write -P 0xab 1M 64k",
                 "-c", "write -P 0x5c 2M 100",          # unaligned: qemu does RMW
                 "-c", "aio_write -P 0x11 3M 256k", "-c", "aio_write -P 0x22 4M 256k",
                 "-c", "aio_flush",
                 "-c", "read -P 0xab 1M 64k", "-c", "read -P 0x5c 2M 100",
                 "-c", "read -P 0x11 3M 256k", "-c", "read -P 0x22 4M 256k",
                 "-c", "flush", env.qemu_uri], 60).check()
    assert "Pattern verification failed" not in r.stdout
    assert env.file_bytes(MiB, 64 * 1024) == b"\xab" * 65536
    assert env.file_bytes(2 * MiB, 100) == b"\x5c" * 100
    assert env.file_bytes(3 * MiB, 256 * 1024) == b"\x11" * 256 * 1024
    assert env.file_bytes(4 * MiB, 256 * 1024) == b"\x22" * 256 * 1024
    assert env.server.counters["flushes"] >= 1
    # the server saw only block-aligned requests: qemu honoured NBD_INFO_BLOCK_SIZE
    assert env.server.counters["rejected"] == 0


def test_nbdcopy_with_many_requests_in_flight(env: NbdEnv, tmp_path: Path) -> None:
    need("nbdcopy")
    src = tmp_path / "copy.raw"
    data = os.urandom(32 * MiB)
    src.write_bytes(data)
    c = env.server.counters
    c["max_outstanding"] = 0
    r = env.run(["nbdcopy", "--requests=32", "--connections=1", "--request-size=262144",
                 str(src), env.nbd_uri], 180).check()
    print(f"\nnbdcopy 32 MiB -> NBD (32 requests): {32 / r.seconds:.1f} MB/s, "
          f"{c['max_outstanding']} writes in flight at most")
    assert env.file_bytes(0, len(data)) == data
    assert c["max_outstanding"] >= 2       # writes wait for their payload, still pipelined
    c["max_outstanding"] = 0
    out = tmp_path / "back.raw"
    r = env.run(["nbdcopy", "--requests=32", "--connections=2", env.nbd_uri, str(out)],
                180).check()
    print(f"nbdcopy NBD -> file 64 MiB (2 connections): {64 / r.seconds:.1f} MB/s, "
          f"{c['max_outstanding']} reads in flight at most")
    assert out.read_bytes()[:len(data)] == data
    assert c["max_outstanding"] >= 16       # the iSCSI queue depth is used


def test_loop_keeps_serving_while_a_client_idles(env: NbdEnv) -> None:
    """Two clients at once: one reads while another holds an idle connection."""
    need("qemu-io", "nbdinfo")
    import subprocess
    idle = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 3000", "-c",
                             "read 0 512", env.qemu_uri],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env.loop.run_until(lambda: len(env.server.connections) >= 1, 10, "qemu-io connected")
        r = env.run(["nbdinfo", "--size", env.nbd_uri], 30).check()
        assert int(r.stdout) == SIZE
        env.loop.run_until(lambda: idle.poll() is not None, 30, "the idle client")
        assert idle.returncode == 0
    finally:
        if idle.poll() is None:
            idle.kill()
            idle.wait(5)
