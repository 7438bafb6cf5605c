"""``bootinit dump`` end to end: a Linux guest that panics (sysrq-c) in QEMU (TCG), its
memory streamed by bootinit onto a tgtd LUN (256 MiB on /dev/shm) in a namespace,
extracted again and checked with ``readelf -h`` and against a dump QEMU writes to a
local file from the same paused VM.

Each test boots the guest once (~10 s to the panic under TCG) and moves ~150 MB over
bootinit's stack. Run: ``sudo python -m pytest tests/integration/test_dump.py -s``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootinit import dumpfmt
from bootinit.commands import Context, fill_defaults
from bootinit.dump import Dumper, DumpSettings
from bootinit.dumpfmt import DumpFormat, DumpState
from bootinit.lab import Lab
from firmware_tables.uri import parse_target
from qemu import images
from qemu.images import LINUX_PANIC_MARKER, ImageError, LinuxImage, copy_image
from qemu.launch import QemuConfig, QemuVm
from qemu.qmp import Qmp
from tests.conftest import netns_problem

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
LUN_SIZE = 256 * MiB


@pytest.fixture(scope="module")
def panic_image() -> LinuxImage:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64")
    try:
        return images.linux_image(panic=True)
    except ImageError as e:
        pytest.skip(str(e))


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A namespace + tgtd serving one 256 MiB LUN on /dev/shm; removed afterwards."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    if shutil.which("tgtd") is None:
        pytest.skip("needs tgtd")
    with Lab(size=LUN_SIZE, lun_dir="/dev/shm") as lb:
        yield lb


def guest_args(disk: Path, serial: Path, vga: bool = False) -> list[str]:
    args = ["-m", "128", "-drive", f"file={disk},format=raw,if=virtio",
            "-serial", f"file:{serial}", "-no-reboot"]
    return args if vga else [*args, "-vga", "none"]


def bootinit(lab: Lab, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m bootinit dump ARGV`` with the lab's link options."""
    args = [sys.executable, "-m", "bootinit", "dump", *lab.link_options]
    if "--" in argv:
        i = argv.index("--")
        args += [*argv[:i], "--", *argv[i + 1:]]
    else:
        args += list(argv)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def lun_bytes(lab: Lab, offset: int, size: int) -> bytes:
    with open(lab.lun_paths[0], "rb") as f:
        f.seek(offset)
        return f.read(size)


def readelf_header(path: Path) -> str:
    if shutil.which("readelf") is None:
        pytest.skip("needs readelf (binutils)")
    r = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


# ------------------------------------------------------------------------ the main path


def test_panic_dump_lands_on_the_lun_extracts_and_matches_qemus_own(
        panic_image: LinuxImage, lab: Lab, tmp_path: Path) -> None:
    disk = copy_image(panic_image.path, tmp_path / "disk.img")
    serial, local = tmp_path / "serial.log", tmp_path / "qemu-local.elf"
    r = ok(bootinit(lab, lab.url, "--json", "--also-file", str(local), "--",
                    *guest_args(disk, serial)))
    res = json.loads(r.stdout)
    print("\n" + r.stderr.strip())
    assert LINUX_PANIC_MARKER in serial.read_text(errors="replace")
    assert "sysrq triggered crash" in serial.read_text(errors="replace")
    h = res["header"]
    assert res["panicked"] and res["verified"] and res["also_file_identical"]
    assert h["state"] == "complete" and h["format"] == "elf"
    assert h["guest_memory"] == 128 * MiB
    assert 128 * MiB < h["data_size"] < 130 * MiB
    assert res["mb_per_s"] > 0 and res["max_inflight"] >= 2
    assert "armed:" in r.stderr and "guest panicked" in r.stderr and "MB/s" in r.stderr
    # the header on the LUN itself (tgtd's backing file)
    on_lun = dumpfmt.decode(lun_bytes(lab, 0, 4096))
    assert on_lun.as_dict() == h
    # extract and check
    out = tmp_path / "vmcore.elf"
    r = ok(bootinit(lab, "--extract", lab.url, "-o", str(out)))
    assert "matches the header" in r.stdout
    assert out.stat().st_size == h["data_size"]
    assert sha256_file(out) == h["checksum"]
    text = readelf_header(out)
    assert "ELF64" in text and "CORE (Core file)" in text and "X86-64" in text
    # QEMU's own dump of the same paused guest, byte for byte
    assert sha256_file(local) == h["checksum"]
    assert subprocess.run(["cmp", str(out), str(local)], timeout=60).returncode == 0
    info = json.loads(ok(bootinit(lab, "--info", "--json", lab.url)).stdout)
    assert info == h


def test_kdump_zlib_format(panic_image: LinuxImage, lab: Lab, tmp_path: Path) -> None:
    disk = copy_image(panic_image.path, tmp_path / "disk.img")
    local = tmp_path / "qemu-local.kdump"
    r = ok(bootinit(lab, lab.url, "--format", "kdump-zlib", "--json", "--also-file",
                    str(local), "--progress", "0", "--",
                    *guest_args(disk, tmp_path / "serial.log")))
    res = json.loads(r.stdout)
    h = res["header"]
    assert h["format"] == "kdump-zlib" and res["also_file_identical"]
    assert h["data_size"] < 64 * MiB           # compressed
    out = tmp_path / "vmcore.kdump"
    ok(bootinit(lab, "--extract", lab.url, "-o", str(out)))
    data = out.read_bytes()
    # QEMU 7.2 writes kdump through a pipe in makedumpfile's flattened format
    assert data[:12] == b"makedumpfile" and len(data) == h["data_size"]
    assert data == local.read_bytes()


# ------------------------------------------------------------------------ no dump


def test_guest_that_ends_without_a_panic_and_bad_qemu_arguments(lab: Lab,
                                                                tmp_path: Path) -> None:
    r = bootinit(lab, lab.url, "--", "-m", "128", "-bogus-option", timeout=60)
    assert r.returncode == 1
    assert "QEMU exited with status 1" in r.stderr and "-bogus-option" in r.stderr
    try:
        plain = images.linux_image()
    except ImageError as e:
        pytest.skip(str(e))
    disk = copy_image(plain.path, tmp_path / "disk.img")
    r = bootinit(lab, lab.url, "--", *guest_args(disk, tmp_path / "serial.log"),
                 timeout=240)
    assert r.returncode == 3, r.stderr
    assert "without a panic; nothing was dumped" in r.stderr
    assert lun_bytes(lab, 0, 4096) == bytes(4096)


# ------------------------------------------------------------------------ too large


def test_dump_larger_than_the_area_is_refused_at_arming(panic_image: LinuxImage, lab: Lab,
                                                        tmp_path: Path) -> None:
    disk = copy_image(panic_image.path, tmp_path / "disk.img")
    serial = tmp_path / "serial.log"
    r = bootinit(lab, lab.url, "--offset", "192M", "--", *guest_args(disk, serial),
                 timeout=120)
    assert r.returncode == 1, r.stderr
    assert "does not fit" not in r.stdout
    assert "needs up to" in r.stderr and "nothing was written" in r.stderr
    assert lun_bytes(lab, 0, LUN_SIZE) == bytes(LUN_SIZE)
    # refused before the guest ran (QEMU was started paused with -S)
    assert serial.read_bytes() == b""


def test_dump_larger_than_the_area_is_refused_at_the_panic(panic_image: LinuxImage, lab: Lab,
                                                           tmp_path: Path) -> None:
    # 140 MiB of area: room for 128 MiB of RAM, not for the 16 MiB of VGA memory the
    # dump also holds; only QEMU's exact size at the panic tells
    disk = copy_image(panic_image.path, tmp_path / "disk.img")
    serial = tmp_path / "serial.log"
    r = bootinit(lab, lab.url, "--offset", "116M", "--",
                 *guest_args(disk, serial, vga=True), timeout=240)
    assert r.returncode == 1, r.stderr
    assert "guest panicked" in r.stderr
    assert "does not fit" in r.stderr and "nothing was written" in r.stderr
    assert LINUX_PANIC_MARKER in serial.read_text(errors="replace")
    assert lun_bytes(lab, 0, LUN_SIZE) == bytes(LUN_SIZE)


# ------------------------------------------------------------------------ attach, partition


def mbr(start_sector: int, sectors: int) -> bytes:
    b = bytearray(512)
    struct.pack_into("<B3xB3xII", b, 446, 0, 0x83, start_sector, sectors)
    b[510:512] = b"\x55\xaa"
    return bytes(b)


def test_attach_to_a_panicked_guest_and_dump_into_a_partition(
        panic_image: LinuxImage, lab: Lab, tmp_path: Path) -> None:
    table = mbr(2048, 200 * MiB // 512)             # partition 1: 1 MiB .. 201 MiB
    with open(lab.lun_paths[0], "r+b") as f:
        f.write(table)
    disk = copy_image(panic_image.path, tmp_path / "disk.img")
    cfg = QemuConfig(drive=str(disk), pvpanic=True, panic_action="pause", qmp=True,
                     memory_mb=128)
    with QemuVm(cfg, tmp_path / "vm") as vm:
        vm.start()
        assert vm.qmp_path is not None
        q = Qmp.connect(vm.qmp_path, timeout=10)
        try:
            q.wait_event("GUEST_PANICKED", 120)
        finally:
            q.close()
        # bootinit attaches to the paused guest and dumps at once
        r = ok(bootinit(lab, lab.url, "--qmp", str(vm.qmp_path), "--partition", "1",
                        "--json"))
        res = json.loads(r.stdout)
        assert res["area"] == {"offset": MiB, "size": 200 * MiB, "block_size": 512}
        h = res["header"]
        assert h["area_size"] == 200 * MiB and res["verified"]
        # the guest is left paused: QEMU dumps the same state to a local file
        local = tmp_path / "local.elf"
        q = Qmp.connect(vm.qmp_path, timeout=10)
        try:
            assert q.execute("query-status")["status"] == "guest-panicked"
            q.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{local}"},
                      timeout=120)
            q.execute("quit")
        finally:
            q.close()
        assert vm.stop() == 0
    out = tmp_path / "vmcore.elf"
    ok(bootinit(lab, "--extract", lab.url, "--partition", "1", "-o", str(out)))
    readelf_header(out)
    assert sha256_file(out) == sha256_file(local) == h["checksum"]
    # the MBR and everything outside the partition are untouched
    assert lun_bytes(lab, 0, 512) == table
    assert lun_bytes(lab, 512, MiB - 512) == bytes(MiB - 512)
    assert lun_bytes(lab, 201 * MiB, 55 * MiB) == bytes(55 * MiB)
    assert dumpfmt.decode(lun_bytes(lab, MiB, 4096)).data_size == h["data_size"]


# ------------------------------------------------------------------------ sessions


def _context(lab: Lab) -> Context:
    args = argparse.Namespace(netns=lab.netns, bridge=lab.bridge, ip=str(lab.client_ip),
                              json=False)
    fill_defaults(args)
    return Context(args)


def _dump_in_process(lab: Lab, disk: Path, serial: Path, between: Any,
                     ) -> tuple[Any, Dumper]:
    ctx = _context(lab)
    spec = parse_target(lab.url)
    lines: list[str] = []
    try:
        def login() -> tuple[Any, Any]:
            s = ctx.login(spec)
            return s, s.block_device()

        settings = DumpSettings(qemu_args=tuple(guest_args(disk, serial)),
                                progress_interval=0)
        d = Dumper(ctx, login, settings, lines.append)
        try:
            d.arm()
            between(d)
            assert d.wait_for_panic()
            res = d.dump()
        finally:
            d.close()
        return res, d
    finally:
        print("\n" + "\n".join(lines))
        ctx.close()


def test_session_that_died_while_armed_is_logged_in_again(
        panic_image: LinuxImage, lab: Lab, tmp_path: Path) -> None:
    disk = copy_image(panic_image.path, tmp_path / "disk.img")

    def kill_session(d: Dumper) -> None:
        d.session.close()                  # gone for good, as after a recovery deadline

    res, _d = _dump_in_process(lab, disk, tmp_path / "serial.log", kill_session)
    assert res.relogin and res.verified
    assert res.header is not None and res.header.state is DumpState.COMPLETE
    assert dumpfmt.decode(lun_bytes(lab, 0, 4096)) == res.header


def test_target_restart_while_armed_is_recovered_by_the_session(
        panic_image: LinuxImage, lab: Lab, tmp_path: Path) -> None:
    disk = copy_image(panic_image.path, tmp_path / "disk.img")

    def restart_target(d: Dumper) -> None:
        assert lab.tgtd is not None
        lab.tgtd.restart()

    res, d = _dump_in_process(lab, disk, tmp_path / "serial.log", restart_target)
    assert not res.relogin and res.verified
    assert d.session.conn.connects >= 2          # the session layer reconnected
    assert res.header is not None and res.header.format is DumpFormat.ELF


# ------------------------------------------------------------------------ bench smoke


def test_bench_dump_smoke(panic_image: LinuxImage) -> None:
    """bench/dump.py runs and reports every row with positive numbers (never a speed)."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "dump.py"), "--json"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr[-3000:]
    doc = json.loads(cp.stdout)
    ways = {r["way"]: r for r in doc["rows"]}
    assert set(ways) == {
        "bootinit dump (QEMU pipe -> LUN)", "bootinit dump read-back verify",
        "bootinit dump --extract (LUN -> file)", "QEMU dump-guest-memory -> tmpfs file",
        "qemu-img convert file -> iscsi://", "qemu-img convert minus qemu-img info"}
    assert all(r["mb_per_s"] > 0 and r["seconds"] > 0 for r in doc["rows"])
    assert doc["info"]["ratio_vs_qemu_img"] > 0
    assert 128 * MiB < doc["info"]["dump_bytes"] < 130 * MiB
