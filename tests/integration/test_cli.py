"""The ``bootinit`` command line against a real tgtd lab, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootinit.lab import Lab

IQN = "iqn.2026-11.org.bootinit:cli"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from tests.conftest import netns_problem

    problem = netns_problem()
    if problem:
        pytest.skip(problem)
    with Lab(name=f"bicli{os.getpid() % 10000}", target_iqn=IQN, size="32M",
             address="10.79.0.1/24", lun_dir="/dev/shm") as lab:
        yield lab


def run(lab: Lab, *args: str, env: dict[str, str] | None = None,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "bootinit", *args, *lab.link_options]
    return subprocess.run(argv, capture_output=True, timeout=120, input=stdin,
                          env={**os.environ, **(env or {})})


def url(lab: Lab, lun: int = 1) -> str:
    return f"iscsi://10.79.0.1/{IQN}/{lun}"


def test_discover_and_ls(lab: Lab) -> None:
    cp = run(lab, "discover", "10.79.0.1")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.decode().split() == ["10.79.0.1:3260,1", IQN]
    cp = run(lab, "--json", "ls", "10.79.0.1")  # an option before the command
    assert cp.returncode == 0, cp.stderr
    listing = json.loads(cp.stdout)
    luns = {row["lun"]: row for row in listing[0]["luns"]}
    assert luns[1]["type"] == "disk" and luns[1]["size"] == 32 << 20
    assert 0 in luns  # tgtd's controller LUN


def test_inquiry_readcap(lab: Lab) -> None:
    cp = run(lab, "inquiry", url(lab))
    assert cp.returncode == 0, cp.stderr
    assert "Vendor: IET" in cp.stdout.decode()
    cp = run(lab, "readcap", url(lab), "--json")
    assert json.loads(cp.stdout) == {"blocks": 65536, "block_size": 512, "bytes": 32 << 20}


def test_write_then_read_back_and_backing_file(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    cp = run(lab, "write", url(lab), "--lba", "100", "-i", str(src), "--stats")
    assert cp.returncode == 0, cp.stderr
    assert b"tcp:" in cp.stderr and b"pdus_out" in cp.stderr  # --stats on stderr
    cp = run(lab, "read", url(lab), "--lba", "100", "--count", str(len(data) // 512))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data
    backing = Path(lab.lun_paths[0]).read_bytes()[100 * 512:100 * 512 + len(data)]
    assert backing == data
    # iPXE root path form of the same LUN
    cp = run(lab, "read", f"iscsi:10.79.0.1:::1:{IQN}", "--lba", "100", "--count", "8")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data[:4096]


def test_ping(lab: Lab) -> None:
    cp = run(lab, "ping", url(lab), "-c", "2", "-i", "0.05")
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.decode()
    assert "seq=1" in out and "seq=2" in out and "2 pings" in out


def test_errors_are_one_line_without_traceback(lab: Lab, tmp_path: Path) -> None:
    cp = run(lab, "inquiry", f"iscsi://10.79.0.1/{IQN}.nope/1")
    assert cp.returncode != 0
    err = cp.stderr.decode().strip().splitlines()
    assert err == ["bootinit: login refused: login failed: target not found (status 0x0203)"]
    cp = run(lab, "read", url(lab), "--lba", "65530", "--count", "100")
    assert cp.returncode == 2 and b"outside the LUN" in cp.stderr
    assert b"Traceback" not in cp.stderr
    cp = run(lab, "inquiry", "iscsi://10.79.0.1")
    assert cp.returncode != 0 and b"Traceback" not in cp.stderr


def test_chap_from_environment_stays_out_of_argv(tmp_path: Path) -> None:
    from tests.conftest import netns_problem

    if netns_problem():
        pytest.skip(str(netns_problem()))
    secret = "s3cret-from-env-123"
    with Lab(name=f"bichap{os.getpid() % 10000}", target_iqn=IQN, size="8M",
             address="10.79.1.1/24", chap=("alice", secret), lun_dir="/dev/shm") as lab:
        u = f"iscsi://10.79.1.1/{IQN}/1"
        cp = run(lab, "readcap", u, "--user", "alice",
                 env={"BOOTINIT_CHAP_SECRET": secret})
        assert cp.returncode == 0, cp.stderr
        cp = run(lab, "readcap", u, "--user", "alice",
                 env={"BOOTINIT_CHAP_SECRET": "wrong-secret-456"})
        assert cp.returncode == 1
        assert b"authentication failure (status 0x0201)" in cp.stderr
        assert b"wrong-secret" not in cp.stderr
        cp = run(lab, "readcap", f"iscsi://alice%{secret}@10.79.1.1/{IQN}/1")
        assert cp.returncode == 0, cp.stderr


def test_iscsi_params_are_offered_and_shown(lab: Lab, tmp_path: Path) -> None:
    """``--iscsi-param`` sets what we offer at login (iscsiadm's node settings); the
    result is in ``--stats`` and data flows in 8 KiB Data-In PDUs."""
    data = os.urandom(1 << 20)
    src = tmp_path / "p.bin"
    src.write_bytes(data)
    small = ["--iscsi-param", "MaxRecvDataSegmentLength=8192",
             "--iscsi-param", "ImmediateData=No", "--iscsi-param", "FirstBurstLength=0x4000"]
    cp = run(lab, "write", url(lab), "--lba", "2048", "-i", str(src), *small)
    assert cp.returncode == 0, cp.stderr
    cp = run(lab, "read", url(lab), "--lba", "2048", "--count", str(len(data) // 512),
             *small, "--stats", "--json")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data
    stats = json.loads(cp.stderr)["stats"]["device"]
    params = stats["params"]
    assert params["max_recv_data_segment_length"] == 8192
    assert params["immediate_data"] is False and params["first_burst_length"] == 0x4000
    assert stats["pdus_in"]["data_in"] >= len(data) // 8192  # one Data-In per 8 KiB
    cp = run(lab, "read", url(lab), "--lba", "2048", "--count", "8", "--stats", "--json")
    assert json.loads(cp.stderr)["stats"]["device"]["params"][
        "max_recv_data_segment_length"] == 262144  # the default
    cp = run(lab, "readcap", url(lab), "--iscsi-param", "MaxConnections=2")
    assert cp.returncode == 2 and b"Traceback" not in cp.stderr
    assert cp.stderr.decode().strip().splitlines() == [
        "bootinit readcap: --iscsi-param: negotiation of MaxConnections='2': not a key that can "
        "be set here (one of InitialR2T, ImmediateData, MaxRecvDataSegmentLength, "
        "MaxBurstLength, FirstBurstLength, DefaultTime2Wait, DefaultTime2Retain)"]
