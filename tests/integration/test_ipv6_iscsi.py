"""bootinit over IPv6 end to end: the CLI (``--ip6``, ``--slaac``, no IPv4 at all)
against tgtd listening on ``[fd00::1]:3260`` in a namespace — discovery with bracketed
portals, readcap/write/read by URL ``iscsi://[fd00::1]/...`` and root path
``iscsi:[fd00::1]::3260:1:...``, a login redirected to the IPv6 portal, SLAAC from radvd
then iSCSI, and a capture showing that only IPv6 went over the wire.

Run: ``sudo python -m pytest tests/integration/test_ipv6_iscsi.py``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from bootinit.targets import Tgtd
from netstack.harness import Topology, topology
from netstack.ipv6 import eui64_iid
from netstack.linkopts import format_mac, random_mac

IQN = "iqn.2026-11.org.bootinit:v6"
REPO = Path(__file__).resolve().parents[2]
REDIRECTOR = str(Path(__file__).with_name("redirector.py"))


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    mac: bytes

    def link(self, *extra: str) -> list[str]:
        return ["--netns", self.topo.netns, "--bridge", "br0", "--mac",
                format_mac(self.mac), *extra]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    from tests.conftest import netns_problem

    problem = netns_problem()
    if problem:
        pytest.skip(problem)
    with (topology(prefix="bi6", bridge=True, open_tap=False, peer_ip6="fd00::1/64") as topo,
          Tgtd(topo.netns, listen=("fd00::1", 3260), lun_dir="/dev/shm") as tgtd):
        tgtd.add_target(IQN, ["32M"])
        yield Env(topo, tgtd, random_mac())


def run(env: Env, *args: str, link: tuple[str, ...] = ("--ip6", "fd00::2/64")
        ) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "bootinit", *args, *env.link(*link)]
    return subprocess.run(argv, capture_output=True, timeout=120, cwd=REPO)


URL = f"iscsi://[fd00::1]/{IQN}/1"


def test_discover_returns_bracketed_portals(env: Env) -> None:
    cp = run(env, "discover", "[fd00::1]")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.decode().split() == ["[fd00::1]:3260,1", IQN]
    cp = run(env, "discover", "fd00::1")  # without brackets too
    assert cp.returncode == 0, cp.stderr


def test_readcap_by_url_and_root_path(env: Env) -> None:
    for target in (URL, f"iscsi:[fd00::1]::3260:1:{IQN}", f"iscsi://[fd00::1]:3260/{IQN}/1"):
        cp = run(env, "readcap", target, "--json")
        assert cp.returncode == 0, (target, cp.stderr)
        assert b'"bytes": 33554432' in cp.stdout


def test_write_then_read_back_over_ipv6(env: Env, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    cp = run(env, "write", URL, "--lba", "2048", "-i", str(src), "--stats")
    assert cp.returncode == 0, cp.stderr
    stats = cp.stderr.decode()
    assert "stack.ip6:" in stats and "stack.tcp:" in stats
    cp = run(env, "read", URL, "--lba", "2048", "--count", str(len(data) // 512))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data
    (backing,) = env.tgtd.created_files
    with open(backing, "rb") as f:
        f.seek(2048 * 512)
        assert f.read(len(data)) == data


def test_only_ipv6_on_the_wire(env: Env, tmp_path: Path) -> None:
    pcap = tmp_path / "v6.pcap"
    cp = run(env, "readcap", URL, link=("--ip6", "fd00::2/64", "--pcap", str(pcap)))
    assert cp.returncode == 0, cp.stderr
    frames = [Ether(bytes(p)) for p in rdpcap(str(pcap))]
    ours = [f for f in frames if f.src == format_mac(env.mac)]
    assert ours and all(IPv6 in f for f in ours)
    assert not any(ARP in f for f in ours)
    tcp = [f for f in ours if f[IPv6].nh == 6]
    assert tcp and all(f[IPv6].src == "fd00::2" and f[IPv6].dst == "fd00::1" for f in tcp)


@pytest.mark.parametrize("kind", ["temporary", "permanent"])
def test_login_redirected_to_the_ipv6_portal(env: Env, kind: str) -> None:
    port = 3270 if kind == "temporary" else 3271
    proc = env.topo.start([sys.executable, REDIRECTOR, "fd00::1", str(port),
                           "[fd00::1]:3260,1", kind],
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        env.topo.wait_listening(port, proc=proc)
        cp = run(env, "readcap", f"iscsi://[fd00::1]:{port}/{IQN}/1", "--stats", "-v")
        assert cp.returncode == 0, cp.stderr
        assert b"Capacity: 33554432" in cp.stdout
        err = cp.stderr.decode()
        assert "redirects=1" in err, err
    finally:
        proc.stop()


RADVD_CONF = """interface br0 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    prefix fd00::/64 { AdvOnLink on; AdvAutonomous on; };
};
"""


@pytest.mark.skipif(shutil.which("radvd") is None, reason="radvd is not installed")
def test_slaac_then_iscsi(env: Env, tmp_path: Path) -> None:
    env.topo.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
    conf = tmp_path / "radvd.conf"
    conf.write_text(RADVD_CONF)
    radvd = env.topo.start(["radvd", "-n", "-C", str(conf), "-p", str(tmp_path / "pid"),
                            "-m", "stderr"])
    try:
        cp = run(env, "readcap", URL, "-v", link=("--slaac",))
        assert cp.returncode == 0, cp.stderr
        err = cp.stderr.decode()
        want = ipaddress.IPv6Address(bytes(8) + eui64_iid(env.mac)).packed
        want_s = str(ipaddress.IPv6Address(ipaddress.IPv6Address("fd00::").packed[:8]
                                           + want[8:]))
        assert f"IPv6: {want_s} " in err, err
        assert "router fe80::" in err
    finally:
        radvd.stop()
