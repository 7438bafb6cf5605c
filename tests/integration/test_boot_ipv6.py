"""``bootinit boot`` over IPv6 (issue 8): tgtd on ``[fd00::1]:3260`` in a namespace,
bootinit with ``--ip6`` only, QEMU booting the LUN through our NBD export; the guest's
iBFT carries the IPv6 addresses and the Linux guest's /sys/firmware/ibft shows them.

The first tests need neither root nor QEMU. Run:
``sudo python -m pytest tests/integration/test_boot_ipv6.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path

import pytest

from bootinit.boot import guest_config, resolve_source
from bootinit.cli import build_parser
from bootinit.commands import fill_defaults
from bootinit.demo import expected_ibft, ibft_differences, serial_ibft
from bootinit.targets import Tgtd
from firmware_tables import BootConfig, NicConfig, TargetSpec, parse_ibft, parse_iscsi_url
from netstack.harness import Topology, topology
from qemu import images
from qemu.images import BOOTSECTOR_EXIT_OK, LINUX_MARKER, LINUX_PATTERN_OK
from tests.conftest import netns_problem

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2026-11.org.bootinit:boot6"
SHM = Path("/dev/shm")
MAC = bytes.fromhex("525400aabb06")


def parse(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    fill_defaults(args)
    return args


def v6_table() -> BootConfig:
    return BootConfig(
        initiator_name="iqn.2026-11.org.example:v6-table",
        nics=(NicConfig(address=IPv6Interface("fd00::2/64"), gateway=IPv6Address("fd00::fe"),
                        mac=MAC),),
        targets=(TargetSpec(host="fd00::1", name=IQN, lun=1),))


def test_an_ipv6_ibft_fills_ip6_and_gateway6(tmp_path: Path) -> None:
    table = tmp_path / "t.bin"
    table.write_bytes(v6_table().to_ibft())
    args = parse("boot", "--ibft", str(table), "--netns", "ns", "--bridge", "br0")
    src = resolve_source(args)
    assert src.target is not None and src.target.host == "fd00::1"
    assert (args.ip, args.ip6, args.gateway6) == (None, ["fd00::2/64"], "fd00::fe")
    assert args.mac == "52:54:00:aa:bb:06"


def test_guest_config_with_ipv6_round_trips_and_renders() -> None:
    cfg = guest_config("iqn.2026-11.org.bootinit:t", parse_iscsi_url(
        f"iscsi://[fd00::1]/{IQN}/1"), None, IPv6Interface("fd00::2/64"),
        IPv6Address("fe80::1"), MAC)
    back = BootConfig.from_ibft(parse_ibft(cfg.to_ibft()))
    assert back == cfg
    want = expected_ibft(cfg.to_ibft())
    assert want["/sys/firmware/ibft/ethernet0/ip-addr"] == \
        "fd00:0000:0000:0000:0000:0000:0000:0002"
    assert want["/sys/firmware/ibft/ethernet0/prefix-len"] == "64"
    assert want["/sys/firmware/ibft/target0/ip-addr"] == \
        "fd00:0000:0000:0000:0000:0000:0000:0001"


# ----------------------------------------------------------------- root + QEMU
def need_root_and_qemu() -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    for tool in ("qemu-system-x86_64", "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@dataclass
class Env:
    topo: Topology
    tgtd: Tgtd
    scratch: Path

    def link(self, *extra: str) -> list[str]:
        return ["--netns", self.topo.netns, "--bridge", "br0", *extra]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    need_root_and_qemu()
    try:
        bs = images.bootsector_image()
        linux = images.linux_image()
    except images.ImageError as e:
        pytest.skip(str(e))
    d = SHM / f"bootinit-test-boot6-{os.getpid()}"
    d.mkdir()
    try:
        bs_disk = images.copy_image(bs.path, d / "bs.img")
        linux_disk = images.copy_image(linux.path, d / "linux.img")
        with (topology(prefix="bib6", bridge=True, open_tap=False,
                       peer_ip6="fd00::1/64") as topo,
              Tgtd(topo.netns, listen=("fd00::1", 3260), lun_dir=str(d)) as tgtd):
            tgtd.add_target(IQN, [str(bs_disk), str(linux_disk)])
            yield Env(topo, tgtd, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bootinit(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bootinit", *args], capture_output=True,
                          timeout=timeout, cwd=ROOT)


def test_bootsector_boots_over_ipv6_by_url_and_root_path(env: Env) -> None:
    marker = images.bootsector_image().marker
    for target in (f"iscsi://[fd00::1]/{IQN}/1", f"iscsi:[fd00::1]::3260:1:{IQN}"):
        cp = bootinit("boot", target, *env.link("--ip6", "fd00::2/64"), "--memory", "32")
        assert b"Traceback" not in cp.stderr, cp.stderr.decode()
        assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
        assert marker in [ln.rstrip("\r") for ln in cp.stdout.decode().splitlines()]


def test_linux_boots_over_ipv6_and_sees_ipv6_in_its_ibft(env: Env, tmp_path: Path) -> None:
    given = tmp_path / "guest.bin"
    cp = bootinit("boot", f"iscsi://[fd00::1]/{IQN}/2",
                  *env.link("--ip6", "fd00::2/64", "--gateway6", "fd00::fe", "--mac",
                            "52:54:00:aa:bb:06"), "--save-ibft", str(given), "--stats")
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, (cp.stderr.decode()[-3000:], out[-3000:])
    assert LINUX_MARKER in out and LINUX_PATTERN_OK in out and "BOOTINIT-LINUX-DONE" in out
    table = given.read_bytes()
    cfg = BootConfig.from_ibft(parse_ibft(table))
    nic = cfg.nics[0]
    assert (nic.address, nic.gateway) == (IPv6Interface("fd00::2/64"),
                                          IPv6Address("fd00::fe"))
    assert cfg.targets[0].host == "fd00::1" and cfg.targets[0].lun == 2
    seen, want = serial_ibft(out), expected_ibft(table)
    assert ibft_differences(seen, want) == []
    for attr, value in (
            ("ethernet0/ip-addr", "fd00:0000:0000:0000:0000:0000:0000:0002"),
            ("ethernet0/gateway", "fd00:0000:0000:0000:0000:0000:0000:00fe"),
            ("ethernet0/prefix-len", "64"), ("ethernet0/mac", "52:54:00:aa:bb:06"),
            ("target0/ip-addr", "fd00:0000:0000:0000:0000:0000:0000:0001"),
            ("target0/port", "3260")):
        assert seen[f"/sys/firmware/ibft/{attr}"] == value, attr
    assert "stack.ip6:" in cp.stderr.decode()
