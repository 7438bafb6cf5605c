"""iSNS discovery and multipath from the command line, as a user runs them.

One namespace with a bridge holding two addresses (10.80.0.1 and 10.80.0.3), isnsd
(open-isns) and tgtd listening on both; tgtd registers its target with isnsd.  Each
``bootinit`` run attaches its own TAP to the bridge.

Run: ``sudo python -m pytest tests/integration/test_isns_cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootinit.isnsd import Isnsd
from bootinit.targets import Tgtd
from firmware_tables import BootConfig
from netstack.harness import Topology, topology
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:isns-cli"
A, B = "10.80.0.1", "10.80.0.3"


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    isns: Isnsd
    lun: Path


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    if shutil.which("isnsd") is None:
        pytest.skip("isnsd (Debian open-isns-server) is not installed")
    with topology(prefix="bis", peer_ip=f"{A}/24", our_ip="10.80.0.2/24", bridge=True,
                  open_tap=False) as topo:
        topo.run(["ip", "addr", "add", f"{B}/24", "dev", "br0"])
        with Isnsd(topo.netns) as isns, Tgtd(topo.netns, listen=(A, 3260),
                                             lun_dir="/dev/shm") as tgtd:
            tid = tgtd.add_target(IQN, ["16M", "8M"])
            lun = tgtd.lun_path(tid, 1)
            with open(lun, "r+b") as f:
                f.write(os.urandom(16 << 20))
            tgtd.set_isns(A)
            isns.wait_registered(IQN)
            tgtd.add_portal(B)  # after iSNS: see Tgtd.set_isns (B is not registered)
            yield Env(topo, tgtd, isns, lun)


def run(env: Env, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "bootinit", *args, *env.topo.link_argv()]
    return subprocess.run(argv, capture_output=True, timeout=120)


def test_isnsd_database_holds_tgtd(env: Env) -> None:
    dump = env.isns.dump_db()
    assert "iSCSI Storage Node" in dump and "Portal Group" in dump and A in dump


def test_discover_isns_lists_the_target_and_login_works(env: Env) -> None:
    cp = run(env, "--json", "discover", "--isns", A)
    assert cp.returncode == 0, cp.stderr
    found = json.loads(cp.stdout)
    assert [t["name"] for t in found] == [IQN]
    hosts = {(p["host"], p["port"], p["tpgt"]) for p in found[0]["portals"]}
    assert hosts == {(A, 3260, 1)}
    portal = found[0]["portals"][0]
    url = f"iscsi://{portal['host']}:{portal['port']}/{IQN}/1"
    cp = run(env, "read", url, "--count", "16")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == env.lun.read_bytes()[:16 * 512]
    cp = run(env, "discover", "--isns", f"{A}:3205")
    assert cp.returncode == 0, cp.stderr
    assert f"{A}:3260,1 {IQN}" in cp.stdout.decode().splitlines()


def test_discover_isns_from_the_ibft(env: Env, tmp_path: Path) -> None:
    table = tmp_path / "ibft.bin"
    table.write_bytes(BootConfig(initiator_name="iqn.2026-11.org.bootinit:ibft",
                                 isns_server=IPv4Address(A)).to_ibft())
    cp = run(env, "discover", "--isns", "--ibft", str(table))
    assert cp.returncode == 0, cp.stderr
    assert f"{A}:3260,1 {IQN}" in cp.stdout.decode().splitlines()
    cp = run(env, "discover", "--ibft", str(table))  # no portal: the iBFT's iSNS server
    assert cp.returncode == 0, cp.stderr
    assert f"{A}:3260,1 {IQN}" in cp.stdout.decode().splitlines()
    empty = tmp_path / "noisns.bin"
    empty.write_bytes(BootConfig(initiator_name="iqn.2026-11.org.bootinit:ibft").to_ibft())
    cp = run(env, "discover", "--isns", "--ibft", str(empty))
    assert cp.returncode == 2 and b"no iSNS server in the iBFT" in cp.stderr


def test_read_over_two_paths_round_robin(env: Env) -> None:
    urls = [f"iscsi://{h}/{IQN}/1" for h in (A, B)]
    cp = run(env, "read", *urls, "--multipath", "round-robin", "--stats", "--json")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == env.lun.read_bytes()
    stats = json.loads(cp.stderr)["stats"]["device"]
    assert stats["path0"]["commands"] > 0 and stats["path1"]["commands"] > 0
    cp = run(env, "read", f"iscsi://{A}/{IQN}/1", f"iscsi://{B}/{IQN}/2", "--count", "8")
    assert cp.returncode != 0 and b"refusing to merge" in cp.stderr


def test_read_mcs_option_on_tgtd_single_connection(env: Env) -> None:
    # tgtd answers MaxConnections=1 in practice: --connections 4 falls back to one.
    cp = run(env, "read", f"iscsi://{A}/{IQN}/1", "--connections", "4", "--count", "64")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == env.lun.read_bytes()[:64 * 512]
