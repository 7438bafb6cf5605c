"""``bootinit boot`` and ``bootinit demo`` as a user runs them: real tgtd, real QEMU (TCG).

Guests are qemu/images.py's boot-sector and Linux images (built once, cached); each
boot uses a copy on tmpfs as the LUN. ``bootinit`` runs as a subprocess (like
test_cli.py). The first tests need neither root nor QEMU.

Run: ``sudo python -m pytest tests/integration/test_boot.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from bootinit.boot import BootSource, ReadAhead, guest_config, resolve_source
from bootinit.cli import build_parser
from bootinit.commands import fill_defaults
from bootinit.demo import expected_ibft, ibft_differences, serial_ibft
from bootinit.iscsi.chap import ChapCredentials as IscsiChap
from bootinit.iscsi.chap import Secret
from bootinit.lab import Lab
from bootinit.targets import Lun, Tgtd
from firmware_tables import (
    BootConfig,
    ChapCredentials,
    NicConfig,
    TargetSpec,
    parse_ibft,
    parse_iscsi_url,
    render_sysfs,
)
from netstack.harness import topology
from qemu import images
from qemu.images import (
    BOOTSECTOR_EXIT_OK,
    DATA_OFFSET,
    LINUX_MARKER,
    LINUX_PATTERN_OK,
    PATTERN,
    BootsectorImage,
    LinuxImage,
)
from tests.conftest import netns_problem

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2026-11.org.bootinit:boot"
SHM = Path("/dev/shm")


# ----------------------------------------------------------------- no root, no QEMU


def parse(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    fill_defaults(args)
    return args


def test_arguments_after_dashdash_go_to_qemu() -> None:
    args = parse("boot", "iscsi://10.0.0.1/iqn.x:y/1", "--ip", "10.0.0.2/24", "--",
                 "-smp", "2", "--stats", "iscsi://not-ours")
    assert args.target == ["iscsi://10.0.0.1/iqn.x:y/1"]
    assert args.qemu_args == ["-smp", "2", "--stats", "iscsi://not-ours"]
    assert args.stats is False
    args = parse("--netns", "ns", "boot", "--ibft", "t.bin", "--memory", "64", "--", "-m",
                 "1")
    assert (args.netns, args.ibft, args.target, args.memory) == ("ns", "t.bin", [], 64)
    assert args.qemu_args == ["-m", "1"]
    assert parse("boot", "iscsi://10.0.0.1/iqn.x:y/1").qemu_args == []


def rich_config(host: str = "10.85.0.1") -> BootConfig:
    """A table with every NIC and target field a boot uses."""
    return BootConfig(
        initiator_name="iqn.2026-11.org.example:from-table",
        nics=(NicConfig(address=IPv4Interface("10.85.0.2/24"),
                        gateway=IPv4Address("10.85.0.254"),
                        dns=(IPv4Address("10.85.0.53"), IPv4Address("10.85.0.54")),
                        mac=bytes.fromhex("525400aabbcc"), hostname="bootinit-guest"),),
        targets=(TargetSpec(
            host=host, name=IQN, lun=1, chap=ChapCredentials("alice", "alice-secret-1"),
            reverse_chap=ChapCredentials("tgtuser", "target-secret-2")),))


def test_ibft_file_fills_the_link_options_and_target(tmp_path: Path) -> None:
    table = tmp_path / "t.bin"
    table.write_bytes(rich_config().to_ibft())
    args = parse("boot", "--ibft", str(table), "--netns", "ns", "--bridge", "br0")
    src = resolve_source(args)
    assert src.target is not None and src.target.name == IQN and src.target.lun == 1
    assert src.target.chap == ChapCredentials("alice", "alice-secret-1")
    assert (args.ip, args.gateway, args.mac) == ("10.85.0.2/24", "10.85.0.254",
                                                 "52:54:00:aa:bb:cc")
    assert args.initiator_name == "iqn.2026-11.org.example:from-table"
    # options given win over the table
    args = parse("boot", "--ibft", str(table), "--netns", "ns", "--ip", "10.85.0.9/24",
                 "--initiator-name", "iqn.2026-11.org.example:mine")
    resolve_source(args)
    assert (args.ip, args.gateway, args.initiator_name) == (
        "10.85.0.9/24", None, "iqn.2026-11.org.example:mine")


def test_guest_config_round_trips_through_an_ibft() -> None:
    src = BootSource(target=rich_config().targets[0], origin="test",
                     nic=rich_config().nics[0])
    chap = IscsiChap("alice", Secret("alice-secret-1"), "tgtuser", Secret("target-secret-2"))
    cfg = guest_config("iqn.2026-11.org.bootinit:t", parse_iscsi_url(
        f"iscsi://10.85.0.1/{IQN}/1"), chap, IPv4Interface("10.85.0.7/24"),
        IPv4Address("10.85.0.1"), bytes.fromhex("020000000001"), vlan=12, template=src.nic)
    back = BootConfig.from_ibft(parse_ibft(cfg.to_ibft()))
    assert back == cfg
    nic = back.nics[0]
    assert (str(nic.address), nic.vlan, nic.hostname, len(nic.dns), nic.dhcp) == (
        "10.85.0.7/24", 12, "bootinit-guest", 2, False)
    t = back.targets[0]
    assert t.chap == ChapCredentials("alice", "alice-secret-1")
    assert t.reverse_chap == ChapCredentials("tgtuser", "target-secret-2")
    # what the Linux guest prints for it: the sysfs rendering, newline dropped
    want = expected_ibft(cfg.to_ibft())
    assert want["/sys/firmware/ibft/ethernet0/subnet-mask"] == "255.255.255.0"
    assert want["/sys/firmware/ibft/target0/lun"] == "01000000"
    assert want["/sys/firmware/ibft/target0/rev-chap-name-secret"] == "target-secret-2"
    assert len(want) == sum(len(v) for v in render_sysfs(parse_ibft(cfg.to_ibft())).values())


def test_serial_ibft_parsing() -> None:
    text = ("noise\r\nBOOTINIT-IBFT-BEGIN\r\n/sys/firmware/ibft/target0/port=3260\r\n"
            "/sys/firmware/ibft/ethernet0/hostname=\r\nBOOTINIT-IBFT-END\r\n")
    seen = serial_ibft(text)
    assert seen == {"/sys/firmware/ibft/target0/port": "3260",
                    "/sys/firmware/ibft/ethernet0/hostname": ""}
    assert ibft_differences(seen, dict(seen)) == []
    assert ibft_differences(seen, {}) != []


class FakeDevice:
    """A block device whose reads take their data when submitted (as a target that
    reorders would) and complete when the test says so."""

    block_size = 512
    max_transfer_blocks = 2048

    def __init__(self, blocks: int) -> None:
        self.disk = bytearray(os.urandom(blocks * 512))
        self.num_blocks = blocks
        self.capacity = blocks * 512
        self.pending: list[tuple[object, ...]] = []
        self.reads: list[tuple[int, int]] = []
        self.fail_lbas: set[int] = set()

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: object = None) -> object:
        self.reads.append((lba, count))
        data = bytes(self.disk[lba * 512:(lba + count) * 512])
        err = RuntimeError("medium error") if lba in self.fail_lbas else None
        self.fail_lbas.discard(lba)
        self.pending.append(("r", buf, data, callback, err))
        return None

    def submit_write(self, lba: int, data: bytes, callback: object = None) -> object:
        self.pending.append(("w", lba, bytes(data), callback, None))
        return None

    def submit_flush(self, callback: object = None) -> object:
        self.pending.append(("f", None, None, callback, None))
        return None

    def complete(self, n: int | None = None) -> None:
        todo = self.pending[:n] if n is not None else list(self.pending)
        del self.pending[:len(todo)]
        for kind, a, b, cb, err in todo:
            if kind == "r" and err is None:
                assert isinstance(a, (bytearray, memoryview)) and isinstance(b, bytes)
                memoryview(a).cast("B")[:len(b)] = b
            elif kind == "w":
                assert isinstance(a, int) and isinstance(b, bytes)
                self.disk[a * 512:a * 512 + len(b)] = b
            if cb is not None:
                assert callable(cb)
                cb(argparse.Namespace(error=err))


def ra_read(ra: ReadAhead, dev: FakeDevice, lba: int, count: int) -> bytes:
    buf = bytearray(count * 512)
    got: list[object] = []
    ra.submit_read(lba, count, buf, got.append)
    while not got:
        dev.complete(1)
    assert getattr(got[0], "error", None) is None
    return bytes(buf)


def test_readahead_serves_sequential_reads_from_memory() -> None:
    dev = FakeDevice(4096)
    ra = ReadAhead(dev, window=64 << 10, chunk=16 << 10)  # type: ignore[arg-type]
    assert ra_read(ra, dev, 0, 1) == dev.disk[:512]          # first read: a miss
    assert ra_read(ra, dev, 1, 8) == dev.disk[512:9 * 512]   # sequential: read ahead
    dev.complete()
    before = len(dev.reads)
    for lba in range(9, 100, 8):
        assert ra_read(ra, dev, lba, 8) == dev.disk[lba * 512:(lba + 8) * 512]
        dev.complete()
    c = ra.counters
    assert c["misses"] == 2 and c["hits"] >= 10 and c["prefetches"] >= 6
    assert all(n == 32 for _, n in dev.reads[before:])       # only read-ahead chunks
    assert ra._held() <= ra.limit
    # a random read elsewhere is passed through and starts nothing
    n = len(dev.reads)
    assert ra_read(ra, dev, 3000, 2) == dev.disk[3000 * 512:3002 * 512]
    assert len(dev.reads) == n + 1


def test_readahead_reads_across_chunk_boundaries() -> None:
    """63-block reads (as SeaBIOS issues) straddle the 32-block chunks: still no miss."""
    dev = FakeDevice(8192)
    ra = ReadAhead(dev, window=128 << 10, chunk=16 << 10)  # type: ignore[arg-type]
    lba = 0
    for i in range(40):
        n = 64 if i % 2 else 63
        assert ra_read(ra, dev, lba, n) == dev.disk[lba * 512:(lba + n) * 512]
        lba += n
        if i % 3 == 0:
            dev.complete()         # sometimes the chunks are still on their way
    assert ra.counters["misses"] == 2          # the first read, and the one after it
    assert ra.counters["hits"] + ra.counters["waits"] == 38


def test_readahead_never_returns_data_older_than_a_write() -> None:
    dev = FakeDevice(1024)
    ra = ReadAhead(dev, window=32 << 10, chunk=8 << 10)  # type: ignore[arg-type]
    ra_read(ra, dev, 0, 8)
    ra_read(ra, dev, 8, 8)
    dev.complete()                     # blocks 16.. are held
    new = os.urandom(8 * 512)
    done: list[object] = []
    ra.submit_write(20, new, done.append)
    ra.submit_read(16, 8, bytearray(4096), lambda r: None)   # sequential: prefetch again
    dev.complete()                     # prefetches took their data before the write
    assert done
    assert ra_read(ra, dev, 20, 8) == new
    assert ra.counters["invalidated"] >= 2


def test_readahead_prefetch_error_falls_back_to_a_direct_read() -> None:
    dev = FakeDevice(1024)
    ra = ReadAhead(dev, window=16 << 10, chunk=16 << 10)  # type: ignore[arg-type]
    dev.fail_lbas.add(16)
    ra_read(ra, dev, 0, 8)
    ra_read(ra, dev, 8, 8)             # served; the prefetch of 16.. fails
    got: list[object] = []
    ra.submit_read(16, 8, bytearray(4096), got.append)
    dev.complete()
    assert ra.counters["prefetch_errors"] == 1
    while not got:
        dev.complete(1)
    assert getattr(got[0], "error", None) is None


# ------------------------------------------------------------------- real boots


def need_root_and_qemu() -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    for tool in ("qemu-system-x86_64", "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@pytest.fixture(scope="module")
def bootsector() -> BootsectorImage:
    need_root_and_qemu()
    try:
        return images.bootsector_image()
    except images.ImageError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def linux() -> LinuxImage:
    need_root_and_qemu()
    try:
        return images.linux_image()
    except images.ImageError as e:
        pytest.skip(str(e))


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory on tmpfs for LUN files (tgtd in the namespace opens them)."""
    base = SHM if SHM.is_dir() else Path("/var/tmp")
    d = base / f"bootinit-test-boot-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def bs_lab(bootsector: BootsectorImage) -> Iterator[Lab]:
    """A lab with LUN 1 = the boot-sector image, LUN 2 = blank (no boot signature)."""
    d = SHM / f"bootinit-test-bslab-{os.getpid()}"
    d.mkdir()
    try:
        disk = images.copy_image(bootsector.path, d / "bs.img")
        with Lab(name=f"bibs{os.getpid() % 10000}", luns=[disk, "8M"], target_iqn=IQN,
                 address="10.84.0.1/24", lun_dir=d) as lab:
            yield lab
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bootinit(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bootinit", *args], capture_output=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def no_traceback(cp: subprocess.CompletedProcess[bytes]) -> None:
    assert b"Traceback" not in cp.stderr, cp.stderr.decode()


def test_bootsector_boots_from_a_url(bootsector: BootsectorImage, bs_lab: Lab) -> None:
    cp = bootinit("boot", bs_lab.url, *bs_lab.link_options, "--memory", "32")
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    lines = [ln.rstrip("\r") for ln in cp.stdout.decode().splitlines()]
    assert bootsector.marker in lines     # the guest's checksum of what it read == the image's
    err = cp.stderr.decode()
    assert "QEMU exited with status 33 (isa-debug-exit value 0x10)" in err
    assert re.search(r"nbd: \d+ reads \(2\.0 MiB\)", err), err


def test_bootsector_boots_from_a_root_path_and_passes_qemu_args(
        bootsector: BootsectorImage, bs_lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "qemu-d.log"
    cp = bootinit("boot", f"iscsi:10.84.0.1::3260:1:{IQN}", *bs_lab.link_options,
                  "--memory", "32", "--serial", str(tmp_path / "serial.txt"),
                  "--", "-D", str(log), "-d", "cpu_reset")
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    assert bootsector.marker in (tmp_path / "serial.txt").read_text()
    assert bootsector.marker.encode() not in cp.stdout        # --serial: not on stdout
    assert "CPU Reset" in log.read_text()                     # "-- ARGS" reached QEMU


def test_bootsector_boots_from_a_lab_by_name(bootsector: BootsectorImage, bs_lab: Lab) -> None:
    cp = bootinit("boot", "--lab", bs_lab.name, "--memory", "32", "--json")
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    assert bootsector.marker.encode() in cp.stdout


def test_bootsector_boots_from_an_ibft_file(bootsector: BootsectorImage, bs_lab: Lab,
                                            tmp_path: Path) -> None:
    cfg = BootConfig(initiator_name="iqn.2026-11.org.example:ibft-file",
                     nics=(NicConfig(address=IPv4Interface("10.84.0.7/24"),
                                     mac=bytes.fromhex("5254000a0b0c")),),
                     targets=(parse_iscsi_url(bs_lab.url),))
    table = tmp_path / "ibft.bin"
    table.write_bytes(cfg.to_ibft())
    given = tmp_path / "guest.bin"
    cp = bootinit("boot", "--ibft", str(table), "--netns", bs_lab.netns, "--bridge",
                  bs_lab.bridge, "--memory", "32", "--save-ibft", str(given))
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    assert bootsector.marker.encode() in cp.stdout
    # the guest's table describes the same boot (we used the table's address and MAC)
    assert BootConfig.from_ibft(parse_ibft(given.read_bytes())) == cfg


def test_bootsector_boots_over_two_paths(bootsector: BootsectorImage, scratch: Path,
                                        tmp_path: Path) -> None:
    """Two portals of one tgtd: multipath (failover); the guest's iBFT names both."""
    disk = images.copy_image(bootsector.path, scratch / "bs.img")
    with topology(bridge=True, open_tap=False, prefix="bmp", peer_ip="10.87.0.1/24",
                  our_ip="10.87.0.2/24") as topo, \
            Tgtd(topo.netns, listen=("10.87.0.1", 3260)) as tgtd:
        topo.run(["ip", "addr", "add", "10.87.0.3/24", "dev", "br0"])
        tgtd.add_portal("10.87.0.3", 3260)
        tgtd.add_target(IQN, [Lun(disk)])
        given = tmp_path / "guest.bin"
        cp = bootinit("boot", f"iscsi://10.87.0.1/{IQN}/1", f"iscsi://10.87.0.3/{IQN}/1",
                      "--multipath", "failover", *topo.link_argv(), "--memory", "32",
                      "--save-ibft", str(given), "--stats")
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    assert bootsector.marker.encode() in cp.stdout
    assert b"session.path0:" in cp.stderr and b"session.path1:" in cp.stderr
    targets = BootConfig.from_ibft(parse_ibft(given.read_bytes())).targets
    assert [(t.host, t.name, t.lun) for t in targets] == [("10.87.0.1", IQN, 1),
                                                          ("10.87.0.3", IQN, 1)]


def test_linux_guest_sees_both_paths_in_its_ibft(linux: LinuxImage, scratch: Path,
                                                 tmp_path: Path) -> None:
    """Two portals of one LUN (multipath failover): the Linux guest's own
    /sys/firmware/ibft shows target0 and target1 — the table bootinit gave it."""
    disk = images.copy_image(linux.path, scratch / "linux2p.img")
    with topology(bridge=True, open_tap=False, prefix="bmpl", peer_ip="10.89.0.1/24",
                  our_ip="10.89.0.2/24") as topo, \
            Tgtd(topo.netns, listen=("10.89.0.1", 3260)) as tgtd:
        topo.run(["ip", "addr", "add", "10.89.0.3/24", "dev", "br0"])
        tgtd.add_portal("10.89.0.3", 3260)
        tgtd.add_target(IQN, [Lun(disk)])
        given = tmp_path / "guest2p.bin"
        cp = bootinit("boot", f"iscsi://10.89.0.1/{IQN}/1", f"iscsi://10.89.0.3/{IQN}/1",
                      "--multipath", "failover", *topo.link_argv(),
                      "--save-ibft", str(given), timeout=240)
        out = check_linux(cp)
    seen = serial_ibft(out)
    assert ibft_differences(seen, expected_ibft(given.read_bytes())) == []
    assert seen["/sys/firmware/ibft/target0/ip-addr"] == "10.89.0.1"
    assert seen["/sys/firmware/ibft/target1/ip-addr"] == "10.89.0.3"
    assert seen["/sys/firmware/ibft/target0/target-name"] == IQN
    assert seen["/sys/firmware/ibft/target1/target-name"] == IQN


def test_linux_boots_from_dhcp(linux: LinuxImage, scratch: Path, tmp_path: Path) -> None:
    """--dhcp and no target: address, root path (option 17) and initiator name (203) from
    dnsmasq; the guest's iBFT says origin DHCP and names the DHCP server, and the guest's
    /sys/firmware/ibft shows exactly that table."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq")
    disk = images.copy_image(linux.path, scratch / "linux.img")
    client = "iqn.2026-11.org.bootinit:from-dhcp"
    with topology(bridge=True, open_tap=False, prefix="bdb", peer_ip="10.88.0.1/24",
                  our_ip="10.88.0.2/24") as topo, \
            Tgtd(topo.netns, listen=("10.88.0.1", 3260)) as tgtd:
        tgtd.add_target(IQN, [Lun(disk)], initiator_address=None, initiator_name=client)
        log = tmp_path / "dnsmasq.log"
        dnsmasq = topo.start([
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--interface=br0", "--bind-interfaces", "--user=root",
            "--dhcp-range=10.88.0.100,10.88.0.150,255.255.255.0,2m",
            f"--dhcp-leasefile={tmp_path / 'leases'}", f"--log-facility={log}",
            "--dhcp-option=option:router,10.88.0.1",
            "--dhcp-option=option:dns-server,10.88.0.53",
            f"--dhcp-option=17,iscsi:10.88.0.1::3260:1:{IQN}",
            f"--dhcp-option=203,{client}"])
        end = time.monotonic() + 10
        while "DHCP, IP range" not in (log.read_text() if log.exists() else ""):
            assert dnsmasq.alive() and time.monotonic() < end, "dnsmasq did not start"
            time.sleep(0.05)
        given = tmp_path / "guest.bin"
        cp = bootinit("boot", "--dhcp", "--netns", topo.netns, "--bridge", "br0",
                      "--save-ibft", str(given), timeout=240)
    out = check_linux(cp)
    cfg = BootConfig.from_ibft(parse_ibft(given.read_bytes()))
    assert cfg.initiator_name == client
    nic = cfg.nics[0]
    assert nic.dhcp and nic.dhcp_server == IPv4Address("10.88.0.1")
    assert nic.gateway == IPv4Address("10.88.0.1")
    assert nic.dns == (IPv4Address("10.88.0.53"),)
    assert nic.address is not None and isinstance(nic.address.ip, IPv4Address) and \
        IPv4Address("10.88.0.100") <= nic.address.ip <= IPv4Address("10.88.0.150")
    assert [(t.host, t.name, t.lun) for t in cfg.targets] == [("10.88.0.1", IQN, 1)]
    seen = serial_ibft(out)
    assert ibft_differences(seen, expected_ibft(given.read_bytes())) == []
    assert seen["/sys/firmware/ibft/ethernet0/origin"] == "3"
    assert seen["/sys/firmware/ibft/ethernet0/dhcp"] == "10.88.0.1"
    assert seen["/sys/firmware/ibft/ethernet0/ip-addr"] == str(nic.address.ip)


def test_missing_boot_signature_is_a_clear_error(bs_lab: Lab) -> None:
    url = bs_lab.url[:-1] + "2"     # LUN 2: blank
    cp = bootinit("boot", url, *bs_lab.link_options, "--memory", "32")
    no_traceback(cp)
    assert cp.returncode == 1
    err = cp.stderr.decode().strip().splitlines()
    assert len(err) == 1, err
    assert "not bootable: no boot signature 55 aa at offset 510 of LBA 0 (found 00 00" in err[0]
    assert cp.stdout == b""


def test_usage_errors(bs_lab: Lab) -> None:
    cp = bootinit("boot", *bs_lab.link_options)
    no_traceback(cp)
    assert cp.returncode == 2 and b"nothing to boot" in cp.stderr
    cp = bootinit("boot", bs_lab.url, "--ibft", "/nonexistent", *bs_lab.link_options)
    assert cp.returncode == 2 and b"give one of" in cp.stderr
    cp = bootinit("boot", "--ibft", "/nonexistent", *bs_lab.link_options)
    no_traceback(cp)
    assert cp.returncode == 1 and b"cannot use the iBFT" in cp.stderr
    cp = bootinit("boot", bs_lab.url, *bs_lab.link_options, "--qemu-binary", "no-such-qemu")
    assert cp.returncode == 1 and b"no-such-qemu not found" in cp.stderr


# ------------------------------------------------------------------------ Linux


def check_linux(cp: subprocess.CompletedProcess[bytes]) -> str:
    no_traceback(cp)
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, (cp.stderr.decode(), out[-3000:])
    assert LINUX_MARKER in out and LINUX_PATTERN_OK in out and "BOOTINIT-LINUX-DONE" in out
    return out


def test_linux_boots_from_an_ibft_and_sees_that_table(linux: LinuxImage, scratch: Path,
                                                      tmp_path: Path) -> None:
    """CHAP and mutual CHAP from the table; the guest's /sys/firmware/ibft == the table
    bootinit gave it, attribute by attribute (firmware_tables' sysfs rendering)."""
    disk = images.copy_image(linux.path, scratch / "linux.img")
    with Lab(name=f"bili{os.getpid() % 10000}", luns=[disk], target_iqn=IQN,
             address="10.85.0.1/24", chap=("alice", "alice-secret-1"),
             mutual_chap=("tgtuser", "target-secret-2"), lun_dir=scratch) as lab:
        table = tmp_path / "ibft.bin"
        table.write_bytes(rich_config().to_ibft())
        given = tmp_path / "guest.bin"
        cp = bootinit("boot", "--ibft", str(table), "--netns", lab.netns, "--bridge",
                      lab.bridge, "--save-ibft", str(given), "--stats", timeout=240)
        out = check_linux(cp)
        with open(disk, "rb") as f:       # the guest's write went NBD -> iSCSI -> tgtd
            f.seek(DATA_OFFSET)
            assert f.read(len(PATTERN)) == PATTERN
    guest_table = given.read_bytes()
    assert BootConfig.from_ibft(parse_ibft(guest_table)) == rich_config()
    seen, want = serial_ibft(out), expected_ibft(guest_table)
    assert ibft_differences(seen, want) == []
    for attr, value in (("ethernet0/gateway", "10.85.0.254"),
                        ("ethernet0/secondary-dns", "10.85.0.54"),
                        ("ethernet0/hostname", "bootinit-guest"),
                        ("ethernet0/mac", "52:54:00:aa:bb:cc"), ("ethernet0/origin", "1"),
                        ("target0/chap-type", "2"), ("target0/chap-name", "alice"),
                        ("target0/rev-chap-name", "tgtuser"), ("target0/lun", "01000000"),
                        ("initiator/initiator-name", "iqn.2026-11.org.example:from-table")):
        assert seen[f"/sys/firmware/ibft/{attr}"] == value, attr
    err = cp.stderr.decode()
    assert "session.commands:" in err and "nbd.server:" in err and "stack.tcp:" in err


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"bootinit exited {proc.returncode} before {text!r}")
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} within {timeout:g} s")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


@pytest.fixture
def linux_target(linux: LinuxImage, scratch: Path) -> Iterator[tuple[list[str], Tgtd, Path]]:
    """Namespace + bridge + a Tgtd we control (kill/restart), the Linux disk as LUN 1."""
    disk = images.copy_image(linux.path, scratch / "linux.img")
    with topology(bridge=True, open_tap=False, prefix="bbo", peer_ip="10.86.0.1/24",
                  our_ip="10.86.0.2/24") as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260)) as tgtd:
        tgtd.add_target(IQN, [Lun(disk)])
        argv = ["boot", f"iscsi://{topo.peer_addr}/{IQN}/1", *topo.link_argv()]
        yield argv, tgtd, disk
        assert not topo.run(["ip", "-o", "link", "show", "type", "tun"]).stdout.strip()


def test_linux_boot_survives_a_tgtd_restart(linux_target: tuple[list[str], Tgtd, Path],
                                            tmp_path: Path) -> None:
    """tgtd is killed while syslinux loads the kernel and comes back 1.5 s later: the
    session is reinstated (ERL 0), the commands replayed, and the boot completes."""
    argv, tgtd, disk = linux_target
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "bootinit", *argv, "--stats"],
                                stdout=o, stderr=e, cwd=ROOT)
    try:
        _wait_for(out, "SYSLINUX", proc, 60)
        time.sleep(0.3)               # in the middle of reading vmlinuz
        tgtd.kill()
        time.sleep(1.5)
        tgtd.start()
        rc = proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_linux(subprocess.CompletedProcess(proc.args, rc, out.read_bytes(),
                                            err.read_bytes()))
    stats = err.read_text()
    m = re.search(r"session\.recovery: .*succeeded=(\d+)", stats)
    assert m and int(m.group(1)) >= 1, stats
    assert re.search(r"session\.login: .*successes=([2-9]|\d\d)", stats), stats
    with open(disk, "rb") as f:
        f.seek(DATA_OFFSET)
        assert f.read(len(PATTERN)) == PATTERN


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_qemu_logs_out_and_removes_the_tap(
        linux_target: tuple[list[str], Tgtd, Path], tmp_path: Path,
        sig: signal.Signals) -> None:
    argv, tgtd, _disk = linux_target
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "bootinit", *argv], stdout=o, stderr=e,
                                cwd=ROOT)
    try:
        _wait_for(out, "SYSLINUX", proc, 60)
        qemu = _children(proc.pid)
        assert qemu, "no QEMU child"
        assert len(tgtd.connections(1)) == 1
        os.kill(proc.pid, sig)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + sig, err.read_text()
    assert "Traceback" not in err.read_text()
    for pid in qemu:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert tgtd.connections(1) == []            # logged out (not just dropped)
    # the TAP is checked by the fixture (no tun device left in the namespace)


# ------------------------------------------------------------------------- demo


def test_demo_boots_linux_and_cleans_up(linux: LinuxImage) -> None:
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    cp = bootinit("demo", timeout=300)
    no_traceback(cp)
    out = cp.stdout.decode(errors="replace")
    assert cp.returncode == 0, (out[-3000:], cp.stderr.decode())
    assert LINUX_PATTERN_OK in out
    assert "check: the guest's pattern is in tgtd's backing file" in out
    assert re.search(r"check: the guest's /sys/firmware/ibft shows the iBFT bootinit built "
                     r"\(\d+ attributes equal\)", out), out[-2000:]
    assert "nbd.server:" in out and "session.commands:" in out
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not {n for n in after - before if n.startswith("bidemo")}


def test_demo_bootsector_guest(bootsector: BootsectorImage) -> None:
    cp = bootinit("demo", "--guest", "bootsector", "--memory", "32")
    no_traceback(cp)
    assert cp.returncode == BOOTSECTOR_EXIT_OK, cp.stderr.decode()
    assert bootsector.marker in cp.stdout.decode()


def test_demo_names_missing_packages(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    cp = bootinit("demo", "--qemu-binary", str(tmp_path / "qemu-system-nothing"))
    no_traceback(cp)
    assert cp.returncode == 1
    assert b"apt-get install" in cp.stderr and b"qemu-system-x86" in cp.stderr


# ------------------------------------------------------------------------ bench


def test_bench_boot_smoke(bootsector: BootsectorImage) -> None:
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "boot.py"), "--guest",
                         "bootsector", "--runs", "1"], capture_output=True, text=True,
                        timeout=240, cwd=ROOT)
    assert cp.returncode == 0, cp.stderr
    rows = {m.group(1): m for m in re.finditer(
        r"^bootsector\s+(local|libiscsi|bootinit)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)x"
        r"\s+([0-9.]+)x",
        cp.stdout, re.M)}
    assert set(rows) == {"local", "libiscsi", "bootinit"}, cp.stdout
    assert all(float(m.group(2)) > 0 for m in rows.values())
    assert rows["libiscsi"].group(4) == "1.00"
